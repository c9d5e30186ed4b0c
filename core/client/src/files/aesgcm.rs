//! The cipher of XEP-0454 (OMEMO Media Sharing): AES-256-GCM from the RustCrypto `aes-gcm`
//! crate, a fresh random 32-byte key and 12-byte IV from the operating system's CSPRNG for
//! every upload, no associated data, and the 16-byte tag appended to the ciphertext. The
//! URL format that carries key and IV is `linnet_xmpp::files::AesgcmUrl`.
//!
//! Whole files are held in memory, at most [`MAX_PLAINTEXT`]: `aes-gcm` offers no streaming
//! interface, and building GCM from its parts (CTR and GHASH) ourselves would be writing
//! our own cipher mode. Encryption happens in place (the buffer holds plaintext, then
//! ciphertext and tag), and a received file is checked against its tag as a whole before
//! a single byte of plaintext is written anywhere. Buffers that hold plaintext and every
//! copy of a key are zeroized when dropped.

use std::io::{Read, Write};
use std::path::Path;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use linnet_xmpp::files::{MediaKey, AESGCM_IV_LEN, AESGCM_KEY_LEN, AESGCM_TAG_LEN};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

/// The largest file sent or received encrypted. It is held in memory once (the transfer
/// itself streams in small chunks from or to that buffer or disk): an amount phones of
/// today can spare, and of the order of what upload services accept by default.
pub(crate) const MAX_PLAINTEXT: u64 = 100 * 1024 * 1024;

/// Why a file could not be encrypted or decrypted. Nothing here carries a key, a path or
/// a name.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub(crate) enum MediaError {
    #[error("the file is larger than the {max} bytes an encrypted file may have")]
    TooLarge { max: u64 },
    #[error("the file changed while it was being read")]
    Changed,
    #[error("local file: {0}")]
    Io(String),
    #[error("the encrypted file is too short to be one")]
    TooShort,
    #[error(
        "the encrypted file failed its integrity check: wrong key, or damaged or altered on \
         the server or on the way"
    )]
    Integrity,
    #[error("the file could not be encrypted")]
    Cipher,
}

fn io(e: std::io::Error) -> MediaError {
    // The Display of an I/O error may hold the path.
    MediaError::Io(e.kind().to_string())
}

/// A key and IV for one upload, never used for another.
pub(crate) fn new_key() -> MediaKey {
    let mut key = Zeroizing::new([0u8; AESGCM_KEY_LEN]);
    OsRng.fill_bytes(key.as_mut_slice());
    let mut iv = [0u8; AESGCM_IV_LEN];
    OsRng.fill_bytes(&mut iv);
    MediaKey { iv, key }
}

fn cipher(secret: &MediaKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(secret.key.as_slice()))
}

/// Encrypts `buf` in place and appends the tag: the bytes XEP-0454 uploads. Reserve
/// [`AESGCM_TAG_LEN`] bytes beyond the plaintext beforehand, or the append moves the
/// buffer and leaves a copy of the ciphertext behind (harmless) at the cost of a copy.
pub(crate) fn seal(secret: &MediaKey, buf: &mut Vec<u8>) -> Result<(), MediaError> {
    let tag = cipher(secret)
        .encrypt_in_place_detached(Nonce::from_slice(&secret.iv), &[], buf.as_mut_slice())
        .map_err(|_| MediaError::Cipher)?;
    buf.extend_from_slice(&tag);
    Ok(())
}

/// Checks the tag at the end of `buf` and, only if it matches, decrypts the rest in place
/// (`buf` is then the plaintext).
pub(crate) fn open(secret: &MediaKey, buf: &mut Vec<u8>) -> Result<(), MediaError> {
    let split = buf
        .len()
        .checked_sub(AESGCM_TAG_LEN)
        .ok_or(MediaError::TooShort)?;
    let tag = Tag::clone_from_slice(buf.get(split..).unwrap_or_default());
    buf.truncate(split);
    cipher(secret)
        .decrypt_in_place_detached(Nonce::from_slice(&secret.iv), &[], buf.as_mut_slice(), &tag)
        .map_err(|_| MediaError::Integrity)
}

