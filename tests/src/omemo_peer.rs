//! An independent OMEMO client for interop tests: slixmpp with python-omemo
//! (tests/peers/omemo_xmpp_peer.py), driven line by line over stdin/stdout. Its Python is
//! the one `scripts/omemo-peer-env` prints, in `LINNET_OMEMO_PYTHON` (set by scripts/test).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::sync::mpsc;

use crate::{repo_root, socket_addr, var, Server, PASSWORD};

pub const NS_03: &str = "eu.siacs.conversations.axolotl";
pub const NS_2: &str = "urn:xmpp:omemo:2";

/// The Python of the OMEMO peers' venv.
pub fn python() -> String {
    std::env::var("LINNET_OMEMO_PYTHON").unwrap_or_else(|_| {
        panic!(
            "LINNET_OMEMO_PYTHON is not set: it must name the Python interpreter of the \
             OMEMO peers' venv (run `scripts/omemo-peer-env`, which prints it)"
        )
    })
}

pub struct PyPeer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    /// Lines read while waiting for others.
    backlog: Vec<String>,
    pub device_id: u32,
}

impl PyPeer {
    /// Registers `jid` and logs it in, speaking `versions` ("03", "2" or "03,2"), with its
    /// keys kept in `storage` (the same file again is the same device after a restart).
    pub async fn start(
        server: Server,
        jid: &str,
        versions: &str,
        storage: &std::path::Path,
    ) -> Self {
        Self::start_labelled(server, jid, versions, storage, None).await
    }

    /// [`PyPeer::start`], a new device taking `label` as its OMEMO 2 label.
    pub async fn start_labelled(
        server: Server,
        jid: &str,
        versions: &str,
        storage: &std::path::Path,
        label: Option<&str>,
    ) -> Self {
        let python = python();
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
            .args(label.map(|l| ["--label", l]).into_iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
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
        peer.device_id = ready[6..].parse().expect("READY <device id>");
        peer
    }

    /// Sends one command line (see the peer's docstring).
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("peer's stdin");
        self.stdin.flush().expect("peer's stdin");
    }

    /// The first line matching `pred`; other lines are kept for later calls, and an ERROR
    /// or UNDECRYPTABLE fails the test.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
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
                    !line.starts_with("ERROR")
                        && !line.starts_with("UNDECRYPTABLE")
                        && !line.starts_with("GUNDECRYPTABLE"),
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

    /// Sends `body` to `to` with OMEMO `version` ("03" or "2").
    pub async fn send(&mut self, to: &str, version: &str, body: &str) {
        self.command(&format!("SEND {to} {version} {}", B64.encode(body)));
        self.expect("SENT", |l| l.starts_with("SENT ")).await;
    }

    /// Waits for `body` from `from`, and returns the namespace it came in.
    pub async fn received(&mut self, from: &str, body: &str) -> String {
        let b64 = B64.encode(body);
        let line = self
            .expect(body, |l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() == 5 && f[0] == "RECV" && f[1] == from && f[4] == b64
            })
            .await;
        line.split(' ').nth(2).unwrap_or_default().to_owned()
    }

    /// The body of the next message from `from` in namespace `ns`.
    pub async fn received_from(&mut self, from: &str, ns: &str) -> String {
        let line = self
            .expect("a message", |l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() == 5 && f[0] == "RECV" && f[1] == from && f[2] == ns
            })
            .await;
        let b64 = line.rsplit(' ').next().unwrap_or_default();
        String::from_utf8(B64.decode(b64).expect("base64 body")).expect("UTF-8 body")
    }

    /// Joins the group `room` as `nick`.
    pub async fn join(&mut self, room: &str, nick: &str) {
        self.command(&format!("JOIN {room} {nick}"));
        self.expect("JOINED", |l| l == format!("JOINED {room}"))
            .await;
    }

    /// Sends `body` to the group `room`, encrypted with OMEMO `version` for `members`.
    pub async fn group_send(&mut self, room: &str, version: &str, body: &str, members: &[&str]) {
        self.group_send_naming(room, version, body, members, room)
            .await
    }

    /// As [`Self::group_send`], with `to` in OMEMO 2's `<to/>` affix instead of the room.
    pub async fn group_send_naming(
        &mut self,
        room: &str,
        version: &str,
        body: &str,
        members: &[&str],
        to: &str,
    ) {
        self.command(&format!(
            "GSEND {room} {version} {} {} {to}",
            B64.encode(body),
            members.join(",")
        ));
        self.expect("SENT", |l| l.starts_with("SENT ")).await;
    }

    /// Waits for `body` in the group `room` from the member `from` (a real bare JID), and
    /// returns the namespace it came in.
    pub async fn group_received(&mut self, room: &str, from: &str, body: &str) -> String {
        let b64 = B64.encode(body);
        let line = self
            .expect(body, |l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() == 6 && f[0] == "GRECV" && f[1] == room && f[2] == from && f[5] == b64
            })
            .await;
        line.split(' ').nth(3).unwrap_or_default().to_owned()
    }

    /// Waits until the peer sees `device` in `jid`'s device list of namespace `ns`.
    pub async fn wait_device(&mut self, jid: &str, ns: &str, device: u32) {
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

    /// `jid`'s devices with the labels the peer accepted (their signatures checked).
    pub async fn labels(&mut self, jid: &str) -> Vec<(u32, Option<String>)> {
        self.command(&format!("LABELS {jid}"));
        let line = self.expect("LABELS", |l| l.starts_with("LABELS ")).await;
        line.split(' ')
            .nth(2)
            .unwrap_or_default()
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (id, label) = e.split_once('=').expect("<id>=<label>");
                let label = (label != "-").then(|| {
                    String::from_utf8(B64.decode(label).expect("base64 label")).expect("UTF-8")
                });
                (id.parse().expect("device id"), label)
            })
            .collect()
    }

    pub async fn quit(mut self) {
        self.command("QUIT");
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
