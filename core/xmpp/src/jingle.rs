//! Calls on the wire: Jingle Message Initiation (XEP-0353), Jingle IQs (XEP-0166) and
//! STUN/TURN discovery (XEP-0215). Only routing, checking and building stanzas lives here;
//! what a call decides is the client's, and its media descriptions (RTP, ICE, DTLS) are
//! mapped to and from SDP by linnet-call.

use xmpp_parsers::jingle::{Jingle, Reason, ReasonElement};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::elem::el;
use crate::jid::BareJid;
use crate::{RequestError, Session};

pub use xmpp_parsers::{jingle, jingle_grouping};

pub const NS_JMI: &str = "urn:xmpp:jingle-message:0";
pub const NS_JINGLE: &str = "urn:xmpp:jingle:1";
pub const NS_JINGLE_ERRORS: &str = "urn:xmpp:jingle:errors:1";
pub const NS_JINGLE_RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
pub const NS_EXTDISCO: &str = "urn:xmpp:extdisco:2";
pub const NS_JINGLE_DTLS: &str = "urn:xmpp:jingle:apps:dtls:0";
pub const NS_JINGLE_ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
/// DTLS fingerprints sent through OMEMO, as Conversations and Dino do (Daniel Gultsch's
/// "OMEMO DTLS-SRTP verification" draft; the namespace's "dlts" is as deployed): the
/// callee names its OMEMO device in `proceed`, and each side's `<fingerprint/>` travels as
/// an OMEMO message for the other's device instead of in the clear.
pub const NS_DTLS_VERIFY: &str = "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification";

/// What we announce (disco#info, and so our caps hash): Conversations and Dino offer calls
/// only to contacts whose caps name Jingle RTP with ICE-UDP and DTLS.
pub const FEATURES: &[&str] = &[
    NS_JINGLE,
    NS_JINGLE_RTP,
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:apps:rtp:video",
    "urn:xmpp:jingle:transports:ice-udp:1",
    "urn:xmpp:jingle:apps:dtls:0",
    "urn:xmpp:jingle:apps:rtp:rtcp-fb:0",
    "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0",
    "urn:xmpp:jingle:apps:grouping:0",
    "urn:xmpp:jingle:apps:rtp:ssma:0",
    NS_JMI,
];

/// Session ids are ours to compare and store: anything longer than a UUID with room to
/// spare is not one a client made.
const MAX_SID: usize = 128;
/// A call has audio and maybe video; more descriptions in a proposal are noise.
const MAX_MEDIA: usize = 4;

/// Why a call ended or was refused: a XEP-0166 §7.4 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallReason {
    Success,
    Busy,
    Decline,
    Cancel,
    Expired,
    Gone,
    Timeout,
    ConnectivityError,
    FailedApplication,
    FailedTransport,
    SecurityError,
    GeneralError,
    /// Any other condition, by its element name.
    Other(String),
}

impl CallReason {
    pub fn name(&self) -> &str {
        match self {
            CallReason::Success => "success",
            CallReason::Busy => "busy",
            CallReason::Decline => "decline",
            CallReason::Cancel => "cancel",
            CallReason::Expired => "expired",
            CallReason::Gone => "gone",
            CallReason::Timeout => "timeout",
            CallReason::ConnectivityError => "connectivity-error",
            CallReason::FailedApplication => "failed-application",
            CallReason::FailedTransport => "failed-transport",
            CallReason::SecurityError => "security-error",
            CallReason::GeneralError => "general-error",
            CallReason::Other(o) => o,
        }
    }

    fn from_name(name: &str) -> CallReason {
        match name {
            "success" => CallReason::Success,
            "busy" => CallReason::Busy,
            "decline" => CallReason::Decline,
            "cancel" => CallReason::Cancel,
            "expired" => CallReason::Expired,
            "gone" => CallReason::Gone,
            "timeout" => CallReason::Timeout,
            "connectivity-error" => CallReason::ConnectivityError,
            "failed-application" => CallReason::FailedApplication,
            "failed-transport" => CallReason::FailedTransport,
            "security-error" => CallReason::SecurityError,
            "general-error" => CallReason::GeneralError,
            other => CallReason::Other(other.chars().take(64).collect()),
        }
    }

    /// The reason of a Jingle `<reason/>` (a session-terminate's).
    pub fn from_jingle(r: Option<&ReasonElement>) -> CallReason {
        match r {
            None => CallReason::Success,
            Some(r) => CallReason::from_name(Element::from(r.reason.clone()).name()),
        }
    }

