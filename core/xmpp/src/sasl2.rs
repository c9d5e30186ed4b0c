//! SASL2 (XEP-0388) with Bind2 (XEP-0386), stream management enabled inside the bind
//! (XEP-0198 §"SASL2 and BIND2 interaction"), carbons inline, and FAST tokens (XEP-0484).
//!
//! The exchange is a small state machine with no I/O: `Sasl2Auth::new` builds the
//! `<authenticate/>`, `on_element` takes each server element and says what to send next or
//! what was negotiated. connect.rs drives it over the stream; the tests drive it by script.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;
use zeroize::Zeroizing;

use crate::elem::el;
use crate::error::ConnectError;
use crate::fast::{self, FastToken};
use crate::inbound::NS_CARBONS;
use crate::jid::{split_bare, BareJid};
use crate::scram::ScramClient;

pub(crate) const NS_SASL2: &str = "urn:xmpp:sasl:2";
pub(crate) const NS_BIND2: &str = "urn:xmpp:bind:0";
pub(crate) const NS_FAST: &str = "urn:xmpp:fast:0";
pub(crate) const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";

/// What the server's `<authentication xmlns='urn:xmpp:sasl:2'/>` feature offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Offer {
    pub mechanisms: Vec<String>,
    /// Bind2 offered; the features it can enable inline (their `var`s).
    pub bind2: Option<Vec<String>>,
    /// FAST mechanisms offered (empty: no FAST).
    pub fast: Vec<String>,
    /// XEP-0198 resumption inline (`<sm/>` in SASL2's `<inline/>`).
    pub sm_resume: bool,
}

