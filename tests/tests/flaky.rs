//! Connections that break: resets and stalls through the fault proxy, on both servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::{ConnectionState, DeliveryState, Direction, ServerOverride};
use linnet_tests::proxy::Proxy;
use linnet_tests::*;

async fn survives_resets_without_loss_or_duplicates(server: Server) {
    let (a, b) = contacts_pair(server).await;
    a.client.shutdown().await;
    let proxy = Proxy::start(socket_addr(server)).await.unwrap();
    let via = ServerOverride {
        host: "127.0.0.1".into(),
        port: proxy.port(),
        direct_tls: false,
    };
    let a = TestClient::login_via(&a.jid, via).await;
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
        let want = expected.len();
        b.wait_conversation(&a.jid, "every message so far", |s| {
            s.messages
                .iter()
                .filter(|m| m.direction == Direction::Incoming)
                .count()
                >= want
        })
        .await;
        // And the other direction works on the new connection.
        let body = format!("reply {round}");
        b.client.send_message(b.account, &a.jid, &body).unwrap();
        a.wait_conversation(&b.jid, "reply", |s| {
            s.messages.iter().any(|m| m.body == body)
        })
        .await;
    }
    let conv = b.client.open_conversation(b.account, &a.jid).unwrap();
    let got: Vec<String> = b
        .client
        .messages(conv, None, 1000)
        .unwrap()
        .into_iter()
        .filter(|m| m.direction == Direction::Incoming)
        .map(|m| m.body)
        .collect();
    assert_eq!(got, expected, "every message exactly once, in order");
    a.wait_conversation(&b.jid, "all delivered", |s| {
        s.messages
            .iter()
            .filter(|m| m.direction == Direction::Outgoing)
            .all(|m| m.state == DeliveryState::Delivered)
    })
    .await;
}

both_servers!(survives_resets_without_loss_or_duplicates);
