//! The Jingle ↔ SDP mapping against real webrtc 0.21 PeerConnections, the XEPs' own examples,
//! a Conversations-style session-initiate, an aiortc-style offer and hostile input.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use linnet_call::sdp::*;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCSessionDescription, Registry,
};
use xmpp_parsers::jingle::{Action, Content, Creator, Jingle, Senders, SessionId, Transport};
use xmpp_parsers::jingle_dtls_srtp::Setup;
use xmpp_parsers::jingle_ice_udp::{Candidate, Type as CandidateType};
use xmpp_parsers::minidom::rxml::{Namespace, NcName};
use xmpp_parsers::minidom::Element;

// From xsf/xeps: XEP-0320 "Initiator sends session invitation with DTLS fingerprint" and
// XEP-0167 "Initiation", verbatim.
const XEP_0320_INITIATE: &str = include_str!("data/xep-0320-session-initiate.xml");
const XEP_0167_INITIATE: &str = include_str!("data/xep-0167-session-initiate.xml");
const CONVERSATIONS_INITIATE: &str = include_str!("data/conversations-session-initiate.xml");
const AIORTC_OFFER: &str = include_str!("data/aiortc-offer.sdp");

/// webrtc 0.21 refuses to build a PeerConnection without an event handler.
struct NoEvents;
impl PeerConnectionEventHandler for NoEvents {}

async fn new_pc() -> impl PeerConnection {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().unwrap();
    // The default interceptors add header extensions (transport-cc) and their rtcp-fb.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine).unwrap();
    PeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(std::sync::Arc::new(NoEvents))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .unwrap()
}

