//! The key derivations shared by both versions; only their labels differ (see `Version`).

use hkdf::Hkdf;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A 32-byte secret key, zeroized when dropped.
pub(crate) type Key = Zeroizing<[u8; 32]>;

/// HKDF-SHA-256 into `N` bytes (at most 255 hash lengths, else `Error::Kdf`).
pub(crate) fn hkdf<const N: usize>(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
) -> Result<Zeroizing<[u8; N]>> {
    let mut out = Zeroizing::new([0u8; N]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out.as_mut())
        .map_err(|_| Error::Kdf)?;
    Ok(out)
}

/// HMAC-SHA-256 with a 32-byte key. HMAC pads a key shorter than the hash's block with
/// zeros (RFC 2104 §2), so the key is given already padded to the block: a construction
/// that cannot fail, where taking a slice of any length could.
pub(crate) fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    let mut mac = <HmacSha256 as KeyInit>::new((&*block).into());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Root chain step (Double Ratchet KDF_RK): HKDF with the root key as salt and the DH output
/// as input keying material; 64 bytes split into the new root key and a chain key.
pub(crate) fn kdf_rk(root_key: &[u8; 32], dh_out: &[u8; 32], info: &[u8]) -> Result<(Key, Key)> {
    let out = hkdf::<64>(root_key, dh_out, info)?;
    let mut rk = Zeroizing::new([0u8; 32]);
    let mut ck = Zeroizing::new([0u8; 32]);
    rk.copy_from_slice(&out[..32]);
    ck.copy_from_slice(&out[32..]);
    Ok((rk, ck))
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

pub(crate) fn message_keys(mk: &[u8; 32], info: &[u8]) -> Result<MessageKeys> {
    let out = hkdf::<80>(&[0u8; 32], mk, info)?;
    let mut enc = Zeroizing::new([0u8; 32]);
    let mut mac = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; 16];
    enc.copy_from_slice(&out[..32]);
    mac.copy_from_slice(&out[32..64]);
    iv.copy_from_slice(&out[64..]);
    Ok(MessageKeys { enc, mac, iv })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_with_a_padded_key_is_hmac_with_the_key() {
        let key = [0x5au8; 32];
        let mut plain = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
        plain.update(b"part one");
        plain.update(b"part two");
        let want: [u8; 32] = plain.finalize().into_bytes().into();
        assert_eq!(hmac(&key, &[b"part one", b"part two"]), want);
    }

    #[test]
    fn hkdf_refuses_more_than_it_can_give() {
        assert!(matches!(
            hkdf::<8192>(&[], b"ikm", b"info"),
            Err(Error::Kdf)
        ));
        assert!(hkdf::<8160>(&[], b"ikm", b"info").is_ok());
    }
}
