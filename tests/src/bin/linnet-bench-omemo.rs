//! `scripts/bench-omemo`: what OMEMO costs in Linnet (linnet-omemo, release build), for
//! OMEMO 0.3 and OMEMO 2, with python-omemo 2.1.0 (its oldmemo / twomemo backends, on its
//! x3dh, doubleratchet and xeddsa packages) doing the same operations in the same run
//! (tests/peers/omemo_bench.py). Figures, not assertions: nothing fails on a slow result.
//!
//! (a) session setup: initiator = bundle processed (signature checked, X3DH) + the first
//!     message built, carrying the key exchange; responder = that message read (X3DH,
//!     session built, the used prekey replaced, payload decrypted);
//! (b) fan-out: one message encrypted for 1, 10 and 100 devices whose sessions are
//!     established (each device has answered, so no key exchange rides along);
//! (c) decrypt rate on one core: follow-ups in one chain (a batch read in order), and after
//!     a turn (the sender has read our reply, so every message starts a new chain: a DH
//!     ratchet step); only the decrypt is timed.
//!
//! Both sides work as in real use: every operation loads the session from its store
//! (Linnet: `MemoryStore`, which hands out serialized bytes; python-omemo: its `Storage`
//! over a dict) and saves it back, sessions advance from one run to the next, the payload is
//! sealed with a fresh key each time, and results are passed through `black_box`. Each
//! side runs on one thread, one after the other. The payload is the same bytes for both:
//! a short body (0.3) or an SCE envelope around it, built once (2). For fan-out and
//! follow-ups, python-omemo is also measured with its sessions held as objects between
//! messages (no storage round trip): its cryptography alone, since much of its real-use cost
//! is turning sessions to and from its storage model.
//!
//! Options: `--runs N` (20), `--version 0.3|2` (both), `--no-python`, `--batch M`
//! (messages per decrypt run, 200).
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linnet_omemo::sce::Envelope;
use linnet_omemo::{DeviceAddress, EncryptedMessage, MemoryStore, SessionManager, Version};
use linnet_tests::repo_root;
use rand::SeedableRng;

const BODY: &str = "Are we still on for lunch tomorrow? I can be there at half past twelve.";
const FANOUT: [usize; 3] = [1, 10, 100];

type Device = SessionManager<MemoryStore>;

