//! Our connector: TCP (SRV or an explicit host), STARTTLS or direct TLS (XEP-0368), SASL2
//! (XEP-0388, with FAST tokens and optionally Bind2; see sasl2.rs) or legacy SASL (SCRAM with
//! channel binding chosen per XEP-0440 and XEP-0474 downgrade protection, PLAIN only as a
//! last resort and only over TLS), resource binding and stream management. Built on
//! tokio-xmpp's XML stream primitives; tokio-xmpp's own login is not used (see FIELD-NOTES).

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio_xmpp::connect::{AsyncReadAndWrite, DnsConfig};
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;
use zeroize::Zeroizing;

use crate::elem::el;
use crate::error::ConnectError;
use crate::fast::{self, FastToken, HtBinding};
use crate::inbound::NS_CARBONS;

/// XEP-0352 client state indication.
pub const NS_CSI: &str = "urn:xmpp:csi:0";
use crate::jid::{split_bare, BareJid};
use crate::limits::{self, Cuts, InboundLimits, LimitedIo};
use crate::sasl2::{self, Method, Offer, Sasl2Auth, SmResult, Step, NS_SASL2};
use crate::scram::{Binding, ScramClient, ScramError, ScramHash};
use crate::tls::{self, TlsOptions};

pub(crate) type Io = Box<dyn AsyncReadAndWrite + Send + 'static>;
pub(crate) type Stream = XmlStream<Io, Element>;

/// Where to reach the server when DNS SRV is not to be used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// `None`: SRV records of the JID's domain, `_xmpps-client` (direct TLS, XEP-0368) and
    /// `_xmpp-client` together by priority, direct TLS first among equals.
    pub server: Option<ServerAddr>,
    /// The DNS server for those lookups; `None`: the system's.
    pub dns_server: Option<std::net::SocketAddr>,
    pub tls: TlsOptions,
    /// Limit for each network step of the login (connect, TLS, each response).
    pub step_timeout: Duration,
    /// Ask for XEP-0198 stream management when offered.
    pub stream_management: bool,
    /// Silence after which we probe the link (XEP-0198 `<r/>` or an XEP-0199 ping) while
    /// the app is in the background; no answer within `step_timeout` after a probe means the
    /// link is dead.
    pub keepalive: Duration,
    /// The same in the foreground ([`crate::Session::set_active`]), where a dead link must be
    /// found while someone is looking at the screen. Coming to the foreground after a
    /// silence also probes at once.
    pub foreground_keepalive: Duration,
    /// Log in with SASL2 (XEP-0388: no stream restart, FAST tokens, Bind2 if `bind2`) when
    /// the server offers it; `false` forces legacy SASL + restart + bind + `<enable/>`.
    pub allow_sasl2: bool,
    /// A FAST token (XEP-0484) from an earlier login: used instead of the password when the
    /// server offers its mechanism. If the server refuses it, `connect` fails with
    /// [`ConnectError::is_fast_token_rejected`]: drop the token and log in with the password.
    pub fast: Option<FastToken>,
    /// `<fast count=…/>` for this attempt with `fast`: the caller stores it and makes it
    /// grow with every attempt (reset when the token changes). 0 sends no count.
    pub fast_count: u32,
    /// Invalidate `fast` with this login (XEP-0484 "log out"): no new token is issued.
    pub fast_invalidate: bool,
    /// Ask for a FAST token when the server offers FAST and we did not log in with one.
    /// The new token comes back in [`Negotiated::fast_token`].
    pub request_fast_token: bool,
    /// XEP-0388 `<user-agent id>`: a UUID v4, stable per installation (the server derives
    /// the Bind2 resource and keys FAST tokens on it, and ends older sessions of the same
    /// id). Empty: derived from the JID and `resource`, which is stable when the caller
    /// keeps one resource per device.
    pub user_agent_id: String,
    /// `<device/>` of the user agent (e.g. "Pixel 8"); `None`: the OS name.
    pub device: Option<String>,
    /// Bind the resource inside SASL2 (XEP-0386 Bind2), with stream management and carbons
    /// enabled in the same request. Off by default: with Bind2 the server no longer delivers
    /// offline messages, it expects the client to fetch them from its archive (XEP-0386
    /// requires this; ejabberd deletes them from offline storage when MAM archiving is on).
    /// Turn it on only if the caller catches up from MAM after login.
    pub bind2: bool,
    /// Enable carbons (XEP-0280) inside the Bind2 request when the server allows it.
    pub inline_carbons: bool,
    /// Resume this earlier XEP-0198 session instead of binding a new one (inline in SASL2
    /// when the server offers it there, else `<resume/>` after authentication). If the
    /// server refuses, the same connection falls back to a fresh bind and `<enable/>` and
    /// [`Negotiated::resume_failed`] is set. A server that offers no stream management gets
    /// no resume attempt (also reported as `resume_failed`).
    pub resume: Option<ResumeRequest>,
    /// Save round trips using what the last login to the same server as the same account
    /// (in this process) saw: `<starttls/>` goes out with the stream header, and the
    /// `<authenticate/>` (with the FAST token, inline resumption…) right behind the stream
    /// header after TLS, without waiting for the server's features. The features are still
    /// checked when they arrive; if they changed so that the server would refuse what was
    /// sent, the login starts again without pipelining. `false`: always wait for features.
    pub pipeline: bool,
    /// Limits on each element the server sends (size, nesting, tag length), applied before
    /// anything is parsed: an element past them is dropped ([`crate::Event::Dropped`]) and
    /// the stream goes on. Lower them where memory is scarce (a notification extension).
    pub inbound_limits: InboundLimits,
}

/// What is needed to resume an XEP-0198 session (from [`crate::SmState`] of the old one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The `<enabled id>` of the session to resume.
    pub previd: String,
    /// The server's `<enabled location>`: where to connect for the resumption (`host`,
    /// `host:port` or `[v6]:port`; STARTTLS). `None`: the normal address.
    pub location: Option<String>,
    /// How many of the server's stanzas we handled (durably) in the old stream.
    pub h: u32,
    /// The full JID the old session was bound to, if known: becomes
    /// [`Negotiated::bound_jid`] after a legacy resume (which does not tell it again).
    pub bound_jid: Option<String>,
}

/// Stream-management counters a session starts from: zero for a new stream; after a
/// resumption, the old stream's (our handled count and what the server says it handled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmBase {
    /// Inbound stanzas already counted (our `h`).
    pub inbound: u32,
    /// Outbound stanzas already sent and acknowledged (the server's `h`).
    pub outbound: u32,
}

