//! A scripted HTTPS host on loopback, with a certificate from its own CA, for what real
//! upload services will not do on demand (redirects, bodies held half way, wrong bytes).

use std::future::Future;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

pub struct Host {
    pub port: u16,
    /// The CA that signed the host's certificate, for the client to trust.
    pub ca_pem: String,
}

impl Host {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

/// Starts the host: each connection's request head (request line and headers) is read,
/// then `respond` is handed the head, the path and the stream, and writes what it likes.
pub async fn serve<F, Fut>(respond: F) -> Host
where
    F: Fn(String, String, TlsStream<TcpStream>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (acceptor, ca_pem) = crate::fake::test_tls(&["127.0.0.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let respond = respond.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                respond(head, path, tls).await;
            });
        }
    });
    Host { port, ca_pem }
}
