//! Group chats through the client against the real servers, with three accounts: private
//! groups, invitations, messages, subject, nicknames, kicks, leaving; history from the
//! room's archive after being offline and on a new device (bookmarks with autojoin);
//! replies, reactions, corrections and retractions between Linnet clients; and changes
//! from occupants who did not write what they name.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use linnet_client::{
    ClientError, ConversationSnapshot, DeliveryState, Direction, JoinState, MessageId, MessageItem,
};
use linnet_tests::*;
use linnet_xmpp::{BareJid, Event};

fn occupants(s: &ConversationSnapshot) -> Vec<String> {
    s.group
        .as_ref()
        .map(|g| g.occupants.iter().map(|o| o.nick.clone()).collect())
        .unwrap_or_default()
}

fn bodies(s: &ConversationSnapshot) -> Vec<String> {
    s.messages.iter().map(|m| m.body.clone()).collect()
}

fn find<'a>(s: &'a ConversationSnapshot, body: &str) -> Option<&'a MessageItem> {
    s.messages.iter().find(|m| m.body == body)
}

fn by_id(s: &ConversationSnapshot, id: MessageId) -> Option<&MessageItem> {
    s.messages.iter().find(|m| m.id == id)
}

type Reactions = Vec<(String, u32, bool)>;

/// The reactions to a message as (emoji, count, mine), in no particular order: they are
/// shown in the order they were made, and who made which first is a race here.
fn reactions(messages: &[MessageItem], id: MessageId) -> Reactions {
    let mut r: Reactions = messages
        .iter()
        .find(|m| m.id == id)
        .map(|m| {
            m.reactions
                .iter()
                .map(|r| (r.emoji.clone(), r.count, r.mine))
                .collect()
        })
        .unwrap_or_default();
    r.sort();
    r
}

fn expect(r: &[(&str, u32, bool)]) -> Reactions {
    let mut r: Reactions = r
        .iter()
        .map(|(e, n, m)| ((*e).to_owned(), *n, *m))
        .collect();
    r.sort();
    r
}

fn senders(s: &ConversationSnapshot, id: MessageId, emoji: &str) -> Vec<String> {
    by_id(s, id)
        .and_then(|m| m.reactions.iter().find(|r| r.emoji == emoji))
        .map(|r| r.senders.clone())
        .unwrap_or_default()
}

fn bad_input<T: std::fmt::Debug>(r: Result<T, ClientError>) -> bool {
    matches!(r, Err(ClientError::BadInput(_)))
}

/// Sends `text` to the room and waits for the room's copy of it: the room answers each
/// occupant in order, so its copies of everything sent before have arrived too.
async fn echoed(who: &TestClient, room: &str, text: &str) {
    let id = who.client.send_message(who.account, room, text).unwrap();
    who.wait_conversation(room, "the room's copy", |s| {
        by_id(s, id).is_some_and(|m| m.state == DeliveryState::Delivered)
    })
    .await;
}

