//! X3DH (Signal specification "The X3DH Key Agreement Protocol", rev. 1) as OMEMO uses it:
//! a one-time prekey is always required, the shared secret is 32 bytes of
//! HKDF(salt = 32 zero bytes, 0xFF × 32 ‖ DH1 ‖ DH2 ‖ DH3 ‖ DH4, version label).

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use rand::{CryptoRng, Rng, RngCore};
use zeroize::Zeroizing;

use crate::error::{malformed, Error, Result};
use crate::kdf::hkdf;
use crate::keys::{
    array32, ed25519_to_curve25519, encode_djb, parse_djb, CurvePublic, IdentityKeyPair, KeyPair,
};
use crate::proto::{self, required};
use crate::version::{Version, SIGNAL_V3_VERSION_BYTE};
use crate::xeddsa;

/// A device's published bundle, with every key exactly as it travels in the bundle element
/// (base64-decoded): for OMEMO 0.3 the public keys carry the 0x05 prefix (33 bytes), for
/// OMEMO 2 they are raw 32-byte keys and the identity key is Ed25519.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// `identityKey` / `ik`.
    pub identity_key: Vec<u8>,
    /// `signedPreKeyId` / `spk@id`.
    pub signed_prekey_id: u32,
    /// `signedPreKeyPublic` / `spk`.
    pub signed_prekey: Vec<u8>,
    /// `signedPreKeySignature` / `spks`.
    pub signed_prekey_signature: Vec<u8>,
    /// `preKeyPublic` / `pk`, with their ids.
    pub prekeys: Vec<(u32, Vec<u8>)>,
}

/// A peer identity decoded from the wire in all the forms we need.
pub(crate) struct PeerIdentity {
    /// The key as stored for trust: Curve25519 (0.3) or Ed25519 (2), 32 bytes.
    pub raw: [u8; 32],
    /// The key as it enters the associated data.
    pub encoded: Vec<u8>,
    /// The Curve25519 key used in the Diffie-Hellman computations.
    pub dh: CurvePublic,
}

pub(crate) fn parse_identity(version: Version, bytes: &[u8]) -> Result<PeerIdentity> {
    match version {
        Version::Omemo03 => {
            let raw = parse_djb(bytes)?;
            Ok(PeerIdentity {
                raw,
                encoded: encode_djb(&raw),
                dh: raw,
            })
        }
        Version::Omemo2 => {
            let raw = array32(bytes, "Ed25519 identity key")?;
            Ok(PeerIdentity {
                raw,
                encoded: raw.to_vec(),
                dh: ed25519_to_curve25519(&raw)?,
            })
        }
    }
}

pub(crate) fn parse_public(
    version: Version,
    bytes: &[u8],
    what: &'static str,
) -> Result<CurvePublic> {
    match version {
        Version::Omemo03 => parse_djb(bytes),
        Version::Omemo2 => array32(bytes, what),
    }
}

pub(crate) fn encode_public(version: Version, key: &CurvePublic) -> Vec<u8> {
    match version {
        Version::Omemo03 => encode_djb(key),
        Version::Omemo2 => key.to_vec(),
    }
}

/// Our identity key in its wire / associated-data form for a version.
pub(crate) fn own_identity_encoded(version: Version, ik: &IdentityKeyPair) -> Vec<u8> {
    match version {
        Version::Omemo03 => encode_djb(&ik.curve25519_public()),
        Version::Omemo2 => ik.ed25519_public().to_vec(),
    }
}

/// Signs a signed prekey the way the version requires.
pub(crate) fn sign_prekey(version: Version, ik: &IdentityKeyPair, spk: &CurvePublic) -> Vec<u8> {
    match version {
        // Our identity is an Ed25519 key whose sign bit may be 1, which XEdDSA would
        // normalise away. A device in both versions must present one identity, and clients
        // speaking both (python-omemo) derive the Ed25519 key of a 0.3 bundle from the
        // Curve25519 key and the top bit of the signature's last byte (free, as s < 2^253):
        // libsignal's original Curve25519 signatures, which every 0.3 client verifies. So we
        // sign as Ed25519 and carry the sign bit there.
        Version::Omemo03 => {
            use ed25519_dalek::Signer;
            let mut sig = ik.signing_key().sign(&encode_djb(spk)).to_bytes();
            sig[63] |= ik.ed25519_public()[31] & 0x80;
            sig.to_vec()
        }
        Version::Omemo2 => {
            use ed25519_dalek::Signer;
            ik.signing_key().sign(spk).to_bytes().to_vec()
        }
    }
}

