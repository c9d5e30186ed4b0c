//! A server restart mid-stream: every session is gone, so nothing can be resumed. What the
//! server had taken comes back from the archive (XEP-0313), what it had not from the
//! outbox. These tests stop and start the shared servers, so they are ignored in the
//! parallel run; `scripts/test` runs them alone afterwards:
//! `cargo test -p linnet-tests --test restart -- --ignored --test-threads=1`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::{ConnectionState, DeliveryState};
use linnet_tests::*;

fn restart(server: Server) {
    let name = match server {
        Server::Prosody => "prosody",
        Server::Ejabberd => "ejabberd",
    };
    for action in ["stop", "start"] {
        let status = std::process::Command::new(repo_root().join("scripts/servers"))
            .args([action, name])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("scripts/servers");
        assert!(status.success(), "scripts/servers {action} {name}");
    }
}

async fn server_restart_loses_nothing(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (b, proxy) = b.behind_proxy(server).await;
    let mut expected = vec!["before".to_owned()];
    a.client.send_message(a.account, &b.jid, "before").unwrap();
    b.wait_conversation(&a.jid, "live message", |s| {
        s.messages.iter().any(|m| m.body == "before")
    })
    .await;

    // B's link goes dead: the server takes these and writes them into a link that holds them.
    proxy.set_stalled(true);
    for i in 0..10 {
        let body = format!("into the dead link {i}");
        a.client.send_message(a.account, &b.jid, &body).unwrap();
        expected.push(body);
    }
    a.wait_conversation(&b.jid, "taken by the server", |s| {
        s.messages.iter().all(|m| m.state >= DeliveryState::Sent)
    })
    .await;

    // The server restarts; A keeps writing meanwhile (these wait in A's outbox).
    let restarting = tokio::task::spawn_blocking(move || restart(server));
    for i in 0..5 {
        let body = format!("while the server restarts {i}");
        a.client.send_message(a.account, &b.jid, &body).unwrap();
        expected.push(body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    restarting.await.unwrap();
    proxy.reset_all();
    proxy.set_stalled(false);

    for c in [&a, &b] {
        c.wait_list("online again", |s| {
            s.accounts[0].connection == ConnectionState::Online
        })
        .await;
    }
    b.wait_incoming(&a.jid, expected.len(), "every message")
        .await;
    // Anything late would show up now as a duplicate.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut got = b.incoming_bodies(&a.jid);
    // Exactly once. (The order shown is checked by the chaos test in flaky.rs; across a
    // server restart a message can reach B both from the outbox and from the archive.)
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "every message exactly once");
    a.wait_conversation(&b.jid, "all delivered", |s| {
        s.messages
            .iter()
            .all(|m| m.state == DeliveryState::Delivered)
    })
    .await;
}

mod prosody {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "restarts the shared server: scripts/test runs it alone"]
    async fn server_restart_loses_nothing() {
        super::server_restart_loses_nothing(linnet_tests::Server::Prosody).await
    }
}

mod ejabberd {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "restarts the shared server: scripts/test runs it alone"]
    async fn server_restart_loses_nothing() {
        super::server_restart_loses_nothing(linnet_tests::Server::Ejabberd).await
    }
}
