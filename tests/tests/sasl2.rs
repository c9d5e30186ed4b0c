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
    // STARTTLS (3) + features + SCRAM (2) + bind + enable.
    assert_eq!(n.round_trips, 8);
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
    // STARTTLS (3) + features + SCRAM (2) + restart + bind + enable.
    assert_eq!(n.round_trips, 9);
    ping(conn, &jid).await;
}

async fn round_trips(server: Server) {
    let jid = account(server, "rtt").await;
    let mut cfg = config(server, &jid, PASSWORD, false);
    cfg.user_agent_id = linnet_xmpp::new_user_agent_id();
    let n = linnet_xmpp::connect(&cfg).await.unwrap().negotiated;
    // STARTTLS (3) + features + SCRAM (2); bind, SM and carbons ride along.
    assert_eq!(n.round_trips, 6, "SASL2 + SCRAM");
    cfg.fast = n.fast_token;
    cfg.fast_count = 1;
    let n = linnet_xmpp::connect(&cfg).await.unwrap().negotiated;
    assert_eq!(n.round_trips, 5, "SASL2 + FAST");
    let mut direct = config(server, &jid, PASSWORD, true);
    direct.user_agent_id = cfg.user_agent_id.clone();
    let n = linnet_xmpp::connect(&direct).await.unwrap().negotiated;
    assert!(n.direct_tls && n.sasl2);
    assert_eq!(n.round_trips, 4, "direct TLS + SASL2 + SCRAM");
    direct.fast = n.fast_token;
    direct.fast_count = 1;
    let n = linnet_xmpp::connect(&direct).await.unwrap().negotiated;
    assert_eq!(n.round_trips, 3, "direct TLS + SASL2 + FAST");
}

both_servers!(
    sasl2_login_binds_inline,
    fast_token_replaces_the_password,
    wrong_fast_token_is_distinguishable,
    fast_token_can_be_invalidated,
    sasl2_without_bind2,
    legacy_path_when_sasl2_is_off,
    round_trips,
);
