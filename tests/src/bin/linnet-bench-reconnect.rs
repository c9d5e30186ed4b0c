//! `scripts/bench-reconnect`: login and reconnection cost in round trips, through the fault
//! proxy at 100 ms and 300 ms RTT, on both servers, with slixmpp measured the same way in
//! the same run as the peer. Figures, not assertions.
//!
//! (i) cold login to roster: `login()` until the roster is stored (Linnet; its login also
//!     enables carbons and sends presence, pipelined) / slixmpp `connect()` until
//!     `get_roster()` returned;
//! (ii) reconnect to usable: the proxy resets the connection → online again.
//!
//! Linnet goes through a proxy in front of the server's direct-TLS port (XEP-0368), slixmpp
//! through one in front of the STARTTLS port (`--starttls`: Linnet too). Each reset is
//! measured as the first drop of its session: the client reconnects at once only once per
//! 30 s and backs off after that, which the bench's back-to-back resets would otherwise
//! measure instead (its backoff floor is zero here; the printed line says so).
//! A third figure is the login of `linnet_xmpp::connect` alone with Bind2 (off in the
//! client until it catches up from MAM), with FAST, to roster.
//!
//! Options: `--runs N` (20), `--server prosody|ejabberd` (both), `--rtt MS` (100 and 300),
//! `--no-slixmpp`, `--starttls`.
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linnet_client::{Client, ConnectionState, DbKey, ServerOverride};
use linnet_tests::bench::{arg, flag, median};
use linnet_tests::proxy::Proxy;
use linnet_tests::*;

async fn ours(
    server: Server,
    proxy: &Proxy,
    direct_tls: bool,
    runs: usize,
) -> (Vec<f64>, Vec<f64>) {
    let me = TestClient::register(server, "rtt").await;
    me.client.shutdown().await;
    let via = ServerOverride {
        host: "127.0.0.1".into(),
        port: proxy.port(),
        direct_tls,
    };
    let dir = tempfile::tempdir().unwrap();
    let opts = linnet_client::ClientOptions {
        // Every reset is measured as a first drop (see the module comment).
        min_backoff: Duration::ZERO,
        ..options()
    };
    let client = Client::open(dir.path(), &DbKey::generate().unwrap(), opts).unwrap();
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

/// `linnet_xmpp::connect` with Bind2 and a FAST token, then the roster: what the client's
/// cold login costs once Bind2 is on.
async fn bind2_cold(server: Server, proxy: &Proxy, direct_tls: bool, runs: usize) -> Vec<f64> {
    use linnet_xmpp::{BareJid, ConnectConfig, ServerAddr, Session};
    let me = TestClient::register(server, "rtb").await;
    me.client.shutdown().await;
    let bare = BareJid::parse(&me.jid).unwrap();
    let mut cfg = ConnectConfig::new(bare.clone(), PASSWORD);
    cfg.server = Some(ServerAddr {
        host: "127.0.0.1".into(),
        port: proxy.port(),
        direct_tls,
    });
    cfg.tls = tls();
    cfg.bind2 = true;
    cfg.user_agent_id = linnet_xmpp::new_user_agent_id();
    let first = linnet_xmpp::connect(&cfg).await.unwrap();
    cfg.fast = first.negotiated.fast_token.clone();
    let (s, _ev) = Session::start(first, bare.clone());
    s.close().await;
    let mut times = Vec::new();
    for run in 0..runs {
        cfg.fast_count = run as u32 + 1;
        let t = Instant::now();
        let conn = linnet_xmpp::connect(&cfg).await.unwrap();
        if let Some(token) = conn.negotiated.fast_token.clone() {
            cfg.fast = Some(token);
        }
        let (s, _ev) = Session::start(conn, bare.clone());
        s.fetch_roster().await.unwrap();
        times.push(t.elapsed().as_secs_f64());
        s.close().await;
    }
    times
}

async fn slixmpp(server: Server, proxy: &Proxy, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let me = TestClient::register(server, "slix").await;
    me.client.shutdown().await;
    let script = repo_root().join("tests/peers/slix_peer.py");
    let spawn = || {
        Command::new(bench::peer_python())
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
    let runs: usize = arg("--runs").and_then(|n| n.parse().ok()).unwrap_or(20);
    let servers: Vec<Server> = match arg("--server").as_deref() {
        Some("prosody") => vec![Server::Prosody],
        Some("ejabberd") => vec![Server::Ejabberd],
        _ => vec![Server::Prosody, Server::Ejabberd],
    };
    let rtts: Vec<u64> = arg("--rtt")
        .and_then(|r| r.parse().ok())
        .map_or_else(|| vec![100, 300], |r| vec![r]);
    let with_slixmpp = !flag("--no-slixmpp");
    let direct_tls = !flag("--starttls");
    println!(
        "linnet-bench-reconnect: medians of {runs} runs, in round trips (wall time ÷ RTT); Linnet via {}, slixmpp via STARTTLS; each reset measured as a first drop (backoff floor 0)",
        if direct_tls { "direct TLS (XEP-0368)" } else { "STARTTLS" }
    );
    for server in servers {
        for &rtt_ms in &rtts {
            let one_way = Duration::from_millis(rtt_ms / 2);
            let linnet_port = server_override(server, direct_tls);
            let linnet_addr = format!("{}:{}", linnet_port.host, linnet_port.port)
                .parse()
                .unwrap();
            let proxy = Proxy::start(linnet_addr).await.unwrap();
            proxy.set_latency(one_way);
            let rtt = rtt_ms as f64 / 1000.0;
            let (mut oc, mut or) = ours(server, &proxy, direct_tls, runs).await;
            let mut ob = bind2_cold(server, &proxy, direct_tls, runs).await;
            let slix = if with_slixmpp {
                let sproxy = Proxy::start(socket_addr(server)).await.unwrap();
                sproxy.set_latency(one_way);
                let (mut sc, mut sr) = slixmpp(server, &sproxy, runs).await;
                format!(
                    "{:.1} RTT / {:.1} RTT",
                    median(&mut sc) / rtt,
                    median(&mut sr) / rtt
                )
            } else {
                "-".into()
            };
            println!(
                "{server:?} @ {rtt_ms} ms RTT: cold login to roster: Linnet {:.1} RTT [target <= 4.5] (with Bind2: {:.1} RTT) | reconnect to usable: Linnet {:.1} RTT [target <= 3] | slixmpp cold / reconnect: {slix}",
                median(&mut oc) / rtt,
                median(&mut ob) / rtt,
                median(&mut or) / rtt,
            );
        }
    }
}
