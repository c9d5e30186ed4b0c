//! OMEMO in group chats (XEP-0384 §6.5) between Linnet clients against the real servers:
//! a private group's messages are encrypted for every member's devices and our own other
//! devices, read live and from the room's archive, with only ciphertext on the wire; a
//! member without OMEMO, and encrypted files in a group; and interop in a group with an
//! independent client (slixmpp + python-omemo) speaking OMEMO 0.3, OMEMO 2 or both.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::{
    ConversationSnapshot, DeliveryState, DeviceTrust, Direction, Encryption, EncryptionPolicy,
    MessageItem, TransferState,
};
use linnet_tests::omemo_peer::{PyPeer, NS_03, NS_2};
use linnet_tests::*;
use linnet_xmpp::{BareJid, Event, Session};

fn find<'a>(s: &'a ConversationSnapshot, body: &str) -> Option<&'a MessageItem> {
    s.messages.iter().find(|m| m.body == body)
}

/// Waits until `who` shows `body` in `room`, decrypted, and returns it.
async fn decrypted(who: &TestClient, room: &str, body: &str) -> MessageItem {
    let s = who
        .wait_conversation(room, body, |s| find(s, body).is_some())
        .await;
    let m = find(&s, body).unwrap().clone();
    assert_eq!(m.encryption, Encryption::Omemo2, "{m:?}");
    assert_eq!(m.error, None);
    m
}

/// A raw session of an existing account, joined to `room` as `nick`: it sees what the room
/// sends, as the server has it.
async fn raw_member(
    server: Server,
    jid: &str,
    room: &str,
    nick: &str,
) -> (
    Session,
    tokio::sync::mpsc::UnboundedReceiver<linnet_xmpp::Event>,
) {
    let conn = linnet_xmpp::connect(&xmpp_config(server, jid))
        .await
        .unwrap();
    let (session, events) = Session::start(conn, BareJid::parse(jid).unwrap());
    session
        .muc_join(&BareJid::parse(room).unwrap(), nick, None)
        .unwrap();
    (session, events)
}

/// Alice creates a private group with Bob and Carol; her second device is in it through
/// the bookmark. What each writes is decrypted by everyone else, Alice's other device
/// included, and is marked as coming from a blindly trusted device; the room passes on
/// only the fallback text and ciphertext. A correction is encrypted too, and Bob, offline
/// meanwhile, decrypts what he missed from the room's archive.
async fn a_private_group_is_encrypted_for_every_member(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let c = TestClient::register(server, "carol").await;
    let a2 = a.another_device(server).await;
    let group = a.client.create_group(a.account, "Secrets").await.unwrap();
    let room = room_of(&a, group);
    for who in [&b, &c] {
        a.client
            .invite_to_group(group, &who.jid, None)
            .await
            .unwrap();
        accept_group_invitation(who, &room).await;
    }
    a2.wait_conversation(&room, "in the group from the bookmark", group_joined)
        .await;
    let (_watch, mut wire) = raw_member(server, &b.jid, &room, "watcher").await;

    let id = a
        .client
        .send_message(a.account, &room, "meet at noon")
        .unwrap();
    for who in [&b, &c] {
        let m = decrypted(who, &room, "meet at noon").await;
        assert_eq!(m.direction, Direction::Incoming);
        assert!(m.sender_nick.as_deref().unwrap().starts_with("alice"));
        assert_eq!(m.trust, Some(DeviceTrust::Blind));
    }
    let m = decrypted(&a2, &room, "meet at noon").await;
    assert_eq!(
        m.direction,
        Direction::Outgoing,
        "ours, from the other device"
    );
    let s = a
        .wait_conversation(&room, "the room's copy", |s| {
            s.messages
                .iter()
                .any(|m| m.id == id && m.state == DeliveryState::Delivered)
        })
        .await;
    assert_eq!(
        s.messages.len(),
        1,
        "the reflection is not a second message"
    );
    assert_eq!(s.messages[0].encryption, Encryption::Omemo2);
    assert_eq!(
        a.client.encryption_policy(group).unwrap(),
        EncryptionPolicy::Omemo,
        "once encrypted, the group stays so"
    );

    // On the wire: ciphertext and the fallback text, never the words.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(ev) = wire.recv().await {
            if let Event::RoomMessage(m) = ev {
                if m.msg
                    .nick
                    .as_deref()
                    .is_some_and(|n| n.starts_with("alice"))
                {
                    return m;
                }
            }
        }
        panic!("the watcher's session ended");
    })
    .await
    .expect("the room's message reaches the watcher");
    assert_eq!(
        seen.msg.body.as_deref(),
        Some(linnet_xmpp::omemo::FALLBACK_BODY)
    );
    assert!(seen.encrypted.iter().all(|e| e.is_ok()) && !seen.encrypted.is_empty());

    b.client
        .send_message(b.account, &room, "noon works")
        .unwrap();
    for who in [&a, &c, &a2] {
        decrypted(who, &room, "noon works").await;
    }

    // A correction goes encrypted, and replaces the text on every side.
    a.client
        .correct_message(a.account, id, "meet at one")
        .unwrap();
    for who in [&b, &c] {
        let s = who
            .wait_conversation(&room, "the correction", |s| {
                find(s, "meet at one").is_some_and(|m| m.edited)
            })
            .await;
        assert!(find(&s, "meet at noon").is_none());
    }

    // Bob is away; what he missed comes from the room's archive, and decrypts.
    b.client.logout(b.account).await.unwrap();
    for i in 0..5 {
        c.client
            .send_message(c.account, &room, &format!("while away {i}"))
            .unwrap();
    }
    c.wait_conversation(&room, "carol's messages reflected", |s| {
        s.messages
            .iter()
            .filter(|m| m.direction == Direction::Outgoing && m.state == DeliveryState::Delivered)
            .count()
            == 5
    })
    .await;
    b.client.login(b.account).await.unwrap();
    for i in 0..5 {
        let m = decrypted(&b, &room, &format!("while away {i}")).await;
        assert!(m.sender_nick.as_deref().unwrap().starts_with("carol"));
    }
}

