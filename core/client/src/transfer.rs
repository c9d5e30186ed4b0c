//! HTTP file transfers: uploads to XEP-0363 slots, downloads of shared files.
//!
//! HTTPS is verified exactly like the XMPP connections: the client is handed the same
//! rustls configuration (same roots, same extra CA, ring), and plain `http` is refused
//! before any connection is made, including on redirects.
//!
//! A shared file's GET URL is its only access control, and a slot's PUT URL with its
//! headers is a write capability, so neither URLs nor file names nor contents are logged,
//! and errors never carry them.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linnet_xmpp::upload::Slot;
use linnet_xmpp::TlsOptions;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{redirect, Body, Url};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
pub use tokio_util::sync::CancellationToken;

/// Bytes read from disk per body chunk: small enough for smooth progress on slow links,
/// large enough that per-chunk overhead does not matter on fast ones.
const CHUNK: usize = 64 * 1024;
/// Redirects a download follows (all to https). Upload services hand out direct URLs; a
/// few hops allow for a CDN in front of the download side.
const MAX_REDIRECTS: usize = 5;
/// No byte moving for this long fails a transfer: a dead mobile link otherwise hangs it
/// until the OS gives up on the TCP connection, which can take many minutes.
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONTENT_TYPE_LEN: usize = 255;
/// How much of an upload's start [`Uploaded::head`] keeps: enough for an image's
/// dimensions (JPEG keeps its frame header after the EXIF block, which is usually well
/// within it), little enough to hold for any file.
pub const HEAD_LEN: usize = 64 * 1024;

/// Why a transfer failed. No variant carries a URL, a file name or a path.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// The URL is not `https`: refused before any connection.
    #[error("refusing a URL that is not https")]
    NotHttps,
    #[error("invalid URL: {0}")]
    BadUrl(&'static str),
    #[error("invalid upload slot: {0}")]
    BadSlot(&'static str),
    #[error("invalid argument: {0}")]
    BadArgument(&'static str),
    #[error("cancelled")]
    Cancelled,
    #[error("the HTTP server answered with status {status}")]
    Http { status: u16 },
    #[error("refusing a redirect {0}")]
    Redirect(&'static str),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("the file is larger than the {max} bytes allowed")]
    TooLarge { max: u64 },
    #[error("the transfer made no progress for too long")]
    Stalled,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("network: {0}")]
    Network(String),
    /// Reading or writing the local file; only the kind of failure, never the path.
    #[error("local file: {0}")]
    Io(String),
    #[error("HTTP client set-up: {0}")]
    Config(String),
}

fn io_error(e: std::io::Error) -> TransferError {
    // The Display of I/O errors from tempfile and friends includes the path.
    TransferError::Io(e.kind().to_string())
}

/// What a download delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadInfo {
    pub bytes: u64,
    /// The server's `Content-Type`, if it sent a readable one. Advisory only: the sender
    /// chose it, so nothing should be opened or rendered on its word alone.
    pub content_type: Option<String>,
}

/// What an upload sent, taken from the very bytes that went into the request body (not
/// from a second read of the file, which may have changed in between).
#[derive(Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// The body's first bytes, at most [`HEAD_LEN`].
    pub head: Vec<u8>,
}

impl std::fmt::Debug for Uploaded {
    // The head is file content: user data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploaded")
            .field("bytes", &self.bytes)
            .field("head_len", &self.head.len())
            .finish_non_exhaustive()
    }
}

/// The SHA-256 and the first [`HEAD_LEN`] bytes of a body, built chunk by chunk as the
/// body is handed to the network.
struct BodyDigest {
    hasher: Sha256,
    head: Vec<u8>,
    bytes: u64,
}

