//! Group chats through the client against the real servers, with three accounts: private
//! groups, invitations, messages, subject, nicknames, kicks, leaving; history from the
//! room's archive after being offline and on a new device (bookmarks with autojoin); and
//! changes from occupants who did not write what they name.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use linnet_client::{ConversationSnapshot, Direction, JoinState};
use linnet_tests::*;
use linnet_xmpp::{BareJid, Event};

fn joined(s: &ConversationSnapshot) -> bool {
    s.group
        .as_ref()
        .is_some_and(|g| g.joined == JoinState::Joined)
}

fn occupants(s: &ConversationSnapshot) -> Vec<String> {
    s.group
        .as_ref()
        .map(|g| g.occupants.iter().map(|o| o.nick.clone()).collect())
        .unwrap_or_default()
}

fn bodies(s: &ConversationSnapshot) -> Vec<String> {
    s.messages.iter().map(|m| m.body.clone()).collect()
}

/// The room JID of a group conversation.
fn room_of(c: &TestClient, group: linnet_client::ConversationId) -> String {
    c.client
        .chat_list()
        .conversations
        .iter()
        .find(|i| i.id == group)
        .map(|i| i.peer.clone())
        .unwrap()
}

async fn accept(c: &TestClient, room: &str) -> Arc<ConversationSnapshot> {
    let room_s = room.to_owned();
    c.wait_list("the invitation", |s| {
        s.accounts
            .iter()
            .any(|a| a.invitations.iter().any(|i| i.room == room_s))
    })
    .await;
    c.client.accept_invitation(c.account, room).await.unwrap();
    c.wait_conversation(room, "joined", joined).await
}

/// Alice creates a private group and invites Bob and Carol, who accept. Messages, the
/// subject, a nickname change, a kick and a leave show on everyone's side.
async fn a_private_group_of_three(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let c = TestClient::register(server, "carol").await;
    let group = a.client.create_group(a.account, "Plans").await.unwrap();
    let room = room_of(&a, group);
    let mine = a.wait_conversation(&room, "created", joined).await;
    let g = mine.group.as_ref().unwrap();
    assert!(g.private, "members only and non-anonymous: {g:?}");
    assert_eq!(g.affiliation.as_deref(), Some("owner"));
    assert_eq!(mine.name.as_deref(), Some("Plans"));
    assert!(a
        .client
        .chat_list()
        .conversations
        .iter()
        .any(|i| i.id == group && i.group));

    for who in [&b, &c] {
        a.client
            .invite_to_group(group, &who.jid, Some("come in"))
            .await
            .unwrap();
    }
    accept(&b, &room).await;
    accept(&c, &room).await;
    let nicks = |s: &ConversationSnapshot| {
        let o = occupants(s);
        ["alice", "bob", "carol"]
            .iter()
            .all(|n| o.iter().any(|x| x.starts_with(n)))
    };
    a.wait_conversation(&room, "everyone in", nicks).await;
    b.wait_conversation(&room, "everyone in", nicks).await;
    // The members list is the room's, read after joining.
    let jids: Vec<String> = [&a, &b, &c].iter().map(|w| w.jid.clone()).collect();
    b.wait_conversation(&room, "the members", |s| {
        let members = &s.group.as_ref().unwrap().members;
        jids.iter().all(|j| members.iter().any(|m| &m.jid == j))
    })
    .await;

    a.client
        .send_message(a.account, &room, "hello *all*")
        .unwrap();
    for who in [&b, &c] {
        let s = who
            .wait_conversation(&room, "alice's message", |s| {
                bodies(s).contains(&"hello *all*".into())
            })
            .await;
        let m = s.messages.iter().find(|m| m.body == "hello *all*").unwrap();
        assert_eq!(m.direction, Direction::Incoming);
        assert!(
            m.sender_nick.as_deref().unwrap().starts_with("alice"),
            "{m:?}"
        );
        assert_eq!(m.spans.len(), 1, "styled like any message");
    }
    // The room's copy of our own message confirms it reached the group.
    a.wait_conversation(&room, "reflected", |s| {
        s.messages.iter().any(|m| {
            m.body == "hello *all*"
                && m.direction == Direction::Outgoing
                && m.state == linnet_client::DeliveryState::Delivered
        })
    })
    .await;
    assert_eq!(
        a.client.messages(group, None, 10).unwrap().len(),
        1,
        "the reflection is not a second message"
    );

    a.client.set_group_subject(group, "Saturday").unwrap();
    for who in [&a, &b, &c] {
        who.wait_conversation(&room, "the subject", |s| {
            s.group.as_ref().and_then(|g| g.subject.as_deref()) == Some("Saturday")
        })
        .await;
    }

    let c_group = c.client.group_conversation(c.account, &room).unwrap();
    c.client.set_group_nick(c_group, "caz").unwrap();
    c.wait_conversation(&room, "renamed", |s| {
        s.group.as_ref().unwrap().nick == "caz"
    })
    .await;
    a.wait_conversation(&room, "carol renamed", |s| {
        occupants(s).contains(&"caz".to_owned())
    })
    .await;

    a.client
        .kick_from_group(group, "caz", Some("bye"))
        .await
        .unwrap();
    c.wait_conversation(&room, "kicked", |s| {
        s.group.as_ref().is_some_and(|g| {
            g.joined == JoinState::NotJoined && g.removed.as_deref() == Some("kicked")
        })
    })
    .await;
    a.wait_conversation(&room, "carol gone", |s| {
        !occupants(s).contains(&"caz".to_owned())
    })
    .await;

    let b_group = b.client.group_conversation(b.account, &room).unwrap();
    b.client.leave_group(b_group).await.unwrap();
    let left = b.wait_conversation(&room, "left", |s| !joined(s)).await;
    assert_eq!(
        left.group.as_ref().unwrap().removed,
        None,
        "left on our own"
    );
    a.wait_conversation(&room, "bob gone", |s| {
        !occupants(s).iter().any(|o| o.starts_with("bob"))
    })
    .await;
    // A message to a group we are not in waits rather than being refused by the room.
    assert!(b.client.send_message(b.account, &room, "late").is_ok());
}

