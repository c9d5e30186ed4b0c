//! Numbered schema migrations.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`; the version lives in
//! `PRAGMA user_version` (0 for a new file). Never edit a published script: append a new
//! one. Each script runs in its own IMMEDIATE transaction together with the version bump,
//! so a crash mid-migration leaves the previous version intact.
//!
//! Foreign keys stay enforced while migrating (SQLite cannot toggle them inside a
//! transaction). A future migration that rebuilds a referenced table must therefore
//! create-copy-rename in an order that keeps references valid, and `foreign_key_check`
//! runs after every script to catch mistakes before they are committed.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, StoreError};

/// v1: the initial schema.
const V1: &str = r#"
CREATE TABLE accounts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    jid            TEXT    NOT NULL UNIQUE,
    password       TEXT    NOT NULL,
    resource       TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    server_host    TEXT,
    server_port    INTEGER CHECK (server_port BETWEEN 1 AND 65535),
    direct_tls     INTEGER NOT NULL DEFAULT 0 CHECK (direct_tls IN (0, 1)),
    roster_version TEXT,
    created_ms     INTEGER NOT NULL
);

CREATE TABLE contacts (
    account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    jid          TEXT    NOT NULL,
    name         TEXT,
    subscription TEXT    NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask          INTEGER NOT NULL DEFAULT 0 CHECK (ask IN (0, 1)),
    groups       TEXT    NOT NULL DEFAULT '[]',  -- JSON array of group names, in roster order
    PRIMARY KEY (account_id, jid)
) WITHOUT ROWID;

CREATE TABLE subscription_requests (
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    jid         TEXT    NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, jid)
);  -- a rowid table: the rowid gives arrival order

-- The chat list reads this table alone: the last message's preview, the activity time
-- and the unread count are denormalized here and maintained with every write that
-- changes them. Joining the messages instead costs one page read (and decryption) per
-- conversation, because last messages lie on scattered pages: about 14 ms for 1,000
-- conversations on a desktop CPU, several times that on a phone.
-- Anything that deletes or edits messages must refresh the last_* columns (the FK only
-- clears last_message_id).
CREATE TABLE conversations (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    peer                TEXT    NOT NULL,
    kind                TEXT    NOT NULL DEFAULT 'chat' CHECK (kind IN ('chat', 'groupchat')),
    created_ms          INTEGER NOT NULL,
    last_activity_ms    INTEGER NOT NULL,
    unread_count        INTEGER NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    last_message_id     INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    last_timestamp_ms   INTEGER,
    last_sender         TEXT,
    last_body           TEXT,
    last_direction      INTEGER,
    last_delivery_state INTEGER,
    UNIQUE (account_id, peer)
);
CREATE INDEX conversations_by_activity ON conversations (last_activity_ms DESC, id DESC);
-- Without it every message deletion would scan conversations for the SET NULL action.
CREATE INDEX conversations_by_last_message ON conversations (last_message_id);

-- direction: 0 incoming, 1 outgoing.
-- delivery_state: 0 pending, 1 sent, 2 delivered, 3 read, 4 failed.
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    direction       INTEGER NOT NULL CHECK (direction IN (0, 1)),
    sender          TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    origin_id       TEXT,
    stanza_id       TEXT,
    stanza_id_by    TEXT,
    timestamp_ms    INTEGER NOT NULL,
    received_ms     INTEGER NOT NULL,
    delivery_state  INTEGER NOT NULL CHECK (delivery_state BETWEEN 0 AND 4),
    -- A NULL "by" would make the unique index below treat equal stanza-ids as distinct.
    CHECK ((stanza_id IS NULL) = (stanza_id_by IS NULL))
);
CREATE INDEX messages_by_time ON messages (conversation_id, timestamp_ms, id);
CREATE UNIQUE INDEX messages_origin_id
    ON messages (conversation_id, origin_id) WHERE origin_id IS NOT NULL;
CREATE UNIQUE INDEX messages_stanza_id
    ON messages (conversation_id, stanza_id_by, stanza_id) WHERE stanza_id IS NOT NULL;
