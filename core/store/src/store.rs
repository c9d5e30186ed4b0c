use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};
use crate::key::DbKey;
use crate::migrations;
use crate::session::SessionState;
use crate::tx::Tx;
use crate::types::*;

/// One open, keyed database.
///
/// `Store` is `Send` but not `Sync`: the owner keeps it behind a mutex. Every method
/// outside [`Store::transaction`] is atomic on its own and committed when it returns.
pub struct Store {
    conn: Connection,
    /// The WAL file, for [`Store::sync`]; `None` in memory.
    wal: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// More distinct statements than rusqlite's default cache of 16 are in regular use;
/// evicting them would re-prepare (and re-plan) on every call.
const STATEMENT_CACHE: usize = 64;

impl Store {
    /// Opens the database at `path`, creating it if missing, and migrates it to
    /// [`migrations::LATEST_VERSION`].
    pub fn open(path: &Path, key: &DbKey) -> Result<Store> {
        let conn = Connection::open(path)?;
        let mut store = Self::init(conn, key, true)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        store.wal = Some(wal.into());
        Ok(store)
    }

    /// A throwaway database (tests, previews). Nothing touches the disk.
    pub fn open_in_memory(key: &DbKey) -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        Self::init(conn, key, false)
    }

    fn init(mut conn: Connection, key: &DbKey, on_disk: bool) -> Result<Store> {
        ensure_sqlcipher_ready()?;
        // The key must be the first statement on the connection.
        apply_key(&conn, "key", key)?;
        // Another connection (e.g. an iOS notification extension, or a second process)
        // may briefly hold a lock; wait instead of failing at once.
        conn.busy_timeout(Duration::from_secs(5))?;
        let cipher: Option<String> = conn
            .query_row("PRAGMA cipher_version", [], |r| r.get(0))
            .optional()?;
        if cipher.is_none() {
            return Err(StoreError::EncryptionUnavailable);
        }
        // SQLCipher decrypts lazily: only the first read tells whether the key fits.
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::NotADatabase => {
                return Err(StoreError::WrongKey);
            }
            Err(e) => return Err(e.into()),
        }

        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if on_disk && !mode.eq_ignore_ascii_case("wal") {
            // Still correct with a rollback journal, only slower; some filesystems
            // (network mounts) cannot do WAL's shared memory.
            tracing::warn!(journal_mode = %mode, "WAL unavailable, using fallback journal");
        }
        // FULL, not NORMAL: in WAL mode NORMAL survives an app crash but may lose the
        // last commits on power loss or an OS crash, which phones do (flat battery).
        // The session commits before it acknowledges anything to the network (stream
        // management acks, receipts, outbox removal), so a lost commit would be a lost
        // message. The cost is one WAL fsync per commit; bulk work batches into one
        // transaction (`insert_messages`, `transaction`).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let fk: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        if !fk {
            return Err(StoreError::Corrupt(
                "foreign keys cannot be enabled in this SQLite build".into(),
            ));
        }
        // Sorts and temporary indexes stay in RAM instead of spilling to temp files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        let version = migrations::migrate(&mut conn, migrations::MIGRATIONS)?;
        tracing::debug!(version, "database opened");
        Ok(Store { conn, wal: None })
    }

    /// Re-encrypts the whole database with `new`. The old key stops working at once.
    pub fn rekey(&mut self, new: &DbKey) -> Result<()> {
        apply_key(&self.conn, "rekey", new)?;
        // Truncate the WAL so frames written under the old key do not linger on disk.
        self.checkpoint()?;
        tracing::info!("database rekeyed");
        Ok(())
    }

    /// Copies the WAL into the main file and truncates it; cheap when idle, worth
    /// calling when the app goes to the background.
    pub fn checkpoint(&self) -> Result<()> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            tracing::debug!("WAL checkpoint incomplete: database busy");
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u32> {
        migrations::user_version(&self.conn)
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    ///
    /// Takes the write lock up front (IMMEDIATE), so a multi-step write cannot fail half
    /// way with SQLITE_BUSY. Use it to batch many writes into one commit (one fsync).
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&Tx::new(&tx))?;
        tx.commit()?;
        Ok(value)
    }

    /// [`Store::transaction`] whose commit does not wait for the disk: it survives the app
    /// being killed (the data is in the OS's cache) but not a power loss, until the next
    /// [`Store::sync`]. For received data that the UI may show at once but that must not be
    /// acknowledged to the network before `sync`.
    pub fn transaction_unsynced<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let result = self.transaction(f);
        let restored = self.conn.pragma_update(None, "synchronous", "FULL");
        let value = result?;
        restored?;
        Ok(value)
    }

    /// Makes every commit so far durable: an fsync of the WAL, which holds them. In WAL
    /// mode a commit is the WAL frames written before COMMIT returns, so flushing the file
    /// is all that `synchronous = FULL` would have added. (Apple platforms need
    /// F_FULLFSYNC for a real barrier; `sync_all` is fsync.)
    pub fn sync(&self) -> Result<()> {
        let Some(wal) = &self.wal else { return Ok(()) };
        match std::fs::File::open(wal) {
            Ok(f) => f.sync_all()?,
            // No WAL (a fallback journal mode): commits there were synced by SQLite.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// `PRAGMA synchronous` as a number (2 = FULL), for tests.
    pub fn synchronous_level(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    fn ops(&self) -> Tx<'_> {
        Tx::new(&self.conn)
    }
}

/// Waits until SQLCipher's process-wide initialization has finished.
///
/// SQLite marks itself initialized *before* it runs SQLCipher's init hook
/// (`SQLITE_EXTRA_INIT`). A thread that opens a database in that window, while another
/// thread is still initializing, gets a failed `PRAGMA key` ("sqlcipher not
/// initialized", not even logged because logging is set up by the same hook). Seen at
/// process start when two databases open on two threads. A probe on a throwaway
/// in-memory connection, serialized and retried, closes the window; afterwards it costs
/// one uncontended lock per open.
fn ensure_sqlcipher_ready() -> Result<()> {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(PoisonError::into_inner);
    if *ready {
        return Ok(());
    }
    // The probe key protects nothing: the in-memory database is dropped unread.
    const PROBE: &str =
        "PRAGMA key = \"x'0000000000000000000000000000000000000000000000000000000000000000'\"";
    for _ in 0..200 {
        let probe = Connection::open_in_memory()?;
        if probe.execute_batch(PROBE).is_ok() {
            *ready = true;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(StoreError::EncryptionUnavailable)
}

/// Applies `PRAGMA key|rekey` with the raw-key syntax, so SQLCipher skips PBKDF2.
fn apply_key(conn: &Connection, pragma: &str, key: &DbKey) -> Result<()> {
    let mut sql = Zeroizing::new(String::with_capacity(96));
    sql.push_str("PRAGMA ");
    sql.push_str(pragma);
    sql.push_str(" = \"x'");
    key.push_hex(&mut sql);
    sql.push_str("'\"");
    conn.execute_batch(&sql).map_err(|e| match e {
        // SQLite's own message never quotes the statement; other rusqlite errors
        // (SqlInputError, NulError) carry the SQL text, i.e. the key.
        rusqlite::Error::SqliteFailure(f, msg) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, msg))
        }
        _ => StoreError::Keying,
    })
}

