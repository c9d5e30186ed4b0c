//! Files in conversations, end to end through the real servers: a Linnet client sends a
//! file (XEP-0363 upload, then a message with XEP-0066 and XEP-0447/0446 metadata) and
//! another receives and downloads it on request; progress, cancelling, hash checks, and
//! URLs that must never be fetched. A small scripted HTTPS server stands in for an upload
//! host where a test needs to hold a download half way or serve the wrong bytes. Uploads
//! through a broken link (the fault proxy in front of the sender's XMPP connection): sent
//! while offline, cut during the slot request, left by a client that stopped, retried by
//! hand. Files in OMEMO conversations (XEP-0454, aesgcm): what the server stores is
//! ciphertext, the receiver decrypts on request, and a wrong key or altered file leaves
//! nothing behind.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use linnet_client::transfer::{CancellationToken, Transfers};
use linnet_client::{
    AccountId, Client, ClientError, ClientOptions, ConnectionState, ConversationId,
    ConversationListener, ConversationSnapshot, DeliveryState, Direction, Encryption,
    EncryptionPolicy, MessageId, MessageItem, Subscription, TransferState,
};
use linnet_tests::omemo_peer::{python, PyPeer, NS_03};
use linnet_tests::proxy::Proxy;
use linnet_tests::*;
use linnet_xmpp::files::AesgcmUrl;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A little over 3 MB and not a multiple of any chunk size.
const SIZE: u64 = 3 * 1024 * 1024 + 12_345;

/// `size` bytes in `dir/name`: a PNG header (so the sender can tell the dimensions),
/// then random bytes. Returns the path and the SHA-256.
fn png_file(dir: &Path, name: &str, size: u64, w: u32, h: u32) -> (PathBuf, [u8; 32]) {
    let mut data = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    data.extend_from_slice(&w.to_be_bytes());
    data.extend_from_slice(&h.to_be_bytes());
    let header = data.len();
    data.resize(size as usize, 0);
    rand::thread_rng().fill_bytes(&mut data[header..]);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, Sha256::digest(&data).into())
}

fn sha256_of(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every conversation snapshot a client publishes while the subscription lives.
#[derive(Clone, Default)]
struct Rec(Arc<Mutex<Vec<Arc<ConversationSnapshot>>>>);

impl ConversationListener for Rec {
    fn on_update(&self, s: Arc<ConversationSnapshot>) {
        self.0.lock().unwrap().push(s);
    }
}

impl Rec {
    fn start(client: &Client, conversation: ConversationId) -> (Rec, Subscription) {
        let rec = Rec::default();
        let sub = client
            .subscribe_conversation(conversation, rec.clone())
            .unwrap();
        (rec, sub)
    }

    /// Waits until the last snapshot received shows `id`'s file as `last` (this
    /// subscription's deliveries may trail another's).
    async fn wait_last(&self, id: MessageId, last: (TransferState, u64)) {
        wait_until("the recorded snapshots to catch up", || {
            self.trail(id).last() == Some(&last)
        })
        .await;
    }

    /// The transfer state and bytes of `id`'s file in each snapshot that shows it.
    fn trail(&self, id: MessageId) -> Vec<(TransferState, u64)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| s.messages.iter().find(|m| m.id == id))
            .filter_map(|m| m.attachment.as_ref().map(|a| (a.state, a.transferred)))
            .collect()
    }
}

/// Transfers while in `state` moved forward only, and the trail ends in `last`.
fn assert_trail(trail: &[(TransferState, u64)], during: TransferState, last: (TransferState, u64)) {
    let moving: Vec<u64> = trail
        .iter()
        .filter(|(s, _)| *s == during)
        .map(|(_, n)| *n)
        .collect();
    assert!(!moving.is_empty(), "{during:?} was never shown: {trail:?}");
    assert!(moving.windows(2).all(|w| w[0] <= w[1]), "{trail:?}");
    assert!(moving.iter().all(|n| *n <= last.1), "{trail:?}");
    assert_eq!(trail.last(), Some(&last), "{trail:?}");
    let first_done = trail.iter().position(|(s, _)| *s == last.0).unwrap();
    assert!(
        trail[first_done..].iter().all(|t| *t == last),
        "no step back after the end: {trail:?}"
    );
}

fn file_message<'a>(s: &'a ConversationSnapshot, name: &str) -> Option<&'a MessageItem> {
    s.messages
        .iter()
        .find(|m| m.attachment.as_ref().is_some_and(|a| a.name == name))
}

/// Alice sends a 3 MB picture to Bob: shown at once as pending with its upload, then sent
/// with its metadata; Bob sees a file message (name, size, type, dimensions, hash; the
/// URL body not shown as text) and downloads it on request, getting the same bytes.
async fn a_file_goes_to_a_contact_and_is_downloaded(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = png_file(dir.path(), "holiday photo.png", SIZE, 640, 480);

    // Both have OMEMO devices: the conversation would encrypt (see the encrypted tests
    // below); this one is about files in the clear.
    a.client
        .set_encryption_policy(conv, EncryptionPolicy::Plain)
        .unwrap();

    let (rec, _sub) = Rec::start(&a.client, conv);
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    // At once: a pending message with its upload.
    let now = a.client.messages(conv, None, 10).unwrap();
    let m = now.iter().find(|m| m.id == id).unwrap();
    assert_eq!(m.state, DeliveryState::Pending);
    assert_eq!(m.body, "");
    let up = m.attachment.as_ref().unwrap();
    assert_eq!(up.state, TransferState::Uploading);
    assert_eq!(up.name, "holiday photo.png");
    assert_eq!(up.size, Some(SIZE));
    assert_eq!(up.media_type.as_deref(), Some("image/png"));

    let sent = a
        .wait_conversation(&b.jid, "the file message sent", |s| {
            s.messages.iter().any(|m| {
                m.id == id
                    && m.state >= DeliveryState::Sent
                    && m.state != DeliveryState::Failed
                    && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Uploaded)
            })
        })
        .await;
    let m = sent.messages.iter().find(|m| m.id == id).unwrap();
    assert_eq!(m.body, "", "the URL is not shown as text");
    let up = m.attachment.as_ref().unwrap();
    assert_eq!(up.sha256.as_deref(), Some(hex(&digest).as_str()));
    assert_eq!((up.width, up.height), (Some(640), Some(480)));
    assert_eq!(up.transferred, SIZE);
    rec.wait_last(id, (TransferState::Uploaded, SIZE)).await;
    assert_trail(
        &rec.trail(id),
        TransferState::Uploading,
        (TransferState::Uploaded, SIZE),
    );
    assert!(
        a.client.cancel_transfer(id).is_err(),
        "nothing left to cancel once sent"
    );

    let got = b
        .wait_conversation(&a.jid, "the file message", |s| {
            file_message(s, "holiday photo.png").is_some()
        })
        .await;
    let m = file_message(&got, "holiday photo.png").unwrap();
    assert_eq!(m.direction, Direction::Incoming);
    assert_eq!(m.body, "", "the URL body is not shown twice");
    // The chat list names the file rather than showing its URL, on both sides.
    for (side, peer) in [(&b, &a.jid), (&a, &b.jid)] {
        let list = side.client.chat_list();
        let preview = list
            .conversations
            .iter()
            .find(|c| &c.peer == peer)
            .and_then(|c| c.last_message.clone())
            .unwrap();
        assert_eq!(preview.body, "", "{preview:?}");
        assert_eq!(preview.file.as_deref(), Some("holiday photo.png"));
    }
    let f = m.attachment.as_ref().unwrap();
    assert_eq!(f.state, TransferState::Available);
    assert_eq!(f.size, Some(SIZE));
    assert_eq!(f.media_type.as_deref(), Some("image/png"));
    assert_eq!((f.width, f.height), (Some(640), Some(480)));
    assert_eq!(f.sha256.as_deref(), Some(hex(&digest).as_str()));
    assert_eq!(f.local_path, None);

    let b_conv = b.client.open_conversation(b.account, &a.jid).unwrap();
    let (b_rec, _b_sub) = Rec::start(&b.client, b_conv);
    let down = tempfile::tempdir().unwrap();
    let saved = b.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(saved, down.path().join("holiday photo.png"));
    assert_eq!(sha256_of(&saved), digest, "the same bytes");
    assert_eq!(
        dir_entries(down.path()),
        vec!["holiday photo.png"],
        "nothing else"
    );
    let done = b
        .wait_conversation(&a.jid, "the download shown", |s| {
            file_message(s, "holiday photo.png")
                .and_then(|m| m.attachment.as_ref())
                .is_some_and(|a| a.state == TransferState::Downloaded)
        })
        .await;
    let f = file_message(&done, "holiday photo.png")
        .unwrap()
        .attachment
        .clone()
        .unwrap();
    assert_eq!(f.local_path.as_deref(), saved.to_str());
    assert_eq!(f.transferred, SIZE);
    b_rec
        .wait_last(m.id, (TransferState::Downloaded, SIZE))
        .await;
    let trail = b_rec.trail(m.id);
    assert!(
        trail.iter().all(|(s, _)| matches!(
            s,
            TransferState::Available | TransferState::Downloading | TransferState::Downloaded
        )),
        "{trail:?}"
    );
    assert_eq!(trail.last(), Some(&(TransferState::Downloaded, SIZE)));

    // Downloading again gives a second copy, never replacing the first.
    let again = b.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(again, down.path().join("holiday photo (1).png"));
    assert_eq!(sha256_of(&again), digest);
}

