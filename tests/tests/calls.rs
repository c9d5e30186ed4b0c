//! Calls through the client against the real servers and coturn: ringing every device
//! (XEP-0353), the Jingle session with real media (an Opus tone each way, whose frequency is
//! checked in what the other side recorded; VP8 frames compared by hash), relay-only
//! through TURN, the ways a call ends, DTLS fingerprints vouched for by OMEMO, and Jingle
//! nobody asked for.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use linnet_call::audio::{dominant_frequency, PcmCollector, Tone, SAMPLE_RATE};
use linnet_call::video::{frame_sha256, FrameCollector, FrameList, IvfReader};
use linnet_client::calls::{
    CallEnd, CallItem, CallMedia, CallOptions, CallState, CallVerification,
};
use linnet_client::{ClientOptions, DeviceTrust, TrustDecision};
use linnet_tests::*;
use linnet_xmpp::jingle::{JmiAction, NS_DTLS_VERIFY, NS_JINGLE};
use linnet_xmpp::{BareJid, Event};

async fn wait_call<F: Fn(&CallItem) -> bool>(c: &TestClient, what: &str, pred: F) -> CallItem {
    let s = c.wait_list(what, |s| s.calls.iter().any(&pred)).await;
    s.calls.iter().find(|i| pred(i)).cloned().unwrap()
}

fn ringing(i: &CallItem) -> bool {
    matches!(i.state, CallState::Ringing { .. })
}

fn connected(i: &CallItem) -> Option<bool> {
    match i.state {
        CallState::Connected { relayed, .. } => Some(relayed),
        _ => None,
    }
}

fn ended(i: &CallItem) -> Option<&CallEnd> {
    match &i.state {
        CallState::Ended { reason, .. } => Some(reason),
        _ => None,
    }
}

/// `from` calls `to`, audio only, with no media devices; returns the call's id on `from`.
async fn place(from: &TestClient, to: &TestClient) -> linnet_client::calls::CallId {
    place_to(from, &to.jid).await
}

/// A calls B with `media`; returns the call's id on A and the call ringing at B.
async fn ring(
    a: &TestClient,
    b: &TestClient,
    opts: CallOptions,
    media: CallMedia,
) -> (linnet_client::calls::CallId, CallItem) {
    let id = a
        .client
        .start_call(a.account, &b.jid, opts, media)
        .await
        .unwrap();
    let incoming = wait_call(b, "ringing", |i| i.peer == a.jid && ringing(i)).await;
    (id, incoming)
}

fn tone_media(hz: f32, heard: &PcmCollector) -> CallMedia {
    CallMedia {
        audio_source: Some(Box::new(Tone::new(hz, 0.3))),
        audio_sink: Some(Box::new(heard.clone())),
        ..CallMedia::default()
    }
}

/// A camera for `who`'s calls: the frames of a fresh VP8 file, and their hashes in order.
fn camera(who: &TestClient) -> (CallMedia, Vec<String>) {
    let ivf = make_vp8_ivf(who.dir.path(), 2);
    let frames = IvfReader::read_all(&ivf).unwrap();
    let sent = frames.iter().map(|f| frame_sha256(&f.data)).collect();
    let media = CallMedia {
        video_source: Some(Box::new(FrameList::new(
            frames.into_iter().map(|f| (f.data, f.duration)),
        ))),
        ..CallMedia::default()
    };
    (media, sent)
}

/// Waits until `heard` holds `seconds` of audio, then checks its dominant frequency (over
/// the last half second: the first frames may be the jitter buffer filling).
async fn assert_heard(heard: &PcmCollector, hz: f32, what: &str) {
    let want = SAMPLE_RATE as usize * 3 / 2;
    wait_until(what, || heard.samples().len() >= want).await;
    let pcm = heard.samples();
    let tail = &pcm[pcm.len() - SAMPLE_RATE as usize / 2..];
    let f = dominant_frequency(tail, SAMPLE_RATE);
    assert!((f - hz).abs() < 5.0, "{what}: heard {f} Hz, sent {hz} Hz");
}

