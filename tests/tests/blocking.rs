//! Blocking (XEP-0191) through the client against the real servers: the blocklist in the
//! snapshot on every device of ours, nothing passing either way while blocked, and a
//! report of spam where the server takes reports (XEP-0377).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::{ChatListSnapshot, DeliveryState};
use linnet_tests::*;

fn blocks(s: &ChatListSnapshot, jid: &str) -> bool {
    s.accounts
        .iter()
        .any(|a| a.blocked.iter().any(|j| j == jid))
}

async fn blocking_a_contact(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a2 = a.another_device(server).await;
    let reported = a
        .client
        .block_contact(a.account, &b.jid, false)
        .await
        .unwrap();
    assert!(!reported);
    let bob = b.jid.clone();
    a.wait_list("blocked here", |s| blocks(s, &bob)).await;
    a2.wait_list("blocked on the other device", |s| blocks(s, &bob))
        .await;

    // Our server refuses to carry our message to someone we block (sent in the clear:
    // encrypting would fail earlier, their device list being out of reach too).
    let conv = a.client.open_conversation(a.account, &b.jid).unwrap();
    a.client
        .set_encryption_policy(conv, linnet_client::EncryptionPolicy::Plain)
        .unwrap();
    let m = a
        .client
        .send_message(a.account, &b.jid, "can't reach")
        .unwrap();
    let s = a
        .wait_conversation(&b.jid, "refused", |s| {
            s.messages
                .iter()
                .any(|x| x.id == m && x.state == DeliveryState::Failed)
        })
        .await;
    // Prosody says why (XEP-0191 `<blocked/>`); ejabberd only refuses.
    let refused = s.messages.iter().find(|x| x.id == m).unwrap();
    assert!(
        matches!(
            refused.error.as_deref(),
            None | Some("you block this contact")
        ),
        "{refused:?}"
    );
    // Nor does it bring us theirs (sent in the clear, so that it goes at once).
    let b_conv = b.client.open_conversation(b.account, &a.jid).unwrap();
    b.client
        .set_encryption_policy(b_conv, linnet_client::EncryptionPolicy::Plain)
        .unwrap();
    b.client
        .send_message(b.account, &a.jid, "let me in")
        .unwrap();
    b.client.sync(b.account).await.unwrap();
    a.client.sync(a.account).await.unwrap();

    a2.client.unblock_contact(a2.account, &b.jid).await.unwrap();
    a.wait_list("unblocked", |s| !blocks(s, &bob)).await;
    b.client
        .send_message(b.account, &a.jid, "hello again")
        .unwrap();
    a.wait_incoming(&b.jid, 1, "a message after unblocking")
        .await;
    b.client.sync(b.account).await.unwrap();
    a.client.sync(a.account).await.unwrap();
    assert_eq!(a.incoming_bodies(&b.jid), vec!["hello again".to_owned()]);

    // A spammer's request goes with the block; the report goes where the server takes one.
    let spammer = TestClient::register(server, "spam").await;
    spammer
        .client
        .add_contact(spammer.account, &a.jid, None)
        .await
        .unwrap();
    let sj = spammer.jid.clone();
    a.wait_list("the request", |s| {
        s.accounts
            .iter()
            .any(|x| request_jids(x).contains(&sj.as_str()))
    })
    .await;
    a.client
        .block_contact(a.account, &spammer.jid, true)
        .await
        .unwrap();
    let s = a
        .wait_list("blocked, request gone", |s| blocks(s, &sj))
        .await;
    assert!(!s
        .accounts
        .iter()
        .any(|x| request_jids(x).contains(&sj.as_str())));
    assert!(a
        .client
        .block_contact(a.account, &a.jid, false)
        .await
        .is_err());
}

both_servers!(blocking_a_contact);
