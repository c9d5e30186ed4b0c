//! The media path end to end: two real MediaSessions in one process, real sockets, real
//! Opus and VP8 (from ffmpeg), optionally through the lead's coturn. No mocks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use linnet_call::audio::{dominant_frequency, Tone, WavRecorder, SAMPLE_RATE};
use linnet_call::engine::{EngineEvent, IceServer, MediaConfig, MediaSession};
use linnet_call::video::{FrameCollector, FrameList, IvfReader};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Generous: these guard against hangs, they do not measure anything.
const HANG: Duration = Duration::from_secs(20);

fn loopback(video: bool) -> MediaConfig {
    MediaConfig {
        video,
        bind_addrs: vec!["127.0.0.1:0".into()],
        ..Default::default()
    }
}

struct Side {
    session: Arc<MediaSession>,
    /// Every event but local candidates (those go straight to the other side).
    events: UnboundedReceiver<EngineEvent>,
    seen: Vec<String>,
}

impl Side {
    async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&EngineEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    let hit = pred(&e);
                    self.seen.push(format!("{e:?}"));
                    if hit {
                        return;
                    }
                }
                Ok(None) => panic!("event stream ended waiting for {what}; saw {:?}", self.seen),
                Err(_) => panic!("timed out waiting for {what}; saw {:?}", self.seen),
            }
        }
    }
}

/// Two sessions whose local candidates are trickled to each other as they are gathered, the
/// way Jingle transport-info carries them.
async fn pair(a_cfg: MediaConfig, b_cfg: MediaConfig) -> (Side, Side) {
    let (a_tx, mut a_rx) = unbounded_channel();
    let (b_tx, mut b_rx) = unbounded_channel();
    let a = Arc::new(MediaSession::new(a_cfg, a_tx).await.expect("session a"));
    let b = Arc::new(MediaSession::new(b_cfg, b_tx).await.expect("session b"));
    let (a_ev_tx, a_ev_rx) = unbounded_channel();
    let (b_ev_tx, b_ev_rx) = unbounded_channel();
    for (rx, to, out) in [
        (&mut a_rx, Arc::clone(&b), a_ev_tx),
        (&mut b_rx, Arc::clone(&a), b_ev_tx),
    ] {
        let mut rx = std::mem::replace(rx, unbounded_channel().1);
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                match e {
                    EngineEvent::LocalCandidate(c) => {
                        to.add_remote_candidate(c).await.expect("remote candidate");
                    }
                    other => {
                        let _ = out.send(other);
                    }
                }
            }
        });
    }
    (
        Side {
            session: a,
            events: a_ev_rx,
            seen: vec![],
        },
        Side {
            session: b,
            events: b_ev_rx,
            seen: vec![],
        },
    )
}

/// Offer/answer, then both sides connected; returns how long ICE+DTLS took (reported, never
/// asserted).
async fn negotiate(a: &mut Side, b: &mut Side, relayed: bool) -> Duration {
    let start = Instant::now();
    let offer = a.session.create_offer().await.expect("offer");
    let answer = b.session.accept_offer(&offer).await.expect("answer");
    a.session.set_answer(&answer).await.expect("set answer");
    for s in [&mut *a, &mut *b] {
        s.wait_for("Connected", |e| matches!(e, EngineEvent::Connected { .. }))
            .await;
        let last = s.seen.last().unwrap().clone();
        assert_eq!(last, format!("{:?}", EngineEvent::Connected { relayed }));
    }
    start.elapsed()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_wav(path: &Path) -> Vec<i16> {
    let r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, SAMPLE_RATE);
    r.into_samples::<i16>().map(Result::unwrap).collect()
}