impl std::fmt::Debug for ConnectConfig {
    // Deliberately omits the JID and password: configs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("allow_sasl2", &self.allow_sasl2)
            .field("fast", &self.fast.as_ref().map(|t| &t.mechanism))
            .field("inbound_limits", &self.inbound_limits)
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
            dns_server: None,
            tls: TlsOptions::default(),
            step_timeout: Duration::from_secs(20),
            stream_management: true,
            keepalive: Duration::from_secs(180),
            foreground_keepalive: Duration::from_secs(30),
            allow_sasl2: true,
            fast: None,
            fast_count: 0,
            fast_invalidate: false,
            request_fast_token: true,
            user_agent_id: String::new(),
            device: None,
            bind2: false,
            inline_carbons: true,
            resume: None,
            pipeline: true,
            inbound_limits: InboundLimits::default(),
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
    /// Authenticated with SASL2 (XEP-0388).
    pub sasl2: bool,
    /// The resource was bound inside the SASL2 exchange (XEP-0386 Bind2).
    pub bind2: bool,
    /// Stream management was enabled inside the Bind2 request.
    pub sm_inline: bool,
    /// Carbons were enabled inside the Bind2 request.
    pub carbons_inline: bool,
    /// A new FAST token (requested, or rotated by the server): store it (replacing the old
    /// one, and resetting the count). `None`: keep using the current one, if any.
    pub fast_token: Option<FastToken>,
    /// The server's XEP-0474 downgrade-protection hash was present and matched.
    pub ssdp: bool,
    /// The server takes client state indications (XEP-0352): offered inline in Bind2 or
    /// among the authenticated stream's features.
    pub csi: bool,
    /// Request/response exchanges with the server until the session was ready (each XML
    /// exchange and the TLS handshake count one; TCP connect and DNS are not counted).
    pub round_trips: u32,
    /// XEP-0198 `<enabled location>`: where to reconnect for a resumption.
    pub sm_location: Option<String>,
    /// The session was resumed (`ConnectConfig::resume`): the server's `h`, i.e. how many
    /// of our stanzas it handled in the old stream. Re-send the unacknowledged rest.
    pub resumed: Option<u32>,
    /// The resumption was done inside SASL2 (no separate `<resume/>` exchange).
    pub resume_inline: bool,
    /// A resumption was asked for but refused (or impossible): this is a fresh session.
    pub resume_failed: bool,
    /// The `h` the server gave in its `<failed/>`, if any: how many of our stanzas of the
    /// old stream it handled.
    pub resume_failed_h: Option<u32>,
    /// Counters the session starts from ([`crate::Session::start`] uses them;
    /// pass them to [`crate::Session::start_durable`]).
    pub sm_base: SmBase,
    /// The `<authenticate/>` went out right behind the stream header, decided from the
    /// features of the previous login (see [`ConnectConfig::pipeline`]).
    pub pipelined: bool,
}

impl Negotiated {
    /// The counters to start the session from (see [`SmBase`]).
    pub fn sm_base(&self) -> SmBase {
        self.sm_base
    }
}

pub struct Connection {
    pub(crate) stream: Stream,
    pub negotiated: Negotiated,
    pub(crate) step_timeout: Duration,
    pub(crate) foreground_keepalive: Duration,
    /// Stanzas the server sent before `<enabled/>` (ejabberd hands a replaced session's
    /// queue to the new one right after bind): replayed by the session, never dropped.
    pub(crate) early: Vec<Element>,
    /// Elements cut by the inbound limits, for the session to recognise.
    pub(crate) cuts: Arc<Cuts>,
}

/// The next element, refused if the inbound limits cut it: nothing of the login may be acted
/// on when only part of it was read.
pub(crate) async fn next_element<S: AsyncReadAndWrite>(
    stream: &mut XmlStream<S, Element>,
    limit: Duration,
) -> Result<Element, ConnectError> {
    let el = next_element_any(stream, limit).await?;
    if limits::cut_marker(&el).is_some() {
        return Err(over_limits_in_login());
    }
    Ok(el)
}

fn over_limits_in_login() -> ConnectError {
    ConnectError::Protocol("an element over the inbound limits during login".into())
}

/// A read error as a [`ConnectError`]: what the inbound limits refused is the server's
/// protocol violation, not a network failure.
pub(crate) fn read_error(e: std::io::Error) -> ConnectError {
    match limits::restricted(&e) {
        Some(r) => ConnectError::Protocol(r.to_string()),
        None => e.into(),
    }
}

async fn next_element_any<S: AsyncReadAndWrite>(
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
                Some(Err(ReadError::HardError(e))) => return Err(read_error(e)),
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
    let connecting = async {
        match &cfg.server {
            Some(addr) => DnsConfig::no_srv(&addr.host, addr.port)
                .resolve()
                .await
                .map(|tcp| (tcp, addr.direct_tls))
                .map_err(|e| ConnectError::Network(e.to_string())),
            None => crate::srv::connect(domain, cfg.dns_server).await,
        }
    };
    let (tcp, direct) = tokio::time::timeout(cfg.step_timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout("TCP connect"))??;
    // Stanzas are small and latency-bound; Nagle only adds round trips.
    let _ = tcp.set_nodelay(true);
    Ok((tcp, direct))
}

fn header<'a>(domain: &'a str, from: Option<&'a str>) -> StreamHeader<'a> {
    StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: from.map(Cow::Borrowed),
        id: None,
    }
}

/// Writes `tail` right behind the first thing flushed through it, without waiting for the
/// server: the stream header and the `<starttls/>` or `<authenticate/>` that follows it go out
/// in one flight. Afterwards it only passes bytes through.
struct Pipelined<S> {
    inner: S,
    tail: Vec<u8>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Pipelined<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Pipelined<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while !this.tail.is_empty() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.tail))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            this.tail.drain(..n);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn xml_bytes(el: &Element) -> Result<Vec<u8>, ConnectError> {
    let mut out = Vec::new();
    el.write_to(&mut out)
        .map_err(|e| ConnectError::Protocol(format!("serializing <{}/>: {e}", el.name())))?;
    Ok(out)
}

type TlsIo = tokio_rustls::client::TlsStream<TcpStream>;

