//! Profiles and safety: avatars (XEP-0084, and the vCard fallback of XEP-0153), nicknames
//! (XEP-0172), vCard4 (XEP-0292), blocking (XEP-0191) and the reports a block may carry
//! (XEP-0377).
//!
//! Parsers take the payload element (or its XML) and return plain data; the `Session`
//! methods below do one request each, except where the protocol itself is read-then-write
//! (an avatar's data goes before its metadata; a vcard-temp photo replaces one field of a
//! vCard that must be read first). Everything here is profile data of other people, sent
//! through servers we do not control, so:
//! - each element is parsed on its own: a malformed `<info/>`, blocklist `<item/>` or vCard
//!   property is left out, never the cause of a panic or of a half-applied state;
//! - counts and sizes are bounded ([`MAX_AVATAR_BYTES`], [`MAX_AVATAR_INFOS`],
//!   [`MAX_VCARD_PROPERTIES`], [`MAX_BLOCKLIST_ITEMS`], …), and a flood is refused whole;
//! - avatar bytes must hash to the id they were announced under (the id is what caches are
//!   keyed on, so a mismatch would let one contact's picture be shown as another's);
//! - text meant for display (nicknames, vCard values) loses control and bidi-override
//!   characters, which would otherwise let a name rewrite the text around it;
//! - blocklist pushes are taken from our own account only.
//!
//! Error messages name elements and limits, never content from the input: they are safe
//! to log.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha1::{Digest, Sha1};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::elem::el;
use crate::error::RequestError;
use crate::jid::BareJid;
use crate::pep::NodeConfig;
use crate::session::Session;

/// XEP-0084 data node and namespace.
pub const NS_AVATAR_DATA: &str = "urn:xmpp:avatar:data";
/// XEP-0084 metadata node and namespace.
pub const NS_AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0054 vCard (the "vcard-temp" that XEP-0153 keeps photos in).
pub const NS_VCARD_TEMP: &str = "vcard-temp";
/// XEP-0153 presence element.
pub const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";
/// XEP-0172 node and namespace.
pub const NS_NICK: &str = "http://jabber.org/protocol/nick";
/// XEP-0292 PEP node.
pub const NODE_VCARD4: &str = "urn:xmpp:vcard4";
/// RFC 6351 vCard XML namespace.
pub const NS_VCARD4: &str = "urn:ietf:params:xml:ns:vcard-4.0";
/// XEP-0191.
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191 application error condition.
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0377 (version 0.4.1): disco feature and namespace of `<report/>`.
pub const NS_REPORTING: &str = "urn:xmpp:reporting:1";

const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_SID: &str = "urn:xmpp:sid:0";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// Largest avatar (decoded bytes) we fetch, accept or publish: 1 MiB. Avatars are shown
/// at icon size; clients scale them to a few hundred pixels, tens of kilobytes (XEP-0153
/// even asks for 8 KB), and the usual 256 KiB stanza limit of servers (Prosody's
/// `c2s_stanza_size_limit`, ejabberd's `max_stanza_size` here) lets about 190 KiB through
/// a publish anyway. A hostile server is not bound by any of that, so this is what one
/// fetch may cost us: 1.4 MB of base64 and 1 MiB decoded, which even the iOS notification
/// extension can afford. Image decoders must still bound pixel dimensions: a small PNG
/// can declare a huge canvas.
pub const MAX_AVATAR_BYTES: usize = 1024 * 1024;
/// `<info/>` elements accepted in one metadata item: the XEP's own example has four
/// formats of one picture.
pub const MAX_AVATAR_INFOS: usize = 16;
/// Longest media type kept (RFC 6838 allows 127 characters per part).
pub const MAX_MEDIA_TYPE_BYTES: usize = 255;
/// Longest avatar URL kept.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest nickname shown, in Unicode code points; longer ones are cut.
pub const MAX_NICK_CHARS: usize = 64;
/// A `<nick/>` longer than this (bytes, before cleaning) is dropped rather than cut: it is
/// not a nickname.
pub const MAX_NICK_INPUT_BYTES: usize = 1024;
/// Properties accepted in one vCard4. Real profiles have a few dozen; a vCard with more
/// is refused whole.
pub const MAX_VCARD_PROPERTIES: usize = 256;
/// Longest vCard4 value we interpret (bytes). A longer one is not shown, but kept for
/// republishing like an unknown property.
pub const MAX_VCARD_TEXT_BYTES: usize = 8192;
/// Entries accepted in a blocklist or one push. Spam waves make long blocklists; ten
/// thousand leaves room while bounding memory.
pub const MAX_BLOCKLIST_ITEMS: usize = 10_000;
/// Longest report text we send.
pub const MAX_REPORT_TEXT_BYTES: usize = 4096;
/// Stanza ids one report may name.
pub const MAX_REPORTED_STANZAS: usize = 100;
/// Stanza size assumed when the server announces none (XEP-0478): 64 KiB, the smallest
/// c2s limit in common use (ejabberd's c2s default of old). Servers close the stream on an
/// oversized stanza (ejabberd 24.12 does, without announcing its limit), and stream
/// management would resend the stanza after resuming, closing the stream again.
pub const ASSUMED_STANZA_LIMIT: u32 = 64 * 1024;
/// What a request adds around its payload (iq, pubsub, publish-options form).
const REQUEST_OVERHEAD_BYTES: usize = 2048;
/// PEP item id of singleton nodes (XEP-0060 §12.20), so a republish replaces.
const CURRENT: &str = "current";