/// An upload cancelled before it finished sends nothing: the message shows as failed and
/// cancelled, and the peer receives only what was sent after it.
async fn a_cancelled_upload_sends_nothing(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    a.client
        .set_encryption_policy(conv, EncryptionPolicy::Plain)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = png_file(dir.path(), "never.png", SIZE, 10, 10);
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    a.client.cancel_transfer(id).unwrap();
    let s = a
        .wait_conversation(&b.jid, "the upload cancelled", |s| {
            s.messages.iter().any(|m| {
                m.id == id
                    && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Cancelled)
            })
        })
        .await;
    let m = s.messages.iter().find(|m| m.id == id).unwrap();
    assert_eq!(m.state, DeliveryState::Failed);
    assert!(matches!(
        a.client.cancel_transfer(id),
        Err(ClientError::NotFound(_))
    ));

    a.client
        .send_message(a.account, &b.jid, "after the file")
        .unwrap();
    b.wait_conversation(&a.jid, "the control message", |s| {
        s.messages.iter().any(|m| m.body == "after the file")
    })
    .await;
    let conv_b = b.client.open_conversation(b.account, &a.jid).unwrap();
    let all = b.client.messages(conv_b, None, 100).unwrap();
    assert_eq!(all.len(), 1, "only the control message: {all:#?}");
    assert!(all[0].attachment.is_none());
}

/// A raw session of a fresh account, its events drained.
fn oob(url: &str) -> String {
    format!("<body>{url}</body><x xmlns='jabber:x:oob'><url>{url}</url></x>")
}

/// A file shared the way Dino does: SFS with metadata, the URL as body and out of band.
fn shared(url: &str, name: &str, size: u64, sha256: &[u8]) -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(sha256);
    format!(
        "{}<file-sharing xmlns='urn:xmpp:sfs:0'><file xmlns='urn:xmpp:file:metadata:0'>\
         <media-type>application/octet-stream</media-type><name>{name}</name><size>{size}</size>\
         <hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>{hash}</hash></file>\
         <sources><url-data xmlns='http://jabber.org/protocol/url-data' target='{url}'/></sources>\
         </file-sharing>",
        oob(url)
    )
}

/// What Conversations sends (the URL as body and out of band, no metadata) is a file
/// named after its URL, fetched from the real upload service; URLs that are not https
/// are never offered, whatever element carries them; names cannot climb directories.
async fn foreign_and_hostile_files(server: Server) {
    let b = TestClient::register(server, "bob").await;
    let b_full = b.client.bound_jid(b.account).unwrap();
    let (eve, eve_jid) = raw_peer(server, "eve").await;

    // A real upload by Eve, announced Conversations-style.
    let up = tempfile::tempdir().unwrap();
    let (src, digest) = png_file(up.path(), "from-eve.bin", 100_000, 1, 1);
    let slot = upload_raw(&eve, "from-eve.bin", &src).await;

    // A listener no one may connect to.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = format!("http://127.0.0.1:{port}/plain.png");
    let js = "javascript:alert(1)";
    let stanzas = [
        raw_chat(&b_full, "e1", &oob(&slot.get_url)),
        raw_chat(&b_full, "e2", &oob(&plain)),
        raw_chat(&b_full, "e3", &shared(&plain, "sfs-plain.bin", 5, &[0; 32])),
        raw_chat(&b_full, "e4", &shared(js, "js.bin", 5, &[0; 32])),
        raw_chat(
            &b_full,
            "e5",
            &shared(
                &slot.get_url,
                "../../.ssh/authorized_keys",
                100_000,
                &digest,
            ),
        ),
        raw_chat(&b_full, "e6", "<body>control</body>"),
    ];
    for s in &stanzas {
        eve.send_xml(s).unwrap();
    }
    let s = b
        .wait_conversation(&eve_jid, "Eve's control message", |s| {
            s.messages.iter().any(|m| m.body == "control")
        })
        .await;
    assert_eq!(s.messages.len(), 6, "{:#?}", s.messages);

    // Not https: shown as the text it is, no file, nothing to download.
    for (i, body) in [(1, plain.as_str()), (2, plain.as_str()), (3, js)] {
        let m = &s.messages[i];
        assert_eq!(m.body, body);
        assert!(m.attachment.is_none(), "{m:#?}");
        let dir = tempfile::tempdir().unwrap();
        let err = b.client.download_file(m.id, dir.path()).await.unwrap_err();
        assert!(matches!(err, ClientError::NotFound(_)), "{err:?}");
        assert!(dir_entries(dir.path()).is_empty());
    }
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "no connection to the plain-http address"
    );

    // Conversations-style: named after the URL, size unknown until fetched.
    let conv = &s.messages[0];
    assert_eq!(conv.body, "");
    let f = conv.attachment.as_ref().unwrap();
    assert_eq!(f.name, "from-eve.bin");
    assert_eq!((f.size, f.sha256.as_ref()), (None, None));
    let dir = tempfile::tempdir().unwrap();
    let saved = b.client.download_file(conv.id, dir.path()).await.unwrap();
    assert_eq!(saved, dir.path().join("from-eve.bin"));
    assert_eq!(sha256_of(&saved), digest);
    let s = b
        .wait_conversation(&eve_jid, "the size learnt by downloading", |s| {
            s.messages[0]
                .attachment
                .as_ref()
                .is_some_and(|a| a.state == TransferState::Downloaded)
        })
        .await;
    let f = s.messages[0].attachment.as_ref().unwrap();
    assert_eq!((f.size, f.transferred), (Some(100_000), 100_000));

    // A name with directories is only its last part, saved inside the chosen directory.
    let climbing = &s.messages[4];
    let f = climbing.attachment.as_ref().unwrap();
    assert_eq!(f.name, "authorized_keys");
    let saved = b
        .client
        .download_file(climbing.id, dir.path())
        .await
        .unwrap();
    assert_eq!(saved, dir.path().join("authorized_keys"));
    assert_eq!(sha256_of(&saved), digest);
}