    /// The Jingle `<reason/>` for a session-terminate.
    pub fn to_jingle(&self) -> ReasonElement {
        let reason = match self {
            CallReason::Success => Reason::Success,
            CallReason::Busy => Reason::Busy,
            CallReason::Decline => Reason::Decline,
            CallReason::Cancel => Reason::Cancel,
            CallReason::Expired => Reason::Expired,
            CallReason::Gone => Reason::Gone,
            CallReason::Timeout => Reason::Timeout,
            CallReason::ConnectivityError => Reason::ConnectivityError,
            CallReason::FailedApplication => Reason::FailedApplication,
            CallReason::FailedTransport => Reason::FailedTransport,
            CallReason::SecurityError => Reason::SecurityError,
            CallReason::GeneralError | CallReason::Other(_) => Reason::GeneralError,
        };
        ReasonElement {
            reason,
            texts: Default::default(),
        }
    }
}

/// A XEP-0353 message's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JmiAction {
    /// A call is proposed, with these media ("audio", "video").
    Propose {
        media: Vec<String>,
    },
    /// One of the callee's devices rings.
    Ringing,
    /// The callee took the call on the device that sent this; `device`: its OMEMO device,
    /// for which the caller may encrypt its DTLS fingerprint ([`NS_DTLS_VERIFY`]).
    Proceed {
        device: Option<u32>,
    },
    /// The old namespace's way for the callee to stop its other devices ringing; still
    /// sent by some clients beside `proceed`.
    Accept,
    Reject(CallReason),
    Retract(CallReason),
    Finish(CallReason),
}

/// A XEP-0353 message, checked: `peer` is the other party of the call (for one of ours sent
/// from another device, the addressee), `from_full` the device that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSignal {
    pub sid: String,
    pub action: JmiAction,
    pub peer: BareJid,
    pub from_full: Option<String>,
    /// Sent by another device of ours (a "sent" carbon).
    pub outgoing: bool,
    /// The XEP-0203 delay stamp: the message waited (offline storage) before reaching us.
    pub delayed_ms: Option<i64>,
}

/// A Jingle IQ set addressed to us, parsed. The client must answer it (`Session::jingle_ack`
/// or `Session::jingle_error`): the sender waits for the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct JingleRequest {
    pub from: String,
    pub id: String,
    /// Without the fingerprints that came encrypted: see `sealed`.
    pub jingle: Jingle,
    /// The DTLS fingerprints that came as OMEMO messages ([`NS_DTLS_VERIFY`]), taken out of
    /// their transports; [`open_fingerprint`] puts one back once decrypted.
    pub sealed: Vec<SealedFingerprint>,
}

/// One content's DTLS fingerprint as an OMEMO message (checked as an `<encrypted/>`
/// element, not yet decrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFingerprint {
    pub content: String,
    pub hash: String,
    pub setup: String,
    pub encrypted: crate::omemo::Encrypted,
}

/// A DTLS fingerprint of an outgoing `<jingle/>`, to be sent encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainFingerprint {
    pub content: String,
    /// Colon-separated hex, as in the element.
    pub text: String,
}

// Jingle's elements compare structurally; nothing in them is a float.
impl Eq for JingleRequest {}

impl JingleRequest {
    /// The `<jingle/>` element as XML (for tools and tests).
    pub fn jingle_xml(&self) -> String {
        String::from(&Element::from(self.jingle.clone()))
    }
}

/// The XEP-0353 element of a chat message, if it has one. `None` also for malformed ones
/// (no id, an absurd one, a proposal without RTP media): they are dropped.
pub(crate) fn parse_jmi(msg: &Element) -> Option<Option<(String, JmiAction)>> {
    let jmi = msg.children().find(|c| c.ns() == NS_JMI)?;
    Some(parse_jmi_element(jmi))
}

