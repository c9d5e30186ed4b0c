//! Roster, messages, receipts, carbons, offline delivery and snapshots on the real servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use linnet_client::{ChatListSnapshot, DeliveryState, Direction, SubscriptionRequestItem};
use linnet_tests::*;
use linnet_xmpp::{BareJid, Event};

async fn roster_add_and_approve(server: Server) {
    let (a, b) = contacts_pair(server).await;
    // Names set when adding show up in the chat list once a conversation exists.
    a.client.open_conversation(a.account, &b.jid).unwrap();
    a.wait_list("named conversation", |s| {
        s.conversations
            .iter()
            .any(|c| c.peer == b.jid && c.name.as_deref() == Some("Bob"))
    })
    .await;
    // The request is gone once approved.
    let snap = b.client.chat_list();
    assert!(snap.accounts[0].subscription_requests.is_empty());
}

async fn deny_leaves_no_subscription(server: Server) {
    let a = TestClient::register(server, "asker").await;
    let b = TestClient::register(server, "denier").await;
    a.client.add_contact(a.account, &b.jid, None).await.unwrap();
    let a_jid = a.jid.clone();
    b.wait_list("request", |s| {
        request_jids(&s.accounts[0]).contains(&a_jid.as_str())
    })
    .await;
    b.client.deny_contact(b.account, &a.jid).await.unwrap();
    b.wait_list("request gone", |s| {
        s.accounts[0].subscription_requests.is_empty()
    })
    .await;
    wait_until("a's pending request cancelled", || {
        a.client
            .contacts(a.account)
            .map(|cs| {
                cs.iter()
                    .any(|c| c.jid == b.jid && !c.ask && c.subscription == "none")
            })
            .unwrap_or(false)
    })
    .await;
    // Copies of the request re-sent before the server processed the denial are dropped,
    // but a request made after it is shown again.
    a.client.add_contact(a.account, &b.jid, None).await.unwrap();
    b.wait_list("asked again", |s| {
        request_jids(&s.accounts[0]).contains(&a_jid.as_str())
    })
    .await;
}

/// A client logged in at a scripted server that has served it up to its initial presence.
async fn logged_in_at_fake() -> (
    Arc<linnet_tests::fake::FakeServer>,
    TestClient,
    linnet_tests::fake::FakeSession,
) {
    let fake = Arc::new(linnet_tests::fake::FakeServer::start().await);
    let c = TestClient::at_fake(&fake);
    let f = fake.clone();
    let server = tokio::spawn(async move {
        let mut s = f.accept().await;
        s.serve_until("<presence").await;
        s
    });
    c.client.login(c.account).await.unwrap();
    let s = server.await.unwrap();
    (fake, c, s)
}

/// ejabberd re-sends pending requests on initial presence, so a copy can arrive after the
/// user denied but before the server processed the denial. Scripted here: the copy comes
/// between our `unsubscribed` and the server's acknowledgement of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_resent_before_the_denial_is_processed_stays_denied() {
    let (_fake, c, mut s) = logged_in_at_fake().await;
    let asker = "asker@fake.test";
    let subscribe = format!(
        "<presence xmlns='jabber:client' from='{asker}' to='user@fake.test' type='subscribe'/>"
    );
    s.send(&subscribe).await;
    c.wait_list("request", |l| request_jids(&l.accounts[0]) == [asker])
        .await;
    c.client.deny_contact(c.account, asker).await.unwrap();
    s.serve_until("unsubscribed").await;
    s.send(&subscribe).await;
    s.serve_until("<r xmlns").await;
    // After the acknowledgement: a message marks the point the copy has been handled.
    s.send(&format!("<message xmlns='jabber:client' from='{asker}/x' to='user@fake.test/r1' type='chat' id='m1'><body>after</body></message>")).await;
    c.wait_list("marker message", |l| !l.conversations.is_empty())
        .await;
    assert!(c.client.chat_list().accounts[0]
        .subscription_requests
        .is_empty());
    // A request after the denial was processed is a new one.
    s.send(&subscribe).await;
    c.wait_list("new request", |l| request_jids(&l.accounts[0]) == [asker])
        .await;
}

/// The request of the peer `jid` in the account's snapshot.
fn request<'a>(s: &'a ChatListSnapshot, jid: &str) -> Option<&'a SubscriptionRequestItem> {
    s.accounts[0]
        .subscription_requests
        .iter()
        .find(|r| r.jid == jid)
}

