//! Our calls against an independent WebRTC stack: aiortc 1.16 (PyPI) as the far end, driven
//! through tests/peers/aiortc_peer.py.
//!
//! Route: our media session (`linnet_call::engine`) and our Jingle ↔ SDP mapping
//! (`linnet_call::sdp`), not a second XMPP client. Every description that crosses between the
//! two stacks is turned into Jingle, serialised to XML, parsed back (sanitised first, as
//! received Jingle is) and turned into SDP again, exactly as the two ends of a call do; only
//! the XMPP transport in between is left out. A slixmpp Jingle peer would have needed a
//! second Jingle ↔ SDP mapping written in Python, testing that instead of ours.
//!
//! Candidates: aiortc does not trickle (its descriptions carry every candidate, gathered
//! before it answers), so its candidates travel inline in the session-initiate /
//! session-accept and are also added one by one, as the client does. Ours are trickled to it
//! as transport-info contents, then an end-of-candidates once gathering is done.
//!
//! The interpreter comes from LINNET_CALL_PYTHON (`scripts/call-peer-env` prints it);
//! the relay test needs coturn (LINNET_SERVERS_ENV, started by `scripts/servers start`).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linnet_call::audio::{dominant_frequency, AudioSource, PcmCollector, Tone, WavSource};
use linnet_call::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use linnet_call::engine::{Candidate, EngineEvent, IceServer, MediaConfig, MediaSession};
use linnet_call::sdp::{self, JingleDescription, Role, SdpType};
use linnet_call::video::{FrameCollector, FrameList, IvfReader};
use linnet_xmpp::jingle::jingle::{Action, Creator, Jingle, SessionId};
use linnet_xmpp::jingle::sanitize_jingle_element;
use linnet_xmpp::stanza_to_string;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::Mutex;

/// Generous: these guard against hangs, they measure nothing.
const HANG: Duration = Duration::from_secs(60);
/// Audio each side must have received before its frequency is checked.
const HEARD: Duration = Duration::from_millis(1500);

/// The aiortc peer process.
struct Aiortc {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Aiortc {
    async fn start() -> Self {
        let python = std::env::var("LINNET_CALL_PYTHON").unwrap_or_else(|_| {
            panic!(
                "LINNET_CALL_PYTHON is not set: it must name the Python of the aiortc venv. \
                 Run `export LINNET_CALL_PYTHON=$(scripts/call-peer-env)` in the repository \
                 (scripts/test does this)"
            )
        });
        // This file's own crate directory, not linnet_tests::repo_root(): with a target
        // directory shared between worktrees, the library may have been built from another.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aiortc_peer.py");
        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .args(std::env::var_os("LINNET_PEER_DEBUG").map(|_| "--debug"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} {}: {e}", script.display());
            });
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// One command, one answer; an `{"error"}` answer fails the test.
    async fn call(&mut self, cmd: Value) -> Value {
        let what = cmd
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let answer = match tokio::time::timeout(HANG, self.stdout.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => panic!(
                "the aiortc peer exited during {what:?} ({:?}); its stderr is above",
                self.child.try_wait()
            ),
            Ok(Err(e)) => panic!("reading the aiortc peer: {e}"),
            Err(_) => panic!("the aiortc peer did not answer {what:?} in {HANG:?}"),
        };
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("aiortc peer said {answer:?}: {e}"));
        if let Some(err) = v.get("error") {
            panic!("aiortc peer failed {what:?}: {err}");
        }
        v
    }

    async fn sdp(&mut self, cmd: Value, key: &str) -> String {
        let v = self.call(cmd).await;
        v[key].as_str().unwrap().to_owned()
    }
}

/// Through the wire: Jingle → XML → sanitised, parsed Jingle, as the receiving end sees it.
fn over_the_wire(action: Action, desc: JingleDescription) -> JingleDescription {
    let mut j = Jingle::new(action, SessionId("aiortc-interop".into()));
    j.contents = desc.contents;
    j.group = desc.group;
    let xml = stanza_to_string(&j.into());
    let mut parsed = xml.parse().unwrap_or_else(|e| panic!("{e}: {xml}"));
    sanitize_jingle_element(&mut parsed).unwrap();
    let j = Jingle::try_from(parsed).unwrap_or_else(|e| panic!("{e}: {xml}"));
    JingleDescription {
        contents: j.contents,
        group: j.group,
    }
}

