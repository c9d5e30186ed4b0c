//! The public face of the crate: one device's OMEMO state over a [`Store`].

use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::{IdentityKeyPair, KeyPair};
use crate::payload;
use crate::ratchet::{PendingKeyExchange, Session};
use crate::store::{DeviceAddress, IdentityRecord, PreKeyRecord, SignedPreKeyRecord, Store, Trust};
use crate::x3dh::{self, Bundle, PeerIdentity};
use crate::Version;

/// One-time prekeys kept available per version (XEP-0384: at least 25, SHOULD be 100).
pub const PREKEY_COUNT: usize = 100;

/// One recipient's encrypted copy of the payload key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageKey {
    /// Recipient device.
    pub recipient: DeviceAddress,
    /// True when `data` is a key exchange (`prekey='true'` in 0.3, `kex='true'` in 2).
    pub key_exchange: bool,
    /// The ratchet message, exactly as it goes base64-encoded into the `<key>` element.
    pub data: Vec<u8>,
}

/// An OMEMO message at the crypto level: what goes into the `<encrypted>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedMessage {
    /// The sender's device id (`sid`).
    pub sender_device_id: u32,
    /// One key per recipient device.
    pub keys: Vec<MessageKey>,
    /// OMEMO 0.3 only: the `<iv>` (GCM nonce).
    pub iv: Option<Vec<u8>>,
    /// The `<payload>`; `None` for an empty message (heartbeat, session repair).
    pub payload: Option<Vec<u8>>,
}

/// Result of [`SessionManager::encrypt`]: the message, and the devices that could not be
/// included (no session, distrusted) with the reason.
#[derive(Debug)]
pub struct Encrypted {
    /// The message for all devices that could be included.
    pub message: EncryptedMessage,
    /// Devices left out.
    pub skipped: Vec<(DeviceAddress, Error)>,
}

/// Result of [`SessionManager::decrypt`].
#[derive(Debug)]
pub struct Decrypted {
    /// The plaintext payload (for OMEMO 2 the SCE envelope, see [`crate::sce`]); `None` for
    /// an empty message.
    pub payload: Option<Zeroizing<Vec<u8>>>,
    /// The sender device's identity and trust.
    pub identity: IdentityRecord,
    /// A key exchange consumed one of our prekeys and a new one replaced it: publish the
    /// bundle again.
    pub bundle_changed: bool,
    /// The message built a new session: XEP-0384 asks to answer it with an empty message
    /// at once, so that the sender stops repeating the key exchange.
    pub new_session: bool,
    /// The message was the first at counter 53 or more on its chain: answer it with an
    /// empty message (heartbeat), which moves the ratchet on.
    pub heartbeat_due: bool,
}

/// One device's OMEMO state for both versions: identity, prekeys, sessions.
pub struct SessionManager<S: Store> {
    store: S,
    own: DeviceAddress,
    identity: IdentityKeyPair,
}

impl<S: Store> SessionManager<S> {
    /// Opens the device's state, creating the identity, signed prekeys and one-time prekeys
    /// for both versions when they are missing.
    pub fn new(mut store: S, own_jid: impl Into<String>, own_device_id: u32) -> Result<Self> {
        // One scope: a first start writes an identity, two signed prekeys and 200 prekeys,
        // which a database then commits once rather than 203 times.
        let identity = store.atomically(|store| {
            let identity = match store.identity_key_pair()? {
                Some(ik) => ik,
                None => {
                    let ik = IdentityKeyPair::generate(&mut OsRng);
                    store.save_identity_key_pair(&ik)?;
                    ik
                }
            };
            for version in [Version::Omemo03, Version::Omemo2] {
                if store.current_signed_prekey_id(version)?.is_none() {
                    new_signed_prekey(store, &identity, version, 1)?;
                }
                refill_prekeys(store, version)?;
            }
            Ok(identity)
        })?;
        Ok(Self {
            store,
            own: DeviceAddress::new(own_jid, own_device_id),
            identity,
        })
    }

    /// The store, for inspection.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back, e.g. to open the device again later with [`SessionManager::new`].
    pub fn into_store(self) -> S {
        self.store
    }

    /// Our device.
    pub fn own_device(&self) -> &DeviceAddress {
        &self.own
    }

