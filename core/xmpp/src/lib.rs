//! linnet-xmpp: the XMPP session. The only crate that touches xmpp-parsers, minidom and jid
//! types; everything it exposes is plain Rust data.

mod connect;
mod elem;
mod error;
mod fast;
pub mod files;
pub mod inbound;
pub mod jid;
pub mod jingle;
mod limits;
mod mam;
pub mod muc;
pub mod omemo;
mod pep;
pub mod profile;
pub mod rich;
mod sasl2;
pub mod scram;
mod session;
mod srv;
pub mod styling;
mod tls;
pub mod upload;

pub use connect::{
    connect, forget_login_hints, login_hint, register, set_login_hint, ConnectConfig, Connection,
    Negotiated, ResumeRequest, ServerAddr, SmBase,
};
pub use error::{ConnectError, RequestError};
pub use fast::FastToken;
pub use inbound::{ChatMessage, Event, RosterItem, Subscription};
pub use jid::{BareJid, JidError};
pub use limits::{DropReason, InboundLimits};
pub use pep::{NodeConfig, PepItem, Published};
pub use sasl2::new_user_agent_id;
pub use session::{chat_stanza, stanza_to_string, ArchiveFrom, HistoryBefore, Session, SmState};
pub use srv::service_address;
/// The rustls configuration our XMPP connections use (same roots, same verification), for
/// other TLS clients of the core such as HTTP file transfers.
pub use tls::{client_config as tls_client_config, TlsOptions};

/// A fresh random id for stanzas (and origin-ids): 128 bits, URL-safe.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
