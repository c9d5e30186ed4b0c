//! SASL2 (XEP-0388) + Bind2 (XEP-0386) + inline stream management (XEP-0198) + FAST tokens
//! (XEP-0484) against the real servers, and the legacy path when SASL2 is turned off.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_tests::*;
use linnet_xmpp::{
    BareJid, ConnectConfig, ConnectError, Connection, Event, FastToken, ServerAddr, Session,
};

/// SASL2 with Bind2 (and so inline stream management and carbons).
fn config(server: Server, jid: &str, password: &str, direct_tls: bool) -> ConnectConfig {
    let mut cfg = ConnectConfig::new(BareJid::parse(jid).unwrap(), password);
    cfg.bind2 = true;
    let o = server_override(server, direct_tls);
    cfg.server = Some(ServerAddr {
        host: o.host,
        port: o.port,
        direct_tls,
    });
    cfg.tls = tls();
    cfg
}

/// A fresh account, registered in-band; returns its JID.
async fn account(server: Server, tag: &str) -> String {
    let jid = fresh_jid(server, tag);
    linnet_xmpp::register(&config(server, &jid, PASSWORD, false))
        .await
        .expect("register");
    jid
}

/// Proves the stream is live after login (no restart was needed): one IQ round trip, and
/// when stream management is on, a message the server acknowledges (so the counters that
/// started inside SASL2 agree with the server's).
async fn ping(conn: Connection, jid: &str) {
    let sm = conn.negotiated.sm_id.is_some();
    let bare = BareJid::parse(jid).unwrap();
    let (session, mut events) = Session::start(conn, bare.clone());
    session.ping().await.expect("ping over the new session");
    if sm {
        let id = linnet_xmpp::new_id();
        session.send_chat(&bare, "to myself", &id).unwrap();
        let acked = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(ev) = events.recv().await {
                if matches!(&ev, Event::Acked { id: a } if *a == id) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            acked,
            Ok(true),
            "stream management acknowledged the message"
        );
    }
    session.close().await;
}

async fn sasl2_login_binds_inline(server: Server) {
    let jid = account(server, "s2").await;
    let cfg = config(server, &jid, PASSWORD, false);
    let conn = linnet_xmpp::connect(&cfg).await.expect("SASL2 login");
    let n = conn.negotiated.clone();
    eprintln!("{server:?}: {n:?}");
    assert!(n.sasl2, "SASL2 used");
    assert!(n.bind2, "bound inline");
    assert!(n.mechanism.starts_with("SCRAM-SHA-256"), "{}", n.mechanism);
    assert_eq!(n.channel_binding, Some("tls-exporter"));
    let (bare, resource) = n.bound_jid.split_once('/').expect("full JID");
    assert_eq!(bare, jid);
    assert!(
        resource.starts_with("Linnet"),
        "tag in resource: {resource}"
    );
    assert!(
        n.sm_inline && n.sm_id.is_some() && n.sm_resumable,
        "SM inline"
    );
    assert!(n.carbons_inline, "carbons inline");
    if server == Server::Ejabberd {
        // ejabberd 24.12 sends the XEP-0474 hash in its server-first-message; it matched.
        assert!(n.ssdp, "SSDP verified");
    }
    let token = n
        .fast_token
        .as_ref()
        .expect("FAST token requested and issued");
    assert!(token.mechanism.starts_with("HT-SHA-256-"));
    assert!(
        !format!("{n:?}").contains(token.token.as_str()),
        "token in Debug"
    );
    ping(conn, &jid).await;
}

