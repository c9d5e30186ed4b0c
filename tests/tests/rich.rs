//! Rich messages through the real servers: corrections, retractions, replies, reactions,
//! displayed markers, typing and styling; and who may change what.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::{
    ConversationSnapshot, DeliveryState, Direction, Encryption, MessageItem, TextStyle,
};
use linnet_tests::*;

fn find<'a>(s: &'a ConversationSnapshot, body: &str) -> Option<&'a MessageItem> {
    s.messages.iter().find(|m| m.body == body)
}

async fn wait_devices(a: &TestClient, b: &TestClient) {
    for (me, other) in [(a, b), (b, a)] {
        let dev = other.client.own_omemo_device(other.account).unwrap();
        wait_until("the contact's OMEMO device", || {
            me.client
                .omemo_devices(me.account, &other.jid)
                .map(|ds| ds.iter().any(|d| d.device_id == dev && d.active))
                .unwrap_or(false)
        })
        .await;
    }
}

/// A correction, a reply and a retraction between two Linnet clients, all encrypted: each
/// shows on both sides, and a device of the sender that logs in later finds the history
/// as changed (the changes come from the archive like messages).
async fn corrections_replies_and_retractions(server: Server) {
    let (a, b) = contacts_pair(server).await;
    wait_devices(&a, &b).await;
    let sent = a
        .client
        .send_message(a.account, &b.jid, "helo wrld")
        .unwrap();
    let got = b
        .wait_conversation(&a.jid, "the message", |s| find(s, "helo wrld").is_some())
        .await;
    let at_b = find(&got, "helo wrld").unwrap().id;

    a.client
        .correct_message(a.account, sent, "hello world")
        .unwrap();
    let mine = a
        .wait_conversation(&b.jid, "the correction shown at once", |s| {
            find(s, "hello world").is_some_and(|m| m.edited && m.id == sent)
        })
        .await;
    assert_eq!(mine.messages.len(), 1, "a correction is not a message");
    let got = b
        .wait_conversation(&a.jid, "the correction", |s| {
            find(s, "hello world").is_some_and(|m| m.edited && m.id == at_b)
        })
        .await;
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].encryption, Encryption::Omemo2);

    b.client.reply(b.account, at_b, "*yes*, it works").unwrap();
    let got = a
        .wait_conversation(&b.jid, "the reply", |s| {
            find(s, "*yes*, it works").is_some()
        })
        .await;
    let reply = find(&got, "*yes*, it works").unwrap();
    assert_eq!(reply.encryption, Encryption::Omemo2);
    let preview = reply.reply_to.as_ref().unwrap();
    assert_eq!(preview.message, Some(sent));
    assert_eq!(preview.excerpt, "hello world");
    assert_eq!(preview.sender, a.jid);
    assert_eq!(reply.spans.len(), 1);
    assert_eq!(reply.spans[0].style, TextStyle::Strong);
    assert_eq!((reply.spans[0].start, reply.spans[0].end), (0, 5));

    a.client.retract_message(a.account, sent).unwrap();
    let got = b
        .wait_conversation(&a.jid, "the retraction", |s| {
            s.messages.iter().any(|m| m.id == at_b && m.retracted)
        })
        .await;
    let gone = got.messages.iter().find(|m| m.id == at_b).unwrap();
    assert_eq!(gone.body, "");
    // The reply stays, and no longer quotes what was deleted.
    let reply = find(&got, "*yes*, it works").unwrap();
    assert_eq!(reply.reply_to.as_ref().unwrap().excerpt, "");
    // Retracted messages cannot be changed any more.
    assert!(a.client.correct_message(a.account, sent, "again").is_err());

    // A new device of A's cannot decrypt what came before it existed, but it has the
    // history from the archive with the changes applied: the retraction and the reply's
    // link (neither of which is secret).
    let a2 = a.another_device(server).await;
    let got = a2
        .wait_conversation(&b.jid, "the history, as changed, on a new device", |s| {
            s.messages.len() == 2 && s.messages[0].retracted && s.messages[1].reply_to.is_some()
        })
        .await;
    let first = &got.messages[0];
    assert_eq!(first.direction, Direction::Outgoing);
    assert_eq!(
        got.messages[1].reply_to.as_ref().unwrap().message,
        Some(first.id)
    );
}

