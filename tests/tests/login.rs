//! Registration and login against the real servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::{ClientError, ConnectionState};
use linnet_tests::*;

async fn register_and_login(server: Server) {
    let a = TestClient::register(server, "reg").await;
    let snap = a
        .wait_list("online", |s| {
            s.accounts
                .iter()
                .any(|x| x.id == a.account && x.connection == ConnectionState::Online)
        })
        .await;
    assert_eq!(snap.accounts.len(), 1);
    let n = a.client.negotiated(a.account).expect("negotiated");
    // Never PLAIN where SCRAM is offered; both servers offer SCRAM.
    assert!(
        n.mechanism.starts_with("SCRAM-"),
        "mechanism {}",
        n.mechanism
    );
    assert!(n.bound_jid.starts_with(&a.jid), "bound to our account");
    assert!(n.sm_id.is_some(), "stream management enabled");
    // The same username cannot be registered twice.
    let (other, _dir) = TestClient::new_client();
    let err = other
        .register_account(
            &a.jid,
            "another password",
            Some(server_override(server, false)),
        )
        .await
        .expect_err("duplicate registration");
    assert!(matches!(err, ClientError::Policy(_)), "{err:?}");
}

async fn direct_tls_login(server: Server) {
    let a = TestClient::register(server, "dtls").await;
    let (client, _dir) = TestClient::new_client();
    let acc = client
        .add_account(&a.jid, PASSWORD, Some(server_override(server, true)))
        .unwrap();
    client.login(acc).await.expect("direct TLS login");
    let n = client.negotiated(acc).unwrap();
    assert!(n.direct_tls);
    client.shutdown().await;
}

async fn wrong_password_is_auth_error(server: Server) {
    let a = TestClient::register(server, "pw").await;
    let (client, _dir) = TestClient::new_client();
    let acc = client
        .add_account(
            &a.jid,
            "not the password",
            Some(server_override(server, false)),
        )
        .unwrap();
    let err = client.login(acc).await.expect_err("wrong password");
    assert!(matches!(err, ClientError::Auth(_)), "{err:?}");
    // An auth failure is final: the account stays offline with a reason, no retry loop.
    let snap = client.chat_list();
    assert!(matches!(
        snap.accounts[0].connection,
        ConnectionState::Offline { reason: Some(_) }
    ));
}

async fn unknown_ca_is_tls_error(server: Server) {
    let a = TestClient::register(server, "ca").await;
    let other_ca = rcgen::generate_simple_self_signed(vec!["elsewhere.test".to_owned()]).unwrap();
    let mut opts = options();
    opts.tls.extra_ca_pem = Some(other_ca.cert.pem().into_bytes());
    let dir = tempfile::tempdir().unwrap();
    let client =
        linnet_client::Client::open(dir.path(), &linnet_client::DbKey::generate().unwrap(), opts)
            .unwrap();
    let acc = client
        .add_account(&a.jid, PASSWORD, Some(server_override(server, false)))
        .unwrap();
    let err = client.login(acc).await.expect_err("untrusted certificate");
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    let acc2 = client
        .add_account(
            &fresh_jid(server, "x"),
            PASSWORD,
            Some(server_override(server, true)),
        )
        .unwrap();
    let err = client
        .login(acc2)
        .await
        .expect_err("untrusted certificate, direct TLS");
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
}

async fn change_password_and_delete_account(server: Server) {
    let a = TestClient::register(server, "chg").await;
    a.client
        .change_password(a.account, "a new password")
        .await
        .expect("change password");
    a.client.logout(a.account).await.unwrap();
    a.client
        .login(a.account)
        .await
        .expect("login with the new password from the store");
    let (old, _dir) = TestClient::new_client();
    let acc = old
        .add_account(&a.jid, PASSWORD, Some(server_override(server, false)))
        .unwrap();
    assert!(matches!(old.login(acc).await, Err(ClientError::Auth(_))));

    a.client
        .delete_account(a.account)
        .await
        .expect("delete account");
    assert!(a.client.accounts().unwrap().is_empty());
    let (again, _dir2) = TestClient::new_client();
    let acc = again
        .add_account(
            &a.jid,
            "a new password",
            Some(server_override(server, false)),
        )
        .unwrap();
    assert!(
        matches!(again.login(acc).await, Err(ClientError::Auth(_))),
        "account is gone"
    );
}