/// Reads the file at `path`, which must be `size` bytes, hands its plaintext to `inspect`
/// (for an image's dimensions) and returns it encrypted with `secret`. Blocking.
pub(crate) fn seal_file(
    path: &Path,
    size: u64,
    secret: &MediaKey,
    inspect: impl FnOnce(&[u8]),
) -> Result<Vec<u8>, MediaError> {
    if size > MAX_PLAINTEXT {
        return Err(MediaError::TooLarge { max: MAX_PLAINTEXT });
    }
    let len = usize::try_from(size).map_err(|_| MediaError::TooLarge { max: MAX_PLAINTEXT })?;
    let file = std::fs::File::open(path).map_err(io)?;
    // Room for the tag from the start: the buffer is never reallocated, so no copy of the
    // plaintext is left in freed memory. One byte more than expected tells a grown file.
    let mut buf = Zeroizing::new(Vec::with_capacity(len + AESGCM_TAG_LEN));
    file.take(size + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() != len {
        return Err(MediaError::Changed);
    }
    inspect(&buf);
    seal(secret, &mut buf)?;
    // Ciphertext from here on: out of the wrapper that would wipe it.
    Ok(std::mem::take(&mut *buf))
}

/// Decrypts the downloaded file at `src` into a new file at `dest` (which must not exist).
/// Nothing is written unless the whole file passed its tag check; a failure removes what
/// it created. Returns the plaintext's length. Blocking.
pub(crate) fn open_file(src: &Path, dest: &Path, secret: &MediaKey) -> Result<u64, MediaError> {
    let file = std::fs::File::open(src).map_err(io)?;
    let max = MAX_PLAINTEXT + AESGCM_TAG_LEN as u64;
    let len = file.metadata().map_err(io)?.len();
    if len > max {
        return Err(MediaError::TooLarge { max: MAX_PLAINTEXT });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(len).unwrap_or(0)));
    file.take(max + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > max {
        return Err(MediaError::TooLarge { max: MAX_PLAINTEXT });
    }
    open(secret, &mut buf)?;
    let written = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)?;
        out.write_all(&buf)?;
        out.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(dest);
        return Err(io(e));
    }
    Ok(buf.len() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(k: u8, iv: u8) -> MediaKey {
        MediaKey {
            iv: [iv; AESGCM_IV_LEN],
            key: Zeroizing::new([k; AESGCM_KEY_LEN]),
        }
    }

    /// The GCM specification's (McGrew and Viega) test cases 13 and 14, AES-256 with a
    /// zero key and IV: what goes up is exactly ciphertext then tag.
    #[test]
    fn known_answers_frame_ciphertext_then_tag() {
        let zero = key(0, 0);
        let mut empty = Vec::new();
        seal(&zero, &mut empty).unwrap();
        assert_eq!(empty, unhex("530f8afbc74536b9a963b4f1c4cb738b"));
        let mut block = vec![0u8; 16];
        seal(&zero, &mut block).unwrap();
        assert_eq!(
            block,
            unhex("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")
        );
        open(&zero, &mut block).unwrap();
        assert_eq!(block, vec![0u8; 16]);
    }

    #[test]
    fn anything_but_the_exact_bytes_and_key_fails() {
        let secret = new_key();
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut sealed = plain.clone();
        seal(&secret, &mut sealed).unwrap();
        assert_eq!(sealed.len(), plain.len() + AESGCM_TAG_LEN);
        assert_ne!(&sealed[..plain.len()], &plain[..]);

        let mut ok = sealed.clone();
        open(&secret, &mut ok).unwrap();
        assert_eq!(ok, plain);

        let mut flipped = sealed.clone();
        flipped[5000] ^= 1;
        let mut bad_tag = sealed.clone();
        *bad_tag.last_mut().unwrap() ^= 0x80;
        let truncated = sealed[..sealed.len() - 1].to_vec();
        let cut_in_half = sealed[..sealed.len() / 2].to_vec();
        let mut extended = sealed.clone();
        extended.push(0);
        for (what, mut buf) in [
            ("flipped", flipped),
            ("tag", bad_tag),
            ("truncated", truncated),
            ("half", cut_in_half),
            ("extended", extended),
        ] {
            assert_eq!(
                open(&secret, &mut buf),
                Err(MediaError::Integrity),
                "{what}"
            );
        }
        let mut wrong_key = secret.clone();
        wrong_key.key[0] ^= 1;
        let mut wrong_iv = secret.clone();
        wrong_iv.iv[11] ^= 1;
        for other in [wrong_key, wrong_iv] {
            let mut buf = sealed.clone();
            assert_eq!(open(&other, &mut buf), Err(MediaError::Integrity));
        }
        for short in [0, 1, AESGCM_TAG_LEN - 1] {
            let mut buf = sealed[..short].to_vec();
            assert_eq!(open(&secret, &mut buf), Err(MediaError::TooShort));
        }
        // Only the tag: an empty file, if the tag is right.
        let mut only_tag = Vec::new();
        seal(&secret, &mut only_tag).unwrap();
        open(&secret, &mut only_tag).unwrap();
        assert!(only_tag.is_empty());
    }

    #[test]
    fn every_key_is_new() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a.key, b.key);
        assert_ne!(a.iv, b.iv);
        assert_ne!(*a.key, [0u8; AESGCM_KEY_LEN]);
    }

    #[test]
    fn files_round_trip_and_a_bad_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let secret = new_key();
        let mut seen = 0;
        let sealed = seal_file(&src, data.len() as u64, &secret, |p| seen = p.len()).unwrap();
        assert_eq!(seen, data.len());
        assert_eq!(sealed.len(), data.len() + AESGCM_TAG_LEN);
        assert!(
            sealed.capacity() <= data.len() + AESGCM_TAG_LEN,
            "never grown"
        );

        let up = dir.path().join("up");
        std::fs::write(&up, &sealed).unwrap();
        let plain = dir.path().join("plain");
        assert_eq!(open_file(&up, &plain, &secret), Ok(data.len() as u64));
        assert_eq!(std::fs::read(&plain).unwrap(), data);
        // The destination is never replaced.
        assert!(matches!(
            open_file(&up, &plain, &secret),
            Err(MediaError::Io(_))
        ));

        let mut damaged = sealed.clone();
        damaged[123] ^= 0xff;
        std::fs::write(&up, &damaged).unwrap();
        let never = dir.path().join("never");
        assert_eq!(open_file(&up, &never, &secret), Err(MediaError::Integrity));
        std::fs::write(&up, &sealed[..sealed.len() - 3]).unwrap();
        assert_eq!(open_file(&up, &never, &secret), Err(MediaError::Integrity));
        assert!(!never.exists());
        let text = MediaError::Integrity.to_string();
        assert!(text.contains("integrity"), "{text}");

        // The file is not the size it was chosen with.
        assert_eq!(
            seal_file(&src, data.len() as u64 - 1, &secret, |_| {}),
            Err(MediaError::Changed)
        );
        assert_eq!(
            seal_file(&src, data.len() as u64 + 1, &secret, |_| {}),
            Err(MediaError::Changed)
        );
        assert_eq!(
            seal_file(&src, MAX_PLAINTEXT + 1, &secret, |_| {}),
            Err(MediaError::TooLarge { max: MAX_PLAINTEXT })
        );
        let e = seal_file(&dir.path().join("missing"), 1, &secret, |_| {}).unwrap_err();
        assert!(matches!(e, MediaError::Io(_)));
        assert!(!e.to_string().contains("missing"), "{e}");
    }
}