fn parse_jmi_element(jmi: &Element) -> Option<(String, JmiAction)> {
    let sid = jmi.attr("id").filter(|s| valid_sid(s))?.to_owned();
    let reason = || {
        let r = jmi.get_child("reason", NS_JINGLE)?;
        let cond = r.children().find(|c| c.name() != "text")?;
        Some(CallReason::from_name(cond.name()))
    };
    let action = match jmi.name() {
        "propose" => {
            let media: Vec<String> = jmi
                .children()
                .filter(|d| d.is("description", NS_JINGLE_RTP))
                .filter_map(|d| d.attr("media"))
                .filter(|m| matches!(*m, "audio" | "video"))
                .map(str::to_owned)
                .take(MAX_MEDIA)
                .collect();
            if !media.iter().any(|m| m == "audio") && !media.iter().any(|m| m == "video") {
                return None;
            }
            JmiAction::Propose { media }
        }
        "ringing" => JmiAction::Ringing,
        "proceed" => JmiAction::Proceed {
            // A malformed device id is as good as none: the call goes on unverified.
            device: jmi
                .get_child("device", NS_DTLS_VERIFY)
                .and_then(|d| d.attr("id"))
                .and_then(|id| crate::omemo::parse_device_id(id).ok()),
        },
        "accept" => JmiAction::Accept,
        "reject" => JmiAction::Reject(reason().unwrap_or(CallReason::Busy)),
        "retract" => JmiAction::Retract(reason().unwrap_or(CallReason::Cancel)),
        "finish" => JmiAction::Finish(reason().unwrap_or(CallReason::Success)),
        _ => return None,
    };
    Some((sid, action))
}

pub fn valid_sid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SID && s.chars().all(|c| c.is_ascii_graphic())
}

/// A Jingle IQ set, or `Err(reply)` with the error to send back when it is malformed.
pub(crate) fn parse_jingle_iq(st: &Element, payload: &Element) -> Result<JingleRequest, Element> {
    let bad = || crate::inbound::iq_error_reply(st, "bad-request", "modify");
    let Some(from) = st.attr("from").filter(|f| f.contains('/')) else {
        // Jingle is between devices: a session with a bare JID (or with our server) is not one.
        return Err(bad());
    };
    let id = st.attr("id").unwrap_or_default().to_owned();
    let mut payload = payload.clone();
    let Ok(sealed) = take_sealed_fingerprints(&mut payload) else {
        return Err(bad());
    };
    if sanitize_jingle_element(&mut payload).is_err() {
        return Err(bad());
    }
    // xmpp-parsers asserts on some malformed input instead of failing (fingerprints were
    // one such case): whatever it still asserts on must not take the session down.
    let parsed =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Jingle::try_from(payload)));
    let jingle = match parsed {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "malformed jingle");
            return Err(bad());
        }
        Err(_) => {
            tracing::warn!("jingle that made the parser panic");
            return Err(bad());
        }
    };
    if !valid_sid(&jingle.sid.0) {
        return Err(bad());
    }
    Ok(JingleRequest {
        from: from.to_owned(),
        id,
        jingle,
        sealed,
    })
}

/// The ICE-UDP transports of a `<jingle/>`'s contents, with their content's name.
fn transports_mut(jingle: &mut Element) -> impl Iterator<Item = (Option<String>, &mut Element)> {
    jingle
        .children_mut()
        .filter(|c| c.is("content", NS_JINGLE))
        .flat_map(|c| {
            let name = c.attr("name").map(str::to_owned);
            c.children_mut()
                .filter(|t| t.is("transport", NS_JINGLE_ICE_UDP))
                .map(move |t| (name.clone(), t))
        })
}

/// Takes the encrypted fingerprints out of a received `<jingle/>`. A content with two of
/// them, or with one beside a plaintext one (which would say which to believe?), or one
/// that is not a well-formed OMEMO element, makes the request malformed.
fn take_sealed_fingerprints(jingle: &mut Element) -> Result<Vec<SealedFingerprint>, ()> {
    let mut sealed = Vec::new();
    for (name, transport) in transports_mut(jingle) {
        let plain = transport.get_child("fingerprint", NS_JINGLE_DTLS).is_some();
        let mut found = 0;
        while let Some(fp) = transport.remove_child("fingerprint", NS_DTLS_VERIFY) {
            found += 1;
            if found > 1 || plain {
                return Err(());
            }
            let (Some(content), Some(hash), Some(setup)) =
                (name.clone(), fp.attr("hash"), fp.attr("setup"))
            else {
                return Err(());
            };
            let mut encrypted = fp.children().filter(|c| c.name() == "encrypted");
            let (Some(e), None) = (encrypted.next(), encrypted.next()) else {
                return Err(());
            };
            let encrypted = crate::omemo::parse_encrypted(e).map_err(|_| ())?;
            if encrypted.payload.is_none() {
                return Err(());
            }
            sealed.push(SealedFingerprint {
                content,
                hash: hash.to_owned(),
                setup: setup.to_owned(),
                encrypted,
            });
        }
    }
    Ok(sealed)
}

/// A Jingle action about to be sent, as XML: its fingerprints can be sealed
/// ([`NS_DTLS_VERIFY`]) before [`Session::jingle_queued`] sends it.
#[derive(Debug, Clone)]
pub struct OutgoingJingle(Element);