/// TCP, then STARTTLS or direct TLS: the encrypted transport, its tls-exporter data (TLS
/// 1.3) and whether TLS was direct. `known_server`: the last login here went through
/// STARTTLS, so `<starttls/>` goes out with our stream header instead of after the server's
/// features (one round trip less); the features are still checked, and a server that no
/// longer offers STARTTLS is refused exactly as before (nothing but the request was sent).
async fn secure_transport(
    cfg: &ConnectConfig,
    known_server: bool,
    rt: &mut u32,
) -> Result<(TlsIo, Option<Vec<u8>>, bool), ConnectError> {
    let domain = cfg.jid.domain().to_owned();
    let tls_config = tls::client_config(&cfg.tls)?;
    let (tcp, direct) = open_tcp(cfg).await?;
    let tcp = if direct {
        tcp
    } else {
        let req: Element = el("starttls", ns::TLS).build();
        let tail = if known_server {
            xml_bytes(&req)?
        } else {
            Vec::new()
        };
        let pipelined = !tail.is_empty();
        *rt += if pipelined { 1 } else { 2 };
        // Bounded like the encrypted stream: before TLS, anyone on the path can talk.
        let io = LimitedIo::new(
            BufWriter::new(Pipelined { inner: tcp, tail }),
            cfg.inbound_limits,
            Arc::default(),
        );
        let plain =
            initiate_stream(io, ns::JABBER_CLIENT, header(&domain, None), timeouts(cfg)).await?;
        let (_, mut plain) = recv_features_raw(plain, cfg.step_timeout).await?;
        let features = next_element(&mut plain, cfg.step_timeout).await?;
        if !features.is("features", ns::STREAM) || !features.has_child("starttls", ns::TLS) {
            // Never continue in clear: credentials and messages would be exposed.
            return Err(ConnectError::NoTls);
        }
        if !pipelined {
            plain.send(&req).await?;
        }
        let reply = next_element(&mut plain, cfg.step_timeout).await?;
        if !reply.is("proceed", ns::TLS) {
            return Err(ConnectError::Tls("server refused STARTTLS".into()));
        }
        plain.into_inner().into_inner().into_inner().inner
    };
    *rt += 1;
    let (tls, exporter) =
        tokio::time::timeout(cfg.step_timeout, tls::handshake(tcp, &domain, tls_config))
            .await
            .map_err(|_| ConnectError::Timeout("TLS handshake"))??;
    Ok((tls, exporter, direct))
}

/// Opens the XML stream over TLS and returns it with the server's features and the record of
/// what the inbound limits cut (see [`crate::limits`]). `from` goes into
/// the header (XEP-0388: the bare JID we log in as; some servers offer SASL2 and FAST only
/// then); the transport is encrypted, so it is never sent in clear. `pipelined` is sent right
/// behind the header, before the server has answered it.
async fn open_stream(
    tls: TlsIo,
    cfg: &ConnectConfig,
    from: Option<&str>,
    pipelined: Option<&Element>,
    rt: &mut u32,
) -> Result<(Stream, Element, Arc<Cuts>), ConnectError> {
    let domain = cfg.jid.domain().to_owned();
    let tail = pipelined.map(xml_bytes).transpose()?.unwrap_or_default();
    let cuts = Arc::new(Cuts::default());
    let io: Io = Box::new(LimitedIo::new(
        BufWriter::new(Pipelined { inner: tls, tail }),
        cfg.inbound_limits,
        cuts.clone(),
    ));
    *rt += 1;
    let pending =
        initiate_stream(io, ns::JABBER_CLIENT, header(&domain, from), timeouts(cfg)).await?;
    let (_, mut stream) = recv_features_raw(pending, cfg.step_timeout).await?;
    let features = next_element(&mut stream, cfg.step_timeout).await?;
    if !features.is("features", ns::STREAM) {
        return Err(ConnectError::Protocol("expected stream features".into()));
    }
    Ok((stream, features, cuts))
}

