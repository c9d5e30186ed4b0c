use rusqlite::{params, OptionalExtension};

use crate::error::{fk_not_found, Result, StoreError};
use crate::sql;
use crate::tx::{now_ms, Tx};
use crate::types::{AccountId, MessageId, OutboxEntry, OutboxId};

impl Tx<'_> {
    /// Queues a stanza for `account`. Commit this before handing the stanza to the
    /// socket, so a crash between the two re-sends rather than loses it.
    pub fn outbox_push(
        &self,
        account: AccountId,
        message: Option<MessageId>,
        kind: &str,
        payload: &str,
    ) -> Result<OutboxId> {
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (account_id, message_id, kind, payload, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![account, message, kind, payload, now_ms()])
            .map_err(fk_not_found("account or message"))?;
        let id = OutboxId(self.conn.last_insert_rowid());
        tracing::debug!(account = account.0, outbox = id.0, "stanza queued");
        Ok(id)
    }

    /// The account's pending stanzas in the order they were queued.
    pub fn outbox(&self, account: AccountId) -> Result<Vec<OutboxEntry>> {
        let mut stmt = self.conn.prepare_cached(sql::OUTBOX)?;
        let rows = stmt.query_map([account], |r| {
            Ok(OutboxEntry {
                id: r.get(0)?,
                account: r.get(1)?,
                message: r.get(2)?,
                kind: r.get(3)?,
                payload: r.get(4)?,
                created_ms: r.get(5)?,
                attempts: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Drops an acknowledged entry; returns false if it was already gone (an ack can be
    /// processed twice across a resume).
    pub fn outbox_remove(&self, id: OutboxId) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([id])?;
        Ok(n > 0)
    }

    /// Counts one more send attempt; returns the new count.
    pub fn outbox_bump_attempts(&self, id: OutboxId) -> Result<u32> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1 RETURNING attempts",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NotFound("outbox entry"))
    }
}
