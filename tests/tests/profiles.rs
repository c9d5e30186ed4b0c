//! Profiles through the client against the real servers: avatars (XEP-0084, and the
//! XEP-0153 vCard photo as fallback) and nicknames (XEP-0172) reaching contacts' snapshots
//! and our other devices, vCard4 (XEP-0292) cards, and what strangers and bad data cannot
//! do. What we publish is our picture's centred square, scaled down to 192 pixels a side
//! at most, as PNG.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use image::{GenericImageView, ImageFormat, Rgb, RgbImage};
use linnet_client::{ChatListSnapshot, ClientError, ConversationItem, ProfileCard};
use linnet_tests::*;
use linnet_xmpp::profile::{sha1_hex, Access, AvatarInfo};
use linnet_xmpp::BareJid;
use rand::{Rng, SeedableRng};

/// The largest side of an avatar we publish.
const MAX_SIDE: u32 = 192;

fn encoded(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A real picture: a colour gradient, `seed` making each one different.
fn picture(seed: u8, width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, seed])
    });
    encoded(&img, format)
}

/// A picture of pure noise, which PNG cannot compress.
fn noise(width: u32, height: u32) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let img = RgbImage::from_fn(width, height, |_, _| Rgb(rng.gen()));
    encoded(&img, ImageFormat::Png)
}

/// The avatar `c` shows for its own account once it is not `before`, as stored: its id is
/// the SHA-1 of the PNG published.
async fn own_avatar(c: &TestClient, before: Option<&str>) -> (String, image::DynamicImage) {
    let s = c
        .wait_list("our avatar published", |s| {
            s.accounts[0].avatar.is_some() && s.accounts[0].avatar.as_deref() != before
        })
        .await;
    let id = s.accounts[0].avatar.clone().unwrap();
    let stored = c.client.avatar(c.account, &id).unwrap().unwrap();
    assert_eq!(stored.media_type, "image/png");
    assert_eq!(sha1_hex(&stored.data), id);
    let png = image::load_from_memory_with_format(&stored.data, ImageFormat::Png).unwrap();
    (id, png)
}

/// What `jid` announces of its avatar, as read by `reader` through a session of its own,
/// closed at once: with such a session of B left open, ejabberd was seen not to
/// deliver B's later nickname to A.
async fn announced(server: Server, reader: &str, jid: &str) -> AvatarInfo {
    let session = raw_session_of(server, reader).await;
    let jid = BareJid::parse(jid).unwrap();
    let meta = session.avatar_metadata(Some(&jid)).await.unwrap().unwrap();
    session.close().await;
    let info = meta.pubsub_info().unwrap().clone();
    assert_eq!(info.media_type, "image/png");
    info
}

fn assert_announced_size(info: &AvatarInfo, png: &image::DynamicImage) {
    let (w, h) = png.dimensions();
    assert_eq!(
        (info.width, info.height),
        (Some(w as u16), Some(h as u16)),
        "{info:?}"
    );
}

fn item<'a>(s: &'a ChatListSnapshot, peer: &str) -> Option<&'a ConversationItem> {
    s.conversations
        .iter()
        .find(|c| c.peer == peer)
        .map(|c| &**c)
}

async fn raw_session_of(server: Server, jid: &str) -> linnet_xmpp::Session {
    let conn = linnet_xmpp::connect(&xmpp_config(server, jid))
        .await
        .unwrap();
    let (session, mut events) = linnet_xmpp::Session::start(conn, BareJid::parse(jid).unwrap());
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    session
}