/// Connects and brings the stream up to TLS, returning the post-TLS features.
async fn secure_stream(
    cfg: &ConnectConfig,
    from: Option<&str>,
    rt: &mut u32,
) -> Result<(Stream, Element, Option<Vec<u8>>, bool), ConnectError> {
    let (tls, exporter, direct) = secure_transport(cfg, false, rt).await?;
    let (stream, features, _) = open_stream(tls, cfg, from, None, rt).await?;
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

fn sasl1_mechanisms(features: &Element) -> Vec<String> {
    features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .map(|c| c.text().trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Picks the strongest mechanism we can complete from the legacy SASL offer.
#[cfg(test)]
fn choose_mechanism(features: &Element, exporter: Option<&[u8]>) -> Result<Choice, ConnectError> {
    let cb_types = sasl2::channel_binding_types(features);
    choose_from(&sasl1_mechanisms(features), cb_types.as_deref(), exporter)
}

/// Picks the strongest mechanism we can complete (legacy SASL and SASL2 alike). Channel
/// binding is used only when the server names a type we can produce (XEP-0440); otherwise
/// we authenticate without it instead of guessing, because a wrong guess fails the login
/// (ejabberd, FIELD-NOTES).
fn choose_from(
    mechs: &[String],
    cb_types: Option<&[String]>,
    exporter: Option<&[u8]>,
) -> Result<Choice, ConnectError> {
    let has = |m: &str| mechs.iter().any(|x| x == m);
    let exporter_ok =
        exporter.is_some() && cb_types.is_some_and(|t| t.iter().any(|t| t == "tls-exporter"));
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

fn scram_error(e: ScramError) -> ConnectError {
    let condition = if e == ScramError::Downgrade {
        "downgrade-detected"
    } else {
        "scram"
    };
    ConnectError::Auth {
        condition: condition.into(),
        text: Some(e.to_string()),
    }
}

/// How the password login went (legacy SASL).
struct Authenticated {
    mechanism: &'static str,
    channel_binding: Option<&'static str>,
    ssdp: bool,
}

fn plain_payload(username: &str, password: &str) -> Zeroizing<Vec<u8>> {
    let mut payload = Zeroizing::new(Vec::new());
    payload.push(0);
    payload.extend_from_slice(username.as_bytes());
    payload.push(0);
    payload.extend_from_slice(password.as_bytes());
    payload
}

fn username(cfg: &ConnectConfig) -> Result<&str, ConnectError> {
    cfg.jid
        .local()
        .ok_or_else(|| ConnectError::Config("JID has no local part".into()))
}

/// Legacy SASL (RFC 6120).
async fn authenticate(
    stream: &mut Stream,
    features: &Element,
    exporter: Option<&[u8]>,
    cfg: &ConnectConfig,
    rt: &mut u32,
) -> Result<Authenticated, ConnectError> {
    let mechs = sasl1_mechanisms(features);
    let cb_types = sasl2::channel_binding_types(features);
    let choice = choose_from(&mechs, cb_types.as_deref(), exporter)?;
    let username = username(cfg)?;
    let Some(hash) = choice.hash else {
        // PLAIN: only reached over TLS (secure_stream guarantees it) and when no SCRAM exists.
        let payload = plain_payload(username, &cfg.password);
        let auth = el("auth", ns::SASL)
            .attr("mechanism", "PLAIN")
            .text(B64.encode(&*payload))
            .build();
        send(stream, &auth).await?;
        let reply = next_element(stream, cfg.step_timeout).await?;
        *rt += 1;
        return if reply.is("success", ns::SASL) {
            Ok(Authenticated {
                mechanism: "PLAIN",
                channel_binding: None,
                ssdp: false,
            })
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
    scram.expect_downgrade_hash(&mechs, cb_types.as_deref());
    let mech = scram.mechanism_name();
    let auth = el("auth", ns::SASL)
        .attr("mechanism", mech)
        .text(B64.encode(scram.client_first()))
        .build();
    send(stream, &auth).await?;
    loop {
        let reply = next_element(stream, cfg.step_timeout).await?;
        *rt += 1;
        if reply.is("challenge", ns::SASL) {
            let data = decode_b64(&reply)?;
            let response = scram.client_final(&data).map_err(scram_error)?;
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
            return Ok(Authenticated {
                mechanism: mech,
                channel_binding: cb_name,
                ssdp: scram.downgrade_hash_verified(),
            });
        } else if reply.is("failure", ns::SASL) {
            return Err(sasl_failure(&reply));
        } else {
            return Err(ConnectError::Protocol(
                "unexpected element during SASL".into(),
            ));
        }
    }
}

/// The FAST token to log in with, if we hold one for a mechanism offered here that this
/// connection can complete (an `-EXPR` token needs TLS 1.3's exporter).
fn usable_fast_token<'a>(
    cfg: &'a ConnectConfig,
    offer: &Offer,
    exporter: Option<&[u8]>,
) -> Option<(&'static str, HtBinding, &'a FastToken, Vec<u8>)> {
    let t = cfg.fast.as_ref()?;
    let (mech, binding) = fast::ht_mechanism(&t.mechanism)?;
    if !offer.fast.iter().any(|m| m == mech) {
        return None;
    }
    let cb = match binding {
        HtBinding::None => Vec::new(),
        HtBinding::TlsExporter => exporter?.to_vec(),
    };
    Some((mech, binding, t, cb))
}

/// The mechanism to request a FAST token for. A token is bound to the mechanism it was
/// requested for: we ask for the channel-bound one (tls-exporter, which both Prosody and
/// ejabberd offer) only when this connection can do it and the server names it (XEP-0440),
/// so that the next, similar connection can use it too; otherwise for the unbound one.
fn fast_token_request(
    offer: &Offer,
    cb_types: Option<&[String]>,
    exporter: Option<&[u8]>,
) -> Option<&'static str> {
    let offered = |m: &str| offer.fast.iter().any(|x| x == m);
    let exporter_named = cb_types.is_some_and(|t| t.iter().any(|t| t == "tls-exporter"));
    if exporter.is_some() && exporter_named && offered(fast::HT_SHA_256_EXPR) {
        Some(fast::HT_SHA_256_EXPR)
    } else if offered(fast::HT_SHA_256_NONE) {
        Some(fast::HT_SHA_256_NONE)
    } else {
        None
    }
}

const BIND2_TAG: &str = "Linnet";
const SOFTWARE: &str = "Linnet";

/// A SASL2 login decided from a set of stream features: the exchange, its first element and
/// what it asks for (so that one decided from remembered features can be checked against
/// the features the server actually sent).
struct Sasl2Plan {
    auth: Sasl2Auth,
    first: Element,
    mechanism: &'static str,
    channel_binding: Option<&'static str>,
    /// SCRAM's GS2 channel-binding flag (`n`, `y` or `p`): it depends on what the features
    /// offer, and a server refuses a `y` when it does offer -PLUS (downgrade protection).
    gs2_flag: Option<char>,
    request: sasl2::Request,
}

impl Sasl2Plan {
    /// Same mechanism, channel binding and requests: the server answers it as it would
    /// answer the one decided from its current features.
    fn same_as(&self, other: &Sasl2Plan) -> bool {
        self.mechanism == other.mechanism
            && self.channel_binding == other.channel_binding
            && self.gs2_flag == other.gs2_flag
            && self.request == other.request
    }
}

/// SASL2 (XEP-0388): password (SCRAM, PLAIN as last resort) or FAST token, with Bind2,
/// inline stream management and carbons, and a FAST token request.
fn plan_sasl2(
    features: &Element,
    offer: &Offer,
    exporter: Option<&[u8]>,
    cfg: &ConnectConfig,
) -> Result<Sasl2Plan, ConnectError> {
    let cb_types = sasl2::channel_binding_types(features);
    let username = username(cfg)?;

    let fast_use = usable_fast_token(cfg, offer, exporter);
    if cfg.fast.is_some() && fast_use.is_none() {
        tracing::debug!("FAST token not usable on this connection; using the password");
    }
    let mut gs2_flag = None;
    let (method, mechanism, channel_binding) = match fast_use {
        Some((mech, binding, token, cb)) => (
            Method::Ht {
                mechanism: mech,
                token: token.token.clone(),
                cb_data: Zeroizing::new(cb),
            },
            mech,
            (binding == HtBinding::TlsExporter).then_some("tls-exporter"),
        ),
        None => {
            let choice = choose_from(&offer.mechanisms, cb_types.as_deref(), exporter)?;
            match choice.hash {
                None => (
                    Method::Plain(plain_payload(username, &cfg.password)),
                    "PLAIN",
                    None,
                ),
                Some(hash) => {
                    let cb_name = match &choice.binding {
                        Binding::Bind { name, .. } => Some(*name),
                        _ => None,
                    };
                    gs2_flag = Some(match &choice.binding {
                        Binding::None => 'n',
                        Binding::SupportedButNotOffered => 'y',
                        Binding::Bind { .. } => 'p',
                    });
                    let mut scram = ScramClient::new(hash, username, &cfg.password, choice.binding);
                    scram.expect_downgrade_hash(&offer.mechanisms, cb_types.as_deref());
                    let mech = scram.mechanism_name();
                    (Method::Scram(Box::new(scram)), mech, cb_name)
                }
            }
        }
    };
    let using_fast = matches!(method, Method::Ht { .. });
    let request_token = if using_fast || !cfg.request_fast_token {
        None
    } else {
        fast_token_request(offer, cb_types.as_deref(), exporter)
    };
    let user_agent_id = if cfg.user_agent_id.is_empty() {
        sasl2::derived_user_agent_id(&cfg.jid, &cfg.resource)
    } else {
        cfg.user_agent_id.clone()
    };
    let bind = cfg.bind2 && offer.bind2.is_some();
    let request = sasl2::Request {
        user_agent_id,
        software: SOFTWARE.into(),
        device: cfg
            .device
            .clone()
            .unwrap_or_else(|| std::env::consts::OS.to_owned()),
        bind_tag: bind.then(|| BIND2_TAG.to_owned()),
        carbons: bind && cfg.inline_carbons && offer.bind2_offers(NS_CARBONS),
        sm: bind && cfg.stream_management && offer.bind2_offers(ns::SM),
        request_token,
        fast_count: cfg.fast_count,
        fast_invalidate: using_fast && cfg.fast_invalidate,
        resume: cfg
            .resume
            .as_ref()
            .filter(|_| offer.sm_resume)
            .map(|r| (r.previd.clone(), r.h)),
    };
    let (auth, first) = Sasl2Auth::new(method, mechanism, cfg.jid.clone(), request.clone());
    Ok(Sasl2Plan {
        auth,
        first,
        mechanism,
        channel_binding,
        gs2_flag,
        request,
    })
}

/// Runs a planned SASL2 exchange to its end. `sent`: the `<authenticate/>` already went out
/// (pipelined behind the stream header), so its answer arrives in the round trip that
/// brought the features. No stream restart follows: the server sends the new features right
/// after its `<success/>`, which we return with the outcome.
async fn drive_sasl2(
    stream: &mut Stream,
    plan: Sasl2Plan,
    sent: bool,
    cfg: &ConnectConfig,
    rt: &mut u32,
) -> Result<(sasl2::Outcome, Option<&'static str>, Element), ConnectError> {
    let Sasl2Plan {
        mut auth,
        first,
        channel_binding,
        ..
    } = plan;
    if !sent {
        send(stream, &first).await?;
    }
    let mut free = sent;
    let outcome = loop {
        let reply = next_element(stream, cfg.step_timeout).await?;
        if !std::mem::take(&mut free) {
            *rt += 1;
        }
        match auth.on_element(&reply) {
            Ok(Step::Send(next)) => send(stream, &next).await?,
            Ok(Step::Done(outcome)) => break *outcome,
            Err(e) => {
                if reply.is("continue", NS_SASL2) {
                    let _ = send(stream, &el("abort", NS_SASL2).build()).await;
                }
                return Err(e);
            }
        }
    };
    if matches!(outcome.resume, Some(sasl2::ResumeResult::Resumed { .. })) {
        // After an inline resumption the old session goes on: no features follow (Prosody
        // and ejabberd send none; should one come anyway, the driver ignores it).
        return Ok((outcome, channel_binding, el("features", ns::STREAM).build()));
    }
    // XEP-0388: the features of the authenticated stream follow at once, without a restart.
    let features = next_element(stream, cfg.step_timeout).await?;
    if !features.is("features", ns::STREAM) {
        return Err(ConnectError::Protocol(
            "expected stream features after SASL2 success".into(),
        ));
    }
    Ok((outcome, channel_binding, features))
}

/// The features the last login to a server as an account saw after TLS, kept for the
/// process: with them the next connection sends `<starttls/>` and `<authenticate/>` without
/// waiting for the server's features. Not secret (they are what the server shows anyone
/// logging in as that account), and only a hint: what the server sends is always checked.
mod hints {
    use super::*;

    /// Accounts per process are few; this only bounds a pathological caller.
    const MAX: usize = 64;

    type Key = (Option<ServerAddr>, String);

    fn map() -> &'static Mutex<HashMap<Key, Element>> {
        static MAP: OnceLock<Mutex<HashMap<Key, Element>>> = OnceLock::new();
        MAP.get_or_init(Default::default)
    }

    fn key(cfg: &ConnectConfig) -> Key {
        (cfg.server.clone(), cfg.jid.as_str().to_owned())
    }

    pub(super) fn get(cfg: &ConnectConfig) -> Option<Element> {
        let map = map().lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key(cfg)).cloned()
    }

    pub(super) fn forget(jid: &str) {
        let mut map = map().lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(_, j), _| j != jid);
    }

    pub(super) fn put(cfg: &ConnectConfig, features: &Element) {
        let mut map = map().lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX && !map.contains_key(&key(cfg)) {
            map.clear();
        }
        map.insert(key(cfg), features.clone());
    }
}

/// What the last login with `cfg`'s server and account saw of the server (its features
/// after TLS, as XML), for the caller to keep across process restarts: handed back with
/// [`set_login_hint`], it lets the first login of a new process save the same round trips as
/// later ones. Not secret: the server shows it to anyone who logs in as that account.
pub fn login_hint(cfg: &ConnectConfig) -> Option<String> {
    hints::get(cfg).map(|f| String::from(&f))
}

/// Makes the next login with `cfg` (same server and account) pipeline as if the server's
/// features after TLS had last been `features_xml` (see [`login_hint`]). Only a hint: the
/// features the server sends are checked, and a login planned from stale ones starts
/// again without it.
pub fn set_login_hint(cfg: &ConnectConfig, features_xml: &str) -> Result<(), ConnectError> {
    let features: Element = features_xml
        .parse()
        .map_err(|e| ConnectError::Config(format!("login hint: {e}")))?;
    if !features.is("features", ns::STREAM) {
        return Err(ConnectError::Config(
            "login hint: not stream features".into(),
        ));
    }
    hints::put(cfg, &features);
    Ok(())
}

/// Tests only: forgets what this process saw at logins as `jid`, as a process restart would.
#[doc(hidden)]
pub fn forget_login_hints(jid: &str) {
    hints::forget(jid);
}

/// Where to connect for a resumption: the server's `location` if it gave one.
fn resume_target(cfg: &ConnectConfig) -> Option<ServerAddr> {
    let loc = cfg.resume.as_ref()?.location.as_deref()?.trim();
    if loc.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = loc.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        (h.to_owned(), port)
    } else if loc.matches(':').count() == 1 {
        let (h, p) = loc.split_once(':')?;
        (h.to_owned(), p.parse().ok())
    } else {
        (loc.to_owned(), None)
    };
    Some(ServerAddr {
        host,
        port: port.unwrap_or(5222),
        direct_tls: false,
    })
}

