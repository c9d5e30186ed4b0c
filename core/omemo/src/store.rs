//! Storage behind traits. The in-memory [`MemoryStore`] serves tests; the SQLCipher
//! implementation lives in `linnet-store`. Sessions cross the trait as opaque bytes (they
//! hold secret keys: persist them only in the encrypted database).

use std::collections::{BTreeMap, HashMap};

use crate::error::Result;
use crate::keys::{IdentityKeyPair, KeyPair};
use crate::Version;

/// A peer device: bare JID and OMEMO device id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddress {
    /// Bare JID of the account.
    pub jid: String,
    /// OMEMO device id.
    pub device_id: u32,
}

impl DeviceAddress {
    /// Builds an address.
    pub fn new(jid: impl Into<String>, device_id: u32) -> Self {
        Self {
            jid: jid.into(),
            device_id,
        }
    }
}

// JIDs are user data and stay out of logs and error messages: only the device id is shown.
impl std::fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device {}", self.device_id)
    }
}

impl std::fmt::Debug for DeviceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceAddress({})", self.device_id)
    }
}

/// A one-time prekey.
#[derive(Clone, Debug)]
pub struct PreKeyRecord {
    /// Id published in the bundle.
    pub id: u32,
    /// The key pair.
    pub key_pair: KeyPair,
}

/// A signed prekey with its signature (XEdDSA over 0x05 ‖ key for 0.3, Ed25519 over the key
/// for 2).
#[derive(Clone, Debug)]
pub struct SignedPreKeyRecord {
    /// Id published in the bundle.
    pub id: u32,
    /// The key pair.
    pub key_pair: KeyPair,
    /// The signature published in the bundle.
    pub signature: Vec<u8>,
}

/// How far a peer identity is trusted. Policy (blind trust, verification) is decided above
/// this crate; the crate itself only refuses to encrypt for `Distrusted` identities and to
/// accept a changed identity key for a known device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Seen, not decided by the user.
    Undecided,
    /// Trusted without verification (blind trust before verification).
    BlindlyTrusted,
    /// Verified by the user (fingerprint, QR code).
    Verified,
    /// Rejected by the user.
    Distrusted,
}

/// A peer identity key as it appears on the wire for its version (Curve25519 for 0.3,
/// Ed25519 for 2; 32 bytes, without the 0x05 prefix) and its trust level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRecord {
    /// The identity public key.
    pub key: [u8; 32],
    /// Trust level.
    pub trust: Trust,
}

/// Our own identity key pair.
pub trait IdentityKeyStore {
    /// The identity, if one was created.
    fn identity_key_pair(&self) -> Result<Option<IdentityKeyPair>>;
    /// Stores the identity (once, at device creation).
    fn save_identity_key_pair(&mut self, key_pair: &IdentityKeyPair) -> Result<()>;
}

/// Signed prekeys, per version.
pub trait SignedPreKeyStore {
    /// A signed prekey by id.
    fn signed_prekey(&self, version: Version, id: u32) -> Result<Option<SignedPreKeyRecord>>;
    /// Ids of all stored signed prekeys.
    fn signed_prekey_ids(&self, version: Version) -> Result<Vec<u32>>;
    /// The id of the signed prekey currently published.
    fn current_signed_prekey_id(&self, version: Version) -> Result<Option<u32>>;
    /// Stores a signed prekey and makes it the current one.
    fn save_current_signed_prekey(
        &mut self,
        version: Version,
        record: &SignedPreKeyRecord,
    ) -> Result<()>;
    /// Deletes a signed prekey.
    fn remove_signed_prekey(&mut self, version: Version, id: u32) -> Result<()>;
}

/// One-time prekeys, per version.
pub trait PreKeyStore {
    /// A prekey by id.
    fn prekey(&self, version: Version, id: u32) -> Result<Option<PreKeyRecord>>;
    /// Ids of all stored prekeys, ascending.
    fn prekey_ids(&self, version: Version) -> Result<Vec<u32>>;
    /// Stores a prekey.
    fn save_prekey(&mut self, version: Version, record: &PreKeyRecord) -> Result<()>;
    /// Deletes a prekey (after it was used).
    fn remove_prekey(&mut self, version: Version, id: u32) -> Result<()>;
    /// The next id to hand out; ids are never reused so a used prekey id cannot come back.
    fn next_prekey_id(&self, version: Version) -> Result<u32>;
    /// Advances the id counter.
    fn set_next_prekey_id(&mut self, version: Version, id: u32) -> Result<()>;
}

/// Sessions per (version, peer device), as opaque serialized bytes.
pub trait SessionStore {
    /// The serialized session with a device.
    fn session(&self, version: Version, address: &DeviceAddress) -> Result<Option<Vec<u8>>>;
    /// Stores (replaces) the session with a device.
    fn save_session(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        session: &[u8],
    ) -> Result<()>;
    /// Deletes the session with a device.
    fn remove_session(&mut self, version: Version, address: &DeviceAddress) -> Result<()>;
}

/// Peer identity keys and their trust.
pub trait IdentityStore {
    /// The identity on record for a device.
    fn identity(&self, version: Version, address: &DeviceAddress)
        -> Result<Option<IdentityRecord>>;
    /// Records a device's identity and trust.
    fn save_identity(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        record: &IdentityRecord,
    ) -> Result<()>;
}