both_servers!(
    register_and_login,
    direct_tls_login,
    wrong_password_is_auth_error,
    unknown_ca_is_tls_error,
    change_password_and_delete_account,
);

#[tokio::test]
async fn unreachable_server_is_network_error() {
    let (client, _dir) = TestClient::new_client();
    // Port 9 (discard) on loopback: nothing listens there.
    let acc = client
        .add_account(
            "nobody@prosody.localhost",
            PASSWORD,
            Some(linnet_client::ServerOverride {
                host: "127.0.0.1".into(),
                port: 9,
                direct_tls: false,
            }),
        )
        .unwrap();
    let err = client.login(acc).await.expect_err("nothing listens");
    assert!(matches!(err, ClientError::Network(_)), "{err:?}");
    // A network failure is retried: the account waits for its next attempt.
    let snap = client.chat_list();
    assert!(
        matches!(
            snap.accounts[0].connection,
            ConnectionState::Waiting { .. } | ConnectionState::Connecting
        ),
        "{:?}",
        snap.accounts[0].connection
    );
    client.shutdown().await;
}

#[tokio::test]
async fn bad_app_input_is_an_error() {
    let (client, _dir) = TestClient::new_client();
    assert!(matches!(
        client.add_account("not a jid@@", PASSWORD, None),
        Err(ClientError::BadInput(_))
    ));
    assert!(matches!(
        client.add_account("example.org", PASSWORD, None),
        Err(ClientError::BadInput(_))
    ));
    assert!(matches!(
        client.add_account("a@example.org", "", None),
        Err(ClientError::BadInput(_))
    ));
    let acc = client.add_account("a@example.org", PASSWORD, None).unwrap();
    assert!(matches!(
        client.add_account("A@Example.org", PASSWORD, None),
        Err(ClientError::Policy(_))
    ));
    assert!(matches!(
        client.send_message(acc, "b@example.org", "  "),
        Err(ClientError::BadInput(_))
    ));
    assert!(matches!(
        client.send_message(acc, "not valid@@", "hi"),
        Err(ClientError::BadInput(_))
    ));
    let huge = "x".repeat(linnet_client::MAX_BODY_BYTES + 1);
    assert!(matches!(
        client.send_message(acc, "b@example.org", &huge),
        Err(ClientError::BadInput(_))
    ));
    assert!(matches!(
        client.send_message(linnet_client::AccountId(999), "b@example.org", "hi"),
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.login(linnet_client::AccountId(999)).await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.add_contact(acc, "b@example.org", None).await,
        Err(ClientError::Network(_))
    ));
}

async fn second_login_uses_the_stored_fast_token(server: Server) {
    let a = TestClient::register(server, "fast").await;
    assert!(a
        .client
        .negotiated(a.account)
        .unwrap()
        .mechanism
        .starts_with("SCRAM-"));
    a.client.logout(a.account).await.unwrap();
    a.client.login(a.account).await.unwrap();
    let n = a.client.negotiated(a.account).unwrap();
    assert!(
        n.mechanism.starts_with("HT-SHA-256-"),
        "second login with the token: {}",
        n.mechanism
    );
    a.client.logout(a.account).await.unwrap();
    // A token the server does not know: refused, dropped, and the password login follows.
    let store = a.open_store();
    let mut state = store.session_state(a.account).unwrap();
    let used = state.fast_count;
    assert!(used >= 1, "the counter grows with each use");
    state.fast.as_mut().unwrap().token = zeroize::Zeroizing::new("not-a-token".into());
    store.set_session_state(a.account, &state).unwrap();
    drop(store);
    a.client
        .login(a.account)
        .await
        .expect("falls back to the password");
    assert!(a
        .client
        .negotiated(a.account)
        .unwrap()
        .mechanism
        .starts_with("SCRAM-"));
    let fresh = a.open_store().session_state(a.account).unwrap();
    assert_ne!(
        fresh.fast.unwrap().token.as_str(),
        "not-a-token",
        "a new token replaced it"
    );
}

mod fast {
    use super::*;
    both_servers!(second_login_uses_the_stored_fast_token);
}