/// A download can be watched, cancelled half way (nothing left behind) and started again;
/// a file whose bytes do not match the announced SHA-256 fails and leaves nothing. The
/// files come from a scripted HTTPS host that holds the first one half way.
async fn download_progress_cancel_and_hash_check(server: Server) {
    let host = scripted::start().await;
    let bob = TestClient::register(server, "bob").await;
    bob.client.shutdown().await;
    // Bob's client trusts the servers' CA and the scripted host's.
    let mut opts = options();
    let mut pem = std::fs::read(var("LINNET_CA")).unwrap();
    pem.extend_from_slice(host.ca_pem.as_bytes());
    opts.tls.extra_ca_pem = Some(pem);
    let b = TestClient::login_via_with(&bob.jid, server_override(server, false), opts).await;
    let b_full = b.client.bound_jid(b.account).unwrap();
    let (eve, eve_jid) = raw_peer(server, "eve").await;

    let slow = scripted::slow_body();
    let wrong_claim = Sha256::digest(b"something else");
    eve.send_xml(&raw_chat(
        &b_full,
        "s1",
        &shared(
            &host.url("/slow"),
            "slow.bin",
            slow.len() as u64,
            &Sha256::digest(&slow),
        ),
    ))
    .unwrap();
    eve.send_xml(&raw_chat(
        &b_full,
        "s2",
        &shared(
            &host.url("/wrong"),
            "wrong.bin",
            scripted::WRONG.len() as u64,
            &wrong_claim,
        ),
    ))
    .unwrap();
    let s = b
        .wait_conversation(&eve_jid, "both files", |s| {
            file_message(s, "slow.bin").is_some() && file_message(s, "wrong.bin").is_some()
        })
        .await;
    let slow_id = file_message(&s, "slow.bin").unwrap().id;
    let wrong_id = file_message(&s, "wrong.bin").unwrap().id;
    let total = slow.len() as u64;

    let dir = tempfile::tempdir().unwrap();
    let start = |id: MessageId| {
        let client = b.client.clone();
        let dir = dir.path().to_owned();
        tokio::spawn(async move { client.download_file(id, &dir).await })
    };
    // Held half way by the host: the snapshot shows how far it came.
    let first = start(slow_id);
    let s = b
        .wait_conversation(&eve_jid, "download progress", |s| {
            file_message(s, "slow.bin")
                .and_then(|m| m.attachment.as_ref())
                .is_some_and(|a| {
                    a.state == TransferState::Downloading
                        && a.transferred > 0
                        && a.transferred < total
                })
        })
        .await;
    let shown = file_message(&s, "slow.bin")
        .unwrap()
        .attachment
        .clone()
        .unwrap();
    assert!(shown.transferred <= scripted::HELD as u64, "{shown:?}");
    b.client.cancel_transfer(slow_id).unwrap();
    let err = first.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        ClientError::Policy("the transfer was cancelled".into())
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
    b.wait_conversation(&eve_jid, "the download cancelled", |s| {
        file_message(s, "slow.bin")
            .and_then(|m| m.attachment.as_ref())
            .is_some_and(|a| a.state == TransferState::Cancelled)
    })
    .await;

    // Again, with nothing held back this time.
    host.release();
    let saved = start(slow_id).await.unwrap().unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), slow);
    assert_eq!(dir_entries(dir.path()), vec!["slow.bin"]);

    // The wrong bytes: refused after the download, nothing kept.
    let err = b
        .client
        .download_file(wrong_id, dir.path())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Policy(m) if m.contains("SHA-256")),
        "{err:?}"
    );
    assert_eq!(
        dir_entries(dir.path()),
        vec!["slow.bin"],
        "the bad file was not kept"
    );
    let s = b
        .wait_conversation(&eve_jid, "the failed download", |s| {
            file_message(s, "wrong.bin")
                .and_then(|m| m.attachment.as_ref())
                .is_some_and(|a| a.state == TransferState::Failed)
        })
        .await;
    let f = file_message(&s, "wrong.bin")
        .unwrap()
        .attachment
        .clone()
        .unwrap();
    assert!(f.error.unwrap().contains("SHA-256"));
    assert_eq!(f.local_path, None);
}

/// A file shared in the clear in a group (one set to send in the clear: private groups
/// encrypt, see omemo_groups.rs) reaches the other member, who fetches it; the sender's
/// message is delivered once the room echoes it, and the chat list names the file.
async fn a_file_shared_in_a_group(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register(server, "bob").await;
    let group = a.client.create_group(a.account, "Photos").await.unwrap();
    a.client
        .set_encryption_policy(group, EncryptionPolicy::Plain)
        .unwrap();
    let room = room_of(&a, group);
    a.wait_conversation(&room, "created", group_joined).await;
    a.client.invite_to_group(group, &b.jid, None).await.unwrap();
    accept_group_invitation(&b, &room).await;

    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = png_file(dir.path(), "group photo.png", SIZE, 320, 200);
    let id = a.client.send_file(a.account, &room, &path).await.unwrap();
    a.wait_conversation(&room, "the room's copy of the file", |s| {
        s.messages.iter().any(|m| {
            m.id == id
                && m.state == DeliveryState::Delivered
                && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Uploaded)
        })
    })
    .await;
    let got = b
        .wait_conversation(&room, "the file in the group", |s| {
            file_message(s, "group photo.png").is_some()
        })
        .await;
    let m = file_message(&got, "group photo.png").unwrap();
    assert_eq!(m.body, "");
    assert_eq!(m.direction, Direction::Incoming);
    let f = m.attachment.as_ref().unwrap();
    assert_eq!(f.sha256.as_deref(), Some(hex(&digest).as_str()));
    assert_eq!((f.width, f.height), (Some(320), Some(200)));
    let preview = b
        .client
        .chat_list()
        .conversations
        .iter()
        .find(|c| c.peer == room)
        .and_then(|c| c.last_message.clone())
        .unwrap();
    assert_eq!(preview.file.as_deref(), Some("group photo.png"));
    let down = tempfile::tempdir().unwrap();
    let saved = b.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(sha256_of(&saved), digest);
}

/// The conversation with `peer`, set to send in the clear: both sides of a pair have OMEMO
/// devices, so files would go encrypted otherwise.
fn plain(c: &TestClient, peer: &str) -> ConversationId {
    let conv = c.client.open_conversation(c.account, peer).unwrap();
    c.client
        .set_encryption_policy(conv, EncryptionPolicy::Plain)
        .unwrap();
    conv
}

/// Cuts `c`'s link to its server (connections reset, new ones refused) and waits until the
/// account knows it is offline.
async fn cut(c: &TestClient, proxy: &Proxy) {
    proxy.set_refusing(true);
    proxy.reset_all();
    c.wait_list("the link cut", |s| {
        s.accounts[0].connection != ConnectionState::Online
    })
    .await;
}

/// Lets `c` reach its server again and waits until it is online.
async fn restore(c: &TestClient, proxy: &Proxy) {
    proxy.set_refusing(false);
    proxy.set_stalled(false);
    c.client.network_changed(true);
    c.wait_list("back online", |s| {
        s.accounts[0].connection == ConnectionState::Online
    })
    .await;
}

/// `id`'s file is uploaded and its message went out.
fn file_sent(s: &ConversationSnapshot, id: MessageId) -> bool {
    s.messages.iter().any(|m| {
        m.id == id
            && m.state >= DeliveryState::Sent
            && m.state != DeliveryState::Failed
            && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Uploaded)
    })
}

/// The message `id` and its file as `client` shows them now.
fn shown(client: &Client, conv: ConversationId, id: MessageId) -> MessageItem {
    client
        .messages(conv, None, 100)
        .unwrap()
        .into_iter()
        .find(|m| m.id == id)
        .unwrap()
}

/// Waits for a snapshot of `conv` from `client` that satisfies `pred` (for a client not
/// wrapped in a `TestClient`, such as one reopened on a database).
async fn wait_snapshot<F: Fn(&ConversationSnapshot) -> bool>(
    client: &Client,
    conv: ConversationId,
    what: &str,
    pred: F,
) -> Arc<ConversationSnapshot> {
    let (rec, _sub) = Rec::start(client, conv);
    let last = || rec.0.lock().unwrap().last().filter(|s| pred(s)).cloned();
    wait_until(what, || last().is_some()).await;
    last().unwrap()
}

