//! The key derivations shared by both versions; only their labels differ (see `Version`).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// HKDF-SHA-256 into `N` bytes.
pub(crate) fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    // Only fails for outputs longer than 255 hash lengths, which no caller asks for.
    #[allow(clippy::expect_used)]
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out.as_mut())
        .expect("HKDF output length is at most 80 bytes");
    out
}

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Root chain step (Double Ratchet KDF_RK): HKDF with the root key as salt and the DH output
/// as input keying material; 64 bytes split into the new root key and a chain key.
pub(crate) fn kdf_rk(
    root_key: &[u8; 32],
    dh_out: &[u8; 32],
    info: &[u8],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let out = hkdf::<64>(root_key, dh_out, info);
    let mut rk = Zeroizing::new([0u8; 32]);
    let mut ck = Zeroizing::new([0u8; 32]);
    rk.copy_from_slice(&out[..32]);
    ck.copy_from_slice(&out[32..]);
    (rk, ck)
}

/// Message chain step (KDF_CK): message key = HMAC(ck, 0x01), next chain key = HMAC(ck, 0x02),
/// as Signal's recommended algorithms and both OMEMO versions specify.
pub(crate) fn kdf_ck(chain_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mk = Zeroizing::new(hmac(chain_key, &[&[0x01]]));
    let ck = Zeroizing::new(hmac(chain_key, &[&[0x02]]));
    (ck, mk)
}

/// The per-message keys: HKDF(salt = 32 zero bytes, message key) → 32-byte AES-256 key,
/// 32-byte HMAC key, 16-byte CBC IV.
pub(crate) struct MessageKeys {
    pub enc: Zeroizing<[u8; 32]>,
    pub mac: Zeroizing<[u8; 32]>,
    pub iv: [u8; 16],
}

pub(crate) fn message_keys(mk: &[u8; 32], info: &[u8]) -> MessageKeys {
    let out = hkdf::<80>(&[0u8; 32], mk, info);
    let mut enc = Zeroizing::new([0u8; 32]);
    let mut mac = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; 16];
    enc.copy_from_slice(&out[..32]);
    mac.copy_from_slice(&out[32..64]);
    iv.copy_from_slice(&out[64..]);
    MessageKeys { enc, mac, iv }
}
