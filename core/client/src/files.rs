//! Files in conversations: sending one (XEP-0363 upload, then a message carrying its URL
//! with XEP-0066 and XEP-0447/0446 metadata), receiving one (stored as the message's
//! attachment, fetched only when the user asks), and the progress of both in the
//! conversation snapshot.
//!
//! A file message is shown at once, as pending with its upload under way; the message
//! itself goes out (through the outbox, so it survives reconnects like any message) only
//! when the upload is complete. Cancelling before that sends nothing.
//!
//! Progress lives in memory (`Files::live`) and is merged into each snapshot as it is
//! built; the database is written when a transfer starts and ends, never per chunk.
//!
//! An upload is built for links that drop every few minutes. It needs no connection to be
//! asked for: it waits, shown as waiting, until the account is online. A transient failure
//! (the connection lost during the slot request, a network failure or a 5xx, 408 or 429
//! answer to the PUT) starts it over with a new slot once a session is up, a few times with
//! backoff; a refusal fails it at once. One cut short by the end of the process is taken up
//! again by the next one when the account comes online: the uploads not finished are
//! listed in the key-value table (`KV_UPLOADS`), since the schema has no index of
//! attachments by state. A failed or cancelled upload can be started again by the user
//! (`retry_upload`), with the same message and origin-id. The hash and dimensions sent are
//! those of the bytes that went up, taken from the stream that fed the PUT.
//!
//! In an OMEMO conversation a file goes by XEP-0454 (OMEMO Media Sharing, `aesgcm`): it
//! is encrypted with AES-256-GCM under a new random key and IV, the ciphertext with its
//! tag is uploaded (the slot asked for its size, tag included, and with no media type: the
//! service sees the file name and the size, as in the XEP's own example, not what it is),
//! and the message is the `aesgcm://` URL alone, queued for OMEMO encryption like any text
//! (`omemo::KIND_TO_ENCRYPT`), with no out-of-band or metadata element in clear. Each
//! attempt of an upload makes a new key and IV: an attempt starts over with a new slot
//! anyway, and one key and IV used on two versions of a file (it may change between
//! attempts) would give both away. Nothing of the key is stored before the upload is
//! complete; then the URL, key included, is stored as the attachment's URL and the
//! message's body in the same transaction that queues the message, so the message sent
//! carries the key the upload used. That a file is to be encrypted is decided when it is
//! sent and kept in its message row (marked encrypted from the start), so that a retry or
//! an upload taken up after a restart encrypts it too, whatever the conversation's choice
//! has become meanwhile. Such files are held in memory whole (see `aesgcm`), hence a
//! smaller limit on their size.
//!
//! A received OMEMO message whose decrypted body is an `aesgcm://` URL (and nothing else,
//! as XEP-0454 asks) is a file: named after the URL's path, its size unknown until it is
//! fetched, never fetched without `download_file`, which checks the tag of the whole file
//! before any plaintext is written, and leaves nothing behind when it does not match.
//!
//! URLs are capabilities (an `aesgcm` one also a key), and names, paths and contents are
//! user data: none of them goes into logs or error strings.

mod aesgcm;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use linnet_store::{
    AttachmentRecord, AttachmentState, ConversationId, ConversationKind, DeliveryState, Direction,
    Encryption, EncryptionPolicy, MessageId, NewMessage, Store, StoreError, Tx,
};
use linnet_xmpp::files::{
    AesgcmUrl, FileHash, FileMeta, HashAlgo, SharedFile, AESGCM_TAG_LEN, MAX_DIMENSION,
};
use linnet_xmpp::rich::Extras;
use linnet_xmpp::upload::{UploadError, UploadService};
use linnet_xmpp::{BareJid, RequestError, Session};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::snapshot::{Attachment, MessageItem, TransferState};
use crate::transfer::{TransferError, Transfers};
use crate::{lock, now_ms, AccountId, Client, ClientError, ClientOptions, Inner, Result};

/// Downloads whose size the sender did not announce stop here.
const DEFAULT_MAX_DOWNLOAD: u64 = 1 << 30;
const READ_CHUNK: usize = 256 * 1024;
/// Progress is published in steps of 1/PROGRESS_STEPS of the file (the publisher coalesces
/// further): a 1 GB file does not mark the snapshot dirty 16,000 times.
const PROGRESS_STEPS: u64 = 100;
/// Names tried for a download before giving up ("name (1).ext", …).
const MAX_NAME_TRIES: u32 = 1000;
/// Attempts of one upload that end in a transient failure before it fails for good: a
/// link that breaks this often is better reported than retried forever.
const MAX_UPLOAD_ATTEMPTS: u32 = 5;
/// kv key (global) of the messages whose upload has not ended, as "12,40". Written in the
/// transactions that start and end an upload, so that it always matches the rows.
const KV_UPLOADS: &str = "files.uploads";
const INTERRUPTED: &str = "the upload was interrupted";
const SOURCE_GONE: &str = "the file to send is no longer there";
/// How a file message to be encrypted is recorded until it is: as encrypted from the start
/// (see the module's documentation), its version fixed when it is encrypted for the
/// peer's devices.
const TO_ENCRYPT: Encryption = Encryption::Omemo03;
/// What an encrypted upload declares itself to be: the service holds ciphertext, and what
/// the file is stays between the peers.
const CIPHERTEXT_TYPE: &str = "application/octet-stream";

/// What file transfers share across the client.
#[derive(Default)]
pub(crate) struct Files {
    /// Built on first use: it holds a connection pool.
    http: std::sync::Mutex<Option<Transfers>>,
    /// Each account's upload service, found once per process.
    services: std::sync::Mutex<HashMap<AccountId, UploadService>>,
    /// Transfers under way, by message (an upload waiting for its next attempt included).
    live: std::sync::Mutex<HashMap<MessageId, Live>>,
    /// Woken when a session comes up (`session_up`), and when the client goes: uploads
    /// waiting for a session look again. Shared with them, so that waiting does not keep
    /// the client alive.
    online: Arc<Notify>,
}

impl Drop for Files {
    fn drop(&mut self) {
        // The client is gone: waiting uploads end, their rows listed for the next client.
        self.online.notify_waiters();
    }
}

struct Live {
    conversation: ConversationId,
    upload: bool,
    done: u64,
    /// The progress last published.
    published: u64,
    cancel: CancellationToken,
    /// The upload is complete and its message on its way: too late to cancel.
    committed: bool,
    /// An upload between attempts: until the account is online, or after a transient
    /// failure (`reason`).
    waiting: bool,
    reason: Option<String>,
}

impl Live {
    fn new(conversation: ConversationId, upload: bool, cancel: CancellationToken) -> Live {
        Live {
            conversation,
            upload,
            done: 0,
            published: 0,
            cancel,
            committed: false,
            waiting: false,
            reason: None,
        }
    }
}

impl Files {
    fn http(&self, inner: &Inner) -> std::result::Result<Transfers, ClientError> {
        let mut http = lock(&self.http);
        if let Some(t) = http.as_ref() {
            return Ok(t.clone());
        }
        let t = Transfers::new(&inner.opts.tls)
            .map_err(|e| ClientError::Internal(format!("file transfers: {e}")))?;
        *http = Some(t.clone());
        Ok(t)
    }

    /// Puts the transfers under way into snapshot items built from the database.
    pub(crate) fn merge(&self, items: &mut [MessageItem]) {
        let live = lock(&self.live);
        for item in items {
            let Some(a) = item.attachment.as_mut() else {
                continue;
            };
            // Files of encrypted messages are aesgcm ones (no other kind is taken from an
            // encrypted message), and ours to encrypt are marked so before they go.
            a.encrypted |= item.encryption != Encryption::Plain;
            match live.get(&item.id) {
                Some(l) if l.upload && l.waiting => {
                    a.state = TransferState::Waiting;
                    a.transferred = 0;
                    a.error = l.reason.clone();
                }
                Some(l) => {
                    a.state = if l.upload {
                        TransferState::Uploading
                    } else {
                        TransferState::Downloading
                    };
                    a.transferred = l.done;
                    a.error = None;
                }
                None if a.state == TransferState::Uploading => {
                    // Listed (see `attachments_of`) but not run by this process yet: left by
                    // an earlier one, taken up when the account is online.
                    a.state = TransferState::Waiting;
                    a.transferred = 0;
                }
                None if a.state == TransferState::Failed
                    && item.direction == Direction::Outgoing
                    && item.state == DeliveryState::Pending =>
                {
                    // An interrupted upload no one takes up (see `attachments_of`): its
                    // message will not go.
                    item.state = DeliveryState::Failed;
                }
                None => {}
            }
        }
    }
}

/// Records progress; publishes when it moved by a step, or ended.
fn report(inner: &Inner, message: MessageId, done: u64, total: u64) {
    let conversation = {
        let mut live = lock(&inner.files.live);
        let Some(l) = live.get_mut(&message) else {
            return;
        };
        l.done = done;
        let step = (total / PROGRESS_STEPS).max(1);
        if done == total || done < l.published || done - l.published >= step {
            l.published = done;
            Some(l.conversation)
        } else {
            None
        }
    };
    if let Some(c) = conversation {
        inner.conversation_snapshot_changed(c);
    }
}

fn bad(what: &str) -> ClientError {
    ClientError::BadInput(what.to_owned())
}

/// Why a transfer ended without its file: the reason shown (and stored) and the error
/// returned, neither naming the file, its path or its URL.
struct Failure {
    cancelled: bool,
    /// The link or the service failed, not the request: the same upload may succeed later.
    transient: bool,
    reason: String,
    error: ClientError,
}

impl Failure {
    fn cancelled() -> Failure {
        Failure {
            cancelled: true,
            transient: false,
            reason: "cancelled".into(),
            error: ClientError::Policy("the transfer was cancelled".into()),
        }
    }

    fn new(reason: impl Into<String>, error: impl FnOnce(String) -> ClientError) -> Failure {
        let reason = reason.into();
        Failure {
            cancelled: false,
            transient: false,
            error: error(reason.clone()),
            reason,
        }
    }

    fn transient(mut self) -> Failure {
        self.transient = true;
        self
    }
}

