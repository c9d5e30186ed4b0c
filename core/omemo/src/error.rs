use crate::DeviceAddress;

/// Everything that can go wrong in this crate. Variants are distinct so that the
/// messaging layer can tell "ignore, it is a duplicate" from "heal the session".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from the network did not parse (protobuf, version byte, key encoding, lengths).
    #[error("malformed {what}")]
    Malformed {
        /// Which structure was malformed.
        what: &'static str,
    },
    /// A public key is not a valid point, or a Diffie-Hellman result was all zero
    /// (low-order or identity point).
    #[error("invalid public key: {0}")]
    InvalidKey(&'static str),
    /// The signed prekey's signature in a bundle does not verify with its identity key.
    #[error("bundle signed prekey signature does not verify")]
    BadSignature,
    /// A bundle without one-time prekeys: X3DH as OMEMO uses it requires one.
    #[error("bundle has no one-time prekeys")]
    NoPreKeys,
    /// A key exchange refers to a one-time prekey we do not have (used or never existed).
    #[error("unknown one-time prekey {0}")]
    UnknownPreKey(u32),
    /// A key exchange refers to a signed prekey we do not have.
    #[error("unknown signed prekey {0}")]
    UnknownSignedPreKey(u32),
    /// The message's authentication tag is wrong (tampered, wrong session or wrong keys).
    #[error("message authentication failed")]
    BadMac,
    /// The message was already decrypted once (its key has been used and deleted).
    #[error("duplicate message")]
    DuplicateMessage,
    /// Decrypting would require deriving more skipped message keys than the bound allows.
    #[error("too many skipped messages ({requested} > {limit})")]
    TooManySkippedKeys {
        /// How many keys the message asked us to skip.
        requested: u64,
        /// The bound.
        limit: u32,
    },
    /// A normal (non key exchange) message arrived for a device we have no session with.
    #[error("no session with {0}")]
    NoSession(DeviceAddress),
    /// The message holds no key for our device.
    #[error("message has no key for our device")]
    NoKeyForDevice,
    /// The peer device presented an identity key different from the one on record.
    #[error("identity key of {0} changed")]
    IdentityChanged(DeviceAddress),
    /// The identity of this device is distrusted: we do not encrypt for it.
    #[error("identity of {0} is distrusted")]
    Distrusted(DeviceAddress),
    /// The symmetric payload did not decrypt (bad tag, bad padding, wrong sizes).
    #[error("payload decryption failed")]
    PayloadDecryption,
    /// The decrypted SCE envelope is not acceptable XML or lacks required parts.
    #[error("invalid SCE envelope: {0}")]
    Envelope(&'static str),
    /// A key derivation was asked for more output than HKDF gives (a bug of ours, kept
    /// an error rather than a panic).
    #[error("key derivation failed")]
    Kdf,
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn malformed(what: &'static str) -> Error {
    Error::Malformed { what }
}