-- Receipts and markers name only the id, not the conversation.
CREATE INDEX messages_by_origin_id ON messages (origin_id) WHERE origin_id IS NOT NULL;
-- Only unread incoming messages: keeps mark_read and unread recounts proportional to
-- the unread messages, not to the history.
CREATE INDEX messages_unread
    ON messages (conversation_id, timestamp_ms, id) WHERE direction = 0 AND delivery_state <> 3;

-- AUTOINCREMENT: an id the session still holds (stream-management bookkeeping) must never
-- name a newer entry after the old one was removed.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- SET NULL, not CASCADE: deleting local history must not silently drop a stanza the
    -- network is still owed.
    message_id INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    kind       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0)
);
CREATE INDEX outbox_by_account ON outbox (account_id, id);
CREATE INDEX outbox_by_message ON outbox (message_id);

-- account_id NULL = global setting.
CREATE TABLE kv (
    account_id INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL
);
-- ifnull: NULLs are distinct in a unique index, which would allow duplicate global keys.
CREATE UNIQUE INDEX kv_key ON kv (ifnull(account_id, 0), key);
CREATE INDEX kv_by_account ON kv (account_id);
"#;

/// v2: what a session needs to come back fast after the process died: the XEP-0198
/// resumption state (with the count of inbound stanzas that are durably handled, written in
/// the same transaction as what they carried), the FAST token (XEP-0484; the database is
/// encrypted, and the token is never logged), and the device's SASL2 user-agent id.
const V2: &str = r#"
CREATE TABLE session_state (
    account_id     INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    sm_id          TEXT,
    sm_location    TEXT,
    sm_inbound     INTEGER NOT NULL DEFAULT 0 CHECK (sm_inbound BETWEEN 0 AND 4294967295),
    fast_mechanism TEXT,
    fast_token     TEXT,
    fast_expiry    TEXT,
    fast_count     INTEGER NOT NULL DEFAULT 0 CHECK (fast_count >= 0),
    user_agent_id  TEXT,
    updated_ms     INTEGER NOT NULL,
    CHECK ((fast_token IS NULL) = (fast_mechanism IS NULL))
);
"#;

/// v3: messages found by their archive id alone (XEP-0359 stanza-id), without knowing the
/// conversation: the archive catch-up's starting point, and later retractions and
/// corrections, which name only that id.
const V3: &str = r#"
CREATE INDEX messages_by_stanza_id ON messages (stanza_id) WHERE stanza_id IS NOT NULL;
"#;

/// v4: OMEMO (XEP-0384) state per account, behind `linnet_omemo`'s store traits (see the
/// `omemo` module). Private keys and sessions are stored as they are: the database is the
/// encrypted place meant for them. `version` is the OMEMO major version: 0 for OMEMO 0.3
/// (eu.siacs.conversations.axolotl), 2 for OMEMO 2 (urn:xmpp:omemo:2); each has its own
/// prekeys, sessions and peer identities. Key ids and device ids are u32 on the wire.
const V4: &str = r#"
-- The Ed25519 seed both versions derive their identity from.
CREATE TABLE omemo_identity (
    account_id INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    seed       BLOB    NOT NULL CHECK (length(seed) = 32)
);

-- Per version: which signed prekey the bundle publishes, and the next one-time prekey id.
-- No foreign key to the signed prekey: the id names what is published, and the store only
-- records it (the manager never deletes the current one).
CREATE TABLE omemo_prekey_state (
    account_id        INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version           INTEGER NOT NULL CHECK (version IN (0, 2)),
    current_signed_id INTEGER CHECK (current_signed_id BETWEEN 0 AND 4294967295),
    next_prekey_id    INTEGER NOT NULL DEFAULT 1 CHECK (next_prekey_id BETWEEN 0 AND 4294967295),
    PRIMARY KEY (account_id, version)
) WITHOUT ROWID;

-- The current signed prekey and the previous one (kept for key exchanges in flight).
CREATE TABLE omemo_signed_prekeys (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL CHECK (version IN (0, 2)),
    id         INTEGER NOT NULL CHECK (id BETWEEN 0 AND 4294967295),
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    signature  BLOB    NOT NULL,
    PRIMARY KEY (account_id, version, id)
) WITHOUT ROWID;

