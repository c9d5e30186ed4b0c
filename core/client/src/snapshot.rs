//! The state-snapshot layer (DESIGN.md §3): immutable, versioned snapshots split by screen,
//! delivered to listeners as "current value first, then one update per change", coalesced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use linnet_store::{AccountId, ConversationId, DeliveryState, Direction, MessageId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionState {
    /// Not trying: logged out, never logged in, or a failure that retrying cannot fix.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountItem {
    pub id: AccountId,
    pub jid: String,
    pub connection: ConnectionState,
    /// Fetching what the account missed from the server's archive (XEP-0313) after a
    /// fresh login; until it ends, the newest messages may still be followed by older ones
    /// falling into place ("Updating…").
    pub catching_up: bool,
    /// How far the catch-up has come ("catching up n/m"), while it reads more than a page.
    pub sync_progress: Option<SyncProgress>,
    /// Pending incoming subscription requests, oldest first, for "X wants to add you".
    pub subscription_requests: Vec<SubscriptionRequestItem>,
    /// Invitations to groups waiting for an answer (`accept_invitation`), oldest first.
    pub invitations: Vec<GroupInvitation>,
    /// JIDs this account blocks (XEP-0191): nothing passes between them and us.
    pub blocked: Vec<String>,
    /// The nickname we publish (XEP-0172).
    pub nick: Option<String>,
    /// Our avatar's id (XEP-0084), for `Client::avatar`.
    pub avatar: Option<String>,
}

/// "X wants to add you": a pending incoming subscription request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionRequestItem {
    /// The bare JID asking.
    pub jid: String,
    /// The nickname the request carried (XEP-0172 §4.2): what they call themselves,
    /// unverified. Show it only next to the JID, never instead of it.
    pub nick: Option<String>,
}

