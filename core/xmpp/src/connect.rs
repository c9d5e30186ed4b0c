//! Our connector: TCP (SRV or an explicit host), STARTTLS or direct TLS (XEP-0368), SASL
//! (SCRAM with channel binding chosen per XEP-0440, PLAIN only as a last resort and only
//! over TLS), resource binding and stream management. Built on tokio-xmpp's XML stream
//! primitives; tokio-xmpp's own login is not used (see FIELD-NOTES).

use std::borrow::Cow;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::connect::{AsyncReadAndWrite, DnsConfig};
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;
use zeroize::Zeroizing;

use crate::elem::el;
use crate::error::ConnectError;
use crate::jid::{split_bare, BareJid};
use crate::scram::{Binding, ScramClient, ScramHash};
use crate::tls::{self, TlsOptions};

pub(crate) type Io = Box<dyn AsyncReadAndWrite + Send + 'static>;
pub(crate) type Stream = XmlStream<Io, Element>;

/// Where to reach the server when DNS SRV is not to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    /// XEP-0368: TLS from the first byte instead of STARTTLS.
    pub direct_tls: bool,
}

#[derive(Clone)]
pub struct ConnectConfig {
    pub jid: BareJid,
    pub password: Zeroizing<String>,
    pub resource: String,
    /// `None`: SRV records of the JID's domain (`_xmpps-client` then `_xmpp-client`).
    pub server: Option<ServerAddr>,
    pub tls: TlsOptions,
    /// Limit for each network step of the login (connect, TLS, each response).
    pub step_timeout: Duration,
    /// Ask for XEP-0198 stream management when offered.
    pub stream_management: bool,
    /// Silence after which we probe the link (XEP-0198 `<r/>` or an XEP-0199 ping); no
    /// answer within `step_timeout` after that means the link is dead.
    pub keepalive: Duration,
}

impl std::fmt::Debug for ConnectConfig {
    // Deliberately omits the JID and password: configs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ConnectConfig {
    pub fn new(jid: BareJid, password: &str) -> Self {
        ConnectConfig {
            jid,
            password: Zeroizing::new(password.to_owned()),
            resource: format!("linnet.{}", crate::new_id()[..8].to_owned()),
            server: None,
            tls: TlsOptions::default(),
            step_timeout: Duration::from_secs(20),
            stream_management: true,
            keepalive: Duration::from_secs(90),
        }
    }
}

/// What was negotiated; tests and diagnostics read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub mechanism: &'static str,
    pub channel_binding: Option<&'static str>,
    pub direct_tls: bool,
    pub bound_jid: String,
    /// XEP-0198 `<enabled/>` id if stream management is on.
    pub sm_id: Option<String>,
    pub sm_resumable: bool,
    /// Maximum stanza size the server announced (XEP-0478), if any.
    pub max_stanza_bytes: Option<u32>,
}

pub struct Connection {
    pub(crate) stream: Stream,
    pub negotiated: Negotiated,
    pub(crate) step_timeout: Duration,
}

pub(crate) async fn next_element<S: AsyncReadAndWrite>(
    stream: &mut XmlStream<S, Element>,
    limit: Duration,
) -> Result<Element, ConnectError> {
    let fut = async {
        loop {
            match stream.next().await {
                Some(Ok(el)) => {
                    if el.is("error", ns::STREAM) {
                        return Err(ConnectError::Stream(stream_error_condition(&el)));
                    }
                    return Ok(el);
                }
                Some(Err(ReadError::SoftTimeout)) => continue,
                Some(Err(ReadError::HardError(e))) => return Err(e.into()),
                Some(Err(ReadError::ParseError(e))) => {
                    return Err(ConnectError::Protocol(format!("unparsable element: {e}")))
                }
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    return Err(ConnectError::Network("server closed the stream".into()))
                }
            }
        }
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ConnectError::Timeout("no response from server"))?
}

pub(crate) fn stream_error_condition(el: &Element) -> String {
    el.children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-streams" && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into())
}

async fn send(stream: &mut Stream, el: &Element) -> Result<(), ConnectError> {
    stream.send(el).await.map_err(ConnectError::from)
}

