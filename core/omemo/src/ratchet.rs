//! The Double Ratchet (Signal specification "The Double Ratchet Algorithm", rev. 1) with the
//! per-version message formats, and the session record that stores it.

use std::collections::VecDeque;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use prost::Message;
use rand::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{malformed, Error, Result};
use crate::kdf::{hmac, kdf_ck, kdf_rk, message_keys};
use crate::keys::{array32, encode_djb, parse_djb, CurvePublic, KeyPair};
use crate::proto::{self, required};
use crate::version::{Version, SIGNAL_V3_VERSION_BYTE};

/// At most this many message keys are derived and kept for one received message (per chain
/// step). A header asking for more is rejected as a flood instead of costing memory and CPU.
pub const MAX_SKIP_PER_STEP: u32 = 1000;
/// At most this many skipped message keys are stored per session; the oldest are dropped
/// first, so a long-lost message may become undecryptable but memory stays bounded.
pub const MAX_SKIPPED_TOTAL: usize = 2000;
/// Previous remote ratchet keys remembered to recognise replays of older chains.
const MAX_PREVIOUS_DHR: usize = 8;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

pub(crate) fn aes256_cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    Aes256CbcEnc::new(key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

pub(crate) fn aes256_cbc_decrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    Aes256CbcDec::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| Error::PayloadDecryption)
}

struct SkippedKey {
    dh: CurvePublic,
    n: u32,
    mk: Zeroizing<[u8; 32]>,
}

/// The key exchange an initiator repeats in every message until the peer answers, so that
/// the peer can build the session from whichever message arrives first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingKeyExchange {
    pub pk_id: u32,
    pub spk_id: u32,
    pub ek: CurvePublic,
}

/// One session with one device: Double Ratchet state plus what the wire format needs.
/// XEP-0384 §Business rules: "the first message for a given ratchet key with a counter of 53
/// or higher" calls for a heartbeat.
pub const HEARTBEAT_COUNTER: u32 = 53;

pub(crate) struct Session {
    pub version: Version,
    /// Our identity key as encoded into the associated data (0x05 ‖ Curve25519 for 0.3,
    /// Ed25519 for 2).
    pub local_identity: Vec<u8>,
    /// The peer's identity key, same encoding.
    pub remote_identity: Vec<u8>,
    pub initiator: bool,
    root_key: Zeroizing<[u8; 32]>,
    dhs: KeyPair,
    dhr: Option<CurvePublic>,
    cks: Option<Zeroizing<[u8; 32]>>,
    ns: u32,
    ckr: Option<Zeroizing<[u8; 32]>>,
    nr: u32,
    pn: u32,
    skipped: VecDeque<SkippedKey>,
    previous_dhr: VecDeque<CurvePublic>,
    pub pending: Option<PendingKeyExchange>,
    /// The X3DH ephemeral key this session was built from: a repeated key exchange with the
    /// same base key belongs to this session rather than starting a new one.
    pub base_key: CurvePublic,
}

/// A parsed ratchet message, with the bytes the MAC covers.
struct ParsedMessage {
    dh: CurvePublic,
    n: u32,
    pn: u32,
    ciphertext: Vec<u8>,
    authenticated: Vec<u8>,
    mac: Vec<u8>,
}

impl Session {
    /// Initiator side after X3DH: the peer's signed prekey is its first ratchet key and we
    /// take a sending step at once (Double Ratchet §3.3 RatchetInitAlice).
    #[allow(clippy::too_many_arguments)]
    pub fn new_active<R: RngCore + CryptoRng>(
        version: Version,
        sk: &[u8; 32],
        their_spk: CurvePublic,
        local_identity: Vec<u8>,
        remote_identity: Vec<u8>,
        pending: PendingKeyExchange,
        rng: &mut R,
    ) -> Result<Self> {
        let dhs = KeyPair::generate(rng);
        let dh_out = dhs.dh(&their_spk)?;
        let (rk, cks) = kdf_rk(sk, &dh_out, version.root_info())?;
        Ok(Self {
            version,
            local_identity,
            remote_identity,
            initiator: true,
            root_key: rk,
            dhs,
            dhr: Some(their_spk),
            cks: Some(cks),
            ns: 0,
            ckr: None,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_dhr: VecDeque::new(),
            base_key: pending.ek,
            pending: Some(pending),
        })
    }

