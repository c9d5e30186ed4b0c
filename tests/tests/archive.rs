//! Catch-up from our own archive (XEP-0313) at the session level: paging against the real
//! servers, and results nobody asked for from a scripted one.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_tests::*;
use linnet_xmpp::{ArchiveFrom, BareJid, Event, Session};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(15);

async fn session(server: Server, jid: &str) -> (Session, UnboundedReceiver<Event>) {
    let conn = linnet_xmpp::connect(&xmpp_config(server, jid))
        .await
        .unwrap();
    Session::start(conn, BareJid::parse(jid).unwrap())
}

/// Archived bodies (with their archive ids) up to the end of one page.
async fn page(
    events: &mut UnboundedReceiver<Event>,
) -> (Vec<(String, String)>, bool, Option<String>) {
    let mut got = Vec::new();
    let fut = async {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Message(m) if m.archived => got.push((m.body, m.stanza_id.unwrap())),
                Event::ArchivePage { complete, last, .. } => return (complete, last),
                Event::ArchiveFailed { condition, .. } => {
                    panic!("archive query failed: {condition}")
                }
                _ => {}
            }
        }
        panic!("session ended");
    };
    let (complete, last) = tokio::time::timeout(WAIT, fut).await.expect("archive page");
    (got, complete, last)
}

async fn pages_through_the_archive(server: Server) {
    let alice = fresh_jid(server, "arca");
    let bob = fresh_jid(server, "arcb");
    for jid in [&alice, &bob] {
        linnet_xmpp::register(&xmpp_config(server, jid))
            .await
            .unwrap();
    }
    let (a, _a_events) = session(server, &alice).await;
    let bob_bare = BareJid::parse(&bob).unwrap();
    for i in 0..3 {
        a.send_chat(&bob_bare, &format!("archived {i}"), &linnet_xmpp::new_id())
            .unwrap();
    }
    a.ping().await.unwrap();
    let (b, mut events) = session(server, &bob).await;
    b.archive_query(ArchiveFrom::Latest).unwrap();
    let (msgs, _, newest) = page(&mut events).await;
    assert!(msgs.is_empty(), "Latest delivers no message: {msgs:?}");
    let newest = newest.expect("the newest archive id");
    b.archive_query(ArchiveFrom::Recent).unwrap();
    let (msgs, _, last) = page(&mut events).await;
    assert_eq!(msgs.len(), 3, "the newest page: {msgs:?}");
    assert_eq!(last.as_deref(), Some(newest.as_str()));
    b.archive_query(ArchiveFrom::Start).unwrap();
    let (msgs, complete, last) = page(&mut events).await;
    let bodies: Vec<&str> = msgs.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, ["archived 0", "archived 1", "archived 2"]);
    assert!(complete);
    assert_eq!(last.as_deref(), Some(newest.as_str()));
    assert_eq!(msgs[2].1, newest, "the archive id is the stanza-id");
    b.archive_query(ArchiveFrom::After(msgs[1].1.clone()))
        .unwrap();
    let (msgs, complete, _) = page(&mut events).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0, "archived 2");
    assert!(complete);
    b.archive_query(ArchiveFrom::After(newest)).unwrap();
    let (msgs, complete, last) = page(&mut events).await;
    assert!(msgs.is_empty() && complete && last.is_none());
    a.close().await;
    b.close().await;
}

both_servers!(pages_through_the_archive);

/// XEP-0313 §Security: results for a query we never made could write history; they are
/// dropped, and the session goes on.
#[tokio::test]
async fn unsolicited_archive_results_are_dropped() {
    let fake = linnet_tests::fake::FakeServer::start().await;
    let cfg = fake.connect_config();
    let (conn, server) = tokio::join!(linnet_xmpp::connect(&cfg), fake.accept());
    let mut server = server;
    let (_session, mut events) =
        Session::start(conn.unwrap(), BareJid::parse("user@fake.test").unwrap());
    server.send("<message xmlns='jabber:client' to='user@fake.test/r1'><result xmlns='urn:xmpp:mam:2' queryid='never-asked' id='x1'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='peer@fake.test/x' to='user@fake.test' type='chat'><body>forged</body></message></forwarded></result></message>").await;
    server.send("<message xmlns='jabber:client' from='peer@fake.test/x' to='user@fake.test/r1' type='chat' id='m1'><body>live</body></message>").await;
    let first = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Message(m)) = events.recv().await {
                return m.body;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first, "live");
}
