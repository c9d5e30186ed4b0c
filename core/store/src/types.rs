use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

macro_rules! id_type {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }
    };
}

id_type!(
    /// Row id of an account; never reused after removal.
    AccountId
);
id_type!(
    /// Row id of a conversation; never reused after removal.
    ConversationId
);
id_type!(
    /// Row id of a message; never reused, so a stale id held by the UI cannot hit
    /// another message.
    MessageId
);
id_type!(
    /// Row id of an outbox entry; never reused, so a late acknowledgement cannot remove a
    /// newer entry.
    OutboxId
);

fn invalid(what: &'static str) -> FromSqlError {
    FromSqlError::Other(what.into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl ToSql for Direction {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(match self {
            Direction::Incoming => 0i64,
            Direction::Outgoing => 1,
        }))
    }
}

impl FromSql for Direction {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match i64::column_result(value)? {
            0 => Ok(Direction::Incoming),
            1 => Ok(Direction::Outgoing),
            _ => Err(invalid("invalid message direction")),
        }
    }
}

/// How far a message got.
///
/// For outgoing messages: queued → accepted by our server → receipt from a recipient
/// device → displayed marker. For incoming messages only two values matter: anything
/// below `Read` means unread, `Read` means the user has seen it.
///
/// The derived order is the order of progress; `Failed` sorts last but is not "further"
/// than `Read`: see [`DeliveryState::can_become`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryState {
    pub(crate) const ALL: [DeliveryState; 5] = [
        DeliveryState::Pending,
        DeliveryState::Sent,
        DeliveryState::Delivered,
        DeliveryState::Read,
        DeliveryState::Failed,
    ];

    pub(crate) fn code(self) -> i64 {
        match self {
            DeliveryState::Pending => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Read => 3,
            DeliveryState::Failed => 4,
        }
    }

    /// Whether a message in state `self` may move to `next`.
    ///
    /// Progress only moves forward, because receipts and markers arrive out of order
    /// (a displayed marker can overtake the delivery receipt) and a late, weaker event
    /// must not undo a stronger one. `Failed` is reachable only before the server took
    /// the message; once delivered it cannot fail any more. A failed message may leave
    /// `Failed` in any direction: to `Pending` when the user retries, or forward when a
    /// late receipt proves it arrived after all.
    pub fn can_become(self, next: DeliveryState) -> bool {
        use DeliveryState::*;
        match (self, next) {
            (Failed, Failed) => false,
            (Failed, _) => true,
            (Pending | Sent, Failed) => true,
            (_, Failed) => false,
            (current, next) => next > current,
        }
    }

    /// Bit set of the states from which `next` is reachable, for a single conditional
    /// UPDATE (no read-then-write race).
    pub(crate) fn reachable_from_mask(next: DeliveryState) -> i64 {
        Self::ALL
            .iter()
            .filter(|s| s.can_become(next))
            .fold(0, |mask, s| mask | (1 << s.code()))
    }
}

impl ToSql for DeliveryState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.code()))
    }
}

impl FromSql for DeliveryState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let code = i64::column_result(value)?;
        DeliveryState::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .ok_or_else(|| invalid("invalid delivery state"))
    }
}

/// RFC 6121 roster subscription. `Remove` only appears in roster pushes; it is never
/// stored (upserting a `Remove` item deletes the contact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscription {
    None,
    To,
    From,
    Both,
    Remove,
}

impl Subscription {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
            Subscription::Remove => "remove",
        }
    }
}

impl FromSql for Subscription {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "none" => Ok(Subscription::None),
            "to" => Ok(Subscription::To),
            "from" => Ok(Subscription::From),
            "both" => Ok(Subscription::Both),
            _ => Err(invalid("invalid subscription")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    Chat,
    GroupChat,
}

impl ToSql for ConversationKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(match self {
            ConversationKind::Chat => "chat",
            ConversationKind::GroupChat => "groupchat",
        }))
    }
}

impl FromSql for ConversationKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "chat" => Ok(ConversationKind::Chat),
            "groupchat" => Ok(ConversationKind::GroupChat),
            _ => Err(invalid("invalid conversation kind")),
        }
    }
}

