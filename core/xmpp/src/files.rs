//! Files shared in messages: out-of-band URLs (XEP-0066), file metadata (XEP-0446) and
//! stateless file sharing (XEP-0447), which carries the metadata and the file's sources.
//!
//! What we send is what Dino sends and what Conversations reads: the HTTPS URL as the body
//! (marked as fallback, XEP-0428), the same URL as `jabber:x:oob`, and a `<file-sharing/>`
//! with the metadata (name, size, media type, dimensions, SHA-256) and the URL as its
//! source.
//!
//! Everything here comes from the sender, who may be hostile. Parsing is lenient per field
//! (a bad size costs the size, not the file) and strict about what decides where bytes come
//! from and where they go: only absolute `https` URLs are taken (anything else and the
//! message has no file), names are reduced to a plain file name, sizes and dimensions are
//! bounded, and a hash must be valid base64 of its algorithm's length.
//!
//! The URL is the file's only access control and the name is user data: `Debug` shows
//! neither.
//!
//! Files in OMEMO conversations go by XEP-0454 (OMEMO Media Sharing) instead: the body of
//! the encrypted message is an `aesgcm://` URL, the upload's https URL with its scheme
//! replaced and the file's AES-256-GCM IV and key in the fragment. [`AesgcmUrl`] is that
//! format; the cipher is the client's. Such a URL is a key: `Debug` shows nothing of it.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use xmpp_parsers::minidom::Element;
use zeroize::Zeroizing;

use crate::elem::el;

pub const NS_OOB: &str = "jabber:x:oob";
pub const NS_FILE_METADATA: &str = "urn:xmpp:file:metadata:0";
pub const NS_SFS: &str = "urn:xmpp:sfs:0";
pub const NS_HASHES: &str = "urn:xmpp:hashes:2";
pub const NS_URL_DATA: &str = "http://jabber.org/protocol/url-data";

/// Larger sizes are not believed: no upload service hands out slots near this, and a
/// bound keeps arithmetic and storage (SQLite integers are signed) far from overflow.
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// Pixels per side; real photos and panoramas stay well below, and a UI sizing a
/// placeholder from a hostile value should not be asked for a billion pixels.
pub const MAX_DIMENSION: u32 = 100_000;
/// What most file systems accept as one name.
pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_DESC_CHARS: usize = 1_000;
const MAX_MEDIA_TYPE_LEN: usize = 255;
/// An extension longer than this is not kept when a long name is shortened.
const MAX_EXTENSION_BYTES: usize = 16;

/// Hash algorithms of the XEP-0300 registry whose output length we know. Others are
/// ignored: a hash we cannot check protects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    Sha1,
    Sha256,
    Sha512,
    Sha3_256,
    Sha3_512,
    Blake2b256,
    Blake2b512,
}

impl HashAlgo {
    const ALL: [HashAlgo; 7] = [
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
        HashAlgo::Sha3_256,
        HashAlgo::Sha3_512,
        HashAlgo::Blake2b256,
        HashAlgo::Blake2b512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha1 => "sha-1",
            HashAlgo::Sha256 => "sha-256",
            HashAlgo::Sha512 => "sha-512",
            HashAlgo::Sha3_256 => "sha3-256",
            HashAlgo::Sha3_512 => "sha3-512",
            HashAlgo::Blake2b256 => "blake2b-256",
            HashAlgo::Blake2b512 => "blake2b-512",
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 | HashAlgo::Sha3_256 | HashAlgo::Blake2b256 => 32,
            HashAlgo::Sha512 | HashAlgo::Sha3_512 | HashAlgo::Blake2b512 => 64,
        }
    }

    pub fn from_name(name: &str) -> Option<HashAlgo> {
        Self::ALL.into_iter().find(|a| a.name() == name.trim())
    }
}

/// A hash of the file's content (XEP-0300).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    pub algo: HashAlgo,
    pub value: Vec<u8>,
}

/// XEP-0446 file metadata; every field optional, each checked on its own.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// A plain file name (see [`safe_name`]).
    pub name: Option<String>,
    /// A MIME type, lower case. Advisory: the sender chose it.
    pub media_type: Option<String>,
    pub size: Option<u64>,
    /// Both or neither.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub desc: Option<String>,
    /// At most one per algorithm.
    pub hashes: Vec<FileHash>,
}

impl fmt::Debug for FileMeta {
    // The name and the description are user data; Debug output reaches logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algos: Vec<&str> = self.hashes.iter().map(|h| h.algo.name()).collect();
        f.debug_struct("FileMeta")
            .field("name", &self.name.as_ref().map(|_| "<redacted>"))
            .field("media_type", &self.media_type)
            .field("size", &self.size)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("desc", &self.desc.as_ref().map(|_| "<redacted>"))
            .field("hashes", &algos)
            .finish()
    }
}

