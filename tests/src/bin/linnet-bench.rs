//! `scripts/bench`: prints Linnet's Foundation figures. Figures, not assertions.
//!
//! 1. cold start: open a database holding 100,000 messages in 1,000 conversations and
//!    deliver the first chat-list snapshot (a new `Client` each run; the OS page cache is
//!    warm after the first run, as it is for an app relaunched by the user);
//! 2. snapshot latency: a message sent by a peer through the real server → the listener has
//!    the new chat-list snapshot, with 1,000 conversations; the same path into a bare
//!    linnet-xmpp session (no storage, no snapshot) is measured in the same run as the peer,
//!    and the difference is what our storage + snapshot layer costs;
//! 3. login to roster on loopback (STARTTLS and direct TLS), both servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use linnet_client::{ChatListSnapshot, Client, DbKey};
use linnet_store::{DeliveryState, Direction, NewMessage, Store};
use linnet_tests::*;
use linnet_xmpp::{BareJid, ConnectConfig, Event, ServerAddr, Session};
use tokio::sync::mpsc;

const CONVERSATIONS: u32 = 1_000;
const PER_CONVERSATION: u32 = 100;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Fills `store` with the fixture for `account` (our JID) in one transaction.
fn fill(store: &mut Store, account: linnet_store::AccountId, own: &str) {
    let base = 1_700_000_000_000i64;
    store
        .transaction(|tx| {
            for c in 0..CONVERSATIONS {
                let peer = format!("peer{c}@bench.example");
                let conv = tx.conversation(account, &peer, true)?.expect("created");
                let batch: Vec<NewMessage> = (0..PER_CONVERSATION)
                    .map(|i| NewMessage {
                        conversation: conv,
                        direction: if i % 2 == 0 { Direction::Incoming } else { Direction::Outgoing },
                        sender: if i % 2 == 0 { peer.clone() } else { own.to_owned() },
                        body: format!("message {i} in conversation {c}: some ordinary text of ordinary length"),
                        origin_id: Some(format!("o-{c}-{i}")),
                        stanza_id: None,
                        stanza_id_by: None,
                        timestamp_ms: base + (i as i64) * 60_000 + c as i64,
                        delivery_state: DeliveryState::Delivered,
                    })
                    .collect();
                tx.insert_messages(&batch)?;
            }
            Ok(())
        })
        .expect("fixture");
}

async fn cold_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = DbKey::generate().expect("key");
    let t = Instant::now();
    {
        let mut store = Store::open(&dir.path().join("linnet.db"), &key).expect("store");
        let acc = store.add_account("me@bench.example", "pw").expect("account");
        fill(&mut store, acc, "me@bench.example");
    }
    println!(
        "fixture: {} messages in {} conversations written in {:.1} s",
        CONVERSATIONS * PER_CONVERSATION,
        CONVERSATIONS,
        t.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let client = Client::open(dir.path(), &key, options()).expect("open");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _sub = client.subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
            let _ = tx.send(s);
        });
        let first = rx.recv().await.expect("snapshot");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(first.conversations.len(), CONVERSATIONS as usize);
    }
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "cold start (open DB + first chat-list snapshot, 100k messages / 1k conversations): median {:.1} ms, min {:.1} ms over {} runs  [target <= 50 ms]",
        median(&mut times),
        min,
        times.len()
    );
}

async fn raw_session(server: Server, jid: &str) -> (Session, mpsc::UnboundedReceiver<Event>) {
    let bare = BareJid::parse(jid).expect("jid");
    let mut cfg = ConnectConfig::new(bare.clone(), PASSWORD);
    let o = server_override(server, false);
    cfg.server = Some(ServerAddr { host: o.host, port: o.port, direct_tls: false });
    cfg.tls = tls();
    let conn = linnet_xmpp::connect(&cfg).await.expect("connect");
    let (s, ev) = Session::start(conn, bare);
    s.send_presence(None, None).expect("presence");
    (s, ev)
}

