//! Test harness: the real servers started by `scripts/servers start` (the test command does
//! that), fresh accounts, clients in temporary directories, and waiting on snapshots.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

pub mod bench;
pub mod dns;
pub mod fake;
pub mod https;
pub mod omemo_peer;
pub mod proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linnet_client::{
    AccountId, ChatListSnapshot, Client, ClientOptions, ConversationListener, ConversationSnapshot,
    DbKey, ServerOverride, Subscription, TlsOptions,
};
use rand::Rng;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Prosody,
    Ejabberd,
}

impl Server {
    fn prefix(self) -> &'static str {
        match self {
            Server::Prosody => "PROSODY",
            Server::Ejabberd => "EJABBERD",
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The servers' environment as written by `scripts/servers start`. A missing file is a
/// failure, not a skip: these tests exist to run against real servers.
pub fn env() -> HashMap<String, String> {
    let path = std::env::var("LINNET_SERVERS_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".run/servers.env"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; start the servers with scripts/servers start (scripts/test does)",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

pub fn var(key: &str) -> String {
    env()
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} missing from servers.env"))
}

pub fn domain(server: Server) -> String {
    var(&format!("{}_DOMAIN", server.prefix()))
}

/// The server's STARTTLS address, for putting a proxy in front of it.
pub fn socket_addr(server: Server) -> std::net::SocketAddr {
    let o = server_override(server, false);
    format!("{}:{}", o.host, o.port)
        .parse()
        .expect("socket address")
}

pub fn server_override(server: Server, direct_tls: bool) -> ServerOverride {
    let p = server.prefix();
    let port_key = if direct_tls {
        format!("{p}_TLS_PORT")
    } else {
        format!("{p}_PORT")
    };
    ServerOverride {
        host: var(&format!("{p}_HOST")),
        port: var(&port_key).parse().expect("port"),
        direct_tls,
    }
}

/// A session-level config for `jid` at `server` (STARTTLS port, the test CA only).
pub fn xmpp_config(server: Server, jid: &str) -> linnet_xmpp::ConnectConfig {
    let bare = linnet_xmpp::BareJid::parse(jid).expect("jid");
    let mut cfg = linnet_xmpp::ConnectConfig::new(bare, PASSWORD);
    let o = server_override(server, false);
    cfg.server = Some(linnet_xmpp::ServerAddr {
        host: o.host,
        port: o.port,
        direct_tls: false,
    });
    cfg.tls = tls();
    cfg
}

/// A fresh account on `server` and a raw session of it, with the session's events.
pub async fn registered_session(
    server: Server,
    tag: &str,
) -> (
    linnet_xmpp::Session,
    tokio::sync::mpsc::UnboundedReceiver<linnet_xmpp::Event>,
) {
    let jid = fresh_jid(server, tag);
    let cfg = xmpp_config(server, &jid);
    linnet_xmpp::register(&cfg).await.expect("register");
    let conn = linnet_xmpp::connect(&cfg).await.expect("connect");
    linnet_xmpp::Session::start(conn, cfg.jid.clone())
}

/// A fresh account's raw session, online (initial presence sent), its events drained: a
/// peer that sends hand-written stanzas. Returns the session and its bare JID.
pub async fn raw_peer(server: Server, tag: &str) -> (linnet_xmpp::Session, String) {
    let (session, mut events) = registered_session(server, tag).await;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    session.send_presence(None, None).expect("initial presence");
    let jid = session.own_jid().as_str().to_owned();
    (session, jid)
}

/// A chat message to `to` with `inner` payloads, its id also its origin-id.
pub fn raw_chat(to: &str, id: &str, inner: &str) -> String {
    format!(
        "<message xmlns='jabber:client' type='chat' to='{to}' id='{id}'>{inner}\
         <origin-id xmlns='urn:xmpp:sid:0' id='{id}'/></message>"
    )
}

/// Trusts only the test CA, so that a wrong certificate can never pass because of the
/// machine's own roots.
pub fn tls() -> TlsOptions {
    let pem = std::fs::read(var("LINNET_CA")).expect("test CA");
    TlsOptions {
        extra_ca_pem: Some(pem),
        only_extra_ca: true,
    }
}

/// `LINNET_TEST_LOG=debug` (any tracing filter) shows the clients' logs in test output.
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("LINNET_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

pub fn options() -> ClientOptions {
    init_logging();
    ClientOptions {
        tls: tls(),
        step_timeout: Duration::from_secs(10),
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        // `LINNET_TEST_RESUME=0`: every reconnection is a fresh login.
        stream_resumption: std::env::var("LINNET_TEST_RESUME").map_or(true, |v| v != "0"),
        // Call media on loopback: a CI machine may have no other interface.
        call_bind: vec!["127.0.0.1:0".into()],
        ..ClientOptions::default()
    }
}

pub fn fresh_username(tag: &str) -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{tag}{n:016x}")
}

/// The group is joined, as its conversation snapshot says.
pub fn group_joined(s: &ConversationSnapshot) -> bool {
    s.group
        .as_ref()
        .is_some_and(|g| g.joined == linnet_client::JoinState::Joined)
}

/// A raw session of a fresh account, invited to `group` by `inviter` and in its room as
/// "dave": what it receives is what goes over the wire. Keep the session alive.
pub async fn raw_occupant(
    server: Server,
    inviter: &TestClient,
    group: linnet_client::ConversationId,
    room: &str,
) -> (
    linnet_xmpp::Session,
    tokio::sync::mpsc::UnboundedReceiver<linnet_xmpp::Event>,
) {
    let (observer, events) = registered_session(server, "dave").await;
    inviter
        .client
        .invite_to_group(group, observer.own_jid().as_str(), None)
        .await
        .expect("invite");
    observer
        .muc_join(
            &linnet_xmpp::BareJid::parse(room).expect("room JID"),
            "dave",
            None,
        )
        .expect("join");
    (observer, events)
}

/// The room JID of a group conversation.
pub fn room_of(c: &TestClient, group: linnet_client::ConversationId) -> String {
    c.client
        .chat_list()
        .conversations
        .iter()
        .find(|i| i.id == group)
        .map(|i| i.peer.clone())
        .expect("the group in the chat list")
}

/// Waits for the invitation to `room`, accepts it, and waits until joined.
pub async fn accept_group_invitation(c: &TestClient, room: &str) -> Arc<ConversationSnapshot> {
    let room_s = room.to_owned();
    c.wait_list("the invitation", |s| {
        s.accounts
            .iter()
            .any(|a| a.invitations.iter().any(|i| i.room == room_s))
    })
    .await;
    c.client
        .accept_invitation(c.account, room)
        .await
        .expect("accept the invitation");
    c.wait_conversation(room, "joined", group_joined).await
}

/// The names in a directory, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

pub fn fresh_jid(server: Server, tag: &str) -> String {
    format!("{}@{}", fresh_username(tag), domain(server))
}

pub const PASSWORD: &str = "correct horse battery staple";

/// A client with its own database in a temporary directory (kept alive by the struct).
pub struct TestClient {
    pub client: Client,
    pub account: AccountId,
    pub jid: String,
    pub dir: tempfile::TempDir,
    list: watch::Receiver<Arc<ChatListSnapshot>>,
    _sub: Subscription,
}

impl TestClient {
    pub fn new_client() -> (Client, tempfile::TempDir) {
        Self::new_client_with(options())
    }

    pub fn new_client_with(opts: ClientOptions) -> (Client, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = DbKey::generate().expect("key");
        let client = Client::open(dir.path(), &key, opts).expect("open client");
        std::fs::write(dir.path().join("test-key.hex"), key.to_hex().as_bytes()).expect("key file");
        (client, dir)
    }

    /// The app started again on this client's database (shut the running one down first).
    pub fn reopen(&self) -> Client {
        let hex = std::fs::read_to_string(self.dir.path().join("test-key.hex")).expect("key file");
        let key = DbKey::from_hex(hex.trim()).expect("key");
        Client::open(self.dir.path(), &key, options()).expect("reopen client")
    }

    /// A second, read-only look at this client's database (for what snapshots do not show).
    pub fn open_store(&self) -> linnet_store::Store {
        let hex = std::fs::read_to_string(self.dir.path().join("test-key.hex")).expect("key file");
        let key = DbKey::from_hex(hex.trim()).expect("key");
        linnet_store::Store::open(&self.dir.path().join("linnet.db"), &key).expect("open store")
    }

    fn wrap(client: Client, account: AccountId, jid: String, dir: tempfile::TempDir) -> TestClient {
        let (tx, list) = watch::channel(client.chat_list());
        let sub = client.subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
            tx.send_replace(s);
        });
        TestClient {
            client,
            account,
            jid,
            dir,
            list,
            _sub: sub,
        }
    }

    /// A client with the account `user@fake.test` at a scripted server, not logged in.
    pub fn at_fake(fake: &fake::FakeServer) -> TestClient {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = DbKey::generate().expect("key");
        let mut opts = options();
        opts.tls = TlsOptions {
            extra_ca_pem: Some(fake.ca_pem.clone().into_bytes()),
            only_extra_ca: true,
        };
        let client = Client::open(dir.path(), &key, opts).expect("open client");
        let jid = format!("user@{}", fake::DOMAIN);
        let server = ServerOverride {
            host: "127.0.0.1".into(),
            port: fake.port,
            direct_tls: false,
        };
        let account = client
            .add_account(&jid, PASSWORD, Some(server))
            .expect("add account");
        Self::wrap(client, account, jid, dir)
    }

    /// The same account logged in again through a fault proxy of its own (this client's
    /// direct session is shut down).
    pub async fn behind_proxy(self, server: Server) -> (TestClient, proxy::Proxy) {
        self.behind_proxy_with(server, options()).await
    }

    /// [`TestClient::behind_proxy`] with other client options.
    pub async fn behind_proxy_with(
        self,
        server: Server,
        opts: ClientOptions,
    ) -> (TestClient, proxy::Proxy) {
        self.client.shutdown().await;
        let proxy = proxy::Proxy::start(socket_addr(server))
            .await
            .expect("proxy");
        let via = ServerOverride {
            host: "127.0.0.1".into(),
            port: proxy.port(),
            direct_tls: false,
        };
        (
            TestClient::login_via_with(&self.jid, via, opts).await,
            proxy,
        )
    }

    /// Registers a fresh account in-band and logs it in.
    pub async fn register(server: Server, tag: &str) -> TestClient {
        Self::register_with(server, tag, options()).await
    }

    /// [`TestClient::register`] with other client options.
    pub async fn register_with(server: Server, tag: &str, opts: ClientOptions) -> TestClient {
        let jid = fresh_jid(server, tag);
        let (client, dir) = Self::new_client_with(opts);
        let account = client
            .register_account(&jid, PASSWORD, Some(server_override(server, false)))
            .await
            .expect("register");
        client.login(account).await.expect("login");
        Self::wrap(client, account, jid, dir)
    }

    /// A second device of an existing account.
    pub async fn another_device(&self, server: Server) -> TestClient {
        let (client, dir) = Self::new_client();
        let account = client
            .add_account(&self.jid, PASSWORD, Some(server_override(server, false)))
            .expect("add account");
        client.login(account).await.expect("login");
        Self::wrap(client, account, self.jid.clone(), dir)
    }

    /// Another client of an existing account, connecting through `server` (e.g. a proxy).
    pub async fn login_via(jid: &str, server: ServerOverride) -> TestClient {
        Self::login_via_with(jid, server, options()).await
    }

    pub async fn login_via_with(
        jid: &str,
        server: ServerOverride,
        opts: ClientOptions,
    ) -> TestClient {
        let (client, dir) = Self::new_client_with(opts);
        let account = client
            .add_account(jid, PASSWORD, Some(server))
            .expect("add account");
        client.login(account).await.expect("login");
        Self::wrap(client, account, jid.to_owned(), dir)
    }

    /// Waits until the chat list satisfies `pred`; panics with the last snapshot otherwise.
    pub async fn wait_list<F: Fn(&ChatListSnapshot) -> bool>(
        &self,
        what: &str,
        pred: F,
    ) -> Arc<ChatListSnapshot> {
        let mut rx = self.list.clone();
        let fut = async {
            loop {
                let cur = rx.borrow_and_update().clone();
                if pred(&cur) {
                    return cur;
                }
                if rx.changed().await.is_err() {
                    panic!("snapshot channel closed while waiting for {what}");
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(20), fut).await {
            Ok(s) => s,
            Err(_) => panic!(
                "timed out waiting for {what}; last snapshot: {:#?}",
                self.list.borrow()
            ),
        }
    }

    /// Bodies of every message received from `peer`, in the order shown (from the store,
    /// not the snapshot's window).
    pub fn incoming_bodies(&self, peer: &str) -> Vec<String> {
        let conv = self
            .client
            .open_conversation(self.account, peer)
            .expect("conversation");
        self.client
            .messages(conv, None, 100_000)
            .expect("messages")
            .into_iter()
            .filter(|m| m.direction == linnet_client::Direction::Incoming)
            .map(|m| m.body)
            .collect()
    }

    /// Waits until at least `n` messages from `peer` are stored (polling, for counts beyond
    /// a snapshot's window).
    pub async fn wait_incoming(&self, peer: &str, n: usize, what: &str) {
        wait_until(what, || self.incoming_bodies(peer).len() >= n).await;
    }

    /// Waits for a conversation snapshot with `peer` that satisfies `pred`.
    pub async fn wait_conversation<F: Fn(&ConversationSnapshot) -> bool>(
        &self,
        peer: &str,
        what: &str,
        pred: F,
    ) -> Arc<ConversationSnapshot> {
        let conv = self
            .client
            .open_conversation(self.account, peer)
            .expect("conversation");
        let (tx, mut rx) = watch::channel::<Option<Arc<ConversationSnapshot>>>(None);
        struct L(watch::Sender<Option<Arc<ConversationSnapshot>>>);
        impl ConversationListener for L {
            fn on_update(&self, s: Arc<ConversationSnapshot>) {
                self.0.send_replace(Some(s));
            }
        }
        let _sub = self
            .client
            .subscribe_conversation(conv, L(tx))
            .expect("subscribe");
        let fut = async {
            loop {
                if let Some(cur) = rx.borrow_and_update().clone() {
                    if pred(&cur) {
                        return cur;
                    }
                }
                if rx.changed().await.is_err() {
                    panic!("conversation channel closed while waiting for {what}");
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(20), fut).await {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}; last: {:#?}", rx.borrow()),
        }
    }
}

/// Records what a listener received, for ordering assertions.
pub struct Recorder<T>(pub Arc<Mutex<Vec<Arc<T>>>>);

impl<T> Clone for Recorder<T> {
    fn clone(&self) -> Self {
        Recorder(self.0.clone())
    }
}

impl<T> Default for Recorder<T> {
    fn default() -> Self {
        Recorder(Arc::new(Mutex::new(Vec::new())))
    }
}

impl Recorder<ChatListSnapshot> {
    /// Records every chat-list snapshot `client` publishes while the subscription lives.
    pub fn chat_list(client: &Client) -> (Self, Subscription) {
        let rec = Recorder::default();
        let sink = rec.clone();
        let sub = client.subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
            sink.0.lock().unwrap().push(s);
        });
        (rec, sub)
    }
}

impl<T> Recorder<T> {
    pub fn snapshots(&self) -> Vec<Arc<T>> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The JIDs of an account's pending subscription requests, oldest first.
pub fn request_jids(account: &linnet_client::AccountItem) -> Vec<&str> {
    account
        .subscription_requests
        .iter()
        .map(|r| r.jid.as_str())
        .collect()
}

/// Makes two fresh accounts on `server` mutual contacts and returns them logged in.
pub async fn contacts_pair(server: Server) -> (TestClient, TestClient) {
    contacts_pair_with(server, options()).await
}

/// [`contacts_pair`] with other client options for both.
pub async fn contacts_pair_with(server: Server, opts: ClientOptions) -> (TestClient, TestClient) {
    let a = TestClient::register_with(server, "alice", opts.clone()).await;
    let b = TestClient::register_with(server, "bob", opts).await;
    a.client
        .add_contact(a.account, &b.jid, Some("Bob"))
        .await
        .expect("add contact");
    let a_jid = a.jid.clone();
    b.wait_list("subscription request", |s| {
        s.accounts
            .iter()
            .any(|acc| request_jids(acc).contains(&a_jid.as_str()))
    })
    .await;
    b.client
        .approve_contact(b.account, &a.jid)
        .await
        .expect("approve");
    for (me, other) in [(&a, &b.jid), (&b, &a.jid)] {
        wait_until("mutual subscription", || {
            me.client
                .contacts(me.account)
                .map(|cs| {
                    cs.iter()
                        .any(|c| &c.jid == other && c.subscription == "both")
                })
                .unwrap_or(false)
        })
        .await;
    }
    (a, b)
}

/// Polls a condition that has no snapshot of its own (e.g. the contact list).
/// Waits until `who` has seen `device` in `jid`'s OMEMO 2 device list.
pub async fn wait_device(who: &TestClient, jid: &str, device: u32, what: &str) {
    wait_until(what, || {
        who.client
            .omemo_devices(who.account, jid)
            .map(|ds| {
                ds.iter().any(|d| {
                    d.device_id == device
                        && d.active
                        && d.encryption == linnet_client::Encryption::Omemo2
                })
            })
            .unwrap_or(false)
    })
    .await;
}

/// A VP8 IVF file made by ffmpeg (Debian's, with libvpx) in `dir`: `seconds` of its test
/// pattern at 320x240, 15 frames a second: a camera's frames for call tests.
pub fn make_vp8_ivf(dir: &Path, seconds: u32) -> PathBuf {
    let ffmpeg = Path::new("/usr/bin/ffmpeg");
    assert!(ffmpeg.exists(), "ffmpeg is needed (scripts/install-deps)");
    let out = dir.join("camera.ivf");
    let status = std::process::Command::new(ffmpeg)
        .args(["-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=15")
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libvpx",
            "-b:v",
            "300k",
            "-y",
        ])
        .arg(&out)
        .status()
        .expect("running ffmpeg");
    assert!(status.success(), "ffmpeg could not make the VP8 file");
    out
}

pub async fn wait_until<F: Fn() -> bool>(what: &str, cond: F) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Generates one test per server from an async fn taking a `Server`.
#[macro_export]
macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {
        mod prosody {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::Server::Prosody).await }
            )*
        }
        mod ejabberd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::Server::Ejabberd).await }
            )*
        }
    };
}