impl FileMeta {
    pub fn hash(&self, algo: HashAlgo) -> Option<&[u8]> {
        self.hashes
            .iter()
            .find(|h| h.algo == algo)
            .map(|h| h.value.as_slice())
    }

    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.hash(HashAlgo::Sha256)?.try_into().ok()
    }
}

/// A file shared in a message: where to fetch it and what the sender says it is.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// An absolute `https` URL. Whoever holds it can fetch the file.
    pub url: String,
    /// The name is always set on a parsed file: the sender's, else the URL's last segment,
    /// else "file".
    pub meta: FileMeta,
}

impl fmt::Debug for SharedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFile")
            .field("url", &"<redacted>")
            .field("meta", &self.meta)
            .finish()
    }
}

/// The file a message shares, if it shares one we may fetch: the first `https` source of
/// its `<file-sharing/>` (with that element's metadata), else its first `https`
/// out-of-band URL. `None` when there is no such URL: a file at an `http`, `javascript:`
/// or otherwise unacceptable address is not offered at all.
pub fn parse(message: &Element) -> Option<SharedFile> {
    let sharings: Vec<&Element> = message
        .children()
        .filter(|c| c.is("file-sharing", NS_SFS))
        .collect();
    // XEP-0447 shares one file per element; with several, which one the body, the
    // out-of-band URL or the fallback refer to is anyone's guess.
    let sharing = match sharings.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let oob_url = message
        .children()
        .filter(|c| c.is("x", NS_OOB))
        .filter_map(|x| x.get_child("url", NS_OOB))
        .find_map(|u| checked_url(&u.text()));
    let (sfs_url, mut meta) = match sharing {
        Some(s) => (
            sfs_sources(s).into_iter().next(),
            s.get_child("file", NS_FILE_METADATA)
                .map(parse_meta)
                .unwrap_or_default(),
        ),
        None => (None, FileMeta::default()),
    };
    let url = sfs_url.or(oob_url)?;
    if meta.name.is_none() {
        meta.name = Some(name_from_url(&url).unwrap_or_else(|| "file".to_owned()));
    }
    Some(SharedFile { url, meta })
}

/// The `https` URLs among a `<file-sharing/>`'s sources, in order.
fn sfs_sources(sharing: &Element) -> Vec<String> {
    sharing
        .children()
        .filter(|c| c.is("sources", NS_SFS))
        .flat_map(|s| s.children().filter(|c| c.is("url-data", NS_URL_DATA)))
        .filter_map(|u| u.attr("target").and_then(checked_url))
        .collect()
}

fn checked_url(raw: &str) -> Option<String> {
    match crate::upload::https_url(raw) {
        Ok(url) => Some(url),
        Err(_) => {
            tracing::debug!("ignoring a shared file whose URL is not an acceptable https URL");
            None
        }
    }
}

/// Reads a `<file xmlns='urn:xmpp:file:metadata:0'/>`. Fields that fail their check are
/// left out; the rest stands.
pub fn parse_meta(file: &Element) -> FileMeta {
    let text = |name: &str| {
        file.children()
            .find(|c| c.name() == name && c.ns() == NS_FILE_METADATA)
            .map(|c| c.text())
    };
    let dimension = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=MAX_DIMENSION).contains(d))
    };
    let (width, height) = match (text("width"), text("height")) {
        (Some(w), Some(h)) => (dimension(&w), dimension(&h)),
        // XEP-0446 before 0.2 had "WxH" in one element.
        _ => match text("dimensions")
            .as_deref()
            .and_then(|d| d.split_once('x'))
        {
            Some((w, h)) => (dimension(w), dimension(h)),
            None => (None, None),
        },
    };
    let (width, height) = match (width, height) {
        (Some(w), Some(h)) => (Some(w), Some(h)),
        _ => (None, None),
    };
    FileMeta {
        name: text("name").as_deref().and_then(safe_name),
        // Dino sent "media_type" for a while and still sends both.
        media_type: text("media-type")
            .or_else(|| text("media_type"))
            .as_deref()
            .and_then(media_type),
        size: text("size")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|s| *s <= MAX_FILE_SIZE),
        width,
        height,
        desc: text("desc").and_then(|d| clean_desc(&d)),
        hashes: parse_hashes(file),
    }
}

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The hashes we can check, one per algorithm. Two different values for one algorithm
/// leave that algorithm out: the sender cannot mean both.
fn parse_hashes(file: &Element) -> Vec<FileHash> {
    let mut out: Vec<FileHash> = Vec::new();
    let mut conflicting: Vec<HashAlgo> = Vec::new();
    for h in file.children().filter(|c| c.is("hash", NS_HASHES)) {
        let Some(algo) = h.attr("algo").and_then(HashAlgo::from_name) else {
            continue;
        };
        let text = h.text();
        let Ok(value) = B64.decode(text.trim()) else {
            tracing::debug!(
                algo = algo.name(),
                "ignoring a file hash that is not base64"
            );
            continue;
        };
        if value.len() != algo.output_len() {
            tracing::debug!(
                algo = algo.name(),
                "ignoring a file hash of the wrong length"
            );
            continue;
        }
        match out.iter().find(|x| x.algo == algo) {
            Some(x) if x.value != value => conflicting.push(algo),
            Some(_) => {}
            None => out.push(FileHash { algo, value }),
        }
    }
    out.retain(|h| !conflicting.contains(&h.algo));
    out
}

