//! The `linnet` binary as scripts use it: JSON on stdout, stable exit codes.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

use linnet_tests::*;
use serde_json::Value;

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