/// Why profile data or a request about it was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProfileError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("not well-formed XML")]
    NotXml,
    #[error("expected <{name} xmlns='{ns}'>")]
    WrongElement {
        name: &'static str,
        ns: &'static str,
    },
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("<{0}> is not valid base64")]
    BadBase64(&'static str),
    #[error("{what} of about {got} bytes exceeds the limit of {limit}")]
    TooLarge {
        what: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("more than {limit} <{what}> elements")]
    TooMany { what: &'static str, limit: usize },
    /// The bytes do not hash to the id (or advertised hash) they came under.
    #[error("the data does not hash to its announced SHA-1")]
    HashMismatch,
    /// A blocking push from anyone but our own account.
    #[error("a blocklist push not from our own account")]
    ForeignPush,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Bad input from the app.
    #[error("invalid argument: {0}")]
    BadArgument(&'static str),
}

type Result<T> = std::result::Result<T, ProfileError>;

/// Who may read a node we publish to (XEP-0060 access models).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, including people who are not contacts (e.g. before accepting a request).
    Open,
    /// Those subscribed to our presence.
    Presence,
}

impl Access {
    fn node_config(self) -> NodeConfig {
        NodeConfig {
            access_model: Some(
                match self {
                    Access::Open => "open",
                    Access::Presence => "presence",
                }
                .into(),
            ),
            ..NodeConfig::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn parse_xml(xml: &str) -> Result<Element> {
    xml.parse().map_err(|_| ProfileError::NotXml)
}

fn expect(root: &Element, name: &'static str, ns: &'static str) -> Result<()> {
    if root.is(name, ns) {
        Ok(())
    } else {
        Err(ProfileError::WrongElement { name, ns })
    }
}

fn base64_engine() -> GeneralPurpose {
    GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// Decodes base64 that may be wrapped (XEP-0084: line feeds "MUST be accepted"; XEP-0153:
/// whitespace "MUST be ignored"), refusing anything that would decode to over `limit` bytes
/// before decoding it.
fn decode_base64(text: &str, what: &'static str, limit: usize) -> Result<Vec<u8>> {
    let significant = text.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    if significant > limit.div_ceil(3) * 4 {
        return Err(ProfileError::TooLarge {
            what,
            got: significant / 4 * 3,
            limit,
        });
    }
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data = base64_engine()
        .decode(compact)
        .map_err(|_| ProfileError::BadBase64(what))?;
    if data.len() > limit {
        return Err(ProfileError::TooLarge {
            what,
            got: data.len(),
            limit,
        });
    }
    Ok(data)
}

/// Lowercase hex SHA-1 of `data`, the form avatar ids and XEP-0153 hashes take.
pub fn sha1_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha1::digest(data);
    let mut out = String::with_capacity(40);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A media type as XEP-0084 allows it ("image" or "video"), short and printable.
fn valid_media_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_MEDIA_TYPE_BYTES
        && (t.starts_with("image/") || t.starts_with("video/"))
        && t.bytes().all(|b| b.is_ascii_graphic())
}

/// Characters that reorder or hide the text around them: bidi embeddings, overrides and
/// isolates (the "Trojan Source" set).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Display text from the network: controls and bidi overrides out. Single-line text gets
/// every whitespace run turned into one space; `multiline` text (vCard notes) keeps its
/// line feeds and tabs. Trimmed either way.
fn clean_text(raw: &str, multiline: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut space = false;
    for c in raw.chars() {
        if is_bidi_control(c) {
            continue;
        }
        if multiline {
            if c == '\n' || c == '\t' || !c.is_control() {
                out.push(c);
            }
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() {
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    if multiline {
        out.trim().to_owned()
    } else {
        out
    }
}

fn is_item_not_found(e: &RequestError) -> bool {
    matches!(e, RequestError::Stanza { condition, .. } if condition == "item-not-found")
}

/// A JID of any form (blocklists hold domains and full JIDs too), normalized.
fn normalize_jid(s: &str) -> Option<String> {
    let jid = xmpp_parsers::jid::Jid::new(s.trim()).ok()?;
    Some(jid.as_str().to_owned())
}

// ---------------------------------------------------------------------------------------------
// XEP-0084: avatars

/// One `<info/>` of an avatar's metadata: one format of the current picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvatarInfo {
    /// Lowercase hex SHA-1 of the image bytes; also the item id in the data node.
    pub id: String,
    pub bytes: u32,
    /// "image/…" or "video/…".
    pub media_type: String,
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Where this format is hosted when not in the data node: http(s) only.
    pub url: Option<String>,
}

/// The metadata node's current item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AvatarMetadata {
    /// The user has no avatar (empty `<metadata/>`, or the deprecated `<stop/>`).
    Disabled,
    /// Formats of the current avatar, in document order; never empty.
    Available(Vec<AvatarInfo>),
}

impl AvatarMetadata {
    /// Parses a `<metadata xmlns='urn:xmpp:avatar:metadata'>` payload (an item of the node
    /// or of a PEP notification).
    pub fn from_xml(xml: &str) -> Result<Self> {
        parse_avatar_metadata(&parse_xml(xml)?)
    }

    pub fn to_xml(&self) -> String {
        String::from(&avatar_metadata_element(self))
    }

    /// The format kept in the data node (the one without a URL), which
    /// [`Session::avatar_data`] fetches.
    pub fn pubsub_info(&self) -> Option<&AvatarInfo> {
        match self {
            AvatarMetadata::Disabled => None,
            AvatarMetadata::Available(infos) => infos.iter().find(|i| i.url.is_none()),
        }
    }
}

fn parse_avatar_info(info: &Element) -> Option<AvatarInfo> {
    let id = info
        .attr("id")
        .filter(|i| is_sha1_hex(i))?
        .to_ascii_lowercase();
    let bytes = info.attr("bytes")?.trim().parse::<u32>().ok()?;
    let media_type = info
        .attr("type")
        .filter(|t| valid_media_type(t))?
        .to_owned();
    let dim = |name: &str| info.attr(name).and_then(|v| v.trim().parse::<u16>().ok());
    let url = match info.attr("url") {
        None => None,
        Some(u)
            if u.len() <= MAX_URL_BYTES
                && (u.starts_with("https://") || u.starts_with("http://"))
                && !u.chars().any(char::is_whitespace) =>
        {
            Some(u.to_owned())
        }
        // A URL we will not follow: without it the info would claim to be in the data node.
        Some(_) => return None,
    };
    Some(AvatarInfo {
        id,
        bytes,
        media_type,
        width: dim("width"),
        height: dim("height"),
        url,
    })
}

pub(crate) fn parse_avatar_metadata(root: &Element) -> Result<AvatarMetadata> {
    expect(root, "metadata", NS_AVATAR_METADATA)?;
    let mut infos = Vec::new();
    let mut seen = 0usize;
    for child in root.children() {
        if child.is("stop", NS_AVATAR_METADATA) {
            return Ok(AvatarMetadata::Disabled);
        }
        if !child.is("info", NS_AVATAR_METADATA) {
            continue;
        }
        seen += 1;
        if seen > MAX_AVATAR_INFOS {
            return Err(ProfileError::TooMany {
                what: "info",
                limit: MAX_AVATAR_INFOS,
            });
        }
        if let Some(info) = parse_avatar_info(child) {
            infos.push(info);
        }
    }
    if !infos.is_empty() {
        return Ok(AvatarMetadata::Available(infos));
    }
    if root.children().next().is_none() {
        return Ok(AvatarMetadata::Disabled);
    }
    Err(ProfileError::Malformed(
        "<metadata> without a usable <info>",
    ))
}

fn avatar_metadata_element(meta: &AvatarMetadata) -> Element {
    let mut m = el("metadata", NS_AVATAR_METADATA);
    if let AvatarMetadata::Available(infos) = meta {
        for i in infos {
            m = m.child(
                el("info", NS_AVATAR_METADATA)
                    .attr("bytes", i.bytes.to_string())
                    .attr("id", &i.id)
                    .attr("type", &i.media_type)
                    .attr_opt("width", i.width.map(|w| w.to_string()))
                    .attr_opt("height", i.height.map(|h| h.to_string()))
                    .attr_opt("url", i.url.as_deref()),
            );
        }
    }
    m.build()
}

fn avatar_data_element(image: &[u8]) -> Element {
    el("data", NS_AVATAR_DATA)
        .text(base64_engine().encode(image))
        .build()
}

/// Decodes a `<data xmlns='urn:xmpp:avatar:data'>` payload and checks that it is the
/// avatar `id` (its SHA-1); anything else is refused.
pub(crate) fn parse_avatar_data(root: &Element, id: &str) -> Result<Vec<u8>> {
    expect(root, "data", NS_AVATAR_DATA)?;
    let data = decode_base64(&root.text(), "data", MAX_AVATAR_BYTES)?;
    if data.is_empty() {
        return Err(ProfileError::Malformed("empty avatar data"));
    }
    if !sha1_hex(&data).eq_ignore_ascii_case(id) {
        return Err(ProfileError::HashMismatch);
    }
    Ok(data)
}

/// [`parse_avatar_data`] on serialized XML (an item payload).
pub fn avatar_data_from_xml(xml: &str, id: &str) -> Result<Vec<u8>> {
    parse_avatar_data(&parse_xml(xml)?, id)
}

// ---------------------------------------------------------------------------------------------
// XEP-0153: vCard-based avatars (the fallback)

/// The `<x xmlns='vcard-temp:x:update'/>` of a presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhotoUpdate {
    /// `<x/>` without `<photo/>`: the sender supports the protocol but has not said (or
    /// sent a hash that is not a SHA-1); keep what is known.
    NotReady,
    /// `<photo/>` empty: no avatar.
    NoPhoto,
    /// The lowercase hex SHA-1 of the current photo.
    Photo(String),
}

/// `None`: the presence has no update element, so nothing is known about the photo.
pub(crate) fn parse_photo_update(presence: &Element) -> Option<PhotoUpdate> {
    let x = presence.get_child("x", NS_VCARD_UPDATE)?;
    let Some(photo) = x.get_child("photo", NS_VCARD_UPDATE) else {
        return Some(PhotoUpdate::NotReady);
    };
    let hash = photo.text();
    let hash = hash.trim();
    Some(if hash.is_empty() {
        PhotoUpdate::NoPhoto
    } else if is_sha1_hex(hash) {
        PhotoUpdate::Photo(hash.to_ascii_lowercase())
    } else {
        PhotoUpdate::NotReady
    })
}

/// [`parse_photo_update`] on a serialized presence stanza.
pub fn photo_update_from_xml(presence_xml: &str) -> Result<Option<PhotoUpdate>> {
    Ok(parse_photo_update(&parse_xml(presence_xml)?))
}

pub(crate) fn photo_update_element(update: &PhotoUpdate) -> Element {
    let x = el("x", NS_VCARD_UPDATE);
    match update {
        PhotoUpdate::NotReady => x,
        PhotoUpdate::NoPhoto => x.child(el("photo", NS_VCARD_UPDATE)),
        PhotoUpdate::Photo(h) => x.child(el("photo", NS_VCARD_UPDATE).text(h.clone())),
    }
    .build()
}

/// The update element for our own presence (XEP-0153 asks for it in every broadcast once
/// we support the protocol).
pub fn photo_update_xml(update: &PhotoUpdate) -> String {
    String::from(&photo_update_element(update))
}

/// A vcard-temp `<PHOTO/>`, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcardPhoto {
    /// `<TYPE/>`, a hint only (XEP-0153: the image data wins).
    pub media_type: Option<String>,
    pub data: Vec<u8>,
    /// Lowercase hex SHA-1 of `data`.
    pub sha1: String,
}

/// The photo of a `<vCard xmlns='vcard-temp'>`; `None` when it has none (an `EXTVAL` only
/// counts as none: we do not fetch URLs from vCards).
pub(crate) fn parse_vcard_temp_photo(vcard: &Element) -> Result<Option<VcardPhoto>> {
    expect(vcard, "vCard", NS_VCARD_TEMP)?;
    let Some(photo) = vcard.get_child("PHOTO", NS_VCARD_TEMP) else {
        return Ok(None);
    };
    let Some(binval) = photo.get_child("BINVAL", NS_VCARD_TEMP) else {
        return Ok(None);
    };
    let data = decode_base64(&binval.text(), "BINVAL", MAX_AVATAR_BYTES)?;
    if data.is_empty() {
        return Ok(None);
    }
    let media_type = photo
        .get_child("TYPE", NS_VCARD_TEMP)
        .map(|t| t.text().trim().to_owned())
        .filter(|t| valid_media_type(t));
    Ok(Some(VcardPhoto {
        media_type,
        sha1: sha1_hex(&data),
        data,
    }))
}

/// [`parse_vcard_temp_photo`] on a serialized `<vCard/>`.
pub fn vcard_temp_photo_from_xml(xml: &str) -> Result<Option<VcardPhoto>> {
    parse_vcard_temp_photo(&parse_xml(xml)?)
}

/// `vcard` with its `<PHOTO/>` replaced (or removed), every other field kept: vcard-temp
/// has no partial update, so a photo change rewrites the whole vCard.
pub(crate) fn vcard_temp_with_photo(vcard: &Element, photo: Option<(&[u8], &str)>) -> Element {
    let mut out = el("vCard", NS_VCARD_TEMP);
    for child in vcard.children() {
        if !child.is("PHOTO", NS_VCARD_TEMP) {
            out = out.child(child.clone());
        }
    }
    if let Some((data, media_type)) = photo {
        out = out.child(
            el("PHOTO", NS_VCARD_TEMP)
                .child(el("TYPE", NS_VCARD_TEMP).text(media_type))
                .child(el("BINVAL", NS_VCARD_TEMP).text(base64_engine().encode(data))),
        );
    }
    out.build()
}

// ---------------------------------------------------------------------------------------------
// XEP-0172: nicknames

/// A nickname from the network, made safe to show: controls and bidi overrides removed,
/// whitespace collapsed, cut to [`MAX_NICK_CHARS`]. `None` when nothing is left or the
/// input is absurdly long.
pub fn clean_nick(raw: &str) -> Option<String> {
    if raw.len() > MAX_NICK_INPUT_BYTES {
        return None;
    }
    let cleaned = clean_text(raw, false);
    let cut: String = cleaned.chars().take(MAX_NICK_CHARS).collect();
    let cut = cut.trim_end().to_owned();
    (!cut.is_empty()).then_some(cut)
}

/// The nickname of a `<nick xmlns='http://jabber.org/protocol/nick'>`; `None` when empty
/// (an empty item is how a nickname is withdrawn).
pub(crate) fn parse_nick(nick: &Element) -> Result<Option<String>> {
    expect(nick, "nick", NS_NICK)?;
    Ok(clean_nick(&nick.text()))
}

/// [`parse_nick`] on a serialized `<nick/>` (a PEP item or notification payload).
pub fn nick_from_xml(xml: &str) -> Result<Option<String>> {
    parse_nick(&parse_xml(xml)?)
}

/// The nickname a stanza carries for its sender: subscription requests and messages only.
/// XEP-0172 forbids it in presence broadcasts, so one found there is ignored.
pub(crate) fn stanza_nick(stanza: &Element) -> Option<String> {
    if stanza.ns() != ns::JABBER_CLIENT {
        return None;
    }
    let allowed = match stanza.name() {
        "presence" => stanza.attr("type") == Some("subscribe"),
        "message" => stanza.attr("type") != Some("error"),
        _ => false,
    };
    if !allowed {
        return None;
    }
    let nick = stanza.get_child("nick", NS_NICK)?;
    clean_nick(&nick.text())
}

/// [`stanza_nick`] on a serialized stanza.
pub fn stanza_nick_from_xml(stanza_xml: &str) -> Result<Option<String>> {
    Ok(stanza_nick(&parse_xml(stanza_xml)?))
}

/// Our nickname checked for publishing: what [`clean_nick`] would show must be what we
/// send, so that we never publish what others would display differently.
fn own_nick(nick: &str) -> Result<String> {
    let trimmed = nick.trim();
    match clean_nick(trimmed) {
        Some(c) if c == trimmed => Ok(c),
        Some(_) => Err(ProfileError::BadArgument(
            "nickname too long or with control characters",
        )),
        None => Err(ProfileError::BadArgument("empty nickname")),
    }
}

pub(crate) fn nick_element(nick: Option<&str>) -> Result<Element> {
    let n = el("nick", NS_NICK);
    Ok(match nick {
        Some(nick) => n.text(own_nick(nick)?),
        None => n,
    }
    .build())
}

/// The `<nick/>` to put in a subscription request or a first message (XEP-0172 §4).
pub fn nick_element_xml(nick: &str) -> Result<String> {
    Ok(String::from(&nick_element(Some(nick))?))
}

// ---------------------------------------------------------------------------------------------
// XEP-0292: vCard4

/// An email address or phone number with its RFC 6350 `TYPE` values (work, home, cell…).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vcard4Entry {
    pub value: String,
    pub types: Vec<String>,
}

impl Vcard4Entry {
    pub fn new(value: impl Into<String>) -> Self {
        Vcard4Entry {
            value: value.into(),
            types: Vec::new(),
        }
    }
}

/// The basic fields of a vCard4, plus everything else it held, kept as it came so that a
/// republish loses nothing. Parameters of the modelled properties other than `TYPE` (on
/// emails and phones) are not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vcard4 {
    /// `FN`.
    pub full_name: Option<String>,
    /// `NICKNAME` values.
    pub nicknames: Vec<String>,
    /// `NOTE`, line breaks kept.
    pub note: Option<String>,
    /// `URL` values.
    pub urls: Vec<String>,
    /// `EMAIL`.
    pub emails: Vec<Vcard4Entry>,
    /// `TEL`: a `tel:` URI or free text.
    pub tels: Vec<Vcard4Entry>,
    /// Every other property (and any this module could not read), serialized, in order.
    pub other: Vec<String>,
}

impl Vcard4 {
    /// Parses a `<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>`.
    pub fn from_xml(xml: &str) -> Result<Self> {
        parse_vcard4(&parse_xml(xml)?)
    }

    pub fn to_xml(&self) -> Result<String> {
        Ok(String::from(&vcard4_element(self)?))
    }

    pub fn is_empty(&self) -> bool {
        *self == Vcard4::default()
    }
}

/// The one value of a property: `<kind>` children's text, `None` if absent, empty or too
/// long for us.
fn vcard4_value(prop: &Element, kinds: &[&str], multiline: bool) -> Option<String> {
    let raw = prop
        .children()
        .find(|c| c.ns() == NS_VCARD4 && kinds.contains(&c.name()))?
        .text();
    if raw.len() > MAX_VCARD_TEXT_BYTES {
        return None;
    }
    let v = clean_text(&raw, multiline);
    (!v.is_empty()).then_some(v)
}

fn vcard4_types(prop: &Element) -> Option<Vec<String>> {
    let mut types = Vec::new();
    let Some(params) = prop.get_child("parameters", NS_VCARD4) else {
        return Some(types);
    };
    for p in params.children() {
        // Another parameter would be lost on republish: keep such a property as it came.
        if !p.is("type", NS_VCARD4) {
            return None;
        }
        for t in p.children().filter(|t| t.is("text", NS_VCARD4)) {
            let v = clean_text(&t.text(), false);
            if v.is_empty() || v.len() > 64 {
                return None;
            }
            types.push(v);
        }
    }
    Some(types)
}

fn has_parameters(prop: &Element) -> bool {
    prop.get_child("parameters", NS_VCARD4).is_some()
}

pub(crate) fn parse_vcard4(root: &Element) -> Result<Vcard4> {
    expect(root, "vcard", NS_VCARD4)?;
    if root.children().nth(MAX_VCARD_PROPERTIES).is_some() {
        return Err(ProfileError::TooMany {
            what: "vcard property",
            limit: MAX_VCARD_PROPERTIES,
        });
    }
    let mut v = Vcard4::default();
    for prop in root.children() {
        let understood = prop.ns() == NS_VCARD4
            && match prop.name() {
                "fn" if v.full_name.is_none() && !has_parameters(prop) => {
                    v.full_name = vcard4_value(prop, &["text"], false);
                    v.full_name.is_some()
                }
                "note" if v.note.is_none() && !has_parameters(prop) => {
                    v.note = vcard4_value(prop, &["text"], true);
                    v.note.is_some()
                }
                "nickname" if !has_parameters(prop) => {
                    let texts: Vec<Option<String>> = prop
                        .children()
                        .filter(|c| c.is("text", NS_VCARD4))
                        .map(|t| {
                            let raw = t.text();
                            (raw.len() <= MAX_VCARD_TEXT_BYTES)
                                .then(|| clean_text(&raw, false))
                                .filter(|s| !s.is_empty())
                        })
                        .collect();
                    if !texts.is_empty() && texts.iter().all(Option::is_some) {
                        v.nicknames.extend(texts.into_iter().flatten());
                        true
                    } else {
                        false
                    }
                }
                "url" if !has_parameters(prop) => match vcard4_value(prop, &["uri"], false) {
                    Some(u) => {
                        v.urls.push(u);
                        true
                    }
                    None => false,
                },
                "email" => match (vcard4_value(prop, &["text"], false), vcard4_types(prop)) {
                    (Some(value), Some(types)) => {
                        v.emails.push(Vcard4Entry { value, types });
                        true
                    }
                    _ => false,
                },
                "tel" => match (
                    vcard4_value(prop, &["uri", "text"], false),
                    vcard4_types(prop),
                ) {
                    (Some(value), Some(types)) => {
                        v.tels.push(Vcard4Entry { value, types });
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
        if !understood {
            v.other.push(String::from(prop));
        }
    }
    Ok(v)
}

fn check_vcard_value(s: &str) -> Result<()> {
    if s.len() > MAX_VCARD_TEXT_BYTES {
        return Err(ProfileError::BadArgument("vCard value too long"));
    }
    if s.chars()
        .any(|c| is_bidi_control(c) || (c.is_control() && c != '\n' && c != '\t'))
    {
        return Err(ProfileError::BadArgument(
            "vCard value with control characters",
        ));
    }
    Ok(())
}

pub(crate) fn vcard4_element(v: &Vcard4) -> Result<Element> {
    let count = usize::from(v.full_name.is_some())
        + usize::from(v.note.is_some())
        + v.nicknames.len()
        + v.urls.len()
        + v.emails.len()
        + v.tels.len()
        + v.other.len();
    if count > MAX_VCARD_PROPERTIES {
        return Err(ProfileError::BadArgument("too many vCard properties"));
    }
    let text_prop = |name: &str, kind: &str, value: &str| -> Result<Element> {
        check_vcard_value(value)?;
        Ok(el(name, NS_VCARD4)
            .child(el(kind, NS_VCARD4).text(value))
            .build())
    };
    let entry_prop = |name: &str, kind: &str, e: &Vcard4Entry| -> Result<Element> {
        check_vcard_value(&e.value)?;
        let mut p = el(name, NS_VCARD4);
        if !e.types.is_empty() {
            let mut t = el("type", NS_VCARD4);
            for ty in &e.types {
                check_vcard_value(ty)?;
                t = t.child(el("text", NS_VCARD4).text(ty.clone()));
            }
            p = p.child(el("parameters", NS_VCARD4).child(t));
        }
        Ok(p.child(el(kind, NS_VCARD4).text(e.value.clone())).build())
    };
    let mut out = el("vcard", NS_VCARD4);
    if let Some(f) = &v.full_name {
        out = out.child(text_prop("fn", "text", f)?);
    }
    for n in &v.nicknames {
        out = out.child(text_prop("nickname", "text", n)?);
    }
    if let Some(n) = &v.note {
        out = out.child(text_prop("note", "text", n)?);
    }
    for u in &v.urls {
        out = out.child(text_prop("url", "uri", u)?);
    }
    for e in &v.emails {
        out = out.child(entry_prop("email", "text", e)?);
    }
    for t in &v.tels {
        // RFC 6350 §6.4.1: a URI by default, free text allowed.
        let kind = if t.value.starts_with("tel:") {
            "uri"
        } else {
            "text"
        };
        out = out.child(entry_prop("tel", kind, t)?);
    }
    for o in &v.other {
        let e: Element = o
            .parse()
            .map_err(|_| ProfileError::BadArgument("a kept vCard property is not XML"))?;
        out = out.child(e);
    }
    Ok(out.build())
}

// ---------------------------------------------------------------------------------------------
// XEP-0191: blocking, and XEP-0377 reports

/// A blocklist change pushed by our server (after a block or unblock by any of our
/// clients).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockingPush {
    Blocked(Vec<String>),
    Unblocked(Vec<String>),
    /// An empty `<unblock/>`: the whole list was cleared.
    UnblockedAll,
}

/// A blocking push read, and the reply it needs (RFC 6120: every IQ set is answered).
#[derive(Clone, Debug)]
pub struct BlockingPushOutcome {
    /// The change to apply, or why it must not be.
    pub push: Result<BlockingPush>,
    pub(crate) reply: Element,
}

impl BlockingPushOutcome {
    /// The reply to send: a result for an accepted push; `service-unavailable` for one not
    /// from our account (as RFC 6121 §2.1.6 has it for roster pushes: the sender learns
    /// nothing); `bad-request` for a malformed one.
    pub fn reply_xml(&self) -> String {
        String::from(&self.reply)
    }
}

fn blocklist_items(parent: &Element) -> Result<(usize, Vec<String>)> {
    let mut seen = 0usize;
    let mut out = Vec::new();
    for item in parent.children().filter(|c| c.is("item", NS_BLOCKING)) {
        seen += 1;
        if seen > MAX_BLOCKLIST_ITEMS {
            return Err(ProfileError::TooMany {
                what: "item",
                limit: MAX_BLOCKLIST_ITEMS,
            });
        }
        if let Some(j) = item.attr("jid").and_then(normalize_jid) {
            if !out.contains(&j) {
                out.push(j);
            }
        }
    }
    Ok((seen, out))
}

/// The JIDs of a `<blocklist/>` result; entries that are not JIDs are left out.
pub(crate) fn parse_blocklist(root: &Element) -> Result<Vec<String>> {
    expect(root, "blocklist", NS_BLOCKING)?;
    Ok(blocklist_items(root)?.1)
}

/// [`parse_blocklist`] on a serialized `<blocklist/>`.
pub fn blocklist_from_xml(xml: &str) -> Result<Vec<String>> {
    parse_blocklist(&parse_xml(xml)?)
}

fn from_own_account(stanza: &Element, own: &BareJid) -> bool {
    match stanza.attr("from") {
        None => true,
        Some(f) => !f.contains('/') && BareJid::parse(f).is_ok_and(|b| b == *own),
    }
}

fn iq_reply(iq: &Element, error: Option<(&'static str, &'static str)>) -> Element {
    match error {
        Some((condition, type_)) => crate::inbound::iq_error_reply(iq, condition, type_),
        None => el("iq", ns::JABBER_CLIENT)
            .attr("type", "result")
            .attr("id", iq.attr("id").unwrap_or(""))
            .attr_opt("to", iq.attr("from"))
            .build(),
    }
}

fn read_push(payload: &Element) -> Result<BlockingPush> {
    let (seen, jids) = blocklist_items(payload)?;
    if payload.name() == "unblock" && seen == 0 {
        return Ok(BlockingPush::UnblockedAll);
    }
    // Items that are all unreadable must never turn into "unblock everyone".
    if jids.is_empty() {
        return Err(ProfileError::Malformed(
            "blocking push without a valid <item>",
        ));
    }
    Ok(if payload.name() == "block" {
        BlockingPush::Blocked(jids)
    } else {
        BlockingPush::Unblocked(jids)
    })
}

/// Reads an IQ that may be a blocking push. `None`: it is not one (not a set, or another
/// payload). A push from anyone but our own account (no `from`, or our bare JID) is
/// refused: anyone could otherwise unblock a spammer, or make us hide a contact.
pub(crate) fn blocking_push(iq: &Element, own: &BareJid) -> Option<BlockingPushOutcome> {
    if !iq.is("iq", ns::JABBER_CLIENT) || iq.attr("type") != Some("set") {
        return None;
    }
    let payload = iq.children().next()?;
    if payload.ns() != NS_BLOCKING || !matches!(payload.name(), "block" | "unblock") {
        return None;
    }
    if !from_own_account(iq, own) {
        tracing::warn!("refusing a blocklist push from a foreign entity");
        return Some(BlockingPushOutcome {
            push: Err(ProfileError::ForeignPush),
            reply: iq_reply(iq, Some(("service-unavailable", "cancel"))),
        });
    }
    let push = read_push(payload);
    let reply = match push {
        Ok(_) => iq_reply(iq, None),
        Err(_) => iq_reply(iq, Some(("bad-request", "modify"))),
    };
    Some(BlockingPushOutcome { push, reply })
}

/// [`blocking_push`] on a serialized IQ. `None` also for XML that is not well-formed.
pub fn blocking_push_from_xml(iq_xml: &str, own: &BareJid) -> Option<BlockingPushOutcome> {
    blocking_push(&iq_xml.parse().ok()?, own)
}

/// Whether an error stanza says the addressee is on our blocklist (XEP-0191: our server
/// refused to route it, with `<blocked xmlns='urn:xmpp:blocking:errors'/>`).
pub(crate) fn is_blocked_error(stanza: &Element) -> bool {
    stanza.ns() == ns::JABBER_CLIENT
        && stanza.attr("type") == Some("error")
        && stanza
            .get_child("error", ns::JABBER_CLIENT)
            .is_some_and(|e| e.has_child("blocked", NS_BLOCKING_ERRORS))
}

/// [`is_blocked_error`] on a serialized stanza.
pub fn blocked_error_in_xml(stanza_xml: &str) -> bool {
    parse_xml(stanza_xml).is_ok_and(|s| is_blocked_error(&s))
}

/// XEP-0377 reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportReason {
    Spam,
    Abuse,
}

impl ReportReason {
    pub fn urn(self) -> &'static str {
        match self {
            ReportReason::Spam => "urn:xmpp:reporting:spam",
            ReportReason::Abuse => "urn:xmpp:reporting:abuse",
        }
    }

    fn from_urn(s: &str) -> Option<Self> {
        match s {
            "urn:xmpp:reporting:spam" => Some(ReportReason::Spam),
            "urn:xmpp:reporting:abuse" => Some(ReportReason::Abuse),
            _ => None,
        }
    }
}

/// A message being reported, named by its XEP-0359 stanza-id, copied as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedStanza {
    /// The archive that assigned the id (our own account for 1:1 messages).
    pub by: String,
    pub id: String,
}

