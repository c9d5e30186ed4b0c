//! A scripted XMPP server on loopback for what the real servers cannot do on demand:
//! measuring the client alone (no server processing in the path) and, later, misbehaving
//! on purpose. It speaks just enough: STARTTLS with a certificate from its own CA, PLAIN,
//! bind, stream management, and a result for every IQ.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

pub const DOMAIN: &str = "fake.test";

pub struct FakeServer {
    pub port: u16,
    pub ca_pem: String,
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

/// One logged-in client connection, past bind and stream management.
pub struct FakeSession {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    buf: Vec<u8>,
    /// Stanzas read by `serve_until` (XEP-0198 `h` for its answers to `<r/>`).
    received: u32,
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='fake.test' id='fake' version='1.0'>";

/// A TLS acceptor for `names`, with a certificate from a CA made for it alone; returns
/// the CA's PEM for the client to trust.
pub fn test_tls(names: &[&str]) -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let (acceptor, ca_pem) = test_tls(&[DOMAIN]);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        FakeServer {
            port: listener.local_addr().expect("addr").port(),
            ca_pem,
            listener,
            acceptor,
        }
    }

    /// A session-level config for `user@fake.test` at this server, trusting only its CA.
    pub fn connect_config(&self) -> linnet_xmpp::ConnectConfig {
        let jid = linnet_xmpp::BareJid::parse(&format!("user@{DOMAIN}")).expect("jid");
        let mut cfg = linnet_xmpp::ConnectConfig::new(jid, "pw");
        cfg.server = Some(linnet_xmpp::ServerAddr {
            host: "127.0.0.1".into(),
            port: self.port,
            direct_tls: false,
        });
        cfg.tls = linnet_xmpp::TlsOptions {
            extra_ca_pem: Some(self.ca_pem.clone().into_bytes()),
            only_extra_ca: true,
        };
        cfg
    }

    /// Accepts one client and logs it in as `user@fake.test/<resource>`.
    pub async fn accept(&self) -> FakeSession {
        self.accept_with(None).await
    }

    /// Like `accept`, but a client asking to resume stream `sm1` gets it back, told that
    /// `h` of its stanzas were handled.
    pub async fn accept_resuming(&self, h: u32) -> FakeSession {
        self.accept_with(Some(h)).await
    }

    async fn accept_with(&self, resume: Option<u32>) -> FakeSession {
        let (mut tcp, _) = self.listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        // One buffer for the plaintext part: a client that pipelines sends `<starttls/>`
        // with its stream header.
        let mut plain = Vec::new();
        read_until(&mut tcp, &mut plain, b">").await;
        tcp.write_all(HEADER.as_bytes()).await.expect("write");
        tcp.write_all(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>").await.expect("write");
        read_until(&mut tcp, &mut plain, b"starttls").await;
        tcp.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .expect("write");
        let tls = self.acceptor.accept(tcp).await.expect("tls");
        let mut s = FakeSession {
            tls,
            buf: Vec::new(),
            received: 0,
        };
        s.expect("<stream:stream").await;
        s.send(HEADER).await;
        s.send("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>").await;
        s.expect("</auth>").await;
        s.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await;
        s.expect("<stream:stream").await;
        s.send(HEADER).await;
        s.send("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/></stream:features>").await;
        let mut bind = s.next_element().await;
        if let (true, Some(h)) = (bind.starts_with("<resume"), resume) {
            s.send(&format!(
                "<resumed xmlns='urn:xmpp:sm:3' h='{h}' previd='sm1'/>"
            ))
            .await;
            return s;
        }
        if bind.starts_with("<resume") {
            // It keeps no sessions: a client resuming is refused and binds afresh.
            s.send("<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>").await;
            bind = s.next_element().await;
        }
        let id = attr(&bind, "id").unwrap_or_default();
        s.send(&format!("<iq type='result' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@fake.test/r1</jid></bind></iq>")).await;
        s.expect("enable").await;
        s.send("<enabled xmlns='urn:xmpp:sm:3' id='sm1' resume='true'/>")
            .await;
        s
    }
}

impl FakeSession {
    pub async fn send(&mut self, xml: &str) {
        self.tls.write_all(xml.as_bytes()).await.expect("write");
        self.tls.flush().await.expect("flush");
    }

