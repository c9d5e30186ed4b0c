//! Rooms, members and invitations (schema v8).
#![allow(clippy::unwrap_used)]

mod common;

use common::{incoming, Fixture};
use linnet_store::{ConversationKind, RoomFeatures, RoomInvitation, RoomMember};

#[test]
fn a_room_is_a_group_conversation_kept_across_opens() {
    let f = Fixture::new();
    let store = f.open(1);
    let a = store.add_account("me@example.org", "pw").unwrap();
    // A one-to-one conversation with the same JID becomes the room's.
    let before = store
        .conversation(a, "room@muc.example.org", true)
        .unwrap()
        .unwrap();
    let c = store
        .upsert_room(a, "room@muc.example.org", "me", None)
        .unwrap();
    assert_eq!(c, before);
    assert_eq!(
        store.conversation_info(c).unwrap().kind,
        ConversationKind::GroupChat
    );
    store.set_room_subject(c, Some("plans")).unwrap();
    assert!(
        !store.set_room_subject(c, Some("plans")).unwrap(),
        "unchanged"
    );
    store.set_room_cursor(c, "arch-1").unwrap();
    store
        .set_room_features(
            c,
            RoomFeatures {
                members_only: true,
                non_anonymous: true,
                archived: true,
                occupant_ids: false,
            },
        )
        .unwrap();
    drop(store);
    let store = f.open(1);
    let r = store
        .room_by_jid(a, "room@muc.example.org")
        .unwrap()
        .unwrap();
    assert_eq!(r.conversation, c);
    assert_eq!((r.nick.as_str(), r.autojoin), ("me", true));
    assert_eq!(r.subject.as_deref(), Some("plans"));
    assert_eq!(r.archive_cursor.as_deref(), Some("arch-1"));
    assert!(r.members_only && r.non_anonymous && r.archived && !r.occupant_ids);
    // Leaving stops autojoin; joining again restarts it and forgets the removal.
    store.set_room_left(c, Some("kicked")).unwrap();
    let r = store.room(c).unwrap().unwrap();
    assert_eq!((r.autojoin, r.removed.as_deref()), (false, Some("kicked")));
    store
        .upsert_room(a, "room@muc.example.org", "me2", None)
        .unwrap();
    let r = store.room(c).unwrap().unwrap();
    assert_eq!(
        (r.autojoin, r.removed, r.nick.as_str()),
        (true, None, "me2")
    );
    assert_eq!(store.rooms(a).unwrap().len(), 1);
    assert!(store.upsert_room(a, "", "me", None).is_err());
}

#[test]
fn members_are_recorded_changed_and_replaced() {
    let f = Fixture::new();
    let store = f.open(1);
    let a = store.add_account("me@example.org", "pw").unwrap();
    let c = store
        .upsert_room(a, "room@muc.example.org", "me", None)
        .unwrap();
    assert!(store
        .set_room_member(c, "bob@example.org", Some("member"), Some("bob"))
        .unwrap());
    assert!(!store
        .set_room_member(c, "bob@example.org", Some("member"), None)
        .unwrap());
    assert!(store
        .set_room_member(c, "bob@example.org", Some("admin"), None)
        .unwrap());
    let m = store.room_members(c).unwrap();
    assert_eq!(
        m,
        vec![RoomMember {
            jid: "bob@example.org".into(),
            affiliation: "admin".into(),
            nick: Some("bob".into())
        }]
    );
    assert!(store
        .set_room_member(c, "x@example.org", Some("outcast"), None)
        .is_err());
    store
        .replace_room_members(
            c,
            &[RoomMember {
                jid: "carol@example.org".into(),
                affiliation: "owner".into(),
                nick: None,
            }],
        )
        .unwrap();
    let m = store.room_members(c).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].jid, "carol@example.org");
    assert!(store
        .set_room_member(c, "carol@example.org", None, None)
        .unwrap());
    assert!(store.room_members(c).unwrap().is_empty());
}