async fn fast_token_replaces_the_password(server: Server) {
    let jid = account(server, "fast").await;
    let ua = linnet_xmpp::new_user_agent_id();
    let mut cfg = config(server, &jid, PASSWORD, false);
    cfg.user_agent_id = ua.clone();
    let first = linnet_xmpp::connect(&cfg).await.expect("password login");
    let mut token = first.negotiated.fast_token.clone().expect("token");
    let first_jid = first.negotiated.bound_jid.clone();
    drop(first);

    // The password is wrong from here on: only the token can log us in.
    let mut cfg = config(server, &jid, "not the password", false);
    cfg.user_agent_id = ua.clone();
    for count in 1..=3 {
        cfg.fast = Some(token.clone());
        cfg.fast_count = count;
        let conn = linnet_xmpp::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("FAST login #{count}: {e}"));
        let n = conn.negotiated.clone();
        eprintln!("{server:?} FAST #{count}: {n:?}");
        assert_eq!(n.mechanism, token_mechanism(&token));
        assert!(n.sasl2 && n.bind2 && n.sm_inline);
        assert_eq!(n.bound_jid.split_once('/').unwrap().0, jid);
        if count == 1 {
            eprintln!("{server:?}: resource {first_jid} then {}", n.bound_jid);
        }
        if let Some(new) = n.fast_token.clone() {
            // Rotation: the caller switches to the new token.
            token = new;
        }
        ping(conn, &jid).await;
    }
}

fn token_mechanism(t: &FastToken) -> &'static str {
    match t.mechanism.as_str() {
        "HT-SHA-256-EXPR" => "HT-SHA-256-EXPR",
        "HT-SHA-256-NONE" => "HT-SHA-256-NONE",
        other => panic!("unexpected token mechanism {other}"),
    }
}

async fn wrong_fast_token_is_distinguishable(server: Server) {
    let jid = account(server, "badfast").await;
    let ua = linnet_xmpp::new_user_agent_id();
    let mut cfg = config(server, &jid, PASSWORD, false);
    cfg.user_agent_id = ua.clone();
    let good = linnet_xmpp::connect(&cfg)
        .await
        .unwrap()
        .negotiated
        .fast_token
        .unwrap();
    let mut bad = good.clone();
    bad.token = format!("{}x", good.token.as_str()).into();
    cfg.fast = Some(bad);
    cfg.fast_count = 1;
    let err = linnet_xmpp::connect(&cfg).await.err().expect("wrong token");
    assert!(err.is_fast_token_rejected(), "{err:?}");
    assert!(!err.to_string().contains(good.token.as_str()));
    // A wrong password is a plain auth failure, not a token one.
    let mut wrong = config(server, &jid, "not the password", false);
    wrong.user_agent_id = ua.clone();
    let err = linnet_xmpp::connect(&wrong)
        .await
        .err()
        .expect("wrong password");
    assert!(
        matches!(&err, ConnectError::Auth { .. }) && !err.is_fast_token_rejected(),
        "{err:?}"
    );
    // What the caller does next: drop the token, log in with the password.
    cfg.fast = None;
    let n = linnet_xmpp::connect(&cfg).await.unwrap().negotiated;
    assert!(n.mechanism.starts_with("SCRAM-"));
    assert!(n.fast_token.is_some(), "a fresh token");
}

async fn fast_token_can_be_invalidated(server: Server) {
    let jid = account(server, "inval").await;
    let mut cfg = config(server, &jid, "not the password", false);
    cfg.user_agent_id = linnet_xmpp::new_user_agent_id();
    let mut pw = cfg.clone();
    pw.password = PASSWORD.to_owned().into();
    let token = linnet_xmpp::connect(&pw)
        .await
        .unwrap()
        .negotiated
        .fast_token
        .unwrap();
    cfg.fast = Some(token);
    cfg.fast_count = 1;
    cfg.fast_invalidate = true;
    let n = linnet_xmpp::connect(&cfg)
        .await
        .expect("last FAST login")
        .negotiated;
    assert!(n.fast_token.is_none(), "no new token after invalidation");
    cfg.fast_invalidate = false;
    cfg.fast_count = 2;
    let err = linnet_xmpp::connect(&cfg)
        .await
        .err()
        .expect("token invalidated");
    assert!(err.is_fast_token_rejected(), "{err:?}");
}