/// A member whose client has no OMEMO: with the default choice the group's messages go in
/// the clear so that they can read them; once the group is set to encrypt, a message fails
/// with a reason naming that member, and nothing goes in the clear.
async fn a_member_without_omemo(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let group = a.client.create_group(a.account, "Mixed").await.unwrap();
    let room = room_of(&a, group);
    let (dave, mut wire) = raw_occupant(server, &a, group, &room).await;
    a.wait_conversation(&room, "dave in", |s| {
        s.group
            .as_ref()
            .is_some_and(|g| g.occupants.iter().any(|o| o.nick == "dave"))
    })
    .await;

    a.client
        .send_message(a.account, &room, "hello dave")
        .unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(ev) = wire.recv().await {
            if let Event::RoomMessage(m) = ev {
                if m.msg.body.is_some() && m.msg.nick.as_deref() != Some("dave") {
                    return m;
                }
            }
        }
        panic!("dave's session ended");
    })
    .await
    .expect("the message reaches dave");
    assert_eq!(seen.msg.body.as_deref(), Some("hello dave"));
    assert!(seen.encrypted.is_empty());
    assert_eq!(
        a.client.encryption_policy(group).unwrap(),
        EncryptionPolicy::Auto
    );

    a.client
        .set_encryption_policy(group, EncryptionPolicy::Omemo)
        .unwrap();
    let id = a.client.send_message(a.account, &room, "secret").unwrap();
    let s = a
        .wait_conversation(&room, "the message failed", |s| {
            s.messages
                .iter()
                .any(|m| m.id == id && m.state == DeliveryState::Failed)
        })
        .await;
    let m = s.messages.iter().find(|m| m.id == id).unwrap();
    let why = m.error.as_deref().unwrap();
    assert!(
        why.contains(dave.own_jid().as_str()) && why.contains("no OMEMO device"),
        "{why}"
    );
    // Nothing of it reached the room.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    while let Ok(ev) = wire.try_recv() {
        if let Event::RoomMessage(m) = ev {
            assert_ne!(m.msg.body.as_deref(), Some("secret"));
        }
    }
}

/// Membership changes of people not in the room reach those in it (the room says so):
/// Carol's list of whom to encrypt for gains Bob when Alice makes him a member, and loses
/// him when she takes it back.
async fn members_followed_while_they_are_away(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let c = TestClient::register(server, "carol").await;
    let group = a.client.create_group(a.account, "Club").await.unwrap();
    let room = room_of(&a, group);
    a.client.invite_to_group(group, &c.jid, None).await.unwrap();
    accept_group_invitation(&c, &room).await;
    let has_bob = |s: &ConversationSnapshot| {
        s.group
            .as_ref()
            .is_some_and(|g| g.members.iter().any(|m| m.jid == b.jid))
    };
    a.client
        .set_group_affiliation(group, &b.jid, "member")
        .await
        .unwrap();
    c.wait_conversation(&room, "bob a member", has_bob).await;
    a.client
        .set_group_affiliation(group, &b.jid, "none")
        .await
        .unwrap();
    c.wait_conversation(&room, "bob no longer a member", |s| !has_bob(s))
        .await;
}

