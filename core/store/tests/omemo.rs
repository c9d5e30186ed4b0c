//! OMEMO state on the database: the same behaviour tests run against linnet_omemo's
//! `MemoryStore` and against `OmemoStore` (SQLCipher), for both OMEMO versions. Between
//! two operations a device's manager is dropped and built again from its store, as after a
//! restart; `reopen` also closes and reopens the database file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::Fixture;
use linnet_omemo::store::{
    IdentityKeyStore, IdentityRecord, IdentityStore, PreKeyStore, SessionStore, SignedPreKeyStore,
};
use linnet_omemo::{
    Bundle, DeviceAddress, EncryptedMessage, Error, MemoryStore, SessionManager,
    Store as OmemoTraits, Trust, Version, PREKEY_COUNT,
};
use linnet_store::{AccountId, OmemoStore, Store};

const VERSIONS: [Version; 2] = [Version::Omemo03, Version::Omemo2];
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";
const DB_KEY: u8 = 0x5a;

fn alice_addr() -> DeviceAddress {
    DeviceAddress::new(ALICE, 1)
}
fn bob_addr() -> DeviceAddress {
    DeviceAddress::new(BOB, 2)
}

/// Where one device's OMEMO state lives.
trait Backend {
    type S<'a>: OmemoTraits;
    /// Runs `f` on a manager freshly opened on the device's state.
    fn with<T>(&mut self, f: impl for<'a> FnOnce(&mut SessionManager<Self::S<'a>>) -> T) -> T;
    /// Closes the state and opens it again (the database file; memory stays as it is).
    fn reopen(&mut self);
}

struct Memory {
    store: Option<MemoryStore>,
    jid: &'static str,
    device: u32,
}

fn memory(jid: &'static str, device: u32) -> Memory {
    Memory {
        store: Some(MemoryStore::new()),
        jid,
        device,
    }
}

impl Backend for Memory {
    type S<'a> = MemoryStore;
    fn with<T>(&mut self, f: impl for<'a> FnOnce(&mut SessionManager<Self::S<'a>>) -> T) -> T {
        let store = self.store.take().unwrap();
        let mut manager = SessionManager::new(store, self.jid, self.device).unwrap();
        let out = f(&mut manager);
        self.store = Some(manager.into_store());
        out
    }
    fn reopen(&mut self) {}
}

struct Sql {
    fx: Fixture,
    store: Option<Store>,
    account: AccountId,
    jid: &'static str,
    device: u32,
}

fn sql(jid: &'static str, device: u32) -> Sql {
    let fx = Fixture::new();
    let store = fx.open(DB_KEY);
    let account = store.add_account(jid, "password").unwrap();
    Sql {
        fx,
        store: Some(store),
        account,
        jid,
        device,
    }
}

impl Backend for Sql {
    type S<'a> = OmemoStore<'a>;
    /// One transaction per call, committed even when the operation inside failed: a
    /// failed operation must have undone its own writes (its savepoint), which is what
    /// the tests check.
    fn with<T>(&mut self, f: impl for<'a> FnOnce(&mut SessionManager<Self::S<'a>>) -> T) -> T {
        let (jid, device) = (self.jid, self.device);
        self.store
            .as_mut()
            .unwrap()
            .omemo_transaction(self.account, |s| {
                let mut manager = SessionManager::new(s, jid, device)?;
                Ok(f(&mut manager))
            })
            .unwrap()
    }
    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(self.fx.open(DB_KEY));
    }
}

fn send<S: OmemoTraits>(
    m: &mut SessionManager<S>,
    v: Version,
    to: &DeviceAddress,
    text: &str,
) -> EncryptedMessage {
    let out = m
        .encrypt(v, Some(text.as_bytes()), std::slice::from_ref(to))
        .unwrap();
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    out.message
}

fn recv<S: OmemoTraits>(
    m: &mut SessionManager<S>,
    v: Version,
    from: &str,
    msg: &EncryptedMessage,
) -> String {
    let d = m.decrypt(v, from, msg).unwrap();
    String::from_utf8(d.payload.unwrap().to_vec()).unwrap()
}

