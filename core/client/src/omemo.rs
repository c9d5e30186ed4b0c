//! OMEMO in the client. Each account has one device id (XEP-0384 §5.3: random in
//! 1..2^31-1, kept for good) with keys for both OMEMO versions, and after every fresh login
//! the device is in our device lists and its bundles are published, readable by anyone (a
//! peer who is not a contact yet must be able to start a session). Messages are encrypted
//! for the devices the trust policy allows (see `trust`): a device's identity is first
//! recorded here, when a session is built from its bundle (`ensure_session`) or by its key
//! exchange (`open_message`), and the policy decides its trust in the same transaction.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linnet_omemo::sce::Envelope;
use linnet_omemo::{Bundle, DeviceAddress, EncryptedMessage, MessageKey, SessionManager, Version};
use linnet_store::{
    AccountId, DeliveryState, Encryption, EncryptionPolicy, MessageId, OmemoStore, OutboxEntry,
    Store, StoreError, Tx,
};
use linnet_xmpp::omemo::{BundleItem, DeviceListItem, KeyEntry, OmemoVersion, DEVICE_LIST_ITEM_ID};
use linnet_xmpp::{BareJid, ChatMessage, NodeConfig, RequestError, Session};
use rand::Rng;
use tokio::sync::Notify;
use zeroize::Zeroizing;

use crate::trust::{curve_form, hex, on_first_sight, usable};
use crate::{lock, DeviceTrust, Inner, MessageItem, OmemoDeviceInfo};

mod group;

pub(crate) use group::{group_sender, KIND_GROUP_TO_ENCRYPT};

const KV_DEVICE_ID: &str = "omemo.device_id";

const VERSIONS: [(Version, OmemoVersion); 2] = [
    (Version::Omemo03, OmemoVersion::V03),
    (Version::Omemo2, OmemoVersion::V2),
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("store: {0}")]
    Store(#[from] linnet_store::StoreError),
    #[error("OMEMO: {0}")]
    Omemo(#[from] linnet_omemo::Error),
    #[error("server: {0}")]
    Request(#[from] RequestError),
    #[error("our own OMEMO element: {0}")]
    Xml(#[from] linnet_xmpp::omemo::OmemoXmlError),
}

/// Our device id for `account`, chosen the first time it is asked for.
pub(crate) fn own_device_id(inner: &Inner, account: AccountId) -> Result<u32, PublishError> {
    let store = inner.store();
    if let Some(id) = store
        .kv_get(Some(account), KV_DEVICE_ID)?
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|id| (1..=linnet_xmpp::omemo::MAX_DEVICE_ID).contains(id))
    {
        return Ok(id);
    }
    let id = rand::thread_rng().gen_range(1..=linnet_xmpp::omemo::MAX_DEVICE_ID);
    store.kv_set(Some(account), KV_DEVICE_ID, &id.to_string())?;
    Ok(id)
}

/// Our bundles, keys made on first use (one transaction: all of them or none).
fn own_bundles(
    inner: &Inner,
    account: AccountId,
    own_jid: &str,
    device_id: u32,
) -> Result<Vec<Bundle>, PublishError> {
    let bundles = inner
        .store()
        .omemo_transaction(account, |s: OmemoStore<'_>| {
            let m = SessionManager::new(s, own_jid, device_id)?;
            VERSIONS.iter().map(|(v, _)| m.bundle(*v)).collect()
        })?;
    Ok(bundles)
}

fn bundle_item(b: Bundle) -> BundleItem {
    BundleItem {
        spk_id: b.signed_prekey_id,
        spk: b.signed_prekey,
        spks: b.signed_prekey_signature,
        ik: b.identity_key,
        prekeys: b.prekeys,
    }
}

fn open(max_items: Option<&str>) -> NodeConfig {
    NodeConfig {
        access_model: Some("open".into()),
        max_items: max_items.map(str::to_owned),
        ..NodeConfig::default()
    }
}

/// Whether both our device lists, as last seen, hold this device.
pub(crate) fn own_device_listed(inner: &Inner, account: AccountId, own: &BareJid) -> bool {
    let store = inner.store();
    let Ok(Some(id)) = store
        .kv_get(Some(account), KV_DEVICE_ID)
        .map(|v| v.and_then(|v| v.parse::<u32>().ok()))
    else {
        return false;
    };
    VERSIONS.iter().all(|(v, _)| {
        store
            .omemo_device_list(account, own.as_str(), *v)
            .ok()
            .flatten()
            .is_some_and(|l| l.iter().any(|d| d.device_id == id && d.active))
    })
}

/// Puts our device into our device list of each version (keeping the devices there) and
/// publishes its bundles. Runs beside the session after a fresh login; a failure is
/// logged and tried again at the next one.
pub(crate) async fn publish_own_device(inner: Arc<Inner>, account: AccountId, session: Session) {
    // One publication at a time: two (after a login, and after a key exchange used a
    // prekey) would read the list both before either wrote it, and one device could go.
    let _one = inner.omemo_publishing.lock().await;
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=PUBLISH_ATTEMPTS {
        match publish(&inner, account, &session).await {
            Ok(()) => return,
            // A server error can be a passing one (ejabberd answered item-not-found while
            // another session of the account created the node); the session's end is not.
            Err(PublishError::Request(e))
                if attempt < PUBLISH_ATTEMPTS && !matches!(e, RequestError::Closed) =>
            {
                tracing::info!(account = account.0, error = %e, "OMEMO publication failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::info!(account = account.0, error = %e, "OMEMO device not published");
                return;
            }
        }
    }
}

const PUBLISH_ATTEMPTS: u32 = 3;

async fn publish(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
) -> Result<(), PublishError> {
    let own = session.own_jid().as_str().to_owned();
    let keys = {
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || {
            let id = own_device_id(&inner, account)?;
            Ok::<_, PublishError>((id, own_bundles(&inner, account, &own, id)?))
        })
        .await
        .map_err(|_| RequestError::Closed)??
    };
    let (device_id, bundles) = keys;
    for ((_, xv), bundle) in VERSIONS.iter().zip(bundles) {
        // The bundle first: a peer who sees the device in the list fetches it next.
        let item = bundle_item(bundle).to_xml(*xv)?;
        // OMEMO 2 keeps every device's bundle as an item of one node (max_items=max); 0.3
        // has a node per device.
        let max = (*xv == OmemoVersion::V2).then_some("max");
        session
            .pep_publish(
                &xv.bundle_node(device_id),
                Some(&xv.bundle_item_id(device_id)),
                &item,
                &open(max),
            )
            .await?;
        let node = xv.devices_node();
        let mut list = match session.pep_items(None, node, Some(DEVICE_LIST_ITEM_ID)).await {
            Ok(items) => match items.first() {
                Some(item) => DeviceListItem::from_xml(*xv, &item.payload).unwrap_or_else(|e| {
                    // A list nobody can read helps nobody: ours replaces it.
                    tracing::warn!(account = account.0, error = %e, "our device list was malformed");
                    DeviceListItem::default()
                }),
                None => DeviceListItem::default(),
            },
            Err(RequestError::Stanza { condition, .. }) if condition == "item-not-found" => {
                DeviceListItem::default()
            }
            Err(e) => return Err(e.into()),
        };
        if !crate::devices::own_list(inner, account, session.own_jid(), *xv, device_id, &mut list)?
        {
            continue;
        }
        session
            .pep_publish(
                node,
                Some(DEVICE_LIST_ITEM_ID),
                &list.to_xml(*xv)?,
                &open(None),
            )
            .await?;
        tracing::debug!(account = account.0, ?xv, "OMEMO device published");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Receiving

/// What a received OMEMO message comes to.
pub(crate) enum Opened {
    /// Decrypted text to show, and the device it came from (to record with the message,
    /// see `record_sender`).
    Body(String, Encryption, SenderDevice),
    /// Nothing to show: an empty message (key transport, heartbeat, session completion), or
    /// a replay of one already decrypted.
    Nothing,
    /// Could not be decrypted: shown as such, with the reason (never dropped).
    Failed(String, Encryption),
}

/// The device a decrypted message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SenderDevice {
    pub jid: BareJid,
    pub device_id: u32,
    pub version: Version,
}

/// Records with a stored message (or, for a correction, the message it corrects) the
/// device its text came from, so that it shows with that device's trust.
pub(crate) fn record_sender(
    tx: &Tx<'_>,
    message: MessageId,
    sender: &SenderDevice,
) -> Result<(), StoreError> {
    tx.set_omemo_sender(
        message,
        sender.jid.as_str(),
        sender.version,
        sender.device_id,
    )
}

/// Sets `trust` on the items decrypted from OMEMO, from the devices they came from.
pub(crate) fn mark_trust(store: &Store, items: &mut [MessageItem]) -> Result<(), StoreError> {
    let ids: Vec<MessageId> = items.iter().map(|m| m.id).collect();
    let found: std::collections::HashMap<MessageId, Option<linnet_omemo::Trust>> =
        store.omemo_sender_trust(&ids)?.into_iter().collect();
    for m in items {
        if let Some(t) = found.get(&m.id) {
            // A device whose identity is not recorded is trusted by no one.
            m.trust = Some(t.map_or(DeviceTrust::Undecided, DeviceTrust::from));
        }
    }
    Ok(())
}

/// A device to send an empty message to once the batch is committed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Answer {
    pub jid: BareJid,
    pub device_id: u32,
    pub version: Version,
    /// Build a new session from the device's bundle first (its session is missing or
    /// broken), as XEP-0384 asks of a receiver that cannot decrypt.
    pub rebuild: bool,
}

/// What decrypting a batch leaves to do once it is committed.
#[derive(Default)]
pub(crate) struct OmemoEffects {
    /// A key exchange used one of our prekeys: publish the bundles again.
    pub republish: bool,
    /// New contacts whose device lists to fetch.
    pub fetch_lists: Vec<BareJid>,
    pub answers: Vec<Answer>,
}

fn encryption_of(version: Version) -> Encryption {
    match version {
        Version::Omemo03 => Encryption::Omemo03,
        Version::Omemo2 => Encryption::Omemo2,
    }
}

fn crypto_version(v: OmemoVersion) -> Version {
    match v {
        OmemoVersion::V03 => Version::Omemo03,
        OmemoVersion::V2 => Version::Omemo2,
    }
}

fn xml_version(v: Version) -> OmemoVersion {
    match v {
        Version::Omemo03 => OmemoVersion::V03,
        Version::Omemo2 => OmemoVersion::V2,
    }
}

/// Our device id as the batch's transaction sees it (`None`: no device yet, so nothing can
/// have been encrypted for us).
fn device_id_in(tx: &Tx<'_>, account: AccountId) -> Result<Option<u32>, StoreError> {
    Ok(tx
        .kv_get(Some(account), KV_DEVICE_ID)?
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|id| (1..=linnet_xmpp::omemo::MAX_DEVICE_ID).contains(id)))
}

