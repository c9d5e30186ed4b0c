//! The core as the Android and iOS apps see it (uniffi 0.32, proc-macros). Translation
//! only: every decision is the core's (`linnet_client`); this crate turns its calls, its
//! snapshots and its errors into what Kotlin and Swift can hold.
//!
//! - [`LinnetClient`] is the core's `Client`. Intents that wait on the network are async
//!   functions: they run on the core's own tokio runtime (one per process, started on first
//!   use), and the foreign side awaits them as coroutines / async functions; nothing blocks
//!   a foreign thread on them.
//! - Subscriptions deliver the current snapshot at once, then each newer one, to a foreign
//!   observer; the returned [`SubscriptionHandle`] stops them when cancelled or destroyed.
//! - One error type, [`LinnetError`], by the kinds of DESIGN.md §8. A panic in the core
//!   never crosses: uniffi turns one in a call into an internal error, and one in a task
//!   the core spawned for an async call is reported as [`LinnetError::Internal`].
//! - What only the operating system can do comes in through foreign traits: the database key
//!   from the platform's key store ([`KeyStorage`]), and a call's microphone, speaker,
//!   camera (with its VP8 encoder) and renderer ([`CallDevices`]). Reachability and foreground state are
//!   told to the client as they change ([`LinnetClient::network_changed`],
//!   [`LinnetClient::set_foreground`]).

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use linnet_client::{AccountId, Client, ClientError, ClientOptions, ConversationId, MessageId};
use linnet_store::DbKey;
use tokio::runtime::Runtime;

mod records;

pub use records::*;

uniffi::setup_scaffolding!();

/// What went wrong, by what the app should do about it.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum LinnetError {
    /// The server could not be reached or the connection broke; retrying may help.
    #[error("network: {detail}")]
    Network { detail: String },
    /// Wrong credentials or the account is disabled: ask the user.
    #[error("authentication: {detail}")]
    Auth { detail: String },
    /// The server's certificate is not trusted, or it would not encrypt.
    #[error("security: {detail}")]
    Tls { detail: String },
    #[error("not found: {detail}")]
    NotFound { detail: String },
    /// The server or our policy refuses (registration closed, username taken, …).
    #[error("refused: {detail}")]
    Policy { detail: String },
    /// The app passed something invalid.
    #[error("invalid argument: {detail}")]
    BadInput { detail: String },
    /// The database key is wrong.
    #[error("the database key is wrong")]
    WrongKey,
    #[error("internal: {detail}")]
    Internal { detail: String },
}

impl From<ClientError> for LinnetError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Network(detail) => LinnetError::Network { detail },
            ClientError::Auth(detail) => LinnetError::Auth { detail },
            ClientError::Tls(detail) => LinnetError::Tls { detail },
            ClientError::NotFound(detail) => LinnetError::NotFound { detail },
            ClientError::Policy(detail) => LinnetError::Policy { detail },
            ClientError::BadInput(detail) => LinnetError::BadInput { detail },
            ClientError::WrongKey => LinnetError::WrongKey,
            ClientError::Internal(detail) => LinnetError::Internal { detail },
        }
    }
}

impl From<linnet_store::StoreError> for LinnetError {
    fn from(e: linnet_store::StoreError) -> Self {
        ClientError::from(e).into()
    }
}

/// A foreign implementation failed in a way its declaration does not allow for.
impl From<uniffi::UnexpectedUniFFICallbackError> for LinnetError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        LinnetError::Internal {
            detail: format!("the app's callback failed: {}", e.reason),
        }
    }
}

type Result<T> = std::result::Result<T, LinnetError>;

/// The core's runtime: its sessions, timers and snapshot deliveries run here, whichever
/// foreign thread calls in.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("linnet-core")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LinnetError::Internal {
            detail: format!("cannot start the core's runtime: {e}"),
        })
}

