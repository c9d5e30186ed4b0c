//! OMEMO interop over real XMPP with an independent client: slixmpp with python-omemo
//! (tests/peers/omemo_xmpp_peer.py, driven over stdin/stdout), on both servers, with a peer
//! speaking OMEMO 0.3, OMEMO 2, or both. Each test: the peer's first message (key exchange)
//! and follow-ups both ways; a restart of the peer; a second device of ours that starts a
//! session with the peer (our key exchange) and gets the peer's messages as well as the
//! carbons of ours. And calls whose DTLS fingerprints go through OMEMO, both ways, with the
//! peer as a signalling-only Jingle endpoint.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::calls::{CallMedia, CallOptions, CallState, CallVerification};
use linnet_client::{DeviceTrust, Direction, Encryption};
use linnet_tests::omemo_peer::{PyPeer, NS_03, NS_2};
use linnet_tests::*;

async fn wait_incoming(me: &TestClient, from: &str, body: &str, encryption: Encryption) {
    me.wait_conversation(from, body, |s| {
        s.messages.iter().any(|m| {
            m.body == body && m.encryption == encryption && m.direction == Direction::Incoming
        })
    })
    .await;
}

/// `versions`: what the peer speaks. Linnet speaks both and prefers OMEMO 2.
async fn interop(server: Server, versions: &str) {
    let (peer_ns, ours) = match versions {
        "03" => (NS_03, Encryption::Omemo03),
        _ => (NS_2, Encryption::Omemo2),
    };
    let storage = tempfile::tempdir().unwrap();
    let store_file = storage.path().join("peer.json");
    let me = TestClient::register(server, "linnet").await;
    let my_dev = me.client.own_omemo_device(me.account).unwrap();
    let peer_jid = fresh_jid(server, &format!("py{versions}"));
    let mut peer = PyPeer::start(server, &peer_jid, versions, &store_file).await;
    peer.wait_device(&me.jid, peer_ns, my_dev).await;

    // The peer's key exchange, then follow-ups both ways.
    peer.send(&me.jid, "auto", "Grüße from python 🐍").await;
    wait_incoming(&me, &peer_jid, "Grüße from python 🐍", ours).await;
    me.client
        .send_message(me.account, &peer_jid, "hello python, ü")
        .unwrap();
    assert_eq!(peer.received(&me.jid, "hello python, ü").await, peer_ns);
    for i in 0..3 {
        peer.send(&me.jid, "auto", &format!("py follow-up {i}"))
            .await;
        me.client
            .send_message(me.account, &peer_jid, &format!("linnet follow-up {i}"))
            .unwrap();
    }
    for i in 0..3 {
        wait_incoming(&me, &peer_jid, &format!("py follow-up {i}"), ours).await;
        assert_eq!(
            peer.received(&me.jid, &format!("linnet follow-up {i}"))
                .await,
            peer_ns
        );
    }
    if versions == "both" {
        // The peer may choose OMEMO 0.3 for a message: we read that too.
        peer.send(&me.jid, "03", "by the old version").await;
        wait_incoming(&me, &peer_jid, "by the old version", Encryption::Omemo03).await;
    }

    // The peer restarts (same device, sessions from its storage).
    peer.quit().await;
    let mut peer = PyPeer::start(server, &peer_jid, versions, &store_file).await;
    peer.send(&me.jid, "auto", "back again").await;
    wait_incoming(&me, &peer_jid, "back again", ours).await;
    me.client
        .send_message(me.account, &peer_jid, "welcome back")
        .unwrap();
    assert_eq!(peer.received(&me.jid, "welcome back").await, peer_ns);

    // A second device of ours starts its own session with the peer (our key exchange);
    // the peer's next message reaches both our devices, and ours reach our other device.
    let me2 = me.another_device(server).await;
    let my_dev2 = me2.client.own_omemo_device(me2.account).unwrap();
    peer.wait_device(&me.jid, peer_ns, my_dev2).await;
    let sent = me2
        .client
        .send_message(me2.account, &peer_jid, "from our second device")
        .unwrap();
    assert_eq!(
        peer.received(&me.jid, "from our second device").await,
        peer_ns
    );
    me2.wait_conversation(&peer_jid, "our message recorded as it went", |s| {
        s.messages
            .iter()
            .any(|m| m.id == sent && m.encryption == ours)
    })
    .await;
    peer.send(&me.jid, "auto", "to all your devices").await;
    for dev in [&me, &me2] {
        wait_incoming(dev, &peer_jid, "to all your devices", ours).await;
    }
    me.client
        .send_message(me.account, &peer_jid, "copy for device two")
        .unwrap();
    assert_eq!(peer.received(&me.jid, "copy for device two").await, peer_ns);
    me2.wait_conversation(&peer_jid, "the carbon of our message", |s| {
        s.messages.iter().any(|m| {
            // Our own devices speak OMEMO 2 to each other, whatever the contact speaks.
            m.body == "copy for device two"
                && m.direction == Direction::Outgoing
                && m.encryption == Encryption::Omemo2
        })
    })
    .await;
    peer.quit().await;
}

async fn peer_speaks_omemo_03(server: Server) {
    interop(server, "03").await;
}