    /// Reads until `needle` has arrived; returns what was read up to and including it.
    pub async fn expect(&mut self, needle: &str) -> String {
        read_until(&mut self.tls, &mut self.buf, needle.as_bytes()).await
    }

    /// Answers every IQ with an empty result (a roster query gets an empty roster) and
    /// every `<r/>` with the count of stanzas it has read, until `until` has been seen.
    pub async fn serve_until(&mut self, until: &str) {
        loop {
            let chunk = self.next_stanza().await;
            self.answer(&chunk).await;
            if chunk.contains(until) {
                return;
            }
        }
    }

    /// Like `serve_until`, but returns the first element containing `needle` unanswered
    /// (for IQs the test answers itself).
    pub async fn serve_until_unanswered(&mut self, needle: &str) -> String {
        loop {
            let chunk = self.next_stanza().await;
            if chunk.contains(needle) {
                return chunk;
            }
            self.answer(&chunk).await;
        }
    }

    /// The next element, counted for XEP-0198 if it is a stanza.
    async fn next_stanza(&mut self) -> String {
        let chunk = self.next_element().await;
        if ["<iq", "<message", "<presence"]
            .iter()
            .any(|s| chunk.starts_with(s))
        {
            self.received += 1;
        }
        chunk
    }

    async fn answer(&mut self, chunk: &str) {
        if chunk.starts_with("<iq") {
            let id = attr(chunk, "id").unwrap_or_default();
            let reply = if chunk.contains("jabber:iq:roster") {
                format!("<iq type='result' id='{id}'><query xmlns='jabber:iq:roster'/></iq>")
            } else {
                format!("<iq type='result' id='{id}'/>")
            };
            self.send(&reply).await;
        } else if chunk.starts_with("<r") && chunk.contains("urn:xmpp:sm") {
            let h = self.received;
            self.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
                .await;
        }
    }

    /// The next top-level element the client sent (our client writes each element whole).
    async fn next_element(&mut self) -> String {
        loop {
            if let Some(end) = element_end(&self.buf) {
                let el: Vec<u8> = self.buf.drain(..end).collect();
                return String::from_utf8_lossy(&el).trim().to_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = self.tls.read(&mut chunk).await.expect("read");
            assert!(n > 0, "client closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// End of the first complete element in `buf` (self-closing or with a matching close tag).
fn element_end(buf: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(buf).ok()?;
    let start = text.find('<')?;
    let rest = &text[start..];
    if rest.starts_with("</") {
        // A stray end tag (the rest of an element `expect` matched by its start).
        return rest.find('>').map(|i| start + i + 1);
    }
    let name_end = rest[1..].find(|c: char| c.is_whitespace() || c == '>' || c == '/')? + 1;
    let name = &rest[1..name_end];
    let open_end = rest.find('>')?;
    if rest[..open_end].ends_with('/') {
        return Some(start + open_end + 1);
    }
    let close = format!("</{name}>");
    rest.find(&close).map(|i| start + i + close.len())
}

pub fn attr(el: &str, name: &str) -> Option<String> {
    for q in ['\'', '"'] {
        let pat = format!(" {name}={q}");
        if let Some(i) = el.find(&pat) {
            let rest = &el[i + pat.len()..];
            return rest.find(q).map(|j| rest[..j].to_owned());
        }
    }
    None
}

async fn read_until<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    needle: &[u8],
) -> String {
    loop {
        if let Some(i) = buf.windows(needle.len()).position(|w| w == needle) {
            // Consume through the end of the tag the needle is in.
            let after = i + needle.len();
            let end = if needle.ends_with(b">") {
                Some(after)
            } else {
                buf[after..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map(|j| after + j + 1)
            };
            if let Some(end) = end {
                let upto: Vec<u8> = buf.drain(..end).collect();
                return String::from_utf8_lossy(&upto).into_owned();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "peer closed while waiting for {}",
            String::from_utf8_lossy(needle)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}
