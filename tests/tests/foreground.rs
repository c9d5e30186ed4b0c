//! The app going to the background and back: client state indication (XEP-0352), and the
//! keepalive probes that find a dead link (in the foreground, on coming back, on a network
//! change), against both servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_client::{ClientOptions, ConnectionState};
use linnet_tests::*;

async fn background_and_back(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let before = b.client.negotiated(b.account).unwrap();
    assert!(before.csi, "the server takes client state indications");

    b.client.set_foreground(false);
    // A message is urgent: it reaches a device in the background at once.
    a.client
        .send_message(a.account, &b.jid, "while away")
        .unwrap();
    b.wait_incoming(&a.jid, 1, "message in the background")
        .await;

    b.client.set_foreground(true);
    b.client.send_message(b.account, &a.jid, "back").unwrap();
    a.wait_incoming(&b.jid, 1, "reply from the foreground")
        .await;

    // Both indications were accepted: the stream the session started on is still the one
    // in use (a stream error would have ended it, and the server keeps no session to
    // resume after one).
    let after = b.client.negotiated(b.account).unwrap();
    assert_eq!(after.sm_id, before.sm_id);
    assert_eq!(
        b.client.chat_list().accounts[0].connection,
        ConnectionState::Online
    );
}

/// Probes that would come only after an hour: a dead link is found by the path under test
/// or not at all.
fn hourly_probes() -> ClientOptions {
    ClientOptions {
        keepalive: Duration::from_secs(3600),
        foreground_keepalive: Duration::from_secs(3600),
        step_timeout: Duration::from_secs(5),
        ..options()
    }
}

/// What makes the client look at a link that died without a word.
enum Notice {
    /// Nothing: the foreground keepalive must do it.
    Keepalive,
    /// The app went to the background and comes back after a silence.
    Wake,
    /// The OS reports a network change.
    NetworkChange,
}

/// Blackholes the link and lets `notice` make the client find out; afterwards the account
/// reconnects and a message sent meanwhile arrives.
async fn dead_link_is_found(server: Server, opts: ClientOptions, notice: Notice) {
    let (a, b) = contacts_pair(server).await;
    let (a, proxy) = a.behind_proxy_with(server, opts).await;
    a.wait_list("online through the proxy", |s| {
        s.accounts[0].connection == ConnectionState::Online
    })
    .await;
    // The link dies: no reset, no FIN, nothing gets through.
    proxy.set_stalled(true);
    match notice {
        Notice::Keepalive => {}
        Notice::Wake => {
            a.client.set_foreground(false);
            // Silent for longer than a wake-up takes on trust (two seconds).
            tokio::time::sleep(Duration::from_millis(2500)).await;
            a.client.set_foreground(true);
        }
        Notice::NetworkChange => a.client.network_changed(true),
    }
    a.wait_list("the dead link noticed", |s| {
        s.accounts[0].connection != ConnectionState::Online
    })
    .await;
    b.client
        .send_message(b.account, &a.jid, "while the link was dead")
        .unwrap();
    proxy.set_stalled(false);
    a.wait_list("online again", |s| {
        s.accounts[0].connection == ConnectionState::Online && proxy.accepted() > 1
    })
    .await;
    a.wait_incoming(&b.jid, 1, "the message sent meanwhile")
        .await;
}

async fn foreground_pings_find_a_dead_link(server: Server) {
    let opts = ClientOptions {
        foreground_keepalive: Duration::from_secs(1),
        ..hourly_probes()
    };
    dead_link_is_found(server, opts, Notice::Keepalive).await;
}

async fn coming_to_the_foreground_probes_at_once(server: Server) {
    dead_link_is_found(server, hourly_probes(), Notice::Wake).await;
}

async fn network_change_probes_at_once(server: Server) {
    dead_link_is_found(server, hourly_probes(), Notice::NetworkChange).await;
}

/// An account waiting to retry (an hour away) is back at once when `wake` tells it the
/// network or the user is back.
async fn waiting_account_retries_at_once(server: Server, wake: fn(&TestClient)) {
    let me = TestClient::register(server, "wake").await;
    let opts = ClientOptions {
        min_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
        ..options()
    };
    let (me, proxy) = me.behind_proxy_with(server, opts).await;
    // The server becomes unreachable: the session drops, the immediate retry fails, and
    // the next attempt is an hour away.
    proxy.set_refusing(true);
    proxy.reset_all();
    me.wait_list("waiting to retry", |s| {
        matches!(s.accounts[0].connection, ConnectionState::Waiting { .. })
    })
    .await;
    proxy.set_refusing(false);
    wake(&me);
    me.wait_list("online again", |s| {
        s.accounts[0].connection == ConnectionState::Online
    })
    .await;
}

async fn network_back_retries_at_once(server: Server) {
    waiting_account_retries_at_once(server, |c| c.client.network_changed(true)).await;
}

async fn foreground_retries_at_once(server: Server) {
    waiting_account_retries_at_once(server, |c| {
        c.client.set_foreground(false);
        c.client.set_foreground(true);
    })
    .await;
}

both_servers!(
    background_and_back,
    foreground_pings_find_a_dead_link,
    coming_to_the_foreground_probes_at_once,
    network_change_probes_at_once,
    network_back_retries_at_once,
    foreground_retries_at_once,
);
