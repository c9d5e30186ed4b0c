//! Hostile and malformed input: each case must end in its own clear error, never a panic,
//! and must leave the session usable. Both versions each time.

// Test helpers outside #[test] functions: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use linnet_omemo::store::IdentityStore;
use linnet_omemo::{
    Bundle, DeviceAddress, EncryptedMessage, Error, KeyPair, MemoryStore, SessionManager, Trust,
    Version, MAX_SKIP_PER_STEP, PREKEY_COUNT,
};

const VERSIONS: [Version; 2] = [Version::Omemo03, Version::Omemo2];

fn alice_addr() -> DeviceAddress {
    DeviceAddress::new("alice@example.org", 1)
}
fn bob_addr() -> DeviceAddress {
    DeviceAddress::new("bob@example.org", 2)
}

fn device(addr: &DeviceAddress) -> SessionManager<MemoryStore> {
    SessionManager::new(MemoryStore::new(), addr.jid.clone(), addr.device_id).unwrap()
}

/// Alice and Bob with a session built from Bob's bundle (Alice initiated, nothing sent yet).
fn pair(v: Version) -> (SessionManager<MemoryStore>, SessionManager<MemoryStore>) {
    let mut alice = device(&alice_addr());
    let bob = device(&bob_addr());
    alice
        .process_bundle(v, &bob_addr(), &bob.bundle(v).unwrap())
        .unwrap();
    (alice, bob)
}

fn send(
    a: &mut SessionManager<MemoryStore>,
    v: Version,
    to: &DeviceAddress,
    text: &str,
) -> EncryptedMessage {
    let out = a
        .encrypt(v, Some(text.as_bytes()), std::slice::from_ref(to))
        .unwrap();
    assert!(out.skipped.is_empty());
    out.message
}

fn recv(
    b: &mut SessionManager<MemoryStore>,
    v: Version,
    from: &str,
    m: &EncryptedMessage,
) -> Result<String, Error> {
    let d = b.decrypt(v, from, m)?;
    Ok(String::from_utf8(d.payload.unwrap().to_vec()).unwrap())
}

/// A pair that has exchanged one message each way (Bob's session is established).
fn talking_pair(v: Version) -> (SessionManager<MemoryStore>, SessionManager<MemoryStore>) {
    let (mut alice, mut bob) = pair(v);
    let m = send(&mut alice, v, &bob_addr(), "hi");
    assert_eq!(recv(&mut bob, v, "alice@example.org", &m).unwrap(), "hi");
    let r = send(&mut bob, v, &alice_addr(), "hello");
    assert_eq!(recv(&mut alice, v, "bob@example.org", &r).unwrap(), "hello");
    (alice, bob)
}

#[test]
fn new_device_has_signed_prekey_and_enough_prekeys() {
    let bob = device(&bob_addr());
    for v in VERSIONS {
        let b = bob.bundle(v).unwrap();
        assert!(b.prekeys.len() >= 100 && b.prekeys.len() == PREKEY_COUNT);
        let key_len = if v == Version::Omemo03 { 33 } else { 32 };
        assert_eq!(b.identity_key.len(), key_len);
        assert_eq!(b.signed_prekey.len(), key_len);
        assert_eq!(b.signed_prekey_signature.len(), 64);
    }
}