impl From<TransferError> for Failure {
    fn from(e: TransferError) -> Failure {
        use TransferError as T;
        // Worth another attempt: the link (or a file read) failed, or the server says it is
        // out of service, timed out or wants us to slow down. Other statuses are answers.
        let transient = match &e {
            T::Network(_) | T::Stalled | T::Io(_) => true,
            T::Http { status } => (500..600).contains(status) || matches!(status, 408 | 429),
            _ => false,
        };
        let error: fn(String) -> ClientError = match &e {
            T::Cancelled => return Failure::cancelled(),
            T::Http {
                status: 404 | 410, ..
            } => ClientError::NotFound,
            T::Http { .. } | T::Stalled | T::Network(_) => ClientError::Network,
            T::Tls(_) => ClientError::Tls,
            T::NotHttps | T::BadUrl(_) | T::Redirect(_) | T::TooManyRedirects => {
                ClientError::Policy
            }
            T::TooLarge { .. } | T::BadSlot(_) | T::BadArgument(_) => ClientError::Policy,
            T::Io(_) | T::Config(_) => ClientError::Internal,
        };
        let f = Failure::new(e.to_string(), error);
        if transient {
            f.transient()
        } else {
            f
        }
    }
}

impl From<aesgcm::MediaError> for Failure {
    fn from(e: aesgcm::MediaError) -> Failure {
        use aesgcm::MediaError as M;
        let error: fn(String) -> ClientError = match &e {
            M::TooLarge { .. } | M::TooShort | M::Integrity => ClientError::Policy,
            M::Changed => ClientError::BadInput,
            M::Io(_) | M::Cipher => ClientError::Internal,
        };
        Failure::new(e.to_string(), error)
    }
}

impl From<UploadError> for Failure {
    fn from(e: UploadError) -> Failure {
        // The server's own text may quote the file name: only our words are kept.
        let policy = |s: &str| Failure::new(s, ClientError::Policy);
        match e {
            UploadError::FileTooLarge { max: Some(max) } => policy(&format!(
                "the file is larger than the upload service accepts (at most {max} bytes)"
            )),
            UploadError::FileTooLarge { max: None } => {
                policy("the file is larger than the upload service accepts")
            }
            UploadError::NotAcceptable { .. } => {
                policy("the upload service does not accept this file")
            }
            UploadError::QuotaReached { .. } => Failure::new(
                "the upload service has no room for this file now",
                ClientError::Network,
            ),
            UploadError::NotAllowed { .. } => policy("not allowed to upload files"),
            UploadError::Refused { condition, .. } => {
                policy(&format!("the upload service refused ({condition})"))
            }
            UploadError::BadSlot(why) => policy(&format!("unusable upload slot: {why}")),
            UploadError::BadFilename(_) | UploadError::BadArgument(_) => {
                Failure::new(e.to_string(), ClientError::BadInput)
            }
            UploadError::Request(r) => request_failure(r),
        }
    }
}

fn request_failure(e: RequestError) -> Failure {
    match e {
        // The session ended under the request, or the link went silent: the next session
        // asks again.
        RequestError::Closed | RequestError::Timeout => Failure::new(
            "the connection to the server was lost",
            ClientError::Network,
        )
        .transient(),
        RequestError::Stanza { condition, .. } => Failure::new(
            format!("the server refused ({condition})"),
            ClientError::Policy,
        ),
        RequestError::Unexpected(_) | RequestError::BadArgument(_) => Failure::new(
            "the server's answer was not understood",
            ClientError::Internal,
        ),
    }
}

/// What an upload needs once the message is shown.
struct UploadJob {
    account: AccountId,
    peer: BareJid,
    /// The message's stanza and origin id.
    id: String,
    message: MessageId,
    conversation: ConversationId,
    /// Sent to a group (the peer is the room).
    group: bool,
    /// Shared by XEP-0454: encrypted, and its message sent with OMEMO.
    encrypt: bool,
    path: PathBuf,
    name: String,
    media_type: String,
    size: u64,
    cancel: CancellationToken,
}

impl Client {
    /// Sends the file at `path` to `to`. The message shows at once, pending, with the
    /// upload's progress; once the file is on the server's upload service (XEP-0363) the
    /// message goes out with its URL and metadata, through the outbox like any message.
    /// Returns the message's id; `cancel_transfer` stops the upload (nothing is sent).
    ///
    /// Where the conversation encrypts (OMEMO), the file goes encrypted by XEP-0454 and
    /// its message, the `aesgcm://` URL, with OMEMO; such a file may be at most 100 MiB.
    /// In a group (unencrypted until groups are), the message goes once we are in the
    /// room. Offline, the upload waits for the account to be online; a connection lost on
    /// the way starts it over (see the module's documentation).
    pub async fn send_file(&self, account: AccountId, to: &str, path: &Path) -> Result<MessageId> {
        let peer = BareJid::parse(to)?;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|_| bad("the file cannot be read"))?;
        if !meta.is_file() {
            return Err(bad("not a regular file"));
        }
        let size = meta.len();
        if size == 0 {
            return Err(bad("the file is empty"));
        }
        if size > linnet_xmpp::files::MAX_FILE_SIZE {
            return Err(bad("the file is too large"));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("the file name is not valid UTF-8"))?;
        let name = linnet_xmpp::files::safe_name(name)
            .ok_or_else(|| bad("the file has no usable name"))?;
        // Opened now so that an unreadable file is an error here, not a failed message.
        drop(
            tokio::fs::File::open(path)
                .await
                .map_err(|_| bad("the file cannot be read"))?,
        );
        let media_type = media_type_for(&name).to_owned();
        let local_path = std::path::absolute(path)
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned));

        let own = lock(&self.inner.store).account(account)?.jid;
        let carriage = carriage(&self.inner, account, &peer)?;
        let (group, encrypt) = (carriage.group(), carriage.encrypted());
        if encrypt && size > aesgcm::MAX_PLAINTEXT {
            return Err(too_large_to_encrypt());
        }
        let online = current_session(&self.inner, account).is_some();

        let id = linnet_xmpp::new_id();
        let cancel = CancellationToken::new();
        let (message, conversation) = {
            let mut store = lock(&self.inner.store);
            store.transaction(|tx| {
                let conversation = tx
                    .conversation(account, peer.as_str(), true)?
                    .ok_or(StoreError::NotFound("conversation"))?;
                let message = tx
                    .insert_message(&NewMessage {
                        conversation,
                        direction: Direction::Outgoing,
                        sender: own.clone(),
                        // The URL once uploaded; nothing to show before.
                        body: String::new(),
                        origin_id: Some(id.clone()),
                        stanza_id: None,
                        stanza_id_by: None,
                        timestamp_ms: now_ms(),
                        delivery_state: DeliveryState::Pending,
                        encryption: if encrypt {
                            TO_ENCRYPT
                        } else {
                            Encryption::Plain
                        },
                        error: None,
                        kind: Default::default(),
                        target: None,
                        reply_to: None,
                        markable: false,
                        replaces: None,
                    })?
                    .id();
                tx.insert_attachment(&AttachmentRecord {
                    message,
                    url: None,
                    name: name.clone(),
                    media_type: Some(media_type.clone()),
                    size: Some(size),
                    width: None,
                    height: None,
                    sha256: None,
                    local_path: local_path.clone(),
                    state: AttachmentState::Uploading,
                    error: None,
                })?;
                list_upload(tx, message)?;
                // Registered before the commit, so that no snapshot sees an upload that
                // no one runs.
                let mut live = Live::new(conversation, true, cancel.clone());
                live.waiting = !online;
                lock(&self.inner.files.live).insert(message, live);
                Ok((message, conversation))
            })?
        };
        tracing::debug!(message = message.0, bytes = size, "file upload started");
        self.inner.conversation_changed(conversation);
        self.inner.publish_chat_list();
        let job = UploadJob {
            account,
            peer,
            id,
            message,
            conversation,
            group,
            encrypt,
            path: path.to_owned(),
            name,
            media_type,
            size,
            cancel,
        };
        spawn_upload(&self.inner, job);
        Ok(message)
    }

    /// Starts again the upload of `message`, our file message whose upload failed or was
    /// cancelled (or was cut short by the end of an earlier process): the same message,
    /// with the same id, goes out once the file is up. The file must still be where it
    /// was, unchanged in size. Like `send_file`, it waits for the account to be online.
    /// A file sent in the clear goes encrypted if the conversation encrypts now; one sent
    /// encrypted stays so.
    pub async fn retry_upload(&self, message: MessageId) -> Result<()> {
        let job = upload_job(&self.inner, message)?;
        if lock(&self.inner.files.live).contains_key(&message) {
            return Err(ClientError::Policy("the upload is under way".into()));
        }
        if job.encrypt && job.size > aesgcm::MAX_PLAINTEXT {
            return Err(too_large_to_encrypt());
        }
        let meta = tokio::fs::metadata(&job.path).await;
        if let Some(problem) = source_problem(meta, job.size) {
            return Err(bad(problem));
        }
        launch(
            &self.inner,
            job,
            &[
                AttachmentState::Failed,
                AttachmentState::Cancelled,
                AttachmentState::Uploading,
            ],
        )
    }

    /// Stops the upload or download of `message`'s file. A cancelled upload sends nothing
    /// (the message shows as failed); a cancelled download leaves nothing behind and may
    /// be started again.
    pub fn cancel_transfer(&self, message: MessageId) -> Result<()> {
        {
            let mut live = lock(&self.inner.files.live);
            if let Some(l) = live.get_mut(&message) {
                if l.committed {
                    return Err(ClientError::Policy(
                        "the file is uploaded and its message on its way".into(),
                    ));
                }
                l.cancel.cancel();
                return Ok(());
            }
        }
        // Not run by this process: an upload an earlier one left, not yet taken up again.
        let conversation = {
            let mut store = self.inner.store();
            store.transaction(|tx| {
                let waiting = tx
                    .attachment(message)?
                    .is_some_and(|a| a.state == AttachmentState::Uploading)
                    && listed_uploads(tx)?.contains(&message);
                if !waiting {
                    return Ok(None);
                }
                end_upload(tx, message, AttachmentState::Cancelled, "cancelled")?;
                Ok(Some(tx.message(message)?.conversation))
            })?
        };
        let conversation = conversation
            .ok_or_else(|| ClientError::NotFound("no transfer of this message".into()))?;
        self.inner.conversation_changed(conversation);
        self.inner.publish_chat_list();
        Ok(())
    }

    /// Fetches the file of `message` into `dest_dir` and returns where it was saved (its
    /// own name, made unique there). The download shows in the conversation snapshot with
    /// its progress; its SHA-256, when the sender gave one, is checked before the file
    /// appears in `dest_dir`. Only https URLs are fetched (no other kind is ever stored).
    /// A file shared encrypted (XEP-0454) is fetched from its https URL and decrypted;
    /// one that fails its authentication tag (a wrong key, a damaged or truncated file)
    /// is an error and leaves nothing behind.
    pub async fn download_file(&self, message: MessageId, dest_dir: &Path) -> Result<PathBuf> {
        let (record, conversation) = {
            let store = lock(&self.inner.store);
            let m = store.message(message)?;
            let record = store
                .attachment(message)?
                .ok_or_else(|| ClientError::NotFound("the message has no file".into()))?;
            (record, m.conversation)
        };
        let Some(url) = record.url.clone() else {
            return Err(bad("the file is not uploaded"));
        };
        let dir_ok = tokio::fs::metadata(dest_dir)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !dir_ok {
            return Err(bad("the destination is not a directory"));
        }
        let http = self.inner.files.http(&self.inner)?;
        let cancel = CancellationToken::new();
        {
            let mut live = lock(&self.inner.files.live);
            if live.contains_key(&message) {
                return Err(ClientError::Policy(
                    "a transfer of this file is under way".into(),
                ));
            }
            live.insert(message, Live::new(conversation, false, cancel.clone()));
        }
        self.inner.conversation_snapshot_changed(conversation);
        tracing::debug!(message = message.0, "file download started");
        // Whatever happens to this future (the app may drop it), the transfer ends here.
        let live = LiveGuard {
            inner: &self.inner,
            message,
        };
        let outcome = fetch(&self.inner, &http, &record, &url, dest_dir, &cancel).await;
        let result = {
            let store = lock(&self.inner.store);
            match &outcome {
                Ok((path, bytes)) => store
                    .attachment_downloaded(message, &path.to_string_lossy(), *bytes)
                    .map(|_| ()),
                Err(f) => {
                    let state = if f.cancelled {
                        AttachmentState::Cancelled
                    } else {
                        AttachmentState::Failed
                    };
                    store
                        .set_attachment_state(message, state, Some(&f.reason))
                        .map(|_| ())
                }
            }
        };
        drop(live);
        self.inner.conversation_changed(conversation);
        result?;
        match outcome {
            Ok((path, _)) => {
                tracing::debug!(message = message.0, "file downloaded");
                Ok(path)
            }
            Err(f) => {
                tracing::info!(message = message.0, reason = %f.reason, "file download failed");
                Err(f.error)
            }
        }
    }
}

