//! OMEMO through the client against the real servers: our device and its bundles in PEP.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

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
        max_items: None,
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

both_servers!(a_fresh_login_publishes_our_device);