#[test]
fn malformed_protobuf_is_rejected() {
    for v in VERSIONS {
        let (mut alice, mut bob) = talking_pair(v);
        let good = send(&mut alice, v, &bob_addr(), "after");
        for (kex, data) in [
            (true, vec![]),
            (true, vec![0x33, 0xff, 0xff, 0xff]),
            (true, vec![0x0a, 0x05, 1, 2]),
            (false, vec![]),
            (
                false,
                vec![0x33, 0x0a, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (false, vec![0xff; 40]),
        ] {
            let mut m = good.clone();
            m.keys[0].key_exchange = kex;
            m.keys[0].data = data;
            let err = bob.decrypt(v, "alice@example.org", &m).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{v:?} {err}");
        }
        // A truncated genuine message.
        let mut m = good.clone();
        let half = m.keys[0].data.len() / 2;
        m.keys[0].data.truncate(half);
        assert!(bob.decrypt(v, "alice@example.org", &m).is_err());
        // Nothing above damaged the session.
        assert_eq!(
            recv(&mut bob, v, "alice@example.org", &good).unwrap(),
            "after"
        );
    }
}

#[test]
fn wrong_signed_prekey_signature_is_rejected() {
    for v in VERSIONS {
        let mut alice = device(&alice_addr());
        let bob = device(&bob_addr());
        let good = bob.bundle(v).unwrap();
        let mut flipped = good.clone();
        flipped.signed_prekey_signature[5] ^= 1;
        let mut other_key = good.clone();
        other_key.signed_prekey = bob.bundle(v).unwrap().prekeys[0].1.clone();
        let mut foreign = good.clone();
        foreign.identity_key = device(&alice_addr()).bundle(v).unwrap().identity_key;
        let mut short = good.clone();
        short.signed_prekey_signature.truncate(63);
        for bad in [flipped, other_key, foreign, short] {
            assert!(matches!(
                alice.process_bundle(v, &bob_addr(), &bad),
                Err(Error::BadSignature)
            ));
            assert!(!alice.has_session(v, &bob_addr()).unwrap());
        }
        alice.process_bundle(v, &bob_addr(), &good).unwrap();
    }
}

#[test]
fn replayed_prekey_message_is_rejected() {
    for v in VERSIONS {
        let (mut alice, mut bob) = pair(v);
        let first = send(&mut alice, v, &bob_addr(), "first");
        assert!(first.keys[0].key_exchange);
        let d = bob.decrypt(v, "alice@example.org", &first).unwrap();
        assert!(d.new_session && d.bundle_changed);
        // Same session: the message key is gone.
        assert!(matches!(
            bob.decrypt(v, "alice@example.org", &first),
            Err(Error::DuplicateMessage)
        ));
        // After Alice starts over with a new session, the old key exchange cannot rebuild
        // the old one: its one-time prekey was deleted.
        alice
            .process_bundle(v, &bob_addr(), &bob.bundle(v).unwrap())
            .unwrap();
        let second = send(&mut alice, v, &bob_addr(), "second");
        assert_eq!(
            recv(&mut bob, v, "alice@example.org", &second).unwrap(),
            "second"
        );
        assert!(matches!(
            bob.decrypt(v, "alice@example.org", &first),
            Err(Error::UnknownPreKey(_))
        ));
    }
}

#[test]
fn skipped_key_flood_is_rejected() {
    for v in VERSIONS {
        let (mut alice, mut bob) = talking_pair(v);
        let msgs: Vec<EncryptedMessage> = (0..=MAX_SKIP_PER_STEP + 1)
            .map(|i| send(&mut alice, v, &bob_addr(), &format!("m{i}")))
            .collect();
        let last = msgs.last().unwrap();
        assert!(matches!(
            bob.decrypt(v, "alice@example.org", last),
            Err(Error::TooManySkippedKeys { limit, .. }) if limit == MAX_SKIP_PER_STEP
        ));
        // Within the bound is fine, and the session survived the flood attempt.
        let at_bound = &msgs[MAX_SKIP_PER_STEP as usize];
        assert_eq!(
            recv(&mut bob, v, "alice@example.org", at_bound).unwrap(),
            format!("m{MAX_SKIP_PER_STEP}")
        );
        assert_eq!(
            recv(&mut bob, v, "alice@example.org", &msgs[7]).unwrap(),
            "m7"
        );
    }
}

#[test]
fn message_without_key_for_our_device_is_rejected() {
    for v in VERSIONS {
        let (mut alice, _bob) = pair(v);
        let m = send(&mut alice, v, &bob_addr(), "not for carol");
        let mut carol = device(&DeviceAddress::new("bob@example.org", 3));
        assert!(matches!(
            carol.decrypt(v, "alice@example.org", &m),
            Err(Error::NoKeyForDevice)
        ));
        let mut empty = m.clone();
        empty.keys.clear();
        assert!(matches!(
            device(&bob_addr()).decrypt(v, "alice@example.org", &empty),
            Err(Error::NoKeyForDevice)
        ));
    }
}

/// A bundle signed correctly by `signer` but carrying the given signed prekey / prekey.
fn forged_bundle(v: Version, spk: [u8; 32], pk: [u8; 32]) -> Bundle {
    let enc = |k: [u8; 32]| -> Vec<u8> {
        if v == Version::Omemo03 {
            [&[0x05][..], &k].concat()
        } else {
            k.to_vec()
        }
    };
    let mut rng = rand::thread_rng();
    let (identity_key, sig) = match v {
        Version::Omemo03 => {
            let ik = KeyPair::generate(&mut rng);
            let sig = linnet_omemo::xeddsa::sign(&ik.secret_bytes(), &enc(spk), &mut rng);
            (enc(ik.public()), sig.to_vec())
        }
        Version::Omemo2 => {
            use ed25519_dalek::Signer;
            let sk = ed25519_dalek::SigningKey::generate(&mut rng);
            (
                sk.verifying_key().to_bytes().to_vec(),
                sk.sign(&spk).to_bytes().to_vec(),
            )
        }
    };
    Bundle {
        identity_key,
        signed_prekey_id: 1,
        signed_prekey: enc(spk),
        signed_prekey_signature: sig,
        prekeys: vec![(1, enc(pk))],
    }
}

#[test]
fn low_order_and_zero_points_are_rejected() {
    let good = KeyPair::generate(&mut rand::thread_rng()).public();
    let mut order_8 = [0u8; 32];
    order_8.copy_from_slice(
        &hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800").unwrap(),
    );
    for v in VERSIONS {
        let mut alice = device(&alice_addr());
        for (spk, pk) in [
            ([0u8; 32], good),
            (good, [0u8; 32]),
            (order_8, good),
            (good, order_8),
        ] {
            let b = forged_bundle(v, spk, pk);
            assert!(
                matches!(
                    alice.process_bundle(v, &bob_addr(), &b),
                    Err(Error::InvalidKey(_))
                ),
                "{v:?}"
            );
        }
        // A key exchange whose ephemeral key is all zero.
        let (mut alice, mut bob) = pair(v);
        let mut m = send(&mut alice, v, &bob_addr(), "x");
        let data = &mut m.keys[0].data;
        let ek_at = find_ephemeral(v, data);
        data[ek_at..ek_at + 32].fill(0);
        assert!(matches!(
            bob.decrypt(v, "alice@example.org", &m),
            Err(Error::InvalidKey(_))
        ));
    }
    // OMEMO 2 identity keys are Ed25519 points: the identity element is refused.
    let mut b = forged_bundle(Version::Omemo2, good, good);
    b.identity_key = {
        let mut k = vec![0u8; 32];
        k[0] = 1;
        k
    };
    assert!(device(&alice_addr())
        .process_bundle(Version::Omemo2, &bob_addr(), &b)
        .is_err());
}

/// Offset of the ephemeral key in a key exchange: field 2 (0.3, after 0x05) or 4 (2).
fn find_ephemeral(v: Version, data: &[u8]) -> usize {
    let (start, field_tag) = match v {
        Version::Omemo03 => (1, 0x12),
        Version::Omemo2 => (0, 0x22),
    };
    let mut i = start;
    loop {
        let tag = data[i];
        i += 1;
        if tag & 7 == 0 {
            while data[i] & 0x80 != 0 {
                i += 1;
            }
            i += 1;
        } else {
            let len = data[i] as usize;
            i += 1;
            if tag == field_tag {
                return if v == Version::Omemo03 { i + 1 } else { i };
            }
            i += len;
        }
    }
}

#[test]
fn tampered_message_fails_mac_and_session_survives() {
    for v in VERSIONS {
        let (mut alice, mut bob) = talking_pair(v);
        let m = send(&mut alice, v, &bob_addr(), "intact");
        let mut bad = m.clone();
        let n = bad.keys[0].data.len();
        bad.keys[0].data[n - 20] ^= 1;
        assert!(bob.decrypt(v, "alice@example.org", &bad).is_err());
        let mut bad_payload = m.clone();
        bad_payload.payload.as_mut().unwrap()[0] ^= 1;
        assert!(matches!(
            bob.decrypt(v, "alice@example.org", &bad_payload),
            Err(Error::PayloadDecryption)
        ));
        // Nothing is written before the payload checks out: the genuine message still opens.
        assert_eq!(
            recv(&mut bob, v, "alice@example.org", &m).unwrap(),
            "intact"
        );
        let next = send(&mut alice, v, &bob_addr(), "next");
        assert_eq!(
            recv(&mut bob, v, "alice@example.org", &next).unwrap(),
            "next"
        );
    }
}

#[test]
fn mac_failure_is_bad_mac() {
    for v in VERSIONS {
        let (mut alice, mut bob) = talking_pair(v);
        let m = send(&mut alice, v, &bob_addr(), "x");
        let mut bad = m.clone();
        let n = bad.keys[0].data.len();
        // 0.3: the MAC is the last 8 bytes. 2: the MAC field (tag 1) comes first.
        let at = if v == Version::Omemo03 { n - 1 } else { 2 };
        bad.keys[0].data[at] ^= 1;
        assert!(matches!(
            bob.decrypt(v, "alice@example.org", &bad),
            Err(Error::BadMac)
        ));
        assert_eq!(recv(&mut bob, v, "alice@example.org", &m).unwrap(), "x");
    }
}

#[test]
fn changed_identity_for_known_device_is_rejected() {
    for v in VERSIONS {
        let (mut alice, _bob) = pair(v);
        let impostor = device(&bob_addr());
        assert!(matches!(
            alice.process_bundle(v, &bob_addr(), &impostor.bundle(v).unwrap()),
            Err(Error::IdentityChanged(_))
        ));
    }
}

#[test]
fn distrusted_device_is_left_out() {
    for v in VERSIONS {
        let (mut alice, _bob) = pair(v);
        alice.set_trust(v, &bob_addr(), Trust::Distrusted).unwrap();
        let out = alice.encrypt(v, Some(b"x"), &[bob_addr()]).unwrap();
        assert!(out.message.keys.is_empty());
        assert!(matches!(out.skipped[0].1, Error::Distrusted(_)));
        assert_eq!(
            alice
                .store()
                .identity(v, &bob_addr())
                .unwrap()
                .unwrap()
                .trust,
            Trust::Distrusted
        );
    }
}

#[test]
fn no_session_is_reported_per_device() {
    for v in VERSIONS {
        let mut alice = device(&alice_addr());
        let out = alice.encrypt(v, Some(b"x"), &[bob_addr()]).unwrap();
        assert!(matches!(out.skipped[0].1, Error::NoSession(_)));
        let (mut a2, _b) = pair(v);
        let m = send(&mut a2, v, &bob_addr(), "x");
        let mut plain = m.clone();
        plain.keys[0].key_exchange = false;
        assert!(matches!(
            device(&bob_addr()).decrypt(v, "alice@example.org", &plain),
            Err(Error::NoSession(_))
        ));
    }
}

#[test]
fn signed_prekey_rotation_keeps_previous_key_usable() {
    for v in VERSIONS {
        let mut alice = device(&alice_addr());
        let mut bob = device(&bob_addr());
        let old_bundle = bob.bundle(v).unwrap();
        bob.rotate_signed_prekey(v).unwrap();
        assert_ne!(
            bob.bundle(v).unwrap().signed_prekey_id,
            old_bundle.signed_prekey_id
        );
        alice.process_bundle(v, &bob_addr(), &old_bundle).unwrap();
        let m = send(&mut alice, v, &bob_addr(), "late");
        assert_eq!(recv(&mut bob, v, "alice@example.org", &m).unwrap(), "late");
    }
}