/// Ends a download's entry among the transfers under way when dropped.
struct LiveGuard<'a> {
    inner: &'a Arc<Inner>,
    message: MessageId,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        let ended = lock(&self.inner.files.live).remove(&self.message);
        if let Some(l) = ended {
            l.cancel.cancel();
            self.inner.conversation_snapshot_changed(l.conversation);
        }
    }
}

/// Downloads to a hidden temporary name in `dir`, decrypts it if it is an encrypted file
/// (into a second such name), checks size and hash, then moves the file to a name of its
/// own there (never replacing an existing file). Returns where it went and its length.
async fn fetch(
    inner: &Arc<Inner>,
    http: &Transfers,
    record: &AttachmentRecord,
    url: &str,
    dir: &Path,
    cancel: &CancellationToken,
) -> std::result::Result<(PathBuf, u64), Failure> {
    let message = record.message;
    let share = if is_aesgcm(url) {
        Some(AesgcmUrl::parse(url).ok_or_else(|| {
            Failure::new(
                "the link to the encrypted file is not valid",
                ClientError::Policy,
            )
        })?)
    } else {
        None
    };
    // What the server holds of an encrypted file is longer by its tag.
    let overhead = if share.is_some() {
        AESGCM_TAG_LEN as u64
    } else {
        0
    };
    let max = match (&share, record.size) {
        (Some(_), size) => size.unwrap_or(aesgcm::MAX_PLAINTEXT) + overhead,
        (None, size) => size.unwrap_or(DEFAULT_MAX_DOWNLOAD),
    };
    let source = share.as_ref().map_or(url, |s| s.https());
    let temp = dir.join(format!(".linnet-{}.part", linnet_xmpp::new_id()));
    let progress_inner = inner.clone();
    let got = http
        .download(
            source,
            &temp,
            max,
            move |done, total| {
                let total = if total == 0 { max } else { total };
                // Shown in bytes of the file, not of what carries it.
                let total = total.saturating_sub(overhead);
                report(&progress_inner, message, done.min(total), total)
            },
            cancel,
        )
        .await;
    let info = got.inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })?;
    let (temp, bytes) = match share {
        None => (temp, info.bytes),
        Some(share) => {
            let plain = dir.join(format!(".linnet-{}.part", linnet_xmpp::new_id()));
            let (src, dest) = (temp.clone(), plain.clone());
            let opened =
                tokio::task::spawn_blocking(move || aesgcm::open_file(&src, &dest, share.secret()))
                    .await;
            let _ = std::fs::remove_file(&temp);
            match opened {
                Ok(Ok(bytes)) => (plain, bytes),
                failed => {
                    let _ = std::fs::remove_file(&plain);
                    return Err(match failed {
                        Ok(Err(e)) => Failure::from(e),
                        _ => Failure::new("decrypting the file failed", ClientError::Internal),
                    });
                }
            }
        }
    };
    let remove_temp = || {
        let _ = std::fs::remove_file(&temp);
    };
    if record.size.is_some_and(|s| s != bytes) {
        remove_temp();
        return Err(Failure::new(
            "the file is not the size its sender announced",
            ClientError::Policy,
        ));
    }
    if let Some(want) = record.sha256 {
        let path = temp.clone();
        let token = cancel.clone();
        let hashed = tokio::task::spawn_blocking(move || hash_file(&path, &token))
            .await
            .map_err(|_| Failure::new("hashing the file failed", ClientError::Internal));
        let hashed = hashed.and_then(|r| {
            r.map_err(|e| match e.kind() {
                std::io::ErrorKind::Interrupted => Failure::cancelled(),
                k => Failure::new(format!("local file: {k}"), ClientError::Internal),
            })
        });
        match hashed {
            Ok(h) if h == want => {}
            Ok(_) => {
                remove_temp();
                return Err(Failure::new(
                    "the file does not match its SHA-256 hash",
                    ClientError::Policy,
                ));
            }
            Err(f) => {
                remove_temp();
                return Err(f);
            }
        }
    }
    if cancel.is_cancelled() {
        remove_temp();
        return Err(Failure::cancelled());
    }
    let dir = dir.to_owned();
    let name = record.name.clone();
    let placed = tokio::task::spawn_blocking(move || place(&temp, &dir, &name))
        .await
        .map_err(|_| Failure::new("saving the file failed", ClientError::Internal))?;
    placed
        .map(|p| (p, bytes))
        .map_err(|e| Failure::new(format!("local file: {}", e.kind()), ClientError::Internal))
}

/// Whether `url` is an `aesgcm://` one (valid or not).
fn is_aesgcm(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(linnet_xmpp::files::AESGCM_SCHEME))
}

/// Moves `temp` to a free name in `dir` based on `name`: "name.ext", then "name (1).ext"
/// and so on. Hard links claim the name atomically without replacing anything; where the
/// file system has none, the name is claimed by creating it and then replaced.
fn place(temp: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, Some(e)),
        _ => (name, None),
    };
    let result = (|| {
        for n in 0..MAX_NAME_TRIES {
            let candidate = match (n, ext) {
                (0, _) => name.to_owned(),
                (n, Some(e)) => format!("{stem} ({n}).{e}"),
                (n, None) => format!("{stem} ({n})"),
            };
            let dest = dir.join(candidate);
            match std::fs::hard_link(temp, &dest) {
                Ok(()) => return Ok(dest),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) => {}
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dest)
            {
                Ok(_) => {
                    std::fs::rename(temp, &dest)?;
                    return Ok(dest);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
    })();
    let _ = std::fs::remove_file(temp);
    result
}

/// SHA-256 of the file. Checks `cancel` between chunks: a cancelled transfer stops
/// hashing too.
fn hash_file(path: &Path, cancel: &CancellationToken) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if cancel.is_cancelled() {
            return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hasher.finalize().into())
}

/// The messages listed as uploads not yet ended (see `KV_UPLOADS`).
fn parse_listed(value: Option<String>) -> Vec<MessageId> {
    value
        .unwrap_or_default()
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .map(MessageId)
        .collect()
}

fn listed_uploads(tx: &Tx<'_>) -> std::result::Result<Vec<MessageId>, StoreError> {
    Ok(parse_listed(tx.kv_get(None, KV_UPLOADS)?))
}

fn write_listed(tx: &Tx<'_>, listed: &[MessageId]) -> std::result::Result<(), StoreError> {
    if listed.is_empty() {
        tx.kv_remove(None, KV_UPLOADS)?;
        return Ok(());
    }
    let value: Vec<String> = listed.iter().map(|m| m.0.to_string()).collect();
    tx.kv_set(None, KV_UPLOADS, &value.join(","))
}

fn list_upload(tx: &Tx<'_>, message: MessageId) -> std::result::Result<(), StoreError> {
    let mut listed = listed_uploads(tx)?;
    if !listed.contains(&message) {
        listed.push(message);
        write_listed(tx, &listed)?;
    }
    Ok(())
}

fn unlist_upload(tx: &Tx<'_>, message: MessageId) -> std::result::Result<(), StoreError> {
    let mut listed = listed_uploads(tx)?;
    let before = listed.len();
    listed.retain(|m| *m != message);
    if listed.len() != before {
        write_listed(tx, &listed)?;
    }
    Ok(())
}

