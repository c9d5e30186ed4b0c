//! Files shared in messages (schema v9): one attachment per message, with what the sender
//! said about it, where it can be fetched, and where it is on this device.
//!
//! URLs are capabilities and names and paths are user data: the record's `Debug` shows
//! none of them.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension, Row, ToSql};

use crate::error::{Result, StoreError};
use crate::tx::{now_ms, Tx};
use crate::types::MessageId;

/// Where a message's file stands, as stored. A transfer in flight is not stored as such
/// (its progress lives in memory), except an upload, whose message is not sent until it
/// ends: a row left `Uploading` by a process that died is an upload that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachmentState {
    /// Our upload has not finished (or was interrupted).
    Uploading,
    /// Our upload finished; the message carries the URL.
    Uploaded,
    /// Received, not fetched.
    Available,
    /// Fetched to `local_path`, its hash checked when the sender gave one.
    Downloaded,
    /// The last transfer failed (`error` says why). A failed download may be retried.
    Failed,
    /// The last transfer was cancelled; a cancelled upload sent nothing.
    Cancelled,
}

impl AttachmentState {
    const ALL: [AttachmentState; 6] = [
        AttachmentState::Uploading,
        AttachmentState::Uploaded,
        AttachmentState::Available,
        AttachmentState::Downloaded,
        AttachmentState::Failed,
        AttachmentState::Cancelled,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AttachmentState::Uploading => "uploading",
            AttachmentState::Uploaded => "uploaded",
            AttachmentState::Available => "available",
            AttachmentState::Downloaded => "downloaded",
            AttachmentState::Failed => "failed",
            AttachmentState::Cancelled => "cancelled",
        }
    }
}

impl ToSql for AttachmentState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.code()))
    }
}

impl FromSql for AttachmentState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let code = value.as_str()?;
        AttachmentState::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .ok_or_else(|| FromSqlError::Other("invalid attachment state".into()))
    }
}

/// The file of one message.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    pub message: MessageId,
    /// The https URL to fetch it from; `None` until our own upload finished.
    pub url: Option<String>,
    /// A plain file name (the caller made it safe).
    pub name: String,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sha256: Option<[u8; 32]>,
    /// Where the file is on this device: what we uploaded, or where a download went.
    pub local_path: Option<String>,
    pub state: AttachmentState,
    /// Why the last transfer failed; no user data.
    pub error: Option<String>,
}

impl std::fmt::Debug for AttachmentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentRecord")
            .field("message", &self.message)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("media_type", &self.media_type)
            .field("size", &self.size)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("sha256", &self.sha256.is_some())
            .field(
                "local_path",
                &self.local_path.as_ref().map(|_| "<redacted>"),
            )
            .field("state", &self.state)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

const SELECT: &str = "SELECT message_id, url, name, media_type, size, width, height, sha256,
                             local_path, state, error
                      FROM attachments";

fn from_row(row: &Row<'_>) -> rusqlite::Result<AttachmentRecord> {
    let sha256: Option<Vec<u8>> = row.get(7)?;
    let sha256 = match sha256 {
        Some(v) => Some(<[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                7,
                rusqlite::types::Type::Blob,
                "a SHA-256 is 32 bytes".into(),
            )
        })?),
        None => None,
    };
    Ok(AttachmentRecord {
        message: row.get(0)?,
        url: row.get(1)?,
        name: row.get(2)?,
        media_type: row.get(3)?,
        size: row
            .get::<_, Option<i64>>(4)?
            .map(|s| u64::try_from(s).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(4, s)))
            .transpose()?,
        width: row.get(5)?,
        height: row.get(6)?,
        sha256,
        local_path: row.get(8)?,
        state: row.get(9)?,
        error: row.get(10)?,
    })
}

fn size_param(size: Option<u64>) -> Result<Option<i64>> {
    size.map(|s| i64::try_from(s).map_err(|_| StoreError::InvalidInput("file size out of range")))
        .transpose()
}