impl OutgoingJingle {
    pub fn new(jingle: Jingle) -> Self {
        OutgoingJingle(jingle.into())
    }

    /// The plaintext DTLS fingerprints, by content.
    pub fn plain_fingerprints(&self) -> Vec<PlainFingerprint> {
        plain_fingerprints(&self.0)
    }

    /// Replaces the plaintext fingerprint of `content` by `encrypted`, an OMEMO message
    /// whose payload is that fingerprint's text.
    pub fn seal_fingerprint(
        &mut self,
        content: &str,
        encrypted: &crate::omemo::Encrypted,
    ) -> Result<(), crate::omemo::OmemoXmlError> {
        seal_fingerprint(&mut self.0, content, encrypted)
    }
}

impl From<OutgoingJingle> for Element {
    fn from(j: OutgoingJingle) -> Element {
        j.0
    }
}

impl From<Jingle> for OutgoingJingle {
    fn from(j: Jingle) -> Self {
        OutgoingJingle::new(j)
    }
}

/// The plaintext DTLS fingerprints of an outgoing `<jingle/>`, by content.
fn plain_fingerprints(jingle: &Element) -> Vec<PlainFingerprint> {
    jingle
        .children()
        .filter(|c| c.is("content", NS_JINGLE))
        .filter_map(|c| {
            let fp = c
                .get_child("transport", NS_JINGLE_ICE_UDP)?
                .get_child("fingerprint", NS_JINGLE_DTLS)?;
            Some(PlainFingerprint {
                content: c.attr("name")?.to_owned(),
                text: fp.text().trim().to_owned(),
            })
        })
        .collect()
}

/// Replaces the plaintext fingerprint of `content` in an outgoing `<jingle/>` by
/// `encrypted` (an OMEMO message whose payload is that fingerprint's text).
fn seal_fingerprint(
    jingle: &mut Element,
    content: &str,
    encrypted: &crate::omemo::Encrypted,
) -> Result<(), crate::omemo::OmemoXmlError> {
    let element = crate::omemo::encrypted_element(encrypted)?;
    for (name, transport) in transports_mut(jingle) {
        if name.as_deref() != Some(content) {
            continue;
        }
        let Some(plain) = transport.remove_child("fingerprint", NS_JINGLE_DTLS) else {
            continue;
        };
        let mut sealed = el("fingerprint", NS_DTLS_VERIFY)
            .attr("hash", plain.attr("hash").unwrap_or("sha-256"))
            .child(element.clone());
        if let Some(setup) = plain.attr("setup") {
            sealed = sealed.attr("setup", setup);
        }
        transport.append_child(sealed.build());
    }
    Ok(())
}

/// Puts a fingerprint that came encrypted (`text`: the decrypted payload) back into its
/// content's transport, as if it had come in the clear.
pub fn open_fingerprint(
    jingle: &mut Jingle,
    sealed: &SealedFingerprint,
    text: &str,
) -> Result<(), BadFingerprint> {
    use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};
    let text = text.trim();
    if !strict_hex_pairs(text) {
        return Err(BadFingerprint);
    }
    let setup = match sealed.setup.as_str() {
        "actpass" => Setup::Actpass,
        "active" => Setup::Active,
        "passive" => Setup::Passive,
        _ => return Err(BadFingerprint),
    };
    let fp = Fingerprint::from_colon_separated_hex(setup, &sealed.hash, text)
        .map_err(|_| BadFingerprint)?;
    let content = jingle
        .contents
        .iter_mut()
        .find(|c| c.name.0 == sealed.content)
        .ok_or(BadFingerprint)?;
    match content.transport.take() {
        Some(jingle::Transport::IceUdp(t)) => {
            content.transport = Some(jingle::Transport::IceUdp(t.with_fingerprint(fp)));
            Ok(())
        }
        other => {
            content.transport = other;
            Err(BadFingerprint)
        }
    }
}