/// Everything the [`crate::SessionManager`] needs.
pub trait Store:
    IdentityKeyStore + SignedPreKeyStore + PreKeyStore + SessionStore + IdentityStore
{
    /// Runs `f` so that its writes land all together or not at all: on `Err` nothing `f`
    /// wrote remains. The manager runs each operation that writes more than once through
    /// here (a decrypted key exchange stores a session and an identity, deletes a prekey
    /// and adds its replacement; a crash or a failed write in between must not leave the
    /// used prekey behind, or a replay could rebuild the session).
    ///
    /// The default just calls `f`. That is enough for a store whose writes cannot fail,
    /// such as [`MemoryStore`], because the manager finishes every fallible step
    /// (decryption, authentication) before its first write. A store on a database
    /// overrides it with a transaction, or a savepoint when already inside one.
    fn atomically<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T>
    where
        Self: Sized,
    {
        f(self)
    }
}

/// A store in memory, for tests and the CLI's throwaway accounts.
#[derive(Default)]
pub struct MemoryStore {
    identity: Option<IdentityKeyPair>,
    signed: HashMap<Version, (Option<u32>, BTreeMap<u32, SignedPreKeyRecord>)>,
    prekeys: HashMap<Version, BTreeMap<u32, PreKeyRecord>>,
    next_prekey: HashMap<Version, u32>,
    sessions: HashMap<(Version, DeviceAddress), zeroize::Zeroizing<Vec<u8>>>,
    identities: HashMap<(Version, DeviceAddress), IdentityRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {}

impl IdentityKeyStore for MemoryStore {
    fn identity_key_pair(&self) -> Result<Option<IdentityKeyPair>> {
        Ok(self.identity.clone())
    }
    fn save_identity_key_pair(&mut self, key_pair: &IdentityKeyPair) -> Result<()> {
        self.identity = Some(key_pair.clone());
        Ok(())
    }
}

impl SignedPreKeyStore for MemoryStore {
    fn signed_prekey(&self, version: Version, id: u32) -> Result<Option<SignedPreKeyRecord>> {
        Ok(self
            .signed
            .get(&version)
            .and_then(|(_, m)| m.get(&id).cloned()))
    }
    fn signed_prekey_ids(&self, version: Version) -> Result<Vec<u32>> {
        Ok(self
            .signed
            .get(&version)
            .map(|(_, m)| m.keys().copied().collect())
            .unwrap_or_default())
    }
    fn current_signed_prekey_id(&self, version: Version) -> Result<Option<u32>> {
        Ok(self.signed.get(&version).and_then(|(c, _)| *c))
    }
    fn save_current_signed_prekey(
        &mut self,
        version: Version,
        record: &SignedPreKeyRecord,
    ) -> Result<()> {
        let entry = self.signed.entry(version).or_default();
        entry.0 = Some(record.id);
        entry.1.insert(record.id, record.clone());
        Ok(())
    }
    fn remove_signed_prekey(&mut self, version: Version, id: u32) -> Result<()> {
        if let Some((_, m)) = self.signed.get_mut(&version) {
            m.remove(&id);
        }
        Ok(())
    }
}

impl PreKeyStore for MemoryStore {
    fn prekey(&self, version: Version, id: u32) -> Result<Option<PreKeyRecord>> {
        Ok(self.prekeys.get(&version).and_then(|m| m.get(&id).cloned()))
    }
    fn prekey_ids(&self, version: Version) -> Result<Vec<u32>> {
        Ok(self
            .prekeys
            .get(&version)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default())
    }
    fn save_prekey(&mut self, version: Version, record: &PreKeyRecord) -> Result<()> {
        self.prekeys
            .entry(version)
            .or_default()
            .insert(record.id, record.clone());
        Ok(())
    }
    fn remove_prekey(&mut self, version: Version, id: u32) -> Result<()> {
        if let Some(m) = self.prekeys.get_mut(&version) {
            m.remove(&id);
        }
        Ok(())
    }
    fn next_prekey_id(&self, version: Version) -> Result<u32> {
        Ok(self.next_prekey.get(&version).copied().unwrap_or(1))
    }
    fn set_next_prekey_id(&mut self, version: Version, id: u32) -> Result<()> {
        self.next_prekey.insert(version, id);
        Ok(())
    }
}

impl SessionStore for MemoryStore {
    fn session(&self, version: Version, address: &DeviceAddress) -> Result<Option<Vec<u8>>> {
        Ok(self
            .sessions
            .get(&(version, address.clone()))
            .map(|s| s.to_vec()))
    }
    fn save_session(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        session: &[u8],
    ) -> Result<()> {
        self.sessions.insert(
            (version, address.clone()),
            zeroize::Zeroizing::new(session.to_vec()),
        );
        Ok(())
    }
    fn remove_session(&mut self, version: Version, address: &DeviceAddress) -> Result<()> {
        self.sessions.remove(&(version, address.clone()));
        Ok(())
    }
}

impl IdentityStore for MemoryStore {
    fn identity(
        &self,
        version: Version,
        address: &DeviceAddress,
    ) -> Result<Option<IdentityRecord>> {
        Ok(self.identities.get(&(version, address.clone())).cloned())
    }
    fn save_identity(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        record: &IdentityRecord,
    ) -> Result<()> {
        self.identities
            .insert((version, address.clone()), record.clone());
        Ok(())
    }
}