impl Tx<'_> {
    /// Stores the file of `a.message`, unless that message has one already (a copy seen
    /// again keeps what we know, such as a finished download). Returns whether it was new.
    pub fn insert_attachment(&self, a: &AttachmentRecord) -> Result<bool> {
        if a.name.is_empty() {
            return Err(StoreError::InvalidInput("an attachment needs a name"));
        }
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO attachments (message_id, url, name, media_type, size,
                     width, height, sha256, local_path, state, error, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                a.message,
                a.url,
                a.name,
                a.media_type,
                size_param(a.size)?,
                a.width,
                a.height,
                a.sha256.as_ref().map(|h| h.as_slice()),
                a.local_path,
                a.state,
                a.error,
                now_ms(),
            ])
            .map_err(crate::error::fk_not_found("message"))?;
        Ok(n > 0)
    }

    pub fn attachment(&self, message: MessageId) -> Result<Option<AttachmentRecord>> {
        Ok(self
            .conn
            .prepare_cached(&format!("{SELECT} WHERE message_id = ?1"))?
            .query_row([message], from_row)
            .optional()?)
    }

    /// The attachments of those of `messages` that have one, in the order given.
    pub fn attachments(&self, messages: &[MessageId]) -> Result<Vec<AttachmentRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT} WHERE message_id = ?1"))?;
        let mut out = Vec::new();
        for m in messages {
            if let Some(a) = stmt.query_row([m], from_row).optional()? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Sets the state (and the error, cleared when `None`). Returns whether the message
    /// has an attachment.
    pub fn set_attachment_state(
        &self,
        message: MessageId,
        state: AttachmentState,
        error: Option<&str>,
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE attachments SET state = ?2, error = ?3, updated_ms = ?4
                 WHERE message_id = ?1",
            )?
            .execute(params![message, state, error, now_ms()])?;
        Ok(n > 0)
    }

    /// Our upload of the file of `message` finished: it is at `url`, with the hash and
    /// dimensions found while sending, and the message's text becomes the URL (what
    /// clients without file support show, and what the chat list previews).
    pub fn attachment_uploaded(
        &self,
        message: MessageId,
        url: &str,
        sha256: Option<[u8; 32]>,
        dimensions: Option<(u32, u32)>,
    ) -> Result<()> {
        self.atomic(|| {
            let n = self
                .conn
                .prepare_cached(
                    "UPDATE attachments SET url = ?2, sha256 = ?3, width = ?4, height = ?5,
                         state = 'uploaded', error = NULL, updated_ms = ?6
                     WHERE message_id = ?1",
                )?
                .execute(params![
                    message,
                    url,
                    sha256.as_ref().map(|h| h.as_slice()),
                    dimensions.map(|d| d.0),
                    dimensions.map(|d| d.1),
                    now_ms(),
                ])?;
            if n == 0 {
                return Err(StoreError::NotFound("attachment"));
            }
            self.conn
                .prepare_cached("UPDATE messages SET body = ?2 WHERE id = ?1")?
                .execute(params![message, url])?;
            self.conn
                .prepare_cached(
                    "UPDATE conversations SET last_body = ?2 WHERE last_message_id = ?1",
                )?
                .execute(params![message, url])?;
            Ok(())
        })
    }

    /// The file of `message` (`bytes` long) was saved at `local_path`. A size the sender
    /// did not announce is now known.
    pub fn attachment_downloaded(
        &self,
        message: MessageId,
        local_path: &str,
        bytes: u64,
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE attachments SET local_path = ?2, size = ifnull(size, ?3),
                     state = 'downloaded', error = NULL, updated_ms = ?4
                 WHERE message_id = ?1",
            )?
            .execute(params![
                message,
                local_path,
                size_param(Some(bytes))?,
                now_ms()
            ])?;
        Ok(n > 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::{ConversationId, DeliveryState, Direction, NewMessage};
    use crate::Store;
    use crate::{AccountId, DbKey};

    fn setup() -> (Store, AccountId, ConversationId) {
        let store = Store::open_in_memory(&DbKey::from_bytes([9; 32])).unwrap();
        let account = store.add_account("me@example.org", "pw").unwrap();
        let c = store
            .conversation(account, "peer@example.org", true)
            .unwrap()
            .unwrap();
        (store, account, c)
    }

    fn message(store: &Store, c: ConversationId, body: &str, origin: &str) -> MessageId {
        store
            .insert_message(&NewMessage {
                conversation: c,
                direction: Direction::Outgoing,
                sender: "me@example.org".into(),
                body: body.into(),
                origin_id: Some(origin.into()),
                stanza_id: None,
                stanza_id_by: None,
                timestamp_ms: 1_000,
                delivery_state: DeliveryState::Pending,
                encryption: Default::default(),
                error: None,
                kind: Default::default(),
                target: None,
                reply_to: None,
                markable: false,
                replaces: None,
            })
            .unwrap()
            .id()
    }

    fn record(message: MessageId) -> AttachmentRecord {
        AttachmentRecord {
            message,
            url: None,
            name: "photo.jpg".into(),
            media_type: Some("image/jpeg".into()),
            size: Some(3_000_000),
            width: None,
            height: None,
            sha256: None,
            local_path: Some("/tmp/photo.jpg".into()),
            state: AttachmentState::Uploading,
            error: None,
        }
    }

    #[test]
    fn an_upload_becomes_a_message_with_its_url() {
        let (store, _, c) = setup();
        let m = message(&store, c, "", "o1");
        assert!(store.insert_attachment(&record(m)).unwrap());
        assert_eq!(store.attachment(m).unwrap(), Some(record(m)));
        let url = "https://upload.example.org/x/photo.jpg";
        store
            .attachment_uploaded(m, url, Some([5; 32]), Some((640, 480)))
            .unwrap();
        let a = store.attachment(m).unwrap().unwrap();
        assert_eq!(a.url.as_deref(), Some(url));
        assert_eq!(a.state, AttachmentState::Uploaded);
        assert_eq!(a.sha256, Some([5; 32]));
        assert_eq!((a.width, a.height), (Some(640), Some(480)));
        assert_eq!(store.message(m).unwrap().body, url);
        let preview = store.conversation_info(c).unwrap().last_message.unwrap();
        assert_eq!(preview.body, url);
        let dbg = format!("{a:?}");
        assert!(
            !dbg.contains("upload.example") && !dbg.contains("/tmp"),
            "{dbg}"
        );
    }

    #[test]
    fn a_copy_seen_again_keeps_what_we_know() {
        let (store, _, c) = setup();
        let m = message(&store, c, "https://x.org/a", "o1");
        let received = AttachmentRecord {
            url: Some("https://x.org/a".into()),
            local_path: None,
            state: AttachmentState::Available,
            sha256: Some([1; 32]),
            size: None,
            ..record(m)
        };
        assert!(store.insert_attachment(&received).unwrap());
        assert!(store.attachment_downloaded(m, "/home/me/a", 77).unwrap());
        assert!(!store.insert_attachment(&received).unwrap());
        let a = store.attachment(m).unwrap().unwrap();
        assert_eq!(a.state, AttachmentState::Downloaded);
        assert_eq!(a.local_path.as_deref(), Some("/home/me/a"));
        assert_eq!(a.size, Some(77), "the size is known once downloaded");
        assert!(store
            .set_attachment_state(m, AttachmentState::Failed, Some("the hash does not match"))
            .unwrap());
        let a = store.attachment(m).unwrap().unwrap();
        assert_eq!(a.error.as_deref(), Some("the hash does not match"));
    }

    #[test]
    fn attachments_follow_their_messages() {
        let (store, account, c) = setup();
        let a = message(&store, c, "a", "o1");
        let b = message(&store, c, "b", "o2");
        let plain = message(&store, c, "c", "o3");
        store.insert_attachment(&record(b)).unwrap();
        store.insert_attachment(&record(a)).unwrap();
        let got: Vec<MessageId> = store
            .attachments(&[a, plain, b])
            .unwrap()
            .into_iter()
            .map(|r| r.message)
            .collect();
        assert_eq!(got, vec![a, b]);
        // Bad input: no message, no name, a size SQLite cannot hold.
        assert!(matches!(
            store.insert_attachment(&record(MessageId(9_999))),
            Err(StoreError::NotFound(_))
        ));
        let nameless = AttachmentRecord {
            name: String::new(),
            ..record(plain)
        };
        assert!(store.insert_attachment(&nameless).is_err());
        let huge = AttachmentRecord {
            size: Some(u64::MAX),
            ..record(plain)
        };
        assert!(store.insert_attachment(&huge).is_err());
        assert!(matches!(
            store.attachment_uploaded(plain, "https://x", None, None),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.message(plain).unwrap().body, "c", "nothing changed");
        // Gone with their messages.
        store.remove_account(account).unwrap();
        assert_eq!(store.attachment(a).unwrap(), None);
    }
}