/// A calls B; B's phone rings; B answers; each hears the other's tone; A hangs up.
async fn call_with_audio_both_ways(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_heard = PcmCollector::new();
    let b_heard = PcmCollector::new();
    let (id, incoming) = ring(&a, &b, CallOptions::default(), tone_media(440.0, &a_heard)).await;
    assert_eq!(incoming.peer, a.jid);
    assert!(!incoming.video);
    // B shares presence with A, so B tells A that it rings.
    wait_call(&a, "the callee rings", |i| {
        i.id == id && i.state == CallState::Ringing { peer_ringing: true }
    })
    .await;
    b.client
        .accept_call(incoming.id, tone_media(1000.0, &b_heard))
        .unwrap();
    let on_a = wait_call(&a, "connected (caller)", |i| connected(i).is_some()).await;
    let on_b = wait_call(&b, "connected (callee)", |i| connected(i).is_some()).await;
    assert_eq!(connected(&on_a), Some(false), "a direct path on loopback");
    assert_eq!(connected(&on_b), Some(false));
    assert_heard(&a_heard, 1000.0, "A hears B's tone").await;
    assert_heard(&b_heard, 440.0, "B hears A's tone").await;

    a.client.end_call(id).unwrap();
    let a_end = wait_call(&a, "ended (caller)", |i| ended(i).is_some()).await;
    assert_eq!(ended(&a_end), Some(&CallEnd::HungUp { by_peer: false }));
    let b_end = wait_call(&b, "ended (callee)", |i| ended(i).is_some()).await;
    assert_eq!(ended(&b_end), Some(&CallEnd::HungUp { by_peer: true }));
    // Ended calls cannot be acted on.
    assert!(a.client.end_call(id).is_err());
}

/// With "relay calls" on, media goes through the server's TURN (coturn) both ways.
async fn relay_only_call(server: Server) {
    let opts = ClientOptions {
        relay_calls: true,
        ..options()
    };
    let (a, b) = contacts_pair_with(server, opts).await;
    let a_heard = PcmCollector::new();
    let b_heard = PcmCollector::new();
    a.client
        .start_call(
            a.account,
            &b.jid,
            CallOptions::default(),
            tone_media(523.0, &a_heard),
        )
        .await
        .unwrap();
    let incoming = wait_call(&b, "ringing", ringing).await;
    b.client
        .accept_call(incoming.id, tone_media(1500.0, &b_heard))
        .unwrap();
    let on_a = wait_call(&a, "connected (caller)", |i| connected(i).is_some()).await;
    assert_eq!(connected(&on_a), Some(true), "relayed through TURN");
    let on_b = wait_call(&b, "connected (callee)", |i| connected(i).is_some()).await;
    assert_eq!(connected(&on_b), Some(true));
    assert_heard(&a_heard, 1500.0, "A hears B through the relay").await;
    assert_heard(&b_heard, 523.0, "B hears A through the relay").await;
    b.client.end_call(incoming.id).unwrap();
    wait_call(&a, "ended by the callee", |i| {
        ended(i) == Some(&CallEnd::HungUp { by_peer: true })
    })
    .await;
}

async fn declined(server: Server) {
    let (a, b) = contacts_pair(server).await;
    place(&a, &b).await;
    let incoming = wait_call(&b, "ringing", ringing).await;
    b.client.reject_call(incoming.id).unwrap();
    let on_b = wait_call(&b, "declined here", |i| ended(i).is_some()).await;
    assert_eq!(ended(&on_b), Some(&CallEnd::Declined { by_peer: false }));
    let on_a = wait_call(&a, "declined there", |i| ended(i).is_some()).await;
    assert_eq!(ended(&on_a), Some(&CallEnd::Declined { by_peer: true }));
}

async fn cancelled_before_answer(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (id, _) = ring(&a, &b, CallOptions::default(), CallMedia::default()).await;
    a.client.end_call(id).unwrap();
    let on_a = wait_call(&a, "cancelled here", |i| ended(i).is_some()).await;
    assert_eq!(ended(&on_a), Some(&CallEnd::Cancelled { by_peer: false }));
    let on_b = wait_call(&b, "a missed call", |i| ended(i).is_some()).await;
    assert_eq!(ended(&on_b), Some(&CallEnd::Cancelled { by_peer: true }));
}