/// Runs `fut` on the core's runtime and waits for it without blocking the caller's thread.
async fn on_core<T, F>(fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = std::result::Result<T, ClientError>> + Send + 'static,
{
    match runtime()?.spawn(fut).await {
        Ok(r) => r.map_err(Into::into),
        // A panic (or a runtime shutting down) in the core: an error, not a crash.
        Err(e) => Err(LinnetError::Internal {
            detail: if e.is_panic() {
                "the core failed unexpectedly".into()
            } else {
                "the core is shutting down".into()
            },
        }),
    }
}

/// The platform's secure key store (Android Keystore, iOS Keychain), which holds the
/// database key: the database is unreadable without it.
#[uniffi::export(with_foreign)]
pub trait KeyStorage: Send + Sync {
    /// The key saved before (64 hex digits), or `None` on the first start.
    fn load_database_key(&self) -> Result<Option<String>>;
    /// Saves the key made on the first start.
    fn save_database_key(&self, key_hex: String) -> Result<()>;
}

/// The microphone: 20 ms of 48 kHz mono PCM (960 samples) per call, on a media thread,
/// paced by the core. `None` ends the source (silence follows).
#[uniffi::export(with_foreign)]
pub trait Microphone: Send + Sync {
    fn read_frame(&self) -> Result<Option<Vec<i16>>>;
}

/// The speaker: each decoded 20 ms frame of the peer's audio (48 kHz mono), in order.
#[uniffi::export(with_foreign)]
pub trait Speaker: Send + Sync {
    fn play_frame(&self, pcm: Vec<i16>) -> Result<()>;
}

/// The camera with the platform's VP8 encoder: the next encoded frame and how long it lasts.
#[uniffi::export(with_foreign)]
pub trait Camera: Send + Sync {
    fn next_frame(&self) -> Result<Option<VideoFrame>>;
}

/// Where the peer's video goes: each complete VP8 frame, for the platform's decoder.
#[uniffi::export(with_foreign)]
pub trait VideoRenderer: Send + Sync {
    fn render_frame(&self, vp8: Vec<u8>) -> Result<()>;
}

/// One encoded VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VideoFrame {
    pub data: Vec<u8>,
    pub duration_ms: u32,
}

/// The platform's devices for a call; what is missing sends silence (or no video) and
/// drops what arrives.
#[derive(Default, uniffi::Record)]
pub struct CallDevices {
    #[uniffi(default)]
    pub microphone: Option<Arc<dyn Microphone>>,
    #[uniffi(default)]
    pub speaker: Option<Arc<dyn Speaker>>,
    #[uniffi(default)]
    pub camera: Option<Arc<dyn Camera>>,
    #[uniffi(default)]
    pub renderer: Option<Arc<dyn VideoRenderer>>,
}

// The shims: the core pulls and pushes media through its own traits; a failing device
// ends its stream rather than the call.
struct MicShim(Arc<dyn Microphone>);
impl linnet_client::calls::AudioSource for MicShim {
    fn next_frame(&mut self) -> Option<Vec<i16>> {
        self.0.read_frame().ok().flatten()
    }
}
struct SpeakerShim(Arc<dyn Speaker>);
impl linnet_client::calls::AudioSink for SpeakerShim {
    fn frame(&mut self, pcm: &[i16]) {
        let _ = self.0.play_frame(pcm.to_vec());
    }
}
struct CameraShim(Arc<dyn Camera>);
impl linnet_client::calls::VideoSource for CameraShim {
    fn next_frame(&mut self) -> Option<(Vec<u8>, std::time::Duration)> {
        let f = self.0.next_frame().ok().flatten()?;
        Some((
            f.data,
            std::time::Duration::from_millis(u64::from(f.duration_ms)),
        ))
    }
}
struct RendererShim(Arc<dyn VideoRenderer>);
impl linnet_client::calls::VideoSink for RendererShim {
    fn frame(&mut self, vp8: &[u8]) {
        let _ = self.0.render_frame(vp8.to_vec());
    }
}

impl From<CallDevices> for linnet_client::calls::CallMedia {
    fn from(d: CallDevices) -> Self {
        linnet_client::calls::CallMedia {
            audio_source: d.microphone.map(|m| Box::new(MicShim(m)) as _),
            audio_sink: d.speaker.map(|s| Box::new(SpeakerShim(s)) as _),
            video_source: d.camera.map(|c| Box::new(CameraShim(c)) as _),
            video_sink: d.renderer.map(|r| Box::new(RendererShim(r)) as _),
        }
    }
}

/// Receives chat-list snapshots: the current one at once, then each newer one. Called on a
/// core thread; keep it short (hand the snapshot to the UI thread).
#[uniffi::export(with_foreign)]
pub trait ChatListObserver: Send + Sync {
    fn on_update(&self, snapshot: ChatList);
}

/// Receives one conversation's snapshots, as [`ChatListObserver`] does the chat list's.
#[uniffi::export(with_foreign)]
pub trait ConversationObserver: Send + Sync {
    fn on_update(&self, snapshot: Conversation);
}

/// Keeps a subscription alive. Cancelling it (or destroying the object) stops the updates.
#[derive(uniffi::Object)]
pub struct SubscriptionHandle {
    inner: Mutex<Option<linnet_client::Subscription>>,
}