/// Decrypts a received message inside the batch's transaction, so that the ratchet moves
/// forward together with the stored message or not at all. Call only for messages not
/// already held (a copy we hold would decrypt as a replay).
pub(crate) fn open_message(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    m: &ChatMessage,
    fx: &mut OmemoEffects,
) -> Result<Opened, StoreError> {
    let sender = if m.outgoing { own } else { &m.peer };
    open_encrypted(tx, account, own, sender, &m.encrypted, None, fx)
}

/// The `<encrypted>` elements of one received message, as parsed.
pub(crate) type EncryptedElements =
    [Result<linnet_xmpp::omemo::Encrypted, linnet_xmpp::omemo::OmemoXmlError>];

/// Decrypts what `sender` (a real bare JID) sent, as [`open_message`] does; `room`: the
/// group it came through, which an OMEMO 2 envelope naming a recipient must name
/// (XEP-0384 §6.5's `<to/>` affix keeps a server from turning a group message into a
/// private one, or back).
pub(crate) fn open_encrypted(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    sender: &BareJid,
    encrypted: &EncryptedElements,
    room: Option<&BareJid>,
    fx: &mut OmemoEffects,
) -> Result<Opened, StoreError> {
    let device_id = device_id_in(tx, account)?;
    let mine = device_id.and_then(|id| {
        let ours = |e: &&linnet_xmpp::omemo::Encrypted| e.key_for(own, id).is_some();
        let parsed = encrypted.iter().filter_map(|r| r.as_ref().ok());
        // OMEMO 2 first when a sender reached us by both.
        parsed
            .clone()
            .filter(|e| e.version == OmemoVersion::V2)
            .find(ours)
            .or_else(|| parsed.clone().find(ours))
            .map(|e| (id, e))
    });
    let Some((device_id, enc)) = mine else {
        let first = encrypted.first();
        let version = first
            .and_then(|r| r.as_ref().ok())
            .map_or(Version::Omemo03, |e| crypto_version(e.version));
        // Empty messages for other devices (our own heartbeats as sent carbons, say) are
        // not messages.
        // A malformed element is reported even beside empty ones: it may have been a message.
        if encrypted
            .iter()
            .all(|r| r.as_ref().is_ok_and(|e| e.payload.is_none()))
        {
            return Ok(Opened::Nothing);
        }
        // The malformed element is the reason unless a well-formed one carried content.
        let content = encrypted.iter().flatten().any(|e| e.payload.is_some());
        let reason = match encrypted.iter().find_map(|r| r.as_ref().err()) {
            Some(e) if !content => format!("malformed OMEMO element: {e}"),
            _ => "not encrypted for this device".to_owned(),
        };
        return Ok(Opened::Failed(reason, encryption_of(version)));
    };
    let version = crypto_version(enc.version);
    let message = EncryptedMessage {
        sender_device_id: enc.sid,
        keys: enc
            .keys
            .iter()
            .filter(|k| k.rid == device_id)
            .map(|k| MessageKey {
                recipient: DeviceAddress::new(
                    k.jid.as_ref().map_or(own.as_str(), |j| j.as_str()),
                    k.rid,
                ),
                key_exchange: k.kex,
                data: k.data.clone(),
            })
            .collect(),
        iv: enc.iv.clone(),
        payload: enc.payload.clone(),
    };
    let address = DeviceAddress::new(sender.as_str(), enc.sid);
    // Whether this message is the first we hear of the device's identity: the policy then
    // decides how far it is trusted.
    let first_sight = linnet_omemo::store::IdentityStore::identity(
        &OmemoStore::new(tx, account),
        version,
        &address,
    )
    .map(|r| r.is_none());
    let result = first_sight.and_then(|first| {
        SessionManager::new(OmemoStore::new(tx, account), own.as_str(), device_id)
            .and_then(|mut m| m.decrypt(version, sender.as_str(), &message))
            .map(|d| (first, d))
    });
    let answer = |rebuild| Answer {
        jid: sender.clone(),
        device_id: enc.sid,
        version,
        rebuild,
    };
    match result {
        Ok((first, d)) => {
            crate::devices::heard(tx, account, sender, enc.sid)?;
            if first {
                on_first_sight(
                    tx,
                    account,
                    sender.as_str(),
                    enc.sid,
                    version,
                    &d.identity.key,
                );
            }
            fx.republish |= d.bundle_changed;
            // A device we did not know of: its list changed without a notification reaching
            // us (ejabberd sends none to contacts for a device list published right after a
            // login), so our next messages would leave it out.
            let known = tx
                .omemo_device_list(account, sender.as_str(), version)?
                .is_some_and(|l| l.iter().any(|d| d.device_id == enc.sid && d.active));
            if !known && !fx.fetch_lists.contains(sender) {
                fx.fetch_lists.push(sender.clone());
            }
            if d.new_session || d.heartbeat_due {
                fx.answers.push(answer(false));
            }
            let Some(payload) = d.payload else {
                return Ok(Opened::Nothing);
            };
            let body = match version {
                Version::Omemo03 => String::from_utf8(payload.to_vec()).ok(),
                Version::Omemo2 => match Envelope::from_bytes(&payload) {
                    // XEP-0420: an envelope naming another sender was replayed from
                    // elsewhere.
                    Ok(env)
                        if env
                            .from
                            .as_deref()
                            .is_some_and(|f| BareJid::parse(f).map_or(true, |f| &f != sender)) =>
                    {
                        return Ok(Opened::Failed(
                            "the envelope names another sender".into(),
                            Encryption::Omemo2,
                        ))
                    }
                    Ok(env)
                        if room.is_some_and(|r| {
                            env.to
                                .as_deref()
                                .is_some_and(|t| BareJid::parse(t).map_or(true, |t| &t != r))
                        }) =>
                    {
                        return Ok(Opened::Failed(
                            "the envelope names another recipient".into(),
                            Encryption::Omemo2,
                        ))
                    }
                    Ok(env) => env.body(),
                    Err(e) => {
                        return Ok(Opened::Failed(e.to_string(), Encryption::Omemo2));
                    }
                },
            };
            let from = SenderDevice {
                jid: sender.clone(),
                device_id: enc.sid,
                version,
            };
            match body {
                Some(b) if !b.trim().is_empty() => {
                    Ok(Opened::Body(b, encryption_of(version), from))
                }
                Some(_) => Ok(Opened::Nothing),
                None => Ok(Opened::Failed(
                    "the decrypted content is not text".into(),
                    encryption_of(version),
                )),
            }
        }
        Err(linnet_omemo::Error::DuplicateMessage) => Ok(Opened::Nothing),
        Err(linnet_omemo::Error::Store(e)) => {
            tracing::error!(account = account.0, error = %e, "OMEMO store failed");
            Err(StoreError::InvalidInput("OMEMO store failure"))
        }
        Err(e) => {
            use linnet_omemo::Error as E;
            // XEP-0384: a message from a device we have no session with (or whose key
            // exchange names keys we no longer have) calls for a new session. A MAC failure
            // does not: one garbled or forged message must not replace a working session.
            if matches!(
                e,
                E::NoSession(_) | E::UnknownPreKey(_) | E::UnknownSignedPreKey(_)
            ) {
                fx.answers.push(answer(true));
            }
            tracing::info!(account = account.0, error = %e, "OMEMO message not decrypted");
            if enc.payload.is_none() {
                return Ok(Opened::Nothing);
            }
            Ok(Opened::Failed(e.to_string(), encryption_of(version)))
        }
    }
}