/// A file in a private group goes encrypted (XEP-0454): Bob's copy shows it as an encrypted
/// file, and downloading it gives Alice's bytes.
async fn an_encrypted_file_in_a_group(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let group = a.client.create_group(a.account, "Photos").await.unwrap();
    let room = room_of(&a, group);
    a.client.invite_to_group(group, &b.jid, None).await.unwrap();
    accept_group_invitation(&b, &room).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.txt");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let id = a.client.send_file(a.account, &room, &path).await.unwrap();
    a.wait_conversation(&room, "the room's copy of the file", |s| {
        s.messages.iter().any(|m| {
            m.id == id
                && m.state == DeliveryState::Delivered
                && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Uploaded)
        })
    })
    .await;
    let s = b
        .wait_conversation(&room, "the file", |s| {
            s.messages.iter().any(|m| m.attachment.is_some())
        })
        .await;
    let m = s.messages.iter().find(|m| m.attachment.is_some()).unwrap();
    let f = m.attachment.as_ref().unwrap();
    assert!(f.encrypted, "{f:?}");
    assert_eq!(m.encryption, Encryption::Omemo2);
    assert_eq!(m.body, "", "the link, which holds the key, is not shown");
    let down = tempfile::tempdir().unwrap();
    let saved = b.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(std::fs::read(saved).unwrap(), content);
}

/// Alice (two devices) and a python-omemo client in a private group: the peer's messages,
/// its first a key exchange, are decrypted on both of Alice's devices, and Alice's reach
/// the peer, in the version it speaks; each side checks the room named in OMEMO 2's
/// envelope.
async fn python_in_a_group(server: Server, versions: &str) {
    let (peer_ns, ours) = match versions {
        "03" => (NS_03, Encryption::Omemo03),
        _ => (NS_2, Encryption::Omemo2),
    };
    let storage = tempfile::tempdir().unwrap();
    let a = TestClient::register(server, "alice").await;
    let a2 = a.another_device(server).await;
    let peer_jid = fresh_jid(server, &format!("py{versions}"));
    let mut peer = PyPeer::start(
        server,
        &peer_jid,
        versions,
        &storage.path().join("peer.json"),
    )
    .await;
    let group = a
        .client
        .create_group(a.account, "Mixed company")
        .await
        .unwrap();
    let room = room_of(&a, group);
    a.client
        .invite_to_group(group, &peer_jid, None)
        .await
        .unwrap();
    peer.join(&room, "py").await;
    a.wait_conversation(&room, "the peer in the group", |s| {
        s.group
            .as_ref()
            .is_some_and(|g| g.occupants.iter().any(|o| o.nick == "py"))
    })
    .await;
    a2.wait_conversation(&room, "in the group", group_joined)
        .await;

    for (i, text) in ["hallo from python 🐍", "and again"].iter().enumerate() {
        peer.group_send(&room, "auto", text, &[&a.jid]).await;
        for who in [&a, &a2] {
            let s = who
                .wait_conversation(&room, text, |s| find(s, text).is_some())
                .await;
            let m = find(&s, text).unwrap();
            assert_eq!((m.encryption, m.error.as_deref()), (ours, None), "{m:?}");
            assert_eq!(m.sender_nick.as_deref(), Some("py"));
        }
        let mine = format!("reply {i} from linnet, ü");
        a.client.send_message(a.account, &room, &mine).unwrap();
        assert_eq!(peer.group_received(&room, &a.jid, &mine).await, peer_ns);
    }
    if versions != "03" {
        // An envelope naming someone other than the room: a private message passed off as
        // the group's. Shown as undecryptable, with the reason, not as the group's words.
        peer.group_send_naming(&room, "2", "misrouted", &[&a.jid], &a.jid)
            .await;
        let s = a
            .wait_conversation(&room, "the misrouted message", |s| {
                s.messages.iter().any(|m| {
                    m.error
                        .as_deref()
                        .is_some_and(|e| e.contains("names another recipient"))
                })
            })
            .await;
        assert!(find(&s, "misrouted").is_none());
    }
    peer.quit().await;
}

async fn python_omemo_03_in_a_group(server: Server) {
    python_in_a_group(server, "03").await
}

async fn python_omemo_2_in_a_group(server: Server) {
    python_in_a_group(server, "2").await
}

async fn python_with_both_versions_in_a_group(server: Server) {
    python_in_a_group(server, "both").await
}

both_servers!(
    python_omemo_03_in_a_group,
    python_omemo_2_in_a_group,
    python_with_both_versions_in_a_group,
    a_private_group_is_encrypted_for_every_member,
    a_member_without_omemo,
    members_followed_while_they_are_away,
    an_encrypted_file_in_a_group,
);
