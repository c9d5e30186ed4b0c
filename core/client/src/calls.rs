//! Audio and video calls (DESIGN.md §6). Every device of the callee rings through Jingle
//! Message Initiation (XEP-0353); the device that answers gets the Jingle session
//! (XEP-0166/0167, ICE-UDP with trickle, DTLS-SRTP) and the media runs through linnet-call.
//!
//! Each call is a task that owns its media session and takes, in order, what concerns it:
//! the user's intents, the peer's XEP-0353 messages and Jingle requests (checked here to
//! come from the device the call is with), and the media engine's events. Nothing that
//! reveals an address (ICE candidates) leaves before the callee has accepted: the caller
//! gathers while it rings and sends what it gathered only after `proceed`, the callee
//! makes its answer only after the user took the call.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use linnet_call::engine::{Candidate, EngineEvent, IceServer, MediaConfig, MediaSession};
use linnet_call::sdp::{self, JingleDescription, Role, SdpType};
use linnet_xmpp::jingle::jingle::{Action, Creator, Jingle, SessionId};
use linnet_xmpp::jingle::{CallReason, CallSignal, JingleRequest, JmiAction, OutgoingJingle};
use linnet_xmpp::{BareJid, Session};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{lock, AccountId, Client, ClientError, DeviceTrust, Inner, Result};

pub use linnet_call::audio::{AudioSink, AudioSource};
pub use linnet_call::video::{VideoSink, VideoSource};

/// A proposal that waited longer than this (offline storage) is a missed call, not one to
/// ring for: the caller has given up by then.
const STALE_PROPOSAL_MS: i64 = 30_000;
/// Ended calls kept in the snapshot, newest first, so the shells can show how each ended.
const ENDED_KEPT: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CallId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    Incoming,
    Outgoing,
}

/// Why a call ended, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// One side hung up after it was connected.
    HungUp {
        by_peer: bool,
    },
    /// The callee declined (or, for our side, we did).
    Declined {
        by_peer: bool,
    },
    /// The callee is in another call.
    Busy,
    /// The caller gave up before anyone answered (for the callee: a missed call).
    Cancelled {
        by_peer: bool,
    },
    /// Nobody answered in time.
    NoAnswer,
    /// Another device of ours answered or declined it.
    AnsweredElsewhere,
    DeclinedElsewhere,
    /// The connection could not be made or broke (network, no common media, DTLS).
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CallState {
    /// Outgoing: waiting for the callee (`peer_ringing` once one of their devices rings).
    /// Incoming: ringing here, waiting for `accept_call` or `reject_call`.
    Ringing {
        peer_ringing: bool,
    },
    /// Answered; the connection is being made.
    Connecting,
    Connected {
        since_ms: i64,
        /// The media goes through a TURN relay (the direct path failed or was refused).
        relayed: bool,
    },
    Ended {
        reason: CallEnd,
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallItem {
    pub id: CallId,
    pub account: AccountId,
    /// The other party's bare JID.
    pub peer: String,
    pub direction: CallDirection,
    pub video: bool,
    pub state: CallState,
    pub started_ms: i64,
    /// The peer's OMEMO device that vouched for the call's DTLS fingerprint: it reached us
    /// as an OMEMO message from that device (as Conversations and Dino send it). DTLS then
    /// accepts only the certificate with that fingerprint, so once connected the media is
    /// encrypted end to end with that device, as far as `trust` goes. `None`: the
    /// fingerprint came in the clear (no OMEMO on one side, or it was stripped on the way):
    /// the media is encrypted, but whom with rests on the servers.
    pub verified_by: Option<CallVerification>,
}

/// See [`CallItem::verified_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallVerification {
    pub device_id: u32,
    /// The user's trust in that device, as it was when the fingerprint came.
    pub trust: DeviceTrust,
}

/// Options of a call we place.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub video: bool,
}

/// Where the call's media comes from and goes to: the platform's microphone, speaker,
/// camera and renderer, or files and tones (CLI, tests). Missing parts send silence and
/// discard what arrives.
#[derive(Default)]
pub struct CallMedia {
    pub audio_source: Option<Box<dyn AudioSource>>,
    pub audio_sink: Option<Box<dyn AudioSink>>,
    pub video_source: Option<Box<dyn VideoSource>>,
    pub video_sink: Option<Box<dyn VideoSink>>,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia").finish_non_exhaustive()
    }
}

enum Input {
    Signal(CallSignal),
    Jingle(JingleRequest),
    Accept(CallMedia),
    Reject,
    Hangup,
    Mute { audio: bool, muted: bool },
    AddVideo(CallMedia),
    RingTimeout,
}

struct Entry {
    account: AccountId,
    sid: String,
    peer: BareJid,
    /// The peer's device the call is with, once known: the proposer (incoming) or the
    /// device that proceeded (outgoing). Jingle from any other is refused.
    remote: Option<String>,
    tx: mpsc::UnboundedSender<Input>,
    item: CallItem,
}

#[derive(Default)]
pub(crate) struct Calls {
    active: HashMap<CallId, Entry>,
    ended: VecDeque<CallItem>,
}

