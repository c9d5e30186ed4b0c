//! Corrections, retractions, reactions and markers as stored (schema v6).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use linnet_store::{
    AccountId, ConversationId, DeliveryState, MessageId, MessageKind, NewMessage, Store,
};

fn setup() -> (Fixture, Store, AccountId, ConversationId) {
    let fx = Fixture::new();
    let store = fx.open(1);
    let account = store.add_account("me@example.org", "pw").unwrap();
    let c = store
        .conversation(account, "peer@example.org", true)
        .unwrap()
        .unwrap();
    (fx, store, account, c)
}

fn insert(store: &Store, m: NewMessage) -> MessageId {
    store.insert_message(&m).unwrap().id()
}

fn change(target: MessageId, kind: MessageKind, body: &str, origin: &str, ts: i64) -> NewMessage {
    let c = ConversationId(1);
    NewMessage {
        kind,
        target: Some(target),
        origin_id: Some(origin.into()),
        delivery_state: DeliveryState::Read,
        ..incoming(c, body, ts)
    }
}

#[test]
fn changes_are_hidden_rows_that_count_for_nothing() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    let m = insert(&store, incoming(c, "original", t));
    let before = store.conversation_info(c).unwrap();
    insert(
        &store,
        change(m, MessageKind::Correction, "fixed", "c1", t + 1),
    );
    insert(&store, change(m, MessageKind::Reactions, "👍", "r1", t + 2));
    let after = store.conversation_info(c).unwrap();
    assert_eq!(after.unread_count, before.unread_count);
    assert_eq!(after.last_message, before.last_message);
    assert_eq!(store.messages(c, None, 10).unwrap().len(), 1);
    assert_eq!(store.message_count(c).unwrap(), 1);
    // A change must name its message and never be unread.
    let orphan = NewMessage {
        kind: MessageKind::Correction,
        ..incoming(c, "x", t)
    };
    assert!(store.insert_message(&orphan).is_err());
    let unread = NewMessage {
        delivery_state: DeliveryState::Delivered,
        ..change(m, MessageKind::Correction, "y", "c9", t)
    };
    assert!(store.insert_message(&unread).is_err());
}

#[test]
fn a_late_older_correction_does_not_undo_a_newer_one() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    let m = insert(&store, incoming(c, "v1", t));
    assert!(store.apply_correction(m, "v3", t + 30).unwrap());
    assert!(!store.apply_correction(m, "v2", t + 20).unwrap());
    let rec = store.message(m).unwrap();
    assert_eq!((rec.body.as_str(), rec.edited_ms), ("v3", Some(t + 30)));
    // The chat list's preview follows the text.
    let info = store.conversation_info(c).unwrap();
    assert_eq!(info.last_message.unwrap().body, "v3");
}

#[test]
fn a_correction_keeps_what_a_reply_answers_unless_it_names_another() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    let m = insert(
        &store,
        NewMessage {
            reply_to: Some("q1".into()),
            ..incoming(c, "v1", t)
        },
    );
    // Only the new text (an older client's correction): still a reply to the same.
    assert!(store.apply_correction(m, "v2", t + 10).unwrap());
    assert_eq!(store.message(m).unwrap().reply_to.as_deref(), Some("q1"));
    assert!(store
        .apply_correction_with_reply(m, "v3", None, t + 20)
        .unwrap());
    assert_eq!(store.message(m).unwrap().reply_to.as_deref(), Some("q1"));
    // One that names what it answers: that, from now on.
    assert!(store
        .apply_correction_with_reply(m, "v4", Some("q2"), t + 30)
        .unwrap());
    // A late older one changes neither the text nor what it answers.
    assert!(!store
        .apply_correction_with_reply(m, "v0", Some("q0"), t + 5)
        .unwrap());
    let rec = store.message(m).unwrap();
    assert_eq!(
        (rec.body.as_str(), rec.reply_to.as_deref()),
        ("v4", Some("q2"))
    );
    // A message that answered nothing becomes a reply.
    let plain = insert(&store, incoming(c, "w1", t + 40));
    assert!(store
        .apply_correction_with_reply(plain, "w2", Some("q1"), t + 50)
        .unwrap());
    assert_eq!(
        store.message(plain).unwrap().reply_to.as_deref(),
        Some("q1")
    );
}