async fn snapshot_latency(server: Server) {
    let (a, b) = contacts_pair(server).await;
    // Reopen A on a database that also holds 1,000 other conversations.
    a.client.shutdown().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = DbKey::generate().expect("key");
    {
        let mut store = Store::open(&dir.path().join("linnet.db"), &key).expect("store");
        let acc = store.add_account(&a.jid, PASSWORD).expect("account");
        let o = server_override(server, false);
        store.set_account_server(acc, Some(&o.host), Some(o.port), false).expect("server");
        fill(&mut store, acc, &a.jid);
    }
    let client = Client::open(dir.path(), &key, options()).expect("open");
    let acc = client.accounts().expect("accounts")[0].0;
    client.login(acc).await.expect("login");
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Arc<ChatListSnapshot>)>();
    let _sub = client.subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
        let _ = tx.send((Instant::now(), s));
    });
    let (peer_session, mut peer_events) = raw_session(server, &b.jid).await;
    let b_full = client.bound_jid(acc).expect("bound");
    tokio::time::sleep(Duration::from_millis(300)).await;
    while rx.try_recv().is_ok() {}

    let runs = 200;
    let mut ours = Vec::new();
    for i in 0..runs {
        let body = format!("latency probe {i}");
        let t = Instant::now();
        peer_session
            .send_xml(&format!("<message xmlns='jabber:client' to='{b_full}' type='chat' id='p{i}'><body>{body}</body></message>"))
            .expect("send");
        loop {
            let (at, s) = rx.recv().await.expect("snapshot");
            let hit = s.conversations.first().and_then(|c| c.last_message.as_ref()).map(|m| m.body == body);
            if hit == Some(true) {
                ours.push(at.duration_since(t).as_secs_f64() * 1e6);
                break;
            }
        }
    }
    // The peer path: the same stanza through the same server into a bare session (the
    // receiving side is linnet-xmpp alone: parse + classify, no store, no snapshot).
    let a_raw_jid = fresh_jid_registered(server).await;
    let (raw_a, mut raw_a_events) = raw_session(server, &a_raw_jid).await;
    let raw_full = raw_a.negotiated.bound_jid.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while raw_a_events.try_recv().is_ok() {}
    while peer_events.try_recv().is_ok() {}
    let mut bare = Vec::new();
    for i in 0..runs {
        let body = format!("raw probe {i}");
        let t = Instant::now();
        peer_session
            .send_xml(&format!("<message xmlns='jabber:client' to='{raw_full}' type='chat' id='r{i}'><body>{body}</body></message>"))
            .expect("send");
        loop {
            match raw_a_events.recv().await.expect("event") {
                Event::Message(m) if m.body == body => {
                    bare.push(t.elapsed().as_secs_f64() * 1e6);
                    break;
                }
                _ => {}
            }
        }
    }
    let (om, o99) = (median(&mut ours), pct(&mut ours, 0.99));
    let (bm, b99) = (median(&mut bare), pct(&mut bare, 0.99));
    println!(
        "snapshot latency [{server:?}] (peer sends → chat-list listener, 1k conversations): median {om:.0} µs, p99 {o99:.0} µs over {runs}"
    );
    println!(
        "  same path into a bare linnet-xmpp session (peer, same run): median {bm:.0} µs, p99 {b99:.0} µs"
    );
    println!(
        "  storage + snapshot layer (difference of medians): {:.0} µs; ratio {:.2}x  [target <= 1 ms]",
        om - bm,
        om / bm
    );
    client.shutdown().await;
}

async fn fresh_jid_registered(server: Server) -> String {
    let jid = fresh_jid(server, "bench");
    let (c, _dir) = TestClient::new_client();
    c.register_account(&jid, PASSWORD, Some(server_override(server, false))).await.expect("register");
    jid
}

async fn login_to_roster(server: Server) {
    let (a, _b) = contacts_pair(server).await;
    a.client.shutdown().await;
    for direct in [false, true] {
        let (client, _dir) = TestClient::new_client();
        let acc = client.add_account(&a.jid, PASSWORD, Some(server_override(server, direct))).expect("add");
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            // login() returns once bound, the roster fetched and stored, carbons enabled
            // and initial presence sent.
            client.login(acc).await.expect("login");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            client.logout(acc).await.expect("logout");
        }
        println!(
            "login to roster [{server:?}, {}]: median {:.1} ms, min {:.1} ms over {} runs",
            if direct { "direct TLS" } else { "STARTTLS" },
            median(&mut times),
            times.iter().cloned().fold(f64::INFINITY, f64::min),
            times.len()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("linnet-bench (Foundation): {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    cold_start().await;
    for server in [Server::Prosody, Server::Ejabberd] {
        snapshot_latency(server).await;
        login_to_roster(server).await;
    }
}