    /// Responder side after X3DH: our signed prekey is our first ratchet key
    /// (RatchetInitBob); the first received message performs the first DH step.
    pub fn new_passive(
        version: Version,
        sk: &[u8; 32],
        our_spk: KeyPair,
        local_identity: Vec<u8>,
        remote_identity: Vec<u8>,
        base_key: CurvePublic,
    ) -> Self {
        Self {
            version,
            local_identity,
            remote_identity,
            initiator: false,
            root_key: Zeroizing::new(*sk),
            dhs: our_spk,
            dhr: None,
            cks: None,
            ns: 0,
            ckr: None,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_dhr: VecDeque::new(),
            pending: None,
            base_key,
        }
    }

    /// Associated data for a message in the given direction. OMEMO 0.3 follows libsignal
    /// (sender's identity first); OMEMO 2 fixes the order to initiator ‖ responder.
    fn associated_data(&self, sending: bool) -> Vec<u8> {
        let local_first = match self.version {
            Version::Omemo03 => sending,
            Version::Omemo2 => self.initiator,
        };
        let (a, b) = if local_first {
            (&self.local_identity, &self.remote_identity)
        } else {
            (&self.remote_identity, &self.local_identity)
        };
        [a.as_slice(), b.as_slice()].concat()
    }

    /// Encrypts `plaintext` (the payload key material) into a ratchet message in the
    /// version's wire format: 0x33 ‖ SignalMessage ‖ MAC(8) for 0.3, an
    /// OMEMOAuthenticatedMessage for 2.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let cks = self
            .cks
            .as_ref()
            .ok_or(Error::InvalidKey("session has no sending chain"))?;
        let (next_ck, mk) = kdf_ck(cks);
        let keys = message_keys(&mk, self.version.message_key_info())?;
        let ciphertext = aes256_cbc_encrypt(&keys.enc, &keys.iv, plaintext);
        let ad = self.associated_data(true);
        let own_pub = self.dhs.public();
        let wire = match self.version {
            Version::Omemo03 => {
                let mut msg = vec![SIGNAL_V3_VERSION_BYTE];
                proto::SignalMessage {
                    ratchet_key: Some(encode_djb(&own_pub)),
                    counter: Some(self.ns),
                    previous_counter: Some(self.pn),
                    ciphertext: Some(ciphertext),
                }
                .encode(&mut msg)
                .map_err(|_| malformed("SignalMessage encoding"))?;
                let mac = hmac(&keys.mac, &[&ad, &msg]);
                msg.extend_from_slice(&mac[..self.version.mac_len()]);
                msg
            }
            Version::Omemo2 => {
                let msg = proto::OmemoMessage {
                    n: Some(self.ns),
                    pn: Some(self.pn),
                    dh_pub: Some(own_pub.to_vec()),
                    ciphertext: Some(ciphertext),
                }
                .encode_to_vec();
                let mac = hmac(&keys.mac, &[&ad, &msg]);
                proto::OmemoAuthenticatedMessage {
                    mac: Some(mac[..self.version.mac_len()].to_vec()),
                    message: Some(msg),
                }
                .encode_to_vec()
            }
        };
        self.cks = Some(next_ck);
        self.ns = self.ns.wrapping_add(1);
        Ok(wire)
    }

    fn parse(&self, wire: &[u8]) -> Result<ParsedMessage> {
        match self.version {
            Version::Omemo03 => {
                let mac_len = self.version.mac_len();
                if wire.len() < 1 + mac_len {
                    return Err(malformed("SignalMessage (too short)"));
                }
                let (authenticated, mac) = wire.split_at(wire.len() - mac_len);
                if authenticated[0] != SIGNAL_V3_VERSION_BYTE {
                    return Err(malformed("SignalMessage version byte"));
                }
                let m: proto::SignalMessage = proto::decode(&authenticated[1..], "SignalMessage")?;
                Ok(ParsedMessage {
                    dh: parse_djb(&required(m.ratchet_key, "SignalMessage ratchet key")?)?,
                    n: required(m.counter, "SignalMessage counter")?,
                    pn: required(m.previous_counter, "SignalMessage previous counter")?,
                    ciphertext: required(m.ciphertext, "SignalMessage ciphertext")?,
                    authenticated: authenticated.to_vec(),
                    mac: mac.to_vec(),
                })
            }
            Version::Omemo2 => {
                let a: proto::OmemoAuthenticatedMessage =
                    proto::decode(wire, "OMEMOAuthenticatedMessage")?;
                let mac = required(a.mac, "OMEMOAuthenticatedMessage mac")?;
                if mac.len() != self.version.mac_len() {
                    return Err(malformed("OMEMOAuthenticatedMessage mac length"));
                }
                let authenticated = required(a.message, "OMEMOAuthenticatedMessage message")?;
                let m: proto::OmemoMessage = proto::decode(&authenticated, "OMEMOMessage")?;
                Ok(ParsedMessage {
                    dh: array32(
                        &required(m.dh_pub, "OMEMOMessage dh_pub")?,
                        "OMEMOMessage dh_pub",
                    )?,
                    n: required(m.n, "OMEMOMessage n")?,
                    pn: required(m.pn, "OMEMOMessage pn")?,
                    ciphertext: required(m.ciphertext, "OMEMOMessage ciphertext")?,
                    authenticated,
                    mac,
                })
            }
        }
    }

    /// Decrypts a ratchet message. All state changes happen on a copy that is committed only
    /// once the MAC has verified, so forged or replayed input never damages the session.
    #[cfg(test)]
    pub fn decrypt<R: RngCore + CryptoRng>(
        &mut self,
        wire: &[u8],
        rng: &mut R,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.decrypt_noting_heartbeat(wire, rng).map(|(p, _)| p)
    }

    /// Decrypts, and tells whether the message is the first with a counter of
    /// [`HEARTBEAT_COUNTER`] or more on its ratchet key: XEP-0384 then asks for a heartbeat
    /// (an empty message) so that the peer's chain starts again from 0.
    pub fn decrypt_noting_heartbeat<R: RngCore + CryptoRng>(
        &mut self,
        wire: &[u8],
        rng: &mut R,
    ) -> Result<(Zeroizing<Vec<u8>>, bool)> {
        let msg = self.parse(wire)?;
        let skipped = self.skipped.iter().any(|k| k.n == msg.n && k.dh == msg.dh);
        // `nr` is the next counter expected on the current chain: at most HEARTBEAT_COUNTER
        // means no message at or past it came on that chain yet.
        let heartbeat = !skipped
            && msg.n >= HEARTBEAT_COUNTER
            && (self.dhr != Some(msg.dh) || self.nr <= HEARTBEAT_COUNTER);
        let mut next = self.clone();
        let mk = next.message_key_for(&msg, rng)?;
        let plaintext = next.open(&msg, &mk)?;
        // The peer answered: it has the session, so stop repeating the key exchange.
        next.pending = None;
        *self = next;
        Ok((plaintext, heartbeat))
    }

    fn message_key_for<R: RngCore + CryptoRng>(
        &mut self,
        msg: &ParsedMessage,
        rng: &mut R,
    ) -> Result<Zeroizing<[u8; 32]>> {
        if let Some(pos) = self
            .skipped
            .iter()
            .position(|k| k.n == msg.n && k.dh == msg.dh)
        {
            if let Some(k) = self.skipped.remove(pos) {
                return Ok(k.mk);
            }
        }
        if self.dhr == Some(msg.dh) {
            if msg.n < self.nr {
                return Err(Error::DuplicateMessage);
            }
        } else if self.previous_dhr.contains(&msg.dh) {
            // An older chain whose key for this counter is neither stored nor derivable.
            return Err(Error::DuplicateMessage);
        } else {
            self.check_skip(msg.pn)?;
            self.check_skip_after_step(msg.n)?;
            self.skip_until(msg.pn)?;
            self.dh_ratchet(msg.dh, rng)?;
        }
        self.skip_until(msg.n)?;
        let ckr = self
            .ckr
            .as_ref()
            .ok_or(Error::InvalidKey("session has no receiving chain"))?;
        let (next_ck, mk) = kdf_ck(ckr);
        self.ckr = Some(next_ck);
        self.nr = self.nr.saturating_add(1);
        Ok(mk)
    }

    fn check_skip(&self, until: u32) -> Result<()> {
        if self.ckr.is_some() && until > self.nr {
            let requested = u64::from(until - self.nr);
            if requested > u64::from(MAX_SKIP_PER_STEP) {
                return Err(Error::TooManySkippedKeys {
                    requested,
                    limit: MAX_SKIP_PER_STEP,
                });
            }
        }
        Ok(())
    }

    fn check_skip_after_step(&self, n: u32) -> Result<()> {
        if n > MAX_SKIP_PER_STEP {
            return Err(Error::TooManySkippedKeys {
                requested: u64::from(n),
                limit: MAX_SKIP_PER_STEP,
            });
        }
        Ok(())
    }

    fn skip_until(&mut self, until: u32) -> Result<()> {
        self.check_skip(until)?;
        let Some(dhr) = self.dhr else { return Ok(()) };
        let Some(mut ck) = self.ckr.take() else {
            return Ok(());
        };
        while self.nr < until {
            let (next_ck, mk) = kdf_ck(&ck);
            if self.skipped.len() >= MAX_SKIPPED_TOTAL {
                self.skipped.pop_front();
            }
            self.skipped.push_back(SkippedKey {
                dh: dhr,
                n: self.nr,
                mk,
            });
            ck = next_ck;
            self.nr += 1;
        }
        self.ckr = Some(ck);
        Ok(())
    }

    fn dh_ratchet<R: RngCore + CryptoRng>(&mut self, dh: CurvePublic, rng: &mut R) -> Result<()> {
        self.pn = self.ns;
        self.ns = 0;
        self.nr = 0;
        if let Some(old) = self.dhr.replace(dh) {
            if self.previous_dhr.len() >= MAX_PREVIOUS_DHR {
                self.previous_dhr.pop_front();
            }
            self.previous_dhr.push_back(old);
        }
        let info = self.version.root_info();
        let (rk, ckr) = kdf_rk(&self.root_key, &*self.dhs.dh(&dh)?, info)?;
        self.ckr = Some(ckr);
        self.dhs = KeyPair::generate(rng);
        let (rk, cks) = kdf_rk(&rk, &*self.dhs.dh(&dh)?, info)?;
        self.root_key = rk;
        self.cks = Some(cks);
        Ok(())
    }

    fn open(&self, msg: &ParsedMessage, mk: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>> {
        let keys = message_keys(mk, self.version.message_key_info())?;
        let ad = self.associated_data(false);
        let mac = hmac(&keys.mac, &[&ad, &msg.authenticated]);
        if !bool::from(mac[..self.version.mac_len()].ct_eq(&msg.mac)) {
            return Err(Error::BadMac);
        }
        aes256_cbc_decrypt(&keys.enc, &keys.iv, &msg.ciphertext)
    }

    /// Serializes the session for the store. The result holds secret keys.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let p = proto::SessionProto {
            version: self.version.index(),
            local_identity: self.local_identity.clone(),
            remote_identity: self.remote_identity.clone(),
            initiator: self.initiator,
            root_key: self.root_key.to_vec(),
            dhs_secret: self.dhs.secret_bytes().to_vec(),
            dhs_public: self.dhs.public().to_vec(),
            dhr: self.dhr.map(|k| k.to_vec()),
            cks: self.cks.as_ref().map(|k| k.to_vec()),
            ns: self.ns,
            ckr: self.ckr.as_ref().map(|k| k.to_vec()),
            nr: self.nr,
            pn: self.pn,
            skipped: self
                .skipped
                .iter()
                .map(|k| proto::SkippedKeyProto {
                    dh: k.dh.to_vec(),
                    n: k.n,
                    mk: k.mk.to_vec(),
                })
                .collect(),
            pending: self
                .pending
                .as_ref()
                .map(|p| proto::PendingKeyExchangeProto {
                    pk_id: p.pk_id,
                    spk_id: p.spk_id,
                    ek: p.ek.to_vec(),
                }),
            base_key: self.base_key.to_vec(),
            previous_dhr: self.previous_dhr.iter().map(|k| k.to_vec()).collect(),
        };
        let out = Zeroizing::new(p.encode_to_vec());
        zeroize_proto(p);
        out
    }

    /// Restores a session written by [`Session::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let p: proto::SessionProto = proto::decode(bytes, "stored session")?;
        let what = "stored session";
        let key =
            |v: &[u8]| -> Result<Zeroizing<[u8; 32]>> { Ok(Zeroizing::new(array32(v, what)?)) };
        let session = Self {
            version: Version::from_index(p.version).ok_or(malformed(what))?,
            local_identity: p.local_identity.clone(),
            remote_identity: p.remote_identity.clone(),
            initiator: p.initiator,
            root_key: key(&p.root_key)?,
            dhs: KeyPair::from_stored(*key(&p.dhs_secret)?, array32(&p.dhs_public, what)?),
            dhr: p.dhr.as_deref().map(|v| array32(v, what)).transpose()?,
            cks: p.cks.as_deref().map(key).transpose()?,
            ns: p.ns,
            ckr: p.ckr.as_deref().map(key).transpose()?,
            nr: p.nr,
            pn: p.pn,
            skipped: p
                .skipped
                .iter()
                .map(|k| {
                    Ok(SkippedKey {
                        dh: array32(&k.dh, what)?,
                        n: k.n,
                        mk: key(&k.mk)?,
                    })
                })
                .collect::<Result<_>>()?,
            pending: p
                .pending
                .as_ref()
                .map(|x| {
                    Ok::<_, Error>(PendingKeyExchange {
                        pk_id: x.pk_id,
                        spk_id: x.spk_id,
                        ek: array32(&x.ek, what)?,
                    })
                })
                .transpose()?,
            base_key: array32(&p.base_key, what)?,
            previous_dhr: p
                .previous_dhr
                .iter()
                .map(|k| array32(k, what))
                .collect::<Result<_>>()?,
        };
        zeroize_proto(p);
        Ok(session)
    }

    #[cfg(test)]
    pub(crate) fn skipped_len(&self) -> usize {
        self.skipped.len()
    }
}