/// Reactions (a new set replaces the sender's old one), displayed markers (our messages
/// become read when the peer reads them, and the peer's other device reads along), and
/// typing notifications.
async fn reactions_markers_and_typing(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let sent = a
        .client
        .send_message(a.account, &b.jid, "pick one")
        .unwrap();
    let got = b
        .wait_conversation(&a.jid, "the message", |s| find(s, "pick one").is_some())
        .await;
    let at_b = find(&got, "pick one").unwrap().id;

    b.client
        .react(b.account, at_b, &["👍".into(), "🎉".into()])
        .unwrap();
    a.wait_conversation(&b.jid, "two reactions", |s| {
        s.messages.iter().any(|m| {
            m.id == sent
                && m.reactions.len() == 2
                && m.reactions
                    .iter()
                    .all(|r| r.senders == vec![b.jid.clone()] && !r.mine)
        })
    })
    .await;
    b.client.react(b.account, at_b, &["👍".into()]).unwrap();
    a.client.react(a.account, sent, &["👍".into()]).unwrap();
    let got = b
        .wait_conversation(&a.jid, "one reaction, from both", |s| {
            s.messages
                .iter()
                .any(|m| m.id == at_b && m.reactions.len() == 1 && m.reactions[0].count == 2)
        })
        .await;
    assert!(got.messages[0].reactions[0].mine);
    a.wait_conversation(&b.jid, "the replaced set", |s| {
        s.messages
            .iter()
            .any(|m| m.id == sent && m.reactions.len() == 1 && m.reactions[0].count == 2)
    })
    .await;
    assert!(b.client.react(b.account, at_b, &["x".repeat(100)]).is_err());

    // Displayed: B reads; A's message becomes read at A.
    let b2 = b.another_device(server).await;
    // The message came before this device existed: it cannot decrypt it (if it was
    // encrypted), but has it, unread, from the archive.
    b2.wait_conversation(&a.jid, "the message on B's second device", |s| {
        s.unread == 1
    })
    .await;
    let conv_b = b.client.open_conversation(b.account, &a.jid).unwrap();
    b.client.mark_read(conv_b).unwrap();
    a.wait_conversation(&b.jid, "read by B", |s| {
        s.messages
            .iter()
            .any(|m| m.id == sent && m.state == DeliveryState::Read)
    })
    .await;
    // B's other device learns that B read it (the marker's carbon).
    b2.wait_list("read on the other device", |s| {
        s.conversations
            .iter()
            .any(|c| c.peer == a.jid && c.unread == 0 && c.last_message.is_some())
    })
    .await;

    // Typing.
    b.client.set_typing(conv_b, true).unwrap();
    a.wait_conversation(&b.jid, "B typing", |s| s.peer_typing)
        .await;
    b.client.set_typing(conv_b, false).unwrap();
    a.wait_conversation(&b.jid, "B stopped typing", |s| !s.peer_typing)
        .await;
    b.client.set_typing(conv_b, true).unwrap();
    a.wait_conversation(&b.jid, "B typing again", |s| s.peer_typing)
        .await;
    b.client.send_message(b.account, &a.jid, "done").unwrap();
    a.wait_conversation(&b.jid, "the message ends the typing", |s| {
        !s.peer_typing && find(s, "done").is_some()
    })
    .await;
}