fn verify_prekey(version: Version, identity: &PeerIdentity, spk: &CurvePublic, sig: &[u8]) -> bool {
    match version {
        Version::Omemo03 => xeddsa::verify(&identity.raw, &encode_djb(spk), sig),
        Version::Omemo2 => {
            let Ok(key) = VerifyingKey::from_bytes(&identity.raw) else {
                return false;
            };
            let Ok(sig) = Signature::from_slice(sig) else {
                return false;
            };
            key.verify_strict(spk, &sig).is_ok()
        }
    }
}

fn shared_secret(version: Version, dhs: [&[u8; 32]; 4]) -> Result<Zeroizing<[u8; 32]>> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(160));
    ikm.extend_from_slice(&[0xFF; 32]);
    for d in dhs {
        ikm.extend_from_slice(d);
    }
    hkdf::<32>(&[0u8; 32], &ikm, version.x3dh_info())
}

/// Result of the initiator's half of X3DH.
pub(crate) struct Initiated {
    pub sk: Zeroizing<[u8; 32]>,
    pub identity: PeerIdentity,
    pub signed_prekey: CurvePublic,
    pub signed_prekey_id: u32,
    pub prekey_id: u32,
    pub ephemeral: CurvePublic,
}

/// Initiator: verifies the bundle's signed prekey signature, picks a random one-time prekey
/// and computes the shared secret.
pub(crate) fn initiate<R: RngCore + CryptoRng>(
    version: Version,
    own: &IdentityKeyPair,
    bundle: &Bundle,
    rng: &mut R,
) -> Result<Initiated> {
    let identity = parse_identity(version, &bundle.identity_key)?;
    let spk = parse_public(version, &bundle.signed_prekey, "signed prekey")?;
    if !verify_prekey(version, &identity, &spk, &bundle.signed_prekey_signature) {
        return Err(Error::BadSignature);
    }
    if bundle.prekeys.is_empty() {
        return Err(Error::NoPreKeys);
    }
    let (prekey_id, prekey_bytes) = &bundle.prekeys[rng.gen_range(0..bundle.prekeys.len())];
    let opk = parse_public(version, prekey_bytes, "prekey")?;

    let ek = KeyPair::generate(rng);
    let dh1 = own.x25519().dh(&spk)?;
    let dh2 = ek.dh(&identity.dh)?;
    let dh3 = ek.dh(&spk)?;
    let dh4 = ek.dh(&opk)?;
    Ok(Initiated {
        sk: shared_secret(version, [&dh1, &dh2, &dh3, &dh4])?,
        identity,
        signed_prekey: spk,
        signed_prekey_id: bundle.signed_prekey_id,
        prekey_id: *prekey_id,
        ephemeral: ek.public(),
    })
}

/// Responder: the shared secret from our signed prekey and one-time prekey.
pub(crate) fn respond(
    version: Version,
    own: &IdentityKeyPair,
    spk: &KeyPair,
    opk: &KeyPair,
    their_identity: &CurvePublic,
    their_ephemeral: &CurvePublic,
) -> Result<Zeroizing<[u8; 32]>> {
    let dh1 = spk.dh(their_identity)?;
    let dh2 = own.x25519().dh(their_ephemeral)?;
    let dh3 = spk.dh(their_ephemeral)?;
    let dh4 = opk.dh(their_ephemeral)?;
    shared_secret(version, [&dh1, &dh2, &dh3, &dh4])
}

/// A key exchange message, parsed.
pub(crate) struct KeyExchange {
    pub prekey_id: u32,
    pub signed_prekey_id: u32,
    pub identity: PeerIdentity,
    pub ephemeral: CurvePublic,
    pub message: Vec<u8>,
}

