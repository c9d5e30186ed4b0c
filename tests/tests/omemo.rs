//! OMEMO through the client against the real servers: our device and its bundles in PEP.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_client::{
    ConversationSnapshot, DeliveryState, Direction, Encryption, EncryptionPolicy, MessageItem,
};
use linnet_omemo::{Bundle, DeviceAddress, MemoryStore, SessionManager, Version};
use linnet_tests::*;
use linnet_xmpp::omemo::{BundleItem, Device, DeviceListItem, OmemoVersion};
use linnet_xmpp::{BareJid, NodeConfig, Session};

const OTHER_DEVICE: u32 = 4242;

async fn raw_session(server: Server, jid: &str) -> Session {
    let conn = linnet_xmpp::connect(&xmpp_config(server, jid))
        .await
        .unwrap();
    Session::start(conn, BareJid::parse(jid).unwrap()).0
}

fn open() -> NodeConfig {
    NodeConfig {
        access_model: Some("open".into()),
        ..NodeConfig::default()
    }
}

/// The device list of `version` at `jid`, as a stranger reads it.
async fn device_ids(reader: &Session, jid: &BareJid, v: OmemoVersion) -> Vec<u32> {
    match reader.pep_items(Some(jid), v.devices_node(), None).await {
        Ok(items) => items
            .first()
            .map(|i| DeviceListItem::from_xml(v, &i.payload).unwrap())
            .map(|l| l.devices.iter().map(|d| d.id).collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// After its first login a client's device is in both device lists, beside the device
/// already there, and its bundles are readable by a stranger and carry a valid signed
/// prekey: an independent session manager builds a session from each.
async fn a_fresh_login_publishes_our_device(server: Server) {
    let jid = fresh_jid(server, "omemo");
    linnet_xmpp::register(&xmpp_config(server, &jid))
        .await
        .unwrap();
    let bare = BareJid::parse(&jid).unwrap();
    // Another client of the account was here first.
    let other = raw_session(server, &jid).await;
    for v in [OmemoVersion::V03, OmemoVersion::V2] {
        let list = DeviceListItem {
            devices: vec![Device::new(OTHER_DEVICE)],
        };
        other
            .pep_publish(
                v.devices_node(),
                Some("current"),
                &list.to_xml(v).unwrap(),
                &open(),
            )
            .await
            .unwrap();
    }
    let _me = TestClient::login_via(&jid, server_override(server, false)).await;
    let stranger_jid = fresh_jid(server, "stranger");
    linnet_xmpp::register(&xmpp_config(server, &stranger_jid))
        .await
        .unwrap();
    let stranger = raw_session(server, &stranger_jid).await;
    for (v, version) in [
        (OmemoVersion::V03, Version::Omemo03),
        (OmemoVersion::V2, Version::Omemo2),
    ] {
        let mut ids = Vec::new();
        for _ in 0..100 {
            ids = device_ids(&stranger, &bare, v).await;
            if ids.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            ids.contains(&OTHER_DEVICE),
            "{v:?}: the other device is kept: {ids:?}"
        );
        assert_eq!(ids.len(), 2, "{v:?}: ours is added: {ids:?}");
        let ours = ids.into_iter().find(|id| *id != OTHER_DEVICE).unwrap();
        let items = stranger
            .pep_items(
                Some(&bare),
                &v.bundle_node(ours),
                Some(&v.bundle_item_id(ours)),
            )
            .await
            .unwrap();
        assert_eq!(items.len(), 1, "{v:?}: one bundle for our device");
        let item = BundleItem::from_xml(v, &items[0].payload).unwrap();
        assert!(
            item.prekeys.len() >= 100,
            "{v:?}: {} prekeys",
            item.prekeys.len()
        );
        let bundle = Bundle {
            identity_key: item.ik,
            signed_prekey_id: item.spk_id,
            signed_prekey: item.spk,
            signed_prekey_signature: item.spks,
            prekeys: item.prekeys,
        };
        let mut peer = SessionManager::new(MemoryStore::new(), stranger_jid.as_str(), 7).unwrap();
        peer.process_bundle(version, &DeviceAddress::new(jid.as_str(), ours), &bundle)
            .unwrap();
    }
}

fn find<'a>(s: &'a ConversationSnapshot, body: &str) -> Option<&'a MessageItem> {
    s.messages.iter().find(|m| m.body == body)
}

/// Two Linnet clients and a second device: messages go encrypted (OMEMO 2, which both
/// speak) from the first message on, in both directions, to the other device of the sender
/// as a carbon, with receipts; and nothing of the text is in the stanzas the server keeps.
async fn linnet_clients_chat_encrypted(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_dev = a.client.own_omemo_device(a.account).unwrap();
    let b_dev = b.client.own_omemo_device(b.account).unwrap();
    // Contacts learn each other's lists by PEP notification.
    wait_device(&a, &b.jid, b_dev, "B's device at A").await;
    wait_device(&b, &a.jid, a_dev, "A's device at B").await;

    let sent = a
        .client
        .send_message(a.account, &b.jid, "secret one ✓")
        .unwrap();
    let got = b
        .wait_conversation(&a.jid, "the first encrypted message", |s| {
            find(s, "secret one ✓").is_some()
        })
        .await;
    let m = find(&got, "secret one ✓").unwrap();
    assert_eq!(m.encryption, Encryption::Omemo2);
    assert_eq!(m.direction, Direction::Incoming);
    assert!(m.error.is_none());
    a.wait_conversation(&b.jid, "receipt of the encrypted message", |s| {
        s.messages.iter().any(|m| {
            m.id == sent
                && m.state == DeliveryState::Delivered
                && m.encryption == Encryption::Omemo2
        })
    })
    .await;
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    assert_eq!(
        a.client.encryption_policy(conv).unwrap(),
        EncryptionPolicy::Omemo
    );

    b.client
        .send_message(b.account, &a.jid, "reply two")
        .unwrap();
    a.wait_conversation(&b.jid, "the encrypted reply", |s| {
        find(s, "reply two").is_some_and(|m| m.encryption == Encryption::Omemo2)
    })
    .await;

    // A second device of A: B's messages reach it, and so do A's own, as carbons. A's
    // first device reads its list again when the new one's presence comes. B learns of it
    // from its first message: ejabberd sent B no notification of A's new list in our
    // runs (Prosody does), and a device unknown to us makes us read its list.
    let a2 = a.another_device(server).await;
    let a2_dev = a2.client.own_omemo_device(a2.account).unwrap();
    wait_device(&a, &a.jid, a2_dev, "A's second device at A").await;
    wait_device(&a2, &b.jid, b_dev, "B's device at A's second device").await;
    a2.client
        .send_message(a2.account, &b.jid, "from device two")
        .unwrap();
    b.wait_conversation(&a.jid, "the message from device two", |s| {
        find(s, "from device two").is_some_and(|m| m.encryption == Encryption::Omemo2)
    })
    .await;
    wait_device(&b, &a.jid, a2_dev, "A's second device at B").await;
    b.client
        .send_message(b.account, &a.jid, "to both devices")
        .unwrap();
    a.client
        .send_message(a.account, &b.jid, "from device one")
        .unwrap();
    for dev in [&a, &a2] {
        dev.wait_conversation(&b.jid, "messages on each of A's devices", |s| {
            find(s, "to both devices").is_some_and(|m| m.encryption == Encryption::Omemo2)
                && find(s, "from device one").is_some_and(|m| {
                    m.direction == Direction::Outgoing && m.encryption == Encryption::Omemo2
                })
        })
        .await;
    }
    let s = b
        .wait_conversation(&a.jid, "the message from device one", |s| {
            find(s, "from device one").is_some()
        })
        .await;
    assert!(
        s.messages.iter().all(|m| m.error.is_none()),
        "{:?}",
        s.messages
    );
    // A device that came later cannot read what was encrypted before it: shown as such.
    let s = a2
        .wait_conversation(&b.jid, "history on the new device", |s| {
            s.messages.len() >= 5
        })
        .await;
    for m in &s.messages {
        if m.body.is_empty() {
            assert_eq!(m.error.as_deref(), Some("not encrypted for this device"));
        }
    }
}

/// An OMEMO message that holds no key for our device is shown, with the reason, rather
/// than dropped; an empty one (key transport) for another device is not a message.
async fn a_message_not_for_our_device_is_shown_as_such(server: Server) {
    let b = TestClient::register(server, "bob").await;
    let b_dev = b.client.own_omemo_device(b.account).unwrap();
    let stranger = fresh_jid(server, "stranger");
    linnet_xmpp::register(&xmpp_config(server, &stranger))
        .await
        .unwrap();
    let raw = raw_session(server, &stranger).await;
    let to = BareJid::parse(&b.jid).unwrap();
    let other = if b_dev == 1 { 2 } else { b_dev - 1 };
    let encrypted = |payload: Option<Vec<u8>>| linnet_xmpp::omemo::Encrypted {
        version: OmemoVersion::V2,
        sid: 77,
        keys: vec![linnet_xmpp::omemo::KeyEntry {
            jid: Some(to.clone()),
            rid: other,
            kex: false,
            data: vec![1; 40],
        }],
        iv: None,
        payload,
    };
    let empty =
        linnet_xmpp::omemo::chat_stanza(&to, "e1", &[encrypted(None)], None, &Default::default())
            .unwrap();
    raw.send_xml(&String::from(&empty)).unwrap();
    let full = linnet_xmpp::omemo::chat_stanza(
        &to,
        "f1",
        &[encrypted(Some(vec![2; 30]))],
        Some("fallback"),
        &Default::default(),
    )
    .unwrap();
    raw.send_xml(&String::from(&full)).unwrap();
    let s = b
        .wait_conversation(&stranger, "the undecryptable message", |s| {
            !s.messages.is_empty()
        })
        .await;
    assert_eq!(s.messages.len(), 1, "{:?}", s.messages);
    let m = &s.messages[0];
    assert_eq!(m.body, "");
    assert_eq!(m.encryption, Encryption::Omemo2);
    assert_eq!(m.error.as_deref(), Some("not encrypted for this device"));
    // A malformed element (sid 0) beside an empty OMEMO 0.3 one: shown, with the reason.
    let empty03 = linnet_xmpp::omemo::Encrypted {
        version: OmemoVersion::V03,
        sid: 77,
        keys: vec![linnet_xmpp::omemo::KeyEntry {
            jid: None,
            rid: other,
            kex: false,
            data: vec![1; 40],
        }],
        iv: Some(vec![0; 12]),
        payload: None,
    };
    let ok = String::from(
        &linnet_xmpp::omemo::chat_stanza(&to, "m1", &[empty03], None, &Default::default()).unwrap(),
    );
    let bad = "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='0'/></encrypted>";
    raw.send_xml(&ok.replacen("</message>", &format!("{bad}</message>"), 1))
        .unwrap();
    let s = b
        .wait_conversation(&stranger, "the malformed message", |s| {
            s.messages.len() == 2
        })
        .await;
    let reason = s.messages[1].error.as_deref().unwrap_or_default();
    assert!(reason.starts_with("malformed OMEMO element"), "{reason}");
}

/// Messages written offline wait in the outbox: encrypted ones are encrypted and sent by
/// the next session, and plaintext ones queued after them are not held up by them.
async fn queued_offline_encrypted_and_plain_both_go_out(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let b_dev = b.client.own_omemo_device(b.account).unwrap();
    wait_device(&a, &b.jid, b_dev, "B's device at A").await;
    let d = TestClient::register(server, "dora").await;
    let to_d = a.client.open_conversation(a.account, &d.jid).unwrap();
    a.client
        .set_encryption_policy(to_d, EncryptionPolicy::Plain)
        .unwrap();
    a.client.logout(a.account).await.unwrap();
    a.client
        .send_message(a.account, &b.jid, "written offline, sealed")
        .unwrap();
    a.client
        .send_message(a.account, &d.jid, "written offline, plain")
        .unwrap();
    a.client.login(a.account).await.unwrap();
    b.wait_conversation(&a.jid, "the sealed message", |s| {
        find(s, "written offline, sealed").is_some_and(|m| m.encryption == Encryption::Omemo2)
    })
    .await;
    d.wait_conversation(&a.jid, "the plain message", |s| {
        find(s, "written offline, plain").is_some_and(|m| m.encryption == Encryption::Plain)
    })
    .await;
}

both_servers!(
    a_fresh_login_publishes_our_device,
    queued_offline_encrypted_and_plain_both_go_out,
    linnet_clients_chat_encrypted,
    a_message_not_for_our_device_is_shown_as_such,
);