/// Starts what decrypting left to do once its transaction is committed.
pub(crate) fn after_open(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    fx: OmemoEffects,
) {
    if fx.republish {
        tokio::spawn(publish_own_device(inner.clone(), account, session.clone()));
    }
    if !fx.fetch_lists.is_empty() {
        tokio::spawn(refresh_device_lists(
            inner.clone(),
            account,
            session.clone(),
            fx.fetch_lists,
        ));
    }
    if !fx.answers.is_empty() {
        tokio::spawn(answer(inner.clone(), account, session.clone(), fx.answers));
    }
}

// ---------------------------------------------------------------------------------------------
// Calls: DTLS fingerprints sent through OMEMO (`linnet_xmpp::jingle::NS_DTLS_VERIFY`)

/// Our OMEMO device for calls to name in `proceed`: only one that is published (a device
/// nobody can build a session with would make the caller fetch a bundle for nothing).
pub(crate) fn call_device(inner: &Inner, account: AccountId, own: &BareJid) -> Option<u32> {
    if !own_device_listed(inner, account, own) {
        return None;
    }
    inner
        .store()
        .kv_get(Some(account), KV_DEVICE_ID)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u32>().ok())
}

/// Whether the user distrusted this device of `peer` (as its OMEMO 0.3 identity, which
/// calls use; trust decisions apply to both versions).
pub(crate) fn call_device_distrusted(
    inner: &Inner,
    account: AccountId,
    peer: &BareJid,
    device: u32,
) -> bool {
    let target = Target {
        jid: peer.clone(),
        device_id: device,
        version: Version::Omemo03,
    };
    distrusted(inner, account, &target).unwrap_or(false)
}