impl Offer {
    pub fn parse(features: &Element) -> Option<Offer> {
        let auth = features.get_child("authentication", NS_SASL2)?;
        let mechanisms = auth
            .children()
            .filter(|c| c.is("mechanism", NS_SASL2))
            .map(|c| c.text().trim().to_owned())
            .collect();
        let inline = auth.get_child("inline", NS_SASL2);
        let bind2 = inline.and_then(|i| i.get_child("bind", NS_BIND2)).map(|b| {
            b.get_child("inline", NS_BIND2)
                .map(|i| {
                    i.children()
                        .filter(|c| c.is("feature", NS_BIND2))
                        .filter_map(|c| c.attr("var").map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        });
        let fast = inline
            .and_then(|i| i.get_child("fast", NS_FAST))
            .map(|f| {
                f.children()
                    .filter(|c| c.is("mechanism", NS_FAST))
                    .map(|c| c.text().trim().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let sm_resume = inline.is_some_and(|i| i.has_child("sm", ns::SM));
        Some(Offer {
            mechanisms,
            bind2,
            fast,
            sm_resume,
        })
    }

    pub fn bind2_offers(&self, var: &str) -> bool {
        self.bind2
            .as_ref()
            .is_some_and(|f| f.iter().any(|v| v == var))
    }
}

/// XEP-0440 channel-binding types the server named; `None` if it did not use XEP-0440.
pub(crate) fn channel_binding_types(features: &Element) -> Option<Vec<String>> {
    features
        .get_child("sasl-channel-binding", NS_SASL_CB)
        .map(|e| {
            e.children()
                .filter(|c| c.name() == "channel-binding")
                .filter_map(|c| c.attr("type").map(str::to_owned))
                .collect()
        })
}

/// A random XEP-0388 `<user-agent id>` (UUID v4) for a new installation to store.
pub fn new_user_agent_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    format_uuid_v4(b)
}

/// A stable id for callers that do not store one: derived from the account and the resource
/// (which a client keeps per device), so it is stable per device and distinct between
/// devices. The server cannot recover either input from it.
pub(crate) fn derived_user_agent_id(jid: &BareJid, resource: &str) -> String {
    let h = Sha256::new()
        .chain_update(b"linnet user-agent id\0")
        .chain_update(jid.as_str().as_bytes())
        .chain_update([0u8])
        .chain_update(resource.as_bytes())
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    format_uuid_v4(b)
}

fn format_uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// XEP-0388 requires the id to be a UUID v4.
pub(crate) fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
        && b[14] == b'4'
        && matches!(b[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b')
}

/// How we authenticate.
pub(crate) enum Method {
    Scram(Box<ScramClient>),
    /// `authzid NUL authcid NUL password`, only ever chosen over TLS when nothing better exists.
    Plain(Zeroizing<Vec<u8>>),
    /// FAST: an HT mechanism with the stored token.
    Ht {
        mechanism: &'static str,
        token: Zeroizing<String>,
        cb_data: Zeroizing<Vec<u8>>,
    },
}

/// What to ask for besides authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Request {
    pub user_agent_id: String,
    pub software: String,
    pub device: String,
    /// Bind2 with this tag.
    pub bind_tag: Option<String>,
    pub carbons: bool,
    pub sm: bool,
    /// FAST: ask for a token for this mechanism.
    pub request_token: Option<&'static str>,
    /// FAST: `<fast count=…/>` when authenticating with a token (0: no count attribute).
    pub fast_count: u32,
    pub fast_invalidate: bool,
    /// XEP-0198 inline resumption: `(previd, h)`.
    pub resume: Option<(String, u32)>,
}

/// XEP-0198 result of an inline `<enable/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SmResult {
    Enabled { id: Option<String>, resume: bool },
    Failed,
}

/// XEP-0198 result of an inline `<resume/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResumeResult {
    /// Resumed; the server's `h` (how many of our stanzas it handled).
    Resumed { h: u32 },
    /// Refused; the server's `h` if it gave one.
    Failed { h: Option<u32> },
}

/// A successful SASL2 exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub mechanism: &'static str,
    /// The authorization identifier: our full JID if a resource was bound, else bare.
    pub authz_id: String,
    /// Bind2 bound a resource (then `authz_id` is the full JID).
    pub bound: bool,
    pub sm: Option<SmResult>,
    pub carbons: bool,
    /// A new FAST token (requested, or rotated by the server).
    pub token: Option<FastToken>,
    pub ssdp_verified: bool,
    pub resume: Option<ResumeResult>,
}

/// What to do after a server element.
#[derive(Debug)]
pub(crate) enum Step {
    Send(Element),
    Done(Box<Outcome>),
}

pub(crate) struct Sasl2Auth {
    method: Method,
    mechanism: &'static str,
    jid: BareJid,
    request: Request,
}

fn auth_error(condition: &str, text: impl Into<String>) -> ConnectError {
    ConnectError::Auth {
        condition: condition.to_owned(),
        text: Some(text.into()),
    }
}

fn decode(el: &Element) -> Result<Vec<u8>, ConnectError> {
    let text = el.text();
    let text: String = text.split_whitespace().collect();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text)
        .map_err(|_| ConnectError::Protocol("SASL2 data is not base64".into()))
}

impl Sasl2Auth {
    /// Returns the exchange and the `<authenticate/>` to send.
    pub fn new(
        method: Method,
        mechanism: &'static str,
        jid: BareJid,
        request: Request,
    ) -> (Sasl2Auth, Element) {
        let mut auth = Sasl2Auth {
            method,
            mechanism,
            jid,
            request,
        };
        let initial = match &mut auth.method {
            Method::Scram(s) => Zeroizing::new(s.client_first()),
            Method::Plain(p) => p.clone(),
            Method::Ht { token, cb_data, .. } => {
                let username = auth.jid.local().unwrap_or_default();
                fast::initiator_message(username, token, cb_data)
            }
        };
        let r = &auth.request;
        let mut ua = el("user-agent", NS_SASL2).attr("id", &r.user_agent_id);
        if !r.software.is_empty() {
            ua = ua.child(el("software", NS_SASL2).text(r.software.clone()));
        }
        if !r.device.is_empty() {
            ua = ua.child(el("device", NS_SASL2).text(r.device.clone()));
        }
        let mut authenticate = el("authenticate", NS_SASL2)
            .attr("mechanism", mechanism)
            .child(el("initial-response", NS_SASL2).text(B64.encode(&*initial)))
            .child(ua);
        if let Some((previd, h)) = &r.resume {
            authenticate = authenticate.child(
                el("resume", ns::SM)
                    .attr("previd", previd)
                    .attr("h", h.to_string()),
            );
        }
        if let Some(tag) = &r.bind_tag {
            let mut bind = el("bind", NS_BIND2).child(el("tag", NS_BIND2).text(tag.clone()));
            if r.carbons {
                bind = bind.child(el("enable", NS_CARBONS));
            }
            if r.sm {
                bind = bind.child(el("enable", ns::SM).attr("resume", "true"));
            }
            authenticate = authenticate.child(bind);
        }
        if matches!(auth.method, Method::Ht { .. }) {
            let count = (r.fast_count > 0).then(|| r.fast_count.to_string());
            let invalidate = r.fast_invalidate.then_some("true");
            authenticate = authenticate.child(
                el("fast", NS_FAST)
                    .attr_opt("count", count)
                    .attr_opt("invalidate", invalidate),
            );
        }
        if let Some(mech) = r.request_token {
            authenticate = authenticate.child(el("request-token", NS_FAST).attr("mechanism", mech));
        }
        (auth, authenticate.build())
    }

