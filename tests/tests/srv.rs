//! Finding a domain's XMPP service by DNS (RFC 6120 §3.2, XEP-0368) against a DNS server of
//! the test's own on loopback. The test servers' domains end in `.localhost`, which DNS
//! libraries answer themselves (RFC 6761), so the targets here are listeners of the test;
//! what follows the TCP connection is the same as with a configured server address.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::{Ipv4Addr, SocketAddr};

use linnet_tests::dns::{Answer, FakeDns};
use tokio::net::TcpListener;

const DOMAIN: &str = "example.test";
const HOST: &str = "xmpp.example.test";

fn srv(service: &str, priority: u16, target: &str, port: u16) -> (String, Answer) {
    (
        format!("{service}._tcp.{DOMAIN}"),
        Answer::Srv(priority, 0, port, target.into()),
    )
}

/// Where the lookup of `records` leads: the address connected to and whether it is direct
/// TLS.
async fn resolve(mut records: Vec<(String, Answer)>) -> (SocketAddr, bool) {
    records.push((HOST.into(), Answer::A(Ipv4Addr::LOCALHOST)));
    let dns = FakeDns::start(
        records
            .iter()
            .map(|(n, a)| (n.as_str(), a.clone()))
            .collect(),
    )
    .await
    .unwrap();
    linnet_xmpp::service_address(DOMAIN, Some(dns.addr))
        .await
        .unwrap()
}

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[tokio::test]
async fn direct_tls_first_among_equals() {
    let (_tls, tls_port) = listener().await;
    let (_plain, plain_port) = listener().await;
    let (addr, direct) = resolve(vec![
        srv("_xmpp-client", 10, HOST, plain_port),
        srv("_xmpps-client", 10, HOST, tls_port),
    ])
    .await;
    assert_eq!((addr.port(), direct), (tls_port, true));
}

#[tokio::test]
async fn priority_before_direct_tls() {
    let (_tls, tls_port) = listener().await;
    let (_plain, plain_port) = listener().await;
    let (addr, direct) = resolve(vec![
        srv("_xmpp-client", 5, HOST, plain_port),
        srv("_xmpps-client", 10, HOST, tls_port),
    ])
    .await;
    assert_eq!((addr.port(), direct), (plain_port, false));
}

#[tokio::test]
async fn next_target_when_one_refuses() {
    let closed = listener().await.1;
    let (_plain, plain_port) = listener().await;
    let (addr, direct) = resolve(vec![
        srv("_xmpps-client", 0, HOST, closed),
        srv("_xmpp-client", 10, HOST, plain_port),
    ])
    .await;
    assert_eq!((addr.port(), direct), (plain_port, false));
}

/// RFC 2782: the target "." says the service is not offered there.
#[tokio::test]
async fn dot_target_is_no_service() {
    let (_plain, plain_port) = listener().await;
    let (addr, direct) = resolve(vec![
        srv("_xmpps-client", 0, ".", 5223),
        srv("_xmpp-client", 10, HOST, plain_port),
    ])
    .await;
    assert_eq!((addr.port(), direct), (plain_port, false));
}
