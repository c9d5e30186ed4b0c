//! Key types: the Ed25519-seeded identity key and X25519 key pairs, with the conversions
//! between the Edwards and Montgomery forms that OMEMO needs.

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::montgomery::MontgomeryPoint;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// A 32-byte Curve25519 (Montgomery u-coordinate) public key.
pub type CurvePublic = [u8; 32];

/// An X25519 key pair. The secret is zeroized on drop.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    public: CurvePublic,
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let secret = StaticSecret::random_from_rng(rng);
        Self::from_secret(secret)
    }

    /// Rebuilds a key pair from its 32 secret bytes (clamping happens in X25519 itself).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        Self::from_secret(StaticSecret::from(bytes))
    }

    /// Rebuilds a key pair from its secret and the public half stored with it, without
    /// recomputing that (a scalar multiplication, most of the cost of loading a session).
    /// Only for what we stored ourselves: a wrong public half would break the session.
    pub(crate) fn from_stored(secret: [u8; 32], public: CurvePublic) -> Self {
        let secret = StaticSecret::from(secret);
        debug_assert_eq!(PublicKey::from(&secret).to_bytes(), public);
        Self { secret, public }
    }

    fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The public half.
    pub fn public(&self) -> CurvePublic {
        self.public
    }

    /// The secret bytes, for storage. Zeroized when the returned value is dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// X25519 with a peer public key; see [`dh`].
    pub fn dh(&self, peer: &CurvePublic) -> Result<Zeroizing<[u8; 32]>> {
        dh(&self.secret, peer)
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

/// X25519. A peer key of low order (or the identity) makes the result all zero, which would
/// let an attacker force a known shared secret, so such a result is rejected (RFC 7748 §6.1).
pub(crate) fn dh(secret: &StaticSecret, peer: &CurvePublic) -> Result<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    if !shared.was_contributory() {
        return Err(Error::InvalidKey("Diffie-Hellman result is all zero"));
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// The long-term identity key of our device, kept as an Ed25519 seed.
///
/// One seed serves both versions, as in python-omemo: OMEMO 2 publishes the Ed25519 public
/// key and signs with Ed25519; OMEMO 0.3 publishes the birationally equivalent Curve25519
/// key and signs with XEdDSA using the X25519 scalar derived from the same seed (RFC 8032
/// §5.1.5 expansion), so the two identities are the same key pair.
#[derive(Clone)]
pub struct IdentityKeyPair {
    seed: Zeroizing<[u8; 32]>,
}

impl IdentityKeyPair {
    /// A fresh random identity.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self { seed }
    }

    /// Rebuilds the identity from its stored seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed: Zeroizing::new(seed),
        }
    }

    /// The seed, for storage.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    pub(crate) fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.seed)
    }

    /// The Ed25519 public key (OMEMO 2 form).
    pub fn ed25519_public(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    /// The Curve25519 public key (OMEMO 0.3 form, without the 0x05 prefix).
    pub fn curve25519_public(&self) -> CurvePublic {
        self.signing_key()
            .verifying_key()
            .to_montgomery()
            .to_bytes()
    }

    /// The X25519 secret scalar bytes: the clamped first half of SHA-512(seed).
    pub(crate) fn curve25519_secret(&self) -> Zeroizing<[u8; 32]> {
        let mut hash = Sha512::digest(self.seed.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&hash[..32]);
        hash.as_mut_slice().zeroize();
        out[0] &= 248;
        out[31] &= 127;
        out[31] |= 64;
        out
    }

    pub(crate) fn x25519(&self) -> KeyPair {
        KeyPair::from_secret_bytes(*self.curve25519_secret())
    }
}

impl std::fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKeyPair").finish_non_exhaustive()
    }
}

/// Converts an Ed25519 public key to its Curve25519 form, rejecting keys that are not valid
/// points or have small order.
pub fn ed25519_to_curve25519(ed: &[u8; 32]) -> Result<CurvePublic> {
    let point = CompressedEdwardsY(*ed)
        .decompress()
        .ok_or(Error::InvalidKey("not an Ed25519 point"))?;
    if point.is_small_order() {
        return Err(Error::InvalidKey("Ed25519 point of small order"));
    }
    Ok(point.to_montgomery().to_bytes())
}

