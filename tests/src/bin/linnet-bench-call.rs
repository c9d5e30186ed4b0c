//! `scripts/bench-call`: how long a call takes from "accept" to audio, direct and relayed
//! through TURN, in milliseconds and in round trips; and the audio round trip through two
//! Linnet stacks. Figures, not assertions: nothing fails on a slow result, only when a call
//! does not connect (the exit status is then 1).
//!
//! The program measures whatever network it runs in: `scripts/bench-call` runs it twice in a
//! network namespace of its own with its own Prosody and coturn, once as is (0 ms) and once
//! with every loopback packet held 50 ms (100 ms RTT), and passes the nominal RTT as
//! `--rtt-label`. The RTT the figures are divided by is measured here, in the same run:
//!
//!   RTT = the median of 5 XMPP pings from the caller to its server (`Client::sync`, one
//!   IQ round trip on the established c2s stream).
//!
//! In the delayed namespace every packet crosses loopback once, so this is also the media
//! round trip between the two clients (direct) and between a client and coturn; a stanza
//! from one client to the other through the server takes one RTT (two 0.5-RTT legs), and
//! relayed media from one client to the other 1 RTT (client → coturn → client; coturn's
//! own relay-to-relay hop is not delayed), so the relayed media round trip is 2 RTT.
//! At 0 ms the RTT is a fraction of a millisecond and figures in RTTs mean nothing: they are
//! printed as "-".
//!
//! (i) accept → first audio: A calls B (both on Prosody, contacts of each other, call media
//!     bound to 127.0.0.1, `relay_calls` on for the relayed case); B's phone rings for
//!     `--ring-ms` (the time the issue wants spent gathering candidates and allocating TURN);
//!     then the clock starts at B's `accept_call` and stops, on each side, at the first
//!     decoded frame that carries the other side's tone (peak above ≈ -27 dBFS; each side
//!     sends an endless tone from its first frame, so frames of silence decoded before it,
//!     if any, do not count). Both are reported: at the callee (B hears A) and at the
//!     caller (A hears B). Also shown, for the breakdown: accept → "connected" (ICE + DTLS up,
//!     as the chat-list snapshot says) on each side.
//! (ii) audio round trip: in one more call, A's source sends a 20 ms 1 kHz blip every 500 ms
//!     (silence between); B echoes what it decodes straight back into its own source (a queue
//!     of at most 3 frames between B's sink and B's source); A times each blip from the
//!     moment its frame is taken from A's source (then encoded and sent) to the first frame
//!     A decodes with the blip's energy. Median, min and max over `--bursts` blips. This
//!     includes the network RTT, two encodes and decodes, and 0–20 ms of B's frame pacing.
//!
//! Options: `--runs N` calls per case (5), `--path direct|relayed` (both), `--ring-ms MS`
//! (1000), `--bursts N` (10; 0: no round-trip figure), `--rtt-label MS` (the nominal RTT for
//! the table titles; 0). Servers: `LINNET_SERVERS_ENV` (else `.run/servers.env`), Prosody
//! and coturn. `LINNET_TEST_LOG=<tracing filter>` prints the clients' logs with timestamps
//! (add `linnet_bench_call=info` for this program's marks: the accept, each side's first tone).
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linnet_call::audio::{AudioSink, AudioSource, Tone, FRAME_SAMPLES};
use linnet_client::calls::{CallDirection, CallId, CallItem, CallMedia, CallOptions, CallState};
use linnet_client::{ChatListSnapshot, ClientOptions, Subscription};
use linnet_tests::bench::{arg, median};
use linnet_tests::*;
use tokio::sync::watch;

/// A decoded frame "carries signal" when its peak is above this (≈ -27 dBFS). The tones are
/// sent at 0.3 of full scale (peak ≈ 9800), Opus' decoded silence stays far below.
const SIGNAL_PEAK: i16 = 1500;
/// How long a call may take to connect and carry audio before the run counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Round-trip blips: one every this many 20 ms frames (500 ms).
const BURST_PERIOD_FRAMES: u64 = 25;
/// Frames of silence before the first blip (the call settles; the echo path connects).
const BURST_WARMUP_FRAMES: u64 = 50;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn peak(pcm: &[i16]) -> i16 {
    pcm.iter().map(|s| s.saturating_abs()).max().unwrap_or(0)
}

