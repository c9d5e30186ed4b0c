//! The Jingle ↔ SDP mapping (XEP-0166/0167/0176/0320/0338/0339/0293/0294).
//!
//! The WebRTC stack speaks SDP; the peer speaks Jingle. Everything in between lives here and
//! is pure: no I/O, no WebRTC objects, so it can be tested on its own.
//!
//! Jingle `senders` is absolute (initiator/responder) while SDP directions are relative to the
//! author of the SDP, so every function that maps directions takes our [`Role`] in the session.
//!
//! Input from either side is hostile until proven otherwise: sizes are capped, every token that
//! goes into SDP is checked for whitespace and control characters, and malformed data is an
//! error, never a panic.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use rand::Rng;
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::{
    Content, ContentId, Creator, Description, Senders, Transport as JingleTransport,
};
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};
use xmpp_parsers::jingle_grouping::{Content as GroupContent, Group, Semantics};
use xmpp_parsers::jingle_ice_udp::{
    Candidate, Transport as IceUdpTransport, Type as CandidateType,
};
use xmpp_parsers::jingle_rtcp_fb::RtcpFb;
use xmpp_parsers::jingle_rtp::{Channels, Description as RtpDescription, Parameter, PayloadType};
use xmpp_parsers::jingle_rtp_hdrext::{RtpHdrext, Senders as HdrextSenders};
use xmpp_parsers::jingle_ssma::{
    Group as SsrcGroup, Parameter as SsrcParameter, Semantics as SsrcSemantics, Source,
};
use xmpp_parsers::minidom::rxml::{Namespace, NcName};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

/// Whole SDP documents larger than this are refused; a real audio+video offer with a dozen
/// candidates is well under 16 KiB.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Longest accepted SDP line (long fmtp lines of H.264 profiles stay far below).
pub const MAX_LINE_BYTES: usize = 2048;
/// Most m= sections / Jingle contents in one description.
pub const MAX_CONTENTS: usize = 16;
/// Most payload types per content (browsers offer around 40 for video).
pub const MAX_PAYLOAD_TYPES: usize = 64;
/// Most candidates per content.
pub const MAX_CANDIDATES: usize = 64;
/// Most SSRCs, SSRC groups, header extensions, fmtp parameters or rtcp-fb per element.
pub const MAX_ITEMS: usize = 64;
/// Longest token (ufrag, pwd, foundation, codec name, parameter, URI, …).
pub const MAX_TOKEN: usize = 512;

/// Which side produced the SDP that Jingle describes, in offer/answer terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpType {
    Offer,
    Answer,
}

/// Our role in the Jingle session (not the content creator: a responder can create contents
/// with content-add, and the initiator's contents are answered by the responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

impl Role {
    fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }

    fn senders(self) -> Senders {
        match self {
            Role::Initiator => Senders::Initiator,
            Role::Responder => Senders::Responder,
        }
    }

    fn hdrext_senders(self) -> HdrextSenders {
        match self {
            Role::Initiator => HdrextSenders::Initiator,
            Role::Responder => HdrextSenders::Responder,
        }
    }
}

/// The Jingle side of one SDP: the contents of a session-initiate / session-accept /
/// content-add, and the `<group/>` that goes next to them in the `<jingle/>` element.
#[derive(Debug, Clone, PartialEq)]
pub struct JingleDescription {
    pub contents: Vec<Content>,
    pub group: Option<Group>,
}

/// ICE credentials of one media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

