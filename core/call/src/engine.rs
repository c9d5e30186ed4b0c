//! The media session of one call: a WebRTC peer connection (webrtc 0.21) carrying Opus audio
//! and, optionally, VP8 video over ICE + DTLS-SRTP, with trickled candidates.
//!
//! The XMPP side (Jingle, JMI) drives it with SDP strings and `candidate:` attribute values
//! and listens to [`EngineEvent`]s; media goes in and out through the source and sink
//! traits of [`crate::audio`] and [`crate::video`], paced here in real time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::CertificateParams;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc::UnboundedSender, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    crypto, register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCCertificate, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceCandidateType, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::audio::{
    AudioSink, AudioSource, Discard, OpusDecoder, OpusEncoder, Silence, FRAME_DURATION,
    FRAME_SAMPLES,
};
use crate::jitter::Reorder;
use crate::video::{VideoSink, VideoSource, Vp8Assembler};

/// Payload types we offer. Answers follow the offerer's numbering; these only matter when we
/// offer.
const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;
/// Opus packets that may queue behind a missing one: 60 ms of added delay at worst.
const AUDIO_REORDER_DEPTH: usize = 3;
/// VP8 packets that may queue behind a missing one; video has room to wait for a NACKed
/// retransmission.
const VIDEO_REORDER_DEPTH: usize = 48;
/// How long the video sender waits for proof that the peer can decrypt (its media reaching
/// us) before sending anyway, for peers that send nothing.
const PEER_READY_FALLBACK: Duration = Duration::from_secs(1);
/// Concealing longer gaps than this just plays minutes of mush after a network outage.
const MAX_CONCEALED_FRAMES: u64 = 5;
/// Keyframe requests after a broken frame, at most this often.
const PLI_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

// Hand-written so TURN credentials never end up in a log through `{:?}`.
impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("credential", &self.credential.as_ref().map(|_| "<set>"))
            .finish()
    }
}

#[derive(Clone, Default, Debug)]
pub struct MediaConfig {
    pub ice_servers: Vec<IceServer>,
    /// Only relayed (TURN) candidates: hides our addresses from the peer.
    pub relay_only: bool,
    /// Send video from the start (audio is always on).
    pub video: bool,
    /// Local UDP addresses to bind, e.g. `"127.0.0.1:0"`. Empty: every non-loopback
    /// interface (`"0.0.0.0:0"`), which is what a real call wants; tests pin loopback.
    pub bind_addrs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub mid: String,
    /// The SDP attribute value, `candidate:...`.
    pub candidate: String,
}

#[derive(Debug)]
pub enum EngineEvent {
    /// Trickle ICE: a local candidate, as gathered.
    LocalCandidate(Candidate),
    GatheringDone,
    /// ICE and DTLS are up. `relayed`: the selected pair uses a relay candidate on either side.
    Connected {
        relayed: bool,
    },
    /// The first audio frame was received and decoded.
    FirstAudio,
    /// ICE or DTLS failed. The text carries no addresses or secrets.
    Failed(String),
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot set up the media session: {0}")]
    Setup(String),
    #[error("invalid or unacceptable session description: {0}")]
    Sdp(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("invalid ICE candidate: {0}")]
    Candidate(String),
    #[error("codec error: {0}")]
    Codec(String),
    #[error("the media session is closed")]
    Closed,
}

/// Counters for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub audio_frames_sent: u64,
    pub audio_frames_decoded: u64,
    /// Audio packets given up as lost (concealed or skipped).
    pub audio_packets_lost: u64,
    pub video_frames_sent: u64,
    pub video_frames_received: u64,
    /// Video frames dropped because a packet of theirs never arrived.
    pub video_frames_dropped: u64,
}

#[derive(Default)]
struct Counters {
    audio_sent: AtomicU64,
    audio_decoded: AtomicU64,
    audio_lost: AtomicU64,
    video_sent: AtomicU64,
    video_received: AtomicU64,
    video_dropped: AtomicU64,
}