    /// Our identity public key as published for `version` (Curve25519 for 0.3, Ed25519 for
    /// 2; 32 bytes, the fingerprint material).
    pub fn own_identity_key(&self, version: Version) -> [u8; 32] {
        match version {
            Version::Omemo03 => self.identity.curve25519_public(),
            Version::Omemo2 => self.identity.ed25519_public(),
        }
    }

    /// The `labelsig` of our device's OMEMO 2 device list entry for `label` (see
    /// [`crate::sign_label`]).
    pub fn sign_label(&self, label: &str) -> [u8; 64] {
        crate::label::sign_label(&self.identity, label)
    }

    /// Replaces the signed prekey. The previous one is kept so that key exchanges already
    /// on their way still succeed; older ones are deleted.
    pub fn rotate_signed_prekey(&mut self, version: Version) -> Result<()> {
        let identity = &self.identity;
        self.store.atomically(|store| {
            let current = store.current_signed_prekey_id(version)?;
            let next = current.map_or(1, |c| c.wrapping_add(1).max(1));
            new_signed_prekey(store, identity, version, next)?;
            for id in store.signed_prekey_ids(version)? {
                if Some(id) != current && id != next {
                    store.remove_signed_prekey(version, id)?;
                }
            }
            Ok(())
        })
    }

    /// Our bundle for `version`, keys encoded as in the bundle element.
    pub fn bundle(&self, version: Version) -> Result<Bundle> {
        let spk_id = self
            .store
            .current_signed_prekey_id(version)?
            .ok_or(Error::UnknownSignedPreKey(0))?;
        let spk = self
            .store
            .signed_prekey(version, spk_id)?
            .ok_or(Error::UnknownSignedPreKey(spk_id))?;
        let mut prekeys = Vec::new();
        for id in self.store.prekey_ids(version)? {
            if let Some(pk) = self.store.prekey(version, id)? {
                prekeys.push((id, x3dh::encode_public(version, &pk.key_pair.public())));
            }
        }
        Ok(Bundle {
            identity_key: x3dh::own_identity_encoded(version, &self.identity),
            signed_prekey_id: spk_id,
            signed_prekey: x3dh::encode_public(version, &spk.key_pair.public()),
            signed_prekey_signature: spk.signature,
            prekeys,
        })
    }

    /// Whether a session with the device exists.
    pub fn has_session(&self, version: Version, address: &DeviceAddress) -> Result<bool> {
        Ok(self.store.session(version, address)?.is_some())
    }

    /// Builds a session with a device from its bundle (X3DH as initiator). Until the device
    /// answers, every message to it carries the key exchange.
    pub fn process_bundle(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        bundle: &Bundle,
    ) -> Result<()> {
        let init = x3dh::initiate(version, &self.identity, bundle, &mut OsRng)?;
        let record = check_identity(&self.store, version, address, &init.identity)?;
        let session = Session::new_active(
            version,
            &init.sk,
            init.signed_prekey,
            x3dh::own_identity_encoded(version, &self.identity),
            init.identity.encoded.clone(),
            PendingKeyExchange {
                pk_id: init.prekey_id,
                spk_id: init.signed_prekey_id,
                ek: init.ephemeral,
            },
            &mut OsRng,
        )?;
        let session = session.to_bytes();
        self.store.atomically(|store| {
            store.save_session(version, address, &session)?;
            store.save_identity(version, address, &record)
        })
    }

    /// Sets the trust of a device's identity.
    pub fn set_trust(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        trust: Trust,
    ) -> Result<()> {
        let mut record = self
            .store
            .identity(version, address)?
            .ok_or_else(|| Error::NoSession(address.clone()))?;
        record.trust = trust;
        self.store.save_identity(version, address, &record)
    }