/// XEP-0198 `<resume/>` on an authenticated stream (legacy path, or SASL2 without inline
/// resumption). `Ok(true)`: resumed; `Ok(false)`: refused (fresh session follows).
async fn resume_sm(
    stream: &mut Stream,
    cfg: &ConnectConfig,
    req: &ResumeRequest,
    negotiated: &mut Negotiated,
    rt: &mut u32,
) -> Result<bool, ConnectError> {
    let resume = el("resume", ns::SM)
        .attr("previd", &req.previd)
        .attr("h", req.h.to_string())
        .build();
    send(stream, &resume).await?;
    let reply = next_element(stream, cfg.step_timeout).await?;
    *rt += 1;
    if reply.is("resumed", ns::SM) {
        if reply.attr("previd") != Some(req.previd.as_str()) {
            return Err(ConnectError::Protocol(
                "server resumed a different session than the one we asked for".into(),
            ));
        }
        let h = sasl2::parse_h(&reply)?
            .ok_or_else(|| ConnectError::Protocol("<resumed/> without h".into()))?;
        mark_resumed(negotiated, req, h);
        Ok(true)
    } else if reply.is("failed", ns::SM) {
        let condition = reply
            .children()
            .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
            .map(|c| c.name().to_owned());
        tracing::debug!(?condition, h = ?reply.attr("h"), "resumption refused");
        negotiated.resume_failed = true;
        negotiated.resume_failed_h = sasl2::parse_h(&reply)?;
        Ok(false)
    } else {
        Err(ConnectError::Protocol(
            "unexpected reply to <resume/>".into(),
        ))
    }
}