/// Bob is offline while Alice writes: logging in again, he is back in the group and reads
/// what he missed from its archive. A new device of his finds the group through his
/// bookmarks, joins it, shows the newest page, and scrolls back to the rest.
async fn group_history_after_being_away(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let group = a.client.create_group(a.account, "").await.unwrap();
    let room = room_of(&a, group);
    a.client.invite_to_group(group, &b.jid, None).await.unwrap();
    accept(&b, &room).await;
    a.client.send_message(a.account, &room, "before").unwrap();
    b.wait_conversation(&room, "the first message", |s| {
        bodies(s).contains(&"before".into())
    })
    .await;

    b.client.logout(b.account).await.unwrap();
    let n = 70;
    for i in 0..n {
        a.client
            .send_message(a.account, &room, &format!("m{i:02}"))
            .unwrap();
    }
    let last = format!("m{:02}", n - 1);
    let a_all = || a.client.messages(group, None, 1000).unwrap();
    wait_until("all reflected", || {
        a_all()
            .iter()
            .filter(|m| m.state == linnet_client::DeliveryState::Delivered)
            .count()
            > n
    })
    .await;

    b.client.login(b.account).await.unwrap();
    b.wait_conversation(&room, "rejoined", joined).await;
    let b_group = b.client.group_conversation(b.account, &room).unwrap();
    wait_until("the missed messages", || {
        b.client.messages(b_group, None, 1000).unwrap().len() == n + 1
    })
    .await;
    let got: Vec<String> = b
        .client
        .messages(b_group, None, 1000)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    let mut want = vec!["before".to_owned()];
    want.extend((0..n).map(|i| format!("m{i:02}")));
    assert_eq!(got, want, "in order, once each");

    // A new device: the bookmark brings the group; its newest page shows first.
    let b2 = b.another_device(server).await;
    let s = b2
        .wait_conversation(&room, "joined from the bookmark", |s| {
            joined(s) && bodies(s).contains(&last)
        })
        .await;
    assert!(s.has_more, "older history is in the archive");
    assert_eq!(s.unread, 0, "history from before the join is not unread");
    let c2 = b2.client.group_conversation(b2.account, &room).unwrap();
    struct Ignore;
    impl linnet_client::ConversationListener for Ignore {
        fn on_update(&self, _: Arc<ConversationSnapshot>) {}
    }
    // Scrolling back widens an open conversation's window.
    let _open = b2.client.subscribe_conversation(c2, Ignore).unwrap();
    let mut all = Vec::new();
    for _ in 0..5 {
        b2.client.load_older(c2).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        all = b2
            .client
            .messages(c2, None, 1000)
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        if all.len() == n + 1 {
            break;
        }
    }
    assert_eq!(all, want, "scrolling back reads the rest of the archive");
}