/// XEP-0172 §4.2: our requests carry our nickname, both when adding a contact and when
/// asking back on approval; the one a request claims shows beside it, and is no more than
/// that hint (not the name the asker's conversation gets).
async fn subscription_requests_carry_nicknames(server: Server) {
    let a = TestClient::register(server, "nicked").await;
    let b = TestClient::register(server, "asked").await;
    let c = TestClient::register(server, "plain").await;
    a.client
        .set_nickname(a.account, Some("Alice Liddell"))
        .await
        .unwrap();
    a.client.add_contact(a.account, &b.jid, None).await.unwrap();
    c.client.add_contact(c.account, &b.jid, None).await.unwrap();
    let (a_jid, c_jid) = (a.jid.clone(), c.jid.clone());
    let s = b
        .wait_list("both requests", |s| {
            request(s, &a_jid).is_some() && request(s, &c_jid).is_some()
        })
        .await;
    assert_eq!(
        request(&s, &a.jid).unwrap().nick.as_deref(),
        Some("Alice Liddell")
    );
    assert_eq!(request(&s, &c.jid).unwrap().nick, None);
    // Only a hint beside the JID: it names nothing.
    b.client.open_conversation(b.account, &a.jid).unwrap();
    let s = b
        .wait_list("conversation with the asker", |s| {
            s.conversations.iter().any(|c| c.peer == a_jid)
        })
        .await;
    let conv = s.conversations.iter().find(|c| c.peer == a.jid).unwrap();
    assert_eq!(conv.name, None);

    // B approves a peer that does not show B's presence yet: the request B sends back
    // carries B's nickname.
    b.client.set_nickname(b.account, Some("Bob")).await.unwrap();
    let (raw, mut events) = registered_session(server, "raw").await;
    raw.send_presence(None, None).unwrap();
    raw.send_subscribe(&BareJid::parse(&b.jid).unwrap(), None)
        .unwrap();
    let raw_jid = raw.own_jid().as_str().to_owned();
    let r = raw_jid.clone();
    let s = b
        .wait_list("the raw peer's request", |s| request(s, &r).is_some())
        .await;
    assert_eq!(request(&s, &raw_jid).unwrap().nick, None);
    b.client.approve_contact(b.account, &raw_jid).await.unwrap();
    let nick = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match events.recv().await.expect("raw session events") {
                Event::SubscriptionRequest { from, nick } if from.as_str() == b.jid => return nick,
                _ => {}
            }
        }
    })
    .await
    .expect("B's request back");
    assert_eq!(nick.as_deref(), Some("Bob"));
}

/// A re-sent request with a nickname updates the one shown; one re-sent without (as
/// ejabberd does on initial presence) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_resent_with_a_nickname_updates_it() {
    let (_fake, c, mut s) = logged_in_at_fake().await;
    let asker = "asker@fake.test";
    let plain = format!(
        "<presence xmlns='jabber:client' from='{asker}' to='user@fake.test' type='subscribe'/>"
    );
    let named = |nick: &str| {
        format!(
            "<presence xmlns='jabber:client' from='{asker}/x' to='user@fake.test' type='subscribe'>\
             <nick xmlns='http://jabber.org/protocol/nick'>{nick}</nick></presence>"
        )
    };
    let nick_is = |want: Option<&'static str>| {
        move |l: &ChatListSnapshot| request(l, asker).is_some_and(|r| r.nick.as_deref() == want)
    };
    s.send(&plain).await;
    c.wait_list("request without a nickname", nick_is(None))
        .await;
    s.send(&named("Ask Er")).await;
    c.wait_list("nickname added", nick_is(Some("Ask Er"))).await;
    s.send(&named("Asker")).await;
    c.wait_list("nickname replaced", nick_is(Some("Asker")))
        .await;
    s.send(&plain).await;
    // A message marks the point the copy has been handled.
    s.send(&format!("<message xmlns='jabber:client' from='{asker}/x' to='user@fake.test/r1' type='chat' id='m1'><body>after</body></message>")).await;
    let l = c
        .wait_list("marker message", |l| !l.conversations.is_empty())
        .await;
    assert!(nick_is(Some("Asker"))(&l));
    assert_eq!(l.accounts[0].subscription_requests.len(), 1);
}

