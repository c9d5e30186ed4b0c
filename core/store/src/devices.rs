//! OMEMO device lists as seen in PEP, and each conversation's encryption choice (schema v5).

use linnet_omemo::Version;
use rusqlite::{params, OptionalExtension};

use crate::error::{fk_not_found, Result, StoreError};
use crate::tx::{now_ms, Tx};
use crate::types::{AccountId, ConversationId, EncryptionPolicy};

/// One device of a JID's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OmemoDevice {
    pub device_id: u32,
    /// In the list as last seen; an inactive device gets nothing encrypted for it.
    pub active: bool,
}

fn version_code(version: Version) -> i64 {
    match version {
        Version::Omemo03 => 0,
        Version::Omemo2 => 2,
    }
}

impl Tx<'_> {
    /// Records `jid`'s device list for `version` as just seen: the devices in `ids` are
    /// active, the others we knew become inactive.
    pub fn set_omemo_device_list(
        &self,
        account: AccountId,
        jid: &str,
        version: Version,
        ids: &[u32],
    ) -> Result<()> {
        let v = version_code(version);
        let now = now_ms();
        self.atomic(|| {
            self.conn
                .prepare_cached(
                    "INSERT INTO omemo_device_lists (account_id, jid, version, updated_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET updated_ms = excluded.updated_ms",
                )?
                .execute(params![account, jid, v, now])
                .map_err(fk_not_found("account"))?;
            self.conn
                .prepare_cached(
                    "UPDATE omemo_devices SET active = 0
                     WHERE account_id = ?1 AND jid = ?2 AND version = ?3",
                )?
                .execute(params![account, jid, v])?;
            let mut upsert = self.conn.prepare_cached(
                "INSERT INTO omemo_devices (account_id, jid, version, device_id, active, first_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5)
                 ON CONFLICT DO UPDATE SET active = 1",
            )?;
            for id in ids {
                if !(1..=0x7FFF_FFFF).contains(id) {
                    return Err(StoreError::InvalidInput("device id out of range"));
                }
                upsert.execute(params![account, jid, v, id, now])?;
            }
            Ok(())
        })
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
            "SELECT device_id, active FROM omemo_devices
             WHERE account_id = ?1 AND jid = ?2 AND version = ?3 ORDER BY device_id",
        )?;
        let rows = stmt.query_map(params![account, jid, v], |r| {
            Ok(OmemoDevice {
                device_id: r.get(0)?,
                active: r.get(1)?,
            })
        })?;
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
