//! OMEMO device lists beyond device ids, against the real servers: device labels (XEP-0384
//! §5.3.1) shown only once their signature checks out, and stale devices (our rule, see
//! core/client/src/devices.rs) left out of messages and out of our own lists.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{SystemTime, UNIX_EPOCH};

use linnet_client::{ClientError, DeliveryState, Direction, OmemoDeviceInfo};
use linnet_omemo::{IdentityKeyPair, Version};
use linnet_store::DeviceActivity;
use linnet_tests::omemo_peer::{PyPeer, NS_2};
use linnet_tests::*;
use linnet_xmpp::omemo::{BundleItem, DeviceListItem, OmemoVersion};
use linnet_xmpp::{BareJid, NodeConfig, Session};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `jid`'s device `device` as `who` shows it.
fn shown(who: &TestClient, jid: &str, device: u32) -> Option<OmemoDeviceInfo> {
    who.client
        .omemo_devices(who.account, jid)
        .unwrap()
        .into_iter()
        .find(|d| d.device_id == device)
}

/// The label `who` stored for `jid`'s device as the OMEMO 2 list gave it (unchecked).
fn stored_label(who: &TestClient, jid: &str, device: u32) -> Option<String> {
    who.open_store()
        .omemo_device_list(who.account, jid, Version::Omemo2)
        .unwrap()?
        .into_iter()
        .find(|d| d.device_id == device)?
        .label
        .map(|l| l.label)
}

/// Another session of `jid`'s account, hand-driven.
async fn raw_session(server: Server, jid: &str) -> Session {
    let conn = linnet_xmpp::connect(&xmpp_config(server, jid))
        .await
        .unwrap();
    Session::start(conn, BareJid::parse(jid).unwrap()).0
}

/// `jid`'s device list of `v` as anyone reads it.
async fn read_list(reader: &Session, jid: &str, v: OmemoVersion) -> DeviceListItem {
    let jid = BareJid::parse(jid).unwrap();
    let items = reader
        .pep_items(Some(&jid), v.devices_node(), None)
        .await
        .unwrap();
    DeviceListItem::from_xml(v, &items[0].payload).unwrap()
}

/// Sends `body` and waits until the server has it.
async fn send(from: &TestClient, to: &str, body: &str) {
    let id = from.client.send_message(from.account, to, body).unwrap();
    from.wait_conversation(to, body, |s| {
        s.messages.iter().any(|m| {
            m.id == id && m.state >= DeliveryState::Sent && m.state != DeliveryState::Failed
        })
    })
    .await;
}

/// Waits until `who` decrypted `body` from `from`.
async fn wait_decrypted(who: &TestClient, from: &str, body: &str) {
    who.wait_conversation(from, body, |s| {
        s.messages
            .iter()
            .any(|m| m.body == body && m.direction == Direction::Incoming && m.error.is_none())
    })
    .await;
}

/// A device that has had 150 messages unanswered for 8 days.
fn gone_quiet() -> DeviceActivity {
    DeviceActivity {
        heard_ms: Some(now_ms() - 9 * DAY_MS),
        unanswered: 150,
        unanswered_since_ms: Some(now_ms() - 8 * DAY_MS),
    }
}