/// A's nickname and avatar show in B's chat list and contacts, and on A's other device;
/// a new picture replaces the old one (which goes from B's database), and withdrawing
/// both clears them. Our own name for a contact beats the one they give themselves.
async fn avatars_and_nicknames_reach_contacts(server: Server) {
    let (a, b) = contacts_pair(server).await;
    b.client.open_conversation(b.account, &a.jid).unwrap();
    a.client.open_conversation(a.account, &b.jid).unwrap();

    a.client
        .set_nickname(a.account, Some("Alice Liddell"))
        .await
        .unwrap();
    // A camera photo, landscape: published as its centred square, scaled down.
    let first = picture(1, 1000, 600, ImageFormat::Jpeg);
    a.client
        .set_avatar(a.account, &first, "image/jpeg")
        .await
        .unwrap();
    let (first_id, first_png) = own_avatar(&a, None).await;
    assert_eq!(first_png.dimensions(), (MAX_SIDE, MAX_SIDE));
    let id = first_id.clone();
    a.wait_list("our own profile", |s| {
        s.accounts[0].nick.as_deref() == Some("Alice Liddell")
            && s.accounts[0].avatar.as_deref() == Some(id.as_str())
    })
    .await;
    let alice = a.jid.clone();
    let id = first_id.clone();
    b.wait_list("A's name and picture", |s| {
        item(s, &alice).is_some_and(|c| {
            c.name.as_deref() == Some("Alice Liddell") && c.avatar.as_deref() == Some(id.as_str())
        })
    })
    .await;
    let got = b.client.avatar(b.account, &first_id).unwrap().unwrap();
    assert_eq!(got.media_type, "image/png");
    assert_eq!(sha1_hex(&got.data), first_id);
    let png = image::load_from_memory_with_format(&got.data, ImageFormat::Png).unwrap();
    assert_eq!(png.dimensions(), (MAX_SIDE, MAX_SIDE));
    let info = announced(server, &b.jid, &a.jid).await;
    assert_eq!(info.id, first_id);
    assert_eq!(info.bytes as usize, got.data.len());
    assert_announced_size(&info, &png);
    let contact = b
        .client
        .contacts(b.account)
        .unwrap()
        .into_iter()
        .find(|c| c.jid == a.jid)
        .unwrap();
    assert_eq!(contact.nick.as_deref(), Some("Alice Liddell"));
    assert_eq!(contact.avatar.as_deref(), Some(first_id.as_str()));

    // A names B "Bob" in the roster: that stays, whatever B calls himself.
    b.client
        .set_nickname(b.account, Some("Robert"))
        .await
        .unwrap();
    let bob = b.jid.clone();
    wait_until("B's nickname at A", || {
        a.client
            .contacts(a.account)
            .unwrap()
            .iter()
            .any(|c| c.jid == bob && c.nick.as_deref() == Some("Robert"))
    })
    .await;
    let s = a.client.chat_list();
    assert_eq!(item(&s, &b.jid).unwrap().name.as_deref(), Some("Bob"));

    // Another device of A learns A's profile from the server.
    let a2 = a.another_device(server).await;
    let id = first_id.clone();
    a2.wait_list("our profile on another device", |s| {
        s.accounts[0].nick.as_deref() == Some("Alice Liddell")
            && s.accounts[0].avatar.as_deref() == Some(id.as_str())
    })
    .await;

    // A small picture is not scaled up.
    let second = picture(2, 64, 64, ImageFormat::Png);
    a2.client
        .set_avatar(a2.account, &second, "image/png")
        .await
        .unwrap();
    let (second_id, second_png) = own_avatar(&a2, Some(&first_id)).await;
    assert_eq!(second_png.dimensions(), (64, 64));
    let id = second_id.clone();
    b.wait_list("A's new picture", |s| {
        item(s, &alice).is_some_and(|c| c.avatar.as_deref() == Some(id.as_str()))
    })
    .await;
    let got = b.client.avatar(b.account, &second_id).unwrap().unwrap();
    assert_eq!(sha1_hex(&got.data), second_id);
    let png = image::load_from_memory_with_format(&got.data, ImageFormat::Png).unwrap();
    assert_eq!(png.dimensions(), (64, 64));
    assert_announced_size(&announced(server, &b.jid, &a.jid).await, &png);
    assert!(
        b.client.avatar(b.account, &first_id).unwrap().is_none(),
        "the replaced picture is deleted"
    );

    a.client.remove_avatar(a.account).await.unwrap();
    a.client.set_nickname(a.account, None).await.unwrap();
    b.wait_list("A's picture and name withdrawn", |s| {
        item(s, &alice).is_some_and(|c| c.avatar.is_none() && c.name.is_none())
    })
    .await;
    a2.wait_list("withdrawn on A's other device", |s| {
        s.accounts[0].avatar.is_none() && s.accounts[0].nick.is_none()
    })
    .await;
}

