//! The fault-injection proxy itself, with a plain echo server upstream (no XMPP).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use linnet_tests::proxy::{ChaosConfig, Proxy, MAX_HELD_PER_DIRECTION};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Only a guard against hanging: the tests assert what happens, not how fast.
const GUARD: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(GUARD, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls a condition that has no notification of its own.
async fn until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// An echo server; each connection's outcome (bytes echoed, or how it failed) comes out
/// of the receiver when the connection ends.
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<std::io::Result<u64>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let mut r2 = tokio::io::copy(&mut r, &mut w).await;
                if r2.is_ok() {
                    if let Err(e) = w.shutdown().await {
                        r2 = Err(e);
                    }
                }
                let _ = tx.send(r2);
            });
        }
    });
    (addr, rx)
}

async fn setup() -> (Proxy, mpsc::UnboundedReceiver<std::io::Result<u64>>) {
    let (upstream, outcomes) = echo_server().await;
    (Proxy::start(upstream).await.unwrap(), outcomes)
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Sends `data` and returns everything echoed until EOF, writing and reading concurrently
/// so that neither side's buffers can deadlock the exchange.
async fn echo_all(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    got
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    within("echo", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, msg);
}

/// The connection was reset by the proxy: a RST, not an orderly FIN.
async fn expect_reset(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let r = within("reset to reach the client", s.read(&mut buf)).await;
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
}

fn numbered(count: u32) -> Vec<Vec<u8>> {
    (0..count).map(|i| i.to_be_bytes().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pass_unchanged_both_ways() {
    let (proxy, mut outcomes) = setup().await;
    let mut tasks = Vec::new();
    for seed in 0..4 {
        let addr = proxy.addr();
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(1 << 20, seed);
            let s = TcpStream::connect(addr).await.unwrap();
            let got = echo_all(s, data.clone()).await;
            assert!(got == data, "connection {seed}: echo differs");
        }));
    }
    for t in tasks {
        within("echo of 1 MiB", t).await.unwrap();
    }
    for _ in 0..4 {
        let echoed = within("upstream outcome", outcomes.recv()).await.unwrap();
        assert_eq!(echoed.unwrap(), 1 << 20);
    }
    let c = within("connections to close", proxy.wait_counts(|c| c.live == 0)).await;
    assert_eq!(c.accepted, 4);
    assert_eq!(proxy.held_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_live_connections_and_keeps_order() {
    let (proxy, _outcomes) = setup().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    round_trip(&mut s, b"warm").await;

    // Set on a connection already open: it applies from the next chunk.
    proxy.set_latency(Duration::from_millis(50));
    let start = Instant::now();
    round_trip(&mut s, b"x").await;
    let rtt = start.elapsed();
    assert!(rtt >= Duration::from_millis(90), "round trip took {rtt:?}");

    // Many small writes, and the latency lowered halfway: later chunks are due before
    // earlier ones, and must still come out after them.
    let msgs = numbered(2000);
    let expected: Vec<u8> = msgs.concat();
    let (mut r, mut w) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; expected.len()];
        r.read_exact(&mut got).await.unwrap();
        assert!(got == expected, "echo out of order");
    });
    for (i, m) in msgs.iter().enumerate() {
        if i == msgs.len() / 2 {
            proxy.set_latency(Duration::ZERO);
        }
        w.write_all(m).await.unwrap();
    }
    within("ordered echo", reader).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limits_throughput() {
    let (proxy, _outcomes) = setup().await;
    proxy.set_bandwidth(Some(100_000));
    let data = random_bytes(50_000, 7);
    let s = TcpStream::connect(proxy.addr()).await.unwrap();
    let start = Instant::now();
    let got = within("throttled echo", echo_all(s, data.clone())).await;
    let took = start.elapsed();
    assert!(got == data, "echo differs");
    // 50 kB at 100 kB/s is half a second each way (the two directions overlap); allow for
    // the first slice going out at once.
    assert!(took >= Duration::from_millis(400), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_holds_bytes_and_release_delivers_them_in_order() {
    let (proxy, _outcomes) = setup().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    round_trip(&mut s, b"before").await;

    proxy.set_stalled(true);
    assert!(proxy.is_stalled());
    let msgs = numbered(1000);
    let expected: Vec<u8> = msgs.concat();
    for m in &msgs {
        s.write_all(m).await.unwrap();
    }
    // A connection opened during the stall is accepted and held as well.
    let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
    late.write_all(b"late").await.unwrap();
    let total = expected.len() + 4;
    until("proxy to hold every byte", || proxy.held_bytes() == total).await;

    let mut buf = [0u8; 16];
    let leaked = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
    assert!(leaked.is_err(), "bytes passed a stalled proxy: {leaked:?}");
    assert_eq!(proxy.connections(), 2);

    proxy.set_stalled(false);
    let mut got = vec![0u8; expected.len()];
    within("released echo", s.read_exact(&mut got))
        .await
        .unwrap();
    assert!(got == expected, "released bytes lost or reordered");
    let mut got = [0u8; 4];
    within("late echo", late.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"late");
    round_trip(&mut s, b"after").await;
    assert_eq!(proxy.held_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_bounds_held_bytes_with_backpressure() {
    let (proxy, _outcomes) = setup().await;
    proxy.set_stalled(true);
    let data = random_bytes(32 << 20, 3);
    let s = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let data = data.clone();
        let written = written.clone();
        tokio::spawn(async move {
            // Counted per write call, so that the count is exactly what the kernel took.
            let mut off = 0;
            while off < data.len() {
                let n = w.write(&data[off..]).await.unwrap();
                off += n;
                written.fetch_add(n, Ordering::Relaxed);
            }
            w.shutdown().await.unwrap();
        })
    };
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    });

    // More than the cap gets sent: the proxy's reader can only stop while it has a chunk
    // in hand that does not fit.
    until("the client to send more than the cap", || {
        written.load(Ordering::Relaxed) > MAX_HELD_PER_DIRECTION
    })
    .await;
    until("the proxy to fill its buffer", || {
        proxy.held_bytes() >= MAX_HELD_PER_DIRECTION - (64 << 10)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = proxy.held_bytes();
    assert!(held <= MAX_HELD_PER_DIRECTION, "held {held} bytes");

    proxy.set_stalled(false);
    within("writer to finish", writer).await.unwrap();
    let got = within("echo of 32 MiB", reader).await.unwrap();
    assert!(got == data, "echo differs after backpressure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_resets_both_sides_and_new_connections_work() {
    let (proxy, mut outcomes) = setup().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"hello").await;
    within("connection to be live", proxy.wait_counts(|c| c.live == 1)).await;

    proxy.reset_all();
    expect_reset(&mut s).await;
    let upstream = within("upstream outcome", outcomes.recv()).await.unwrap();
    assert_eq!(
        upstream.unwrap_err().kind(),
        ErrorKind::ConnectionReset,
        "the upstream side must see a reset too"
    );
    let c = within("connections to drop", proxy.wait_counts(|c| c.live == 0)).await;
    assert_eq!((c.resets, c.reset_connections), (1, 1));

    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"again").await;
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(proxy.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_during_stall_discards_held_bytes() {
    let (proxy, _outcomes) = setup().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"hello").await;
    proxy.set_stalled(true);
    s.write_all(b"lost on the dead link").await.unwrap();
    until("bytes to be held", || proxy.held_bytes() > 0).await;

    proxy.reset_all();
    expect_reset(&mut s).await;
    within("connections to drop", proxy.wait_counts(|c| c.live == 0)).await;
    assert_eq!(proxy.held_bytes(), 0);

    proxy.set_stalled(false);
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"reconnected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_fails_connect_then_read() {
    let (proxy, _outcomes) = setup().await;
    proxy.set_refusing(true);
    // The kernel completes the handshake before the proxy accepts, but the reset can still
    // come before the connect future has looked at the socket: then the connect reports it.
    match TcpStream::connect(proxy.addr()).await {
        Ok(mut s) => expect_reset(&mut s).await,
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    let c = within(
        "refusal to be counted",
        proxy.wait_counts(|c| c.refused == 1),
    )
    .await;
    assert_eq!((c.accepted, c.live), (0, 0));

    proxy.set_refusing(false);
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"welcome").await;
    assert_eq!(proxy.accepted(), 1);
}

fn chaos_config(seed: u64) -> ChaosConfig {
    ChaosConfig {
        seed,
        min_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(40),
        stall_min: Duration::from_millis(10),
        stall_max: Duration::from_millis(30),
        reset_probability: 0.5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_resets_and_stalls_until_stopped() {
    let (proxy, _outcomes) = setup().await;
    let mut victim = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut victim, b"hello").await;

    let chaos = proxy.chaos(chaos_config(42));
    until("chaos to reset and stall", || {
        let s = chaos.stats();
        s.resets >= 1 && s.stalls >= 1
    })
    .await;
    let stats = chaos.stop();
    assert!(stats.resets >= 1 && stats.stalls >= 1, "{stats:?}");
    assert!(!proxy.is_stalled(), "stopping chaos must release its stall");
    let c = proxy.counts();
    assert_eq!(c.resets, stats.resets);
    assert!(c.reset_connections >= 1);
    expect_reset(&mut victim).await;

    // Several of its longest intervals: a chaos that kept running would act in this time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.counts().resets, stats.resets);
    assert!(!proxy.is_stalled());
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"calm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_is_deterministic_given_its_seed() {
    async fn events(seed: u64, n: usize) -> Vec<linnet_tests::proxy::ChaosEvent> {
        let (proxy, _outcomes) = setup().await;
        let chaos = proxy.chaos(chaos_config(seed));
        until("chaos events", || chaos.stats().events.len() >= n).await;
        let mut events = chaos.stop().events;
        events.truncate(n);
        events
    }
    let a = events(42, 5).await;
    let b = events(42, 5).await;
    let c = events(43, 5).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_stops_the_proxy() {
    let (proxy, _outcomes) = setup().await;
    let addr = proxy.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, b"hello").await;

    let clone = proxy.clone();
    drop(proxy);
    round_trip(&mut s, b"still here").await;

    drop(clone);
    expect_reset(&mut s).await;
    within("listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
