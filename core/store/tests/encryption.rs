//! Keying, encryption at rest, rekeying and schema versioning, on real files.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{base_ms, incoming, key, Fixture};
use linnet_store::{DbKey, Store, StoreError, LATEST_VERSION};

const BODY: &str = "Zebra-quokka meeting at the lighthouse 4711";
const JID: &str = "distinctive.person@linnet-test.example";
const PEER: &str = "unusual.peer@linnet-test.example";
const PASSWORD: &str = "hunter2-correct-horse-battery";

fn fill(store: &Store) {
    let account = store.add_account(JID, PASSWORD).unwrap();
    let conv = store.conversation(account, PEER, true).unwrap().unwrap();
    store
        .insert_message(&incoming(conv, BODY, base_ms()))
        .unwrap();
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every file SQLCipher keeps next to the database (main file, -wal, -shm), read raw.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if contains(&bytes, needle) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn wrong_key_is_refused_and_data_survives() {
    let fx = Fixture::new();
    fill(&fx.open(1));

    match Store::open(&fx.path, &key(2)) {
        Err(StoreError::WrongKey) => {}
        other => panic!("expected WrongKey, got {other:?}"),
    }
    assert_eq!(
        StoreError::WrongKey.to_string(),
        "database key is wrong or the file is not a Linnet database"
    );

    let store = fx.open(1);
    let account = store.account_by_jid(JID).unwrap().unwrap();
    assert_eq!(account.password.as_str(), PASSWORD);
    let conv = store
        .conversation(account.id, PEER, false)
        .unwrap()
        .unwrap();
    let page = store.messages(conv, None, 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].body, BODY);
}

#[test]
fn plaintext_sqlite_file_is_not_a_linnet_database() {
    let fx = Fixture::new();
    {
        let plain = rusqlite::Connection::open(&fx.path).unwrap();
        plain
            .execute_batch("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('hello');")
            .unwrap();
    }
    assert!(matches!(
        Store::open(&fx.path, &key(1)),
        Err(StoreError::WrongKey)
    ));
}

#[test]
fn no_plaintext_on_disk() {
    let fx = Fixture::new();
    let store = fx.open(1);
    fill(&store);

    // While open and before any checkpoint, the data sits in the WAL.
    assert!(
        file_len(&fx.path.with_extension("db-wal")) > 0,
        "expected a WAL file"
    );
    for needle in [BODY, JID, PEER, PASSWORD] {
        assert_eq!(
            files_containing(fx.dir.path(), needle),
            Vec::<String>::new()
        );
    }

    store.checkpoint().unwrap();
    drop(store);
    assert!(file_len(&fx.path) > 0);
    for needle in [BODY, JID, PEER, PASSWORD] {
        assert_eq!(
            files_containing(fx.dir.path(), needle),
            Vec::<String>::new()
        );
    }

    // The search itself works: the same data written without a key is found.
    let plain_dir = tempfile::tempdir().unwrap();
    {
        let plain = rusqlite::Connection::open(plain_dir.path().join("plain.db")).unwrap();
        plain.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
        plain.execute("INSERT INTO t VALUES (?1)", [BODY]).unwrap();
    }
    assert_eq!(files_containing(plain_dir.path(), BODY).len(), 1);
}

#[test]
fn rekey_switches_keys() {
    let fx = Fixture::new();
    let mut store = fx.open(1);
    fill(&store);
    store.rekey(&key(9)).unwrap();
    // Still usable on the same connection.
    assert_eq!(store.accounts().unwrap().len(), 1);
    drop(store);

    assert!(matches!(
        Store::open(&fx.path, &key(1)),
        Err(StoreError::WrongKey)
    ));
    let store = fx.open(9);
    let accounts = store.accounts().unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].jid, JID);
    drop(store);
    for needle in [BODY, JID] {
        assert_eq!(
            files_containing(fx.dir.path(), needle),
            Vec::<String>::new()
        );
    }
}

#[test]
fn rekey_twice() {
    let fx = Fixture::new();
    let mut store = fx.open(1);
    fill(&store);
    store.rekey(&key(2)).unwrap();
    store.rekey(&key(3)).unwrap();
    drop(store);
    assert!(matches!(
        Store::open(&fx.path, &key(2)),
        Err(StoreError::WrongKey)
    ));
    assert_eq!(fx.open(3).accounts().unwrap().len(), 1);
}

#[test]
fn fresh_database_has_latest_schema_and_reopening_keeps_it() {
    let fx = Fixture::new();
    let store = fx.open(1);
    const { assert!(LATEST_VERSION >= 1) };
    assert_eq!(store.schema_version().unwrap(), LATEST_VERSION);
    fill(&store);
    drop(store);

    // v1 uses plain CREATE TABLE: rerunning it would fail, and data would be lost if the
    // schema were recreated.
    let store = fx.open(1);
    assert_eq!(store.schema_version().unwrap(), LATEST_VERSION);
    assert_eq!(store.accounts().unwrap().len(), 1);
}

fn set_user_version(path: &Path, k: &DbKey, version: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\"", k.to_hex().as_str()))
        .unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

#[test]
fn database_from_the_future_is_refused() {
    let fx = Fixture::new();
    fill(&fx.open(1));
    set_user_version(&fx.path, &key(1), LATEST_VERSION + 1);

    match Store::open(&fx.path, &key(1)) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!(found, LATEST_VERSION + 1);
            assert_eq!(supported, LATEST_VERSION);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    // Refusing did not touch the file.
    set_user_version(&fx.path, &key(1), LATEST_VERSION);
    assert_eq!(fx.open(1).accounts().unwrap().len(), 1);
}

#[test]
fn in_memory_store_works() {
    let store = Store::open_in_memory(&key(4)).unwrap();
    assert_eq!(store.schema_version().unwrap(), LATEST_VERSION);
    fill(&store);
    assert_eq!(store.conversations().unwrap().len(), 1);
}

#[test]
fn generated_key_opens_and_hex_round_trips() {
    let fx = Fixture::new();
    let k = DbKey::generate().unwrap();
    fill(&Store::open(&fx.path, &k).unwrap());
    let again = DbKey::from_hex(&k.to_hex()).unwrap();
    assert_eq!(
        Store::open(&fx.path, &again)
            .unwrap()
            .accounts()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn store_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
}