-- One-time prekeys; a used one is deleted in the transaction that stores its session.
CREATE TABLE omemo_prekeys (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL CHECK (version IN (0, 2)),
    id         INTEGER NOT NULL CHECK (id BETWEEN 0 AND 4294967295),
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    PRIMARY KEY (account_id, version, id)
) WITHOUT ROWID;

-- Double Ratchet sessions, opaque to the store (linnet_omemo's serialization). A rowid
-- table: a session with skipped message keys runs to kilobytes, too large a row for a
-- WITHOUT ROWID b-tree.
CREATE TABLE omemo_sessions (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL CHECK (version IN (0, 2)),
    jid        TEXT    NOT NULL,
    device_id  INTEGER NOT NULL CHECK (device_id BETWEEN 0 AND 4294967295),
    session    BLOB    NOT NULL,
    UNIQUE (account_id, version, jid, device_id)
);

-- Peer devices' identity keys (Curve25519 for 0.3, Ed25519 for 2) and the user's trust.
CREATE TABLE omemo_identities (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL CHECK (version IN (0, 2)),
    jid        TEXT    NOT NULL,
    device_id  INTEGER NOT NULL CHECK (device_id BETWEEN 0 AND 4294967295),
    key        BLOB    NOT NULL CHECK (length(key) = 32),
    trust      TEXT    NOT NULL CHECK (trust IN ('undecided', 'blind', 'verified', 'distrusted')),
    PRIMARY KEY (account_id, version, jid, device_id)
) WITHOUT ROWID;
"#;

/// v5: OMEMO in conversations. The device lists of peers (and our own account) as last
/// seen in PEP: a list we have seen, even empty, is known, which is not the same as one we
/// never fetched; a device gone from its list stays as inactive (sessions and trust are kept,
/// nothing is encrypted for it). Each message records how it travelled and, when it could
/// not be decrypted, why; each conversation its encryption choice.
const V5: &str = r#"
CREATE TABLE omemo_device_lists (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    jid        TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version IN (0, 2)),
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, jid, version)
) WITHOUT ROWID;

CREATE TABLE omemo_devices (
    account_id    INTEGER NOT NULL,
    jid           TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    device_id     INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
    active        INTEGER NOT NULL CHECK (active IN (0, 1)),
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, jid, version, device_id),
    FOREIGN KEY (account_id, jid, version)
        REFERENCES omemo_device_lists (account_id, jid, version) ON DELETE CASCADE
) WITHOUT ROWID;

-- 'auto': OMEMO when the peer has devices (and for good once a message went encrypted).
ALTER TABLE conversations ADD COLUMN encryption TEXT NOT NULL DEFAULT 'auto'
    CHECK (encryption IN ('auto', 'omemo', 'plain'));
-- 0 plaintext, 1 OMEMO 0.3, 2 OMEMO 2.
ALTER TABLE messages ADD COLUMN encryption INTEGER NOT NULL DEFAULT 0
    CHECK (encryption IN (0, 1, 2));
ALTER TABLE messages ADD COLUMN error TEXT;
"#;

/// v6: rich messages. Corrections, retractions and reactions are rows of `messages` too,
/// hidden from the history (`kind` <> 0) and pointing at the message they change
/// (`target_id`): so they are deduplicated, ordered, queued and re-sent like messages, and
/// a copy seen again (archive, carbon) is known and not applied (or decrypted) twice. The
/// message they change carries the result: its corrected body, `edited_ms`,
/// `retracted_ms`, and the `reactions` table. Hidden incoming rows are stored read, so
/// they never count as unread.
const V6: &str = r#"
-- 0 message, 1 correction, 2 retraction, 3 reactions.
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0 CHECK (kind BETWEEN 0 AND 3);
ALTER TABLE messages ADD COLUMN target_id INTEGER REFERENCES messages (id) ON DELETE CASCADE;
-- Time of the correction now shown (the correction's own time), NULL if never corrected.
ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
ALTER TABLE messages ADD COLUMN retracted_ms INTEGER;
-- XEP-0461: the id of the message this one answers.
ALTER TABLE messages ADD COLUMN reply_to TEXT;
-- XEP-0308: the id of the message this one corrects, when that message was unknown and
-- this one is shown in its place. Later changes naming that id apply to it: ejabberd
-- deletes a retracted message from the archive but keeps its corrections and the
-- retraction, so a new device meets the correction first and the original never.
ALTER TABLE messages ADD COLUMN replaces TEXT;
-- XEP-0333: the sender asked for displayed markers.
ALTER TABLE messages ADD COLUMN markable INTEGER NOT NULL DEFAULT 0 CHECK (markable IN (0, 1));
CREATE INDEX messages_by_target ON messages (target_id) WHERE target_id IS NOT NULL;
CREATE INDEX messages_by_replaces
    ON messages (conversation_id, replaces) WHERE replaces IS NOT NULL;

-- Each sender's current set of reactions to a message (XEP-0444: a new set replaces it).
CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    sender     TEXT    NOT NULL,
    emojis     TEXT    NOT NULL,  -- JSON array, in the sender's order
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (message_id, sender)
) WITHOUT ROWID;
"#;