static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn new_sid() -> String {
    // XEP-0353 recommends a UUIDv4.
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Inner {
    /// The calls for the snapshot: the live ones, then the last few that ended.
    pub(crate) fn call_items(&self) -> Vec<CallItem> {
        let calls = lock(&self.calls);
        let mut items: Vec<CallItem> = calls.active.values().map(|e| e.item.clone()).collect();
        items.sort_by_key(|i| std::cmp::Reverse(i.id));
        items.extend(calls.ended.iter().cloned());
        items
    }

    fn set_call_state(&self, id: CallId, state: CallState) {
        {
            let mut calls = lock(&self.calls);
            let Some(e) = calls.active.get_mut(&id) else {
                return;
            };
            e.item.state = state.clone();
            if matches!(state, CallState::Ended { .. }) {
                if let Some(e) = calls.active.remove(&id) {
                    calls.ended.push_front(e.item);
                    calls.ended.truncate(ENDED_KEPT);
                }
            }
        }
        self.publish_chat_list();
    }

    fn set_call_video(&self, id: CallId) {
        if let Some(e) = lock(&self.calls).active.get_mut(&id) {
            e.item.video = true;
        }
        self.publish_chat_list();
    }

    fn set_call_verified(&self, id: CallId, v: CallVerification) {
        if let Some(e) = lock(&self.calls).active.get_mut(&id) {
            e.item.verified_by = Some(v);
        }
        self.publish_chat_list();
    }

    fn set_call_remote(&self, id: CallId, remote: &str) {
        if let Some(e) = lock(&self.calls).active.get_mut(&id) {
            e.remote = Some(remote.to_owned());
        }
    }

    fn call_busy(&self) -> bool {
        lock(&self.calls).active.values().any(|e| {
            !matches!(e.item.state, CallState::Ringing { .. })
                || e.item.direction == CallDirection::Outgoing
        })
    }
}

/// A XEP-0353 message from the session of `account`.
pub(crate) fn on_signal(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    sig: CallSignal,
) {
    let found = {
        let calls = lock(&inner.calls);
        calls
            .active
            .iter()
            .find(|(_, e)| e.account == account && e.sid == sig.sid && e.peer == sig.peer)
            .map(|(id, e)| (*id, e.tx.clone()))
    };
    if let Some((_, tx)) = found {
        let _ = tx.send(Input::Signal(sig));
        return;
    }
    let JmiAction::Propose { media } = &sig.action else {
        // About a call we do not know (over, or another device's): nothing to do.
        return;
    };
    if sig.outgoing {
        // Another device of ours is calling: it is that device's call.
        return;
    }
    let Some(from_full) = sig.from_full.clone().filter(|f| f.contains('/')) else {
        return;
    };
    if sig
        .delayed_ms
        .is_some_and(|at| now_ms().saturating_sub(at) > STALE_PROPOSAL_MS)
    {
        tracing::debug!(
            account = account.0,
            "a call proposal that waited too long: not ringing"
        );
        return;
    }
    if crate::blocking::stored(&inner.store(), account).contains(&sig.peer.as_str().to_owned()) {
        return;
    }
    let video = media.iter().any(|m| m == "video");
    if inner.call_busy() {
        tracing::info!(account = account.0, "a call while in another: busy");
        let _ = session.send_jmi(&sig.peer, &sig.sid, &JmiAction::Reject(CallReason::Busy));
        return;
    }
    let (call, rx, tx) = CallTask::register(
        inner,
        account,
        sig.peer.clone(),
        sig.sid.clone(),
        CallDirection::Incoming,
        video,
        Some(from_full),
    );
    // XEP-0353 §Security: telling a stranger that we are here and ringing leaks presence;
    // only contacts who share presence with us learn it.
    let known = inner
        .store()
        .contact(account, sig.peer.as_str())
        .ok()
        .flatten()
        .is_some_and(|c| c.subscription != linnet_store::Subscription::None);
    if known {
        let _ = session.send_jmi(&sig.peer, &sig.sid, &JmiAction::Ringing);
    }
    inner.publish_chat_list();
    tokio::spawn(call.run(rx, tx));
}

/// A Jingle request from the session of `account`: handed to its call when it comes from
/// the device that call is with, refused otherwise.
pub(crate) fn on_jingle(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    req: JingleRequest,
) {
    let tx = {
        let calls = lock(&inner.calls);
        calls
            .active
            .values()
            .find(|e| {
                e.account == account
                    && e.sid == req.jingle.sid.0
                    && e.remote.as_deref() == Some(req.from.as_str())
            })
            .map(|e| e.tx.clone())
    };
    match tx {
        Some(tx) => {
            if let Err(mpsc::error::SendError(Input::Jingle(req))) = tx.send(Input::Jingle(req)) {
                let _ =
                    session.jingle_error(&req, "item-not-found", "cancel", Some("unknown-session"));
            }
        }
        None => {
            tracing::info!(account = account.0, "jingle for no call of ours: refused");
            let _ = session.jingle_error(&req, "item-not-found", "cancel", Some("unknown-session"));
        }
    }
}

impl Client {
    /// Calls `peer`: every device of theirs rings (XEP-0353). Returns at once; the call's
    /// progress is in the chat-list snapshot (`calls`).
    pub async fn start_call(
        &self,
        account: AccountId,
        peer: &str,
        opts: CallOptions,
        media: CallMedia,
    ) -> Result<CallId> {
        let peer = BareJid::parse(peer)?;
        let session = self.session(account)?;
        if peer == *session.own_jid() {
            return Err(ClientError::BadInput("cannot call yourself".into()));
        }
        if self.inner.call_busy() {
            return Err(ClientError::Policy("already in a call".into()));
        }
        let (mut call, rx, tx) = CallTask::register(
            &self.inner,
            account,
            peer,
            new_sid(),
            CallDirection::Outgoing,
            opts.video,
            None,
        );
        let id = call.id;
        self.inner.publish_chat_list();
        call.media = Some(media);
        tokio::spawn(call.run(rx, tx));
        Ok(id)
    }

    /// Takes an incoming call on this device; the others stop ringing.
    pub fn accept_call(&self, call: CallId, media: CallMedia) -> Result<()> {
        self.call_input(call, Input::Accept(media))
    }

    /// Declines an incoming call, on every device of ours.
    pub fn reject_call(&self, call: CallId) -> Result<()> {
        self.call_input(call, Input::Reject)
    }

    /// Hangs up, or cancels a call that is still ringing.
    pub fn end_call(&self, call: CallId) -> Result<()> {
        self.call_input(call, Input::Hangup)
    }

    /// Mutes or unmutes our audio (`audio`) or video; the peer is told (XEP-0167 §7).
    pub fn set_call_muted(&self, call: CallId, audio: bool, muted: bool) -> Result<()> {
        self.call_input(call, Input::Mute { audio, muted })
    }

    /// Turns a connected audio call into a video call (Jingle content-add): `media` gives
    /// the camera (`video_source`) and where the peer's video goes (`video_sink`).
    pub fn add_call_video(&self, call: CallId, media: CallMedia) -> Result<()> {
        if media.video_source.is_none() && media.video_sink.is_none() {
            return Err(ClientError::BadInput("no camera and no video sink".into()));
        }
        self.call_input(call, Input::AddVideo(media))
    }

    /// The live calls and the last few that ended (as in the chat-list snapshot).
    pub fn calls(&self) -> Vec<CallItem> {
        self.inner.call_items()
    }

    fn call_input(&self, call: CallId, input: Input) -> Result<()> {
        let tx = lock(&self.inner.calls)
            .active
            .get(&call)
            .map(|e| e.tx.clone())
            .ok_or_else(|| ClientError::NotFound("no such call".into()))?;
        tx.send(input)
            .map_err(|_| ClientError::NotFound("the call has ended".into()))
    }
}

/// The STUN/TURN servers for a call: the account's server's (XEP-0215).
async fn ice_servers(session: &Session) -> Vec<IceServer> {
    let services =
        match tokio::time::timeout(Duration::from_secs(5), session.external_services()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "no STUN/TURN servers from the server");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
    services
        .into_iter()
        .map(|s| {
            let host = if s.host.contains(':') && !s.host.starts_with('[') {
                format!("[{}]", s.host)
            } else {
                s.host.clone()
            };
            let url = match s.kind.as_str() {
                "stun" => format!("stun:{host}:{}", s.port),
                kind => format!("{kind}:{host}:{}?transport={}", s.port, s.transport),
            };
            IceServer {
                urls: vec![url],
                username: s.username,
                credential: s.password,
            }
        })
        .collect()
}

struct CallTask {
    inner: Arc<Inner>,
    id: CallId,
    account: AccountId,
    peer: BareJid,
    sid: String,
    direction: CallDirection,
    video: bool,
    /// The peer's device the Jingle session is with.
    remote: Option<String>,
    media: Option<CallMedia>,
    engine: Option<Arc<MediaSession>>,
    engine_rx: Option<mpsc::UnboundedReceiver<EngineEvent>>,
    /// Our offer (caller), made while ringing.
    offer: Option<String>,
    /// Candidates gathered before they may go out (before `proceed` / our session-accept).
    held: Vec<Candidate>,
    /// Whether our candidates may be sent now.
    may_send_candidates: bool,
    /// Remote candidates that came before the remote description was set.
    early_remote: Vec<Candidate>,
    remote_set: bool,
    /// Our offer or answer as set, for the ICE credentials of transport-info.
    local_sdp: Option<String>,
    /// The peer's side of the session as it stands (all contents), to build the whole
    /// description again when a content-add changes it.
    remote_desc: Option<JingleDescription>,
    /// Our content-add waits for its content-accept.
    adding: bool,
    connected: bool,
    answered: bool,
    /// The peer's OMEMO device our DTLS fingerprint goes encrypted to: named in its
    /// `proceed` (caller), or the one its session-initiate's fingerprint came from (callee).
    peer_device: Option<u32>,
    /// The device that vouched for the peer's fingerprint, once one did.
    verified_by: Option<u32>,
    /// The DTLS role the peer took when the session began (`active` / `passive`): a
    /// description of its rebuilt as an answer must say it again.
    peer_dtls_role: Option<&'static str>,
}

enum Step {
    Continue,
    End(CallEnd),
}

impl CallTask {
    /// A new call in the registry (ringing), and its task's state and channel.
    fn register(
        inner: &Arc<Inner>,
        account: AccountId,
        peer: BareJid,
        sid: String,
        direction: CallDirection,
        video: bool,
        remote: Option<String>,
    ) -> (
        CallTask,
        mpsc::UnboundedReceiver<Input>,
        mpsc::UnboundedSender<Input>,
    ) {
        let id = CallId(NEXT_CALL.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        let item = CallItem {
            id,
            account,
            peer: peer.as_str().to_owned(),
            direction,
            video,
            state: CallState::Ringing {
                peer_ringing: false,
            },
            started_ms: now_ms(),
            verified_by: None,
        };
        lock(&inner.calls).active.insert(
            id,
            Entry {
                account,
                sid: sid.clone(),
                peer: peer.clone(),
                remote: remote.clone(),
                tx: tx.clone(),
                item,
            },
        );
        let task = CallTask {
            inner: inner.clone(),
            id,
            account,
            peer,
            sid,
            direction,
            video,
            remote,
            media: None,
            engine: None,
            engine_rx: None,
            offer: None,
            held: Vec::new(),
            may_send_candidates: false,
            early_remote: Vec::new(),
            remote_set: false,
            local_sdp: None,
            remote_desc: None,
            adding: false,
            connected: false,
            answered: false,
            peer_device: None,
            verified_by: None,
            peer_dtls_role: None,
        };
        (task, rx, tx)
    }

    fn session(&self) -> Option<Session> {
        self.inner.live_session(self.account)
    }

    fn send_jmi(&self, action: JmiAction) {
        match self.session() {
            Some(s) => {
                if let Err(e) = s.send_jmi(&self.peer, &self.sid, &action) {
                    tracing::info!(call = self.id.0, error = %e, "call message not sent");
                }
            }
            None => tracing::info!(call = self.id.0, "offline: call message not sent"),
        }
    }

    /// Sends a Jingle action to the peer's device without waiting for its answer: actions
    /// go out in order, and an error answer ends the call through `Input`.
    fn send_jingle(&self, jingle: Jingle, tx: &mpsc::UnboundedSender<Input>) {
        let action = jingle.action.clone();
        self.send_jingle_element(action, OutgoingJingle::new(jingle), tx);
    }

    fn send_jingle_element(
        &self,
        action: Action,
        jingle: OutgoingJingle,
        tx: &mpsc::UnboundedSender<Input>,
    ) {
        let (Some(session), Some(remote)) = (self.session(), self.remote.clone()) else {
            return;
        };
        match session.jingle_queued(&remote, jingle) {
            Ok(reply) => {
                let id = self.id;
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = reply.await {
                        tracing::info!(call = id.0, error = %e, ?action, "jingle action refused");
                        if matches!(action, Action::SessionInitiate | Action::SessionAccept) {
                            let _ = tx.send(Input::Hangup);
                        }
                    }
                });
            }
            Err(e) => tracing::info!(call = self.id.0, error = %e, "jingle action not sent"),
        }
    }

    /// Sends a Jingle action that carries our DTLS fingerprint: as an OMEMO message for the
    /// peer's device when we know it, in the clear otherwise (the peer then shows the call
    /// as not verified; it still goes on).
    async fn send_jingle_sealed(&mut self, jingle: Jingle, tx: &mpsc::UnboundedSender<Input>) {
        let (Some(session), Some(device)) = (self.session(), self.peer_device) else {
            return self.send_jingle(jingle, tx);
        };
        let action = jingle.action.clone();
        let mut element = OutgoingJingle::new(jingle);
        for fp in element.plain_fingerprints() {
            let sealed = crate::omemo::seal_for_device(
                &self.inner,
                self.account,
                &session,
                &self.peer,
                device,
                &fp.text,
            )
            .await
            .and_then(|enc| {
                element
                    .seal_fingerprint(&fp.content, &enc)
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = sealed {
                tracing::info!(call = self.id.0, error = %e, "fingerprint sent in the clear");
            }
        }
        self.send_jingle_element(action, element, tx);
    }

    /// Decrypts the DTLS fingerprints that came through OMEMO and puts them back into the
    /// request. All must open, and from one device of the peer, the same for the whole
    /// session: `Err` is a reason to end the call (a forged or replayed fingerprint).
    fn unseal(
        &mut self,
        req: &mut JingleRequest,
        session: &Session,
    ) -> std::result::Result<(), String> {
        let sealed = std::mem::take(&mut req.sealed);
        if sealed.is_empty() {
            return Ok(());
        }
        // The caller encrypted its own for the device that proceeded: the answer must come
        // from that one.
        let mut device = self.verified_by.or(self.peer_device);
        let mut trust = DeviceTrust::Undecided;
        for s in &sealed {
            let opened = crate::omemo::open_sealed(
                &self.inner,
                self.account,
                session,
                &self.peer,
                &s.encrypted,
            )?;
            if device.is_some_and(|d| d != opened.device_id) {
                return Err("fingerprints vouched for by two different devices".into());
            }
            if opened.trust == DeviceTrust::Distrusted {
                return Err("vouched for by a device you distrusted".into());
            }
            device = Some(opened.device_id);
            trust = opened.trust;
            linnet_xmpp::jingle::open_fingerprint(&mut req.jingle, s, &opened.text)
                .map_err(|e| e.to_string())?;
        }
        if let Some(device_id) = device {
            self.verified_by = Some(device_id);
            // The callee learns here which device of the caller to encrypt its own for.
            self.peer_device.get_or_insert(device_id);
            self.inner
                .set_call_verified(self.id, CallVerification { device_id, trust });
        }
        Ok(())
    }

    /// A fingerprint that did not open: refused, and the call ends (it may be an attack).
    fn fail_unsealed(
        &mut self,
        req: &JingleRequest,
        session: &Session,
        why: String,
        tx: &mpsc::UnboundedSender<Input>,
    ) -> Step {
        tracing::info!(call = self.id.0, error = %why, "DTLS fingerprint not believed");
        let _ = session.jingle_error(req, "not-acceptable", "cancel", None);
        self.terminate(&CallReason::SecurityError, tx);
        Step::End(CallEnd::Failed {
            reason: format!("the peer's DTLS fingerprint could not be verified: {why}"),
        })
    }

    async fn make_engine(&mut self) -> std::result::Result<(), String> {
        let servers = match self.session() {
            Some(s) => ice_servers(&s).await,
            None => Vec::new(),
        };
        let cfg = MediaConfig {
            ice_servers: servers,
            relay_only: self.inner.opts.relay_calls,
            video: self.video,
            bind_addrs: self.inner.opts.call_bind.clone(),
        };
        let (etx, erx) = mpsc::unbounded_channel();
        let engine = MediaSession::new(cfg, etx)
            .await
            .map_err(|e| format!("media: {e}"))?;
        if let Some(media) = self.media.take() {
            if let Some(s) = media.audio_source {
                engine.set_audio_source(s);
            }
            if let Some(s) = media.audio_sink {
                engine.set_audio_sink(s);
            }
            if let Some(s) = media.video_source {
                engine.set_video_source(s);
            }
            if let Some(s) = media.video_sink {
                engine.set_video_sink(s);
            }
        }
        self.engine = Some(Arc::new(engine));
        self.engine_rx = Some(erx);
        Ok(())
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        tx: mpsc::UnboundedSender<Input>,
    ) {
        let end = self.drive(&mut rx, &tx).await;
        if let Some(engine) = self.engine.take() {
            engine.close().await;
        }
        tracing::info!(call = self.id.0, "call ended");
        self.inner.set_call_state(
            self.id,
            CallState::Ended {
                reason: end,
                at_ms: now_ms(),
            },
        );
        // Whatever still arrives for it is answered as for an unknown session.
        rx.close();
        while let Some(input) = rx.recv().await {
            if let (Input::Jingle(req), Some(s)) = (input, self.session()) {
                let _ = s.jingle_error(&req, "item-not-found", "cancel", Some("unknown-session"));
            }
        }
    }

    async fn drive(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Input>,
        tx: &mpsc::UnboundedSender<Input>,
    ) -> CallEnd {
        if self.direction == CallDirection::Outgoing {
            if let Err(reason) = self.make_engine().await {
                return CallEnd::Failed { reason };
            }
            let Some(engine) = self.engine.clone() else {
                return CallEnd::Failed {
                    reason: "no media session".into(),
                };
            };
            let offer = match engine.create_offer().await {
                Ok(o) => o,
                Err(e) => {
                    return CallEnd::Failed {
                        reason: format!("media: {e}"),
                    }
                }
            };
            self.offer = Some(offer);
            let mut media = vec!["audio".to_owned()];
            if self.video {
                media.push("video".to_owned());
            }
            self.send_jmi(JmiAction::Propose { media });
        }
        let ring_timer = {
            let tx = tx.clone();
            let ring = self.inner.opts.call_ring_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(ring).await;
                let _ = tx.send(Input::RingTimeout);
            })
        };
        let end = loop {
            let step = tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.on_input(input, tx).await,
                    None => Step::End(CallEnd::Failed { reason: "the client shut down".into() }),
                },
                Some(ev) = recv_opt(&mut self.engine_rx) => self.on_engine(ev, tx),
            };
            if let Step::End(end) = step {
                break end;
            }
        };
        ring_timer.abort();
        end
    }

    async fn on_input(&mut self, input: Input, tx: &mpsc::UnboundedSender<Input>) -> Step {
        match input {
            Input::Signal(sig) => self.on_signal(sig, tx).await,
            Input::Jingle(req) => self.on_jingle(req, tx).await,
            Input::Accept(media) => {
                if self.direction != CallDirection::Incoming || self.answered {
                    return Step::Continue;
                }
                self.answered = true;
                self.media = Some(media);
                // `proceed` goes to the caller's devices and, by carbons, to ours, which
                // stop ringing; the caller's device then sends us the session.
                let device = self.session().and_then(|s| {
                    crate::omemo::call_device(&self.inner, self.account, s.own_jid())
                });
                self.send_jmi(JmiAction::Proceed { device });
                self.inner.set_call_state(self.id, CallState::Connecting);
                if let Err(reason) = self.make_engine().await {
                    self.send_jmi(JmiAction::Finish(CallReason::FailedApplication));
                    return Step::End(CallEnd::Failed { reason });
                }
                Step::Continue
            }
            Input::Reject => {
                if self.direction != CallDirection::Incoming || self.answered {
                    return Step::Continue;
                }
                self.send_jmi(JmiAction::Reject(CallReason::Decline));
                Step::End(CallEnd::Declined { by_peer: false })
            }
            Input::Hangup => self.hang_up(CallReason::Success, tx),
            Input::Mute { audio, muted } => {
                if let Some(e) = &self.engine {
                    e.set_muted(audio, muted);
                }
                let media = if audio { "audio" } else { "video" };
                let content = self
                    .remote_desc
                    .as_ref()
                    .and_then(|d| d.contents.iter().find(|c| content_media(c) == Some(media)));
                if let Some(c) = content {
                    let creator = creator_name(&c.creator);
                    let mut j = Jingle::new(Action::SessionInfo, SessionId(self.sid.clone()));
                    let info = if muted { "mute" } else { "unmute" };
                    j.other = vec![linnet_xmpp::jingle::rtp_info(
                        info,
                        Some((creator, &c.name.0)),
                    )];
                    self.send_jingle(j, tx);
                }
                Step::Continue
            }
            Input::AddVideo(media) => self.add_video(media, tx).await,
            Input::RingTimeout => {
                if self.connected
                    || self.remote_set
                    || (self.direction == CallDirection::Incoming && self.answered)
                {
                    return Step::Continue;
                }
                match self.direction {
                    CallDirection::Outgoing if self.remote.is_none() => {
                        self.send_jmi(JmiAction::Retract(CallReason::Timeout));
                        Step::End(CallEnd::NoAnswer)
                    }
                    CallDirection::Outgoing => Step::Continue,
                    // The caller retracts; if that never comes, stop ringing anyway.
                    CallDirection::Incoming => Step::End(CallEnd::Cancelled { by_peer: true }),
                }
            }
        }
    }

    /// Ends the call from our side: a cancel before the session exists, a terminate after.
    fn hang_up(&mut self, reason: CallReason, tx: &mpsc::UnboundedSender<Input>) -> Step {
        let session_exists = match self.direction {
            CallDirection::Outgoing => self.remote.is_some(),
            CallDirection::Incoming => self.remote_set,
        };
        if session_exists {
            self.terminate(&reason, tx);
        } else if self.direction == CallDirection::Outgoing {
            self.send_jmi(JmiAction::Retract(CallReason::Cancel));
            return Step::End(CallEnd::Cancelled { by_peer: false });
        } else if self.answered {
            self.send_jmi(JmiAction::Finish(reason.clone()));
        } else {
            self.send_jmi(JmiAction::Reject(CallReason::Decline));
            return Step::End(CallEnd::Declined { by_peer: false });
        }
        match reason {
            CallReason::Success => Step::End(CallEnd::HungUp { by_peer: false }),
            other => Step::End(CallEnd::Failed {
                reason: other.name().to_owned(),
            }),
        }
    }

    async fn on_signal(&mut self, sig: CallSignal, tx: &mpsc::UnboundedSender<Input>) -> Step {
        let from_peer = !sig.outgoing;
        match (self.direction, sig.action) {
            (CallDirection::Outgoing, JmiAction::Ringing) if from_peer => {
                if self.remote.is_none() {
                    self.inner
                        .set_call_state(self.id, CallState::Ringing { peer_ringing: true });
                }
                Step::Continue
            }
            (CallDirection::Outgoing, JmiAction::Proceed { device }) if from_peer => {
                let Some(from) = sig.from_full.filter(|f| f.contains('/')) else {
                    return Step::Continue;
                };
                if self.remote.is_some() {
                    // Answered on two devices at once: the first one has the call.
                    return Step::Continue;
                }
                self.remote = Some(from.clone());
                self.inner.set_call_remote(self.id, &from);
                self.inner.set_call_state(self.id, CallState::Connecting);
                // A device the user distrusted (a lost phone, say) does not get the call.
                if device.is_some_and(|d| {
                    crate::omemo::call_device_distrusted(&self.inner, self.account, &self.peer, d)
                }) {
                    self.send_jmi(JmiAction::Finish(CallReason::SecurityError));
                    return Step::End(CallEnd::Failed {
                        reason: "answered on a device you distrusted".into(),
                    });
                }
                self.peer_device = device;
                self.initiate(tx).await
            }
            (CallDirection::Outgoing, JmiAction::Reject(reason)) if from_peer => {
                if self.remote.is_some() {
                    return Step::Continue;
                }
                Step::End(match reason {
                    CallReason::Busy => CallEnd::Busy,
                    _ => CallEnd::Declined { by_peer: true },
                })
            }
            (CallDirection::Incoming, JmiAction::Retract(_)) if from_peer => {
                if self.remote_set {
                    return Step::Continue;
                }
                Step::End(CallEnd::Cancelled { by_peer: true })
            }
            (CallDirection::Incoming, JmiAction::Proceed { .. } | JmiAction::Accept)
                if !from_peer =>
            {
                if self.answered {
                    return Step::Continue;
                }
                Step::End(CallEnd::AnsweredElsewhere)
            }
            (CallDirection::Incoming, JmiAction::Reject(_)) if !from_peer => {
                if self.answered {
                    return Step::Continue;
                }
                Step::End(CallEnd::DeclinedElsewhere)
            }
            (_, JmiAction::Finish(reason)) if from_peer => {
                let established = self.remote_set
                    || (self.direction == CallDirection::Outgoing && self.remote.is_some());
                if !established && self.direction == CallDirection::Incoming && !self.answered {
                    return Step::End(CallEnd::Cancelled { by_peer: true });
                }
                Step::End(peer_end(&reason))
            }
            _ => Step::Continue,
        }
    }

    /// The caller's session-initiate, to the device that proceeded, with the offer made
    /// while ringing and then every candidate gathered so far.
    async fn initiate(&mut self, tx: &mpsc::UnboundedSender<Input>) -> Step {
        let Some(offer) = self.offer.clone() else {
            return Step::End(CallEnd::Failed {
                reason: "no offer".into(),
            });
        };
        let desc = match sdp::sdp_to_jingle(&offer, Creator::Initiator, Role::Initiator, false) {
            Ok(d) => d,
            Err(e) => {
                return Step::End(CallEnd::Failed {
                    reason: format!("our offer: {e}"),
                })
            }
        };
        self.local_sdp = Some(offer);
        let mut j = Jingle::new(Action::SessionInitiate, SessionId(self.sid.clone()));
        j.initiator = self
            .session()
            .and_then(|s| s.negotiated.bound_jid.parse().ok());
        j.contents = desc.contents;
        j.group = desc.group;
        self.send_jingle_sealed(j, tx).await;
        self.may_send_candidates = true;
        for c in std::mem::take(&mut self.held) {
            self.send_candidate(c, tx);
        }
        Step::Continue
    }

    fn send_candidate(&mut self, c: Candidate, tx: &mpsc::UnboundedSender<Input>) {
        if !self.may_send_candidates {
            self.held.push(c);
            return;
        }
        let Some(local) = &self.local_sdp else {
            return;
        };
        // Contents are the initiator's, whoever trickles into them.
        let content = sdp::ice_credentials(local, &c.mid).and_then(|creds| {
            sdp::transport_info_content(&c.mid, Creator::Initiator, &creds, &c.candidate)
        });
        let content = match content {
            Ok(content) => content,
            Err(e) => {
                // TCP and mDNS candidates have no Jingle form (XEP-0176 is UDP).
                tracing::debug!(call = self.id.0, error = %e, "a local candidate left out");
                return;
            }
        };
        let mut j = Jingle::new(Action::TransportInfo, SessionId(self.sid.clone()));
        j.contents = vec![content];
        self.send_jingle(j, tx);
    }

    fn on_engine(&mut self, ev: EngineEvent, tx: &mpsc::UnboundedSender<Input>) -> Step {
        match ev {
            EngineEvent::LocalCandidate(c) => {
                self.send_candidate(c, tx);
                Step::Continue
            }
            EngineEvent::GatheringDone | EngineEvent::FirstAudio => Step::Continue,
            EngineEvent::Connected { relayed } => {
                self.connected = true;
                self.inner.set_call_state(
                    self.id,
                    CallState::Connected {
                        since_ms: now_ms(),
                        relayed,
                    },
                );
                Step::Continue
            }
            EngineEvent::Failed(reason) => {
                let _ = self.hang_up(CallReason::ConnectivityError, tx);
                Step::End(CallEnd::Failed { reason })
            }
            EngineEvent::Closed => Step::End(CallEnd::Failed {
                reason: "the media connection closed".into(),
            }),
        }
    }

    async fn on_jingle(
        &mut self,
        mut req: JingleRequest,
        tx: &mpsc::UnboundedSender<Input>,
    ) -> Step {
        let Some(session) = self.session() else {
            return Step::Continue;
        };
        let refuse = |req: &JingleRequest, cond: &'static str, jingle: Option<&'static str>| {
            let _ = session.jingle_error(req, cond, "cancel", jingle);
        };
        match req.jingle.action {
            Action::SessionInitiate => {
                if self.direction != CallDirection::Incoming || !self.answered || self.remote_set {
                    refuse(&req, "unexpected-request", Some("out-of-order"));
                    return Step::Continue;
                }
                if let Err(why) = self.unseal(&mut req, &session) {
                    return self.fail_unsealed(&req, &session, why, tx);
                }
                let desc = described(&req);
                let offer = match sdp::jingle_to_sdp(&desc, SdpType::Offer, Role::Responder) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::info!(call = self.id.0, error = %e, "an offer we cannot take");
                        refuse(&req, "bad-request", None);
                        self.send_jmi(JmiAction::Finish(CallReason::FailedApplication));
                        return Step::End(CallEnd::Failed {
                            reason: format!("the caller's offer: {e}"),
                        });
                    }
                };
                let _ = session.jingle_ack(&req);
                let Some(engine) = self.engine.clone() else {
                    return self.fail_after_terminate("no media session".into(), tx);
                };
                let answer = match engine.accept_offer(&offer).await {
                    Ok(a) => a,
                    Err(e) => return self.fail_after_terminate(format!("media: {e}"), tx),
                };
                self.remote_set = true;
                self.peer_dtls_role = sdp::dtls_role(&answer).map(sdp::other_dtls_role);
                self.add_remote_candidates(&desc).await;
                self.remote_desc = Some(desc.clone());
                let local =
                    match sdp::sdp_to_jingle(&answer, Creator::Initiator, Role::Responder, false) {
                        Ok(d) => d,
                        Err(e) => {
                            return Step::End(CallEnd::Failed {
                                reason: format!("our answer: {e}"),
                            })
                        }
                    };
                self.local_sdp = Some(answer);
                let mut j = Jingle::new(Action::SessionAccept, SessionId(self.sid.clone()));
                j.responder = session.negotiated.bound_jid.parse().ok();
                j.contents = local.contents;
                j.group = local.group;
                self.send_jingle_sealed(j, tx).await;
                self.may_send_candidates = true;
                for c in std::mem::take(&mut self.held) {
                    self.send_candidate(c, tx);
                }
                Step::Continue
            }
            Action::SessionAccept => {
                if self.direction != CallDirection::Outgoing || self.remote_set {
                    refuse(&req, "unexpected-request", Some("out-of-order"));
                    return Step::Continue;
                }
                if let Err(why) = self.unseal(&mut req, &session) {
                    return self.fail_unsealed(&req, &session, why, tx);
                }
                let desc = described(&req);
                let answer = match sdp::jingle_to_sdp(&desc, SdpType::Answer, Role::Initiator) {
                    Ok(a) => a,
                    Err(e) => {
                        refuse(&req, "bad-request", None);
                        return self.fail_after_terminate(format!("the callee's answer: {e}"), tx);
                    }
                };
                let _ = session.jingle_ack(&req);
                let Some(engine) = self.engine.clone() else {
                    return self.fail_after_terminate("no media session".into(), tx);
                };
                if let Err(e) = engine.set_answer(&answer).await {
                    return self.fail_after_terminate(format!("media: {e}"), tx);
                }
                self.peer_dtls_role = sdp::dtls_role(&answer);
                self.remote_set = true;
                self.add_remote_candidates(&desc).await;
                self.remote_desc = Some(desc);
                Step::Continue
            }
            Action::ContentAdd | Action::ContentAccept if self.remote_set => {
                if let Err(why) = self.unseal(&mut req, &session) {
                    return self.fail_unsealed(&req, &session, why, tx);
                }
                if req.jingle.action == Action::ContentAdd {
                    self.on_content_add(&req, &session, tx).await
                } else {
                    self.on_content_accept(&req, &session).await
                }
            }
            Action::ContentAdd | Action::ContentAccept => {
                refuse(&req, "unexpected-request", Some("out-of-order"));
                Step::Continue
            }
            Action::ContentReject => {
                let _ = session.jingle_ack(&req);
                self.adding = false;
                Step::Continue
            }
            Action::TransportInfo => {
                let desc = JingleDescription {
                    contents: req.jingle.contents.clone(),
                    group: None,
                };
                let _ = session.jingle_ack(&req);
                if self.remote_set {
                    self.add_remote_candidates(&desc).await;
                } else {
                    self.early_remote.extend(candidates_of(&desc));
                }
                Step::Continue
            }
            Action::SessionTerminate => {
                let _ = session.jingle_ack(&req);
                let reason = CallReason::from_jingle(req.jingle.reason.as_ref());
                self.send_jmi(JmiAction::Finish(reason.clone()));
                Step::End(peer_end(&reason))
            }
            Action::SessionInfo => {
                // Ringing, mute and hold notices (XEP-0167 §7): informational.
                let _ = session.jingle_ack(&req);
                Step::Continue
            }
            _ => {
                refuse(&req, "feature-not-implemented", Some("unsupported-info"));
                Step::Continue
            }
        }
    }

    fn our_role(&self) -> (Role, Creator) {
        match self.direction {
            CallDirection::Outgoing => (Role::Initiator, Creator::Initiator),
            CallDirection::Incoming => (Role::Responder, Creator::Responder),
        }
    }

    /// content-add of a video content to a session that has audio only.
    async fn add_video(&mut self, media: CallMedia, tx: &mpsc::UnboundedSender<Input>) -> Step {
        let (Some(engine), Some(remote)) = (self.engine.clone(), self.remote_desc.clone()) else {
            tracing::info!(
                call = self.id.0,
                "video asked for before the call is set up"
            );
            return Step::Continue;
        };
        if self.adding || self.video {
            return Step::Continue;
        }
        if let Some(src) = media.video_source {
            engine.set_video_source(src);
        }
        if let Some(sink) = media.video_sink {
            engine.set_video_sink(sink);
        }
        let offer = match engine.add_video().await {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(call = self.id.0, error = %e, "no video");
                return Step::Continue;
            }
        };
        let (role, creator) = self.our_role();
        let desc = match sdp::sdp_to_jingle(&offer, creator, role, false) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(call = self.id.0, error = %e, "our video offer");
                return Step::Continue;
            }
        };
        let known: Vec<&str> = remote.contents.iter().map(|c| c.name.0.as_str()).collect();
        let added: Vec<_> = desc
            .contents
            .into_iter()
            .filter(|c| !known.contains(&c.name.0.as_str()))
            .collect();
        if added.is_empty() {
            return Step::Continue;
        }
        self.local_sdp = Some(offer);
        self.adding = true;
        let mut j = Jingle::new(Action::ContentAdd, SessionId(self.sid.clone()));
        j.contents = added;
        self.send_jingle_sealed(j, tx).await;
        Step::Continue
    }

    /// The peer adds a content (video): the whole session described again as an offer,
    /// answered with a content-accept of what it added.
    async fn on_content_add(
        &mut self,
        req: &JingleRequest,
        session: &Session,
        tx: &mpsc::UnboundedSender<Input>,
    ) -> Step {
        let (Some(engine), Some(mut remote)) = (self.engine.clone(), self.remote_desc.clone())
        else {
            let _ = session.jingle_error(req, "unexpected-request", "cancel", Some("out-of-order"));
            return Step::Continue;
        };
        if self.adding {
            // Both sides adding at once: XEP-0166 §7.2.16 tie-break, the initiator's wins.
            if self.direction == CallDirection::Outgoing {
                let _ = session.jingle_error(req, "conflict", "cancel", Some("tie-break"));
                return Step::Continue;
            }
            self.adding = false;
        }
        let Some(added_creator) = req.jingle.contents.first().map(|c| c.creator.clone()) else {
            let _ = session.jingle_error(req, "bad-request", "modify", None);
            return Step::Continue;
        };
        let names: Vec<String> = req
            .jingle
            .contents
            .iter()
            .map(|c| c.name.0.clone())
            .collect();
        remote.contents.extend(req.jingle.contents.iter().cloned());
        if let Some(group) = &mut remote.group {
            for n in &names {
                group
                    .contents
                    .push(linnet_xmpp::jingle::jingle_grouping::Content::new(n));
            }
        }
        let (role, _) = self.our_role();
        let offer = match sdp::jingle_to_sdp(&remote, SdpType::Offer, role) {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(call = self.id.0, error = %e, "a content-add we cannot take");
                let _ = session.jingle_error(req, "bad-request", "modify", None);
                return Step::Continue;
            }
        };
        let _ = session.jingle_ack(req);
        let answer = match engine.accept_offer(&offer).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(call = self.id.0, error = %e, "the added content failed");
                let mut j = Jingle::new(Action::ContentReject, SessionId(self.sid.clone()));
                j.contents = req.jingle.contents.clone();
                self.send_jingle(j, tx);
                return Step::Continue;
            }
        };
        let accepted = match sdp::sdp_to_jingle(&answer, added_creator, role, false) {
            Ok(d) => d
                .contents
                .into_iter()
                .filter(|c| names.contains(&c.name.0))
                .collect::<Vec<_>>(),
            Err(e) => return self.fail_after_terminate(format!("our answer: {e}"), tx),
        };
        self.local_sdp = Some(answer);
        self.remote_desc = Some(remote);
        self.video = true;
        self.inner.set_call_video(self.id);
        let mut j = Jingle::new(Action::ContentAccept, SessionId(self.sid.clone()));
        j.contents = accepted;
        self.send_jingle_sealed(j, tx).await;
        Step::Continue
    }

    /// Our content-add was accepted: the whole answer described again.
    async fn on_content_accept(&mut self, req: &JingleRequest, session: &Session) -> Step {
        let (Some(engine), Some(mut remote), true) =
            (self.engine.clone(), self.remote_desc.clone(), self.adding)
        else {
            let _ = session.jingle_error(req, "unexpected-request", "cancel", Some("out-of-order"));
            return Step::Continue;
        };
        remote.contents.extend(req.jingle.contents.iter().cloned());
        if let Some(group) = &mut remote.group {
            for c in &req.jingle.contents {
                group
                    .contents
                    .push(linnet_xmpp::jingle::jingle_grouping::Content::new(
                        &c.name.0,
                    ));
            }
        }
        let (role, _) = self.our_role();
        let settled = match self.peer_dtls_role {
            Some(peer) => sdp::settle_dtls_role(&mut remote, peer),
            None => Ok(()),
        };
        let answer = match settled.and_then(|()| sdp::jingle_to_sdp(&remote, SdpType::Answer, role))
        {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(call = self.id.0, error = %e, "a content-accept we cannot take");
                let _ = session.jingle_error(req, "bad-request", "modify", None);
                return Step::Continue;
            }
        };
        let _ = session.jingle_ack(req);
        self.adding = false;
        if let Err(e) = engine.set_answer(&answer).await {
            tracing::info!(call = self.id.0, error = %e, "the added content failed");
            return Step::Continue;
        }
        self.remote_desc = Some(remote);
        self.video = true;
        self.inner.set_call_video(self.id);
        Step::Continue
    }

    /// session-terminate to the peer's device, and `finish` for every device of both.
    fn terminate(&self, reason: &CallReason, tx: &mpsc::UnboundedSender<Input>) {
        let mut j = Jingle::new(Action::SessionTerminate, SessionId(self.sid.clone()));
        j.reason = Some(reason.to_jingle());
        self.send_jingle(j, tx);
        self.send_jmi(JmiAction::Finish(reason.clone()));
    }

    fn fail_after_terminate(&mut self, reason: String, tx: &mpsc::UnboundedSender<Input>) -> Step {
        self.terminate(&CallReason::FailedApplication, tx);
        Step::End(CallEnd::Failed { reason })
    }

    async fn add_remote_candidates(&mut self, desc: &JingleDescription) {
        let mut all = std::mem::take(&mut self.early_remote);
        all.extend(candidates_of(desc));
        let Some(engine) = self.engine.clone() else {
            return;
        };
        for c in all {
            if let Err(e) = engine.add_remote_candidate(c).await {
                tracing::debug!(call = self.id.0, error = %e, "a remote candidate refused");
            }
        }
    }
}