impl BodyDigest {
    fn new() -> BodyDigest {
        BodyDigest {
            hasher: Sha256::new(),
            head: Vec::new(),
            bytes: 0,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        let room = HEAD_LEN.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        self.bytes += chunk.len() as u64;
    }

    fn finish(self) -> Uploaded {
        Uploaded {
            bytes: self.bytes,
            sha256: self.hasher.finalize().into(),
            head: self.head,
        }
    }
}

/// The HTTP client for file transfers. Build one per set of trust options and share it
/// (cloning is cheap): connections and TLS sessions are pooled inside.
#[derive(Clone)]
pub struct Transfers {
    client: reqwest::Client,
    stall_timeout: Duration,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers")
            .field("stall_timeout", &self.stall_timeout)
            .finish_non_exhaustive()
    }
}

impl Transfers {
    pub fn new(tls: &TlsOptions) -> Result<Self, TransferError> {
        let config = linnet_xmpp::tls_client_config(tls)
            .map_err(|e| TransferError::Config(e.to_string()))?;
        let client = reqwest::Client::builder()
            // Our own verifier and roots rather than reqwest's: one trust decision for the
            // whole app. reqwest sets the ALPN on its copy.
            .tls_backend_preconfigured((*config).clone())
            .https_only(true)
            // Uploads must go where the slot says (a redirected PUT would carry the slot's
            // Authorization elsewhere); downloads follow redirects by hand, https only.
            .redirect(redirect::Policy::none())
            // The XMPP connection goes direct; a proxy from environment variables should
            // not see the capability URLs either.
            .no_proxy()
            .referer(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| TransferError::Config(describe(&e)))?;
        Ok(Transfers {
            client,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        })
    }