    /// Encrypts `plaintext` (for OMEMO 2: an SCE envelope, see [`crate::sce`]) for the given
    /// devices, all of which must have a session. `None` sends an empty message, which moves
    /// the ratchets forward (heartbeat, session repair).
    pub fn encrypt(
        &mut self,
        version: Version,
        plaintext: Option<&[u8]>,
        recipients: &[DeviceAddress],
    ) -> Result<Encrypted> {
        let (key_material, iv, payload) = match plaintext {
            Some(p) => {
                let sealed = payload::seal(version, p, &mut OsRng)?;
                (sealed.key_material, sealed.iv, Some(sealed.ciphertext))
            }
            None => {
                // OMEMO 0.3's key transport element keeps the <iv> (libsignal-era clients
                // and python-omemo's schema require it), though nothing is encrypted with it.
                let iv = (version == Version::Omemo03).then(|| {
                    let mut iv = vec![0u8; 12];
                    rand::RngCore::fill_bytes(&mut OsRng, &mut iv);
                    iv
                });
                (payload::empty_key_material(version, &mut OsRng), iv, None)
            }
        };
        let identity = &self.identity;
        // One scope for the whole fan-out: the sessions move forward together with the
        // message that is returned, or not at all.
        let (keys, skipped) = self.store.atomically(|store| {
            let mut keys = Vec::with_capacity(recipients.len());
            let mut skipped = Vec::new();
            for address in recipients {
                match encrypt_key(store, identity, version, address, &key_material) {
                    Ok(key) => keys.push(key),
                    Err(e) => skipped.push((address.clone(), e)),
                }
            }
            Ok((keys, skipped))
        })?;
        Ok(Encrypted {
            message: EncryptedMessage {
                sender_device_id: self.own.device_id,
                keys,
                iv,
                payload,
            },
            skipped,
        })
    }

    /// Decrypts a message from `sender`'s bare JID. The key for our device is looked up by
    /// device id (and, for OMEMO 2, by our JID too; 0.3 keys carry no JID).
    ///
    /// A message that fails changes nothing: every check (ratchet and payload
    /// authentication) comes before the first write, and the writes are one
    /// [`Store::atomically`] scope.
    pub fn decrypt(
        &mut self,
        version: Version,
        sender_jid: &str,
        message: &EncryptedMessage,
    ) -> Result<Decrypted> {
        let sender = DeviceAddress::new(sender_jid, message.sender_device_id);
        let key = message
            .keys
            .iter()
            .find(|k| {
                k.recipient.device_id == self.own.device_id
                    && (version == Version::Omemo03 || k.recipient.jid == self.own.jid)
            })
            .ok_or(Error::NoKeyForDevice)?;
        let identity = &self.identity;
        self.store.atomically(|store| {
            if key.key_exchange {
                return decrypt_key_exchange(store, identity, version, &sender, &key.data, message);
            }
            let mut session = load_session(store, version, &sender)?
                .ok_or_else(|| Error::NoSession(sender.clone()))?;
            let record = store
                .identity(version, &sender)?
                .ok_or_else(|| Error::NoSession(sender.clone()))?;
            let (key_material, heartbeat_due) =
                session.decrypt_noting_heartbeat(&key.data, &mut OsRng)?;
            let payload = open_payload(version, &key_material, message)?;
            store.save_session(version, &sender, &session.to_bytes())?;
            Ok(Decrypted {
                payload,
                identity: record,
                bundle_changed: false,
                new_session: false,
                heartbeat_due,
            })
        })
    }
}

// The steps below take the store as an argument rather than `&self`, so that they can run
// inside `Store::atomically`, which lends the store out while the manager's other fields
// (our identity) stay readable.

fn new_signed_prekey<S: Store>(
    store: &mut S,
    identity: &IdentityKeyPair,
    version: Version,
    id: u32,
) -> Result<()> {
    let key_pair = KeyPair::generate(&mut OsRng);
    let signature = x3dh::sign_prekey(version, identity, &key_pair.public());
    store.save_current_signed_prekey(
        version,
        &SignedPreKeyRecord {
            id,
            key_pair,
            signature,
        },
    )
}

fn refill_prekeys<S: Store>(store: &mut S, version: Version) -> Result<bool> {
    let have = store.prekey_ids(version)?.len();
    if have >= PREKEY_COUNT {
        return Ok(false);
    }
    let mut next = store.next_prekey_id(version)?.max(1);
    for _ in have..PREKEY_COUNT {
        let record = PreKeyRecord {
            id: next,
            key_pair: KeyPair::generate(&mut OsRng),
        };
        store.save_prekey(version, &record)?;
        next = next.wrapping_add(1).max(1);
    }
    store.set_next_prekey_id(version, next)?;
    Ok(true)
}

/// Checks the device's identity against the record: a known device must keep its key.
fn check_identity<S: Store>(
    store: &S,
    version: Version,
    address: &DeviceAddress,
    identity: &PeerIdentity,
) -> Result<IdentityRecord> {
    match store.identity(version, address)? {
        Some(record) if record.key != identity.raw => Err(Error::IdentityChanged(address.clone())),
        Some(record) => Ok(record),
        None => Ok(IdentityRecord {
            key: identity.raw,
            trust: Trust::Undecided,
        }),
    }
}