/// One remote candidate ready for the WebRTC stack (`RTCIceCandidateInit`): the SDP mid is the
/// Jingle content name, `candidate` is the attribute value with its `candidate:` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrickleCandidate {
    pub mid: String,
    pub ufrag: Option<String>,
    pub candidate: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("SDP is {0} bytes, more than the {MAX_SDP_BYTES} accepted")]
    SdpTooLarge(usize),
    #[error("SDP line {line} is malformed: {reason}")]
    MalformedSdp { line: usize, reason: &'static str },
    #[error("SDP line {0} contains a control or non-ASCII character")]
    BadCharacter(usize),
    #[error("SDP does not start with v=0")]
    NotSdp,
    #[error("too many {what} (limit {limit})")]
    TooMany { what: &'static str, limit: usize },
    #[error("{what} is longer than {MAX_TOKEN} bytes")]
    TooLong { what: &'static str },
    #[error("media type {0:?} is not supported (audio and video only)")]
    UnknownMedia(String),
    #[error("media section {0:?} is not RTP over DTLS-SRTP (profile {1:?})")]
    UnsupportedProfile(String, String),
    #[error("media section has no a=mid")]
    MissingMid,
    #[error("duplicate mid / content name {0:?}")]
    DuplicateMid(String),
    #[error("content {0:?} has no RTP description")]
    MissingDescription(String),
    #[error("content {0:?} has no ICE-UDP transport")]
    MissingIceUdpTransport(String),
    #[error("content {0:?} has no ICE ufrag/pwd")]
    MissingIceCredentials(String),
    #[error("content {0:?} has no DTLS fingerprint (DTLS-SRTP is mandatory)")]
    MissingFingerprint(String),
    #[error("content {0:?} has no DTLS setup role")]
    MissingSetup(String),
    #[error("DTLS setup {setup:?} is not valid in an {kind:?}")]
    BadSetup { setup: String, kind: SdpType },
    #[error("DTLS fingerprint is malformed")]
    BadFingerprint,
    #[error("contents carry different DTLS fingerprints; BUNDLE needs one")]
    ConflictingFingerprints,
    #[error("payload type {0} is out of range 0..=127")]
    PayloadTypeOutOfRange(u32),
    #[error("payload type {0} has no codec name")]
    MissingCodecName(u8),
    #[error("attribute {attribute} is malformed: {reason}")]
    BadAttribute {
        attribute: &'static str,
        reason: &'static str,
    },
    #[error("{what} contains whitespace, control characters or is empty")]
    BadToken { what: &'static str },
    #[error("candidate is malformed: {0}")]
    BadCandidate(&'static str),
    #[error("candidate protocol {0:?} is not supported (ICE-UDP carries UDP candidates only)")]
    UnsupportedCandidateProtocol(String),
    #[error("candidate address {0:?} is not an IP address (mDNS names are not supported)")]
    BadAddress(String),
    #[error("port {0} is out of range")]
    BadPort(u32),
    #[error("group refers to unknown content {0:?}")]
    UnknownGroupMember(String),
    #[error("no media in the description")]
    NoContents,
    #[error("content {0:?} has no usable payload type")]
    NoPayloadTypes(String),
}

type Result<T> = std::result::Result<T, MappingError>;

// ---------------------------------------------------------------------------------------------
// A small SDP reader: only the structure we need, everything else kept as raw attributes.

#[derive(Debug, Default)]
struct Attr {
    key: String,
    value: Option<String>,
}

#[derive(Debug)]
struct Media {
    kind: String,
    port: u16,
    proto: String,
    formats: Vec<u8>,
    attrs: Vec<Attr>,
}

#[derive(Debug, Default)]
struct Sdp {
    attrs: Vec<Attr>,
    media: Vec<Media>,
}

fn find<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

fn values<'a>(attrs: &'a [Attr], key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    attrs
        .iter()
        .filter(move |a| a.key == key)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

fn parse_sdp(input: &str) -> Result<Sdp> {
    if input.len() > MAX_SDP_BYTES {
        return Err(MappingError::SdpTooLarge(input.len()));
    }
    let mut sdp = Sdp::default();
    let mut seen_version = false;
    let mut attr_count = 0usize;
    for (index, raw) in input.split('\n').enumerate() {
        let number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(MappingError::MalformedSdp {
                line: number,
                reason: "line too long",
            });
        }
        // Free text (s=, i=) may legitimately be UTF-8; everything we interpret is ASCII.
        let free_text = line.starts_with("s=") || line.starts_with("i=");
        if line
            .chars()
            .any(|c| c.is_control() && c != '\t' || (!free_text && !c.is_ascii()))
        {
            return Err(MappingError::BadCharacter(number));
        }
        if !seen_version {
            if line != "v=0" {
                return Err(MappingError::NotSdp);
            }
            seen_version = true;
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(MappingError::MalformedSdp {
                line: number,
                reason: "not a <type>=<value> line",
            });
        }
        let value = &line[2..];
        match bytes[0] {
            b'm' => {
                if sdp.media.len() >= MAX_CONTENTS {
                    return Err(MappingError::TooMany {
                        what: "media sections",
                        limit: MAX_CONTENTS,
                    });
                }
                sdp.media.push(parse_m_line(value, number)?);
            }
            b'a' => {
                attr_count += 1;
                if attr_count > MAX_CONTENTS * (MAX_PAYLOAD_TYPES * 4 + MAX_CANDIDATES) {
                    return Err(MappingError::TooMany {
                        what: "SDP attributes",
                        limit: MAX_CONTENTS * (MAX_PAYLOAD_TYPES * 4 + MAX_CANDIDATES),
                    });
                }
                let attr = match value.split_once(':') {
                    Some((k, v)) => Attr {
                        key: k.to_owned(),
                        value: Some(v.to_owned()),
                    },
                    None => Attr {
                        key: value.to_owned(),
                        value: None,
                    },
                };
                match sdp.media.last_mut() {
                    Some(m) => m.attrs.push(attr),
                    None => sdp.attrs.push(attr),
                }
            }
            // o=, s=, t=, c=, b= and the rest carry nothing Jingle can express.
            _ => {}
        }
    }
    if !seen_version {
        return Err(MappingError::NotSdp);
    }
    Ok(sdp)
}

fn parse_m_line(value: &str, line: usize) -> Result<Media> {
    let mut parts = value.split(' ');
    let malformed = |reason| MappingError::MalformedSdp { line, reason };
    let kind = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(malformed("m= without media"))?;
    let port_text = parts.next().ok_or(malformed("m= without port"))?;
    let port_text = port_text.split('/').next().unwrap_or(port_text);
    let port: u32 = port_text
        .parse()
        .map_err(|_| malformed("m= port is not a number"))?;
    let port = u16::try_from(port).map_err(|_| MappingError::BadPort(port))?;
    let proto = parts
        .next()
        .ok_or(malformed("m= without protocol"))?
        .to_owned();
    let mut formats = Vec::new();
    for f in parts {
        if formats.len() >= MAX_PAYLOAD_TYPES {
            return Err(MappingError::TooMany {
                what: "payload types",
                limit: MAX_PAYLOAD_TYPES,
            });
        }
        if !proto.contains("RTP") {
            // Non-RTP sections (data channels) have non-numeric formats; rejected later.
            continue;
        }
        let id: u32 = f
            .parse()
            .map_err(|_| malformed("m= format is not a number"))?;
        formats.push(check_pt(id)?);
    }
    Ok(Media {
        kind: kind.to_owned(),
        port,
        proto,
        formats,
        attrs: Vec::new(),
    })
}

fn check_pt(id: u32) -> Result<u8> {
    match u8::try_from(id) {
        Ok(pt) if pt <= 127 => Ok(pt),
        _ => Err(MappingError::PayloadTypeOutOfRange(id)),
    }
}

/// A token that will be written into SDP or Jingle: no whitespace, no control characters.
fn token<'a>(s: &'a str, what: &'static str) -> Result<&'a str> {
    if s.len() > MAX_TOKEN {
        return Err(MappingError::TooLong { what });
    }
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(MappingError::BadToken { what });
    }
    Ok(s)
}

/// Free text inside an SDP attribute (msid values, rtcp-fb parameters): spaces allowed, line
/// breaks and other control characters not.
fn text<'a>(s: &'a str, what: &'static str) -> Result<&'a str> {
    if s.len() > MAX_TOKEN {
        return Err(MappingError::TooLong { what });
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(MappingError::BadToken { what });
    }
    Ok(s)
}

fn cap<T>(v: &[T], limit: usize, what: &'static str) -> Result<()> {
    if v.len() >= limit {
        Err(MappingError::TooMany { what, limit })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprints.

fn parse_hex_fingerprint(s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    // SHA-512 is the longest hash in use; anything past it is garbage.
    if s.is_empty() || s.len() > 64 * 3 {
        return Err(MappingError::BadFingerprint);
    }
    let mut out = Vec::new();
    for pair in s.split(':') {
        let b = pair.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_hexdigit) {
            return Err(MappingError::BadFingerprint);
        }
        out.push(u8::from_str_radix(pair, 16).map_err(|_| MappingError::BadFingerprint)?);
    }
    if out.len() < 16 {
        return Err(MappingError::BadFingerprint);
    }
    Ok(out)
}

fn hex_fingerprint(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

fn parse_setup(s: &str, kind: SdpType) -> Result<Setup> {
    let setup = match s {
        "actpass" => Setup::Actpass,
        "active" => Setup::Active,
        "passive" => Setup::Passive,
        other => {
            return Err(MappingError::BadSetup {
                setup: other.chars().take(32).collect(),
                kind,
            })
        }
    };
    check_setup(&setup, kind)?;
    Ok(setup)
}

/// RFC 8842 §5: the answerer picks a side; only an offer may leave it open.
fn check_setup(setup: &Setup, kind: SdpType) -> Result<()> {
    if kind == SdpType::Answer && *setup == Setup::Actpass {
        return Err(MappingError::BadSetup {
            setup: "actpass".into(),
            kind,
        });
    }
    Ok(())
}

fn setup_str(setup: &Setup) -> &'static str {
    match setup {
        Setup::Actpass => "actpass",
        Setup::Active => "active",
        Setup::Passive => "passive",
    }
}

fn algo_str(algo: &Algo) -> Result<String> {
    let s: String = algo.clone().into();
    token(&s, "fingerprint hash")?;
    Ok(s)
}

/// Run on a received `<jingle/>` before parsing it (xmpp-parsers panics on some malformed
/// fingerprints); the XMPP layer does for every Jingle request.
pub use linnet_xmpp::jingle::sanitize_jingle_element;

// ---------------------------------------------------------------------------------------------
// ICE-UDP transport: xmpp-parsers 0.23 keeps ufrag/pwd/candidates/fingerprint private, so we
// read and build it through its XML form.

struct TransportParts {
    ufrag: Option<String>,
    pwd: Option<String>,
    candidates: Vec<Candidate>,
    fingerprint: Option<(Algo, Setup, Vec<u8>)>,
}

fn read_transport(t: &IceUdpTransport) -> Result<TransportParts> {
    let elem = Element::from(t);
    let mut parts = TransportParts {
        ufrag: elem.attr("ufrag").map(str::to_owned),
        pwd: elem.attr("pwd").map(str::to_owned),
        candidates: Vec::new(),
        fingerprint: None,
    };
    for child in elem.children() {
        if child.is("candidate", ns::JINGLE_ICE_UDP) {
            cap(&parts.candidates, MAX_CANDIDATES, "candidates")?;
            let c = Candidate::try_from(child.clone())
                .map_err(|_| MappingError::BadCandidate("invalid Jingle candidate"))?;
            parts.candidates.push(c);
        } else if child.is("fingerprint", ns::JINGLE_DTLS) && parts.fingerprint.is_none() {
            // Read by hand: re-parsing through xmpp-parsers can panic on odd text.
            let hash: Algo = child
                .attr("hash")
                .unwrap_or("")
                .parse()
                .map_err(|_| MappingError::BadFingerprint)?;
            let setup = match child.attr("setup") {
                Some("actpass") => Setup::Actpass,
                Some("active") => Setup::Active,
                Some("passive") => Setup::Passive,
                _ => return Err(MappingError::BadFingerprint),
            };
            let value = parse_hex_fingerprint(&child.text())?;
            parts.fingerprint = Some((hash, setup, value));
        }
    }
    Ok(parts)
}

fn build_transport(
    creds: Option<&IceCredentials>,
    fingerprint: Option<Fingerprint>,
    candidates: Vec<Candidate>,
) -> Result<IceUdpTransport> {
    let mut t = IceUdpTransport::new();
    for c in candidates {
        t = t.add_candidate(c);
    }
    if let Some(fp) = fingerprint {
        t = t.with_fingerprint(fp);
    }
    let mut elem = Element::from(t);
    if let Some(creds) = creds {
        for (name, value) in [("ufrag", &creds.ufrag), ("pwd", &creds.pwd)] {
            let name = NcName::try_from(name).map_err(|_| MappingError::BadAttribute {
                attribute: "transport",
                reason: "attribute name",
            })?;
            elem.set_attr(Namespace::NONE, name, value.as_str());
        }
    }
    IceUdpTransport::try_from(elem).map_err(|_| MappingError::BadAttribute {
        attribute: "transport",
        reason: "could not build the ICE-UDP transport",
    })
}

// ---------------------------------------------------------------------------------------------
// Candidates.

fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..12)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn parse_port(s: &str) -> Result<u16> {
    let n: u32 = s
        .parse()
        .map_err(|_| MappingError::BadCandidate("port is not a number"))?;
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(MappingError::BadPort(n)),
    }
}

fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| MappingError::BadAddress(s.chars().take(64).collect()))
}

