//! Rich messages through the real servers: corrections, retractions, replies, reactions,
//! displayed markers, typing and styling; and who may change what. Corrected replies, in
//! 1:1 conversations and in a group, as our clients and others see them.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_client::{
    ConversationSnapshot, DeliveryState, Direction, Encryption, MessageId, MessageItem, TextStyle,
};
use linnet_tests::*;
use linnet_xmpp::muc::RoomMessage;
use linnet_xmpp::rich::{Reply, NS_REPLY};
use linnet_xmpp::{ChatMessage, Event};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn find<'a>(s: &'a ConversationSnapshot, body: &str) -> Option<&'a MessageItem> {
    s.messages.iter().find(|m| m.body == body)
}

fn by_id(s: &ConversationSnapshot, id: MessageId) -> Option<&MessageItem> {
    s.messages.iter().find(|m| m.id == id)
}

/// `m` is shown as an answer to `question`.
fn answers(m: &MessageItem, question: MessageId) -> bool {
    m.reply_to
        .as_ref()
        .is_some_and(|p| p.message == Some(question))
}

/// No message of `s` shows a reply's quote.
fn no_quote(s: &ConversationSnapshot) -> bool {
    s.messages.iter().all(|m| !m.body.contains("> "))
}

/// The next item of `rx` that satisfies `pred` (others are skipped).
async fn next_where<T, F: Fn(&T) -> bool>(rx: &mut UnboundedReceiver<T>, what: &str, pred: F) -> T {
    let fut = async {
        loop {
            match rx.recv().await {
                Some(m) if pred(&m) => return m,
                Some(_) => {}
                None => panic!("events ended while waiting for {what}"),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(20), fut).await {
        Ok(m) => m,
        Err(_) => panic!("timed out waiting for {what}"),
    }
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

/// A corrected reply stays a reply, encrypted: Alice answers Bob's message, then corrects
/// her answer. Alice at once, Bob, and Alice's other device (by carbon) show the new text
/// alone, still answering Bob's message.
async fn a_corrected_reply_stays_a_reply(server: Server) {
    let (a, b) = contacts_pair(server).await;
    wait_devices(&a, &b).await;
    // Alice's other device, known to her first one, so that her messages reach it.
    let a2 = a.another_device(server).await;
    let a2_dev = a2.client.own_omemo_device(a2.account).unwrap();
    wait_until("A's second device at A", || {
        a.client
            .omemo_devices(a.account, &a.jid)
            .map(|ds| ds.iter().any(|d| d.device_id == a2_dev && d.active))
            .unwrap_or(false)
    })
    .await;

    let asked = b
        .client
        .send_message(b.account, &a.jid, "soup or salad?")
        .unwrap();
    let got = a
        .wait_conversation(&b.jid, "the question", |s| {
            find(s, "soup or salad?").is_some()
        })
        .await;
    let at_a = find(&got, "soup or salad?").unwrap().id;
    let answer = a.client.reply(a.account, at_a, "soup").unwrap();
    b.wait_conversation(&a.jid, "the answer", |s| {
        find(s, "soup").is_some_and(|m| answers(m, asked))
    })
    .await;
    a2.wait_conversation(&b.jid, "the answer on A's other device", |s| {
        find(s, "soup").is_some()
    })
    .await;

    a.client
        .correct_message(a.account, answer, "salad")
        .unwrap();
    let mine = a
        .wait_conversation(&b.jid, "the correction at once", |s| {
            by_id(s, answer).is_some_and(|m| m.body == "salad" && m.edited && answers(m, at_a))
        })
        .await;
    assert!(no_quote(&mine), "{:#?}", mine.messages);
    let got = b
        .wait_conversation(&a.jid, "the correction", |s| {
            find(s, "salad").is_some_and(|m| m.edited && answers(m, asked))
        })
        .await;
    assert!(no_quote(&got), "{:#?}", got.messages);
    assert_eq!(got.messages.len(), 2, "a correction is not a message");
    let corrected = find(&got, "salad").unwrap();
    assert_eq!(corrected.encryption, Encryption::Omemo2);
    assert_eq!(
        corrected.reply_to.as_ref().unwrap().excerpt,
        "soup or salad?"
    );
    // Bob's message may not have been encrypted for the other device (Bob need not know
    // it yet), but it is there to be answered.
    let other = a2
        .wait_conversation(&b.jid, "the correction on A's other device", |s| {
            find(s, "salad").is_some_and(|m| m.edited && m.direction == Direction::Outgoing)
        })
        .await;
    assert!(no_quote(&other), "{:#?}", other.messages);
    let question = other
        .messages
        .iter()
        .find(|m| m.direction == Direction::Incoming)
        .unwrap()
        .id;
    assert!(
        answers(find(&other, "salad").unwrap(), question),
        "{:#?}",
        other.messages
    );
}

/// What other clients see of our corrected reply, and what we show of theirs, with a raw
/// peer: our correction carries the reply and a fresh quote marked as its fallback (a
/// client that replaces the whole message still shows a reply); the peer's corrections of
/// an answer, with the quote again (as Conversations sends them) or with only the new text
/// (older clients), show without the quote and still answer our message. A device of ours
/// that comes later finds our corrected answer in the archive the same.
async fn a_corrected_reply_on_the_wire(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let a_full = a.client.bound_jid(a.account).unwrap();
    let (bob, mut events) = registered_session(server, "bob").await;
    bob.send_presence(None, None).unwrap();
    let bob_jid = bob.own_jid().as_str().to_owned();
    let (tx, mut received) = unbounded_channel::<ChatMessage>();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::Message(m) = ev {
                let _ = tx.send(m);
            }
        }
    });

    bob.send_xml(&raw_chat(&a_full, "b1", "<body>lunch?\nor later</body>"))
        .unwrap();
    let s = a
        .wait_conversation(&bob_jid, "Bob's question", |s| {
            find(s, "lunch?\nor later").is_some()
        })
        .await;
    let question = find(&s, "lunch?\nor later").unwrap().id;
    let answer = a.client.reply(a.account, question, "yes").unwrap();
    let origin = a.open_store().message(answer).unwrap().origin_id.unwrap();
    let m = next_where(&mut received, "the answer", |m| m.body.ends_with("yes")).await;
    assert_eq!(m.rich.reply.as_ref().map(|r| r.id.as_str()), Some("b1"));
    a.client
        .correct_message(a.account, answer, "yes, at one")
        .unwrap();
    let m = next_where(&mut received, "the correction", |m| {
        m.rich.replace.is_some()
    })
    .await;
    assert_eq!(m.rich.replace.as_deref(), Some(origin.as_str()));
    assert_eq!(
        m.rich.reply,
        Some(Reply {
            to: Some(bob_jid.clone()),
            id: "b1".into()
        })
    );
    assert_eq!(m.body, "> lunch?\n> or later\nyes, at one");
    assert_eq!(m.rich.strip_fallback(&m.body, &[NS_REPLY]), "yes, at one");
    let s = a
        .wait_conversation(&bob_jid, "the correction at once", |s| {
            by_id(s, answer).is_some_and(|m| m.edited)
        })
        .await;
    let mine = by_id(&s, answer).unwrap();
    assert_eq!(mine.body, "yes, at one");
    assert!(answers(mine, question));

    // Bob answers the answer and corrects his, quoting it each time.
    let quote = "> yes, at one\n";
    let reply = format!(
        "<reply xmlns='urn:xmpp:reply:0' to='{}' id='{origin}'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='0' end='{}'/></fallback>",
        a.jid,
        quote.chars().count()
    );
    bob.send_xml(&raw_chat(
        &a_full,
        "b2",
        &format!("<body>{quote}fine</body>{reply}"),
    ))
    .unwrap();
    bob.send_xml(&raw_chat(
        &a_full,
        "b3",
        &format!(
            "<body>{quote}fine by me</body>{reply}\
             <replace xmlns='urn:xmpp:message-correct:0' id='b2'/>"
        ),
    ))
    .unwrap();
    let s = a
        .wait_conversation(&bob_jid, "Bob's corrected answer", |s| {
            find(s, "fine by me").is_some_and(|m| m.edited && answers(m, answer))
        })
        .await;
    assert!(no_quote(&s), "{:#?}", s.messages);
    assert_eq!(s.messages.len(), 3, "{:#?}", s.messages);
    // An older client's correction: the new text only, still an answer.
    bob.send_xml(&raw_chat(
        &a_full,
        "b4",
        "<body>fine by me!</body><replace xmlns='urn:xmpp:message-correct:0' id='b2'/>",
    ))
    .unwrap();
    a.wait_conversation(&bob_jid, "Bob's answer corrected again", |s| {
        find(s, "fine by me!").is_some_and(|m| m.edited && answers(m, answer))
    })
    .await;

    // From the archive, on a new device: our corrected answer as corrected.
    let a2 = a.another_device(server).await;
    let s = a2
        .wait_conversation(&bob_jid, "the history on a new device", |s| {
            find(s, "yes, at one").is_some() && find(s, "fine by me!").is_some()
        })
        .await;
    assert!(no_quote(&s), "{:#?}", s.messages);
    let q = find(&s, "lunch?\nor later").unwrap().id;
    let mine = find(&s, "yes, at one").unwrap();
    assert!(mine.edited && mine.direction == Direction::Outgoing);
    assert!(answers(mine, q), "{:#?}", s.messages);
    assert!(answers(find(&s, "fine by me!").unwrap(), mine.id));
}