async fn peer_speaks_omemo_2(server: Server) {
    interop(server, "2").await;
}

async fn peer_speaks_both_versions(server: Server) {
    interop(server, "both").await;
}

/// The words of the first peer line starting with `prefix` and matching `pred`.
async fn peer_line(peer: &mut PyPeer, prefix: &str, pred: impl Fn(&[&str]) -> bool) -> Vec<String> {
    let line = peer
        .expect(prefix, |l| {
            let w: Vec<&str> = l.split(' ').collect();
            w[0] == prefix && pred(&w)
        })
        .await;
    line.split(' ').map(str::to_owned).collect()
}

fn is_sha256_fingerprint(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 32
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Calls with an independent OMEMO 0.3 stack (python-omemo, as Conversations and Dino
/// speak it for calls) as the far end of the signalling: whoever calls, each side's DTLS
/// fingerprint reaches the other as an OMEMO message from the right device and decrypts
/// there to the fingerprint that was sent.
async fn calls_vouched_for_by_omemo(server: Server) {
    let storage = tempfile::tempdir().unwrap();
    let me = TestClient::register(server, "linnet").await;
    let my_dev = me.client.own_omemo_device(me.account).unwrap();
    let my_full = me.client.bound_jid(me.account).unwrap();
    let peer_jid = fresh_jid(server, "pycall");
    let mut peer = PyPeer::start(server, &peer_jid, "03", &storage.path().join("p.json")).await;
    peer.wait_device(&me.jid, NS_03, my_dev).await;
    wait_device(&me, &me.jid, my_dev, "our device published").await;

    // We call: the peer proceeds naming its device, so our session-initiate carries our
    // fingerprint for that device alone; its session-accept carries its own for ours.
    let id = me
        .client
        .start_call(
            me.account,
            &peer_jid,
            CallOptions::default(),
            CallMedia::default(),
        )
        .await
        .unwrap();
    let sid = peer_line(&mut peer, "PROPOSE", |_| true).await[2].clone();
    peer.command(&format!("PROCEED {} {sid}", me.jid));
    let fp = peer_line(&mut peer, "FINGERPRINT", |w| w[1] == sid).await;
    assert_eq!(fp[3], my_dev.to_string(), "vouched for by our device");
    assert!(is_sha256_fingerprint(&fp[6]), "{fp:?}");
    peer.command(&format!("ACCEPT {my_full} {sid} {my_dev}"));
    let accepted = peer_line(&mut peer, "ACCEPTED", |w| w[1] == sid).await;
    assert!(is_sha256_fingerprint(&accepted[2]));
    let call = me
        .wait_list("the peer's fingerprint opened", |s| {
            s.calls
                .iter()
                .any(|c| c.id == id && c.verified_by.is_some())
        })
        .await
        .calls
        .iter()
        .find(|c| c.id == id)
        .cloned()
        .unwrap();
    assert_eq!(
        call.verified_by,
        Some(CallVerification {
            device_id: peer.device_id,
            trust: DeviceTrust::Blind
        })
    );
    me.client.end_call(id).unwrap();

    // The peer calls: our proceed names our device; the peer's session-initiate carries
    // its fingerprint for it, and our session-accept ours for the peer's device.
    let sid = "py-call-2";
    peer.command(&format!("CALL {} {sid}", me.jid));
    let ringing = me
        .wait_list("the peer's call rings", |s| {
            s.calls
                .iter()
                .any(|c| c.peer == peer_jid && matches!(c.state, CallState::Ringing { .. }))
        })
        .await;
    let incoming = ringing
        .calls
        .iter()
        .find(|c| c.peer == peer_jid)
        .unwrap()
        .id;
    me.client
        .accept_call(incoming, CallMedia::default())
        .unwrap();
    let proceeded = peer_line(&mut peer, "PROCEEDED", |w| w[2] == sid).await;
    assert_eq!(
        proceeded[3],
        my_dev.to_string(),
        "our proceed names our device"
    );
    peer.command(&format!("INITIATE {my_full} {sid} {my_dev}"));
    let initiated = peer_line(&mut peer, "INITIATED", |w| w[1] == sid).await;
    let fp = peer_line(&mut peer, "FINGERPRINT", |w| w[1] == sid).await;
    assert_eq!(fp[3], my_dev.to_string());
    assert!(is_sha256_fingerprint(&fp[6]), "{fp:?}");
    assert_ne!(
        fp[6], initiated[2],
        "our own fingerprint, not the peer's echoed"
    );
    me.wait_list("the peer's fingerprint opened (callee)", |s| {
        s.calls
            .iter()
            .any(|c| c.id == incoming && c.verified_by.map(|v| v.device_id) == Some(peer.device_id))
    })
    .await;
    peer.command(&format!("TERMINATE {my_full} {sid}"));
    me.wait_list("the call ended", |s| {
        s.calls
            .iter()
            .any(|c| c.id == incoming && matches!(c.state, CallState::Ended { .. }))
    })
    .await;
    peer.quit().await;
}

both_servers!(
    peer_speaks_omemo_03,
    peer_speaks_omemo_2,
    peer_speaks_both_versions,
    calls_vouched_for_by_omemo
);
