//! History (XEP-0313) at the client level against the real servers: a long catch-up read in
//! concurrent time windows, in order, with its progress in the snapshot; scrolling back
//! past what the device holds into the server's archive; and history the archive expired
//! recorded as a gap.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use linnet_client::{ConversationListener, ConversationSnapshot, DeliveryState, EncryptionPolicy};
use linnet_tests::*;
use tokio::sync::watch;

/// Sends `bodies` from `from` to `to` and waits until the server has them all.
async fn send_all(from: &TestClient, to: &str, bodies: &[String]) {
    for b in bodies {
        from.client.send_message(from.account, to, b).unwrap();
    }
    let conv = from.client.open_conversation(from.account, to).unwrap();
    wait_until("all sent", || {
        let sent = from.client.messages(conv, None, 100_000).unwrap();
        sent.len() >= bodies.len() && sent.iter().all(|m| m.state >= DeliveryState::Sent)
    })
    .await;
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

async fn a_long_catch_up_is_complete_in_order_with_progress(server: Server) {
    let (a, b) = contacts_pair(server).await;
    // One message while online, so that the catch-up starts after a cursor.
    send_all(&a, &b.jid, &numbered("online", 1)).await;
    b.wait_incoming(&a.jid, 1, "the first message").await;
    b.client.logout(b.account).await.unwrap();
    // More than a page on either server (Prosody gives 50 a page by default).
    const N: usize = 700;
    let offline = numbered("offline", N);
    send_all(&a, &b.jid, &offline).await;
    let (rec, _sub) = Recorder::chat_list(&b.client);
    b.client.login(b.account).await.unwrap();
    b.wait_incoming(&a.jid, N + 1, "the whole catch-up").await;
    b.wait_list("caught up", |s| {
        !s.accounts[0].catching_up && s.accounts[0].sync_progress.is_none()
    })
    .await;
    let mut expected = numbered("online", 1);
    expected.extend(offline);
    assert_eq!(
        b.incoming_bodies(&a.jid),
        expected,
        "all of them, once each, in order"
    );
    let progress: Vec<_> = rec
        .snapshots()
        .iter()
        .filter_map(|s| s.accounts[0].sync_progress)
        .collect();
    println!("{server:?}: progress shown {progress:?}");
    assert!(!progress.is_empty(), "progress was shown while catching up");
    assert!(progress.windows(2).all(|w| w[0].received <= w[1].received));
    assert!(
        progress.iter().any(|p| p.received as usize >= N / 2),
        "progress went past half-way: {progress:?}"
    );
    let s = b.wait_conversation(&a.jid, "snapshot", |_| true).await;
    assert!(s.gaps.is_empty(), "nothing was lost: {:?}", s.gaps);
    if server == Server::Ejabberd {
        // ejabberd counts what each window holds: "n of m".
        let total = progress.iter().filter_map(|p| p.total).max();
        assert!(
            total.is_some_and(|t| t as usize >= N),
            "ejabberd's count: {progress:?}"
        );
    }
}

/// A conversation's snapshots, for calling `load_older` while subscribed.
struct Watch(watch::Sender<Option<Arc<ConversationSnapshot>>>);

impl ConversationListener for Watch {
    fn on_update(&self, s: Arc<ConversationSnapshot>) {
        self.0.send_replace(Some(s));
    }
}

async fn wait_snapshot<F: Fn(&ConversationSnapshot) -> bool>(
    rx: &mut watch::Receiver<Option<Arc<ConversationSnapshot>>>,
    what: &str,
    pred: F,
) -> Arc<ConversationSnapshot> {
    let fut = async {
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                if pred(&s) {
                    return s;
                }
            }
            rx.changed().await.unwrap();
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(20), fut).await {
        Ok(s) => s,
        Err(_) => panic!("timed out waiting for {what}: {:#?}", rx.borrow()),
    }
}