/// A raw session of a fresh account, its events drained.
/// Corrections, retractions, reactions and markers change only what their sender may
/// change: the peer cannot correct or delete our messages, a third party cannot touch
/// the peer's, and a far-future time stamp does not put a message after later ones.
async fn nobody_changes_what_is_not_theirs(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let a_full = a.client.bound_jid(a.account).unwrap();
    let (bob, bob_jid) = raw_peer(server, "bob").await;
    let (eve, eve_jid) = raw_peer(server, "eve").await;

    bob.send_xml(&raw_chat(&a_full, "b1", "<body>from bob</body>"))
        .unwrap();
    a.wait_conversation(&bob_jid, "Bob's message", |s| find(s, "from bob").is_some())
        .await;
    let mine = a
        .client
        .send_message(a.account, &bob_jid, "from alice")
        .unwrap();
    let origin = a.open_store().message(mine).unwrap().origin_id.unwrap();

    // Eve names Bob's message: a correction, a retraction, a reaction.
    eve.send_xml(&raw_chat(
        &a_full,
        "e1",
        "<body>eve edits</body><replace xmlns='urn:xmpp:message-correct:0' id='b1'/>",
    ))
    .unwrap();
    eve.send_xml(&raw_chat(
        &a_full,
        "e2",
        "<retract xmlns='urn:xmpp:message-retract:1' id='b1'/><body>/me retracted</body>",
    ))
    .unwrap();
    eve.send_xml(&raw_chat(
        &a_full,
        "e3",
        "<reactions xmlns='urn:xmpp:reactions:0' id='b1'><reaction>😈</reaction></reactions>",
    ))
    .unwrap();
    eve.send_xml(&raw_chat(
        &a_full,
        "e4",
        &format!("<displayed xmlns='urn:xmpp:chat-markers:0' id='{origin}'/>"),
    ))
    .unwrap();
    // Bob names Alice's message: a correction and a retraction.
    bob.send_xml(&raw_chat(
        &a_full,
        "b2",
        &format!("<body>bob edits alice</body><replace xmlns='urn:xmpp:message-correct:0' id='{origin}'/>"),
    ))
    .unwrap();
    bob.send_xml(&raw_chat(
        &a_full,
        "b3",
        &format!("<retract xmlns='urn:xmpp:message-retract:1' id='{origin}'/>"),
    ))
    .unwrap();
    // From the far future.
    bob.send_xml(&raw_chat(
        &a_full,
        "b4",
        "<body>from 2099</body><delay xmlns='urn:xmpp:delay' stamp='2099-01-01T00:00:00Z'/>",
    ))
    .unwrap();
    // Controls: Bob's own changes, which must work.
    bob.send_xml(&raw_chat(
        &a_full,
        "b5",
        "<body>from bob, fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='b1'/>",
    ))
    .unwrap();
    bob.send_xml(&raw_chat(
        &a_full,
        "b6",
        &format!("<reactions xmlns='urn:xmpp:reactions:0' id='{origin}'><reaction>👍</reaction></reactions>"),
    ))
    .unwrap();
    bob.send_xml(&raw_chat(&a_full, "b7", "<body>control</body>"))
        .unwrap();
    eve.send_xml(&raw_chat(&a_full, "e5", "<body>eve control</body>"))
        .unwrap();

    // Each sender's stanzas arrive in order, so once their controls are here, all is.
    a.wait_conversation(&eve_jid, "Eve's control message", |s| {
        find(s, "eve control").is_some()
    })
    .await;
    let s = a
        .wait_conversation(&bob_jid, "Bob's control message", |s| {
            find(s, "control").is_some()
        })
        .await;
    let bobs = find(&s, "from bob, fixed").expect("Bob may correct his own message");
    assert!(bobs.edited && bobs.reactions.is_empty() && !bobs.retracted);
    let alices = s.messages.iter().find(|m| m.id == mine).unwrap();
    assert_eq!(
        alices.body, "from alice",
        "Bob cannot change Alice's message"
    );
    assert!(!alices.edited && !alices.retracted);
    assert_ne!(
        alices.state,
        DeliveryState::Read,
        "Eve's marker is not Bob's"
    );
    assert_eq!(alices.reactions.len(), 1);
    assert_eq!(alices.reactions[0].senders, vec![bob_jid.clone()]);
    // What Bob meant as a correction of Alice's message shows as his own message.
    let shown = find(&s, "bob edits alice").unwrap();
    assert_eq!(shown.direction, Direction::Incoming);
    // The far-future message stays before the messages that came after it.
    let pos = |body: &str| s.messages.iter().position(|m| m.body == body).unwrap();
    assert!(pos("from 2099") < pos("control"), "{:#?}", s.messages);

    // In the conversation with Eve: her "correction" stands as her own message, which her
    // retraction of the same id then deletes; nothing else.
    let s = a.client.open_conversation(a.account, &eve_jid).unwrap();
    let eves = a.client.messages(s, None, 10).unwrap();
    assert_eq!(eves.len(), 2, "{eves:#?}");
    assert!(eves[0].retracted && eves[0].direction == Direction::Incoming);
    assert!(eves[0].reactions.is_empty());
}

both_servers!(
    corrections_replies_and_retractions,
    reactions_markers_and_typing,
    nobody_changes_what_is_not_theirs,
);