#[uniffi::export]
impl SubscriptionHandle {
    /// Stops the updates; an update already being delivered may still arrive.
    pub fn cancel(&self) {
        let taken = self.inner.lock().map(|mut s| s.take());
        // Dropped here, on the caller's thread, after the lock is released.
        drop(taken);
    }
}

impl SubscriptionHandle {
    fn new(s: linnet_client::Subscription) -> Arc<Self> {
        Arc::new(SubscriptionHandle {
            inner: Mutex::new(Some(s)),
        })
    }
}

/// Options for [`LinnetClient::open`].
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct ClientConfig {
    /// PEM certificates of a CA trusted besides the platform's (a self-hosted server's).
    pub extra_ca_pem: Option<String>,
    /// Trust only `extra_ca_pem` (tests against a local server).
    pub only_extra_ca: bool,
    /// Calls only through the server's TURN relay: the other party never learns our IP
    /// address.
    #[uniffi(default = false)]
    pub relay_calls: bool,
}

/// An account, by id and address.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AccountRef {
    pub id: i64,
    pub jid: String,
}

/// The Linnet client: one per process, on one data directory.
#[derive(uniffi::Object)]
pub struct LinnetClient {
    client: Client,
}

#[uniffi::export]
impl LinnetClient {
    /// Opens (or creates) the encrypted database in `data_dir`, with the key from
    /// `keys` (made and saved there on the first start).
    #[uniffi::constructor]
    pub fn open(
        data_dir: String,
        keys: Arc<dyn KeyStorage>,
        config: ClientConfig,
    ) -> Result<Arc<Self>> {
        let saved = keys.load_database_key()?;
        let key = DbKey::saved_or_new(saved.as_deref(), |hex| {
            keys.save_database_key(hex.to_owned())
        })?;
        let mut options = ClientOptions::default();
        options.tls.extra_ca_pem = config.extra_ca_pem.map(String::into_bytes);
        options.tls.only_extra_ca = config.only_extra_ca;
        options.relay_calls = config.relay_calls;
        let _core = runtime()?.enter();
        let client = Client::open(Path::new(&data_dir), &key, options)?;
        Ok(Arc::new(LinnetClient { client }))
    }

    /// Creates an account on its server by in-band registration (XEP-0077) and keeps it;
    /// no phone number, no e-mail. `server`: where to connect when DNS should not decide.
    pub async fn register_account(
        &self,
        jid: String,
        password: String,
        server: Option<Server>,
    ) -> Result<i64> {
        let client = self.client.clone();
        on_core(async move {
            client
                .register_account(&jid, &password, server.map(Into::into))
                .await
        })
        .await
        .map(|a| a.0)
    }

    /// Keeps an existing account (log in with [`Self::login`]).
    pub fn add_account(
        &self,
        jid: String,
        password: String,
        server: Option<Server>,
    ) -> Result<i64> {
        Ok(self
            .client
            .add_account(&jid, &password, server.map(Into::into))?
            .0)
    }

    pub fn accounts(&self) -> Result<Vec<AccountRef>> {
        Ok(self
            .client
            .accounts()?
            .into_iter()
            .map(|(id, jid)| AccountRef { id: id.0, jid })
            .collect())
    }

    /// Logs in and stays online (reconnecting on its own) until [`Self::logout`].
    pub async fn login(&self, account: i64) -> Result<()> {
        let client = self.client.clone();
        on_core(async move { client.login(AccountId(account)).await }).await
    }

    pub async fn logout(&self, account: i64) -> Result<()> {
        let client = self.client.clone();
        on_core(async move { client.logout(AccountId(account)).await }).await
    }

    /// The app came to the foreground (true) or left it.
    pub fn set_foreground(&self, foreground: bool) -> Result<()> {
        let _core = runtime()?.enter();
        self.client.set_foreground(foreground);
        Ok(())
    }

    /// The platform says the network came (true) or went.
    pub fn network_changed(&self, online: bool) -> Result<()> {
        let _core = runtime()?.enter();
        self.client.network_changed(online);
        Ok(())
    }

    /// Sends a message (queued while offline, never lost); returns its id.
    pub fn send_message(&self, account: i64, to: String, body: String) -> Result<i64> {
        let _core = runtime()?.enter();
        Ok(self.client.send_message(AccountId(account), &to, &body)?.0)
    }

    /// The conversation with `peer`, created if needed.
    pub fn open_conversation(&self, account: i64, peer: String) -> Result<i64> {
        Ok(self.client.open_conversation(AccountId(account), &peer)?.0)
    }

