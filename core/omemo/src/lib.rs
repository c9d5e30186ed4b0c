//! OMEMO cryptography for Linnet: OMEMO 0.3 (`eu.siacs.conversations.axolotl`, the Signal v3
//! wire format) and OMEMO 2 (`urn:xmpp:omemo:2`, XEP-0384 0.8+), chosen per device.
//!
//! Sans-I/O: nothing here touches the network or a clock. State lives behind the [`store`]
//! traits. [`SessionManager`] is the entry point: it publishes a [`Bundle`], builds sessions
//! from peers' bundles ([`SessionManager::process_bundle`]) or from their key exchanges, and
//! turns payloads into [`EncryptedMessage`]s and back. Building the XMPP elements (and PEP)
//! is the job of the layer above; [`sce`] builds and parses OMEMO 2's SCE envelope.
//!
//! Secrets are zeroized when dropped, and nothing in this crate logs.

mod error;
mod kdf;
mod keys;
mod label;
mod manager;
mod payload;
mod proto;
mod ratchet;
pub mod sce;
pub mod store;
mod version;
mod x3dh;
pub mod xeddsa;

pub use error::{Error, Result};
pub use keys::{ed25519_to_curve25519, IdentityKeyPair, KeyPair};
pub use label::{sign_label, verify_label};
pub use manager::{
    Decrypted, Encrypted, EncryptedMessage, MessageKey, SessionManager, PREKEY_COUNT,
};
pub use ratchet::{MAX_SKIPPED_TOTAL, MAX_SKIP_PER_STEP};
pub use store::{DeviceAddress, MemoryStore, Store, Trust};
pub use version::Version;
pub use x3dh::Bundle;