    /// How long a transfer may go without moving a byte (default one minute).
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// PUTs the file at `path` to `slot`, streaming it from disk. `progress(done, total)`
    /// is called with bytes handed to the network (monotonic, `done == total` last when
    /// the whole file went out); `cancel` aborts at once with [`TransferError::Cancelled`].
    /// The size sent is the file's size when opened: it must be the size the slot was
    /// requested for, or the service refuses the upload. Returns the SHA-256 and the start
    /// of what was sent, hashed as it streamed out.
    pub async fn upload<P>(
        &self,
        slot: &Slot,
        path: &Path,
        content_type: &str,
        progress: P,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, TransferError>
    where
        P: Fn(u64, u64) + Send + Sync + 'static,
    {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let (url, headers) = put_request(slot, content_type)?;
        let file = tokio::fs::File::open(path).await.map_err(io_error)?;
        let meta = file.metadata().await.map_err(io_error)?;
        if !meta.is_file() {
            return Err(TransferError::Io("not a regular file".into()));
        }
        let total = meta.len();
        self.put(url, headers, file, total, progress, cancel).await
    }

    /// PUTs `body` to `slot`, as [`Transfers::upload`] does a file: for what is made in
    /// memory (an encrypted file, see XEP-0454), the slot requested for its length.
    pub async fn upload_bytes<P>(
        &self,
        slot: &Slot,
        body: Vec<u8>,
        content_type: &str,
        progress: P,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, TransferError>
    where
        P: Fn(u64, u64) + Send + Sync + 'static,
    {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let (url, headers) = put_request(slot, content_type)?;
        let total = body.len() as u64;
        let body = std::io::Cursor::new(body);
        self.put(url, headers, body, total, progress, cancel).await
    }

    async fn put<P, R>(
        &self,
        url: Url,
        mut headers: HeaderMap,
        source: R,
        total: u64,
        progress: P,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, TransferError>
    where
        P: Fn(u64, u64) + Send + Sync + 'static,
        R: AsyncRead + Unpin + Send + 'static,
    {
        // An explicit length: a streamed body would otherwise go out chunked, which not
        // every upload service takes, and the services check the length against the slot.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(total));

        progress(0, total);
        let moved = Arc::new(AtomicU64::new(0));
        let read_failure = Arc::new(Mutex::new(None));
        let sent = Arc::new(Mutex::new(None));
        let body = Body::wrap_stream(file_stream(FileReader {
            file: source,
            done: 0,
            total,
            progress,
            moved: moved.clone(),
            failure: read_failure.clone(),
            cancel: cancel.clone(),
            digest: Some(BodyDigest::new()),
            sent: sent.clone(),
        }));
        let request = self.client.put(url).headers(headers).body(body).send();
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(TransferError::Cancelled),
            r = request => r,
            _ = stalled(&moved, self.stall_timeout) => return Err(TransferError::Stalled),
        };
        let response = match outcome {
            Ok(response) => response,
            Err(_) if cancel.is_cancelled() => return Err(TransferError::Cancelled),
            Err(e) => {
                let local = read_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                return Err(local.unwrap_or_else(|| network(e)));
            }
        };
        let status = response.status();
        if !status.is_success() {
            tracing::debug!(
                status = status.as_u16(),
                "upload refused by the HTTP server"
            );
            return Err(TransferError::Http {
                status: status.as_u16(),
            });
        }
        // A success with a declared length means the server read the whole body, so the
        // stream handed out its last chunk; anything else is a body cut short.
        let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).take();
        let sent = match sent {
            Some(s) => s,
            // An empty body may never be asked for.
            None if total == 0 => BodyDigest::new().finish(),
            None => {
                return Err(TransferError::Network(
                    "the request body was cut short".into(),
                ))
            }
        };
        tracing::debug!(bytes = total, "upload finished");
        Ok(sent)
    }

    /// GETs `url` into `dest` (replacing it if it exists). The body goes to a temporary
    /// file in `dest`'s directory, renamed over `dest` only once complete and synced: a
    /// cancelled or failed download leaves nothing behind. More than `max_bytes` fails with
    /// [`TransferError::TooLarge`], judged on `Content-Length` before anything is written
    /// and on the bytes received while streaming. `progress(done, total)`: `total` is the
    /// announced length, 0 if unknown.
    pub async fn download<P>(
        &self,
        url: &str,
        dest: &Path,
        max_bytes: u64,
        progress: P,
        cancel: &CancellationToken,
    ) -> Result<DownloadInfo, TransferError>
    where
        P: Fn(u64, u64) + Send + Sync,
    {
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let mut url = https_url(url)?;
        if dest.file_name().is_none() {
            return Err(TransferError::BadArgument(
                "the destination has no file name",
            ));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };

        let mut redirects = 0;
        let mut response = loop {
            let request = self.client.get(url.clone()).send();
            let response = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(TransferError::Cancelled),
                r = tokio::time::timeout(self.stall_timeout, request) => {
                    r.map_err(|_| TransferError::Stalled)?.map_err(network)?
                }
            };
            let status = response.status();
            if status.is_redirection() {
                if let Some(location) = response.headers().get(LOCATION) {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(TransferError::TooManyRedirects);
                    }
                    url = redirect_target(&url, location)?;
                    continue;
                }
            }
            if !status.is_success() {
                return Err(TransferError::Http {
                    status: status.as_u16(),
                });
            }
            break response;
        };
        let announced = response.content_length();
        if announced.is_some_and(|len| len > max_bytes) {
            return Err(TransferError::TooLarge { max: max_bytes });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= MAX_CONTENT_TYPE_LEN)
            .map(str::to_owned);

        // Dropping `temp` (any early return below) deletes the partial file.
        let temp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".linnet-download-")
                .suffix(".part")
                .tempfile_in(dir)
        })
        .await
        .map_err(|_| TransferError::Io("temporary file".into()))?
        .map_err(io_error)?;
        let mut file = tokio::fs::File::from_std(temp.as_file().try_clone().map_err(io_error)?);

        let total = announced.unwrap_or(0);
        let mut done: u64 = 0;
        progress(0, total);
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(TransferError::Cancelled),
                r = tokio::time::timeout(self.stall_timeout, response.chunk()) => {
                    r.map_err(|_| TransferError::Stalled)?.map_err(network)?
                }
            };
            let Some(chunk) = chunk else { break };
            done = done.saturating_add(chunk.len() as u64);
            if done > max_bytes {
                return Err(TransferError::TooLarge { max: max_bytes });
            }
            file.write_all(&chunk).await.map_err(io_error)?;
            progress(done, total);
            if cancel.is_cancelled() {
                return Err(TransferError::Cancelled);
            }
        }
        file.flush().await.map_err(io_error)?;
        file.sync_data().await.map_err(io_error)?;
        drop(file);
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || temp.persist(dest))
            .await
            .map_err(|_| TransferError::Io("rename".into()))?
            .map_err(|e| io_error(e.error))?;
        tracing::debug!(bytes = done, "download finished");
        Ok(DownloadInfo {
            bytes: done,
            content_type,
        })
    }
}