/// Records an upload that ended without its file: the file's state and why, the message
/// failed, and the upload no longer listed.
fn end_upload(
    tx: &Tx<'_>,
    message: MessageId,
    state: AttachmentState,
    reason: &str,
) -> std::result::Result<(), StoreError> {
    tx.set_attachment_state(message, state, Some(reason))?;
    tx.set_delivery_state(message, DeliveryState::Failed)?;
    unlist_upload(tx, message)
}

/// How a file goes to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carriage {
    Plain,
    /// To a group, in the clear.
    Group,
    /// XEP-0454, its message with OMEMO.
    Encrypted,
    /// XEP-0454 to a group, its message with OMEMO for every member (see `omemo::group`).
    GroupEncrypted,
}

impl Carriage {
    fn group(self) -> bool {
        matches!(self, Carriage::Group | Carriage::GroupEncrypted)
    }

    fn encrypted(self) -> bool {
        matches!(self, Carriage::Encrypted | Carriage::GroupEncrypted)
    }
}

/// How a file to `peer` goes now, by the conversation's choice: encrypted where a text
/// message would be (or may be: with `Auto`, unless the peer is known to have no device).
fn carriage(inner: &Inner, account: AccountId, peer: &BareJid) -> Result<Carriage> {
    let mut store = inner.store();
    let carriage = store.transaction(|tx| {
        let conversation = tx.conversation(account, peer.as_str(), false)?;
        let policy = match conversation {
            Some(c) => {
                let policy = tx.encryption_policy(c)?;
                if tx.conversation_info(c)?.kind == ConversationKind::GroupChat {
                    // With `Auto`, as its text goes: encrypted in a private group.
                    let private = tx
                        .room(c)?
                        .is_some_and(|r| r.members_only && r.non_anonymous);
                    let encrypt = match policy {
                        EncryptionPolicy::Plain => false,
                        EncryptionPolicy::Omemo => true,
                        EncryptionPolicy::Auto => private,
                    };
                    return Ok(if encrypt {
                        Carriage::GroupEncrypted
                    } else {
                        Carriage::Group
                    });
                }
                policy
            }
            None => EncryptionPolicy::default(),
        };
        let encrypt = match policy {
            EncryptionPolicy::Plain => false,
            EncryptionPolicy::Omemo => true,
            EncryptionPolicy::Auto => crate::omemo::may_have_devices(tx, account, peer)?,
        };
        Ok(if encrypt {
            Carriage::Encrypted
        } else {
            Carriage::Plain
        })
    })?;
    Ok(carriage)
}

fn too_large_to_encrypt() -> ClientError {
    bad(&format!(
        "the file is too large to send encrypted (at most {} MiB)",
        aesgcm::MAX_PLAINTEXT >> 20
    ))
}

/// The account's session, if it is online.
fn current_session(inner: &Inner, account: AccountId) -> Option<Session> {
    let slot = lock(&inner.runtimes)
        .get(&account)
        .map(|rt| rt.session.clone())?;
    let session = lock(&slot).clone();
    session.filter(|s| !s.is_closed())
}

/// Why the file to send cannot be sent as it was chosen, if it cannot.
fn source_problem(meta: std::io::Result<std::fs::Metadata>, size: u64) -> Option<&'static str> {
    match meta {
        Ok(m) if m.is_file() && m.len() == size => None,
        Ok(m) if m.is_file() => Some("the file to send has changed size since it was chosen"),
        Ok(_) => Some(SOURCE_GONE),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(SOURCE_GONE),
        Err(_) => Some("the file to send cannot be read"),
    }
}

/// A session came up on `account` (called by the account's task once it is published):
/// uploads waiting for one go on, and those an earlier process left are taken up again.
pub(crate) fn session_up(inner: &Arc<Inner>, account: AccountId) {
    inner.files.online.notify_waiters();
    let listed = inner.store().kv_get(None, KV_UPLOADS).map(parse_listed);
    let listed = match listed {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reading the unfinished uploads failed");
            return;
        }
    };
    for message in listed {
        if lock(&inner.files.live).contains_key(&message) {
            continue;
        }
        match upload_job(inner, message) {
            Ok(job) if job.account != account => {}
            Ok(job) => match source_problem(std::fs::metadata(&job.path), job.size) {
                None => match launch(inner, job, &[AttachmentState::Uploading]) {
                    Ok(()) => tracing::debug!(message = message.0, "file upload taken up again"),
                    Err(e) => {
                        tracing::debug!(message = message.0, error = %e, "file upload not taken up")
                    }
                },
                Some(reason) => {
                    tracing::info!(
                        message = message.0,
                        reason,
                        "file upload cannot be taken up"
                    );
                    fail_listed(inner, message, reason);
                }
            },
            Err(e) => {
                // Not an upload that can go on (its message deleted, say): no longer listed.
                // A row still "uploading" then shows as interrupted.
                tracing::debug!(message = message.0, error = %e, "dropping a listed upload");
                fail_listed(inner, message, INTERRUPTED);
            }
        }
    }
}

/// Ends a listed upload no process runs: failed with `reason` if its row still says
/// uploading, unlisted in any case.
fn fail_listed(inner: &Inner, message: MessageId, reason: &str) {
    let ended = {
        let mut store = inner.store();
        store.transaction(|tx| {
            let uploading = tx
                .attachment(message)?
                .is_some_and(|a| a.state == AttachmentState::Uploading);
            if !uploading {
                unlist_upload(tx, message)?;
                return Ok(None);
            }
            end_upload(tx, message, AttachmentState::Failed, reason)?;
            Ok(Some(tx.message(message)?.conversation))
        })
    };
    match ended {
        Ok(Some(conversation)) => {
            inner.conversation_changed(conversation);
            inner.publish_chat_list();
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(message = message.0, error = %e, "recording a failed upload failed")
        }
    }
}

/// The upload of `message`, one of our file messages whose upload did not end with the
/// file sent, as stored. Whether it may start now is for the caller to check.
fn upload_job(inner: &Inner, message: MessageId) -> Result<UploadJob> {
    let store = inner.store();
    let m = store.message(message)?;
    let a = store
        .attachment(message)?
        .ok_or_else(|| bad("the message shares no file"))?;
    let not_ours = || bad("the file was not sent from here");
    if m.direction != Direction::Outgoing || a.url.is_some() {
        return Err(match a.state {
            AttachmentState::Uploaded => {
                ClientError::Policy("the file is uploaded and its message sent".into())
            }
            _ => not_ours(),
        });
    }
    if !matches!(
        a.state,
        AttachmentState::Uploading | AttachmentState::Failed | AttachmentState::Cancelled
    ) {
        return Err(not_ours());
    }
    let (Some(id), Some(size)) = (m.origin_id, a.size) else {
        return Err(not_ours());
    };
    let info = store.conversation_info(m.conversation)?;
    let peer = BareJid::parse(&info.peer)?;
    drop(store);
    // Chosen encrypted, it stays so; chosen in the clear, it is encrypted if the
    // conversation encrypts now.
    let encrypt =
        m.encryption != Encryption::Plain || carriage(inner, m.account, &peer)?.encrypted();
    Ok(UploadJob {
        account: m.account,
        peer,
        id,
        message,
        conversation: m.conversation,
        group: info.kind == ConversationKind::GroupChat,
        encrypt,
        // No path: the file cannot be found again, as if it were gone.
        path: a.local_path.map(PathBuf::from).unwrap_or_default(),
        media_type: a
            .media_type
            .unwrap_or_else(|| media_type_for(&a.name).to_owned()),
        name: a.name,
        size,
        cancel: CancellationToken::new(),
    })
}

/// Starts `job` again if its file is still in one of the states `from`: shown pending and
/// uploading (or waiting) at once, listed, and run.
fn launch(inner: &Arc<Inner>, job: UploadJob, from: &[AttachmentState]) -> Result<()> {
    let online = current_session(inner, job.account).is_some();
    {
        let mut store = inner.store();
        store.transaction(|tx| {
            let ready = tx
                .attachment(job.message)?
                .is_some_and(|a| a.url.is_none() && from.contains(&a.state));
            if !ready {
                return Err(StoreError::Conflict(
                    "the file's upload changed meanwhile".into(),
                ));
            }
            if lock(&inner.files.live).contains_key(&job.message) {
                return Err(StoreError::Conflict("the upload is under way".into()));
            }
            tx.set_attachment_state(job.message, AttachmentState::Uploading, None)?;
            tx.set_delivery_state(job.message, DeliveryState::Pending)?;
            if job.encrypt {
                tx.set_message_encryption(job.message, TO_ENCRYPT)?;
            }
            list_upload(tx, job.message)
        })?;
        // Under the store's lock, which snapshots are built under: none sees the row
        // uploading without its upload.
        let mut live = Live::new(job.conversation, true, job.cancel.clone());
        live.waiting = !online;
        lock(&inner.files.live).insert(job.message, live);
    }
    inner.conversation_changed(job.conversation);
    inner.publish_chat_list();
    spawn_upload(inner, job);
    Ok(())
}

fn spawn_upload(inner: &Arc<Inner>, job: UploadJob) {
    tokio::spawn(run_upload(
        Arc::downgrade(inner),
        inner.files.online.clone(),
        job,
    ));
}

/// Why an upload stopped waiting for a session without one.
enum Stop {
    Cancelled,
    /// The client was dropped.
    Gone,
}

/// Waits until `account` has a session. Holds the client only to look: a client dropped
/// meanwhile ends the wait (its `Files` wakes us on the way out).
async fn wait_online(
    client: &Weak<Inner>,
    online: &Notify,
    account: AccountId,
    cancel: &CancellationToken,
) -> std::result::Result<Session, Stop> {
    loop {
        // Enabled before looking, so that a session coming up in between is not missed.
        let woken = online.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        match client.upgrade() {
            None => return Err(Stop::Gone),
            Some(inner) => {
                if let Some(s) = current_session(&inner, account) {
                    return Ok(s);
                }
            }
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
        }
    }
}