fn timeouts(cfg: &ConnectConfig) -> Timeouts {
    Timeouts {
        read_timeout: cfg.keepalive,
        response_timeout: cfg.step_timeout,
    }
}

async fn open_tcp(cfg: &ConnectConfig) -> Result<(TcpStream, bool), ConnectError> {
    let domain = cfg.jid.domain();
    let (dns, direct) = match &cfg.server {
        Some(addr) => (DnsConfig::no_srv(&addr.host, addr.port), addr.direct_tls),
        None => (DnsConfig::srv_default_client(domain), false),
    };
    let tcp = tokio::time::timeout(cfg.step_timeout, dns.resolve())
        .await
        .map_err(|_| ConnectError::Timeout("TCP connect"))?
        .map_err(|e| ConnectError::Network(e.to_string()))?;
    // Stanzas are small and latency-bound; Nagle only adds round trips.
    let _ = tcp.set_nodelay(true);
    Ok((tcp, direct))
}

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    }
}

/// Connects and brings the stream up to TLS, returning the post-TLS features.
async fn secure_stream(
    cfg: &ConnectConfig,
) -> Result<(Stream, Element, Option<Vec<u8>>, bool), ConnectError> {
    let domain = cfg.jid.domain().to_owned();
    let tls_config = tls::client_config(&cfg.tls)?;
    let (tcp, direct) = open_tcp(cfg).await?;
    let t = timeouts(cfg);
    let (tls_stream, exporter) = if direct {
        tokio::time::timeout(cfg.step_timeout, tls::handshake(tcp, &domain, tls_config))
            .await
            .map_err(|_| ConnectError::Timeout("TLS handshake"))??
    } else {
        let plain =
            initiate_stream(BufStream::new(tcp), ns::JABBER_CLIENT, header(&domain), t).await?;
        let (_, mut plain) = recv_features_raw(plain, cfg.step_timeout).await?;
        let features = next_element(&mut plain, cfg.step_timeout).await?;
        if !features.is("features", ns::STREAM) || !features.has_child("starttls", ns::TLS) {
            // Never continue in clear: credentials and messages would be exposed.
            return Err(ConnectError::NoTls);
        }
        let req: Element = el("starttls", ns::TLS).build();
        plain.send(&req).await?;
        let reply = next_element(&mut plain, cfg.step_timeout).await?;
        if !reply.is("proceed", ns::TLS) {
            return Err(ConnectError::Tls("server refused STARTTLS".into()));
        }
        let tcp = plain.into_inner().into_inner();
        tokio::time::timeout(cfg.step_timeout, tls::handshake(tcp, &domain, tls_config))
            .await
            .map_err(|_| ConnectError::Timeout("TLS handshake"))??
    };
    let io: Io = Box::new(BufStream::new(tls_stream));
    let pending = initiate_stream(io, ns::JABBER_CLIENT, header(&domain), t).await?;
    let (_, mut stream) = recv_features_raw(pending, cfg.step_timeout).await?;
    let features = next_element(&mut stream, cfg.step_timeout).await?;
    if !features.is("features", ns::STREAM) {
        return Err(ConnectError::Protocol("expected stream features".into()));
    }
    Ok((stream, features, exporter, direct))
}

/// tokio-xmpp parses features into its own type, which drops what we need (and fails on
/// what it does not know), so we skip that and read the features element ourselves.
async fn recv_features_raw<S: AsyncReadAndWrite>(
    pending: tokio_xmpp::xmlstream::PendingFeaturesRecv<S>,
    _limit: Duration,
) -> Result<((), XmlStream<S, Element>), ConnectError> {
    Ok(((), pending.skip_features()))
}

struct Choice {
    hash: Option<ScramHash>,
    binding: Binding,
}