fn load_session<S: Store>(
    store: &S,
    version: Version,
    address: &DeviceAddress,
) -> Result<Option<Session>> {
    let Some(bytes) = store.session(version, address)? else {
        return Ok(None);
    };
    let bytes = Zeroizing::new(bytes);
    let session = Session::from_bytes(&bytes)?;
    if session.version != version {
        return Err(Error::Malformed {
            what: "stored session of another version",
        });
    }
    Ok(Some(session))
}

fn open_payload(
    version: Version,
    key_material: &[u8],
    message: &EncryptedMessage,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    message
        .payload
        .as_ref()
        .map(|ciphertext| payload::open(version, key_material, message.iv.as_deref(), ciphertext))
        .transpose()
}

fn encrypt_key<S: Store>(
    store: &mut S,
    identity: &IdentityKeyPair,
    version: Version,
    address: &DeviceAddress,
    key_material: &[u8],
) -> Result<MessageKey> {
    if let Some(record) = store.identity(version, address)? {
        if record.trust == Trust::Distrusted {
            return Err(Error::Distrusted(address.clone()));
        }
    }
    let mut session =
        load_session(store, version, address)?.ok_or_else(|| Error::NoSession(address.clone()))?;
    let wire = session.encrypt(key_material)?;
    let (data, key_exchange) = match &session.pending {
        Some(p) => (
            x3dh::encode_key_exchange(version, identity, p.pk_id, p.spk_id, &p.ek, wire),
            true,
        ),
        None => (wire, false),
    };
    store.save_session(version, address, &session.to_bytes())?;
    Ok(MessageKey {
        recipient: address.clone(),
        key_exchange,
        data,
    })
}

fn decrypt_key_exchange<S: Store>(
    store: &mut S,
    identity: &IdentityKeyPair,
    version: Version,
    sender: &DeviceAddress,
    data: &[u8],
    message: &EncryptedMessage,
) -> Result<Decrypted> {
    let kex = x3dh::parse_key_exchange(version, data)?;
    let record = check_identity(store, version, sender, &kex.identity)?;

    // The initiator repeats the key exchange until we answer: the same base key means the
    // session already exists, and a replay of a consumed message fails as a duplicate.
    if let Some(mut session) = load_session(store, version, sender)? {
        if !session.initiator && session.base_key == kex.ephemeral {
            let (key_material, heartbeat_due) =
                session.decrypt_noting_heartbeat(&kex.message, &mut OsRng)?;
            let payload = open_payload(version, &key_material, message)?;
            store.save_session(version, sender, &session.to_bytes())?;
            return Ok(Decrypted {
                payload,
                identity: record,
                bundle_changed: false,
                new_session: false,
                heartbeat_due,
            });
        }
    }

    let spk = store
        .signed_prekey(version, kex.signed_prekey_id)?
        .ok_or(Error::UnknownSignedPreKey(kex.signed_prekey_id))?;
    let opk = store
        .prekey(version, kex.prekey_id)?
        .ok_or(Error::UnknownPreKey(kex.prekey_id))?;
    let sk = x3dh::respond(
        version,
        identity,
        &spk.key_pair,
        &opk.key_pair,
        &kex.identity.dh,
        &kex.ephemeral,
    )?;
    let mut session = Session::new_passive(
        version,
        &sk,
        spk.key_pair,
        x3dh::own_identity_encoded(version, identity),
        kex.identity.encoded.clone(),
        kex.ephemeral,
    );
    // Nothing is stored unless the message inside and its payload authenticate.
    let (key_material, heartbeat_due) =
        session.decrypt_noting_heartbeat(&kex.message, &mut OsRng)?;
    let payload = open_payload(version, &key_material, message)?;
    store.save_session(version, sender, &session.to_bytes())?;
    store.save_identity(version, sender, &record)?;
    // A one-time prekey is used once: delete it so a replay cannot rebuild the session.
    store.remove_prekey(version, kex.prekey_id)?;
    refill_prekeys(store, version)?;
    Ok(Decrypted {
        payload,
        identity: record,
        bundle_changed: true,
        new_session: true,
        heartbeat_due,
    })
}
