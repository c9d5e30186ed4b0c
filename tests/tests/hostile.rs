//! Hostile input through real servers and from fake servers (HOSTILE-INPUTS.md items 4, 8
//! and the "never send credentials in clear" rule).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_client::ClientError;
use linnet_tests::*;
use linnet_xmpp::{BareJid, ConnectConfig, ServerAddr, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An attacker's raw session on the same server.
async fn raw_session(server: Server) -> (Session, String) {
    let jid = fresh_jid(server, "eve");
    let (c, _dir) = TestClient::new_client();
    c.register_account(&jid, PASSWORD, Some(server_override(server, false)))
        .await
        .unwrap();
    let bare = BareJid::parse(&jid).unwrap();
    let mut cfg = ConnectConfig::new(bare.clone(), PASSWORD);
    let o = server_override(server, false);
    cfg.server = Some(ServerAddr {
        host: o.host,
        port: o.port,
        direct_tls: false,
    });
    cfg.tls = tls();
    let conn = linnet_xmpp::connect(&cfg).await.unwrap();
    let (session, events) = Session::start(conn, bare);
    // Keep the event channel drained for the session's lifetime.
    tokio::spawn(async move {
        let mut events = events;
        while events.recv().await.is_some() {}
    });
    session.send_presence(None, None).unwrap();
    (session, jid)
}

async fn spoofed_carbon_is_ignored(server: Server) {
    let b = TestClient::register(server, "victim").await;
    let b_full = b.client.bound_jid(b.account).unwrap();
    let (eve, eve_jid) = raw_session(server).await;
    let carol = fresh_jid(server, "carol");
    // Eve wraps a "sent by Bob" message in a carbon; the outer from is Eve, not Bob's account.
    eve.send_xml(&format!(
        "<message xmlns='jabber:client' to='{b_full}' type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='{b_full}' to='{carol}' type='chat' id='forged1'><body>forged by eve</body></message></forwarded></sent></message>"
    ))
    .unwrap();
    eve.send_xml(&format!(
        "<message xmlns='jabber:client' to='{b_full}' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='{carol}/x' to='{b_full}' type='chat' id='forged2'><body>forged as carol</body></message></forwarded></received></message>"
    ))
    .unwrap();
    // A control message sent after them: once it is there, the forgeries were processed.
    eve.send_xml(&format!("<message xmlns='jabber:client' to='{b_full}' type='chat' id='c1'><body>control</body></message>")).unwrap();
    b.wait_conversation(&eve_jid, "control message", |s| {
        s.messages.iter().any(|m| m.body == "control")
    })
    .await;
    let snap = b.client.chat_list();
    assert!(
        snap.conversations.iter().all(|c| c.peer != carol),
        "no conversation with the spoofed peer"
    );
    for c in &snap.conversations {
        let msgs = b.client.messages(c.id, None, 100).unwrap();
        assert!(
            msgs.iter().all(|m| !m.body.starts_with("forged")),
            "forged carbon stored"
        );
    }
}

async fn foreign_roster_push_is_ignored(server: Server) {
    let b = TestClient::register(server, "victim").await;
    let b_full = b.client.bound_jid(b.account).unwrap();
    let (eve, eve_jid) = raw_session(server).await;
    let before = b.client.contacts(b.account).unwrap();
    let reply = eve
        .iq_xml(&format!(
            "<iq xmlns='jabber:client' type='set' to='{b_full}' id='x'><query xmlns='jabber:iq:roster'><item jid='{eve_jid}' name='Your Bank' subscription='both'/></query></iq>"
        ))
        .await;
    // Bob answered (so the push was processed) with an error, and nothing changed.
    assert!(
        matches!(reply, Err(linnet_xmpp::RequestError::Stanza { .. })),
        "{reply:?}"
    );
    assert_eq!(b.client.contacts(b.account).unwrap(), before);
    assert!(b
        .client
        .contacts(b.account)
        .unwrap()
        .iter()
        .all(|c| c.jid != eve_jid));
}

async fn receipts_from_a_third_party_do_not_confirm(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_full = a.client.bound_jid(a.account).unwrap();
    let (eve, _) = raw_session(server).await;
    b.client.logout(b.account).await.unwrap();
    let id = a
        .client
        .send_message(a.account, &b.jid, "only bob may confirm")
        .unwrap();
    // Give Eve the real id (strictest case): the check is on who confirms, not on secrecy.
    let origin = a.open_store().message(id).unwrap().origin_id.unwrap();
    eve.send_xml(&format!(
        "<message xmlns='jabber:client' to='{a_full}'><received xmlns='urn:xmpp:receipts' id='{origin}'/></message>"
    ))
    .unwrap();
    // Control: a message from Eve sent after the receipt; once it is there, the receipt was
    // processed.
    eve.send_xml(&format!(
        "<message xmlns='jabber:client' to='{a_full}' type='chat'><body>control</body></message>"
    ))
    .unwrap();
    let eve_jid = eve.own_jid().as_str().to_owned();
    a.wait_conversation(&eve_jid, "control", |s| {
        s.messages.iter().any(|m| m.body == "control")
    })
    .await;
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    let m = a
        .client
        .messages(conv, None, 10)
        .unwrap()
        .into_iter()
        .find(|m| m.id == id)
        .unwrap();
    assert_ne!(m.state, linnet_client::DeliveryState::Delivered);
}

both_servers!(
    spoofed_carbon_is_ignored,
    foreign_roster_push_is_ignored,
    receipts_from_a_third_party_do_not_confirm
);

/// Reads until the client's stream header has arrived.
async fn read_header(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&buf).contains("<stream:stream") || !buf.ends_with(b">") {
        let n = sock.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A login against the fake server on `port` must fail as a TLS/security error.
async fn login_is_refused_for_tls(port: u16) {
    let (client, _dir) = TestClient::new_client();
    let server = linnet_client::ServerOverride {
        host: "127.0.0.1".into(),
        port,
        direct_tls: false,
    };
    let acc = client
        .add_account("victim@fake.test", PASSWORD, Some(server))
        .unwrap();
    let err = client.login(acc).await.expect_err("login must be refused");
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
}

const SERVER_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='fake.test' id='s1' version='1.0'>";

#[tokio::test]
async fn server_without_tls_gets_no_credentials() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_header(&mut sock).await;
        sock.write_all(SERVER_HEADER.as_bytes()).await.unwrap();
        sock.write_all(b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>").await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), sock.read_to_end(&mut rest)).await;
        String::from_utf8_lossy(&rest).into_owned()
    });
    login_is_refused_for_tls(port).await;
    let after_features = fake.await.unwrap();
    assert!(
        !after_features.contains("<auth"),
        "credentials were sent: {after_features}"
    );
    assert!(!after_features.contains("horse"), "password in clear");
}

#[tokio::test]
async fn untrusted_certificate_gets_no_credentials() {
    use tokio_rustls::rustls;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["fake.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_header(&mut sock).await;
        sock.write_all(SERVER_HEADER.as_bytes()).await.unwrap();
        sock.write_all(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>").await.unwrap();
        let mut buf = [0u8; 256];
        let n = sock.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("starttls"));
        sock.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .unwrap();
        match acceptor.accept(sock).await {
            // The client must abort the handshake: nothing decrypted ever reaches us.
            Err(_) => Vec::new(),
            Ok(mut tls) => {
                let mut got = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut got)).await;
                got
            }
        }
    });
    login_is_refused_for_tls(port).await;
    let got = fake.await.unwrap();
    assert!(
        got.is_empty(),
        "client sent data over an untrusted TLS session: {}",
        String::from_utf8_lossy(&got)
    );
}