/// An OMEMO 0.3 message carrying `text` (a DTLS fingerprint) for one device of `peer`:
/// the one the call is with. Builds the session from the device's bundle if there is none.
/// `Err`: no message can be made for that device (distrusted, no bundle, no identity);
/// the fingerprint then goes in the clear and the call is not verified.
pub(crate) async fn seal_for_device(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    peer: &BareJid,
    device: u32,
    text: &str,
) -> Result<linnet_xmpp::omemo::Encrypted, String> {
    let own = session.own_jid().clone();
    let device_id = call_device(inner, account, &own).ok_or("we have no published OMEMO device")?;
    let target = Target {
        jid: peer.clone(),
        device_id: device,
        version: Version::Omemo03,
    };
    // The reasons stay generic: they are logged, and what a server said may name people.
    if distrusted(inner, account, &target).map_err(|_| "the OMEMO store failed")? {
        return Err("the device is distrusted".into());
    }
    ensure_session(inner, account, session, &own, device_id, &target, false)
        .await
        .map_err(|_| "no session could be built with the device")?;
    let payload = Zeroizing::new(text.as_bytes().to_vec());
    let address = DeviceAddress::new(peer.as_str(), device);
    let mut failure = None;
    let built = inner.store().transaction(|tx| {
        let sealed = SessionManager::new(OmemoStore::new(tx, account), own.as_str(), device_id)
            .and_then(|mut m| m.encrypt(Version::Omemo03, Some(&payload), &[address]));
        match sealed {
            Ok(out) if !out.message.keys.is_empty() => {
                crate::devices::encrypted_for(tx, account, Version::Omemo03, &out.message.keys)?;
                Ok(Some(out.message))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                failure = Some(e.to_string());
                Err(StoreError::InvalidInput("OMEMO encryption failed"))
            }
        }
    });
    match (built, failure) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e.to_string()),
        (Ok(None), None) => Err("no session with the device".into()),
        (Ok(Some(message)), None) => {
            to_element(Version::Omemo03, &message).map_err(|e| e.to_string())
        }
    }
}

/// A fingerprint that came through OMEMO, decrypted, and the device that sent it.
pub(crate) struct OpenedFingerprint {
    pub text: String,
    pub device_id: u32,
    pub trust: DeviceTrust,
}

/// Decrypts a fingerprint `sender` sent encrypted, as a message from it would be (the
/// ratchet moves on; a replay fails). `Err`: why it cannot be believed.
pub(crate) fn open_sealed(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    sender: &BareJid,
    encrypted: &linnet_xmpp::omemo::Encrypted,
) -> Result<OpenedFingerprint, String> {
    use linnet_omemo::store::IdentityStore as _;
    let own = session.own_jid().clone();
    let mut fx = OmemoEffects::default();
    let opened = inner.store().transaction(|tx| {
        let opened = open_encrypted(
            tx,
            account,
            &own,
            sender,
            &[Ok(encrypted.clone())],
            None,
            &mut fx,
        )?;
        Ok(match opened {
            Opened::Body(text, _, from) => {
                let trust = OmemoStore::new(tx, account)
                    .identity(
                        from.version,
                        &DeviceAddress::new(sender.as_str(), from.device_id),
                    )
                    .ok()
                    .flatten()
                    .map_or(DeviceTrust::Undecided, |r| r.trust.into());
                Ok(OpenedFingerprint {
                    text,
                    device_id: from.device_id,
                    trust,
                })
            }
            Opened::Nothing => Err("an empty or replayed OMEMO message".to_owned()),
            Opened::Failed(why, _) => Err(why),
        })
    });
    after_open(inner, account, session, fx);
    opened.map_err(|e| e.to_string())?
}

/// Whether `peer` may have OMEMO devices: yes unless both its lists are known and hold no
/// active device.
pub(crate) fn may_have_devices(
    tx: &Tx<'_>,
    account: AccountId,
    peer: &BareJid,
) -> Result<bool, StoreError> {
    for (v, _) in VERSIONS {
        match tx.omemo_device_list(account, peer.as_str(), v)? {
            None => return Ok(true),
            Some(list) if list.iter().any(|d| d.active) => return Ok(true),
            Some(_) => {}
        }
    }
    Ok(false)
}

/// Records a device list from PEP (a notification or a fetch). Returns whether it is our
/// own list and lacks our device (another client of ours replaced it: publish again).
pub(crate) fn device_list_seen(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    jid: &BareJid,
    version: OmemoVersion,
    payload: Option<&str>,
) -> Result<bool, StoreError> {
    let list = match payload.map(|p| DeviceListItem::from_xml(version, p)) {
        Some(Ok(list)) => list,
        None => DeviceListItem::default(),
        Some(Err(e)) => {
            tracing::info!(account = account.0, error = %e, "device list ignored");
            return Ok(false);
        }
    };
    let ids: Vec<u32> = list.devices.iter().map(|d| d.id).collect();
    crate::devices::record_list(tx, account, jid, crypto_version(version), &list)?;
    if jid != own {
        return Ok(false);
    }
    Ok(match device_id_in(tx, account)? {
        Some(id) => !ids.contains(&id),
        None => false,
    })
}

// ---------------------------------------------------------------------------------------------
// Sending

/// Outbox entries of this kind hold a message still to be encrypted (payload empty); once
/// encrypted they become ordinary `chat` entries holding the stanza.
pub(crate) const KIND_TO_ENCRYPT: &str = "omemo";

/// How often the sender looks whether its session ended while it had nothing to do.
const IDLE_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
enum SendError {
    /// Try again with the next session (network, server).
    Later(String),
    /// Not yet: the group is not joined and read (see `group`). The sender goes on with
    /// other conversations and is woken when it is.
    NotYet,
    /// The message cannot go: it is marked failed, with this reason.
    Never(String),
}

impl From<StoreError> for SendError {
    fn from(e: StoreError) -> Self {
        SendError::Later(format!("store: {e}"))
    }
}

impl From<RequestError> for SendError {
    fn from(e: RequestError) -> Self {
        SendError::Later(format!("server: {e}"))
    }
}

/// A device a message goes to, by the version it speaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    jid: BareJid,
    device_id: u32,
    version: Version,
}