/// Colon-separated pairs of hex digits, at most 64 of them (SHA-512's length).
fn strict_hex_pairs(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() <= 64
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A `<fingerprint/>` whose text is not colon-separated hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DTLS fingerprint")]
pub struct BadFingerprint;

/// xmpp-parsers 0.23 decodes a DTLS `<fingerprint/>` (XEP-0320) with assertions: whitespace
/// around the hex, as in the XEP's own examples, or an odd length make `Jingle::try_from`
/// panic. This trims every fingerprint of a `<jingle/>` in place and refuses any that is
/// not colon-separated hex; run it before parsing.
pub fn sanitize_jingle_element(jingle: &mut Element) -> Result<(), BadFingerprint> {
    fn walk(e: &mut Element, depth: usize) -> Result<(), BadFingerprint> {
        // jingle > content > transport > fingerprint: nothing legitimate is deeper.
        if depth > 8 {
            return Ok(());
        }
        if e.is("fingerprint", NS_JINGLE_DTLS) {
            let trimmed = e.text().trim().to_owned();
            if !strict_hex_pairs(&trimmed) {
                return Err(BadFingerprint);
            }
            e.take_nodes();
            e.append_text(trimmed);
            return Ok(());
        }
        for child in e.children_mut() {
            walk(child, depth + 1)?;
        }
        Ok(())
    }
    walk(jingle, 0)
}

fn reason_element(reason: &CallReason) -> Element {
    el("reason", NS_JINGLE)
        .child(el(reason.name(), NS_JINGLE))
        .build()
}

/// A XEP-0353 message to `to` (always a bare JID: the server forks it to every device, and
/// carbons copy it to ours). Stored in archives so every device learns how the call went.
pub fn jmi_stanza(to: &BareJid, sid: &str, action: &JmiAction) -> Element {
    let body = match action {
        JmiAction::Propose { media } => {
            let mut p = el("propose", NS_JMI).attr("id", sid);
            for m in media {
                p = p.child(el("description", NS_JINGLE_RTP).attr("media", m));
            }
            p.build()
        }
        JmiAction::Ringing => el("ringing", NS_JMI).attr("id", sid).build(),
        JmiAction::Proceed { device } => {
            let mut p = el("proceed", NS_JMI).attr("id", sid);
            if let Some(d) = device {
                p = p.child(el("device", NS_DTLS_VERIFY).attr("id", d.to_string()));
            }
            p.build()
        }
        JmiAction::Accept => el("accept", NS_JMI).attr("id", sid).build(),
        JmiAction::Reject(r) => el("reject", NS_JMI)
            .attr("id", sid)
            .child(reason_element(r))
            .build(),
        JmiAction::Retract(r) => el("retract", NS_JMI)
            .attr("id", sid)
            .child(reason_element(r))
            .build(),
        JmiAction::Finish(r) => el("finish", NS_JMI)
            .attr("id", sid)
            .child(reason_element(r))
            .build(),
    };
    el("message", ns::JABBER_CLIENT)
        .attr("type", "chat")
        .attr("to", to.as_str())
        .attr("id", crate::new_id())
        .child(body)
        .child(el("store", crate::inbound::NS_HINTS))
        .build()
}

pub const NS_JINGLE_RTP_INFO: &str = "urn:xmpp:jingle:apps:rtp:info:1";

/// A XEP-0167 §7 informational payload for a session-info: "mute" or "unmute" of the
/// content `name`, or "active"/"ringing" (no content).
pub fn rtp_info(info: &'static str, content: Option<(&str, &str)>) -> Element {
    let mut e = el(info, NS_JINGLE_RTP_INFO);
    if let Some((creator, name)) = content {
        e = e.attr("creator", creator).attr("name", name);
    }
    e.build()
}

/// A STUN or TURN server the account's server names (XEP-0215), with the short-lived
/// credentials it made for us.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalService {
    /// "stun", "turn" or "turns".
    pub kind: String,
    pub host: String,
    pub port: u16,
    /// "udp" or "tcp".
    pub transport: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// When the credentials expire (ms since the epoch), if the server says.
    pub expires_ms: Option<i64>,
}

impl std::fmt::Debug for ExternalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials stay out of logs.
        f.debug_struct("ExternalService")
            .field("kind", &self.kind)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// At most this many services are taken from an answer: more is no server's real list.
const MAX_SERVICES: usize = 16;

