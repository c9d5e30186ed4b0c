//! OMEMO device lists as seen in PEP, and each conversation's encryption choice (schema v5);
//! device labels and what tells whether a device is still there (v14).

use linnet_omemo::Version;
use rusqlite::{params, OptionalExtension, Row};

use crate::error::{fk_not_found, Result, StoreError};
use crate::tx::{now_ms, Tx};
use crate::types::{AccountId, ConversationId, EncryptionPolicy};

/// One device of a JID's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OmemoDevice {
    pub device_id: u32,
    /// In the list as last seen; an inactive device gets nothing encrypted for it.
    pub active: bool,
    /// OMEMO 2: the label the list gave the device, with its signature, as listed: nobody
    /// has checked it (the identity key to check it with may come later).
    pub label: Option<DeviceLabel>,
    pub activity: DeviceActivity,
}

/// A device label and its signature (`labelsig`, decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLabel {
    pub label: String,
    pub signature: Vec<u8>,
}

/// A device as its list names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedDevice {
    pub device_id: u32,
    pub label: Option<DeviceLabel>,
}

/// What we know of a device's liveness: when we last decrypted anything from it, and how
/// many messages we encrypted for it since (with the time of the first of them). The
/// client decides from this what counts as gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceActivity {
    pub heard_ms: Option<i64>,
    pub unanswered: u32,
    /// `None` exactly when `unanswered` is 0.
    pub unanswered_since_ms: Option<i64>,
}

fn version_code(version: Version) -> i64 {
    match version {
        Version::Omemo03 => 0,
        Version::Omemo2 => 2,
    }
}

const SIGNATURE_LEN: usize = 64;

fn device_row(r: &Row<'_>) -> rusqlite::Result<OmemoDevice> {
    let label = match (
        r.get::<_, Option<String>>(2)?,
        r.get::<_, Option<Vec<u8>>>(3)?,
    ) {
        (Some(label), Some(signature)) => Some(DeviceLabel { label, signature }),
        _ => None,
    };
    Ok(OmemoDevice {
        device_id: r.get(0)?,
        active: r.get(1)?,
        label,
        activity: DeviceActivity {
            heard_ms: r.get(4)?,
            unanswered: r.get(5)?,
            unanswered_since_ms: r.get(6)?,
        },
    })
}