/// Before attempt `failures + 1`: exponential from the reconnect's first delay, capped at
/// its longest, with jitter so that uploads cut together do not come back together.
fn retry_delay(opts: &ClientOptions, failures: u32) -> Duration {
    let base = opts
        .min_backoff
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(opts.max_backoff);
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
}

fn set_waiting(inner: &Inner, message: MessageId, waiting: bool, reason: Option<String>) {
    let conversation = {
        let mut live = lock(&inner.files.live);
        let Some(l) = live.get_mut(&message) else {
            return;
        };
        l.waiting = waiting;
        l.reason = reason;
        l.done = 0;
        l.published = 0;
        l.conversation
    };
    inner.conversation_snapshot_changed(conversation);
}

/// Runs an upload to its end: the message goes out, or the row shows why not. Between
/// attempts it holds no strong reference to the client: a client dropped meanwhile ends
/// it, the upload still listed for the next one.
async fn run_upload(client: Weak<Inner>, online: Arc<Notify>, job: UploadJob) {
    let mut failures = 0;
    loop {
        let session = match wait_online(&client, &online, job.account, &job.cancel).await {
            Ok(s) => s,
            Err(Stop::Cancelled) => {
                if let Some(inner) = client.upgrade() {
                    finish(&inner, &job, Err(Failure::cancelled()));
                }
                return;
            }
            Err(Stop::Gone) => return,
        };
        let Some(inner) = client.upgrade() else {
            return;
        };
        set_waiting(&inner, job.message, false, None);
        let outcome = upload(&inner, &job, &session).await;
        drop(session);
        match outcome {
            Err(f) if f.transient && !job.cancel.is_cancelled() => {
                failures += 1;
                if failures >= MAX_UPLOAD_ATTEMPTS {
                    let reason = format!("{} (gave up after {failures} attempts)", f.reason);
                    finish(&inner, &job, Err(Failure { reason, ..f }));
                    return;
                }
                tracing::info!(
                    message = job.message.0,
                    attempt = failures,
                    reason = %f.reason,
                    "file upload interrupted; it starts again"
                );
                let delay = retry_delay(&inner.opts, failures);
                set_waiting(&inner, job.message, true, Some(f.reason));
                drop(inner);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = job.cancel.cancelled() => {}
                }
            }
            outcome => {
                finish(&inner, &job, outcome);
                return;
            }
        }
    }
}

/// Records how an upload ended (a success was recorded with its message, see
/// `send_uploaded`) and takes it off the transfers under way.
fn finish(inner: &Inner, job: &UploadJob, outcome: std::result::Result<(), Failure>) {
    let message = job.message;
    if let Err(f) = outcome {
        if f.cancelled {
            tracing::debug!(message = message.0, "file upload cancelled");
        } else {
            tracing::info!(message = message.0, reason = %f.reason, "file upload failed");
        }
        let state = if f.cancelled {
            AttachmentState::Cancelled
        } else {
            AttachmentState::Failed
        };
        let stored = inner
            .store()
            .transaction(|tx| end_upload(tx, message, state, &f.reason));
        if let Err(e) = stored {
            tracing::error!(message = message.0, error = %e, "recording a failed upload failed");
        }
    }
    lock(&inner.files.live).remove(&message);
    job.cancel.cancel();
    inner.conversation_changed(job.conversation);
    inner.publish_chat_list();
}

/// One attempt: a slot, the PUT, then the message queued. An encrypted file is read and
/// encrypted first, under a key of this attempt's own.
async fn upload(
    inner: &Arc<Inner>,
    job: &UploadJob,
    session: &Session,
) -> std::result::Result<(), Failure> {
    let cancel = &job.cancel;
    // Each attempt finds the file again: it may have gone or changed since it was chosen.
    if let Some(problem) = source_problem(tokio::fs::metadata(&job.path).await, job.size) {
        return Err(Failure::new(problem, ClientError::BadInput));
    }
    let http = inner
        .files
        .http(inner)
        .map_err(|e| Failure::new(e.to_string(), |_| e.clone()))?;
    let sealed = if job.encrypt {
        Some(seal(job).await?)
    } else {
        None
    };
    // XEP-0454 §7: the slot is for what goes up, tag included.
    let upload_size = sealed.as_ref().map_or(job.size, |s| s.body.len() as u64);
    let declared_type = if sealed.is_some() {
        CIPHERTEXT_TYPE
    } else {
        &job.media_type
    };
    let service = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Failure::cancelled()),
        s = upload_service(inner, job.account, session) => s?,
    };
    if service.max_file_size.is_some_and(|max| upload_size > max) {
        return Err(UploadError::FileTooLarge {
            max: service.max_file_size,
        }
        .into());
    }
    let slot = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Failure::cancelled()),
        s = linnet_xmpp::upload::request_slot(
            session, &service.jid, &job.name, upload_size, declared_type,
        ) => s,
    };
    let slot = slot.map_err(|e| {
        if matches!(e, UploadError::Request(_) | UploadError::Refused { .. }) {
            // Maybe the service moved or went away: look again next time.
            lock(&inner.files.services).remove(&job.account);
        }
        Failure::from(e)
    })?;
    let progress_inner = inner.clone();
    let message = job.message;
    let size = job.size;
    // Progress in bytes of the file: the tag's few bytes are not shown.
    let progress = move |done: u64, _: u64| report(&progress_inner, message, done.min(size), size);
    let Some(sealed) = sealed else {
        let sent = http
            .upload(&slot, &job.path, &job.media_type, progress, cancel)
            .await?;
        if sent.bytes != job.size {
            return Err(Failure::new(
                "the file changed while it was being sent",
                ClientError::BadInput,
            ));
        }
        commit(inner, job)?;
        let dimensions = if job.media_type.starts_with("image/") {
            image_dimensions(&sent.head)
        } else {
            None
        };
        let file = SharedFile {
            url: slot.get_url.clone(),
            meta: FileMeta {
                name: Some(job.name.clone()),
                media_type: Some(job.media_type.clone()),
                size: Some(job.size),
                width: dimensions.map(|d| d.0),
                height: dimensions.map(|d| d.1),
                desc: None,
                hashes: vec![FileHash {
                    algo: HashAlgo::Sha256,
                    value: sent.sha256.to_vec(),
                }],
            },
        };
        send_uploaded(inner, job, file, sent.sha256, dimensions)
            .map_err(|e| Failure::new(e.to_string(), |_| e.clone()))?;
        tracing::debug!(message = job.message.0, "file uploaded; message queued");
        return Ok(());
    };
    // Checked before the upload: a download URL that cannot carry the key is no use.
    let share = AesgcmUrl::new(&slot.get_url, sealed.key).ok_or_else(|| {
        Failure::new(
            "the upload service's download URL cannot carry an encrypted file's key",
            ClientError::Policy,
        )
    })?;
    http.upload_bytes(&slot, sealed.body, CIPHERTEXT_TYPE, progress, cancel)
        .await?;
    commit(inner, job)?;
    send_encrypted(inner, job, &share, sealed.sha256, sealed.dimensions)
        .map_err(|e| Failure::new(e.to_string(), |_| e.clone()))?;
    tracing::debug!(
        message = job.message.0,
        "encrypted file uploaded; message queued for encryption"
    );
    Ok(())
}

/// The upload is complete: from here on its message goes, and cancelling is too late.
fn commit(inner: &Inner, job: &UploadJob) -> std::result::Result<(), Failure> {
    let mut live = lock(&inner.files.live);
    match live.get_mut(&job.message) {
        Some(l) if !l.cancel.is_cancelled() => {
            l.committed = true;
            Ok(())
        }
        _ => Err(Failure::cancelled()),
    }
}

/// A file encrypted for upload (XEP-0454), with what is learnt from its plaintext on the
/// way.
struct Sealed {
    key: linnet_xmpp::files::MediaKey,
    /// Ciphertext and tag.
    body: Vec<u8>,
    sha256: [u8; 32],
    dimensions: Option<(u32, u32)>,
}

/// Reads and encrypts the job's file under a new key (off the async threads: the whole
/// file is read and encrypted at once).
async fn seal(job: &UploadJob) -> std::result::Result<Sealed, Failure> {
    let path = job.path.clone();
    let size = job.size;
    let image = job.media_type.starts_with("image/");
    let task = tokio::task::spawn_blocking(move || {
        let key = aesgcm::new_key();
        let mut sha256 = [0u8; 32];
        let mut dimensions = None;
        let body = aesgcm::seal_file(&path, size, &key, |plain| {
            sha256 = Sha256::digest(plain).into();
            if image {
                let head = plain.get(..crate::transfer::HEAD_LEN).unwrap_or(plain);
                dimensions = image_dimensions(head);
            }
        })?;
        Ok::<_, aesgcm::MediaError>(Sealed {
            key,
            body,
            sha256,
            dimensions,
        })
    });
    let sealed = tokio::select! {
        biased;
        // The task runs to its end regardless; its result, key included, is dropped.
        _ = job.cancel.cancelled() => return Err(Failure::cancelled()),
        r = task => r,
    };
    sealed
        .map_err(|_| Failure::new("encrypting the file failed", ClientError::Internal))?
        .map_err(Failure::from)
}

/// The account's upload service: found once, then remembered.
async fn upload_service(
    inner: &Inner,
    account: AccountId,
    session: &Session,
) -> std::result::Result<UploadService, Failure> {
    if let Some(s) = lock(&inner.files.services).get(&account) {
        return Ok(s.clone());
    }
    let found = linnet_xmpp::upload::discover_upload_service(session)
        .await
        .map_err(request_failure)?
        .ok_or_else(|| {
            Failure::new(
                "the server offers no file upload (XEP-0363)",
                ClientError::Policy,
            )
        })?;
    lock(&inner.files.services).insert(account, found.clone());
    Ok(found)
}

