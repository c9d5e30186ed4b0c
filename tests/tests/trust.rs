//! OMEMO trust through the client against the real servers: blind trust before
//! verification, verification by the URI of a QR code (and a forged one refused), a new
//! device of a verified contact left out until it is verified, distrust and revocation, a
//! message to a contact none of whose devices is trusted failing rather than going in the
//! clear, and messages from devices not trusted shown, marked.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::{
    ClientError, ConversationSnapshot, DeliveryState, DeviceTrust, Encryption, MessageId,
    MessageItem, TrustDecision, TrustPolicy,
};
use linnet_tests::*;

/// The trust `who` has in `jid`'s device, as its device list shows it.
fn trust_of(who: &TestClient, jid: &str, device: u32) -> Option<DeviceTrust> {
    who.client
        .omemo_devices(who.account, jid)
        .unwrap()
        .into_iter()
        .find(|d| d.device_id == device)
        .and_then(|d| d.trust)
}

fn fingerprint_of(who: &TestClient, jid: &str, device: u32) -> Option<String> {
    who.client
        .omemo_devices(who.account, jid)
        .unwrap()
        .into_iter()
        .find(|d| d.device_id == device)
        .and_then(|d| d.fingerprint)
}

fn find<'a>(s: &'a ConversationSnapshot, body: &str) -> Option<&'a MessageItem> {
    s.messages.iter().find(|m| m.body == body)
}

fn origin_of(who: &TestClient, id: MessageId) -> String {
    who.open_store().message(id).unwrap().origin_id.unwrap()
}

/// What `who` stored of the message with `origin` from `peer`: its body and why it could
/// not be decrypted. `None` until it arrived.
fn received(who: &TestClient, peer: &str, origin: &str) -> Option<(String, Option<String>)> {
    let store = who.open_store();
    let conv = store.conversation(who.account, peer, false).unwrap()?;
    store
        .message_by_origin_id(conv, origin)
        .unwrap()
        .map(|m| (m.body, m.error))
}

/// Sends `body` from `from` to `to` and returns its origin id once the server has it.
async fn send(from: &TestClient, to: &str, body: &str) -> String {
    let id = from.client.send_message(from.account, to, body).unwrap();
    from.wait_conversation(to, body, |s| {
        s.messages.iter().any(|m| {
            m.id == id && m.state >= DeliveryState::Sent && m.state != DeliveryState::Failed
        })
    })
    .await;
    origin_of(from, id)
}

/// Waits until `who` has decrypted the message `origin` from `peer`.
async fn wait_read(who: &TestClient, peer: &str, origin: &str, body: &str) {
    wait_until(body, || {
        received(who, peer, origin).is_some_and(|(b, e)| b == body && e.is_none())
    })
    .await;
}

/// Waits until the message `origin` from `peer` reached `who` without a key for it.
async fn wait_not_for_us(who: &TestClient, peer: &str, origin: &str, what: &str) {
    wait_until(what, || {
        received(who, peer, origin).is_some_and(|(b, e)| {
            b.is_empty() && e.as_deref() == Some("not encrypted for this device")
        })
    })
    .await;
}