/// Everything a decrypt may write for one peer device.
#[derive(Debug, PartialEq)]
struct Snapshot {
    session: Option<Vec<u8>>,
    identity: Option<IdentityRecord>,
    prekeys: Vec<u32>,
    next_prekey: u32,
    signed: Vec<u32>,
    current_signed: Option<u32>,
}

fn snapshot<S: OmemoTraits>(m: &SessionManager<S>, v: Version, peer: &DeviceAddress) -> Snapshot {
    let s = m.store();
    Snapshot {
        session: s.session(v, peer).unwrap(),
        identity: s.identity(v, peer).unwrap(),
        prekeys: s.prekey_ids(v).unwrap(),
        next_prekey: s.next_prekey_id(v).unwrap(),
        signed: s.signed_prekey_ids(v).unwrap(),
        current_signed: s.current_signed_prekey_id(v).unwrap(),
    }
}

fn tamper_payload(msg: &EncryptedMessage) -> EncryptedMessage {
    let mut bad = msg.clone();
    bad.payload.as_mut().unwrap()[0] ^= 1;
    bad
}

/// Alice has Bob's bundle and a session; nothing sent yet.
fn introduce<B: Backend>(alice: &mut B, bob: &mut B, v: Version) -> Bundle {
    let bundle = bob.with(|m| m.bundle(v).unwrap());
    alice.with(|m| m.process_bundle(v, &bob_addr(), &bundle).unwrap());
    bundle
}

