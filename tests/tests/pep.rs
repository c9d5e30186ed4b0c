//! PEP (XEP-0163): publishing with the node configuration OMEMO needs, and reading another
//! account's items, against the real servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_tests::*;
use linnet_xmpp::{BareJid, Event, NodeConfig, Published, RequestError, Session};

const DEVICES: &str = "urn:xmpp:omemo:2:devices";
const BUNDLES: &str = "urn:xmpp:omemo:2:bundles";

async fn registered(server: Server, tag: &str) -> (Session, BareJid) {
    let jid = fresh_jid(server, tag);
    linnet_xmpp::register(&xmpp_config(server, &jid))
        .await
        .unwrap();
    let conn = linnet_xmpp::connect(&xmpp_config(server, &jid))
        .await
        .unwrap();
    let bare = BareJid::parse(&jid).unwrap();
    (Session::start(conn, bare.clone()).0, bare)
}

fn open() -> NodeConfig {
    NodeConfig {
        access_model: Some("open".into()),
        max_items: Some("max".into()),
        ..NodeConfig::default()
    }
}

fn devices(id: u32) -> String {
    format!("<devices xmlns='urn:xmpp:omemo:2'><device id='{id}'/></devices>")
}

/// A device list published open is readable by someone who is not a contact, and a node
/// asked for with max_items=max keeps every item (a server's default is often one).
async fn open_nodes_are_readable_by_strangers(server: Server) {
    let (a, a_jid) = registered(server, "pepa").await;
    let (b, _) = registered(server, "pepb").await;
    let outcome = a
        .pep_publish(DEVICES, Some("current"), &devices(12345), &open())
        .await
        .unwrap();
    assert_eq!(outcome, Published::AsAsked);
    let items = b.pep_items(Some(&a_jid), DEVICES, None).await.unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].id.as_deref(), Some("current"));
    assert!(items[0].payload.contains("id=\"12345\"") || items[0].payload.contains("id='12345'"));
    for id in ["1", "2", "3"] {
        let bundle = format!("<bundle xmlns='urn:xmpp:omemo:2'><ik>{id}</ik></bundle>");
        a.pep_publish(BUNDLES, Some(id), &bundle, &open())
            .await
            .unwrap();
    }
    let bundles = b.pep_items(Some(&a_jid), BUNDLES, None).await.unwrap();
    assert_eq!(bundles.len(), 3, "{bundles:?}");
    let one = b.pep_items(Some(&a_jid), BUNDLES, Some("2")).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!(one[0].payload.contains(">2<"), "{one:?}");
}

/// A node that exists with another access model is reconfigured: the publish goes through
/// and strangers can read it afterwards (they could not before).
async fn a_node_configured_otherwise_is_reconfigured(server: Server) {
    let (a, a_jid) = registered(server, "pepc").await;
    let (b, _) = registered(server, "pepd").await;
    let presence_only = NodeConfig {
        access_model: Some("presence".into()),
        ..NodeConfig::default()
    };
    a.pep_publish(DEVICES, Some("current"), &devices(1), &presence_only)
        .await
        .unwrap();
    let refused = b.pep_items(Some(&a_jid), DEVICES, None).await;
    assert!(
        matches!(refused, Err(RequestError::Stanza { .. })),
        "a stranger cannot read a presence-access node: {refused:?}"
    );
    let outcome = a
        .pep_publish(DEVICES, Some("current"), &devices(2), &open())
        .await
        .unwrap();
    assert_eq!(outcome, Published::NodeConfigured);
    let items = b.pep_items(Some(&a_jid), DEVICES, None).await.unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items[0].payload.contains("'2'") || items[0].payload.contains("\"2\""));
}

/// Many accounts creating their nodes at the same moment all get them: ejabberd's node
/// creation can lose a database lock to another account's and refuse the publish with
/// item-not-found, which the session tries again.
async fn simultaneous_first_publishes_all_go_through(server: Server) {
    let mut sessions = Vec::new();
    for i in 0..8 {
        sessions.push(registered(server, &format!("pepf{i}")).await.0);
    }
    let mut publishes = tokio::task::JoinSet::new();
    for (i, s) in sessions.into_iter().enumerate() {
        publishes.spawn(async move {
            let nodes = [
                DEVICES,
                BUNDLES,
                "urn:xmpp:linnet:test:0",
                "urn:xmpp:linnet:test:1",
            ];
            for node in nodes {
                s.pep_publish(node, Some("current"), &devices(i as u32 + 1), &open())
                    .await
                    .map_err(|e| format!("{node}: {e:?}"))?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(outcome) = publishes.join_next().await {
        outcome.unwrap().unwrap();
    }
}

/// Bad arguments are errors, not panics, and nothing is sent.
async fn bad_arguments_are_refused(server: Server) {
    let (a, _) = registered(server, "pepe").await;
    let bad_xml = a
        .pep_publish(DEVICES, Some("current"), "<devices", &open())
        .await;
    assert!(
        matches!(bad_xml, Err(RequestError::BadArgument(_))),
        "{bad_xml:?}"
    );
    let no_node = a.pep_items(None, "", None).await;
    assert!(
        matches!(no_node, Err(RequestError::BadArgument(_))),
        "{no_node:?}"
    );
}

/// A contact's new device list reaches us as it is published: our presence carries our
/// capabilities (XEP-0115), the server learns our `+notify` features from them, and its
/// notification arrives as `Event::PepItems`.
async fn contacts_device_lists_are_pushed(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (a_session, _a_events) = raw_session(server, &a.jid).await;
    let (b_session, mut b_events) = raw_session(server, &b.jid).await;
    // Available, as a client publishing its device list is: ejabberd pushed nothing while
    // the publishing session was not.
    a_session.send_presence(None, None).unwrap();
    b_session.send_presence(None, None).unwrap();
    let a_jid = BareJid::parse(&a.jid).unwrap();
    // The server asks for our features when it first sees our capabilities, which may be
    // after the first publish: publish again until one is pushed.
    for round in 0..20u32 {
        let id = 1000 + round;
        a_session
            .pep_publish(DEVICES, Some("current"), &devices(id), &open())
            .await
            .unwrap();
        let pushed = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            loop {
                // The clients of both accounts publish device lists of their own too.
                match b_events.recv().await {
                    Some(Event::PepItems { from, node, items })
                        if node == DEVICES
                            && items.iter().any(|i| lists_device(&i.payload, id)) =>
                    {
                        return (from, items)
                    }
                    Some(_) => {}
                    None => panic!("session closed"),
                }
            }
        })
        .await;
        if let Ok((from, items)) = pushed {
            assert_eq!(from, a_jid);
            assert_eq!(items.len(), 1, "{items:?}");
            assert!(items[0].payload.contains("urn:xmpp:omemo:2"), "{items:?}");
            return;
        }
    }
    panic!("no device list was pushed");
}

fn lists_device(payload: &str, id: u32) -> bool {
    linnet_xmpp::omemo::DeviceListItem::from_xml(linnet_xmpp::omemo::OmemoVersion::V2, payload)
        .map(|l| l.devices.iter().any(|d| d.id == id))
        .unwrap_or(false)
}

async fn raw_session(
    server: Server,
    jid: &str,
) -> (Session, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let conn = linnet_xmpp::connect(&xmpp_config(server, jid))
        .await
        .unwrap();
    Session::start(conn, BareJid::parse(jid).unwrap())
}

both_servers!(
    contacts_device_lists_are_pushed,
    open_nodes_are_readable_by_strangers,
    a_node_configured_otherwise_is_reconfigured,
    bad_arguments_are_refused,
    simultaneous_first_publishes_all_go_through
);