/// B has exactly `files` file messages from the sender, each once: a message the sender
/// sends last is awaited first, so that anything still on its way would have come before.
async fn b_has_files_once(
    (sender, account, sender_jid): (&Client, AccountId, &str),
    b: &TestClient,
    files: &[(&str, [u8; 32])],
) {
    sender
        .send_message(account, &b.jid, "after the files")
        .unwrap();
    b.wait_conversation(sender_jid, "the control message", |s| {
        s.messages.iter().any(|m| m.body == "after the files")
    })
    .await;
    let conv = b.client.open_conversation(b.account, sender_jid).unwrap();
    let all = b.client.messages(conv, None, 100).unwrap();
    let got: Vec<(String, Option<String>)> = all
        .iter()
        .filter_map(|m| m.attachment.as_ref())
        .map(|f| (f.name.clone(), f.sha256.clone()))
        .collect();
    let want: Vec<(String, Option<String>)> = files
        .iter()
        .map(|(name, digest)| ((*name).to_owned(), Some(hex(digest))))
        .collect();
    assert_eq!(got, want, "each file once, with its hash: {all:#?}");
}

/// B fetches the file named `name` and gets the bytes with `digest` (checked against the
/// announced hash on the way).
async fn b_downloads(b: &TestClient, a_jid: &str, name: &str, digest: [u8; 32]) {
    let s = b
        .wait_conversation(a_jid, "the file message", |s| {
            file_message(s, name).is_some()
        })
        .await;
    let m = file_message(&s, name).unwrap();
    let down = tempfile::tempdir().unwrap();
    let saved = b.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(sha256_of(&saved), digest);
}

/// A file sent while the sender is offline is accepted and shown waiting (pending, no
/// progress); once the link is back it goes up and out by itself, with the right hash and
/// dimensions, and reaches B once.
async fn a_file_sent_offline_goes_when_the_link_is_back(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (a, proxy) = a.behind_proxy(server).await;
    let conv = plain(&a, &b.jid);
    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = png_file(dir.path(), "offline photo.png", SIZE, 800, 600);

    cut(&a, &proxy).await;
    let (rec, _sub) = Rec::start(&a.client, conv);
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    let m = shown(&a.client, conv, id);
    assert_eq!(m.state, DeliveryState::Pending);
    let f = m.attachment.unwrap();
    assert_eq!(
        (f.state, f.transferred, f.error),
        (TransferState::Waiting, 0, None)
    );
    a.wait_conversation(&b.jid, "the upload shown waiting", |s| {
        s.messages.iter().any(|m| {
            m.id == id && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Waiting)
        })
    })
    .await;

    restore(&a, &proxy).await;
    let s = a
        .wait_conversation(&b.jid, "the file sent once online", |s| file_sent(s, id))
        .await;
    let f = s
        .messages
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.attachment.clone())
        .unwrap();
    assert_eq!(f.sha256.as_deref(), Some(hex(&digest).as_str()));
    assert_eq!((f.width, f.height), (Some(800), Some(600)));
    rec.wait_last(id, (TransferState::Uploaded, SIZE)).await;
    let trail = rec.trail(id);
    let first_up = trail
        .iter()
        .position(|(s, _)| *s == TransferState::Uploading)
        .unwrap_or_else(|| panic!("never shown uploading: {trail:?}"));
    assert!(
        trail[..first_up]
            .iter()
            .all(|t| *t == (TransferState::Waiting, 0)),
        "waiting, without progress, until online: {trail:?}"
    );
    assert!(trail[first_up..]
        .iter()
        .all(|(s, _)| matches!(s, TransferState::Uploading | TransferState::Uploaded)));

    b_downloads(&b, &a.jid, "offline photo.png", digest).await;
    b_has_files_once(
        (&a.client, a.account, &a.jid),
        &b,
        &[("offline photo.png", digest)],
    )
    .await;
}

/// The link dies while the upload asks for its slot (the request gets no answer) and is
/// then reset: the snapshot shows the upload waiting with the reason, it starts over with
/// a new slot on the next session, and B gets the file once, with the hash of what went up.
async fn a_link_lost_during_the_slot_request_is_retried(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (a, proxy) = a.behind_proxy(server).await;
    let conv = plain(&a, &b.jid);
    let dir = tempfile::tempdir().unwrap();
    // A first file finds the upload service, so the next one's first request is its slot.
    let (first, first_digest) = png_file(dir.path(), "first.png", 50_000, 2, 2);
    let id = a.client.send_file(a.account, &b.jid, &first).await.unwrap();
    a.wait_conversation(&b.jid, "the first file sent", |s| file_sent(s, id))
        .await;

    let (path, digest) = png_file(dir.path(), "through the tunnel.png", SIZE, 64, 48);
    let (rec, _sub) = Rec::start(&a.client, conv);
    proxy.set_stalled(true);
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    // The slot request goes into the dead link and is never answered.
    let s = a
        .wait_conversation(&b.jid, "the upload waiting after losing its request", |s| {
            s.messages.iter().any(|m| {
                m.id == id
                    && m.attachment
                        .as_ref()
                        .is_some_and(|a| a.state == TransferState::Waiting && a.error.is_some())
            })
        })
        .await;
    let m = s.messages.iter().find(|m| m.id == id).unwrap();
    assert_eq!(m.state, DeliveryState::Pending, "not failed");
    let f = m.attachment.as_ref().unwrap();
    assert_eq!(f.transferred, 0);
    assert!(
        f.error.as_deref().unwrap().contains("connection"),
        "{:?}",
        f.error
    );
    // Then the link breaks for good: the connection is reset and a new one comes up.
    let before = proxy.accepted();
    proxy.reset_all();
    proxy.set_stalled(false);
    a.wait_list("a new connection", |s| {
        s.accounts[0].connection == ConnectionState::Online && proxy.accepted() > before
    })
    .await;
    let s = a
        .wait_conversation(&b.jid, "the file sent after the retry", |s| {
            file_sent(s, id)
        })
        .await;
    let f = s
        .messages
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.attachment.clone())
        .unwrap();
    assert_eq!(f.sha256.as_deref(), Some(hex(&digest).as_str()));
    assert_eq!((f.width, f.height), (Some(64), Some(48)));
    assert_eq!(f.error, None);
    rec.wait_last(id, (TransferState::Uploaded, SIZE)).await;
    let trail = rec.trail(id);
    let waited = trail
        .iter()
        .position(|(s, _)| *s == TransferState::Waiting)
        .unwrap();
    assert!(
        trail[..waited]
            .iter()
            .any(|(s, _)| *s == TransferState::Uploading),
        "uploading, then waiting: {trail:?}"
    );

    b_downloads(&b, &a.jid, "through the tunnel.png", digest).await;
    b_has_files_once(
        (&a.client, a.account, &a.jid),
        &b,
        &[
            ("first.png", first_digest),
            ("through the tunnel.png", digest),
        ],
    )
    .await;
}

