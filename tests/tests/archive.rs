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

const PEER: &str = "peer@fake.test";

fn archived(queryid: &str, id: &str, body: &str, stamp: &str) -> String {
    format!("<message xmlns='jabber:client' to='user@fake.test/r1'><result xmlns='urn:xmpp:mam:2' queryid='{queryid}' id='{id}'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='{stamp}'/><message xmlns='jabber:client' from='{PEER}/x' to='user@fake.test' type='chat' id='m-{id}'><body>{body}</body></message></forwarded></result></message>")
}

fn fin(queryid: &str, last: Option<&str>) -> String {
    let set = match last {
        Some(l) => format!(
            "<set xmlns='http://jabber.org/protocol/rsm'><first>{l}</first><last>{l}</last></set>"
        ),
        None => "<set xmlns='http://jabber.org/protocol/rsm'/>".to_owned(),
    };
    format!("<iq xmlns='jabber:client' type='result' id='{queryid}'><fin xmlns='urn:xmpp:mam:2' complete='true'>{set}</fin></iq>")
}

/// A live message with an id in our archive; `late` gives it a delay stamp, as a server
/// gives what it re-sends from a broken stream.
fn live(id: &str, body: &str, late: bool) -> String {
    let delay = if late {
        "<delay xmlns='urn:xmpp:delay' from='fake.test' stamp='2026-01-01T00:00:01Z'/>"
    } else {
        ""
    };
    format!("<message xmlns='jabber:client' from='{PEER}/x' to='user@fake.test/r1' type='chat' id='m-{id}'><body>{body}</body><stanza-id xmlns='urn:xmpp:sid:0' id='{id}' by='user@fake.test'/>{delay}</message>")
}

/// A client at the scripted server whose first session caught up to "zero" (archive id
/// a0) and broke; returns its second stream and that stream's catch-up query, unanswered.
async fn second_session_catching_up() -> (TestClient, linnet_tests::fake::FakeSession, String) {
    let fake = std::sync::Arc::new(linnet_tests::fake::FakeServer::start().await);
    let c = TestClient::at_fake(&fake);
    let f = fake.clone();
    let (break_stream, broken) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(async move {
        let mut s = f.accept().await;
        let q = s.serve_until_unanswered("urn:xmpp:mam:2").await;
        let qid = linnet_tests::fake::attr(&q, "id").unwrap();
        s.send(&archived(&qid, "a0", "zero", "2026-01-01T00:00:00Z"))
            .await;
        s.send(&fin(&qid, Some("a0"))).await;
        // Served until the test breaks the stream (the needle never comes).
        tokio::select! {
            _ = s.serve_until("<never") => {}
            _ = broken => {}
        }
    });
    c.client.login(c.account).await.unwrap();
    c.wait_list("first catch-up done", |l| {
        !l.accounts[0].catching_up && !l.conversations.is_empty()
    })
    .await;
    break_stream.send(()).unwrap();
    first.await.unwrap();
    let mut s = fake.accept().await;
    let q = catch_up_query(&mut s).await;
    assert!(q.contains(">a0<"), "the catch-up starts after a0: {q}");
    (c, s, q)
}

/// The next query of the catch-up. The client also asks for the archive's oldest message
/// (one result, no cursor) to tell whether history expired: that one is answered with an
/// archive that holds "zero" (a0) still.
async fn catch_up_query(s: &mut linnet_tests::fake::FakeSession) -> String {
    loop {
        let q = s.serve_until_unanswered("urn:xmpp:mam:2").await;
        if q.contains("<max>1</max>") && !q.contains("<after>") {
            let qid = linnet_tests::fake::attr(&q, "id").unwrap();
            s.send(&archived(&qid, "a0", "zero", "2026-01-01T00:00:00Z"))
                .await;
            s.send(&fin(&qid, Some("a0"))).await;
            continue;
        }
        return q;
    }
}

/// The next catch-up query, within `WAIT`.
async fn next_query(s: &mut linnet_tests::fake::FakeSession, what: &str) -> String {
    tokio::time::timeout(WAIT, catch_up_query(s))
        .await
        .unwrap_or_else(|_| panic!("no catch-up query: {what}"))
}

/// ejabberd re-sends a broken stream's queue after messages routed to the new stream, and
/// can do so after the new stream's catch-up has read the archive (whose entry for the
/// re-sent message was still being written). The late message would stand after one that
/// came after it, where no later catch-up looks: the session's catch-up is read again, and
/// puts it in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_message_the_catch_up_missed_is_put_in_place() {
    let (c, mut s, q) = second_session_catching_up().await;
    let qid = linnet_tests::fake::attr(&q, "id").unwrap();
    // "two" routed to the new stream, then "one" re-sent late; the archive read shows
    // neither yet.
    s.send(&live("s2", "two", false)).await;
    s.send(&live("s1", "one", true)).await;
    s.send(&fin(&qid, None)).await;
    let again = next_query(&mut s, "read again for the late message").await;
    assert!(
        again.contains(">a0<"),
        "read again from the session's start: {again}"
    );
    let qid = linnet_tests::fake::attr(&again, "id").unwrap();
    s.send(&archived(&qid, "s1", "one", "2026-01-01T00:00:01Z"))
        .await;
    s.send(&archived(&qid, "s2", "two", "2026-01-01T00:00:02Z"))
        .await;
    s.send(&fin(&qid, Some("s2"))).await;
    wait_until("one and two in the archive's order", || {
        c.incoming_bodies(PEER) == ["zero", "one", "two"]
    })
    .await;
}

/// Messages that come live during a catch-up, out of the archive's order, where the
/// archive read ends between them: what it showed goes after the one it did not show. The
/// catch-up reads on, and the rest of the archive puts that one back after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catch_up_reads_on_past_what_came_live_during_it() {
    let (c, mut s, q) = second_session_catching_up().await;
    let qid = linnet_tests::fake::attr(&q, "id").unwrap();
    s.send(&live("s3", "three", false)).await;
    s.send(&live("s2", "two", false)).await;
    // The read ends before "three" was archived.
    s.send(&archived(&qid, "s1", "one", "2026-01-01T00:00:01Z"))
        .await;
    s.send(&archived(&qid, "s2", "two", "2026-01-01T00:00:02Z"))
        .await;
    s.send(&fin(&qid, Some("s2"))).await;
    let on = next_query(&mut s, "read on past s2").await;
    assert!(on.contains(">s2<"), "read on after s2: {on}");
    let qid = linnet_tests::fake::attr(&on, "id").unwrap();
    s.send(&archived(&qid, "s3", "three", "2026-01-01T00:00:03Z"))
        .await;
    s.send(&fin(&qid, Some("s3"))).await;
    wait_until("the archive's order", || {
        c.incoming_bodies(PEER) == ["zero", "one", "two", "three"]
    })
    .await;
}