pub(crate) fn encode_key_exchange(
    version: Version,
    own: &IdentityKeyPair,
    prekey_id: u32,
    signed_prekey_id: u32,
    ephemeral: &CurvePublic,
    message: Vec<u8>,
) -> Vec<u8> {
    match version {
        Version::Omemo03 => {
            let mut out = vec![SIGNAL_V3_VERSION_BYTE];
            out.extend(
                proto::PreKeySignalMessage {
                    pre_key_id: Some(prekey_id),
                    base_key: Some(encode_djb(ephemeral)),
                    identity_key: Some(encode_djb(&own.curve25519_public())),
                    message: Some(message),
                    registration_id: None,
                    signed_pre_key_id: Some(signed_prekey_id),
                }
                .encode_to_vec(),
            );
            out
        }
        Version::Omemo2 => proto::OmemoKeyExchange {
            pk_id: Some(prekey_id),
            spk_id: Some(signed_prekey_id),
            ik: Some(own.ed25519_public().to_vec()),
            ek: Some(ephemeral.to_vec()),
            message: Some(message),
        }
        .encode_to_vec(),
    }
}

pub(crate) fn parse_key_exchange(version: Version, bytes: &[u8]) -> Result<KeyExchange> {
    match version {
        Version::Omemo03 => {
            let (&first, rest) = bytes
                .split_first()
                .ok_or(malformed("PreKeySignalMessage (empty)"))?;
            if first != SIGNAL_V3_VERSION_BYTE {
                return Err(malformed("PreKeySignalMessage version byte"));
            }
            let m: proto::PreKeySignalMessage = proto::decode(rest, "PreKeySignalMessage")?;
            Ok(KeyExchange {
                prekey_id: required(m.pre_key_id, "PreKeySignalMessage preKeyId")?,
                signed_prekey_id: required(
                    m.signed_pre_key_id,
                    "PreKeySignalMessage signedPreKeyId",
                )?,
                identity: parse_identity(
                    version,
                    &required(m.identity_key, "PreKeySignalMessage identityKey")?,
                )?,
                ephemeral: parse_djb(&required(m.base_key, "PreKeySignalMessage baseKey")?)?,
                message: required(m.message, "PreKeySignalMessage message")?,
            })
        }
        Version::Omemo2 => {
            let m: proto::OmemoKeyExchange = proto::decode(bytes, "OMEMOKeyExchange")?;
            Ok(KeyExchange {
                prekey_id: required(m.pk_id, "OMEMOKeyExchange pk_id")?,
                signed_prekey_id: required(m.spk_id, "OMEMOKeyExchange spk_id")?,
                identity: parse_identity(version, &required(m.ik, "OMEMOKeyExchange ik")?)?,
                ephemeral: array32(
                    &required(m.ek, "OMEMOKeyExchange ek")?,
                    "OMEMOKeyExchange ek",
                )?,
                message: required(m.message, "OMEMOKeyExchange message")?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our OMEMO 0.3 signed prekey signature verifies (as libsignal and XEdDSA verifiers
    /// read it), and its top bit is our Ed25519 key's sign bit, from which a client that
    /// speaks both versions recovers the one identity our OMEMO 2 bundle shows.
    #[test]
    fn omemo_03_signature_carries_the_identity_sign_bit() {
        let mut rng = rand::thread_rng();
        let mut seen = [false; 2];
        for _ in 0..64 {
            let ik = IdentityKeyPair::generate(&mut rng);
            let spk = KeyPair::generate(&mut rng).public();
            let sig = sign_prekey(Version::Omemo03, &ik, &spk);
            let ed = ik.ed25519_public();
            assert_eq!(sig[63] & 0x80, ed[31] & 0x80);
            assert!(xeddsa::verify(
                &ik.curve25519_public(),
                &encode_djb(&spk),
                &sig
            ));
            let mut flipped = sig.clone();
            flipped[63] ^= 0x80;
            assert!(!xeddsa::verify(
                &ik.curve25519_public(),
                &encode_djb(&spk),
                &flipped
            ));
            seen[usize::from(ed[31] >> 7)] = true;
        }
        assert_eq!(seen, [true, true], "both sign bits were exercised");
    }
}