async fn messages_both_ways_with_receipts(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let sent = a
        .client
        .send_message(a.account, &b.jid, "Hello Bob 👋")
        .unwrap();
    // Optimistic: the message is in the snapshot at once, before any network round trip.
    let conv = a
        .client
        .chat_list()
        .conversations
        .iter()
        .find(|c| c.peer == b.jid)
        .cloned()
        .unwrap();
    assert_eq!(conv.last_message.as_ref().unwrap().id, sent);
    let got = b
        .wait_conversation(&a.jid, "message from a", |s| {
            s.messages.iter().any(|m| m.body == "Hello Bob 👋")
        })
        .await;
    let m = got
        .messages
        .iter()
        .find(|m| m.body == "Hello Bob 👋")
        .unwrap();
    assert_eq!(m.direction, Direction::Incoming);
    assert_eq!(got.unread, 1);
    a.wait_conversation(&b.jid, "receipt", |s| {
        s.messages
            .iter()
            .any(|m| m.id == sent && m.state == DeliveryState::Delivered)
    })
    .await;

    let reply = b
        .client
        .send_message(b.account, &a.jid, "Hi Alice")
        .unwrap();
    a.wait_conversation(&b.jid, "reply", |s| {
        s.messages.iter().any(|m| m.body == "Hi Alice")
    })
    .await;
    b.wait_conversation(&a.jid, "reply receipt", |s| {
        s.messages
            .iter()
            .any(|m| m.id == reply && m.state == DeliveryState::Delivered)
    })
    .await;
    // Nothing readable on disk: the database (and its WAL) hold no body or JID in clear.
    for dev in [&a, &b] {
        assert!(dev.dir.path().join("linnet.db").exists());
        for entry in std::fs::read_dir(dev.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "hex") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for needle in ["Hello Bob", "Hi Alice", a.jid.as_str(), b.jid.as_str()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} contains plaintext",
                    path.display()
                );
            }
        }
    }
    // mark_read clears the unread count.
    let conv_b = b.client.open_conversation(b.account, &a.jid).unwrap();
    b.client.mark_read(conv_b).unwrap();
    let s = b.client.chat_list();
    assert_eq!(
        s.conversations
            .iter()
            .find(|c| c.id == conv_b)
            .unwrap()
            .unread,
        0
    );
}

async fn carbons_keep_devices_in_sync(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a2 = a.another_device(server).await;
    b.client
        .send_message(b.account, &a.jid, "to both of your devices")
        .unwrap();
    for dev in [&a, &a2] {
        dev.wait_conversation(&b.jid, "incoming on each device", |s| {
            s.messages
                .iter()
                .any(|m| m.body == "to both of your devices" && m.direction == Direction::Incoming)
        })
        .await;
    }
    a.client
        .send_message(a.account, &b.jid, "sent from device one")
        .unwrap();
    let s = a2
        .wait_conversation(&b.jid, "sent carbon on device two", |s| {
            s.messages.iter().any(|m| m.body == "sent from device one")
        })
        .await;
    let m = s
        .messages
        .iter()
        .find(|m| m.body == "sent from device one")
        .unwrap();
    assert_eq!(m.direction, Direction::Outgoing);
    // Each message appears once per device.
    assert_eq!(
        s.messages
            .iter()
            .filter(|m| m.body == "sent from device one")
            .count(),
        1
    );
}

async fn offline_messages_arrive_on_login(server: Server) {
    let (a, b) = contacts_pair(server).await;
    b.client.logout(b.account).await.unwrap();
    for i in 0..5 {
        a.client
            .send_message(a.account, &b.jid, &format!("while you were away {i}"))
            .unwrap();
    }
    // The server has them (acknowledged via stream management) before B is back.
    a.wait_conversation(&b.jid, "all sent", |s| {
        s.messages
            .iter()
            .filter(|m| m.state >= DeliveryState::Sent)
            .count()
            == 5
    })
    .await;
    b.client.login(b.account).await.unwrap();
    let s = b
        .wait_conversation(&a.jid, "offline messages", |s| {
            s.messages
                .iter()
                .filter(|m| m.body.starts_with("while you were away"))
                .count()
                == 5
        })
        .await;
    let bodies: Vec<_> = s.messages.iter().map(|m| m.body.as_str()).collect();
    let expected: Vec<String> = (0..5).map(|i| format!("while you were away {i}")).collect();
    assert_eq!(bodies, expected, "in order, once each");
}

