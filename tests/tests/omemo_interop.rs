//! OMEMO interop over real XMPP with an independent client: slixmpp with python-omemo
//! (tests/peers/omemo_xmpp_peer.py, driven over stdin/stdout), on both servers, with a peer
//! speaking OMEMO 0.3, OMEMO 2, or both. Each test: the peer's first message (key exchange)
//! and follow-ups both ways; a restart of the peer; a second device of ours that starts a
//! session with the peer (our key exchange) and gets the peer's messages as well as the
//! carbons of ours.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use linnet_client::{Direction, Encryption};
use linnet_tests::*;
use tokio::sync::mpsc;

const NS_03: &str = "eu.siacs.conversations.axolotl";
const NS_2: &str = "urn:xmpp:omemo:2";

struct PyPeer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    /// Lines read while waiting for others.
    backlog: Vec<String>,
    device_id: u32,
}

impl PyPeer {
    async fn start(server: Server, jid: &str, versions: &str, storage: &std::path::Path) -> Self {
        let python = std::env::var("LINNET_OMEMO_PYTHON").unwrap_or_else(|_| {
            panic!(
                "LINNET_OMEMO_PYTHON is not set: it must name the Python interpreter of the \
                 OMEMO peers' venv (run `scripts/omemo-peer-env`, which prints it)"
            )
        });
        let script = repo_root().join("tests/peers/omemo_xmpp_peer.py");
        let addr = socket_addr(server);
        let mut child = Command::new(&python)
            .arg(&script)
            .args([
                "--jid",
                jid,
                "--password",
                PASSWORD,
                "--ca",
                &var("LINNET_CA"),
            ])
            .args([
                "--host",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ])
            .args(["--versions", versions, "--register", "--storage"])
            .arg(storage)
            .args(std::env::var_os("LINNET_PEER_DEBUG").map(|_| "--debug"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = PyPeer {
            child,
            stdin,
            lines,
            backlog: Vec::new(),
            device_id: 0,
        };
        let ready = peer.expect("READY", |l| l.starts_with("READY ")).await;
        peer.device_id = ready[6..].parse().unwrap();
        peer
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The first line matching `pred`; other lines are kept for later calls, and an ERROR
    /// or UNDECRYPTABLE fails the test.
    async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.backlog.iter().position(|l| pred(l)) {
            return self.backlog.remove(i);
        }
        let backlog = &mut self.backlog;
        let lines = &mut self.lines;
        let wait = async {
            loop {
                let line = lines
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("peer exited while waiting for {what}"));
                assert!(
                    !line.starts_with("ERROR"),
                    "peer: {line} (waiting for {what})"
                );
                assert!(
                    !line.starts_with("UNDECRYPTABLE"),
                    "peer: {line} (waiting for {what})"
                );
                if pred(&line) {
                    return line;
                }
                backlog.push(line);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for the peer: {what}"))
    }

    async fn send(&mut self, to: &str, version: &str, body: &str) {
        self.command(&format!("SEND {to} {version} {}", B64.encode(body)));
        self.expect("SENT", |l| l.starts_with("SENT ")).await;
    }

    /// Waits for `body` from `from`, and returns the namespace it came in.
    async fn received(&mut self, from: &str, body: &str) -> String {
        let b64 = B64.encode(body);
        let line = self
            .expect(body, |l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() == 5 && f[0] == "RECV" && f[1] == from && f[4] == b64
            })
            .await;
        line.split(' ').nth(2).unwrap().to_owned()
    }

    /// Waits until the peer sees `device` in `jid`'s device list of namespace `ns`.
    async fn wait_device(&mut self, jid: &str, ns: &str, device: u32) {
        let mut line = String::new();
        for _ in 0..100 {
            self.command(&format!("DEVICES {jid}"));
            line = self.expect("DEVICES", |l| l.starts_with("DEVICES ")).await;
            let listed = line.split(' ').skip(2).any(|group| {
                group.split_once('=').is_some_and(|(n, ids)| {
                    n == ns && ids.split(',').any(|i| i == device.to_string())
                })
            });
            if listed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the peer never saw device {device} in {ns}; last: {line}");
    }

    async fn quit(mut self) {
        self.command("QUIT");
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn wait_incoming(me: &TestClient, from: &str, body: &str, encryption: Encryption) {
    me.wait_conversation(from, body, |s| {
        s.messages.iter().any(|m| {
            m.body == body && m.encryption == encryption && m.direction == Direction::Incoming
        })
    })
    .await;
}

/// `versions`: what the peer speaks. Linnet speaks both and prefers OMEMO 2.
async fn interop(server: Server, versions: &str) {
    let (peer_ns, ours) = match versions {
        "03" => (NS_03, Encryption::Omemo03),
        _ => (NS_2, Encryption::Omemo2),
    };
    let storage = tempfile::tempdir().unwrap();
    let store_file = storage.path().join("peer.json");
    let me = TestClient::register(server, "linnet").await;
    let my_dev = me.client.own_omemo_device(me.account).unwrap();
    let peer_jid = fresh_jid(server, &format!("py{versions}"));
    let mut peer = PyPeer::start(server, &peer_jid, versions, &store_file).await;
    peer.wait_device(&me.jid, peer_ns, my_dev).await;

    // The peer's key exchange, then follow-ups both ways.
    peer.send(&me.jid, "auto", "Grüße from python 🐍").await;
    wait_incoming(&me, &peer_jid, "Grüße from python 🐍", ours).await;
    me.client
        .send_message(me.account, &peer_jid, "hello python, ü")
        .unwrap();
    assert_eq!(peer.received(&me.jid, "hello python, ü").await, peer_ns);
    for i in 0..3 {
        peer.send(&me.jid, "auto", &format!("py follow-up {i}"))
            .await;
        me.client
            .send_message(me.account, &peer_jid, &format!("linnet follow-up {i}"))
            .unwrap();
    }
    for i in 0..3 {
        wait_incoming(&me, &peer_jid, &format!("py follow-up {i}"), ours).await;
        assert_eq!(
            peer.received(&me.jid, &format!("linnet follow-up {i}"))
                .await,
            peer_ns
        );
    }
    if versions == "both" {
        // The peer may choose OMEMO 0.3 for a message: we read that too.
        peer.send(&me.jid, "03", "by the old version").await;
        wait_incoming(&me, &peer_jid, "by the old version", Encryption::Omemo03).await;
    }

    // The peer restarts (same device, sessions from its storage).
    peer.quit().await;
    let mut peer = PyPeer::start(server, &peer_jid, versions, &store_file).await;
    peer.send(&me.jid, "auto", "back again").await;
    wait_incoming(&me, &peer_jid, "back again", ours).await;
    me.client
        .send_message(me.account, &peer_jid, "welcome back")
        .unwrap();
    assert_eq!(peer.received(&me.jid, "welcome back").await, peer_ns);

    // A second device of ours starts its own session with the peer (our key exchange);
    // the peer's next message reaches both our devices, and ours reach our other device.
    let me2 = me.another_device(server).await;
    let my_dev2 = me2.client.own_omemo_device(me2.account).unwrap();
    peer.wait_device(&me.jid, peer_ns, my_dev2).await;
    let sent = me2
        .client
        .send_message(me2.account, &peer_jid, "from our second device")
        .unwrap();
    assert_eq!(
        peer.received(&me.jid, "from our second device").await,
        peer_ns
    );
    me2.wait_conversation(&peer_jid, "our message recorded as it went", |s| {
        s.messages
            .iter()
            .any(|m| m.id == sent && m.encryption == ours)
    })
    .await;
    peer.send(&me.jid, "auto", "to all your devices").await;
    for dev in [&me, &me2] {
        wait_incoming(dev, &peer_jid, "to all your devices", ours).await;
    }
    me.client
        .send_message(me.account, &peer_jid, "copy for device two")
        .unwrap();
    assert_eq!(peer.received(&me.jid, "copy for device two").await, peer_ns);
    me2.wait_conversation(&peer_jid, "the carbon of our message", |s| {
        s.messages.iter().any(|m| {
            // Our own devices speak OMEMO 2 to each other, whatever the contact speaks.
            m.body == "copy for device two"
                && m.direction == Direction::Outgoing
                && m.encryption == Encryption::Omemo2
        })
    })
    .await;
    peer.quit().await;
}

async fn peer_speaks_omemo_03(server: Server) {
    interop(server, "03").await;
}

async fn peer_speaks_omemo_2(server: Server) {
    interop(server, "2").await;
}

async fn peer_speaks_both_versions(server: Server) {
    interop(server, "both").await;
}

both_servers!(
    peer_speaks_omemo_03,
    peer_speaks_omemo_2,
    peer_speaks_both_versions
);