/// Alice creates a private group and invites Bob and Carol, who accept. Messages, the
/// subject, a nickname change, a kick and a leave show on everyone's side.
async fn a_private_group_of_three(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let c = TestClient::register(server, "carol").await;
    let group = a.client.create_group(a.account, "Plans").await.unwrap();
    let room = room_of(&a, group);
    let mine = a.wait_conversation(&room, "created", group_joined).await;
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
    accept_group_invitation(&b, &room).await;
    accept_group_invitation(&c, &room).await;
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
    let left = b
        .wait_conversation(&room, "left", |s| !group_joined(s))
        .await;
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
    accept_group_invitation(&b, &room).await;
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
    b.wait_conversation(&room, "rejoined", group_joined).await;
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

    // A new device: the bookmark brings the group; its newest page shows first. The group
    // is encrypted, and what was sent before the device existed was not encrypted for it:
    // each message shows as such, none is lost.
    let b2 = b.another_device(server).await;
    let undecryptable = |m: &MessageItem| {
        m.body.is_empty()
            && m.error
                .as_deref()
                .is_some_and(|e| e.contains("not encrypted for this device"))
    };
    let s = b2
        .wait_conversation(&room, "joined from the bookmark", |s| {
            group_joined(s) && s.messages.last().is_some_and(undecryptable)
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
        all = b2.client.messages(c2, None, 1000).unwrap();
        if all.len() == n + 1 {
            break;
        }
    }
    assert_eq!(
        all.len(),
        n + 1,
        "scrolling back reads the rest of the archive"
    );
    assert!(all.iter().all(undecryptable), "{all:?}");
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
    accept_group_invitation(&b, &room).await;
    b2.wait_conversation(&room, "joined on the other device, named", |s| {
        group_joined(s) && s.name.as_deref() == Some("Family")
    })
    .await;
    let b_group = b.client.group_conversation(b.account, &room).unwrap();
    b.client.leave_group(b_group).await.unwrap();
    b2.wait_conversation(&room, "left on the other device", |s| !group_joined(s))
        .await;
}

/// Removes an occupant from a Prosody room without telling anyone, as a room restarted
/// behind a resumed stream would have forgotten them, through Prosody's admin shell.
fn prosody_forgets_occupant(room: &str, nick: &str) {
    let service = var("PROSODY_MUC_DOMAIN");
    let lua = format!(
        "> local room = prosody.hosts[{service:?}].modules.muc.get_room_from_jid({room:?}) \
         local o = room and room:get_occupant_by_nick({occupant:?}) \
         if not o then return 'no such occupant' end \
         o.role = nil; room:save_occupant(o); return 'forgotten'",
        occupant = format!("{room}/{nick}"),
    );
    let config = std::path::Path::new(&var("LINNET_RUN_DIR")).join("prosody/prosody.cfg.lua");
    let out = std::process::Command::new("prosodyctl")
        .arg("--config")
        .arg(&config)
        .args(["shell", &lua])
        .output()
        .expect("prosodyctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("forgotten"), "admin shell said: {text}");
}

/// XEP-0410: a room that silently lost us is noticed by the self-ping of a group that fell
/// quiet, and joined again, so what others write reaches us again. Prosody only: it lets
/// its admin shell drop an occupant silently; ejabberd has no such command (every way
/// out of an ejabberd room tells the occupant).
async fn a_room_that_silently_lost_us_is_joined_again(server: Server) {
    let mut opts = options();
    opts.room_ping_interval = Duration::from_millis(500);
    let a = TestClient::register_with(server, "alice", opts).await;
    let b = TestClient::register(server, "bob").await;
    let group = a.client.create_group(a.account, "Family").await.unwrap();
    let room = room_of(&a, group);
    a.client.invite_to_group(group, &b.jid, None).await.unwrap();
    accept_group_invitation(&b, &room).await;
    echoed(&b, &room, "before").await;
    let nick = a
        .wait_conversation(&room, "bob's first message", |s| {
            find(s, "before").is_some()
        })
        .await
        .group
        .clone()
        .unwrap()
        .nick;
    prosody_forgets_occupant(&room, &nick);
    // Nothing reaches a forgotten occupant until the self-ping finds out and joins again:
    // bob writes until alice has one of his messages.
    let mut n = 0;
    loop {
        n += 1;
        let text = format!("after {n}");
        echoed(&b, &room, &text).await;
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            a.wait_conversation(&room, "a message after being forgotten", |s| {
                s.messages.iter().any(|m| m.body.starts_with("after "))
            }),
        )
        .await;
        if got.is_ok() {
            break;
        }
        assert!(n < 30, "never joined again");
    }
    a.wait_conversation(&room, "joined", group_joined).await;
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
    accept_group_invitation(&b, &room).await;
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

/// Between three Linnet clients in a room: Bob answers Alice's message and reacts to it,
/// Alice corrects it, Bob deletes his answer; each shows at once on the sender's side and
/// on the others', and the room's copies of our own changes change nothing twice. Nobody
/// corrects or deletes what they did not write, nor answers what was deleted. Carol, out
/// of the room, reacts all the same: it goes out when she is back in. Alice's reactions
/// from her other device replace hers. A raw occupant checks the ids on the wire.
async fn rich_messages_in_a_group(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let c = TestClient::register(server, "carol").await;
    let group = a.client.create_group(a.account, "Lunch").await.unwrap();
    let room = room_of(&a, group);
    for who in [&b, &c] {
        a.client
            .invite_to_group(group, &who.jid, None)
            .await
            .unwrap();
    }
    accept_group_invitation(&b, &room).await;
    accept_group_invitation(&c, &room).await;
    // A raw occupant sees what goes over the wire.
    let (_observer, mut events) = raw_occupant(server, &a, group, &room).await;
    let wire = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = wire.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::RoomMessage(m) = ev {
                sink.lock().unwrap().push(*m);
            }
        }
    });
    let nick_of = |who: &TestClient| who.jid.split('@').next().unwrap().to_owned();
    let (a_occupant, b_occupant, c_occupant) = (
        format!("{room}/{}", nick_of(&a)),
        format!("{room}/{}", nick_of(&b)),
        format!("{room}/{}", nick_of(&c)),
    );
    a.wait_conversation(&room, "everyone in", |s| occupants(s).len() == 4)
        .await;

    let sent = a
        .client
        .send_message(a.account, &room, "lunch at noon")
        .unwrap();
    // Stamped by the room only when its copy comes back: until then nothing can name it.
    echoed(&a, &room, "anyone?").await;
    let mut at = Vec::new();
    for who in [&b, &c] {
        let s = who
            .wait_conversation(&room, "alice's message", |s| {
                find(s, "lunch at noon").is_some()
            })
            .await;
        at.push(find(&s, "lunch at noon").unwrap().id);
    }
    let (at_b, at_c) = (at[0], at[1]);

    // A reply names the room's id of what it answers, which every client can look up.
    let answer = b.client.reply(b.account, at_b, "*yes*").unwrap();
    let at_bob = b
        .wait_conversation(&room, "the reply at once", |s| by_id(s, answer).is_some())
        .await;
    let preview = by_id(&at_bob, answer).unwrap().reply_to.clone().unwrap();
    assert_eq!(preview.message, Some(at_b));
    assert_eq!(preview.excerpt, "lunch at noon");
    let mut answer_at = Vec::new();
    for (who, target) in [(&a, sent), (&c, at_c)] {
        let s = who
            .wait_conversation(&room, "bob's reply", |s| find(s, "*yes*").is_some())
            .await;
        let m = find(&s, "*yes*").unwrap();
        assert_eq!(m.direction, Direction::Incoming);
        let preview = m.reply_to.as_ref().unwrap();
        assert_eq!(preview.message, Some(target), "{m:?}");
        assert_eq!(preview.excerpt, "lunch at noon");
        answer_at.push(m.id);
    }
    let (answer_at_a, answer_at_c) = (answer_at[0], answer_at[1]);

    // Reactions: Bob's shows as his at once and as his on Alice's side; Alice's to her
    // own message as hers.
    b.client
        .react(b.account, at_b, &["👍".into(), "🍕".into()])
        .unwrap();
    b.wait_conversation(&room, "bob's reactions at once", |s| {
        reactions(&s.messages, at_b) == expect(&[("👍", 1, true), ("🍕", 1, true)])
    })
    .await;
    a.client.react(a.account, sent, &["👍".into()]).unwrap();
    let s = a
        .wait_conversation(&room, "bob's and alice's reactions", |s| {
            reactions(&s.messages, sent) == expect(&[("👍", 2, true), ("🍕", 1, false)])
        })
        .await;
    let thumbs = senders(&s, sent, "👍");
    assert!(
        thumbs.contains(&b_occupant) && thumbs.contains(&a_occupant),
        "{thumbs:?}"
    );
    c.wait_conversation(&room, "both reactions", |s| {
        reactions(&s.messages, at_c) == expect(&[("👍", 2, false), ("🍕", 1, false)])
    })
    .await;
    // Bob takes one back; the room's copies of his and Alice's reactions changed nothing.
    b.client.react(b.account, at_b, &["🍕".into()]).unwrap();
    for who in [&a, &b] {
        echoed(who, &room, "ok").await;
    }
    let mine = expect(&[("👍", 1, true)]);
    a.wait_conversation(&room, "one of bob's withdrawn", |s| {
        reactions(&s.messages, sent) == expect(&[("👍", 1, true), ("🍕", 1, false)])
    })
    .await;
    b.wait_conversation(&room, "bob's reactions once", |s| {
        reactions(&s.messages, at_b) == expect(&[("👍", 1, false), ("🍕", 1, true)])
    })
    .await;
    b.client.react(b.account, at_b, &[]).unwrap();
    a.wait_conversation(&room, "all of bob's withdrawn", |s| {
        reactions(&s.messages, sent) == mine
    })
    .await;

    // Alice corrects her message: everyone reads the new text, Bob's answer quotes it.
    a.client
        .correct_message(a.account, sent, "lunch at one")
        .unwrap();
    a.wait_conversation(&room, "the correction at once", |s| {
        by_id(s, sent).is_some_and(|m| m.body == "lunch at one" && m.edited)
    })
    .await;
    for (who, target) in [(&b, at_b), (&c, at_c)] {
        who.wait_conversation(&room, "the correction", |s| {
            by_id(s, target).is_some_and(|m| m.body == "lunch at one" && m.edited)
        })
        .await;
    }
    let s = c
        .wait_conversation(&room, "the quote follows", |s| {
            by_id(s, answer_at_c)
                .and_then(|m| m.reply_to.as_ref())
                .is_some_and(|p| p.excerpt == "lunch at one")
        })
        .await;
    assert_eq!(reactions(&s.messages, at_c), expect(&[("👍", 1, false)]));

    // Only the author corrects or deletes.
    assert!(bad_input(b.client.correct_message(
        b.account,
        at_b,
        "lunch never"
    )));
    assert!(bad_input(b.client.retract_message(b.account, at_b)));
    assert!(bad_input(a.client.correct_message(
        a.account,
        answer_at_a,
        "no"
    )));
    assert!(bad_input(a.client.retract_message(a.account, answer_at_a)));

    b.client.retract_message(b.account, answer).unwrap();
    b.wait_conversation(&room, "deleted at once", |s| {
        by_id(s, answer).is_some_and(|m| m.retracted && m.body.is_empty())
    })
    .await;
    for (who, target) in [(&a, answer_at_a), (&c, answer_at_c)] {
        who.wait_conversation(&room, "bob's answer deleted", |s| {
            by_id(s, target).is_some_and(|m| m.retracted && m.body.is_empty())
        })
        .await;
    }
    assert!(bad_input(a.client.reply(a.account, answer_at_a, "what?")));
    assert!(bad_input(a.client.react(
        a.account,
        answer_at_a,
        &["❓".into()]
    )));

    // The room's copies of Alice's own changes are neither new messages nor applied again.
    echoed(&a, &room, "see you").await;
    let all = a.client.messages(group, None, 100).unwrap();
    let mut bodies: Vec<&str> = all.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        ["", "anyone?", "lunch at one", "ok", "ok", "see you"],
        "{all:#?}"
    );
    assert_eq!(reactions(&all, sent), mine);

    // Carol, logged out, is out of the room: what she does waits for her to be back.
    c.client.logout(c.account).await.unwrap();
    let pending = c
        .client
        .send_message(c.account, &room, "on my way")
        .unwrap();
    assert!(
        bad_input(c.client.react(c.account, pending, &["🏃".into()])),
        "not stamped by the room yet"
    );
    c.client.react(c.account, at_c, &["🎉".into()]).unwrap();
    c.wait_conversation(&room, "carol's reaction at once", |s| {
        reactions(&s.messages, at_c) == expect(&[("👍", 1, false), ("🎉", 1, true)])
    })
    .await;
    c.client.login(c.account).await.unwrap();
    let s = a
        .wait_conversation(&room, "carol's message and reaction", |s| {
            find(s, "on my way").is_some()
                && reactions(&s.messages, sent) == expect(&[("👍", 1, true), ("🎉", 1, false)])
        })
        .await;
    assert_eq!(senders(&s, sent, "🎉"), std::slice::from_ref(&c_occupant));

    // Alice's other device, in the room under the same nickname, changes her reactions:
    // here they are replaced, not added to (ours are known by our occupant JID, the name
    // the room shows them under).
    let a2 = a.another_device(server).await;
    let s = a2
        .wait_conversation(&room, "the group on alice's other device", |s| {
            group_joined(s) && find(s, "lunch at one").is_some()
        })
        .await;
    let at_a2 = find(&s, "lunch at one").unwrap().id;
    a2.client.react(a2.account, at_a2, &["🚲".into()]).unwrap();
    a.wait_conversation(&room, "alice's reactions replaced", |s| {
        reactions(&s.messages, sent) == expect(&[("🎉", 1, false), ("🚲", 1, true)])
    })
    .await;

    // On the wire: groupchat messages naming the room's ids, but corrections the original
    // message's own id (XEP-0461, XEP-0444, XEP-0424, XEP-0308).
    let reactions_seen = || {
        wire.lock()
            .unwrap()
            .iter()
            .filter(|m| m.rich.reactions.is_some())
            .count()
    };
    wait_until("the observer's copy of every reaction", || {
        reactions_seen() == 6
    })
    .await;
    let wire = wire.lock().unwrap().clone();
    let with_body = |body: &str| {
        wire.iter()
            .find(|m| m.msg.body.as_deref() == Some(body))
            .unwrap_or_else(|| panic!("{body} not seen"))
    };
    let original = with_body("lunch at noon");
    let original_sid = original.msg.stanza_id.clone().unwrap();
    let answer_sid = with_body("> lunch at noon\n*yes*")
        .msg
        .stanza_id
        .clone()
        .unwrap();
    let reply = wire.iter().find_map(|m| m.rich.reply.clone()).unwrap();
    assert_eq!(
        (reply.to, reply.id),
        (Some(a_occupant), original_sid.clone())
    );
    let reacted: Vec<(String, String)> = wire
        .iter()
        .filter_map(|m| Some((m.from_full.clone(), m.rich.reactions.clone()?.id)))
        .collect();
    assert_eq!(reacted.len(), 6, "{reacted:?}");
    assert!(
        reacted.iter().all(|(_, id)| *id == original_sid),
        "{reacted:?}"
    );
    assert!(reacted.contains(&(c_occupant, original_sid)));
    let corrected = wire.iter().find_map(|m| m.rich.replace.clone()).unwrap();
    assert_eq!(Some(&corrected), original.msg.id.as_ref());
    let retracted = wire.iter().find_map(|m| m.rich.retract.clone()).unwrap();
    assert_eq!(retracted, answer_sid);
}