/// A contact whose client knows only XEP-0153 (a vCard photo, its hash in presence) is
/// shown with that photo; once they publish an XEP-0084 avatar, that one wins.
async fn vcard_photos_are_the_fallback(server: Server) {
    let (a, b) = contacts_pair(server).await;
    b.client.open_conversation(b.account, &a.jid).unwrap();
    let old_client = raw_session_of(server, &a.jid).await;
    let photo = picture(3, 96, 96, ImageFormat::Jpeg);
    let update = old_client
        .set_vcard_temp_photo(Some((&photo, "image/jpeg")))
        .await
        .unwrap();
    let update = linnet_xmpp::profile::photo_update_xml(&update);
    old_client
        .send_xml(&format!(
            "<presence xmlns='jabber:client'>{update}</presence>"
        ))
        .unwrap();
    let alice = a.jid.clone();
    let photo_id = sha1_hex(&photo);
    let id = photo_id.clone();
    b.wait_list("A's vCard photo", |s| {
        item(s, &alice).is_some_and(|c| c.avatar.as_deref() == Some(id.as_str()))
    })
    .await;
    let got = b.client.avatar(b.account, &photo_id).unwrap().unwrap();
    assert_eq!(got.data, photo);
    assert_eq!(got.media_type, "image/jpeg");

    let pep = picture(4, 300, 300, ImageFormat::WebP);
    a.client
        .set_avatar(a.account, &pep, "image/webp")
        .await
        .unwrap();
    // A's own client may have shown the vCard photo first.
    let (pep_id, _) = own_avatar(&a, Some(&photo_id)).await;
    let id = pep_id.clone();
    b.wait_list("A's XEP-0084 avatar wins", |s| {
        item(s, &alice).is_some_and(|c| c.avatar.as_deref() == Some(id.as_str()))
    })
    .await;
    // A vCard photo announced after that changes nothing.
    old_client
        .send_xml(&format!(
            "<presence xmlns='jabber:client'>{update}</presence>"
        ))
        .unwrap();
    old_client.ping().await.unwrap();
    b.client.sync(b.account).await.unwrap();
    let s = b.client.chat_list();
    assert_eq!(
        item(&s, &a.jid).unwrap().avatar.as_deref(),
        Some(pep_id.as_str())
    );
}