/// A sink that notes when decoded audio first arrived at all, and first carried signal
/// (and logs the latter, for lining it up with the clients' logs).
#[derive(Clone)]
struct FirstSignal {
    at: Arc<Mutex<(Option<Instant>, Option<Instant>)>>,
    who: &'static str,
}

impl FirstSignal {
    fn new(who: &'static str) -> Self {
        Self {
            at: Arc::default(),
            who,
        }
    }
    fn first_frame(&self) -> Option<Instant> {
        lock(&self.at).0
    }
    fn first_signal(&self) -> Option<Instant> {
        lock(&self.at).1
    }
}

impl AudioSink for FirstSignal {
    fn frame(&mut self, pcm: &[i16]) {
        let now = Instant::now();
        let loud = peak(pcm) > SIGNAL_PEAK;
        let mut g = lock(&self.at);
        g.0.get_or_insert(now);
        if loud && g.1.is_none() {
            g.1 = Some(now);
            tracing::info!("bench: {} hears the tone", self.who);
        }
    }
}

/// A's source for the round trip: silence with a 20 ms 1 kHz blip every 500 ms; notes when
/// each blip's frame is taken (it is encoded and sent right after).
struct Blips {
    frame: u64,
    tone: Tone,
    sent: Arc<Mutex<Vec<Instant>>>,
}

impl AudioSource for Blips {
    fn next_frame(&mut self) -> Option<Vec<i16>> {
        let n = self.frame;
        self.frame += 1;
        if n >= BURST_WARMUP_FRAMES && (n - BURST_WARMUP_FRAMES).is_multiple_of(BURST_PERIOD_FRAMES)
        {
            lock(&self.sent).push(Instant::now());
            self.tone.next_frame()
        } else {
            Some(vec![0; FRAME_SAMPLES])
        }
    }
}

/// A's sink for the round trip: notes each onset of signal after at least 5 quiet frames.
#[derive(Clone, Default)]
struct Onsets(Arc<Mutex<(usize, Vec<Instant>)>>);

impl AudioSink for Onsets {
    fn frame(&mut self, pcm: &[i16]) {
        let now = Instant::now();
        let mut g = lock(&self.0);
        if peak(pcm) > SIGNAL_PEAK {
            if g.0 >= 5 || g.1.is_empty() {
                g.1.push(now);
            }
            g.0 = 0;
        } else {
            g.0 += 1;
        }
    }
}

/// B's echo: what B decodes goes back out as B's next frames (at most 3 frames queued, so a
/// backlog cannot build up and add to the measured latency).
#[derive(Clone, Default)]
struct Echo(Arc<Mutex<VecDeque<Vec<i16>>>>);

impl AudioSink for Echo {
    fn frame(&mut self, pcm: &[i16]) {
        let mut q = lock(&self.0);
        q.push_back(pcm.to_vec());
        while q.len() > 3 {
            q.pop_front();
        }
    }
}

impl AudioSource for Echo {
    fn next_frame(&mut self) -> Option<Vec<i16>> {
        Some(
            lock(&self.0)
                .pop_front()
                .unwrap_or_else(|| vec![0; FRAME_SAMPLES]),
        )
    }
}

/// The calls of one client as its chat-list snapshots show them, with the instant each
/// call was first seen in each state.
struct CallWatch {
    rx: watch::Receiver<Vec<CallItem>>,
    seen: Arc<Mutex<HashMap<(CallId, &'static str), Instant>>>,
    _sub: Subscription,
}

fn state_name(s: &CallState) -> &'static str {
    match s {
        CallState::Ringing { .. } => "ringing",
        CallState::Connecting => "connecting",
        CallState::Connected { .. } => "connected",
        CallState::Ended { .. } => "ended",
    }
}

