//! Profiles and safety against the real servers, on raw sessions: avatars (XEP-0084) and
//! their vcard-temp fallback (XEP-0153), nicknames (XEP-0172), vCard4 (XEP-0292), blocking
//! (XEP-0191) and reports attached to blocks (XEP-0377).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_tests::*;
use linnet_xmpp::profile::{
    sha1_hex, Access, AvatarMetadata, BlockingSupport, PhotoUpdate, ProfileError, Report,
    ReportReason, ReportedStanza, Vcard4, Vcard4Entry, ASSUMED_STANZA_LIMIT,
};
use linnet_xmpp::{BareJid, Event, RequestError, Session};
use rand::RngCore;

async fn account(server: Server, tag: &str) -> (Session, BareJid) {
    let (s, _events) = registered_session(server, tag).await;
    let jid = s.own_jid().clone();
    (s, jid)
}

/// Bytes that start like a PNG and are random after, so that every run publishes an
/// avatar no server has seen.
fn image(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    data
}

/// An avatar published open is read by someone who is not a contact, checked against its
/// SHA-1 id; withdrawing it leaves an empty metadata item.
async fn avatar_is_read_back_by_a_stranger(server: Server) {
    let (a, a_jid) = account(server, "avpub").await;
    let (b, _) = account(server, "avread").await;
    let png = image(20_000);
    let info = a
        .publish_avatar(&png, "image/png", Some(64), Some(64), Access::Open)
        .await
        .unwrap();
    assert_eq!(info.id, sha1_hex(&png));
    assert_eq!(info.bytes, 20_000);

    let meta = b.avatar_metadata(Some(&a_jid)).await.unwrap().unwrap();
    let announced = meta.pubsub_info().unwrap();
    assert_eq!(announced, &info);
    let data = b.avatar_data(Some(&a_jid), &announced.id).await.unwrap();
    assert_eq!(data, png);
    assert_eq!(a.avatar_metadata(None).await.unwrap(), Some(meta));

    // An id that is not there (the avatar of someone else, say) is not found, not served.
    let missing = b.avatar_data(Some(&a_jid), &sha1_hex(b"other")).await;
    assert!(
        matches!(
            missing,
            Err(ProfileError::NotFound(_))
                | Err(ProfileError::Request(RequestError::Stanza { .. }))
        ),
        "{missing:?}"
    );

    a.remove_avatar().await.unwrap();
    assert_eq!(
        b.avatar_metadata(Some(&a_jid)).await.unwrap(),
        Some(AvatarMetadata::Disabled)
    );
}

/// With presence access, a stranger sees neither the metadata nor the data.
async fn a_contacts_only_avatar_is_hidden_from_strangers(server: Server) {
    let (a, a_jid) = account(server, "avpres").await;
    let (b, _) = account(server, "avstrange").await;
    let png = image(1000);
    let info = a
        .publish_avatar(&png, "image/png", None, None, Access::Presence)
        .await
        .unwrap();
    let meta = b.avatar_metadata(Some(&a_jid)).await;
    assert!(
        matches!(
            meta,
            Err(ProfileError::Request(RequestError::Stanza { .. }))
        ),
        "{meta:?}"
    );
    let data = b.avatar_data(Some(&a_jid), &info.id).await;
    assert!(
        matches!(
            data,
            Err(ProfileError::Request(RequestError::Stanza { .. }))
        ),
        "{data:?}"
    );
    // We still read our own.
    assert_eq!(a.avatar_data(None, &info.id).await.unwrap(), png);
}

/// An avatar too big for the server's stanza limit is refused before sending: the server
/// would close the stream on it (ejabberd 24.12 does, and announces no limit, so the
/// assumed one applies there).
async fn an_avatar_over_the_servers_stanza_limit_is_refused_locally(server: Server) {
    let (a, _) = account(server, "avbig").await;
    let announced = a.negotiated.max_stanza_bytes;
    match server {
        Server::Prosody => assert_eq!(announced, Some(256 * 1024)),
        Server::Ejabberd => assert_eq!(announced, None),
    }
    let limit = announced.unwrap_or(ASSUMED_STANZA_LIMIT) as usize;
    // Base64 makes 4 bytes of 3: this one fits unencoded, not encoded.
    let too_big = image(limit * 4 / 5);
    let refused = a
        .publish_avatar(&too_big, "image/png", None, None, Access::Open)
        .await;
    assert!(
        matches!(refused, Err(ProfileError::TooLarge { .. })),
        "{refused:?}"
    );
    let refused = a.set_vcard_temp_photo(Some((&too_big, "image/png"))).await;
    assert!(
        matches!(refused, Err(ProfileError::TooLarge { .. })),
        "{refused:?}"
    );
    // The session is still usable: nothing was sent.
    let fits = image(limit / 2);
    let info = a
        .publish_avatar(&fits, "image/png", None, None, Access::Open)
        .await
        .unwrap();
    assert_eq!(a.avatar_data(None, &info.id).await.unwrap(), fits);
}

