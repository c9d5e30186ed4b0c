//! XEP-0198 stream resumption and durable acknowledgement against the real servers (legacy
//! `<resume/>` after SASL and inline in SASL2), and scripted hostile servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::time::Duration;

use linnet_tests::proxy::Proxy;
use linnet_tests::*;
use linnet_xmpp::{
    BareJid, ConnectConfig, ConnectError, Event, ResumeRequest, ServerAddr, Session, SmState,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(15);

fn config_at(server: Server, jid: &str, addr: Option<SocketAddr>, sasl2: bool) -> ConnectConfig {
    let mut cfg = ConnectConfig::new(BareJid::parse(jid).unwrap(), PASSWORD);
    let o = server_override(server, false);
    cfg.server = Some(match addr {
        Some(a) => ServerAddr {
            host: a.ip().to_string(),
            port: a.port(),
            direct_tls: false,
        },
        None => ServerAddr {
            host: o.host,
            port: o.port,
            direct_tls: false,
        },
    });
    cfg.tls = tls();
    cfg.allow_sasl2 = sasl2;
    cfg.step_timeout = Duration::from_secs(10);
    cfg
}

async fn account(server: Server, tag: &str) -> String {
    let jid = fresh_jid(server, tag);
    linnet_xmpp::register(&config_at(server, &jid, None, false))
        .await
        .expect("register");
    jid
}

fn resume_request(state: &SmState, bound_jid: &str) -> ResumeRequest {
    ResumeRequest {
        previd: state.id.clone().expect("resumable session"),
        location: state.location.clone(),
        h: state.inbound_handled,
        bound_jid: Some(bound_jid.to_owned()),
    }
}

/// Waits for chat messages with these bodies (in any order); returns the highest seq seen.
async fn expect_bodies(events: &mut UnboundedReceiver<(u32, Event)>, bodies: &[&str]) -> u32 {
    let mut missing: Vec<String> = bodies.iter().map(|b| (*b).to_owned()).collect();
    let mut max_seq = 0;
    let fut = async {
        while let Some((seq, ev)) = events.recv().await {
            max_seq = max_seq.max(seq);
            match ev {
                Event::Message(m) => missing.retain(|b| *b != m.body),
                Event::Closed(e) => panic!("session closed while waiting for messages: {e}"),
                _ => {}
            }
            if missing.is_empty() {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("messages not received: {missing:?}"));
    max_seq
}

async fn expect_closed<T>(events: &mut UnboundedReceiver<T>, closed: impl Fn(&T) -> bool) {
    let fut = async {
        while let Some(ev) = events.recv().await {
            if closed(&ev) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("session noticed the reset");
}

/// A sender on its own, direct connection.
async fn sender(server: Server) -> (Session, BareJid) {
    let jid = account(server, "rsnd").await;
    let conn = linnet_xmpp::connect(&config_at(server, &jid, None, true))
        .await
        .expect("sender login");
    let bare = BareJid::parse(&jid).unwrap();
    let (s, _events) = Session::start(conn, bare.clone());
    (s, bare)
}

/// (a) Messages received but not confirmed are not acknowledged: after the link dies, a
/// resumption with the durable `h` makes the server deliver them again; once confirmed,
/// they are not.
async fn durable_h_redelivers_unconfirmed(server: Server) {
    let (bob, _) = sender(server).await;
    let alice = account(server, "rdur").await;
    let alice_bare = BareJid::parse(&alice).unwrap();
    let proxy = Proxy::start(socket_addr(server)).await.unwrap();
    let cfg = config_at(server, &alice, Some(proxy.addr()), true);

    let full = linnet_xmpp::connect(&cfg).await.expect("login");
    let n = full.negotiated.clone();
    eprintln!("{server:?} full login: {n:?}");
    assert!(n.sm_resumable && n.sm_id.is_some(), "resumable SM: {n:?}");
    let bound = n.bound_jid.clone();
    let (session, mut events) = Session::start_durable(full, alice_bare.clone(), n.sm_base());
    session.send_presence(None, None).unwrap();
    session.ping().await.unwrap();
    bob.send_chat(&alice_bare, "durable one", &linnet_xmpp::new_id())
        .unwrap();
    bob.send_chat(&alice_bare, "durable two", &linnet_xmpp::new_id())
        .unwrap();
    let max_seq = expect_bodies(&mut events, &["durable one", "durable two"]).await;
    assert!(max_seq > 0);
    let state = session.sm_state();
    assert!(
        state.inbound_handled < max_seq,
        "unconfirmed messages are not handled: {state:?}, seq {max_seq}"
    );
    assert_eq!(session.handled(), state.inbound_handled);

    proxy.reset_all();
    expect_closed(&mut events, |(_, e)| matches!(e, Event::Closed(_))).await;

    let mut cfg2 = cfg.clone();
    cfg2.resume = Some(resume_request(&state, &bound));
    let conn = linnet_xmpp::connect(&cfg2).await.expect("resume");
    let n2 = conn.negotiated.clone();
    eprintln!(
        "{server:?} resume: resumed={:?} rt={} (full login rt={}) sasl2={}",
        n2.resumed, n2.round_trips, n.round_trips, n2.sasl2
    );
    assert!(n2.resumed.is_some(), "resumed: {n2:?}");
    assert!(!n2.resume_failed);
    assert!(n2.round_trips < n.round_trips, "a resume saves round trips");
    let (session, mut events) = Session::start_durable(conn, alice_bare.clone(), n2.sm_base());
    let max_seq = expect_bodies(&mut events, &["durable one", "durable two"]).await;
    assert!(max_seq > state.inbound_handled);
    session.confirm_handled(max_seq);
    // Let anything else the server re-sent arrive, confirm it too.
    let mut last = max_seq;
    while let Ok(Some((seq, _))) =
        tokio::time::timeout(Duration::from_millis(500), events.recv()).await
    {
        last = last.max(seq);
    }
    session.confirm_handled(last);
    session.ping().await.expect("resumed session works");
    let state2 = session.sm_state();
    assert!(state2.inbound_handled >= max_seq, "{state2:?}");

    proxy.reset_all();
    expect_closed(&mut events, |(_, e)| matches!(e, Event::Closed(_))).await;
    let mut cfg3 = cfg.clone();
    cfg3.resume = Some(resume_request(&state2, &bound));
    let conn = linnet_xmpp::connect(&cfg3).await.expect("second resume");
    assert!(conn.negotiated.resumed.is_some());
    let base = conn.negotiated.sm_base();
    let (session, mut events) = Session::start_durable(conn, alice_bare, base);
    session.ping().await.expect("resumed session works");
    let redelivered = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some((_, ev)) = events.recv().await {
            if let Event::Message(m) = ev {
                return m.body;
            }
        }
        String::new()
    })
    .await;
    assert!(
        redelivered.is_err(),
        "confirmed message delivered again: {redelivered:?}"
    );
    session.close().await;
    bob.close().await;
}

/// (b) Stanzas sent to us while the link was dead arrive after the resumption (legacy and
/// SASL2 logins).
async fn resume_after_reset_delivers_missed(server: Server) {
    let (bob, _) = sender(server).await;
    for sasl2 in [false, true] {
        let alice = account(server, "rrst").await;
        let alice_bare = BareJid::parse(&alice).unwrap();
        let proxy = Proxy::start(socket_addr(server)).await.unwrap();
        let cfg = config_at(server, &alice, Some(proxy.addr()), sasl2);
        let conn = linnet_xmpp::connect(&cfg).await.expect("login");
        let n = conn.negotiated.clone();
        let (session, mut events) = Session::start(conn, alice_bare.clone());
        session.send_presence(None, None).unwrap();
        session.ping().await.unwrap();
        let state = session.sm_state();
        proxy.reset_all();
        expect_closed(&mut events, |e| matches!(e, Event::Closed(_))).await;
        bob.send_chat(&alice_bare, "while away 1", &linnet_xmpp::new_id())
            .unwrap();
        bob.send_chat(&alice_bare, "while away 2", &linnet_xmpp::new_id())
            .unwrap();
        bob.ping().await.unwrap();

        let mut cfg2 = cfg.clone();
        cfg2.resume = Some(resume_request(&state, &n.bound_jid));
        let conn = linnet_xmpp::connect(&cfg2).await.expect("resume");
        let n2 = conn.negotiated.clone();
        eprintln!(
            "{server:?} sasl2={sasl2}: full login rt={} resume rt={} resumed={:?} inline={}",
            n.round_trips, n2.round_trips, n2.resumed, n2.resume_inline
        );
        assert!(n2.resumed.is_some(), "{n2:?}");
        // Both servers offer resumption inside SASL2.
        assert_eq!(n2.resume_inline, sasl2);
        assert!(n2.round_trips < n.round_trips);
        assert_eq!(n2.bound_jid, n.bound_jid);
        let (session, events) = Session::start(conn, alice_bare.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut events = events;
            while let Some(e) = events.recv().await {
                let _ = tx.send((0, e));
            }
        });
        expect_bodies(&mut rx, &["while away 1", "while away 2"]).await;
        session.ping().await.expect("resumed session works");
        session.close().await;
    }
    bob.close().await;
}

/// (d) What the server never got from the broken stream (here: a message and a presence
/// written into a stalled link) is sent again on the resumed one, and only that.
async fn resumed_stream_resends_what_the_server_missed(server: Server) {
    let bob = account(server, "rgot").await;
    let bob_bare = BareJid::parse(&bob).unwrap();
    let conn = linnet_xmpp::connect(&config_at(server, &bob, None, true))
        .await
        .expect("bob login");
    let (bob_s, mut bob_events) = Session::start(conn, bob_bare.clone());
    bob_s.send_presence(None, None).unwrap();
    let alice = account(server, "rmis").await;
    let alice_bare = BareJid::parse(&alice).unwrap();
    let proxy = Proxy::start(socket_addr(server)).await.unwrap();
    let cfg = config_at(server, &alice, Some(proxy.addr()), true);
    let conn = linnet_xmpp::connect(&cfg).await.expect("login");
    let bound = conn.negotiated.bound_jid.clone();
    let (session, mut events) = Session::start(conn, alice_bare.clone());
    session.send_chat(&bob_bare, "before", "m-before").unwrap();
    session.ping().await.unwrap();
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if matches!(&ev, Event::Acked { id } if id == "m-before") {
                return;
            }
        }
    })
    .await
    .expect("first message acknowledged");
    let state = session.sm_state();
    proxy.set_stalled(true);
    session
        .send_chat(&bob_bare, "in the stall", "m-stall")
        .unwrap();
    session.send_presence(None, None).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.reset_all();
    proxy.set_stalled(false);
    expect_closed(&mut events, |e| matches!(e, Event::Closed(_))).await;

    let mut cfg2 = cfg.clone();
    cfg2.resume = Some(resume_request(&state, &bound));
    let conn = linnet_xmpp::connect(&cfg2).await.expect("resume");
    assert!(conn.negotiated.resumed.is_some(), "{:?}", conn.negotiated);
    let (resumed, mut events2) = Session::start(conn, alice_bare.clone());
    assert_eq!(resumed.carry_over(&session), vec!["m-stall".to_owned()]);
    let acked = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events2.recv().await {
            if let Event::Acked { id } = ev {
                return id;
            }
        }
        String::new()
    })
    .await
    .expect("re-sent message acknowledged");
    assert_eq!(acked, "m-stall");
    let mut bodies = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(ev) = bob_events.recv().await {
            if let Event::Message(m) = ev {
                bodies.push(m.body);
            }
        }
    })
    .await;
    assert_eq!(bodies, ["before", "in the stall"], "each exactly once");
    resumed.close().await;
    bob_s.close().await;
}

