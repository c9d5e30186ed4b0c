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