/// A MIME type as `type/subtype` with optional parameters, lower case; `None` if it is not
/// one.
pub fn media_type(raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() || t.len() > MAX_MEDIA_TYPE_LEN || !t.is_ascii() {
        return None;
    }
    if t.chars().any(|c| c.is_ascii_control()) {
        return None;
    }
    let essence = t.split(';').next().unwrap_or_default().trim();
    let (ty, sub) = essence.split_once('/')?;
    // RFC 6838 restricted-name characters.
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    if !token(ty) || !token(sub) {
        return None;
    }
    Some(t.to_ascii_lowercase())
}

/// Characters that change how the rest of a name is displayed: with them, "gpj.exe" can
/// look like "exe.jpg".
fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `raw` reduced to a name that is safe to show and to create in a directory: its last
/// path component (either separator), without control, bidirectional or invisible
/// characters, with characters that some file systems refuse replaced by `_`, without
/// leading dots (no hidden files, no `..`) or trailing dots and spaces, and at most 255
/// bytes (keeping a short extension). `None` when nothing is left.
pub fn safe_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_or_invisible(*c))
        .map(|c| {
            if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' '])
        .trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(shorten(trimmed))
}

fn shorten(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() && e.len() < MAX_EXTENSION_BYTES => (s, Some(e)),
        _ => (name, None),
    };
    let room = MAX_NAME_BYTES - ext.map_or(0, |e| e.len() + 1);
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let stem = stem[..cut].trim_end();
    match ext {
        Some(e) => format!("{stem}.{e}"),
        None => stem.to_owned(),
    }
}

/// The last path segment of a URL, percent-decoded, as a [`safe_name`].
fn name_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    let (_, path) = after_scheme.split_once('/')?;
    let last = path.rsplit('/').next()?;
    safe_name(&percent_decode(last))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn clean_desc(raw: &str) -> Option<String> {
    let d: String = raw
        .trim()
        .chars()
        .filter(|c| (!c.is_control() || *c == '\n') && !is_bidi_or_invisible(*c))
        .take(MAX_DESC_CHARS)
        .collect();
    let d = d.trim();
    (!d.is_empty()).then(|| d.to_owned())
}

impl SharedFile {
    /// The payloads announcing this file: `<x xmlns='jabber:x:oob'/>` and
    /// `<file-sharing/>`. The body (the URL, for clients with neither) and its fallback
    /// marker are the caller's: see `rich::Extras`.
    pub(crate) fn elements(&self) -> Vec<Element> {
        let oob = el("x", NS_OOB)
            .child(el("url", NS_OOB).text(self.url.clone()))
            .build();
        let m = &self.meta;
        let mut children: Vec<Element> = Vec::new();
        let mut text = |name: &str, value: String| {
            children.push(el(name, NS_FILE_METADATA).text(value).build());
        };
        if let Some(t) = &m.media_type {
            text("media-type", t.clone());
        }
        if let Some(n) = &m.name {
            text("name", n.clone());
        }
        if let Some(s) = m.size {
            text("size", s.to_string());
        }
        if let (Some(w), Some(h)) = (m.width, m.height) {
            text("width", w.to_string());
            text("height", h.to_string());
        }
        if let Some(d) = &m.desc {
            text("desc", d.clone());
        }
        for h in &m.hashes {
            children.push(
                el("hash", NS_HASHES)
                    .attr("algo", h.algo.name())
                    .text(base64::engine::general_purpose::STANDARD.encode(&h.value))
                    .build(),
            );
        }
        let file = children
            .into_iter()
            .fold(el("file", NS_FILE_METADATA), |f, c| f.child(c));
        let sharing = el("file-sharing", NS_SFS)
            .child(file)
            .child(
                el("sources", NS_SFS).child(el("url-data", NS_URL_DATA).attr("target", &self.url)),
            )
            .build();
        vec![oob, sharing]
    }
}