async fn outbox_survives_being_offline(server: Server) {
    let (a, b) = contacts_pair(server).await;
    a.client.logout(a.account).await.unwrap();
    let id = a
        .client
        .send_message(a.account, &b.jid, "queued while offline")
        .unwrap();
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    let page = a.client.messages(conv, None, 10).unwrap();
    assert_eq!(
        page.iter().find(|m| m.id == id).unwrap().state,
        DeliveryState::Pending
    );
    a.client.login(a.account).await.unwrap();
    b.wait_conversation(&a.jid, "queued message", |s| {
        s.messages.iter().any(|m| m.body == "queued while offline")
    })
    .await;
    a.wait_conversation(&b.jid, "queued message delivered", |s| {
        s.messages
            .iter()
            .any(|m| m.id == id && m.state == DeliveryState::Delivered)
    })
    .await;
}

async fn snapshots_initial_then_ordered_updates(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let rec: Recorder<ChatListSnapshot> = Recorder::default();
    let sink = rec.clone();
    let sub = a
        .client
        .subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
            sink.0.lock().unwrap().push(s);
        });
    // Delivered synchronously by subscribe itself.
    let first = rec.snapshots();
    assert_eq!(first.len(), 1, "current snapshot first");
    assert_eq!(first[0].version, a.client.chat_list().version);
    for i in 0..20 {
        b.client
            .send_message(b.account, &a.jid, &format!("n{i}"))
            .unwrap();
    }
    a.wait_list("20 messages", |s| {
        s.conversations.iter().any(|c| {
            c.peer == b.jid && c.last_message.as_ref().map(|m| m.body.as_str()) == Some("n19")
        })
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(sub);
    let all = rec.snapshots();
    assert!(all.len() >= 2, "updates follow");
    assert!(
        all.windows(2).all(|w| w[0].version < w[1].version),
        "versions increase"
    );
    let last = all.last().unwrap();
    let conv = last.conversations.iter().find(|c| c.peer == b.jid).unwrap();
    assert_eq!(conv.unread, 20);
    // After the subscription is dropped nothing more is delivered.
    let n = rec.snapshots().len();
    b.client
        .send_message(b.account, &a.jid, "after drop")
        .unwrap();
    a.wait_list("after drop", |s| {
        s.conversations.iter().any(|c| c.unread == 21)
    })
    .await;
    assert_eq!(rec.snapshots().len(), n);
}

both_servers!(
    roster_add_and_approve,
    deny_leaves_no_subscription,
    subscription_requests_carry_nicknames,
    messages_both_ways_with_receipts,
    carbons_keep_devices_in_sync,
    offline_messages_arrive_on_login,
    outbox_survives_being_offline,
    snapshots_initial_then_ordered_updates,
);

async fn catch_up_burst_is_coalesced(server: Server) {
    let (a, b) = contacts_pair(server).await;
    b.client.logout(b.account).await.unwrap();
    const N: usize = 500;
    for i in 0..N {
        a.client
            .send_message(a.account, &b.jid, &format!("burst {i}"))
            .unwrap();
    }
    a.wait_conversation(&b.jid, "burst stored by the server", |s| {
        s.messages.iter().all(|m| m.state >= DeliveryState::Sent) && s.messages.len() == 50
    })
    .await;
    let (rec, _sub) = Recorder::chat_list(&b.client);
    b.client.login(b.account).await.unwrap();
    let a_jid = a.jid.clone();
    b.wait_list("whole burst", |s| {
        s.conversations
            .iter()
            .any(|c| c.peer == a_jid && c.unread as usize == N)
    })
    .await;
    let updates = rec.snapshots();
    let with_burst = updates
        .iter()
        .filter(|s| s.conversations.iter().any(|c| c.peer == a.jid))
        .count();
    println!("{server:?}: {N} messages during catch-up → {with_burst} chat-list updates");
    assert!(
        with_burst * 5 <= N,
        "{with_burst} updates for {N} messages: not coalesced"
    );
    assert!(updates.windows(2).all(|w| w[0].version < w[1].version));
    let conv = b.client.open_conversation(b.account, &a.jid).unwrap();
    let all = b.client.messages(conv, None, 1000).unwrap();
    let bodies: Vec<String> = all.into_iter().map(|m| m.body).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("burst {i}")).collect();
    assert_eq!(bodies, expected, "all {N}, once each, in order");
}

mod burst {
    use super::*;
    both_servers!(catch_up_burst_is_coalesced);
}
