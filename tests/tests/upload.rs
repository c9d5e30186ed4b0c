//! HTTP File Upload (XEP-0363) against the real servers (Prosody's http_file_share
//! component, ejabberd's mod_http_upload, both on loopback https with the test CA), plus a
//! small scripted HTTPS server for what they will not do on demand (redirects, bodies of
//! unannounced length).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use linnet_client::transfer::{CancellationToken, TransferError, Transfers};
use linnet_tests::*;
use linnet_xmpp::upload::{discover_upload_service, request_slot, Slot, UploadError};
use linnet_xmpp::Session;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A little over 3 MB and not a multiple of any chunk size, so a short or padded transfer
/// shows.
const SIZE: u64 = 3 * 1024 * 1024 + 12_345;
/// Both servers are configured with 100 MiB (scripts/servers).
const SERVER_LIMIT: u64 = 100 * 1024 * 1024;
const MIME: &str = "application/octet-stream";

async fn session(server: Server, tag: &str) -> Session {
    registered_session(server, tag).await.0
}

fn upload_domain(server: Server) -> String {
    var(match server {
        Server::Prosody => "PROSODY_UPLOAD_DOMAIN",
        Server::Ejabberd => "EJABBERD_UPLOAD_DOMAIN",
    })
}

/// The upload service, checked to be the one the server is configured with.
async fn service(server: Server, session: &Session) -> String {
    let found = discover_upload_service(session)
        .await
        .unwrap()
        .expect("the server has an upload service");
    assert_eq!(found.jid, upload_domain(server));
    assert_eq!(found.max_file_size, Some(SERVER_LIMIT));
    found.jid
}

/// `size` random bytes in `dir/name`, and their SHA-256.
fn random_file(dir: &Path, name: &str, size: u64) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; size as usize];
    rand::thread_rng().fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, Sha256::digest(&data).to_vec())
}

fn sha256_of(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// Records every progress report.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<Vec<(u64, u64)>>>);

impl Progress {
    fn callback(&self) -> impl Fn(u64, u64) + Send + Sync + 'static {
        let log = self.0.clone();
        move |done, total| log.lock().unwrap().push((done, total))
    }

    /// Reports were monotonic, always against `total`, and ended at `total`.
    fn assert_complete(&self, total: u64) {
        let log = self.0.lock().unwrap();
        assert!(
            log.len() > 2,
            "a 3 MB transfer reports more than start and end"
        );
        assert!(log.iter().all(|&(_, t)| t == total), "{:?}", &log[..3]);
        assert!(log.windows(2).all(|w| w[0].0 <= w[1].0), "not monotonic");
        assert_eq!(log.first().map(|p| p.0), Some(0));
        assert_eq!(log.last(), Some(&(total, total)));
    }
}

/// A callback that cancels `token` at the first report of some but not all bytes, and
/// counts the reports after that.
fn cancel_midway(
    token: &CancellationToken,
) -> (impl Fn(u64, u64) + Send + Sync + 'static, Arc<AtomicU64>) {
    let token = token.clone();
    let late = Arc::new(AtomicU64::new(0));
    let late_reports = late.clone();
    let callback = move |done: u64, total: u64| {
        if token.is_cancelled() {
            late_reports.fetch_add(1, Ordering::Relaxed);
        } else if done > 0 && done < total {
            token.cancel();
        }
    };
    (callback, late)
}

async fn upload_file(
    transfers: &Transfers,
    session: &Session,
    service: &str,
    dir: &Path,
) -> (Slot, Vec<u8>) {
    let (path, digest) = random_file(dir, "random.bin", SIZE);
    let slot = request_slot(session, service, path.to_str().unwrap(), SIZE, MIME)
        .await
        .unwrap();
    transfers
        .upload(&slot, &path, MIME, |_, _| {}, &CancellationToken::new())
        .await
        .unwrap();
    (slot, digest)
}