/// Records the finished upload and queues its message: stored and put in the outbox in
/// one transaction, then sent if a session is up (else the next session sends it).
fn send_uploaded(
    inner: &Inner,
    job: &UploadJob,
    file: SharedFile,
    sha256: [u8; 32],
    dimensions: Option<(u32, u32)>,
) -> Result<()> {
    let url = file.url.clone();
    let extras = Extras {
        file: Some(Box::new(file)),
        ..Extras::default()
    };
    let body = extras.wire_body(&url);
    let (kind, stanza) = if job.group {
        let s = linnet_xmpp::muc::groupchat_message(&job.peer, &body, &job.id, &extras);
        (crate::groups::KIND_GROUPCHAT, s)
    } else {
        let s = linnet_xmpp::chat_stanza(&job.peer, &body, &job.id, &extras);
        ("chat", s)
    };
    let stanza = linnet_xmpp::stanza_to_string(&stanza);
    // Held while queueing and sending, as `queue_outgoing` does: a session coming up
    // re-sends the outbox either before the entry exists or after it was sent.
    let slot = lock(&inner.runtimes)
        .get(&job.account)
        .map(|rt| rt.session.clone());
    let session = slot.as_ref().map(|s| lock(s));
    {
        let mut store = inner.store();
        store.transaction(|tx| {
            tx.attachment_uploaded(job.message, &url, Some(sha256), dimensions)?;
            tx.outbox_push(job.account, Some(job.message), kind, &stanza)?;
            unlist_upload(tx, job.message)
        })?;
    }
    // A group's message waits in the outbox until we are in the room (see `groups`).
    let now = !job.group || inner.group_joined(job.conversation);
    if let Some(s) = session
        .as_ref()
        .and_then(|g| g.as_ref())
        .filter(|s| now && !s.is_closed())
    {
        // If this fails the outbox still has it: the next session sends it.
        let _ = s.send_raw_tracked(&stanza, &job.id);
    }
    Ok(())
}

/// Records the finished encrypted upload and queues its message for OMEMO: the
/// `aesgcm://` URL, key included, becomes the attachment's URL and the message's body (what
/// `omemo::send_one` encrypts), with the outbox entry, in one transaction.
fn send_encrypted(
    inner: &Inner,
    job: &UploadJob,
    share: &AesgcmUrl,
    sha256: [u8; 32],
    dimensions: Option<(u32, u32)>,
) -> Result<()> {
    let url = share.to_url();
    let wake = lock(&inner.runtimes)
        .get(&job.account)
        .map(|rt| rt.send_wake.clone());
    inner.store().transaction(|tx| {
        tx.attachment_uploaded(job.message, &url, Some(sha256), dimensions)?;
        // XEP-0454 §5: nothing but the URL, no out-of-band element or metadata.
        let kind = if job.group {
            crate::omemo::KIND_GROUP_TO_ENCRYPT
        } else {
            crate::omemo::KIND_TO_ENCRYPT
        };
        tx.outbox_push(
            job.account,
            Some(job.message),
            kind,
            &Extras::default().to_xml(),
        )?;
        unlist_upload(tx, job.message)
    })?;
    if let Some(w) = wake {
        w.notify_one();
    }
    Ok(())
}

/// Stores the file a received message shares, if it shares one we may fetch. Files in
/// encrypted messages are not taken from outside the encryption: those come by XEP-0454
/// inside it (see `store_received_encrypted`).
pub(crate) fn store_received(
    tx: &Tx<'_>,
    message: MessageId,
    encrypted: bool,
    rich: &linnet_xmpp::rich::Rich,
) -> std::result::Result<(), StoreError> {
    if encrypted {
        return Ok(());
    }
    let Some(f) = &rich.file else {
        return Ok(());
    };
    tx.insert_attachment(&AttachmentRecord {
        message,
        url: Some(f.url.clone()),
        name: f.meta.name.clone().unwrap_or_else(|| "file".to_owned()),
        media_type: f.meta.media_type.clone(),
        size: f.meta.size,
        width: f.meta.width,
        height: f.meta.height,
        sha256: f.meta.sha256(),
        local_path: None,
        state: AttachmentState::Available,
        error: None,
    })?;
    Ok(())
}

/// Stores the file a received OMEMO message shares by XEP-0454, if its decrypted `body`
/// is one (see `AesgcmUrl::from_body`); `encryption` is how the message was decrypted
/// (`Plain`: it was not, and shares nothing this way). The file is named after its URL;
/// its size is known once fetched. Nothing is fetched here.
pub(crate) fn store_received_encrypted(
    tx: &Tx<'_>,
    message: MessageId,
    encryption: Encryption,
    body: &str,
) -> std::result::Result<(), StoreError> {
    if encryption == Encryption::Plain {
        return Ok(());
    }
    let Some(share) = AesgcmUrl::from_body(body) else {
        return Ok(());
    };
    let name = share.name().unwrap_or_else(|| "file".to_owned());
    // The type by the name's extension: advisory, as a sender's word would be.
    let media_type = Some(media_type_for(&name).to_owned());
    tx.insert_attachment(&AttachmentRecord {
        message,
        // Key included: the database is encrypted, and the key is needed to fetch it.
        url: Some(share.to_url().to_string()),
        name,
        media_type,
        size: None,
        width: None,
        height: None,
        sha256: None,
        local_path: None,
        state: AttachmentState::Available,
        error: None,
    })?;
    Ok(())
}

/// The attachments of a page of messages, by message. An upload stored as under way
/// that is not listed (see `KV_UPLOADS`) is one nothing will take up: it comes back as
/// failed, interrupted.
pub(crate) fn attachments_of(
    store: &Store,
    ids: &[MessageId],
) -> std::result::Result<HashMap<MessageId, AttachmentRecord>, StoreError> {
    let mut found: HashMap<MessageId, AttachmentRecord> = store
        .attachments(ids)?
        .into_iter()
        .map(|a| (a.message, a))
        .collect();
    if found
        .values()
        .any(|a| a.state == AttachmentState::Uploading)
    {
        let listed = parse_listed(store.kv_get(None, KV_UPLOADS)?);
        for a in found.values_mut() {
            if a.state == AttachmentState::Uploading && !listed.contains(&a.message) {
                a.state = AttachmentState::Failed;
                a.error = Some(INTERRUPTED.into());
            }
        }
    }
    Ok(found)
}

/// `body` without the file's URL when it is all of it or ends with it: the file is shown
/// instead. The body of an encrypted file's message (the `aesgcm://` URL, perhaps with a
/// thumbnail) is never shown: it holds the key, and XEP-0454 §6 forbids offering it as a
/// link.
/// `body` as it may be quoted or excerpted elsewhere (a reply's fallback, its preview):
/// an encrypted file's body is its `aesgcm://` link, whose fragment is the file's key, so
/// it is never copied out of its own message.
pub(crate) fn quotable(body: &str) -> &str {
    if AesgcmUrl::from_body(body).is_some() {
        ""
    } else {
        body
    }
}

pub(crate) fn without_url(body: String, url: Option<&str>) -> String {
    let Some(url) = url else { return body };
    if is_aesgcm(url) && AesgcmUrl::from_body(&body).is_some() {
        return String::new();
    }
    let t = body.trim();
    if t == url {
        String::new()
    } else if let Some(rest) = t.strip_suffix(url) {
        rest.trim_end().to_owned()
    } else {
        body
    }
}

/// A message's body as shown and its attachment: a body that is only the file's URL (or
/// text ending with it) does not show the URL again.
pub(crate) fn shown(
    found: &mut HashMap<MessageId, AttachmentRecord>,
    message: MessageId,
    body: String,
) -> (String, Option<Attachment>) {
    let Some(a) = found.remove(&message) else {
        return (body, None);
    };
    let body = without_url(body, a.url.as_deref());
    let transferred = match a.state {
        AttachmentState::Uploaded | AttachmentState::Downloaded => a.size.unwrap_or(0),
        _ => 0,
    };
    let state = match a.state {
        AttachmentState::Uploading => TransferState::Uploading,
        AttachmentState::Uploaded => TransferState::Uploaded,
        AttachmentState::Available => TransferState::Available,
        AttachmentState::Downloaded => TransferState::Downloaded,
        AttachmentState::Failed => TransferState::Failed,
        AttachmentState::Cancelled => TransferState::Cancelled,
    };
    let attachment = Attachment {
        name: a.name,
        size: a.size,
        media_type: a.media_type,
        width: a.width,
        height: a.height,
        sha256: a
            .sha256
            .map(|h| h.iter().map(|b| format!("{b:02x}")).collect()),
        state,
        transferred,
        local_path: a.local_path,
        error: a.error,
        encrypted: a.url.as_deref().is_some_and(is_aesgcm),
    };
    (body, Some(attachment))
}