/// "X invites you to group Y."
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInvitation {
    /// The room's JID.
    pub room: String,
    pub inviter: String,
    pub reason: Option<String>,
    pub received_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessagePreview {
    pub id: MessageId,
    /// Without the URL of the file it shares, if that was all of it: then `file` says.
    pub body: String,
    /// The name of the file the message shares.
    pub file: Option<String>,
    pub direction: Direction,
    pub state: DeliveryState,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationItem {
    pub id: ConversationId,
    pub account: AccountId,
    pub peer: String,
    /// Our name for the peer, else the nickname they publish, else none (show the JID).
    pub name: Option<String>,
    /// The peer's avatar id, for `Client::avatar`.
    pub avatar: Option<String>,
    pub last_message: Option<MessagePreview>,
    pub unread: u32,
    pub last_activity_ms: i64,
    /// A group chat (the peer is the room's JID).
    pub group: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatListSnapshot {
    pub version: u64,
    pub accounts: Vec<AccountItem>,
    /// Most recent activity first. Items are shared between snapshots (an unchanged
    /// conversation costs a reference count, not a copy, per update).
    pub conversations: Vec<Arc<ConversationItem>>,
    /// Calls ringing or under way, newest first, then the last few that ended.
    pub calls: Vec<crate::calls::CallItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageItem {
    pub id: MessageId,
    pub direction: Direction,
    pub sender: String,
    /// In a group: the sender's nickname (the sender being their occupant JID).
    pub sender_nick: Option<String>,
    /// In a group: a private message (XEP-0045 §7.5), seen by one other occupant alone,
    /// whose nickname this is: who sent it to us, or to whom ours went. `None` for what
    /// the whole group sees, and outside groups. It cannot be answered, corrected or
    /// reacted to as group messages are (`send_private_message` answers it).
    pub private_with: Option<String>,
    pub body: String,
    pub timestamp_ms: i64,
    pub state: DeliveryState,
    /// How it travelled (OMEMO 0.3, OMEMO 2, or in the clear).
    pub encryption: linnet_store::Encryption,
    /// Why it could not be decrypted or sent; then `body` is empty or not delivered.
    pub error: Option<String>,
    /// The text shown is a correction of the original (XEP-0308).
    pub edited: bool,
    /// Deleted for everyone by its author (XEP-0424); `body` is then empty.
    pub retracted: bool,
    /// The message this one answers (XEP-0461).
    pub reply_to: Option<ReplyPreview>,
    /// Reactions by emoji, in the order they first came (XEP-0444).
    pub reactions: Vec<Reaction>,
    /// XEP-0393 styling of `body`, parsed once here so both apps render it alike.
    pub spans: Vec<StyleSpan>,
    /// The file this message shares (XEP-0363/0066/0447). When the body was nothing but
    /// the file's URL, `body` is empty: the file is the message.
    pub attachment: Option<Attachment>,
    /// For a message decrypted from OMEMO: the trust the user has now in the device it came
    /// from (or, corrected, the device the correction came from). Anything but `Verified`
    /// and `Blind` is worth a warning: the message is shown, but from a device the user
    /// has not accepted (XEP-0384 §8). `None` for plaintext, undecryptable messages and
    /// what this device sent.
    pub trust: Option<DeviceTrust>,
}

/// How far the user trusts an OMEMO device (see `linnet_client::trust` for the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceTrust {
    /// New, and a device of the same JID is verified (or the policy is manual): nothing is
    /// encrypted for it until the user verifies or trusts it.
    Undecided,
    /// Trusted without verification (blind trust before verification, or by the user).
    Blind,
    /// The user compared its fingerprint (or scanned its QR code).
    Verified,
    /// The user rejected it: never encrypted for.
    Distrusted,
}

impl DeviceTrust {
    /// Messages are encrypted for the device.
    pub fn is_trusted(self) -> bool {
        matches!(self, DeviceTrust::Blind | DeviceTrust::Verified)
    }
}

/// One OMEMO device of a JID (a contact, or our own account) as the trust screens show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OmemoDeviceInfo {
    pub device_id: u32,
    /// The version the device is reached by (OMEMO 2 when it is in both lists).
    pub encryption: linnet_store::Encryption,
    /// In the device's list as last seen; inactive devices get nothing.
    pub active: bool,
    /// The identity key's fingerprint: its Curve25519 form (for OMEMO 2 converted from
    /// Ed25519) in 64 lowercase hex digits, what other clients show for the device
    /// (`format_fingerprint` groups it for display). `None` until the key is known (a
    /// session was built, or its fingerprint verified in advance).
    pub fingerprint: Option<String>,
    /// `None` while the key is unknown.
    pub trust: Option<DeviceTrust>,
    /// This client's own device (in our own account's list).
    pub current: bool,
    /// The name the device gave itself (OMEMO 2 only), shown only once its signature
    /// checked out against the device's identity key: `None` until that key is known, and
    /// for good when the signature is wrong.
    pub label: Option<String>,
    /// The device has not answered our messages for long (see `devices`): nothing is
    /// encrypted for it until something comes from it again.
    pub stale: bool,
}

/// A file shared in a message, and how its transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// A plain file name (no directories), as the sender gave it or derived from the URL.
    pub name: String,
    /// In bytes, when known.
    pub size: Option<u64>,
    /// As the sender said; advisory only.
    pub media_type: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The SHA-256 the file must have (hex), when the sender gave one; a download that
    /// does not match it fails.
    pub sha256: Option<String>,
    pub state: TransferState,
    /// Bytes moved by the transfer under way (or the last one); `size` when done.
    pub transferred: u64,
    /// Where the file is on this device: the source of an upload, or the downloaded file.
    pub local_path: Option<String>,
    /// Why the last transfer failed.
    pub error: Option<String>,
    /// Shared end to end encrypted (XEP-0454, in an OMEMO conversation): the server holds
    /// only ciphertext, the key travels inside the OMEMO message, and a download is
    /// checked against the file's authentication tag. A received one's `size` is unknown
    /// until it is downloaded.
    pub encrypted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Ours, going up; the message is sent once it is there.
    Uploading,
    /// Ours, not going up right now: waiting for the account to be online, or for the next
    /// attempt after the network failed (`error` says how). It starts again by itself;
    /// `transferred` is 0 until it does.
    Waiting,
    /// Ours, uploaded and sent.
    Uploaded,
    /// Received; `download_file` fetches it.
    Available,
    Downloading,
    Downloaded,
    /// The last transfer failed (`error`); a download can be tried again, an upload with
    /// `retry_upload`.
    Failed,
    /// Cancelled by the user; a cancelled upload sent nothing (`retry_upload` sends it).
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyPreview {
    /// The answered message, if we hold it (`None`: it is older than our history).
    pub message: Option<MessageId>,
    pub sender: String,
    /// The start of its text (empty when it was deleted or is unknown).
    pub excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    pub senders: Vec<String>,
    /// One of them is ours (tapping it again removes it).
    pub mine: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextStyle {
    Strong,
    Emphasis,
    Strike,
    /// Inline preformatted text.
    Code,
    /// A preformatted block.
    CodeBlock,
    /// A block quote (nested ones have a greater `depth`).
    Quote,
}

/// A styled range of a message's body, in UTF-16 code units (Kotlin `String` and
/// `NSAttributedString` indices). Span directives (`*`, `_`, …) lie inside the range: the
/// XEP wants them shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StyleSpan {
    pub style: TextStyle,
    pub start: u32,
    pub end: u32,
    /// Quote nesting depth (1 for the outermost), 0 for other styles.
    pub depth: u8,
}

/// Progress of a catch-up: messages received, and how many there are in all when the
/// server counts them (ejabberd does; Prosody by default does not, so only `received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncProgress {
    pub received: u32,
    pub total: Option<u32>,
}

/// Messages between these times may be missing: the server's archive had lost them
/// (expired) before this device read it. Shown between the messages on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HistoryGap {
    pub after_ms: i64,
    pub before_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationSnapshot {
    pub version: u64,
    pub id: ConversationId,
    pub account: AccountId,
    pub peer: String,
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub unread: u32,
    /// The newest messages, oldest first; `load_older` widens the window.
    pub messages: Vec<MessageItem>,
    /// Older messages exist beyond the window, here or (until scrolling back has reached
    /// its start) in the server's archive.
    pub has_more: bool,
    /// `load_older` is fetching older history from the server.
    pub loading_older: bool,
    /// Gaps in the history from the oldest message shown on, oldest first.
    pub gaps: Vec<HistoryGap>,
    /// The peer is typing (XEP-0085 "composing"), as last told.
    pub peer_typing: bool,
    /// What a group chat has beyond a one-to-one conversation; `None` for those.
    pub group: Option<GroupState>,
    /// The peer's OMEMO devices with fingerprints and trust (empty for groups): a device
    /// `Undecided` is a new one waiting for the user's verification.
    pub devices: Vec<OmemoDeviceInfo>,
}

/// Whether we are in a group right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinState {
    NotJoined,
    Joining,
    Joined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupState {
    pub joined: JoinState,
    /// Our nickname in it.
    pub nick: String,
    pub subject: Option<String>,
    /// Why we are no longer in it ("kicked", "banned", "destroyed", …) when we did not leave
    /// on our own; cleared when we join again.
    pub removed: Option<String>,
    /// Our own affiliation ("owner", "admin", "member", "none") and role ("moderator",
    /// "participant", "visitor"), while joined.
    pub affiliation: Option<String>,
    pub role: Option<String>,
    /// Who is in it now, by nickname; ourselves included.
    pub occupants: Vec<Occupant>,
    /// Who may be in it (owners, admins, members by real JID), as last read.
    pub members: Vec<GroupMember>,
    /// Members only, real JIDs visible to all: what end-to-end encryption in a group needs.
    pub private: bool,
    /// The group keeps an archive its history is read from.
    pub archived: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Occupant {
    pub nick: String,
    /// Their real bare JID, when the room shows it to everyone.
    pub jid: Option<String>,
    pub affiliation: Option<String>,
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    pub jid: String,
    pub affiliation: String,
    pub nick: Option<String>,
}

pub trait ChatListListener: Send + Sync + 'static {
    fn on_update(&self, snapshot: Arc<ChatListSnapshot>);
}

pub trait ConversationListener: Send + Sync + 'static {
    fn on_update(&self, snapshot: Arc<ConversationSnapshot>);
}

impl<F: Fn(Arc<ChatListSnapshot>) + Send + Sync + 'static> ChatListListener for F {
    fn on_update(&self, snapshot: Arc<ChatListSnapshot>) {
        self(snapshot)
    }
}

/// Keeps a subscription alive; dropping it stops the updates.
pub struct Subscription {
    task: Option<JoinHandle<()>>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Subscription {
    pub(crate) fn new(task: JoinHandle<()>, on_drop: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Subscription {
            task: Some(task),
            on_drop,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// Versions are global to a client so that every snapshot it publishes is ordered.
#[derive(Default)]
pub(crate) struct VersionClock(AtomicU64);

impl VersionClock {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Delivers the current value synchronously, then every later value the listener has not
/// yet seen. `watch` keeps only the latest value, which is what coalesces bursts for a slow
/// listener.
pub(crate) fn deliver<T, F>(rx: watch::Receiver<Arc<T>>, mut call: F) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    F: FnMut(Arc<T>) + Send + 'static,
{
    let mut rx = rx;
    let first = rx.borrow_and_update().clone();
    call(first);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let v = rx.borrow_and_update().clone();
            call(v);
        }
    })
}