/// A configured account. The password lives here because the database is encrypted;
/// it is zeroized on drop, redacted from `Debug` and never serialized.
#[derive(Clone, PartialEq, Serialize)]
pub struct AccountRecord {
    pub id: AccountId,
    /// Bare JID, exactly as the caller stored it (normalization is the caller's job).
    pub jid: String,
    #[serde(skip_serializing)]
    pub password: Zeroizing<String>,
    pub resource: Option<String>,
    pub enabled: bool,
    /// Connection override; `None` means "resolve through DNS SRV as usual".
    pub server_host: Option<String>,
    pub server_port: Option<u16>,
    /// Use XEP-0368 direct TLS to the override instead of STARTTLS.
    pub direct_tls: bool,
}

impl fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRecord")
            .field("id", &self.id)
            .field("jid", &self.jid)
            .field("password", &"<redacted>")
            .field("resource", &self.resource)
            .field("enabled", &self.enabled)
            .field("server_host", &self.server_host)
            .field("server_port", &self.server_port)
            .field("direct_tls", &self.direct_tls)
            .finish()
    }
}

/// One RFC 6121 roster item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub jid: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// A subscription request of ours is pending (`ask="subscribe"`).
    pub ask: bool,
    pub groups: Vec<String>,
}

/// A message to store. `stanza_id` and `stanza_id_by` (XEP-0359) come together or not
/// at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub conversation: ConversationId,
    pub direction: Direction,
    /// Bare JID of the author (or the occupant JID in a group chat).
    pub sender: String,
    pub body: String,
    pub origin_id: Option<String>,
    pub stanza_id: Option<String>,
    pub stanza_id_by: Option<String>,
    /// The message's own time: the XEP-0203 delay stamp, else the time it arrived/was sent.
    pub timestamp_ms: i64,
    pub delivery_state: DeliveryState,
    pub encryption: Encryption,
    /// Why an incoming encrypted message could not be decrypted (then `body` is empty). No
    /// user data: it is shown as the message.
    pub error: Option<String>,
    /// A message, or a change to the message `target` (hidden from the history; see the
    /// v6 migration).
    pub kind: MessageKind,
    pub target: Option<MessageId>,
    /// XEP-0461: the id of the message this one answers.
    pub reply_to: Option<String>,
    /// XEP-0333: the sender wants displayed markers.
    pub markable: bool,
    /// XEP-0308: the id this message was meant to correct, when that message is unknown
    /// and this one stands in for it.
    pub replaces: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageRecord {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub account: AccountId,
    pub direction: Direction,
    pub sender: String,
    pub body: String,
    pub origin_id: Option<String>,
    pub stanza_id: Option<String>,
    pub stanza_id_by: Option<String>,
    pub timestamp_ms: i64,
    /// When this device stored it.
    pub received_ms: i64,
    pub delivery_state: DeliveryState,
    pub encryption: Encryption,
    /// See [`NewMessage::error`].
    pub error: Option<String>,
    pub kind: MessageKind,
    pub target: Option<MessageId>,
    /// When the text now shown was written by a correction (its time).
    pub edited_ms: Option<i64>,
    /// When the sender retracted it (the body is then empty).
    pub retracted_ms: Option<i64>,
    pub reply_to: Option<String>,
    pub markable: bool,
    pub replaces: Option<String>,
    /// XEP-0421: the room's id of a group message's sender (see the v8 migration).
    pub occupant_id: Option<String>,
    /// A private message through a group (XEP-0045 §7.5): the nickname of the other
    /// occupant, its sender or (ours) its addressee; `None` for what the whole group sees
    /// and outside groups (see the v12 migration).
    pub private_with: Option<String>,
}

/// What a row of `messages` is: a message of the history, or a change to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    #[default]
    Message,
    Correction,
    Retraction,
    Reactions,
}

impl MessageKind {
    fn code(self) -> i64 {
        match self {
            MessageKind::Message => 0,
            MessageKind::Correction => 1,
            MessageKind::Retraction => 2,
            MessageKind::Reactions => 3,
        }
    }
}

impl ToSql for MessageKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.code().into())
    }
}

impl FromSql for MessageKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_i64()? {
            0 => Ok(MessageKind::Message),
            1 => Ok(MessageKind::Correction),
            2 => Ok(MessageKind::Retraction),
            3 => Ok(MessageKind::Reactions),
            n => Err(FromSqlError::OutOfRange(n)),
        }
    }
}