/// What the sending tasks wait for: a connection, and a negotiated payload type for their
/// stream (which also means the track is bound to its transceiver).
#[derive(Clone, Copy, Default, Debug)]
struct LinkState {
    connected: bool,
    closed: bool,
    audio_pt: Option<u8>,
    video_pt: Option<u8>,
    /// Media from the peer arrived, so its SRTP is up and it can decrypt ours.
    remote_media: bool,
}

/// State shared by the session, the event handler (which runs on the peer connection's
/// driver) and the media tasks. Holds the connection only weakly: the driver owns the handler.
struct Shared {
    events: UnboundedSender<EngineEvent>,
    link: watch::Sender<LinkState>,
    audio_source: Mutex<Box<dyn AudioSource>>,
    audio_sink: Mutex<Box<dyn AudioSink>>,
    video_source: Mutex<Option<Box<dyn VideoSource>>>,
    video_sink: Mutex<Option<Box<dyn VideoSink>>>,
    audio_muted: AtomicBool,
    video_muted: AtomicBool,
    connected_sent: AtomicBool,
    failed_sent: AtomicBool,
    closed_sent: AtomicBool,
    first_audio_sent: AtomicBool,
    /// The BUNDLE media id our candidates belong to.
    mid: Mutex<String>,
    pc: Mutex<Option<Weak<dyn PeerConnection>>>,
    counters: Counters,
}

impl Shared {
    fn remote_media_seen(&self) {
        self.link
            .send_if_modified(|l| !std::mem::replace(&mut l.remote_media, true));
    }

    fn emit(&self, e: EngineEvent) {
        // The receiver gone means nobody cares about this call any more; not an error.
        let _ = self.events.send(e);
    }

    fn emit_closed(&self) {
        if !self.closed_sent.swap(true, Ordering::SeqCst) {
            self.emit(EngineEvent::Closed);
        }
    }

    fn pc(&self) -> Option<Arc<dyn PeerConnection>> {
        lock(&self.pc).as_ref().and_then(Weak::upgrade)
    }
}

/// A poisoned lock only means a source or sink panicked once; the media path carries on.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) if !init.candidate.is_empty() => {
                let mid = lock(&self.shared.mid).clone();
                self.shared.emit(EngineEvent::LocalCandidate(Candidate {
                    mid,
                    candidate: init.candidate,
                }));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("unusable local candidate: {e}"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.emit(EngineEvent::GatheringDone);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!("call connection state: {state}");
        match state {
            RTCPeerConnectionState::Connected => {
                // This runs on the connection's driver; asking the connection about its
                // candidate pair from here would wait on the driver itself.
                let shared = Arc::clone(&self.shared);
                tokio::spawn(async move {
                    let relayed = match shared.pc() {
                        Some(pc) => selected_pair_relayed(pc.as_ref()).await,
                        None => false,
                    };
                    shared.link.send_modify(|l| l.connected = true);
                    if !shared.connected_sent.swap(true, Ordering::SeqCst) {
                        shared.emit(EngineEvent::Connected { relayed });
                    }
                });
            }
            RTCPeerConnectionState::Failed => {
                self.shared.link.send_modify(|l| l.connected = false);
                if !self.shared.failed_sent.swap(true, Ordering::SeqCst) {
                    self.shared.emit(EngineEvent::Failed(
                        "connection failed: no working ICE candidate pair or DTLS handshake failure"
                            .into(),
                    ));
                }
            }
            RTCPeerConnectionState::Closed => {
                self.shared.link.send_modify(|l| {
                    l.connected = false;
                    l.closed = true;
                });
                self.shared.emit_closed();
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            match track.kind().await {
                RtpCodecKind::Audio => receive_audio(shared, track).await,
                RtpCodecKind::Video => receive_video(shared, track).await,
                _ => while track.poll().await.is_some() {},
            }
        });
    }
}