fn zeroize_proto(mut p: proto::SessionProto) {
    p.root_key.zeroize();
    p.dhs_secret.zeroize();
    if let Some(k) = p.cks.as_mut() {
        k.zeroize();
    }
    if let Some(k) = p.ckr.as_mut() {
        k.zeroize();
    }
    for k in &mut p.skipped {
        k.mk.zeroize();
    }
}

impl Clone for Session {
    fn clone(&self) -> Self {
        Self {
            version: self.version,
            local_identity: self.local_identity.clone(),
            remote_identity: self.remote_identity.clone(),
            initiator: self.initiator,
            root_key: self.root_key.clone(),
            dhs: self.dhs.clone(),
            dhr: self.dhr,
            cks: self.cks.clone(),
            ns: self.ns,
            ckr: self.ckr.clone(),
            nr: self.nr,
            pn: self.pn,
            skipped: self
                .skipped
                .iter()
                .map(|k| SkippedKey {
                    dh: k.dh,
                    n: k.n,
                    mk: k.mk.clone(),
                })
                .collect(),
            previous_dhr: self.previous_dhr.clone(),
            pending: self.pending.clone(),
            base_key: self.base_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(version: Version) -> (Session, Session) {
        let mut rng = rand::thread_rng();
        let sk = [9u8; 32];
        let bob_spk = KeyPair::generate(&mut rng);
        let pending = PendingKeyExchange {
            pk_id: 1,
            spk_id: 1,
            ek: [1; 32],
        };
        let alice = Session::new_active(
            version,
            &sk,
            bob_spk.public(),
            vec![1; 32],
            vec![2; 32],
            pending,
            &mut rng,
        )
        .unwrap();
        let bob = Session::new_passive(version, &sk, bob_spk, vec![2; 32], vec![1; 32], [1; 32]);
        (alice, bob)
    }

    /// Floods over several chains stay within the per-session bound: the oldest keys go.
    #[test]
    fn skipped_keys_are_bounded_per_session() {
        let mut rng = rand::thread_rng();
        for version in [Version::Omemo03, Version::Omemo2] {
            let (mut alice, mut bob) = pair(version);
            for _round in 0..3 {
                let mut last = Vec::new();
                for _ in 0..MAX_SKIP_PER_STEP {
                    last = alice.encrypt(b"k").unwrap();
                }
                bob.decrypt(&last, &mut rng).unwrap();
                let reply = bob.encrypt(b"r").unwrap();
                alice.decrypt(&reply, &mut rng).unwrap();
            }
            assert_eq!(bob.skipped_len(), MAX_SKIPPED_TOTAL);
        }
    }

    /// The heartbeat is due once per chain: at the first message at counter 53 or more,
    /// also when that message arrives with earlier ones skipped, and not for a skipped
    /// message decrypted later.
    #[test]
    fn heartbeat_is_due_once_per_chain_from_counter_53() {
        let mut rng = rand::thread_rng();
        let (mut alice, mut bob) = pair(Version::Omemo2);
        let mut due = Vec::new();
        for n in 0..60 {
            let m = alice.encrypt(b"m").unwrap();
            if n == 50 {
                // Held back: decrypted after the chain went past 53.
                due.push((n, m));
                continue;
            }
            if bob.decrypt_noting_heartbeat(&m, &mut rng).unwrap().1 {
                due.push((n, Vec::new()));
            }
        }
        let flagged: Vec<u32> = due
            .iter()
            .filter(|(_, m)| m.is_empty())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(flagged, vec![HEARTBEAT_COUNTER]);
        let (_, late) = due.into_iter().find(|(_, m)| !m.is_empty()).unwrap();
        assert!(!bob.decrypt_noting_heartbeat(&late, &mut rng).unwrap().1);
        // Bob answers: Alice's next chain starts at 0; a jump straight to 55 is due at once.
        let reply = bob.encrypt(b"r").unwrap();
        alice.decrypt(&reply, &mut rng).unwrap();
        let mut last = Vec::new();
        for _ in 0..56 {
            last = alice.encrypt(b"m").unwrap();
        }
        assert!(bob.decrypt_noting_heartbeat(&last, &mut rng).unwrap().1);
    }

    #[test]
    fn session_survives_serialization() {
        let mut rng = rand::thread_rng();
        let (mut alice, mut bob) = pair(Version::Omemo2);
        let m1 = alice.encrypt(b"one").unwrap();
        let m2 = alice.encrypt(b"two").unwrap();
        assert_eq!(&**bob.decrypt(&m2, &mut rng).unwrap(), b"two");
        let mut bob = Session::from_bytes(&bob.to_bytes()).unwrap();
        assert_eq!(&**bob.decrypt(&m1, &mut rng).unwrap(), b"one");
        assert!(matches!(
            bob.decrypt(&m1, &mut rng),
            Err(Error::DuplicateMessage)
        ));
        assert!(Session::from_bytes(b"\xff\xff").is_err());
    }

    /// A forged header asking for a huge skip is refused before any key is derived.
    #[test]
    fn forged_huge_counter_is_refused_without_work() {
        let mut rng = rand::thread_rng();
        let (mut alice, mut bob) = pair(Version::Omemo2);
        bob.decrypt(&alice.encrypt(b"x").unwrap(), &mut rng)
            .unwrap();
        let forged = proto::OmemoAuthenticatedMessage {
            mac: Some(vec![0; 16]),
            message: Some(
                proto::OmemoMessage {
                    n: Some(u32::MAX),
                    pn: Some(0),
                    dh_pub: Some(alice.dhs.public().to_vec()),
                    ciphertext: Some(vec![0; 16]),
                }
                .encode_to_vec(),
            ),
        }
        .encode_to_vec();
        assert!(matches!(
            bob.decrypt(&forged, &mut rng),
            Err(Error::TooManySkippedKeys { .. })
        ));
        assert_eq!(bob.skipped_len(), 0);
    }
}
