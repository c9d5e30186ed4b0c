//! Where a domain's XMPP service is (RFC 6120 §3.2, XEP-0368): the `_xmpps-client` (direct
//! TLS) and `_xmpp-client` (STARTTLS) SRV records of the domain taken together, in order
//! of priority, direct TLS first among equals (it saves the STARTTLS round trip); without
//! any record, the domain itself on port 5222.

use std::net::SocketAddr;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use tokio::net::TcpStream;
use tokio_xmpp::connect::DnsConfig;

use crate::error::ConnectError;

/// One place to try: host, port, and whether TLS starts at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub direct_tls: bool,
    priority: u16,
    weight: u16,
}

fn resolver(dns_server: Option<SocketAddr>) -> Result<TokioResolver, ConnectError> {
    let built = match dns_server {
        Some(addr) => {
            let mut conn = ConnectionConfig::udp();
            conn.port = addr.port();
            let mut server = NameServerConfig::udp(addr.ip());
            server.connections = vec![conn];
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
            .build()
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| ConnectError::Network(format!("DNS configuration: {e}")))?
            .build(),
    };
    built.map_err(|e| ConnectError::Network(format!("DNS resolver: {e}")))
}

/// The SRV targets of `domain`, in the order to try them (empty: no records).
async fn targets(resolver: &TokioResolver, domain: &str) -> Vec<Target> {
    let lookup = |service: &'static str, direct_tls: bool| {
        let name = format!("{service}._tcp.{domain}.");
        async move {
            let Ok(found) = resolver.srv_lookup(name).await else {
                return Vec::new();
            };
            found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(Target {
                        host: srv.target.to_ascii().trim_end_matches('.').to_owned(),
                        port: srv.port,
                        direct_tls,
                        priority: srv.priority,
                        weight: srv.weight,
                    }),
                    _ => None,
                })
                .collect::<Vec<_>>()
        }
    };
    let (tls, plain) = tokio::join!(lookup("_xmpps-client", true), lookup("_xmpp-client", false));
    order(tls.into_iter().chain(plain).collect())
}

/// RFC 2782: a lone target "." means the service is not offered there. Lower priority
/// first; among equals direct TLS first, then heavier weight first (a fixed order rather
/// than the weighted random pick: one client does not balance load anyway).
fn order(mut all: Vec<Target>) -> Vec<Target> {
    all.retain(|t| !t.host.is_empty());
    all.sort_by_key(|t| (t.priority, !t.direct_tls, std::cmp::Reverse(t.weight)));
    all
}

/// Connects to the first target of `domain` that accepts; returns whether it speaks
/// direct TLS.
pub(crate) async fn connect(
    domain: &str,
    dns_server: Option<SocketAddr>,
) -> Result<(TcpStream, bool), ConnectError> {
    let resolver = resolver(dns_server)?;
    let found = targets(&resolver, domain).await;
    if found.is_empty() {
        let mut dns = DnsConfig::no_srv(domain, 5222);
        dns.with_resolver(resolver);
        let tcp = dns
            .resolve()
            .await
            .map_err(|e| ConnectError::Network(e.to_string()))?;
        return Ok((tcp, false));
    }
    let mut last = None;
    for t in found {
        let mut dns = DnsConfig::no_srv(&t.host, t.port);
        dns.with_resolver(resolver.clone());
        match dns.resolve().await {
            Ok(tcp) => return Ok((tcp, t.direct_tls)),
            Err(e) => {
                tracing::debug!(port = t.port, direct_tls = t.direct_tls, error = %e, "service target refused");
                last = Some(e);
            }
        }
    }
    Err(ConnectError::Network(last.map_or_else(
        || "no service target".into(),
        |e| e.to_string(),
    )))
}

/// Tests only: where [`connect`] gets to for `domain` (the address it connected to, and
/// whether it is direct TLS), so the lookup can be checked against a test DNS server
/// without a server of that domain.
#[doc(hidden)]
pub async fn service_address(
    domain: &str,
    dns_server: Option<SocketAddr>,
) -> Result<(SocketAddr, bool), ConnectError> {
    let (tcp, direct) = connect(domain, dns_server).await?;
    let addr = tcp
        .peer_addr()
        .map_err(|e| ConnectError::Network(e.to_string()))?;
    Ok((addr, direct))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16, direct_tls: bool, priority: u16, weight: u16) -> Target {
        Target {
            host: host.into(),
            port,
            direct_tls,
            priority,
            weight,
        }
    }

    #[test]
    fn order_is_priority_then_direct_tls_then_weight() {
        let got = order(vec![
            t("b", 5222, false, 5, 0),
            t("a", 5223, true, 10, 0),
            t("c", 5223, true, 5, 0),
            t("d", 5222, false, 5, 50),
            t("", 0, true, 0, 0),
        ]);
        let hosts: Vec<&str> = got.iter().map(|t| t.host.as_str()).collect();
        assert_eq!(hosts, ["c", "d", "b", "a"]);
    }
}