/// A client that stops with uploads not done (offline, waiting): the next client on its
/// database shows them waiting, not failed; once online it uploads the one whose file is
/// still there (the same message, the same origin-id), and fails the one whose file is
/// gone, saying so. B gets the one file, once.
async fn an_upload_left_by_a_stopped_client_completes_after_restart(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (a, proxy) = a.behind_proxy(server).await;
    let conv = plain(&a, &b.jid);
    let dir = tempfile::tempdir().unwrap();
    let (kept, digest) = png_file(dir.path(), "kept.png", SIZE, 300, 200);
    let (gone, _) = png_file(dir.path(), "gone.png", 10_000, 1, 1);

    cut(&a, &proxy).await;
    let kept_id = a.client.send_file(a.account, &b.jid, &kept).await.unwrap();
    let gone_id = a.client.send_file(a.account, &b.jid, &gone).await.unwrap();
    let origin = |id: MessageId| a.open_store().message(id).unwrap().origin_id.unwrap();
    let (kept_origin, gone_origin) = (origin(kept_id), origin(gone_id));
    a.client.shutdown().await;
    std::fs::remove_file(&gone).unwrap();

    let client = a.reopen();
    for id in [kept_id, gone_id] {
        let m = shown(&client, conv, id);
        assert_eq!(m.state, DeliveryState::Pending);
        let f = m.attachment.unwrap();
        assert_eq!((f.state, f.error), (TransferState::Waiting, None));
    }
    proxy.set_refusing(false);
    client.login(a.account).await.unwrap();
    let s = wait_snapshot(
        &client,
        conv,
        "the kept file sent, the gone one failed",
        |s| {
            file_sent(s, kept_id)
                && s.messages.iter().any(|m| {
                    m.id == gone_id
                        && m.state == DeliveryState::Failed
                        && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Failed)
                })
        },
    )
    .await;
    let m = s.messages.iter().find(|m| m.id == kept_id).unwrap();
    let f = m.attachment.as_ref().unwrap();
    assert_eq!(f.sha256.as_deref(), Some(hex(&digest).as_str()));
    assert_eq!((f.width, f.height), (Some(300), Some(200)));
    let m = s.messages.iter().find(|m| m.id == gone_id).unwrap();
    let error = m.attachment.as_ref().unwrap().error.clone().unwrap();
    assert!(error.contains("no longer there"), "{error}");
    assert!(!error.contains("gone.png"), "no file names: {error}");
    assert_eq!(
        s.messages.len(),
        2,
        "the same two messages: {:#?}",
        s.messages
    );
    assert_eq!(origin(kept_id), kept_origin);
    assert_eq!(origin(gone_id), gone_origin);

    b_downloads(&b, &a.jid, "kept.png", digest).await;
    b_has_files_once((&client, a.account, &a.jid), &b, &[("kept.png", digest)]).await;
    client.shutdown().await;
}

/// A cancelled upload (failed for good: nothing sent) goes when retried by hand: the same
/// message, delivered once. An uploaded one cannot be retried, nor what B received.
async fn retry_upload_sends_a_cancelled_file(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let conv = plain(&a, &b.jid);
    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = png_file(dir.path(), "second chance.png", SIZE, 20, 10);
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    a.client.cancel_transfer(id).unwrap();
    a.wait_conversation(&b.jid, "the upload cancelled", |s| {
        s.messages.iter().any(|m| {
            m.id == id
                && m.state == DeliveryState::Failed
                && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Cancelled)
        })
    })
    .await;

    a.client.retry_upload(id).await.unwrap();
    let m = shown(&a.client, conv, id);
    assert_eq!(m.state, DeliveryState::Pending);
    assert!(matches!(
        m.attachment.map(|f| f.state),
        Some(TransferState::Uploading | TransferState::Waiting)
    ));
    let s = a
        .wait_conversation(&b.jid, "the retried file sent", |s| file_sent(s, id))
        .await;
    assert_eq!(s.messages.len(), 1, "the same message: {:#?}", s.messages);
    let f = s.messages[0].attachment.as_ref().unwrap();
    assert_eq!(f.sha256.as_deref(), Some(hex(&digest).as_str()));
    assert_eq!(f.error, None);

    b_downloads(&b, &a.jid, "second chance.png", digest).await;
    b_has_files_once(
        (&a.client, a.account, &a.jid),
        &b,
        &[("second chance.png", digest)],
    )
    .await;

    let err = a.client.retry_upload(id).await.unwrap_err();
    assert!(matches!(err, ClientError::Policy(_)), "uploaded: {err:?}");
    let b_conv = b.client.open_conversation(b.account, &a.jid).unwrap();
    let received = b
        .client
        .messages(b_conv, None, 10)
        .unwrap()
        .into_iter()
        .find(|m| m.attachment.is_some())
        .unwrap();
    let err = b.client.retry_upload(received.id).await.unwrap_err();
    assert!(matches!(err, ClientError::BadInput(_)), "received: {err:?}");
}

/// What retry_upload cannot retry is an error that says why, and changes nothing.
async fn retry_upload_refuses_what_it_cannot_retry(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let conv = plain(&a, &b.jid);
    let dir = tempfile::tempdir().unwrap();

    assert!(matches!(
        a.client.retry_upload(MessageId(i64::MAX)).await,
        Err(ClientError::NotFound(_))
    ));
    let text = a
        .client
        .send_message(a.account, &b.jid, "just text")
        .unwrap();
    assert!(matches!(
        a.client.retry_upload(text).await,
        Err(ClientError::BadInput(_))
    ));

    // Under way: nothing to retry yet.
    let (path, _) = png_file(dir.path(), "busy.png", SIZE, 1, 1);
    let busy = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    assert_eq!(
        a.client.retry_upload(busy).await,
        Err(ClientError::Policy("the upload is under way".into()))
    );
    a.client.cancel_transfer(busy).unwrap();
    a.wait_conversation(&b.jid, "cancelled", |s| {
        s.messages.iter().any(|m| {
            m.id == busy && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Cancelled)
        })
    })
    .await;

    // The file is gone since: said so, the message left as it was.
    std::fs::remove_file(&path).unwrap();
    let err = a.client.retry_upload(busy).await.unwrap_err();
    assert_eq!(
        err,
        ClientError::BadInput("the file to send is no longer there".into())
    );
    assert!(!err.to_string().contains("busy.png"));
    let m = shown(&a.client, conv, busy);
    assert_eq!(m.state, DeliveryState::Failed);
    assert_eq!(
        m.attachment.map(|f| f.state),
        Some(TransferState::Cancelled)
    );
    // Changed size since: the slot and the hash would not match what was chosen.
    let (path, _) = png_file(dir.path(), "resized.png", 20_000, 1, 1);
    let resized = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    a.client.cancel_transfer(resized).unwrap();
    a.wait_conversation(&b.jid, "cancelled", |s| {
        s.messages.iter().any(|m| {
            m.id == resized
                && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Cancelled)
        })
    })
    .await;
    std::fs::write(&path, b"smaller now").unwrap();
    assert!(matches!(
        a.client.retry_upload(resized).await,
        Err(ClientError::BadInput(_))
    ));

    // Nothing of this reached B.
    b_has_files_once((&a.client, a.account, &a.jid), &b, &[]).await;
}

// ---------------------------------------------------------------------------------------------
// Encrypted files (XEP-0454)

/// A and B as mutual contacts, B with `b_opts`, each knowing the other's OMEMO device.
async fn omemo_pair(server: Server, b_opts: ClientOptions) -> (TestClient, TestClient) {
    let a = TestClient::register(server, "alice").await;
    let b = TestClient::register_with(server, "bob", b_opts).await;
    a.client
        .add_contact(a.account, &b.jid, Some("Bob"))
        .await
        .unwrap();
    let a_jid = a.jid.clone();
    b.wait_list("subscription request", |s| {
        s.accounts
            .iter()
            .any(|acc| request_jids(acc).contains(&a_jid.as_str()))
    })
    .await;
    b.client.approve_contact(b.account, &a.jid).await.unwrap();
    for (me, other) in [(&a, &b), (&b, &a)] {
        let device = other.client.own_omemo_device(other.account).unwrap();
        wait_until("the peer's OMEMO device known", || {
            me.client
                .omemo_devices(me.account, &other.jid)
                .map(|ds| ds.iter().any(|d| d.device_id == device && d.active))
                .unwrap_or(false)
        })
        .await;
    }
    (a, b)
}

/// Client options that trust a scripted host's CA beside the servers'.
fn trusting(ca_pem: &str) -> ClientOptions {
    let mut opts = options();
    let mut pem = std::fs::read(var("LINNET_CA")).unwrap();
    pem.extend_from_slice(ca_pem.as_bytes());
    opts.tls.extra_ca_pem = Some(pem);
    opts
}

/// The `aesgcm://` URL B stored for the file of message `id` (snapshots never show it).
fn stored_share(c: &TestClient, id: MessageId) -> (String, AesgcmUrl) {
    let url = c.open_store().attachment(id).unwrap().unwrap().url.unwrap();
    let share = AesgcmUrl::parse(&url).unwrap();
    (url, share)
}