/// How a message travelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    #[default]
    Plain,
    /// OMEMO 0.3 (eu.siacs.conversations.axolotl).
    Omemo03,
    /// OMEMO 2 (urn:xmpp:omemo:2).
    Omemo2,
}

impl Encryption {
    fn code(self) -> i64 {
        match self {
            Encryption::Plain => 0,
            Encryption::Omemo03 => 1,
            Encryption::Omemo2 => 2,
        }
    }
}

impl ToSql for Encryption {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.code()))
    }
}

impl FromSql for Encryption {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let code = i64::column_result(value)?;
        [Encryption::Plain, Encryption::Omemo03, Encryption::Omemo2]
            .into_iter()
            .find(|e| e.code() == code)
            .ok_or_else(|| invalid("invalid encryption"))
    }
}

/// A conversation's encryption choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionPolicy {
    /// OMEMO when the peer has devices; becomes [`EncryptionPolicy::Omemo`] with the first
    /// message that goes encrypted, so that a vanished device list never turns it off.
    #[default]
    Auto,
    Omemo,
    Plain,
}

impl EncryptionPolicy {
    pub(crate) fn code(self) -> &'static str {
        match self {
            EncryptionPolicy::Auto => "auto",
            EncryptionPolicy::Omemo => "omemo",
            EncryptionPolicy::Plain => "plain",
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Self> {
        [
            EncryptionPolicy::Auto,
            EncryptionPolicy::Omemo,
            EncryptionPolicy::Plain,
        ]
        .into_iter()
        .find(|p| p.code() == code)
    }
}

/// Outcome of storing a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    New(Box<MessageRecord>),
    /// Already stored (same origin-id, or same stanza-id from the same archive).
    Duplicate(MessageId),
}

impl Inserted {
    pub fn id(&self) -> MessageId {
        match self {
            Inserted::New(m) => m.id,
            Inserted::Duplicate(id) => *id,
        }
    }

    pub fn is_new(&self) -> bool {
        matches!(self, Inserted::New(_))
    }
}

/// The part of a conversation's last message that a chat list shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastMessage {
    pub id: MessageId,
    pub sender: String,
    pub body: String,
    pub direction: Direction,
    pub delivery_state: DeliveryState,
    pub timestamp_ms: i64,
    /// The file the last message shares.
    pub file: Option<LastFile>,
}

/// The file of a conversation's last message, for its preview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastFile {
    pub name: String,
    /// Its https URL, once known.
    pub url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConversationSummary {
    pub id: ConversationId,
    pub account: AccountId,
    /// Bare JID of the peer (or of the room).
    pub peer: String,
    pub kind: ConversationKind,
    /// Time of the newest message, or the creation time while there is none.
    pub last_activity_ms: i64,
    pub unread_count: u32,
    pub last_message: Option<LastMessage>,
}

/// A stanza that must reach the server. It stays until the server acknowledged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub id: OutboxId,
    pub account: AccountId,
    pub message: Option<MessageId>,
    pub kind: String,
    /// Serialized stanza; opaque to the store.
    pub payload: String,
    pub created_ms: i64,
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::DeliveryState::*;

    #[test]
    fn delivery_state_transitions() {
        assert!(Pending.can_become(Sent));
        assert!(Pending.can_become(Read));
        assert!(Sent.can_become(Delivered));
        assert!(!Delivered.can_become(Sent));
        assert!(!Read.can_become(Delivered));
        assert!(!Sent.can_become(Sent));
        assert!(Pending.can_become(Failed));
        assert!(Sent.can_become(Failed));
        assert!(!Delivered.can_become(Failed));
        assert!(!Read.can_become(Failed));
        assert!(Failed.can_become(Pending));
        assert!(Failed.can_become(Delivered));
        assert!(!Failed.can_become(Failed));
        assert!(Pending < Sent && Sent < Delivered && Delivered < Read);
    }

    #[test]
    fn reachable_mask_matches_rule() {
        // Delivered is reachable from Pending(0), Sent(1), Failed(4).
        assert_eq!(
            super::DeliveryState::reachable_from_mask(Delivered),
            0b10011
        );
        // Failed only from Pending and Sent.
        assert_eq!(super::DeliveryState::reachable_from_mask(Failed), 0b00011);
    }
}
