//! Connections that break: resets and stalls through the fault proxy, on both servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_client::{ConnectionState, DeliveryState, Direction};
use linnet_tests::proxy::ChaosConfig;
use linnet_tests::*;

async fn survives_resets_without_loss_or_duplicates(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (a, proxy) = a.behind_proxy(server).await;
    let mut expected = Vec::new();
    for round in 0..3 {
        // The link dies while A is sending: the bytes never reach the server.
        proxy.set_stalled(true);
        for i in 0..5 {
            let body = format!("round {round} message {i}");
            a.client.send_message(a.account, &b.jid, &body).unwrap();
            expected.push(body);
        }
        proxy.reset_all();
        proxy.set_stalled(false);
        a.wait_list("back online", |s| {
            s.accounts[0].connection == ConnectionState::Online
                && proxy.accepted() as usize > round + 1
        })
        .await;
        b.wait_incoming(&a.jid, expected.len(), "every message so far")
            .await;
        // And the other direction works on the new connection.
        let body = format!("reply {round}");
        b.client.send_message(b.account, &a.jid, &body).unwrap();
        a.wait_conversation(&b.jid, "reply", |s| {
            s.messages.iter().any(|m| m.body == body)
        })
        .await;
    }
    let got = b.incoming_bodies(&a.jid);
    assert_eq!(got, expected, "every message exactly once, in order");
    a.wait_conversation(&b.jid, "all delivered", |s| {
        s.messages
            .iter()
            .filter(|m| m.direction == Direction::Outgoing)
            .all(|m| m.state == DeliveryState::Delivered)
    })
    .await;
}