/// Picks the strongest mechanism we can complete. Channel binding is used only when the
/// server names a type we can produce (XEP-0440); otherwise we authenticate without it
/// instead of guessing, because a wrong guess fails the login (ejabberd, FIELD-NOTES).
fn choose_mechanism(features: &Element, exporter: Option<&[u8]>) -> Result<Choice, ConnectError> {
    let mechs: Vec<String> = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .map(|c| c.text())
                .collect()
        })
        .unwrap_or_default();
    let has = |m: &str| mechs.iter().any(|x| x == m);
    let cb_types: Vec<String> = features
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .map(|e| {
            e.children()
                .filter(|c| c.name() == "channel-binding")
                .filter_map(|c| c.attr("type").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let exporter_ok = exporter.is_some() && cb_types.iter().any(|t| t == "tls-exporter");
    for (hash, plus, plain) in [
        (ScramHash::Sha256, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"),
        (ScramHash::Sha1, "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"),
    ] {
        if has(plus) && exporter_ok {
            let data = exporter.map(<[u8]>::to_vec).unwrap_or_default();
            return Ok(Choice {
                hash: Some(hash),
                binding: Binding::Bind {
                    name: "tls-exporter",
                    data,
                },
            });
        }
        if has(plain) {
            let any_plus = mechs.iter().any(|m| m.ends_with("-PLUS"));
            let binding = if exporter.is_some() && !any_plus {
                Binding::SupportedButNotOffered
            } else {
                Binding::None
            };
            return Ok(Choice {
                hash: Some(hash),
                binding,
            });
        }
    }
    if has("PLAIN") {
        return Ok(Choice {
            hash: None,
            binding: Binding::None,
        });
    }
    Err(ConnectError::NoMechanism)
}

fn sasl_failure(el: &Element) -> ConnectError {
    let condition = el
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "not-authorized".into());
    let text = el.get_child("text", ns::SASL).map(|t| t.text());
    ConnectError::Auth { condition, text }
}

fn decode_b64(el: &Element) -> Result<Vec<u8>, ConnectError> {
    let text = el.text();
    let text = text.trim();
    if text == "=" || text.is_empty() {
        return Ok(Vec::new());
    }
    B64.decode(text)
        .map_err(|_| ConnectError::Protocol("SASL data is not base64".into()))
}

async fn authenticate(
    stream: &mut Stream,
    features: &Element,
    exporter: Option<&[u8]>,
    cfg: &ConnectConfig,
) -> Result<(&'static str, Option<&'static str>), ConnectError> {
    let choice = choose_mechanism(features, exporter)?;
    let username = cfg
        .jid
        .local()
        .ok_or_else(|| ConnectError::Config("JID has no local part".into()))?;
    let Some(hash) = choice.hash else {
        // PLAIN: only reached over TLS (secure_stream guarantees it) and when no SCRAM exists.
        let mut payload = Zeroizing::new(Vec::new());
        payload.push(0);
        payload.extend_from_slice(username.as_bytes());
        payload.push(0);
        payload.extend_from_slice(cfg.password.as_bytes());
        let auth = el("auth", ns::SASL)
            .attr("mechanism", "PLAIN")
            .text(B64.encode(&payload))
            .build();
        send(stream, &auth).await?;
        let reply = next_element(stream, cfg.step_timeout).await?;
        return if reply.is("success", ns::SASL) {
            Ok(("PLAIN", None))
        } else if reply.is("failure", ns::SASL) {
            Err(sasl_failure(&reply))
        } else {
            Err(ConnectError::Protocol(
                "unexpected element during SASL".into(),
            ))
        };
    };
    let cb_name = match &choice.binding {
        Binding::Bind { name, .. } => Some(*name),
        _ => None,
    };
    let mut scram = ScramClient::new(hash, username, &cfg.password, choice.binding);
    let mech = scram.mechanism_name();
    let auth = el("auth", ns::SASL)
        .attr("mechanism", mech)
        .text(B64.encode(scram.client_first()))
        .build();
    send(stream, &auth).await?;
    loop {
        let reply = next_element(stream, cfg.step_timeout).await?;
        if reply.is("challenge", ns::SASL) {
            let data = decode_b64(&reply)?;
            let response = scram.client_final(&data).map_err(|e| ConnectError::Auth {
                condition: "scram".into(),
                text: Some(e.to_string()),
            })?;
            let resp = el("response", ns::SASL).text(B64.encode(response)).build();
            send(stream, &resp).await?;
        } else if reply.is("success", ns::SASL) {
            let data = decode_b64(&reply)?;
            scram
                .verify_server_final(&data)
                .map_err(|e| ConnectError::Auth {
                    condition: "server-not-verified".into(),
                    text: Some(e.to_string()),
                })?;
            return Ok((mech, cb_name));
        } else if reply.is("failure", ns::SASL) {
            return Err(sasl_failure(&reply));
        } else {
            return Err(ConnectError::Protocol(
                "unexpected element during SASL".into(),
            ));
        }
    }
}

/// Logs in: the returned connection is bound, and has stream management enabled when the
/// server offers it and the config asks for it.
pub async fn connect(cfg: &ConnectConfig) -> Result<Connection, ConnectError> {
    let (mut stream, features, exporter, direct) = secure_stream(cfg).await?;
    let (mechanism, channel_binding) =
        authenticate(&mut stream, &features, exporter.as_deref(), cfg).await?;

    let domain = cfg.jid.domain().to_owned();
    let pending = stream.initiate_reset().send_header(header(&domain)).await?;
    let mut stream = pending.skip_features::<Element>();
    let features = next_element(&mut stream, cfg.step_timeout).await?;
    if !features.is("features", ns::STREAM) || !features.has_child("bind", ns::BIND) {
        return Err(ConnectError::Protocol(
            "server offers no resource binding".into(),
        ));
    }
    let max_stanza_bytes = features
        .get_child("limits", "urn:xmpp:stream-limits:0")
        .and_then(|l| l.get_child("max-bytes", "urn:xmpp:stream-limits:0"))
        .and_then(|m| m.text().trim().parse().ok());

    let bind_id = crate::new_id();
    let bind = el("iq", ns::JABBER_CLIENT)
        .attr("type", "set")
        .attr("id", &bind_id)
        .child(el("bind", ns::BIND).child(el("resource", ns::BIND).text(cfg.resource.clone())))
        .build();
    send(&mut stream, &bind).await?;
    let reply = next_element(&mut stream, cfg.step_timeout).await?;
    if reply.attr("id") != Some(bind_id.as_str()) || reply.attr("type") != Some("result") {
        return Err(ConnectError::Protocol("resource binding failed".into()));
    }
    let bound_jid = reply
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("jid", ns::BIND))
        .map(|j| j.text())
        .ok_or_else(|| ConnectError::Protocol("bind result without JID".into()))?;
    // The server may rewrite the resource, never the account.
    match split_bare(&bound_jid) {
        Some(bare) if bare == cfg.jid.as_str() => {}
        _ => {
            return Err(ConnectError::Protocol(
                "server bound a different account".into(),
            ))
        }
    }

    let mut negotiated = Negotiated {
        mechanism,
        channel_binding,
        direct_tls: direct,
        bound_jid,
        sm_id: None,
        sm_resumable: false,
        max_stanza_bytes,
    };
    if cfg.stream_management && features.has_child("sm", ns::SM) {
        let enable = el("enable", ns::SM).attr("resume", "true").build();
        send(&mut stream, &enable).await?;
        let reply = next_element(&mut stream, cfg.step_timeout).await?;
        if reply.is("enabled", ns::SM) {
            negotiated.sm_id = reply.attr("id").map(str::to_owned);
            negotiated.sm_resumable = matches!(reply.attr("resume"), Some("true") | Some("1"));
        } else if !reply.is("failed", ns::SM) {
            return Err(ConnectError::Protocol(
                "unexpected reply to <enable/>".into(),
            ));
        }
    }
    tracing::debug!(
        mechanism,
        ?channel_binding,
        direct,
        sm = negotiated.sm_id.is_some(),
        "logged in"
    );
    Ok(Connection {
        stream,
        negotiated,
        step_timeout: cfg.step_timeout,
    })
}

fn iq_error(reply: &Element) -> (String, Option<String>) {
    let err = reply.get_child("error", ns::JABBER_CLIENT);
    let condition = err
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
        })
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into());
    let text = err
        .and_then(|e| e.get_child("text", ns::XMPP_STANZAS))
        .map(|t| t.text());
    (condition, text)
}