/// XEP-0153: a photo set in our vcard-temp is read back by another account and checked
/// against the hash our presence would carry; a wrong hash is refused; removing it works.
async fn vcard_temp_photo_round_trip(server: Server) {
    let (a, a_jid) = account(server, "vtpub").await;
    let (b, _) = account(server, "vtread").await;
    let png = image(5000);
    let update = a
        .set_vcard_temp_photo(Some((&png, "image/png")))
        .await
        .unwrap();
    assert_eq!(update, PhotoUpdate::Photo(sha1_hex(&png)));
    let PhotoUpdate::Photo(hash) = &update else {
        unreachable!()
    };
    let own = a.vcard_temp_photo(None, Some(hash)).await.unwrap().unwrap();
    assert_eq!(own.data, png);
    assert_eq!(own.media_type.as_deref(), Some("image/png"));

    let theirs = b.vcard_temp_photo(Some(&a_jid), Some(hash)).await.unwrap();
    let theirs = theirs.expect("the photo, as XEP-0153 publishes vCards to everyone");
    assert_eq!(theirs.data, png);
    assert_eq!(&theirs.sha1, hash);
    let wrong = b
        .vcard_temp_photo(Some(&a_jid), Some(&sha1_hex(b"another photo")))
        .await;
    assert_eq!(wrong, Err(ProfileError::HashMismatch));

    if server == Server::Prosody {
        // mod_vcard_legacy turns a vcard-temp photo into XEP-0084 nodes.
        let meta = a.avatar_metadata(None).await.unwrap().unwrap();
        assert_eq!(&meta.pubsub_info().unwrap().id, hash);
    }

    assert_eq!(
        a.set_vcard_temp_photo(None).await.unwrap(),
        PhotoUpdate::NoPhoto
    );
    assert_eq!(b.vcard_temp_photo(Some(&a_jid), None).await.unwrap(), None);
}

/// XEP-0172: a nickname published open is read by a stranger; an empty item withdraws it.
async fn nick_is_published_and_withdrawn(server: Server) {
    let (a, a_jid) = account(server, "nkpub").await;
    let (b, _) = account(server, "nkread").await;
    assert_eq!(b.fetch_nick(Some(&a_jid)).await.unwrap(), None);
    a.publish_nick(Some("Ishmael 🐋"), Access::Open)
        .await
        .unwrap();
    assert_eq!(
        b.fetch_nick(Some(&a_jid)).await.unwrap().as_deref(),
        Some("Ishmael 🐋")
    );
    a.publish_nick(Some("CallMeIshmael"), Access::Open)
        .await
        .unwrap();
    assert_eq!(
        a.fetch_nick(None).await.unwrap().as_deref(),
        Some("CallMeIshmael")
    );
    a.publish_nick(None, Access::Open).await.unwrap();
    assert_eq!(b.fetch_nick(Some(&a_jid)).await.unwrap(), None);
    let bad = a.publish_nick(Some("a\u{202e}b"), Access::Open).await;
    assert!(matches!(bad, Err(ProfileError::BadArgument(_))), "{bad:?}");
}

/// XEP-0292: a vCard4 is read back whole by a stranger, and a property this client does
/// not model survives an edit and a republish.
async fn vcard4_keeps_unknown_properties(server: Server) {
    let (a, a_jid) = account(server, "v4pub").await;
    let (b, _) = account(server, "v4read").await;
    assert_eq!(b.fetch_vcard4(Some(&a_jid)).await.unwrap(), None);
    let card = Vcard4 {
        full_name: Some("Juliet Capulet".into()),
        nicknames: vec!["Jules".into()],
        note: Some("Balcony.\nEvenings.".into()),
        urls: vec!["https://capulet.example/".into()],
        emails: vec![Vcard4Entry {
            value: "juliet@capulet.example".into(),
            types: vec!["home".into()],
        }],
        tels: vec![Vcard4Entry::new("tel:+39-045-555-0100")],
        other: vec![
            "<bday xmlns='urn:ietf:params:xml:ns:vcard-4.0'><date>1582-07-31</date></bday>".into(),
            "<x-house xmlns='urn:example:verona'>Capulet</x-house>".into(),
        ],
    };
    a.publish_vcard4(&card, Access::Open).await.unwrap();
    let read = b.fetch_vcard4(Some(&a_jid)).await.unwrap().unwrap();
    assert_same_card(&read, &card);

    // Another client of ours edits the name: what it does not know is kept.
    let mut edited = a.fetch_vcard4(None).await.unwrap().unwrap();
    edited.full_name = Some("Juliet".into());
    a.publish_vcard4(&edited, Access::Open).await.unwrap();
    let read = b.fetch_vcard4(Some(&a_jid)).await.unwrap().unwrap();
    assert_eq!(read.full_name.as_deref(), Some("Juliet"));
    assert!(
        read.other.iter().any(|o| o.contains("1582-07-31")),
        "{read:?}"
    );
    assert!(
        read.other
            .iter()
            .any(|o| o.contains("urn:example:verona") && o.contains("Capulet")),
        "{read:?}"
    );
}