/// The candidates of a session-initiate, session-accept or transport-info; ones we cannot
/// use (not UDP, malformed) are left out.
/// The session as a Jingle request describes it (contents and BUNDLE group).
fn described(req: &JingleRequest) -> JingleDescription {
    JingleDescription {
        contents: req.jingle.contents.clone(),
        group: req.jingle.group.clone(),
    }
}

fn candidates_of(desc: &JingleDescription) -> Vec<Candidate> {
    let mut out = Vec::new();
    for content in &desc.contents {
        match sdp::transport_info_candidates(content) {
            Ok(cands) => out.extend(cands.into_iter().map(|c| Candidate {
                mid: c.mid,
                candidate: c.candidate,
            })),
            Err(e) => tracing::debug!(error = %e, "remote candidates left out"),
        }
    }
    out
}

/// The media of a content's RTP description ("audio", "video").
fn content_media(c: &linnet_xmpp::jingle::jingle::Content) -> Option<&str> {
    match &c.description {
        Some(linnet_xmpp::jingle::jingle::Description::Rtp(d)) => Some(d.media.as_str()),
        _ => None,
    }
}

fn creator_name(c: &Creator) -> &'static str {
    match c {
        Creator::Initiator => "initiator",
        Creator::Responder => "responder",
    }
}

fn peer_end(reason: &CallReason) -> CallEnd {
    match reason {
        CallReason::Success | CallReason::Expired => CallEnd::HungUp { by_peer: true },
        CallReason::Busy => CallEnd::Busy,
        CallReason::Decline => CallEnd::Declined { by_peer: true },
        CallReason::Cancel => CallEnd::Cancelled { by_peer: true },
        other => CallEnd::Failed {
            reason: format!("the other side ended it: {}", other.name()),
        },
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