    pub fn mark_read(&self, conversation: i64) -> Result<()> {
        let _core = runtime()?.enter();
        Ok(self.client.mark_read(ConversationId(conversation))?)
    }

    pub fn set_typing(&self, conversation: i64, typing: bool) -> Result<()> {
        let _core = runtime()?.enter();
        Ok(self
            .client
            .set_typing(ConversationId(conversation), typing)?)
    }

    /// Asks for older history of an open conversation; it arrives in its snapshots.
    pub fn load_older(&self, conversation: i64) -> Result<()> {
        let _core = runtime()?.enter();
        Ok(self.client.load_older(ConversationId(conversation))?)
    }

    /// Asks to see `jid`'s presence and adds them to the contacts.
    pub async fn add_contact(&self, account: i64, jid: String, name: Option<String>) -> Result<()> {
        let client = self.client.clone();
        on_core(async move {
            client
                .add_contact(AccountId(account), &jid, name.as_deref())
                .await
        })
        .await
    }

    pub async fn approve_contact(&self, account: i64, jid: String) -> Result<()> {
        let client = self.client.clone();
        on_core(async move { client.approve_contact(AccountId(account), &jid).await }).await
    }

    pub async fn deny_contact(&self, account: i64, jid: String) -> Result<()> {
        let client = self.client.clone();
        on_core(async move { client.deny_contact(AccountId(account), &jid).await }).await
    }

    pub fn contacts(&self, account: i64) -> Result<Vec<Contact>> {
        Ok(self
            .client
            .contacts(AccountId(account))?
            .into_iter()
            .map(Contact::from)
            .collect())
    }

    /// Our own device's OMEMO fingerprint (64 hex digits).
    pub fn own_fingerprint(&self, account: i64) -> Result<String> {
        Ok(self.client.own_omemo_fingerprint(AccountId(account))?)
    }

    /// The `xmpp:` URI with our fingerprints that a contact scans to verify us.
    pub fn own_verification_uri(&self, account: i64) -> Result<String> {
        Ok(self.client.own_verification_uri(AccountId(account))?)
    }

    /// Verifies the devices a scanned or pasted `xmpp:` URI names; returns how many.
    pub fn verify_by_uri(&self, account: i64, uri: String) -> Result<u32> {
        let v = self.client.verify_by_uri(AccountId(account), &uri)?;
        Ok(u32::try_from(v.verified.len() + v.pre_verified.len()).unwrap_or(u32::MAX))
    }

    /// `jid`'s OMEMO devices (ours with our own JID), with fingerprints and trust.
    pub fn omemo_devices(&self, account: i64, jid: String) -> Result<Vec<Device>> {
        Ok(self
            .client
            .omemo_devices(AccountId(account), &jid)?
            .iter()
            .map(Device::from)
            .collect())
    }

    /// The chat list as it is now.
    pub fn chat_list(&self) -> ChatList {
        ChatList::from(&*self.client.chat_list())
    }

    pub fn subscribe_chat_list(
        &self,
        observer: Arc<dyn ChatListObserver>,
    ) -> Result<Arc<SubscriptionHandle>> {
        let _core = runtime()?.enter();
        let s = self
            .client
            .subscribe_chat_list(move |s: Arc<linnet_client::ChatListSnapshot>| {
                observer.on_update(ChatList::from(&*s))
            });
        Ok(SubscriptionHandle::new(s))
    }

    pub fn subscribe_conversation(
        &self,
        conversation: i64,
        observer: Arc<dyn ConversationObserver>,
    ) -> Result<Arc<SubscriptionHandle>> {
        let _core = runtime()?.enter();
        let s = self
            .client
            .subscribe_conversation(ConversationId(conversation), Observer(observer))?;
        Ok(SubscriptionHandle::new(s))
    }

    /// Messages of a conversation, newest `limit` before `before` (a message id), oldest
    /// first.
    pub fn messages(
        &self,
        conversation: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        Ok(self
            .client
            .messages(ConversationId(conversation), before.map(MessageId), limit)?
            .iter()
            .map(Message::from)
            .collect())
    }

    /// Logs every account out; the client stays usable.
    /// Calls `peer` (every device of theirs rings); the call's progress is in the chat
    /// list's `calls`. Returns the call's id.
    pub async fn start_call(
        &self,
        account: i64,
        peer: String,
        video: bool,
        devices: CallDevices,
    ) -> Result<u64> {
        let client = self.client.clone();
        let media = devices.into();
        on_core(async move {
            client
                .start_call(
                    AccountId(account),
                    &peer,
                    linnet_client::calls::CallOptions { video },
                    media,
                )
                .await
        })
        .await
        .map(|id| id.0)
    }

