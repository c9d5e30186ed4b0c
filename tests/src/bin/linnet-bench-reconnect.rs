//! `scripts/bench-reconnect`: login and reconnection cost in round trips, through the fault
//! proxy at 100 ms and 300 ms RTT, on both servers, with slixmpp measured the same way in
//! the same run as the peer. Figures, not assertions.
//!
//! (i) cold login to roster: `login()` until the roster is stored (Linnet; its login also
//!     enables carbons and sends presence, pipelined) / slixmpp `connect()` until
//!     `get_roster()` returned;
//! (ii) reconnect to usable: the proxy resets the connection → online again.
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linnet_client::{ConnectionState, ServerOverride};
use linnet_tests::proxy::Proxy;
use linnet_tests::*;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn ours(server: Server, proxy: &Proxy, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let me = TestClient::register(server, "rtt").await;
    me.client.shutdown().await;
    let via = ServerOverride {
        host: "127.0.0.1".into(),
        port: proxy.port(),
        direct_tls: false,
    };
    let (client, _dir) = TestClient::new_client();
    let acc = client.add_account(&me.jid, PASSWORD, Some(via)).unwrap();
    let mut cold = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        client.login(acc).await.unwrap();
        cold.push(t.elapsed().as_secs_f64());
        client.logout(acc).await.unwrap();
    }
    client.login(acc).await.unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(client.chat_list());
    let _sub = client.subscribe_chat_list(move |s| {
        tx.send_replace(s);
    });
    let mut reconnect = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        proxy.reset_all();
        // Down first, then up again.
        let mut seen_down = false;
        loop {
            rx.changed().await.unwrap();
            let online = rx.borrow_and_update().accounts[0].connection == ConnectionState::Online;
            if !online {
                seen_down = true;
            } else if seen_down {
                break;
            }
        }
        reconnect.push(t.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client.shutdown().await;
    (cold, reconnect)
}

fn python() -> String {
    std::env::var("LINNET_PEER_PYTHON").unwrap_or_else(|_| {
        repo_root()
            .join(".run/venv/bin/python")
            .to_string_lossy()
            .into_owned()
    })
}

async fn slixmpp(server: Server, proxy: &Proxy, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let me = TestClient::register(server, "slix").await;
    me.client.shutdown().await;
    let script = repo_root().join("tests/peers/slix_peer.py");
    let spawn = || {
        Command::new(python())
            .arg(&script)
            .args([
                "--jid",
                &me.jid,
                "--password",
                PASSWORD,
                "--host",
                "127.0.0.1",
            ])
            .args([
                "--port",
                &proxy.port().to_string(),
                "--ca",
                &var("LINNET_CA"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("slixmpp peer (scripts/bench-reconnect sets up .run/venv)")
    };
    let read_line = |out: &mut BufReader<std::process::ChildStdout>| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line
    };
    let mut cold = Vec::new();
    let mut reconnect = Vec::new();
    for run in 0..runs {
        let mut child = spawn();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut stdin = child.stdin.take().unwrap();
        let line = tokio::task::block_in_place(|| read_line(&mut out));
        let secs: f64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("LOGIN line");
        cold.push(secs);
        if run == 0 {
            for _ in 0..runs {
                proxy.reset_all();
                let line = tokio::task::block_in_place(|| read_line(&mut out));
                let secs: f64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("RECONNECT line");
                reconnect.push(secs);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let _ = writeln!(stdin, "QUIT");
        let _ = child.wait();
    }
    (cold, reconnect)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    println!("linnet-bench-reconnect: medians of {runs} runs, in round trips (wall time ÷ RTT)");
    for server in [Server::Prosody, Server::Ejabberd] {
        for rtt_ms in [100u64, 300] {
            let proxy = Proxy::start(socket_addr(server)).await.unwrap();
            proxy.set_latency(Duration::from_millis(rtt_ms / 2));
            let rtt = rtt_ms as f64 / 1000.0;
            let (mut oc, mut or) = ours(server, &proxy, runs).await;
            let (mut sc, mut sr) = slixmpp(server, &proxy, runs).await;
            println!(
                "{server:?} @ {rtt_ms} ms RTT: cold login to roster: Linnet {:.1} RTT, slixmpp {:.1} RTT [target <= 4.5] | reconnect to usable: Linnet {:.1} RTT, slixmpp {:.1} RTT [target <= 3]",
                median(&mut oc) / rtt,
                median(&mut sc) / rtt,
                median(&mut or) / rtt,
                median(&mut sr) / rtt,
            );
        }
    }
}