/// The default (Bind2 off, see `ConnectConfig::bind2`): SASL2, then bind and `<enable/>` on
/// the same stream, without a restart.
async fn sasl2_without_bind2(server: Server) {
    let jid = account(server, "nob2").await;
    let mut cfg = config(server, &jid, PASSWORD, false);
    cfg.bind2 = false;
    let conn = linnet_xmpp::connect(&cfg).await.expect("SASL2 login");
    let n = conn.negotiated.clone();
    eprintln!("{server:?} no Bind2: {n:?}");
    assert!(n.sasl2 && !n.bind2 && !n.sm_inline && !n.carbons_inline);
    assert_eq!(n.bound_jid, format!("{jid}/{}", cfg.resource));
    assert!(n.sm_id.is_some() && n.sm_resumable);
    assert!(n.fast_token.is_some());
    // STARTTLS (3) + features + SCRAM (2) + bind and enable (pipelined).
    assert_eq!(n.round_trips, 7);
    ping(conn, &jid).await;
}

async fn legacy_path_when_sasl2_is_off(server: Server) {
    let jid = account(server, "legacy").await;
    let mut cfg = config(server, &jid, PASSWORD, false);
    cfg.allow_sasl2 = false;
    let conn = linnet_xmpp::connect(&cfg).await.expect("legacy login");
    let n = conn.negotiated.clone();
    eprintln!("{server:?} legacy: {n:?}");
    assert!(!n.sasl2 && !n.bind2 && !n.sm_inline && n.fast_token.is_none());
    assert!(n.mechanism.starts_with("SCRAM-SHA-256"));
    assert_eq!(n.bound_jid, format!("{jid}/{}", cfg.resource));
    assert!(n.sm_id.is_some());
    assert_eq!(
        n.ssdp,
        server == Server::Ejabberd,
        "SSDP on legacy SASL too"
    );
    // STARTTLS (3) + features + SCRAM (2) + restart + bind and enable (pipelined).
    assert_eq!(n.round_trips, 8);
    ping(conn, &jid).await;
}

async fn round_trips(server: Server) {
    let jid = account(server, "rtt").await;
    let mut cfg = config(server, &jid, PASSWORD, false);
    cfg.user_agent_id = linnet_xmpp::new_user_agent_id();
    let n = linnet_xmpp::connect(&cfg).await.unwrap().negotiated;
    // STARTTLS (3) + features + SCRAM (2); bind, SM and carbons ride along.
    assert!(!n.pipelined, "nothing known about the server yet");
    assert_eq!(n.round_trips, 6, "SASL2 + SCRAM");
    cfg.fast = n.fast_token;
    cfg.fast_count = 1;
    cfg.pipeline = false;
    let n = linnet_xmpp::connect(&cfg).await.unwrap().negotiated;
    assert_eq!(n.round_trips, 5, "SASL2 + FAST, not pipelined");
    cfg.pipeline = true;
    cfg.fast_count = 2;
    let n = linnet_xmpp::connect(&cfg).await.unwrap().negotiated;
    // <starttls/> with the header, TLS, <authenticate/> with the header.
    assert!(n.pipelined && n.bind2 && n.sm_inline, "{n:?}");
    assert_eq!(n.round_trips, 3, "SASL2 + FAST, pipelined");
    let mut direct = config(server, &jid, PASSWORD, true);
    direct.user_agent_id = cfg.user_agent_id.clone();
    let n = linnet_xmpp::connect(&direct).await.unwrap().negotiated;
    assert!(n.direct_tls && n.sasl2 && !n.pipelined);
    assert_eq!(n.round_trips, 4, "direct TLS + SASL2 + SCRAM");
    direct.fast = n.fast_token;
    direct.fast_count = 1;
    let n = linnet_xmpp::connect(&direct).await.unwrap().negotiated;
    assert!(n.pipelined);
    assert_eq!(n.round_trips, 2, "direct TLS + SASL2 + FAST, pipelined");
    // A password login pipelines too (SCRAM's first message needs no server data).
    direct.fast = None;
    let conn = linnet_xmpp::connect(&direct).await.unwrap();
    let n = conn.negotiated.clone();
    assert!(n.pipelined && n.mechanism.starts_with("SCRAM-"), "{n:?}");
    assert_eq!(n.round_trips, 3, "direct TLS + SASL2 + SCRAM, pipelined");
    ping(conn, &jid).await;
}

