use std::fmt;

use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Result, StoreError};

/// The raw 256-bit database key.
///
/// SQLCipher is given the bytes directly (`x'…'` syntax), so no PBKDF2 runs on open: the
/// key already comes from the platform keystore with full entropy, and skipping the KDF
/// keeps cold start fast.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DbKey([u8; DbKey::LEN]);

impl DbKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        DbKey(bytes)
    }

    /// Accepts exactly 32 bytes, e.g. as handed over by a keystore API.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let mut key = DbKey([0; Self::LEN]);
        if bytes.len() != Self::LEN {
            return Err(StoreError::InvalidInput("database key must be 32 bytes"));
        }
        key.0.copy_from_slice(bytes);
        Ok(key)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut key = DbKey([0; Self::LEN]);
        // The hex crate's error names the offending character; drop it, it is key material.
        hex::decode_to_slice(s.trim(), &mut key.0)
            .map_err(|_| StoreError::InvalidInput("database key must be 64 hex digits"))?;
        Ok(key)
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut key = DbKey([0; Self::LEN]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut key.0)
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        Ok(key)
    }

    /// The key a platform keystore holds (`saved`, 64 hex digits), or on the first start a
    /// fresh one, handed to `save` before it is returned: a database is never created with
    /// a key that was not kept.
    pub fn saved_or_new<E: From<StoreError>>(
        saved: Option<&str>,
        save: impl FnOnce(&str) -> std::result::Result<(), E>,
    ) -> std::result::Result<Self, E> {
        match saved {
            Some(hex) => Ok(Self::from_hex(hex)?),
            None => {
                let key = Self::generate()?;
                save(&key.to_hex())?;
                Ok(key)
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(Self::LEN * 2));
        self.push_hex(&mut out);
        out
    }

    /// Appends lowercase hex without intermediate allocations, so no unzeroized copy of
    /// the key is left behind on the heap.
    pub(crate) fn push_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in self.0 {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
}

impl fmt::Debug for DbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DbKey(<redacted>)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn a_new_key_is_saved_before_use_and_a_saved_one_read() {
        let mut kept = String::new();
        let key = DbKey::saved_or_new::<StoreError>(None, |hex| {
            kept = hex.to_owned();
            Ok(())
        })
        .unwrap();
        assert_eq!(kept, *key.to_hex());
        let again =
            DbKey::saved_or_new::<StoreError>(Some(&kept), |_| panic!("saved twice")).unwrap();
        assert_eq!(again.as_bytes(), key.as_bytes());
        // Not saved: not used.
        let refused: std::result::Result<DbKey, StoreError> =
            DbKey::saved_or_new(None, |_| Err(StoreError::InvalidInput("keystore full")));
        assert!(refused.is_err());
        assert!(DbKey::saved_or_new::<StoreError>(Some("zz"), |_| Ok(())).is_err());
    }

    use super::*;

    #[test]
    fn hex_round_trip_and_validation() {
        let hex = "00ff10a0".repeat(8);
        let key = DbKey::from_hex(&format!(" {hex}\n")).unwrap();
        assert_eq!(key.as_bytes()[1], 0xff);
        assert_eq!(key.to_hex().as_str(), hex);
        assert!(matches!(
            DbKey::from_hex(&hex[..62]),
            Err(StoreError::InvalidInput(_))
        ));
        assert!(matches!(
            DbKey::from_hex(&"zz".repeat(32)),
            Err(StoreError::InvalidInput(_))
        ));
        assert!(DbKey::from_slice(&[1; 31]).is_err());
        assert_eq!(DbKey::from_slice(&[7; 32]).unwrap().as_bytes(), &[7; 32]);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = DbKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn generated_keys_differ() {
        let a = DbKey::generate().unwrap();
        let b = DbKey::generate().unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), &[0; 32]);
    }
}