/// (c) A resumption of a session the server does not know falls back to a fresh, working
/// session in the same connection.
async fn wrong_previd_falls_back(server: Server) {
    let alice = account(server, "rbad").await;
    for sasl2 in [false, true] {
        let mut cfg = config_at(server, &alice, None, sasl2);
        cfg.resume = Some(ResumeRequest {
            previd: "no-such-session".into(),
            location: None,
            h: 3,
            bound_jid: None,
        });
        let conn = linnet_xmpp::connect(&cfg)
            .await
            .expect("login after refusal");
        let n = conn.negotiated.clone();
        eprintln!("{server:?} sasl2={sasl2}: {n:?}");
        assert!(n.resume_failed && n.resumed.is_none(), "{n:?}");
        assert!(n.sm_id.is_some() && n.bound_jid.contains('/'), "{n:?}");
        assert_eq!(n.sm_base(), linnet_xmpp::SmBase::default());
        let bare = BareJid::parse(&alice).unwrap();
        let (session, mut events) = Session::start(conn, bare.clone());
        session.ping().await.expect("fresh session works");
        let id = linnet_xmpp::new_id();
        session.send_chat(&bare, "self", &id).unwrap();
        let acked = tokio::time::timeout(WAIT, async {
            while let Some(ev) = events.recv().await {
                if matches!(&ev, Event::Acked { id: a } if *a == id) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(acked, Ok(true));
        session.close().await;
    }
}

both_servers!(
    durable_h_redelivers_unconfirmed,
    resume_after_reset_delivers_missed,
    resumed_stream_resends_what_the_server_missed,
    wrong_previd_falls_back,
);

// ---- scripted servers ----

/// A minimal scripted server: STARTTLS, PLAIN, restart, then features with stream
/// management and no bind; what follows is up to the test.
struct Script {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='fake.test' id='s1' version='1.0'>";

impl Script {
    async fn start() -> Script {
        let (acceptor, ca_pem) = linnet_tests::fake::test_tls(&["fake.test"]);
        Script {
            listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor,
            ca_pem,
        }
    }

    fn config(&self) -> ConnectConfig {
        let mut cfg = ConnectConfig::new(BareJid::parse("user@fake.test").unwrap(), "pw");
        cfg.server = Some(ServerAddr {
            host: "127.0.0.1".into(),
            port: self.listener.local_addr().unwrap().port(),
            direct_tls: false,
        });
        cfg.tls = linnet_xmpp::TlsOptions {
            extra_ca_pem: Some(self.ca_pem.clone().into_bytes()),
            only_extra_ca: true,
        };
        cfg.step_timeout = Duration::from_secs(5);
        cfg
    }

    /// Serves one client up to the features after SASL; returns the TLS stream and what
    /// the client sent after those features, up to `until`.
    async fn serve(&self, until: &str) -> (impl AsyncRead + AsyncWrite + Unpin, String) {
        let (mut tcp, _) = self.listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_until(&mut tcp, &mut buf, ">").await;
        tcp.write_all(HEADER.as_bytes()).await.unwrap();
        tcp.write_all(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>").await.unwrap();
        read_until(&mut tcp, &mut buf, "starttls").await;
        tcp.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .unwrap();
        let mut tls = self.acceptor.accept(tcp).await.unwrap();
        let mut buf = Vec::new();
        read_until(&mut tls, &mut buf, "<stream:stream").await;
        tls.write_all(HEADER.as_bytes()).await.unwrap();
        tls.write_all(b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>").await.unwrap();
        read_until(&mut tls, &mut buf, "</auth>").await;
        tls.write_all(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await
            .unwrap();
        read_until(&mut tls, &mut buf, "<stream:stream").await;
        tls.write_all(HEADER.as_bytes()).await.unwrap();
        tls.write_all(b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/></stream:features>").await.unwrap();
        let got = read_until(&mut tls, &mut buf, until).await;
        (tls, got)
    }
}

async fn read_until<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, needle: &str) -> String {
    let fut = async {
        loop {
            if let Some(i) = buf
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                let after = i + needle.len();
                let end = buf[after..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map_or(buf.len(), |j| after + j + 1);
                let upto: Vec<u8> = buf.drain(..end).collect();
                return String::from_utf8_lossy(&upto).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed while we waited for {needle}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, fut).await.expect("client spoke")
}

#[tokio::test]
async fn resumed_with_another_previd_is_a_protocol_error() {
    let script = Script::start().await;
    let mut cfg = script.config();
    cfg.resume = Some(ResumeRequest {
        previd: "mine".into(),
        location: None,
        h: 0,
        bound_jid: Some("user@fake.test/r1".into()),
    });
    let server = async {
        let (mut tls, got) = script.serve("<resume").await;
        assert!(
            got.contains("previd=\"mine\"") || got.contains("previd='mine'"),
            "{got}"
        );
        tls.write_all(b"<resumed xmlns='urn:xmpp:sm:3' previd='other' h='0'/>")
            .await
            .unwrap();
        // Keep the connection until the client gave up.
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(WAIT, tls.read(&mut sink)).await;
    };
    let (result, ()) = tokio::join!(linnet_xmpp::connect(&cfg), server);
    match result {
        Err(ConnectError::Protocol(msg)) => assert!(msg.contains("different session"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(c) => panic!("accepted a foreign session: {:?}", c.negotiated),
    }
}

#[tokio::test]
async fn unsolicited_resumed_during_login_is_a_protocol_error() {
    let script = Script::start().await;
    let cfg = script.config();
    let server = async {
        // Bind and <enable/> come in one flight.
        let (mut tls, bind) = script.serve("<enable").await;
        let id = bind
            .split("id=")
            .nth(1)
            .and_then(|r| r.get(1..))
            .and_then(|r| r.split(['\'', '"']).next())
            .unwrap()
            .to_owned();
        tls.write_all(format!("<iq type='result' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@fake.test/r1</jid></bind></iq>").as_bytes()).await.unwrap();
        // Instead of <enabled/>: a resumption nobody asked for.
        tls.write_all(b"<resumed xmlns='urn:xmpp:sm:3' previd='x' h='0'/>")
            .await
            .unwrap();
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(WAIT, tls.read(&mut sink)).await;
    };
    let (result, ()) = tokio::join!(linnet_xmpp::connect(&cfg), server);
    assert!(
        matches!(result, Err(ConnectError::Protocol(_))),
        "{:?}",
        result.err()
    );
}

async fn fake_session() -> (
    linnet_tests::fake::FakeSession,
    Session,
    UnboundedReceiver<Event>,
) {
    let fake = linnet_tests::fake::FakeServer::start().await;
    let cfg = fake.connect_config();
    let (conn, server) = tokio::join!(linnet_xmpp::connect(&cfg), fake.accept());
    let conn = conn.expect("login at the fake server");
    let (session, events) = Session::start(conn, BareJid::parse("user@fake.test").unwrap());
    (server, session, events)
}

async fn closed_with(events: &mut UnboundedReceiver<Event>) -> ConnectError {
    let fut = async {
        while let Some(ev) = events.recv().await {
            if let Event::Closed(e) = ev {
                return e;
            }
        }
        panic!("event channel ended without Closed");
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("session ended")
}

#[tokio::test]
async fn ack_of_more_than_we_sent_ends_the_session() {
    let (mut server, session, mut events) = fake_session().await;
    let peer = BareJid::parse("peer@fake.test").unwrap();
    session.send_chat(&peer, "one", "m1").unwrap();
    server.expect("</message>").await;
    server.send("<a xmlns='urn:xmpp:sm:3' h='99'/>").await;
    let e = closed_with(&mut events).await;
    assert!(
        matches!(&e, ConnectError::Protocol(m) if m.contains("more stanzas")),
        "{e}"
    );
    let rest = server.expect("handled-count-too-high").await;
    assert!(
        rest.contains("send-count='1'") || rest.contains("send-count=\"1\""),
        "{rest}"
    );
}

#[tokio::test]
async fn unsolicited_resumed_in_session_ends_it() {
    let (mut server, _session, mut events) = fake_session().await;
    server
        .send("<resumed xmlns='urn:xmpp:sm:3' previd='sm1' h='0'/>")
        .await;
    let e = closed_with(&mut events).await;
    assert!(matches!(&e, ConnectError::Protocol(_)), "{e}");
}

/// Durable mode against the scripted server: `<a h>` answers only confirmed stanzas, and a
/// confirmation after a lower answer sends an unsolicited `<a/>`.
#[tokio::test]
async fn durable_acks_wait_for_confirmation() {
    let fake = linnet_tests::fake::FakeServer::start().await;
    let cfg = fake.connect_config();
    let (conn, server) = tokio::join!(linnet_xmpp::connect(&cfg), fake.accept());
    let mut server = server;
    let conn = conn.unwrap();
    let base = conn.negotiated.sm_base();
    let (session, mut events) =
        Session::start_durable(conn, BareJid::parse("user@fake.test").unwrap(), base);
    // 1: IQ result (no event), 2: message (event), 3: IQ result (no event).
    server
        .send("<iq from='fake.test' to='user@fake.test/r1' type='result' id='none1'/>")
        .await;
    server.send("<message from='peer@fake.test/x' to='user@fake.test/r1' type='chat' id='m1'><body>hi</body></message>").await;
    server
        .send("<iq from='fake.test' to='user@fake.test/r1' type='result' id='none2'/>")
        .await;
    let seq = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some((seq, Event::Message(m))) => {
                    assert_eq!(m.body, "hi");
                    return seq;
                }
                Some(_) => {}
                None => panic!("closed"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seq, 2);
    server.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = server.expect("<a ").await;
    assert!(a.contains("h='1'") || a.contains("h=\"1\""), "{a}");
    assert_eq!(session.handled(), 1);
    session.confirm_handled(seq);
    assert_eq!(session.handled(), 3);
    let a = server.expect("<a ").await;
    assert!(a.contains("h='3'") || a.contains("h=\"3\""), "{a}");
    let st = session.sm_state();
    assert_eq!(st.id.as_deref(), Some("sm1"));
    assert_eq!(st.inbound_handled, 3);
}

/// A fresh stream that breaks during its setup (here: before the roster arrives) and is
/// then resumed still gets its setup: without the initial presence the server would hold
/// our resource unavailable and send everything for our bare JID to offline storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_during_setup_is_set_up_when_resumed() {
    let fake = std::sync::Arc::new(linnet_tests::fake::FakeServer::start().await);
    let c = TestClient::at_fake(&fake);
    let f = fake.clone();
    let server = tokio::spawn(async move {
        let mut first = f.accept().await;
        first.serve_until_unanswered("jabber:iq:roster").await;
        // The link dies with the roster request unanswered, before any presence.
        drop(first);
        let mut again = f.accept_resuming(0).await;
        tokio::time::timeout(WAIT, again.serve_until("<presence"))
            .await
            .expect("initial presence on the resumed stream");
        again
    });
    // The first login fails (its setup was cut); the account keeps reconnecting.
    let _ = c.client.login(c.account).await;
    let _session = server.await.unwrap();
    c.wait_list("online", |l| {
        l.accounts[0].connection == linnet_client::ConnectionState::Online
    })
    .await;
}
