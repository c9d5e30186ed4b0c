//! `scripts/bench-catchup`: catching up with 10,000 archived messages after being offline,
//! on both servers, at 0 and 100 ms RTT through the fault proxy: messages/s and peak RSS
//! of Linnet's client (in a child process of its own, from login to caught up, every
//! message stored), side by side with slixmpp reading the same archive in the same run.
//! Figures, not assertions. Also printed: the model "pages × RTT ÷ windows + server
//! time" the catch-up should come close to (server time: Linnet's own time at 0 ms RTT).
//!
//! Options: `--messages N` (10000), `--runs R` (3, medians), `--server prosody|ejabberd`
//! (both), `--rtt MS` (0 and 100), `--no-slixmpp`.
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use linnet_client::{Client, DbKey, ServerOverride};
use linnet_tests::bench::{arg, median};
use linnet_tests::proxy::Proxy;
use linnet_tests::*;

/// Results per archive page each server gives at most (Prosody's default
/// `max_archive_query_results`, ejabberd's limit), asked of slixmpp too: both readers then
/// need the same number of pages.
fn page_size(server: Server) -> usize {
    match server {
        Server::Prosody => 50,
        Server::Ejabberd => 250,
    }
}

/// Time windows the catch-up reads at once (linnet_xmpp's `mam::WINDOWS`).
const WINDOWS: f64 = 8.0;

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Clock ticks: 100 per second on Linux.
    f.iter().sum::<f64>() / 100.0
}