/// The modelled fields are equal; the kept ones hold the same content (the server may
/// serialize them differently).
fn assert_same_card(read: &Vcard4, sent: &Vcard4) {
    let plain = |v: &Vcard4| Vcard4 {
        other: Vec::new(),
        ..v.clone()
    };
    assert_eq!(plain(read), plain(sent));
    assert_eq!(read.other.len(), sent.other.len(), "{read:?}");
    assert!(read.other[0].contains("1582-07-31"), "{read:?}");
    assert!(read.other[1].contains("urn:example:verona"), "{read:?}");
}

/// XEP-0191: block two JIDs, read the list, unblock one, unblock all.
async fn block_list_unblock(server: Server) {
    let (a, a_jid) = account(server, "blk").await;
    assert!(a.blocking_support().await.unwrap().blocking);
    assert!(a.blocklist().await.unwrap().is_empty());
    let spammer = format!("spammer@{}", domain(server));
    let spam_domain = "spam.example";
    a.block(&[spammer.as_str(), spam_domain]).await.unwrap();
    let mut list = a.blocklist().await.unwrap();
    list.sort();
    let mut want = vec![spammer.clone(), spam_domain.to_owned()];
    want.sort();
    assert_eq!(list, want);

    a.unblock(&[spam_domain]).await.unwrap();
    assert_eq!(a.blocklist().await.unwrap(), vec![spammer.clone()]);

    a.block(&["troll@example.org"]).await.unwrap();
    a.unblock_all().await.unwrap();
    assert!(a.blocklist().await.unwrap().is_empty());

    // What would block ourselves or, on the wire, unblock everyone is refused locally.
    let own = a.block(&[a_jid.as_str()]).await;
    assert!(matches!(own, Err(ProfileError::BadArgument(_))), "{own:?}");
    let none = a.unblock(&[]).await;
    assert!(
        matches!(none, Err(ProfileError::BadArgument(_))),
        "{none:?}"
    );
}

/// A message to a blocked contact bounces (XEP-0191 §3.3): Prosody with the
/// `<blocked/>` child, which the session reports as "blocked"; ejabberd with a plain
/// not-acceptable.
async fn a_message_to_a_blocked_contact_bounces(server: Server) {
    let (a, mut a_events) = registered_session(server, "blkmsg").await;
    let (b, b_jid) = account(server, "blkd").await;
    a.block(&[b_jid.as_str()]).await.unwrap();
    a.send_chat(&b_jid, "are you there?", "blocked-1").unwrap();
    let bounced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match a_events.recv().await {
                Some(Event::MessageError { id, condition }) if id == "blocked-1" => {
                    return condition
                }
                Some(_) => {}
                None => panic!("session closed"),
            }
        }
    })
    .await
    .expect("a bounce");
    let want = match server {
        Server::Prosody => "blocked",
        Server::Ejabberd => "not-acceptable",
    };
    assert_eq!(bounced, want);
    drop(b);
}

/// XEP-0377: a block carries a report only where the server announces reporting;
/// elsewhere it is a plain block. Either way the JID ends up blocked.
async fn block_and_report_where_supported(server: Server) {
    let (a, _) = account(server, "rpt").await;
    let support = a.blocking_support().await.unwrap();
    assert!(support.blocking);
    let spammer = format!("spam-bot@{}", domain(server));
    let report = Report {
        text: Some("Unsolicited advertising.".into()),
        lang: Some("en".into()),
        stanzas: vec![ReportedStanza {
            by: a.own_jid().as_str().to_owned(),
            id: "28482-98726-73623".into(),
        }],
        ..Report::new(ReportReason::Spam)
    };
    let reported = a
        .block_and_report(&spammer, &report, &support)
        .await
        .unwrap();
    assert_eq!(reported, support.reporting);
    assert_eq!(a.blocklist().await.unwrap(), vec![spammer.clone()]);

    // A server that takes reports takes one forced through as well; one that does not
    // announce them still blocks (the report child is ignored), so a client that
    // misjudged support would not lose the block.
    let forced = BlockingSupport {
        blocking: true,
        reporting: true,
    };
    let other = format!("abuser@{}", domain(server));
    assert!(a
        .block_and_report(&other, &Report::new(ReportReason::Abuse), &forced)
        .await
        .unwrap());
    let list = a.blocklist().await.unwrap();
    assert!(list.contains(&other), "{list:?}");
}

both_servers!(
    avatar_is_read_back_by_a_stranger,
    a_contacts_only_avatar_is_hidden_from_strangers,
    an_avatar_over_the_servers_stanza_limit_is_refused_locally,
    vcard_temp_photo_round_trip,
    nick_is_published_and_withdrawn,
    vcard4_keeps_unknown_properties,
    block_list_unblock,
    a_message_to_a_blocked_contact_bounces,
    block_and_report_where_supported
);