/// v7: history. Gaps are stretches of time in which the server's archive may have lost
/// messages before we read them (it keeps history for a limited time: Prosody a week by
/// default), recorded per account because our archive covers every one-to-one
/// conversation. `history_complete`: scrolling back reached the start of the archive.
const V7: &str = r#"
CREATE TABLE history_gaps (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- Messages after this time and before `before_ms` may be missing (ms since the epoch).
    after_ms   INTEGER NOT NULL,
    before_ms  INTEGER NOT NULL,
    CHECK (after_ms <= before_ms)
);
CREATE INDEX history_gaps_by_account ON history_gaps (account_id, after_ms);
ALTER TABLE conversations ADD COLUMN history_complete INTEGER NOT NULL DEFAULT 0
    CHECK (history_complete IN (0, 1));
"#;

/// v8: group chats (XEP-0045). A room is a conversation of kind `groupchat` whose peer is
/// the room's JID; `rooms` holds what we keep of it between sessions. Occupants are not
/// stored: the room sends them on every join. Members (owners, admins, members by real
/// JID) are, because encrypting to a group needs them while offline too.
const V8: &str = r#"
CREATE TABLE rooms (
    conversation_id INTEGER PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    nick            TEXT    NOT NULL,
    name            TEXT,
    subject         TEXT,
    password        TEXT,
    -- Join on every login (XEP-0402 autojoin); 0 after leaving, until joined again.
    autojoin        INTEGER NOT NULL DEFAULT 1 CHECK (autojoin IN (0, 1)),
    -- The room's archive id (stanza-id by the room) of the newest message read from it.
    archive_cursor  TEXT,
    members_only    INTEGER NOT NULL DEFAULT 0 CHECK (members_only IN (0, 1)),
    non_anonymous   INTEGER NOT NULL DEFAULT 0 CHECK (non_anonymous IN (0, 1)),
    -- The room has an archive (XEP-0313) and gives occupant ids (XEP-0421).
    archived        INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
    occupant_ids    INTEGER NOT NULL DEFAULT 0 CHECK (occupant_ids IN (0, 1)),
    -- Why we are no longer in it (kicked, banned, destroyed…), shown until rejoined.
    removed         TEXT
);
CREATE TABLE room_members (
    conversation_id INTEGER NOT NULL REFERENCES rooms (conversation_id) ON DELETE CASCADE,
    jid             TEXT    NOT NULL,
    affiliation     TEXT    NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member')),
    nick            TEXT,
    PRIMARY KEY (conversation_id, jid)
) WITHOUT ROWID;
CREATE TABLE room_invitations (
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    room        TEXT    NOT NULL,
    inviter     TEXT    NOT NULL,
    reason      TEXT,
    password    TEXT,
    received_ms INTEGER NOT NULL,
    UNIQUE (account_id, room)
);  -- a rowid table: the rowid gives arrival order
-- XEP-0421: who sent a group message, across nickname changes; corrections, retractions
-- and reactions in a group are matched on it.
ALTER TABLE messages ADD COLUMN occupant_id TEXT;
"#;