/// `path` uploaded by a raw session (as another client would), as `name`: its slot.
async fn upload_raw(
    s: &linnet_xmpp::Session,
    name: &str,
    path: &Path,
) -> linnet_xmpp::upload::Slot {
    let service = linnet_xmpp::upload::discover_upload_service(s)
        .await
        .unwrap()
        .unwrap();
    let len = std::fs::metadata(path).unwrap().len();
    let mime = "application/octet-stream";
    let slot = linnet_xmpp::upload::request_slot(s, &service.jid, name, len, mime)
        .await
        .unwrap();
    Transfers::new(&tls())
        .unwrap()
        .upload(&slot, path, mime, |_, _| {}, &CancellationToken::new())
        .await
        .unwrap();
    slot
}

/// What the upload service holds at `url`, fetched directly.
async fn fetch_raw(url: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("raw");
    Transfers::new(&tls())
        .unwrap()
        .download(url, &dest, 1 << 30, |_, _| {}, &CancellationToken::new())
        .await
        .unwrap();
    std::fs::read(dest).unwrap()
}

/// In an OMEMO conversation (the default between two OMEMO clients) a file goes by
/// XEP-0454: shown at once with its upload, then sent as an OMEMO message; the server
/// stores ciphertext one tag longer than the file; B sees an encrypted file message named
/// after the URL, size unknown, and downloads it on request, getting the same bytes.
async fn an_encrypted_file_goes_to_a_contact_and_is_downloaded(server: Server) {
    let (a, b) = omemo_pair(server, options()).await;
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = png_file(dir.path(), "secret-photo.png", SIZE, 640, 480);
    let plaintext = std::fs::read(&path).unwrap();

    let (rec, _sub) = Rec::start(&a.client, conv);
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    let m = shown(&a.client, conv, id);
    assert_eq!(m.state, DeliveryState::Pending);
    let up = m.attachment.unwrap();
    assert!(up.encrypted, "{up:?}");
    assert_eq!(up.state, TransferState::Uploading);
    assert_eq!(up.size, Some(SIZE));

    let sent = a
        .wait_conversation(&b.jid, "the encrypted file message sent", |s| {
            file_sent(s, id)
                && s.messages
                    .iter()
                    .any(|m| m.id == id && m.encryption == Encryption::Omemo2)
        })
        .await;
    let m = sent.messages.iter().find(|m| m.id == id).unwrap();
    assert_eq!(m.body, "", "the URL, key and all, is not shown");
    let up = m.attachment.as_ref().unwrap();
    assert!(up.encrypted);
    assert_eq!(up.transferred, SIZE);
    assert_eq!((up.width, up.height), (Some(640), Some(480)));
    rec.wait_last(id, (TransferState::Uploaded, SIZE)).await;
    assert_trail(
        &rec.trail(id),
        TransferState::Uploading,
        (TransferState::Uploaded, SIZE),
    );

    let got = b
        .wait_conversation(&a.jid, "the encrypted file message", |s| {
            file_message(s, "secret-photo.png").is_some()
        })
        .await;
    let m = file_message(&got, "secret-photo.png").unwrap();
    assert_eq!(m.direction, Direction::Incoming);
    assert_eq!(m.encryption, Encryption::Omemo2);
    assert_eq!(m.body, "");
    assert_eq!(m.error, None);
    let f = m.attachment.as_ref().unwrap();
    assert!(f.encrypted);
    assert_eq!(f.state, TransferState::Available);
    assert_eq!((f.size, f.sha256.as_ref()), (None, None));
    assert_eq!(f.media_type.as_deref(), Some("image/png"));
    assert_eq!(f.local_path, None);
    for (side, peer) in [(&b, &a.jid), (&a, &b.jid)] {
        let preview = side
            .client
            .chat_list()
            .conversations
            .iter()
            .find(|c| &c.peer == peer)
            .and_then(|c| c.last_message.clone())
            .unwrap();
        assert_eq!(preview.body, "", "{preview:?}");
        assert_eq!(preview.file.as_deref(), Some("secret-photo.png"));
    }

    // What the server holds: the file's length and the tag, and not the file.
    let (url, share) = stored_share(&b, m.id);
    assert!(url.starts_with("aesgcm://"));
    assert_eq!(
        a.open_store().message(id).unwrap().body,
        url,
        "the key sent is the one used"
    );
    let stored = fetch_raw(share.https()).await;
    assert_eq!(stored.len() as u64, SIZE + 16);
    let same = stored
        .iter()
        .zip(&plaintext)
        .filter(|(x, y)| x == y)
        .count();
    assert!(same < plaintext.len() / 100, "{same} bytes in place");
    assert!(!stored.starts_with(b"\x89PNG"));

    let b_conv = b.client.open_conversation(b.account, &a.jid).unwrap();
    let (b_rec, _b_sub) = Rec::start(&b.client, b_conv);
    let down = tempfile::tempdir().unwrap();
    let saved = b.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(saved, down.path().join("secret-photo.png"));
    assert_eq!(sha256_of(&saved), digest, "the same bytes");
    assert_eq!(dir_entries(down.path()), vec!["secret-photo.png"]);
    let done = b
        .wait_conversation(&a.jid, "the download shown", |s| {
            file_message(s, "secret-photo.png")
                .and_then(|m| m.attachment.as_ref())
                .is_some_and(|a| a.state == TransferState::Downloaded)
        })
        .await;
    let f = file_message(&done, "secret-photo.png")
        .unwrap()
        .attachment
        .clone()
        .unwrap();
    assert_eq!((f.size, f.transferred), (Some(SIZE), SIZE));
    assert_eq!(f.local_path.as_deref(), saved.to_str());
    b_rec
        .wait_last(m.id, (TransferState::Downloaded, SIZE))
        .await;
    let trail = b_rec.trail(m.id);
    assert!(
        trail.iter().all(|(s, n)| match s {
            TransferState::Available => *n == 0,
            TransferState::Downloading | TransferState::Downloaded => *n <= SIZE,
            _ => false,
        }),
        "{trail:?}"
    );

    // A reply to the file neither quotes its link (the key) nor shows it as the excerpt.
    let reply = b.client.reply(b.account, m.id, "nice").unwrap();
    let answered = a
        .wait_conversation(&b.jid, "the reply", |s| {
            s.messages.iter().any(|m| m.body == "nice")
        })
        .await;
    let r = answered.messages.iter().find(|m| m.body == "nice").unwrap();
    assert_eq!(r.reply_to.as_ref().unwrap().message, Some(id));
    let b_side = shown(&b.client, b_conv, reply);
    assert_eq!(b_side.reply_to.as_ref().unwrap().excerpt, "");
    // What A holds is the body as it came, quote fallback included.
    let (url, _) = stored_share(&b, m.id);
    let fragment = url.rsplit_once('#').unwrap().1.to_owned();
    let mut held = a.open_store();
    let bodies: Vec<String> = held
        .transaction(|tx| {
            Ok(tx
                .messages(conv, None, 100)?
                .into_iter()
                .map(|m| m.body)
                .collect())
        })
        .unwrap();
    let wire = bodies.iter().find(|body| body.contains("nice")).unwrap();
    assert!(!wire.contains(&fragment), "the key quoted: {wire}");
}

