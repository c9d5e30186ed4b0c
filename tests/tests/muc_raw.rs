//! Group chats (XEP-0045, XEP-0410, XEP-0402) against the real servers, on raw sessions.
//! Everything here is observed through IQs (the room's disco#info, its affiliation lists,
//! self-pings); the room's presences and messages, as the client applies them, are tested
//! in `groups.rs`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_tests::*;
use linnet_xmpp::muc::{Affiliation, Bookmark, Role, SelfPing};
use linnet_xmpp::{BareJid, Published, RequestError, Session};

fn muc_domain(server: Server) -> String {
    var(match server {
        Server::Prosody => "PROSODY_MUC_DOMAIN",
        Server::Ejabberd => "EJABBERD_MUC_DOMAIN",
    })
}

async fn account(server: Server, tag: &str) -> (Session, BareJid) {
    let (session, _events) = registered_session(server, tag).await;
    let jid = session.own_jid().clone();
    (session, jid)
}

fn fresh_room(server: Server) -> BareJid {
    BareJid::parse(&format!(
        "{}@{}",
        fresh_username("group"),
        muc_domain(server)
    ))
    .unwrap()
}

/// Self-pings until the room says we are in: the join presence has no answer we can see
/// here, and the room exists (and knows us) only once the service has processed it.
async fn wait_joined(session: &Session, room: &BareJid, nick: &str) {
    for _ in 0..50 {
        if session.muc_self_ping(room, nick).await.unwrap() == SelfPing::Joined {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never joined the room");
}

/// A new room, created by joining it, configured as a private group.
async fn private_group(server: Server, owner: &Session, nick: &str) -> BareJid {
    let room = fresh_room(server);
    owner.muc_join(&room, nick, None).unwrap();
    wait_joined(owner, &room, nick).await;
    let configured = owner
        .muc_configure_private_group(&room, "Family")
        .await
        .unwrap();
    // Both servers' forms have an archiving field and one for members' invitations.
    assert!(configured.archiving, "{configured:?}");
    assert!(configured.member_invites, "{configured:?}");
    room
}

async fn the_muc_service_is_discovered(server: Server) {
    let (a, _) = account(server, "mucsvc").await;
    let found = a.discover_muc_service().await.unwrap();
    assert_eq!(
        found.map(|j| j.as_str().to_owned()),
        Some(muc_domain(server))
    );
}

/// The room the configuration flow makes is what OMEMO needs, as the room itself says.
async fn a_private_group_is_members_only_and_non_anonymous(server: Server) {
    let (a, _) = account(server, "mucown").await;
    let room = private_group(server, &a, "Alice").await;
    let info = a.muc_disco(&room).await.unwrap();
    assert!(info.is_room, "{info:?}");
    assert!(info.members_only, "{info:?}");
    assert!(info.non_anonymous, "{info:?}");
    assert!(info.persistent, "{info:?}");
    assert!(!info.password_protected, "{info:?}");
    assert!(info.mam, "{info:?}");
    assert!(info.occupant_id, "{info:?}");
    assert_eq!(info.name.as_deref(), Some("Family"));
    assert!(info.suitable_for_omemo());
    // Prosody announces the XEP-0410 optimisation (it answers self-pings itself);
    // ejabberd 24.12 does not announce it.
    assert_eq!(info.self_ping_optimization, server == Server::Prosody);
    a.muc_destroy(&room, None).await.unwrap();
}

/// Membership is granted and revoked by the admin IQ and read back from the lists, by the
/// owner and by the member (both servers give members the lists of non-anonymous rooms).
async fn members_are_added_listed_and_removed(server: Server) {
    let (a, a_jid) = account(server, "mucown").await;
    let (b, b_jid) = account(server, "mucmem").await;
    let room = private_group(server, &a, "Alice").await;
    a.muc_set_affiliation(&room, &b_jid, Affiliation::Member, Some("family"))
        .await
        .unwrap();
    let members = a
        .muc_affiliations(&room, Affiliation::Member)
        .await
        .unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].jid, b_jid);
    assert_eq!(members[0].affiliation, Affiliation::Member);
    for reader in [&a, &b] {
        let mut all = reader.muc_members(&room).await.unwrap();
        all.sort_by_key(|x| x.affiliation);
        let got: Vec<(&BareJid, Affiliation)> =
            all.iter().map(|i| (&i.jid, i.affiliation)).collect();
        assert_eq!(
            got,
            [(&a_jid, Affiliation::Owner), (&b_jid, Affiliation::Member)]
        );
    }
    a.muc_set_affiliation(&room, &b_jid, Affiliation::None, None)
        .await
        .unwrap();
    assert!(a
        .muc_affiliations(&room, Affiliation::Member)
        .await
        .unwrap()
        .is_empty());
    // Banned: on the outcast list, not among the members.
    a.muc_set_affiliation(&room, &b_jid, Affiliation::Outcast, None)
        .await
        .unwrap();
    let outcasts = a
        .muc_affiliations(&room, Affiliation::Outcast)
        .await
        .unwrap();
    assert_eq!(outcasts.len(), 1);
    assert_eq!(outcasts[0].jid, b_jid);
    let members = a.muc_members(&room).await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    // A stranger may not change the room.
    let (c, c_jid) = account(server, "mucout").await;
    let refused = c
        .muc_set_affiliation(&room, &c_jid, Affiliation::Member, None)
        .await;
    assert!(
        matches!(refused, Err(RequestError::Stanza { .. })),
        "{refused:?}"
    );
    // Inviting makes a member first.
    a.muc_invite(&room, &c_jid, Some("join us")).await.unwrap();
    let members = a.muc_members(&room).await.unwrap();
    assert!(
        members
            .iter()
            .any(|m| m.jid == c_jid && m.affiliation == Affiliation::Member),
        "{members:?}"
    );
    a.muc_destroy(&room, None).await.unwrap();
}

