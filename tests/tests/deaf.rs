//! A server that goes on sending but stops reading what we send (Prosody 13.0.1 after a
//! resumption whose previous connection broke mid-stanza): the probe finds it, and says so
//! apart from a dead link, so the client logs in afresh instead of resuming into it again.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_xmpp::{BareJid, ConnectError, Event, Session};

async fn probed_session(keep_sending: bool) -> ConnectError {
    let fake = linnet_tests::fake::FakeServer::start().await;
    let mut cfg = fake.connect_config();
    // The probe's wait.
    cfg.step_timeout = Duration::from_secs(2);
    let (conn, server) = tokio::join!(linnet_xmpp::connect(&cfg), fake.accept());
    let mut server = server;
    let (session, mut events) =
        Session::start(conn.unwrap(), BareJid::parse("user@fake.test").unwrap());
    session.check_link().unwrap();
    // The probe arrives; it is never answered.
    server.expect("<r").await;
    let feeder = tokio::spawn(async move {
        for i in 0..40 {
            if keep_sending {
                server.send(&format!("<message xmlns='jabber:client' from='peer@fake.test/x' to='user@fake.test/r1' type='chat' id='m{i}'><body>{i}</body></message>")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    });
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(Event::Closed(reason)) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("the session ends");
    feeder.abort();
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_sends_but_does_not_answer_is_not_reading() {
    let reason = probed_session(true).await;
    assert!(reason.is_unread_stream(), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_a_dead_link() {
    let reason = probed_session(false).await;
    assert!(
        matches!(reason, ConnectError::Timeout(_)) && !reason.is_unread_stream(),
        "{reason:?}"
    );
}