/// The slot's PUT URL and headers, with `content_type`: checked before anything is read.
fn put_request(slot: &Slot, content_type: &str) -> Result<(Url, HeaderMap), TransferError> {
    let url = https_url(&slot.put_url)?;
    let mut headers = slot_headers(&slot.put_headers)?;
    let content_type = HeaderValue::from_str(content_type.trim())
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(TransferError::BadArgument("content type"))?;
    headers.insert(CONTENT_TYPE, content_type);
    Ok((url, headers))
}

/// `raw` as an absolute `https` URL with a host and no credentials.
fn https_url(raw: &str) -> Result<Url, TransferError> {
    let url = Url::parse(raw.trim()).map_err(|_| TransferError::BadUrl("not an absolute URL"))?;
    check_url(url)
}

fn check_url(url: Url) -> Result<Url, TransferError> {
    if url.scheme() != "https" {
        return Err(TransferError::NotHttps);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(TransferError::BadUrl("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TransferError::BadUrl("the URL carries credentials"));
    }
    Ok(url)
}

/// Where a redirect from `from` leads, if it is somewhere we go.
fn redirect_target(from: &Url, location: &HeaderValue) -> Result<Url, TransferError> {
    let location = location
        .to_str()
        .map_err(|_| TransferError::Redirect("to an unreadable location"))?;
    let next = from
        .join(location.trim())
        .map_err(|_| TransferError::Redirect("to an invalid URL"))?;
    check_url(next).map_err(|e| match e {
        TransferError::NotHttps => TransferError::Redirect("to a URL that is not https"),
        _ => TransferError::Redirect("to an invalid URL"),
    })
}

/// The slot's headers as HTTP headers: only the names XEP-0363 allows (the XMPP layer
/// filtered already; this layer does not rely on it), values valid in HTTP.
fn slot_headers(headers: &[(String, String)]) -> Result<HeaderMap, TransferError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if !["authorization", "cookie", "expires"]
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| TransferError::BadSlot("invalid header name"))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| TransferError::BadSlot("a header value is not valid in HTTP"))?;
        // Keeps the bearer token out of any Debug output of the request.
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// The upload body's source: the file (or a buffer), read in chunks as the HTTP stack asks
/// for them.
struct FileReader<P, R = tokio::fs::File> {
    file: R,
    done: u64,
    total: u64,
    progress: P,
    /// Bytes handed out so far, for the stall watchdog.
    moved: Arc<AtomicU64>,
    /// Set when reading the file failed, so the caller reports a local error rather than
    /// the network error the HTTP stack turns it into.
    failure: Arc<Mutex<Option<TransferError>>>,
    cancel: CancellationToken,
    /// Fed every chunk handed out; finished into `sent` with the last one.
    digest: Option<BodyDigest>,
    sent: Arc<Mutex<Option<Uploaded>>>,
}

impl<P, R> FileReader<P, R> {
    /// Hands the digest over once the whole body went out.
    fn finish(&mut self) {
        if let Some(d) = self.digest.take() {
            *self.sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.finish());
        }
    }
}