fn session_survives_reopen<B: Backend>(new: fn(&'static str, u32) -> B) {
    for v in VERSIONS {
        let (mut alice, mut bob) = (new(ALICE, 1), new(BOB, 2));
        introduce(&mut alice, &mut bob, v);
        let first = alice.with(|m| send(m, v, &bob_addr(), "first"));
        assert_eq!(bob.with(|m| recv(m, v, ALICE, &first)), "first");
        let bob_identity = bob.with(|m| m.own_identity_key(v));

        alice.reopen();
        bob.reopen();
        assert_eq!(bob.with(|m| m.own_identity_key(v)), bob_identity);
        // Alice has not heard back, so she still sends the key exchange; Bob knows it.
        let second = alice.with(|m| send(m, v, &bob_addr(), "second"));
        assert!(second.keys[0].key_exchange);
        assert_eq!(bob.with(|m| recv(m, v, ALICE, &second)), "second");
        let reply = bob.with(|m| send(m, v, &alice_addr(), "reply"));

        alice.reopen();
        bob.reopen();
        assert_eq!(alice.with(|m| recv(m, v, BOB, &reply)), "reply");
        let third = alice.with(|m| send(m, v, &bob_addr(), "third"));
        assert!(
            !third.keys[0].key_exchange,
            "the answer ended the key exchange"
        );
        bob.reopen();
        assert_eq!(bob.with(|m| recv(m, v, ALICE, &third)), "third");
        bob.reopen();
        assert!(matches!(
            bob.with(|m| m.decrypt(v, ALICE, &third)),
            Err(Error::DuplicateMessage)
        ));
    }
}

fn prekey_consumption_and_replenishment_persist<B: Backend>(new: fn(&'static str, u32) -> B) {
    for v in VERSIONS {
        let (mut alice, mut bob) = (new(ALICE, 1), new(BOB, 2));
        let before = bob.with(|m| m.store().prekey_ids(v).unwrap());
        assert_eq!(before.len(), PREKEY_COUNT);
        let bundle = bob.with(|m| m.bundle(v).unwrap());
        bob.reopen();
        assert_eq!(
            bob.with(|m| m.bundle(v).unwrap()),
            bundle,
            "reopening generates nothing new"
        );

        introduce(&mut alice, &mut bob, v);
        let hello = alice.with(|m| send(m, v, &bob_addr(), "hello"));
        let d = bob.with(|m| m.decrypt(v, ALICE, &hello).unwrap());
        assert!(d.bundle_changed && d.new_session);

        bob.reopen();
        let after = bob.with(|m| m.store().prekey_ids(v).unwrap());
        assert_eq!(after.len(), PREKEY_COUNT, "the used prekey was replaced");
        let used: Vec<u32> = before
            .iter()
            .copied()
            .filter(|id| !after.contains(id))
            .collect();
        let added: Vec<u32> = after
            .iter()
            .copied()
            .filter(|id| !before.contains(id))
            .collect();
        let last = *before.iter().max().unwrap();
        assert_eq!(used.len(), 1);
        assert_eq!(added, vec![last + 1], "ids are never reused");
        assert_eq!(bob.with(|m| m.store().next_prekey_id(v).unwrap()), last + 2);
        let republished = bob.with(|m| m.bundle(v).unwrap());
        assert!(republished.prekeys.iter().all(|(id, _)| *id != used[0]));

        // Another device holding the old bundle picks the used prekey: refused, for good.
        let mut carol = new(CAROL, 3);
        let stale = Bundle {
            prekeys: bundle
                .prekeys
                .iter()
                .filter(|(id, _)| *id == used[0])
                .cloned()
                .collect(),
            ..bundle.clone()
        };
        carol.with(|m| m.process_bundle(v, &bob_addr(), &stale).unwrap());
        let late = carol.with(|m| send(m, v, &bob_addr(), "late"));
        let before_late = bob.with(|m| snapshot(m, v, &DeviceAddress::new(CAROL, 3)));
        assert!(matches!(
            bob.with(|m| m.decrypt(v, CAROL, &late)),
            Err(Error::UnknownPreKey(id)) if id == used[0]
        ));
        bob.reopen();
        assert_eq!(
            bob.with(|m| snapshot(m, v, &DeviceAddress::new(CAROL, 3))),
            before_late
        );
    }
}

fn failed_decrypt_changes_nothing<B: Backend>(new: fn(&'static str, u32) -> B) {
    for v in VERSIONS {
        let (mut alice, mut bob) = (new(ALICE, 1), new(BOB, 2));
        introduce(&mut alice, &mut bob, v);
        let kex = alice.with(|m| send(m, v, &bob_addr(), "kex"));

        // A key exchange whose ratchet message authenticates but whose payload does not:
        // no session, no identity, no prekey consumed or replaced.
        let before = bob.with(|m| snapshot(m, v, &alice_addr()));
        assert!(before.session.is_none());
        assert!(matches!(
            bob.with(|m| m.decrypt(v, ALICE, &tamper_payload(&kex))),
            Err(Error::PayloadDecryption)
        ));
        bob.reopen();
        assert_eq!(bob.with(|m| snapshot(m, v, &alice_addr())), before);
        assert_eq!(bob.with(|m| recv(m, v, ALICE, &kex)), "kex");

        let reply = bob.with(|m| send(m, v, &alice_addr(), "reply"));
        assert_eq!(alice.with(|m| recv(m, v, BOB, &reply)), "reply");
        let normal = alice.with(|m| send(m, v, &bob_addr(), "normal"));
        assert!(!normal.keys[0].key_exchange);

        // The same for a message in an established session, and for a forged one.
        let before = bob.with(|m| snapshot(m, v, &alice_addr()));
        assert!(matches!(
            bob.with(|m| m.decrypt(v, ALICE, &tamper_payload(&normal))),
            Err(Error::PayloadDecryption)
        ));
        let mut forged = normal.clone();
        let n = forged.keys[0].data.len();
        forged.keys[0].data[n - 20] ^= 1;
        assert!(bob.with(|m| m.decrypt(v, ALICE, &forged)).is_err());
        bob.reopen();
        assert_eq!(bob.with(|m| snapshot(m, v, &alice_addr())), before);
        // Nothing was consumed: the genuine message still decrypts.
        assert_eq!(bob.with(|m| recv(m, v, ALICE, &normal)), "normal");
    }
}

fn signed_prekey_rotation_persists<B: Backend>(new: fn(&'static str, u32) -> B) {
    for v in VERSIONS {
        let (mut alice, mut bob) = (new(ALICE, 1), new(BOB, 2));
        let old = bob.with(|m| m.bundle(v).unwrap());
        assert_eq!(old.signed_prekey_id, 1);
        bob.with(|m| m.rotate_signed_prekey(v).unwrap());
        bob.reopen();
        assert_eq!(
            bob.with(|m| m.store().signed_prekey_ids(v).unwrap()),
            vec![1, 2]
        );
        assert_eq!(bob.with(|m| m.bundle(v).unwrap().signed_prekey_id), 2);

        // A key exchange made against the previous signed prekey still succeeds.
        alice.with(|m| m.process_bundle(v, &bob_addr(), &old).unwrap());
        let hi = alice.with(|m| send(m, v, &bob_addr(), "hi"));
        assert_eq!(bob.with(|m| recv(m, v, ALICE, &hi)), "hi");

        bob.with(|m| m.rotate_signed_prekey(v).unwrap());
        bob.reopen();
        assert_eq!(
            bob.with(|m| m.store().signed_prekey_ids(v).unwrap()),
            vec![2, 3]
        );
        assert_eq!(
            bob.with(|m| m.store().current_signed_prekey_id(v).unwrap()),
            Some(3)
        );
    }
}

fn trust_persists<B: Backend>(new: fn(&'static str, u32) -> B) {
    for v in VERSIONS {
        let (mut alice, mut bob) = (new(ALICE, 1), new(BOB, 2));
        introduce(&mut alice, &mut bob, v);
        let bob_key = bob.with(|m| m.own_identity_key(v));
        alice.reopen();
        let record = alice.with(|m| m.store().identity(v, &bob_addr()).unwrap().unwrap());
        assert_eq!(
            record,
            IdentityRecord {
                key: bob_key,
                trust: Trust::Undecided
            }
        );

        alice.with(|m| m.set_trust(v, &bob_addr(), Trust::Verified).unwrap());
        alice.reopen();
        let trust = alice.with(|m| m.store().identity(v, &bob_addr()).unwrap().unwrap().trust);
        assert_eq!(trust, Trust::Verified);

        alice.with(|m| m.set_trust(v, &bob_addr(), Trust::Distrusted).unwrap());
        alice.reopen();
        let out = alice.with(|m| m.encrypt(v, Some(b"no"), &[bob_addr()]).unwrap());
        assert!(out.message.keys.is_empty());
        assert!(matches!(out.skipped[..], [(_, Error::Distrusted(_))]));
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $( #[test] fn $name() { super::$name(super::memory) } )*
        }
        mod sql_store {
            $( #[test] fn $name() { super::$name(super::sql) } )*
        }
    };
}

conformance!(
    session_survives_reopen,
    prekey_consumption_and_replenishment_persist,
    failed_decrypt_changes_nothing,
    signed_prekey_rotation_persists,
    trust_persists,
);

// The SQL store alone.

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if contains(&std::fs::read(&path).unwrap(), needle) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

/// Runs `f` on one account's manager, in one transaction.
fn on_account(
    store: &mut Store,
    account: AccountId,
    jid: &'static str,
    device: u32,
    f: impl FnOnce(&mut SessionManager<OmemoStore<'_>>),
) {
    store
        .omemo_transaction(account, |s| {
            f(&mut SessionManager::new(s, jid, device)?);
            Ok(())
        })
        .unwrap();
}

#[test]
fn two_accounts_in_one_database_talk_across_reopening() {
    let fx = Fixture::new();
    let mut store = fx.open(DB_KEY);
    let a = store.add_account(ALICE, "pw").unwrap();
    let b = store.add_account(BOB, "pw").unwrap();
    let v = Version::Omemo2;
    let mut bundle = None;
    on_account(&mut store, b, BOB, 2, |m| {
        bundle = Some(m.bundle(v).unwrap())
    });
    let mut msg = None;
    on_account(&mut store, a, ALICE, 1, |m| {
        m.process_bundle(v, &bob_addr(), bundle.as_ref().unwrap())
            .unwrap();
        msg = Some(send(m, v, &bob_addr(), "one"));
    });
    drop(store);
    let mut store = fx.open(DB_KEY);
    on_account(&mut store, b, BOB, 2, |m| {
        assert_eq!(recv(m, v, ALICE, msg.as_ref().unwrap()), "one");
        // Each account has its own identity.
        assert_ne!(
            m.own_identity_key(v),
            m.store().identity(v, &alice_addr()).unwrap().unwrap().key
        );
        msg = Some(send(m, v, &alice_addr(), "two"));
    });
    on_account(&mut store, a, ALICE, 1, |m| {
        assert_eq!(recv(m, v, BOB, msg.as_ref().unwrap()), "two");
    });
}

#[test]
fn the_file_holds_no_key_jid_or_session_in_clear() {
    let (mut alice, mut bob) = (sql(ALICE, 1), sql(BOB, 2));
    let v = Version::Omemo03;
    introduce(&mut alice, &mut bob, v);
    let peer = "quite.distinctive.peer@example.org";
    let msg = alice.with(|m| send(m, v, &bob_addr(), "x"));
    bob.with(|m| m.decrypt(v, ALICE, &msg).unwrap());
    let (seed, session) = bob.with(|m| {
        let seed = m
            .store()
            .identity_key_pair()
            .unwrap()
            .unwrap()
            .seed()
            .to_vec();
        let session = m.store().session(v, &alice_addr()).unwrap().unwrap();
        (seed, session)
    });
    // A JID that appears nowhere but in one identity record.
    bob.store
        .as_mut()
        .unwrap()
        .omemo_transaction(bob.account, |mut s| {
            s.save_identity(
                v,
                &DeviceAddress::new(peer, 9),
                &IdentityRecord {
                    key: [7; 32],
                    trust: Trust::BlindlyTrusted,
                },
            )
        })
        .unwrap();
    // Close, so everything is on disk (the WAL included until checkpointed).
    bob.store = None;
    let dir = bob.fx.dir.path();
    assert!(files_containing(dir, peer.as_bytes()).is_empty());
    assert!(files_containing(dir, ALICE.as_bytes()).is_empty());
    assert!(files_containing(dir, &seed).is_empty());
    assert!(files_containing(dir, &session[..32]).is_empty());
    bob.reopen();
    let trust = bob.with(|m| {
        m.store()
            .identity(v, &DeviceAddress::new(peer, 9))
            .unwrap()
            .unwrap()
            .trust
    });
    assert_eq!(trust, Trust::BlindlyTrusted);
}

#[test]
fn a_failed_decrypt_inside_the_callers_transaction_keeps_the_callers_writes() {
    let (mut alice, mut bob) = (sql(ALICE, 1), sql(BOB, 2));
    let v = Version::Omemo2;
    introduce(&mut alice, &mut bob, v);
    let kex = alice.with(|m| send(m, v, &bob_addr(), "kex"));
    let before = bob.with(|m| snapshot(m, v, &alice_addr()));

    let account = bob.account;
    bob.store
        .as_mut()
        .unwrap()
        .transaction(|tx| {
            tx.kv_set(Some(account), "cursor", "42")?;
            let mut m = SessionManager::new(OmemoStore::new(tx, account), BOB, 2).unwrap();
            assert!(m.decrypt(v, ALICE, &tamper_payload(&kex)).is_err());
            tx.kv_set(Some(account), "after", "yes")?;
            Ok(())
        })
        .unwrap();
    bob.reopen();
    let store = bob.store.as_ref().unwrap();
    assert_eq!(
        store.kv_get(Some(account), "cursor").unwrap().as_deref(),
        Some("42")
    );
    assert_eq!(
        store.kv_get(Some(account), "after").unwrap().as_deref(),
        Some("yes")
    );
    assert_eq!(bob.with(|m| snapshot(m, v, &alice_addr())), before);
    assert_eq!(bob.with(|m| recv(m, v, ALICE, &kex)), "kex");
}