fn is_ice_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/'
}

/// One trickled (or inline) SDP candidate → Jingle. Accepts `a=candidate:…`, `candidate:…` or
/// the bare value. TCP candidates are refused with [`MappingError::UnsupportedCandidateProtocol`]:
/// XEP-0176 is ICE-UDP and has no `tcptype`; callers skip them.
pub fn candidate_to_jingle(sdp_candidate: &str) -> Result<Candidate> {
    let s = sdp_candidate.trim_end_matches(['\r', '\n']);
    let s = s.strip_prefix("a=").unwrap_or(s);
    let s = s.strip_prefix("candidate:").unwrap_or(s);
    if s.len() > MAX_LINE_BYTES {
        return Err(MappingError::TooLong { what: "candidate" });
    }
    if s.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(MappingError::BadCandidate("control or non-ASCII character"));
    }
    let f: Vec<&str> = s.split_ascii_whitespace().collect();
    if f.len() < 8 {
        return Err(MappingError::BadCandidate("fewer than 8 fields"));
    }
    let foundation = f[0];
    if foundation.len() > 32 || !foundation.chars().all(is_ice_char) || foundation.is_empty() {
        return Err(MappingError::BadCandidate("foundation"));
    }
    let component: u8 = f[1]
        .parse()
        .ok()
        .filter(|c| *c >= 1)
        .ok_or(MappingError::BadCandidate("component"))?;
    let protocol = f[2].to_ascii_lowercase();
    if protocol != "udp" {
        return Err(MappingError::UnsupportedCandidateProtocol(
            protocol.chars().take(16).collect(),
        ));
    }
    let priority: u32 = f[3]
        .parse()
        .map_err(|_| MappingError::BadCandidate("priority"))?;
    let ip = parse_ip(f[4])?;
    let port = parse_port(f[5])?;
    if f[6] != "typ" {
        return Err(MappingError::BadCandidate("missing typ"));
    }
    let type_ = match f[7] {
        "host" => CandidateType::Host,
        "srflx" => CandidateType::Srflx,
        "prflx" => CandidateType::Prflx,
        "relay" => CandidateType::Relay,
        _ => return Err(MappingError::BadCandidate("unknown candidate type")),
    };
    let mut c = Candidate {
        component,
        foundation: foundation.to_owned(),
        generation: 0,
        id: random_id(),
        ip,
        port,
        priority,
        protocol,
        rel_addr: None,
        rel_port: None,
        network: None,
        type_,
    };
    let rest = &f[8..];
    if rest.len() % 2 != 0 {
        return Err(MappingError::BadCandidate("extension without value"));
    }
    for pair in rest.chunks(2) {
        let (name, value) = (pair[0], pair[1]);
        match name {
            "raddr" => c.rel_addr = Some(parse_ip(value)?),
            // Browsers hide host addresses behind raddr 0.0.0.0 rport 0: keep it as given.
            "rport" => {
                c.rel_port = Some(
                    value
                        .parse()
                        .map_err(|_| MappingError::BadCandidate("rport"))?,
                )
            }
            "generation" => {
                c.generation = value
                    .parse()
                    .map_err(|_| MappingError::BadCandidate("generation"))?
            }
            // libwebrtc calls it network-id; XEP-0176 maps "network". Out-of-range ids are
            // diagnostics only, so they are dropped rather than refused.
            "network-id" | "network" => c.network = value.parse().ok(),
            "tcptype" => return Err(MappingError::UnsupportedCandidateProtocol("tcp".into())),
            // ufrag, network-cost and future extensions carry nothing Jingle can hold.
            _ => {}
        }
    }
    if c.rel_addr.is_some() != c.rel_port.is_some() {
        return Err(MappingError::BadCandidate(
            "raddr without rport or the reverse",
        ));
    }
    Ok(c)
}