fn file_stream<P, R>(
    reader: FileReader<P, R>,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static
where
    P: Fn(u64, u64) + Send + Sync + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    futures::stream::try_unfold(reader, |mut r| async move {
        if r.done >= r.total {
            r.finish();
            return Ok(None);
        }
        if r.cancel.is_cancelled() {
            return Err(std::io::Error::new(ErrorKind::Interrupted, "cancelled"));
        }
        let want = usize::try_from(r.total - r.done).map_or(CHUNK, |left| left.min(CHUNK));
        let mut buf = vec![0u8; want];
        let n = match r.file.read(&mut buf).await {
            Ok(0) => {
                let e = TransferError::Io("the file shrank during the upload".into());
                *r.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return Err(std::io::Error::from(ErrorKind::UnexpectedEof));
            }
            Ok(n) => n,
            Err(e) => {
                *r.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(io_error(std::io::Error::new(e.kind(), "read")));
                return Err(e);
            }
        };
        buf.truncate(n);
        r.done += n as u64;
        if let Some(d) = r.digest.as_mut() {
            d.update(&buf);
        }
        if r.done >= r.total {
            r.finish();
        }
        r.moved.store(r.done, Ordering::Relaxed);
        (r.progress)(r.done, r.total);
        Ok(Some((buf, r)))
    })
}