    /// Takes an incoming call here; the user's other devices stop ringing.
    pub fn accept_call(&self, call: u64, devices: CallDevices) -> Result<()> {
        Ok(self
            .client
            .accept_call(linnet_client::calls::CallId(call), devices.into())?)
    }

    /// Declines an incoming call on every device of the user's.
    pub fn reject_call(&self, call: u64) -> Result<()> {
        Ok(self
            .client
            .reject_call(linnet_client::calls::CallId(call))?)
    }

    /// Hangs up, or cancels a call still ringing.
    pub fn end_call(&self, call: u64) -> Result<()> {
        Ok(self.client.end_call(linnet_client::calls::CallId(call))?)
    }

    /// `audio`: the microphone, else the camera.
    pub fn set_call_muted(&self, call: u64, audio: bool, muted: bool) -> Result<()> {
        Ok(self
            .client
            .set_call_muted(linnet_client::calls::CallId(call), audio, muted)?)
    }

    /// Turns an audio call into a video call (the camera and renderer in `devices`).
    pub fn add_call_video(&self, call: u64, devices: CallDevices) -> Result<()> {
        Ok(self
            .client
            .add_call_video(linnet_client::calls::CallId(call), devices.into())?)
    }

    pub async fn shutdown(&self) -> Result<()> {
        let client = self.client.clone();
        on_core(async move {
            client.shutdown().await;
            Ok(())
        })
        .await
    }
}

struct Observer(Arc<dyn ConversationObserver>);

impl linnet_client::ConversationListener for Observer {
    fn on_update(&self, snapshot: Arc<linnet_client::ConversationSnapshot>) {
        self.0.on_update(Conversation::from(&*snapshot))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn errors_keep_their_kind() {
        let e: LinnetError = ClientError::Auth("no".into()).into();
        assert!(matches!(e, LinnetError::Auth { detail } if detail == "no"));
        let e: LinnetError = ClientError::WrongKey.into();
        assert!(matches!(e, LinnetError::WrongKey));
        let e: LinnetError = linnet_store::StoreError::NotFound("conversation").into();
        assert!(matches!(e, LinnetError::NotFound { .. }));
    }

    #[test]
    fn a_panic_in_the_core_is_an_error_not_a_crash() {
        let r: Result<()> = block_on(on_core(async { panic!("core bug") }));
        assert!(
            matches!(&r, Err(LinnetError::Internal { detail }) if !detail.contains("core bug")),
            "{r:?}"
        );
        // The runtime survives it.
        assert_eq!(block_on(on_core(async { Ok(7) })).unwrap(), 7);
    }

    struct Keys(Mutex<Option<String>>);

    impl KeyStorage for Keys {
        fn load_database_key(&self) -> Result<Option<String>> {
            Ok(self.0.lock().unwrap().clone())
        }

        fn save_database_key(&self, key_hex: String) -> Result<()> {
            *self.0.lock().unwrap() = Some(key_hex);
            Ok(())
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(Keys(Mutex::new(None)));
        let c = LinnetClient::open(
            dir.path().to_str().unwrap().into(),
            keys.clone(),
            ClientConfig::default(),
        )
        .unwrap();
        assert_eq!(keys.0.lock().unwrap().as_ref().map(String::len), Some(64));
        assert!(matches!(
            c.add_account("no jid@@".into(), "pass word".into(), None),
            Err(LinnetError::BadInput { .. })
        ));
        assert!(matches!(
            c.send_message(99, "a@b.c".into(), "hi".into()),
            Err(LinnetError::NotFound { .. }) | Err(LinnetError::BadInput { .. })
        ));
        assert!(matches!(
            c.mark_read(12345),
            Err(LinnetError::NotFound { .. })
        ));
        assert!(matches!(
            c.subscribe_conversation(12345, Arc::new(Ignore)),
            Err(LinnetError::NotFound { .. })
        ));
        // A key that is not one.
        let bad = Arc::new(Keys(Mutex::new(Some("zz".into()))));
        assert!(matches!(
            LinnetClient::open(
                dir.path().to_str().unwrap().into(),
                bad,
                ClientConfig::default()
            ),
            Err(LinnetError::BadInput { .. }) | Err(LinnetError::WrongKey)
        ));
    }

    struct Ignore;

    impl ConversationObserver for Ignore {
        fn on_update(&self, _: Conversation) {}
    }
}