/// Without Bind2, resource binding and `<enable/>` share one round trip.
async fn bind_and_enable_pipelined(server: Server) {
    let jid = account(server, "rbe").await;
    let mut cfg = config(server, &jid, PASSWORD, true);
    cfg.bind2 = false;
    cfg.pipeline = false;
    let conn = linnet_xmpp::connect(&cfg).await.unwrap();
    let n = conn.negotiated.clone();
    assert!(
        !n.bind2 && n.sm_id.is_some() && n.bound_jid.contains('/'),
        "{n:?}"
    );
    // TLS + features + SCRAM (2) + bind and enable.
    assert_eq!(n.round_trips, 5);
    ping(conn, &jid).await;
}

/// Waits until the session reports that its stream ended.
async fn closed(events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = events.recv().await {
            if matches!(ev, Event::Closed(_)) {
                return;
            }
        }
    })
    .await
    .expect("session noticed the reset");
}

/// A session through a proxy in front of the direct-TLS port, whose link is then reset.
async fn broken_session(
    server: Server,
    jid: &str,
    proxy: &linnet_tests::proxy::Proxy,
) -> (ConnectConfig, linnet_xmpp::ResumeRequest) {
    let mut cfg = config(server, jid, PASSWORD, true);
    cfg.server = Some(ServerAddr {
        host: "127.0.0.1".into(),
        port: proxy.port(),
        direct_tls: true,
    });
    cfg.user_agent_id = linnet_xmpp::new_user_agent_id();
    let conn = linnet_xmpp::connect(&cfg).await.unwrap();
    cfg.fast = conn.negotiated.fast_token.clone();
    let bound = conn.negotiated.bound_jid.clone();
    let (session, mut events) = Session::start(conn, BareJid::parse(jid).unwrap());
    session.ping().await.unwrap();
    let st = session.sm_state();
    proxy.reset_all();
    closed(&mut events).await;
    let req = linnet_xmpp::ResumeRequest {
        previd: st.id.expect("resumable"),
        location: st.location,
        h: st.inbound_handled,
        bound_jid: Some(bound),
    };
    (cfg, req)
}

/// A fresh account with a session that broke (through a proxy to the direct-TLS port),
/// and the config to resume it with its FAST token.
async fn to_resume(
    server: Server,
    tag: &str,
) -> (String, ConnectConfig, linnet_tests::proxy::Proxy) {
    let jid = account(server, tag).await;
    let proxy = linnet_tests::proxy::Proxy::start(
        format!("127.0.0.1:{}", server_override(server, true).port)
            .parse()
            .unwrap(),
    )
    .await
    .unwrap();
    let (mut cfg, req) = broken_session(server, &jid, &proxy).await;
    cfg.resume = Some(req);
    cfg.fast_count = 1;
    (jid, cfg, proxy)
}

async fn still_works(conn: Connection, jid: &str) {
    let (session, _events) = Session::start(conn, BareJid::parse(jid).unwrap());
    session.ping().await.expect("resumed session works");
    session.close().await;
}

/// Reconnecting after a drop: TLS, then the header, `<authenticate/>` with the FAST token
/// and the inline resumption in one flight: two round trips in all.
async fn pipelined_resume(server: Server) {
    let (jid, cfg, _proxy) = to_resume(server, "rpr").await;
    let conn = linnet_xmpp::connect(&cfg).await.unwrap();
    let n = conn.negotiated.clone();
    assert!(
        n.resumed.is_some() && n.resume_inline && n.pipelined,
        "{n:?}"
    );
    assert_eq!(n.mechanism, "HT-SHA-256-EXPR");
    assert_eq!(n.round_trips, 2);
    still_works(conn, &jid).await;
}