/// Links B must not fetch by itself, and files that must not pass: a scripted host serves
/// a real encrypted file and altered copies, A sends `aesgcm://` links to them (OMEMO
/// encrypted). Nothing is fetched until B asks; then the good one decrypts, and a wrong
/// key, a flipped byte, a truncated or a tiny file fail with a clear error that names
/// neither key nor address, leaving nothing in the directory. An `aesgcm://` link in the
/// clear is text, not a file.
async fn encrypted_files_are_fetched_on_request_and_checked(server: Server) {
    let host = served::start().await;
    let (a, b) = omemo_pair(server, trusting(&host.ca_pem)).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = png_file(dir.path(), "original.png", 200_000, 4, 4);

    // A real encrypted file, for its ciphertext and key.
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    a.wait_conversation(&b.jid, "the file sent", |s| file_sent(s, id))
        .await;
    let got = b
        .wait_conversation(&a.jid, "the file", |s| {
            file_message(s, "original.png").is_some()
        })
        .await;
    let (url, share) = stored_share(&b, file_message(&got, "original.png").unwrap().id);
    let ciphertext = fetch_raw(share.https()).await;
    let fragment = url.rsplit_once('#').unwrap().1.to_owned();
    let key_hex = &fragment[24..];

    let mut flipped = ciphertext.clone();
    flipped[100_000] ^= 0x01;
    host.put("/ok/good.png", ciphertext.clone());
    host.put("/thumb/thumbnailed.png", ciphertext.clone());
    host.put("/key/wrong key.png", ciphertext.clone());
    host.put("/flip/flipped.png", flipped);
    host.put(
        "/cut/truncated.png",
        ciphertext[..ciphertext.len() - 5].to_vec(),
    );
    host.put(
        "/half/half.png",
        ciphertext[..ciphertext.len() / 2].to_vec(),
    );
    host.put("/tiny/tiny.png", ciphertext[..10].to_vec());
    let link = |path: &str, fragment: &str| {
        format!(
            "aesgcm://127.0.0.1:{}{}#{fragment}",
            host.port,
            path.replace(' ', "%20")
        )
    };
    let last = fragment.chars().last().unwrap();
    let wrong = format!("{}{}", &fragment[..87], if last == '0' { '1' } else { '0' });
    let bodies = [
        link("/ok/good.png", &fragment),
        format!(
            "{}\ndata:image/jpeg;base64,/9j/4AAQSkZJRg",
            link("/thumb/thumbnailed.png", &fragment)
        ),
        link("/key/wrong key.png", &wrong),
        link("/flip/flipped.png", &fragment),
        link("/cut/truncated.png", &fragment),
        link("/half/half.png", &fragment),
        link("/tiny/tiny.png", &fragment),
    ];
    for body in &bodies {
        a.client.send_message(a.account, &b.jid, body).unwrap();
    }
    // The same link in the clear, from a stranger: text, never a file.
    let (eve, eve_jid) = raw_peer(server, "eve").await;
    let b_full = b.client.bound_jid(b.account).unwrap();
    eve.send_xml(&raw_chat(
        &b_full,
        "p1",
        &format!("<body>{}</body>", bodies[0]),
    ))
    .unwrap();
    a.client
        .send_message(a.account, &b.jid, "after the links")
        .unwrap();
    let names = [
        "good.png",
        "thumbnailed.png",
        "wrong key.png",
        "flipped.png",
        "truncated.png",
        "half.png",
        "tiny.png",
    ];
    let s = b
        .wait_conversation(&a.jid, "the links", |s| {
            s.messages.iter().any(|m| m.body == "after the links")
        })
        .await;
    let mut ids = Vec::new();
    for name in names {
        let m = file_message(&s, name).unwrap_or_else(|| panic!("{name}: {:#?}", s.messages));
        assert_eq!(m.body, "", "{name}");
        assert_eq!(m.encryption, Encryption::Omemo2);
        let f = m.attachment.as_ref().unwrap();
        assert!(f.encrypted);
        assert_eq!((f.state, f.size), (TransferState::Available, None));
        ids.push(m.id);
    }
    let clear = b
        .wait_conversation(&eve_jid, "the link in the clear", |s| {
            !s.messages.is_empty()
        })
        .await;
    assert_eq!(clear.messages[0].body, bodies[0]);
    assert!(clear.messages[0].attachment.is_none());
    // Given time, still nothing fetched: only download_file fetches.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(host.hits(), 0, "nothing fetched before the user asked");

    let down = tempfile::tempdir().unwrap();
    for (i, name) in names.iter().enumerate().take(2) {
        let saved = b.client.download_file(ids[i], down.path()).await.unwrap();
        assert_eq!(saved, down.path().join(name));
        assert_eq!(sha256_of(&saved), digest);
    }
    assert_eq!(host.hits(), 2);
    for (i, name) in names.iter().enumerate().skip(2) {
        let err = b
            .client
            .download_file(ids[i], down.path())
            .await
            .unwrap_err();
        let ClientError::Policy(text) = &err else {
            panic!("{name}: {err:?}");
        };
        let expected = if *name == "tiny.png" {
            "too short"
        } else {
            "integrity check"
        };
        assert!(text.contains(expected), "{name}: {text}");
        for secret in [key_hex, fragment.as_str(), "127.0.0.1", "aesgcm"] {
            assert!(!text.contains(secret), "{name}: {text}");
        }
        assert_eq!(
            dir_entries(down.path()),
            vec!["good.png", "thumbnailed.png"],
            "{name}: nothing left behind"
        );
    }
    let s = b
        .wait_conversation(&a.jid, "the failures shown", |s| {
            names[2..].iter().all(|n| {
                file_message(s, n)
                    .and_then(|m| m.attachment.as_ref())
                    .is_some_and(|a| a.state == TransferState::Failed)
            })
        })
        .await;
    for name in &names[2..] {
        let f = file_message(&s, name).unwrap().attachment.clone().unwrap();
        assert!(f.error.is_some(), "{name}");
        assert_eq!(f.local_path, None);
    }
}

/// A client that stops with an encrypted upload waiting: the next client on its database
/// shows it waiting and still to be encrypted, uploads it encrypted once online (the
/// conversation's choice changed meanwhile does not matter), and B gets the file.
async fn an_encrypted_upload_left_by_a_stopped_client_completes_after_restart(server: Server) {
    let (a, b) = omemo_pair(server, options()).await;
    let (a, proxy) = a.behind_proxy(server).await;
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = png_file(dir.path(), "later.png", SIZE, 30, 20);

    cut(&a, &proxy).await;
    let id = a.client.send_file(a.account, &b.jid, &path).await.unwrap();
    a.client.shutdown().await;

    let client = a.reopen();
    let m = shown(&client, conv, id);
    assert_eq!(m.state, DeliveryState::Pending);
    let f = m.attachment.unwrap();
    assert!(f.encrypted);
    assert_eq!(f.state, TransferState::Waiting);
    // Turned to plain meanwhile: what was chosen encrypted still goes encrypted.
    client
        .set_encryption_policy(conv, EncryptionPolicy::Plain)
        .unwrap();
    proxy.set_refusing(false);
    client.login(a.account).await.unwrap();
    let s = wait_snapshot(&client, conv, "the encrypted file sent", |s| {
        s.messages.iter().any(|m| {
            m.id == id
                && m.state >= DeliveryState::Sent
                && m.state != DeliveryState::Failed
                && m.encryption == Encryption::Omemo2
                && m.attachment.as_ref().map(|a| a.state) == Some(TransferState::Uploaded)
        })
    })
    .await;
    let m = s.messages.iter().find(|m| m.id == id).unwrap();
    assert!(m.attachment.as_ref().unwrap().encrypted);

    let got = b
        .wait_conversation(&a.jid, "the file", |s| {
            file_message(s, "later.png").is_some()
        })
        .await;
    let m = file_message(&got, "later.png").unwrap();
    assert!(m.attachment.as_ref().unwrap().encrypted);
    let down = tempfile::tempdir().unwrap();
    let saved = b.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(sha256_of(&saved), digest);
    client.shutdown().await;
}

/// AES-GCM by Python's `cryptography`, independent of ours: `encrypt SRC DST` prints the
/// fragment (IV then key, hex) of a new key; `decrypt SRC DST FRAGMENT`.
const PY_AESGCM: &str = r#"
import os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
if sys.argv[1] == "encrypt":
    key, iv = AESGCM.generate_key(bit_length=256), os.urandom(12)
    data = open(sys.argv[2], "rb").read()
    open(sys.argv[3], "wb").write(AESGCM(key).encrypt(iv, data, None))
    print(iv.hex() + key.hex())