/// A and B chat under blind trust; A verifies B's device by B's URI (a forged URI first
/// changes nothing); B adds a second device, whose message A shows marked and for which A
/// does not encrypt until A verifies it; distrusting B's first device leaves it out;
/// with every device of B distrusted a message fails; revoking brings the first back.
async fn new_devices_of_a_verified_contact_wait_for_verification(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_dev = a.client.own_omemo_device(a.account).unwrap();
    let b1 = b.client.own_omemo_device(b.account).unwrap();
    wait_device(&a, &b.jid, b1, "B's device at A").await;
    wait_device(&b, &a.jid, a_dev, "A's device at B").await;

    // Blind trust before verification: the first message goes, both ways, and shows as
    // coming from a device trusted without verification.
    let o = send(&a, &b.jid, "blind one").await;
    wait_read(&b, &a.jid, &o, "blind one").await;
    b.wait_conversation(&a.jid, "the message marked as blindly trusted", |s| {
        find(s, "blind one").is_some_and(|m| m.trust == Some(DeviceTrust::Blind))
    })
    .await;
    assert_eq!(trust_of(&a, &b.jid, b1), Some(DeviceTrust::Blind));
    // What A shows for B's device is what B shows for itself.
    let b1_fingerprint = b.client.own_omemo_fingerprint(b.account).unwrap();
    assert_eq!(b1_fingerprint.len(), 64);
    assert_eq!(
        fingerprint_of(&a, &b.jid, b1).as_deref(),
        Some(b1_fingerprint.as_str())
    );

    // A URI whose key for B's device is not the one B uses changes nothing and fails.
    let forged = format!("xmpp:{}?omemo-sid-{b1}={}", b.jid, "ab".repeat(32));
    match a.client.verify_by_uri(a.account, &forged) {
        Err(ClientError::Policy(why)) => assert!(why.contains("nothing was changed"), "{why}"),
        other => panic!("a forged URI: {other:?}"),
    }
    assert_eq!(trust_of(&a, &b.jid, b1), Some(DeviceTrust::Blind));
    for bad in [
        "",
        "xmpp:",
        "nonsense",
        &format!("xmpp:{}?omemo-sid-{b1}=12", b.jid),
    ] {
        assert!(
            matches!(
                a.client.verify_by_uri(a.account, bad),
                Err(ClientError::BadInput(_))
            ),
            "{bad:?}"
        );
    }

    // A scans B's code.
    let uri = b.client.own_verification_uri(b.account).unwrap();
    assert_eq!(
        uri,
        format!("xmpp:{}?omemo-sid-{b1}={b1_fingerprint}", b.jid)
    );
    let done = a.client.verify_by_uri(a.account, &uri).unwrap();
    assert_eq!(done.verified, vec![b1]);
    assert!(done.pre_verified.is_empty() && done.distrusted.is_empty());
    assert_eq!(trust_of(&a, &b.jid, b1), Some(DeviceTrust::Verified));
    a.wait_conversation(&b.jid, "B's device verified in the snapshot", |s| {
        s.devices
            .iter()
            .any(|d| d.device_id == b1 && d.trust == Some(DeviceTrust::Verified))
    })
    .await;

    // B adds a device. Its first message reaches A, marked: A has verified a device of B,
    // so a new one waits for the user.
    let b2 = b.another_device(server).await;
    let b2_dev = b2.client.own_omemo_device(b2.account).unwrap();
    wait_device(&b2, &a.jid, a_dev, "A's device at B's second device").await;
    b2.client
        .send_message(b2.account, &a.jid, "from the new device")
        .unwrap();
    let s = a
        .wait_conversation(&b.jid, "the new device's message", |s| {
            find(s, "from the new device").is_some()
        })
        .await;
    let m = find(&s, "from the new device").unwrap();
    assert_eq!(m.trust, Some(DeviceTrust::Undecided), "{m:?}");
    assert!(m.error.is_none());
    assert_eq!(m.encryption, Encryption::Omemo2);
    wait_device(&a, &b.jid, b2_dev, "B's second device at A").await;
    assert_eq!(trust_of(&a, &b.jid, b2_dev), Some(DeviceTrust::Undecided));
    a.wait_conversation(&b.jid, "the undecided device in the snapshot", |s| {
        s.devices
            .iter()
            .any(|d| d.device_id == b2_dev && d.trust == Some(DeviceTrust::Undecided))
    })
    .await;

    // A's next message is not encrypted for the new device; the first still reads it.
    let o = send(&a, &b.jid, "not for the new device").await;
    wait_read(&b, &a.jid, &o, "not for the new device").await;
    wait_not_for_us(&b2, &a.jid, &o, "no key for the new device").await;

    // The new device corrects a message of the first (its carbon): A shows the text the
    // new device wrote, marked as the new device's.
    let o = send(&b, &a.jid, "written on the first device").await;
    wait_read(&a, &b.jid, &o, "written on the first device").await;
    a.wait_conversation(&b.jid, "the first device's message, verified", |s| {
        find(s, "written on the first device")
            .is_some_and(|m| m.trust == Some(DeviceTrust::Verified))
    })
    .await;
    let carbon = b2
        .wait_conversation(&a.jid, "the carbon on the new device", |s| {
            find(s, "written on the first device").is_some()
        })
        .await;
    let carbon = find(&carbon, "written on the first device").unwrap().id;
    b2.client
        .correct_message(b2.account, carbon, "rewritten on the new device")
        .unwrap();
    a.wait_conversation(&b.jid, "the correction, marked", |s| {
        find(s, "rewritten on the new device")
            .is_some_and(|m| m.edited && m.trust == Some(DeviceTrust::Undecided))
    })
    .await;

    // A verifies the new device by its code: from now on it gets A's messages, and its
    // earlier message shows as verified.
    let b2_uri = b2.client.own_verification_uri(b2.account).unwrap();
    let done = a.client.verify_by_uri(a.account, &b2_uri).unwrap();
    assert_eq!(done.verified, vec![b2_dev]);
    a.wait_conversation(&b.jid, "the earlier message now verified", |s| {
        find(s, "from the new device").is_some_and(|m| m.trust == Some(DeviceTrust::Verified))
    })
    .await;
    let o = send(&a, &b.jid, "for both devices").await;
    wait_read(&b, &a.jid, &o, "for both devices").await;
    wait_read(&b2, &a.jid, &o, "for both devices").await;

    // Distrusting the first device leaves it out; what it sends still shows, marked.
    a.client
        .set_device_trust(a.account, &b.jid, b1, TrustDecision::Distrust)
        .unwrap();
    assert_eq!(trust_of(&a, &b.jid, b1), Some(DeviceTrust::Distrusted));
    let o = send(&a, &b.jid, "not for the first device").await;
    wait_read(&b2, &a.jid, &o, "not for the first device").await;
    wait_not_for_us(&b, &a.jid, &o, "no key for the distrusted device").await;
    b.client
        .send_message(b.account, &a.jid, "from the distrusted device")
        .unwrap();
    a.wait_conversation(&b.jid, "the distrusted device's message, marked", |s| {
        find(s, "from the distrusted device")
            .is_some_and(|m| m.trust == Some(DeviceTrust::Distrusted) && m.error.is_none())
    })
    .await;

    // No trusted device left: the message fails, with the reason, and nothing goes out.
    a.client
        .set_device_trust(a.account, &b.jid, b2_dev, TrustDecision::Distrust)
        .unwrap();
    let id = a
        .client
        .send_message(a.account, &b.jid, "for no one")
        .unwrap();
    let s = a
        .wait_conversation(&b.jid, "the message failing", |s| {
            s.messages
                .iter()
                .any(|m| m.id == id && m.state == DeliveryState::Failed)
        })
        .await;
    let m = s.messages.iter().find(|m| m.id == id).unwrap();
    assert!(
        m.error.as_deref().is_some_and(|e| e.contains("trusted")),
        "{m:?}"
    );

    // Revoking the distrust of the first device: B's only other device is distrusted, not
    // verified, so the policy trusts it blindly again and it reads A's messages.
    a.client
        .set_device_trust(a.account, &b.jid, b1, TrustDecision::Revoke)
        .unwrap();
    assert_eq!(trust_of(&a, &b.jid, b1), Some(DeviceTrust::Blind));
    let o = send(&a, &b.jid, "after the revocation").await;
    wait_read(&b, &a.jid, &o, "after the revocation").await;
    wait_not_for_us(&b2, &a.jid, &o, "still nothing for the distrusted device").await;

    // Decisions about devices we know no key of, or about ourselves, are refused.
    assert!(matches!(
        a.client
            .set_device_trust(a.account, &b.jid, 12345, TrustDecision::Verify),
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        a.client
            .set_device_trust(a.account, &a.jid, a_dev, TrustDecision::Distrust),
        Err(ClientError::BadInput(_))
    ));
}