#[test]
fn invitations_are_kept_once_per_room_and_bounded() {
    let f = Fixture::new();
    let store = f.open(1);
    let a = store.add_account("me@example.org", "pw").unwrap();
    let inv = |room: &str, at: i64| RoomInvitation {
        room: room.into(),
        inviter: "bob@example.org".into(),
        reason: None,
        password: None,
        received_ms: at,
    };
    assert!(store
        .add_room_invitation(a, &inv("r@muc.example.org", 1))
        .unwrap());
    assert!(!store
        .add_room_invitation(a, &inv("r@muc.example.org", 2))
        .unwrap());
    for i in 0..60 {
        store
            .add_room_invitation(a, &inv(&format!("s{i}@muc.example.org"), 10 + i))
            .unwrap();
    }
    let all = store.room_invitations(a).unwrap();
    assert_eq!(all.len(), 50);
    assert_eq!(all.last().unwrap().room, "s59@muc.example.org");
    assert!(store
        .remove_room_invitation(a, "s59@muc.example.org")
        .unwrap());
    assert!(!store
        .remove_room_invitation(a, "s59@muc.example.org")
        .unwrap());
}

#[test]
fn group_messages_are_found_by_origin_or_room_stanza_id() {
    let f = Fixture::new();
    let store = f.open(1);
    let a = store.add_account("me@example.org", "pw").unwrap();
    let room = "room@muc.example.org";
    let c = store.upsert_room(a, room, "me", None).unwrap();
    let mut m = incoming(c, "hi", common::base_ms());
    m.origin_id = Some("o1".into());
    m.stanza_id = Some("s1".into());
    m.stanza_id_by = Some(room.into());
    let id = store.insert_message(&m).unwrap().id();
    store.set_occupant_id(id, "occ-1").unwrap();
    assert_eq!(
        store
            .message_by_room_reference(c, room, "o1")
            .unwrap()
            .unwrap()
            .id,
        id
    );
    let found = store
        .message_by_room_reference(c, room, "s1")
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id, found.occupant_id.as_deref()),
        (id, Some("occ-1"))
    );
    // A stanza-id is the room's only when the room stamped it.
    assert!(store
        .message_by_room_reference(c, "other@muc.example.org", "s1")
        .unwrap()
        .is_none());
}

#[test]
fn private_messages_are_marked_in_the_group_only() {
    let f = Fixture::new();
    let mut store = f.open(1);
    let a = store.add_account("me@example.org", "pw").unwrap();
    let c = store
        .upsert_room(a, "room@muc.example.org", "me", None)
        .unwrap();
    let ts = common::base_ms();
    let (public, private) = store
        .transaction(|tx| {
            let public = tx.insert_message(&incoming(c, "to all", ts))?.id();
            let private = tx.insert_message(&incoming(c, "to me", ts + 1))?.id();
            tx.set_private_with(private, "bob")?;
            Ok((public, private))
        })
        .unwrap();
    drop(store);
    let mut store = f.open(1);
    let page = store.messages(c, None, 10).unwrap();
    let with: Vec<(_, Option<&str>)> = page
        .iter()
        .map(|m| (m.id, m.private_with.as_deref()))
        .collect();
    assert_eq!(with, vec![(public, None), (private, Some("bob"))]);
    assert_eq!(
        store.message(private).unwrap().private_with.as_deref(),
        Some("bob")
    );

    // A one-to-one conversation has no occupants to be private with; no one has no name.
    let chat = store
        .conversation(a, "bob@example.org", true)
        .unwrap()
        .unwrap();
    let err = store.transaction(|tx| {
        let m = tx.insert_message(&incoming(chat, "hi", ts))?.id();
        tx.set_private_with(m, "bob")
    });
    assert!(err.is_err());
    let err = store.transaction(|tx| tx.set_private_with(public, ""));
    assert!(err.is_err());
    let missing =
        store.transaction(|tx| tx.set_private_with(linnet_store::MessageId(999_999), "bob"));
    assert!(matches!(
        missing,
        Err(linnet_store::StoreError::NotFound(_))
    ));
}