    /// XEP-0474: the SCRAM server's downgrade-protection hash is checked against the
    /// mechanisms of `offer` (the features of this stream, which may differ from the ones the
    /// exchange was planned from when it was pipelined). No SASL2 offer: nothing to expect.
    pub fn expect_downgrade_hash(&mut self, offer: Option<&Offer>, cb_types: Option<&[String]>) {
        if let (Method::Scram(scram), Some(offer)) = (&mut self.method, offer) {
            scram.expect_downgrade_hash(&offer.mechanisms, cb_types);
        }
    }

    pub fn is_fast(&self) -> bool {
        matches!(self.method, Method::Ht { .. })
    }

    pub fn on_element(&mut self, reply: &Element) -> Result<Step, ConnectError> {
        if reply.ns() != NS_SASL2 {
            return Err(ConnectError::Protocol(format!(
                "unexpected <{}/> during SASL2",
                reply.name()
            )));
        }
        match reply.name() {
            "challenge" => self.on_challenge(reply),
            "success" => self.on_success(reply).map(|o| Step::Done(Box::new(o))),
            "failure" => Err(self.failure(reply)),
            "continue" => {
                let tasks: Vec<String> = reply
                    .get_child("tasks", NS_SASL2)
                    .map(|t| {
                        t.children()
                            .filter(|c| c.is("task", NS_SASL2))
                            .map(|c| c.text().trim().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let text = reply.get_child("text", NS_SASL2).map(|t| t.text());
                Err(auth_error(
                    "unsupported-task",
                    format!(
                        "the server requires further steps we do not support ({}){}",
                        tasks.join(", "),
                        text.map(|t| format!(": {t}")).unwrap_or_default()
                    ),
                ))
            }
            other => Err(ConnectError::Protocol(format!(
                "unexpected <{other}/> during SASL2"
            ))),
        }
    }

    fn on_challenge(&mut self, reply: &Element) -> Result<Step, ConnectError> {
        let data = decode(reply)?;
        let Method::Scram(scram) = &mut self.method else {
            return Err(ConnectError::Protocol(format!(
                "challenge for single-step mechanism {}",
                self.mechanism
            )));
        };
        let response = scram.client_final(&data).map_err(|e| match e {
            crate::scram::ScramError::Downgrade => auth_error("downgrade-detected", e.to_string()),
            e => auth_error("scram", e.to_string()),
        })?;
        Ok(Step::Send(
            el("response", NS_SASL2).text(B64.encode(response)).build(),
        ))
    }

    fn failure(&self, reply: &Element) -> ConnectError {
        let condition = reply
            .children()
            .find(|c| c.ns() == ns::SASL && c.name() != "text")
            .or_else(|| reply.children().find(|c| c.name() != "text"))
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "not-authorized".into());
        let text = reply
            .get_child("text", NS_SASL2)
            .or_else(|| reply.get_child("text", ns::SASL))
            .map(|t| t.text());
        if self.is_fast() {
            // XEP-0484: any failure with a token means the token is no good any more; the
            // caller drops it and logs in with the password.
            ConnectError::Auth {
                condition: ConnectError::FAST_TOKEN_REJECTED.into(),
                text: Some(format!(
                    "{condition}{}",
                    text.map(|t| format!(": {t}")).unwrap_or_default()
                )),
            }
        } else {
            ConnectError::Auth { condition, text }
        }
    }

    /// The `<resumed/>` or `<failed/>` answering our inline `<resume/>`. A `<resumed/>` we
    /// did not ask for, or for another session than ours, is a protocol violation: accepting
    /// it would splice someone else's (or no) stream state into ours.
    fn resume_result(&self, reply: &Element) -> Result<Option<ResumeResult>, ConnectError> {
        let resumed = reply.get_child("resumed", ns::SM);
        let failed = reply.get_child("failed", ns::SM);
        let Some((previd, _)) = &self.request.resume else {
            if resumed.is_some() {
                return Err(ConnectError::Protocol(
                    "server resumed a session we did not ask to resume".into(),
                ));
            }
            return Ok(None);
        };
        if let Some(r) = resumed {
            if r.attr("previd") != Some(previd.as_str()) {
                return Err(ConnectError::Protocol(
                    "server resumed a different session than the one we asked for".into(),
                ));
            }
            let h =
                parse_h(r)?.ok_or_else(|| ConnectError::Protocol("<resumed/> without h".into()))?;
            return Ok(Some(ResumeResult::Resumed { h }));
        }
        if let Some(f) = failed {
            // The condition, directly or inside a stanza <error/> (Prosody's form).
            let cond_of = |e: &Element| {
                e.children()
                    .find(|c| c.name() != "text")
                    .map(|c| c.name().to_owned())
            };
            let condition = f
                .get_child("error", ns::JABBER_CLIENT)
                .or_else(|| f.children().find(|c| c.name() == "error"))
                .and_then(cond_of)
                .or_else(|| cond_of(f));
            // The server's text names the cause (e.g. Prosody's "Client acknowledged more
            // stanzas than sent by server"); it carries no user data.
            let text: Vec<String> = f
                .children()
                .flat_map(|c| std::iter::once(c).chain(c.children()))
                .filter(|c| c.name() == "text")
                .map(Element::text)
                .collect();
            tracing::debug!(?condition, h = ?f.attr("h"), ?text, "inline resumption refused");
            return Ok(Some(ResumeResult::Failed { h: parse_h(f)? }));
        }
        // The server ignored the request: treat it as refused.
        Ok(Some(ResumeResult::Failed { h: None }))
    }

    fn on_success(&mut self, reply: &Element) -> Result<Outcome, ConnectError> {
        let additional = reply
            .get_child("additional-data", NS_SASL2)
            .map(decode)
            .transpose()?;
        let mut ssdp_verified = false;
        // Mutual authentication: exactly as strict as legacy SASL.
        match &mut self.method {
            Method::Scram(scram) => {
                let data = additional.ok_or_else(|| {
                    auth_error(
                        "server-not-verified",
                        "SCRAM success without the server's signature",
                    )
                })?;
                scram
                    .verify_server_final(&data)
                    .map_err(|e| auth_error("server-not-verified", e.to_string()))?;
                ssdp_verified = scram.downgrade_hash_verified();
            }
            Method::Ht { token, cb_data, .. } => {
                let data = additional.ok_or_else(|| {
                    auth_error(
                        "server-not-verified",
                        "HT success without the server's proof",
                    )
                })?;
                if !fast::verify_responder(token, cb_data, &data) {
                    return Err(auth_error(
                        "server-not-verified",
                        "the server's HT proof is wrong: it does not know our token",
                    ));
                }
            }
            Method::Plain(_) => {}
        }
        let authz_id = reply
            .get_child("authorization-identifier", NS_SASL2)
            .map(|a| a.text().trim().to_owned())
            .ok_or_else(|| ConnectError::Protocol("SASL2 success without identity".into()))?;
        // The server may pick the resource, never the account.
        if split_bare(&authz_id).as_deref() != Some(self.jid.as_str()) {
            return Err(ConnectError::Protocol(
                "server authenticated a different account".into(),
            ));
        }
        let full = authz_id.contains('/');
        let mut outcome = Outcome {
            mechanism: self.mechanism,
            authz_id,
            bound: false,
            sm: None,
            carbons: false,
            token: None,
            ssdp_verified,
            resume: None,
        };
        outcome.resume = self.resume_result(reply)?;
        let resumed = matches!(outcome.resume, Some(ResumeResult::Resumed { .. }));
        if self.request.bind_tag.is_some() && !resumed {
            if let Some(failed) = reply.get_child("failed", NS_BIND2) {
                let condition = failed
                    .children()
                    .flat_map(|e| e.children())
                    .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
                    .map(|c| c.name().to_owned())
                    .unwrap_or_else(|| "undefined-condition".into());
                return Err(ConnectError::Protocol(format!(
                    "inline resource binding failed: {condition}"
                )));
            }
            if let Some(bound) = reply.get_child("bound", NS_BIND2) {
                if !full {
                    return Err(ConnectError::Protocol(
                        "bound without a full JID in the authorization identifier".into(),
                    ));
                }
                outcome.bound = true;
                // XEP-0386: enabling carbons inline cannot fail and needs no answer.
                outcome.carbons = self.request.carbons;
                if self.request.sm {
                    outcome.sm = if let Some(en) = bound.get_child("enabled", ns::SM) {
                        Some(SmResult::Enabled {
                            id: en.attr("id").map(str::to_owned),
                            resume: matches!(en.attr("resume"), Some("true") | Some("1")),
                        })
                    } else if bound.has_child("failed", ns::SM) {
                        Some(SmResult::Failed)
                    } else {
                        None
                    };
                }
            }
        }
        if let Some(t) = reply.get_child("token", NS_FAST) {
            let (Some(token), Some(expiry)) = (t.attr("token"), t.attr("expiry")) else {
                return Err(ConnectError::Protocol(
                    "FAST token without token or expiry".into(),
                ));
            };
            // A requested token is for the mechanism we asked; a rotated one for the mechanism
            // we just used.
            let mechanism = match (&self.method, self.request.request_token) {
                (_, Some(m)) => m,
                (Method::Ht { mechanism, .. }, None) => mechanism,
                _ => return Err(ConnectError::Protocol("unrequested FAST token".into())),
            };
            outcome.token = Some(FastToken::new(mechanism, token, expiry));
        }
        Ok(outcome)
    }
}

/// The optional `h` attribute of an XEP-0198 element; present but not a number is an error.
pub(crate) fn parse_h(el: &Element) -> Result<Option<u32>, ConnectError> {
    el.attr("h")
        .map(|h| {
            h.trim()
                .parse()
                .map_err(|_| ConnectError::Protocol(format!("<{}/> with invalid h", el.name())))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::{Binding, ScramHash};

    fn x(s: &str) -> Element {
        s.parse().expect("test XML")
    }

    fn jid() -> BareJid {
        BareJid::parse("user@example.org").unwrap()
    }

    fn request() -> Request {
        Request {
            user_agent_id: "d4565fa7-4d72-4749-b3d3-740edbf87770".into(),
            software: "Linnet".into(),
            device: "linux".into(),
            bind_tag: Some("Linnet".into()),
            carbons: true,
            sm: true,
            request_token: Some(fast::HT_SHA_256_NONE),
            fast_count: 0,
            fast_invalidate: false,
            resume: None,
        }
    }

    const PROSODY_FEATURES: &str = "<features xmlns='http://etherx.jabber.org/streams'><authentication xmlns='urn:xmpp:sasl:2'><mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-256</mechanism><mechanism>OAUTHBEARER</mechanism><inline><bind xmlns='urn:xmpp:bind:0'><inline><feature var='urn:xmpp:carbons:2'/><feature var='urn:xmpp:csi:0'/><feature var='urn:xmpp:sm:3'/></inline></bind><sm xmlns='urn:xmpp:sm:3'/><fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism><mechanism>HT-SHA-256-EXPR</mechanism></fast></inline></authentication><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms><sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-exporter'/></sasl-channel-binding></features>";

    #[test]
    fn parses_offer() {
        let f = x(PROSODY_FEATURES);
        let o = Offer::parse(&f).unwrap();
        assert_eq!(
            o.mechanisms,
            [
                "PLAIN",
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-256",
                "OAUTHBEARER"
            ]
        );
        assert!(o.bind2_offers(ns::SM) && o.bind2_offers(NS_CARBONS));
        assert!(!o.bind2_offers("urn:example"));
        assert_eq!(o.fast, ["HT-SHA-256-NONE", "HT-SHA-256-EXPR"]);
        assert!(o.sm_resume);
        assert_eq!(
            channel_binding_types(&f),
            Some(vec!["tls-exporter".to_owned()])
        );
        assert!(Offer::parse(&x("<features xmlns='http://etherx.jabber.org/streams'/>")).is_none());
    }

    /// Drives a SCRAM-SHA-1 exchange with the RFC 5802 vector through SASL2 elements.
    fn scram_auth(request: Request) -> (Sasl2Auth, Element) {
        let scram = ScramClient::new_for_test(
            ScramHash::Sha1,
            "user",
            "pencil",
            Binding::None,
            "fyko+d2lbbFgONRv9qkxdawL",
        );
        Sasl2Auth::new(
            Method::Scram(Box::new(scram)),
            "SCRAM-SHA-1",
            jid(),
            request,
        )
    }

    const SERVER_FIRST: &str =
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
    const SERVER_FINAL: &str = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=";

    fn challenge() -> Element {
        x(&format!(
            "<challenge xmlns='urn:xmpp:sasl:2'>{}</challenge>",
            B64.encode(SERVER_FIRST)
        ))
    }

    #[test]
    fn builds_authenticate_with_user_agent_bind_and_token_request() {
        let (_, auth) = scram_auth(request());
        assert_eq!(auth.attr("mechanism"), Some("SCRAM-SHA-1"));
        let ir = auth.get_child("initial-response", NS_SASL2).unwrap().text();
        assert_eq!(
            B64.decode(ir).unwrap(),
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
        );
        let ua = auth.get_child("user-agent", NS_SASL2).unwrap();
        assert_eq!(ua.attr("id"), Some("d4565fa7-4d72-4749-b3d3-740edbf87770"));
        assert_eq!(ua.get_child("software", NS_SASL2).unwrap().text(), "Linnet");
        let bind = auth.get_child("bind", NS_BIND2).unwrap();
        assert_eq!(bind.get_child("tag", NS_BIND2).unwrap().text(), "Linnet");
        assert!(bind.has_child("enable", NS_CARBONS));
        assert_eq!(
            bind.get_child("enable", ns::SM).unwrap().attr("resume"),
            Some("true")
        );
        assert_eq!(
            auth.get_child("request-token", NS_FAST)
                .unwrap()
                .attr("mechanism"),
            Some("HT-SHA-256-NONE")
        );
        assert!(!auth.has_child("fast", NS_FAST));
    }

    /// Runs a SCRAM exchange up to `<success/>` with `inner` as extra children.
    fn success_with(request: Request, inner: &str) -> Result<Step, ConnectError> {
        let (mut a, first) = scram_auth(request);
        if let Some((previd, h)) = &a.request.resume.clone() {
            let r = first.get_child("resume", ns::SM).expect("inline resume");
            assert_eq!(r.attr("previd"), Some(previd.as_str()));
            assert_eq!(r.attr("h"), Some(h.to_string().as_str()));
        } else {
            assert!(!first.has_child("resume", ns::SM));
        }
        a.on_element(&challenge()).unwrap();
        let success = x(&format!(
            "<success xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><authorization-identifier>user@example.org/r1</authorization-identifier>{inner}</success>",
            B64.encode(SERVER_FINAL)
        ));
        a.on_element(&success)
    }

    fn outcome(step: Result<Step, ConnectError>) -> Outcome {
        match step {
            Ok(Step::Done(o)) => *o,
            other => panic!("expected success, got {other:?}"),
        }
    }

    #[test]
    fn inline_resume_results() {
        let resuming = Request {
            resume: Some(("sm1".into(), 7)),
            ..request()
        };
        let o = outcome(success_with(
            resuming.clone(),
            "<resumed xmlns='urn:xmpp:sm:3' previd='sm1' h='4'/>",
        ));
        assert_eq!(o.resume, Some(ResumeResult::Resumed { h: 4 }));
        assert!(!o.bound, "a resumed session is not bound anew");
        let o = outcome(success_with(
            resuming.clone(),
            "<failed xmlns='urn:xmpp:sm:3' h='2'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed><bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3' id='sm2' resume='1'/></bound>",
        ));
        assert_eq!(o.resume, Some(ResumeResult::Failed { h: Some(2) }));
        assert!(o.bound);
        let o = outcome(success_with(resuming.clone(), ""));
        assert_eq!(o.resume, Some(ResumeResult::Failed { h: None }));
        // Another session than ours, a resumption we never asked for, or a bad h.
        for (req, inner) in [
            (
                resuming.clone(),
                "<resumed xmlns='urn:xmpp:sm:3' previd='other' h='0'/>",
            ),
            (resuming.clone(), "<resumed xmlns='urn:xmpp:sm:3' h='0'/>"),
            (
                resuming.clone(),
                "<resumed xmlns='urn:xmpp:sm:3' previd='sm1' h='x'/>",
            ),
            (
                request(),
                "<resumed xmlns='urn:xmpp:sm:3' previd='sm1' h='0'/>",
            ),
        ] {
            assert!(
                matches!(success_with(req, inner), Err(ConnectError::Protocol(_))),
                "{inner}"
            );
        }
    }

    #[test]
    fn scram_success_with_bind_sm_carbons_and_token() {
        let (mut a, _) = scram_auth(request());
        let Step::Send(resp) = a.on_element(&challenge()).unwrap() else {
            panic!("expected a response")
        };
        assert!(resp.is("response", NS_SASL2));
        assert_eq!(
            B64.decode(resp.text()).unwrap(),
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        let success = x(&format!(
            "<success xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><authorization-identifier>user@example.org/Linnet~abc</authorization-identifier><bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3' id='sm1' resume='1' max='600'/><enabled xmlns='urn:xmpp:carbons:2'/></bound><token xmlns='urn:xmpp:fast:0' token='secret-token:fast-xyz' expiry='2030-01-01T00:00:00Z'/></success>",
            B64.encode(SERVER_FINAL)
        ));
        let Step::Done(o) = a.on_element(&success).unwrap() else {
            panic!("expected success")
        };
        assert_eq!(o.authz_id, "user@example.org/Linnet~abc");
        assert!(o.bound && o.carbons);
        assert_eq!(
            o.sm,
            Some(SmResult::Enabled {
                id: Some("sm1".into()),
                resume: true
            })
        );
        let t = o.token.unwrap();
        assert_eq!(t.mechanism, "HT-SHA-256-NONE");
        assert_eq!(t.token.as_str(), "secret-token:fast-xyz");
        assert_eq!(t.expiry, "2030-01-01T00:00:00Z");
    }

    #[test]
    fn scram_success_needs_a_valid_server_signature() {
        for additional in [
            String::new(),
            format!(
                "<additional-data>{}</additional-data>",
                B64.encode("v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            ),
        ] {
            let (mut a, _) = scram_auth(request());
            a.on_element(&challenge()).unwrap();
            let success = x(&format!("<success xmlns='urn:xmpp:sasl:2'>{additional}<authorization-identifier>user@example.org/r</authorization-identifier></success>"));
            let err = a.on_element(&success).unwrap_err();
            assert!(
                matches!(&err, ConnectError::Auth { condition, .. } if condition == "server-not-verified"),
                "{err:?}"
            );
        }
        // Success straight away, before the SCRAM exchange happened.
        let (mut a, _) = scram_auth(request());
        let success = x(&format!("<success xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><authorization-identifier>user@example.org</authorization-identifier></success>", B64.encode(SERVER_FINAL)));
        assert!(a.on_element(&success).is_err());
    }

    #[test]
    fn other_account_failure_and_continue_are_errors() {
        let (mut a, _) = scram_auth(request());
        a.on_element(&challenge()).unwrap();
        let success = x(&format!("<success xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><authorization-identifier>mallory@example.org/r</authorization-identifier></success>", B64.encode(SERVER_FINAL)));
        assert!(matches!(
            a.on_element(&success),
            Err(ConnectError::Protocol(_))
        ));

        let (mut a, _) = scram_auth(request());
        let failure = x("<failure xmlns='urn:xmpp:sasl:2'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><text>Unable to authorize you</text></failure>");
        assert_eq!(
            a.on_element(&failure).unwrap_err(),
            ConnectError::Auth {
                condition: "not-authorized".into(),
                text: Some("Unable to authorize you".into())
            }
        );

        let (mut a, _) = scram_auth(request());
        a.on_element(&challenge()).unwrap();
        let cont = x(&format!("<continue xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><tasks><task>TOTP-EXAMPLE</task></tasks><text>This account requires 2FA</text></continue>", B64.encode(SERVER_FINAL)));
        let err = a.on_element(&cont).unwrap_err();
        assert!(
            matches!(&err, ConnectError::Auth { condition, text: Some(t) } if condition == "unsupported-task" && t.contains("TOTP-EXAMPLE")),
            "{err:?}"
        );
        // Anything else mid-exchange is a protocol violation.
        let (mut a, _) = scram_auth(request());
        assert!(matches!(
            a.on_element(&x("<message xmlns='jabber:client'/>")),
            Err(ConnectError::Protocol(_))
        ));
    }

    #[test]
    fn downgraded_mechanism_list_fails_the_login() {
        let mut scram = ScramClient::new_for_test(
            ScramHash::Sha1,
            "user",
            "pencil",
            Binding::None,
            "fyko+d2lbbFgONRv9qkxdawL",
        );
        // What we saw: a MITM removed SCRAM-SHA-256 from the SASL2 list.
        scram.expect_downgrade_hash(&["SCRAM-SHA-1".to_owned()], None);
        let (mut a, _) = Sasl2Auth::new(
            Method::Scram(Box::new(scram)),
            "SCRAM-SHA-1",
            jid(),
            request(),
        );
        let server_saw = crate::scram::ssdp_hash(
            ScramHash::Sha1,
            &["SCRAM-SHA-256".to_owned(), "SCRAM-SHA-1".to_owned()],
            None,
        );
        let challenge = x(&format!(
            "<challenge xmlns='urn:xmpp:sasl:2'>{}</challenge>",
            B64.encode(format!("{SERVER_FIRST},h={server_saw}"))
        ));
        let err = a.on_element(&challenge).unwrap_err();
        assert!(
            matches!(&err, ConnectError::Auth { condition, .. } if condition == "downgrade-detected"),
            "{err:?}"
        );
    }

    #[test]
    fn inline_failures_are_reported() {
        let (mut a, _) = scram_auth(request());
        a.on_element(&challenge()).unwrap();
        let success = x(&format!("<success xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><authorization-identifier>user@example.org/r</authorization-identifier><bound xmlns='urn:xmpp:bind:0'><failed xmlns='urn:xmpp:sm:3'><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed></bound></success>", B64.encode(SERVER_FINAL)));
        let Step::Done(o) = a.on_element(&success).unwrap() else {
            panic!()
        };
        assert_eq!(o.sm, Some(SmResult::Failed));
        assert!(o.bound);

        let (mut a, _) = scram_auth(request());
        a.on_element(&challenge()).unwrap();
        let success = x(&format!("<success xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><authorization-identifier>user@example.org</authorization-identifier><failed xmlns='urn:xmpp:bind:0'><error type='cancel' xmlns='jabber:client'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></failed></success>", B64.encode(SERVER_FINAL)));
        let err = a.on_element(&success).unwrap_err();
        assert!(
            matches!(&err, ConnectError::Protocol(m) if m.contains("conflict")),
            "{err:?}"
        );

        // No <bound/>: the caller binds the old way (authz id is the bare JID).
        let (mut a, _) = scram_auth(request());
        a.on_element(&challenge()).unwrap();
        let success = x(&format!("<success xmlns='urn:xmpp:sasl:2'><additional-data>{}</additional-data><authorization-identifier>user@example.org</authorization-identifier></success>", B64.encode(SERVER_FINAL)));
        let Step::Done(o) = a.on_element(&success).unwrap() else {
            panic!()
        };
        assert!(!o.bound && !o.carbons && o.sm.is_none());
    }

    const TOKEN: &str = "secret-token:fast-WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZm";

    fn ht_auth(cb: &[u8], count: u32) -> (Sasl2Auth, Element) {
        let mut r = request();
        r.request_token = None;
        r.fast_count = count;
        let mech = if cb.is_empty() {
            fast::HT_SHA_256_NONE
        } else {
            fast::HT_SHA_256_EXPR
        };
        Sasl2Auth::new(
            Method::Ht {
                mechanism: mech,
                token: Zeroizing::new(TOKEN.into()),
                cb_data: Zeroizing::new(cb.to_vec()),
            },
            mech,
            jid(),
            r,
        )
    }

    #[test]
    fn fast_authenticate_and_mutual_auth() {
        let cb: Vec<u8> = (0u8..32).collect();
        let (mut a, auth) = ht_auth(&cb, 7);
        assert_eq!(auth.attr("mechanism"), Some("HT-SHA-256-EXPR"));
        let ir = B64
            .decode(auth.get_child("initial-response", NS_SASL2).unwrap().text())
            .unwrap();
        assert_eq!(&ir[..5], b"user\0");
        assert_eq!(
            B64.encode(&ir[5..]),
            "AzDcfcdrNS6m3fWhE3Ch3k1MhRKiUMtHOMS8AUlmoug="
        );
        let f = auth.get_child("fast", NS_FAST).unwrap();
        assert_eq!(f.attr("count"), Some("7"));
        assert_eq!(f.attr("invalidate"), None);
        assert!(!auth.has_child("request-token", NS_FAST));
        assert!(!auth.text().contains("secret-token"));
        // A challenge makes no sense for HT.
        assert!(a.on_element(&challenge()).is_err());
        // Rotation: the server sends a new token with the success.
        let success = x("<success xmlns='urn:xmpp:sasl:2'><additional-data>rixK2D9VxoplSsTLwcVQH9VpauOU8oaXEEZZQBL8/AU=</additional-data><authorization-identifier>user@example.org/Linnet~x</authorization-identifier><bound xmlns='urn:xmpp:bind:0'/><token xmlns='urn:xmpp:fast:0' token='secret-token:fast-new' expiry='2031-01-01T00:00:00Z'/></success>");
        let Step::Done(o) = a.on_element(&success).unwrap() else {
            panic!()
        };
        assert_eq!(o.mechanism, "HT-SHA-256-EXPR");
        assert_eq!(o.token.unwrap().mechanism, "HT-SHA-256-EXPR");
    }

    #[test]
    fn fast_rejects_forged_responder_and_flags_token_failures() {
        let (mut a, _) = ht_auth(&[], 1);
        // The EXPR responder does not verify for NONE (other channel-binding data).
        let success = x("<success xmlns='urn:xmpp:sasl:2'><additional-data>rixK2D9VxoplSsTLwcVQH9VpauOU8oaXEEZZQBL8/AU=</additional-data><authorization-identifier>user@example.org/x</authorization-identifier></success>");
        assert!(matches!(
            a.on_element(&success),
            Err(ConnectError::Auth { condition, .. }) if condition == "server-not-verified"
        ));
        let (mut a, auth) = ht_auth(&[], 0);
        assert_eq!(auth.get_child("fast", NS_FAST).unwrap().attr("count"), None);
        let failure = x("<failure xmlns='urn:xmpp:sasl:2'><credentials-expired xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>");
        let err = a.on_element(&failure).unwrap_err();
        assert!(err.is_fast_token_rejected(), "{err:?}");
        assert!(err.to_string().contains("credentials-expired"));
    }

    #[test]
    fn invalidate_is_sent() {
        let mut r = request();
        r.request_token = None;
        r.fast_invalidate = true;
        let (_, auth) = Sasl2Auth::new(
            Method::Ht {
                mechanism: fast::HT_SHA_256_NONE,
                token: Zeroizing::new(TOKEN.into()),
                cb_data: Zeroizing::new(Vec::new()),
            },
            fast::HT_SHA_256_NONE,
            jid(),
            r,
        );
        assert_eq!(
            auth.get_child("fast", NS_FAST).unwrap().attr("invalidate"),
            Some("true")
        );
    }

    #[test]
    fn user_agent_ids_are_uuid_v4_and_stable_per_device() {
        let a = derived_user_agent_id(&jid(), "linnet.abc");
        assert!(is_uuid_v4(&a), "{a}");
        assert_eq!(a, derived_user_agent_id(&jid(), "linnet.abc"));
        assert_ne!(a, derived_user_agent_id(&jid(), "linnet.abd"));
        let r = new_user_agent_id();
        assert!(is_uuid_v4(&r), "{r}");
        assert_ne!(r, new_user_agent_id());
        assert!(is_uuid_v4("d4565fa7-4d72-4749-b3d3-740edbf87770"));
        assert!(!is_uuid_v4("d4565fa7-4d72-1749-b3d3-740edbf87770"));
        assert!(!is_uuid_v4("not a uuid"));
    }
}