/// Whether the selected candidate pair goes through a TURN relay on either side.
async fn selected_pair_relayed(pc: &dyn PeerConnection) -> bool {
    for t in pc.get_transceivers().await {
        let transport = match t.sender().await {
            Ok(Some(sender)) => sender.transport().await,
            _ => match t.receiver().await {
                Ok(Some(receiver)) => receiver.transport().await,
                _ => continue,
            },
        };
        let Ok(Some(transport)) = transport else {
            continue;
        };
        if let Ok(Some(pair)) = transport
            .ice_transport()
            .get_selected_candidate_pair()
            .await
        {
            return pair.local().typ == RTCIceCandidateType::Relay
                || pair.remote().typ == RTCIceCandidateType::Relay;
        }
    }
    false
}

async fn receive_audio(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let mut decoder = match OpusDecoder::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("call audio: {e}; incoming audio dropped");
            while track.poll().await.is_some() {}
            return;
        }
    };
    let mut reorder = Reorder::new(AUDIO_REORDER_DEPTH);
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        shared.remote_media_seen();
        let lost_before = reorder.lost;
        for (gap, payload) in reorder.push(packet.header.sequence_number, packet.payload) {
            let mut frames = Vec::new();
            if gap > 0 {
                // The packet after a gap carries FEC for the one just before it; older
                // losses can only be extrapolated.
                for i in 0..gap.min(MAX_CONCEALED_FRAMES) {
                    let fec = (i + 1 == gap.min(MAX_CONCEALED_FRAMES)).then_some(&payload[..]);
                    match decoder.conceal(fec) {
                        Ok(pcm) => frames.push(pcm),
                        Err(e) => tracing::debug!("call audio: concealment failed: {e}"),
                    }
                }
            }
            match decoder.decode(&payload) {
                Ok(pcm) => frames.push(pcm),
                Err(e) => {
                    tracing::debug!("call audio: undecodable packet: {e}");
                    continue;
                }
            }
            {
                let mut sink = lock(&shared.audio_sink);
                for pcm in &frames {
                    sink.frame(pcm);
                }
            }
            shared
                .counters
                .audio_decoded
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
            if !shared.first_audio_sent.swap(true, Ordering::SeqCst) {
                shared.emit(EngineEvent::FirstAudio);
            }
        }
        shared
            .counters
            .audio_lost
            .fetch_add(reorder.lost - lost_before, Ordering::Relaxed);
    }
}

async fn receive_video(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let mut reorder = Reorder::new(VIDEO_REORDER_DEPTH);
    let mut assembler = Vp8Assembler::default();
    let mut last_pli: Option<Instant> = None;
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        shared.remote_media_seen();
        let media_ssrc = packet.header.ssrc;
        let dropped_before = assembler.dropped;
        let ready = reorder.push(packet.header.sequence_number, packet);
        for (gap, p) in ready {
            if let Some(frame) =
                assembler.push(&p.payload, p.header.timestamp, p.header.marker, gap > 0)
            {
                shared
                    .counters
                    .video_received
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(sink) = lock(&shared.video_sink).as_mut() {
                    sink.frame(&frame);
                }
            }
        }
        let dropped = assembler.dropped - dropped_before;
        if dropped > 0 {
            shared
                .counters
                .video_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            // The decoder cannot continue from a broken reference: ask the sender's encoder
            // for a keyframe.
            if last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL) {
                last_pli = Some(Instant::now());
                let pli =
                    rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc,
                    };
                if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                    tracing::debug!("call video: cannot request a keyframe: {e}");
                }
            }
        }
    }
}

/// Waits until `pick` yields a payload type while connected; `None` once the session closes.
async fn wait_ready(
    rx: &mut watch::Receiver<LinkState>,
    pick: fn(&LinkState) -> Option<u8>,
) -> Option<u8> {
    loop {
        {
            let l = *rx.borrow_and_update();
            if l.closed {
                return None;
            }
            if l.connected {
                if let Some(pt) = pick(&l) {
                    return Some(pt);
                }
            }
        }
        if rx.changed().await.is_err() {
            return None;
        }
    }
}