/// v9: files shared in messages (XEP-0363 uploads, XEP-0066/0447 URLs, XEP-0446
/// metadata). One row per message that carries a file. `url` is the https GET URL (NULL
/// while our own upload has not finished); `local_path` is where the file is on this device
/// (the source of an upload, or where a download was saved). Transfers in flight are held
/// in memory; a row left in 'uploading' by a process that died is shown as failed.
const V9: &str = r#"
CREATE TABLE attachments (
    message_id  INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    url         TEXT,
    name        TEXT    NOT NULL,
    media_type  TEXT,
    size        INTEGER CHECK (size IS NULL OR size >= 0),
    width       INTEGER CHECK (width IS NULL OR width > 0),
    height      INTEGER CHECK (height IS NULL OR height > 0),
    sha256      BLOB    CHECK (sha256 IS NULL OR length(sha256) = 32),
    local_path  TEXT,
    state       TEXT    NOT NULL CHECK (state IN ('uploading', 'uploaded', 'available',
                                                  'downloaded', 'failed', 'cancelled')),
    -- Why the last transfer failed.
    error       TEXT,
    updated_ms  INTEGER NOT NULL
);
"#;

/// v10: what contacts (and the account itself) say of themselves: the nickname they
/// published (XEP-0172) and their avatar (XEP-0084, or the XEP-0153 vCard photo for those
/// without), with the pictures themselves kept by SHA-1 id. `avatar_source` says which
/// protocol the avatar came from: a published XEP-0084 state (even "no avatar") outranks
/// vCard photos, which are only the fallback.
const V10: &str = r#"
CREATE TABLE profiles (
    account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    jid           TEXT    NOT NULL,
    nick          TEXT,
    avatar        TEXT    CHECK (avatar IS NULL OR length(avatar) = 40),
    avatar_source TEXT    CHECK (avatar_source IN ('pep', 'vcard')),
    PRIMARY KEY (account_id, jid)
) WITHOUT ROWID;
CREATE TABLE avatars (
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id          TEXT    NOT NULL CHECK (length(id) = 40),
    media_type  TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    PRIMARY KEY (account_id, id)
) WITHOUT ROWID;
"#;

/// v11: the nickname a subscription request carried (XEP-0172 §4.2), shown next to the
/// JID as a hint; it is not the contact's published profile.
const V11: &str = r#"
ALTER TABLE subscription_requests ADD COLUMN nick TEXT;
"#;

/// v12: private messages through a group (XEP-0045 §7.5). They are kept in the group's
/// conversation, among its messages, so that an answer is read next to what it answers;
/// `private_with` is the nickname of the one other occupant (who sent an incoming one, to
/// whom ours went), NULL for what the whole group sees. A nickname rather than an occupant
/// JID: the room is the conversation's peer already.
const V12: &str = r#"
ALTER TABLE messages ADD COLUMN private_with TEXT
    CHECK (private_with IS NULL OR private_with <> '');
"#;

/// v13: which OMEMO device each decrypted message came from, so that it is shown with the
/// trust the user has in that device now (XEP-0384 §8: messages from untrusted devices are
/// marked; a later verification or distrust changes how the earlier messages show). A
/// correction writes the device of its text over that of the message it corrects. Rows go
/// with their message; plaintext and undecryptable messages have none.
const V13: &str = r#"
CREATE TABLE omemo_message_senders (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    jid        TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version IN (0, 2)),
    device_id  INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 4294967295)
);
"#;

/// v14: what an OMEMO device list says of a device beyond its id, and what tells whether
/// a device is still there. `label` and `labelsig` (XEP-0384 §5.3.1, OMEMO 2 only) are kept
/// as listed, unchecked: the identity key they are checked against may become known only
/// later, so the check is made each time the label would be shown. `heard_ms` is when
/// something from the device was last decrypted; `unanswered` counts our messages
/// encrypted for it since, the first of them at `unanswered_since_ms`.
const V14: &str = r#"
ALTER TABLE omemo_devices ADD COLUMN label TEXT;
ALTER TABLE omemo_devices ADD COLUMN labelsig BLOB
    CHECK ((label IS NULL) = (labelsig IS NULL) AND (labelsig IS NULL OR length(labelsig) = 64));
ALTER TABLE omemo_devices ADD COLUMN heard_ms INTEGER;
ALTER TABLE omemo_devices ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0
    CHECK (unanswered >= 0);
ALTER TABLE omemo_devices ADD COLUMN unanswered_since_ms INTEGER
    CHECK ((unanswered = 0) = (unanswered_since_ms IS NULL));