/// Jingle candidate → SDP attribute value `candidate:…` (no `a=`), as webrtc's
/// `RTCIceCandidateInit::candidate` wants it. Infallible by contract, so fields that cannot be
/// written safely are replaced: use [`try_candidate_to_sdp`] for candidates from the network.
pub fn candidate_to_sdp(c: &Candidate) -> String {
    try_candidate_to_sdp(c).unwrap_or_else(|_| {
        let foundation: String = c
            .foundation
            .chars()
            .filter(|ch| is_ice_char(*ch))
            .take(32)
            .collect();
        let safe = Candidate {
            foundation: if foundation.is_empty() {
                "0".into()
            } else {
                foundation
            },
            protocol: "udp".into(),
            component: c.component.max(1),
            port: c.port.max(9),
            rel_addr: c.rel_addr.filter(|_| c.rel_port.is_some()),
            rel_port: c.rel_port.filter(|_| c.rel_addr.is_some()),
            ..c.clone()
        };
        write_candidate(&safe)
    })
}

/// Like [`candidate_to_sdp`], but refuses candidates that are not valid ICE-UDP candidates.
pub fn try_candidate_to_sdp(c: &Candidate) -> Result<String> {
    if !c.protocol.eq_ignore_ascii_case("udp") {
        return Err(MappingError::UnsupportedCandidateProtocol(
            c.protocol.chars().take(16).collect(),
        ));
    }
    if c.foundation.is_empty() || c.foundation.len() > 32 || !c.foundation.chars().all(is_ice_char)
    {
        return Err(MappingError::BadCandidate("foundation"));
    }
    if c.component == 0 {
        return Err(MappingError::BadCandidate("component"));
    }
    if c.port == 0 {
        return Err(MappingError::BadPort(0));
    }
    if c.rel_addr.is_some() != c.rel_port.is_some() {
        return Err(MappingError::BadCandidate(
            "rel-addr without rel-port or the reverse",
        ));
    }
    Ok(write_candidate(c))
}

fn write_candidate(c: &Candidate) -> String {
    let type_ = match c.type_ {
        CandidateType::Host => "host",
        CandidateType::Srflx => "srflx",
        CandidateType::Prflx => "prflx",
        CandidateType::Relay => "relay",
    };
    let mut s = format!(
        "candidate:{} {} udp {} {} {} typ {}",
        c.foundation, c.component, c.priority, c.ip, c.port, type_
    );
    if let (Some(addr), Some(port)) = (c.rel_addr, c.rel_port) {
        let _ = write!(s, " raddr {addr} rport {port}");
    }
    let _ = write!(s, " generation {}", c.generation);
    if let Some(network) = c.network {
        let _ = write!(s, " network-id {network}");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Trickle ICE (transport-info).

/// The DTLS role (`active` / `passive`) an SDP takes: the first `a=setup` that is not
/// `actpass`. An answer always has one (RFC 5763 §5).
pub fn dtls_role(sdp: &str) -> Option<&'static str> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=setup:"))
        .find_map(|v| match v.trim() {
            "active" => Some("active"),
            "passive" => Some("passive"),
            _ => None,
        })
}

/// The DTLS role opposite to `role`.
pub fn other_dtls_role(role: &str) -> &'static str {
    if role == "active" {
        "passive"
    } else {
        "active"
    }
}

/// A description first sent as an offer (the peer's session-initiate) says `actpass`, which
/// no answer may (RFC 5763 §5): before it is rebuilt as an answer (a content-add of ours
/// accepted), each `actpass` becomes `role`, the DTLS role the peer took when the session
/// began.
pub fn settle_dtls_role(desc: &mut JingleDescription, role: &str) -> Result<()> {
    for content in &mut desc.contents {
        let Some(JingleTransport::IceUdp(t)) = &content.transport else {
            continue;
        };
        let mut elem = Element::from(t.clone());
        for fp in elem.children_mut() {
            if fp.is("fingerprint", ns::JINGLE_DTLS) && fp.attr("setup") == Some("actpass") {
                let name = NcName::try_from("setup").map_err(|_| MappingError::BadFingerprint)?;
                fp.set_attr(Namespace::NONE, name, role);
            }
        }
        let t = IceUdpTransport::try_from(elem).map_err(|_| MappingError::BadFingerprint)?;
        content.transport = Some(JingleTransport::IceUdp(t));
    }
    Ok(())
}

/// The ICE credentials of the media section `mid` in an SDP (session-level as fallback), e.g.
/// our local description, to put them on outgoing transport-info.
pub fn ice_credentials(sdp: &str, mid: &str) -> Result<IceCredentials> {
    let parsed = parse_sdp(sdp)?;
    let media = parsed
        .media
        .iter()
        .find(|m| find(&m.attrs, "mid") == Some(mid))
        .ok_or(MappingError::MissingMid)?;
    credentials(&media.attrs, &parsed.attrs)
        .ok_or_else(|| MappingError::MissingIceCredentials(mid.into()))
}

fn credentials(media: &[Attr], session: &[Attr]) -> Option<IceCredentials> {
    let ufrag = find(media, "ice-ufrag").or_else(|| find(session, "ice-ufrag"))?;
    let pwd = find(media, "ice-pwd").or_else(|| find(session, "ice-pwd"))?;
    Some(IceCredentials {
        ufrag: ufrag.to_owned(),
        pwd: pwd.to_owned(),
    })
}

/// A local trickled candidate (webrtc's `RTCIceCandidate::to_json().candidate` and its
/// `sdp_mid`) → the `<content/>` of a transport-info: content name = mid, ICE-UDP transport
/// with our ufrag/pwd and the one candidate.
pub fn transport_info_content(
    mid: &str,
    creator: Creator,
    creds: &IceCredentials,
    sdp_candidate: &str,
) -> Result<Content> {
    token(mid, "mid")?;
    token(&creds.ufrag, "ice-ufrag")?;
    token(&creds.pwd, "ice-pwd")?;
    let candidate = candidate_to_jingle(sdp_candidate)?;
    let transport = build_transport(Some(creds), None, vec![candidate])?;
    Ok(Content::new(creator, ContentId(mid.to_owned())).with_transport(transport))
}