/// A report attached to a block (XEP-0377 0.4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub reason: ReportReason,
    /// The user's explanation, and its language (`xml:lang`).
    pub text: Option<String>,
    pub lang: Option<String>,
    pub stanzas: Vec<ReportedStanza>,
    /// Opt-in: the server may forward the report to the sender's domain.
    pub report_origin: bool,
    /// Opt-in: the server may forward the report to third parties (block lists, statistics).
    pub third_party: bool,
}

impl Report {
    pub fn new(reason: ReportReason) -> Self {
        Report {
            reason,
            text: None,
            lang: None,
            stanzas: Vec::new(),
            report_origin: false,
            third_party: false,
        }
    }

    pub fn to_xml(&self) -> Result<String> {
        Ok(String::from(&report_element(self)?))
    }

    pub fn from_xml(xml: &str) -> Result<Self> {
        parse_report(&parse_xml(xml)?)
    }
}

fn set_xml_lang(e: &mut Element, lang: &str) {
    use xso::exports::rxml::{Namespace, NcName};
    if let Ok(name) = NcName::try_from("lang") {
        e.set_attr(Namespace::XML, name, lang.to_owned());
    }
}

pub(crate) fn report_element(r: &Report) -> Result<Element> {
    if r.stanzas.len() > MAX_REPORTED_STANZAS {
        return Err(ProfileError::BadArgument("too many reported stanzas"));
    }
    let mut report = el("report", NS_REPORTING).attr("reason", r.reason.urn());
    for s in &r.stanzas {
        let by =
            normalize_jid(&s.by).ok_or(ProfileError::BadArgument("stanza-id 'by' is not a JID"))?;
        if s.id.is_empty() || s.id.len() > crate::rich::MAX_ID_BYTES {
            return Err(ProfileError::BadArgument("bad stanza-id"));
        }
        report = report.child(el("stanza-id", NS_SID).attr("by", by).attr("id", &s.id));
    }
    if let Some(t) = &r.text {
        if t.len() > MAX_REPORT_TEXT_BYTES {
            return Err(ProfileError::BadArgument("report text too long"));
        }
        let mut text = el("text", NS_REPORTING).text(t.clone()).build();
        if let Some(lang) = r.lang.as_deref().filter(|l| !l.is_empty()) {
            if lang.len() > 35 || !lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ProfileError::BadArgument("bad language tag"));
            }
            set_xml_lang(&mut text, lang);
        }
        report = report.child(text);
    }
    if r.report_origin {
        report = report.child(el("report-origin", NS_REPORTING));
    }
    if r.third_party {
        report = report.child(el("third-party", NS_REPORTING));
    }
    Ok(report.build())
}