fn mark_resumed(negotiated: &mut Negotiated, req: &ResumeRequest, h: u32) {
    negotiated.resumed = Some(h);
    negotiated.sm_id = Some(req.previd.clone());
    negotiated.sm_resumable = true;
    negotiated.sm_location = req.location.clone();
    negotiated.sm_base = SmBase {
        inbound: req.h,
        outbound: h,
    };
    if negotiated.bound_jid.is_empty() || !negotiated.bound_jid.contains('/') {
        if let Some(j) = &req.bound_jid {
            negotiated.bound_jid = j.clone();
        }
    }
}

fn max_stanza_bytes(features: &Element) -> Option<u32> {
    features
        .get_child("limits", "urn:xmpp:stream-limits:0")
        .and_then(|l| l.get_child("max-bytes", "urn:xmpp:stream-limits:0"))
        .and_then(|m| m.text().trim().parse().ok())
}

/// Resource binding (RFC 6120) on a stream that was not bound inline, with XEP-0198
/// `<enable/>` sent right behind it when `enable` (the server handles them in order, so
/// both answers come back in one round trip).
async fn bind_and_enable(
    stream: &mut Stream,
    features: &Element,
    cfg: &ConnectConfig,
    enable: bool,
    negotiated: &mut Negotiated,
    rt: &mut u32,
    early: &mut Vec<Element>,
) -> Result<(), ConnectError> {
    if !features.has_child("bind", ns::BIND) {
        return Err(ConnectError::Protocol(
            "server offers no resource binding".into(),
        ));
    }
    let bind_id = crate::new_id();
    let bind = el("iq", ns::JABBER_CLIENT)
        .attr("type", "set")
        .attr("id", &bind_id)
        .child(el("bind", ns::BIND).child(el("resource", ns::BIND).text(cfg.resource.clone())))
        .build();
    send(stream, &bind).await?;
    if enable {
        send_enable(stream).await?;
    }
    let reply = next_element(stream, cfg.step_timeout).await?;
    *rt += 1;
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
        Some(bare) if bare == cfg.jid.as_str() => negotiated.bound_jid = bound_jid,
        _ => {
            return Err(ConnectError::Protocol(
                "server bound a different account".into(),
            ))
        }
    }
    if enable {
        // Answered together with the bind: no round trip of its own.
        recv_enabled(stream, cfg, negotiated, early).await?;
    }
    Ok(())
}

async fn send_enable(stream: &mut Stream) -> Result<(), ConnectError> {
    send(stream, &el("enable", ns::SM).attr("resume", "true").build()).await
}

/// The answer to XEP-0198 `<enable/>`.
async fn recv_enabled(
    stream: &mut Stream,
    cfg: &ConnectConfig,
    negotiated: &mut Negotiated,
    early: &mut Vec<Element>,
) -> Result<(), ConnectError> {
    let reply = loop {
        let reply = next_element_any(stream, cfg.step_timeout).await?;
        if reply.ns() == ns::JABBER_CLIENT && matches!(reply.name(), "message" | "presence" | "iq")
        {
            // Even one the limits cut: the session drops it, counted, so that a replaced
            // session's queue does not fail every login.
            early.push(reply);
            continue;
        }
        if limits::cut_marker(&reply).is_some() {
            return Err(over_limits_in_login());
        }
        break reply;
    };
    if reply.is("enabled", ns::SM) {
        negotiated.sm_id = reply.attr("id").map(str::to_owned);
        negotiated.sm_resumable = matches!(reply.attr("resume"), Some("true") | Some("1"));
        negotiated.sm_location = reply.attr("location").map(str::to_owned);
    } else if !reply.is("failed", ns::SM) {
        return Err(ConnectError::Protocol(format!(
            "unexpected reply to <enable/>: <{} xmlns='{}'>",
            reply.name(),
            reply.ns()
        )));
    }
    Ok(())
}