/// Hostile profile data changes nothing: a stranger's message shaped like a notification
/// is ignored, and a contact's avatar whose bytes do not hash to its id is not shown.
async fn bad_profile_data_changes_nothing(server: Server) {
    let (a, b) = contacts_pair(server).await;
    b.client.open_conversation(b.account, &a.jid).unwrap();

    // A stranger "announces" a nickname and avatar in a message of their own.
    let (stranger, stranger_jid) = raw_peer(server, "stranger").await;
    let fake_id = sha1_hex(b"whatever");
    let event = format!(
        "<message xmlns='jabber:client' to='{to}' type='headline'>\
         <event xmlns='http://jabber.org/protocol/pubsub#event'>\
         <items node='http://jabber.org/protocol/nick'><item id='current'>\
         <nick xmlns='http://jabber.org/protocol/nick'>Your Bank</nick></item></items>\
         </event></message>\
         <message xmlns='jabber:client' to='{to}' type='headline'>\
         <event xmlns='http://jabber.org/protocol/pubsub#event'>\
         <items node='urn:xmpp:avatar:metadata'><item id='{fake_id}'>\
         <metadata xmlns='urn:xmpp:avatar:metadata'><info id='{fake_id}' bytes='8' \
         type='image/png'/></metadata></item></items></event></message>",
        to = b.jid
    );
    stranger.send_xml(&event).unwrap();
    stranger.ping().await.unwrap();

    // A (through a raw session) publishes a picture under an id it does not hash to. The
    // session is online and has B's presence first: ejabberd notifies only the contacts a
    // publishing session has seen.
    let conn = linnet_xmpp::connect(&xmpp_config(server, &a.jid))
        .await
        .unwrap();
    let (raw_a, mut events) = linnet_xmpp::Session::start(conn, BareJid::parse(&a.jid).unwrap());
    raw_a.send_presence(None, None).unwrap();
    let bob = b.jid.clone();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = events.recv().await {
            if matches!(&ev, linnet_xmpp::Event::Presence { from_full, available: true, .. }
                if from_full.starts_with(&format!("{bob}/")))
            {
                return;
            }
        }
    })
    .await
    .expect("B's presence");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let wrong = picture(5, 40, 40, ImageFormat::Png);
    let claimed = sha1_hex(b"another picture");
    let data = format!(
        "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &wrong)
    );
    let open = linnet_xmpp::NodeConfig {
        access_model: Some("presence".into()),
        ..linnet_xmpp::NodeConfig::default()
    };
    raw_a
        .pep_publish("urn:xmpp:avatar:data", Some(&claimed), &data, &open)
        .await
        .unwrap();
    let meta = format!(
        "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='{claimed}' bytes='{}' \
         type='image/png'/></metadata>",
        wrong.len()
    );
    raw_a
        .pep_publish("urn:xmpp:avatar:metadata", Some(&claimed), &meta, &open)
        .await
        .unwrap();
    // Then a nickname, which does arrive: by then the avatar has been dealt with.
    raw_a
        .publish_nick(Some("Alice"), Access::Presence)
        .await
        .unwrap();
    let alice = a.jid.clone();
    b.wait_list("A's nickname", |s| {
        item(s, &alice).is_some_and(|c| c.name.as_deref() == Some("Alice"))
    })
    .await;
    b.client.sync(b.account).await.unwrap();
    let s = b.client.chat_list();
    assert_eq!(
        item(&s, &a.jid).unwrap().avatar,
        None,
        "a picture not matching its id"
    );
    assert!(b.client.avatar(b.account, &claimed).unwrap().is_none());
    assert!(item(&s, &stranger_jid).is_none(), "{s:?}");
    let store = b.open_store();
    assert!(store.profile(b.account, &stranger_jid).unwrap().is_none());
}