/// Discovery, a slot, an upload of 3 MB with progress, and the download from the GET URL
/// giving back the same bytes.
async fn a_file_goes_up_and_comes_back(server: Server) {
    let s = session(server, "upa").await;
    let service = service(server, &s).await;
    let up_dir = tempfile::tempdir().unwrap();
    let (path, digest) = random_file(up_dir.path(), "holiday photo.bin", SIZE);
    // The full local path goes in; only the final component may reach the service.
    let slot = request_slot(&s, &service, path.to_str().unwrap(), SIZE, MIME)
        .await
        .unwrap();
    assert!(slot.put_url.starts_with("https://"), "put URL is https");
    assert!(slot.get_url.starts_with("https://"), "get URL is https");
    let parent = up_dir.path().file_name().unwrap().to_str().unwrap();
    for url in [&slot.get_url, &slot.put_url] {
        assert!(url.contains("photo.bin") && !url.contains(parent));
    }

    let transfers = Transfers::new(&tls()).unwrap();
    let up = Progress::default();
    transfers
        .upload(&slot, &path, MIME, up.callback(), &CancellationToken::new())
        .await
        .unwrap();
    up.assert_complete(SIZE);

    let down_dir = tempfile::tempdir().unwrap();
    let dest = down_dir.path().join("received.bin");
    let down = Progress::default();
    let info = transfers
        .download(
            &slot.get_url,
            &dest,
            SIZE,
            down.callback(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    down.assert_complete(SIZE);
    assert_eq!(info.bytes, SIZE);
    assert_eq!(info.content_type.as_deref(), Some(MIME));
    assert_eq!(sha256_of(&dest), digest, "the same bytes came back");
    assert_eq!(
        dir_entries(down_dir.path()),
        vec!["received.bin"],
        "no temporary file left"
    );
}

/// A cancelled upload returns `Cancelled` at once and stores nothing: the GET URL has no
/// file behind it. Uploading again takes a fresh slot: ejabberd refuses a second PUT to a
/// slot whose first PUT began (403), while Prosody would take it.
async fn a_cancelled_upload_stores_nothing(server: Server) {
    let s = session(server, "upb").await;
    let service = service(server, &s).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, digest) = random_file(dir.path(), "random.bin", SIZE);
    let slot = request_slot(&s, &service, "random.bin", SIZE, MIME)
        .await
        .unwrap();
    let transfers = Transfers::new(&tls()).unwrap();

    let cancel = CancellationToken::new();
    let (callback, late) = cancel_midway(&cancel);
    let err = transfers
        .upload(&slot, &path, MIME, callback, &cancel)
        .await
        .unwrap_err();
    assert_eq!(err, TransferError::Cancelled);
    assert_eq!(
        late.load(Ordering::Relaxed),
        0,
        "no bytes read after cancelling"
    );

    let dest_dir = tempfile::tempdir().unwrap();
    let dest = dest_dir.path().join("f");
    let err = transfers
        .download(
            &slot.get_url,
            &dest,
            SIZE,
            |_, _| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    // Prosody knows the slot and says the file is gone; ejabberd knows no file there.
    let nothing = match server {
        Server::Prosody => 410,
        Server::Ejabberd => 404,
    };
    assert_eq!(
        err,
        TransferError::Http { status: nothing },
        "nothing was stored"
    );
    assert!(dir_entries(dest_dir.path()).is_empty());

    let again = request_slot(&s, &service, "random.bin", SIZE, MIME)
        .await
        .unwrap();
    transfers
        .upload(&again, &path, MIME, |_, _| {}, &CancellationToken::new())
        .await
        .unwrap();
    transfers
        .download(
            &again.get_url,
            &dest,
            SIZE,
            |_, _| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(sha256_of(&dest), digest);
}

/// A cancelled download returns `Cancelled` and leaves no partial file; so does one that
/// is larger than allowed (refused on its Content-Length, before anything is written).
async fn a_cancelled_or_oversized_download_leaves_nothing(server: Server) {
    let s = session(server, "upc").await;
    let service = service(server, &s).await;
    let transfers = Transfers::new(&tls()).unwrap();
    let up_dir = tempfile::tempdir().unwrap();
    let (slot, _) = upload_file(&transfers, &s, &service, up_dir.path()).await;

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let cancel = CancellationToken::new();
    let (callback, late) = cancel_midway(&cancel);
    let err = transfers
        .download(&slot.get_url, &dest, SIZE, callback, &cancel)
        .await
        .unwrap_err();
    assert_eq!(err, TransferError::Cancelled);
    assert_eq!(
        late.load(Ordering::Relaxed),
        0,
        "nothing written after cancelling"
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );

    let seen = Progress::default();
    let err = transfers
        .download(
            &slot.get_url,
            &dest,
            SIZE - 1,
            seen.callback(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, TransferError::TooLarge { max: SIZE - 1 });
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "refused before reading the body"
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
}

/// A slot larger than the service takes is refused with its limit, one of exactly the limit
/// is not; an empty file is taken by Prosody only; refusals on our side (a bad file name)
/// never reach the server.
async fn slot_sizes_at_the_edges(server: Server) {
    let s = session(server, "upd").await;
    let service = service(server, &s).await;
    let err = request_slot(&s, &service, "huge.bin", SERVER_LIMIT + 1, MIME)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        UploadError::FileTooLarge {
            max: Some(SERVER_LIMIT)
        }
    );
    // Exactly the limit is fine.
    request_slot(&s, &service, "limit.bin", SERVER_LIMIT, MIME)
        .await
        .unwrap();
    // The XEP sets no lower bound on the size; the servers differ on an empty file.
    let transfers = Transfers::new(&tls()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (empty, _) = random_file(dir.path(), "empty.txt", 0);
    let slot = request_slot(&s, &service, "empty.txt", 0, "text/plain").await;
    match server {
        Server::Prosody => {
            let slot = slot.unwrap();
            transfers
                .upload(
                    &slot,
                    &empty,
                    "text/plain",
                    |_, _| {},
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            let back = dir.path().join("back.txt");
            let info = transfers
                .download(
                    &slot.get_url,
                    &back,
                    0,
                    |_, _| {},
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            assert_eq!(info.bytes, 0);
            assert_eq!(std::fs::metadata(&back).unwrap().len(), 0);
        }
        Server::Ejabberd => assert!(
            matches!(&slot, Err(UploadError::Refused { condition, .. }) if condition == "bad-request"),
            "{slot:?}"
        ),
    }

    let err = request_slot(&s, &service, "dir/", 1, MIME)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::BadFilename(_)), "{err:?}");
}

/// `http://` is refused without a request: not to a listener of ours (which would see the
/// connection), not to the server's own plain-HTTP port serving the very same file.
async fn plain_http_is_refused_without_a_request(server: Server) {
    let s = session(server, "upe").await;
    let service = service(server, &s).await;
    let transfers = Transfers::new(&tls()).unwrap();
    let up_dir = tempfile::tempdir().unwrap();
    let (slot, _) = upload_file(&transfers, &s, &service, up_dir.path()).await;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let http_port = var(match server {
        Server::Prosody => "PROSODY_HTTP_PORT",
        Server::Ejabberd => "EJABBERD_HTTP_PORT",
    });
    let https_port = var(match server {
        Server::Prosody => "PROSODY_HTTPS_PORT",
        Server::Ejabberd => "EJABBERD_HTTPS_PORT",
    });
    let plain_get = slot.get_url.replacen("https://", "http://", 1).replacen(
        &format!(":{https_port}/"),
        &format!(":{http_port}/"),
        1,
    );
    assert_ne!(plain_get, slot.get_url);
    for url in [format!("http://127.0.0.1:{port}/file"), plain_get] {
        let err = transfers
            .download(&url, &dest, SIZE, |_, _| {}, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, TransferError::NotHttps);
    }
    let mut plain_slot = slot.clone();
    plain_slot.put_url = format!("http://127.0.0.1:{port}/put");
    let err = transfers
        .upload(
            &plain_slot,
            &up_dir.path().join("random.bin"),
            MIME,
            |_, _| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, TransferError::NotHttps);
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "no connection was made"
    );
    assert!(dir_entries(dir.path()).is_empty());
}

both_servers!(
    a_file_goes_up_and_comes_back,
    a_cancelled_upload_stores_nothing,
    a_cancelled_or_oversized_download_leaves_nothing,
    slot_sizes_at_the_edges,
    plain_http_is_refused_without_a_request,
);

/// A scripted HTTPS server on loopback, with a certificate from its own CA: answers each
/// request by its path (canned responses below) and closes the connection.
mod scripted {
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt;

    pub struct Https {
        pub port: u16,
        pub ca_pem: String,
        /// The head (request line and headers) of every request received, in order.
        pub heads: Arc<Mutex<Vec<String>>>,
    }

    pub const BODY: &[u8] = b"hello, world";
    /// Sent without Content-Length: only counting while streaming can catch its size.
    pub const UNANNOUNCED: usize = 100_000;

    fn response(path: &str, port: u16) -> Vec<u8> {
        let redirect = |to: &str| {
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .into_bytes()
        };
        match path {
            "/file" => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    BODY.len()
                )
                .into_bytes();
                r.extend_from_slice(BODY);
                r
            }
            "/relative" => redirect("/file"),
            "/absolute" => redirect(&format!("https://127.0.0.1:{port}/relative")),
            "/to-http" => redirect(&format!("http://127.0.0.1:{port}/file")),
            "/loop" => redirect("/loop"),
            "/unannounced" => {
                let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
                r.extend(std::iter::repeat_n(b'x', UNANNOUNCED));
                r
            }
            // A PUT that is redirected must not be followed (it would carry the slot's
            // Authorization elsewhere).
            "/put" => format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://127.0.0.1:{port}/file\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        }
    }

    pub async fn start() -> Https {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let host = linnet_tests::https::serve(move |head, path, mut tls| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(head);
                let port = tls.get_ref().0.local_addr().map(|a| a.port()).unwrap_or(0);
                let _ = tls.write_all(&response(&path, port)).await;
                let _ = tls.shutdown().await;
            }
        })
        .await;
        Https {
            port: host.port,
            ca_pem: host.ca_pem,
            heads,
        }
    }

    impl Https {
        pub fn url(&self, path: &str) -> String {
            format!("https://127.0.0.1:{}{path}", self.port)
        }
    }
}

