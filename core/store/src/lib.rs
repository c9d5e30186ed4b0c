//! Linnet's encrypted database.
//!
//! SQLCipher through rusqlite, keyed with a raw 32-byte [`DbKey`] (never a passphrase),
//! WAL journal, schema changes only through numbered [`migrations`]. The store knows
//! nothing of XMPP: JIDs are plain strings (bare JIDs, normalized by the caller) and
//! stanzas in the outbox are opaque text.
//!
//! One [`Store`] per database file, owned behind a mutex. Each method is atomic and
//! committed when it returns, so the caller can acknowledge to the network right after;
//! [`Store::transaction`] groups several writes into one commit.

mod accounts;
mod conversations;
mod devices;
mod error;
mod files;
mod history;
mod key;
mod kv;
mod messages;
pub mod migrations;
mod omemo;
mod outbox;
mod profiles;
mod rich;
mod rooms;
mod roster;
mod session;
mod sql;
mod store;
mod tx;
mod types;

pub use devices::{DeviceActivity, DeviceLabel, ListedDevice, OmemoDevice};
pub use error::{Result, StoreError};
pub use files::{AttachmentRecord, AttachmentState};
pub use history::HistoryGap;
pub use key::DbKey;
pub use migrations::LATEST_VERSION;
pub use omemo::OmemoStore;
pub use profiles::{AvatarImage, AvatarSource, ProfileRecord};
pub use rich::ReactionSet;
pub use rooms::{RoomFeatures, RoomInvitation, RoomMember, RoomRecord};
pub use roster::SubscriptionRequestRecord;
pub use session::{FastToken, SessionState};
pub use store::Store;
pub use tx::Tx;
pub use types::{
    AccountId, AccountRecord, ContactRecord, ConversationId, ConversationKind, ConversationSummary,
    DeliveryState, Direction, Encryption, EncryptionPolicy, Inserted, LastFile, LastMessage,
    MessageId, MessageKind, MessageRecord, NewMessage, OutboxEntry, OutboxId, Subscription,
};