/// Logs in: the returned connection is bound, and has stream management enabled when the
/// server offers it and the config asks for it. SASL2 (with Bind2, inline stream management
/// and FAST) when offered and allowed; legacy SASL, stream restart, bind and `<enable/>`
/// otherwise.
pub async fn connect(cfg: &ConnectConfig) -> Result<Connection, ConnectError> {
    if !cfg.user_agent_id.is_empty() && !sasl2::is_uuid_v4(&cfg.user_agent_id) {
        return Err(ConnectError::Config(
            "user_agent_id must be a UUID v4 (XEP-0388)".into(),
        ));
    }
    let resume_cfg;
    let cfg = match resume_target(cfg) {
        Some(addr) => {
            let mut c = cfg.clone();
            c.server = Some(addr);
            resume_cfg = c;
            &resume_cfg
        }
        None => cfg,
    };
    let hint = if cfg.pipeline { hints::get(cfg) } else { None };
    let pipelined = hint.is_some();
    if let Some(conn) = connect_once(cfg, hint).await? {
        return Ok(conn);
    }
    // The features changed so that the server refuses what we pipelined: once more the
    // plain way (nothing was authenticated on the abandoned connection).
    debug_assert!(pipelined);
    connect_once(cfg, None)
        .await?
        .ok_or_else(|| ConnectError::Protocol("login fell back twice".into()))
}

/// One login attempt; `Ok(None)`: what was pipelined from `hint` will be refused because
/// the server's features changed, so the caller tries again without a hint.
async fn connect_once(
    cfg: &ConnectConfig,
    hint: Option<Element>,
) -> Result<Option<Connection>, ConnectError> {
    let mut rt = 0u32;
    let mut early: Vec<Element> = Vec::new();
    let (tls, exporter, direct) = secure_transport(cfg, hint.is_some(), &mut rt).await?;
    // The `<authenticate/>` decided from the features of the last login, sent right behind
    // the stream header. Never PLAIN: a stale hint must not pick a weaker mechanism than the
    // server now offers.
    let speculative = match (&hint, cfg.allow_sasl2) {
        (Some(h), true) => Offer::parse(h)
            .and_then(|o| plan_sasl2(h, &o, exporter.as_deref(), cfg).ok())
            .filter(|p| p.mechanism != "PLAIN"),
        _ => None,
    };
    let (mut stream, features, cuts) = open_stream(
        tls,
        cfg,
        Some(cfg.jid.as_str()),
        speculative.as_ref().map(|p| &p.first),
        &mut rt,
    )
    .await?;
    if cfg.pipeline {
        hints::put(cfg, &features);
    }
    let pre_auth_limit = max_stanza_bytes(&features);
    let cb_types = sasl2::channel_binding_types(&features);
    let raw_offer = Offer::parse(&features);
    // SASL2 when offered with something we can complete; otherwise legacy SASL, which may
    // still offer what SASL2 lacked.
    let offer = if cfg.allow_sasl2 {
        raw_offer.clone().filter(|o| {
            usable_fast_token(cfg, o, exporter.as_deref()).is_some()
                || choose_from(&o.mechanisms, cb_types.as_deref(), exporter.as_deref()).is_ok()
        })
    } else {
        None
    };
    let fresh_plan = offer
        .as_ref()
        .map(|o| plan_sasl2(&features, o, exporter.as_deref(), cfg))
        .transpose()?;
    // What to do with what was pipelined, now that the features are known.
    let mut ignored_inline_resume = false;
    let (plan, sent) = match (speculative, fresh_plan) {
        (Some(spec), Some(fresh)) if spec.same_as(&fresh) => (Some(spec), true),
        (Some(spec), _) => {
            // A FAST token still offered: the server answers what we sent as it is (and
            // counts the token's use), so take that answer; what it ignored (an inline
            // resumption or bind it no longer offers) is done after. Anything else (a SCRAM
            // exchange whose channel-binding flags no longer fit, a mechanism gone, no
            // SASL2) is given up unanswered: nothing was authenticated, so the login starts
            // again without pipelining.
            let fast_offered = raw_offer
                .as_ref()
                .is_some_and(|o| spec.auth.is_fast() && o.fast.iter().any(|m| m == spec.mechanism));
            if !fast_offered {
                tracing::debug!("server features changed: pipelined login given up, retrying");
                return Ok(None);
            }
            tracing::debug!("server features changed since the last login; going on");
            ignored_inline_resume =
                spec.request.resume.is_some() && !raw_offer.as_ref().is_some_and(|o| o.sm_resume);
            (Some(spec), true)
        }
        (None, fresh) => (fresh, false),
    };

    let mut negotiated = Negotiated {
        mechanism: "",
        channel_binding: None,
        direct_tls: direct,
        bound_jid: String::new(),
        sm_id: None,
        sm_resumable: false,
        max_stanza_bytes: None,
        sasl2: false,
        bind2: false,
        sm_inline: false,
        carbons_inline: false,
        fast_token: None,
        ssdp: false,
        round_trips: 0,
        sm_location: None,
        resumed: None,
        resume_inline: false,
        resume_failed: false,
        resume_failed_h: None,
        sm_base: SmBase::default(),
        csi: false,
        pipelined: sent,
    };
    let mut sm_tried = false;
    let mut resume_tried = false;
    let features = if let Some(mut plan) = plan {
        // XEP-0474 protects the features of this stream, not of the one the hint came from.
        plan.auth
            .expect_downgrade_hash(raw_offer.as_ref(), cb_types.as_deref());
        let (mut outcome, channel_binding, features) =
            drive_sasl2(&mut stream, plan, sent, cfg, &mut rt).await?;
        if ignored_inline_resume {
            outcome.resume = None;
        }
        negotiated.mechanism = outcome.mechanism;
        negotiated.channel_binding = channel_binding;
        negotiated.sasl2 = true;
        negotiated.csi = raw_offer.as_ref().is_some_and(|o| o.bind2_offers(NS_CSI));
        negotiated.ssdp = outcome.ssdp_verified;
        negotiated.fast_token = outcome.token;
        if outcome.bound {
            negotiated.bind2 = true;
            negotiated.bound_jid = outcome.authz_id.clone();
            negotiated.carbons_inline = outcome.carbons;
        }
        match (&outcome.resume, &cfg.resume) {
            (Some(sasl2::ResumeResult::Resumed { h }), Some(req)) => {
                resume_tried = true;
                negotiated.bound_jid = outcome.authz_id.clone();
                negotiated.resume_inline = true;
                mark_resumed(&mut negotiated, req, *h);
            }
            (Some(sasl2::ResumeResult::Failed { h }), _) => {
                resume_tried = true;
                negotiated.resume_failed = true;
                negotiated.resume_failed_h = *h;
            }
            _ => {}
        }
        match outcome.sm {
            Some(SmResult::Enabled { id, resume }) => {
                negotiated.sm_id = id;
                negotiated.sm_resumable = resume;
                negotiated.sm_inline = true;
                sm_tried = true;
            }
            Some(SmResult::Failed) => sm_tried = true,
            None => {}
        }
        features
    } else {
        let a = authenticate(&mut stream, &features, exporter.as_deref(), cfg, &mut rt).await?;
        negotiated.mechanism = a.mechanism;
        negotiated.channel_binding = a.channel_binding;
        negotiated.ssdp = a.ssdp;
        let domain = cfg.jid.domain().to_owned();
        cuts.restart();
        let pending = stream
            .initiate_reset()
            .send_header(header(&domain, Some(cfg.jid.as_str())))
            .await?;
        stream = pending.skip_features::<Element>();
        let features = next_element(&mut stream, cfg.step_timeout).await?;
        rt += 1;
        if !features.is("features", ns::STREAM) {
            return Err(ConnectError::Protocol("expected stream features".into()));
        }
        features
    };
    negotiated.max_stanza_bytes = max_stanza_bytes(&features).or(pre_auth_limit);
    negotiated.csi |= features.has_child("csi", NS_CSI);

    if let (Some(req), false) = (&cfg.resume, resume_tried) {
        if features.has_child("sm", ns::SM) {
            resume_sm(&mut stream, cfg, req, &mut negotiated, &mut rt).await?;
        } else {
            // Nothing to resume with: a fresh session, and the caller must know it.
            negotiated.resume_failed = true;
        }
    }
    if negotiated.resumed.is_none() {
        let enable = cfg.stream_management && !sm_tried && features.has_child("sm", ns::SM);
        if !negotiated.bind2 {
            bind_and_enable(
                &mut stream,
                &features,
                cfg,
                enable,
                &mut negotiated,
                &mut rt,
                &mut early,
            )
            .await?;
        } else if enable {
            send_enable(&mut stream).await?;
            recv_enabled(&mut stream, cfg, &mut negotiated, &mut early).await?;
            rt += 1;
        }
    }
    negotiated.round_trips = rt;
    tracing::debug!(
        mechanism = negotiated.mechanism,
        channel_binding = ?negotiated.channel_binding,
        direct,
        pipelined = negotiated.pipelined,
        sasl2 = negotiated.sasl2,
        bind2 = negotiated.bind2,
        sm = negotiated.sm_id.is_some(),
        resumed = ?negotiated.resumed,
        resume_failed = negotiated.resume_failed,
        new_fast_token = negotiated.fast_token.is_some(),
        round_trips = rt,
        "logged in"
    );
    Ok(Some(Connection {
        stream,
        negotiated,
        step_timeout: cfg.step_timeout,
        foreground_keepalive: cfg.foreground_keepalive,
        early,
        cuts,
    }))
}