/// The candidates a received session-initiate / session-accept carries, for
/// `add_remote_candidate` (what the client does besides putting them in the SDP).
fn inline_candidates(desc: &JingleDescription) -> Vec<Candidate> {
    desc.contents
        .iter()
        .flat_map(|c| sdp::transport_info_candidates(c).unwrap())
        .map(|c| Candidate {
            mid: c.mid,
            candidate: c.candidate,
        })
        .collect()
}

/// Our side of the call and what it has seen.
struct Ours {
    session: Arc<MediaSession>,
    events: UnboundedReceiver<EngineEvent>,
    seen: Vec<String>,
    heard: PcmCollector,
    video_in: FrameCollector,
}

impl Ours {
    async fn new(cfg: MediaConfig, tone_hz: f32) -> Self {
        let (tx, events) = unbounded_channel();
        let session = Arc::new(MediaSession::new(cfg, tx).await.unwrap());
        let heard = PcmCollector::new();
        let video_in = FrameCollector::new();
        session.set_audio_source(Box::new(Tone::new(tone_hz, 0.3)));
        session.set_audio_sink(Box::new(heard.clone()));
        session.set_video_sink(Box::new(video_in.clone()));
        Self {
            session,
            events,
            seen: vec![],
            heard,
            video_in,
        }
    }
}

/// Forwards our trickled candidates to aiortc as transport-info contents (made from our local
/// description's ICE credentials), and every other event to the returned receiver. Started
/// once aiortc has our description: it drops candidates that come before it.
fn trickle_to(
    mut events: UnboundedReceiver<EngineEvent>,
    local_sdp: String,
    peer: Arc<Mutex<Aiortc>>,
) -> UnboundedReceiver<EngineEvent> {
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                EngineEvent::LocalCandidate(c) => {
                    let creds = sdp::ice_credentials(&local_sdp, &c.mid).unwrap();
                    let content = match sdp::transport_info_content(
                        &c.mid,
                        Creator::Initiator,
                        &creds,
                        &c.candidate,
                    ) {
                        Ok(content) => content,
                        Err(e) => {
                            eprintln!("local candidate without a Jingle form: {e}");
                            continue;
                        }
                    };
                    let received = over_the_wire(
                        Action::TransportInfo,
                        JingleDescription {
                            contents: vec![content],
                            group: None,
                        },
                    );
                    for t in sdp::transport_info_candidates(&received.contents[0]).unwrap() {
                        let cmd = json!({"candidate": {"mid": t.mid, "candidate": t.candidate}});
                        peer.lock().await.call(cmd).await;
                    }
                }
                EngineEvent::GatheringDone => {
                    peer.lock()
                        .await
                        .call(json!({"end_of_candidates": true}))
                        .await;
                    let _ = tx.send(EngineEvent::GatheringDone);
                }
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    rx
}

