use rusqlite::{params, OptionalExtension, Row};

use crate::conversations::END;
use crate::error::{is_unique_violation, Result, StoreError};
use crate::sql;
use crate::tx::{now_ms, Tx};
use crate::types::{
    ConversationId, DeliveryState, Direction, Inserted, MessageId, MessageKind, MessageRecord,
    NewMessage,
};
use crate::AccountId;

pub(crate) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: row.get(0)?,
        conversation: row.get(1)?,
        account: row.get(2)?,
        direction: row.get(3)?,
        sender: row.get(4)?,
        body: row.get(5)?,
        origin_id: row.get(6)?,
        stanza_id: row.get(7)?,
        stanza_id_by: row.get(8)?,
        timestamp_ms: row.get(9)?,
        received_ms: row.get(10)?,
        delivery_state: row.get(11)?,
        encryption: row.get(12)?,
        error: row.get(13)?,
        kind: row.get(14)?,
        target: row.get(15)?,
        edited_ms: row.get(16)?,
        retracted_ms: row.get(17)?,
        reply_to: row.get(18)?,
        markable: row.get(19)?,
        replaces: row.get(20)?,
        occupant_id: row.get(21)?,
        private_with: row.get(22)?,
    })
}

/// An empty id attribute from the network is no id: deduplicating on "" would merge
/// unrelated messages.
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl Tx<'_> {
    /// Stores a message unless it is already there.
    ///
    /// Deduplication, within the conversation: first by origin-id, then by
    /// (stanza-id, by). A copy that arrives twice (carbon and MAM, a re-send after a
    /// failed resume) is stored once; if the later copy carries a stanza-id the stored
    /// one lacks, the stanza-id is recorded on the stored message.
    ///
    /// A new incoming message that is not already `Read` counts as unread. The
    /// conversation's last message moves only if the new message is newer in
    /// (timestamp, id) order, so archive back-fill does not disturb the chat list.
    pub fn insert_message(&self, m: &NewMessage) -> Result<Inserted> {
        let origin_id = non_empty(&m.origin_id);
        let stanza = match (non_empty(&m.stanza_id), non_empty(&m.stanza_id_by)) {
            (Some(id), Some(by)) => Some((id, by)),
            (None, _) => None,
            (Some(_), None) => {
                return Err(StoreError::InvalidInput(
                    "stanza_id needs stanza_id_by (XEP-0359 'by')",
                ))
            }
        };
        self.atomic(|| {
            let account = self.conversation_account(m.conversation)?;
            if let Some(origin_id) = origin_id {
                let existing: Option<MessageId> = self
                    .conn
                    .prepare_cached(sql::DUPLICATE_BY_ORIGIN_ID)?
                    .query_row(params![m.conversation, origin_id], |r| r.get(0))
                    .optional()?;
                if let Some(existing) = existing {
                    if let Some((sid, by)) = stanza {
                        // OR IGNORE: another stored message may already own this
                        // stanza-id; keeping the first association is good enough.
                        self.conn
                            .prepare_cached(
                                "UPDATE OR IGNORE messages SET stanza_id = ?2, stanza_id_by = ?3
                                 WHERE id = ?1 AND stanza_id IS NULL",
                            )?
                            .execute(params![existing, sid, by])?;
                    }
                    tracing::debug!(message = existing.0, "duplicate message (origin-id)");
                    return Ok(Inserted::Duplicate(existing));
                }
            }
            if let Some((sid, by)) = stanza {
                let existing: Option<MessageId> = self
                    .conn
                    .prepare_cached(sql::DUPLICATE_BY_STANZA_ID)?
                    .query_row(params![m.conversation, by, sid], |r| r.get(0))
                    .optional()?;
                if let Some(existing) = existing {
                    tracing::debug!(message = existing.0, "duplicate message (stanza-id)");
                    return Ok(Inserted::Duplicate(existing));
                }
            }

            if m.kind != MessageKind::Message
                && (m.target.is_none()
                    || (m.direction == Direction::Incoming
                        && m.delivery_state != DeliveryState::Read))
            {
                return Err(StoreError::InvalidInput(
                    "a correction, retraction or reaction names its message and is never unread",
                ));
            }
            let received_ms = now_ms();
            self.conn
                .prepare_cached(
                    "INSERT INTO messages (conversation_id, direction, sender, body, origin_id,
                         stanza_id, stanza_id_by, timestamp_ms, received_ms, delivery_state,
                         encryption, error, kind, target_id, reply_to, markable, replaces)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                             ?16, ?17)",
                )?
                .execute(params![
                    m.conversation,
                    m.direction,
                    m.sender,
                    m.body,
                    origin_id,
                    stanza.map(|s| s.0),
                    stanza.map(|s| s.1),
                    m.timestamp_ms,
                    received_ms,
                    m.delivery_state,
                    m.encryption,
                    m.error,
                    m.kind,
                    m.target,
                    m.reply_to,
                    m.markable,
                    m.replaces,
                ])?;
            let id = MessageId(self.conn.last_insert_rowid());
            let hidden = m.kind != MessageKind::Message;

            if !hidden {
                self.conn
                    .prepare_cached(sql::ADVANCE_LAST_MESSAGE)?
                    .execute(params![
                        m.conversation,
                        id,
                        m.timestamp_ms,
                        m.sender,
                        m.body,
                        m.direction,
                        m.delivery_state,
                    ])?;
            }
            if m.direction == Direction::Incoming && m.delivery_state != DeliveryState::Read {
                self.conn
                    .prepare_cached(
                        "UPDATE conversations SET unread_count = unread_count + 1 WHERE id = ?1",
                    )?
                    .execute([m.conversation])?;
            }
            tracing::trace!(
                message = id.0,
                conversation = m.conversation.0,
                "message stored"
            );
            Ok(Inserted::New(Box::new(MessageRecord {
                id,
                conversation: m.conversation,
                account,
                direction: m.direction,
                sender: m.sender.clone(),
                body: m.body.clone(),
                origin_id: origin_id.map(str::to_owned),
                stanza_id: stanza.map(|s| s.0.to_owned()),
                stanza_id_by: stanza.map(|s| s.1.to_owned()),
                timestamp_ms: m.timestamp_ms,
                received_ms,
                delivery_state: m.delivery_state,
                encryption: m.encryption,
                error: m.error.clone(),
                kind: m.kind,
                target: m.target,
                edited_ms: None,
                retracted_ms: None,
                reply_to: m.reply_to.clone(),
                markable: m.markable,
                replaces: m.replaces.clone(),
                occupant_id: None,
                private_with: None,
            })))
        })
    }

    /// [`Tx::insert_message`] for many messages in one transaction (one commit, one
    /// fsync): for archive catch-up and fixtures. All or nothing.
    pub fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        self.atomic(|| messages.iter().map(|m| self.insert_message(m)).collect())
    }

    pub fn message(&self, id: MessageId) -> Result<MessageRecord> {
        self.conn
            .prepare_cached(sql::MESSAGE_BY_ID)?
            .query_row([id], message_from_row)
            .optional()?
            .ok_or(StoreError::NotFound("message"))
    }

    pub fn message_by_origin_id(
        &self,
        conversation: ConversationId,
        origin_id: &str,
    ) -> Result<Option<MessageRecord>> {
        Ok(self
            .conn
            .prepare_cached(sql::MESSAGE_BY_ORIGIN_ID)?
            .query_row(params![conversation, origin_id], message_from_row)
            .optional()?)
    }

    /// Finds a message of `account` by origin-id in any conversation, for receipts and
    /// markers that carry only the id. Should several conversations hold the id, the most
    /// recently stored message wins; check `conversation`/`direction` against the sender.
    pub fn message_by_account_origin_id(
        &self,
        account: AccountId,
        origin_id: &str,
    ) -> Result<Option<MessageRecord>> {
        Ok(self
            .conn
            .prepare_cached(sql::MESSAGE_BY_ACCOUNT_ORIGIN_ID)?
            .query_row(params![account, origin_id], message_from_row)
            .optional()?)
    }

    /// Moves a message in its conversation's order (the archive catch-up puts messages
    /// that arrived out of order where the server's archive has them); the conversation's
    /// preview follows. Returns whether it moved.
    pub fn set_message_time(&self, id: MessageId, timestamp_ms: i64) -> Result<bool> {
        self.atomic(|| {
            let conversation: Option<ConversationId> = self
                .conn
                .prepare_cached(
                    "UPDATE messages SET timestamp_ms = ?2 WHERE id = ?1 AND timestamp_ms <> ?2
                     RETURNING conversation_id",
                )?
                .query_row(params![id, timestamp_ms], |r| r.get(0))
                .optional()?;
            let Some(conversation) = conversation else {
                return Ok(false);
            };
            self.conn
                .prepare_cached(sql::RESET_LAST_MESSAGE)?
                .execute([conversation])?;
            Ok(true)
        })
    }

    /// The message an account's archive knows by `stanza_id` (stamped `by` that archive).
    pub fn message_by_archive_id(
        &self,
        account: AccountId,
        by: &str,
        stanza_id: &str,
    ) -> Result<Option<MessageId>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id
                 WHERE m.stanza_id = ?3 AND m.stanza_id_by = ?2 AND c.account_id = ?1
                 ORDER BY m.id DESC LIMIT 1",
            )?
            .query_row(params![account, by, stanza_id], |r| r.get(0))
            .optional()?)
    }

    /// (time, id) of the latest of a conversation's incoming messages stored up to `up_to`.
    pub fn latest_incoming_up_to(
        &self,
        conversation: ConversationId,
        up_to: MessageId,
    ) -> Result<Option<(i64, MessageId)>> {
        // From the newest end of the time index: the first match is usually the newest row.
        Ok(self
            .conn
            .prepare_cached(
                "SELECT timestamp_ms, id FROM messages
                 WHERE conversation_id = ?1 AND id <= ?2 AND direction = 0
                 ORDER BY timestamp_ms DESC, id DESC LIMIT 1",
            )?
            .query_row(params![conversation, up_to], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Moves a message's delivery state if [`DeliveryState::can_become`] allows it;
    /// returns whether it changed. Late or repeated receipts are therefore harmless.
    pub fn set_delivery_state(&self, id: MessageId, state: DeliveryState) -> Result<bool> {
        self.atomic(|| {
            // One conditional UPDATE: the check and the write cannot be split.
            let changed: Option<(ConversationId, Direction)> = self
                .conn
                .prepare_cached(
                    "UPDATE messages SET delivery_state = ?2
                     WHERE id = ?1 AND ((1 << delivery_state) & ?3) <> 0
                     RETURNING conversation_id, direction",
                )?
                .query_row(
                    params![id, state, DeliveryState::reachable_from_mask(state)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match changed {
                Some((conversation, direction)) => {
                    if direction == Direction::Incoming {
                        self.recount_unread(conversation)?;
                    }
                    self.refresh_last_state(conversation)?;
                    Ok(true)
                }
                None => {
                    let exists = self
                        .conn
                        .prepare_cached("SELECT 1 FROM messages WHERE id = ?1")?
                        .exists([id])?;
                    if exists {
                        Ok(false)
                    } else {
                        Err(StoreError::NotFound("message"))
                    }
                }
            }
        })
    }

    /// Records the server-assigned XEP-0359 stanza-id learned after storing (e.g. from
    /// the archive's reflection of our own message).
    pub fn set_stanza_id(&self, id: MessageId, stanza_id: &str, by: &str) -> Result<()> {
        if stanza_id.is_empty() || by.is_empty() {
            return Err(StoreError::InvalidInput("empty stanza-id"));
        }
        let n = self
            .conn
            .prepare_cached("UPDATE messages SET stanza_id = ?2, stanza_id_by = ?3 WHERE id = ?1")?
            .execute(params![id, stanza_id, by])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict("stanza-id already used in this conversation".into())
                } else {
                    e.into()
                }
            })?;
        if n == 0 {
            return Err(StoreError::NotFound("message"));
        }
        Ok(())
    }

    /// A page of history: the newest `limit` messages strictly older than `before`
    /// (or the newest overall), in chronological order. Pass the first id of a page as
    /// `before` to get the previous page; every message appears on exactly one page.
    pub fn messages(
        &self,
        conversation: ConversationId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>> {
        self.conversation_account(conversation)?;
        let (ts, id) = match before {
            Some(b) => self.message_position(conversation, b)?,
            None => END,
        };
        let mut stmt = self.conn.prepare_cached(sql::MESSAGE_PAGE)?;
        let rows = stmt.query_map(params![conversation, ts, id, limit], message_from_row)?;
        let mut page: Vec<MessageRecord> = rows.collect::<rusqlite::Result<_>>()?;
        page.reverse();
        Ok(page)
    }

    pub fn message_count(&self, conversation: ConversationId) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached(sql::MESSAGE_COUNT)?
            .query_row([conversation], |r| r.get(0))?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("negative count".into()))
    }
}