// ---------------------------------------------------------------------------------------------
// XEP-0454: OMEMO Media Sharing

/// The URL scheme of XEP-0454: never fetched as such, never a link (§6).
pub const AESGCM_SCHEME: &str = "aesgcm";
/// XEP-0454 §3: AES-256, so a 32-byte key…
pub const AESGCM_KEY_LEN: usize = 32;
/// …and a 12-byte IV (24 hex digits in the URL).
pub const AESGCM_IV_LEN: usize = 12;
/// The GCM authentication tag, appended to the ciphertext (§3): what is uploaded is this
/// much longer than the file (§7).
pub const AESGCM_TAG_LEN: usize = 16;
/// The URL fragment: the IV then the key, in hex.
const AESGCM_FRAGMENT_LEN: usize = 2 * (AESGCM_IV_LEN + AESGCM_KEY_LEN);

/// The IV and key of one encrypted file. A key is made for one upload and never used for
/// another: GCM with a repeated key and IV gives both plaintexts away.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaKey {
    pub iv: [u8; AESGCM_IV_LEN],
    pub key: Zeroizing<[u8; AESGCM_KEY_LEN]>,
}

impl fmt::Debug for MediaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MediaKey(<redacted>)")
    }
}

impl MediaKey {
    /// The fragment's 88 hex digits (either case), IV first.
    fn from_hex(hex: &str) -> Option<MediaKey> {
        let digits = hex.as_bytes();
        if digits.len() != AESGCM_FRAGMENT_LEN || !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut iv = [0u8; AESGCM_IV_LEN];
        let mut key = Zeroizing::new([0u8; AESGCM_KEY_LEN]);
        let (iv_hex, key_hex) = digits.split_at(2 * AESGCM_IV_LEN);
        for (out, pair) in iv.iter_mut().zip(iv_hex.chunks_exact(2)) {
            *out = hex_byte(pair)?;
        }
        for (out, pair) in key.iter_mut().zip(key_hex.chunks_exact(2)) {
            *out = hex_byte(pair)?;
        }
        Some(MediaKey { iv, key })
    }

    fn push_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in self.iv.iter().chain(self.key.iter()) {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    match pair {
        [h, l] => Some(u8::try_from(digit(*h)? * 16 + digit(*l)?).ok()?),
        _ => None,
    }
}

/// An `aesgcm://` URL (XEP-0454 §3): where the encrypted file is, and its key.
#[derive(Clone, PartialEq, Eq)]
pub struct AesgcmUrl {
    https: String,
    secret: MediaKey,
}

impl fmt::Debug for AesgcmUrl {
    // The URL is a capability and the fragment a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesgcmUrl(<redacted>)")
    }
}

impl AesgcmUrl {
    /// The URL for a file encrypted with `secret` and uploaded to `https` (the slot's GET
    /// URL). `None` unless that is an acceptable https URL: §3 forbids converting anything
    /// else, and a fragment of its own would be taken for the key.
    pub fn new(https: &str, secret: MediaKey) -> Option<AesgcmUrl> {
        let https = crate::upload::https_url(https).ok()?;
        if https.contains('#') {
            return None;
        }
        Some(AesgcmUrl { https, secret })
    }

    /// One `aesgcm://` URL and nothing else: the scheme (any case), an address that is an
    /// acceptable https URL once the scheme is replaced, and a fragment of exactly the IV
    /// and key in hex. Anything else is not one (16-byte IVs of early clients included:
    /// the XEP fixes 12).
    pub fn parse(raw: &str) -> Option<AesgcmUrl> {
        let (scheme, rest) = raw.split_once("://")?;
        if !scheme.eq_ignore_ascii_case(AESGCM_SCHEME) {
            return None;
        }
        let (location, fragment) = rest.split_once('#')?;
        let secret = MediaKey::from_hex(fragment)?;
        let https = crate::upload::https_url(&format!("https://{location}")).ok()?;
        // `https_url` forgives surrounding whitespace; the URL as a whole must not have any.
        if https.len() != "https://".len() + location.len() {
            return None;
        }
        Some(AesgcmUrl { https, secret })
    }