/// 1,000 numbered messages A→B while both links are reset at random and blackholed for
/// seconds at a time: B shows each exactly once, in order; A shows all delivered.
async fn thousand_messages_through_chaos(server: Server) {
    const N: usize = 1000;
    let (a, b) = contacts_pair(server).await;
    let (a, pa) = a.behind_proxy(server).await;
    let (b, pb) = b.behind_proxy(server).await;
    // Devices that have been here before: their first catch-up is done (a first login
    // fetches only the newest archive page, so what a chaos-torn first login misses is
    // history before the device, not what this test checks).
    for c in [&a, &b] {
        c.wait_list("first catch-up done", |s| {
            s.accounts[0].connection == ConnectionState::Online && !s.accounts[0].catching_up
        })
        .await;
    }
    let chaos_cfg = |seed| ChaosConfig {
        seed,
        min_interval: Duration::from_millis(300),
        max_interval: Duration::from_millis(1500),
        stall_min: Duration::from_millis(500),
        stall_max: Duration::from_millis(2500),
        reset_probability: 0.5,
    };
    let ca = pa.chaos(chaos_cfg(0xA11CE));
    let cb = pb.chaos(chaos_cfg(0xB0B));
    let expected: Vec<String> = (0..N).map(|i| format!("chaos {i:04}")).collect();
    for (i, body) in expected.iter().enumerate() {
        a.client.send_message(a.account, &b.jid, body).unwrap();
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The links keep failing for a while after the last message was written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (sa, sb) = (ca.stop(), cb.stop());
    eprintln!(
        "{server:?}: chaos on A: {} resets, {} stalls; on B: {} resets, {} stalls",
        sa.resets, sa.stalls, sb.resets, sb.stalls
    );
    assert!(sa.resets + sb.resets > 0 && sa.stalls + sb.stalls > 0);

    let incoming = || b.incoming_bodies(&a.jid);
    for _ in 0..600 {
        if incoming().len() >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything late would show up now as a duplicate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = incoming();
    if got.len() != N {
        let missing: Vec<&String> = expected.iter().filter(|e| !got.contains(e)).collect();
        eprintln!("{server:?}: B lacks {missing:?}");
        // Whether A still holds them (never acknowledged by the server) or the server took
        // them and B did not get them: two different bugs.
        let a_conv = a.client.open_conversation(a.account, &b.jid).unwrap();
        let mut states = std::collections::BTreeMap::new();
        for m in a.client.messages(a_conv, None, 2 * N as u32).unwrap() {
            if missing.contains(&&m.body) {
                *states.entry(format!("{:?}", m.state)).or_insert(0) += 1;
            }
        }
        eprintln!(
            "{server:?}: the missing ones on A: {states:?}; A {:?}, B {:?}",
            a.client.chat_list().accounts[0].connection,
            b.client.chat_list().accounts[0].connection
        );
    }
    assert_eq!(got.len(), N, "B has every message once");
    let mut sorted = got.clone();
    sorted.sort();
    assert!(sorted == expected, "B has every message once");
    // How many would have to move to restore the order (N minus the longest run in order).
    let misplaced = N - longest_increasing(&got);
    eprintln!("{server:?}: {misplaced} of {N} messages shown out of place once all arrived");
    // The archive catch-up puts what arrived out of order in place; it may still be running,
    // or wait for B's next connection.
    // A catch-up through the whole run takes a while on a loaded machine: no hurry here.
    let settled = || {
        let l = b.client.chat_list();
        l.accounts[0].connection == ConnectionState::Online && !l.accounts[0].catching_up
    };
    for _ in 0..1200 {
        if settled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled(), "B online and caught up");
    let mut got = got;
    for _ in 0..300 {
        if got == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = incoming();
    }
    let misplaced = N - longest_increasing(&got);
    eprintln!("{server:?}: {misplaced} of {N} messages out of place after the catch-up");
    let breaks: Vec<String> = got
        .windows(2)
        .filter(|w| w[1] < w[0])
        .map(|w| format!("{} then {}", w[0], w[1]))
        .collect();
    if !breaks.is_empty() {
        eprintln!("{server:?}: the order breaks at {breaks:?}");
        archive_report(server, &b, &a.jid, &got).await;
    }
    assert!(
        got == expected,
        "{server:?}: B shows {misplaced} of {N} out of place; the order breaks at {breaks:?}"
    );
    let a_conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    let undelivered = || {
        a.client
            .messages(a_conv, None, 2 * N as u32)
            .unwrap()
            .into_iter()
            .filter(|m| m.state != DeliveryState::Delivered)
            .count()
    };
    for _ in 0..600 {
        if undelivered() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(undelivered(), 0, "A shows every message delivered");
}

/// When the order is wrong: how B's archive holds the messages (every entry, in archive
/// order) next to the entry B placed each misplaced message by, to tell a wrong archive
/// from a wrong placement.
async fn archive_report(server: Server, b: &TestClient, a_jid: &str, shown: &[String]) {
    use linnet_xmpp::{ArchiveFrom, Event, Session};
    let own = linnet_xmpp::BareJid::parse(&b.jid).unwrap();
    let conn = linnet_xmpp::connect(&xmpp_config(server, &b.jid))
        .await
        .unwrap();
    let (s, mut ev) = Session::start(conn, own);
    let mut entries: Vec<(String, String)> = Vec::new();
    s.archive_query(ArchiveFrom::Start).unwrap();
    while let Some(e) = ev.recv().await {
        match e {
            Event::Message(m) if m.archived && m.peer.as_str() == a_jid => {
                entries.push((m.body, m.stanza_id.unwrap_or_default()));
            }
            Event::ArchivePage { complete, last, .. } => {
                eprintln!(
                    "  archive page: {} entries so far, last {last:?}",
                    entries.len()
                );
                match last {
                    Some(last) if !complete => s.archive_query(ArchiveFrom::After(last)).unwrap(),
                    _ => break,
                }
            }
            Event::ArchiveFailed { condition, .. } => {
                eprintln!("  archive query failed: {condition}");
                break;
            }
            _ => {}
        }
    }
    s.close().await;
    let mut first: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (body, _) in &entries {
        if seen.insert(body.clone()) {
            first.push(body.clone());
        }
    }
    eprintln!(
        "{server:?}: B's archive: {} entries, {} messages; by first entry {} out of place",
        entries.len(),
        first.len(),
        first.len() - longest_increasing(&first)
    );
    let store = b.open_store();
    let mut store = store;
    let held: Vec<(String, Option<String>, i64)> = store
        .transaction(|tx| {
            let c = tx.conversation(b.account, a_jid, false)?.unwrap();
            Ok(tx
                .messages(c, None, 5000)?
                .into_iter()
                .map(|m| (m.body, m.stanza_id, m.timestamp_ms))
                .collect())
        })
        .unwrap();
    for w in shown.windows(2).filter(|w| w[1] < w[0]) {
        for body in [&w[0], &w[1]] {
            let at: Vec<(usize, &String)> = entries
                .iter()
                .enumerate()
                .filter(|(_, (b, _))| b == body)
                .map(|(i, (_, id))| (i, id))
                .collect();
            let h = held.iter().find(|h| &h.0 == body);
            eprintln!("  {body}: held by {h:?}; archive entries {at:?}");
        }
    }
}

/// Length of the longest strictly increasing subsequence (patience sorting).
fn longest_increasing(items: &[String]) -> usize {
    let mut tails: Vec<&String> = Vec::new();
    for x in items {
        let i = tails.partition_point(|t| *t < x);
        if i == tails.len() {
            tails.push(x);
        } else {
            tails[i] = x;
        }
    }
    tails.len()
}

both_servers!(
    survives_resets_without_loss_or_duplicates,
    thousand_messages_through_chaos
);