impl CallWatch {
    fn new(c: &TestClient) -> CallWatch {
        let (tx, rx) = watch::channel(c.client.calls());
        let seen: Arc<Mutex<HashMap<(CallId, &'static str), Instant>>> = Arc::default();
        let s2 = Arc::clone(&seen);
        let sub = c
            .client
            .subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
                let now = Instant::now();
                {
                    let mut seen = lock(&s2);
                    for i in &s.calls {
                        seen.entry((i.id, state_name(&i.state))).or_insert(now);
                    }
                }
                tx.send_replace(s.calls.clone());
            });
        CallWatch {
            rx,
            seen,
            _sub: sub,
        }
    }

    fn seen(&self, id: CallId, state: &'static str) -> Option<Instant> {
        lock(&self.seen).get(&(id, state)).copied()
    }

    async fn wait<F: Fn(&CallItem) -> bool>(
        &self,
        what: &str,
        pred: F,
    ) -> Result<CallItem, String> {
        let mut rx = self.rx.clone();
        let fut = async {
            loop {
                if let Some(i) = rx.borrow_and_update().iter().find(|i| pred(i)) {
                    return Ok(i.clone());
                }
                if rx.changed().await.is_err() {
                    return Err(format!("the client went away while waiting for {what}"));
                }
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "timed out waiting for {what}; calls: {:?}",
                self.rx.borrow()
            )),
        }
    }
}

struct Side {
    c: TestClient,
    calls: CallWatch,
}

/// One call's figures, in seconds from B's `accept_call`.
struct CallTimes {
    callee_audio: f64,
    caller_audio: f64,
    callee_connected: Option<f64>,
    caller_connected: Option<f64>,
    /// Any decoded frame, tone or not (shows whether silence came first).
    callee_first_frame: Option<f64>,
    caller_first_frame: Option<f64>,
    relayed: bool,
    verified: bool,
}

fn since(t0: Instant, t: Option<Instant>) -> Option<f64> {
    t.map(|t| t.saturating_duration_since(t0).as_secs_f64())
}

/// A calls B, B's phone rings for `ring`, B accepts with `b_media`; returns the instant of
/// the accept, the call's ids at A and B, and whether it is relayed, once connected.
async fn place_call(
    a: &Side,
    b: &Side,
    ring: Duration,
    a_media: CallMedia,
    b_media: CallMedia,
) -> Result<(Instant, CallId, CallId), String> {
    let id =
        a.c.client
            .start_call(a.c.account, &b.c.jid, CallOptions { video: false }, a_media)
            .await
            .map_err(|e| format!("start_call: {e}"))?;
    let incoming = b
        .calls
        .wait("the call ringing at the callee", |i| {
            i.direction == CallDirection::Incoming && matches!(i.state, CallState::Ringing { .. })
        })
        .await?;
    tokio::time::sleep(ring).await;
    let t0 = Instant::now();
    tracing::info!("bench: the callee accepts");
    b.c.client
        .accept_call(incoming.id, b_media)
        .map_err(|e| format!("accept_call: {e}"))?;
    Ok((t0, id, incoming.id))
}