/// Encrypts and sends what the outbox holds for encryption, in order, for as long as
/// `session` lives. Started for every session once its outbox was re-sent, and woken by
/// `wake` when a message is queued.
pub(crate) async fn send_queued(
    inner: Arc<Inner>,
    account: AccountId,
    slot: Arc<Mutex<Option<Session>>>,
    session: Session,
    wake: Arc<Notify>,
) {
    let mut fetched: HashSet<(BareJid, OmemoVersion)> = HashSet::new();
    let mut retry = RETRY_MIN;
    while !session.is_closed() {
        let queued: Vec<OutboxEntry> = match inner.store().outbox(account) {
            Ok(entries) => entries
                .into_iter()
                .filter(|e| e.kind == KIND_TO_ENCRYPT || e.kind == KIND_GROUP_TO_ENCRYPT)
                .collect(),
            Err(e) => {
                tracing::error!(account = account.0, error = %e, "reading the outbox failed");
                return;
            }
        };
        let mut waiting = false;
        // Conversations with a message that waits: their later ones wait behind it.
        let mut held_back: HashSet<linnet_store::ConversationId> = HashSet::new();
        for entry in queued {
            let conversation = entry
                .message
                .and_then(|m| inner.store().message(m).ok())
                .map(|m| m.conversation);
            if conversation.is_some_and(|c| held_back.contains(&c)) {
                continue;
            }
            match send_one(&inner, account, &slot, &session, &entry, &mut fetched).await {
                Ok(()) => retry = RETRY_MIN,
                Err(SendError::NotYet) => {
                    held_back.extend(conversation);
                }
                Err(SendError::Later(why)) => {
                    // In order: the later ones wait too. Tried again on this session after a
                    // while (a server slow to answer), else on the next one.
                    tracing::info!(account = account.0, reason = %why, "encrypted message waits");
                    waiting = true;
                    break;
                }
                Err(SendError::Never(why)) => {
                    tracing::info!(account = account.0, reason = %why, "message cannot be encrypted");
                    fail(&inner, &entry, &why);
                }
            }
        }
        if waiting {
            let until = tokio::time::Instant::now() + retry;
            retry = (retry * 2).min(RETRY_MAX);
            while tokio::time::Instant::now() < until && !session.is_closed() {
                tokio::time::sleep(IDLE_CHECK.min(until - tokio::time::Instant::now())).await;
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(IDLE_CHECK) => {}
        }
    }
}

/// Waits between tries of a message that could not be prepared on a live session.
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(120);

fn fail(inner: &Inner, entry: &OutboxEntry, why: &str) {
    let conversation = inner.store().transaction(|tx| {
        tx.outbox_remove(entry.id)?;
        let Some(id) = entry.message else {
            return Ok(None);
        };
        tx.set_delivery_state(id, DeliveryState::Failed)?;
        tx.set_message_error(id, Some(why))?;
        Ok(Some(tx.message(id)?.conversation))
    });
    match conversation {
        Ok(Some(c)) => {
            inner.conversation_changed(c);
            inner.publish_chat_list();
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "marking a message failed"),
    }
}

async fn send_one(
    inner: &Arc<Inner>,
    account: AccountId,
    slot: &Arc<Mutex<Option<Session>>>,
    session: &Session,
    entry: &OutboxEntry,
    fetched: &mut HashSet<(BareJid, OmemoVersion)>,
) -> Result<(), SendError> {
    let Some(message_id) = entry.message else {
        inner.store().outbox_remove(entry.id)?;
        return Ok(());
    };
    if entry.kind == KIND_GROUP_TO_ENCRYPT {
        let message = inner.store().message(message_id)?;
        return group::send_one(inner, account, slot, session, entry, message, fetched).await;
    }
    let (message, peer, policy) = {
        let store = inner.store();
        let message = store.message(message_id)?;
        let info = store.conversation_info(message.conversation)?;
        let policy = store.encryption_policy(message.conversation)?;
        (message, info.peer, policy)
    };
    let peer = BareJid::parse(&peer).map_err(|_| SendError::Never("bad peer address".into()))?;
    let own = session.own_jid().clone();
    let origin = message
        .origin_id
        .clone()
        .ok_or_else(|| SendError::Never("message without id".into()))?;
    let extras = linnet_xmpp::rich::Extras::from_xml(&entry.payload)
        .ok_or_else(|| SendError::Never("unreadable queued message".into()))?;
    let device_id = own_device(inner, account).await?;
    for jid in [&peer, &own] {
        // Once per session: ejabberd does not always notify of a changed list.
        for (_, xv) in VERSIONS {
            if fetched.insert((jid.clone(), xv)) {
                if let Err(e) = fetch_device_list(inner, account, session, jid, xv).await {
                    fetched.remove(&(jid.clone(), xv));
                    return Err(e);
                }
            }
        }
    }
    let peer_targets = targets(inner, account, &peer, None)?;
    let own_targets = targets(inner, account, &own, Some(device_id))?;
    if peer_targets.is_empty() {
        if let Some(why) = crate::devices::all_stale(&inner.store(), account, &peer)? {
            return Err(SendError::Never(why));
        }
        return match policy {
            EncryptionPolicy::Omemo => Err(SendError::Never(
                "the contact has no OMEMO device to encrypt for".into(),
            )),
            // An encrypted file's link holds its key (XEP-0454): in the clear it would give
            // the file to anyone on the way.
            _ if linnet_xmpp::files::AesgcmUrl::from_body(&message.body).is_some() => Err(
                SendError::Never("the contact has no OMEMO device to encrypt the file for".into()),
            ),
            // Auto, and the contact has no OMEMO: as a plain message.
            _ => {
                let stanza = linnet_xmpp::stanza_to_string(&linnet_xmpp::chat_stanza(
                    &peer,
                    &extras.wire_body(&message.body),
                    &origin,
                    &extras,
                ));
                send_prepared(inner, slot, session, entry, &origin, &stanza)
            }
        };
    }
    let all: Vec<Target> = peer_targets.iter().chain(&own_targets).cloned().collect();
    for t in &all {
        // No bundle is fetched for a device the user rejected; any other device without a
        // session gets one, which records its identity and the trust the policy gives it
        // (whether it is then used is decided below, with the trust as it is then).
        if !distrusted(inner, account, t)? {
            ensure_session(inner, account, session, &own, device_id, t, false).await?;
        }
    }
    // Under the slot lock, as `send_message` and the outbox re-send are: the entry is
    // encrypted, stored as its stanza and sent on this session, or left for the next one.
    let guard = lock(slot);
    if !live(&guard, session) {
        return Err(SendError::Later("session ended".into()));
    }
    let sealed = seal_entry(
        inner,
        &Sealing {
            account,
            own: &own,
            device_id,
            to: Destination::Chat(&peer),
            recipients: std::slice::from_ref(&peer),
            entry,
            message: &message,
            extras: &extras,
            targets: &all,
            kind: "chat",
            policy,
        },
    )?;
    let stanza = match sealed {
        Err(Sealed::Missing { untrusted, .. }) if !untrusted.is_empty() => {
            // Never in the clear instead: the contact uses OMEMO.
            return Err(SendError::Never(
                "none of the contact's OMEMO devices is trusted: verify or trust one, then \
                 send again"
                    .into(),
            ));
        }
        Err(_) => {
            return Err(SendError::Never(
                "no device of the contact could be reached".into(),
            ))
        }
        Ok(s) => s,
    };
    let _ = session.send_raw_tracked(&stanza, &origin);
    drop(guard);
    tracing::debug!(
        account = account.0,
        devices = all.len(),
        "encrypted message sent"
    );
    inner.conversation_changed(message.conversation);
    Ok(())
}

/// Our device id, off the runtime's threads (the first call generates the keys).
async fn own_device(inner: &Arc<Inner>, account: AccountId) -> Result<u32, SendError> {
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || own_device_id(&inner, account))
        .await
        .map_err(|_| SendError::Later("task".into()))?
        .map_err(|e| SendError::Later(e.to_string()))
}