/// A vCard4 card published by A is read by B; what A's card held besides the basics is
/// kept; bad arguments are refused before anything is sent.
async fn profile_cards_and_bad_arguments(server: Server) {
    let (a, b) = contacts_pair(server).await;
    // Another client put a birthday in A's card: it survives our edit.
    let raw_a = raw_session_of(server, &a.jid).await;
    let mut theirs = linnet_xmpp::profile::Vcard4 {
        full_name: Some("Old Name".into()),
        ..Default::default()
    };
    theirs.other.push(
        "<bday xmlns='urn:ietf:params:xml:ns:vcard-4.0'><date>1815-12-10</date></bday>".into(),
    );
    raw_a
        .publish_vcard4(&theirs, Access::Presence)
        .await
        .unwrap();

    let card = ProfileCard {
        full_name: Some("Ada Lovelace".into()),
        note: Some("Analyst.\nMetaphysician.".into()),
        urls: vec!["https://example.org/ada".into()],
        emails: vec!["ada@example.org".into()],
        phones: vec!["tel:+44-20-7946-0000".into()],
    };
    a.client.set_profile_card(a.account, &card).await.unwrap();
    assert_eq!(
        b.client.profile_card(b.account, &a.jid).await.unwrap(),
        card
    );
    assert_eq!(
        a.client.profile_card(a.account, &a.jid).await.unwrap(),
        card
    );
    let kept = raw_a.fetch_vcard4(None).await.unwrap().unwrap();
    assert!(
        kept.other.iter().any(|p| p.contains("1815-12-10")),
        "{kept:?}"
    );

    let bad = |r: Result<(), ClientError>| matches!(r, Err(ClientError::BadInput(_)));
    assert!(bad(a.client.set_avatar(a.account, &[], "image/png").await));
    // What does not decode as a picture is refused, whatever type it claims.
    assert!(bad(a
        .client
        .set_avatar(a.account, b"<html><body>hi</body></html>", "text/html")
        .await));
    let mut not_png = b"\x89PNG\r\n\x1a\n".to_vec();
    not_png.extend((0..2 * 1024 * 1024u32).map(|i| (i as u8).wrapping_mul(31)));
    assert!(bad(a
        .client
        .set_avatar(a.account, &not_png, "image/png")
        .await));
    // A picture claiming more pixels than we decode (a few bytes can claim gigapixels).
    let huge = encoded(&RgbImage::new(9000, 1), ImageFormat::Png);
    assert!(bad(a
        .client
        .set_avatar(a.account, &huge, "image/png")
        .await));
    assert_eq!(a.client.chat_list().accounts[0].avatar, None);
    // The content decides, not the type the app passes (pickers often know none): a PNG
    // said to be HTML is published as the PNG it is.
    a.client
        .set_avatar(
            a.account,
            &picture(8, 50, 30, ImageFormat::Png),
            "text/html",
        )
        .await
        .unwrap();
    assert_eq!(own_avatar(&a, None).await.1.dimensions(), (30, 30));
    assert!(bad(a
        .client
        .set_nickname(a.account, Some("evil\u{202e}name"))
        .await));
    assert!(bad(a
        .client
        .set_nickname(a.account, Some(&"n".repeat(500)))
        .await));
    let mut bad_card = card.clone();
    bad_card.emails.push("two\nlines".into());
    assert!(bad(a.client.set_profile_card(a.account, &bad_card).await));
    assert!(matches!(
        a.client.profile_card(a.account, "not a jid@@").await,
        Err(ClientError::BadInput(_))
    ));
    assert!(a.client.avatar(a.account, "not-an-id").unwrap().is_none());
}

/// A picture whose PNG at 192 pixels is too large for the server's stanza limit is
/// published smaller rather than refused: on ejabberd, which announces no limit (64 KiB is
/// assumed), 192×192 pixels of noise do not fit; on Prosody (256 KiB) they do.
async fn pictures_too_detailed_for_the_stanza_limit_are_published_smaller(server: Server) {
    let (a, b) = contacts_pair(server).await;
    b.client.open_conversation(b.account, &a.jid).unwrap();
    a.client
        .set_avatar(a.account, &noise(MAX_SIDE, MAX_SIDE), "image/png")
        .await
        .unwrap();
    let (id, png) = own_avatar(&a, None).await;
    let (w, h) = png.dimensions();
    assert_eq!(w, h);
    match server {
        Server::Prosody => assert_eq!(w, MAX_SIDE),
        Server::Ejabberd => assert!((64..MAX_SIDE).contains(&w), "{w}"),
    }
    let alice = a.jid.clone();
    let want = id.clone();
    b.wait_list("A's picture", |s| {
        item(s, &alice).is_some_and(|c| c.avatar.as_deref() == Some(want.as_str()))
    })
    .await;
    let got = b.client.avatar(b.account, &id).unwrap().unwrap();
    assert_eq!(sha1_hex(&got.data), id);
    assert_announced_size(&announced(server, &b.jid, &a.jid).await, &png);
}

both_servers!(
    avatars_and_nicknames_reach_contacts,
    pictures_too_detailed_for_the_stanza_limit_are_published_smaller,
    vcard_photos_are_the_fallback,
    bad_profile_data_changes_nothing,
    profile_cards_and_bad_arguments
);