/// XEP-0410 against both servers: joined while in the room; not joined for someone who is
/// not in it, for a member who has not joined, after a kick, and in a room that does not
/// exist (any more).
async fn self_ping_tells_who_is_joined(server: Server) {
    let (a, _) = account(server, "mucown").await;
    let (b, b_jid) = account(server, "mucmem").await;
    let (c, _) = account(server, "mucout").await;
    let room = private_group(server, &a, "Alice").await;
    assert_eq!(
        a.muc_self_ping(&room, "Alice").await.unwrap(),
        SelfPing::Joined
    );
    // Not an occupant, pinging someone else's nickname or one that nobody has.
    assert_eq!(
        c.muc_self_ping(&room, "Alice").await.unwrap(),
        SelfPing::NotJoined
    );
    assert_eq!(
        c.muc_self_ping(&room, "Carol").await.unwrap(),
        SelfPing::NotJoined
    );
    a.muc_set_affiliation(&room, &b_jid, Affiliation::Member, None)
        .await
        .unwrap();
    assert_eq!(
        b.muc_self_ping(&room, "Bob").await.unwrap(),
        SelfPing::NotJoined
    );
    b.muc_join(&room, "Bob", None).unwrap();
    wait_joined(&b, &room, "Bob").await;
    // Kicked: role none by nickname.
    a.muc_set_role(&room, "Bob", Role::None, Some("test"))
        .await
        .unwrap();
    assert_eq!(
        b.muc_self_ping(&room, "Bob").await.unwrap(),
        SelfPing::NotJoined
    );
    // Joined again and left; then the room is destroyed.
    b.muc_join(&room, "Bob", None).unwrap();
    wait_joined(&b, &room, "Bob").await;
    b.muc_leave(&room, "Bob").unwrap();
    let mut left = false;
    for _ in 0..50 {
        if b.muc_self_ping(&room, "Bob").await.unwrap() == SelfPing::NotJoined {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left, "still joined after leaving");
    a.muc_destroy(&room, Some("done")).await.unwrap();
    // ejabberd 24.12 sometimes leaves an IQ to a room it is still tearing down unanswered,
    // even after the destroy's result: no answer is "try later", as XEP-0410 says, and the
    // next ping is answered. A moment's wait makes that rare (each costs a request timeout).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut verdict = SelfPing::TryLater;
    for _ in 0..3 {
        verdict = a.muc_self_ping(&room, "Alice").await.unwrap();
        if verdict != SelfPing::TryLater {
            break;
        }
    }
    assert_eq!(verdict, SelfPing::NotJoined);
    let never = fresh_room(server);
    assert_eq!(
        a.muc_self_ping(&never, "Alice").await.unwrap(),
        SelfPing::NotJoined
    );
}

/// XEP-0402: a bookmark is published (with the node configuration it needs), read back
/// with everything it carries, replaced, and retracted.
async fn bookmarks_round_trip(server: Server) {
    let (a, a_jid) = account(server, "mucbm").await;
    assert!(a.bookmarks_fetch().await.unwrap().is_empty());
    let family = Bookmark {
        room: fresh_room(server),
        name: Some("Family".into()),
        autojoin: true,
        nick: Some("Mum".into()),
        password: Some("pass word".into()),
        extensions: Some(
            "<extensions xmlns='urn:xmpp:bookmarks:1'><state xmlns='urn:example:state' minimized='true'/></extensions>"
                .into(),
        ),
    };
    let friends = Bookmark {
        room: fresh_room(server),
        name: None,
        autojoin: false,
        nick: None,
        password: None,
        extensions: None,
    };
    assert_eq!(
        a.bookmark_publish(&family).await.unwrap(),
        Published::AsAsked
    );
    assert_eq!(
        a.bookmark_publish(&friends).await.unwrap(),
        Published::AsAsked
    );
    // XEP-0402 §3.3's configuration, replay at login included: none.
    let config = a
        .pep_node_config(linnet_xmpp::muc::NS_BOOKMARKS)
        .await
        .unwrap();
    let field = |var: &str| {
        config
            .iter()
            .find(|(v, _)| v == var)
            .map(|(_, value)| value.as_str())
    };
    assert_eq!(
        field("pubsub#access_model"),
        Some("whitelist"),
        "{config:?}"
    );
    assert_eq!(
        field("pubsub#send_last_published_item"),
        Some("never"),
        "{config:?}"
    );
    assert!(
        matches!(field("pubsub#persist_items"), Some("true" | "1")),
        "{config:?}"
    );
    let mut got = a.bookmarks_fetch().await.unwrap();
    got.sort_by(|x, y| x.room.cmp(&y.room));
    let mut want = vec![family.clone(), friends.clone()];
    want.sort_by(|x, y| x.room.cmp(&y.room));
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.room, w.room);
        assert_eq!(g.name, w.name);
        assert_eq!(g.autojoin, w.autojoin);
        assert_eq!(g.nick, w.nick);
        assert_eq!(g.password, w.password);
        assert_eq!(g.extensions.is_some(), w.extensions.is_some());
        if let Some(ext) = &g.extensions {
            assert!(ext.contains("urn:example:state"), "{ext}");
            assert!(ext.contains("minimized"), "{ext}");
        }
    }
    // Replaced under the same id.
    let renamed = Bookmark {
        name: Some("Family (all)".into()),
        autojoin: false,
        ..family.clone()
    };
    a.bookmark_publish(&renamed).await.unwrap();
    let got = a.bookmarks_fetch().await.unwrap();
    assert_eq!(got.len(), 2);
    let f = got.iter().find(|b| b.room == family.room).unwrap();
    assert_eq!(f.name.as_deref(), Some("Family (all)"));
    assert!(!f.autojoin);
    // Nobody else can read them (whitelist: the owner only).
    let (stranger, _) = account(server, "mucbmx").await;
    let peek = stranger
        .pep_items(Some(&a_jid), linnet_xmpp::muc::NS_BOOKMARKS, None)
        .await;
    // XEP-0060 says not-allowed (closed-node), as ejabberd does; Prosody says forbidden.
    assert!(
        matches!(&peek, Err(RequestError::Stanza { condition, .. })
            if condition == "not-allowed" || condition == "forbidden"),
        "{peek:?}"
    );
    a.bookmark_retract(&family.room).await.unwrap();
    let got = a.bookmarks_fetch().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].room, friends.room);
    // Retracting one that is gone is not an error.
    a.bookmark_retract(&family.room).await.unwrap();
}

/// Arguments we would never put on the wire are refused before anything is sent.
async fn bad_arguments_are_refused(server: Server) {
    let (a, _) = account(server, "mucbad").await;
    let room = fresh_room(server);
    let long = "n".repeat(linnet_xmpp::muc::MAX_NICK_BYTES + 1);
    for nick in ["", "  ", long.as_str()] {
        assert!(matches!(
            a.muc_join(&room, nick, None),
            Err(RequestError::BadArgument(_))
        ));
        assert!(matches!(
            a.muc_self_ping(&room, nick).await,
            Err(RequestError::BadArgument(_))
        ));
        assert!(matches!(
            a.muc_set_role(&room, nick, Role::None, None).await,
            Err(RequestError::BadArgument(_))
        ));
    }
}

both_servers!(
    the_muc_service_is_discovered,
    a_private_group_is_members_only_and_non_anonymous,
    members_are_added_listed_and_removed,
    self_ping_tells_who_is_joined,
    bookmarks_round_trip,
    bad_arguments_are_refused
);