/// Raw samples of one side for one version: times in seconds, rates in messages per second.
#[derive(Default)]
struct Samples {
    setup_initiate: Vec<f64>,
    setup_respond: Vec<f64>,
    fanout: Vec<(usize, Vec<f64>)>,
    decrypt_chain: Vec<f64>,
    decrypt_turn: Vec<f64>,
    /// python-omemo only: (b) and the follow-ups of (c) with its sessions held as objects
    /// between messages (no storage round trip), its cryptography alone, for reference.
    fanout_memory: Vec<(usize, Vec<f64>)>,
    decrypt_chain_memory: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn device(jid: &str, id: u32) -> (Device, DeviceAddress) {
    let d = SessionManager::new(MemoryStore::new(), jid, id).unwrap();
    (d, DeviceAddress::new(jid, id))
}

fn encrypt(from: &mut Device, v: Version, pt: &[u8], to: &[DeviceAddress]) -> EncryptedMessage {
    let out = from.encrypt(v, Some(pt), to).unwrap();
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    out.message
}

fn decrypt(to: &mut Device, v: Version, from: &DeviceAddress, m: &EncryptedMessage) -> Vec<u8> {
    let d = to.decrypt(v, &from.jid, m).unwrap();
    d.payload.unwrap().to_vec()
}

/// `a` builds a session from `b`'s bundle and `b` answers, so that `a`'s session is
/// established and no longer carries the key exchange.
fn establish(
    v: Version,
    pt: &[u8],
    (a, a_addr): (&mut Device, &DeviceAddress),
    (b, b_addr): (&mut Device, &DeviceAddress),
) {
    a.process_bundle(v, b_addr, &b.bundle(v).unwrap()).unwrap();
    let first = encrypt(a, v, pt, std::slice::from_ref(b_addr));
    assert!(first.keys[0].key_exchange);
    assert_eq!(decrypt(b, v, a_addr, &first), pt);
    let reply = encrypt(b, v, pt, std::slice::from_ref(a_addr));
    assert_eq!(decrypt(a, v, b_addr, &reply), pt);
    let next = encrypt(a, v, pt, std::slice::from_ref(b_addr));
    assert!(
        !next.keys[0].key_exchange,
        "established session sends a key exchange"
    );
    assert_eq!(decrypt(b, v, a_addr, &next), pt);
}

fn ours(v: Version, runs: usize, batch: usize, pt: &[u8]) -> Samples {
    let mut s = Samples::default();

    // (a) Session setup between the same two devices each run: the session is replaced.
    let (mut alice, alice_addr) = device("alice@bench.example", 1);
    let (mut bob, bob_addr) = device("bob@bench.example", 2);
    let to_bob = std::slice::from_ref(&bob_addr);
    for run in 0..=runs {
        // Fetching the bundle is PEP's job, not timed; it holds the replaced prekeys.
        let bundle = bob.bundle(v).unwrap();
        let t = Instant::now();
        alice
            .process_bundle(v, &bob_addr, black_box(&bundle))
            .unwrap();
        let out = alice.encrypt(v, Some(black_box(pt)), to_bob).unwrap();
        let initiate = t.elapsed();
        let message = black_box(out).message;
        assert!(message.keys[0].key_exchange);
        let t = Instant::now();
        let read = bob
            .decrypt(v, &alice_addr.jid, black_box(&message))
            .unwrap();
        let respond = t.elapsed();
        let read = black_box(read);
        assert!(read.new_session && read.payload.as_deref().map(|p| &p[..]) == Some(pt));
        if run > 0 {
            s.setup_initiate.push(initiate.as_secs_f64());
            s.setup_respond.push(respond.as_secs_f64());
        }
    }

    // (b) Fan-out from one device to up to 100 devices with established sessions.
    let (mut sender, sender_addr) = device("sender@bench.example", 10);
    let mut recipients = Vec::new();
    for i in 0..FANOUT[FANOUT.len() - 1] {
        let (mut d, addr) = device(&format!("r{i}@bench.example"), 100 + i as u32);
        establish(v, pt, (&mut sender, &sender_addr), (&mut d, &addr));
        recipients.push(addr);
    }
    for n in FANOUT {
        let to = &recipients[..n];
        let mut times = Vec::new();
        for run in 0..=runs {
            let t = Instant::now();
            let out = sender
                .encrypt(v, Some(black_box(pt)), black_box(to))
                .unwrap();
            let elapsed = t.elapsed();
            let out = black_box(out);
            assert!(out.skipped.is_empty() && out.message.keys.len() == n);
            assert!(out.message.keys.iter().all(|k| !k.key_exchange));
            if run > 0 {
                times.push(elapsed.as_secs_f64());
            }
        }
        s.fanout.push((n, times));
    }

    // (c) Decrypt rate.
    let (mut alice, alice_addr) = device("alice2@bench.example", 3);
    let (mut bob, bob_addr) = device("bob2@bench.example", 4);
    establish(v, pt, (&mut alice, &alice_addr), (&mut bob, &bob_addr));
    let to_bob = std::slice::from_ref(&bob_addr);
    let to_alice = std::slice::from_ref(&alice_addr);
    for run in 0..=runs {
        let messages: Vec<EncryptedMessage> = (0..batch)
            .map(|_| encrypt(&mut alice, v, pt, to_bob))
            .collect();
        let mut last = None;
        let t = Instant::now();
        for m in &messages {
            let read = bob.decrypt(v, &alice_addr.jid, black_box(m)).unwrap();
            last = Some(black_box(read));
        }
        let elapsed = t.elapsed();
        assert_eq!(last.unwrap().payload.unwrap().as_slice(), pt);
        if run > 0 {
            s.decrypt_chain.push(batch as f64 / elapsed.as_secs_f64());
        }
    }
    for run in 0..=runs {
        let mut elapsed = Duration::ZERO;
        for _ in 0..batch {
            let reply = encrypt(&mut bob, v, pt, to_alice);
            decrypt(&mut alice, v, &bob_addr, &reply);
            let m = encrypt(&mut alice, v, pt, to_bob);
            let t = Instant::now();
            let read = bob.decrypt(v, &alice_addr.jid, black_box(&m)).unwrap();
            elapsed += t.elapsed();
            assert_eq!(black_box(read).payload.unwrap().as_slice(), pt);
        }
        if run > 0 {
            s.decrypt_turn.push(batch as f64 / elapsed.as_secs_f64());
        }
    }
    s
}

fn python_interpreter() -> String {
    std::env::var("LINNET_OMEMO_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            repo_root()
                .join(".run/omemo-venv/bin/python")
                .to_string_lossy()
                .into_owned()
        })
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// python-omemo doing the same (tests/peers/omemo_bench.py); `Err` says why there are no
/// figures.
fn python(v: Version, runs: usize, batch: usize, pt: &[u8]) -> Result<Samples, String> {
    let python = python_interpreter();
    let script = repo_root().join("tests/peers/omemo_bench.py");
    let version = match v {
        Version::Omemo03 => "0.3",
        Version::Omemo2 => "2",
    };
    let out = Command::new(&python)
        .arg(&script)
        .args(["--version", version, "--runs", &runs.to_string()])
        .args(["--batch", &batch.to_string(), "--plaintext", &hex(pt)])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {python} (scripts/omemo-peer-env makes it): {e}"))?;
    if !out.status.success() {
        return Err(format!("omemo_bench.py exited with {}", out.status));
    }
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("omemo_bench.py printed no JSON: {e}"))?;
    Ok(Samples {
        setup_initiate: floats(&j["setup_initiate"]),
        setup_respond: floats(&j["setup_respond"]),
        fanout: FANOUT
            .iter()
            .map(|n| (*n, floats(&j["fanout"][n.to_string()])))
            .collect(),
        decrypt_chain: floats(&j["decrypt_chain"]),
        decrypt_turn: floats(&j["decrypt_turn"]),
        fanout_memory: FANOUT
            .iter()
            .map(|n| (*n, floats(&j["fanout_memory"][n.to_string()])))
            .collect(),
        decrypt_chain_memory: floats(&j["decrypt_chain_memory"]),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn time(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

fn rate(per_sec: f64) -> String {
    let digits: Vec<char> = (per_sec.round() as u64).to_string().chars().collect();
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|g| g.iter().collect())
        .collect();
    format!("{}/s", groups.join(","))
}

/// One figure: `label: Linnet X [target] | python-omemo Y | ratio Z` (the ratio says how many
/// times faster Linnet is: python's time ÷ ours, or our rate ÷ python's), and where measured
/// python-omemo's figure with its sessions held in memory.
fn line(
    name: &str,
    label: &str,
    ours: &[f64],
    theirs: Option<(&[f64], Option<&[f64]>)>,
    is_rate: bool,
    target: &str,
) {
    let fmt = |x: f64| if is_rate { rate(x) } else { time(x) };
    let o = median(ours);
    let target = if target.is_empty() {
        String::new()
    } else {
        format!(" [target {target}]")
    };
    let ratio = |p: f64| if is_rate { o / p } else { p / o };
    let py = match theirs {
        Some((t, mem)) => {
            let p = median(t);
            let mem = mem.map_or_else(String::new, |m| {
                let m = median(m);
                format!(
                    " (sessions held in memory: {}, ratio {:.0}x)",
                    fmt(m),
                    ratio(m)
                )
            });
            format!(" | python-omemo {} | ratio {:.0}x{mem}", fmt(p), ratio(p))
        }
        None => " | python-omemo -".into(),
    };
    println!("{name}: {label}: Linnet {}{target}{py}", fmt(o));
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn main() {
    let runs: usize = arg("--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
        .max(1);
    let batch: usize = arg("--batch")
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
        .max(1);
    let versions = match arg("--version").as_deref() {
        Some("0.3") => vec![Version::Omemo03],
        Some("2") => vec![Version::Omemo2],
        None => vec![Version::Omemo03, Version::Omemo2],
        Some(other) => panic!("--version 0.3|2, not {other}"),
    };
    let with_python = !flag("--no-python");
    // The same payload bytes for both sides; the envelope's padding is fixed by the seed.
    let envelope = Envelope::with_body(BODY, "sender@bench.example")
        .to_bytes(&mut rand::rngs::StdRng::seed_from_u64(7))
        .unwrap();
    println!(
        "linnet-bench-omemo: medians of {runs} runs (plus one warm-up) per figure; decrypt: rate over {batch} messages per run; \
         Linnet (release) and python-omemo (oldmemo/twomemo 2.1.0) each on one thread, one after the other, \
         each loading and saving its sessions through its in-memory store as in real use \
         (python-omemo also with its sessions held in memory, in parentheses); \
         payload {} bytes (0.3) / {} bytes (2, SCE envelope); ratio = how many times faster Linnet is{}",
        BODY.len(),
        envelope.len(),
        if with_python { "" } else { "; python-omemo not run (--no-python)" },
    );
    for v in versions {
        let (name, pt) = match v {
            Version::Omemo03 => ("OMEMO 0.3", BODY.as_bytes()),
            Version::Omemo2 => ("OMEMO 2", &envelope[..]),
        };
        let o = ours(v, runs, batch, pt);
        let p = if with_python {
            match python(v, runs, batch, pt) {
                Ok(p) => Some(p),
                Err(e) => {
                    println!("{name}: python-omemo: no figures ({e})");
                    None
                }
            }
        } else {
            None
        };
        let p = p.as_ref();
        line(
            name,
            "session setup, initiator (bundle -> first message)",
            &o.setup_initiate,
            p.map(|p| (&p.setup_initiate[..], None)),
            false,
            "",
        );
        line(
            name,
            "session setup, responder (first message read)",
            &o.setup_respond,
            p.map(|p| (&p.setup_respond[..], None)),
            false,
            "",
        );
        for (i, (n, times)) in o.fanout.iter().enumerate() {
            line(
                name,
                &format!("fan-out to {n} device{}", if *n == 1 { "" } else { "s" }),
                times,
                p.map(|p| (&p.fanout[i].1[..], Some(&p.fanout_memory[i].1[..]))),
                false,
                if *n == 100 { "<= 2 ms" } else { "" },
            );
        }
        line(
            name,
            "decrypt, follow-ups in one chain",
            &o.decrypt_chain,
            p.map(|p| (&p.decrypt_chain[..], Some(&p.decrypt_chain_memory[..]))),
            true,
            ">= 20,000/s",
        );
        line(
            name,
            "decrypt, after a turn (DH ratchet step)",
            &o.decrypt_turn,
            p.map(|p| (&p.decrypt_turn[..], None)),
            true,
            ">= 20,000/s",
        );
    }
}