/// The features changed since the last login: what was pipelined is answered as sent, and
/// what the server did not do with it (here: the inline resumption it was not asked for)
/// follows the plain way.
async fn pipelining_follows_changed_features(server: Server) {
    let (jid, cfg, _proxy) = to_resume(server, "rpf").await;
    // As if the server had offered SASL2 with FAST but neither Bind2 nor inline resumption.
    linnet_xmpp::set_login_hint(
        &cfg,
        "<features xmlns='http://etherx.jabber.org/streams'><authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-256</mechanism><inline><fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism><mechanism>HT-SHA-256-EXPR</mechanism></fast></inline></authentication><sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-exporter'/></sasl-channel-binding><sm xmlns='urn:xmpp:sm:3'/></features>",
    )
    .unwrap();
    let conn = linnet_xmpp::connect(&cfg).await.unwrap();
    let n = conn.negotiated.clone();
    assert!(
        n.pipelined && n.resumed.is_some() && !n.resume_inline,
        "{n:?}"
    );
    // TLS, features + FAST, <resume/>.
    assert_eq!(n.round_trips, 3);
    still_works(conn, &jid).await;
}

/// The remembered features lead to a SCRAM exchange other than the one the server's current
/// features call for (here SCRAM-SHA-1 without channel binding, which ejabberd refuses when
/// it offers -PLUS): the pipelined attempt is given up and the login starts again without
/// pipelining; the next one pipelines from the features the server really sent.
async fn pipelining_retries_when_mechanism_gone(server: Server) {
    let jid = account(server, "rpg").await;
    let mut cfg = config(server, &jid, PASSWORD, true);
    linnet_xmpp::set_login_hint(
        &cfg,
        "<features xmlns='http://etherx.jabber.org/streams'><authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-1</mechanism></authentication></features>",
    )
    .unwrap();
    let conn = linnet_xmpp::connect(&cfg).await.unwrap();
    let n = conn.negotiated.clone();
    eprintln!(
        "{server:?}: stale hint: mechanism {} pipelined {}",
        n.mechanism, n.pipelined
    );
    assert_eq!(n.pipelined, n.mechanism == "SCRAM-SHA-1", "{n:?}");
    assert!(n.bind2, "{n:?}");
    ping(conn, &jid).await;
    cfg.fast = n.fast_token;
    cfg.fast_count = 1;
    let n = linnet_xmpp::connect(&cfg).await.unwrap().negotiated;
    assert!(n.pipelined && n.mechanism.starts_with("HT-"), "{n:?}");
    assert_eq!(n.round_trips, 2);
}

/// The app restarted: its first login plans from what the last process saw of the server
/// (kept in the database), so it saves the same round trips as a reconnection does.
async fn first_login_after_a_restart_is_pipelined(server: Server) {
    let me = TestClient::register(server, "hint").await;
    me.client.shutdown().await;
    linnet_xmpp::forget_login_hints(&me.jid);
    let client = me.reopen();
    client.login(me.account).await.unwrap();
    let n = client.negotiated(me.account).unwrap();
    assert!(n.pipelined, "{n:?}");
    client.shutdown().await;
}

both_servers!(
    first_login_after_a_restart_is_pipelined,
    sasl2_login_binds_inline,
    fast_token_replaces_the_password,
    wrong_fast_token_is_distinguishable,
    fast_token_can_be_invalidated,
    sasl2_without_bind2,
    legacy_path_when_sasl2_is_off,
    round_trips,
    bind_and_enable_pipelined,
    pipelined_resume,
    pipelining_follows_changed_features,
    pipelining_retries_when_mechanism_gone,
);