async fn send_audio(shared: Arc<Shared>, track: Arc<TrackLocalStaticSample>, ssrc: u32) {
    let mut encoder = match OpusEncoder::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("call audio: {e}; nothing will be sent");
            return;
        }
    };
    let mut rx = shared.link.subscribe();
    while wait_ready(&mut rx, |l| l.audio_pt).await.is_some() {
        let mut tick = tokio::time::interval(FRAME_DURATION);
        // A late tick is sent at once: the RTP clock advances 20 ms per frame, so skipping
        // ticks would make the far end's playout drift behind the wall clock.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tick.tick().await;
            let l = *rx.borrow();
            // Re-read every frame: a renegotiation may change the payload type.
            let pt = match (l.connected && !l.closed, l.audio_pt) {
                (true, Some(p)) => p,
                _ => break,
            };
            let frame = {
                let mut src = lock(&shared.audio_source);
                match src.next_frame() {
                    Some(mut f) => {
                        f.resize(FRAME_SAMPLES, 0);
                        f
                    }
                    None => {
                        *src = Box::new(Silence);
                        vec![0; FRAME_SAMPLES]
                    }
                }
            };
            let frame = if shared.audio_muted.load(Ordering::Relaxed) {
                vec![0; FRAME_SAMPLES]
            } else {
                frame
            };
            let packet = match encoder.encode(&frame) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!("call audio: {e}");
                    continue;
                }
            };
            let sample = Sample {
                data: Bytes::from(packet),
                duration: FRAME_DURATION,
                ..Sample::new(Instant::now())
            };
            match track.sample_writer(ssrc, pt).write_sample(&sample).await {
                Ok(()) => {
                    shared.counters.audio_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!("call audio: not sent: {e}"),
            }
        }
    }
}

async fn send_video(shared: Arc<Shared>, track: Arc<TrackLocalStaticSample>, ssrc: u32) {
    let mut rx = shared.link.subscribe();
    while wait_ready(&mut rx, |l| l.video_pt).await.is_some() {
        // Our side being connected does not mean the peer is: the DTLS side that finishes
        // first would otherwise send a keyframe the other side cannot decrypt yet and drops
        // (seen on loopback with webrtc 0.21), and a stream starting without its keyframe
        // shows nothing until the next one. The peer's own media arriving proves it is
        // ready; a peer that sends none gets our video after a short grace period.
        let mut ready = rx.clone();
        let _ = tokio::time::timeout(
            PEER_READY_FALLBACK,
            ready.wait_for(|l| l.remote_media || l.closed),
        )
        .await;
        let mut due = tokio::time::Instant::now();
        loop {
            let l = *rx.borrow();
            let pt = match (l.connected && !l.closed, l.video_pt) {
                (true, Some(p)) => p,
                _ => break,
            };
            let next = lock(&shared.video_source)
                .as_mut()
                .and_then(|s| s.next_frame());
            let Some((frame, duration)) = next else {
                // No frame ready (or no source yet): ask again shortly.
                tokio::time::sleep(Duration::from_millis(20)).await;
                due = tokio::time::Instant::now();
                continue;
            };
            if !shared.video_muted.load(Ordering::Relaxed) && !frame.is_empty() {
                let sample = Sample {
                    data: Bytes::from(frame),
                    duration,
                    ..Sample::new(Instant::now())
                };
                match track.sample_writer(ssrc, pt).write_sample(&sample).await {
                    Ok(()) => {
                        shared.counters.video_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!("call video: not sent: {e}"),
                }
            }
            due += duration;
            let now = tokio::time::Instant::now();
            // After a stall (a suspended process, a slow source) restart the clock rather
            // than bursting everything we are behind.
            if due + Duration::from_secs(1) < now {
                due = now;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A local track and its sender once attached to the connection.
struct Outgoing {
    track: Arc<TrackLocalStaticSample>,
    sender: Option<Arc<dyn RtpSender>>,
}

pub struct MediaSession {
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    cfg: MediaConfig,
    audio: tokio::sync::Mutex<Outgoing>,
    video: tokio::sync::Mutex<Option<Outgoing>>,
    /// Remote candidates that came before the remote description (a callee gets them while
    /// its phone rings, before it accepts).
    pending_candidates: tokio::sync::Mutex<Vec<Candidate>>,
    fingerprint: Option<(String, String)>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodecParameters {
    match kind {
        RtpCodecKind::Video => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: crate::video::VIDEO_CLOCK_RATE,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            payload_type: VP8_PT,
        },
        _ => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: crate::audio::SAMPLE_RATE,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PT,
        },
    }
}

fn new_track(kind: RtpCodecKind) -> Result<(Arc<TrackLocalStaticSample>, u32), CallError> {
    let ssrc = rand::random::<u32>();
    let label = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    let track = MediaStreamTrack::new(
        "linnet".to_owned(),
        format!("linnet-{label}-{:08x}", rand::random::<u32>()),
        label.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(kind).rtp_codec,
            ..Default::default()
        }],
    );
    let track = TrackLocalStaticSample::new(Instant::now(), track)
        .map_err(|e| CallError::Setup(format!("{label} track: {e}")))?;
    Ok((Arc::new(track), ssrc))
}

/// The first `a=mid:` of a description: with BUNDLE, every candidate belongs to it.
fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
}

/// Whether a description has a video section that is not rejected (port 0).
fn offers_video(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        l.strip_prefix("m=video ")
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|port| port != "0")
    })
}

