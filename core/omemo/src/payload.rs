//! Encryption of the message payload with a fresh key per message; the key material (key
//! and authentication tag) is what the ratchet then encrypts for every recipient device.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, AesGcm};
use rand::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::kdf::{hmac, message_keys, MessageKeys};
use crate::ratchet::{aes256_cbc_decrypt, aes256_cbc_encrypt};
use crate::Version;

/// Some OMEMO 0.3 senders (older Conversations) used a 16-byte GCM nonce.
type Aes128Gcm16 = AesGcm<aes::Aes128, U16>;

/// An encrypted payload and the key material that opens it.
pub(crate) struct SealedPayload {
    pub ciphertext: Vec<u8>,
    /// 0.3 only: the GCM nonce that travels in the `<iv>` element.
    pub iv: Option<Vec<u8>>,
    /// 0.3: 16-byte AES key ‖ 16-byte GCM tag. 2: 32-byte key ‖ 16-byte truncated HMAC.
    pub key_material: Zeroizing<Vec<u8>>,
}

pub(crate) fn seal<R: RngCore + CryptoRng>(
    version: Version,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<SealedPayload> {
    match version {
        Version::Omemo03 => {
            let mut key = Zeroizing::new([0u8; 16]);
            rng.fill_bytes(key.as_mut());
            let mut iv = [0u8; 12];
            rng.fill_bytes(&mut iv);
            let cipher = Aes128Gcm::new(key.as_ref().into());
            let mut out = cipher
                .encrypt((&iv).into(), plaintext)
                .map_err(|_| Error::PayloadDecryption)?;
            // aes-gcm appends the 16-byte tag; OMEMO 0.3 carries it with the key instead.
            let tag = out.split_off(out.len() - 16);
            let mut km = Zeroizing::new(Vec::with_capacity(32));
            km.extend_from_slice(key.as_ref());
            km.extend_from_slice(&tag);
            Ok(SealedPayload {
                ciphertext: out,
                iv: Some(iv.to_vec()),
                key_material: km,
            })
        }
        Version::Omemo2 => {
            let mut key = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(key.as_mut());
            let MessageKeys { enc, mac: auth, iv } = payload_keys(&key)?;
            let ciphertext = aes256_cbc_encrypt(&enc, &iv, plaintext);
            let mac = hmac(&auth, &[&ciphertext]);
            let mut km = Zeroizing::new(Vec::with_capacity(48));
            km.extend_from_slice(key.as_ref());
            km.extend_from_slice(&mac[..16]);
            Ok(SealedPayload {
                ciphertext,
                iv: None,
                key_material: km,
            })
        }
    }
}

/// Key material for a message without payload (heartbeat / key transport): python-omemo
/// sends 32 zero bytes for OMEMO 2; for 0.3 any 32 bytes do, as nothing is decrypted with them.
pub(crate) fn empty_key_material<R: RngCore + CryptoRng>(
    version: Version,
    rng: &mut R,
) -> Zeroizing<Vec<u8>> {
    let mut km = Zeroizing::new(vec![0u8; 32]);
    if version == Version::Omemo03 {
        rng.fill_bytes(km.as_mut_slice());
    }
    km
}

/// OMEMO 2 payload keys: HKDF-SHA-256(salt = 32 zero bytes, key, "OMEMO Payload") into an
/// AES-256 key, an HMAC key and an IV, split as the ratchet's message keys are.
fn payload_keys(key: &[u8; 32]) -> Result<MessageKeys> {
    message_keys(key, b"OMEMO Payload")
}

pub(crate) fn open(
    version: Version,
    key_material: &[u8],
    iv: Option<&[u8]>,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    match version {
        Version::Omemo03 => {
            let iv = iv.ok_or(Error::Malformed {
                what: "missing <iv>",
            })?;
            // Key ‖ tag is the norm; a bare 16-byte key means the tag trails the ciphertext.
            let (key, data) = match key_material.len() {
                32 => {
                    let mut data = ciphertext.to_vec();
                    data.extend_from_slice(&key_material[16..]);
                    (&key_material[..16], data)
                }
                16 => (key_material, ciphertext.to_vec()),
                _ => {
                    return Err(Error::Malformed {
                        what: "key material length",
                    })
                }
            };
            let plaintext = match iv.len() {
                12 => Aes128Gcm::new(key.into()).decrypt(iv.into(), data.as_slice()),
                16 => Aes128Gcm16::new(key.into()).decrypt(iv.into(), data.as_slice()),
                _ => {
                    return Err(Error::Malformed {
                        what: "<iv> length",
                    })
                }
            };
            plaintext
                .map(Zeroizing::new)
                .map_err(|_| Error::PayloadDecryption)
        }
        Version::Omemo2 => {
            if key_material.len() != 48 {
                return Err(Error::Malformed {
                    what: "key material length",
                });
            }
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(&key_material[..32]);
            let MessageKeys { enc, mac: auth, iv } = payload_keys(&key)?;
            let mac = hmac(&auth, &[ciphertext]);
            if !bool::from(mac[..16].ct_eq(&key_material[32..])) {
                return Err(Error::PayloadDecryption);
            }
            aes256_cbc_decrypt(&enc, &iv, ciphertext)
        }
    }
}