/// Parses a 33-byte OMEMO 0.3 public key (0x05 ‖ Curve25519 key).
pub(crate) fn parse_djb(bytes: &[u8]) -> Result<CurvePublic> {
    match bytes {
        [0x05, rest @ ..] if rest.len() == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(rest);
            Ok(out)
        }
        _ => Err(crate::error::malformed(
            "Curve25519 public key (0x05 prefix)",
        )),
    }
}

/// Serializes a Curve25519 public key in OMEMO 0.3 form (0x05 ‖ key).
pub(crate) fn encode_djb(key: &CurvePublic) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    out.push(0x05);
    out.extend_from_slice(key);
    out
}

pub(crate) fn array32(bytes: &[u8], what: &'static str) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| crate::error::malformed(what))
}

/// The Curve25519 u-coordinate as the Montgomery point type, for XEdDSA.
pub(crate) fn montgomery(key: &CurvePublic) -> MontgomeryPoint {
    MontgomeryPoint(*key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(h: &str) -> [u8; 32] {
        hex::decode(h).unwrap().try_into().unwrap()
    }

    /// RFC 7748 §6.1 test vector.
    #[test]
    fn x25519_rfc7748_vector() {
        let alice = KeyPair::from_secret_bytes(arr(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let bob = KeyPair::from_secret_bytes(arr(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            alice.public(),
            arr("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            bob.public(),
            arr("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = arr("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(*alice.dh(&bob.public()).unwrap(), shared);
        assert_eq!(*bob.dh(&alice.public()).unwrap(), shared);
    }

    /// Our seed-to-key derivations agree with python-xeddsa's `seed_to_priv`,
    /// `priv_to_curve25519_pub` and `seed_to_ed25519_pub` for the seed 0x07 × 32.
    #[test]
    fn identity_derivations_match_python_xeddsa() {
        let ik = IdentityKeyPair::from_seed([7u8; 32]);
        assert_eq!(
            *ik.curve25519_secret(),
            arr("28ad39fefd7fa3e200a9c626eef599e61a2d055c48a8288a4e7e4c4bca392878")
        );
        assert_eq!(
            ik.curve25519_public(),
            arr("761d88ec830413919dfe9d4d1d56f17e653c8c994082df5b137b90a0ae6edf74")
        );
        assert_eq!(
            ik.ed25519_public(),
            arr("ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c")
        );
        assert_eq!(ik.x25519().public(), ik.curve25519_public());
        assert_eq!(
            ed25519_to_curve25519(&ik.ed25519_public()).unwrap(),
            ik.curve25519_public()
        );
    }

    #[test]
    fn all_zero_and_low_order_points_are_rejected() {
        let kp = KeyPair::generate(&mut rand::thread_rng());
        let low_order = [
            [0u8; 32],
            arr("0100000000000000000000000000000000000000000000000000000000000000"),
            arr("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
            arr("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
            arr("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        ];
        for p in low_order {
            assert!(
                matches!(kp.dh(&p), Err(Error::InvalidKey(_))),
                "{}",
                hex::encode(p)
            );
        }
    }

    #[test]
    fn small_order_ed25519_identity_is_rejected() {
        // The Edwards identity (y = 1) and a non-point.
        let identity = arr("0100000000000000000000000000000000000000000000000000000000000000");
        assert!(matches!(
            ed25519_to_curve25519(&identity),
            Err(Error::InvalidKey(_))
        ));
        let mut not_a_point = [0xffu8; 32];
        not_a_point[31] = 0x7f;
        not_a_point[0] = 0xee;
        assert!(ed25519_to_curve25519(&not_a_point).is_err());
    }

    #[test]
    fn djb_encoding_requires_prefix_and_length() {
        assert!(parse_djb(&[0x05; 33]).is_ok());
        assert!(parse_djb(&[0x06; 33]).is_err());
        assert!(parse_djb(&[0x05; 32]).is_err());
        assert!(parse_djb(&[]).is_err());
    }
}