    /// The file a message body shares, if the body is one by XEP-0454 §5's strict rule:
    /// the URL alone, or the URL and a `data:` URI (a thumbnail, which we do not show) on
    /// the next line. Whitespace around the whole body is forgiven, nothing else: a URL
    /// within text is text.
    pub fn from_body(body: &str) -> Option<AesgcmUrl> {
        let body = body.trim_matches(|c: char| c.is_ascii_whitespace());
        let (url, thumbnail) = match body.split_once('\n') {
            Some((url, rest)) => (url, Some(rest)),
            None => (body, None),
        };
        if thumbnail.is_some_and(|t| !is_data_uri(t)) {
            return None;
        }
        AesgcmUrl::parse(url)
    }

    /// Where the encrypted file is fetched from.
    pub fn https(&self) -> &str {
        &self.https
    }

    pub fn secret(&self) -> &MediaKey {
        &self.secret
    }

    /// The file's name, from the last segment of the URL's path (percent-decoded, made a
    /// [`safe_name`]): the only name XEP-0454 conveys.
    pub fn name(&self) -> Option<String> {
        name_from_url(&self.https)
    }

    /// The URL as sent: the https URL with its scheme replaced, `#`, the IV and the key.
    pub fn to_url(&self) -> Zeroizing<String> {
        // `https_url` checked the scheme, in whatever case it came.
        let rest = self.https.get("https".len()..).unwrap_or_default();
        let mut out = Zeroizing::new(String::with_capacity(
            AESGCM_SCHEME.len() + rest.len() + 1 + AESGCM_FRAGMENT_LEN,
        ));
        out.push_str(AESGCM_SCHEME);
        out.push_str(rest);
        out.push('#');
        self.secret.push_hex(&mut out);
        out
    }
}