/// The media type of a file by its name's extension; `application/octet-stream` when
/// unknown (XEP-0446's default).
pub fn media_type_for(name: &str) -> &'static str {
    const TYPES: &[(&str, &str)] = &[
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("png", "image/png"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("heic", "image/heic"),
        ("heif", "image/heif"),
        ("avif", "image/avif"),
        ("bmp", "image/bmp"),
        ("svg", "image/svg+xml"),
        ("mp4", "video/mp4"),
        ("m4v", "video/mp4"),
        ("mov", "video/quicktime"),
        ("webm", "video/webm"),
        ("mkv", "video/x-matroska"),
        ("3gp", "video/3gpp"),
        ("mp3", "audio/mpeg"),
        ("m4a", "audio/mp4"),
        ("aac", "audio/aac"),
        ("ogg", "audio/ogg"),
        ("oga", "audio/ogg"),
        ("opus", "audio/ogg"),
        ("wav", "audio/wav"),
        ("flac", "audio/flac"),
        ("pdf", "application/pdf"),
        ("txt", "text/plain"),
        ("md", "text/markdown"),
        ("csv", "text/csv"),
        ("ics", "text/calendar"),
        ("vcf", "text/vcard"),
        ("json", "application/json"),
        ("zip", "application/zip"),
        ("gz", "application/gzip"),
        ("tar", "application/x-tar"),
        ("7z", "application/x-7z-compressed"),
        ("odt", "application/vnd.oasis.opendocument.text"),
        ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
        ("doc", "application/msword"),
        (
            "docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        ("apk", "application/vnd.android.package-archive"),
    ];
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or("application/octet-stream", |(_, t)| t)
}

/// Width and height of a PNG, GIF or JPEG image from its first bytes; `None` for anything
/// else or anything implausible. Nothing is decoded beyond the headers.
pub(crate) fn image_dimensions(head: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| head.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let le16 = |i: usize| head.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let be32 = |i: usize| {
        head.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let plausible = |w: u32, h: u32| {
        ((1..=MAX_DIMENSION).contains(&w) && (1..=MAX_DIMENSION).contains(&h)).then_some((w, h))
    };
    if head.starts_with(b"\x89PNG\r\n\x1a\n") && head.get(12..16) == Some(b"IHDR") {
        return plausible(be32(16)?, be32(20)?);
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return plausible(u32::from(le16(6)?), u32::from(le16(8)?));
    }
    if head.starts_with(&[0xFF, 0xD8]) {
        let mut i = 2;
        loop {
            if *head.get(i)? != 0xFF {
                return None;
            }
            let marker = *head.get(i + 1)?;
            match marker {
                // Fill byte before a marker.
                0xFF => i += 1,
                // Markers without a length.
                0x01 | 0xD0..=0xD8 => i += 2,
                // Start of frame (not DHT, JPG or DAC, which share the range): precision,
                // height, width.
                0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                    return plausible(u32::from(be16(i + 7)?), u32::from(be16(i + 5)?));
                }
                // Start of scan or end of image before any frame header.
                0xDA | 0xD9 => return None,
                _ => {
                    let len = usize::from(be16(i + 2)?);
                    if len < 2 {
                        return None;
                    }
                    i += 2 + len;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn media_types_by_extension() {
        assert_eq!(media_type_for("a.JPG"), "image/jpeg");
        assert_eq!(media_type_for("song.opus"), "audio/ogg");
        assert_eq!(media_type_for("archive.tar.gz"), "application/gzip");
        assert_eq!(media_type_for("README"), "application/octet-stream");
        assert_eq!(media_type_for(".png"), "application/octet-stream");
        assert_eq!(media_type_for("x.unknown"), "application/octet-stream");
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 6, 0, 0, 0]);
        v
    }

    #[test]
    fn image_headers_give_dimensions() {
        assert_eq!(image_dimensions(&png(640, 480)), Some((640, 480)));
        assert_eq!(image_dimensions(&png(0, 480)), None);
        assert_eq!(image_dimensions(&png(u32::MAX, 480)), None);
        assert_eq!(image_dimensions(&png(640, 480)[..20]), None, "truncated");
        let gif = b"GIF89a\x80\x02\xe0\x01rest";
        assert_eq!(image_dimensions(gif), Some((640, 480)));
        // JPEG: SOI, an APP0 segment, then SOF0 with height 480 and width 640.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB];
        jpeg.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0xE0, 0x02, 0x80, 0x03]);
        assert_eq!(image_dimensions(&jpeg), Some((640, 480)));
        // A DHT segment (0xC4) is not a frame header.
        let mut dht = vec![0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x04, 0x00, 0x00];
        dht.extend_from_slice(&jpeg[8..]);
        assert_eq!(image_dimensions(&dht), Some((640, 480)));
        // Hostile lengths end the walk rather than loop or index out of bounds.
        assert_eq!(
            image_dimensions(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x00]),
            None
        );
        assert_eq!(
            image_dimensions(&[0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xFF]),
            None
        );
        assert_eq!(image_dimensions(&[0xFF, 0xD8, 0xFF]), None);
        assert_eq!(image_dimensions(b"not an image"), None);
        assert_eq!(image_dimensions(&[]), None);
    }

    #[test]
    fn a_body_that_is_only_the_url_is_not_shown_twice() {
        let url = "https://up.example.org/a/b.jpg";
        let record = |m: i64| AttachmentRecord {
            message: MessageId(m),
            url: Some(url.into()),
            name: "b.jpg".into(),
            media_type: None,
            size: Some(10),
            width: None,
            height: None,
            sha256: Some([0xab; 32]),
            local_path: None,
            state: AttachmentState::Available,
            error: None,
        };
        let mut found: HashMap<MessageId, AttachmentRecord> =
            (1..=3).map(|m| (MessageId(m), record(m))).collect();
        let (body, a) = shown(&mut found, MessageId(1), format!(" {url}\n"));
        assert_eq!(body, "");
        let a = a.unwrap();
        assert_eq!(a.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!((a.state, a.transferred), (TransferState::Available, 0));
        let (body, _) = shown(&mut found, MessageId(2), format!("Look: {url}"));
        assert_eq!(body, "Look:");
        let (body, _) = shown(&mut found, MessageId(3), format!("{url} is it"));
        assert_eq!(body, format!("{url} is it"));
        let (body, a) = shown(&mut found, MessageId(4), url.into());
        assert_eq!((body.as_str(), a), (url, None));
    }

    /// XEP-0454 on receipt: only a decrypted body that is the URL (or the URL and a
    /// thumbnail) is a file, named after the URL, its size unknown, shown encrypted; the
    /// body, which holds the key, is never shown, in the conversation or the chat list.
    #[tokio::test]
    async fn an_omemo_body_that_is_an_aesgcm_url_is_a_file() {
        let store = Store::open_in_memory(&linnet_store::DbKey::generate().unwrap()).unwrap();
        let client = Client::with_store(store, crate::ClientOptions::default()).unwrap();
        let acc = client.add_account("me@example.org", "pw", None).unwrap();
        let conv = client.open_conversation(acc, "you@example.org").unwrap();
        let fragment = "8c3d050e9386ec173861778f68e9af38a97aaf82faa4063b4d0878a61261534410c8a84331eaac851759f587";
        let url = format!("aesgcm://up.example.org/x/tr%C3%A8s%20cool.jpg#{fragment}");
        let thumbnail = format!("{url}\ndata:image/jpeg;base64,/9j/4AAQ");
        let cases = [
            (url.clone(), Encryption::Omemo03, true),
            (format!("see {url}"), Encryption::Omemo2, false),
            // Not decrypted (or sent in the clear): text, never a file.
            (url.clone(), Encryption::Plain, false),
            (thumbnail.clone(), Encryption::Omemo2, true),
        ];
        let ids: Vec<MessageId> = client
            .inner
            .store()
            .transaction(|tx| {
                let mut ids = Vec::new();
                for (i, (body, encryption, _)) in cases.iter().enumerate() {
                    let m = tx
                        .insert_message(&NewMessage {
                            conversation: conv,
                            direction: Direction::Incoming,
                            sender: "you@example.org".into(),
                            body: body.clone(),
                            origin_id: Some(format!("m{i}")),
                            stanza_id: None,
                            stanza_id_by: None,
                            timestamp_ms: now_ms() + i as i64,
                            delivery_state: DeliveryState::Delivered,
                            encryption: *encryption,
                            error: None,
                            kind: Default::default(),
                            target: None,
                            reply_to: None,
                            markable: false,
                            replaces: None,
                        })?
                        .id();
                    store_received_encrypted(tx, m, *encryption, body)?;
                    ids.push(m);
                }
                Ok(ids)
            })
            .unwrap();
        let all = client.messages(conv, None, 10).unwrap();
        for (id, (body, _, file)) in ids.iter().zip(&cases) {
            let m = all.iter().find(|m| m.id == *id).unwrap();
            if !file {
                assert_eq!(&m.body, body);
                assert!(m.attachment.is_none(), "{body}");
                continue;
            }
            assert_eq!(m.body, "", "the key is never shown");
            let a = m.attachment.as_ref().unwrap();
            assert_eq!(a.name, "très cool.jpg");
            assert_eq!(a.media_type.as_deref(), Some("image/jpeg"));
            assert_eq!((a.size, a.sha256.as_ref()), (None, None));
            assert_eq!((a.state, a.transferred), (TransferState::Available, 0));
            assert!(a.encrypted);
            let stored = client.inner.store().attachment(*id).unwrap().unwrap();
            assert_eq!(stored.url.as_deref(), Some(url.as_str()));
        }
        client.inner.conversation_changed(conv);
        client.inner.publish_chat_list();
        let preview = client.chat_list().conversations[0]
            .last_message
            .clone()
            .unwrap();
        assert_eq!(preview.body, "", "{preview:?}");
        assert_eq!(preview.file.as_deref(), Some("très cool.jpg"));
        assert_eq!(without_url(thumbnail.clone(), Some(&url)), "");
        assert_eq!(without_url(format!("see {url}"), Some(&url)), "see");
    }

    #[test]
    fn downloads_never_replace_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let put = |content: &str| {
            let temp = dir.path().join(".part");
            std::fs::write(&temp, content).unwrap();
            let dest = place(&temp, dir.path(), "a.txt").unwrap();
            assert!(!temp.exists());
            dest.file_name().unwrap().to_str().unwrap().to_owned()
        };
        assert_eq!(put("1"), "a.txt");
        assert_eq!(put("2"), "a (1).txt");
        assert_eq!(put("3"), "a (2).txt");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a (2).txt")).unwrap(),
            "3"
        );
    }

    #[test]
    fn hashing_reads_the_whole_file_and_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        let mut data = png(3, 2);
        data.resize(READ_CHUNK * 2 + 7, 0x5a);
        std::fs::write(&path, &data).unwrap();
        let h = hash_file(&path, &CancellationToken::new()).unwrap();
        assert_eq!(h, <[u8; 32]>::from(Sha256::digest(&data)));
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let e = hash_file(&path, &cancelled).err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
    }

    #[test]
    fn network_failures_are_transient_and_refusals_are_not() {
        use linnet_xmpp::RequestError as R;
        use TransferError as T;
        for e in [
            T::Network("connection reset".into()),
            T::Stalled,
            T::Io("read".into()),
            T::Http { status: 500 },
            T::Http { status: 502 },
            T::Http { status: 503 },
            T::Http { status: 599 },
            T::Http { status: 408 },
            T::Http { status: 429 },
        ] {
            let f = Failure::from(e.clone());
            assert!(f.transient && !f.cancelled, "{e:?}");
        }
        for e in [
            T::Http { status: 400 },
            T::Http { status: 401 },
            T::Http { status: 403 },
            T::Http { status: 404 },
            T::Http { status: 413 },
            T::Http { status: 307 },
            T::TooLarge { max: 1 },
            T::Tls("bad certificate".into()),
            T::NotHttps,
            T::BadUrl("no host"),
            T::BadSlot("invalid header name"),
            T::Redirect("to a URL that is not https"),
            T::Config("x".into()),
        ] {
            assert!(!Failure::from(e.clone()).transient, "{e:?}");
        }
        let cancelled = Failure::from(T::Cancelled);
        assert!(cancelled.cancelled && !cancelled.transient);

        for e in [
            UploadError::Request(R::Closed),
            UploadError::Request(R::Timeout),
        ] {
            let f = Failure::from(e.clone());
            assert!(f.transient, "{e:?}");
            assert!(matches!(f.error, ClientError::Network(_)), "{e:?}");
        }
        for e in [
            UploadError::FileTooLarge { max: Some(10) },
            UploadError::FileTooLarge { max: None },
            UploadError::NotAcceptable { text: None },
            UploadError::QuotaReached { text: None },
            UploadError::NotAllowed {
                condition: "forbidden".into(),
                text: None,
            },
            UploadError::Refused {
                condition: "service-unavailable".into(),
                text: None,
            },
            UploadError::BadSlot("not https"),
            UploadError::BadFilename("empty"),
            UploadError::Request(R::Stanza {
                condition: "not-allowed".into(),
                text: None,
            }),
            UploadError::Request(R::Unexpected("x".into())),
        ] {
            assert!(!Failure::from(e.clone()).transient, "{e:?}");
        }
        // Discovering the service: a lost session is transient, a refusal is not.
        assert!(request_failure(R::Closed).transient);
        assert!(
            !request_failure(R::Stanza {
                condition: "forbidden".into(),
                text: None
            })
            .transient
        );
    }

    #[test]
    fn retries_back_off_within_the_reconnect_bounds() {
        let opts = crate::ClientOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..Default::default()
        };
        for (failures, cap) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..20 {
                let d = retry_delay(&opts, failures).as_millis();
                assert!(d >= cap / 2 && d <= cap, "{failures}: {d}");
            }
        }
    }

    #[test]
    fn the_list_of_unfinished_uploads_survives_junk() {
        assert_eq!(parse_listed(None), vec![]);
        assert_eq!(parse_listed(Some(String::new())), vec![]);
        assert_eq!(
            parse_listed(Some("3, 17,x,,42".into())),
            vec![MessageId(3), MessageId(17), MessageId(42)]
        );
        let mut store = Store::open_in_memory(&linnet_store::DbKey::generate().unwrap()).unwrap();
        store
            .transaction(|tx| {
                list_upload(tx, MessageId(5))?;
                list_upload(tx, MessageId(9))?;
                list_upload(tx, MessageId(5))?;
                assert_eq!(listed_uploads(tx)?, vec![MessageId(5), MessageId(9)]);
                unlist_upload(tx, MessageId(5))?;
                unlist_upload(tx, MessageId(77))?;
                assert_eq!(listed_uploads(tx)?, vec![MessageId(9)]);
                unlist_upload(tx, MessageId(9))?;
                assert_eq!(tx.kv_get(None, KV_UPLOADS)?, None);
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn bad_arguments_are_errors() {
        let store = Store::open_in_memory(&linnet_store::DbKey::generate().unwrap()).unwrap();
        let client = Client::with_store(store, crate::ClientOptions::default()).unwrap();
        let acc = client.add_account("me@example.org", "pw", None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, b"").unwrap();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, b"x").unwrap();
        let missing = dir.path().join("missing.txt");
        for (to, path) in [
            ("not a jid", file.as_path()),
            ("you@example.org", missing.as_path()),
            ("you@example.org", dir.path()),
            ("you@example.org", empty.as_path()),
        ] {
            let e = client.send_file(acc, to, path).await.unwrap_err();
            assert!(matches!(e, ClientError::BadInput(_)), "{e:?}");
            let text = e.to_string();
            assert!(!text.contains(dir.path().to_str().unwrap()), "{text}");
        }
        // Where the peer may have OMEMO devices (none known yet), the file is to go
        // encrypted: marked so from the start, and bounded in size.
        let enc = client
            .send_file(acc, "them@example.org", &file)
            .await
            .unwrap();
        let them = client.open_conversation(acc, "them@example.org").unwrap();
        let m = client.messages(them, None, 10).unwrap().pop().unwrap();
        assert_eq!(m.id, enc);
        assert_eq!(m.encryption, TO_ENCRYPT);
        let a = m.attachment.unwrap();
        assert!(a.encrypted);
        assert_eq!(a.state, TransferState::Waiting);
        client.cancel_transfer(enc).unwrap();
        let big = dir.path().join("big.bin");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(aesgcm::MAX_PLAINTEXT + 1)
            .unwrap();
        assert_eq!(
            client.send_file(acc, "them@example.org", &big).await,
            Err(too_large_to_encrypt())
        );
        let conv = client.open_conversation(acc, "you@example.org").unwrap();
        client
            .set_encryption_policy(conv, EncryptionPolicy::Plain)
            .unwrap();
        // Offline: accepted, shown pending and waiting for the account to be online.
        let id = client
            .send_file(acc, "you@example.org", &file)
            .await
            .unwrap();
        let shown = |client: &Client| {
            let all = client.messages(conv, None, 10).unwrap();
            assert_eq!(all.len(), 1);
            assert_eq!(all[0].encryption, Encryption::Plain);
            let a = all[0].attachment.clone().unwrap();
            assert!(!a.encrypted);
            (all[0].state, a.state, a.error)
        };
        assert_eq!(
            shown(&client),
            (DeliveryState::Pending, TransferState::Waiting, None)
        );
        assert_eq!(
            client.retry_upload(id).await,
            Err(ClientError::Policy("the upload is under way".into()))
        );
        client.cancel_transfer(id).unwrap();
        for _ in 0..200 {
            if shown(&client).1 == TransferState::Cancelled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            shown(&client),
            (
                DeliveryState::Failed,
                TransferState::Cancelled,
                Some("cancelled".into())
            )
        );
        // Started again, with the same message: waiting once more.
        client.retry_upload(id).await.unwrap();
        assert_eq!(
            shown(&client),
            (DeliveryState::Pending, TransferState::Waiting, None)
        );
        client.cancel_transfer(id).unwrap();
        assert!(matches!(
            client.cancel_transfer(MessageId(i64::MAX)),
            Err(ClientError::NotFound(_))
        ));
        assert!(matches!(
            client.retry_upload(MessageId(i64::MAX)).await,
            Err(ClientError::NotFound(_))
        ));
        let text = client.send_message(acc, "you@example.org", "hi").unwrap();
        assert_eq!(
            client.retry_upload(text).await,
            Err(ClientError::BadInput("the message shares no file".into()))
        );
        assert!(matches!(
            client.download_file(MessageId(i64::MAX), dir.path()).await,
            Err(ClientError::NotFound(_))
        ));
    }

    /// A new client on the database of one that died mid-upload: the upload shows as
    /// waiting, not failed; one that was never listed (nothing will take it up) shows as
    /// interrupted, its message failed; cancelling the waiting one works without a session.
    #[tokio::test]
    async fn uploads_left_by_an_earlier_process() {
        let store = Store::open_in_memory(&linnet_store::DbKey::generate().unwrap()).unwrap();
        let client = Client::with_store(store, crate::ClientOptions::default()).unwrap();
        let acc = client.add_account("me@example.org", "pw", None).unwrap();
        let conv = client.open_conversation(acc, "you@example.org").unwrap();
        client
            .set_encryption_policy(conv, EncryptionPolicy::Plain)
            .unwrap();
        let row = |listed: bool| {
            let mut store = client.inner.store();
            store
                .transaction(|tx| {
                    let m = tx
                        .insert_message(&NewMessage {
                            conversation: conv,
                            direction: Direction::Outgoing,
                            sender: "me@example.org".into(),
                            body: String::new(),
                            origin_id: Some(linnet_xmpp::new_id()),
                            stanza_id: None,
                            stanza_id_by: None,
                            timestamp_ms: now_ms(),
                            delivery_state: DeliveryState::Pending,
                            encryption: Default::default(),
                            error: None,
                            kind: Default::default(),
                            target: None,
                            reply_to: None,
                            markable: false,
                            replaces: None,
                        })?
                        .id();
                    tx.insert_attachment(&AttachmentRecord {
                        message: m,
                        url: None,
                        name: "a.txt".into(),
                        media_type: None,
                        size: Some(1),
                        width: None,
                        height: None,
                        sha256: None,
                        local_path: Some("/nonexistent/a.txt".into()),
                        state: AttachmentState::Uploading,
                        error: None,
                    })?;
                    if listed {
                        list_upload(tx, m)?;
                    }
                    Ok(m)
                })
                .unwrap()
        };
        let (waiting, lost) = (row(true), row(false));
        let shown = |id: MessageId| {
            let all = client.messages(conv, None, 10).unwrap();
            let m = all.into_iter().find(|m| m.id == id).unwrap();
            let a = m.attachment.unwrap();
            (m.state, a.state, a.error)
        };
        assert_eq!(
            shown(waiting),
            (DeliveryState::Pending, TransferState::Waiting, None)
        );
        assert_eq!(
            shown(lost),
            (
                DeliveryState::Failed,
                TransferState::Failed,
                Some(INTERRUPTED.into())
            )
        );
        // The file is gone: retrying says so, and changes nothing.
        assert_eq!(
            client.retry_upload(waiting).await,
            Err(ClientError::BadInput(SOURCE_GONE.into()))
        );
        client.cancel_transfer(waiting).unwrap();
        assert_eq!(
            shown(waiting),
            (
                DeliveryState::Failed,
                TransferState::Cancelled,
                Some("cancelled".into())
            )
        );
        assert!(client
            .inner
            .store()
            .kv_get(None, KV_UPLOADS)
            .unwrap()
            .is_none());
        assert!(matches!(
            client.cancel_transfer(waiting),
            Err(ClientError::NotFound(_))
        ));
    }
}