else:
    iv, key = bytes.fromhex(sys.argv[4][:24]), bytes.fromhex(sys.argv[4][24:])
    data = open(sys.argv[2], "rb").read()
    open(sys.argv[3], "wb").write(AESGCM(key).decrypt(iv, data, None))
"#;

fn py_aesgcm(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(PY_AESGCM)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// XEP-0454 with an independent client that speaks only OMEMO 0.3, as Conversations does
/// (slixmpp + python-omemo, files encrypted and decrypted by Python's `cryptography`): its
/// file reaches us as a file and decrypts; ours reaches it as a message that is the
/// `aesgcm://` URL alone, and decrypts there.
async fn an_encrypted_file_interoperates_with_an_omemo_03_client(server: Server) {
    let me = TestClient::register(server, "linnet").await;
    let my_dev = me.client.own_omemo_device(me.account).unwrap();
    let storage = tempfile::tempdir().unwrap();
    let peer_jid = fresh_jid(server, "py03");
    let mut py = PyPeer::start(server, &peer_jid, "03", &storage.path().join("peer.json")).await;
    py.wait_device(&me.jid, NS_03, my_dev).await;
    let dir = tempfile::tempdir().unwrap();

    // Theirs: encrypted by Python, uploaded, the link sent with OMEMO 0.3.
    let (theirs, their_digest) = png_file(dir.path(), "from-python.png", 150_000, 8, 8);
    let sealed = dir.path().join("sealed");
    let fragment = py_aesgcm(&["encrypt".as_ref(), theirs.as_ref(), sealed.as_ref()]);
    assert_eq!(fragment.len(), 88);
    let (uploader, _) = raw_peer(server, "uploader").await;
    assert_eq!(std::fs::metadata(&sealed).unwrap().len(), 150_000 + 16);
    let slot = upload_raw(&uploader, "from-python.png", &sealed).await;
    let link = format!(
        "aesgcm{}#{fragment}",
        slot.get_url.strip_prefix("https").unwrap()
    );
    py.send(&me.jid, "03", &link).await;
    let got = me
        .wait_conversation(&peer_jid, "the file from python", |s| {
            file_message(s, "from-python.png").is_some()
        })
        .await;
    let m = file_message(&got, "from-python.png").unwrap();
    assert_eq!(m.encryption, Encryption::Omemo03);
    assert_eq!(m.body, "");
    assert!(m.attachment.as_ref().unwrap().encrypted);
    let down = tempfile::tempdir().unwrap();
    let saved = me.client.download_file(m.id, down.path()).await.unwrap();
    assert_eq!(sha256_of(&saved), their_digest);

    // Ours: the peer gets the URL alone, and Python decrypts what it points to.
    let (ours, our_digest) = png_file(dir.path(), "from-linnet.png", 170_000, 9, 9);
    let id = me
        .client
        .send_file(me.account, &peer_jid, &ours)
        .await
        .unwrap();
    let body = py.received_from(&me.jid, NS_03).await;
    let share = AesgcmUrl::parse(&body).unwrap_or_else(|| panic!("not one aesgcm URL: {body}"));
    let (_, fragment) = body.rsplit_once('#').unwrap();
    assert_eq!(fragment.len(), 88);
    let raw = dir.path().join("raw");
    std::fs::write(&raw, fetch_raw(share.https()).await).unwrap();
    let opened = dir.path().join("opened");
    py_aesgcm(&[
        "decrypt".as_ref(),
        raw.as_ref(),
        opened.as_ref(),
        fragment.as_ref(),
    ]);
    assert_eq!(sha256_of(&opened), our_digest);
    let conv = me.client.open_conversation(me.account, &peer_jid).unwrap();
    let m = shown(&me.client, conv, id);
    assert_eq!(
        m.encryption,
        Encryption::Omemo03,
        "the peer speaks 0.3 only"
    );
    py.quit().await;
}

both_servers!(
    a_file_shared_in_a_group,
    a_file_goes_to_a_contact_and_is_downloaded,
    a_cancelled_upload_sends_nothing,
    foreign_and_hostile_files,
    download_progress_cancel_and_hash_check,
    a_file_sent_offline_goes_when_the_link_is_back,
    a_link_lost_during_the_slot_request_is_retried,
    an_upload_left_by_a_stopped_client_completes_after_restart,
    retry_upload_sends_a_cancelled_file,
    retry_upload_refuses_what_it_cannot_retry,
    an_encrypted_file_goes_to_a_contact_and_is_downloaded,
    encrypted_files_are_fetched_on_request_and_checked,
    an_encrypted_upload_left_by_a_stopped_client_completes_after_restart,
    an_encrypted_file_interoperates_with_an_omemo_03_client,
);

/// A scripted HTTPS host on loopback with a certificate from its own CA: `/slow` sends
/// half its body, then waits for `release`; `/wrong` sends bytes other than announced.
mod scripted {
    use std::sync::Arc;

    use rand::{RngCore, SeedableRng};
    use tokio::io::AsyncWriteExt;

    pub const SLOW_LEN: usize = 512 * 1024;
    /// Bytes of `/slow` sent before waiting.
    pub const HELD: usize = SLOW_LEN / 2;
    pub const WRONG: &[u8] = b"these are not the bytes you are looking for";

    pub fn slow_body() -> Vec<u8> {
        let mut v = vec![0u8; SLOW_LEN];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut v);
        v
    }

    pub struct Https {
        pub port: u16,
        pub ca_pem: String,
        release: Arc<tokio::sync::watch::Sender<bool>>,
    }

    impl Https {
        pub fn url(&self, path: &str) -> String {
            format!("https://127.0.0.1:{}{path}", self.port)
        }

        /// From now on `/slow` sends its whole body.
        pub fn release(&self) {
            self.release.send_replace(true);
        }
    }

    pub async fn start() -> Https {
        let (release, _) = tokio::sync::watch::channel(false);
        let release = Arc::new(release);
        let gate = release.clone();
        let host = linnet_tests::https::serve(move |_head, path, mut tls| {
            let mut released = gate.subscribe();
            async move {
                let body = match path.as_str() {
                    "/slow" => slow_body(),
                    "/wrong" => WRONG.to_vec(),
                    _ => {
                        let _ = tls
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                };
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if tls.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                let held = if path == "/slow" { HELD } else { body.len() };
                if tls.write_all(&body[..held]).await.is_err() || tls.flush().await.is_err() {
                    return;
                }
                if held < body.len() {
                    if released.wait_for(|r| *r).await.is_err() {
                        return;
                    }
                    if tls.write_all(&body[held..]).await.is_err() {
                        return;
                    }
                }
                let _ = tls.shutdown().await;
            }
        })
        .await;
        Https {
            port: host.port,
            ca_pem: host.ca_pem,
            release,
        }
    }
}

/// A scripted HTTPS host on loopback that serves what it is given, by path, and counts the
/// requests it gets.
mod served {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt;

    pub struct Served {
        pub port: u16,
        pub ca_pem: String,
        bodies: Arc<Mutex<HashMap<String, Vec<u8>>>>,
        hits: Arc<AtomicUsize>,
    }

    impl Served {
        /// Serves `body` at `path` (as it appears in the request line).
        pub fn put(&self, path: &str, body: Vec<u8>) {
            let path = path.replace(' ', "%20");
            self.bodies.lock().unwrap().insert(path, body);
        }

        pub fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    pub async fn start() -> Served {
        let bodies: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (bodies.clone(), hits.clone());
        let host = linnet_tests::https::serve(move |_head, path, mut tls| {
            h.fetch_add(1, Ordering::SeqCst);
            let body = b.lock().unwrap().get(&path).cloned();
            async move {
                let head = match &body {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                };
                if tls.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                if let Some(body) = body {
                    if tls.write_all(&body).await.is_err() {
                        return;
                    }
                }
                let _ = tls.shutdown().await;
            }
        })
        .await;
        Served {
            port: host.port,
            ca_pem: host.ca_pem,
            bodies,
            hits,
        }
    }
}
