//! OMEMO 2 device labels (XEP-0384 §5.3.1): a label travels in the device list, which anyone
//! who can write the node (or forge a copy of it) controls, so it is signed with the identity
//! key as `Sig(PK, M)` of the Key Exchange section. Our identity is an Ed25519 key pair, so
//! that is a plain RFC 8032 signature over the label's UTF-8 bytes: the primitive that signs
//! the OMEMO 2 signed prekey.

use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::keys::IdentityKeyPair;

/// The signature (`labelsig`, before base64) of `label` by `identity`.
pub fn sign_label(identity: &IdentityKeyPair, label: &str) -> [u8; 64] {
    identity.signing_key().sign(label.as_bytes()).to_bytes()
}

/// Whether `signature` is `identity`'s (an OMEMO 2 identity key, Ed25519) over `label`.
/// Strict verification, as for signed prekeys: a signature that only a lax verifier accepts
/// (small-order key, non-canonical encoding) is not the device's word.
pub fn verify_label(identity: &[u8; 32], label: &str, signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(identity) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(label.as_bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "Linnet on Debian — ünïcode";
    /// Ed25519 public key of the seed 0x07 × 32 (python-xeddsa `seed_to_ed25519_pub`).
    const PUB: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
    /// pyca/cryptography's `Ed25519PrivateKey.from_private_bytes(seed).sign(LABEL)`
    /// (RFC 8032 signatures are deterministic).
    const SIG: &str = "3a1ed632a60fa278a09ee3a02a2e4e719984e6be43b545f7e6be88444e082c59f570f71dd75b9f50bfd8904675ead30b7bbb494a7f1fcbe0bdde8443bf8c9a0b";
    /// What python-twomemo's `sign_own_label` makes for the same identity:
    /// `xeddsa.ed25519_priv_sign(seed_to_priv(seed), LABEL, nonce = bytes(range(64)))`.
    const TWOMEMO_SIG: &str = "3393494d689532c6437448b020849eddd025c6d04832143e9573742ca413b9e5b21a47fac53675c39a2754d24de3fcf3cb942b44d42d14a05736468bf3d4bf09";

    fn arr<const N: usize>(h: &str) -> [u8; N] {
        hex::decode(h).unwrap().try_into().unwrap()
    }

    #[test]
    fn signature_matches_an_independent_implementation() {
        let ik = IdentityKeyPair::from_seed([7u8; 32]);
        assert_eq!(ik.ed25519_public(), arr::<32>(PUB));
        assert_eq!(hex::encode(sign_label(&ik, LABEL)), SIG);
        assert!(verify_label(&arr(PUB), LABEL, &arr::<64>(SIG)));
    }

    #[test]
    fn verifies_a_twomemo_label() {
        assert!(verify_label(&arr(PUB), LABEL, &arr::<64>(TWOMEMO_SIG)));
    }

    #[test]
    fn refuses_another_label_key_or_signature() {
        let sig = arr::<64>(SIG);
        assert!(!verify_label(&arr(PUB), "Linnet on Debian", &sig));
        let other = IdentityKeyPair::from_seed([8u8; 32]).ed25519_public();
        assert!(!verify_label(&other, LABEL, &sig));
        let mut bad = sig;
        bad[3] ^= 1;
        assert!(!verify_label(&arr(PUB), LABEL, &bad));
        assert!(!verify_label(&arr(PUB), LABEL, &sig[..63]));
        assert!(!verify_label(&arr(PUB), LABEL, &[]));
        // Not a point: no key, no label.
        let mut not_a_point = [0xffu8; 32];
        not_a_point[31] = 0x7f;
        not_a_point[0] = 0xee;
        assert!(!verify_label(&not_a_point, LABEL, &sig));
    }

    #[test]
    fn fresh_identities_sign_what_they_verify() {
        let ik = IdentityKeyPair::generate(&mut rand::thread_rng());
        let sig = sign_label(&ik, "Phone");
        assert!(verify_label(&ik.ed25519_public(), "Phone", &sig));
        assert!(!verify_label(&ik.ed25519_public(), "Phone ", &sig));
    }
}