"#;

pub(crate) const MIGRATIONS: &[&str] =
    &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13, V14];

/// The schema version this build creates and understands.
pub const LATEST_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn user_version(conn: &Connection) -> Result<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt("negative schema version".into()))
}

/// Brings the schema up to `migrations.len()`; returns the resulting version.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<u32> {
    let supported = u32::try_from(migrations.len())
        .map_err(|_| StoreError::Corrupt("too many migrations".into()))?;
    loop {
        // Re-read inside the write lock: another connection may have migrated meanwhile.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = user_version(&tx)?;
        if current > supported {
            return Err(StoreError::TooNew {
                found: current,
                supported,
            });
        }
        if current == supported {
            return Ok(current);
        }
        let script = migrations
            .get(current as usize)
            .ok_or_else(|| StoreError::Corrupt("missing migration".into()))?;
        tx.execute_batch(script)?;
        let violations: i64 =
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if violations > 0 {
            return Err(StoreError::Corrupt(format!(
                "migration to v{} left {violations} foreign-key violations",
                current + 1
            )));
        }
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
        tracing::info!(version = current + 1, "database schema migrated");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn applies_in_order_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        let scripts = [
            "CREATE TABLE runs (n INTEGER); INSERT INTO runs VALUES (1);",
            "INSERT INTO runs VALUES (2);",
        ];
        assert_eq!(migrate(&mut conn, &scripts[..1]).unwrap(), 1);
        assert_eq!(count(&conn), 1);
        assert_eq!(migrate(&mut conn, &scripts).unwrap(), 2);
        assert_eq!(count(&conn), 2);
        // Nothing reruns: a rerun of either script would add rows (or fail on CREATE).
        assert_eq!(migrate(&mut conn, &scripts).unwrap(), 2);
        assert_eq!(count(&conn), 2);
        assert_eq!(user_version(&conn).unwrap(), 2);
    }

    #[test]
    fn failed_script_leaves_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let scripts = [
            "CREATE TABLE runs (n INTEGER);",
            "INSERT INTO runs VALUES (1); INSERT INTO no_such_table VALUES (1);",
        ];
        assert!(migrate(&mut conn, &scripts).is_err());
        assert_eq!(user_version(&conn).unwrap(), 1);
        assert_eq!(count(&conn), 0, "the half-applied script was rolled back");
    }

    #[test]
    fn newer_version_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        let newer = LATEST_VERSION + 1;
        conn.pragma_update(None, "user_version", newer).unwrap();
        match migrate(&mut conn, MIGRATIONS) {
            Err(StoreError::TooNew { found, supported }) => {
                assert_eq!((found, supported), (newer, LATEST_VERSION));
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }

    #[test]
    fn v11_keeps_pending_requests_without_nick() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..10]).unwrap(), 10);
        conn.execute_batch(
            "INSERT INTO accounts (id, jid, password, created_ms) VALUES (1, 'a@x', 'pw', 0);
             INSERT INTO subscription_requests (account_id, jid, received_ms)
             VALUES (1, 'b@x', 5);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..11]).unwrap(), 11);
        let row: (String, Option<String>, i64) = conn
            .query_row(
                "SELECT jid, nick, received_ms FROM subscription_requests",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(row, ("b@x".to_owned(), None, 5));
    }

    #[test]
    fn v12_leaves_every_message_seen_by_the_whole_group() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..11]).unwrap(), 11);
        conn.execute_batch(
            "INSERT INTO accounts (id, jid, password, created_ms) VALUES (1, 'a@x', 'pw', 0);
             INSERT INTO conversations (id, account_id, peer, kind, created_ms, last_activity_ms)
             VALUES (1, 1, 'room@muc.x', 'groupchat', 0, 0);
             INSERT INTO messages (id, conversation_id, direction, sender, body, timestamp_ms,
                                   received_ms, delivery_state)
             VALUES (1, 1, 0, 'room@muc.x/bob', 'hi all', 5, 5, 2);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..12]).unwrap(), 12);
        let with: Option<String> = conn
            .query_row("SELECT private_with FROM messages WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(with, None);
        conn.execute("UPDATE messages SET private_with = 'bob' WHERE id = 1", [])
            .unwrap();
        assert!(
            conn.execute("UPDATE messages SET private_with = '' WHERE id = 1", [])
                .is_err(),
            "an empty nickname names no one"
        );
    }

    #[test]
    fn v13_keeps_messages_and_forgets_senders_with_them() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..12]).unwrap(), 12);
        conn.execute_batch(
            "INSERT INTO accounts (id, jid, password, created_ms) VALUES (1, 'a@x', 'pw', 0);
             INSERT INTO conversations (id, account_id, peer, created_ms, last_activity_ms)
             VALUES (1, 1, 'b@x', 0, 0);
             INSERT INTO messages (id, conversation_id, direction, sender, body, timestamp_ms,
                                   received_ms, delivery_state, encryption)
             VALUES (1, 1, 0, 'b@x', 'sealed', 5, 5, 2, 2);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..13]).unwrap(), 13);
        let senders = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM omemo_message_senders", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        // Messages from before the migration have no recorded device.
        assert_eq!(senders(&conn), 0);
        // No version 1; no message 2 yet.
        for bad in [
            "INSERT INTO omemo_message_senders VALUES (1, 'b@x', 1, 5)",
            "INSERT INTO omemo_message_senders VALUES (2, 'b@x', 2, 5)",
        ] {
            assert!(conn.execute(bad, []).is_err(), "{bad}");
        }
        conn.execute(
            "INSERT INTO omemo_message_senders (message_id, jid, version, device_id)
             VALUES (1, 'b@x', 2, 77)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO messages (id, conversation_id, direction, sender, body, timestamp_ms,
                                   received_ms, delivery_state)
             VALUES (2, 1, 0, 'b@x', 'x', 6, 6, 2)",
            [],
        )
        .unwrap();
        assert!(
            conn.execute(
                "INSERT INTO omemo_message_senders VALUES (2, 'b@x', 0, 0)",
                []
            )
            .is_err(),
            "device 0 is no device"
        );
        conn.execute("DELETE FROM messages WHERE id = 1", [])
            .unwrap();
        assert_eq!(senders(&conn), 0);
    }

    #[test]
    fn v14_keeps_devices_unlabelled_and_unheard() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..13]).unwrap(), 13);
        conn.execute_batch(
            "INSERT INTO accounts (id, jid, password, created_ms) VALUES (1, 'a@x', 'pw', 0);
             INSERT INTO omemo_device_lists (account_id, jid, version, updated_ms)
             VALUES (1, 'b@x', 2, 5);
             INSERT INTO omemo_devices (account_id, jid, version, device_id, active, first_seen_ms)
             VALUES (1, 'b@x', 2, 77, 1, 5);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..14]).unwrap(), 14);
        let untouched: bool = conn
            .query_row(
                "SELECT active AND label IS NULL AND labelsig IS NULL AND heard_ms IS NULL
                        AND unanswered = 0 AND unanswered_since_ms IS NULL
                 FROM omemo_devices",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            untouched,
            "a device from before v14 has no label and no record yet"
        );
        let set = |sql: &str| conn.execute(sql, []);
        for bad in [
            // A label without its signature, a signature without label, a short signature.
            "UPDATE omemo_devices SET label = 'Phone'",
            "UPDATE omemo_devices SET labelsig = zeroblob(64)",
            "UPDATE omemo_devices SET label = 'Phone', labelsig = zeroblob(63)",
            // Unanswered messages without the time of the first, and the other way round.
            "UPDATE omemo_devices SET unanswered = 3",
            "UPDATE omemo_devices SET unanswered_since_ms = 9",
            "UPDATE omemo_devices SET unanswered = -1, unanswered_since_ms = 9",
        ] {
            assert!(set(bad).is_err(), "{bad}");
        }
        set("UPDATE omemo_devices SET label = 'Phone', labelsig = zeroblob(64)").unwrap();
        set("UPDATE omemo_devices SET unanswered = 3, unanswered_since_ms = 9").unwrap();
        set("UPDATE omemo_devices SET heard_ms = 10, unanswered = 0, unanswered_since_ms = NULL")
            .unwrap();
    }

    #[test]
    fn schema_applies_cleanly() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        assert_eq!(migrate(&mut conn, MIGRATIONS).unwrap(), LATEST_VERSION);
    }
}