/// Nobody answers: the call gives up after the ring timeout, and when the callee comes
/// back nothing rings for a call that is over.
async fn callee_offline(server: Server) {
    let opts = ClientOptions {
        call_ring_timeout: Duration::from_secs(3),
        ..options()
    };
    let (a, b) = contacts_pair_with(server, opts).await;
    b.client.logout(b.account).await.unwrap();
    let id = place(&a, &b).await;
    let on_a = wait_call(&a, "no answer", |i| i.id == id && ended(i).is_some()).await;
    assert_eq!(ended(&on_a), Some(&CallEnd::NoAnswer));
    b.client.login(b.account).await.unwrap();
    b.client.sync(b.account).await.unwrap();
    a.client.sync(a.account).await.unwrap();
    b.client.sync(b.account).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b.client.calls().iter().any(ringing),
        "a call that is over rings: {:?}",
        b.client.calls()
    );
}

/// The callee was offline when the call began and comes online while it still rings: the
/// proposal reaches it (from offline storage or the archive) and rings, and it can answer.
async fn callee_coming_online(server: Server) {
    let (a, b) = contacts_pair(server).await;
    b.client.logout(b.account).await.unwrap();
    let id = place(&a, &b).await;
    a.client.sync(a.account).await.unwrap();
    b.client.login(b.account).await.unwrap();
    let incoming = wait_call(&b, "rings once online", ringing).await;
    b.client
        .accept_call(incoming.id, CallMedia::default())
        .unwrap();
    wait_call(&a, "connected", |i| i.id == id && connected(i).is_some()).await;
    a.client.end_call(id).unwrap();
    wait_call(&b, "over", |i| ended(i).is_some()).await;
}

/// B is in a call with C; A's call to B is refused as busy, and B's call goes on.
async fn busy(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let c = TestClient::register(server, "carol").await;
    place(&c, &b).await;
    let from_c = wait_call(&b, "C rings B", ringing).await;
    b.client
        .accept_call(from_c.id, CallMedia::default())
        .unwrap();
    wait_call(&b, "B talks to C", |i| connected(i).is_some()).await;
    let id = place(&a, &b).await;
    let on_a = wait_call(&a, "busy", |i| i.id == id && ended(i).is_some()).await;
    assert_eq!(ended(&on_a), Some(&CallEnd::Busy));
    let calls = b.client.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(connected(&calls[0]).is_some());
}

/// Every device of B rings; the one that answers takes the call and the other stops;
/// one that declines declines for all.
async fn every_device_rings(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let b2 = b.another_device(server).await;
    place(&a, &b).await;
    let on_b = wait_call(&b, "rings on B's phone", ringing).await;
    wait_call(&b2, "rings on B's tablet", ringing).await;
    b.client.accept_call(on_b.id, CallMedia::default()).unwrap();
    let other = wait_call(&b2, "stops on the tablet", |i| ended(i).is_some()).await;
    assert_eq!(ended(&other), Some(&CallEnd::AnsweredElsewhere));
    wait_call(&a, "connected", |i| connected(i).is_some()).await;
    wait_call(&b, "connected on the phone", |i| connected(i).is_some()).await;
    b.client.end_call(on_b.id).unwrap();
    wait_call(&a, "over", |i| ended(i).is_some()).await;

    place(&a, &b).await;
    let again = wait_call(&b2, "rings on the tablet again", ringing).await;
    wait_call(&b, "rings on the phone again", ringing).await;
    b2.client.reject_call(again.id).unwrap();
    let phone = wait_call(&b, "declined on the tablet", |i| {
        i.id != on_b.id && ended(i).is_some()
    })
    .await;
    assert_eq!(ended(&phone), Some(&CallEnd::DeclinedElsewhere));
    wait_call(&a, "declined", |i| {
        ended(i) == Some(&CallEnd::Declined { by_peer: true })
    })
    .await;
}

/// A video call: every VP8 frame A sends arrives at B whole, in order.
async fn video_frames_arrive_intact(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let (camera, sent) = camera(&a);
    let seen = FrameCollector::new();
    a.client
        .start_call(a.account, &b.jid, CallOptions { video: true }, camera)
        .await
        .unwrap();
    let incoming = wait_call(&b, "a video call rings", ringing).await;
    assert!(incoming.video);
    b.client
        .accept_call(
            incoming.id,
            CallMedia {
                video_sink: Some(Box::new(seen.clone())),
                ..CallMedia::default()
            },
        )
        .unwrap();
    wait_until("every frame", || seen.len() >= sent.len()).await;
    assert_eq!(seen.hashes(), sent);
}