/// Redirects are followed to https only and a few hops at most; a PUT is never redirected;
/// a body without Content-Length is still held to the size limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_unannounced_sizes() {
    let server = scripted::start().await;
    let transfers = Transfers::new(&linnet_client::TlsOptions {
        extra_ca_pem: Some(server.ca_pem.clone().into_bytes()),
        only_extra_ca: true,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let get = |path: &str, max: u64| {
        let url = server.url(path);
        let transfers = transfers.clone();
        let dest = dest.clone();
        async move {
            transfers
                .download(&url, &dest, max, |_, _| {}, &CancellationToken::new())
                .await
        }
    };

    server.heads.lock().unwrap().clear();
    for path in ["/file", "/relative", "/absolute"] {
        let info = get(path, 1000).await.unwrap();
        assert_eq!(info.bytes, scripted::BODY.len() as u64, "{path}");
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
        assert_eq!(std::fs::read(&dest).unwrap(), scripted::BODY);
        std::fs::remove_file(&dest).unwrap();
    }
    let heads = server.heads.lock().unwrap().clone();
    // /file, /relative + /file, /absolute + /relative + /file.
    assert_eq!(heads.len(), 6, "{heads:?}");
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("\r\nreferer:")),
        "no Referer leaks the capability URL to a redirect target"
    );
    assert_eq!(
        get("/to-http", 1000).await.unwrap_err(),
        TransferError::Redirect("to a URL that is not https")
    );
    assert_eq!(
        get("/loop", 1000).await.unwrap_err(),
        TransferError::TooManyRedirects
    );
    assert_eq!(
        get("/missing", 1000).await.unwrap_err(),
        TransferError::Http { status: 404 }
    );
    let max = scripted::UNANNOUNCED as u64 - 1;
    assert_eq!(
        get("/unannounced", max).await.unwrap_err(),
        TransferError::TooLarge { max }
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
    let info = get("/unannounced", max + 1).await.unwrap();
    assert_eq!(info.bytes, max + 1);
    assert_eq!(info.content_type, None);

    let src_dir = tempfile::tempdir().unwrap();
    let (src, _) = random_file(src_dir.path(), "up.bin", 10_000);
    let slot = Slot {
        put_url: server.url("/put"),
        get_url: server.url("/file"),
        put_headers: vec![("Authorization".into(), "Bearer secret".into())],
    };
    server.heads.lock().unwrap().clear();
    assert_eq!(
        transfers
            .upload(&slot, &src, MIME, |_, _| {}, &CancellationToken::new())
            .await
            .unwrap_err(),
        TransferError::Http { status: 307 }
    );
    let heads = server.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "the redirect was not followed: {heads:?}");
    let put = heads[0].to_ascii_lowercase();
    assert!(put.starts_with("put /put "), "{put}");
    // A declared length (services check it against the slot), not a chunked body.
    assert!(put.contains("\r\ncontent-length: 10000\r\n"), "{put}");
    assert!(!put.contains("transfer-encoding"), "{put}");
    assert!(
        put.contains("\r\ncontent-type: application/octet-stream\r\n"),
        "{put}"
    );
    assert!(
        put.contains("\r\nauthorization: bearer secret\r\n"),
        "{put}"
    );

    // A certificate from another CA (the servers' test CA) is a TLS error, not a download.
    let other = Transfers::new(&tls()).unwrap();
    let err = other
        .download(
            &server.url("/file"),
            &dest,
            1000,
            |_, _| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Tls(_)), "{err:?}");
}