/// Whether the slot still holds `session`, open: what is sent now goes on it, or else is
/// left to the next session's outbox re-send.
fn live(slot: &Option<Session>, session: &Session) -> bool {
    slot.as_ref()
        .is_some_and(|s| s.same_stream(session) && !s.is_closed())
}

/// Sends a stanza built without encryption in place of the entry (see `send_one`).
fn send_prepared(
    inner: &Inner,
    slot: &Arc<Mutex<Option<Session>>>,
    session: &Session,
    entry: &OutboxEntry,
    origin: &str,
    stanza: &str,
) -> Result<(), SendError> {
    let guard = lock(slot);
    if !live(&guard, session) {
        return Err(SendError::Later("session ended".into()));
    }
    inner.store().outbox_replace(entry.id, "chat", stanza)?;
    let _ = session.send_raw_tracked(stanza, origin);
    drop(guard);
    Ok(())
}

/// The active devices of `jid`, each reached by OMEMO 2 when it is in that list too (one
/// device id in both lists is one device speaking both), less `except`.
fn targets(
    inner: &Inner,
    account: AccountId,
    jid: &BareJid,
    except: Option<u32>,
) -> Result<Vec<Target>, SendError> {
    let store = inner.store();
    let stale = crate::devices::stale_ids(&store, account, jid.as_str(), crate::devices::now_ms())?;
    let mut out: Vec<Target> = Vec::new();
    for version in [Version::Omemo2, Version::Omemo03] {
        for d in store
            .omemo_device_list(account, jid.as_str(), version)?
            .unwrap_or_default()
        {
            if !d.active || Some(d.device_id) == except || stale.contains(&d.device_id) {
                continue;
            }
            if out.iter().any(|t| t.device_id == d.device_id) {
                continue;
            }
            out.push(Target {
                jid: jid.clone(),
                device_id: d.device_id,
                version,
            });
        }
    }
    Ok(out)
}