async fn scrolling_back_reads_the_server_archive(server: Server) {
    let (a, b) = contacts_pair(server).await;
    // In the clear: a device added later cannot read what was encrypted before it existed.
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    a.client
        .set_encryption_policy(conv, EncryptionPolicy::Plain)
        .unwrap();
    const N: usize = 180;
    let bodies = numbered("history", N);
    send_all(&a, &b.jid, &bodies).await;
    b.wait_incoming(&a.jid, N, "all of them on the first device")
        .await;
    // A new device shows the newest page after its first login, not the whole history.
    let phone = b.another_device(server).await;
    phone
        .wait_list("the newest page", |s| {
            !s.accounts[0].catching_up && !s.conversations.is_empty()
        })
        .await;
    let held = phone.incoming_bodies(&a.jid).len();
    assert!(
        held < N,
        "the first login read only the newest page ({held})"
    );
    let conv = phone
        .client
        .open_conversation(phone.account, &a.jid)
        .unwrap();
    let (tx, mut rx) = watch::channel(None);
    let _sub = phone
        .client
        .subscribe_conversation(conv, Watch(tx))
        .unwrap();
    let mut s = wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    assert!(s.has_more);
    for _ in 0..20 {
        if !s.has_more {
            break;
        }
        let shown = s.messages.len();
        phone.client.load_older(conv).unwrap();
        s = wait_snapshot(&mut rx, "older messages or the start", |s| {
            !s.loading_older && (s.messages.len() > shown || !s.has_more)
        })
        .await;
    }
    assert!(
        !s.has_more,
        "scrolling back reached the start of the archive"
    );
    let shown: Vec<String> = s.messages.iter().map(|m| m.body.clone()).collect();
    assert_eq!(shown, bodies, "the whole history, once each, in order");
    assert_eq!(phone.incoming_bodies(&a.jid), bodies);
    assert!(s.gaps.is_empty(), "nothing was lost: {:?}", s.gaps);
}

async fn expired_history_is_a_gap_and_what_remains_is_read(server: Server) {
    let (a, b) = contacts_pair(server).await;
    send_all(&a, &b.jid, &numbered("before", 2)).await;
    b.wait_incoming(&a.jid, 2, "the first messages").await;
    b.client.logout(b.account).await.unwrap();
    // The server expires b's archive (as retention would after a long absence), then more
    // messages come.
    let user = b.jid.split('@').next().unwrap();
    let server_name = match server {
        Server::Prosody => "prosody",
        Server::Ejabberd => "ejabberd",
    };
    let out = std::process::Command::new(repo_root().join("scripts/servers"))
        .args(["forget-archive", server_name, user])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    send_all(&a, &b.jid, &numbered("after", 3)).await;
    b.client.login(b.account).await.unwrap();
    let mut expected = numbered("before", 2);
    expected.extend(numbered("after", 3));
    b.wait_incoming(&a.jid, 5, "what the archive still holds")
        .await;
    assert_eq!(b.incoming_bodies(&a.jid), expected);
    let s = b
        .wait_conversation(&a.jid, "a gap before the new messages", |s| {
            !s.gaps.is_empty()
        })
        .await;
    let before = s.messages.iter().find(|m| m.body == "before 1").unwrap();
    let after = s.messages.iter().find(|m| m.body == "after 0").unwrap();
    let gap = s.gaps[0];
    assert!(
        gap.after_ms >= before.timestamp_ms && gap.before_ms <= after.timestamp_ms + 1000,
        "the gap lies between what was read and what came after: {gap:?}"
    );
    // Only once: the next login's cursor is in the archive again.
    b.client.logout(b.account).await.unwrap();
    b.client.login(b.account).await.unwrap();
    b.wait_list("caught up again", |s| !s.accounts[0].catching_up)
        .await;
    let s = b.wait_conversation(&a.jid, "snapshot", |_| true).await;
    assert_eq!(s.gaps.len(), 1, "{:?}", s.gaps);
}

both_servers!(
    a_long_catch_up_is_complete_in_order_with_progress,
    scrolling_back_reads_the_server_archive,
    expired_history_is_a_gap_and_what_remains_is_read,
);