async fn hang_up(a: &Side, b: &Side, a_id: CallId, b_id: CallId) -> Result<(), String> {
    a.c.client
        .end_call(a_id)
        .map_err(|e| format!("end_call: {e}"))?;
    let ended = |id: CallId| move |i: &CallItem| i.id == id && state_name(&i.state) == "ended";
    a.calls.wait("the call ended (caller)", ended(a_id)).await?;
    b.calls.wait("the call ended (callee)", ended(b_id)).await?;
    // Let both media sessions close (TURN allocations released) before the next call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// Fails the run if the call ended before `done` is true.
async fn wait_media<F: Fn() -> bool>(
    a: &Side,
    b: &Side,
    a_id: CallId,
    b_id: CallId,
    what: &str,
    done: F,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        for (side, id) in [(a, a_id), (b, b_id)] {
            if let Some(i) = side.c.client.calls().into_iter().find(|i| i.id == id) {
                if let CallState::Ended { reason, .. } = &i.state {
                    return Err(format!("the call ended before {what}: {reason:?}"));
                }
            }
        }
        if start.elapsed() > CALL_TIMEOUT {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn first_audio(a: &Side, b: &Side, ring: Duration) -> Result<CallTimes, String> {
    let a_heard = FirstSignal::new("the caller");
    let b_heard = FirstSignal::new("the callee");
    let media = |hz: f32, sink: &FirstSignal| CallMedia {
        audio_source: Some(Box::new(Tone::new(hz, 0.3))),
        audio_sink: Some(Box::new(sink.clone())),
        ..CallMedia::default()
    };
    let (t0, a_id, b_id) =
        place_call(a, b, ring, media(440.0, &a_heard), media(1000.0, &b_heard)).await?;
    wait_media(
        a,
        b,
        a_id,
        b_id,
        "both sides heard the other's tone",
        || a_heard.first_signal().is_some() && b_heard.first_signal().is_some(),
    )
    .await?;
    let on_a = a
        .calls
        .wait("connected (caller)", |i| {
            i.id == a_id && state_name(&i.state) == "connected"
        })
        .await?;
    let relayed = matches!(on_a.state, CallState::Connected { relayed: true, .. });
    // Whether the DTLS fingerprints went through OMEMO (a first call may have fetched a
    // bundle for it on the way).
    let verified = on_a.verified_by.is_some();
    let times = CallTimes {
        callee_audio: since(t0, b_heard.first_signal()).unwrap_or_default(),
        caller_audio: since(t0, a_heard.first_signal()).unwrap_or_default(),
        callee_connected: since(t0, b.calls.seen(b_id, "connected")),
        caller_connected: since(t0, a.calls.seen(a_id, "connected")),
        callee_first_frame: since(t0, b_heard.first_frame()),
        caller_first_frame: since(t0, a_heard.first_frame()),
        relayed,
        verified,
    };
    hang_up(a, b, a_id, b_id).await?;
    Ok(times)
}

/// The audio round trip A → B → A, one value per blip heard back.
async fn round_trip(a: &Side, b: &Side, ring: Duration, bursts: usize) -> Result<Vec<f64>, String> {
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let heard = Onsets::default();
    let echo = Echo::default();
    let a_media = CallMedia {
        audio_source: Some(Box::new(Blips {
            frame: 0,
            tone: Tone::new(1000.0, 0.5),
            sent: Arc::clone(&sent),
        })),
        audio_sink: Some(Box::new(heard.clone())),
        ..CallMedia::default()
    };
    let b_media = CallMedia {
        audio_source: Some(Box::new(echo.clone())),
        audio_sink: Some(Box::new(echo)),
        ..CallMedia::default()
    };
    let (_, a_id, b_id) = place_call(a, b, ring, a_media, b_media).await?;
    // The last blip needs up to a period to come back.
    wait_media(a, b, a_id, b_id, "the blips sent", || {
        lock(&sent).len() > bursts
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(BURST_PERIOD_FRAMES * 20 * 2)).await;
    hang_up(a, b, a_id, b_id).await?;
    let sent = lock(&sent).clone();
    let onsets = lock(&heard.0).1.clone();
    // Each onset belongs to the latest blip sent before it, if that was less than a period
    // earlier (anything else is not an echo of a blip).
    let period = Duration::from_millis(BURST_PERIOD_FRAMES * 20);
    let mut out = Vec::new();
    for h in onsets {
        if let Some(s) = sent.iter().rev().find(|s| **s <= h) {
            let d = h.duration_since(*s);
            if d < period {
                out.push(d.as_secs_f64());
            }
        }
    }
    out.truncate(bursts);
    Ok(out)
}

/// The median of 5 XMPP pings from `c` to its server, in seconds.
async fn xmpp_rtt(c: &TestClient) -> f64 {
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        c.client.sync(c.account).await.expect("XMPP ping");
        v.push(t.elapsed().as_secs_f64());
    }
    median(&mut v)
}

fn ms(s: f64) -> String {
    format!("{:.0} ms", s * 1e3)
}

/// `median [min–max]` in ms, and in RTTs when the RTT is long enough to mean something.
fn stat(v: &[f64], rtt: Option<f64>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut v = v.to_vec();
    let med = median(&mut v);
    let (lo, hi) = (v[0], v[v.len() - 1]);
    let ms = format!("{:>5.0} ms [{:.0}–{:.0}]", med * 1e3, lo * 1e3, hi * 1e3);
    match rtt {
        Some(r) => format!(
            "{ms:<22} {:>4.1} RTT [{:.1}–{:.1}]",
            med / r,
            lo / r,
            hi / r
        ),
        None => format!("{ms:<22}    - RTT"),
    }
}

fn main() {
    let runs: usize = arg("--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(1);
    let bursts: usize = arg("--bursts").and_then(|n| n.parse().ok()).unwrap_or(10);
    let ring = Duration::from_millis(
        arg("--ring-ms")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000),
    );
    let label: u64 = arg("--rtt-label").and_then(|n| n.parse().ok()).unwrap_or(0);
    let paths: Vec<bool> = match arg("--path").as_deref() {
        Some("direct") => vec![false],
        Some("relayed") => vec![true],
        None => vec![false, true],
        Some(other) => panic!("--path direct|relayed, not {other}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let failed = rt.block_on(async {
        let mut failed = false;
        for relayed in paths {
            if let Err(e) = case(relayed, label, runs, bursts, ring).await {
                println!("  FAILED: {e}");
                failed = true;
            }
        }
        failed
    });
    if failed {
        std::process::exit(1);
    }
}

async fn case(
    relayed: bool,
    label: u64,
    runs: usize,
    bursts: usize,
    ring: Duration,
) -> Result<(), String> {
    let path = if relayed {
        "relayed (TURN only)"
    } else {
        "direct"
    };
    println!("\n== {path}, nominal {label} ms RTT ==");
    let opts = ClientOptions {
        relay_calls: relayed,
        ..options()
    };
    let (a, b) = contacts_pair_with(Server::Prosody, opts).await;
    let (a, b) = (
        Side {
            calls: CallWatch::new(&a),
            c: a,
        },
        Side {
            calls: CallWatch::new(&b),
            c: b,
        },
    );
    let rtt = xmpp_rtt(&a.c).await;
    let rtt_b = xmpp_rtt(&b.c).await;
    // Below 20 ms the RTT is processing time, not a network: no figures in RTTs.
    let per_rtt = (rtt >= 0.02).then_some(rtt);
    println!(
        "  RTT (XMPP ping to the server, median of 5): caller {}, callee {}{}",
        ms(rtt),
        ms(rtt_b),
        if per_rtt.is_none() {
            "  (loopback: figures in RTTs not meaningful)"
        } else {
            ""
        }
    );
    let mut all = Vec::new();
    for run in 0..runs {
        let t = first_audio(&a, &b, ring).await?;
        if t.relayed != relayed {
            println!(
                "  note: call {} was {} (expected {path})",
                run + 1,
                if t.relayed { "relayed" } else { "direct" }
            );
        }
        all.push(t);
    }
    let col =
        |f: &dyn Fn(&CallTimes) -> Option<f64>| -> Vec<f64> { all.iter().filter_map(f).collect() };
    println!(
        "  {runs} calls, ring {} ms before accept; from B's accept_call, median [min–max]:",
        ring.as_millis()
    );
    println!(
        "  callee hears caller's tone   {}",
        stat(&col(&|t| Some(t.callee_audio)), per_rtt)
    );
    println!(
        "  caller hears callee's tone   {}",
        stat(&col(&|t| Some(t.caller_audio)), per_rtt)
    );
    println!(
        "  (callee connected            {})",
        stat(&col(&|t| t.callee_connected), per_rtt)
    );
    println!(
        "  (caller connected            {})",
        stat(&col(&|t| t.caller_connected), per_rtt)
    );
    let silent_first = all
        .iter()
        .filter(|t| {
            t.callee_first_frame < Some(t.callee_audio)
                || t.caller_first_frame < Some(t.caller_audio)
        })
        .count();
    let verified = all.iter().filter(|t| t.verified).count();
    println!("  (DTLS fingerprints vouched for by OMEMO in {verified} of {runs} calls)");
    if silent_first > 0 {
        println!("  ({silent_first} of {runs} calls decoded frames without the tone first)");
    }
    if bursts > 0 {
        let v = round_trip(&a, &b, ring, bursts).await?;
        println!(
            "  audio round trip A -> B (echo) -> A, {} of {bursts} blips heard back: {}",
            v.len(),
            stat(&v, per_rtt)
        );
    }
    a.c.client.shutdown().await;
    b.c.client.shutdown().await;
    Ok(())
}
