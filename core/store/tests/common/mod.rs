#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use linnet_store::{ConversationId, DbKey, DeliveryState, Direction, NewMessage, Store};
use tempfile::TempDir;

pub fn key(byte: u8) -> DbKey {
    DbKey::from_bytes([byte; 32])
}

pub struct Fixture {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linnet.db");
        Fixture { dir, path }
    }

    pub fn open(&self, k: u8) -> Store {
        Store::open(&self.path, &key(k)).unwrap()
    }
}

/// Message timestamps in the future of any conversation's creation time, so ordering
/// by activity follows the messages, not the creation.
pub fn base_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now + 3_600_000
}

pub fn incoming(conversation: ConversationId, body: &str, ts: i64) -> NewMessage {
    NewMessage {
        conversation,
        direction: Direction::Incoming,
        sender: "peer@example.org".into(),
        body: body.into(),
        origin_id: None,
        stanza_id: None,
        stanza_id_by: None,
        timestamp_ms: ts,
        delivery_state: DeliveryState::Delivered,
        encryption: Default::default(),
        error: None,
        kind: Default::default(),
        target: None,
        reply_to: None,
        markable: false,
        replaces: None,
    }
}

pub fn outgoing(conversation: ConversationId, body: &str, ts: i64) -> NewMessage {
    NewMessage {
        direction: Direction::Outgoing,
        sender: "me@example.org".into(),
        delivery_state: DeliveryState::Pending,
        ..incoming(conversation, body, ts)
    }
}
