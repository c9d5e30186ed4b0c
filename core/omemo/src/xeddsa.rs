//! XEdDSA (Signal specification "The XEdDSA and VXEdDSA Signature Schemes", rev. 1, §2.3 and
//! §3): Ed25519-compatible signatures made and checked with Curve25519 (Montgomery) keys.
//! OMEMO 0.3 signs the signed prekey with it.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::keys::{montgomery, CurvePublic};

/// hash_1 of the spec: SHA-512 over 2^256 - 1 - 1 encoded little-endian (0xFE then 31 × 0xFF)
/// followed by the input, which domain-separates the nonce hash from the challenge hash.
fn hash1_prefix() -> [u8; 32] {
    let mut p = [0xFFu8; 32];
    p[0] = 0xFE;
    p
}

/// Signs `message` with the clamped Curve25519 private key `k` (spec §2.3 xeddsa_sign).
pub fn sign<R: RngCore + CryptoRng>(k: &[u8; 32], message: &[u8], rng: &mut R) -> [u8; 64] {
    let mut z = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(z.as_mut());
    sign_with_nonce(k, message, &z)
}

/// `sign` with the 64 random bytes Z given: deterministic, for known-answer tests.
fn sign_with_nonce(k: &[u8; 32], message: &[u8], z: &[u8; 64]) -> [u8; 64] {
    // calculate_key_pair: A = kB with its sign bit forced to 0, negating the scalar when the
    // point had sign 1, so that A is the Edwards key every verifier derives from the u-coordinate.
    // Clamp as X25519 does, so any 32 secret bytes name the same key as in Diffie-Hellman.
    let mut clamped = Zeroizing::new(*k);
    clamped[0] &= 248;
    clamped[31] &= 127;
    clamped[31] |= 64;
    let k_scalar = Scalar::from_bytes_mod_order(*clamped);
    let e = EdwardsPoint::mul_base(&k_scalar).compress();
    let sign_bit = e.0[31] >> 7;
    let a = if sign_bit == 1 { -k_scalar } else { k_scalar };
    let mut a_pub = e.0;
    a_pub[31] &= 0x7F;

    let mut h1 = Sha512::new();
    h1.update(hash1_prefix());
    h1.update(a.as_bytes());
    h1.update(message);
    h1.update(z);
    let r = Scalar::from_hash(h1);
    let r_point = (&r * ED25519_BASEPOINT_TABLE).compress();

    let mut h = Sha512::new();
    h.update(r_point.as_bytes());
    h.update(a_pub);
    h.update(message);
    let h = Scalar::from_hash(h);
    let s = r + h * a;

    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r_point.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

/// Field prime p = 2^255 - 19: is the 255-bit little-endian value in `b` (top bit ignored
/// by the caller) at least p?
fn ge_p(b: &[u8; 32]) -> bool {
    b[31] == 0x7F && b[1..31].iter().all(|&x| x == 0xFF) && b[0] >= 0xED
}

/// Verifies an XEdDSA signature with a Curve25519 public key (spec §2.3 xeddsa_verify),
/// also accepting libsignal's sign-bit-in-signature variant.
pub fn verify(u: &CurvePublic, message: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
        return false;
    };
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&signature[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&signature[32..]);

    if u[31] & 0x80 != 0 || ge_p(u) {
        return false;
    }
    let mut r_y = r_bytes;
    r_y[31] &= 0x7F;
    if ge_p(&r_y) {
        return false;
    }
    // s < 2^253 always, so its top bit is free. libsignal's original Curve25519 signatures
    // (still sent by OMEMO 0.3 clients, and by python-oldmemo) keep the sign bit of the
    // Edwards key there instead of normalising the key to sign 0 as XEdDSA does. Reading the
    // bit accepts both: a pure XEdDSA signature has it clear.
    let sign_bit = s_bytes[31] >> 7;
    s_bytes[31] &= 0x7F;
    // The spec rejects s >= 2^253; requiring a canonical scalar (s < q) is stricter and
    // honest signers always produce one.
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    // convert_mont: the Edwards point with y = (u - 1) / (u + 1) and the given sign.
    let Some(a) = montgomery(u).to_edwards(sign_bit) else {
        return false;
    };
    if a.is_small_order() {
        return false;
    }
    let a_compressed = a.compress();

    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(a_compressed.as_bytes());
    h.update(message);
    let h = Scalar::from_hash(h);

    let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&(-h), &a, &s).compress();
    // Comparing encodings, as the spec does; R is public, so timing does not matter here.
    r_check == CompressedEdwardsY(r_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Inputs for the vectors below. PRIV's Edwards key has sign bit 1, so XEdDSA has to
    // negate the scalar: the interesting case.
    const PRIV: &str = "0002030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f60";
    const PUB: &str = "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c";
    const MSG: &str = "056465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283";
    const NONCE: &str = "c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff0001020304050607";
    /// Our XEdDSA signature of MSG with Z = NONCE. Checked independently with python-xeddsa
    /// (libxeddsa): `ed25519_verify(sig, curve25519_pub_to_ed25519_pub(PUB, False), MSG)`
    /// is true, and false with the sign bit set.
    const XEDDSA_SIG: &str = "20b84922281547f062acc486fcb9affd447682b54fed8f3467b3b01421c59e2015b1460d867b863904d191ed824e293ada3fa50526a5eda3ccc70b3f1bad4107";
    /// python-xeddsa's `ed25519_priv_sign(PRIV, MSG, NONCE)`: an Ed25519 signature under the
    /// unnormalised Edwards key (sign bit 1), as libsignal makes them; libsignal and oldmemo
    /// put that sign bit into the top bit of the last byte when publishing, done here.
    const LIBSIGNAL_STYLE_SIG: &str = "ed46d18efc35f0120292773397e1be81936d69adb90235816b20a8980621f5505d4dab0aee173a328e577d57fc124e0c0ec74404c9d5470c3bd2a22fd3e6f78f";

    fn arr<const N: usize>(h: &str) -> [u8; N] {
        hex::decode(h).unwrap().try_into().unwrap()
    }

    #[test]
    fn signature_matches_known_answer() {
        let msg = hex::decode(MSG).unwrap();
        let sig = sign_with_nonce(&arr(PRIV), &msg, &arr(NONCE));
        assert_eq!(hex::encode(sig), XEDDSA_SIG);
        assert_eq!(
            crate::KeyPair::from_secret_bytes(arr(PRIV)).public(),
            arr::<32>(PUB)
        );
        assert!(verify(&arr(PUB), &msg, &sig));
    }

    #[test]
    fn rejects_tampering() {
        let msg = hex::decode(MSG).unwrap();
        let sig: [u8; 64] = arr(XEDDSA_SIG);
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!verify(&arr(PUB), &msg, &bad));
        let mut bad_msg = msg.clone();
        bad_msg[5] ^= 1;
        assert!(!verify(&arr(PUB), &bad_msg, &sig));
        assert!(!verify(&arr(PUB), &msg, &sig[..63]));
        // The top bit selects the Edwards key's sign: set, it names the other key.
        let mut flipped = sig;
        flipped[63] ^= 0x80;
        assert!(!verify(&arr(PUB), &msg, &flipped));
    }

    #[test]
    fn accepts_libsignal_style_signature_with_sign_bit() {
        let msg = hex::decode(MSG).unwrap();
        let sig: [u8; 64] = arr(LIBSIGNAL_STYLE_SIG);
        assert!(verify(&arr(PUB), &msg, &sig));
        let mut without_bit = sig;
        without_bit[63] &= 0x7F;
        assert!(!verify(&arr(PUB), &msg, &without_bit));
    }

    #[test]
    fn random_signatures_verify() {
        let mut rng = rand::thread_rng();
        for _ in 0..16 {
            let kp = crate::KeyPair::generate(&mut rng);
            let sig = sign(&kp.secret_bytes(), b"message", &mut rng);
            assert!(verify(&kp.public(), b"message", &sig));
            assert!(!verify(&kp.public(), b"other", &sig));
        }
    }
}