/// A received transport-info `<content/>` → candidates for webrtc's `add_ice_candidate`
/// (mid = content name). Non-UDP candidates are skipped; other malformed ones are errors.
pub fn transport_info_candidates(content: &Content) -> Result<Vec<TrickleCandidate>> {
    let mid = token(&content.name.0, "content name")?.to_owned();
    let Some(JingleTransport::IceUdp(t)) = &content.transport else {
        return Err(MappingError::MissingIceUdpTransport(mid));
    };
    let parts = read_transport(t)?;
    let ufrag = match parts.ufrag {
        Some(u) => Some(token(&u, "ice-ufrag")?.to_owned()),
        None => None,
    };
    let mut out = Vec::new();
    for c in &parts.candidates {
        match try_candidate_to_sdp(c) {
            Ok(candidate) => out.push(TrickleCandidate {
                mid: mid.clone(),
                ufrag: ufrag.clone(),
                candidate,
            }),
            Err(MappingError::UnsupportedCandidateProtocol(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SDP → Jingle.

/// SDP from the WebRTC stack (ours) → Jingle contents for session-initiate (our offer, we are
/// initiator), session-accept (our answer, we are responder) or content-add.
///
/// `creator` is the Jingle creator of the contents (initiator for initiate/accept); `role` is
/// our role in the session, needed to turn `a=sendonly`/`recvonly` into `senders`. With
/// `include_candidates = false` inline candidates are left out (they are trickled later).
/// Rejected media sections (port 0) are left out, and dropped from the BUNDLE group.
pub fn sdp_to_jingle(
    sdp: &str,
    creator: Creator,
    role: Role,
    include_candidates: bool,
) -> Result<JingleDescription> {
    let parsed = parse_sdp(sdp)?;
    let mut contents: Vec<Content> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut fingerprints: Vec<Vec<u8>> = Vec::new();
    for media in &parsed.media {
        if media.port == 0 {
            continue;
        }
        let (content, fp) = media_to_content(
            media,
            &parsed.attrs,
            creator.clone(),
            role,
            include_candidates,
        )?;
        if names.contains(&content.name.0) {
            return Err(MappingError::DuplicateMid(content.name.0.clone()));
        }
        names.push(content.name.0.clone());
        fingerprints.push(fp);
        contents.push(content);
    }
    if contents.is_empty() {
        return Err(MappingError::NoContents);
    }
    if fingerprints.windows(2).any(|w| w[0] != w[1]) {
        return Err(MappingError::ConflictingFingerprints);
    }
    let mut group = None;
    for g in values(&parsed.attrs, "group") {
        let mut it = g.split_ascii_whitespace();
        let semantics = match it.next() {
            Some("BUNDLE") => Semantics::Bundle,
            Some("LS") => Semantics::Ls,
            _ => continue,
        };
        if group.is_some() {
            // Jingle carries one group; a second BUNDLE makes no sense for one call.
            continue;
        }
        let mut members = Vec::new();
        for tag in it {
            cap(&members, MAX_CONTENTS, "group members")?;
            if names.iter().any(|n| n == tag) {
                members.push(GroupContent::new(tag));
            } else if !parsed
                .media
                .iter()
                .any(|m| m.port == 0 && find(&m.attrs, "mid") == Some(tag))
            {
                return Err(MappingError::UnknownGroupMember(
                    tag.chars().take(64).collect(),
                ));
            }
        }
        group = Some(Group {
            semantics,
            contents: members,
        });
    }
    Ok(JingleDescription { contents, group })
}

fn media_to_content(
    media: &Media,
    session: &[Attr],
    creator: Creator,
    role: Role,
    include_candidates: bool,
) -> Result<(Content, Vec<u8>)> {
    if media.kind != "audio" && media.kind != "video" {
        return Err(MappingError::UnknownMedia(
            media.kind.chars().take(32).collect(),
        ));
    }
    if !media.proto.contains("SAVPF") && !media.proto.contains("SAVP") {
        return Err(MappingError::UnsupportedProfile(
            media.kind.clone(),
            media.proto.chars().take(32).collect(),
        ));
    }
    let attrs = &media.attrs;
    let mid = token(find(attrs, "mid").ok_or(MappingError::MissingMid)?, "mid")?.to_owned();

    // Transport: ICE credentials, DTLS fingerprint and setup, candidates.
    let creds = credentials(attrs, session)
        .ok_or_else(|| MappingError::MissingIceCredentials(mid.clone()))?;
    token(&creds.ufrag, "ice-ufrag")?;
    token(&creds.pwd, "ice-pwd")?;
    let fp_line = find(attrs, "fingerprint")
        .or_else(|| find(session, "fingerprint"))
        .ok_or_else(|| MappingError::MissingFingerprint(mid.clone()))?;
    let (hash, value) = fp_line
        .trim()
        .split_once(' ')
        .ok_or(MappingError::BadFingerprint)?;
    let hash = token(&hash.to_ascii_lowercase(), "fingerprint hash")?.to_owned();
    let fp_bytes = parse_hex_fingerprint(value)?;
    let setup_line = find(attrs, "setup")
        .or_else(|| find(session, "setup"))
        .ok_or_else(|| MappingError::MissingSetup(mid.clone()))?;
    // Our own SDP: an offer may say actpass, an answer must not; both are checked by webrtc
    // already, so only the vocabulary is enforced here.
    let setup = parse_setup(setup_line, SdpType::Offer)?;
    let algo: Algo = hash.parse().map_err(|_| MappingError::BadFingerprint)?;
    let fingerprint = Fingerprint {
        hash: algo,
        setup,
        value: fp_bytes.clone(),
    };
    let mut candidates = Vec::new();
    if include_candidates {
        for value in values(attrs, "candidate") {
            cap(&candidates, MAX_CANDIDATES, "candidates")?;
            match candidate_to_jingle(value) {
                Ok(c) => candidates.push(c),
                Err(MappingError::UnsupportedCandidateProtocol(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    } else if values(attrs, "candidate").count() > MAX_CANDIDATES {
        return Err(MappingError::TooMany {
            what: "candidates",
            limit: MAX_CANDIDATES,
        });
    }
    let transport = build_transport(Some(&creds), Some(fingerprint), candidates)?;

    // Description.
    let mut desc = RtpDescription::new(media.kind.clone());
    let mut by_pt: HashMap<u8, usize> = HashMap::new();
    for &pt in &media.formats {
        if by_pt.contains_key(&pt) {
            continue;
        }
        by_pt.insert(pt, desc.payload_types.len());
        desc.payload_types.push(PayloadType {
            channels: Channels(1),
            clockrate: None,
            id: pt,
            maxptime: None,
            name: None,
            ptime: None,
            parameters: Vec::new(),
            rtcp_fbs: Vec::new(),
        });
    }
    let ptime: Option<u32> = find(attrs, "ptime").and_then(|v| v.trim().parse().ok());
    let maxptime: Option<u32> = find(attrs, "maxptime").and_then(|v| v.trim().parse().ok());
    let mut wildcard_fb: Vec<RtcpFb> = Vec::new();
    let mut ssrc_order: Vec<u32> = Vec::new();
    let mut ssrc_params: HashMap<u32, Vec<SsrcParameter>> = HashMap::new();
    let mut msid: Option<String> = None;
    let mut direction = "sendrecv";
    for a in attrs {
        let v = a.value.as_deref().unwrap_or("");
        match a.key.as_str() {
            "rtpmap" => {
                let (pt, rest) = split_pt(v, "rtpmap")?;
                let Some(&i) = by_pt.get(&pt) else { continue };
                let mut parts = rest.split('/');
                let name = token(parts.next().unwrap_or(""), "codec name")?;
                let clock: u32 = parts.next().and_then(|c| c.parse().ok()).ok_or(
                    MappingError::BadAttribute {
                        attribute: "rtpmap",
                        reason: "clock rate",
                    },
                )?;
                let channels: u8 = match parts.next() {
                    Some(c) => c.parse().map_err(|_| MappingError::BadAttribute {
                        attribute: "rtpmap",
                        reason: "channels",
                    })?,
                    None => 1,
                };
                let p = &mut desc.payload_types[i];
                p.name = Some(name.to_owned());
                p.clockrate = Some(clock);
                p.channels = Channels(channels);
            }
            "fmtp" => {
                let (pt, rest) = split_pt(v, "fmtp")?;
                let Some(&i) = by_pt.get(&pt) else { continue };
                for param in rest.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    cap(
                        &desc.payload_types[i].parameters,
                        MAX_ITEMS,
                        "fmtp parameters",
                    )?;
                    let (name, value) = param.split_once('=').unwrap_or((param, ""));
                    desc.payload_types[i].parameters.push(Parameter {
                        name: token(name.trim(), "fmtp parameter")?.to_owned(),
                        value: text(value.trim(), "fmtp value")?.to_owned(),
                    });
                }
            }
            "rtcp-fb" => {
                let (pt_text, rest) = v.split_once(' ').ok_or(MappingError::BadAttribute {
                    attribute: "rtcp-fb",
                    reason: "no feedback type",
                })?;
                let mut fb_parts = rest.trim().splitn(2, ' ');
                let type_ = token(fb_parts.next().unwrap_or(""), "rtcp-fb type")?;
                // trr-int has its own element in XEP-0293 that xmpp-parsers 0.23 lacks.
                if type_ == "trr-int" {
                    continue;
                }
                let subtype = match fb_parts.next().map(str::trim).filter(|s| !s.is_empty()) {
                    Some(s) => Some(text(s, "rtcp-fb subtype")?.to_owned()),
                    None => None,
                };
                let fb = RtcpFb {
                    type_: type_.to_owned(),
                    subtype,
                };
                if pt_text == "*" {
                    cap(&wildcard_fb, MAX_ITEMS, "rtcp-fb")?;
                    wildcard_fb.push(fb);
                } else {
                    let pt =
                        check_pt(pt_text.parse().map_err(|_| MappingError::BadAttribute {
                            attribute: "rtcp-fb",
                            reason: "payload type",
                        })?)?;
                    let Some(&i) = by_pt.get(&pt) else { continue };
                    cap(&desc.payload_types[i].rtcp_fbs, MAX_ITEMS, "rtcp-fb")?;
                    desc.payload_types[i].rtcp_fbs.push(fb);
                }
            }
            "extmap" => {
                cap(&desc.hdrexts, MAX_ITEMS, "header extensions")?;
                let mut parts = v.split_ascii_whitespace();
                let id_dir = parts.next().unwrap_or("");
                let uri = token(parts.next().unwrap_or(""), "extmap uri")?;
                let (id_text, dir) = id_dir.split_once('/').unwrap_or((id_dir, "sendrecv"));
                let id: u16 = id_text
                    .parse()
                    .ok()
                    .filter(|id| (1..=255).contains(id) || (4096..=4351).contains(id))
                    .ok_or(MappingError::BadAttribute {
                        attribute: "extmap",
                        reason: "id out of range",
                    })?;
                let senders = match dir {
                    "sendrecv" => HdrextSenders::Both,
                    "sendonly" => role.hdrext_senders(),
                    "recvonly" => role.peer().hdrext_senders(),
                    "inactive" => continue,
                    _ => {
                        return Err(MappingError::BadAttribute {
                            attribute: "extmap",
                            reason: "direction",
                        })
                    }
                };
                desc.hdrexts
                    .push(RtpHdrext::new(id, uri.to_owned()).with_senders(senders));
            }
            "ssrc" => {
                let (id_text, rest) = v.split_once(' ').unwrap_or((v, ""));
                let id: u32 = id_text.parse().map_err(|_| MappingError::BadAttribute {
                    attribute: "ssrc",
                    reason: "ssrc id",
                })?;
                if !ssrc_params.contains_key(&id) {
                    cap(&ssrc_order, MAX_ITEMS, "ssrcs")?;
                    ssrc_order.push(id);
                }
                let params = ssrc_params.entry(id).or_default();
                let rest = rest.trim();
                if rest.is_empty() {
                    continue;
                }
                cap(params, MAX_ITEMS, "ssrc attributes")?;
                let (name, value) = match rest.split_once(':') {
                    Some((n, v)) => (n, Some(text(v, "ssrc attribute value")?.to_owned())),
                    None => (rest, None),
                };
                params.push(SsrcParameter {
                    name: token(name, "ssrc attribute")?.to_owned(),
                    value,
                });
            }
            "ssrc-group" => {
                cap(&desc.ssrc_groups, MAX_ITEMS, "ssrc groups")?;
                let mut parts = v.split_ascii_whitespace();
                let semantics = match parts.next() {
                    Some("FID") => SsrcSemantics::Fid,
                    Some("FEC") => SsrcSemantics::Fec,
                    Some("FEC-FR") => SsrcSemantics::Fec,
                    Some("LS") => SsrcSemantics::Ls,
                    Some("SRF") => SsrcSemantics::Srf,
                    Some("ANAT") => SsrcSemantics::Anat,
                    Some("DDP") => SsrcSemantics::Ddp,
                    // SIM (legacy simulcast) has no XEP-0339 value in xmpp-parsers.
                    _ => continue,
                };
                let mut sources = Vec::new();
                for s in parts {
                    cap(&sources, MAX_ITEMS, "ssrcs in a group")?;
                    sources.push(Source::new(s.parse().map_err(|_| {
                        MappingError::BadAttribute {
                            attribute: "ssrc-group",
                            reason: "ssrc id",
                        }
                    })?));
                }
                desc.ssrc_groups.push(SsrcGroup { semantics, sources });
            }
            "msid" => msid = Some(text(v.trim(), "msid")?.to_owned()),
            "rtcp-mux" => desc.rtcp_mux = true,
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => direction = direction_str(&a.key),
            _ => {}
        }
    }
    for p in &mut desc.payload_types {
        if p.name.is_none() && p.id >= 96 {
            return Err(MappingError::MissingCodecName(p.id));
        }
        p.ptime = ptime;
        p.maxptime = maxptime;
        for fb in &wildcard_fb {
            if !p.rtcp_fbs.contains(fb) {
                p.rtcp_fbs.push(fb.clone());
            }
        }
    }
    for id in ssrc_order {
        let mut params = ssrc_params.remove(&id).unwrap_or_default();
        // XEP-0339 has no media-level msid: it travels as a source parameter (as Jitsi and
        // Conversations do) and is restored as a=msid on the way back.
        if let Some(m) = &msid {
            if !params.iter().any(|p| p.name == "msid") {
                params.push(SsrcParameter {
                    name: "msid".into(),
                    value: Some(m.clone()),
                });
            }
        }
        desc.ssrcs.push(Source {
            id,
            parameters: params,
        });
    }
    let senders = match direction {
        "sendonly" => role.senders(),
        "recvonly" => role.peer().senders(),
        "inactive" => Senders::None,
        _ => Senders::Both,
    };
    let content = Content::new(creator, ContentId(mid))
        .with_senders(senders)
        .with_description(desc)
        .with_transport(transport);
    Ok((content, fp_bytes))
}

fn direction_str(key: &str) -> &'static str {
    match key {
        "sendonly" => "sendonly",
        "recvonly" => "recvonly",
        "inactive" => "inactive",
        _ => "sendrecv",
    }
}

fn split_pt<'a>(v: &'a str, attribute: &'static str) -> Result<(u8, &'a str)> {
    let (pt, rest) = v.split_once(' ').ok_or(MappingError::BadAttribute {
        attribute,
        reason: "no value after the payload type",
    })?;
    let pt: u32 = pt.parse().map_err(|_| MappingError::BadAttribute {
        attribute,
        reason: "payload type",
    })?;
    Ok((check_pt(pt)?, rest.trim()))
}

// ---------------------------------------------------------------------------------------------
// Jingle → SDP.

/// Static payload types (RFC 3551) that peers may send without a name or clock rate.
fn static_codec(id: u8) -> Option<(&'static str, u32)> {
    Some(match id {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        34 => ("H263", 90000),
        _ => return None,
    })
}

/// Jingle contents (+ group) from the peer → SDP for the WebRTC stack: the remote offer for a
/// session-initiate or content-add, the remote answer for a session-accept. `role` is our role
/// in the session (the peer authored the SDP being produced).
pub fn jingle_to_sdp(desc: &JingleDescription, kind: SdpType, role: Role) -> Result<String> {
    if desc.contents.is_empty() {
        return Err(MappingError::NoContents);
    }
    if desc.contents.len() > MAX_CONTENTS {
        return Err(MappingError::TooMany {
            what: "contents",
            limit: MAX_CONTENTS,
        });
    }
    let mut names: Vec<&str> = Vec::new();
    for c in &desc.contents {
        let name = token(&c.name.0, "content name")?;
        if names.contains(&name) {
            return Err(MappingError::DuplicateMid(name.to_owned()));
        }
        names.push(name);
    }
    let mut out = String::with_capacity(4096);
    let session_id: u64 = rand::thread_rng().gen_range(1..(1u64 << 62));
    let _ = write!(
        out,
        "v=0\r\no=- {session_id} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    );
    if let Some(group) = &desc.group {
        let semantics = match group.semantics {
            Semantics::Bundle => "BUNDLE",
            Semantics::Ls => "LS",
        };
        let mut line = format!("a=group:{semantics}");
        for member in &group.contents {
            if !names.contains(&member.name.0.as_str()) {
                return Err(MappingError::UnknownGroupMember(
                    member.name.0.chars().take(64).collect(),
                ));
            }
            line.push(' ');
            line.push_str(&member.name.0);
        }
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.push_str("a=msid-semantic: WMS *\r\n");
    let bundled = matches!(
        desc.group,
        Some(Group {
            semantics: Semantics::Bundle,
            ..
        })
    );
    let mut first_fp: Option<(String, Vec<u8>)> = None;
    for content in &desc.contents {
        write_media(&mut out, content, kind, role, bundled, &mut first_fp)?;
    }
    Ok(out)
}

fn write_media(
    out: &mut String,
    content: &Content,
    kind: SdpType,
    role: Role,
    bundled: bool,
    first_fp: &mut Option<(String, Vec<u8>)>,
) -> Result<()> {
    let name = content.name.0.as_str();
    let Some(Description::Rtp(desc)) = &content.description else {
        return Err(MappingError::MissingDescription(name.into()));
    };
    let Some(JingleTransport::IceUdp(transport)) = &content.transport else {
        return Err(MappingError::MissingIceUdpTransport(name.into()));
    };
    if desc.media != "audio" && desc.media != "video" {
        return Err(MappingError::UnknownMedia(
            desc.media.chars().take(32).collect(),
        ));
    }
    if desc.payload_types.len() > MAX_PAYLOAD_TYPES {
        return Err(MappingError::TooMany {
            what: "payload types",
            limit: MAX_PAYLOAD_TYPES,
        });
    }
    for (what, len) in [
        ("ssrcs", desc.ssrcs.len()),
        ("ssrc groups", desc.ssrc_groups.len()),
        ("header extensions", desc.hdrexts.len()),
    ] {
        if len > MAX_ITEMS {
            return Err(MappingError::TooMany {
                what,
                limit: MAX_ITEMS,
            });
        }
    }
    let parts = read_transport(transport)?;
    let (Some(ufrag), Some(pwd)) = (&parts.ufrag, &parts.pwd) else {
        return Err(MappingError::MissingIceCredentials(name.into()));
    };
    token(ufrag, "ice-ufrag")?;
    token(pwd, "ice-pwd")?;
    let Some((algo, setup, fp)) = &parts.fingerprint else {
        return Err(MappingError::MissingFingerprint(name.into()));
    };
    check_setup(setup, kind)?;
    let hash = algo_str(algo)?;
    match first_fp {
        Some((h, v)) if *h != hash || v != fp => return Err(MappingError::ConflictingFingerprints),
        Some(_) => {}
        None => *first_fp = Some((hash.clone(), fp.clone())),
    }

    // Payload types webrtc could not use without a name (unknown static ids) are dropped
    // rather than failing the whole description: the answer then simply leaves them out.
    let mut formats = Vec::new();
    let mut pt_lines = String::new();
    for p in &desc.payload_types {
        let pt = check_pt(u32::from(p.id))?;
        let (name, clock) = match (&p.name, p.clockrate) {
            (Some(n), Some(c)) => (token(n, "codec name")?.to_owned(), c),
            (Some(n), None) => {
                let n = token(n, "codec name")?;
                let default = static_codec(pt).map(|(_, c)| c).unwrap_or(
                    // The common case of a missing clock rate is an old audio codec at 8 kHz.
                    if desc.media == "video" { 90000 } else { 8000 },
                );
                (n.to_owned(), default)
            }
            (None, _) => match static_codec(pt) {
                Some((n, c)) => (n.to_owned(), c),
                None if pt >= 96 => return Err(MappingError::MissingCodecName(pt)),
                None => continue,
            },
        };
        formats.push(pt.to_string());
        let _ = write!(pt_lines, "a=rtpmap:{pt} {name}/{clock}");
        if desc.media == "audio" && p.channels.0 > 1 {
            let _ = write!(pt_lines, "/{}", p.channels.0);
        }
        pt_lines.push_str("\r\n");
        if p.parameters.len() > MAX_ITEMS || p.rtcp_fbs.len() > MAX_ITEMS {
            return Err(MappingError::TooMany {
                what: "payload-type parameters",
                limit: MAX_ITEMS,
            });
        }
        if !p.parameters.is_empty() {
            // webrtc's fmtp parser splits on whitespace: parameters are joined with ';' only.
            let mut params = Vec::new();
            for param in &p.parameters {
                let n = token(&param.name, "fmtp parameter")?;
                if param.value.is_empty() {
                    params.push(n.to_owned());
                } else {
                    let v = token(&param.value, "fmtp value")?;
                    if v.contains(';') || n.contains(';') || n.contains('=') {
                        return Err(MappingError::BadToken {
                            what: "fmtp parameter",
                        });
                    }
                    params.push(format!("{n}={v}"));
                }
            }
            let _ = write!(pt_lines, "a=fmtp:{pt} {}\r\n", params.join(";"));
        }
        for fb in &p.rtcp_fbs {
            let t = token(&fb.type_, "rtcp-fb type")?;
            match &fb.subtype {
                Some(s) if !s.is_empty() => {
                    let _ = write!(
                        pt_lines,
                        "a=rtcp-fb:{pt} {t} {}\r\n",
                        text(s, "rtcp-fb subtype")?
                    );
                }
                _ => {
                    let _ = write!(pt_lines, "a=rtcp-fb:{pt} {t}\r\n");
                }
            }
        }
    }
    if formats.is_empty() {
        return Err(MappingError::NoPayloadTypes(name.into()));
    }
    let _ = write!(
        out,
        "m={} 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n",
        desc.media,
        formats.join(" ")
    );
    let _ = write!(
        out,
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=ice-options:trickle\r\n"
    );
    let _ = write!(
        out,
        "a=fingerprint:{hash} {}\r\na=setup:{}\r\na=mid:{name}\r\n",
        hex_fingerprint(fp),
        setup_str(setup)
    );
    // The SDP is authored by the peer, so directions are from its point of view.
    for h in &desc.hdrexts {
        if !((1..=255).contains(&h.id) || (4096..=4351).contains(&h.id)) {
            return Err(MappingError::BadAttribute {
                attribute: "rtp-hdrext",
                reason: "id out of range",
            });
        }
        let uri = token(&h.uri, "rtp-hdrext uri")?;
        let dir = match (&h.senders, role) {
            (HdrextSenders::Both, _) => "",
            (HdrextSenders::Initiator, Role::Responder)
            | (HdrextSenders::Responder, Role::Initiator) => "/sendonly",
            _ => "/recvonly",
        };
        let _ = write!(out, "a=extmap:{}{dir} {uri}\r\n", h.id);
    }
    let direction = match (&content.senders, role) {
        (Senders::Both, _) => "sendrecv",
        (Senders::None, _) => "inactive",
        (Senders::Initiator, Role::Responder) | (Senders::Responder, Role::Initiator) => "sendonly",
        _ => "recvonly",
    };
    let _ = write!(out, "a={direction}\r\n");
    let msid = desc
        .ssrcs
        .iter()
        .flat_map(|s| s.parameters.iter())
        .find(|p| p.name == "msid")
        .and_then(|p| p.value.as_deref());
    if let Some(msid) = msid {
        let _ = write!(out, "a=msid:{}\r\n", text(msid, "msid")?);
    }
    // BUNDLE requires rtcp-mux (RFC 8843); Conversations relies on that and may omit it.
    if desc.rtcp_mux || bundled {
        out.push_str("a=rtcp-mux\r\n");
    }
    out.push_str(&pt_lines);
    if let Some(ptime) = desc.payload_types.iter().find_map(|p| p.ptime) {
        let _ = write!(out, "a=ptime:{ptime}\r\n");
    }
    if let Some(maxptime) = desc.payload_types.iter().find_map(|p| p.maxptime) {
        let _ = write!(out, "a=maxptime:{maxptime}\r\n");
    }
    for g in &desc.ssrc_groups {
        if g.sources.len() > MAX_ITEMS {
            return Err(MappingError::TooMany {
                what: "ssrcs in a group",
                limit: MAX_ITEMS,
            });
        }
        let semantics = match g.semantics {
            SsrcSemantics::Fid => "FID",
            SsrcSemantics::Fec => "FEC",
            SsrcSemantics::Ls => "LS",
            SsrcSemantics::Srf => "SRF",
            SsrcSemantics::Anat => "ANAT",
            SsrcSemantics::Ddp => "DDP",
        };
        let ids: Vec<String> = g.sources.iter().map(|s| s.id.to_string()).collect();
        let _ = write!(out, "a=ssrc-group:{semantics} {}\r\n", ids.join(" "));
    }
    for s in &desc.ssrcs {
        if s.parameters.len() > MAX_ITEMS {
            return Err(MappingError::TooMany {
                what: "ssrc attributes",
                limit: MAX_ITEMS,
            });
        }
        for p in &s.parameters {
            let n = token(&p.name, "ssrc attribute")?;
            match &p.value {
                Some(v) => {
                    let _ = write!(out, "a=ssrc:{} {n}:{}\r\n", s.id, text(v, "ssrc value")?);
                }
                None => {
                    let _ = write!(out, "a=ssrc:{} {n}\r\n", s.id);
                }
            }
        }
    }
    for c in &parts.candidates {
        match try_candidate_to_sdp(c) {
            Ok(line) => {
                let _ = write!(out, "a={line}\r\n");
            }
            Err(MappingError::UnsupportedCandidateProtocol(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_round_trip_host() {
        let c = candidate_to_jingle(
            "candidate:1 1 udp 2130706431 10.0.1.1 8998 typ host generation 0 network-id 1",
        )
        .unwrap();
        assert_eq!(c.foundation, "1");
        assert_eq!(c.network, Some(1));
        assert_eq!(c.id.len(), 12);
        let back = candidate_to_sdp(&c);
        assert_eq!(
            back,
            "candidate:1 1 udp 2130706431 10.0.1.1 8998 typ host generation 0 network-id 1"
        );
    }

    #[test]
    fn hex_fingerprint_round_trip_and_garbage() {
        let v = parse_hex_fingerprint(
            " 02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2\n",
        )
        .unwrap();
        assert_eq!(v.len(), 32);
        assert!(hex_fingerprint(&v).starts_with("02:1A:CC"));
        for bad in ["", "0", "zz:zz", "02:1A:", "é1:00", "02::1A", "021A"] {
            assert!(parse_hex_fingerprint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sdp_reader_rejects_garbage() {
        assert_eq!(parse_sdp("hello").unwrap_err(), MappingError::NotSdp);
        assert!(matches!(
            parse_sdp("v=0\r\nm=audio 70000 UDP/TLS/RTP/SAVPF 111\r\n").unwrap_err(),
            MappingError::BadPort(70000)
        ));
        assert!(matches!(
            parse_sdp("v=0\r\na=foo\u{1}\r\n").unwrap_err(),
            MappingError::BadCharacter(2)
        ));
        assert!(matches!(
            parse_sdp("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 300\r\n").unwrap_err(),
            MappingError::PayloadTypeOutOfRange(300)
        ));
    }
}
