//! History beyond what a catch-up brings (schema v7): gaps the server's archive may have
//! left, and how far back scrolling has read it.

use rusqlite::{params, OptionalExtension};

use crate::error::{fk_not_found, Result};
use crate::messages::message_from_row;
use crate::sql;
use crate::tx::Tx;
use crate::types::{AccountId, ConversationId, MessageRecord};

/// Gaps kept per account: the newest ones matter; the oldest are dropped past this.
const MAX_GAPS: i64 = 100;

/// Messages after `after_ms` and before `before_ms` may be missing: the archive had lost
/// them (expired) before we read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryGap {
    pub after_ms: i64,
    pub before_ms: i64,
}

impl Tx<'_> {
    /// Records a gap (an empty or inverted one is ignored).
    pub fn add_history_gap(&self, account: AccountId, gap: HistoryGap) -> Result<()> {
        if gap.after_ms >= gap.before_ms {
            return Ok(());
        }
        self.atomic(|| {
            // The same gap seen again (a catch-up cut short before its cursor moved) or one
            // overlapping it is one stretch of lost history.
            let merged = self
                .conn
                .prepare_cached(
                    "UPDATE history_gaps SET after_ms = min(after_ms, ?2),
                                             before_ms = max(before_ms, ?3)
                     WHERE id = (SELECT id FROM history_gaps
                                 WHERE account_id = ?1 AND after_ms <= ?3 AND before_ms >= ?2
                                 ORDER BY after_ms LIMIT 1)",
                )?
                .execute(params![account, gap.after_ms, gap.before_ms])?;
            if merged > 0 {
                return Ok(());
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO history_gaps (account_id, after_ms, before_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![account, gap.after_ms, gap.before_ms])
                .map_err(fk_not_found("account"))?;
            self.conn
                .prepare_cached(
                    "DELETE FROM history_gaps WHERE account_id = ?1 AND id NOT IN
                     (SELECT id FROM history_gaps WHERE account_id = ?1
                      ORDER BY after_ms DESC LIMIT ?2)",
                )?
                .execute(params![account, MAX_GAPS])?;
            Ok(())
        })
    }

    /// The account's gaps, oldest first.
    pub fn history_gaps(&self, account: AccountId) -> Result<Vec<HistoryGap>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT after_ms, before_ms FROM history_gaps WHERE account_id = ?1
             ORDER BY after_ms, id",
        )?;
        let rows = stmt.query_map([account], |r| {
            Ok(HistoryGap {
                after_ms: r.get(0)?,
                before_ms: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether scrolling back has reached the start of the archive for this conversation.
    pub fn history_complete(&self, conversation: ConversationId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT history_complete FROM conversations WHERE id = ?1")?
            .query_row([conversation], |r| r.get::<_, bool>(0))
            .optional()?
            .ok_or_else(|| crate::StoreError::NotFound("conversation"))
    }

    pub fn set_history_complete(&self, conversation: ConversationId, complete: bool) -> Result<()> {
        let n = self
            .conn
            .prepare_cached("UPDATE conversations SET history_complete = ?2 WHERE id = ?1")?
            .execute(params![conversation, complete])?;
        if n == 0 {
            return Err(crate::StoreError::NotFound("conversation"));
        }
        Ok(())
    }

    /// The oldest message of the conversation's history (changes to messages excluded).
    pub fn oldest_message(&self, conversation: ConversationId) -> Result<Option<MessageRecord>> {
        Ok(self
            .conn
            .prepare_cached(sql::OLDEST_MESSAGE)?
            .query_row([conversation], message_from_row)
            .optional()?)
    }
}
