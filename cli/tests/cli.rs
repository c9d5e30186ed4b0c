//! The `linnet` binary as scripts use it: JSON on stdout, stable exit codes.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

use linnet_tests::*;
use serde_json::{json, Value};

fn linnet(dir: &Path, key: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linnet"));
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--key-file")
        .arg(key)
        .arg("--ca")
        .arg(var("LINNET_CA"))
        .arg("--only-ca")
        .args(args)
        .env_remove("LINNET_PASSWORD")
        .env_remove("LINNET_DB_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn linnet");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("linnet output")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn keyfile(dir: &Path, name: &str) -> std::path::PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_linnet"))
        .arg("keygen")
        .output()
        .expect("keygen");
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.trim().len(), 64);
    let path = dir.join(name);
    std::fs::write(&path, key).unwrap();
    path
}

/// Two accounts registered on Prosody through the CLI, each with a data directory and key
/// of its own, made mutual contacts.
struct Pair {
    a: String,
    b: String,
    a_dir: std::path::PathBuf,
    b_dir: std::path::PathBuf,
    a_key: std::path::PathBuf,
    b_key: std::path::PathBuf,
}

fn contacts_on_prosody(tmp: &Path, tag: &str) -> Pair {
    let server = Server::Prosody;
    let host = format!("{}:{}", var("PROSODY_HOST"), var("PROSODY_PORT"));
    let p = Pair {
        a: fresh_jid(server, &format!("{tag}a")),
        b: fresh_jid(server, &format!("{tag}b")),
        a_dir: tmp.join("a"),
        b_dir: tmp.join("b"),
        a_key: keyfile(tmp, "akey"),
        b_key: keyfile(tmp, "bkey"),
    };
    for (dir, key, jid) in [(&p.a_dir, &p.a_key, &p.a), (&p.b_dir, &p.b_key, &p.b)] {
        let out = linnet(
            dir,
            key,
            &["register", jid, "--server", &host],
            Some("pass word\n"),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let out = linnet(&p.a_dir, &p.a_key, &["roster", "add", &p.b], None);
    assert!(out.status.success(), "{out:?}");
    let out = linnet(&p.b_dir, &p.b_key, &["roster", "approve", &p.a], None);
    assert!(out.status.success(), "{out:?}");
    p
}

#[test]
fn register_roster_send_history_and_exit_codes() {
    let server = Server::Prosody;
    let host = format!("{}:{}", var("PROSODY_HOST"), var("PROSODY_PORT"));
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a_key, b_key) = (keyfile(tmp.path(), "akey"), keyfile(tmp.path(), "bkey"));
    let (a, b) = (fresh_jid(server, "clia"), fresh_jid(server, "clib"));

    let out = linnet(
        &a_dir,
        &a_key,
        &["register", &a, "--server", &host],
        Some("pass word\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out)[0]["ok"], true);
    let out = linnet(
        &b_dir,
        &b_key,
        &["register", &b, "--server", &host],
        Some("pass word\n"),
    );
    assert!(out.status.success(), "{out:?}");

    let out = linnet(&a_dir, &a_key, &["login"], None);
    assert!(out.status.success(), "{out:?}");
    let v = &json_lines(&out)[0];
    assert!(
        v["mechanism"].as_str().unwrap().starts_with("SCRAM-"),
        "{v}"
    );

    let out = linnet(&a_dir, &a_key, &["roster", "add", &b, "--name", "B"], None);
    assert!(out.status.success(), "{out:?}");
    let out = linnet(&b_dir, &b_key, &["roster", "approve", &a], None);
    assert!(out.status.success(), "{out:?}");

    let out = linnet(&a_dir, &a_key, &["send", &b, "hello from the cli"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out)[0]["state"], "sent");
    let out = linnet(&b_dir, &b_key, &["sync"], None);
    assert!(out.status.success(), "{out:?}");
    let out = linnet(&b_dir, &b_key, &["history", &a], None);
    let msgs = json_lines(&out);
    assert!(
        msgs.iter()
            .any(|m| m["body"] == "hello from the cli" && m["direction"] == "incoming"),
        "{msgs:?}"
    );

    // Exit codes: bad input 2, wrong key 8, auth 3.
    let out = linnet(&a_dir, &a_key, &["send", "not a jid@@", "x"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json_lines(&out)[0]["error"], "bad_input");
    let wrong = tmp.path().join("wrongkey");
    std::fs::write(&wrong, "11".repeat(32)).unwrap();
    let out = linnet(&a_dir, &wrong, &["accounts"], None);
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    let c_dir = tmp.path().join("c");
    let out = linnet(
        &c_dir,
        &a_key,
        &["add-account", &a, "--server", &host],
        Some("wrong password\n"),
    );
    assert!(out.status.success());
    let out = linnet(&c_dir, &a_key, &["login"], None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// kill -9 of a sending client mid-stream, then a restart: every message the CLI confirmed
/// arrives exactly once, in order.
async fn kill_and_restart(server: Server) {
    use std::io::{BufRead, BufReader, Write};
    let (a, b) = contacts_pair(server).await;
    a.client.shutdown().await;
    let o = server_override(server, false);
    let host = format!("{}:{}", o.host, o.port);
    let tmp = tempfile::tempdir().unwrap();
    let key = keyfile(tmp.path(), "key");
    let dir = tmp.path().join("a");
    let out = linnet(
        &dir,
        &key,
        &["add-account", &a.jid, "--server", &host],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{out:?}");

    let spawn_watch = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_linnet"))
            .arg("--data-dir")
            .arg(&dir)
            .arg("--key-file")
            .arg(&key)
            .arg("--ca")
            .arg(var("LINNET_CA"))
            .arg("--only-ca")
            .arg("watch")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut confirmed = Vec::new();
    for round in 0..3 {
        let mut child = spawn_watch();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        for i in 0..20 {
            let cmd = json!({"cmd": "send", "to": b.jid, "body": format!("r{round} m{i}")});
            writeln!(stdin, "{cmd}").unwrap();
        }
        // Read results until about half are confirmed, then kill -9 mid-stream.
        let reader = std::thread::spawn(move || {
            let mut ok = 0;
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["event"] == "login_failed" {
                    eprintln!("watch: {line}");
                }
                if v["event"] == "result" && v["ok"] == true {
                    ok += 1;
                    if ok == 10 {
                        break;
                    }
                }
            }
            ok
        });
        let ok = reader.join().unwrap();
        child.kill().unwrap();
        let _ = child.wait();
        // Commands are processed in order, so the first `ok` were confirmed to the user.
        confirmed.extend((0..ok).map(|i| format!("r{round} m{i}")));
    }
    // A last run with nothing new: its login re-sends whatever the outbox still holds.
    let mut child = spawn_watch();
    let stdin = child.stdin.take().unwrap();
    let wanted = confirmed.clone();
    let snap = b
        .wait_conversation(&a.jid, "every confirmed message", |s| {
            wanted
                .iter()
                .all(|w| s.messages.iter().any(|m| &m.body == w))
        })
        .await;
    let snap_bodies: Vec<&str> = snap.messages.iter().map(|m| m.body.as_str()).collect();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    let conv = b.client.open_conversation(b.account, &a.jid).unwrap();
    let got: Vec<String> = b
        .client
        .messages(conv, None, 1000)
        .unwrap()
        .into_iter()
        .filter(|m| m.direction == linnet_client::Direction::Incoming)
        .map(|m| m.body)
        .collect();
    // Confirmed messages: each exactly once and in order; unconfirmed ones may or may not
    // have gone out (the user was never told they were), but never twice.
    let mut seen = std::collections::HashSet::new();
    assert!(
        got.iter().all(|m| seen.insert(m.clone())),
        "duplicates: {got:?}"
    );
    let confirmed_got: Vec<&String> = got.iter().filter(|m| confirmed.contains(m)).collect();
    assert_eq!(
        confirmed_got.len(),
        confirmed.len(),
        "lost a confirmed message: {got:?}; confirmed {confirmed:?}; snapshot {snap_bodies:?}"
    );
    assert!(
        confirmed_got
            .iter()
            .zip(confirmed.iter())
            .all(|(a, b)| *a == b),
        "order: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_confirmed() {
    for server in [Server::Prosody, Server::Ejabberd] {
        kill_and_restart(server).await;
    }
}

/// The demo (what `scripts/demo` runs) chats end to end encrypted, and says so.
#[test]
fn the_demo_conversation_is_omemo_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_linnet"))
        .args(["demo", "--domain", &var("PROSODY_DOMAIN"), "--server"])
        .arg(format!("{}:{}", var("PROSODY_HOST"), var("PROSODY_PORT")))
        .args(["--ca", &var("LINNET_CA"), "--only-ca", "--data-dir"])
        .arg(tmp.path().join("demo"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" → ") || l.contains(" ← "))
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines.iter().all(|l| l.contains("🔒 OMEMO")), "{text}");
    assert!(!text.contains("plaintext"), "{text}");
    assert_eq!(text.matches("fingerprint").count(), 2, "{text}");
}

/// A file through the CLI: refused while the conversation would encrypt, sent once it is
/// plain (progress as JSON lines), received as a file message, downloaded with the same
/// bytes.
fn files_from_the_cli(server: Server) {
    let prefix = match server {
        Server::Prosody => "PROSODY",
        Server::Ejabberd => "EJABBERD",
    };
    let host = format!(
        "{}:{}",
        var(&format!("{prefix}_HOST")),
        var(&format!("{prefix}_PORT"))
    );
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a_key, b_key) = (keyfile(tmp.path(), "akey"), keyfile(tmp.path(), "bkey"));
    let (a, b) = (fresh_jid(server, "clifa"), fresh_jid(server, "clifb"));
    for (dir, key, jid) in [(&a_dir, &a_key, &a), (&b_dir, &b_key, &b)] {
        let out = linnet(
            dir,
            key,
            &["register", jid, "--server", &host],
            Some("pass word\n"),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let file = tmp.path().join("notes.txt");
    let content: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&file, &content).unwrap();
    let file = file.to_str().unwrap();

    let out = linnet(&a_dir, &a_key, &["send-file", &b, file], None);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = linnet(&a_dir, &a_key, &["encryption", &b, "plain"], None);
    assert_eq!(json_lines(&out)[0]["encryption"], "plain");
    let out = linnet(&a_dir, &a_key, &["send-file", &b, file], None);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    assert!(lines
        .iter()
        .any(|l| l["event"] == "progress" && l["state"] == "uploading"));
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["ok"], &last["state"]),
        (&Value::Bool(true), &Value::from("sent"))
    );
    // retry-upload: an uploaded file is not sent twice; bad and unknown ids are errors.
    let sent = last["message"].to_string();
    let out = linnet(&a_dir, &a_key, &["retry-upload", &b, &sent], None);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = linnet(&a_dir, &a_key, &["retry-upload", &b, "x"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = linnet(&a_dir, &a_key, &["retry-upload", &b, "999999"], None);
    assert_eq!(out.status.code(), Some(6), "{out:?}");

    let out = linnet(&b_dir, &b_key, &["sync"], None);
    assert!(out.status.success(), "{out:?}");
    let out = linnet(&b_dir, &b_key, &["history", &a], None);
    let msgs = json_lines(&out);
    let m = msgs
        .iter()
        .find(|m| m["attachment"]["name"] == "notes.txt")
        .unwrap_or_else(|| panic!("{msgs:?}"));
    assert_eq!(m["body"], "");
    assert_eq!(m["attachment"]["size"], content.len());
    assert_eq!(m["attachment"]["media_type"], "text/plain");
    let id = m["id"].to_string();
    let dest = tmp.path().join("downloads");
    std::fs::create_dir(&dest).unwrap();
    let out = linnet(
        &b_dir,
        &b_key,
        &["download", &a, &id, "--dir", dest.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out).last().unwrap()["ok"], true);
    assert_eq!(
        std::fs::read_to_string(dest.join("notes.txt")).unwrap(),
        content
    );
    let out = linnet(&b_dir, &b_key, &["download", &a, "999999"], None);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
}

#[test]
fn files_from_the_cli_prosody() {
    files_from_the_cli(Server::Prosody)
}

#[test]
fn files_from_the_cli_ejabberd() {
    files_from_the_cli(Server::Ejabberd)
}

/// OMEMO trust through the CLI: our fingerprint and verification URI, a contact's device
/// blindly trusted after a first message, verified by their URI, then distrusted, after
/// which nothing goes to them; the trust policy; and each bad argument is exit code 2.
#[test]
fn trust_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let Pair {
        b,
        a_dir,
        b_dir,
        a_key,
        b_key,
        ..
    } = contacts_on_prosody(tmp.path(), "clit");
    let out = linnet(&a_dir, &a_key, &["send", &b, "first"], None);
    assert!(out.status.success(), "{out:?}");

    let out = linnet(&b_dir, &b_key, &["fingerprint"], None);
    assert!(out.status.success(), "{out:?}");
    let own = &json_lines(&out)[0];
    let b_device = own["device"].as_u64().unwrap();
    let b_uri = own["uri"].as_str().unwrap().to_owned();
    assert!(b_uri.starts_with(&format!("xmpp:{b}?omemo")), "{b_uri}");
    // Eight groups of eight hex digits.
    let shown = own["fingerprint"].as_str().unwrap();
    assert_eq!(shown.split(' ').count(), 8, "{shown}");

    let device_of = |dir: &Path, key: &Path| {
        let out = linnet(dir, key, &["devices", &b], None);
        assert!(out.status.success(), "{out:?}");
        json_lines(&out)
            .into_iter()
            .find(|d| d["device"].as_u64() == Some(b_device))
            .unwrap_or_else(|| panic!("{out:?}"))
    };
    let d = device_of(&a_dir, &a_key);
    assert_eq!(
        (&d["trust"], &d["fingerprint"]),
        (&json!("blind"), &own["fingerprint"])
    );

    let out = linnet(&a_dir, &a_key, &["verify", &b_uri], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(device_of(&a_dir, &a_key)["trust"], "verified");

    let device = b_device.to_string();
    let out = linnet(&a_dir, &a_key, &["trust", &b, &device, "distrust"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(device_of(&a_dir, &a_key)["trust"], "distrusted");
    // No trusted device of Bob's is left: nothing goes, in the clear least of all.
    let out = linnet(&a_dir, &a_key, &["send", &b, "not for you"], None);
    assert!(!out.status.success(), "{out:?}");
    let out = linnet(&a_dir, &a_key, &["history", &b], None);
    let failed = json_lines(&out)
        .into_iter()
        .find(|m| m["body"] == "not for you")
        .unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("trusted"),
        "{failed}"
    );

    let out = linnet(&a_dir, &a_key, &["trust-policy", "manual"], None);
    assert_eq!(json_lines(&out)[0]["policy"], "manual", "{out:?}");
    for bad in [
        vec!["trust", &b, "x", "verify"],
        vec!["trust", &b, &device, "maybe"],
        vec!["trust", "not a jid@@", &device, "verify"],
        vec!["trust-policy", "sometimes"],
        vec!["verify", "xmpp:nobody"],
    ] {
        let out = linnet(&a_dir, &a_key, &bad, None);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}

/// `linnet call` and `linnet answer`: a tone each way (through the TURN relay, as
/// `--relay` asks), recorded to WAV files whose dominant frequency is the other's tone.
#[test]
fn a_call_from_the_cli() {
    use linnet_call::audio::{dominant_frequency, AudioSource, WavSource, SAMPLE_RATE};
    let tmp = tempfile::tempdir().unwrap();
    let Pair {
        a,
        b,
        a_dir,
        b_dir,
        a_key,
        b_key,
    } = contacts_on_prosody(tmp.path(), "clic");

    let (a_wav, b_wav) = (tmp.path().join("a.wav"), tmp.path().join("b.wav"));
    let mut answerer = Command::new(env!("CARGO_BIN_EXE_linnet"))
        .arg("--data-dir")
        .arg(&b_dir)
        .arg("--key-file")
        .arg(&b_key)
        .args([
            "--ca",
            &var("LINNET_CA"),
            "--only-ca",
            "answer",
            "--from",
            &a,
        ])
        .args([
            "--wait",
            "60",
            "--tone",
            "1200",
            "--seconds",
            "4",
            "--relay",
        ])
        .arg("--record")
        .arg(&b_wav)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Call once the answering side says it is online.
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(answerer.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap(),
        json!({"waiting": true})
    );
    let out = linnet(
        &a_dir,
        &a_key,
        &[
            "call",
            &b,
            "--tone",
            "700",
            "--record",
            a_wav.to_str().unwrap(),
            "--seconds",
            "2",
            "--relay",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let states: Vec<Value> = json_lines(&out);
    assert!(
        states
            .iter()
            .any(|s| s["state"]["state"] == "connected" && s["state"]["relayed"] == true),
        "{states:?}"
    );
    assert_eq!(
        states.last().unwrap()["state"]["reason"],
        json!({"hung_up": {"by_peer": false}})
    );
    let states: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let answered = answerer.wait_with_output().unwrap();
    assert!(answered.status.success(), "{answered:?}");
    assert_eq!(
        states.last().unwrap()["state"]["reason"],
        json!({"hung_up": {"by_peer": true}})
    );
    for (wav, hz) in [(&a_wav, 1200.0), (&b_wav, 700.0)] {
        let mut src = WavSource::open(wav).unwrap();
        let mut pcm = Vec::new();
        while let Some(frame) = src.next_frame() {
            pcm.extend(frame);
        }
        assert!(
            pcm.len() > SAMPLE_RATE as usize,
            "{}: too short",
            wav.display()
        );
        let tail = &pcm[pcm.len() - SAMPLE_RATE as usize / 2..];
        let f = dominant_frequency(tail, SAMPLE_RATE);
        assert!((f - hz).abs() < 5.0, "{}: {f} Hz, not {hz}", wav.display());
    }
}