/// The local description once at least one candidate has been gathered (loopback: quick).
async fn local_sdp_with_candidates(pc: &impl PeerConnection) -> String {
    for _ in 0..50 {
        let sdp = pc.local_description().await.unwrap().sdp;
        if sdp.contains("a=candidate:") {
            return sdp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pc.local_description().await.unwrap().sdp
}

fn parse_jingle(xml: &str) -> Jingle {
    let mut elem: Element = xml.parse().unwrap();
    sanitize_jingle_element(&mut elem).unwrap();
    Jingle::try_from(elem).unwrap()
}

fn description_of(jingle: &Jingle) -> JingleDescription {
    JingleDescription {
        contents: jingle.contents.clone(),
        group: jingle.group.clone(),
    }
}

/// The semantic content of an SDP: per mid, the set of normalised attribute lines the mapping
/// promises to keep (what Jingle cannot carry is listed in `dropped`), plus the m= line's
/// media and format list and the session-level group.
fn semantics(sdp: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dropped = [
        "rtcp",
        "rtcp-rsize",
        "extmap-allow-mixed",
        "msid-semantic",
        "end-of-candidates",
        "ice-options",
        "ssrc-group:SIM",
        "ptime",
        "maxptime",
    ];
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<(String, BTreeSet<String>)> = None;
    let mut session = BTreeSet::new();
    let flush = |cur: &mut Option<(String, BTreeSet<String>)>,
                 out: &mut BTreeMap<String, BTreeSet<String>>| {
        if let Some((m_line, mut set)) = cur.take() {
            let mid = set
                .iter()
                .find_map(|l| l.strip_prefix("mid:").map(str::to_owned))
                .unwrap();
            set.insert(m_line);
            out.insert(mid, set);
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            flush(&mut current, &mut out);
            let parts: Vec<&str> = m.split(' ').collect();
            current = Some((
                format!("m={} {}", parts[0], parts[3..].join(" ")),
                BTreeSet::new(),
            ));
        } else if let Some(a) = line.strip_prefix("a=") {
            let key = a.split(':').next().unwrap();
            if dropped.contains(&key) || dropped.iter().any(|d| a.starts_with(d)) {
                continue;
            }
            if a.contains("trr-int") {
                continue;
            }
            let mut norm = a.to_owned();
            if key == "candidate" {
                // Jingle keeps foundation..typ, raddr/rport, generation, network.
                let f: Vec<&str> = a.split(' ').collect();
                let mut keep: Vec<String> = f[..8].iter().map(|s| s.to_string()).collect();
                for pair in f[8..].chunks(2) {
                    if ["raddr", "rport", "network-id"].contains(&pair[0]) {
                        keep.push(pair.join(" "));
                    }
                }
                norm = keep.join(" ");
            }
            if key == "fingerprint" {
                norm = norm
                    .to_ascii_uppercase()
                    .replacen("FINGERPRINT:SHA", "fingerprint:sha", 1);
            }
            match &mut current {
                Some((_, set)) => {
                    set.insert(norm);
                }
                None => {
                    session.insert(norm);
                }
            }
        }
    }
    flush(&mut current, &mut out);
    // Session-level ICE/DTLS attributes apply to every media section that has none.
    for key in ["fingerprint:", "setup:", "ice-ufrag:", "ice-pwd:"] {
        let Some(line) = session.iter().find(|l| l.starts_with(key)).cloned() else {
            continue;
        };
        session.remove(&line);
        for set in out.values_mut() {
            if !set.iter().any(|l| l.starts_with(key)) {
                set.insert(line.clone());
            }
        }
    }
    out.insert("(session)".into(), session);
    out
}

fn assert_same_semantics(original: &str, mapped: &str) {
    let (a, b) = (semantics(original), semantics(mapped));
    for (mid, set) in &a {
        let other = b.get(mid).unwrap_or_else(|| panic!("mid {mid} lost"));
        let missing: Vec<_> = set.difference(other).collect();
        let extra: Vec<_> = other.difference(set).collect();
        assert!(
            missing.is_empty(),
            "mid {mid}: lost {missing:?}\n(extra {extra:?})\n--- original\n{original}\n--- mapped\n{mapped}"
        );
    }
}

// -------------------------------------------------------------------------------------------
// Real webrtc 0.21 offers and answers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_offer_and_answer_round_trip_through_jingle() {
    let alice = new_pc().await;
    for (kind, mime, clock_rate, channels, ssrc) in [
        (RtpCodecKind::Audio, "audio/opus", 48000, 2, 1111),
        (RtpCodecKind::Video, "video/VP8", 90000, 0, 2222),
    ] {
        let track = MediaStreamTrack::new(
            "alice-stream".to_owned(),
            format!("alice-{kind}"),
            format!("alice {kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: mime.to_owned(),
                    clock_rate,
                    channels,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                ..Default::default()
            }],
        );
        alice
            .add_track(std::sync::Arc::new(TrackLocalStaticRTP::new(track)))
            .await
            .unwrap();
    }
    let offer = alice.create_offer(None).await.unwrap();
    alice.set_local_description(offer).await.unwrap();
    let offer_sdp = local_sdp_with_candidates(&alice).await;
    std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/webrtc-offer.sdp"),
        &offer_sdp,
    )
    .unwrap();

    // Alice initiates: her offer becomes session-initiate contents.
    let initiate = sdp_to_jingle(&offer_sdp, Creator::Initiator, Role::Initiator, true).unwrap();
    assert_eq!(initiate.contents.len(), 2);
    let group = initiate.group.as_ref().expect("BUNDLE group");
    assert_eq!(group.contents.len(), 2);
    for content in &initiate.contents {
        assert_eq!(content.senders, Senders::Both);
        let Some(Transport::IceUdp(_)) = &content.transport else {
            panic!("no ICE-UDP transport")
        };
    }

    // Bob receives it: Jingle → SDP offer, semantically identical to Alice's.
    let remote_offer = jingle_to_sdp(&initiate, SdpType::Offer, Role::Responder).unwrap();
    assert_same_semantics(&offer_sdp, &remote_offer);
    // And stable: mapping the mapped SDP again gives the same Jingle (up to candidate ids).
    let again = sdp_to_jingle(&remote_offer, Creator::Initiator, Role::Initiator, true).unwrap();
    assert_eq!(strip_ids(&again), strip_ids(&initiate));

    let bob = new_pc().await;
    bob.set_remote_description(RTCSessionDescription::offer(remote_offer).unwrap())
        .await
        .unwrap();
    let answer = bob.create_answer(None).await.unwrap();
    bob.set_local_description(answer).await.unwrap();
    let answer_sdp = local_sdp_with_candidates(&bob).await;

    // Bob accepts: his answer becomes session-accept contents (creator stays initiator).
    let accept = sdp_to_jingle(&answer_sdp, Creator::Initiator, Role::Responder, true).unwrap();
    let names: Vec<_> = accept.contents.iter().map(|c| c.name.0.clone()).collect();
    let offered: Vec<_> = initiate.contents.iter().map(|c| c.name.0.clone()).collect();
    assert_eq!(names, offered, "content names = mids, as offered");
    for content in &accept.contents {
        let Some(Transport::IceUdp(t)) = &content.transport else {
            panic!()
        };
        let xml = String::from(&Element::from(t));
        assert!(
            !xml.contains("actpass"),
            "an answer picks a DTLS role: {xml}"
        );
    }

    let remote_answer = jingle_to_sdp(&accept, SdpType::Answer, Role::Initiator).unwrap();
    assert_same_semantics(&answer_sdp, &remote_answer);
    alice
        .set_remote_description(RTCSessionDescription::answer(remote_answer).unwrap())
        .await
        .unwrap();
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

