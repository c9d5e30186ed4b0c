//! Snapshot records as the apps receive them: plain data, copied from the core's snapshots
//! field by field. Ids are the core's row ids (`i64`).

use linnet_client as core;

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Connection {
    /// Not trying: logged out, never logged in, or a failure retrying cannot fix.
    Offline {
        reason: Option<String>,
    },
    Connecting,
    Online,
    /// Disconnected; the next attempt is at `retry_at_ms` (ms since the epoch).
    Waiting {
        retry_at_ms: i64,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Direction {
    Incoming,
    Outgoing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DeliveryState {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Encryption {
    Plain,
    Omemo03,
    Omemo2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DeviceTrust {
    Undecided,
    Blind,
    Verified,
    Distrusted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TransferState {
    Uploading,
    Waiting,
    Uploaded,
    Available,
    Downloading,
    Downloaded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TextStyle {
    Strong,
    Emphasis,
    Strike,
    Code,
    CodeBlock,
    Quote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum JoinState {
    NotJoined,
    Joining,
    Joined,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Invitation {
    pub room: String,
    pub inviter: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Account {
    pub id: i64,
    pub jid: String,
    pub connection: Connection,
    pub catching_up: bool,
    /// JIDs asking to see our presence.
    pub subscription_requests: Vec<String>,
    pub invitations: Vec<Invitation>,
    pub nick: Option<String>,
    pub avatar: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Preview {
    pub id: i64,
    pub body: String,
    pub file: Option<String>,
    pub direction: Direction,
    pub state: DeliveryState,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChatItem {
    pub id: i64,
    pub account: i64,
    pub peer: String,
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub last_message: Option<Preview>,
    pub unread: u32,
    pub last_activity_ms: i64,
    pub group: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChatList {
    /// Grows with every snapshot a client publishes: a snapshot with a lower version is
    /// older.
    pub version: u64,
    pub accounts: Vec<Account>,
    pub conversations: Vec<ChatItem>,
    /// Calls ringing or under way, newest first, then the last few that ended: an incoming
    /// one in `Ringing` is what the app shows as "X is calling".
    #[uniffi(default)]
    pub calls: Vec<Call>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CallDirection {
    Incoming,
    Outgoing,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum CallEnd {
    HungUp {
        by_peer: bool,
    },
    Declined {
        by_peer: bool,
    },
    Busy,
    /// The caller gave up before it was answered: for the callee, a missed call.
    Cancelled {
        by_peer: bool,
    },
    NoAnswer,
    AnsweredElsewhere,
    DeclinedElsewhere,
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum CallState {
    /// Outgoing: calling (`peer_ringing` once a device of theirs rings). Incoming: ringing.
    Ringing {
        peer_ringing: bool,
    },
    Connecting,
    Connected {
        since_ms: i64,
        relayed: bool,
    },
    Ended {
        reason: CallEnd,
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Call {
    pub id: u64,
    pub account: i64,
    pub peer: String,
    pub direction: CallDirection,
    pub video: bool,
    pub state: CallState,
    pub started_ms: i64,
    /// The peer's OMEMO device that vouched for the call's DTLS fingerprint; `None`: the
    /// call is encrypted but not verified (see the core's `CallItem::verified_by`).
    #[uniffi(default)]
    pub verified_by: Option<CallVerification>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CallVerification {
    pub device_id: u32,
    pub trust: DeviceTrust,
}

impl From<&core::calls::CallItem> for Call {
    fn from(c: &core::calls::CallItem) -> Self {
        use core::calls::{CallEnd as E, CallState as S};
        let end = |e: &E| match e {
            E::HungUp { by_peer } => CallEnd::HungUp { by_peer: *by_peer },
            E::Declined { by_peer } => CallEnd::Declined { by_peer: *by_peer },
            E::Busy => CallEnd::Busy,
            E::Cancelled { by_peer } => CallEnd::Cancelled { by_peer: *by_peer },
            E::NoAnswer => CallEnd::NoAnswer,
            E::AnsweredElsewhere => CallEnd::AnsweredElsewhere,
            E::DeclinedElsewhere => CallEnd::DeclinedElsewhere,
            E::Failed { reason } => CallEnd::Failed {
                reason: reason.clone(),
            },
        };
        Call {
            id: c.id.0,
            account: c.account.0,
            peer: c.peer.clone(),
            direction: match c.direction {
                core::calls::CallDirection::Incoming => CallDirection::Incoming,
                core::calls::CallDirection::Outgoing => CallDirection::Outgoing,
            },
            video: c.video,
            state: match &c.state {
                S::Ringing { peer_ringing } => CallState::Ringing {
                    peer_ringing: *peer_ringing,
                },
                S::Connecting => CallState::Connecting,
                S::Connected { since_ms, relayed } => CallState::Connected {
                    since_ms: *since_ms,
                    relayed: *relayed,
                },
                S::Ended { reason, at_ms } => CallState::Ended {
                    reason: end(reason),
                    at_ms: *at_ms,
                },
            },
            started_ms: c.started_ms,
            verified_by: c.verified_by.map(|v| CallVerification {
                device_id: v.device_id,
                trust: v.trust.into(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Reply {
    pub message: Option<i64>,
    pub sender: String,
    pub excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    pub mine: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StyleSpan {
    pub style: TextStyle,
    /// UTF-16 code units, as Kotlin and Swift strings index.
    pub start: u32,
    pub end: u32,
    pub depth: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FileInfo {
    pub name: String,
    pub size: Option<u64>,
    pub media_type: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub state: TransferState,
    pub transferred: u64,
    pub local_path: Option<String>,
    pub error: Option<String>,
    pub encrypted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    pub id: i64,
    pub direction: Direction,
    pub sender: String,
    pub sender_nick: Option<String>,
    pub private_with: Option<String>,
    pub body: String,
    pub timestamp_ms: i64,
    pub state: DeliveryState,
    pub encryption: Encryption,
    pub error: Option<String>,
    pub edited: bool,
    pub retracted: bool,
    pub reply_to: Option<Reply>,
    pub reactions: Vec<Reaction>,
    pub spans: Vec<StyleSpan>,
    pub file: Option<FileInfo>,
    pub trust: Option<DeviceTrust>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Device {
    pub device_id: u32,
    pub encryption: Encryption,
    pub active: bool,
    /// 64 lowercase hex digits.
    pub fingerprint: Option<String>,
    pub trust: Option<DeviceTrust>,
    pub current: bool,
    pub label: Option<String>,
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Group {
    pub joined: JoinState,
    pub nick: String,
    pub subject: Option<String>,
    pub removed: Option<String>,
    pub occupants: u32,
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Conversation {
    pub version: u64,
    pub id: i64,
    pub account: i64,
    pub peer: String,
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub unread: u32,
    /// Oldest first.
    pub messages: Vec<Message>,
    pub has_more: bool,
    pub loading_older: bool,
    pub peer_typing: bool,
    pub group: Option<Group>,
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Contact {
    pub jid: String,
    pub name: Option<String>,
    pub nick: Option<String>,
    pub avatar: Option<String>,
    /// "none", "to", "from" or "both" (RFC 6121).
    pub subscription: String,
    /// We asked to see their presence and they have not answered.
    pub ask: bool,
}

/// Where to reach a server when DNS should not decide.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub direct_tls: bool,
}

impl From<Server> for core::ServerOverride {
    fn from(s: Server) -> Self {
        core::ServerOverride {
            host: s.host,
            port: s.port,
            direct_tls: s.direct_tls,
        }
    }
}

impl From<core::ConnectionState> for Connection {
    fn from(c: core::ConnectionState) -> Self {
        match c {
            core::ConnectionState::Offline { reason } => Connection::Offline { reason },
            core::ConnectionState::Connecting => Connection::Connecting,
            core::ConnectionState::Online => Connection::Online,
            core::ConnectionState::Waiting {
                retry_at_ms,
                reason,
            } => Connection::Waiting {
                retry_at_ms,
                reason,
            },
        }
    }
}

impl From<core::Direction> for Direction {
    fn from(d: core::Direction) -> Self {
        match d {
            core::Direction::Incoming => Direction::Incoming,
            core::Direction::Outgoing => Direction::Outgoing,
        }
    }
}

impl From<core::DeliveryState> for DeliveryState {
    fn from(s: core::DeliveryState) -> Self {
        match s {
            core::DeliveryState::Pending => DeliveryState::Pending,
            core::DeliveryState::Sent => DeliveryState::Sent,
            core::DeliveryState::Delivered => DeliveryState::Delivered,
            core::DeliveryState::Read => DeliveryState::Read,
            core::DeliveryState::Failed => DeliveryState::Failed,
        }
    }
}

impl From<linnet_store::Encryption> for Encryption {
    fn from(e: linnet_store::Encryption) -> Self {
        match e {
            linnet_store::Encryption::Plain => Encryption::Plain,
            linnet_store::Encryption::Omemo03 => Encryption::Omemo03,
            linnet_store::Encryption::Omemo2 => Encryption::Omemo2,
        }
    }
}

impl From<core::DeviceTrust> for DeviceTrust {
    fn from(t: core::DeviceTrust) -> Self {
        match t {
            core::DeviceTrust::Undecided => DeviceTrust::Undecided,
            core::DeviceTrust::Blind => DeviceTrust::Blind,
            core::DeviceTrust::Verified => DeviceTrust::Verified,
            core::DeviceTrust::Distrusted => DeviceTrust::Distrusted,
        }
    }
}

impl From<core::TransferState> for TransferState {
    fn from(s: core::TransferState) -> Self {
        match s {
            core::TransferState::Uploading => TransferState::Uploading,
            core::TransferState::Waiting => TransferState::Waiting,
            core::TransferState::Uploaded => TransferState::Uploaded,
            core::TransferState::Available => TransferState::Available,
            core::TransferState::Downloading => TransferState::Downloading,
            core::TransferState::Downloaded => TransferState::Downloaded,
            core::TransferState::Failed => TransferState::Failed,
            core::TransferState::Cancelled => TransferState::Cancelled,
        }
    }
}

impl From<core::TextStyle> for TextStyle {
    fn from(s: core::TextStyle) -> Self {
        match s {
            core::TextStyle::Strong => TextStyle::Strong,
            core::TextStyle::Emphasis => TextStyle::Emphasis,
            core::TextStyle::Strike => TextStyle::Strike,
            core::TextStyle::Code => TextStyle::Code,
            core::TextStyle::CodeBlock => TextStyle::CodeBlock,
            core::TextStyle::Quote => TextStyle::Quote,
        }
    }
}

impl From<core::JoinState> for JoinState {
    fn from(s: core::JoinState) -> Self {
        match s {
            core::JoinState::NotJoined => JoinState::NotJoined,
            core::JoinState::Joining => JoinState::Joining,
            core::JoinState::Joined => JoinState::Joined,
        }
    }
}

impl From<&core::AccountItem> for Account {
    fn from(a: &core::AccountItem) -> Self {
        Account {
            id: a.id.0,
            jid: a.jid.clone(),
            connection: a.connection.clone().into(),
            catching_up: a.catching_up,
            subscription_requests: a
                .subscription_requests
                .iter()
                .map(|r| r.jid.clone())
                .collect(),
            invitations: a
                .invitations
                .iter()
                .map(|i| Invitation {
                    room: i.room.clone(),
                    inviter: i.inviter.clone(),
                    reason: i.reason.clone(),
                })
                .collect(),
            nick: a.nick.clone(),
            avatar: a.avatar.clone(),
        }
    }
}

impl From<&core::ChatListSnapshot> for ChatList {
    fn from(s: &core::ChatListSnapshot) -> Self {
        ChatList {
            version: s.version,
            accounts: s.accounts.iter().map(Account::from).collect(),
            conversations: s
                .conversations
                .iter()
                .map(|c| ChatItem {
                    id: c.id.0,
                    account: c.account.0,
                    peer: c.peer.clone(),
                    name: c.name.clone(),
                    avatar: c.avatar.clone(),
                    last_message: c.last_message.as_ref().map(|m| Preview {
                        id: m.id.0,
                        body: m.body.clone(),
                        file: m.file.clone(),
                        direction: m.direction.into(),
                        state: m.state.into(),
                        timestamp_ms: m.timestamp_ms,
                    }),
                    unread: c.unread,
                    last_activity_ms: c.last_activity_ms,
                    group: c.group,
                })
                .collect(),
            calls: s.calls.iter().map(Call::from).collect(),
        }
    }
}

impl From<&core::MessageItem> for Message {
    fn from(m: &core::MessageItem) -> Self {
        Message {
            id: m.id.0,
            direction: m.direction.into(),
            sender: m.sender.clone(),
            sender_nick: m.sender_nick.clone(),
            private_with: m.private_with.clone(),
            body: m.body.clone(),
            timestamp_ms: m.timestamp_ms,
            state: m.state.into(),
            encryption: m.encryption.into(),
            error: m.error.clone(),
            edited: m.edited,
            retracted: m.retracted,
            reply_to: m.reply_to.as_ref().map(|r| Reply {
                message: r.message.map(|id| id.0),
                sender: r.sender.clone(),
                excerpt: r.excerpt.clone(),
            }),
            reactions: m
                .reactions
                .iter()
                .map(|r| Reaction {
                    emoji: r.emoji.clone(),
                    count: r.count,
                    mine: r.mine,
                })
                .collect(),
            spans: m
                .spans
                .iter()
                .map(|s| StyleSpan {
                    style: s.style.into(),
                    start: s.start,
                    end: s.end,
                    depth: s.depth,
                })
                .collect(),
            file: m.attachment.as_ref().map(|a| FileInfo {
                name: a.name.clone(),
                size: a.size,
                media_type: a.media_type.clone(),
                width: a.width,
                height: a.height,
                state: a.state.into(),
                transferred: a.transferred,
                local_path: a.local_path.clone(),
                error: a.error.clone(),
                encrypted: a.encrypted,
            }),
            trust: m.trust.map(DeviceTrust::from),
        }
    }
}

impl From<&core::OmemoDeviceInfo> for Device {
    fn from(d: &core::OmemoDeviceInfo) -> Self {
        Device {
            device_id: d.device_id,
            encryption: d.encryption.into(),
            active: d.active,
            fingerprint: d.fingerprint.clone(),
            trust: d.trust.map(DeviceTrust::from),
            current: d.current,
            label: d.label.clone(),
            stale: d.stale,
        }
    }
}

impl From<&core::ConversationSnapshot> for Conversation {
    fn from(s: &core::ConversationSnapshot) -> Self {
        Conversation {
            version: s.version,
            id: s.id.0,
            account: s.account.0,
            peer: s.peer.clone(),
            name: s.name.clone(),
            avatar: s.avatar.clone(),
            unread: s.unread,
            messages: s.messages.iter().map(Message::from).collect(),
            has_more: s.has_more,
            loading_older: s.loading_older,
            peer_typing: s.peer_typing,
            group: s.group.as_ref().map(|g| Group {
                joined: g.joined.into(),
                nick: g.nick.clone(),
                subject: g.subject.clone(),
                removed: g.removed.clone(),
                occupants: u32::try_from(g.occupants.len()).unwrap_or(u32::MAX),
                private: g.private,
            }),
            devices: s.devices.iter().map(Device::from).collect(),
        }
    }
}

impl From<core::ContactItem> for Contact {
    fn from(c: core::ContactItem) -> Self {
        Contact {
            jid: c.jid,
            name: c.name,
            nick: c.nick,
            avatar: c.avatar,
            subscription: c.subscription,
            ask: c.ask,
        }
    }
}
