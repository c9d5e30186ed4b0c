//! Accounts, roster, conversations, messages, outbox and settings on a real file.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::{base_ms, incoming, outgoing, Fixture};
use linnet_store::{
    AccountId, ContactRecord, ConversationId, DeliveryState, Direction, Inserted, MessageId, Store,
    StoreError, Subscription, SubscriptionRequestRecord,
};

fn setup() -> (Fixture, Store, AccountId) {
    let fx = Fixture::new();
    let store = fx.open(1);
    let account = store.add_account("me@example.org", "pw").unwrap();
    (fx, store, account)
}

fn conv(store: &Store, account: AccountId, peer: &str) -> ConversationId {
    store.conversation(account, peer, true).unwrap().unwrap()
}

fn new_id(i: Inserted) -> MessageId {
    match i {
        Inserted::New(m) => m.id,
        Inserted::Duplicate(id) => panic!("unexpected duplicate of {id:?}"),
    }
}

fn unread(store: &Store, c: ConversationId) -> u32 {
    store.conversation_info(c).unwrap().unread_count
}

// ---------------------------------------------------------------- accounts

#[test]
fn accounts_crud() {
    let (_fx, store, a) = setup();
    assert!(matches!(
        store.add_account("me@example.org", "other"),
        Err(StoreError::Conflict(_))
    ));
    let b = store.add_account("work@example.com", "pw2").unwrap();
    assert_ne!(a, b);

    store.set_account_password(a, "new secret").unwrap();
    store.set_account_resource(a, Some("phone")).unwrap();
    store.set_account_enabled(b, false).unwrap();
    store
        .set_account_server(a, Some("xmpp.example.org"), Some(5223), true)
        .unwrap();

    let rec = store.account(a).unwrap();
    assert_eq!(rec.password.as_str(), "new secret");
    assert_eq!(rec.resource.as_deref(), Some("phone"));
    assert!(rec.enabled);
    assert_eq!(rec.server_host.as_deref(), Some("xmpp.example.org"));
    assert_eq!(rec.server_port, Some(5223));
    assert!(rec.direct_tls);
    assert!(!store.account(b).unwrap().enabled);

    store.set_account_server(a, None, None, false).unwrap();
    let rec = store.account(a).unwrap();
    assert_eq!((rec.server_host, rec.server_port), (None, None));
    assert!(matches!(
        store.set_account_server(a, Some("h"), Some(0), false),
        Err(StoreError::InvalidInput(_))
    ));

    let all = store.accounts().unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![a, b],
        "oldest first"
    );
    assert_eq!(
        store
            .account_by_jid("work@example.com")
            .unwrap()
            .unwrap()
            .id,
        b
    );
    assert!(store
        .account_by_jid("nobody@example.org")
        .unwrap()
        .is_none());

    let ghost = AccountId(9999);
    assert!(matches!(store.account(ghost), Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.set_account_enabled(ghost, true),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.remove_account(ghost),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn account_password_is_redacted() {
    let (_fx, store, a) = setup();
    store.set_account_password(a, "s3cr3t-value").unwrap();
    let rec = store.account(a).unwrap();
    assert!(!format!("{rec:?}").contains("s3cr3t-value"));
    let json = serde_json::to_string(&rec).unwrap();
    assert!(!json.contains("s3cr3t-value"), "{json}");
    assert!(json.contains("me@example.org"));
}

#[test]
fn removing_an_account_cascades_and_ids_are_not_reused() {
    let (_fx, store, a) = setup();
    let b = store.add_account("other@example.org", "pw").unwrap();

    store
        .upsert_contact(a, &contact("friend@example.org", Subscription::Both))
        .unwrap();
    store
        .add_subscription_request(a, "stranger@example.org", None)
        .unwrap();
    store.set_roster_version(a, Some("v7")).unwrap();
    let ca = conv(&store, a, "friend@example.org");
    let ma = new_id(
        store
            .insert_message(&incoming(ca, "hi", base_ms()))
            .unwrap(),
    );
    store
        .outbox_push(a, Some(ma), "message", "<message/>")
        .unwrap();
    store.kv_set(Some(a), "mam", "cursor-a").unwrap();

    let cb = conv(&store, b, "friend@example.org");
    let mb = new_id(
        store
            .insert_message(&incoming(cb, "hey", base_ms()))
            .unwrap(),
    );
    store
        .outbox_push(b, None, "presence", "<presence/>")
        .unwrap();
    store.kv_set(Some(b), "mam", "cursor-b").unwrap();
    store.kv_set(None, "theme", "dark").unwrap();

    store.remove_account(a).unwrap();

    assert!(matches!(store.account(a), Err(StoreError::NotFound(_))));
    assert!(matches!(store.message(ma), Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.conversation_info(ca),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.contacts(a).unwrap().is_empty());
    assert!(store.subscription_requests(a).unwrap().is_empty());
    assert!(store.outbox(a).unwrap().is_empty());
    assert_eq!(store.kv_get(Some(a), "mam").unwrap(), None);
    let list = store.conversations().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, cb);

    // The other account and global settings are untouched.
    assert_eq!(store.message(mb).unwrap().body, "hey");
    assert_eq!(store.outbox(b).unwrap().len(), 1);
    assert_eq!(
        store.kv_get(Some(b), "mam").unwrap().as_deref(),
        Some("cursor-b")
    );
    assert_eq!(
        store.kv_get(None, "theme").unwrap().as_deref(),
        Some("dark")
    );

    // Re-adding the same JID starts from scratch under a new id.
    let a2 = store.add_account("me@example.org", "pw").unwrap();
    assert!(a2.0 > b.0);
    assert!(store.contacts(a2).unwrap().is_empty());
    assert_eq!(store.roster_version(a2).unwrap(), None);
    assert_eq!(
        store.conversation(a2, "friend@example.org", false).unwrap(),
        None
    );
}

// ---------------------------------------------------------------- roster

fn contact(jid: &str, subscription: Subscription) -> ContactRecord {
    ContactRecord {
        jid: jid.into(),
        name: None,
        subscription,
        ask: false,
        groups: vec![],
    }
}

#[test]
fn roster_replace_upsert_remove() {
    let (_fx, store, a) = setup();
    let alice = ContactRecord {
        name: Some("Alice".into()),
        groups: vec!["Family".into(), "Zürich, \"quoted\"".into()],
        ..contact("alice@example.org", Subscription::Both)
    };
    let bob = ContactRecord {
        ask: true,
        ..contact("bob@example.org", Subscription::None)
    };
    let carol = contact("carol@example.org", Subscription::From);
    let gone = contact("gone@example.org", Subscription::Remove);
    store
        .replace_roster(
            a,
            &[carol.clone(), alice.clone(), bob.clone(), gone],
            Some("v1"),
        )
        .unwrap();
    assert_eq!(
        store.contacts(a).unwrap(),
        vec![alice.clone(), bob.clone(), carol.clone()]
    );
    assert_eq!(store.roster_version(a).unwrap().as_deref(), Some("v1"));

    // Roster push: bob accepted our request.
    let bob2 = ContactRecord {
        ask: false,
        subscription: Subscription::To,
        ..bob.clone()
    };
    store.upsert_contact(a, &bob2).unwrap();
    store
        .upsert_contact(a, &contact("dave@example.org", Subscription::None))
        .unwrap();
    store.set_roster_version(a, Some("v2")).unwrap();
    assert_eq!(store.contact(a, "bob@example.org").unwrap(), Some(bob2));
    assert_eq!(store.contacts(a).unwrap().len(), 4);

    // Roster push with subscription="remove".
    store
        .upsert_contact(a, &contact("carol@example.org", Subscription::Remove))
        .unwrap();
    assert_eq!(store.contact(a, "carol@example.org").unwrap(), None);
    assert!(store.remove_contact(a, "dave@example.org").unwrap());
    assert!(!store.remove_contact(a, "dave@example.org").unwrap());
    assert_eq!(
        store
            .contacts(a)
            .unwrap()
            .iter()
            .map(|c| c.jid.as_str())
            .collect::<Vec<_>>(),
        vec!["alice@example.org", "bob@example.org"]
    );

    // A full roster result drops everything not in it.
    store
        .replace_roster(a, std::slice::from_ref(&carol), None)
        .unwrap();
    assert_eq!(store.contacts(a).unwrap(), vec![carol]);
    assert_eq!(store.roster_version(a).unwrap(), None);

    // Rosters are per account.
    let b = store.add_account("b@example.org", "pw").unwrap();
    assert!(store.contacts(b).unwrap().is_empty());
    assert!(matches!(
        store.upsert_contact(AccountId(777), &alice),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn failed_replace_roster_changes_nothing() {
    let (_fx, store, a) = setup();
    let alice = contact("alice@example.org", Subscription::Both);
    store
        .replace_roster(a, std::slice::from_ref(&alice), Some("v1"))
        .unwrap();
    // An empty JID is rejected half way through the new roster.
    let bad = [
        contact("bob@example.org", Subscription::To),
        contact("", Subscription::To),
    ];
    assert!(matches!(
        store.replace_roster(a, &bad, Some("v2")),
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(store.contacts(a).unwrap(), vec![alice]);
    assert_eq!(store.roster_version(a).unwrap().as_deref(), Some("v1"));
}

#[test]
fn subscription_requests() {
    let (_fx, store, a) = setup();
    let jids = |store: &Store| -> Vec<String> {
        store
            .subscription_requests(a)
            .unwrap()
            .into_iter()
            .map(|r| r.jid)
            .collect()
    };
    assert!(store
        .add_subscription_request(a, "z@example.org", None)
        .unwrap());
    assert!(store
        .add_subscription_request(a, "b@example.org", None)
        .unwrap());
    assert!(!store
        .add_subscription_request(a, "z@example.org", None)
        .unwrap());
    assert_eq!(
        jids(&store),
        vec!["z@example.org", "b@example.org"],
        "arrival order"
    );
    assert!(store
        .remove_subscription_request(a, "z@example.org")
        .unwrap());
    assert!(!store
        .remove_subscription_request(a, "z@example.org")
        .unwrap());
    assert_eq!(jids(&store), vec!["b@example.org"]);
    assert!(matches!(
        store.add_subscription_request(AccountId(42), "x@example.org", None),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn subscription_request_nicks() {
    let (_fx, store, a) = setup();
    let request = |jid: &str, nick: Option<&str>| SubscriptionRequestRecord {
        jid: jid.into(),
        nick: nick.map(Into::into),
    };
    assert!(store
        .add_subscription_request(a, "z@example.org", Some("Zed"))
        .unwrap());
    assert!(store
        .add_subscription_request(a, "b@example.org", None)
        .unwrap());
    assert_eq!(
        store.subscription_requests(a).unwrap(),
        vec![
            request("z@example.org", Some("Zed")),
            request("b@example.org", None)
        ]
    );
    // A re-sent request with a nickname updates it (and keeps its place); one without
    // keeps the nickname stored.
    assert!(!store
        .add_subscription_request(a, "b@example.org", Some("Bea"))
        .unwrap());
    assert!(!store
        .add_subscription_request(a, "z@example.org", None)
        .unwrap());
    assert!(!store
        .add_subscription_request(a, "z@example.org", Some("Zoe"))
        .unwrap());
    assert!(!store
        .add_subscription_request(a, "z@example.org", None)
        .unwrap());
    assert_eq!(
        store.subscription_requests(a).unwrap(),
        vec![
            request("z@example.org", Some("Zoe")),
            request("b@example.org", Some("Bea"))
        ]
    );
    // The nickname is a hint next to the request, not the profile of the JID.
    assert_eq!(store.profile(a, "z@example.org").unwrap(), None);
    // An answered request takes its nickname along; a new one starts without.
    assert!(store
        .remove_subscription_request(a, "z@example.org")
        .unwrap());
    assert!(store
        .add_subscription_request(a, "z@example.org", None)
        .unwrap());
    assert_eq!(
        store.subscription_requests(a).unwrap(),
        vec![
            request("b@example.org", Some("Bea")),
            request("z@example.org", None)
        ]
    );
    // The Debug form shows neither JID nor nickname.
    let shown = format!("{:?}", store.subscription_requests(a).unwrap());
    assert!(
        !shown.contains("example.org") && !shown.contains("Bea"),
        "{shown}"
    );
}

// ---------------------------------------------------------------- conversations

#[test]
fn conversation_lookup_and_creation() {
    let (_fx, store, a) = setup();
    assert_eq!(store.conversation(a, "p@example.org", false).unwrap(), None);
    let c = conv(&store, a, "p@example.org");
    assert_eq!(conv(&store, a, "p@example.org"), c);
    let b = store.add_account("b@example.org", "pw").unwrap();
    assert_ne!(conv(&store, b, "p@example.org"), c, "one per account");
    let info = store.conversation_info(c).unwrap();
    assert_eq!((info.account, info.peer.as_str()), (a, "p@example.org"));
    assert_eq!(info.unread_count, 0);
    assert_eq!(info.last_message, None);
    assert!(matches!(
        store.conversation(AccountId(99), "p@example.org", true),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn chat_list_order_and_last_message() {
    let (_fx, store, a) = setup();
    let b = store.add_account("b@example.org", "pw").unwrap();
    let t = base_ms();
    let c1 = conv(&store, a, "one@example.org");
    let c2 = conv(&store, a, "two@example.org");
    let c3 = conv(&store, b, "three@example.org");

    store
        .insert_message(&incoming(c1, "c1 first", t + 1000))
        .unwrap();
    let last2 = new_id(
        store
            .insert_message(&outgoing(c2, "c2 latest", t + 2000))
            .unwrap(),
    );
    store.insert_message(&incoming(c3, "c3", t + 1500)).unwrap();
    // Archive back-fill of an old message must not become the last message.
    store
        .insert_message(&incoming(c2, "c2 old", t + 10))
        .unwrap();

    let list = store.conversations().unwrap();
    assert_eq!(
        list.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![c2, c3, c1]
    );
    let top = &list[0];
    let last = top.last_message.as_ref().unwrap();
    assert_eq!(last.id, last2);
    assert_eq!(last.body, "c2 latest");
    assert_eq!(last.direction, Direction::Outgoing);
    assert_eq!(last.delivery_state, DeliveryState::Pending);
    assert_eq!(top.last_activity_ms, t + 2000);
    assert_eq!(top.unread_count, 1, "the back-filled incoming one");
    assert_eq!(list[1].account, b);

    // The chat list shows delivery progress of the last message.
    store
        .set_delivery_state(last2, DeliveryState::Delivered)
        .unwrap();
    assert_eq!(
        store.conversations().unwrap()[0]
            .last_message
            .as_ref()
            .unwrap()
            .delivery_state,
        DeliveryState::Delivered
    );

    // A new message moves c1 to the top.
    store
        .insert_message(&incoming(c1, "c1 newest", t + 3000))
        .unwrap();
    let list = store.conversations().unwrap();
    assert_eq!(list[0].id, c1);
    assert_eq!(list[0].last_message.as_ref().unwrap().body, "c1 newest");
    assert_eq!(list[0].unread_count, 2);

    // Reading the conversation shows in the preview of its (incoming) last message.
    store.mark_read(c1, None).unwrap();
    assert_eq!(
        store
            .conversation_info(c1)
            .unwrap()
            .last_message
            .unwrap()
            .delivery_state,
        DeliveryState::Read
    );
    assert_previews_match_messages(&store);
}

/// The denormalized chat-list preview must equal the stored last message.
fn assert_previews_match_messages(store: &Store) {
    for summary in store.conversations().unwrap() {
        let Some(last) = summary.last_message else {
            assert_eq!(store.message_count(summary.id).unwrap(), 0);
            continue;
        };
        let newest = store.messages(summary.id, None, 1).unwrap().pop().unwrap();
        assert_eq!(last.id, newest.id, "last message of {:?}", summary.id);
        assert_eq!(last.body, newest.body);
        assert_eq!(last.sender, newest.sender);
        assert_eq!(last.direction, newest.direction);
        assert_eq!(last.delivery_state, newest.delivery_state);
        assert_eq!(last.timestamp_ms, newest.timestamp_ms);
        assert!(summary.last_activity_ms >= newest.timestamp_ms);
    }
}

#[test]
fn previews_stay_consistent_through_mixed_operations() {
    let (_fx, store, a) = setup();
    let t = base_ms();
    let convs: Vec<_> = (0..5)
        .map(|i| conv(&store, a, &format!("p{i}@example.org")))
        .collect();
    let _empty = conv(&store, a, "silent@example.org");
    let mut ids = Vec::new();
    // Deterministic pseudo-random mix of live messages, back-fill and state changes.
    let mut x: i64 = 12345;
    for step in 0..300 {
        x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
        let c = convs[(x % 5) as usize];
        let ts = t + (x % 1000) - if step % 7 == 0 { 5000 } else { 0 };
        let m = if x % 3 == 0 {
            outgoing(c, &format!("out {step}"), ts)
        } else {
            incoming(c, &format!("in {step}"), ts)
        };
        ids.push(store.insert_message(&m).unwrap().id());
        if step % 5 == 0 {
            let target = ids[(x as usize / 7) % ids.len()];
            let state = [
                DeliveryState::Sent,
                DeliveryState::Delivered,
                DeliveryState::Read,
                DeliveryState::Failed,
            ][(x as usize / 11) % 4];
            store.set_delivery_state(target, state).unwrap();
        }
        if step % 17 == 0 {
            store.mark_read(c, None).unwrap();
        }
    }
    assert_previews_match_messages(&store);
}

#[test]
fn same_timestamp_last_message_is_the_later_one() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    store.insert_message(&incoming(c, "first", t)).unwrap();
    let second = new_id(store.insert_message(&incoming(c, "second", t)).unwrap());
    assert_eq!(
        store.conversation_info(c).unwrap().last_message.unwrap().id,
        second
    );
}

// ---------------------------------------------------------------- messages

#[test]
fn moving_a_message_in_time_keeps_the_preview_right() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    let first = new_id(store.insert_message(&incoming(c, "first", t)).unwrap());
    let second = new_id(
        store
            .insert_message(&incoming(c, "second", t + 10))
            .unwrap(),
    );
    // The first turns out to be the later one (the archive's order).
    assert!(store.set_message_time(first, t + 11).unwrap());
    assert!(!store.set_message_time(first, t + 11).unwrap(), "no move");
    let order: Vec<_> = store
        .messages(c, None, 10)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(order, vec![second, first]);
    assert_previews_match_messages(&store);
    // And back: the preview follows in both directions.
    store.set_message_time(first, t).unwrap();
    assert_eq!(
        store.conversation_info(c).unwrap().last_message.unwrap().id,
        second
    );
    assert_previews_match_messages(&store);
}

#[test]
fn messages_found_by_archive_id_and_latest_incoming() {
    let (_fx, store, a) = setup();
    let other = store.add_account("other@example.org", "pw").unwrap();
    let c = conv(&store, a, "p@example.org");
    let c_other = conv(&store, other, "p@example.org");
    let t = base_ms();
    let mut m = incoming(c, "archived", t);
    m.stanza_id = Some("arch-1".into());
    m.stanza_id_by = Some("me@example.org".into());
    let id = new_id(store.insert_message(&m).unwrap());
    let mut elsewhere = m.clone();
    elsewhere.conversation = c_other;
    elsewhere.stanza_id_by = Some("other@example.org".into());
    store.insert_message(&elsewhere).unwrap();
    assert_eq!(
        store
            .message_by_archive_id(a, "me@example.org", "arch-1")
            .unwrap(),
        Some(id)
    );
    // Another archive's id, or another account's message, is not ours.
    assert_eq!(
        store
            .message_by_archive_id(a, "other@example.org", "arch-1")
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .message_by_archive_id(other, "me@example.org", "arch-1")
            .unwrap(),
        None
    );

    let later = new_id(store.insert_message(&incoming(c, "later", t + 5)).unwrap());
    store
        .insert_message(&outgoing(c, "mine, latest", t + 9))
        .unwrap();
    assert_eq!(store.latest_incoming_up_to(c, id).unwrap(), Some((t, id)));
    assert_eq!(
        store.latest_incoming_up_to(c, MessageId(i64::MAX)).unwrap(),
        Some((t + 5, later)),
        "outgoing messages do not count"
    );
    let empty = conv(&store, a, "q@example.org");
    assert_eq!(store.latest_incoming_up_to(empty, id).unwrap(), None);
}

#[test]
fn dedupe_by_origin_id() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    let mut m = incoming(c, "hello", t);
    m.origin_id = Some("origin-1".into());
    let first = new_id(store.insert_message(&m).unwrap());

    // The same message again (e.g. via MAM after a carbon), now with the archive's id.
    let mut again = m.clone();
    again.stanza_id = Some("archive-77".into());
    again.stanza_id_by = Some("me@example.org".into());
    assert_eq!(
        store.insert_message(&again).unwrap(),
        Inserted::Duplicate(first)
    );
    assert_eq!(store.message_count(c).unwrap(), 1);
    assert_eq!(unread(&store, c), 1, "a duplicate does not count as unread");
    let stored = store.message(first).unwrap();
    assert_eq!(
        stored.stanza_id.as_deref(),
        Some("archive-77"),
        "stanza-id learned"
    );
    assert_eq!(stored.stanza_id_by.as_deref(), Some("me@example.org"));

    // A copy carrying only that stanza-id is also recognised now.
    let mut by_stanza = incoming(c, "hello", t);
    by_stanza.stanza_id = again.stanza_id.clone();
    by_stanza.stanza_id_by = again.stanza_id_by.clone();
    assert_eq!(
        store.insert_message(&by_stanza).unwrap(),
        Inserted::Duplicate(first)
    );

    // The same origin-id in another conversation is a different message.
    let other = conv(&store, a, "q@example.org");
    let mut elsewhere = m.clone();
    elsewhere.conversation = other;
    assert!(store.insert_message(&elsewhere).unwrap().is_new());

    // An empty origin-id is no id: two such messages are both kept.
    let mut e1 = incoming(c, "e1", t + 1);
    e1.origin_id = Some(String::new());
    let mut e2 = incoming(c, "e2", t + 2);
    e2.origin_id = Some(String::new());
    assert!(store.insert_message(&e1).unwrap().is_new());
    assert!(store.insert_message(&e2).unwrap().is_new());
    assert_eq!(store.message_count(c).unwrap(), 3);
}

#[test]
fn dedupe_by_stanza_id_respects_by() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    let mut m = incoming(c, "from archive", t);
    m.stanza_id = Some("abc".into());
    m.stanza_id_by = Some("me@example.org".into());
    let first = new_id(store.insert_message(&m).unwrap());
    assert_eq!(
        store.insert_message(&m).unwrap(),
        Inserted::Duplicate(first)
    );

    // Same id string assigned by a different archive (e.g. a MUC service) is different.
    let mut other_by = m.clone();
    other_by.stanza_id_by = Some("room@muc.example.org".into());
    assert!(store.insert_message(&other_by).unwrap().is_new());

    let mut missing_by = m.clone();
    missing_by.stanza_id = Some("zzz".into());
    missing_by.stanza_id_by = None;
    assert!(matches!(
        store.insert_message(&missing_by),
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(store.message_count(c).unwrap(), 2);
}

#[test]
fn unread_counts_and_mark_read() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    let i1 = new_id(store.insert_message(&incoming(c, "i1", t + 1)).unwrap());
    let i2 = new_id(store.insert_message(&incoming(c, "i2", t + 2)).unwrap());
    store.insert_message(&outgoing(c, "o1", t + 3)).unwrap();
    let mut seen = incoming(c, "read elsewhere", t + 4);
    seen.delivery_state = DeliveryState::Read;
    store.insert_message(&seen).unwrap();
    let i3 = new_id(store.insert_message(&incoming(c, "i3", t + 5)).unwrap());
    assert_eq!(unread(&store, c), 3);

    let marked = store.mark_read(c, Some(i2)).unwrap();
    assert_eq!(
        marked.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![i1, i2]
    );
    assert!(marked
        .iter()
        .all(|m| m.delivery_state == DeliveryState::Read));
    assert_eq!(unread(&store, c), 1);
    assert_eq!(
        store.message(i1).unwrap().delivery_state,
        DeliveryState::Read
    );
    assert_eq!(
        store.message(i3).unwrap().delivery_state,
        DeliveryState::Delivered
    );

    let marked = store.mark_read(c, None).unwrap();
    assert_eq!(marked.iter().map(|m| m.id).collect::<Vec<_>>(), vec![i3]);
    assert_eq!(unread(&store, c), 0);
    assert!(store.mark_read(c, None).unwrap().is_empty());

    // up_to must belong to the conversation.
    let other = conv(&store, a, "q@example.org");
    assert!(matches!(
        store.mark_read(other, Some(i1)),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.mark_read(ConversationId(4242), None),
        Err(StoreError::NotFound(_))
    ));

    // Reading a single incoming message through its delivery state also updates the count.
    let i4 = new_id(store.insert_message(&incoming(c, "i4", t + 6)).unwrap());
    assert_eq!(unread(&store, c), 1);
    assert!(store.set_delivery_state(i4, DeliveryState::Read).unwrap());
    assert_eq!(unread(&store, c), 0);
}

#[test]
fn unread_count_survives_reopen() {
    let fx = Fixture::new();
    let c = {
        let store = fx.open(1);
        let a = store.add_account("me@example.org", "pw").unwrap();
        let c = conv(&store, a, "p@example.org");
        for i in 0..5 {
            store
                .insert_message(&incoming(c, "x", base_ms() + i))
                .unwrap();
        }
        store.mark_read(c, None).unwrap();
        store
            .insert_message(&incoming(c, "y", base_ms() + 10))
            .unwrap();
        c
    };
    let store = fx.open(1);
    assert_eq!(unread(&store, c), 1);
}

#[test]
fn paging_yields_every_message_once_in_order() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let noise = conv(&store, a, "noise@example.org");
    let t = base_ms();
    // Out of chronological order, with runs of equal timestamps, interleaved with
    // another conversation.
    let mut batch = Vec::new();
    for i in 0..250i64 {
        let scrambled = (i * 97) % 250;
        batch.push(incoming(c, &format!("m{scrambled}"), t + scrambled / 3));
        batch.push(incoming(noise, "noise", t + i));
    }
    store.insert_messages(&batch).unwrap();
    assert_eq!(store.message_count(c).unwrap(), 250);

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store.messages(c, before, 40).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 40);
        before = Some(page[0].id);
        pages.push(page);
    }
    assert_eq!(pages.len(), 7, "6 full pages and one of 10");
    let all: Vec<_> = pages.into_iter().rev().flatten().collect();
    assert_eq!(all.len(), 250);
    assert!(all.iter().all(|m| m.conversation == c));
    let ids: HashSet<_> = all.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 250, "no message twice");
    for pair in all.windows(2) {
        assert!(
            (pair[0].timestamp_ms, pair[0].id) < (pair[1].timestamp_ms, pair[1].id),
            "chronological"
        );
    }
    let newest = store.messages(c, None, 3).unwrap();
    assert_eq!(newest, all[247..].to_vec());
    assert!(store.messages(c, None, 0).unwrap().is_empty());
    let foreign = store.messages(noise, None, 1).unwrap()[0].id;
    assert!(matches!(
        store.messages(c, Some(foreign), 10),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn delivery_state_only_moves_forward() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    let m = new_id(store.insert_message(&outgoing(c, "hi", t)).unwrap());
    let state = |id| store.message(id).unwrap().delivery_state;

    assert!(store.set_delivery_state(m, DeliveryState::Sent).unwrap());
    // A displayed marker can overtake the delivery receipt.
    assert!(store.set_delivery_state(m, DeliveryState::Read).unwrap());
    assert!(!store
        .set_delivery_state(m, DeliveryState::Delivered)
        .unwrap());
    assert!(!store.set_delivery_state(m, DeliveryState::Sent).unwrap());
    assert!(!store.set_delivery_state(m, DeliveryState::Failed).unwrap());
    assert!(!store.set_delivery_state(m, DeliveryState::Read).unwrap());
    assert_eq!(state(m), DeliveryState::Read);

    let d = new_id(store.insert_message(&outgoing(c, "d", t + 1)).unwrap());
    assert!(store
        .set_delivery_state(d, DeliveryState::Delivered)
        .unwrap());
    assert!(!store.set_delivery_state(d, DeliveryState::Failed).unwrap());
    assert!(!store.set_delivery_state(d, DeliveryState::Pending).unwrap());
    assert_eq!(state(d), DeliveryState::Delivered);

    let f = new_id(store.insert_message(&outgoing(c, "f", t + 2)).unwrap());
    assert!(store.set_delivery_state(f, DeliveryState::Failed).unwrap());
    assert_eq!(state(f), DeliveryState::Failed);
    // User retries.
    assert!(store.set_delivery_state(f, DeliveryState::Pending).unwrap());
    assert!(store.set_delivery_state(f, DeliveryState::Sent).unwrap());
    assert!(store.set_delivery_state(f, DeliveryState::Failed).unwrap());
    // A late receipt proves it arrived after all.
    assert!(store
        .set_delivery_state(f, DeliveryState::Delivered)
        .unwrap());
    assert_eq!(state(f), DeliveryState::Delivered);

    assert!(matches!(
        store.set_delivery_state(MessageId(123_456), DeliveryState::Sent),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn receipts_find_messages_by_account_origin_id() {
    let (_fx, store, a) = setup();
    let b = store.add_account("b@example.org", "pw").unwrap();
    let c1 = conv(&store, a, "p@example.org");
    let c2 = conv(&store, a, "q@example.org");
    let cb = conv(&store, b, "p@example.org");
    let t = base_ms();
    let mut m = outgoing(c2, "hi", t);
    m.origin_id = Some("oid-1".into());
    let id = new_id(store.insert_message(&m).unwrap());
    let mut mb = m.clone();
    mb.conversation = cb;
    let idb = new_id(store.insert_message(&mb).unwrap());
    store.insert_message(&incoming(c1, "x", t)).unwrap();

    assert_eq!(
        store
            .message_by_account_origin_id(a, "oid-1")
            .unwrap()
            .unwrap()
            .id,
        id
    );
    assert_eq!(
        store
            .message_by_account_origin_id(b, "oid-1")
            .unwrap()
            .unwrap()
            .id,
        idb
    );
    assert_eq!(store.message_by_account_origin_id(a, "nope").unwrap(), None);
    let rec = store.message_by_origin_id(c2, "oid-1").unwrap().unwrap();
    assert_eq!((rec.id, rec.account, rec.conversation), (id, a, c2));
    assert_eq!(store.message_by_origin_id(c1, "oid-1").unwrap(), None);
}

#[test]
fn stanza_id_learned_later() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    let m1 = new_id(store.insert_message(&outgoing(c, "one", t)).unwrap());
    let m2 = new_id(store.insert_message(&outgoing(c, "two", t + 1)).unwrap());
    store.set_stanza_id(m1, "s-1", "me@example.org").unwrap();
    let rec = store.message(m1).unwrap();
    assert_eq!(rec.stanza_id.as_deref(), Some("s-1"));
    assert!(matches!(
        store.set_stanza_id(m2, "s-1", "me@example.org"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_stanza_id(MessageId(999), "s-2", "me@example.org"),
        Err(StoreError::NotFound(_))
    ));
    // The archive's copy of m1 is now a duplicate.
    let mut copy = outgoing(c, "one", t);
    copy.stanza_id = Some("s-1".into());
    copy.stanza_id_by = Some("me@example.org".into());
    assert_eq!(
        store.insert_message(&copy).unwrap(),
        Inserted::Duplicate(m1)
    );
}

#[test]
fn inserting_into_a_missing_conversation_fails() {
    let (_fx, store, _a) = setup();
    assert!(matches!(
        store.insert_message(&incoming(ConversationId(77), "x", base_ms())),
        Err(StoreError::NotFound(_))
    ));
}

// ---------------------------------------------------------------- transactions

#[test]
fn transaction_commits_or_rolls_back() {
    let (_fx, mut store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();

    let result: Result<(), StoreError> = store.transaction(|tx| {
        tx.insert_message(&incoming(c, "doomed", t))?;
        tx.outbox_push(a, None, "message", "<message/>")?;
        Err(StoreError::InvalidInput("caller changed its mind"))
    });
    assert!(result.is_err());
    assert_eq!(store.message_count(c).unwrap(), 0);
    assert!(store.outbox(a).unwrap().is_empty());
    assert_eq!(unread(&store, c), 0);

    let id = store
        .transaction(|tx| {
            let m = tx.insert_message(&incoming(c, "kept", t))?.id();
            // A failing step inside is undone on its own; the transaction goes on.
            assert!(tx
                .insert_message(&incoming(ConversationId(999), "x", t))
                .is_err());
            tx.outbox_push(a, Some(m), "receipt", "<message/>")?;
            Ok(m)
        })
        .unwrap();
    assert_eq!(store.message(id).unwrap().body, "kept");
    assert_eq!(store.outbox(a).unwrap().len(), 1);
    assert_eq!(unread(&store, c), 1);
}

#[test]
fn failed_batch_insert_stores_nothing() {
    let (_fx, store, a) = setup();
    let c = conv(&store, a, "p@example.org");
    let t = base_ms();
    let batch = vec![
        incoming(c, "a", t),
        incoming(c, "b", t + 1),
        incoming(ConversationId(31337), "c", t + 2),
    ];
    assert!(store.insert_messages(&batch).is_err());
    assert_eq!(store.message_count(c).unwrap(), 0);
    assert_eq!(unread(&store, c), 0);
    assert_eq!(store.conversation_info(c).unwrap().last_message, None);
}

// ---------------------------------------------------------------- outbox

#[test]
fn outbox_order_removal_and_attempts() {
    let (_fx, store, a) = setup();
    let b = store.add_account("b@example.org", "pw").unwrap();
    let c = conv(&store, a, "p@example.org");
    let m = new_id(store.insert_message(&outgoing(c, "hi", base_ms())).unwrap());

    let o1 = store
        .outbox_push(a, Some(m), "message", "<message id='1'/>")
        .unwrap();
    let o2 = store
        .outbox_push(a, None, "receipt", "<message id='2'/>")
        .unwrap();
    let ob = store
        .outbox_push(b, None, "presence", "<presence/>")
        .unwrap();
    let o3 = store
        .outbox_push(a, None, "message", "<message id='3'/>")
        .unwrap();

    let entries = store.outbox(a).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![o1, o2, o3]
    );
    assert_eq!(entries[0].message, Some(m));
    assert_eq!(entries[0].kind, "message");
    assert_eq!(entries[1].payload, "<message id='2'/>");
    assert_eq!(store.outbox(b).unwrap()[0].id, ob);

    assert!(store.outbox_remove(o2).unwrap());
    assert!(!store.outbox_remove(o2).unwrap(), "second ack is harmless");
    assert_eq!(
        store
            .outbox(a)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![o1, o3]
    );

    assert_eq!(store.outbox_bump_attempts(o1).unwrap(), 1);
    assert_eq!(store.outbox_bump_attempts(o1).unwrap(), 2);
    assert_eq!(store.outbox(a).unwrap()[0].attempts, 2);
    assert!(matches!(
        store.outbox_bump_attempts(o2),
        Err(StoreError::NotFound(_))
    ));

    // Removing the newest entry does not free its id for the next one.
    assert!(store.outbox_remove(o3).unwrap());
    let o4 = store
        .outbox_push(a, None, "message", "<message id='4'/>")
        .unwrap();
    assert!(o4.0 > o3.0);

    assert!(matches!(
        store.outbox_push(AccountId(55), None, "message", "x"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.outbox_push(a, Some(MessageId(5555)), "message", "x"),
        Err(StoreError::NotFound(_))
    ));
}

// ---------------------------------------------------------------- kv

#[test]
fn kv_scopes() {
    let (_fx, store, a) = setup();
    let b = store.add_account("b@example.org", "pw").unwrap();
    assert_eq!(store.kv_get(None, "k").unwrap(), None);
    store.kv_set(None, "k", "global").unwrap();
    store.kv_set(Some(a), "k", "for a").unwrap();
    store.kv_set(None, "k", "global 2").unwrap();
    assert_eq!(
        store.kv_get(None, "k").unwrap().as_deref(),
        Some("global 2")
    );
    assert_eq!(
        store.kv_get(Some(a), "k").unwrap().as_deref(),
        Some("for a")
    );
    assert_eq!(store.kv_get(Some(b), "k").unwrap(), None);
    assert!(store.kv_remove(Some(a), "k").unwrap());
    assert!(!store.kv_remove(Some(a), "k").unwrap());
    assert_eq!(
        store.kv_get(None, "k").unwrap().as_deref(),
        Some("global 2")
    );
    assert!(matches!(
        store.kv_set(Some(AccountId(66)), "k", "v"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn unsynced_transaction_commits_and_restores_full_sync() {
    let (fx, mut store, account) = setup();
    let c = conv(&store, account, "peer@example.org");
    let inserted = store
        .transaction_unsynced(|tx| tx.insert_message(&incoming(c, "fast path", base_ms())))
        .unwrap();
    // Durability is back to FULL for everything else, and the barrier succeeds.
    assert_eq!(store.synchronous_level().unwrap(), 2);
    store.sync().unwrap();
    // Committed: another connection sees it.
    let other = fx.open(1);
    assert_eq!(other.message(new_id(inserted)).unwrap().body, "fast path");
    // A failing unsynced transaction also restores FULL and leaves nothing behind.
    let err = store.transaction_unsynced(|tx| {
        tx.insert_message(&incoming(c, "rolled back", base_ms() + 1))?;
        Err::<(), _>(StoreError::InvalidInput("forced"))
    });
    assert!(err.is_err());
    assert_eq!(store.synchronous_level().unwrap(), 2);
    assert_eq!(store.message_count(c).unwrap(), 1);
}

#[test]
fn session_state_round_trip_and_cascade() {
    use linnet_store::{FastToken, SessionState};
    let (_fx, store, account) = setup();
    assert_eq!(
        store.session_state(account).unwrap(),
        SessionState::default()
    );
    let state = SessionState {
        sm_id: Some("sm-1".into()),
        sm_location: None,
        sm_inbound: 41,
        fast: Some(FastToken {
            mechanism: "HT-SHA-256-NONE".into(),
            token: zeroize::Zeroizing::new("s3cr3t-token".into()),
            expiry: Some("2026-12-01T00:00:00Z".into()),
        }),
        fast_count: 7,
        user_agent_id: Some("d2c1".into()),
    };
    store.set_session_state(account, &state).unwrap();
    assert_eq!(store.session_state(account).unwrap(), state);
    assert!(
        !format!("{state:?}").contains("s3cr3t"),
        "token redacted in Debug"
    );
    store.set_sm_inbound(account, 42).unwrap();
    assert_eq!(store.session_state(account).unwrap().sm_inbound, 42);
    let cleared = SessionState {
        fast: None,
        ..state
    };
    store.set_session_state(account, &cleared).unwrap();
    assert!(store.session_state(account).unwrap().fast.is_none());
    store.remove_account(account).unwrap();
    assert!(matches!(
        store.set_session_state(account, &SessionState::default()),
        Err(StoreError::NotFound(_))
    ));
}