/// 440 Hz one way, 1000 Hz the other; each side records what it hears.
async fn two_way_tone(mut a: Side, mut b: Side, relayed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (a_wav, b_wav) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let (a_rec, b_rec) = (
        WavRecorder::create(&a_wav).unwrap(),
        WavRecorder::create(&b_wav).unwrap(),
    );
    a.session.set_audio_source(Box::new(Tone::new(440.0, 0.4)));
    b.session.set_audio_source(Box::new(Tone::new(1000.0, 0.4)));
    a.session.set_audio_sink(Box::new(a_rec.clone()));
    b.session.set_audio_sink(Box::new(b_rec.clone()));

    let took = negotiate(&mut a, &mut b, relayed).await;
    eprintln!("ICE+DTLS (relayed: {relayed}) took {took:?}");
    for s in [&mut a, &mut b] {
        s.wait_for("FirstAudio", |e| matches!(e, EngineEvent::FirstAudio))
            .await;
    }
    // 1.5 s of audio each way.
    let (sa, sb) = (Arc::clone(&a.session), Arc::clone(&b.session));
    wait_until("75 decoded frames on both sides", || {
        sa.stats().audio_frames_decoded >= 75 && sb.stats().audio_frames_decoded >= 75
    })
    .await;
    eprintln!("stats a: {:?}", a.session.stats());
    eprintln!("stats b: {:?}", b.session.stats());
    a.session.close().await;
    b.session.close().await;
    a.wait_for("Closed", |e| matches!(e, EngineEvent::Closed))
        .await;
    a_rec.finish().unwrap();
    b_rec.finish().unwrap();

    let heard_by_a = dominant_frequency(&read_wav(&a_wav), SAMPLE_RATE);
    let heard_by_b = dominant_frequency(&read_wav(&b_wav), SAMPLE_RATE);
    eprintln!("a heard {heard_by_a} Hz, b heard {heard_by_b} Hz");
    assert!((heard_by_a - 1000.0).abs() < 3.0, "a heard {heard_by_a} Hz");
    assert!((heard_by_b - 440.0).abs() < 3.0, "b heard {heard_by_b} Hz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_audio_both_ways() {
    let (a, b) = pair(loopback(false), loopback(false)).await;
    assert!(a.session.local_fingerprint().unwrap().1.contains(':'));
    two_way_tone(a, b, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprints_are_exchanged_in_sdp() {
    let (mut a, mut b) = pair(loopback(false), loopback(false)).await;
    let (alg, fp) = a.session.local_fingerprint().unwrap();
    assert_eq!(alg, "sha-256");
    assert_eq!(fp.len(), 32 * 3 - 1);
    negotiate(&mut a, &mut b, false).await;
    assert_eq!(
        b.session.remote_fingerprint().await,
        Some((alg.clone(), fp.clone()))
    );
    assert!(
        b.session
            .remote_fingerprint_ok(&alg, &fp.to_lowercase())
            .await
    );
    assert!(!b.session.remote_fingerprint_ok(&alg, "AB:CD").await);
    a.session.close().await;
    b.session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_an_error() {
    let (tx, _rx) = unbounded_channel();
    let s = MediaSession::new(loopback(false), tx).await.unwrap();
    for bad in ["", "garbage", "v=0\r\nm=audio x\r\n", "\u{0}\u{1}\u{2}"] {
        assert!(s.accept_offer(bad).await.is_err(), "{bad:?} accepted");
        assert!(s.set_answer(bad).await.is_err(), "{bad:?} accepted");
    }
    for bad in ["", "candidate:\r\nx", &"x".repeat(5000)] {
        let c = linnet_call::engine::Candidate {
            mid: "0".into(),
            candidate: bad.to_string(),
        };
        assert!(s.add_remote_candidate(c).await.is_err());
    }
    s.close().await;
    assert!(s.create_offer().await.is_err());
}

fn servers_env() -> std::collections::HashMap<String, String> {
    // As the other server tests: LINNET_SERVERS_ENV, else the file scripts/servers writes.
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.run/servers.env");
    let path = match std::env::var("LINNET_SERVERS_ENV") {
        Ok(p) => p,
        Err(_) if default.exists() => default.to_string_lossy().into_owned(),
        Err(_) => panic!(
            "no servers.env: this test needs coturn; run `scripts/servers start turn` \
             (or point LINNET_SERVERS_ENV at its env file)"
        ),
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {path}: {e}; start the servers with `scripts/servers start turn`")
    });
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// TURN REST credentials (coturn `use-auth-secret`): user "<expiry>:<anything>", password
/// base64(HMAC-SHA1(secret, user)).
fn turn_config(env: &std::collections::HashMap<String, String>) -> MediaConfig {
    use base64::Engine as _;
    use hmac::Mac as _;
    let get = |k: &str| {
        env.get(k)
            .unwrap_or_else(|| panic!("{k} missing from LINNET_SERVERS_ENV"))
            .clone()
    };
    let (host, port, secret) = (get("TURN_HOST"), get("TURN_PORT"), get("TURN_SECRET"));
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let username = format!("{expiry}:linnet-call-test");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    MediaConfig {
        ice_servers: vec![IceServer {
            urls: vec![format!("turn:{host}:{port}?transport=udp")],
            username: Some(username),
            credential: Some(credential),
        }],
        relay_only: true,
        bind_addrs: vec!["127.0.0.1:0".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_audio_through_coturn() {
    let env = servers_env();
    let cfg = turn_config(&env);
    let (host, port) = (&env["TURN_HOST"], &env["TURN_PORT"]);
    // A STUN Binding request first, so a stopped coturn is reported as such rather than as
    // an ICE timeout.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[7; 12]);
    probe.send_to(&req, format!("{host}:{port}")).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        probe.recv_from(&mut buf).is_ok(),
        "no STUN answer from the TURN server at {host}:{port}: is coturn running? \
         Start it with `scripts/servers start turn`"
    );
    let (a, b) = pair(cfg.clone(), cfg).await;
    two_way_tone(a, b, true).await;
}

/// A VP8 IVF made by ffmpeg: 2 s of the test pattern at 15 fps.
fn make_ivf(dir: &Path) -> PathBuf {
    let ffmpeg = Path::new("/usr/bin/ffmpeg");
    assert!(
        ffmpeg.exists(),
        "ffmpeg is needed to make the test video (apt-get install ffmpeg)"
    );
    let out = dir.join("out.ivf");
    let status = std::process::Command::new(ffmpeg)
        .args(["-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=15")
        .args(["-t", "2", "-c:v", "libvpx", "-b:v", "300k", "-y"])
        .arg(&out)
        .status()
        .expect("running ffmpeg");
    assert!(status.success(), "ffmpeg failed to make the VP8 file");
    out
}

fn sent_frames(path: &Path) -> (FrameList, Vec<String>) {
    let frames = IvfReader::read_all(path).expect("our own IVF parses");
    assert!(
        frames.len() >= 20,
        "ffmpeg made only {} frames",
        frames.len()
    );
    let hashes = frames
        .iter()
        .map(|f| linnet_call::video::frame_sha256(&f.data))
        .collect();
    (
        FrameList::new(frames.into_iter().map(|f| (f.data, f.duration))),
        hashes,
    )
}

async fn expect_frames(side: &Side, collector: &FrameCollector, want: &[String]) {
    let c = collector.clone();
    let n = want.len();
    let result = tokio::time::timeout(HANG, async {
        while c.len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let got = collector.hashes();
    let missing: Vec<usize> = (0..n).filter(|&i| !got.contains(&want[i])).collect();
    assert!(
        result.is_ok(),
        "received {} of {n} frames, missing indexes {missing:?}; stats {:?}",
        got.len(),
        side.session.stats()
    );
    assert_eq!(got, want, "received frames differ from the sent ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_video_frames_arrive_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (source, hashes) = sent_frames(&make_ivf(dir.path()));
    let (mut a, mut b) = pair(loopback(true), loopback(false)).await;
    a.session.set_video_source(Box::new(source));
    let collector = FrameCollector::new();
    b.session.set_video_sink(Box::new(collector.clone()));
    negotiate(&mut a, &mut b, false).await;
    expect_frames(&b, &collector, &hashes).await;
    eprintln!("stats a: {:?}", a.session.stats());
    eprintln!("stats b: {:?}", b.session.stats());
    a.session.close().await;
    b.session.close().await;
}

/// An audio call turned into a video call by the side that made the first offer
/// (`by_offerer`) or by the one that answered it: the new offer goes the other way.
async fn upgrade_to_video(by_offerer: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (source, hashes) = sent_frames(&make_ivf(dir.path()));
    let (mut a, mut b) = pair(loopback(false), loopback(false)).await;
    negotiate(&mut a, &mut b, false).await;
    let (sender, receiver) = if by_offerer {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let collector = FrameCollector::new();
    receiver.session.set_video_sink(Box::new(collector.clone()));
    receiver
        .wait_for("FirstAudio", |e| matches!(e, EngineEvent::FirstAudio))
        .await;

    sender.session.set_video_source(Box::new(source));
    let offer = sender.session.add_video().await.expect("content-add offer");
    assert!(
        offer.contains("m=video"),
        "no video section in the new offer"
    );
    let answer = receiver.session.accept_offer(&offer).await.expect("answer");
    sender
        .session
        .set_answer(&answer)
        .await
        .expect("set answer");
    expect_frames(receiver, &collector, &hashes).await;
    // Audio carried on across the renegotiation.
    let before = receiver.session.stats().audio_frames_decoded;
    let s = Arc::clone(&receiver.session);
    wait_until("audio after the upgrade", || {
        s.stats().audio_frames_decoded > before + 10
    })
    .await;
    a.session.close().await;
    b.session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_call_upgraded_to_video() {
    upgrade_to_video(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_call_upgraded_to_video_by_the_answerer() {
    upgrade_to_video(false).await;
}