/// Alice writes to Bob alone through their group (XEP-0045 §7.5): Bob sees it in the
/// group, private from Alice's nickname, and Carol, in the same room, never does; Bob
/// answers privately. Alice's other device, in the room under the same nickname, has both:
/// hers as a carbon (XEP-0280; from her archive on Prosody), Bob's from the room. A raw occupant gets hers as a private
/// message event. A nickname no one has fails the message with the reason; a private
/// message is never answered or changed through the group; bad arguments are refused.
async fn private_messages_through_a_group(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let c = TestClient::register(server, "carol").await;
    let group = a.client.create_group(a.account, "Secrets").await.unwrap();
    let room = room_of(&a, group);
    for who in [&b, &c] {
        a.client
            .invite_to_group(group, &who.jid, None)
            .await
            .unwrap();
    }
    let b_in = accept_group_invitation(&b, &room).await;
    accept_group_invitation(&c, &room).await;
    let a2 = a.another_device(server).await;
    a2.wait_conversation(&room, "the group on alice's other device", group_joined)
        .await;
    let (_observer, mut wire) = raw_occupant(server, &a, group, &room).await;
    let mine = a
        .wait_conversation(&room, "everyone in", |s| occupants(s).len() == 4)
        .await;
    let a_nick = mine.group.as_ref().unwrap().nick.clone();
    let b_nick = b_in.group.as_ref().unwrap().nick.clone();
    let b_group = b.client.group_conversation(b.account, &room).unwrap();
    let c_group = c.client.group_conversation(c.account, &room).unwrap();

    let sent = a
        .client
        .send_private_message(group, &b_nick, "psst, bob")
        .unwrap();
    let s = a
        .wait_conversation(&room, "the private message sent", |s| {
            by_id(s, sent).is_some_and(|m| m.state == DeliveryState::Sent)
        })
        .await;
    let m = by_id(&s, sent).unwrap();
    assert_eq!(
        (m.direction, m.private_with.as_deref()),
        (Direction::Outgoing, Some(b_nick.as_str()))
    );
    let s = b
        .wait_conversation(&room, "alice's private message", |s| {
            find(s, "psst, bob").is_some()
        })
        .await;
    let m = find(&s, "psst, bob").unwrap();
    assert_eq!(m.direction, Direction::Incoming);
    assert_eq!(m.private_with.as_deref(), Some(a_nick.as_str()), "{m:?}");
    assert_eq!(m.sender_nick.as_deref(), Some(a_nick.as_str()));
    assert_eq!(s.unread, 1, "a message to read like any other");
    if server == Server::Prosody {
        // Prosody 13 copies no message marked as a private one (mod_carbons asks its own
        // rule without saying the message is outgoing, so it counts as one a room sent
        // us): the other device finds it in the archive on its next login.
        a2.client.logout(a2.account).await.unwrap();
        a2.client.login(a2.account).await.unwrap();
    }
    let s = a2
        .wait_conversation(&room, "alice's private message on her other device", |s| {
            find(s, "psst, bob").is_some()
        })
        .await;
    let m = find(&s, "psst, bob").unwrap();
    assert_eq!(
        (m.direction, m.private_with.as_deref()),
        (Direction::Outgoing, Some(b_nick.as_str()))
    );

    let answer = b
        .client
        .send_private_message(b_group, &a_nick, "ok, alice")
        .unwrap();
    for who in [&a, &a2] {
        let s = who
            .wait_conversation(&room, "bob's private answer", |s| {
                find(s, "ok, alice").is_some()
            })
            .await;
        let m = find(&s, "ok, alice").unwrap();
        assert_eq!(
            (
                m.direction,
                m.private_with.as_deref(),
                m.sender_nick.as_deref()
            ),
            (
                Direction::Incoming,
                Some(b_nick.as_str()),
                Some(b_nick.as_str())
            )
        );
    }
    b.wait_conversation(&room, "bob's answer sent", |s| {
        by_id(s, answer).is_some_and(|m| m.state == DeliveryState::Sent)
    })
    .await;

    // The room passes on what each occupant sends in order: once Carol has what Alice and
    // Bob sent to everyone afterwards, she would have had what they sent her before.
    echoed(&a, &room, "back to everyone").await;
    echoed(&b, &room, "me too").await;
    c.wait_conversation(&room, "the group messages", |s| {
        find(s, "back to everyone").is_some() && find(s, "me too").is_some()
    })
    .await;
    let at_c: Vec<(String, Option<String>)> = c
        .client
        .messages(c_group, None, 100)
        .unwrap()
        .into_iter()
        .map(|m| (m.body, m.private_with))
        .collect();
    assert_eq!(
        at_c,
        vec![
            ("back to everyone".to_owned(), None),
            ("me too".to_owned(), None)
        ]
    );
    let s = b
        .wait_conversation(&room, "alice's group message", |s| {
            find(s, "back to everyone").is_some()
        })
        .await;
    assert_eq!(find(&s, "back to everyone").unwrap().private_with, None);

    // Through the session: the raw occupant's private message event.
    a.client
        .send_private_message(group, "dave", "hello dave")
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = wire.recv().await {
            if let Event::PrivateMessage { nick, message } = ev {
                return Some((nick, *message));
            }
        }
        None
    })
    .await
    .expect("dave's private message")
    .expect("the session ended");
    assert_eq!(got.0, a_nick);
    assert_eq!(got.1.peer.as_str(), room);
    assert_eq!(got.1.body, "hello dave");
    assert!(!got.1.outgoing && !got.1.carbon);

    // No one of that nickname: the room refuses, and says why.
    let lost = a
        .client
        .send_private_message(group, "nobody-here", "hello?")
        .unwrap();
    let s = a
        .wait_conversation(&room, "the refusal", |s| {
            by_id(s, lost).is_some_and(|m| m.state == DeliveryState::Failed)
        })
        .await;
    assert_eq!(
        by_id(&s, lost).unwrap().error.as_deref(),
        Some("nobody in the group has that nickname now")
    );

    // Replies, corrections and reactions go to the whole group: not for these.
    assert!(bad_input(a.client.reply(a.account, sent, "again")));
    assert!(bad_input(a.client.correct_message(a.account, sent, "psst")));
    assert!(bad_input(a.client.react(a.account, sent, &["🤫".into()])));
    assert!(bad_input(a.client.retract_message(a.account, sent)));
    // Bad arguments, each refused before anything is stored.
    let before = a.client.messages(group, None, 100).unwrap().len();
    let chat = a.client.open_conversation(a.account, &b.jid).unwrap();
    for (conversation, nick, body) in [
        (group, "", "x"),
        (group, "  ", "x"),
        (group, "a\u{7}b", "x"),
        (group, b_nick.as_str(), " "),
        (group, b_nick.as_str(), ""),
        (chat, b_nick.as_str(), "x"),
    ] {
        assert!(
            bad_input(a.client.send_private_message(conversation, nick, body)),
            "{nick:?} {body:?}"
        );
    }
    let long = "n".repeat(linnet_xmpp::muc::MAX_NICK_BYTES + 1);
    assert!(bad_input(a.client.send_private_message(group, &long, "x")));
    assert_eq!(a.client.messages(group, None, 100).unwrap().len(), before);
}

both_servers!(
    private_messages_through_a_group,
    a_private_group_of_three,
    rich_messages_in_a_group,
    group_history_after_being_away,
    bookmarks_carry_groups_across_devices,
    only_the_author_changes_a_group_message,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_a_room_that_silently_lost_us_is_joined_again() {
    a_room_that_silently_lost_us_is_joined_again(Server::Prosody).await;
}