/// A bookmark set for autojoin on one device joins the group on the other, online at the
/// time; leaving on one leaves on the other.
async fn bookmarks_carry_groups_across_devices(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let b2 = b.another_device(server).await;
    let group = a.client.create_group(a.account, "Family").await.unwrap();
    let room = room_of(&a, group);
    a.client.invite_to_group(group, &b.jid, None).await.unwrap();
    accept(&b, &room).await;
    b2.wait_conversation(&room, "joined on the other device, named", |s| {
        joined(s) && s.name.as_deref() == Some("Family")
    })
    .await;
    let b_group = b.client.group_conversation(b.account, &room).unwrap();
    b.client.leave_group(b_group).await.unwrap();
    b2.wait_conversation(&room, "left on the other device", |s| !joined(s))
        .await;
}

/// An occupant who did not write a message cannot retract or correct it; a groupchat
/// message from something that is not a room we are in is not taken as one.
async fn only_the_author_changes_a_group_message(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let (mallory, mut events) = registered_session(server, "mallory").await;
    let group = a.client.create_group(a.account, "").await.unwrap();
    let room = room_of(&a, group);
    a.client.invite_to_group(group, &b.jid, None).await.unwrap();
    a.client
        .invite_to_group(group, mallory.own_jid().as_str(), None)
        .await
        .unwrap();
    accept(&b, &room).await;
    let room_jid = BareJid::parse(&room).unwrap();
    mallory.muc_join(&room_jid, "mallory", None).unwrap();
    b.wait_conversation(&room, "mallory in", |s| {
        occupants(s).contains(&"mallory".to_owned())
    })
    .await;

    a.client.send_message(a.account, &room, "the plan").unwrap();
    let (origin, stanza_id) = loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(20), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let Event::RoomMessage(m) = ev {
            if m.msg.body.as_deref() == Some("the plan") {
                break (
                    m.msg.origin_id.clone().unwrap(),
                    m.msg.stanza_id.clone().unwrap(),
                );
            }
        }
    };
    let send = |xml: String| mallory.send_xml(&xml).unwrap();
    send(format!("<message xmlns='jabber:client' to='{room}' type='groupchat' id='r1'><retract xmlns='urn:xmpp:message-retract:1' id='{stanza_id}'/><body>x</body></message>"));
    send(format!("<message xmlns='jabber:client' to='{room}' type='groupchat' id='r2'><replace xmlns='urn:xmpp:message-correct:0' id='{origin}'/><body>the fake plan</body></message>"));
    send(format!("<message xmlns='jabber:client' to='{room}' type='groupchat' id='r3'><body>done</body></message>"));
    let s = b
        .wait_conversation(&room, "mallory's messages", |s| {
            bodies(s).contains(&"done".into())
        })
        .await;
    let plan = s.messages.iter().find(|m| m.body == "the plan").unwrap();
    assert!(!plan.retracted && !plan.edited, "{plan:?}");
    // XEP-0308: a correction that cannot apply is shown as the message it is.
    assert!(bodies(&s).contains(&"the fake plan".into()));

    // Mallory's bare JID is not a room Bob is in.
    send(format!("<message xmlns='jabber:client' to='{}' type='groupchat' id='g1'><body>not a room</body></message>", b.jid));
    a.client.send_message(a.account, &room, "after").unwrap();
    b.wait_conversation(&room, "the next message", |s| {
        bodies(s).contains(&"after".into())
    })
    .await;
    let list = b.client.chat_list();
    assert!(
        !list
            .conversations
            .iter()
            .any(|c| c.peer == mallory.own_jid().as_str()),
        "no conversation from a fake room"
    );
}

both_servers!(
    a_private_group_of_three,
    group_history_after_being_away,
    bookmarks_carry_groups_across_devices,
    only_the_author_changes_a_group_message,
);