/// The server's process, to count the CPU time it spends answering.
fn server_pid(server: Server) -> String {
    let file = match server {
        Server::Prosody => "prosody/prosody.pid",
        Server::Ejabberd => "ejabberd/ejabberd.pid",
    };
    let run = std::env::var("LINNET_RUN_DIR").unwrap_or_else(|_| ".run".into());
    std::fs::read_to_string(repo_root().join(run).join(file))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The child: opens the copied database, logs in and waits until every message is stored
/// and the catch-up is over. Prints `CATCHUP <total s> <login s> <peak RSS KiB> <CPU s
/// after login>`.
async fn child(dir: &Path, key: &str, n: u32) {
    let key = DbKey::from_hex(key).unwrap();
    let client = Client::open(dir, &key, options()).unwrap();
    let account = client.accounts().unwrap()[0].0;
    let (tx, mut rx) = tokio::sync::watch::channel(client.chat_list());
    let _sub = client.subscribe_chat_list(move |s| {
        tx.send_replace(s);
    });
    let t = Instant::now();
    client.login(account).await.unwrap();
    let login = t.elapsed().as_secs_f64();
    let cpu_at_login = cpu_secs("self");
    loop {
        {
            let s = rx.borrow_and_update();
            let unread: u32 = s.conversations.iter().map(|c| c.unread).sum();
            if unread >= n && !s.accounts[0].catching_up {
                break;
            }
        }
        if tokio::time::timeout(Duration::from_secs(120), rx.changed())
            .await
            .is_err()
        {
            let s = rx.borrow();
            let unread: Vec<u32> = s.conversations.iter().map(|c| c.unread).collect();
            panic!(
                "no progress for 2 minutes: {:?}, unread {unread:?}",
                s.accounts
            );
        }
    }
    let total = t.elapsed().as_secs_f64();
    println!(
        "CATCHUP {total:.6} {login:.6} {} {:.2}",
        peak_rss_kib(),
        cpu_secs("self") - cpu_at_login
    );
    client.shutdown().await;
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

struct Run {
    secs: f64,
    rss_mib: f64,
    /// CPU seconds of the reader and of the server over the run.
    cpu: f64,
    server_cpu: f64,
}

fn linnet_run(server: Server, template: &Path, key: &str, n: u32) -> Run {
    let pid = server_pid(server);
    let server_before = cpu_secs(&pid);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(template, dir.path());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--child",
            &dir.path().to_string_lossy(),
            key,
            &n.to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("CATCHUP"))
        .unwrap_or_else(|| panic!("child failed: {}", String::from_utf8_lossy(&out.stderr)));
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    Run {
        secs: f[0] - f[1],
        rss_mib: f[2] / 1024.0,
        cpu: f[3],
        // Includes the login's share: small beside the catch-up's.
        server_cpu: cpu_secs(&pid) - server_before,
    }
}

fn slixmpp_run(server: Server, jid: &str, proxy: &Proxy, n: u32) -> Run {
    let pid = server_pid(server);
    let server_before = cpu_secs(&pid);
    let out = Command::new(bench::peer_python())
        .arg(repo_root().join("tests/peers/slix_mam.py"))
        .args(["--jid", jid, "--password", PASSWORD, "--host", "127.0.0.1"])
        .args([
            "--port",
            &proxy.port().to_string(),
            "--ca",
            &var("LINNET_CA"),
        ])
        .args(["--page", &page_size(server).to_string()])
        .output()
        .expect("slixmpp (scripts/bench-catchup sets up .run/venv)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("CATCHUP"))
        .unwrap_or_else(|| panic!("slixmpp failed: {}", String::from_utf8_lossy(&out.stderr)));
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(f[0] as u32 >= n, "slixmpp read {} of {n}", f[0]);
    Run {
        secs: f[1],
        rss_mib: f[2] / 1024.0,
        cpu: f[3],
        server_cpu: cpu_secs(&pid) - server_before,
    }
}

/// A reader account whose device has caught up once (cursor at the archive's start) and
/// then went offline while `n` messages came: its database is the template every run
/// copies. Returns (template dir, key, reader JID).
async fn prepare(server: Server, proxy: &Proxy, n: u32) -> (tempfile::TempDir, String, String) {
    let (sender, _events) = registered_session(server, "bcs").await;
    let reader = fresh_jid(server, "bcr");
    linnet_xmpp::register(&xmpp_config(server, &reader))
        .await
        .unwrap();
    let template = tempfile::tempdir().unwrap();
    let key = DbKey::generate().unwrap();
    let hex = key.to_hex().to_string();
    {
        let client = Client::open(template.path(), &key, options()).unwrap();
        let via = ServerOverride {
            host: "127.0.0.1".into(),
            port: proxy.port(),
            direct_tls: false,
        };
        let account = client.add_account(&reader, PASSWORD, Some(via)).unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(client.chat_list());
        let _sub = client.subscribe_chat_list(move |s| {
            tx.send_replace(s);
        });
        client.login(account).await.unwrap();
        // Caught up once, so the cursor (the archive's start) is stored: the server
        // answers in order, so the catch-up's answer is in before the ping's.
        client.sync(account).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        while rx.borrow_and_update().accounts[0].catching_up {
            rx.changed().await.unwrap();
        }
        client.logout(account).await.unwrap();
        client.shutdown().await;
    }
    let to = linnet_xmpp::BareJid::parse(&reader).unwrap();
    // The reader is online (a bare session) while the messages come, so that they go to
    // the archive and not to offline storage as well (ejabberd would flood up to 5000 of
    // them at the next login): every run, Linnet's and slixmpp's, reads the archive alone.
    let conn = linnet_xmpp::connect(&xmpp_config(server, &reader))
        .await
        .unwrap();
    let (online, _events) = linnet_xmpp::Session::start(conn, to.clone());
    online.send_presence(None, None).unwrap();
    online.ping().await.unwrap();
    let t = Instant::now();
    for i in 0..n {
        sender
            .send_chat(
                &to,
                &format!("catch-up message {i}"),
                &linnet_xmpp::new_id(),
            )
            .unwrap();
        if i % 500 == 499 {
            // Keeps the server's queue for us short.
            sender.ping().await.unwrap();
        }
    }
    sender.ping().await.unwrap();
    online.ping().await.unwrap();
    online.close().await;
    eprintln!(
        "{server:?}: {n} messages archived in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (template, hex, reader)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Some(dir) = arg("--child") {
        let args: Vec<String> = std::env::args().collect();
        let i = args.iter().position(|a| a == "--child").unwrap();
        child(Path::new(&dir), &args[i + 2], args[i + 3].parse().unwrap()).await;
        return;
    }
    let n: u32 = arg("--messages")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let servers = match arg("--server").as_deref() {
        Some("prosody") => vec![Server::Prosody],
        Some("ejabberd") => vec![Server::Ejabberd],
        _ => vec![Server::Prosody, Server::Ejabberd],
    };
    let rtts: Vec<u64> = arg("--rtt")
        .and_then(|r| r.parse().ok())
        .map_or_else(|| vec![0, 100], |r| vec![r]);
    let with_slixmpp = !std::env::args().any(|a| a == "--no-slixmpp");
    println!(
        "linnet-bench-catchup: {n} archived messages, medians of {runs} runs; Linnet from login to every message stored (child process), slixmpp from session start to its last page; peak RSS of each process"
    );
    for server in servers {
        let proxy = Proxy::start(socket_addr(server)).await.unwrap();
        let (template, key, reader) = prepare(server, &proxy, n).await;
        let mut server_secs = None;
        for &rtt in &rtts {
            proxy.set_latency(Duration::from_millis(rtt / 2));
            let (mut ours, mut our_rss, mut our_cpu, mut our_srv) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let r =
                    tokio::task::block_in_place(|| linnet_run(server, template.path(), &key, n));
                ours.push(r.secs);
                our_rss.push(r.rss_mib);
                our_cpu.push(r.cpu);
                our_srv.push(r.server_cpu);
            }
            let ours = median(&mut ours);
            if rtt == 0 {
                server_secs = Some(ours);
            }
            let pages = (f64::from(n) / page_size(server) as f64).ceil();
            let model = pages * rtt as f64 / 1000.0 / WINDOWS + server_secs.unwrap_or(0.0);
            let slix = if with_slixmpp {
                let (mut s, mut s_rss, mut s_cpu, mut s_srv) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for _ in 0..runs {
                    let r = tokio::task::block_in_place(|| slixmpp_run(server, &reader, &proxy, n));
                    s.push(r.secs);
                    s_rss.push(r.rss_mib);
                    s_cpu.push(r.cpu);
                    s_srv.push(r.server_cpu);
                }
                let s = median(&mut s);
                let s_srv = median(&mut s_srv);
                // A server that answers one session's queries one after another (ejabberd
                // does, in the session's process) spends this CPU time on any reader whose
                // queries cost it what slixmpp's do: such a reader cannot beat slixmpp by
                // more than this ratio. (Prosody's cost depends on the queries: ours avoid
                // its scans, so this bounds nothing there.)
                format!(
                    "slixmpp {:.0} msg/s, peak RSS {:.0} MiB, CPU {:.2} s (server {s_srv:.2} s) | Linnet ÷ slixmpp {:.1}× [target >= 5] | slixmpp time ÷ its server CPU {:.1}× (the best ratio a reader costing the server what slixmpp does can reach from a server serving a session serially)",
                    f64::from(n) / s,
                    median(&mut s_rss),
                    median(&mut s_cpu),
                    s / ours,
                    s / s_srv
                )
            } else {
                "slixmpp -".into()
            };
            println!(
                "{server:?} @ {rtt} ms RTT: Linnet {:.0} msg/s ({ours:.2} s), peak RSS {:.0} MiB, CPU {:.2} s (server {:.2} s), model {model:.2} s ({pages} pages × RTT ÷ {WINDOWS} + server time) | {slix}",
                f64::from(n) / ours,
                median(&mut our_rss),
                median(&mut our_cpu),
                median(&mut our_srv),
            );
        }
    }
}