/// Our label reaches a contact and shows there once the contact has our identity key (a
/// session), not before; a new label replaces it, none removes it; the default label
/// ("Linnet") shows the same way; a label the app passes that breaks the rules is refused.
async fn our_label_shows_at_a_contact_once_verified(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_dev = a.client.own_omemo_device(a.account).unwrap();
    let b_dev = b.client.own_omemo_device(b.account).unwrap();
    wait_device(&a, &b.jid, b_dev, "B's device at A").await;
    wait_device(&b, &a.jid, a_dev, "A's device at B").await;

    let long = "x".repeat(53);
    for bad in ["", "  ", "two\nlines", long.as_str()] {
        assert!(
            matches!(
                a.client.set_omemo_device_label(a.account, Some(bad)).await,
                Err(ClientError::BadInput(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        a.client.omemo_device_label(a.account).unwrap().as_deref(),
        Some("Linnet"),
        "refused labels change nothing"
    );
    let label = "Alice's laptop ✓";
    a.client
        .set_omemo_device_label(a.account, Some(label))
        .await
        .unwrap();
    wait_until("A's label stored at B", || {
        stored_label(&b, &a.jid, a_dev).as_deref() == Some(label)
    })
    .await;
    let before = shown(&b, &a.jid, a_dev).unwrap();
    assert_eq!(before.fingerprint, None, "no session yet");
    assert_eq!(
        before.label, None,
        "not shown before its signature is checked"
    );

    // B's first message builds a session from A's bundle: A's identity is known at B, and
    // B's at A.
    send(&b, &a.jid, "hello A").await;
    wait_decrypted(&a, &b.jid, "hello A").await;
    wait_until("A's label shown at B", || {
        shown(&b, &a.jid, a_dev).and_then(|d| d.label).as_deref() == Some(label)
    })
    .await;
    let own = shown(&a, &a.jid, a_dev).unwrap();
    assert!(own.current);
    assert_eq!(own.label.as_deref(), Some(label));
    assert_eq!(
        shown(&a, &b.jid, b_dev).unwrap().label.as_deref(),
        Some("Linnet"),
        "B's default label, checked with the key of B's key exchange"
    );

    a.client
        .set_omemo_device_label(a.account, Some("Work"))
        .await
        .unwrap();
    wait_until("A's new label shown at B", || {
        shown(&b, &a.jid, a_dev).and_then(|d| d.label).as_deref() == Some("Work")
    })
    .await;
    a.client
        .set_omemo_device_label(a.account, None)
        .await
        .unwrap();
    assert_eq!(a.client.omemo_device_label(a.account).unwrap(), None);
    wait_until("A's label gone at B", || {
        stored_label(&b, &a.jid, a_dev).is_none()
    })
    .await;
    assert_eq!(shown(&b, &a.jid, a_dev).unwrap().label, None);
    let list = read_list(&raw_session(server, &b.jid).await, &a.jid, OmemoVersion::V2).await;
    let entry = list.devices.iter().find(|d| d.id == a_dev).unwrap();
    assert_eq!((&entry.label, &entry.labelsig), (&None, &None));
}

/// A label put into A's list by someone else (here: another session of A's account
/// writing the list by hand) with a signature that is valid but by another key is not
/// shown; A's device stays in the list, so A's client leaves the list alone.
async fn a_forged_label_is_not_shown(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_dev = a.client.own_omemo_device(a.account).unwrap();
    wait_device(&b, &a.jid, a_dev, "A's device at B").await;
    // A's key exchange gives B A's key. (Not the other way: a key exchange that uses one of
    // A's prekeys makes A publish again, and A puts its own label back.)
    send(&a, &b.jid, "so that B knows A's key").await;
    wait_decrypted(&b, &a.jid, "so that B knows A's key").await;
    wait_until("A's default label shown at B", || {
        shown(&b, &a.jid, a_dev).and_then(|d| d.label).as_deref() == Some("Linnet")
    })
    .await;

    // ejabberd notifies contacts of what a session publishes only once that session has
    // their presence.
    let conn = linnet_xmpp::connect(&xmpp_config(server, &a.jid))
        .await
        .unwrap();
    let (forger, mut events) = Session::start(conn, BareJid::parse(&a.jid).unwrap());
    forger.send_presence(None, None).unwrap();
    let from_b = format!("{}/", b.jid);
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if matches!(e, linnet_xmpp::Event::Presence { ref from_full, .. } if from_full.starts_with(&from_b))
            {
                return;
            }
        }
    })
    .await
    .expect("B's presence at the forging session");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut list = read_list(&forger, &a.jid, OmemoVersion::V2).await;
    let forged = "Bob's phone";
    let other_key = IdentityKeyPair::generate(&mut rand::thread_rng());
    let entry = list.devices.iter_mut().find(|d| d.id == a_dev).unwrap();
    entry.label = Some(forged.into());
    entry.labelsig = Some(linnet_omemo::sign_label(&other_key, forged).to_vec());
    forger
        .pep_publish(
            OmemoVersion::V2.devices_node(),
            Some("current"),
            &list.to_xml(OmemoVersion::V2).unwrap(),
            &NodeConfig {
                access_model: Some("open".into()),
                ..NodeConfig::default()
            },
        )
        .await
        .unwrap();
    wait_until("the forged label stored at B", || {
        stored_label(&b, &a.jid, a_dev).as_deref() == Some(forged)
    })
    .await;
    let d = shown(&b, &a.jid, a_dev).unwrap();
    assert!(d.fingerprint.is_some(), "B knows A's key");
    assert_eq!(d.label, None, "a label A did not sign is not A's");
}

/// A device that has not answered 100+ messages over more than 7 days (the stored record
/// set back by hand) is shown stale and gets nothing; it is fresh again the moment it
/// writes. When every device of the contact is stale, the message fails saying so.
async fn stale_devices_are_left_out_until_they_write(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let b2 = b.another_device(server).await;
    let a_dev = a.client.own_omemo_device(a.account).unwrap();
    let b_dev = b.client.own_omemo_device(b.account).unwrap();
    let b2_dev = b2.client.own_omemo_device(b2.account).unwrap();
    wait_device(&a, &b.jid, b_dev, "B's device at A").await;
    // A learns of B's new device from its first message (ejabberd does not tell contacts
    // of a list published right after a login).
    wait_device(&b2, &a.jid, a_dev, "A's device at B2").await;
    send(&b2, &a.jid, "hello from B2").await;
    wait_decrypted(&a, &b.jid, "hello from B2").await;
    wait_device(&a, &b.jid, b2_dev, "B's second device at A").await;

    send(&a, &b.jid, "to both of B's devices").await;
    for dev in [&b, &b2] {
        wait_decrypted(dev, &a.jid, "to both of B's devices").await;
    }
    // B answers A's key exchange: heard from. Wait for it, or that answer could come after
    // the records are set back below and undo it. (B2 has nothing more to send: A's
    // session with it came from B2's own key exchange.)
    wait_until("B heard at A", || {
        a.open_store()
            .omemo_device_list(a.account, &b.jid, Version::Omemo2)
            .unwrap()
            .unwrap()
            .into_iter()
            .any(|d| d.device_id == b_dev && d.activity.heard_ms.is_some())
    })
    .await;
    let store = a.open_store();
    let age = |id: u32| {
        assert!(store
            .set_omemo_device_activity(a.account, &b.jid, Version::Omemo2, id, gone_quiet())
            .unwrap());
    };
    age(b2_dev);
    assert!(shown(&a, &b.jid, b2_dev).unwrap().stale);
    assert!(!shown(&a, &b.jid, b_dev).unwrap().stale);

    send(&a, &b.jid, "while the second is stale").await;
    wait_decrypted(&b, &a.jid, "while the second is stale").await;
    b2.wait_conversation(&a.jid, "the message not encrypted for B2", |s| {
        s.messages.iter().any(|m| {
            m.direction == Direction::Incoming
                && m.error.as_deref() == Some("not encrypted for this device")
        })
    })
    .await;

    send(&b2, &a.jid, "B2 is back").await;
    wait_decrypted(&a, &b.jid, "B2 is back").await;
    assert!(
        !shown(&a, &b.jid, b2_dev).unwrap().stale,
        "fresh once it wrote"
    );
    send(&a, &b.jid, "for both again").await;
    wait_decrypted(&b2, &a.jid, "for both again").await;

    // All of B's devices stale: the message fails, and says why.
    age(b_dev);
    age(b2_dev);
    let id = a
        .client
        .send_message(a.account, &b.jid, "to nobody")
        .unwrap();
    let failed = a
        .wait_conversation(&b.jid, "the message failed", |s| {
            s.messages
                .iter()
                .any(|m| m.id == id && m.state == DeliveryState::Failed)
        })
        .await;
    let m = failed.messages.iter().find(|m| m.id == id).unwrap();
    assert!(
        m.error.as_deref().is_some_and(|e| e.contains("stale")),
        "{:?}",
        m.error
    );
    send(&b, &a.jid, "B writes").await;
    wait_decrypted(&a, &b.jid, "B writes").await;
    assert!(!shown(&a, &b.jid, b_dev).unwrap().stale);
}

/// Our own stale device leaves our published lists (both versions) at our next
/// publication, our device and its label stay; the device puts itself back when it logs
/// in again, and is fresh then.
async fn our_own_stale_device_leaves_our_lists(server: Server) {
    let a = TestClient::register(server, "me").await;
    let a_dev = a.client.own_omemo_device(a.account).unwrap();
    let a2 = a.another_device(server).await;
    let a2_dev = a2.client.own_omemo_device(a2.account).unwrap();
    wait_device(&a, &a.jid, a2_dev, "our second device in our list").await;
    a2.client.shutdown().await;

    assert!(a
        .open_store()
        .set_omemo_device_activity(a.account, &a.jid, Version::Omemo2, a2_dev, gone_quiet())
        .unwrap());
    assert!(shown(&a, &a.jid, a2_dev).unwrap().stale);
    // Setting the label publishes the lists.
    a.client
        .set_omemo_device_label(a.account, Some("Desk"))
        .await
        .unwrap();

    let reader = raw_session(server, &fresh_jid_registered(server).await).await;
    for v in [OmemoVersion::V03, OmemoVersion::V2] {
        let ids: Vec<u32> = read_list(&reader, &a.jid, v)
            .await
            .devices
            .iter()
            .map(|d| d.id)
            .collect();
        assert!(ids.contains(&a_dev), "{v:?}: {ids:?}");
        assert!(
            !ids.contains(&a2_dev),
            "{v:?}: the stale device is out: {ids:?}"
        );
    }
    // Our entry carries our label, signed with the identity key of our bundle.
    let list = read_list(&reader, &a.jid, OmemoVersion::V2).await;
    let ours = list.devices.iter().find(|d| d.id == a_dev).unwrap();
    assert_eq!(ours.label.as_deref(), Some("Desk"));
    let bundle = reader
        .pep_items(
            Some(&BareJid::parse(&a.jid).unwrap()),
            &OmemoVersion::V2.bundle_node(a_dev),
            Some(&OmemoVersion::V2.bundle_item_id(a_dev)),
        )
        .await
        .unwrap();
    let ik = BundleItem::from_xml(OmemoVersion::V2, &bundle[0].payload)
        .unwrap()
        .ik;
    let ik: [u8; 32] = ik.as_slice().try_into().unwrap();
    assert!(linnet_omemo::verify_label(
        &ik,
        "Desk",
        ours.labelsig.as_deref().unwrap()
    ));
    wait_until("the stale device inactive at A", || {
        shown(&a, &a.jid, a2_dev).is_some_and(|d| !d.active)
    })
    .await;

    // The device comes back: it announces itself again.
    let again = a2.reopen();
    again.login(a2.account).await.unwrap();
    wait_until("our second device back, fresh", || {
        shown(&a, &a.jid, a2_dev).is_some_and(|d| d.active && !d.stale)
    })
    .await;
    again.shutdown().await;
}

/// A fresh account's JID (registered, not logged in): a stranger to read PEP with.
async fn fresh_jid_registered(server: Server) -> String {
    let jid = fresh_jid(server, "reader");
    linnet_xmpp::register(&xmpp_config(server, &jid))
        .await
        .unwrap();
    jid
}

/// Interop with python-omemo (twomemo), which signs and checks labels too: its label shows
/// here once its key is known, and ours shows there, each checked by the other side.
async fn labels_interoperate_with_python_omemo(server: Server) {
    let storage = tempfile::tempdir().unwrap();
    let me = TestClient::register(server, "linnet").await;
    let my_dev = me.client.own_omemo_device(me.account).unwrap();
    me.client
        .set_omemo_device_label(me.account, Some("Linnet, interop ✓"))
        .await
        .unwrap();
    let peer_jid = fresh_jid(server, "pylabel");
    let mut peer = PyPeer::start_labelled(
        server,
        &peer_jid,
        "2",
        &storage.path().join("peer.json"),
        Some("python-omemo 🐍"),
    )
    .await;
    peer.wait_device(&me.jid, NS_2, my_dev).await;
    peer.send(&me.jid, "2", "hello from python").await;
    wait_decrypted(&me, &peer_jid, "hello from python").await;
    let peer_dev = peer.device_id;
    wait_until("python's label shown", || {
        shown(&me, &peer_jid, peer_dev)
            .and_then(|d| d.label)
            .as_deref()
            == Some("python-omemo 🐍")
    })
    .await;
    let labels = peer.labels(&me.jid).await;
    assert!(
        labels.contains(&(my_dev, Some("Linnet, interop ✓".into()))),
        "python accepted our label: {labels:?}"
    );
    peer.quit().await;
}

both_servers!(
    our_label_shows_at_a_contact_once_verified,
    a_forged_label_is_not_shown,
    stale_devices_are_left_out_until_they_write,
    our_own_stale_device_leaves_our_lists,
    labels_interoperate_with_python_omemo,
);
