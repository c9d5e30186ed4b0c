//! TLS with rustls: certificate verification is always on (platform roots plus an optional
//! extra CA, e.g. a test CA or a private deployment's), and channel-binding data is derived
//! here because only the TLS layer can see it.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::error::ConnectError;

/// How the server's certificate is trusted. There is deliberately no way to turn
/// verification off.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM-encoded CA certificates trusted in addition to the platform's roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Trust only the extra CA, not the platform roots (tests use this so that a
    /// certificate from the wrong CA fails even if the platform would accept it).
    pub only_extra_ca: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_ca", &self.extra_ca_pem.is_some())
            .field("only_extra_ca", &self.only_extra_ca)
            .finish()
    }
}

/// One TLS configuration per set of trust options for the whole process: the platform's
/// roots are read once rather than on every reconnect, and rustls keeps the servers' TLS 1.3
/// session tickets in it, so a reconnect resumes the TLS session (no certificate chain to
/// send and verify again; the ticket exists only because an earlier handshake with the
/// same trust options verified the chain). Same number of round trips: early data (0-RTT)
/// stays off, it would be replayable.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConnectError> {
    type Key = (Option<Vec<u8>>, bool);
    type Cache = Mutex<Vec<(Key, Arc<ClientConfig>)>>;
    // Trust configurations per process are few; this only bounds a pathological caller.
    const MAX: usize = 16;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (opts.extra_ca_pem.clone(), opts.only_extra_ca);
    let cache = CACHE.get_or_init(Default::default);
    if let Some((_, c)) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(c.clone());
    }
    let config = build_client_config(opts)?;
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX {
        cache.remove(0);
    }
    cache.push((key, config.clone()));
    Ok(config)
}

fn build_client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConnectError> {
    let mut roots = RootCertStore::empty();
    if !opts.only_extra_ca {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    if let Some(pem) = &opts.extra_ca_pem {
        let mut reader = std::io::BufReader::new(pem.as_slice());
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| ConnectError::Config(format!("extra CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ConnectError::Config(format!("extra CA: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ConnectError::Config(
                "extra CA: no certificate in PEM".into(),
            ));
        }
    }
    if roots.is_empty() {
        return Err(ConnectError::Config("no trusted CA certificates".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    domain: &str,
    config: Arc<ClientConfig>,
) -> Result<(TlsStream<S>, Option<Vec<u8>>), ConnectError> {
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|_| ConnectError::Config("server domain is not a valid DNS name".into()))?;
    let stream = TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => ConnectError::Tls(tls.to_string()),
                None => ConnectError::Network(e.to_string()),
            },
        )?;
    let (_, conn) = stream.get_ref();
    // RFC 9266: tls-exporter is defined for TLS 1.3; we offer no binding on older versions
    // rather than the weaker tls-unique.
    let exporter = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => conn
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", Some(&[]))
            .ok(),
        _ => None,
    };
    Ok((stream, exporter))
}