pub(crate) fn parse_report(root: &Element) -> Result<Report> {
    expect(root, "report", NS_REPORTING)?;
    let reason = root
        .attr("reason")
        .and_then(ReportReason::from_urn)
        .ok_or(ProfileError::Malformed("report without a known reason"))?;
    let mut r = Report::new(reason);
    for c in root.children() {
        if c.is("stanza-id", NS_SID) && r.stanzas.len() < MAX_REPORTED_STANZAS {
            if let (Some(by), Some(id)) = (c.attr("by"), c.attr("id")) {
                r.stanzas.push(ReportedStanza {
                    by: by.to_owned(),
                    id: id.to_owned(),
                });
            }
        } else if c.is("text", NS_REPORTING) && r.text.is_none() {
            r.text = Some(c.text().trim().to_owned());
            r.lang = c
                .attr_ns(&xso::exports::rxml::Namespace::XML, "lang")
                .map(str::to_owned);
        } else if c.is("report-origin", NS_REPORTING) {
            r.report_origin = true;
        } else if c.is("third-party", NS_REPORTING) {
            r.third_party = true;
        }
    }
    Ok(r)
}

/// `<block/>` of the given JIDs, each with its report if any.
pub(crate) fn block_element(items: &[(String, Option<Element>)]) -> Element {
    let mut b = el("block", NS_BLOCKING);
    for (jid, report) in items {
        let mut item = el("item", NS_BLOCKING).attr("jid", jid);
        if let Some(r) = report {
            item = item.child(r.clone());
        }
        b = b.child(item);
    }
    b.build()
}