fn iq_error(reply: &Element) -> (String, Option<String>) {
    crate::inbound::stanza_error(reply)
}

/// In-band registration (XEP-0077) with a username and a password only.
pub async fn register(cfg: &ConnectConfig) -> Result<(), ConnectError> {
    let (mut stream, features, _, _) = secure_stream(cfg, None, &mut 0).await?;
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

    fn offer(fast: &[&str]) -> Offer {
        Offer {
            mechanisms: vec!["SCRAM-SHA-256".into()],
            fast: fast.iter().map(|m| (*m).to_owned()).collect(),
            ..Offer::default()
        }
    }

    #[test]
    fn fast_token_request_prefers_channel_binding_only_when_possible() {
        let cbs = vec!["tls-exporter".to_owned()];
        let both = offer(&["HT-SHA-256-NONE", "HT-SHA-256-EXPR", "HT-SHA-256-ENDP"]);
        assert_eq!(
            fast_token_request(&both, Some(&cbs), Some(&[1])),
            Some("HT-SHA-256-EXPR")
        );
        // TLS 1.2 (no exporter), or the server did not name tls-exporter (XEP-0440).
        assert_eq!(
            fast_token_request(&both, Some(&cbs), None),
            Some("HT-SHA-256-NONE")
        );
        assert_eq!(
            fast_token_request(&both, None, Some(&[1])),
            Some("HT-SHA-256-NONE")
        );
        assert_eq!(
            fast_token_request(&offer(&["HT-SHA-256-ENDP"]), Some(&cbs), Some(&[1])),
            None
        );
        assert_eq!(
            fast_token_request(&offer(&[]), Some(&cbs), Some(&[1])),
            None
        );
    }

    #[test]
    fn fast_token_used_only_where_it_can_work() {
        let mut cfg = ConnectConfig::new(BareJid::parse("u@example.org").unwrap(), "pw");
        let both = offer(&["HT-SHA-256-NONE", "HT-SHA-256-EXPR"]);
        assert!(
            usable_fast_token(&cfg, &both, Some(&[1])).is_none(),
            "no token"
        );
        cfg.fast = Some(FastToken::new(
            "HT-SHA-256-EXPR",
            "t",
            "2030-01-01T00:00:00Z",
        ));
        let (mech, binding, _, cb) = usable_fast_token(&cfg, &both, Some(&[7])).unwrap();
        assert_eq!(
            (mech, binding, cb),
            ("HT-SHA-256-EXPR", HtBinding::TlsExporter, vec![7])
        );
        // An -EXPR token needs the exporter; the server must still offer the mechanism.
        assert!(usable_fast_token(&cfg, &both, None).is_none());
        assert!(usable_fast_token(&cfg, &offer(&["HT-SHA-256-NONE"]), Some(&[7])).is_none());
        cfg.fast = Some(FastToken::new(
            "HT-SHA-256-NONE",
            "t",
            "2030-01-01T00:00:00Z",
        ));
        let (_, binding, _, cb) = usable_fast_token(&cfg, &both, None).unwrap();
        assert_eq!((binding, cb), (HtBinding::None, vec![]));
        cfg.fast = Some(FastToken::new(
            "HT-SHA-512-NONE",
            "t",
            "2030-01-01T00:00:00Z",
        ));
        assert!(usable_fast_token(&cfg, &offer(&["HT-SHA-512-NONE"]), None).is_none());
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let mut cfg = ConnectConfig::new(BareJid::parse("u@example.org").unwrap(), "hunter2");
        cfg.fast = Some(FastToken::new(
            "HT-SHA-256-NONE",
            "secret-token:fast-abc",
            "2030-01-01T00:00:00Z",
        ));
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("secret-token") && !dbg.contains("u@"));
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