/// Resolves once `moved` has not changed for a whole `period`.
async fn stalled(moved: &AtomicU64, period: Duration) {
    let mut last = moved.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(period).await;
        let now = moved.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

fn network(e: reqwest::Error) -> TransferError {
    let e = e.without_url();
    if let Some(tls) = rustls_error(Some(&e)) {
        return TransferError::Tls(tls);
    }
    if e.is_timeout() {
        return TransferError::Network("timed out".into());
    }
    TransferError::Network(describe(&e))
}

/// The error and its causes on one line (reqwest's own Display is only the outermost).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// A rustls error anywhere in the chain. I/O errors hide what they wrap from `source()`,
/// which is where the TLS layer puts it.
fn rustls_error(mut next: Option<&(dyn std::error::Error + 'static)>) -> Option<String> {
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<tokio_rustls::rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = rustls_error(Some(inner)) {
                return Some(found);
            }
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A throwaway self-signed CA: trusted by the clients built here, never by a server.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBpDCCAUugAwIBAgIUChDhJb0YItQpL8a8j2c0UdHsMzIwCgYIKoZIzj0EAwIw
JzElMCMGA1UEAwwcbGlubmV0IHRyYW5zZmVyIHVuaXQgdGVzdCBDQTAgFw0yNjEx
MjEyMDAyMzlaGA8yMTI2MTAyODIwMDIzOVowJzElMCMGA1UEAwwcbGlubmV0IHRy
YW5zZmVyIHVuaXQgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABEE9
S8xkT04Fxsgy9yjA3hVb2wtC8JRV2BzGAGyOYrapIqpdx6IBdSYAtlRP9LzLOikp
KG8rUAQl+OOHOK8u1mejUzBRMB0GA1UdDgQWBBT+AiNuNfUgrITsgH+OZFDAiOXW
5TAfBgNVHSMEGDAWgBT+AiNuNfUgrITsgH+OZFDAiOXW5TAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0cAMEQCIA6r3HhkLsCPYZd6avmUXJcNNe6YldY7aE2w
+jJJJjIMAiBpW+IuPuWibx9sLo6x9E/9AWBoWyHU4hhBpbfdAvpdGw==
-----END CERTIFICATE-----
";

    fn transfers() -> Transfers {
        Transfers::new(&TlsOptions {
            extra_ca_pem: Some(CA_PEM.as_bytes().to_vec()),
            only_extra_ca: true,
        })
        .unwrap()
    }

    fn slot(put: &str) -> Slot {
        Slot {
            put_url: put.into(),
            get_url: "https://h/x".into(),
            put_headers: vec![("Authorization".into(), "Bearer t".into())],
        }
    }

    fn no_progress(_: u64, _: u64) {}

    #[test]
    fn our_tls_configuration_is_accepted_by_reqwest() {
        // reqwest takes a preconfigured backend as `Any` and fails `build` if it is not the
        // rustls version it links: this is the check that the versions line up.
        let t = transfers();
        assert!(format!("{t:?}").contains("stall_timeout"));
        let bad = Transfers::new(&TlsOptions {
            extra_ca_pem: Some(b"not a certificate".to_vec()),
            only_extra_ca: true,
        });
        assert!(matches!(bad, Err(TransferError::Config(_))), "{bad:?}");
    }

    #[test]
    fn only_https_urls_with_a_host_and_no_credentials_pass() {
        assert!(https_url("https://127.0.0.1:15281/a/b.jpg").is_ok());
        assert!(https_url(" https://upload.example.org/a?b=c ").is_ok());
        assert!(https_url("HTTPS://Example.org/").is_ok());
        for bad in [
            "http://h/x",
            "HTTP://h/x",
            "file:///etc/passwd",
            "ftp://h/x",
            "data:text/plain,x",
        ] {
            assert_eq!(
                https_url(bad).unwrap_err(),
                TransferError::NotHttps,
                "{bad}"
            );
        }
        for bad in [
            "",
            "/relative/path",
            "relative",
            "https://",
            "https://u:p@h/x",
            "https://u@h/",
            "::::",
        ] {
            assert!(
                matches!(https_url(bad), Err(TransferError::BadUrl(_))),
                "{bad:?}: {:?}",
                https_url(bad)
            );
        }
    }

    #[test]
    fn redirects_go_to_https_only() {
        let from = Url::parse("https://a.example/files/x").unwrap();
        let to = |l: &str| redirect_target(&from, &HeaderValue::from_str(l).unwrap());
        assert_eq!(
            to("/other/y").unwrap().as_str(),
            "https://a.example/other/y"
        );
        assert_eq!(to("z").unwrap().as_str(), "https://a.example/files/z");
        assert_eq!(
            to("https://cdn.example/x").unwrap().as_str(),
            "https://cdn.example/x"
        );
        assert_eq!(
            to("//cdn.example/x").unwrap().as_str(),
            "https://cdn.example/x"
        );
        for bad in ["http://a.example/x", "file:///etc/passwd", "//u:p@h/"] {
            assert!(matches!(to(bad), Err(TransferError::Redirect(_))), "{bad}");
        }
        assert_eq!(
            to("http://a.example/x").unwrap_err(),
            TransferError::Redirect("to a URL that is not https")
        );
    }

    #[test]
    fn slot_headers_keep_only_the_allowed_names_and_valid_values() {
        let headers = slot_headers(&[
            ("Authorization".into(), "Bearer abc".into()),
            ("cookie".into(), "a=b".into()),
            ("Host".into(), "evil.example".into()),
            ("Content-Length".into(), "1".into()),
            ("Expires".into(), "Tue, 1 Jul 2025 00:00:00 GMT".into()),
        ])
        .unwrap();
        assert_eq!(headers.len(), 3);
        assert_eq!(headers["authorization"], "Bearer abc");
        assert!(headers["authorization"].is_sensitive());
        assert_eq!(headers["cookie"], "a=b");
        assert!(headers.get("host").is_none());
        for bad in ["a\nb", "a\r\nX-Evil: 1", "a\u{0}"] {
            assert_eq!(
                slot_headers(&[("Authorization".into(), bad.into())]).unwrap_err(),
                TransferError::BadSlot("a header value is not valid in HTTP"),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_upload_to_a_slot_that_is_not_https_is_refused_before_opening_the_file() {
        let t = transfers();
        let cancel = CancellationToken::new();
        // The file does not exist: reaching the file system would be an I/O error.
        let missing = Path::new("/nonexistent/linnet/file");
        for put in ["http://127.0.0.1:1/x", "file:///etc/passwd"] {
            let err = t
                .upload(&slot(put), missing, "text/plain", no_progress, &cancel)
                .await
                .unwrap_err();
            assert_eq!(err, TransferError::NotHttps, "{put}");
        }
        let err = t
            .upload(&slot("/x"), missing, "text/plain", no_progress, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::BadUrl(_)), "{err:?}");
        let mut injected = slot("https://127.0.0.1:1/x");
        injected.put_headers = vec![("Authorization".into(), "a\r\nHost: b".into())];
        let err = t
            .upload(&injected, missing, "text/plain", no_progress, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::BadSlot(_)), "{err:?}");
        let err = t
            .upload(
                &slot("https://127.0.0.1:1/x"),
                missing,
                "text/pl\nain",
                no_progress,
                &cancel,
            )
            .await
            .unwrap_err();
        assert_eq!(err, TransferError::BadArgument("content type"));
        let err = t
            .upload(
                &slot("https://127.0.0.1:1/x"),
                missing,
                "text/plain",
                no_progress,
                &cancel,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Io(_)), "{err:?}");
        assert!(!err.to_string().contains("nonexistent"), "{err}");
    }

    #[tokio::test]
    async fn a_download_that_is_not_https_is_refused_and_creates_nothing() {
        let t = transfers();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("file");
        let cancel = CancellationToken::new();
        for url in ["http://127.0.0.1:1/x", "file:///etc/passwd"] {
            let err = t
                .download(url, &dest, 1 << 20, no_progress, &cancel)
                .await
                .unwrap_err();
            assert_eq!(err, TransferError::NotHttps);
        }
        for no_name in ["/", "a/.."] {
            let err = t
                .download(
                    "https://127.0.0.1:1/x",
                    Path::new(no_name),
                    1,
                    no_progress,
                    &cancel,
                )
                .await
                .unwrap_err();
            assert!(matches!(err, TransferError::BadArgument(_)), "{err:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_token_stops_a_transfer_before_any_connection() {
        // A listener that is never accepted on: a connection attempt would still complete
        // the TCP handshake and show up in its backlog.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!(
            "https://127.0.0.1:{}/x",
            listener.local_addr().unwrap().port()
        );
        let t = transfers();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"data").unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = t
            .upload(&slot(&url), &src, "text/plain", no_progress, &cancel)
            .await
            .unwrap_err();
        assert_eq!(err, TransferError::Cancelled);
        let err = t
            .download(&url, &dir.path().join("dest"), 100, no_progress, &cancel)
            .await
            .unwrap_err();
        assert_eq!(err, TransferError::Cancelled);
        assert_eq!(
            listener.accept().map(|_| ()).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_closed_port_is_a_network_error_without_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = transfers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("https://127.0.0.1:{port}/secret-capability");
        let err = t
            .download(
                &url,
                &dir.path().join("f"),
                100,
                no_progress,
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Network(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A reader over `path` as `upload` builds it, with what it shares.
    type Shared = (
        Arc<Mutex<Option<Uploaded>>>,
        Arc<Mutex<Option<TransferError>>>,
    );

    async fn reader(path: &Path) -> (FileReader<fn(u64, u64)>, Shared) {
        let file = tokio::fs::File::open(path).await.unwrap();
        let total = file.metadata().await.unwrap().len();
        let sent = Arc::new(Mutex::new(None));
        let failure = Arc::new(Mutex::new(None));
        let r = FileReader {
            file,
            done: 0,
            total,
            progress: no_progress as fn(u64, u64),
            moved: Arc::new(AtomicU64::new(0)),
            failure: failure.clone(),
            cancel: CancellationToken::new(),
            digest: Some(BodyDigest::new()),
            sent: sent.clone(),
        };
        (r, (sent, failure))
    }

    async fn drain<R: AsyncRead + Unpin + Send + 'static>(
        r: FileReader<fn(u64, u64), R>,
    ) -> (Vec<u8>, bool) {
        use futures::StreamExt;
        let mut body = Vec::new();
        let stream = file_stream(r);
        futures::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(_) => return (body, false),
            }
        }
        (body, true)
    }

    #[test]
    fn the_body_digest_is_the_hash_and_head_of_all_chunks() {
        let data: Vec<u8> = (0..HEAD_LEN * 2 + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut d = BodyDigest::new();
        // Uneven chunks, one straddling the end of the head.
        for part in [&data[..10], &data[10..HEAD_LEN + 5], &data[HEAD_LEN + 5..]] {
            d.update(part);
        }
        let up = d.finish();
        assert_eq!(up.bytes, data.len() as u64);
        assert_eq!(up.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(up.head, &data[..HEAD_LEN]);
        let short = {
            let mut d = BodyDigest::new();
            d.update(b"abc");
            d.finish()
        };
        assert_eq!(short.head, b"abc");
        assert_eq!(short.sha256, <[u8; 32]>::from(Sha256::digest(b"abc")));
        assert!(!format!("{short:?}").contains("97"), "no content in Debug");
    }

    #[tokio::test]
    async fn the_upload_stream_hashes_exactly_the_bytes_it_hands_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let first: Vec<u8> = (0..CHUNK * 3 + 5).map(|i| (i % 256) as u8).collect();
        std::fs::write(&path, &first).unwrap();
        let (r, (sent, failure)) = reader(&path).await;
        // Changed after the reader was opened and before it read: what goes out is the new
        // content, and so must be what the hash says.
        let second: Vec<u8> = first.iter().map(|b| b ^ 0xff).collect();
        std::fs::write(&path, &second).unwrap();
        let (body, complete) = drain(r).await;
        assert!(complete);
        assert_eq!(body, second);
        let up = sent.lock().unwrap().clone().unwrap();
        assert_eq!(up.bytes, second.len() as u64);
        assert_eq!(up.sha256, <[u8; 32]>::from(Sha256::digest(&second)));
        assert_eq!(up.head, &second[..HEAD_LEN.min(second.len())]);
        assert!(failure.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn an_empty_file_streams_nothing_and_hashes_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let (r, (sent, _)) = reader(&path).await;
        assert_eq!(drain(r).await, (Vec::new(), true));
        let up = sent.lock().unwrap().clone().unwrap();
        assert_eq!(up, BodyDigest::new().finish());
        assert_eq!(up.sha256, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!((up.bytes, up.head.len()), (0, 0));
    }

    #[tokio::test]
    async fn a_file_that_shrinks_while_streaming_gives_no_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; CHUNK * 2]).unwrap();
        let (r, (sent, failure)) = reader(&path).await;
        std::fs::write(&path, vec![7u8; CHUNK / 2]).unwrap();
        let (body, complete) = drain(r).await;
        assert!(!complete);
        assert_eq!(body.len(), CHUNK / 2);
        assert!(sent.lock().unwrap().is_none(), "no hash of a partial body");
        assert!(matches!(
            *failure.lock().unwrap(),
            Some(TransferError::Io(_))
        ));
    }

    #[tokio::test]
    async fn a_buffer_streams_and_hashes_as_a_file_does() {
        let data: Vec<u8> = (0..CHUNK * 2 + 3).map(|i| (i % 251) as u8).collect();
        let sent = Arc::new(Mutex::new(None));
        let r = FileReader {
            file: std::io::Cursor::new(data.clone()),
            done: 0,
            total: data.len() as u64,
            progress: no_progress as fn(u64, u64),
            moved: Arc::new(AtomicU64::new(0)),
            failure: Arc::new(Mutex::new(None)),
            cancel: CancellationToken::new(),
            digest: Some(BodyDigest::new()),
            sent: sent.clone(),
        };
        assert_eq!(drain(r).await, (data.clone(), true));
        let up = sent.lock().unwrap().clone().unwrap();
        assert_eq!(up.bytes, data.len() as u64);
        assert_eq!(up.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    }

    #[tokio::test]
    async fn a_buffer_upload_is_refused_before_any_connection_when_not_https() {
        let t = transfers();
        let err = t
            .upload_bytes(
                &slot("http://127.0.0.1:1/x"),
                vec![1, 2, 3],
                "application/octet-stream",
                no_progress,
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(err, TransferError::NotHttps);
    }

    #[test]
    fn io_errors_carry_no_path() {
        let e = std::io::Error::new(ErrorKind::NotFound, "/home/me/secret.jpg not found");
        assert_eq!(io_error(e), TransferError::Io("entity not found".into()));
    }
}
