//! What the OMEMO device lists say of a device beyond its id, and which devices are gone.
//!
//! Labels (XEP-0384 §5.3.1, OMEMO 2 only). Our device's entry carries the label the user
//! chose (by default "Linnet": the device list is readable by anyone, so the default says
//! no more than the client software) with `labelsig`, our identity key's signature over
//! it. A received label is kept as listed and shown only while its signature verifies
//! against the device's OMEMO 2 identity key as we recorded it (when a session was built
//! from its bundle or its key exchange arrived). Until then the label is not shown, and a
//! label whose signature fails never is: anyone who can write a device list, or forge one,
//! could otherwise name a device after another. Entries of our other devices are kept as
//! they are when we publish our list: we cannot sign for them.
//!
//! Stale devices. XEP-0384 has no rule for them, yet a device that is gone for good (a
//! phone reset without removing itself from the list, a client uninstalled) would get a
//! copy of every message forever, and each copy is a key for whoever gets hold of that
//! device's keys later. The protocol does give a liveness signal: a device that receives
//! our messages answers at the latest when our sending chain reaches counter 53 (the
//! heartbeat of the Business Rules), and at once after a key exchange. So for each device
//! we count the messages encrypted for it since anything from it was last decrypted
//! (`linnet_store::DeviceActivity`), and call it stale when both
//! - at least [`STALE_AFTER_MESSAGES`] were encrypted for it unanswered: about twice the
//!   heartbeat interval, so a device that is there has had every chance to answer, and
//! - the first of those is more than [`STALE_AFTER`] old: a phone switched off over a long
//!   weekend, or a contact who only reads during a burst of our messages, stays.
//!
//! The time counts from the first unanswered message, not from when the device was last
//! heard: after a quiet month, a burst of a hundred messages in an evening to a phone that
//! is off for that evening must not drop it. A stale device gets nothing encrypted for it
//! and is shown as stale; it is fresh again the moment anything from it is decrypted, or
//! when it comes back into its list after being out of it (it announced itself again,
//! which only a running device does). Our own stale devices are taken out of our
//! published lists, and a device of ours that is there puts itself back at its next login.
//! A contact whose devices are all stale cannot be written to until one answers: the
//! message fails saying so, rather than going to devices nobody may be holding.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linnet_omemo::{MessageKey, SessionManager, Version};
use linnet_store::{AccountId, DeviceActivity, DeviceLabel, ListedDevice, Store, StoreError, Tx};
use linnet_xmpp::omemo::{Device, DeviceListItem, OmemoVersion};
use linnet_xmpp::BareJid;

use crate::omemo::PublishError;
use crate::{Client, ClientError, Inner, OmemoDeviceInfo, Result};

/// Messages encrypted for a device without an answer before it can be stale.
pub(crate) const STALE_AFTER_MESSAGES: u32 = 100;
/// How long ago the first of them must have been (7 days).
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The XEP recommends labels under 53 code points; we hold our own to that.
pub const MAX_OWN_LABEL_CHARS: usize = 52;
const DEFAULT_LABEL: &str = "Linnet";
/// Our label; absent: [`DEFAULT_LABEL`], empty: none.
const KV_LABEL: &str = "omemo.device_label";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether a device with this record is stale at `now_ms` (see the module comment).
pub(crate) fn is_stale(a: &DeviceActivity, now_ms: i64) -> bool {
    let quiet_for = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    a.unanswered >= STALE_AFTER_MESSAGES
        && a.unanswered_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) > quiet_for)
}

/// The ids of `jid`'s stale devices. One device id is one device: stale in the version it
/// is reached by is stale.
pub(crate) fn stale_ids(
    store: &Store,
    account: AccountId,
    jid: &str,
    now_ms: i64,
) -> std::result::Result<HashSet<u32>, StoreError> {
    let mut out = HashSet::new();
    for version in [Version::Omemo2, Version::Omemo03] {
        for d in store
            .omemo_device_list(account, jid, version)?
            .unwrap_or_default()
        {
            if is_stale(&d.activity, now_ms) {
                out.insert(d.device_id);
            }
        }
    }
    Ok(out)
}

/// Why nothing can be encrypted for `peer`, when it is that all its devices are stale.
pub(crate) fn all_stale(
    store: &Store,
    account: AccountId,
    peer: &BareJid,
) -> std::result::Result<Option<String>, StoreError> {
    let stale = stale_ids(store, account, peer.as_str(), now_ms())?;
    if stale.is_empty() {
        return Ok(None);
    }
    let mut active = HashSet::new();
    for version in [Version::Omemo2, Version::Omemo03] {
        for d in store
            .omemo_device_list(account, peer.as_str(), version)?
            .unwrap_or_default()
        {
            if d.active {
                active.insert(d.device_id);
            }
        }
    }
    Ok(active.is_subset(&stale).then(|| {
        format!(
            "the contact's OMEMO devices are stale: none has answered the last \
             {STALE_AFTER_MESSAGES} or more messages, over {} days; one must write first",
            STALE_AFTER.as_secs() / 86_400
        )
    }))
}