/// An audio call becomes a video call (content-add from the caller); muting the
/// microphone silences what the other side hears, unmuting brings the tone back.
async fn upgrade_to_video_and_mute(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_heard = PcmCollector::new();
    let b_heard = PcmCollector::new();
    let (id, incoming) = ring(&a, &b, CallOptions::default(), tone_media(440.0, &a_heard)).await;
    let seen = FrameCollector::new();
    b.client
        .accept_call(
            incoming.id,
            CallMedia {
                video_sink: Some(Box::new(seen.clone())),
                ..tone_media(880.0, &b_heard)
            },
        )
        .unwrap();
    wait_call(&a, "connected", |i| connected(i).is_some()).await;
    assert_heard(&b_heard, 440.0, "B hears A before the video").await;

    let (camera, sent) = camera(&a);
    a.client.add_call_video(id, camera).unwrap();
    wait_call(&b, "now a video call", |i| i.id == incoming.id && i.video).await;
    wait_until("every frame", || seen.len() >= sent.len()).await;
    assert_eq!(seen.hashes(), sent);

    // Muted: B's microphone sends silence.
    b.client.set_call_muted(incoming.id, true, true).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = a_heard.samples().len();
    wait_until("more audio", || {
        a_heard.samples().len() > before + SAMPLE_RATE as usize / 2
    })
    .await;
    let pcm = a_heard.samples();
    let tail = &pcm[pcm.len() - SAMPLE_RATE as usize / 4..];
    let loud = tail.iter().map(|s| i32::from(*s).abs()).max().unwrap();
    assert!(loud < 300, "muted, yet A hears {loud}");
    b.client.set_call_muted(incoming.id, true, false).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = a_heard.samples().len();
    wait_until("audio again", || {
        a_heard.samples().len() > before + SAMPLE_RATE as usize
    })
    .await;
    let pcm = a_heard.samples();
    let tail = &pcm[pcm.len() - SAMPLE_RATE as usize / 2..];
    assert!((dominant_frequency(tail, SAMPLE_RATE) - 880.0).abs() < 5.0);
    a.client.end_call(id).unwrap();
    wait_call(&b, "over", |i| ended(i).is_some()).await;
}

/// The callee turns the call into a video call (its content-add goes to the initiator):
/// every frame it sends reaches the caller intact, and the audio goes on.
async fn callee_upgrades_to_video(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_heard = PcmCollector::new();
    let b_heard = PcmCollector::new();
    let seen = FrameCollector::new();
    let (id, incoming) = ring(
        &a,
        &b,
        CallOptions::default(),
        CallMedia {
            video_sink: Some(Box::new(seen.clone())),
            ..tone_media(440.0, &a_heard)
        },
    )
    .await;
    b.client
        .accept_call(incoming.id, tone_media(880.0, &b_heard))
        .unwrap();
    wait_call(&b, "connected", |i| connected(i).is_some()).await;
    assert_heard(&a_heard, 880.0, "A hears B before the video").await;

    let (camera, sent) = camera(&b);
    b.client.add_call_video(incoming.id, camera).unwrap();
    wait_call(&a, "now a video call", |i| i.id == id && i.video).await;
    wait_until("every frame", || seen.len() >= sent.len()).await;
    assert_eq!(seen.hashes(), sent);
    let before = b_heard.samples().len();
    wait_until("audio still flows", || {
        b_heard.samples().len() > before + SAMPLE_RATE as usize
    })
    .await;
    b.client.end_call(incoming.id).unwrap();
    wait_call(&a, "over", |i| ended(i).is_some()).await;
}

/// A raw session of a fresh account, with the call messages and Jingle requests it gets.
async fn raw_caller(
    server: Server,
) -> (
    linnet_xmpp::Session,
    String,
    tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    let (session, mut events) = registered_session(server, "raw").await;
    session.send_presence(None, None).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if matches!(ev, Event::Call(_) | Event::Jingle(_)) {
                let _ = tx.send(ev);
            }
        }
    });
    let jid = session.own_jid().as_str().to_owned();
    (session, jid, rx)
}