fn strip_ids(d: &JingleDescription) -> JingleDescription {
    let mut d = d.clone();
    for c in &mut d.contents {
        if let Some(Transport::IceUdp(t)) = &c.transport {
            let mut e = Element::from(t);
            for cand in e.children_mut() {
                if cand.name() == "candidate" {
                    cand.set_attr(Namespace::NONE, NcName::try_from("id").unwrap(), "x");
                }
            }
            c.transport = Some(Transport::IceUdp(e.try_into().unwrap()));
        }
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_go_through_transport_info() {
    let alice = new_pc().await;
    alice
        .add_transceiver_from_kind(RtpCodecKind::Audio, None)
        .await
        .unwrap();
    let offer = alice.create_offer(None).await.unwrap();
    alice.set_local_description(offer).await.unwrap();
    let sdp = local_sdp_with_candidates(&alice).await;
    let mid = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap()
        .trim()
        .to_owned();
    let line = sdp
        .lines()
        .find(|l| l.starts_with("a=candidate:"))
        .unwrap()
        .trim();
    let creds = ice_credentials(&sdp, &mid).unwrap();
    let content = transport_info_content(&mid, Creator::Initiator, &creds, line).unwrap();
    // What goes on the wire, and back.
    let jingle = Jingle::new(Action::TransportInfo, SessionId("sid".into())).add_content(content);
    let xml = String::from(&Element::from(jingle));
    let parsed = parse_jingle(&xml);
    let trickled = transport_info_candidates(&parsed.contents[0]).unwrap();
    assert_eq!(trickled.len(), 1);
    assert_eq!(trickled[0].mid, mid);
    assert_eq!(trickled[0].ufrag.as_deref(), Some(creds.ufrag.as_str()));
    let original = line.strip_prefix("a=").unwrap();
    let core = |s: &str| s.split(' ').take(8).collect::<Vec<_>>().join(" ");
    assert_eq!(core(&trickled[0].candidate), core(original));
    alice.close().await.unwrap();
}

// -------------------------------------------------------------------------------------------
// Jingle from the XEPs and from Conversations → SDP → a real webrtc answerer.

#[test]
fn xep_0167_example_without_fingerprint_is_refused() {
    let jingle = parse_jingle(XEP_0167_INITIATE);
    let err = jingle_to_sdp(&description_of(&jingle), SdpType::Offer, Role::Responder).unwrap_err();
    assert_eq!(err, MappingError::MissingFingerprint("voice".into()));
}

#[test]
fn xmpp_parsers_panics_on_xep_0320_fingerprint_whitespace_unless_sanitized() {
    let elem: Element = XEP_0320_INITIATE.parse().unwrap();
    let raw = elem.clone();
    let outcome = std::panic::catch_unwind(move || Jingle::try_from(raw).is_ok());
    assert!(
        matches!(outcome, Err(_) | Ok(false)),
        "xmpp-parsers now copes with whitespace: sanitize_jingle_element may be simplified"
    );
    let mut elem = elem;
    sanitize_jingle_element(&mut elem).unwrap();
    assert!(Jingle::try_from(elem).is_ok());

    let mut bad: Element = XEP_0320_INITIATE
        .replace("02:1A:CC:54", "02:1A:C")
        .parse()
        .unwrap();
    assert!(sanitize_jingle_element(&mut bad).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xep_0320_example_maps_and_webrtc_parses_it() {
    let jingle = parse_jingle(XEP_0320_INITIATE);
    let sdp = jingle_to_sdp(&description_of(&jingle), SdpType::Offer, Role::Responder).unwrap();
    for expected in [
        "m=audio 9 UDP/TLS/RTP/SAVPF 96 97 18 103 98\r\n",
        "a=rtpmap:96 speex/16000\r\n",
        "a=rtpmap:18 G729/8000\r\n",
        "a=rtpmap:103 L16/16000/2\r\n",
        "a=ice-ufrag:8hhy\r\n",
        "a=ice-pwd:asd88fgpdd777uzjYhagZg\r\n",
        "a=fingerprint:sha-256 02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2\r\n",
        "a=setup:actpass\r\n",
        "a=mid:voice\r\n",
        "a=sendrecv\r\n",
        "a=candidate:1 1 udp 2130706431 10.0.1.1 8998 typ host generation 0 network-id 1\r\n",
        "a=candidate:2 1 udp 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998 generation 0 network-id 1\r\n",
    ] {
        assert!(sdp.contains(expected), "missing {expected:?} in\n{sdp}");
    }
    // webrtc has none of these 2007-era codecs: it must parse the offer, and its answer
    // rejects the section rather than failing.
    let bob = new_pc().await;
    bob.set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
        .await
        .unwrap();
    if let Ok(answer) = bob.create_answer(None).await {
        let accept = sdp_to_jingle(&answer.sdp, Creator::Initiator, Role::Responder, false);
        assert!(
            matches!(accept, Err(MappingError::NoContents)) || accept.is_ok(),
            "{accept:?}"
        );
    }
    bob.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_session_initiate_is_accepted_by_webrtc() {
    let jingle = parse_jingle(CONVERSATIONS_INITIATE);
    assert_eq!(jingle.action, Action::SessionInitiate);
    let desc = description_of(&jingle);
    let sdp = jingle_to_sdp(&desc, SdpType::Offer, Role::Responder).unwrap();
    for expected in [
        "a=group:BUNDLE 0 1\r\n",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n",
        "a=rtpmap:111 opus/48000/2\r\n",
        "a=fmtp:111 minptime=10;useinbandfec=1\r\n",
        "a=rtcp-fb:111 transport-cc\r\n",
        "a=fmtp:63 111/111\r\n",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
        "a=msid:my-media-stream my-audio-track\r\n",
        "a=ssrc:3785323154 cname:Yv/wvbCdsDW2Prgd\r\n",
        "a=rtcp-mux\r\n",
        "a=rtpmap:102 H264/90000\r\n",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
        "a=rtcp-fb:96 ccm fir\r\n",
        "a=rtcp-fb:96 nack pli\r\n",
        "a=ssrc-group:FID 2301230316 386328120\r\n",
        "a=setup:actpass\r\n",
    ] {
        assert!(sdp.contains(expected), "missing {expected:?} in\n{sdp}");
    }

    let bob = new_pc().await;
    bob.set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
        .await
        .unwrap();
    let answer = bob.create_answer(None).await.unwrap();
    bob.set_local_description(answer).await.unwrap();
    let answer_sdp = local_sdp_with_candidates(&bob).await;

    // We are the responder: our answer → session-accept contents.
    let accept = sdp_to_jingle(&answer_sdp, Creator::Initiator, Role::Responder, true).unwrap();
    assert_eq!(
        accept
            .contents
            .iter()
            .map(|c| c.name.0.as_str())
            .collect::<Vec<_>>(),
        ["0", "1"]
    );
    assert!(accept.group.is_some());
    let accept_xml = {
        let mut j = Jingle::new(
            Action::SessionAccept,
            SessionId("fZx5Cy2NcQrLQq4ZBPWnGg".into()),
        );
        for c in &accept.contents {
            j = j.add_content(c.clone());
        }
        if let Some(g) = &accept.group {
            j = j.set_group(g.clone());
        }
        String::from(&Element::from(j))
    };
    assert!(accept_xml.contains("name='opus'") || accept_xml.contains("name=\"opus\""));
    assert!(accept_xml.contains("VP8"), "{accept_xml}");
    assert!(!accept_xml.contains("actpass"), "{accept_xml}");
    // And the accept parses back as the initiator would see it.
    let reparsed = parse_jingle(&accept_xml);
    let remote_answer =
        jingle_to_sdp(&description_of(&reparsed), SdpType::Answer, Role::Initiator).unwrap();
    assert_same_semantics(&answer_sdp, &remote_answer);
    bob.close().await.unwrap();
}

// -------------------------------------------------------------------------------------------
// aiortc-style offers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_offer_round_trips_and_webrtc_accepts_it() {
    let desc = sdp_to_jingle(AIORTC_OFFER, Creator::Initiator, Role::Initiator, true).unwrap();
    assert_eq!(desc.contents.len(), 2);
    let audio = &desc.contents[0];
    let Some(Transport::IceUdp(t)) = &audio.transport else {
        panic!()
    };
    let xml = String::from(&Element::from(t));
    assert!(xml.contains("2001:db8::20"), "IPv6 candidate kept: {xml}");
    assert!(xml.contains("6B:8B:F0:65"), "{xml}");

    let sdp = jingle_to_sdp(&desc, SdpType::Offer, Role::Responder).unwrap();
    assert_same_semantics(AIORTC_OFFER, &sdp);
    let bob = new_pc().await;
    bob.set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
        .await
        .unwrap();
    let answer = bob.create_answer(None).await.unwrap();
    let accept = sdp_to_jingle(&answer.sdp, Creator::Initiator, Role::Responder, false).unwrap();
    assert_eq!(accept.contents.len(), 2);
    bob.close().await.unwrap();
}

// -------------------------------------------------------------------------------------------
// Directions are relative in SDP, absolute in Jingle.

#[test]
fn senders_follow_our_role() {
    let base = AIORTC_OFFER.replacen("a=sendrecv", "a=sendonly", 1);
    let as_initiator = sdp_to_jingle(&base, Creator::Initiator, Role::Initiator, false).unwrap();
    assert_eq!(as_initiator.contents[0].senders, Senders::Initiator);
    let as_responder = sdp_to_jingle(&base, Creator::Initiator, Role::Responder, false).unwrap();
    assert_eq!(as_responder.contents[0].senders, Senders::Responder);
    // The peer (initiator) only sends: in the SDP it authored that is sendonly.
    let sdp = jingle_to_sdp(&as_initiator, SdpType::Offer, Role::Responder).unwrap();
    assert!(sdp.contains("a=sendonly\r\n"), "{sdp}");
    let recv = AIORTC_OFFER.replacen("a=sendrecv", "a=recvonly", 1);
    let d = sdp_to_jingle(&recv, Creator::Initiator, Role::Initiator, false).unwrap();
    assert_eq!(d.contents[0].senders, Senders::Responder);
    let inactive = AIORTC_OFFER.replacen("a=sendrecv", "a=inactive", 1);
    let d = sdp_to_jingle(&inactive, Creator::Initiator, Role::Initiator, false).unwrap();
    assert_eq!(d.contents[0].senders, Senders::None);
    assert!(jingle_to_sdp(&d, SdpType::Offer, Role::Responder)
        .unwrap()
        .contains("a=inactive\r\n"));
}

#[test]
fn include_candidates_false_leaves_them_for_trickle() {
    let d = sdp_to_jingle(AIORTC_OFFER, Creator::Initiator, Role::Initiator, false).unwrap();
    let sdp = jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap();
    assert!(!sdp.contains("a=candidate"));
}

// -------------------------------------------------------------------------------------------
// Candidates.

#[test]
fn candidates_both_ways() {
    let relay = candidate_to_jingle(
        "a=candidate:3 1 UDP 41885439 203.0.113.9 61234 typ relay raddr 198.51.100.7 rport 50000 generation 0 ufrag Fq2h network-id 2 network-cost 10",
    )
    .unwrap();
    assert_eq!(relay.type_, CandidateType::Relay);
    assert_eq!(relay.protocol, "udp");
    assert_eq!(relay.rel_addr, Some("198.51.100.7".parse().unwrap()));
    assert_eq!(relay.rel_port, Some(50000));
    assert_eq!(relay.network, Some(2));
    assert_eq!(
        candidate_to_sdp(&relay),
        "candidate:3 1 udp 41885439 203.0.113.9 61234 typ relay raddr 198.51.100.7 rport 50000 generation 0 network-id 2"
    );

    let v6 =
        candidate_to_jingle("candidate:4 1 udp 2122262783 2001:db8::1 40000 typ host").unwrap();
    assert_eq!(v6.ip, "2001:db8::1".parse::<std::net::IpAddr>().unwrap());
    assert!(candidate_to_sdp(&v6).contains(" 2001:db8::1 40000 typ host"));

    let prflx =
        candidate_to_jingle("candidate:5 1 udp 1 10.0.0.1 1 typ prflx raddr 0.0.0.0 rport 0")
            .unwrap();
    assert_eq!(prflx.rel_port, Some(0));

    // Two candidates never share a Jingle id.
    let a = candidate_to_jingle("candidate:1 1 udp 1 10.0.0.1 1000 typ host").unwrap();
    let b = candidate_to_jingle("candidate:1 1 udp 1 10.0.0.1 1000 typ host").unwrap();
    assert_ne!(a.id, b.id);
}

#[test]
fn tcp_and_malformed_candidates_are_clear_errors() {
    assert_eq!(
        candidate_to_jingle("candidate:6 1 tcp 1518280447 192.0.2.10 9 typ host tcptype active")
            .unwrap_err(),
        MappingError::UnsupportedCandidateProtocol("tcp".into())
    );
    let cases = [
        ("", "fewer than 8 fields"),
        ("candidate:1 1 udp 1 10.0.0.1 1000 typ", "fewer"),
        ("candidate:1 0 udp 1 10.0.0.1 1000 typ host", "component"),
        ("candidate:1 1 udp -5 10.0.0.1 1000 typ host", "priority"),
        ("candidate:1 1 udp 1 10.0.0.1 70000 typ host", "port"),
        ("candidate:1 1 udp 1 10.0.0.1 0 typ host", "port"),
        ("candidate:1 1 udp 1 10.0.0.1 1000 typ bogus", "type"),
        ("candidate:1 1 udp 1 10.0.0.1 1000 kind host", "typ"),
        ("candidate:1 1 udp 1 999.0.0.1 1000 typ host", "address"),
        ("candidate:1 1 udp 1 f00d.local 1000 typ host", "address"),
        (
            "candidate:1 1 udp 1 10.0.0.1 1000 typ srflx raddr 10.0.0.2",
            "extension",
        ),
        (
            "candidate:1 1 udp 1 10.0.0.1 1000 typ srflx raddr 10.0.0.2 generation 0",
            "raddr",
        ),
        (
            "candidate:f\u{f6}o 1 udp 1 10.0.0.1 1000 typ host",
            "non-ASCII",
        ),
        (
            "candidate:1 1 udp 1 10.0.0.1 1000 typ host generation 300",
            "generation",
        ),
    ];
    for (input, what) in cases {
        let err = candidate_to_jingle(input).expect_err(input);
        let msg = err.to_string();
        assert!(!msg.is_empty(), "{input}: {what}");
    }
    let mut bad = candidate_to_jingle("candidate:1 1 udp 1 10.0.0.1 1000 typ host").unwrap();
    bad.foundation = "evil\r\na=setup:active".into();
    assert!(try_candidate_to_sdp(&bad).is_err());
    let line = candidate_to_sdp(&bad);
    assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
    bad.protocol = "tcp".into();
    assert!(matches!(
        try_candidate_to_sdp(&bad),
        Err(MappingError::UnsupportedCandidateProtocol(_))
    ));
}

// -------------------------------------------------------------------------------------------
// Hostile input.

fn conversations() -> JingleDescription {
    description_of(&parse_jingle(CONVERSATIONS_INITIATE))
}

#[test]
fn hostile_sdp_is_refused_without_panic() {
    let no_fp: String = AIORTC_OFFER
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        sdp_to_jingle(&no_fp, Creator::Initiator, Role::Initiator, true).unwrap_err(),
        MappingError::MissingFingerprint("0".into())
    );
    let holdconn = AIORTC_OFFER.replace("a=setup:actpass", "a=setup:holdconn");
    assert!(matches!(
        sdp_to_jingle(&holdconn, Creator::Initiator, Role::Initiator, true).unwrap_err(),
        MappingError::BadSetup { .. }
    ));
    let big_pt = AIORTC_OFFER.replace("SAVPF 96 0 8", "SAVPF 96 0 8 200");
    assert_eq!(
        sdp_to_jingle(&big_pt, Creator::Initiator, Role::Initiator, true).unwrap_err(),
        MappingError::PayloadTypeOutOfRange(200)
    );
    let mut many = AIORTC_OFFER.to_owned();
    for i in 0..10_000 {
        many.push_str(&format!(
            "a=candidate:{i} 1 udp 1 10.0.{}.{} 1000 typ host\r\n",
            i / 250,
            i % 250
        ));
    }
    assert!(sdp_to_jingle(&many, Creator::Initiator, Role::Initiator, true).is_err());
    let huge = format!("{}a=ice-ufrag:{}\r\n", AIORTC_OFFER, "x".repeat(1 << 20));
    assert!(matches!(
        sdp_to_jingle(&huge, Creator::Initiator, Role::Initiator, true).unwrap_err(),
        MappingError::SdpTooLarge(_)
    ));
    let long_ufrag = AIORTC_OFFER.replace(
        "a=ice-ufrag:Fq2h",
        &format!("a=ice-ufrag:{}", "u".repeat(1500)),
    );
    assert!(sdp_to_jingle(&long_ufrag, Creator::Initiator, Role::Initiator, true).is_err());
    let garbage = AIORTC_OFFER.replace("a=mid:0", "a=mid:\u{202e}0\u{0}");
    assert!(matches!(
        sdp_to_jingle(&garbage, Creator::Initiator, Role::Initiator, true).unwrap_err(),
        MappingError::BadCharacter(_)
    ));
    let app = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";
    assert!(matches!(
        sdp_to_jingle(app, Creator::Initiator, Role::Initiator, true).unwrap_err(),
        MappingError::UnknownMedia(_)
    ));
    for s in [
        "",
        "v=1",
        "\u{0}\u{1}\u{2}",
        "v=0\r\nm=\r\n",
        "v=0\r\nm=audio\r\n",
        "v=0\r\nxx\r\n",
    ] {
        assert!(
            sdp_to_jingle(s, Creator::Initiator, Role::Initiator, true).is_err(),
            "{s:?}"
        );
    }
}

#[test]
fn random_mutations_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5d9);
    let base: Vec<char> = AIORTC_OFFER.chars().collect();
    let alphabet: Vec<char> = " :/=;\r\n0123456789abcXYZ-*.\u{0}\u{e9}\u{1F600}"
        .chars()
        .collect();
    for _ in 0..3000 {
        let mut s = base.clone();
        for _ in 0..rng.gen_range(1..8) {
            let at = rng.gen_range(0..s.len());
            match rng.gen_range(0..3) {
                0 => s[at] = alphabet[rng.gen_range(0..alphabet.len())],
                1 => {
                    s.remove(at);
                }
                _ => s.insert(at, alphabet[rng.gen_range(0..alphabet.len())]),
            }
        }
        let s: String = s.into_iter().collect();
        if let Ok(d) = sdp_to_jingle(&s, Creator::Initiator, Role::Initiator, true) {
            let _ = jingle_to_sdp(&d, SdpType::Offer, Role::Responder);
        }
        for line in s.lines().filter(|l| l.contains("candidate")) {
            if let Ok(c) = candidate_to_jingle(line) {
                let _ = candidate_to_sdp(&c);
            }
        }
    }
}

fn set_in_xml(xml: &str, from: &str, to: &str) -> JingleDescription {
    description_of(&parse_jingle(&xml.replacen(from, to, 1)))
}

#[test]
fn hostile_jingle_is_refused() {
    let ok = conversations();
    assert!(jingle_to_sdp(&ok, SdpType::Offer, Role::Responder).is_ok());

    // Missing fingerprint / transport / description.
    let mut d = ok.clone();
    d.contents[1].transport = None;
    assert_eq!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::MissingIceUdpTransport("1".into())
    );
    let mut d = ok.clone();
    d.contents[0].description = None;
    assert!(jingle_to_sdp(&d, SdpType::Offer, Role::Responder).is_err());
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0'",
        "<fingerprint xmlns='urn:example:not-dtls'",
    );
    assert_eq!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::MissingFingerprint("0".into())
    );
    // An answer may not leave the DTLS role open.
    assert!(matches!(
        jingle_to_sdp(&ok, SdpType::Answer, Role::Initiator).unwrap_err(),
        MappingError::BadSetup { .. }
    ));
    // Payload type ids beyond 127.
    let d = set_in_xml(CONVERSATIONS_INITIATE, "id='111'", "id='200'");
    assert_eq!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::PayloadTypeOutOfRange(200)
    );
    // Unknown media, injected line breaks, spaces in tokens.
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "media='audio'",
        "media='application'",
    );
    assert!(matches!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::UnknownMedia(_)
    ));
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "ufrag='8hhy'",
        "ufrag='8h&#10;a=setup:active'",
    );
    assert!(matches!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::BadToken { .. }
    ));
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "value='Yv/wvbCdsDW2Prgd'",
        "value='a&#13;&#10;m=audio'",
    );
    assert!(jingle_to_sdp(&d, SdpType::Offer, Role::Responder).is_err());
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "name='minptime' value='10'",
        "name='minptime' value='10;x=1'",
    );
    assert!(jingle_to_sdp(&d, SdpType::Offer, Role::Responder).is_err());
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "<content name='1'/>",
        "<content name='2'/>",
    );
    assert_eq!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::UnknownGroupMember("2".into())
    );
    // Huge strings and 10,000 candidates.
    // (minidom itself refuses such attributes on the wire; built by hand here.)
    let mut d = ok.clone();
    if let Some(Transport::IceUdp(t)) = &d.contents[0].transport {
        let mut e = Element::from(t);
        e.set_attr(
            Namespace::NONE,
            NcName::try_from("ufrag").unwrap(),
            "u".repeat(100_000),
        );
        d.contents[0].transport = Some(Transport::IceUdp(e.try_into().unwrap()));
    }
    assert!(matches!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::TooLong { .. }
    ));
    let many: String = (0..10_000)
        .map(|i| format!("<candidate component='1' foundation='{i}' generation='0' id='c{i}' ip='10.0.0.1' port='1000' priority='1' protocol='udp' type='host'/>"))
        .collect();
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "</transport>",
        &format!("{many}</transport>"),
    );
    assert_eq!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::TooMany {
            what: "candidates",
            limit: MAX_CANDIDATES
        }
    );
    // Differing fingerprints cannot be BUNDLEd.
    let d = set_in_xml(
        CONVERSATIONS_INITIATE,
        "02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2</fingerprint>\n    </transport>\n  </content>\n</jingle>",
        "AA:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2</fingerprint>\n    </transport>\n  </content>\n</jingle>",
    );
    assert_eq!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::ConflictingFingerprints
    );
    // Too many contents.
    let mut d = ok.clone();
    let extra: Vec<Content> = (0..20)
        .map(|i| {
            let mut c = ok.contents[0].clone();
            c.name.0 = format!("x{i}");
            c
        })
        .collect();
    d.contents.extend(extra);
    assert!(matches!(
        jingle_to_sdp(&d, SdpType::Offer, Role::Responder).unwrap_err(),
        MappingError::TooMany { .. }
    ));
}

