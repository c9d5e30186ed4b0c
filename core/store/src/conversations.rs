use rusqlite::{params, OptionalExtension, Row};

use crate::error::{fk_not_found, Result, StoreError};
use crate::messages::message_from_row;
use crate::sql;
use crate::tx::{now_ms, Tx};
use crate::types::{
    AccountId, ConversationId, ConversationKind, ConversationSummary, DeliveryState, LastFile,
    LastMessage, MessageId, MessageRecord,
};

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<ConversationSummary> {
    let last_id: Option<MessageId> = row.get(6)?;
    // The preview columns are set together with last_message_id (NULL only before the
    // first message).
    let last_message = match last_id {
        Some(id) => Some(LastMessage {
            id,
            sender: row.get(7)?,
            body: row.get(8)?,
            direction: row.get(9)?,
            delivery_state: row.get(10)?,
            timestamp_ms: row.get(11)?,
            file: match row.get::<_, Option<String>>(12)? {
                Some(name) => Some(LastFile {
                    name,
                    url: row.get(13)?,
                }),
                None => None,
            },
        }),
        None => None,
    };
    Ok(ConversationSummary {
        id: row.get(0)?,
        account: row.get(1)?,
        peer: row.get(2)?,
        kind: row.get(3)?,
        last_activity_ms: row.get(4)?,
        unread_count: row.get(5)?,
        last_message,
    })
}

/// `(timestamp_ms, id)` bound that is after every message.
pub(crate) const END: (i64, i64) = (i64::MAX, i64::MAX);

impl Tx<'_> {
    /// The one-to-one conversation of `account` with `peer` (a bare JID), created when
    /// missing if `create` is set.
    pub fn conversation(
        &self,
        account: AccountId,
        peer: &str,
        create: bool,
    ) -> Result<Option<ConversationId>> {
        let existing = self
            .conn
            .prepare_cached("SELECT id FROM conversations WHERE account_id = ?1 AND peer = ?2")?
            .query_row(params![account, peer], |r| r.get(0))
            .optional()?;
        if existing.is_some() || !create {
            return Ok(existing);
        }
        if peer.is_empty() {
            return Err(StoreError::InvalidInput("empty JID"));
        }
        let now = now_ms();
        self.conn
            .prepare_cached(
                "INSERT INTO conversations (account_id, peer, kind, created_ms, last_activity_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![account, peer, ConversationKind::Chat, now])
            .map_err(fk_not_found("account"))?;
        let id = ConversationId(self.conn.last_insert_rowid());
        tracing::debug!(
            account = account.0,
            conversation = id.0,
            "conversation created"
        );
        Ok(Some(id))
    }

    pub fn conversation_info(&self, id: ConversationId) -> Result<ConversationSummary> {
        self.conn
            .prepare_cached(sql::CONVERSATION_SUMMARY)?
            .query_row([id], summary_from_row)
            .optional()?
            .ok_or(StoreError::NotFound("conversation"))
    }

    /// The chat list: every conversation of every account, most recent activity first.
    ///
    /// Reads the conversations table only (the last message's preview is denormalized
    /// there), so the cost does not grow with the number of stored messages.
    pub fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        let mut stmt = self.conn.prepare_cached(sql::CONVERSATION_LIST)?;
        let rows = stmt.query_map([], summary_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks incoming messages read: all of them, or those up to and including `up_to`
    /// in (timestamp, id) order. Returns the messages that were unread until now, oldest
    /// first, so the caller can send displayed markers/read receipts for them.
    pub fn mark_read(
        &self,
        conversation: ConversationId,
        up_to: Option<MessageId>,
    ) -> Result<Vec<MessageRecord>> {
        self.atomic(|| {
            self.conversation_account(conversation)?;
            let (ts, id) = match up_to {
                Some(m) => self.message_position(conversation, m)?,
                None => END,
            };
            let mut records: Vec<MessageRecord> = {
                let mut stmt = self.conn.prepare_cached(sql::UNREAD_UP_TO)?;
                let rows = stmt.query_map(params![conversation, ts, id], message_from_row)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            self.conn
                .prepare_cached(sql::MARK_READ_UP_TO)?
                .execute(params![conversation, ts, id])?;
            self.recount_unread(conversation)?;
            self.refresh_last_state(conversation)?;
            for r in &mut records {
                r.delivery_state = DeliveryState::Read;
            }
            tracing::debug!(
                conversation = conversation.0,
                marked = records.len(),
                "conversation marked read"
            );
            Ok(records)
        })
    }

    pub(crate) fn conversation_account(&self, id: ConversationId) -> Result<AccountId> {
        self.conn
            .prepare_cached("SELECT account_id FROM conversations WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NotFound("conversation"))
    }

    /// `(timestamp_ms, id)` of a message that must belong to `conversation`.
    pub(crate) fn message_position(
        &self,
        conversation: ConversationId,
        id: MessageId,
    ) -> Result<(i64, i64)> {
        self.conn
            .prepare_cached(
                "SELECT timestamp_ms, id FROM messages WHERE id = ?1 AND conversation_id = ?2",
            )?
            .query_row(params![id, conversation], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or(StoreError::NotFound("message"))
    }

    /// Re-copies the last message's delivery state into the conversation's preview.
    pub(crate) fn refresh_last_state(&self, conversation: ConversationId) -> Result<()> {
        self.conn
            .prepare_cached(sql::REFRESH_LAST_STATE)?
            .execute([conversation])?;
        Ok(())
    }

    /// Recomputes the denormalized unread count from the partial index (cost grows with
    /// the unread messages only).
    pub(crate) fn recount_unread(&self, conversation: ConversationId) -> Result<()> {
        self.conn
            .prepare_cached(sql::RECOUNT_UNREAD)?
            .execute([conversation])?;
        Ok(())
    }
}
