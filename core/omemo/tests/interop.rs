//! Interop with python-omemo (oldmemo / twomemo), an independent implementation: the peer
//! script tests/peer/omemo_peer.py runs python-omemo's backends and is driven over JSON lines.
//! The interpreter comes from LINNET_OMEMO_PYTHON (see scripts/omemo-peer-env).

// Test helpers outside #[test] functions: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use linnet_omemo::sce::Envelope;
use linnet_omemo::{
    Bundle, DeviceAddress, EncryptedMessage, Error, MemoryStore, MessageKey, SessionManager,
    Version, PREKEY_COUNT,
};
use serde_json::{json, Value};

const RUST_JID: &str = "rust@example.org";
const RUST_DEVICE: u32 = 1001;
const PY_JID: &str = "python@example.org";
const PY_DEVICE: u32 = 2002;

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(version: Version) -> Self {
        let python = std::env::var("LINNET_OMEMO_PYTHON").unwrap_or_else(|_| {
            panic!(
                "LINNET_OMEMO_PYTHON is not set: it must name the Python interpreter of the \
                 python-omemo venv (run `scripts/omemo-peer-env`, which prints it)"
            )
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/omemo_peer.py");
        let mut child = Command::new(&python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} {script}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Self {
            child,
            stdin,
            stdout,
        };
        let v = match version {
            Version::Omemo03 => "0.3",
            Version::Omemo2 => "2",
        };
        peer.call(json!({"cmd": "init", "version": v, "jid": PY_JID, "device_id": PY_DEVICE}));
        peer
    }

    fn try_call(&mut self, req: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{req}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let reply: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad reply from peer ({e}): {line:?}"));
        if reply["ok"] == json!(true) {
            Ok(reply)
        } else {
            Err(reply["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    fn call(&mut self, req: Value) -> Value {
        let cmd = req["cmd"].clone();
        self.try_call(req)
            .unwrap_or_else(|e| panic!("peer failed {cmd}: {e}"))
    }

    fn bundle(&mut self) -> Bundle {
        let b = self.call(json!({"cmd": "bundle"}));
        Bundle {
            identity_key: unb64(&b["ik"]),
            signed_prekey_id: b["spk_id"].as_u64().unwrap() as u32,
            signed_prekey: unb64(&b["spk"]),
            signed_prekey_signature: unb64(&b["spks"]),
            prekeys: b["prekeys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as u32, unb64(&p[1])))
                .collect(),
        }
    }

    fn set_bundle(&mut self, bundle: &Bundle) {
        let prekeys: Vec<Value> = bundle
            .prekeys
            .iter()
            .map(|(id, k)| json!([id, B64.encode(k)]))
            .collect();
        self.call(json!({
            "cmd": "set_bundle", "jid": RUST_JID, "device_id": RUST_DEVICE,
            "bundle": {
                "ik": B64.encode(&bundle.identity_key),
                "spk_id": bundle.signed_prekey_id,
                "spk": B64.encode(&bundle.signed_prekey),
                "spks": B64.encode(&bundle.signed_prekey_signature),
                "prekeys": prekeys,
            }
        }));
    }

    /// Python encrypts `text` for our device; returns the message as we would parse it.
    fn encrypt(&mut self, text: &str) -> EncryptedMessage {
        let r = self.call(json!({
            "cmd": "encrypt", "jid": RUST_JID, "device_id": RUST_DEVICE, "text": text, "from": PY_JID
        }));
        EncryptedMessage {
            sender_device_id: PY_DEVICE,
            keys: vec![MessageKey {
                recipient: DeviceAddress::new(RUST_JID, RUST_DEVICE),
                key_exchange: r["kex"].as_bool().unwrap(),
                data: unb64(&r["key"]),
            }],
            iv: r.get("iv").map(unb64),
            payload: Some(unb64(&r["payload"])),
        }
    }

    /// Python decrypts our message; returns the body text (None for an empty message).
    fn decrypt(&mut self, message: &EncryptedMessage) -> Result<Option<String>, String> {
        let key = message
            .keys
            .iter()
            .find(|k| k.recipient.device_id == PY_DEVICE)
            .expect("message has a key for the python device");
        let r = self.try_call(json!({
            "cmd": "decrypt", "jid": RUST_JID, "device_id": RUST_DEVICE,
            "key": B64.encode(&key.data), "kex": key.key_exchange,
            "iv": message.iv.as_ref().map(|v| B64.encode(v)),
            "payload": message.payload.as_ref().map(|v| B64.encode(v)),
        }))?;
        if let Some(from) = r.get("from").and_then(Value::as_str) {
            assert_eq!(from, RUST_JID, "SCE <from/> as python read it");
        }
        Ok(r["text"].as_str().map(str::to_owned))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unb64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

fn python() -> DeviceAddress {
    DeviceAddress::new(PY_JID, PY_DEVICE)
}

fn rust_device() -> SessionManager<MemoryStore> {
    SessionManager::new(MemoryStore::new(), RUST_JID, RUST_DEVICE).unwrap()
}

/// Our side encrypts `text` for the python device (as the SCE envelope for OMEMO 2).
fn rust_encrypt(
    rust: &mut SessionManager<MemoryStore>,
    version: Version,
    text: &str,
) -> EncryptedMessage {
    let plaintext = match version {
        Version::Omemo03 => text.as_bytes().to_vec(),
        Version::Omemo2 => Envelope::with_body(text, RUST_JID)
            .to_bytes(&mut rand::thread_rng())
            .unwrap(),
    };
    let out = rust
        .encrypt(version, Some(&plaintext), &[python()])
        .unwrap();
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    out.message
}

/// Our side decrypts a message from python and returns its body.
fn rust_decrypt(
    rust: &mut SessionManager<MemoryStore>,
    version: Version,
    message: &EncryptedMessage,
) -> String {
    let d = rust.decrypt(version, PY_JID, message).unwrap();
    let payload = d.payload.expect("payload");
    match version {
        Version::Omemo03 => String::from_utf8(payload.to_vec()).unwrap(),
        Version::Omemo2 => {
            let env = Envelope::from_bytes(&payload).expect("python's SCE envelope parses");
            assert_eq!(env.from.as_deref(), Some(PY_JID));
            env.body().expect("body in envelope")
        }
    }
}

/// Python builds the session from our bundle and sends first; messages cross in both
/// directions, several of them out of order.
fn python_initiates(version: Version) {
    let mut rust = rust_device();
    let mut peer = Peer::start(version);
    let before: Vec<u32> = rust.store().prekey_ids_for(version);
    peer.set_bundle(&rust.bundle(version).unwrap());

    // Until we answer, every python message carries the key exchange.
    let p: Vec<EncryptedMessage> = (1..=4).map(|i| peer.encrypt(&format!("py {i}"))).collect();
    assert!(p.iter().all(|m| m.keys[0].key_exchange));
    let first = rust.decrypt(version, PY_JID, &p[0]).unwrap();
    assert!(first.new_session && first.bundle_changed);
    // Decrypting the first key exchange used one prekey, which was deleted and replaced.
    let after: Vec<u32> = rust.store().prekey_ids_for(version);
    assert_eq!(after.len(), PREKEY_COUNT);
    assert_eq!(before.iter().filter(|id| !after.contains(id)).count(), 1);
    // A second key exchange of the same session is not a new session and uses no prekey.
    assert_eq!(rust_decrypt(&mut rust, version, &p[2]), "py 3");
    assert_eq!(rust_decrypt(&mut rust, version, &p[1]), "py 2");
    assert_eq!(rust_decrypt(&mut rust, version, &p[3]), "py 4");
    assert_eq!(rust.store().prekey_ids_for(version), after);
    // The first key exchange again (a replay) is recognised as a duplicate.
    assert!(matches!(
        rust.decrypt(version, PY_JID, &p[0]),
        Err(Error::DuplicateMessage)
    ));

    exchange_rounds(&mut rust, &mut peer, version, false);
}

/// We build the session from python's bundle and send first.
fn rust_initiates(version: Version) {
    let mut rust = rust_device();
    let mut peer = Peer::start(version);
    rust.process_bundle(version, &python(), &peer.bundle())
        .unwrap();

    let r: Vec<EncryptedMessage> = (1..=3)
        .map(|i| rust_encrypt(&mut rust, version, &format!("rust {i}")))
        .collect();
    assert!(r.iter().all(|m| m.keys[0].key_exchange));
    assert_eq!(peer.decrypt(&r[0]).unwrap().as_deref(), Some("rust 1"));
    assert_eq!(peer.decrypt(&r[2]).unwrap().as_deref(), Some("rust 3"));
    assert_eq!(peer.decrypt(&r[1]).unwrap().as_deref(), Some("rust 2"));
    // Python deleted the prekey we used and made a new one.
    assert_eq!(
        peer.call(json!({"cmd": "prekey_count"}))["count"],
        json!(100)
    );

    exchange_rounds(&mut rust, &mut peer, version, true);
}

/// Several rounds each way after the session exists, with out-of-order delivery and an
/// empty (heartbeat) message. Once python has answered, our messages are plain ratchet messages.
fn exchange_rounds(
    rust: &mut SessionManager<MemoryStore>,
    peer: &mut Peer,
    version: Version,
    rust_was_initiator: bool,
) {
    for round in 0..3 {
        let p1 = peer.encrypt(&format!("py round {round} a"));
        let p2 = peer.encrypt(&format!("py round {round} b"));
        let p3 = peer.encrypt(&format!("py round {round} c"));
        if !rust_was_initiator {
            // We answered (or are about to), so python stops sending the key exchange after
            // it has read our first reply; in round 0 it has not yet.
            assert_eq!(p1.keys[0].key_exchange, round == 0);
        } else {
            assert!(!p1.keys[0].key_exchange);
        }
        assert_eq!(
            rust_decrypt(rust, version, &p3),
            format!("py round {round} c")
        );
        assert_eq!(
            rust_decrypt(rust, version, &p1),
            format!("py round {round} a")
        );
        assert_eq!(
            rust_decrypt(rust, version, &p2),
            format!("py round {round} b")
        );

        let r1 = rust_encrypt(rust, version, &format!("rust round {round} a"));
        let r2 = rust_encrypt(rust, version, &format!("rust round {round} b"));
        assert!(
            !r1.keys[0].key_exchange,
            "python answered: no more key exchange"
        );
        assert_eq!(
            peer.decrypt(&r2).unwrap(),
            Some(format!("rust round {round} b"))
        );
        assert_eq!(
            peer.decrypt(&r1).unwrap(),
            Some(format!("rust round {round} a"))
        );
        // A replay of an already-read message is refused by python too.
        assert!(peer.decrypt(&r1).is_err());

        let heartbeat = rust.encrypt(version, None, &[python()]).unwrap().message;
        assert!(heartbeat.payload.is_none());
        assert_eq!(peer.decrypt(&heartbeat).unwrap(), None);
    }
}

#[test]
fn omemo03_python_initiates() {
    python_initiates(Version::Omemo03);
}

#[test]
fn omemo03_rust_initiates() {
    rust_initiates(Version::Omemo03);
}

#[test]
fn omemo2_python_initiates() {
    python_initiates(Version::Omemo2);
}

#[test]
fn omemo2_rust_initiates() {
    rust_initiates(Version::Omemo2);
}

trait PreKeyIds {
    fn prekey_ids_for(&self, version: Version) -> Vec<u32>;
}

impl PreKeyIds for MemoryStore {
    fn prekey_ids_for(&self, version: Version) -> Vec<u32> {
        linnet_omemo::store::PreKeyStore::prekey_ids(self, version).unwrap()
    }
}