#[test]
fn a_retraction_is_final_and_drops_reactions() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    let m = insert(&store, incoming(c, "oops", t));
    assert!(store
        .set_reactions(m, "peer@example.org", &["👍".into()], t + 1)
        .unwrap());
    assert!(store.apply_retraction(m, t + 2).unwrap());
    assert!(!store.apply_retraction(m, t + 3).unwrap());
    assert!(!store.apply_correction(m, "back", t + 4).unwrap());
    assert!(!store
        .set_reactions(m, "x@y", &["🎉".into()], t + 5)
        .unwrap());
    let rec = store.message(m).unwrap();
    assert_eq!(rec.body, "");
    assert_eq!(rec.retracted_ms, Some(t + 2));
    assert!(store.reactions(&[m]).unwrap().is_empty());
    assert_eq!(
        store
            .conversation_info(c)
            .unwrap()
            .last_message
            .unwrap()
            .body,
        ""
    );
}

#[test]
fn each_sender_has_one_set_of_reactions_and_old_sets_lose() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    let m = insert(&store, incoming(c, "pick", t));
    store
        .set_reactions(m, "a@x", &["👍".into(), "🎉".into()], t + 10)
        .unwrap();
    store
        .set_reactions(m, "b@x", &["👍".into()], t + 11)
        .unwrap();
    // An older set (an archive copy seen after the live one) does not win.
    assert!(!store
        .set_reactions(m, "a@x", &["😢".into()], t + 5)
        .unwrap());
    store.set_reactions(m, "a@x", &[], t + 12).unwrap();
    let sets = store.reactions(&[m]).unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].sender, "b@x");
    assert_eq!(sets[0].emojis, vec!["👍".to_owned()]);
    assert!(store.set_reactions(MessageId(9999), "a@x", &[], t).is_err());
}

#[test]
fn displayed_reads_our_messages_up_to_the_marked_one() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    let first = insert(
        &store,
        NewMessage {
            delivery_state: DeliveryState::Delivered,
            ..outgoing(c, "one", t)
        },
    );
    let second = insert(
        &store,
        NewMessage {
            delivery_state: DeliveryState::Sent,
            ..outgoing(c, "two", t + 1)
        },
    );
    let third = insert(
        &store,
        NewMessage {
            delivery_state: DeliveryState::Sent,
            ..outgoing(c, "three", t + 2)
        },
    );
    assert!(store.mark_displayed_up_to(c, second).unwrap());
    let state = |m| store.message(m).unwrap().delivery_state;
    assert_eq!(state(first), DeliveryState::Read);
    assert_eq!(state(second), DeliveryState::Read);
    assert_eq!(state(third), DeliveryState::Sent);
    assert!(!store.mark_displayed_up_to(c, second).unwrap());
}

#[test]
fn a_correction_of_an_unknown_message_stands_in_for_it() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    let stand_in = insert(
        &store,
        NewMessage {
            origin_id: Some("c1".into()),
            replaces: Some("gone".into()),
            ..incoming(c, "corrected text", t)
        },
    );
    let found = store.message_by_reference(c, "gone").unwrap().unwrap();
    assert_eq!(found.id, stand_in);
    // Its own id names it too; an id of nothing names nothing.
    assert_eq!(
        store.message_by_reference(c, "c1").unwrap().unwrap().id,
        stand_in
    );
    assert!(store.message_by_reference(c, "other").unwrap().is_none());
    // A hidden change is never a reference target.
    insert(
        &store,
        change(stand_in, MessageKind::Reactions, "👍", "r1", t + 1),
    );
    assert!(store.message_by_reference(c, "r1").unwrap().is_none());
}

#[test]
fn the_newest_incoming_message_is_the_one_to_mark() {
    let (_fx, store, _, c) = setup();
    let t = base_ms();
    assert!(store.latest_incoming(c).unwrap().is_none());
    let m = insert(
        &store,
        NewMessage {
            markable: true,
            origin_id: Some("m1".into()),
            ..incoming(c, "hi", t)
        },
    );
    insert(&store, outgoing(c, "mine", t + 1));
    insert(
        &store,
        change(m, MessageKind::Correction, "hi!", "c1", t + 2),
    );
    let latest = store.latest_incoming(c).unwrap().unwrap();
    assert_eq!(latest.id, m);
    assert!(latest.markable);
}