/// A code scanned before any message (on first meeting) counts: the devices it names are
/// verified once met with those keys. It carries the devices its owner verified too. A
/// forged code makes the device it names unusable rather than trusted. Under the manual
/// policy a new device waits for the user even with nothing verified.
async fn a_code_scanned_before_meeting_verifies_the_devices_it_names(server: Server) {
    let (a, c) = contacts_pair(server).await;
    let a1 = a.client.own_omemo_device(a.account).unwrap();
    // A's second device; A's first verifies it by its code, before any session with it.
    let a2 = a.another_device(server).await;
    let a2_dev = a2.client.own_omemo_device(a2.account).unwrap();
    wait_device(&a, &a.jid, a2_dev, "A's second device at A").await;
    let done = a
        .client
        .verify_by_uri(
            a.account,
            &a2.client.own_verification_uri(a2.account).unwrap(),
        )
        .unwrap();
    // Recorded in advance unless a session with it happened to be built already.
    assert_eq!([done.pre_verified, done.verified].concat(), vec![a2_dev]);
    assert_eq!(trust_of(&a, &a.jid, a2_dev), Some(DeviceTrust::Verified));
    // Our own device shows as this one, with our fingerprint.
    let own = a.client.omemo_devices(a.account, &a.jid).unwrap();
    let me = own.iter().find(|d| d.device_id == a1).unwrap();
    assert!(me.current);
    assert_eq!(
        me.fingerprint.as_deref(),
        Some(a.client.own_omemo_fingerprint(a.account).unwrap().as_str())
    );

    // A's code names both of A's devices; C scans it before C has a session with either.
    let uri = a.client.own_verification_uri(a.account).unwrap();
    assert!(uri.contains(&format!("omemo-sid-{a1}=")), "{uri}");
    assert!(uri.contains(&format!("omemo-sid-{a2_dev}=")), "{uri}");
    let done = c.client.verify_by_uri(c.account, &uri).unwrap();
    let mut both = vec![a1, a2_dev];
    both.sort_unstable();
    assert_eq!(done.pre_verified, both);
    assert!(done.verified.is_empty());
    // C's first message reads A's device list (ejabberd does not notify C of A's second
    // device) and builds sessions with both: the keys are the ones verified.
    let o = send(&c, &a.jid, "verified before we met").await;
    wait_read(&a, &c.jid, &o, "verified before we met").await;
    wait_read(&a2, &c.jid, &o, "verified before we met").await;
    for d in [a1, a2_dev] {
        assert_eq!(trust_of(&c, &a.jid, d), Some(DeviceTrust::Verified), "{d}");
    }
    assert_eq!(
        fingerprint_of(&c, &a.jid, a2_dev).as_deref(),
        Some(
            a2.client
                .own_omemo_fingerprint(a2.account)
                .unwrap()
                .as_str()
        )
    );

    // A forged code for a device not met yet: when it turns up with its real key, that is
    // not the key verified, so it gets nothing, and a message fails instead of going to it.
    let e = TestClient::register(server, "erin").await;
    let e_dev = e.client.own_omemo_device(e.account).unwrap();
    let forged = format!("xmpp:{}?omemo-sid-{e_dev}={}", e.jid, "cd".repeat(32));
    assert_eq!(
        c.client
            .verify_by_uri(c.account, &forged)
            .unwrap()
            .pre_verified,
        vec![e_dev]
    );
    let id = c
        .client
        .send_message(c.account, &e.jid, "to a forged device")
        .unwrap();
    let s = c
        .wait_conversation(&e.jid, "the message failing", |s| {
            s.messages
                .iter()
                .any(|m| m.id == id && m.state == DeliveryState::Failed)
        })
        .await;
    let m = s.messages.iter().find(|m| m.id == id).unwrap();
    assert!(
        m.error.as_deref().is_some_and(|e| e.contains("trusted")),
        "{m:?}"
    );
    // Its real key is what C shows, undecided.
    assert_eq!(trust_of(&c, &e.jid, e_dev), Some(DeviceTrust::Undecided));
    assert_eq!(
        fingerprint_of(&c, &e.jid, e_dev).as_deref(),
        Some(e.client.own_omemo_fingerprint(e.account).unwrap().as_str())
    );

    // Under the manual policy even a first contact's device waits for the user.
    assert_eq!(
        c.client.omemo_trust_policy(c.account).unwrap(),
        TrustPolicy::BlindTrust
    );
    c.client
        .set_omemo_trust_policy(c.account, TrustPolicy::Manual)
        .unwrap();
    assert_eq!(
        c.client.omemo_trust_policy(c.account).unwrap(),
        TrustPolicy::Manual
    );
    let f = TestClient::register(server, "fred").await;
    let f_dev = f.client.own_omemo_device(f.account).unwrap();
    let id = c.client.send_message(c.account, &f.jid, "to fred").unwrap();
    c.wait_conversation(&f.jid, "the message waiting for a decision", |s| {
        s.messages
            .iter()
            .any(|m| m.id == id && m.state == DeliveryState::Failed)
    })
    .await;
    assert_eq!(trust_of(&c, &f.jid, f_dev), Some(DeviceTrust::Undecided));
    // Trusted by hand, it gets the next one.
    c.client
        .set_device_trust(c.account, &f.jid, f_dev, TrustDecision::Trust)
        .unwrap();
    assert_eq!(trust_of(&c, &f.jid, f_dev), Some(DeviceTrust::Blind));
    let o = send(&c, &f.jid, "to fred, trusted").await;
    wait_read(&f, &c.jid, &o, "to fred, trusted").await;
}

both_servers!(
    new_devices_of_a_verified_contact_wait_for_verification,
    a_code_scanned_before_meeting_verifies_the_devices_it_names,
);