/// In a group: Alice answers Bob's message and corrects her answer. Alice at once and Bob
/// show the new text alone, still answering Bob's message, and the room's copy of the
/// correction changes nothing twice; on the wire (a raw occupant) the correction names
/// Bob's message by the room's id and Bob by his occupant JID, with a fresh quote.
async fn a_corrected_reply_in_a_group(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let group = a.client.create_group(a.account, "Lunch").await.unwrap();
    let room = room_of(&a, group);
    a.client.invite_to_group(group, &b.jid, None).await.unwrap();
    accept_group_invitation(&b, &room).await;
    let (_observer, mut events) = raw_occupant(server, &a, group, &room).await;
    let (tx, mut wire) = unbounded_channel::<RoomMessage>();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::RoomMessage(m) = ev {
                let _ = tx.send(*m);
            }
        }
    });
    a.wait_conversation(&room, "everyone in", |s| {
        s.group.as_ref().is_some_and(|g| g.occupants.len() == 3)
    })
    .await;
    let b_occupant = format!("{room}/{}", b.jid.split('@').next().unwrap());

    let asked = b
        .client
        .send_message(b.account, &room, "lunch at noon?")
        .unwrap();
    let s = a
        .wait_conversation(&room, "Bob's question", |s| {
            find(s, "lunch at noon?").is_some()
        })
        .await;
    let at_a = find(&s, "lunch at noon?").unwrap().id;
    let q = next_where(&mut wire, "the question on the wire", |m| {
        m.msg.body.as_deref() == Some("lunch at noon?")
    })
    .await;
    let room_id = q.msg.stanza_id.clone().unwrap();

    let answer = a.client.reply(a.account, at_a, "yes").unwrap();
    b.wait_conversation(&room, "the answer", |s| {
        find(s, "yes").is_some_and(|m| answers(m, asked))
    })
    .await;
    a.client
        .correct_message(a.account, answer, "yes, at one")
        .unwrap();
    a.wait_conversation(&room, "the correction at once", |s| {
        by_id(s, answer).is_some_and(|m| m.body == "yes, at one" && m.edited && answers(m, at_a))
    })
    .await;
    let s = b
        .wait_conversation(&room, "the correction", |s| {
            find(s, "yes, at one").is_some_and(|m| m.edited && answers(m, asked))
        })
        .await;
    assert!(no_quote(&s), "{:#?}", s.messages);
    assert_eq!(
        find(&s, "yes, at one")
            .unwrap()
            .reply_to
            .as_ref()
            .unwrap()
            .excerpt,
        "lunch at noon?"
    );

    let m = next_where(&mut wire, "the correction on the wire", |m| {
        m.rich.replace.is_some()
    })
    .await;
    assert_eq!(
        m.rich.reply,
        Some(Reply {
            to: Some(b_occupant),
            id: room_id
        })
    );
    let body = m.msg.body.unwrap();
    assert_eq!(body, "> lunch at noon?\nyes, at one");
    assert_eq!(m.rich.strip_fallback(&body, &[NS_REPLY]), "yes, at one");

    // The room's copy of the correction came back to Alice before this: it changed
    // nothing.
    let ok = a.client.send_message(a.account, &room, "ok").unwrap();
    let s = a
        .wait_conversation(&room, "the room's copy", |s| {
            by_id(s, ok).is_some_and(|m| m.state == DeliveryState::Delivered)
        })
        .await;
    assert!(no_quote(&s), "{:#?}", s.messages);
    let mine = by_id(&s, answer).unwrap();
    assert_eq!(mine.body, "yes, at one");
    assert!(answers(mine, at_a));
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
    a_corrected_reply_stays_a_reply,
    a_corrected_reply_on_the_wire,
    a_corrected_reply_in_a_group,
    reactions_markers_and_typing,
    nobody_changes_what_is_not_theirs,
);