/// Generates `Store` methods that run the [`Tx`] method of the same name on the
/// connection in autocommit mode, so each method is documented and implemented once.
macro_rules! delegate_to_tx {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl Store {
            $(
                #[doc = concat!("See [`Tx::", stringify!($name), "`]; committed on return.")]
                pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.ops().$name($($arg),*)
                }
            )*
        }
    };
}

delegate_to_tx! {
    // OMEMO devices and encryption choices
    fn set_omemo_device_list(
        &self,
        account: AccountId,
        jid: &str,
        version: linnet_omemo::Version,
        ids: &[u32],
    ) -> Result<()>;
    fn omemo_device_list(
        &self,
        account: AccountId,
        jid: &str,
        version: linnet_omemo::Version,
    ) -> Result<Option<Vec<crate::OmemoDevice>>>;
    fn set_omemo_device_entries(
        &self,
        account: AccountId,
        jid: &str,
        version: linnet_omemo::Version,
        devices: &[crate::ListedDevice],
    ) -> Result<()>;
    fn omemo_device_heard(
        &self,
        account: AccountId,
        jid: &str,
        device_id: u32,
        at_ms: i64,
    ) -> Result<()>;
    fn omemo_devices_encrypted_for(
        &self,
        account: AccountId,
        jid: &str,
        version: linnet_omemo::Version,
        devices: &[u32],
        at_ms: i64,
    ) -> Result<()>;
    fn set_omemo_device_activity(
        &self,
        account: AccountId,
        jid: &str,
        version: linnet_omemo::Version,
        device_id: u32,
        activity: crate::DeviceActivity,
    ) -> Result<bool>;
    fn omemo_identities(
        &self,
        account: AccountId,
        jid: &str,
    ) -> Result<Vec<crate::omemo::IdentityRow>>;
    fn omemo_sender_trust(
        &self,
        messages: &[MessageId],
    ) -> Result<Vec<(MessageId, Option<linnet_omemo::Trust>)>>;
    fn encryption_policy(&self, conversation: ConversationId) -> Result<crate::EncryptionPolicy>;
    fn outbox_replace(&self, id: OutboxId, kind: &str, payload: &str) -> Result<()>;
    fn set_encryption_policy(
        &self,
        conversation: ConversationId,
        policy: crate::EncryptionPolicy,
    ) -> Result<()>;
    // session state
    fn session_state(&self, account: AccountId) -> Result<SessionState>;
    fn set_session_state(&self, account: AccountId, state: &SessionState) -> Result<()>;
    fn set_sm_inbound(&self, account: AccountId, handled: u32) -> Result<()>;
    // accounts
    fn add_account(&self, jid: &str, password: &str) -> Result<AccountId>;
    fn account(&self, id: AccountId) -> Result<AccountRecord>;
    fn account_by_jid(&self, jid: &str) -> Result<Option<AccountRecord>>;
    fn accounts(&self) -> Result<Vec<AccountRecord>>;
    fn set_account_password(&self, id: AccountId, password: &str) -> Result<()>;
    fn set_account_resource(&self, id: AccountId, resource: Option<&str>) -> Result<()>;
    fn set_account_enabled(&self, id: AccountId, enabled: bool) -> Result<()>;
    fn set_account_server(
        &self,
        id: AccountId,
        host: Option<&str>,
        port: Option<u16>,
        direct_tls: bool,
    ) -> Result<()>;
    fn remove_account(&self, id: AccountId) -> Result<()>;
    // roster
    fn upsert_contact(&self, account: AccountId, contact: &ContactRecord) -> Result<()>;
    fn remove_contact(&self, account: AccountId, jid: &str) -> Result<bool>;
    fn contact(&self, account: AccountId, jid: &str) -> Result<Option<ContactRecord>>;
    fn contacts(&self, account: AccountId) -> Result<Vec<ContactRecord>>;
    fn set_roster_version(&self, account: AccountId, version: Option<&str>) -> Result<()>;
    fn roster_version(&self, account: AccountId) -> Result<Option<String>>;
    fn replace_roster(
        &self,
        account: AccountId,
        items: &[ContactRecord],
        version: Option<&str>,
    ) -> Result<()>;
    fn add_subscription_request(
        &self,
        account: AccountId,
        jid: &str,
        nick: Option<&str>,
    ) -> Result<bool>;
    fn remove_subscription_request(&self, account: AccountId, jid: &str) -> Result<bool>;
    fn subscription_requests(
        &self,
        account: AccountId,
    ) -> Result<Vec<crate::SubscriptionRequestRecord>>;
    // conversations
    fn conversation(
        &self,
        account: AccountId,
        peer: &str,
        create: bool,
    ) -> Result<Option<ConversationId>>;
    fn conversation_info(&self, id: ConversationId) -> Result<ConversationSummary>;
    fn conversations(&self) -> Result<Vec<ConversationSummary>>;
    fn mark_read(
        &self,
        conversation: ConversationId,
        up_to: Option<MessageId>,
    ) -> Result<Vec<MessageRecord>>;
    // messages
    fn insert_message(&self, message: &NewMessage) -> Result<Inserted>;
    fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>>;
    fn message(&self, id: MessageId) -> Result<MessageRecord>;
    fn message_by_origin_id(
        &self,
        conversation: ConversationId,
        origin_id: &str,
    ) -> Result<Option<MessageRecord>>;
    fn message_by_account_origin_id(
        &self,
        account: AccountId,
        origin_id: &str,
    ) -> Result<Option<MessageRecord>>;
    fn set_delivery_state(&self, id: MessageId, state: DeliveryState) -> Result<bool>;
    fn set_stanza_id(&self, id: MessageId, stanza_id: &str, by: &str) -> Result<()>;
    fn messages(
        &self,
        conversation: ConversationId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>>;
    fn message_count(&self, conversation: ConversationId) -> Result<u64>;
    fn set_message_time(&self, id: MessageId, timestamp_ms: i64) -> Result<bool>;
    fn message_by_archive_id(
        &self,
        account: AccountId,
        by: &str,
        stanza_id: &str,
    ) -> Result<Option<MessageId>>;
    fn latest_incoming_up_to(
        &self,
        conversation: ConversationId,
        up_to: MessageId,
    ) -> Result<Option<(i64, MessageId)>>;
    // history
    fn add_history_gap(&self, account: AccountId, gap: crate::HistoryGap) -> Result<()>;
    fn history_gaps(&self, account: AccountId) -> Result<Vec<crate::HistoryGap>>;
    fn history_complete(&self, conversation: ConversationId) -> Result<bool>;
    fn set_history_complete(&self, conversation: ConversationId, complete: bool) -> Result<()>;
    fn oldest_message(&self, conversation: ConversationId) -> Result<Option<MessageRecord>>;
    // rich messages
    fn message_by_reference(
        &self,
        conversation: ConversationId,
        id: &str,
    ) -> Result<Option<MessageRecord>>;
    fn reactions(&self, messages: &[MessageId]) -> Result<Vec<crate::ReactionSet>>;
    fn latest_incoming(&self, conversation: ConversationId) -> Result<Option<MessageRecord>>;
    fn apply_correction(&self, target: MessageId, body: &str, at_ms: i64) -> Result<bool>;
    fn apply_correction_with_reply(
        &self,
        target: MessageId,
        body: &str,
        reply_to: Option<&str>,
        at_ms: i64,
    ) -> Result<bool>;
    fn apply_retraction(&self, target: MessageId, at_ms: i64) -> Result<bool>;
    fn set_reactions(
        &self,
        target: MessageId,
        sender: &str,
        emojis: &[String],
        at_ms: i64,
    ) -> Result<bool>;
    fn mark_displayed_up_to(&self, conversation: ConversationId, up_to: MessageId) -> Result<bool>;
    // outbox
    fn outbox_push(
        &self,
        account: AccountId,
        message: Option<MessageId>,
        kind: &str,
        payload: &str,
    ) -> Result<OutboxId>;
    fn outbox(&self, account: AccountId) -> Result<Vec<OutboxEntry>>;
    fn outbox_remove(&self, id: OutboxId) -> Result<bool>;
    fn outbox_bump_attempts(&self, id: OutboxId) -> Result<u32>;
    // files
    fn insert_attachment(&self, a: &crate::AttachmentRecord) -> Result<bool>;
    fn attachment(&self, message: MessageId) -> Result<Option<crate::AttachmentRecord>>;
    fn attachments(&self, messages: &[MessageId]) -> Result<Vec<crate::AttachmentRecord>>;
    fn set_attachment_state(
        &self,
        message: MessageId,
        state: crate::AttachmentState,
        error: Option<&str>,
    ) -> Result<bool>;
    fn attachment_uploaded(
        &self,
        message: MessageId,
        url: &str,
        sha256: Option<[u8; 32]>,
        dimensions: Option<(u32, u32)>,
    ) -> Result<()>;
    fn attachment_downloaded(
        &self,
        message: MessageId,
        local_path: &str,
        bytes: u64,
    ) -> Result<bool>;
    // profiles
    fn profile(&self, account: AccountId, jid: &str) -> Result<Option<crate::ProfileRecord>>;
    fn profiles(&self, account: AccountId) -> Result<Vec<crate::ProfileRecord>>;
    fn avatar(&self, account: AccountId, id: &str) -> Result<Option<crate::AvatarImage>>;
    // rooms
    fn upsert_room(
        &self,
        account: AccountId,
        jid: &str,
        nick: &str,
        password: Option<&str>,
    ) -> Result<ConversationId>;
    fn room(&self, conversation: ConversationId) -> Result<Option<crate::RoomRecord>>;
    fn room_by_jid(&self, account: AccountId, jid: &str) -> Result<Option<crate::RoomRecord>>;
    fn rooms(&self, account: AccountId) -> Result<Vec<crate::RoomRecord>>;
    fn set_room_nick(&self, conversation: ConversationId, nick: &str) -> Result<bool>;
    fn set_room_name(&self, conversation: ConversationId, name: Option<&str>) -> Result<bool>;
    fn set_room_subject(&self, conversation: ConversationId, subject: Option<&str>) -> Result<bool>;
    fn set_room_cursor(&self, conversation: ConversationId, cursor: &str) -> Result<bool>;
    fn set_room_features(
        &self,
        conversation: ConversationId,
        features: crate::RoomFeatures,
    ) -> Result<bool>;
    fn set_room_left(&self, conversation: ConversationId, removed: Option<&str>) -> Result<bool>;
    fn room_members(&self, conversation: ConversationId) -> Result<Vec<crate::RoomMember>>;
    fn set_room_member(
        &self,
        conversation: ConversationId,
        jid: &str,
        affiliation: Option<&str>,
        nick: Option<&str>,
    ) -> Result<bool>;
    fn replace_room_members(
        &self,
        conversation: ConversationId,
        members: &[crate::RoomMember],
    ) -> Result<()>;
    fn add_room_invitation(&self, account: AccountId, inv: &crate::RoomInvitation) -> Result<bool>;
    fn room_invitations(&self, account: AccountId) -> Result<Vec<crate::RoomInvitation>>;
    fn remove_room_invitation(&self, account: AccountId, room: &str) -> Result<bool>;
    fn message_by_room_reference(
        &self,
        conversation: ConversationId,
        room: &str,
        id: &str,
    ) -> Result<Option<MessageRecord>>;
    fn set_occupant_id(&self, message: MessageId, occupant_id: &str) -> Result<()>;
    // key/value
    fn kv_get(&self, account: Option<AccountId>, key: &str) -> Result<Option<String>>;
    fn kv_set(&self, account: Option<AccountId>, key: &str, value: &str) -> Result<()>;
    fn kv_remove(&self, account: Option<AccountId>, key: &str) -> Result<bool>;
}