/// `(algorithm, value)` of the first `a=fingerprint:` in a description.
fn sdp_fingerprint(sdp: &str) -> Option<(String, String)> {
    sdp.lines().find_map(|l| {
        let (alg, value) = l
            .trim_end()
            .strip_prefix("a=fingerprint:")?
            .split_once(' ')?;
        Some((alg.to_ascii_lowercase(), value.trim().to_ascii_uppercase()))
    })
}

impl MediaSession {
    pub async fn new(
        cfg: MediaConfig,
        events: UnboundedSender<EngineEvent>,
    ) -> Result<Self, CallError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| CallError::Setup(format!("{what}: {e}"));

        let mut media = MediaEngine::default();
        media
            .register_codec(codec(RtpCodecKind::Audio), RtpCodecKind::Audio)
            .map_err(|e| setup("Opus codec", &e))?;
        media
            .register_codec(codec(RtpCodecKind::Video), RtpCodecKind::Video)
            .map_err(|e| setup("VP8 codec", &e))?;
        // NACK/PLI, RTCP reports and transport-wide feedback: what every WebRTC peer expects.
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| setup("interceptors", &e))?;

        // Our own certificate, so its fingerprint is known before any SDP exists
        // (XEP-0396 verification shows it while the call is still ringing).
        let provider = crypto::default_provider().map_err(|e| setup("crypto", &e))?;
        let params = CertificateParams::new(vec!["linnet".to_owned()])
            .map_err(|e| setup("certificate", &e))?;
        let cert = RTCCertificate::generate(
            provider.crypto(),
            crypto::SignatureScheme::EcdsaP256Sha256,
            params,
        )
        .map_err(|e| setup("certificate", &e))?;
        let fingerprint = cert
            .get_fingerprints(provider.crypto())
            .map_err(|e| setup("certificate fingerprint", &e))?
            .into_iter()
            .next()
            .map(|f| (f.algorithm, f.value.to_ascii_uppercase()));

        let ice_servers = cfg
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers)
            .with_ice_transport_policy(if cfg.relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            })
            .with_certificates(vec![cert])
            .build();
        // No mDNS: XMPP clients exchange real candidates (or relay-only ones when privacy
        // matters), and the mDNS responder would bind the shared port 5353.
        // Relay-only: a relay pair is all there will be, so ICE need not wait (2 s by
        // default) for better pairs before taking it (measured by scripts/bench-call).
        let relay_wait = cfg.relay_only.then_some(Duration::ZERO);
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_relay_acceptance_min_wait(relay_wait)
            .build();

        let (link, _) = watch::channel(LinkState::default());
        let shared = Arc::new(Shared {
            events,
            link,
            audio_source: Mutex::new(Box::new(Silence)),
            audio_sink: Mutex::new(Box::new(Discard)),
            video_source: Mutex::new(None),
            video_sink: Mutex::new(None),
            audio_muted: AtomicBool::new(false),
            video_muted: AtomicBool::new(false),
            connected_sent: AtomicBool::new(false),
            failed_sent: AtomicBool::new(false),
            closed_sent: AtomicBool::new(false),
            first_audio_sent: AtomicBool::new(false),
            mid: Mutex::new("0".to_owned()),
            pc: Mutex::new(None),
            counters: Counters::default(),
        });

        let bind_addrs = if cfg.bind_addrs.is_empty() {
            vec!["0.0.0.0:0".to_owned()]
        } else {
            cfg.bind_addrs.clone()
        };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler {
                shared: Arc::clone(&shared),
            }))
            .with_udp_addrs(bind_addrs)
            .build()
            .await
            .map_err(|e| setup("peer connection", &e))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        *lock(&shared.pc) = Some(Arc::downgrade(&pc));

        let (audio_track, audio_ssrc) = new_track(RtpCodecKind::Audio)?;
        let audio_task = tokio::spawn(send_audio(
            Arc::clone(&shared),
            Arc::clone(&audio_track),
            audio_ssrc,
        ));
        let session = Self {
            pc,
            shared,
            cfg,
            audio: tokio::sync::Mutex::new(Outgoing {
                track: audio_track,
                sender: None,
            }),
            video: tokio::sync::Mutex::new(None),
            pending_candidates: tokio::sync::Mutex::new(Vec::new()),
            fingerprint,
            tasks: Mutex::new(vec![audio_task]),
        };
        if session.cfg.video {
            session.ensure_video_track().await?;
        }
        Ok(session)
    }

    async fn ensure_video_track(&self) -> Result<(), CallError> {
        let mut video = self.video.lock().await;
        if video.is_none() {
            let (track, ssrc) = new_track(RtpCodecKind::Video)?;
            let task = tokio::spawn(send_video(
                Arc::clone(&self.shared),
                Arc::clone(&track),
                ssrc,
            ));
            lock(&self.tasks).push(task);
            *video = Some(Outgoing {
                track,
                sender: None,
            });
        }
        Ok(())
    }

    /// Adds our tracks that are not on the connection yet (audio always, video if present).
    async fn attach_tracks(&self) -> Result<(), CallError> {
        let attach = |out: Arc<TrackLocalStaticSample>| {
            let pc = Arc::clone(&self.pc);
            async move {
                pc.add_track(out as Arc<dyn TrackLocal>)
                    .await
                    .map_err(|e| CallError::Negotiation(format!("adding a track: {e}")))
            }
        };
        {
            let mut audio = self.audio.lock().await;
            if audio.sender.is_none() {
                audio.sender = Some(attach(Arc::clone(&audio.track)).await?);
            }
        }
        if let Some(video) = self.video.lock().await.as_mut() {
            if video.sender.is_none() {
                video.sender = Some(attach(Arc::clone(&video.track)).await?);
            }
        }
        Ok(())
    }

    /// After a completed negotiation: the payload types our senders may use now.
    async fn update_payload_types(&self) {
        async fn pt(sender: Option<&Arc<dyn RtpSender>>) -> Option<u8> {
            let params = sender?.get_parameters().await.ok()?;
            params.rtp_parameters.codecs.first().map(|c| c.payload_type)
        }
        let audio_pt = pt(self.audio.lock().await.sender.as_ref()).await;
        let video_pt = match self.video.lock().await.as_ref() {
            Some(v) => pt(v.sender.as_ref()).await,
            None => None,
        };
        self.shared.link.send_modify(|l| {
            l.audio_pt = audio_pt;
            l.video_pt = video_pt;
        });
    }

    fn check_open(&self) -> Result<(), CallError> {
        if self.shared.link.borrow().closed {
            return Err(CallError::Closed);
        }
        Ok(())
    }

    async fn make_offer(&self) -> Result<String, CallError> {
        self.check_open()?;
        self.attach_tracks().await?;
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(|e| CallError::Negotiation(format!("creating the offer: {e}")))?;
        // Before applying it: candidates start to flow the moment it is applied.
        if let Some(mid) = first_mid(&offer.sdp) {
            *lock(&self.shared.mid) = mid;
        }
        let sdp = offer.sdp.clone();
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| CallError::Negotiation(format!("applying our offer: {e}")))?;
        Ok(sdp)
    }

    /// Creates the offer (SDP) and applies it, which starts candidate gathering at once, so
    /// it can run while the call rings.
    pub async fn create_offer(&self) -> Result<String, CallError> {
        self.make_offer().await
    }

    /// Applies the peer's offer and returns our answer (SDP). Also answers a renegotiation
    /// (e.g. the peer adding video): our video is sent back if we were configured with
    /// video or a video source has been set.
    pub async fn accept_offer(&self, offer_sdp: &str) -> Result<String, CallError> {
        self.check_open()?;
        let desc = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| CallError::Sdp(e.to_string()))?;
        self.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| CallError::Sdp(e.to_string()))?;
        self.flush_pending_candidates().await;
        // Tracks are attached after the remote offer so they take over the transceivers it
        // created instead of adding sections the answer cannot carry.
        let send_video = self.cfg.video || lock(&self.shared.video_source).is_some();
        if offers_video(offer_sdp) && send_video {
            self.ensure_video_track().await?;
        }
        self.attach_tracks().await?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| CallError::Negotiation(format!("creating the answer: {e}")))?;
        if let Some(mid) = first_mid(&answer.sdp) {
            *lock(&self.shared.mid) = mid;
        }
        let sdp = answer.sdp.clone();
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| CallError::Negotiation(format!("applying our answer: {e}")))?;
        self.update_payload_types().await;
        Ok(sdp)
    }

    /// Applies the peer's answer to our last offer.
    pub async fn set_answer(&self, answer_sdp: &str) -> Result<(), CallError> {
        self.check_open()?;
        let desc = RTCSessionDescription::answer(answer_sdp.to_owned())
            .map_err(|e| CallError::Sdp(e.to_string()))?;
        self.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| CallError::Sdp(e.to_string()))?;
        self.flush_pending_candidates().await;
        self.update_payload_types().await;
        Ok(())
    }

    /// Adds a trickled remote candidate. Before the remote description is known the
    /// candidate is kept and applied with it.
    pub async fn add_remote_candidate(&self, c: Candidate) -> Result<(), CallError> {
        self.check_open()?;
        let value = c.candidate.trim();
        if value.is_empty() || value.len() > 1024 || value.contains(['\r', '\n']) {
            return Err(CallError::Candidate(
                "empty, oversized or multi-line candidate".into(),
            ));
        }
        let mut pending = self.pending_candidates.lock().await;
        if self.pc.remote_description().await.is_none() {
            // Bounded: a peer flooding candidates before the offer is answered gets cut off.
            if pending.len() >= 256 {
                return Err(CallError::Candidate(
                    "too many candidates before the session description".into(),
                ));
            }
            pending.push(c);
            return Ok(());
        }
        drop(pending);
        self.apply_candidate(c).await
    }

    async fn apply_candidate(&self, c: Candidate) -> Result<(), CallError> {
        let value = c.candidate.trim();
        let candidate = if value.starts_with("candidate:") {
            value.to_owned()
        } else {
            format!("candidate:{value}")
        };
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate,
                sdp_mid: Some(c.mid),
                sdp_mline_index: None,
                username_fragment: None,
                url: None,
            })
            .await
            .map_err(|e| CallError::Candidate(e.to_string()))
    }

    async fn flush_pending_candidates(&self) {
        let pending = std::mem::take(&mut *self.pending_candidates.lock().await);
        for c in pending {
            if let Err(e) = self.apply_candidate(c).await {
                tracing::debug!("early remote candidate dropped: {e}");
            }
        }
    }

    /// Upgrades the call to video: adds our video track and returns the new offer (SDP) for
    /// Jingle content-add. Apply the peer's answer with [`set_answer`](Self::set_answer).
    pub async fn add_video(&self) -> Result<String, CallError> {
        self.check_open()?;
        self.ensure_video_track().await?;
        self.make_offer().await
    }

    pub fn set_audio_source(&self, src: Box<dyn AudioSource>) {
        *lock(&self.shared.audio_source) = src;
    }

    pub fn set_audio_sink(&self, sink: Box<dyn AudioSink>) {
        *lock(&self.shared.audio_sink) = sink;
    }

    pub fn set_video_source(&self, src: Box<dyn VideoSource>) {
        *lock(&self.shared.video_source) = Some(src);
    }

    pub fn set_video_sink(&self, sink: Box<dyn VideoSink>) {
        *lock(&self.shared.video_sink) = Some(sink);
    }

    /// `audio`: true for the microphone, false for the camera. Muted audio sends silence
    /// (keeping the stream and its timing alive); muted video sends nothing.
    pub fn set_muted(&self, audio: bool, muted: bool) {
        let flag = if audio {
            &self.shared.audio_muted
        } else {
            &self.shared.video_muted
        };
        flag.store(muted, Ordering::Relaxed);
    }

    /// `(hash algorithm, fingerprint)` of our DTLS certificate, e.g. `("sha-256", "AB:CD:…")`,
    /// for XEP-0396 verification.
    pub fn local_fingerprint(&self) -> Option<(String, String)> {
        self.fingerprint.clone()
    }

    /// The fingerprint the peer announced in its description (same format as
    /// [`local_fingerprint`](Self::local_fingerprint)). DTLS already refuses a peer whose
    /// certificate does not match it; this is for comparing it with what OMEMO vouches for.
    pub async fn remote_fingerprint(&self) -> Option<(String, String)> {
        let desc = self.pc.remote_description().await?;
        sdp_fingerprint(&desc.sdp)
    }

    /// Whether the peer's announced fingerprint is `expected` (algorithm and value compared
    /// case-insensitively).
    pub async fn remote_fingerprint_ok(&self, algorithm: &str, value: &str) -> bool {
        self.remote_fingerprint().await.is_some_and(|(a, v)| {
            a.eq_ignore_ascii_case(algorithm) && v.eq_ignore_ascii_case(value.trim())
        })
    }

    pub fn stats(&self) -> MediaStats {
        let c = &self.shared.counters;
        MediaStats {
            audio_frames_sent: c.audio_sent.load(Ordering::Relaxed),
            audio_frames_decoded: c.audio_decoded.load(Ordering::Relaxed),
            audio_packets_lost: c.audio_lost.load(Ordering::Relaxed),
            video_frames_sent: c.video_sent.load(Ordering::Relaxed),
            video_frames_received: c.video_received.load(Ordering::Relaxed),
            video_frames_dropped: c.video_dropped.load(Ordering::Relaxed),
        }
    }

    /// Ends the session: stops media, closes the connection (releasing TURN allocations),
    /// then reports [`EngineEvent::Closed`]. Idempotent.
    pub async fn close(&self) {
        self.shared.link.send_modify(|l| {
            l.closed = true;
            l.connected = false;
        });
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if let Err(e) = self.pc.close().await {
            tracing::debug!("closing the peer connection: {e}");
        }
        self.shared.emit_closed();
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        self.shared.link.send_modify(|l| l.closed = true);
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\n\
        a=fingerprint:sha-256 ab:cd:EF\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a0\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\n";

    #[test]
    fn sdp_helpers() {
        assert_eq!(first_mid(SDP).as_deref(), Some("a0"));
        assert!(!offers_video(SDP));
        assert!(offers_video("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"));
        assert_eq!(
            sdp_fingerprint(SDP),
            Some(("sha-256".to_owned(), "AB:CD:EF".to_owned()))
        );
        assert_eq!(first_mid("garbage"), None);
        assert_eq!(sdp_fingerprint("a=fingerprint:nospace"), None);
    }

    #[test]
    fn ice_server_debug_hides_credentials() {
        let s = IceServer {
            urls: vec!["turn:example.org".into()],
            username: Some("user".into()),
            credential: Some("secret".into()),
        };
        let d = format!("{s:?}");
        assert!(!d.contains("secret") && !d.contains("user\""), "{d}");
    }
}