pub(crate) fn parse_services(reply: &Element) -> Vec<ExternalService> {
    let Some(services) = reply.get_child("services", NS_EXTDISCO) else {
        return Vec::new();
    };
    services
        .children()
        .filter(|s| s.is("service", NS_EXTDISCO))
        .filter_map(|s| {
            let kind = s.attr("type")?;
            if !matches!(kind, "stun" | "turn" | "turns") {
                return None;
            }
            let host = s.attr("host").filter(|h| valid_host(h))?;
            let port = match s.attr("port") {
                Some(p) => p.parse().ok().filter(|p| *p > 0)?,
                None if kind == "turns" => 5349,
                None => 3478,
            };
            let transport = match s.attr("transport").unwrap_or("udp") {
                t @ ("udp" | "tcp") => t,
                _ => return None,
            };
            let text = |a: &str| {
                s.attr(a)
                    .filter(|v| v.len() <= 512 && !v.chars().any(char::is_control))
                    .map(str::to_owned)
            };
            Some(ExternalService {
                kind: kind.to_owned(),
                host: host.to_owned(),
                port,
                transport: transport.to_owned(),
                username: text("username"),
                password: text("password"),
                expires_ms: s.attr("expires").and_then(crate::inbound::parse_stamp),
            })
        })
        .take(MAX_SERVICES)
        .collect()
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

impl Session {
    /// The STUN/TURN servers our server offers (XEP-0215), with fresh credentials. Empty
    /// when it offers none.
    pub async fn external_services(&self) -> Result<Vec<ExternalService>, RequestError> {
        let domain = self.own_jid().domain().to_owned();
        let reply = self
            .iq("get", Some(&domain), el("services", NS_EXTDISCO).build())
            .await?;
        Ok(parse_services(&reply))
    }

    /// Sends a XEP-0353 message to `to`'s devices (and, by carbons, ours).
    pub fn send_jmi(
        &self,
        to: &BareJid,
        sid: &str,
        action: &JmiAction,
    ) -> Result<(), RequestError> {
        self.send(jmi_stanza(to, sid, action), None)
    }

    /// Sends a Jingle IQ to the device `to` and waits for its acknowledgement.
    pub async fn jingle(&self, to: &str, jingle: Jingle) -> Result<(), RequestError> {
        self.iq("set", Some(to), Element::from(jingle))
            .await
            .map(drop)
    }

    /// Sends a Jingle IQ to the device `to` at once (actions of one session must reach the
    /// peer in order) and returns what waits for its acknowledgement.
    pub fn jingle_queued(
        &self,
        to: &str,
        jingle: impl Into<OutgoingJingle>,
    ) -> Result<
        impl std::future::Future<Output = Result<(), RequestError>> + Send + 'static,
        RequestError,
    > {
        let reply = self.iq_queued("set", Some(to), Element::from(jingle.into()))?;
        Ok(async move { reply.await.map(drop) })
    }

    /// Acknowledges a Jingle request (XEP-0166: every action is acknowledged first, then
    /// answered by actions of our own).
    pub fn jingle_ack(&self, req: &JingleRequest) -> Result<(), RequestError> {
        let iq = el("iq", ns::JABBER_CLIENT)
            .attr("type", "result")
            .attr("id", &req.id)
            .attr("to", &req.from)
            .build();
        self.send(iq, None)
    }

    /// Refuses a Jingle request: `condition` is the RFC 6120 one, `jingle` the XEP-0166
    /// §8 specific condition ("unknown-session", "out-of-order", …).
    pub fn jingle_error(
        &self,
        req: &JingleRequest,
        condition: &'static str,
        type_: &'static str,
        jingle: Option<&'static str>,
    ) -> Result<(), RequestError> {
        let mut error = el("error", ns::JABBER_CLIENT)
            .attr("type", type_)
            .child(el(condition, ns::XMPP_STANZAS));
        if let Some(j) = jingle {
            error = error.child(el(j, NS_JINGLE_ERRORS));
        }
        let iq = el("iq", ns::JABBER_CLIENT)
            .attr("type", "error")
            .attr("id", &req.id)
            .attr("to", &req.from)
            .child(error)
            .build();
        self.send(iq, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Option<(String, JmiAction)> {
        let el: Element = xml.parse().unwrap();
        parse_jmi(&el).flatten()
    }

    #[test]
    fn jmi_actions_parse() {
        let p = parse(
            "<message xmlns='jabber:client' type='chat'><propose xmlns='urn:xmpp:jingle-message:0' id='ab-1'>\
             <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>\
             <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/></propose></message>",
        );
        assert_eq!(
            p,
            Some((
                "ab-1".into(),
                JmiAction::Propose {
                    media: vec!["audio".into(), "video".into()]
                }
            ))
        );
        let r = parse(
            "<message xmlns='jabber:client'><reject xmlns='urn:xmpp:jingle-message:0' id='x'>\
             <reason xmlns='urn:xmpp:jingle:1'><decline/><text>no</text></reason></reject></message>",
        );
        assert_eq!(
            r,
            Some(("x".into(), JmiAction::Reject(CallReason::Decline)))
        );
        let f = parse(
            "<message xmlns='jabber:client'><finish xmlns='urn:xmpp:jingle-message:0' id='x'/></message>",
        );
        assert_eq!(
            f,
            Some(("x".into(), JmiAction::Finish(CallReason::Success)))
        );
    }

    #[test]
    fn malformed_jmi_is_dropped() {
        for xml in [
            "<message xmlns='jabber:client'><proceed xmlns='urn:xmpp:jingle-message:0'/></message>",
            "<message xmlns='jabber:client'><proceed xmlns='urn:xmpp:jingle-message:0' id=''/></message>",
            "<message xmlns='jabber:client'><propose xmlns='urn:xmpp:jingle-message:0' id='a'/></message>",
            "<message xmlns='jabber:client'><propose xmlns='urn:xmpp:jingle-message:0' id='a'>\
             <description xmlns='urn:xmpp:jingle:apps:file-transfer:5'/></propose></message>",
            "<message xmlns='jabber:client'><dance xmlns='urn:xmpp:jingle-message:0' id='a'/></message>",
        ] {
            assert_eq!(parse(xml), None, "{xml}");
        }
        let long = format!(
            "<message xmlns='jabber:client'><ringing xmlns='urn:xmpp:jingle-message:0' id='{}'/></message>",
            "a".repeat(MAX_SID + 1)
        );
        assert_eq!(parse(&long), None);
    }

    #[test]
    fn jmi_round_trip() {
        let to = BareJid::parse("juliet@example.org").unwrap();
        for action in [
            JmiAction::Propose {
                media: vec!["audio".into()],
            },
            JmiAction::Ringing,
            JmiAction::Proceed { device: None },
            JmiAction::Proceed {
                device: Some(1_234_567),
            },
            JmiAction::Reject(CallReason::Busy),
            JmiAction::Retract(CallReason::Cancel),
            JmiAction::Finish(CallReason::ConnectivityError),
        ] {
            let st = jmi_stanza(&to, "sid-1", &action);
            assert_eq!(st.attr("type"), Some("chat"));
            assert!(st.get_child("store", crate::inbound::NS_HINTS).is_some());
            assert_eq!(parse_jmi(&st).flatten(), Some(("sid-1".into(), action)));
        }
    }

    #[test]
    fn malformed_jingle_is_refused_not_a_panic() {
        let iq = |fp: &str| -> Element {
            format!(
                "<iq xmlns='jabber:client' type='set' id='j1' from='romeo@example.org/a'>\
                 <jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1'>\
                 <content creator='initiator' name='0'>\
                 <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>\
                 <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>{fp}</fingerprint>\
                 </transport></content></jingle></iq>"
            )
            .parse()
            .unwrap()
        };
        for fp in ["AB:C", "zz:01", "AB::01", ""] {
            let st = iq(fp);
            let payload = st.children().next().unwrap();
            let err = parse_jingle_iq(&st, payload).unwrap_err();
            assert_eq!(err.attr("type"), Some("error"), "{fp}");
        }
        // The XEP-0320 example's padding is fine once trimmed.
        let st = iq("\n  02:1A:CC:54  \n");
        let payload = st.children().next().unwrap();
        assert!(parse_jingle_iq(&st, payload).is_ok());
        // From a bare JID: not a device, not a session.
        let st: Element = String::from(&iq("02:1A"))
            .replace("romeo@example.org/a", "romeo@example.org")
            .parse()
            .unwrap();
        let payload = st.children().next().unwrap();
        assert!(parse_jingle_iq(&st, payload).is_err());
    }

    fn sealed_sample() -> crate::omemo::Encrypted {
        crate::omemo::Encrypted {
            version: crate::omemo::OmemoVersion::V03,
            sid: 4242,
            keys: vec![crate::omemo::KeyEntry {
                jid: None,
                rid: 77,
                kex: false,
                data: vec![1, 2, 3],
            }],
            iv: Some(vec![0; 12]),
            payload: Some(vec![9; 95]),
        }
    }

    fn initiate_iq(transport_children: &str) -> Element {
        format!(
            "<iq xmlns='jabber:client' type='set' id='j1' from='romeo@example.org/a'>\
             <jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1'>\
             <content creator='initiator' name='0'>\
             <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>\
             {transport_children}</transport></content></jingle></iq>"
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn fingerprints_travel_sealed_and_open_again() {
        let plain =
            "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>\
                     02:1A:CC:54</fingerprint>";
        let st = initiate_iq(plain);
        let mut jingle = st.children().next().unwrap().clone();
        let found = plain_fingerprints(&jingle);
        assert_eq!(
            found,
            vec![PlainFingerprint {
                content: "0".into(),
                text: "02:1A:CC:54".into()
            }]
        );
        seal_fingerprint(&mut jingle, "0", &sealed_sample()).unwrap();
        let xml = String::from(&jingle);
        assert!(
            !xml.contains("02:1A"),
            "the plaintext fingerprint is gone: {xml}"
        );
        assert!(xml.contains(NS_DTLS_VERIFY) && xml.contains("actpass"));

        let mut iq = st.clone();
        iq.remove_child("jingle", NS_JINGLE);
        iq.append_child(jingle);
        let mut req = parse_jingle_iq(&iq, iq.children().next().unwrap()).unwrap();
        assert_eq!(req.sealed.len(), 1);
        assert_eq!(req.sealed[0].encrypted, sealed_sample());
        assert_eq!(req.sealed[0].setup, "actpass");
        let sealed = req.sealed[0].clone();
        assert!(!req.jingle_xml().contains("dtls:0"));
        open_fingerprint(&mut req.jingle, &sealed, " 02:1A:CC:54\n").unwrap();
        assert!(req.jingle_xml().contains("02:1A:CC:54"));
        for bad in ["", "02:1", "zz:01", "hello"] {
            assert_eq!(
                open_fingerprint(&mut req.jingle, &sealed, bad),
                Err(BadFingerprint),
                "{bad}"
            );
        }
        let mut other = sealed.clone();
        other.content = "nope".into();
        assert!(open_fingerprint(&mut req.jingle, &other, "02:1A").is_err());
    }

    #[test]
    fn hostile_sealed_fingerprints_are_refused() {
        let enc = String::from(&crate::omemo::encrypted_element(&sealed_sample()).unwrap());
        let sealed = |attrs: &str, inner: &str| {
            format!("<fingerprint xmlns='{NS_DTLS_VERIFY}' {attrs}>{inner}</fingerprint>")
        };
        let plain = "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>02:1A</fingerprint>";
        let good = sealed("hash='sha-256' setup='active'", &enc);
        assert!(parse_jingle_iq(
            &initiate_iq(&good),
            initiate_iq(&good).children().next().unwrap()
        )
        .is_ok());
        for case in [
            // Beside a plaintext one: which to believe?
            format!("{plain}{good}"),
            // Two of them.
            format!("{good}{good}"),
            // No setup, no hash.
            sealed("hash='sha-256'", &enc),
            sealed("setup='active'", &enc),
            // Not OMEMO, or OMEMO without a payload, or two messages.
            sealed("hash='sha-256' setup='active'", "<encrypted xmlns='urn:example'/>"),
            sealed("hash='sha-256' setup='active'", "02:1A"),
            sealed(
                "hash='sha-256' setup='active'",
                "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><iv>AAAAAAAAAAAAAAAA</iv></header></encrypted>",
            ),
            sealed("hash='sha-256' setup='active'", &format!("{enc}{enc}")),
        ] {
            let st = initiate_iq(&case);
            let err = parse_jingle_iq(&st, st.children().next().unwrap()).unwrap_err();
            assert_eq!(err.attr("type"), Some("error"), "{case}");
        }
    }

    #[test]
    fn proceed_names_the_omemo_device() {
        let p = parse(&format!(
            "<message xmlns='jabber:client'><proceed xmlns='urn:xmpp:jingle-message:0' id='x'>\
             <device xmlns='{NS_DTLS_VERIFY}' id='99'/></proceed></message>"
        ));
        assert_eq!(
            p,
            Some(("x".into(), JmiAction::Proceed { device: Some(99) }))
        );
        // A device id out of range is as good as none.
        let p = parse(&format!(
            "<message xmlns='jabber:client'><proceed xmlns='urn:xmpp:jingle-message:0' id='x'>\
             <device xmlns='{NS_DTLS_VERIFY}' id='-3'/></proceed></message>"
        ));
        assert_eq!(p, Some(("x".into(), JmiAction::Proceed { device: None })));
    }

    #[test]
    fn external_services_parse_and_hide_credentials() {
        let reply: Element = "<iq xmlns='jabber:client' type='result'><services xmlns='urn:xmpp:extdisco:2'>\
            <service type='stun' host='127.0.0.1' port='3478' transport='udp'/>\
            <service type='turn' host='turn.example' port='3478' transport='udp' username='1700:u' password='secret' restricted='1'/>\
            <service type='turn' host='bad host' port='3478'/>\
            <service type='ftp' host='x.example'/>\
            <service type='turn' host='x.example' port='99999'/>\
            </services></iq>"
            .parse()
            .unwrap();
        let s = parse_services(&reply);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].username.as_deref(), Some("1700:u"));
        assert!(!format!("{:?}", s[1]).contains("secret"));
    }
}