/// A `data:` URI in one piece (RFC 2397: a comma before the data, no whitespace).
fn is_data_uri(s: &str) -> bool {
    s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:"))
        && s.contains(',')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://upload.example.org/abc/summit%20photo.jpg";

    fn msg(children: &str) -> Element {
        format!(
            "<message xmlns='jabber:client' type='chat' from='a@b/c' id='m'>{children}</message>"
        )
        .parse()
        .unwrap()
    }

    fn oob(url: &str) -> String {
        format!("<x xmlns='jabber:x:oob'><url>{url}</url></x>")
    }

    fn sfs(file: &str, target: &str) -> String {
        format!(
            "<file-sharing xmlns='urn:xmpp:sfs:0'><file xmlns='urn:xmpp:file:metadata:0'>{file}</file>\
             <sources><url-data xmlns='http://jabber.org/protocol/url-data' target='{target}'/></sources>\
             </file-sharing>"
        )
    }

    fn sha256_b64(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn conversations_style_oob_names_the_file_after_the_url() {
        let f = parse(&msg(&format!("<body>{URL}</body>{}", oob(URL)))).unwrap();
        assert_eq!(f.url, URL);
        assert_eq!(f.meta.name.as_deref(), Some("summit photo.jpg"));
        assert_eq!(f.meta.size, None);
        assert!(!format!("{f:?}").contains("summit"), "Debug redacts: {f:?}");
    }

    #[test]
    fn dino_style_sharing_with_metadata() {
        let file = format!(
            "<media_type>image/png</media_type><media-type>Image/JPEG</media-type>\
             <name>summit.jpg</name><size>3032449</size><width>4096</width><height>2160</height>\
             <desc>Photo from the summit.</desc>\
             <hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>{}</hash>\
             <hash xmlns='urn:xmpp:hashes:2' algo='id-blake2b256'>2AfMGH8O7UNPTvUVAM9aK13mpCY=</hash>",
            sha256_b64(7)
        );
        let other = "https://other.example.org/x.jpg";
        let f = parse(&msg(&format!(
            "<body>{URL}</body>{}{}",
            sfs(&file, URL),
            oob(other)
        )))
        .unwrap();
        assert_eq!(f.url, URL, "the sharing's own source comes first");
        let m = &f.meta;
        assert_eq!(m.name.as_deref(), Some("summit.jpg"));
        assert_eq!(m.media_type.as_deref(), Some("image/jpeg"));
        assert_eq!(m.size, Some(3032449));
        assert_eq!((m.width, m.height), (Some(4096), Some(2160)));
        assert_eq!(m.desc.as_deref(), Some("Photo from the summit."));
        assert_eq!(m.sha256(), Some([7; 32]));
        assert_eq!(m.hashes.len(), 1, "unknown algorithms are ignored");
    }

    #[test]
    fn legacy_dimensions_are_read() {
        let f = parse(&msg(&sfs("<dimensions>640x480</dimensions>", URL))).unwrap();
        assert_eq!((f.meta.width, f.meta.height), (Some(640), Some(480)));
        let f = parse(&msg(&sfs("<width>640</width><height>0</height>", URL))).unwrap();
        assert_eq!(
            (f.meta.width, f.meta.height),
            (None, None),
            "both or neither"
        );
        let f = parse(&msg(&sfs(
            "<width>640</width><height>9999999</height>",
            URL,
        )))
        .unwrap();
        assert_eq!((f.meta.width, f.meta.height), (None, None));
    }

    #[test]
    fn only_https_urls_make_a_file() {
        for bad in [
            "http://upload.example.org/a.jpg",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://user:pw@example.org/a.jpg",
            "https:///a.jpg",
            "data:text/html,hi",
            "  ",
        ] {
            assert_eq!(parse(&msg(&oob(bad))), None, "{bad}");
            assert_eq!(parse(&msg(&sfs("<name>a.jpg</name>", bad))), None, "{bad}");
        }
        // An unusable source does not stop a usable out-of-band URL of the same message.
        let f = parse(&msg(&format!(
            "{}{}",
            sfs("<name>a.jpg</name>", "http://x.org/a.jpg"),
            oob(URL)
        )))
        .unwrap();
        assert_eq!(f.url, URL);
        assert_eq!(f.meta.name.as_deref(), Some("a.jpg"));
        // Two sharings: which is meant is unknown; the out-of-band URL alone stands.
        let two = format!(
            "{}{}",
            sfs("<name>a</name>", URL),
            sfs("<name>b</name>", URL)
        );
        assert_eq!(parse(&msg(&two)), None);
        let f = parse(&msg(&format!("{two}{}", oob(URL)))).unwrap();
        assert_eq!(f.meta.name.as_deref(), Some("summit photo.jpg"));
    }

    #[test]
    fn sizes_are_bounded() {
        let size = |s: &str| {
            parse(&msg(&sfs(&format!("<size>{s}</size>"), URL)))
                .unwrap()
                .meta
                .size
        };
        assert_eq!(size("12"), Some(12));
        assert_eq!(size(" 0 "), Some(0));
        assert_eq!(size("-1"), None);
        assert_eq!(size("99999999999999999999999"), None);
        assert_eq!(size(&(MAX_FILE_SIZE + 1).to_string()), None);
        assert_eq!(size("1e9"), None);
    }

    #[test]
    fn names_become_plain_file_names() {
        for (raw, want) in [
            ("../../etc/passwd", Some("passwd")),
            ("..\\..\\windows\\system32", Some("system32")),
            ("/", None),
            ("..", None),
            ("...", None),
            (".bashrc", Some("bashrc")),
            ("  report.pdf  ", Some("report.pdf")),
            ("a\u{0}b\nc.txt", Some("abc.txt")),
            ("invoice\u{202E}gpj.exe", Some("invoicegpj.exe")),
            ("what?.txt", Some("what_.txt")),
            ("trailing. . ", Some("trailing")),
            ("C:evil", Some("C_evil")),
        ] {
            assert_eq!(safe_name(raw).as_deref(), want, "{raw:?}");
        }
        let long = format!("{}.jpeg", "é".repeat(200));
        let short = safe_name(&long).unwrap();
        assert!(
            short.len() <= MAX_NAME_BYTES && short.ends_with("é.jpeg"),
            "{short}"
        );
        let f = parse(&msg(&sfs(
            "<name>../../../.ssh/authorized_keys</name>",
            URL,
        )))
        .unwrap();
        assert_eq!(f.meta.name.as_deref(), Some("authorized_keys"));
        // A name that sanitizes to nothing falls back to the URL's.
        let f = parse(&msg(&sfs("<name>../</name>", URL))).unwrap();
        assert_eq!(f.meta.name.as_deref(), Some("summit photo.jpg"));
        let f = parse(&msg(&oob("https://example.org/"))).unwrap();
        assert_eq!(f.meta.name.as_deref(), Some("file"));
        let f = parse(&msg(&oob("https://example.org/d/%2e%2e%2fx%00y.png?q=1"))).unwrap();
        assert_eq!(f.meta.name.as_deref(), Some("xy.png"));
    }

    #[test]
    fn hashes_must_be_base64_of_the_right_length() {
        let hash = |algo: &str, v: &str| {
            format!("<hash xmlns='urn:xmpp:hashes:2' algo='{algo}'>{v}</hash>")
        };
        let meta = |file: String| parse(&msg(&sfs(&file, URL))).unwrap().meta;
        assert_eq!(meta(hash("sha-256", "not base64!")).hashes, vec![]);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        assert_eq!(meta(hash("sha-256", &short)).hashes, vec![]);
        let long = base64::engine::general_purpose::STANDARD.encode([1u8; 64]);
        assert_eq!(meta(hash("sha-256", &long)).sha256(), None);
        assert_eq!(meta(hash("sha-512", &long)).hashes.len(), 1);
        let unpadded = sha256_b64(3).trim_end_matches('=').to_owned();
        assert_eq!(meta(hash("sha-256", &unpadded)).sha256(), Some([3; 32]));
        // Two different values for one algorithm: neither.
        let two = format!(
            "{}{}",
            hash("sha-256", &sha256_b64(1)),
            hash("sha-256", &sha256_b64(2))
        );
        assert_eq!(meta(two).sha256(), None);
        let same = format!(
            "{}{}",
            hash("sha-256", &sha256_b64(1)),
            hash("sha-256", &sha256_b64(1))
        );
        assert_eq!(meta(same).hashes.len(), 1);
    }

    #[test]
    fn media_types_and_descriptions_are_checked() {
        assert_eq!(media_type("image/PNG").as_deref(), Some("image/png"));
        assert_eq!(
            media_type("text/plain; charset=utf-8").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        for bad in [
            "",
            "image",
            "/png",
            "image/",
            "ima ge/png",
            "image/p\u{1}ng",
            "bild/png\u{e9}",
        ] {
            assert_eq!(media_type(bad), None, "{bad:?}");
        }
        let long = "x".repeat(MAX_DESC_CHARS + 50);
        let f = parse(&msg(&sfs(&format!("<desc>{long}</desc>"), URL))).unwrap();
        assert_eq!(f.meta.desc.map(|d| d.chars().count()), Some(MAX_DESC_CHARS));
    }

    #[test]
    fn what_we_send_parses_back() {
        let sent = SharedFile {
            url: URL.to_owned(),
            meta: FileMeta {
                name: Some("summit photo.jpg".into()),
                media_type: Some("image/jpeg".into()),
                size: Some(3_000_000),
                width: Some(800),
                height: Some(600),
                desc: None,
                hashes: vec![FileHash {
                    algo: HashAlgo::Sha256,
                    value: vec![9; 32],
                }],
            },
        };
        let mut m = msg(&format!("<body>{URL}</body>"));
        for e in sent.elements() {
            m.append_child(e);
        }
        assert_eq!(parse(&m), Some(sent));
    }

    #[test]
    fn a_file_survives_the_outbox_and_its_body_is_fallback() {
        use crate::rich::{self, Extras, Reply};
        let file = parse(&msg(&oob(URL))).unwrap();
        let quote = rich::reply_quote("earlier");
        let x = Extras {
            replace: None,
            reply: Some((
                Reply {
                    to: None,
                    id: "o".into(),
                },
                quote,
            )),
            file: Some(Box::new(file.clone())),
        };
        assert_eq!(Extras::from_xml(&x.to_xml()), Some(x.clone()));
        let wire = x.wire_body(URL);
        let m = x.apply(msg(&format!("<body>{wire}</body>")));
        let r = rich::parse(&m);
        assert_eq!(r.file, Some(file));
        assert_eq!(r.strip_fallback(&wire, &[rich::NS_REPLY, NS_SFS]), "");
        assert_eq!(r.strip_fallback(&wire, &[rich::NS_REPLY]), URL);
    }

    /// XEP-0454 §3's example, both ways.
    const XEP_GET: &str =
        "https://download.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg";
    const XEP_IV: &str = "8c3d050e9386ec173861778f";
    const XEP_KEY: &str = "68e9af38a97aaf82faa4063b4d0878a61261534410c8a84331eaac851759f587";
    const XEP_URL: &str = "aesgcm://download.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg#8c3d050e9386ec173861778f68e9af38a97aaf82faa4063b4d0878a61261534410c8a84331eaac851759f587";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn xep_key() -> MediaKey {
        MediaKey {
            iv: unhex(XEP_IV).try_into().unwrap(),
            key: Zeroizing::new(unhex(XEP_KEY).try_into().unwrap()),
        }
    }

    #[test]
    fn the_xep_0454_example_formats_and_parses() {
        let made = AesgcmUrl::new(XEP_GET, xep_key()).unwrap();
        assert_eq!(made.to_url().as_str(), XEP_URL);
        let parsed = AesgcmUrl::parse(XEP_URL).unwrap();
        assert_eq!(parsed, made);
        assert_eq!(parsed.https(), XEP_GET);
        assert_eq!(parsed.secret().iv.to_vec(), unhex(XEP_IV));
        assert_eq!(parsed.secret().key.to_vec(), unhex(XEP_KEY));
        assert_eq!(parsed.name().as_deref(), Some("très cool.jpg"));
        // The scheme in any case, the hex in either.
        let shouting = XEP_URL.replacen("aesgcm", "AESGCM", 1).to_uppercase();
        let parsed = AesgcmUrl::parse(&shouting).unwrap();
        assert_eq!(parsed.secret(), &xep_key());
        // Nothing of the key or the address in Debug.
        let shown = format!("{parsed:?} {:?}", parsed.secret());
        assert!(
            !shown.contains("8c3d") && !shown.contains("montague"),
            "{shown}"
        );
    }

    #[test]
    fn only_well_formed_aesgcm_urls_parse() {
        let fragment = format!("{XEP_IV}{XEP_KEY}");
        let bad = [
            // Not aesgcm, or not a URL.
            XEP_GET.to_owned(),
            format!("https://download.montague.tld/a.jpg#{fragment}"),
            format!("aesgcm:/download.montague.tld/a.jpg#{fragment}"),
            format!("aesgcmx://download.montague.tld/a.jpg#{fragment}"),
            // The fragment: missing, short, long, a 16-byte IV (early clients), not hex.
            "aesgcm://download.montague.tld/a.jpg".to_owned(),
            format!("aesgcm://download.montague.tld/a.jpg#{}", &fragment[1..]),
            format!("aesgcm://download.montague.tld/a.jpg#{fragment}0"),
            format!("aesgcm://download.montague.tld/a.jpg#{XEP_IV}00000000{XEP_KEY}"),
            format!(
                "aesgcm://download.montague.tld/a.jpg#{}",
                fragment.replacen('8', "g", 1)
            ),
            format!("aesgcm://download.montague.tld/a.jpg#{fragment}#{fragment}"),
            // The address: what https_url refuses.
            format!("aesgcm://user:pw@download.montague.tld/a.jpg#{fragment}"),
            format!("aesgcm:///a.jpg#{fragment}"),
            format!("aesgcm://download.montague.tld/a b.jpg#{fragment}"),
            format!("aesgcm://download.montague.tld/a.jpg #{fragment}"),
            format!(" aesgcm://download.montague.tld/a.jpg#{fragment}"),
            format!("aesgcm://download.montague.tld/a.jpg#{fragment} "),
            format!("aesgcm://download.montague.tld\\@evil/a.jpg#{fragment}"),
        ];
        for raw in &bad {
            assert_eq!(AesgcmUrl::parse(raw), None, "{raw}");
        }
        // Only https URLs become aesgcm ones (§3), and one with a fragment cannot.
        for get in [
            "http://download.montague.tld/a.jpg",
            "ftp://download.montague.tld/a.jpg",
            "https://download.montague.tld/a.jpg#x",
            "https://u@download.montague.tld/a.jpg",
            "",
        ] {
            assert_eq!(AesgcmUrl::new(get, xep_key()), None, "{get}");
        }
        let no_name = AesgcmUrl::parse(&format!("aesgcm://h.example#{fragment}")).unwrap();
        assert_eq!(no_name.name(), None);
        let dotted =
            AesgcmUrl::parse(&format!("aesgcm://h.example/x/..%2F.ssh%2Fkeys#{fragment}")).unwrap();
        assert_eq!(dotted.name().as_deref(), Some("keys"));
    }

    #[test]
    fn a_body_shares_a_file_only_when_it_is_the_url() {
        let thumb = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEBLAEsAAD";
        for body in [
            XEP_URL.to_owned(),
            format!("  {XEP_URL}\n"),
            format!("{XEP_URL}\n{thumb}"),
            format!("{XEP_URL}\ndata:image/jpeg,/9j/4AAQ"),
        ] {
            let got = AesgcmUrl::from_body(&body);
            assert_eq!(
                got.map(|u| u.https().to_owned()).as_deref(),
                Some(XEP_GET),
                "{body:?}"
            );
        }
        for body in [
            format!("look: {XEP_URL}"),
            format!("{XEP_URL} nice"),
            format!("{XEP_URL}\n{XEP_URL}"),
            format!("{XEP_URL}\nhello"),
            format!("{XEP_URL}\n\n{thumb}"),
            format!("{XEP_URL}\ndata:image/jpeg;base64 ,AAAA"),
            format!("{XEP_URL}\ndata:image/jpeg"),
            format!("{XEP_URL}\r\n{thumb}"),
            String::new(),
        ] {
            assert_eq!(AesgcmUrl::from_body(&body), None, "{body:?}");
        }
    }
}
