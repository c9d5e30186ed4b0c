//! Inbound limits (HOSTILE-INPUTS.md items 1 and 2) against the scripted fake server: an
//! oversized, too deep or too wide stanza is dropped before it is parsed, counted for
//! XEP-0198 so that a resumption does not bring it back, and the stream goes on; a DTD
//! (billion laughs) or a comment ends the session with a clear error.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_tests::fake::{attr, FakeServer, FakeSession};
use linnet_xmpp::{
    BareJid, ConnectConfig, ConnectError, DropReason, Event, InboundLimits, Session,
};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(30);

async fn logged_in(
    tweak: impl FnOnce(&mut ConnectConfig),
) -> (Session, UnboundedReceiver<Event>, FakeSession) {
    let fake = FakeServer::start().await;
    let mut cfg = fake.connect_config();
    cfg.step_timeout = Duration::from_secs(10);
    tweak(&mut cfg);
    let (conn, server) = tokio::join!(linnet_xmpp::connect(&cfg), fake.accept());
    let (session, events) =
        Session::start(conn.unwrap(), BareJid::parse("user@fake.test").unwrap());
    (session, events, server)
}

fn message(id: &str, body: &str) -> String {
    format!("<message xmlns='jabber:client' from='peer@fake.test/x' to='user@fake.test/r1' type='chat' id='{id}'><body>{body}</body></message>")
}

/// The events up to the first one `done` accepts (which ends the list).
async fn events_until(
    events: &mut UnboundedReceiver<Event>,
    done: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            let stop = done(&ev);
            seen.push(ev);
            if stop {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; events so far: {seen:?}"));
    seen
}

fn bodies(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.body.as_str()),
            _ => None,
        })
        .collect()
}

fn drops(events: &[Event]) -> Vec<DropReason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// The `h` of the client's answer to an `<r/>`.
async fn acked_count(server: &mut FakeSession) -> u32 {
    server.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = tokio::time::timeout(WAIT, server.expect("<a "))
        .await
        .expect("an answer to <r/>");
    attr(&a, "h").and_then(|h| h.parse().ok()).expect("h")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_message_is_dropped_and_the_stream_goes_on() {
    // The default limits (4 MiB).
    let (session, mut events, mut server) = logged_in(|_| {}).await;
    server.send(&message("big", &"A".repeat(8 << 20))).await;
    server.send(&message("m2", "after the big one")).await;
    let seen = events_until(&mut events, |e| matches!(e, Event::Message(_))).await;
    assert_eq!(drops(&seen), vec![DropReason::TooLarge]);
    assert_eq!(bodies(&seen), vec!["after the big one"]);
    // Both count: a resumption must not deliver the big one again.
    assert_eq!(acked_count(&mut server).await, 2);
    assert!(!session.is_closed());
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_limits_drop_large_deep_and_wide_stanzas() {
    let (session, mut events, mut server) = logged_in(|cfg| {
        cfg.inbound_limits = InboundLimits {
            max_stanza_bytes: 64 << 10,
            ..InboundLimits::default()
        };
    })
    .await;
    // Large, with markup inside: cut in the middle of it.
    let rows = "<row xmlns='urn:x' a='1'>text &amp; more</row>".repeat(4000);
    server.send(&message("big", &rows)).await;
    // An IQ request too large: refused, so that its sender is not left waiting.
    let padding = "p".repeat(100 << 10);
    server
        .send(&format!("<iq xmlns='jabber:client' type='set' id='q1' from='peer@fake.test/x'><query xmlns='urn:x'>{padding}</query></iq>"))
        .await;
    let refused = tokio::time::timeout(WAIT, server.expect("policy-violation"))
        .await
        .expect("an error for the IQ");
    assert!(refused.contains("q1"), "{refused}");
    // Deep, though small.
    let deep = format!("{}{}", "<a xmlns='urn:x'>".repeat(100), "</a>".repeat(100));
    server.send(&message("deep", &deep)).await;
    // A start tag longer than the tag limit.
    let wide = format!(
        "<message xmlns='jabber:client' from='peer@fake.test/x' type='chat' id='wide' junk='{}'><body>x</body></message>",
        "j".repeat(70 << 10)
    );
    server.send(&wide).await;
    server.send(&message("ok", "still here")).await;
    let seen = events_until(&mut events, |e| matches!(e, Event::Message(_))).await;
    assert_eq!(
        drops(&seen),
        vec![
            DropReason::TooLarge,
            DropReason::TooLarge,
            DropReason::TooDeep,
            DropReason::TagTooLong
        ]
    );
    assert_eq!(bodies(&seen), vec!["still here"]);
    assert_eq!(acked_count(&mut server).await, 5);
    session.close().await;
}

async fn closed_by(xml: &str) -> ConnectError {
    let (_session, mut events, mut server) = logged_in(|_| {}).await;
    server.send(&message("m1", "before")).await;
    server.send(xml).await;
    let seen = events_until(&mut events, |e| matches!(e, Event::Closed(_))).await;
    assert_eq!(bodies(&seen), vec!["before"]);
    match seen.into_iter().last() {
        Some(Event::Closed(reason)) => reason,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtd_ends_the_session_before_any_entity_is_expanded() {
    let mut laughs = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    laughs.push_str("]>");
    laughs.push_str(&message("boom", "&lol9;"));
    let reason = closed_by(&laughs).await;
    match &reason {
        ConnectError::Protocol(why) => assert!(why.contains("DOCTYPE"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_and_processing_instructions_end_the_session() {
    for (xml, why) in [
        ("<!-- a comment -->", "comment"),
        (
            "<message xmlns='jabber:client'><?evil instruction?></message>",
            "processing instruction",
        ),
    ] {
        match closed_by(xml).await {
            ConnectError::Protocol(text) => assert!(text.contains(why), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