/// A Jingle IQ with one audio content whose ICE-UDP transport holds `transport`.
fn jingle_iq(to: &str, action: &str, sid: &str, content: &str, transport: &str) -> String {
    format!(
        "<iq xmlns='jabber:client' type='set' to='{to}'>\
         <jingle xmlns='{NS_JINGLE}' action='{action}' sid='{sid}'>\
         <content creator='initiator' name='{content}'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
         <payload-type id='111' name='opus' clockrate='48000' channels='2'/></description>\
         <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='abcd' pwd='0123456789abcdefghijkl'>\
         {transport}</transport></content></jingle></iq>"
    )
}

fn session_initiate(to: &str, sid: &str, fingerprint: &str) -> String {
    let transport = format!(
        "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>{fingerprint}</fingerprint>\
         <candidate component='1' foundation='1' generation='0' id='c1' ip='127.0.0.1' port='9999' priority='2130706431' protocol='udp' type='host'/>"
    );
    jingle_iq(to, "session-initiate", sid, "0", &transport)
}

const FP: &str = "02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2";

fn condition(r: Result<String, linnet_xmpp::RequestError>) -> String {
    match r {
        Err(linnet_xmpp::RequestError::Stanza { condition, .. }) => condition,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// Jingle from a JID we did not call or accept is refused; malformed Jingle is refused;
/// no candidate leaves either side before the callee accepted.
async fn jingle_nobody_asked_for(server: Server) {
    let b = TestClient::register(server, "bob").await;
    let b_full = b.client.bound_jid(b.account).unwrap();
    let (raw, raw_jid, mut raw_events) = raw_caller(server).await;

    // Out of nowhere: a session-initiate for no call.
    let r = raw
        .iq_xml(&session_initiate(&b_full, "nosuchcall", FP))
        .await;
    assert_eq!(condition(r), "item-not-found");
    // Malformed: a fingerprint that is not hex (xmpp-parsers would panic on it).
    let r = raw
        .iq_xml(&session_initiate(&b_full, "nosuchcall", "\u{a0}AB:C"))
        .await;
    assert_eq!(condition(r), "bad-request");

    // A proposal from a stranger rings, but tells the stranger nothing.
    let sid = "4d5e6f70-0000-4000-8000-000000000001";
    let b_bare = BareJid::parse(&b.jid).unwrap();
    raw.send_jmi(
        &b_bare,
        sid,
        &JmiAction::Propose {
            media: vec!["audio".into()],
        },
    )
    .unwrap();
    let call = wait_call(&b, "the stranger's call rings", ringing).await;
    assert_eq!(call.peer, raw_jid);
    // Before B accepts, a session-initiate for that very call is refused (XEP-0166
    // out-of-order).
    let r = raw.iq_xml(&session_initiate(&b_full, sid, FP)).await;
    assert_eq!(condition(r), "unexpected-request");
    b.client.sync(b.account).await.unwrap();
    raw.ping().await.unwrap();
    if let Ok(ev) = raw_events.try_recv() {
        panic!("the callee said something before accepting: {ev:?}");
    }
    assert!(b
        .client
        .calls()
        .iter()
        .any(|i| i.id == call.id && ringing(i)));
    raw.send_jmi(
        &b_bare,
        sid,
        &JmiAction::Retract(linnet_xmpp::jingle::CallReason::Cancel),
    )
    .unwrap();
    wait_call(&b, "retracted", |i| i.id == call.id && ended(i).is_some()).await;

    // The other way: we call the raw account; nothing with an address goes out before it
    // proceeds, then the session and the candidates come.
    let a = TestClient::register(server, "alice").await;
    let id = place_to(&a, &raw_jid).await;
    let propose = next_event(&mut raw_events).await;
    let Event::Call(sig) = propose else {
        panic!("expected the proposal, got {propose:?}");
    };
    assert!(matches!(sig.action, JmiAction::Propose { .. }));
    // Give the caller time to gather: still nothing may come.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    raw.ping().await.unwrap();
    assert!(
        raw_events.try_recv().is_err(),
        "something came before proceed"
    );
    let a_bare = BareJid::parse(&a.jid).unwrap();
    raw.send_jmi(&a_bare, &sig.sid, &JmiAction::Proceed { device: None })
        .unwrap();
    let mut candidates = 0;
    let mut initiated = false;
    while candidates == 0 {
        if let Event::Jingle(req) = next_event(&mut raw_events).await {
            raw.jingle_ack(&req).unwrap();
            let xml = req.jingle_xml();
            initiated |= xml.contains("session-initiate");
            assert!(initiated, "the session comes first: {xml}");
            assert_eq!(
                Some(req.from.as_str()),
                a.client.bound_jid(a.account).as_deref()
            );
            candidates += xml.matches("<candidate ").count();
        }
    }
    a.client.end_call(id).unwrap();
}

/// Waits until the client's own OMEMO device is published (in both its lists): only then
/// does it offer to vouch for its DTLS fingerprint.
async fn own_device_published(c: &TestClient) -> u32 {
    let device = c.client.own_omemo_device(c.account).unwrap();
    wait_device(c, &c.jid, device, "our device published").await;
    device
}

/// With OMEMO on both sides, each DTLS fingerprint goes as an OMEMO message for the other's
/// device (the callee names its device in `proceed`): both sides show the device that
/// vouched for the peer's fingerprint, and the media flows, so DTLS took the certificates
/// those fingerprints name.
async fn omemo_verified_call(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let a_dev = own_device_published(&a).await;
    let b_dev = own_device_published(&b).await;
    let a_heard = PcmCollector::new();
    let b_heard = PcmCollector::new();
    let (id, incoming) = ring(&a, &b, CallOptions::default(), tone_media(440.0, &a_heard)).await;
    assert_eq!(
        incoming.verified_by, None,
        "nothing is verified while it rings"
    );
    b.client
        .accept_call(incoming.id, tone_media(1000.0, &b_heard))
        .unwrap();
    let on_a = wait_call(&a, "connected (caller)", |i| connected(i).is_some()).await;
    let on_b = wait_call(&b, "connected (callee)", |i| connected(i).is_some()).await;
    // Blind trust before verification: first seen through this call, trusted blindly.
    assert_eq!(
        on_a.verified_by,
        Some(CallVerification {
            device_id: b_dev,
            trust: DeviceTrust::Blind
        })
    );
    assert_eq!(on_b.verified_by.map(|v| v.device_id), Some(a_dev));
    assert_heard(&a_heard, 1000.0, "A hears B's tone").await;
    assert_heard(&b_heard, 440.0, "B hears A's tone").await;
    a.client.end_call(id).unwrap();
    wait_call(&b, "ended (callee)", |i| ended(i).is_some()).await;

    // A device the user distrusted does not get the call: A distrusts B's device, and
    // when B answers there, A hangs up before anything with an address goes out.
    a.client
        .set_device_trust(a.account, &b.jid, b_dev, TrustDecision::Distrust)
        .unwrap();
    let (id, incoming) = ring(&a, &b, CallOptions::default(), CallMedia::default()).await;
    b.client
        .accept_call(incoming.id, CallMedia::default())
        .unwrap();
    let on_a = wait_call(&a, "refused (caller)", |i| i.id == id && ended(i).is_some()).await;
    assert_eq!(
        ended(&on_a),
        Some(&CallEnd::Failed {
            reason: "answered on a device you distrusted".into()
        })
    );
    let on_b = wait_call(&b, "ended (callee)", |i| {
        i.id == incoming.id && ended(i).is_some()
    })
    .await;
    assert!(connected(&on_b).is_none());

    // The callee's side: A trusts B's device again, B distrusts A's; A's session-initiate,
    // vouched for by that device, is refused, and the call ends on both sides.
    a.client
        .set_device_trust(a.account, &b.jid, b_dev, TrustDecision::Trust)
        .unwrap();
    b.client
        .set_device_trust(b.account, &a.jid, a_dev, TrustDecision::Distrust)
        .unwrap();
    let (id, incoming) = ring(&a, &b, CallOptions::default(), CallMedia::default()).await;
    b.client
        .accept_call(incoming.id, CallMedia::default())
        .unwrap();
    let on_b = wait_call(&b, "refused (callee)", |i| {
        i.id == incoming.id && ended(i).is_some()
    })
    .await;
    match ended(&on_b) {
        Some(CallEnd::Failed { reason }) => {
            assert!(
                reason.contains("vouched for by a device you distrusted"),
                "{reason}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(on_b.verified_by, None);
    let on_a = wait_call(&a, "refused (caller)", |i| i.id == id && ended(i).is_some()).await;
    assert!(connected(&on_a).is_none());
}

/// A session-accept whose fingerprint for content `content` comes sealed in `encrypted`.
fn sealed_session_accept(to: &str, sid: &str, content: &str, encrypted: &str) -> String {
    let transport = format!(
        "<fingerprint xmlns='{NS_DTLS_VERIFY}' hash='sha-256' setup='active'>{encrypted}</fingerprint>"
    );
    jingle_iq(to, "session-accept", sid, content, &transport)
}

/// A peer that names an OMEMO device it has no bundle for gets our fingerprint in the
/// clear (the call is not verified); a sealed fingerprint that is not OMEMO is refused as
/// malformed, and one that does not decrypt (forged, replayed) is refused and ends the
/// call with a security error.
async fn forged_sealed_fingerprint(server: Server) {
    let a = TestClient::register(server, "alice").await;
    let a_dev = own_device_published(&a).await;
    let a_full = a.client.bound_jid(a.account).unwrap();
    let (raw, raw_jid, mut raw_events) = raw_caller(server).await;
    let id = place_to(&a, &raw_jid).await;
    let Event::Call(sig) = next_event(&mut raw_events).await else {
        panic!("expected the proposal");
    };
    let a_bare = BareJid::parse(&a.jid).unwrap();
    raw.send_jmi(
        &a_bare,
        &sig.sid,
        &JmiAction::Proceed { device: Some(4242) },
    )
    .unwrap();
    let req = loop {
        if let Event::Jingle(req) = next_event(&mut raw_events).await {
            raw.jingle_ack(&req).unwrap();
            break req;
        }
    };
    let xml = req.jingle_xml();
    assert!(xml.contains("session-initiate"), "{xml}");
    assert!(
        xml.contains("urn:xmpp:jingle:apps:dtls:0") && !xml.contains(NS_DTLS_VERIFY),
        "no session with device 4242: the fingerprint goes in the clear: {xml}"
    );
    let content = req.jingle.contents[0].name.0.clone();
    let b64 = |n: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
    };
    let not_omemo = sealed_session_accept(&a_full, &sig.sid, &content, "02:1A");
    assert_eq!(condition(raw.iq_xml(&not_omemo).await), "bad-request");
    assert!(matches!(
        a.client
            .calls()
            .iter()
            .find(|i| i.id == id)
            .map(|i| &i.state),
        Some(CallState::Connecting)
    ));
    let forged = format!(
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='4242'>\
         <key rid='{a_dev}'>{}</key><iv>{}</iv></header><payload>{}</payload></encrypted>",
        b64(60),
        b64(12),
        b64(95)
    );
    let forged = sealed_session_accept(&a_full, &sig.sid, &content, &forged);
    assert_eq!(condition(raw.iq_xml(&forged).await), "not-acceptable");
    let end = wait_call(&a, "the call ends", |i| i.id == id && ended(i).is_some()).await;
    match ended(&end) {
        Some(CallEnd::Failed { reason }) => {
            assert!(reason.contains("could not be verified"), "{reason}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(end.verified_by, None);
    // The raw peer is told why: session-terminate with a security error.
    loop {
        if let Event::Jingle(req) = next_event(&mut raw_events).await {
            raw.jingle_ack(&req).unwrap();
            let xml = req.jingle_xml();
            if xml.contains("session-terminate") {
                assert!(xml.contains("security-error"), "{xml}");
                break;
            }
        }
    }
}

async fn place_to(from: &TestClient, jid: &str) -> linnet_client::calls::CallId {
    from.client
        .start_call(
            from.account,
            jid,
            CallOptions::default(),
            CallMedia::default(),
        )
        .await
        .unwrap()
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

both_servers!(
    call_with_audio_both_ways,
    relay_only_call,
    declined,
    cancelled_before_answer,
    callee_offline,
    callee_coming_online,
    busy,
    every_device_rings,
    video_frames_arrive_intact,
    upgrade_to_video_and_mute,
    callee_upgrades_to_video,
    jingle_nobody_asked_for,
    omemo_verified_call,
    forged_sealed_fingerprint,
);