impl Tx<'_> {
    /// Records `jid`'s device list for `version` as just seen: the devices in `ids` are
    /// active, the others we knew become inactive. No labels.
    pub fn set_omemo_device_list(
        &self,
        account: AccountId,
        jid: &str,
        version: Version,
        ids: &[u32],
    ) -> Result<()> {
        let devices: Vec<ListedDevice> = ids
            .iter()
            .map(|id| ListedDevice {
                device_id: *id,
                label: None,
            })
            .collect();
        self.set_omemo_device_entries(account, jid, version, &devices)
    }

    /// Records `jid`'s device list for `version` as just seen: the devices in `devices` are
    /// active, with the labels given (a label the list no longer has goes), the others we
    /// knew become inactive. A device that comes back into the list starts its liveness
    /// count afresh: it announced itself again, which only a running device does.
    pub fn set_omemo_device_entries(
        &self,
        account: AccountId,
        jid: &str,
        version: Version,
        devices: &[ListedDevice],
    ) -> Result<()> {
        let v = version_code(version);
        let now = now_ms();
        for d in devices {
            if !(1..=0x7FFF_FFFF).contains(&d.device_id) {
                return Err(StoreError::InvalidInput("device id out of range"));
            }
            if d.label
                .as_ref()
                .is_some_and(|l| l.signature.len() != SIGNATURE_LEN)
            {
                return Err(StoreError::InvalidInput(
                    "label signature of a wrong length",
                ));
            }
        }
        self.atomic(|| {
            self.conn
                .prepare_cached(
                    "INSERT INTO omemo_device_lists (account_id, jid, version, updated_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET updated_ms = excluded.updated_ms",
                )?
                .execute(params![account, jid, v, now])
                .map_err(fk_not_found("account"))?;
            let was_active: std::collections::HashSet<u32> = self
                .conn
                .prepare_cached(
                    "SELECT device_id FROM omemo_devices
                     WHERE account_id = ?1 AND jid = ?2 AND version = ?3 AND active = 1",
                )?
                .query_map(params![account, jid, v], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            self.conn
                .prepare_cached(
                    "UPDATE omemo_devices SET active = 0
                     WHERE account_id = ?1 AND jid = ?2 AND version = ?3",
                )?
                .execute(params![account, jid, v])?;
            let mut upsert = self.conn.prepare_cached(
                "INSERT INTO omemo_devices
                     (account_id, jid, version, device_id, active, first_seen_ms, label, labelsig)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)
                 ON CONFLICT DO UPDATE SET
                     active = 1, label = excluded.label, labelsig = excluded.labelsig,
                     unanswered = CASE WHEN ?8 THEN unanswered ELSE 0 END,
                     unanswered_since_ms = CASE WHEN ?8 THEN unanswered_since_ms END",
            )?;
            for d in devices {
                upsert.execute(params![
                    account,
                    jid,
                    v,
                    d.device_id,
                    now,
                    d.label.as_ref().map(|l| l.label.as_str()),
                    d.label.as_ref().map(|l| l.signature.as_slice()),
                    was_active.contains(&d.device_id),
                ])?;
            }
            Ok(())
        })
    }

    /// Something from `jid`'s device was decrypted at `at_ms`: it is there, in whichever
    /// version it spoke (one device id is one device).
    pub fn omemo_device_heard(
        &self,
        account: AccountId,
        jid: &str,
        device_id: u32,
        at_ms: i64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE omemo_devices
                 SET heard_ms = max(ifnull(heard_ms, ?4), ?4), unanswered = 0,
                     unanswered_since_ms = NULL
                 WHERE account_id = ?1 AND jid = ?2 AND device_id = ?3",
            )?
            .execute(params![account, jid, device_id, at_ms])?;
        Ok(())
    }

    /// A message was encrypted at `at_ms` for each of `jid`'s `devices` (by `version`).
    pub fn omemo_devices_encrypted_for(
        &self,
        account: AccountId,
        jid: &str,
        version: Version,
        devices: &[u32],
        at_ms: i64,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE omemo_devices
             SET unanswered = unanswered + 1,
                 unanswered_since_ms = ifnull(unanswered_since_ms, ?5)
             WHERE account_id = ?1 AND jid = ?2 AND version = ?3 AND device_id = ?4",
        )?;
        self.atomic(|| {
            for d in devices {
                stmt.execute(params![account, jid, version_code(version), d, at_ms])?;
            }
            Ok(())
        })
    }

    /// Overwrites what is known of a device's liveness (to carry it over from elsewhere,
    /// or for tests that need a device quiet for days). Returns whether the device is known.
    pub fn set_omemo_device_activity(
        &self,
        account: AccountId,
        jid: &str,
        version: Version,
        device_id: u32,
        activity: DeviceActivity,
    ) -> Result<bool> {
        if (activity.unanswered == 0) != activity.unanswered_since_ms.is_none() {
            return Err(StoreError::InvalidInput(
                "a time of the first unanswered message exactly when there is one",
            ));
        }
        let n = self
            .conn
            .prepare_cached(
                "UPDATE omemo_devices
                 SET heard_ms = ?5, unanswered = ?6, unanswered_since_ms = ?7
                 WHERE account_id = ?1 AND jid = ?2 AND version = ?3 AND device_id = ?4",
            )?
            .execute(params![
                account,
                jid,
                version_code(version),
                device_id,
                activity.heard_ms,
                activity.unanswered,
                activity.unanswered_since_ms
            ])?;
        Ok(n > 0)
    }

    /// `jid`'s devices for `version` (active and inactive), or `None` when its list was
    /// never seen.
    pub fn omemo_device_list(
        &self,
        account: AccountId,
        jid: &str,
        version: Version,
    ) -> Result<Option<Vec<OmemoDevice>>> {
        let v = version_code(version);
        let known: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT updated_ms FROM omemo_device_lists
                 WHERE account_id = ?1 AND jid = ?2 AND version = ?3",
            )?
            .query_row(params![account, jid, v], |r| r.get(0))
            .optional()?;
        if known.is_none() {
            return Ok(None);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_id, active, label, labelsig, heard_ms, unanswered, unanswered_since_ms
             FROM omemo_devices
             WHERE account_id = ?1 AND jid = ?2 AND version = ?3 ORDER BY device_id",
        )?;
        let rows = stmt.query_map(params![account, jid, v], device_row)?;
        Ok(Some(rows.collect::<rusqlite::Result<_>>()?))
    }

    pub fn encryption_policy(&self, conversation: ConversationId) -> Result<EncryptionPolicy> {
        let code: String = self
            .conn
            .prepare_cached("SELECT encryption FROM conversations WHERE id = ?1")?
            .query_row([conversation], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NotFound("conversation"))?;
        EncryptionPolicy::from_code(&code)
            .ok_or_else(|| StoreError::Corrupt("unknown encryption policy".into()))
    }

    pub fn set_encryption_policy(
        &self,
        conversation: ConversationId,
        policy: EncryptionPolicy,
    ) -> Result<()> {
        let n = self
            .conn
            .prepare_cached("UPDATE conversations SET encryption = ?2 WHERE id = ?1")?
            .execute(params![conversation, policy.code()])?;
        if n == 0 {
            return Err(StoreError::NotFound("conversation"));
        }
        Ok(())
    }

    /// Records how an outgoing message went out (set once it is encrypted).
    pub fn set_message_encryption(
        &self,
        message: crate::types::MessageId,
        encryption: crate::types::Encryption,
    ) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE messages SET encryption = ?2 WHERE id = ?1")?
            .execute(params![message, encryption])?;
        Ok(())
    }

    /// Records why a message could not be sent or decrypted (`None` clears it).
    pub fn set_message_error(
        &self,
        message: crate::types::MessageId,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE messages SET error = ?2 WHERE id = ?1")?
            .execute(params![message, error])?;
        Ok(())
    }

    /// Turns an outbox entry into the stanza it will be sent as (e.g. once encrypted).
    pub fn outbox_replace(
        &self,
        id: crate::types::OutboxId,
        kind: &str,
        payload: &str,
    ) -> Result<()> {
        let n = self
            .conn
            .prepare_cached("UPDATE outbox SET kind = ?2, payload = ?3 WHERE id = ?1")?
            .execute(params![id, kind, payload])?;
        if n == 0 {
            return Err(StoreError::NotFound("outbox entry"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::DbKey;
    use crate::Store;

    const BOB: &str = "bob@example.org";

    fn store() -> (Store, AccountId) {
        let store = Store::open_in_memory(&DbKey::from_bytes([4; 32])).unwrap();
        let account = store.add_account("me@example.org", "pw").unwrap();
        (store, account)
    }

    fn labelled(device_id: u32, label: &str) -> ListedDevice {
        ListedDevice {
            device_id,
            label: Some(DeviceLabel {
                label: label.into(),
                signature: vec![7; 64],
            }),
        }
    }

    fn device(store: &Store, account: AccountId, version: Version, id: u32) -> OmemoDevice {
        store
            .omemo_device_list(account, BOB, version)
            .unwrap()
            .unwrap()
            .into_iter()
            .find(|d| d.device_id == id)
            .unwrap()
    }

    #[test]
    fn labels_are_kept_as_listed_and_follow_the_list() {
        let (store, account) = store();
        let v2 = Version::Omemo2;
        store
            .set_omemo_device_entries(account, BOB, v2, &[labelled(1, "Phone"), labelled(2, "PC")])
            .unwrap();
        let d1 = device(&store, account, v2, 1);
        assert_eq!(d1.label.unwrap().label, "Phone");
        // A new list without the label (or with another) replaces it.
        store
            .set_omemo_device_entries(
                account,
                BOB,
                v2,
                &[
                    ListedDevice {
                        device_id: 1,
                        label: None,
                    },
                    labelled(2, "Laptop"),
                ],
            )
            .unwrap();
        assert_eq!(device(&store, account, v2, 1).label, None);
        assert_eq!(
            device(&store, account, v2, 2).label.unwrap().label,
            "Laptop"
        );
        let short = ListedDevice {
            device_id: 3,
            label: Some(DeviceLabel {
                label: "x".into(),
                signature: vec![0; 12],
            }),
        };
        assert!(store
            .set_omemo_device_entries(account, BOB, v2, &[short])
            .is_err());
    }

    #[test]
    fn activity_counts_until_the_device_is_heard_in_any_version() {
        let (store, account) = store();
        for v in [Version::Omemo2, Version::Omemo03] {
            store
                .set_omemo_device_list(account, BOB, v, &[5, 6])
                .unwrap();
        }
        let v2 = Version::Omemo2;
        store
            .omemo_devices_encrypted_for(account, BOB, v2, &[5, 6], 1_000)
            .unwrap();
        store
            .omemo_devices_encrypted_for(account, BOB, v2, &[5], 2_000)
            .unwrap();
        let a = device(&store, account, v2, 5).activity;
        assert_eq!(
            a,
            DeviceActivity {
                heard_ms: None,
                unanswered: 2,
                unanswered_since_ms: Some(1_000),
            }
        );
        // Heard through OMEMO 0.3: the device is the same one.
        store.omemo_device_heard(account, BOB, 5, 3_000).unwrap();
        let heard = DeviceActivity {
            heard_ms: Some(3_000),
            unanswered: 0,
            unanswered_since_ms: None,
        };
        assert_eq!(device(&store, account, v2, 5).activity, heard);
        assert_eq!(device(&store, account, Version::Omemo03, 5).activity, heard);
        // A late copy of an older message does not move the time back.
        store.omemo_device_heard(account, BOB, 5, 2_500).unwrap();
        assert_eq!(
            device(&store, account, v2, 5).activity.heard_ms,
            Some(3_000)
        );
        assert_eq!(device(&store, account, v2, 6).activity.unanswered, 1);
    }

    #[test]
    fn a_device_back_in_the_list_starts_afresh() {
        let (store, account) = store();
        let v2 = Version::Omemo2;
        store
            .set_omemo_device_list(account, BOB, v2, &[5, 6])
            .unwrap();
        let quiet = DeviceActivity {
            heard_ms: Some(10),
            unanswered: 150,
            unanswered_since_ms: Some(20),
        };
        for id in [5, 6] {
            assert!(store
                .set_omemo_device_activity(account, BOB, v2, id, quiet)
                .unwrap());
        }
        // Listed again unchanged: still as quiet as it was.
        store
            .set_omemo_device_list(account, BOB, v2, &[5, 6])
            .unwrap();
        assert_eq!(device(&store, account, v2, 5).activity, quiet);
        // Gone, then back: it announced itself again.
        store.set_omemo_device_list(account, BOB, v2, &[6]).unwrap();
        assert!(!device(&store, account, v2, 5).active);
        store
            .set_omemo_device_list(account, BOB, v2, &[5, 6])
            .unwrap();
        let back = device(&store, account, v2, 5);
        assert!(back.active);
        assert_eq!(back.activity.unanswered, 0);
        assert_eq!(back.activity.unanswered_since_ms, None);
        assert_eq!(back.activity.heard_ms, Some(10));
        assert_eq!(device(&store, account, v2, 6).activity, quiet);
        // An inconsistent record is refused; an unknown device is reported.
        let bad = DeviceActivity {
            heard_ms: None,
            unanswered: 3,
            unanswered_since_ms: None,
        };
        assert!(store
            .set_omemo_device_activity(account, BOB, v2, 5, bad)
            .is_err());
        assert!(!store
            .set_omemo_device_activity(account, BOB, v2, 99, quiet)
            .unwrap());
    }
}