/// JIDs from the app for a block or unblock: each a JID, none our own account, at most
/// [`MAX_BLOCKLIST_ITEMS`], none twice.
fn checked_jids(jids: &[&str], own: &BareJid) -> Result<Vec<String>> {
    if jids.is_empty() {
        return Err(ProfileError::BadArgument("no JID given"));
    }
    if jids.len() > MAX_BLOCKLIST_ITEMS {
        return Err(ProfileError::BadArgument("too many JIDs"));
    }
    let mut out = Vec::with_capacity(jids.len());
    for j in jids {
        let n = normalize_jid(j).ok_or(ProfileError::BadArgument("not a JID"))?;
        if n == own.as_str() {
            return Err(ProfileError::BadArgument("cannot block our own account"));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// What the server offers around blocking (disco#info of our domain).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockingSupport {
    /// `urn:xmpp:blocking` (XEP-0191).
    pub blocking: bool,
    /// `urn:xmpp:reporting:1` (XEP-0377): reports attached to a block are understood.
    pub reporting: bool,
}

pub(crate) fn parse_blocking_support(query: &Element) -> BlockingSupport {
    let mut s = BlockingSupport::default();
    for f in query.children().filter(|c| c.is("feature", NS_DISCO_INFO)) {
        match f.attr("var") {
            Some(NS_BLOCKING) => s.blocking = true,
            Some(NS_REPORTING) => s.reporting = true,
            _ => {}
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Which item of a node to fetch.
enum Pick<'a> {
    Latest,
    Id(&'a str),
}

impl Session {
    /// One item's payload from `node` at `jid` (ours when `None`); `None` when the node
    /// or item does not exist or the item has no payload.
    async fn profile_item(
        &self,
        jid: Option<&BareJid>,
        node: &'static str,
        pick: Pick<'_>,
    ) -> Result<Option<(Option<String>, Element)>> {
        let mut items = el("items", NS_PUBSUB).attr("node", node);
        match pick {
            Pick::Latest => items = items.attr("max_items", "1"),
            Pick::Id(id) => items = items.child(el("item", NS_PUBSUB).attr("id", id)),
        }
        let reply = match self
            .iq(
                "get",
                jid.map(BareJid::as_str),
                el("pubsub", NS_PUBSUB).child(items).build(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) if is_item_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let items = reply
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("items", NS_PUBSUB))
            .ok_or(ProfileError::Malformed("pubsub result without <items>"))?;
        if items.attr("node") != Some(node) {
            return Err(ProfileError::Malformed("items of another node"));
        }
        for item in items
            .children()
            .filter(|c| c.is("item", NS_PUBSUB))
            .take(crate::pep::MAX_ITEMS)
        {
            let id = item.attr("id").map(str::to_owned);
            if let Pick::Id(want) = pick {
                if id.as_deref() != Some(want) {
                    continue;
                }
            }
            // With max_items=1 there is one item, the most recent (XEP-0060 §6.5.7); from
            // a server that ignores it, the first is taken.
            return Ok(item.children().next().map(|p| (id, p.clone())));
        }
        Ok(None)
    }

    /// The largest stanza the server takes: announced, or [`ASSUMED_STANZA_LIMIT`].
    fn profile_stanza_limit(&self) -> usize {
        self.negotiated
            .max_stanza_bytes
            .unwrap_or(ASSUMED_STANZA_LIMIT) as usize
    }

    /// Refuses a payload that would make the request stanza too big for the server.
    fn profile_check_fits(&self, payload_xml: &str, what: &'static str) -> Result<()> {
        let max = self.profile_stanza_limit();
        if payload_xml.len() + REQUEST_OVERHEAD_BYTES > max {
            return Err(ProfileError::TooLarge {
                what,
                got: payload_xml.len(),
                limit: max.saturating_sub(REQUEST_OVERHEAD_BYTES),
            });
        }
        Ok(())
    }

    async fn profile_publish(
        &self,
        node: &'static str,
        item_id: Option<&str>,
        payload: &Element,
        config: &NodeConfig,
    ) -> Result<()> {
        let xml = String::from(payload);
        self.profile_check_fits(&xml, "item for the server's stanza limit")?;
        self.pep_publish(node, item_id, &xml, config).await?;
        Ok(())
    }

    /// Publishes `image` as our avatar (XEP-0084): the data first, then the metadata that
    /// points to it, both nodes with the same access so that whoever sees the metadata can
    /// fetch the picture. XEP-0084 asks for PNG in the data node (other formats belong at
    /// URLs); we do not transcode, so send PNG for the widest reach. Refused locally when
    /// larger than [`MAX_AVATAR_BYTES`] or than the server's stanza limit (announced, else
    /// [`ASSUMED_STANZA_LIMIT`]): servers close the stream on an oversized stanza.
    pub async fn publish_avatar(
        &self,
        image: &[u8],
        media_type: &str,
        width: Option<u16>,
        height: Option<u16>,
        access: Access,
    ) -> Result<AvatarInfo> {
        if image.is_empty() {
            return Err(ProfileError::BadArgument("empty image"));
        }
        if image.len() > MAX_AVATAR_BYTES {
            return Err(ProfileError::TooLarge {
                what: "avatar",
                got: image.len(),
                limit: MAX_AVATAR_BYTES,
            });
        }
        if !valid_media_type(media_type) {
            return Err(ProfileError::BadArgument(
                "not an image or video media type",
            ));
        }
        let encoded = image.len().div_ceil(3) * 4;
        let max = self.profile_stanza_limit();
        if encoded + REQUEST_OVERHEAD_BYTES > max {
            return Err(ProfileError::TooLarge {
                what: "avatar for the server's stanza limit",
                got: image.len(),
                limit: max.saturating_sub(REQUEST_OVERHEAD_BYTES) / 4 * 3,
            });
        }
        let bytes =
            u32::try_from(image.len()).map_err(|_| ProfileError::BadArgument("image too large"))?;
        let info = AvatarInfo {
            id: sha1_hex(image),
            bytes,
            media_type: media_type.to_owned(),
            width,
            height,
            url: None,
        };
        let config = access.node_config();
        self.profile_publish(
            NS_AVATAR_DATA,
            Some(&info.id),
            &avatar_data_element(image),
            &config,
        )
        .await?;
        let meta = AvatarMetadata::Available(vec![info.clone()]);
        self.profile_publish(
            NS_AVATAR_METADATA,
            Some(&info.id),
            &avatar_metadata_element(&meta),
            &config,
        )
        .await?;
        Ok(info)
    }

    /// Withdraws our avatar: an empty `<metadata/>` (XEP-0084 §3.5). The data stays in its
    /// node, unreferenced.
    pub async fn remove_avatar(&self) -> Result<()> {
        self.profile_publish(
            NS_AVATAR_METADATA,
            None,
            &avatar_metadata_element(&AvatarMetadata::Disabled),
            &NodeConfig::default(),
        )
        .await
    }

    /// The current avatar metadata of `jid` (ours when `None`); `None` when never
    /// published.
    pub async fn avatar_metadata(&self, jid: Option<&BareJid>) -> Result<Option<AvatarMetadata>> {
        match self
            .profile_item(jid, NS_AVATAR_METADATA, Pick::Latest)
            .await?
        {
            None => Ok(None),
            Some((_, payload)) => parse_avatar_metadata(&payload).map(Some),
        }
    }

    /// The avatar `id` of `jid` (ours when `None`) from its data node, checked to hash to
    /// `id`. Look in your cache first: XEP-0084 forbids fetching what one has.
    pub async fn avatar_data(&self, jid: Option<&BareJid>, id: &str) -> Result<Vec<u8>> {
        if !is_sha1_hex(id) {
            return Err(ProfileError::BadArgument("avatar id is not a SHA-1"));
        }
        let (_, payload) = self
            .profile_item(jid, NS_AVATAR_DATA, Pick::Id(id))
            .await?
            .ok_or(ProfileError::NotFound("avatar data"))?;
        parse_avatar_data(&payload, id)
    }

    /// The vcard-temp photo of `jid` (ours when `None`), the XEP-0153 fallback for contacts
    /// without XEP-0084. With `expected_sha1` (from their presence), a photo that does not
    /// hash to it is refused: it is not the one announced (a race with a newer vCard looks
    /// the same, and the next presence will announce that one).
    pub async fn vcard_temp_photo(
        &self,
        jid: Option<&BareJid>,
        expected_sha1: Option<&str>,
    ) -> Result<Option<VcardPhoto>> {
        let reply = match self
            .iq(
                "get",
                jid.map(BareJid::as_str),
                el("vCard", NS_VCARD_TEMP).build(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) if is_item_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(vcard) = reply.get_child("vCard", NS_VCARD_TEMP) else {
            return Ok(None);
        };
        let photo = parse_vcard_temp_photo(vcard)?;
        if let (Some(p), Some(want)) = (&photo, expected_sha1) {
            if !p.sha1.eq_ignore_ascii_case(want.trim()) {
                return Err(ProfileError::HashMismatch);
            }
        }
        Ok(photo)
    }

    /// Sets (or with `None` removes) the photo of our vcard-temp, keeping its other fields:
    /// the vCard is read, then written back (two requests; XEP-0153 forbids advertising
    /// a photo without reading the vCard first). Returns what our presence should now
    /// carry ([`photo_update_xml`]).
    pub async fn set_vcard_temp_photo(&self, photo: Option<(&[u8], &str)>) -> Result<PhotoUpdate> {
        if let Some((data, media_type)) = photo {
            if data.is_empty() {
                return Err(ProfileError::BadArgument("empty image"));
            }
            if data.len() > MAX_AVATAR_BYTES {
                return Err(ProfileError::TooLarge {
                    what: "photo",
                    got: data.len(),
                    limit: MAX_AVATAR_BYTES,
                });
            }
            if !valid_media_type(media_type) {
                return Err(ProfileError::BadArgument("not an image media type"));
            }
        }
        let current = match self
            .iq("get", None, el("vCard", NS_VCARD_TEMP).build())
            .await
        {
            Ok(r) => r.get_child("vCard", NS_VCARD_TEMP).cloned(),
            Err(e) if is_item_not_found(&e) => None,
            Err(e) => return Err(e.into()),
        };
        let current = current.unwrap_or_else(|| el("vCard", NS_VCARD_TEMP).build());
        let updated = vcard_temp_with_photo(&current, photo);
        self.profile_check_fits(
            &String::from(&updated),
            "vCard for the server's stanza limit",
        )?;
        self.iq("set", None, updated).await?;
        Ok(match photo {
            Some((data, _)) => PhotoUpdate::Photo(sha1_hex(data)),
            None => PhotoUpdate::NoPhoto,
        })
    }

    /// Publishes our nickname (XEP-0172), or with `None` withdraws it (an empty `<nick/>`).
    /// `Access::Open` lets people who are not contacts yet see it.
    pub async fn publish_nick(&self, nick: Option<&str>, access: Access) -> Result<()> {
        let payload = nick_element(nick)?;
        self.profile_publish(NS_NICK, Some(CURRENT), &payload, &access.node_config())
            .await
    }

    /// The nickname `jid` (we when `None`) published; `None` when none.
    pub async fn fetch_nick(&self, jid: Option<&BareJid>) -> Result<Option<String>> {
        match self.profile_item(jid, NS_NICK, Pick::Latest).await? {
            None => Ok(None),
            Some((_, payload)) => parse_nick(&payload),
        }
    }

    /// Publishes our vCard4 (XEP-0292: the whole card, as item "current" of
    /// `urn:xmpp:vcard4`).
    pub async fn publish_vcard4(&self, vcard: &Vcard4, access: Access) -> Result<()> {
        let payload = vcard4_element(vcard)?;
        self.profile_publish(NODE_VCARD4, Some(CURRENT), &payload, &access.node_config())
            .await
    }

    /// The vCard4 of `jid` (ours when `None`); `None` when never published.
    pub async fn fetch_vcard4(&self, jid: Option<&BareJid>) -> Result<Option<Vcard4>> {
        match self.profile_item(jid, NODE_VCARD4, Pick::Latest).await? {
            None => Ok(None),
            Some((_, payload)) => parse_vcard4(&payload).map(Some),
        }
    }

    /// Blocking and reporting support of our server (disco#info of our domain, where
    /// XEP-0191 and XEP-0377 have servers announce them).
    pub async fn blocking_support(&self) -> Result<BlockingSupport> {
        let reply = self
            .iq(
                "get",
                Some(self.own_jid().domain()),
                el("query", NS_DISCO_INFO).build(),
            )
            .await?;
        let query = reply
            .get_child("query", NS_DISCO_INFO)
            .ok_or(ProfileError::Malformed("disco#info result without <query>"))?;
        Ok(parse_blocking_support(query))
    }

    /// Our blocklist. XEP-0191 asks clients to fetch it before changing it; the server then
    /// sends this session the pushes of later changes.
    pub async fn blocklist(&self) -> Result<Vec<String>> {
        let reply = self
            .iq("get", None, el("blocklist", NS_BLOCKING).build())
            .await?;
        let list = reply
            .get_child("blocklist", NS_BLOCKING)
            .ok_or(ProfileError::Malformed("result without <blocklist>"))?;
        parse_blocklist(list)
    }

    /// Blocks `jids` (bare, full or domain JIDs).
    pub async fn block(&self, jids: &[&str]) -> Result<()> {
        let items: Vec<(String, Option<Element>)> = checked_jids(jids, self.own_jid())?
            .into_iter()
            .map(|j| (j, None))
            .collect();
        self.iq("set", None, block_element(&items)).await?;
        Ok(())
    }

    /// Blocks `jid` and, when the server takes reports (`support.reporting`, from
    /// [`Session::blocking_support`]), reports it; otherwise blocks only. Returns whether
    /// the report was sent.
    pub async fn block_and_report(
        &self,
        jid: &str,
        report: &Report,
        support: &BlockingSupport,
    ) -> Result<bool> {
        let jid = checked_jids(&[jid], self.own_jid())?
            .pop()
            .ok_or(ProfileError::BadArgument("no JID given"))?;
        let report_el = report_element(report)?;
        let attach = support.reporting.then_some(report_el);
        let sent = attach.is_some();
        self.iq("set", None, block_element(&[(jid, attach)]))
            .await?;
        Ok(sent)
    }

    /// Unblocks `jids`. An empty list is refused: on the wire it would mean "unblock
    /// everyone", which is [`Session::unblock_all`].
    pub async fn unblock(&self, jids: &[&str]) -> Result<()> {
        let mut u = el("unblock", NS_BLOCKING);
        for j in checked_jids(jids, self.own_jid())? {
            u = u.child(el("item", NS_BLOCKING).attr("jid", j));
        }
        self.iq("set", None, u.build()).await?;
        Ok(())
    }

    /// Empties our blocklist.
    pub async fn unblock_all(&self) -> Result<()> {
        self.iq("set", None, el("unblock", NS_BLOCKING).build())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn own() -> BareJid {
        BareJid::parse("juliet@capulet.com").unwrap()
    }

    // --- XEP-0084 examples -------------------------------------------------------------------

    const META_ONE: &str = "<metadata xmlns='urn:xmpp:avatar:metadata'>
          <info bytes='12345'
                id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f'
                height='64'
                type='image/png'
                width='64'/>
        </metadata>";

    #[test]
    fn xep0084_metadata_example() {
        let m = AvatarMetadata::from_xml(META_ONE).unwrap();
        let info = AvatarInfo {
            id: "111f4b3c50d7b0df729d299bc6f8e9ef9066971f".into(),
            bytes: 12345,
            media_type: "image/png".into(),
            width: Some(64),
            height: Some(64),
            url: None,
        };
        assert_eq!(m, AvatarMetadata::Available(vec![info.clone()]));
        assert_eq!(m.pubsub_info(), Some(&info));
        assert_eq!(AvatarMetadata::from_xml(&m.to_xml()).unwrap(), m);
    }

    #[test]
    fn xep0084_metadata_with_url_multiple_formats_and_pointer() {
        let url_only = "<metadata xmlns='urn:xmpp:avatar:metadata'>
          <info bytes='23456' height='64' id='222f4b3c50d7b0df729d299bc6f8e9ef9066971f'
                type='image/gif' url='http://avatars.example.org/happy.gif' width='64'/>
        </metadata>";
        let m = AvatarMetadata::from_xml(url_only).unwrap();
        let AvatarMetadata::Available(infos) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(
            infos[0].url.as_deref(),
            Some("http://avatars.example.org/happy.gif")
        );
        assert_eq!(m.pubsub_info(), None, "only at a URL");

        let multiple = "<metadata xmlns='urn:xmpp:avatar:metadata'>
          <info bytes='12345' height='64' id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f' type='image/png' width='64'/>
          <info bytes='12345' height='64' id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f' type='image/png' url='http://avatars.example.org/happy.png' width='64'/>
          <info bytes='23456' height='64' id='222f4b3c50d7b0df729d299bc6f8e9ef9066971f' type='image/gif' url='http://avatars.example.org/happy.gif' width='64'/>
          <info bytes='78912' height='64' id='333f4b3c50d7b0df729d299bc6f8e9ef9066971f' type='image/mng' url='http://avatars.example.org/happy.mng' width='64'/>
        </metadata>";
        let m = AvatarMetadata::from_xml(multiple).unwrap();
        let AvatarMetadata::Available(infos) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(infos.len(), 4);
        assert_eq!(infos[3].media_type, "image/mng");
        assert_eq!(m.pubsub_info().unwrap().bytes, 12345);
        assert!(m.pubsub_info().unwrap().url.is_none());

        let pointer = "<metadata xmlns='urn:xmpp:avatar:metadata'>
          <info bytes='12345' height='64' id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f' type='image/png' width='64'/>
          <pointer><x xmlns='http://example.com/virtualworlds'><game>Ancapistan</game><character>Kropotkin</character></x></pointer>
        </metadata>";
        let m = AvatarMetadata::from_xml(pointer).unwrap();
        assert_eq!(m.pubsub_info().unwrap().width, Some(64));
    }

    #[test]
    fn xep0084_disabling() {
        assert_eq!(
            AvatarMetadata::from_xml("<metadata xmlns='urn:xmpp:avatar:metadata'/>").unwrap(),
            AvatarMetadata::Disabled
        );
        // The deprecated form of XEP-0084 1.0.
        assert_eq!(
            AvatarMetadata::from_xml(
                "<metadata xmlns='urn:xmpp:avatar:metadata'><stop/></metadata>"
            )
            .unwrap(),
            AvatarMetadata::Disabled
        );
        assert_eq!(
            AvatarMetadata::Disabled.to_xml(),
            "<metadata xmlns='urn:xmpp:avatar:metadata'/>"
        );
    }

    #[test]
    fn xep0084_data_example_is_not_base64() {
        // The XEP's placeholder ends in "...": it must be refused, not half-decoded.
        let xml = "<data xmlns='urn:xmpp:avatar:data'>
          qANQR1DBwU4DX7jmYZnncm...
        </data>";
        assert_eq!(
            avatar_data_from_xml(xml, "111f4b3c50d7b0df729d299bc6f8e9ef9066971f"),
            Err(ProfileError::BadBase64("data"))
        );
    }

    #[test]
    fn avatar_data_verified_with_line_feeds() {
        let image = b"\x89PNG\r\n\x1a\n not really a png, but bytes";
        let id = sha1_hex(image);
        let b64 = base64_engine().encode(image);
        let (a, b) = b64.split_at(10);
        let xml = format!("<data xmlns='urn:xmpp:avatar:data'>\n{a}\r\n  {b}\n</data>");
        assert_eq!(avatar_data_from_xml(&xml, &id).unwrap(), image.to_vec());
        assert_eq!(
            avatar_data_from_xml(&xml, &id.to_uppercase()).unwrap(),
            image.to_vec()
        );
        // What we publish reads back.
        let built = String::from(&avatar_data_element(image));
        assert_eq!(avatar_data_from_xml(&built, &id).unwrap(), image.to_vec());
    }

    #[test]
    fn sha1_of_known_vectors() {
        // RFC 3174 test vector 1 and the empty string.
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    // --- hostile avatars -----------------------------------------------------------------------

    #[test]
    fn avatar_bytes_not_hashing_to_their_id_are_refused() {
        let xml = format!(
            "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
            base64_engine().encode(b"someone else's face")
        );
        assert_eq!(
            avatar_data_from_xml(&xml, &sha1_hex(b"the face announced")),
            Err(ProfileError::HashMismatch)
        );
    }

    #[test]
    fn oversized_avatar_is_refused_before_decoding() {
        let big = vec![7u8; MAX_AVATAR_BYTES + 1];
        let xml = format!(
            "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
            base64_engine().encode(&big)
        );
        assert!(matches!(
            avatar_data_from_xml(&xml, &sha1_hex(&big)),
            Err(ProfileError::TooLarge {
                limit: MAX_AVATAR_BYTES,
                ..
            })
        ));
        // Exactly at the limit is fine.
        let max = vec![7u8; MAX_AVATAR_BYTES];
        let xml = format!(
            "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
            base64_engine().encode(&max)
        );
        assert_eq!(
            avatar_data_from_xml(&xml, &sha1_hex(&max)).unwrap().len(),
            MAX_AVATAR_BYTES
        );
    }

    #[test]
    fn base64_garbage_is_refused() {
        let id = sha1_hex(b"x");
        for garbage in [
            "%%%%",
            "a",
            "aGVsbG8=aGVsbG8=",
            "\u{e9}t\u{e9}",
            "<![CDATA[]]>",
        ] {
            let xml = format!("<data xmlns='urn:xmpp:avatar:data'>{garbage}</data>");
            let r = avatar_data_from_xml(&xml, &id);
            assert!(
                matches!(
                    r,
                    Err(ProfileError::BadBase64(_)) | Err(ProfileError::Malformed(_))
                ),
                "{garbage}: {r:?}"
            );
        }
        assert_eq!(
            avatar_data_from_xml("<data xmlns='urn:xmpp:avatar:data'/>", &id),
            Err(ProfileError::Malformed("empty avatar data"))
        );
        assert!(matches!(
            avatar_data_from_xml("<data xmlns='urn:xmpp:avatar:metadata'>eA==</data>", &id),
            Err(ProfileError::WrongElement { .. })
        ));
    }

    #[test]
    fn hostile_metadata_infos() {
        let good =
            "<info bytes='5' id='aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d' type='image/png'/>";
        // Each bad <info> is left out; the good one survives.
        let bad = [
            "<info bytes='5' id='not-a-hash' type='image/png'/>",
            "<info bytes='-5' id='aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d' type='image/png'/>",
            "<info bytes='5' id='aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d' type='text/html'/>",
            "<info bytes='5' id='aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d' type='image/png' url='javascript:alert(1)'/>",
            "<info bytes='5' id='aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d'/>",
        ];
        let xml = format!(
            "<metadata xmlns='urn:xmpp:avatar:metadata'>{}{good}</metadata>",
            bad.concat()
        );
        let m = AvatarMetadata::from_xml(&xml).unwrap();
        let AvatarMetadata::Available(infos) = m else {
            panic!()
        };
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].bytes, 5);
        // Only bad ones: an error, not "disabled" (which would wipe a cached avatar).
        let xml = format!(
            "<metadata xmlns='urn:xmpp:avatar:metadata'>{}</metadata>",
            bad.concat()
        );
        assert!(matches!(
            AvatarMetadata::from_xml(&xml),
            Err(ProfileError::Malformed(_))
        ));
        // A flood of infos.
        let xml = format!(
            "<metadata xmlns='urn:xmpp:avatar:metadata'>{}</metadata>",
            good.repeat(5000)
        );
        assert_eq!(
            AvatarMetadata::from_xml(&xml),
            Err(ProfileError::TooMany {
                what: "info",
                limit: MAX_AVATAR_INFOS
            })
        );
        assert_eq!(
            AvatarMetadata::from_xml("<metadata"),
            Err(ProfileError::NotXml)
        );
    }

    // --- XEP-0153 ------------------------------------------------------------------------------

    #[test]
    fn xep0153_presence_examples() {
        let hash = sha1_hex(b"juliet");
        let with_hash = format!(
            "<presence xmlns='jabber:client' from='juliet@capulet.com/balcony'><x xmlns='vcard-temp:x:update'><photo>{}</photo></x></presence>",
            hash.to_uppercase()
        );
        assert_eq!(
            photo_update_from_xml(&with_hash).unwrap(),
            Some(PhotoUpdate::Photo(hash.clone()))
        );
        assert_eq!(
            photo_update_from_xml(
                "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'/></presence>"
            )
            .unwrap(),
            Some(PhotoUpdate::NotReady)
        );
        assert_eq!(
            photo_update_from_xml("<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
                .unwrap(),
            Some(PhotoUpdate::NoPhoto)
        );
        assert_eq!(
            photo_update_from_xml("<presence xmlns='jabber:client'/>").unwrap(),
            None
        );
        // The XEP's placeholder "sha1-hash-of-image" is not a hash: unknown, not a photo.
        assert_eq!(
            photo_update_from_xml("<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'><photo>sha1-hash-of-image</photo></x></presence>")
                .unwrap(),
            Some(PhotoUpdate::NotReady)
        );
        for u in [
            PhotoUpdate::NotReady,
            PhotoUpdate::NoPhoto,
            PhotoUpdate::Photo(hash.clone()),
        ] {
            let presence = format!(
                "<presence xmlns='jabber:client'>{}</presence>",
                photo_update_xml(&u)
            );
            assert_eq!(photo_update_from_xml(&presence).unwrap(), Some(u));
        }
    }

    #[test]
    fn xep0153_vcard_example_and_round_trip() {
        // The XEP's placeholder BINVAL is not base64.
        let example = "<vCard xmlns='vcard-temp'>
            <BDAY>1476-06-09</BDAY>
            <ADR><CTRY>Italy</CTRY><LOCALITY>Verona</LOCALITY><HOME/></ADR>
            <NICKNAME/>
            <N><GIVEN>Juliet</GIVEN><FAMILY>Capulet</FAMILY></N>
            <EMAIL>jcapulet@shakespeare.lit</EMAIL>
            <PHOTO><TYPE>image/jpeg</TYPE><BINVAL>
                Base64-encoded-avatar-file-here!
            </BINVAL></PHOTO>
          </vCard>";
        assert_eq!(
            vcard_temp_photo_from_xml(example),
            Err(ProfileError::BadBase64("BINVAL"))
        );
        let vcard = parse(example);
        let image = b"a tiny jpeg";
        let updated = vcard_temp_with_photo(&vcard, Some((image, "image/jpeg")));
        let photo = parse_vcard_temp_photo(&updated).unwrap().unwrap();
        assert_eq!(photo.data, image.to_vec());
        assert_eq!(photo.sha1, sha1_hex(image));
        assert_eq!(photo.media_type.as_deref(), Some("image/jpeg"));
        // The other fields are kept, the photo is there once.
        assert!(updated.has_child("BDAY", NS_VCARD_TEMP));
        assert!(updated.has_child("EMAIL", NS_VCARD_TEMP));
        assert_eq!(
            updated
                .children()
                .filter(|c| c.is("PHOTO", NS_VCARD_TEMP))
                .count(),
            1
        );
        let removed = vcard_temp_with_photo(&updated, None);
        assert_eq!(parse_vcard_temp_photo(&removed).unwrap(), None);
        assert!(removed.has_child("N", NS_VCARD_TEMP));
        // No PHOTO, EXTVAL only, empty BINVAL: no photo.
        for xml in [
            "<vCard xmlns='vcard-temp'/>",
            "<vCard xmlns='vcard-temp'><PHOTO><EXTVAL>http://example.org/a.png</EXTVAL></PHOTO></vCard>",
            "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL/></PHOTO></vCard>",
        ] {
            assert_eq!(vcard_temp_photo_from_xml(xml).unwrap(), None, "{xml}");
        }
        // A TYPE that is not an image type is ignored (a hint only).
        let odd = format!(
            "<vCard xmlns='vcard-temp'><PHOTO><TYPE>text/html</TYPE><BINVAL>{}</BINVAL></PHOTO></vCard>",
            base64_engine().encode(b"img")
        );
        assert_eq!(
            vcard_temp_photo_from_xml(&odd).unwrap().unwrap().media_type,
            None
        );
    }

    // --- XEP-0172 ------------------------------------------------------------------------------

    #[test]
    fn xep0172_examples() {
        assert_eq!(
            nick_from_xml("<nick xmlns='http://jabber.org/protocol/nick'>Ishmael</nick>").unwrap(),
            Some("Ishmael".into())
        );
        let subscribe = "<presence xmlns='jabber:client' from='narrator@moby-dick.lit' to='starbuck@moby-dick.lit' type='subscribe'>
          <nick xmlns='http://jabber.org/protocol/nick'>Ishmael</nick>
        </presence>";
        assert_eq!(
            stanza_nick_from_xml(subscribe).unwrap(),
            Some("Ishmael".into())
        );
        let first_message = "<message xmlns='jabber:client' from='narrator@moby-dick.lit/pda' to='starbuck@moby-dick.lit' type='chat'>
          <body>Call me Ishmael</body>
          <nick xmlns='http://jabber.org/protocol/nick'>Ishmael</nick>
        </message>";
        assert_eq!(
            stanza_nick_from_xml(first_message).unwrap(),
            Some("Ishmael".into())
        );
        // "MUST NOT be included in presence broadcasts": ignored there.
        let broadcast = "<presence xmlns='jabber:client' from='narrator@moby-dick.lit/pda'><nick xmlns='http://jabber.org/protocol/nick'>Ishmael</nick></presence>";
        assert_eq!(stanza_nick_from_xml(broadcast).unwrap(), None);
        // The PEP payload of the notification example.
        let event = parse("<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='http://jabber.org/protocol/nick'><item><nick xmlns='http://jabber.org/protocol/nick'>CallMeIshmael</nick></item></items></event>");
        let payload = event
            .get_child("items", "http://jabber.org/protocol/pubsub#event")
            .and_then(|i| i.children().next())
            .and_then(|i| i.children().next())
            .unwrap();
        assert_eq!(parse_nick(payload).unwrap(), Some("CallMeIshmael".into()));
        // Empty: withdrawn.
        assert_eq!(
            nick_from_xml("<nick xmlns='http://jabber.org/protocol/nick'/>").unwrap(),
            None
        );
        assert_eq!(
            nick_element_xml("Ishmael").unwrap(),
            "<nick xmlns='http://jabber.org/protocol/nick'>Ishmael</nick>"
        );
    }

    #[test]
    fn nick_with_control_characters_and_overrides_is_cleaned() {
        assert_eq!(
            clean_nick("Bob\u{0}\u{7}\r\n  the\tBuilder\u{1b}[31m"),
            Some("Bob the Builder[31m".into())
        );
        // Right-to-left override would display "gnp.exe" as "exe.png"-like tricks.
        assert_eq!(
            clean_nick("Alice\u{202E}gnp.exe"),
            Some("Alicegnp.exe".into())
        );
        assert_eq!(
            clean_nick("\u{2066}Mallory\u{2069}"),
            Some("Mallory".into())
        );
        // Emoji sequences (ZWJ) and non-Latin scripts survive.
        assert_eq!(
            clean_nick("👩\u{200D}💻 Ada"),
            Some("👩\u{200D}💻 Ada".into())
        );
        assert_eq!(clean_nick("سارة"), Some("سارة".into()));
        assert_eq!(clean_nick("\u{0}\u{1}\n "), None);
        let long = "x".repeat(200);
        assert_eq!(clean_nick(&long).unwrap().chars().count(), MAX_NICK_CHARS);
        assert_eq!(clean_nick(&"y".repeat(MAX_NICK_INPUT_BYTES + 1)), None);
        let stanza = "<message xmlns='jabber:client' from='eve@evil.example/x'><nick xmlns='http://jabber.org/protocol/nick'>Your&#x9;&#xa;Bank&#x202e;</nick></message>";
        assert_eq!(
            stanza_nick_from_xml(stanza).unwrap(),
            Some("Your Bank".into())
        );
        // XML 1.0 has no escape for C0 controls: such a stanza does not even parse.
        let escaped = "<message xmlns='jabber:client'><nick xmlns='http://jabber.org/protocol/nick'>a&#x1b;b</nick></message>";
        assert_eq!(stanza_nick_from_xml(escaped), Err(ProfileError::NotXml));
        // Our own: refused rather than published differently from how it would show.
        assert!(matches!(
            nick_element_xml("a\u{7}b"),
            Err(ProfileError::BadArgument(_))
        ));
        assert!(matches!(
            nick_element_xml("  "),
            Err(ProfileError::BadArgument(_))
        ));
        assert!(matches!(
            nick_element_xml(&long),
            Err(ProfileError::BadArgument(_))
        ));
        assert!(nick_element_xml(" Ishmael ").is_ok());
    }

    // --- XEP-0292 ------------------------------------------------------------------------------

    const XEP0292_EXAMPLE: &str = r#"<vcard xmlns="urn:ietf:params:xml:ns:vcard-4.0">
      <fn><text>Peter Saint-Andre</text></fn>
      <n><surname>Saint-Andre</surname><given>Peter</given><additional></additional></n>
      <nickname><text>stpeter</text></nickname>
      <nickname><text>psa</text></nickname>
      <photo><uri>https://stpeter.im/images/stpeter_oscon.jpg</uri></photo>
      <bday><date>1966-08-06</date></bday>
      <adr>
        <parameters><type><text>work</text><text>voice</text></type><pref><integer>1</integer></pref></parameters>
        <ext>Suite 600</ext><street>1899 Wynkoop Street</street><locality>Denver</locality>
        <region>CO</region><code>80202</code><country>USA</country>
      </adr>
      <tel>
        <parameters><type><text>work</text><text>voice</text></type><pref><integer>1</integer></pref></parameters>
        <uri>tel:+1-303-308-3282</uri>
      </tel>
      <tel>
        <parameters><type><text>work</text><text>fax</text></type></parameters>
        <uri>tel:+1-303-308-3219</uri>
      </tel>
      <geo><uri>geo:39.59,-105.01</uri></geo>
      <title><text>Executive Director</text></title>
      <url><uri>https://stpeter.im/</uri></url>
      <note>
        <text>
        More information about me is located on my
        personal website: https://stpeter.im/
        </text>
      </note>
      <email>
        <parameters><type><text>work</text></type></parameters>
        <text>psaintan@cisco.com</text>
      </email>
      <email>
        <parameters><type><text>home</text></type></parameters>
        <text>stpeter@jabber.org</text>
      </email>
      <impp>
        <parameters><type><text>work</text></type></parameters>
        <uri>xmpp:psaintan@cisco.com</uri>
      </impp>
    </vcard>"#;

    #[test]
    fn xep0292_example() {
        let v = Vcard4::from_xml(XEP0292_EXAMPLE).unwrap();
        assert_eq!(v.full_name.as_deref(), Some("Peter Saint-Andre"));
        assert_eq!(v.nicknames, ["stpeter", "psa"]);
        assert_eq!(v.urls, ["https://stpeter.im/"]);
        assert!(v.note.as_deref().unwrap().starts_with("More information"));
        assert!(v.note.as_deref().unwrap().contains('\n'));
        assert_eq!(
            v.emails,
            [
                Vcard4Entry {
                    value: "psaintan@cisco.com".into(),
                    types: vec!["work".into()]
                },
                Vcard4Entry {
                    value: "stpeter@jabber.org".into(),
                    types: vec!["home".into()]
                },
            ]
        );
        // The first phone has a PREF parameter we do not model: kept as it came.
        assert_eq!(
            v.tels,
            [Vcard4Entry {
                value: "tel:+1-303-308-3219".into(),
                types: vec!["work".into(), "fax".into()]
            }]
        );
        // n, photo, bday, adr, tel (with pref), geo, title, impp.
        assert_eq!(v.other.len(), 8, "{:?}", v.other);
        // Round trip: nothing lost, nothing changed.
        let again = Vcard4::from_xml(&v.to_xml().unwrap()).unwrap();
        assert_eq!(again, v);
        assert!(v.to_xml().unwrap().contains("1899 Wynkoop Street"));
        // The empty vCard of a user without one.
        assert!(
            Vcard4::from_xml("<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'/>")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn vcard4_with_thousands_of_elements_is_refused() {
        let xml = format!(
            "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>{}</vcard>",
            "<nickname><text>n</text></nickname>".repeat(5000)
        );
        assert_eq!(
            Vcard4::from_xml(&xml),
            Err(ProfileError::TooMany {
                what: "vcard property",
                limit: MAX_VCARD_PROPERTIES
            })
        );
        // At the limit it is read.
        let xml = format!(
            "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>{}</vcard>",
            "<nickname><text>n</text></nickname>".repeat(MAX_VCARD_PROPERTIES)
        );
        assert_eq!(
            Vcard4::from_xml(&xml).unwrap().nicknames.len(),
            MAX_VCARD_PROPERTIES
        );
    }

    #[test]
    fn vcard4_hostile_values() {
        let long = "z".repeat(MAX_VCARD_TEXT_BYTES + 1);
        let xml = format!(
            "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>
               <fn><text>Eve&#x202e;evE</text></fn>
               <note><text>{long}</text></note>
               <email><text>  </text></email>
               <x-custom xmlns='urn:example:custom'>kept</x-custom>
             </vcard>"
        );
        let v = Vcard4::from_xml(&xml).unwrap();
        assert_eq!(v.full_name.as_deref(), Some("EveevE"));
        assert_eq!(v.note, None, "too long to show");
        assert!(v.emails.is_empty());
        // The long note, the empty email and the foreign element are kept for republishing.
        assert_eq!(v.other.len(), 3);
        assert!(v.other[2].contains("urn:example:custom"));
        assert!(matches!(
            Vcard4::from_xml("<vCard xmlns='vcard-temp'/>"),
            Err(ProfileError::WrongElement { .. })
        ));
        // Our own values are checked before publishing.
        let bad = Vcard4 {
            full_name: Some("a\u{0}b".into()),
            ..Vcard4::default()
        };
        assert!(matches!(bad.to_xml(), Err(ProfileError::BadArgument(_))));
        let bad = Vcard4 {
            other: vec!["<unclosed".into()],
            ..Vcard4::default()
        };
        assert!(matches!(bad.to_xml(), Err(ProfileError::BadArgument(_))));
    }

    #[test]
    fn vcard4_builder() {
        let v = Vcard4 {
            full_name: Some("Juliet Capulet".into()),
            nicknames: vec!["Jules".into()],
            note: Some("Line one\nLine two".into()),
            urls: vec!["https://capulet.lit/".into()],
            emails: vec![Vcard4Entry {
                value: "juliet@capulet.lit".into(),
                types: vec!["home".into()],
            }],
            tels: vec![
                Vcard4Entry::new("tel:+39-045-555-0100"),
                Vcard4Entry::new("ask the nurse"),
            ],
            other: vec![
                "<bday xmlns='urn:ietf:params:xml:ns:vcard-4.0'><date>1582-07-31</date></bday>"
                    .into(),
            ],
        };
        let xml = v.to_xml().unwrap();
        assert!(xml.contains("<uri>tel:+39-045-555-0100</uri>"), "{xml}");
        assert!(xml.contains("<text>ask the nurse</text>"), "{xml}");
        let mut back = Vcard4::from_xml(&xml).unwrap();
        // Kept properties come back serialized by us, same content.
        assert_eq!(back.other.len(), 1);
        assert!(back.other[0].contains("1582-07-31"));
        back.other = v.other.clone();
        assert_eq!(back, v);
    }

    // --- XEP-0191 ------------------------------------------------------------------------------

    #[test]
    fn xep0191_blocklist_examples() {
        let list = "<blocklist xmlns='urn:xmpp:blocking'>
          <item jid='romeo@montague.net'/>
          <item jid='iago@shakespeare.lit'/>
        </blocklist>";
        assert_eq!(
            blocklist_from_xml(list).unwrap(),
            ["romeo@montague.net", "iago@shakespeare.lit"]
        );
        assert!(blocklist_from_xml("<blocklist xmlns='urn:xmpp:blocking'/>")
            .unwrap()
            .is_empty());
        // Domains and full JIDs are blocklist entries too (XEP-0191 §5); junk is left out.
        let mixed = "<blocklist xmlns='urn:xmpp:blocking'><item jid='spam.example'/><item jid='a@b.example/res'/><item jid='@@'/><item/><item jid='Romeo@Montague.NET'/><item jid='romeo@montague.net'/></blocklist>";
        assert_eq!(
            blocklist_from_xml(mixed).unwrap(),
            ["spam.example", "a@b.example/res", "romeo@montague.net"]
        );
    }

    #[test]
    fn xep0191_pushes_from_our_server() {
        let block = "<iq xmlns='jabber:client' to='juliet@capulet.com/chamber' type='set' id='push1'><block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block></iq>";
        let out = blocking_push_from_xml(block, &own()).unwrap();
        assert_eq!(
            out.push,
            Ok(BlockingPush::Blocked(vec!["romeo@montague.net".into()]))
        );
        let reply = parse(&out.reply_xml());
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("id"), Some("push1"));
        assert_eq!(reply.attr("to"), None);

        let unblock = "<iq xmlns='jabber:client' to='juliet@capulet.com/chamber' type='set' id='push3'><unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock></iq>";
        assert_eq!(
            blocking_push_from_xml(unblock, &own()).unwrap().push,
            Ok(BlockingPush::Unblocked(vec!["romeo@montague.net".into()]))
        );
        let all = "<iq xmlns='jabber:client' to='juliet@capulet.com/chamber' type='set' id='push5'><unblock xmlns='urn:xmpp:blocking'/></iq>";
        assert_eq!(
            blocking_push_from_xml(all, &own()).unwrap().push,
            Ok(BlockingPush::UnblockedAll)
        );
        // From our bare JID is our account too.
        let from_bare = "<iq xmlns='jabber:client' from='juliet@capulet.com' type='set' id='p'><unblock xmlns='urn:xmpp:blocking'/></iq>";
        assert_eq!(
            blocking_push_from_xml(from_bare, &own()).unwrap().push,
            Ok(BlockingPush::UnblockedAll)
        );
        // Not a push: a get, or another payload.
        assert!(blocking_push_from_xml(
            "<iq xmlns='jabber:client' type='get' id='g'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
            &own()
        )
        .is_none());
        assert!(blocking_push_from_xml(
            "<iq xmlns='jabber:client' type='set' id='r'><query xmlns='jabber:iq:roster'/></iq>",
            &own()
        )
        .is_none());
    }

    #[test]
    fn blocklist_push_from_someone_else_is_refused() {
        for from in [
            "eve@evil.example",
            "eve@evil.example/x",
            "capulet.com",
            "juliet@capulet.com/balcony",
        ] {
            let xml = format!("<iq xmlns='jabber:client' from='{from}' type='set' id='evil'><unblock xmlns='urn:xmpp:blocking'/></iq>");
            let out = blocking_push_from_xml(&xml, &own()).unwrap();
            assert_eq!(out.push, Err(ProfileError::ForeignPush), "{from}");
            let reply = parse(&out.reply_xml());
            assert_eq!(reply.attr("type"), Some("error"));
            assert_eq!(reply.attr("to"), Some(from));
            assert!(reply
                .get_child("error", ns::JABBER_CLIENT)
                .unwrap()
                .has_child("service-unavailable", ns::XMPP_STANZAS));
        }
    }

    #[test]
    fn malformed_pushes_never_unblock_everyone() {
        let junk_items = "<iq xmlns='jabber:client' type='set' id='j'><unblock xmlns='urn:xmpp:blocking'><item jid='@@'/><item/></unblock></iq>";
        let out = blocking_push_from_xml(junk_items, &own()).unwrap();
        assert!(matches!(out.push, Err(ProfileError::Malformed(_))));
        assert!(out.reply_xml().contains("bad-request"));
        let empty_block =
            "<iq xmlns='jabber:client' type='set' id='j'><block xmlns='urn:xmpp:blocking'/></iq>";
        assert!(matches!(
            blocking_push_from_xml(empty_block, &own()).unwrap().push,
            Err(ProfileError::Malformed(_))
        ));
        let flood = format!(
            "<iq xmlns='jabber:client' type='set' id='f'><block xmlns='urn:xmpp:blocking'>{}</block></iq>",
            "<item jid='a@b.example'/>".repeat(MAX_BLOCKLIST_ITEMS + 1)
        );
        assert!(matches!(
            blocking_push_from_xml(&flood, &own()).unwrap().push,
            Err(ProfileError::TooMany { .. })
        ));
    }

    #[test]
    fn xep0191_blocked_error() {
        let error = "<message xmlns='jabber:client' type='error' from='romeo@montague.net' to='juliet@capulet.com'>
          <body>Can you hear me now?</body>
          <error type='cancel'>
            <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
            <blocked xmlns='urn:xmpp:blocking:errors'/>
          </error>
        </message>";
        assert!(blocked_error_in_xml(error));
        let other = "<message xmlns='jabber:client' type='error'><error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>";
        assert!(!blocked_error_in_xml(other));
        let not_error = "<message xmlns='jabber:client'><error><blocked xmlns='urn:xmpp:blocking:errors'/></error></message>";
        assert!(!blocked_error_in_xml(not_error));
        assert!(!blocked_error_in_xml("<message"));
    }

    #[test]
    fn block_element_matches_the_xep() {
        let b = block_element(&[("romeo@montague.net".into(), None)]);
        assert_eq!(
            String::from(&b),
            "<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block>"
        );
        let own = own();
        assert!(matches!(
            checked_jids(&[], &own),
            Err(ProfileError::BadArgument(_))
        ));
        assert!(matches!(
            checked_jids(&["not a jid@@"], &own),
            Err(ProfileError::BadArgument(_))
        ));
        assert!(matches!(
            checked_jids(&["Juliet@Capulet.com"], &own),
            Err(ProfileError::BadArgument(_))
        ));
        assert_eq!(
            checked_jids(&["a@b.example", "A@B.example", "spam.example"], &own).unwrap(),
            ["a@b.example", "spam.example"]
        );
    }

    // --- XEP-0377 ------------------------------------------------------------------------------

    #[test]
    fn xep0377_examples() {
        let basic = Report::from_xml(
            r#"<report xmlns="urn:xmpp:reporting:1" reason="urn:xmpp:reporting:spam"/>"#,
        )
        .unwrap();
        assert_eq!(basic, Report::new(ReportReason::Spam));

        let with_ids = r#"<report xmlns="urn:xmpp:reporting:1" reason="urn:xmpp:reporting:spam">
            <stanza-id xmlns='urn:xmpp:sid:0' by='romeo@example.net' id='28482-98726-73623'/>
            <stanza-id xmlns='urn:xmpp:sid:0' by='romeo@example.net' id='38383-38018-18385'/>
            <text xml:lang="en">
              Never came trouble to my house like this.
            </text>
          </report>"#;
        let r = Report::from_xml(with_ids).unwrap();
        assert_eq!(r.reason, ReportReason::Spam);
        assert_eq!(
            r.text.as_deref(),
            Some("Never came trouble to my house like this.")
        );
        assert_eq!(r.lang.as_deref(), Some("en"));
        assert_eq!(
            r.stanzas,
            [
                ReportedStanza {
                    by: "romeo@example.net".into(),
                    id: "28482-98726-73623".into()
                },
                ReportedStanza {
                    by: "romeo@example.net".into(),
                    id: "38383-38018-18385".into()
                },
            ]
        );
        assert!(!r.report_origin && !r.third_party);
        assert_eq!(Report::from_xml(&r.to_xml().unwrap()).unwrap(), r);

        let opt_in = r#"<report xmlns="urn:xmpp:reporting:1" reason="urn:xmpp:reporting:spam">
            <text xml:lang="en">Never came trouble to my house like this.</text>
            <report-origin/>
            <third-party/>
          </report>"#;
        let r = Report::from_xml(opt_in).unwrap();
        assert!(r.report_origin && r.third_party);
        assert_eq!(Report::from_xml(&r.to_xml().unwrap()).unwrap(), r);

        // Sent with the blocking command, inside the item.
        let abuse = report_element(&Report::new(ReportReason::Abuse)).unwrap();
        let block = block_element(&[("romeo@example.net".into(), Some(abuse))]);
        let item = block.get_child("item", NS_BLOCKING).unwrap();
        assert_eq!(item.attr("jid"), Some("romeo@example.net"));
        assert_eq!(
            item.get_child("report", NS_REPORTING)
                .unwrap()
                .attr("reason"),
            Some("urn:xmpp:reporting:abuse")
        );

        assert!(matches!(
            Report::from_xml(
                r#"<report xmlns="urn:xmpp:reporting:1" reason="urn:xmpp:reporting:boredom"/>"#
            ),
            Err(ProfileError::Malformed(_))
        ));
        let bad = Report {
            stanzas: vec![ReportedStanza {
                by: "@@".into(),
                id: "x".into(),
            }],
            ..Report::new(ReportReason::Spam)
        };
        assert!(matches!(bad.to_xml(), Err(ProfileError::BadArgument(_))));
    }

    #[test]
    fn xep0377_discovery() {
        let with = parse("<query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:xmpp:reporting:1'/><feature var='urn:xmpp:blocking'/></query>");
        assert_eq!(
            parse_blocking_support(&with),
            BlockingSupport {
                blocking: true,
                reporting: true
            }
        );
        // The older namespace (XEP-0377 0.2) does not count: its payload differs.
        let old = parse("<query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:xmpp:reporting:0'/><feature var='urn:xmpp:blocking'/></query>");
        assert_eq!(
            parse_blocking_support(&old),
            BlockingSupport {
                blocking: true,
                reporting: false
            }
        );
    }
}
