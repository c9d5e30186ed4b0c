//! OMEMO in the client, so far: our own device. Each account has one device id (XEP-0384
//! §5.3: random in 1..2^31-1, kept for good) with keys for both OMEMO versions, and after
//! every fresh login the device is in our device lists and its bundles are published,
//! readable by anyone (a peer who is not a contact yet must be able to start a session).

use std::sync::Arc;

use linnet_omemo::{Bundle, SessionManager, Version};
use linnet_store::{AccountId, OmemoStore};
use linnet_xmpp::omemo::{BundleItem, Device, DeviceListItem, OmemoVersion, DEVICE_LIST_ITEM_ID};
use linnet_xmpp::{NodeConfig, RequestError, Session};
use rand::Rng;

use crate::Inner;

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
    }
}

/// Puts our device into our device list of each version (keeping the devices there) and
/// publishes its bundles. Runs beside the session after a fresh login; a failure is
/// logged and tried again at the next one.
pub(crate) async fn publish_own_device(inner: Arc<Inner>, account: AccountId, session: Session) {
    if let Err(e) = publish(&inner, account, &session).await {
        tracing::info!(account = account.0, error = %e, "OMEMO device not published");
    }
}

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
        if list.devices.iter().any(|d| d.id == device_id) {
            continue;
        }
        list.devices.push(Device::new(device_id));
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