/// Records a device list as PEP gave it, labels included (unchecked, see the module
/// comment).
pub(crate) fn record_list(
    tx: &Tx<'_>,
    account: AccountId,
    jid: &BareJid,
    version: Version,
    list: &DeviceListItem,
) -> std::result::Result<(), StoreError> {
    let devices: Vec<ListedDevice> = list
        .devices
        .iter()
        .map(|d| ListedDevice {
            device_id: d.id,
            label: match (&d.label, &d.labelsig) {
                (Some(label), Some(signature)) => Some(DeviceLabel {
                    label: label.clone(),
                    signature: signature.clone(),
                }),
                _ => None,
            },
        })
        .collect();
    tx.set_omemo_device_entries(account, jid.as_str(), version, &devices)
}

/// Something from `jid`'s device was decrypted: it is there.
pub(crate) fn heard(
    tx: &Tx<'_>,
    account: AccountId,
    jid: &BareJid,
    device_id: u32,
) -> std::result::Result<(), StoreError> {
    tx.omemo_device_heard(account, jid.as_str(), device_id, now_ms())
}

/// A message was encrypted (by `version`) for the devices `keys` go to.
pub(crate) fn encrypted_for(
    tx: &Tx<'_>,
    account: AccountId,
    version: Version,
    keys: &[MessageKey],
) -> std::result::Result<(), StoreError> {
    let now = now_ms();
    let mut jids: Vec<&str> = keys.iter().map(|k| k.recipient.jid.as_str()).collect();
    jids.sort_unstable();
    jids.dedup();
    for jid in jids {
        let ids: Vec<u32> = keys
            .iter()
            .filter(|k| k.recipient.jid == jid)
            .map(|k| k.recipient.device_id)
            .collect();
        tx.omemo_devices_encrypted_for(account, jid, version, &ids, now)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Our own device's entry

/// Whether `label` may be our device's label: the reason it may not, else `None`.
pub(crate) fn label_problem(label: &str) -> Option<&'static str> {
    if label.trim().is_empty() {
        return Some("the device label is empty");
    }
    if label.chars().count() > MAX_OWN_LABEL_CHARS {
        return Some("the device label is longer than 52 characters");
    }
    if label.chars().any(char::is_control) {
        return Some("the device label has control characters");
    }
    None
}

fn own_label(store: &Store, account: AccountId) -> std::result::Result<Option<String>, StoreError> {
    Ok(match store.kv_get(Some(account), KV_LABEL)? {
        None => Some(DEFAULT_LABEL.to_owned()),
        Some(l) if l.is_empty() => None,
        Some(l) => Some(l),
    })
}

/// Our device's entry in our `version` list: in OMEMO 2 with our label, signed.
fn own_entry(
    inner: &Inner,
    account: AccountId,
    own: &BareJid,
    version: OmemoVersion,
    device_id: u32,
) -> std::result::Result<Device, PublishError> {
    let mut entry = Device::new(device_id);
    if version == OmemoVersion::V03 {
        return Ok(entry);
    }
    let mut store = inner.store();
    let Some(label) = own_label(&store, account)? else {
        return Ok(entry);
    };
    let signature = store.omemo_transaction(account, |s| {
        Ok(SessionManager::new(s, own.as_str(), device_id)?.sign_label(&label))
    })?;
    entry.label = Some(label);
    entry.labelsig = Some(signature.to_vec());
    Ok(entry)
}

/// Brings our `version` list as read from PEP to what we publish: our device's entry as
/// it should be (label and signature), our stale devices out, every other entry as it
/// was. Returns whether that changed the list.
pub(crate) fn own_list(
    inner: &Inner,
    account: AccountId,
    own: &BareJid,
    version: OmemoVersion,
    device_id: u32,
    list: &mut DeviceListItem,
) -> std::result::Result<bool, PublishError> {
    let entry = own_entry(inner, account, own, version, device_id)?;
    let stale = stale_ids(&inner.store(), account, own.as_str(), now_ms())?;
    let before = list.devices.len();
    list.devices
        .retain(|d| d.id == device_id || !stale.contains(&d.id));
    let mut changed = list.devices.len() != before;
    if changed {
        tracing::info!(
            account = account.0,
            dropped = before - list.devices.len(),
            "stale devices of ours taken out of our device list"
        );
    }
    match list.devices.iter_mut().find(|d| d.id == device_id) {
        Some(d) if *d == entry => {}
        Some(d) => {
            *d = entry;
            changed = true;
        }
        None => {
            list.devices.push(entry);
            changed = true;
        }
    }
    Ok(changed)
}

// ---------------------------------------------------------------------------------------------
// Showing devices

/// Fills in the labels that verify and whether each device is stale. `out` is `jid`'s
/// devices as `omemo::devices` lists them; our current device shows the label we publish.
pub(crate) fn annotate(
    store: &Store,
    account: AccountId,
    jid: &str,
    out: &mut [OmemoDeviceInfo],
) -> std::result::Result<(), StoreError> {
    let stale = stale_ids(store, account, jid, now_ms())?;
    let listed = store
        .omemo_device_list(account, jid, Version::Omemo2)?
        .unwrap_or_default();
    let identities = store.omemo_identities(account, jid)?;
    for o in out.iter_mut() {
        o.stale = stale.contains(&o.device_id);
        if o.current {
            o.label = own_label(store, account)?;
            continue;
        }
        let Some(label) = listed
            .iter()
            .find(|d| d.device_id == o.device_id)
            .and_then(|d| d.label.as_ref())
        else {
            continue;
        };
        // The OMEMO 2 identity alone: labels are signed with the Ed25519 key, and a 0.3
        // record holds only the Curve25519 form, which does not say which of two Edwards
        // keys signed.
        let key = identities
            .iter()
            .find(|(v, d, _)| *v == Version::Omemo2 && *d == o.device_id)
            .map(|(_, _, r)| r.key);
        if key.is_some_and(|k| linnet_omemo::verify_label(&k, &label.label, &label.signature)) {
            o.label = Some(label.label.clone());
        }
    }
    Ok(())
}

impl Client {
    /// The label our device carries in our OMEMO 2 device list (`None`: no label).
    pub fn omemo_device_label(&self, account: AccountId) -> Result<Option<String>> {
        let store = self.inner.store();
        store.account(account)?;
        Ok(own_label(&store, account)?)
    }

    /// Sets the label our device carries in our OMEMO 2 device list (`None`: no label),
    /// what other clients show for it once they checked its signature. At most
    /// [`MAX_OWN_LABEL_CHARS`] characters, not empty, no control characters. Published at
    /// once when the account is online, else at its next login.
    pub async fn set_omemo_device_label(
        &self,
        account: AccountId,
        label: Option<&str>,
    ) -> Result<()> {
        if let Some(problem) = label.and_then(label_problem) {
            return Err(ClientError::BadInput(problem.into()));
        }
        {
            let store = self.inner.store();
            store.account(account)?;
            store.kv_set(Some(account), KV_LABEL, label.unwrap_or(""))?;
        }
        if let Some(session) = self.inner.live_session(account) {
            crate::omemo::publish_own_device(self.inner.clone(), account, session).await;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 24 * 3600 * 1000;
    const NOW: i64 = 1_000 * DAY_MS;

    fn quiet(unanswered: u32, days: i64, extra_ms: i64) -> DeviceActivity {
        DeviceActivity {
            heard_ms: None,
            unanswered,
            unanswered_since_ms: (unanswered > 0).then_some(NOW - days * DAY_MS - extra_ms),
        }
    }

    #[test]
    fn stale_needs_both_the_count_and_the_time() {
        // Exactly at the bounds: not yet.
        assert!(!is_stale(&quiet(100, 7, 0), NOW));
        assert!(!is_stale(&quiet(99, 7, 1), NOW));
        // Past both.
        assert!(is_stale(&quiet(100, 7, 1), NOW));
        assert!(is_stale(&quiet(5_000, 400, 0), NOW));
        // Many messages, recently: a phone off for the evening.
        assert!(!is_stale(&quiet(5_000, 6, 0), NOW));
        // Long ago, few messages: a quiet chat.
        assert!(!is_stale(&quiet(99, 400, 0), NOW));
        // Heard from: nothing unanswered.
        let heard = DeviceActivity {
            heard_ms: Some(NOW - 400 * DAY_MS),
            unanswered: 0,
            unanswered_since_ms: None,
        };
        assert!(!is_stale(&heard, NOW));
        // A clock set back does not make anything stale.
        assert!(!is_stale(&quiet(200, -30, 0), NOW));
    }

    #[test]
    fn constants_are_what_the_rule_says() {
        assert_eq!(STALE_AFTER_MESSAGES, 100);
        assert_eq!(STALE_AFTER, Duration::from_secs(7 * 86_400));
        // Above the heartbeat interval, so a device that is there has answered.
        const { assert!(STALE_AFTER_MESSAGES > 53) };
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(label_problem("Linnet on the laptop"), None);
        assert_eq!(label_problem(&"é".repeat(52)), None);
        assert!(label_problem(&"é".repeat(53)).is_some());
        assert!(label_problem("").is_some());
        assert!(label_problem("   ").is_some());
        assert!(label_problem("two\nlines").is_some());
        assert!(label_problem("bell\u{7}").is_some());
        assert!(label_problem("del\u{7f}").is_some());
        assert_eq!(label_problem("📱 Phone"), None);
    }
}