/// In-band registration (XEP-0077) with a username and a password only.
pub async fn register(cfg: &ConnectConfig) -> Result<(), ConnectError> {
    let (mut stream, features, _, _) = secure_stream(cfg).await?;
    if !features.has_child("register", "http://jabber.org/features/iq-register") {
        return Err(ConnectError::RegistrationUnsupported);
    }
    let username = cfg
        .jid
        .local()
        .ok_or_else(|| ConnectError::Config("JID has no local part".into()))?;
    let get_id = crate::new_id();
    let get = el("iq", ns::JABBER_CLIENT)
        .attr("type", "get")
        .attr("id", &get_id)
        .attr("to", cfg.jid.domain())
        .child(el("query", ns::REGISTER))
        .build();
    send(&mut stream, &get).await?;
    let fields = next_element(&mut stream, cfg.step_timeout).await?;
    if fields.attr("id") != Some(get_id.as_str()) {
        return Err(ConnectError::Protocol(
            "unexpected reply to registration query".into(),
        ));
    }
    if fields.attr("type") == Some("error") {
        let (condition, text) = iq_error(&fields);
        return Err(ConnectError::Registration { condition, text });
    }
    let query = fields
        .get_child("query", ns::REGISTER)
        .ok_or_else(|| ConnectError::Protocol("registration query without fields".into()))?;
    // We only ever give a username and a password; a server that insists on more (e-mail,
    // CAPTCHA forms) is not one we can register on without asking the user.
    let legacy_fields_ok =
        query.has_child("username", ns::REGISTER) && query.has_child("password", ns::REGISTER);
    if !legacy_fields_ok {
        return Err(ConnectError::Registration {
            condition: "unsupported-form".into(),
            text: Some("server requires more than a username and a password".into()),
        });
    }
    let set_id = crate::new_id();
    let set = el("iq", ns::JABBER_CLIENT)
        .attr("type", "set")
        .attr("id", &set_id)
        .attr("to", cfg.jid.domain())
        .child(
            el("query", ns::REGISTER)
                .child(el("username", ns::REGISTER).text(username.to_owned()))
                .child(el("password", ns::REGISTER).text(cfg.password.to_string())),
        )
        .build();
    send(&mut stream, &set).await?;
    let reply = next_element(&mut stream, cfg.step_timeout).await?;
    if reply.attr("id") != Some(set_id.as_str()) {
        return Err(ConnectError::Protocol(
            "unexpected reply to registration".into(),
        ));
    }
    let _ = stream.shutdown().await;
    match reply.attr("type") {
        Some("result") => Ok(()),
        _ => {
            let (condition, text) = iq_error(&reply);
            Err(ConnectError::Registration { condition, text })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(xml: &str) -> Element {
        xml.parse().expect("test XML")
    }

    #[test]
    fn binds_only_when_server_names_the_type() {
        let f = features(
            "<features xmlns='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms></features>",
        );
        let c = choose_mechanism(&f, Some(&[1, 2])).unwrap();
        assert_eq!(c.hash, Some(ScramHash::Sha256));
        assert_eq!(c.binding, Binding::None);
        let f = features(
            "<features xmlns='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms><sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-server-end-point'/><channel-binding type='tls-exporter'/></sasl-channel-binding></features>",
        );
        let c = choose_mechanism(&f, Some(&[1, 2])).unwrap();
        assert_eq!(
            c.binding,
            Binding::Bind {
                name: "tls-exporter",
                data: vec![1, 2]
            }
        );
        // TLS 1.2: no exporter, so no -PLUS even though offered.
        let c = choose_mechanism(&f, None).unwrap();
        assert_eq!(c.binding, Binding::None);
    }

    #[test]
    fn plain_is_last_resort_and_nothing_is_an_error() {
        let f = features(
            "<features xmlns='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms></features>",
        );
        let c = choose_mechanism(&f, Some(&[1])).unwrap();
        assert_eq!(c.hash, Some(ScramHash::Sha1));
        assert_eq!(c.binding, Binding::SupportedButNotOffered);
        let f = features(
            "<features xmlns='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></features>",
        );
        assert!(choose_mechanism(&f, None).unwrap().hash.is_none());
        let f = features("<features xmlns='http://etherx.jabber.org/streams'/>");
        assert!(matches!(
            choose_mechanism(&f, None),
            Err(ConnectError::NoMechanism)
        ));
    }
}