async fn fetch_device_list(
    inner: &Inner,
    account: AccountId,
    session: &Session,
    jid: &BareJid,
    version: OmemoVersion,
) -> Result<(), SendError> {
    let payload = match session
        .pep_items(Some(jid), version.devices_node(), None)
        .await
    {
        // The singleton item if the publisher named it so, else the first (older clients).
        Ok(items) => items
            .iter()
            .find(|i| i.id.as_deref() == Some(DEVICE_LIST_ITEM_ID))
            .or(items.first())
            .map(|i| i.payload.clone()),
        Err(RequestError::Stanza { condition, .. })
            if condition == "item-not-found" || condition == "service-unavailable" =>
        {
            None
        }
        Err(RequestError::Stanza { condition, .. }) => {
            // Not allowed to read it (say, presence access and no subscription): we know
            // nothing, which is not an empty list.
            tracing::info!(account = account.0, condition = %condition, "device list not readable");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::debug!(
        account = account.0,
        ?version,
        found = payload.is_some(),
        "device list fetched"
    );
    let own = session.own_jid().clone();
    let conversation = inner.store().transaction(|tx| {
        device_list_seen(tx, account, &own, jid, version, payload.as_deref())?;
        tx.conversation(account, jid.as_str(), false)
    })?;
    // The conversation shows the peer's devices.
    if let Some(c) = conversation {
        inner.conversation_snapshot_changed(c);
    }
    Ok(())
}

/// Whether the user distrusted the device (its identity in the version it is reached by).
fn distrusted(inner: &Inner, account: AccountId, t: &Target) -> Result<bool, SendError> {
    use linnet_omemo::store::IdentityStore as _;
    let address = DeviceAddress::new(t.jid.as_str(), t.device_id);
    let record = inner
        .store()
        .omemo_transaction(account, |s| s.identity(t.version, &address))
        .map_err(|e| SendError::Later(e.to_string()))?;
    Ok(record.is_some_and(|r| r.trust == linnet_omemo::Trust::Distrusted))
}

/// Builds a session with the device from its bundle unless one exists (or, with `replace`,
/// in place of the one that exists: the old one stays if no bundle can be had). A device
/// whose bundle cannot be had is left out of this message (logged), not a failure of it.
async fn ensure_session(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    own: &BareJid,
    device_id: u32,
    t: &Target,
    replace: bool,
) -> Result<(), SendError> {
    let address = DeviceAddress::new(t.jid.as_str(), t.device_id);
    let has = inner
        .store()
        .omemo_transaction(account, |s| {
            SessionManager::new(s, own.as_str(), device_id)?.has_session(t.version, &address)
        })
        .map_err(|e| SendError::Later(e.to_string()))?;
    if has && !replace {
        return Ok(());
    }
    let xv = xml_version(t.version);
    let items = match session
        .pep_items(
            Some(&t.jid),
            &xv.bundle_node(t.device_id),
            Some(&xv.bundle_item_id(t.device_id)),
        )
        .await
    {
        Ok(items) => items,
        Err(RequestError::Stanza { condition, .. }) => {
            tracing::info!(account = account.0, condition = %condition, "no bundle for a device");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(item) = items.first() else {
        return Ok(());
    };
    let bundle = match BundleItem::from_xml(xv, &item.payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(account = account.0, error = %e, "malformed bundle ignored");
            return Ok(());
        }
    };
    let bundle = Bundle {
        identity_key: bundle.ik,
        signed_prekey_id: bundle.spk_id,
        signed_prekey: bundle.spk,
        signed_prekey_signature: bundle.spks,
        prekeys: bundle.prekeys,
    };
    let built = inner.store().omemo_transaction(account, |s| {
        use linnet_omemo::store::IdentityStore as _;
        let first_sight = s.identity(t.version, &address)?.is_none();
        let mut m = SessionManager::new(s, own.as_str(), device_id)?;
        m.process_bundle(t.version, &address, &bundle)?;
        if first_sight {
            if let Some(r) = m.store().identity(t.version, &address)? {
                on_first_sight(
                    m.store().tx(),
                    account,
                    t.jid.as_str(),
                    t.device_id,
                    t.version,
                    &r.key,
                );
            }
        }
        Ok(())
    });
    match built {
        Ok(()) => Ok(()),
        Err(linnet_omemo::Error::Store(e)) => Err(SendError::Later(e)),
        Err(e) => {
            // A bad signature, a low-order key: that device is not usable.
            tracing::info!(account = account.0, error = %e, "bundle refused");
            Ok(())
        }
    }
}

/// One queued message to encrypt, and where it goes (see [`seal_entry`]).
struct Sealing<'a> {
    account: AccountId,
    own: &'a BareJid,
    device_id: u32,
    to: Destination<'a>,
    recipients: &'a [BareJid],
    entry: &'a OutboxEntry,
    message: &'a linnet_store::MessageRecord,
    extras: &'a linnet_xmpp::rich::Extras,
    targets: &'a [Target],
    /// The outbox kind the entry becomes, holding the stanza.
    kind: &'a str,
    policy: EncryptionPolicy,
}

/// Encrypts a queued message in one transaction with what follows from it: its outbox
/// entry becomes the stanza, the message records how it was encrypted, and an `Auto`
/// conversation becomes `Omemo` for good. `Ok(Err(_))`: someone would get nothing (nothing
/// changed); `Err`: try later (store) or never (the cryptography refused).
fn seal_entry(inner: &Inner, s: &Sealing<'_>) -> Result<Result<String, Sealed>, SendError> {
    let mut failure = None;
    let built = inner.store().transaction(|tx| {
        match encrypt_for(
            tx,
            s.account,
            s.own,
            s.device_id,
            s.to,
            s.recipients,
            s.message.origin_id.as_deref().unwrap_or_default(),
            &s.message.body,
            s.extras,
            s.targets,
        ) {
            Ok(Sealed::Stanza(stanza, encryption)) => {
                tx.outbox_replace(s.entry.id, s.kind, &stanza)?;
                tx.set_message_encryption(s.message.id, encryption)?;
                if s.policy == EncryptionPolicy::Auto {
                    tx.set_encryption_policy(s.message.conversation, EncryptionPolicy::Omemo)?;
                }
                Ok(Ok(stanza))
            }
            Ok(missing) => Ok(Err(missing)),
            Err(e) => {
                failure = Some(e);
                Err(StoreError::InvalidInput("OMEMO encryption failed"))
            }
        }
    });
    match (built, failure) {
        (_, Some(e)) => Err(SendError::Never(e.to_string())),
        (Err(e), None) => Err(e.into()),
        (Ok(r), None) => Ok(r),
    }
}

/// What encrypting a message came to.
enum Sealed {
    /// The stanza to send, and how it reached the recipients.
    Stanza(String, Encryption),
    /// Some recipients would get nothing: those with devices but none the user trusts, and
    /// those none of whose devices could be reached. Nothing is sent.
    Missing {
        untrusted: Vec<BareJid>,
        unreachable: Vec<BareJid>,
    },
}

/// Where an encrypted message goes.
#[derive(Clone, Copy)]
enum Destination<'a> {
    /// A 1:1 chat with this contact.
    Chat(&'a BareJid),
    /// A group chat, through this room.
    Group(&'a BareJid),
}

/// Encrypts `body` for every target with a session that the trust policy allows, by
/// version, and builds the stanza; every one of `recipients` (the contact, or a group's
/// members, less ourselves) must be reached by at least one device. The trust is read in
/// the transaction the ratchets move in, so a device distrusted a moment before gets
/// nothing.
#[allow(clippy::too_many_arguments)]
fn encrypt_for(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    device_id: u32,
    to: Destination<'_>,
    recipients: &[BareJid],
    origin: &str,
    body: &str,
    extras: &linnet_xmpp::rich::Extras,
    all: &[Target],
) -> Result<Sealed, linnet_omemo::Error> {
    use linnet_omemo::store::IdentityStore as _;
    let body = &extras.wire_body(body);
    let mut manager = SessionManager::new(OmemoStore::new(tx, account), own.as_str(), device_id)?;
    let mut allowed: Vec<&Target> = Vec::with_capacity(all.len());
    // Recipients with a device the user does not trust.
    let mut untrusted: Vec<&BareJid> = Vec::new();
    for t in all {
        let address = DeviceAddress::new(t.jid.as_str(), t.device_id);
        match manager.store().identity(t.version, &address)? {
            Some(r) if !usable(r.trust) => {
                if recipients.contains(&t.jid) && !untrusted.contains(&&t.jid) {
                    untrusted.push(&t.jid);
                }
            }
            // Without an identity there is no session either: the manager leaves it out.
            _ => allowed.push(t),
        }
    }
    let mut elements = Vec::new();
    let mut reached: HashSet<&str> = HashSet::new();
    let mut newest = Encryption::Omemo03;
    for version in [Version::Omemo2, Version::Omemo03] {
        let addresses: Vec<DeviceAddress> = allowed
            .iter()
            .filter(|t| t.version == version)
            .map(|t| DeviceAddress::new(t.jid.as_str(), t.device_id))
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let payload = match version {
            Version::Omemo03 => Zeroizing::new(body.as_bytes().to_vec()),
            Version::Omemo2 => {
                let mut envelope = Envelope::with_body(body, own.as_str());
                if let Destination::Group(room) = to {
                    envelope.to = Some(room.as_str().to_owned());
                }
                Zeroizing::new(envelope.to_bytes(&mut rand::rngs::OsRng)?)
            }
        };
        let out = manager.encrypt(version, Some(&payload), &addresses)?;
        crate::devices::encrypted_for(tx, account, version, &out.message.keys)
            .map_err(|e| linnet_omemo::Error::Store(e.to_string()))?;
        for (address, e) in &out.skipped {
            tracing::info!(account = account.0, device = address.device_id, error = %e, "device left out");
        }
        if out.message.keys.is_empty() {
            continue;
        }
        let mut to_recipient = false;
        for k in &out.message.keys {
            if let Some(r) = recipients.iter().find(|r| r.as_str() == k.recipient.jid) {
                reached.insert(r.as_str());
                to_recipient = true;
            }
        }
        // The message is recorded by how it reached the recipients.
        if to_recipient && version == Version::Omemo2 {
            newest = Encryption::Omemo2;
        }
        elements.push(to_element(version, &out.message)?);
    }
    let missed: Vec<&BareJid> = recipients
        .iter()
        .filter(|r| !reached.contains(r.as_str()))
        .collect();
    if !missed.is_empty() || elements.is_empty() {
        let (untrusted, unreachable): (Vec<&BareJid>, Vec<&BareJid>) =
            missed.into_iter().partition(|r| untrusted.contains(r));
        tracing::info!(
            account = account.0,
            untrusted = untrusted.len(),
            unreachable = unreachable.len(),
            "recipients without a device to encrypt for"
        );
        return Ok(Sealed::Missing {
            untrusted: untrusted.into_iter().cloned().collect(),
            unreachable: unreachable.into_iter().cloned().collect(),
        });
    }
    let stanza = match to {
        Destination::Chat(peer) => linnet_xmpp::omemo::chat_stanza(
            peer,
            origin,
            &elements,
            Some(linnet_xmpp::omemo::FALLBACK_BODY),
            extras,
        ),
        Destination::Group(room) => linnet_xmpp::omemo::groupchat_stanza(
            room,
            origin,
            &elements,
            linnet_xmpp::omemo::FALLBACK_BODY,
            extras,
        ),
    }
    .map_err(|_| linnet_omemo::Error::Malformed {
        what: "our own message",
    })?;
    Ok(Sealed::Stanza(
        linnet_xmpp::stanza_to_string(&stanza),
        newest,
    ))
}

/// The `<encrypted>` element's data for one version's result.
fn to_element(
    version: Version,
    m: &EncryptedMessage,
) -> Result<linnet_xmpp::omemo::Encrypted, linnet_omemo::Error> {
    let keys = m
        .keys
        .iter()
        .map(|k| {
            Ok(KeyEntry {
                jid: match version {
                    Version::Omemo03 => None,
                    Version::Omemo2 => Some(BareJid::parse(&k.recipient.jid).map_err(|_| {
                        linnet_omemo::Error::Malformed {
                            what: "recipient JID",
                        }
                    })?),
                },
                rid: k.recipient.device_id,
                kex: k.key_exchange,
                data: k.data.clone(),
            })
        })
        .collect::<Result<Vec<_>, linnet_omemo::Error>>()?;
    Ok(linnet_xmpp::omemo::Encrypted {
        version: xml_version(version),
        sid: m.sender_device_id,
        keys,
        iv: m.iv.clone(),
        payload: m.payload.clone(),
    })
}

/// Sends empty messages to the devices in `answers` (after rebuilding sessions where
/// asked): session completion after a key exchange, heartbeats, repairs of broken
/// sessions. A repair goes to each device at most once per [`REPAIR_INTERVAL`], so that a
/// broken peer cannot make us loop. Best effort: a lost empty message costs nothing.
pub(crate) async fn answer(
    inner: Arc<Inner>,
    account: AccountId,
    session: Session,
    answers: Vec<Answer>,
) {
    let own = session.own_jid().clone();
    let Ok(Ok(device_id)) = ({
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || own_device_id(&inner, account)).await
    }) else {
        return;
    };
    let mut seen = HashSet::new();
    for a in answers {
        if !seen.insert(a.clone()) {
            continue;
        }
        let target = Target {
            jid: a.jid.clone(),
            device_id: a.device_id,
            version: a.version,
        };
        if a.rebuild {
            let key = (account, a.jid.clone(), a.device_id, a.version);
            {
                let mut repairs = lock(&inner.omemo_repairs);
                let now = tokio::time::Instant::now();
                if repairs
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < REPAIR_INTERVAL)
                {
                    continue;
                }
                repairs.insert(key, now);
            }
            if let Err(e) =
                ensure_session(&inner, account, &session, &own, device_id, &target, true).await
            {
                tracing::info!(account = account.0, error = ?e, "session repair failed");
                continue;
            }
        }
        let built = inner.store().omemo_transaction(account, |s| {
            let mut m = SessionManager::new(s, own.as_str(), device_id)?;
            let address = DeviceAddress::new(a.jid.as_str(), a.device_id);
            if !m.has_session(a.version, &address)? {
                return Ok(None);
            }
            let out = m.encrypt(a.version, None, &[address])?;
            if out.message.keys.is_empty() {
                return Ok(None);
            }
            let element = to_element(a.version, &out.message)?;
            linnet_xmpp::omemo::chat_stanza(
                &a.jid,
                &linnet_xmpp::new_id(),
                &[element],
                None,
                &Default::default(),
            )
            .map(Some)
            .map_err(|_| linnet_omemo::Error::Malformed {
                what: "our own message",
            })
        });
        match built {
            Ok(Some(stanza)) => {
                let _ = session.send_xml(&linnet_xmpp::stanza_to_string(&stanza));
                tracing::debug!(
                    account = account.0,
                    rebuild = a.rebuild,
                    "empty OMEMO message sent"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(account = account.0, error = %e, "empty OMEMO message not built")
            }
        }
    }
}

/// How often at most a device's broken session is rebuilt.
pub(crate) const REPAIR_INTERVAL: Duration = Duration::from_secs(600);

/// Fetches the device lists of `jids` (both versions). Contacts' lists normally come by
/// PEP notification, but a server sends the current one only on events it chooses
/// (ejabberd not when a subscription is made), so a new contact's are fetched.
pub(crate) async fn refresh_device_lists(
    inner: Arc<Inner>,
    account: AccountId,
    session: Session,
    jids: Vec<BareJid>,
) {
    for jid in jids {
        for (_, xv) in VERSIONS {
            if let Err(e) = fetch_device_list(&inner, account, &session, &jid, xv).await {
                tracing::info!(account = account.0, error = ?e, "device list not fetched");
                return;
            }
        }
    }
}

/// `jid`'s devices as last seen, with their fingerprints and trust. `current`: this
/// client's device and fingerprint, when `jid` is our own account (we record no identity
/// of our own).
pub(crate) fn devices(
    store: &Store,
    account: AccountId,
    jid: &str,
    current: Option<(u32, &str)>,
) -> Result<Vec<OmemoDeviceInfo>, StoreError> {
    let mut out: Vec<OmemoDeviceInfo> = Vec::new();
    for version in [Version::Omemo2, Version::Omemo03] {
        for d in store
            .omemo_device_list(account, jid, version)?
            .unwrap_or_default()
        {
            if out.iter().any(|o| o.device_id == d.device_id && o.active) {
                continue;
            }
            out.retain(|o| o.device_id != d.device_id);
            out.push(OmemoDeviceInfo {
                device_id: d.device_id,
                encryption: encryption_of(version),
                active: d.active,
                fingerprint: None,
                trust: None,
                current: false,
                label: None,
                stale: false,
            });
        }
    }
    let identities = store.omemo_identities(account, jid)?;
    for o in &mut out {
        if let Some((_, fingerprint)) = current.filter(|(id, _)| *id == o.device_id) {
            o.current = true;
            o.fingerprint = Some(fingerprint.to_owned());
            o.trust = Some(DeviceTrust::Verified);
            continue;
        }
        let reached_by = match o.encryption {
            Encryption::Omemo03 => Version::Omemo03,
            _ => Version::Omemo2,
        };
        // The identity of the version the device is reached by, else the other one's (one
        // verified in advance is recorded as OMEMO 0.3).
        let of_device = |v: Option<Version>| {
            identities
                .iter()
                .find(|(rv, d, _)| *d == o.device_id && v.is_none_or(|v| v == *rv))
        };
        if let Some((v, _, r)) = of_device(Some(reached_by)).or_else(|| of_device(None)) {
            o.fingerprint = curve_form(*v, &r.key).map(|k| hex(&k));
            o.trust = Some(r.trust.into());
        }
    }
    crate::devices::annotate(store, account, jid, &mut out)?;
    Ok(out)
}