#[test]
fn setup_roles_map_both_ways() {
    let answer = AIORTC_OFFER.replace("a=setup:actpass", "a=setup:active");
    let d = sdp_to_jingle(&answer, Creator::Initiator, Role::Responder, false).unwrap();
    let Some(Transport::IceUdp(t)) = &d.contents[0].transport else {
        panic!()
    };
    let fp = Element::from(t)
        .children()
        .find(|c| c.name() == "fingerprint")
        .map(|c| c.attr("setup").unwrap().to_owned());
    assert_eq!(fp.as_deref(), Some("active"));
    let sdp = jingle_to_sdp(&d, SdpType::Answer, Role::Initiator).unwrap();
    assert!(sdp.contains("a=setup:active\r\n"));
    let _ = Setup::Passive;
    let _: Option<Candidate> = None;
}

/// Conversations' session-initiate says `actpass`: as it stands it cannot be an answer, and
/// once settled to the role its sender took it maps to one, with that role.
#[test]
fn an_offer_settled_to_its_role_maps_as_an_answer() {
    let mut desc = conversations();
    assert!(jingle_to_sdp(&desc, SdpType::Answer, Role::Responder).is_err());
    settle_dtls_role(&mut desc, "passive").unwrap();
    let answer = jingle_to_sdp(&desc, SdpType::Answer, Role::Responder).unwrap();
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(!answer.contains("actpass"));
    assert_eq!(dtls_role(&answer), Some("passive"));
    assert_eq!(other_dtls_role("passive"), "active");
}