impl Ours {
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

/// We call: our offer goes to aiortc as a session-initiate, its answer comes back as a
/// session-accept. Returns aiortc's answer as it arrived here (SDP).
async fn we_offer(ours: &mut Ours, peer: &Arc<Mutex<Aiortc>>) -> String {
    let offer = ours.session.create_offer().await.unwrap();
    let initiate = sdp::sdp_to_jingle(&offer, Creator::Initiator, Role::Initiator, false).unwrap();
    let received = over_the_wire(Action::SessionInitiate, initiate);
    let offer_there = sdp::jingle_to_sdp(&received, SdpType::Offer, Role::Responder).unwrap();
    let answer = peer
        .lock()
        .await
        .sdp(json!({ "offer": offer_there }), "answer")
        .await;
    eprintln!("aiortc's answer:\n{answer}");
    let accept = sdp::sdp_to_jingle(&answer, Creator::Initiator, Role::Responder, true).unwrap();
    let received = over_the_wire(Action::SessionAccept, accept);
    let answer_here = sdp::jingle_to_sdp(&received, SdpType::Answer, Role::Initiator).unwrap();
    ours.session.set_answer(&answer_here).await.unwrap();
    for c in inline_candidates(&received) {
        ours.session.add_remote_candidate(c).await.unwrap();
    }
    let events = std::mem::replace(&mut ours.events, unbounded_channel().1);
    ours.events = trickle_to(events, offer, Arc::clone(peer));
    answer_here
}

/// aiortc calls: its offer comes to us as a session-initiate, our answer goes back as a
/// session-accept. Returns aiortc's offer as it arrived here (SDP).
async fn they_offer(ours: &mut Ours, peer: &Arc<Mutex<Aiortc>>) -> String {
    let offer = peer
        .lock()
        .await
        .sdp(json!({"make_offer": {}}), "offer")
        .await;
    eprintln!("aiortc's offer:\n{offer}");
    // Authored by aiortc as the initiator.
    let initiate = sdp::sdp_to_jingle(&offer, Creator::Initiator, Role::Initiator, true).unwrap();
    let received = over_the_wire(Action::SessionInitiate, initiate);
    let offer_here = sdp::jingle_to_sdp(&received, SdpType::Offer, Role::Responder).unwrap();
    let answer = ours.session.accept_offer(&offer_here).await.unwrap();
    for c in inline_candidates(&received) {
        ours.session.add_remote_candidate(c).await.unwrap();
    }
    let accept = sdp::sdp_to_jingle(&answer, Creator::Initiator, Role::Responder, false).unwrap();
    let received = over_the_wire(Action::SessionAccept, accept);
    let answer_there = sdp::jingle_to_sdp(&received, SdpType::Answer, Role::Initiator).unwrap();
    peer.lock()
        .await
        .call(json!({ "answer": answer_there }))
        .await;
    let events = std::mem::replace(&mut ours.events, unbounded_channel().1);
    ours.events = trickle_to(events, answer, Arc::clone(peer));
    offer_here
}

async fn aiortc_with(tone_hz: f32, video: bool, dir: &Path) -> (Arc<Mutex<Aiortc>>, PathBuf) {
    let mut peer = Aiortc::start().await;
    let wav = dir.join("aiortc-heard.wav");
    peer.call(json!({ "tone": tone_hz })).await;
    peer.call(json!({ "video": video })).await;
    peer.call(json!({ "record": wav })).await;
    (Arc::new(Mutex::new(peer)), wav)
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last half second of `pcm` (the first frames may be a jitter buffer filling).
fn tail_frequency(pcm: &[i16]) -> f32 {
    let half = SAMPLE_RATE as usize / 2;
    assert!(pcm.len() >= half, "only {} samples", pcm.len());
    dominant_frequency(&pcm[pcm.len() - half..], SAMPLE_RATE)
}

fn read_wav(path: &Path) -> Vec<i16> {
    let mut src = WavSource::open(path).unwrap();
    let n = (src.duration().as_secs_f64() * f64::from(SAMPLE_RATE)).round() as usize;
    let mut pcm = Vec::with_capacity(n + FRAME_SAMPLES);
    while let Some(frame) = src.next_frame() {
        pcm.extend(frame);
    }
    pcm.truncate(n);
    pcm
}

async fn peer_status(peer: &Arc<Mutex<Aiortc>>) -> Value {
    peer.lock().await.call(json!({"status": true})).await
}

/// Connected (relayed as expected), each side hears the other's tone; then hang up and
/// compare frequencies. Returns what aiortc reported on stop.
async fn connect_and_hear(
    mut ours: Ours,
    peer: Arc<Mutex<Aiortc>>,
    wav: &Path,
    (our_hz, their_hz): (f32, f32),
    relayed: bool,
    video_frames: usize,
) -> Value {
    ours.wait_for("Connected", |e| matches!(e, EngineEvent::Connected { .. }))
        .await;
    assert_eq!(
        ours.seen.last().unwrap(),
        &format!("{:?}", EngineEvent::Connected { relayed }),
        "connected, relayed: {relayed}"
    );
    let want = (HEARD.as_secs_f64() * f64::from(SAMPLE_RATE)) as usize;
    let heard = ours.heard.clone();
    wait_until("our side to hear 1.5 s of aiortc", async || {
        heard.samples().len() >= want
    })
    .await;
    let want_frames = (HEARD.as_millis() / 20) as u64;
    wait_until("aiortc to hear 1.5 s of us", async || {
        peer_status(&peer).await["audio_frames"].as_u64().unwrap() >= want_frames
    })
    .await;
    if video_frames > 0 {
        let video_in = ours.video_in.clone();
        wait_until("video frames from aiortc", async || {
            video_in.len() >= video_frames
        })
        .await;
        wait_until("aiortc to decode our video frames", async || {
            peer_status(&peer).await["video_frames"].as_u64().unwrap() >= video_frames as u64
        })
        .await;
    }
    let status = peer_status(&peer).await;
    let stopped = peer.lock().await.call(json!({"stop": true})).await;
    let stats = ours.session.stats();
    ours.session.close().await;
    eprintln!("aiortc while connected: {status}");
    eprintln!("aiortc on stop: {stopped}");
    eprintln!("ours: {stats:?}; events {:?}", ours.seen);

    let heard_here = tail_frequency(&ours.heard.samples());
    let heard_there = tail_frequency(&read_wav(wav));
    eprintln!(
        "we heard {heard_here} Hz (aiortc sent {their_hz}); aiortc heard {heard_there} Hz (we sent {our_hz})"
    );
    assert!(
        (heard_here - their_hz).abs() < 5.0,
        "we heard {heard_here} Hz, aiortc sent {their_hz} Hz"
    );
    assert!(
        (heard_there - our_hz).abs() < 5.0,
        "aiortc heard {heard_there} Hz, we sent {our_hz} Hz"
    );
    stopped
}

fn loopback(video: bool) -> MediaConfig {
    MediaConfig {
        video,
        bind_addrs: vec!["127.0.0.1:0".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_call_aiortc_audio_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, wav) = aiortc_with(1000.0, false, dir.path()).await;
    let mut ours = Ours::new(loopback(false), 440.0).await;
    we_offer(&mut ours, &peer).await;
    connect_and_hear(ours, peer, &wav, (440.0, 1000.0), false, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_calls_us_audio_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, wav) = aiortc_with(660.0, false, dir.path()).await;
    let mut ours = Ours::new(loopback(false), 1200.0).await;
    they_offer(&mut ours, &peer).await;
    connect_and_hear(ours, peer, &wav, (1200.0, 660.0), false, 0).await;
}

/// Video both ways, aiortc calling: its own VP8 encoder's frames reach our FrameCollector
/// (counted: aiortc encodes, so hashes cannot be compared), ffmpeg's VP8 frames sent by us
/// are decoded by aiortc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_both_ways_with_aiortc() {
    let dir = tempfile::tempdir().unwrap();
    let frames = IvfReader::read_all(linnet_tests::make_vp8_ivf(dir.path(), 3)).unwrap();
    assert!(
        frames.len() >= 30,
        "ffmpeg made only {} frames",
        frames.len()
    );
    let (peer, wav) = aiortc_with(880.0, true, dir.path()).await;
    let mut ours = Ours::new(loopback(true), 330.0).await;
    ours.session.set_video_source(Box::new(FrameList::new(
        frames.into_iter().map(|f| (f.data, f.duration)),
    )));
    let offer = they_offer(&mut ours, &peer).await;
    assert!(offer.contains("m=video"), "aiortc offered no video");
    let stopped = connect_and_hear(ours, peer, &wav, (330.0, 880.0), false, 10).await;
    assert_eq!(stopped["video_size"], json!([320, 240]));
}

fn turn_config(peer_creds: &Value) -> MediaConfig {
    let env = linnet_tests::env();
    let get = |k: &str| {
        env.get(k)
            .unwrap_or_else(|| panic!("{k} missing from LINNET_SERVERS_ENV"))
            .clone()
    };
    MediaConfig {
        ice_servers: vec![IceServer {
            urls: vec![format!(
                "turn:{}:{}?transport=udp",
                get("TURN_HOST"),
                get("TURN_PORT")
            )],
            username: Some(peer_creds["username"].as_str().unwrap().to_owned()),
            credential: Some(peer_creds["credential"].as_str().unwrap().to_owned()),
        }],
        relay_only: true,
        bind_addrs: vec!["127.0.0.1:0".into()],
        ..Default::default()
    }
}

/// Our side relay-only through coturn (TURN REST credentials from TURN_SECRET), aiortc on
/// its host candidates: the call goes through the relay and audio flows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_with_aiortc_through_coturn() {
    let env = linnet_tests::env();
    let secret = env
        .get("TURN_SECRET")
        .expect("TURN_SECRET missing from LINNET_SERVERS_ENV: start coturn with `scripts/servers start turn`")
        .clone();
    let dir = tempfile::tempdir().unwrap();
    let (peer, wav) = aiortc_with(1500.0, false, dir.path()).await;
    // coturn's use-auth-secret: user "<expiry>:<anything>", password
    // base64(HMAC-SHA1(secret, user)); computed by the peer, which has HMAC-SHA1 at hand.
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let creds = peer
        .lock()
        .await
        .call(json!({"turn_credentials": {"secret": secret, "user": format!("{expiry}:linnet-aiortc")}}))
        .await;
    let mut ours = Ours::new(turn_config(&creds), 523.0).await;
    we_offer(&mut ours, &peer).await;
    connect_and_hear(ours, peer, &wav, (523.0, 1500.0), true, 0).await;
}
