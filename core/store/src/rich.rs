//! What corrections, retractions, reactions and displayed markers do to stored messages
//! (schema v6). Whether the sender may change a message is the caller's decision; these
//! only keep the changes ordered: an older change arriving late (an archive copy after a
//! live one) never undoes a newer one.

use rusqlite::{params, OptionalExtension};

use crate::error::{Result, StoreError};
use crate::messages::message_from_row;
use crate::sql;
use crate::tx::Tx;
use crate::types::{ConversationId, DeliveryState, MessageId, MessageRecord};

/// One sender's reactions to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactionSet {
    pub message: MessageId,
    pub sender: String,
    pub emojis: Vec<String>,
}

impl Tx<'_> {
    /// The message of the history (not a change to one) that `id` names in the
    /// conversation: by XEP-0359 origin-id (or the stanza id when the sender set none),
    /// else the correction of it that stands in its place (see `NewMessage::replaces`).
    pub fn message_by_reference(
        &self,
        conversation: ConversationId,
        id: &str,
    ) -> Result<Option<MessageRecord>> {
        if let Some(m) = self
            .message_by_origin_id(conversation, id)?
            .filter(|m| m.kind == crate::MessageKind::Message)
        {
            return Ok(Some(m));
        }
        Ok(self
            .conn
            .prepare_cached(sql::STAND_IN)?
            .query_row(params![conversation, id], message_from_row)
            .optional()?)
    }

    /// Shows `body` as the text of `target`, written at `at_ms`, unless a later correction
    /// is shown already or the message was retracted. Returns whether it changed.
    pub fn apply_correction(&self, target: MessageId, body: &str, at_ms: i64) -> Result<bool> {
        self.apply_correction_with_reply(target, body, None, at_ms)
    }

    /// [`Tx::apply_correction`] by a correction that says what the message answers
    /// (XEP-0461 `reply_to`, as stored in [`NewMessage::reply_to`](crate::NewMessage)):
    /// when it applies, the message answers that from now on. `None` keeps what the
    /// message answered (a correction that only carries the new text).
    pub fn apply_correction_with_reply(
        &self,
        target: MessageId,
        body: &str,
        reply_to: Option<&str>,
        at_ms: i64,
    ) -> Result<bool> {
        self.atomic(|| {
            let conversation: Option<ConversationId> = self
                .conn
                .prepare_cached(
                    "UPDATE messages SET body = ?2, edited_ms = ?3, error = NULL,
                                         reply_to = coalesce(?4, reply_to)
                     WHERE id = ?1 AND kind = 0 AND retracted_ms IS NULL
                       AND (edited_ms IS NULL OR edited_ms <= ?3)
                     RETURNING conversation_id",
                )?
                .query_row(params![target, body, at_ms, reply_to], |r| r.get(0))
                .optional()?;
            match conversation {
                Some(c) => {
                    self.refresh_last_body(c, target)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    /// Empties `target` for good and drops its reactions. Returns whether it changed.
    pub fn apply_retraction(&self, target: MessageId, at_ms: i64) -> Result<bool> {
        self.atomic(|| {
            let conversation: Option<ConversationId> = self
                .conn
                .prepare_cached(
                    "UPDATE messages SET body = '', retracted_ms = ?2, error = NULL
                     WHERE id = ?1 AND kind = 0 AND retracted_ms IS NULL
                     RETURNING conversation_id",
                )?
                .query_row(params![target, at_ms], |r| r.get(0))
                .optional()?;
            let Some(c) = conversation else {
                return Ok(false);
            };
            self.conn
                .prepare_cached("DELETE FROM reactions WHERE message_id = ?1")?
                .execute([target])?;
            self.refresh_last_body(c, target)?;
            Ok(true)
        })
    }

    /// Replaces `sender`'s reactions to `target` by `emojis` (none: withdrawn), unless a
    /// newer set is stored. Returns whether it changed.
    pub fn set_reactions(
        &self,
        target: MessageId,
        sender: &str,
        emojis: &[String],
        at_ms: i64,
    ) -> Result<bool> {
        let json = serde_json::to_string(emojis)
            .map_err(|_| StoreError::InvalidInput("reactions not serializable"))?;
        self.atomic(|| {
            let retracted: Option<Option<i64>> = self
                .conn
                .prepare_cached("SELECT retracted_ms FROM messages WHERE id = ?1 AND kind = 0")?
                .query_row([target], |r| r.get(0))
                .optional()?;
            match retracted {
                None => return Err(StoreError::NotFound("message")),
                Some(Some(_)) => return Ok(false),
                Some(None) => {}
            }
            let n = self
                .conn
                .prepare_cached(
                    "INSERT INTO reactions (message_id, sender, emojis, updated_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET emojis = excluded.emojis,
                                               updated_ms = excluded.updated_ms
                     WHERE excluded.updated_ms >= reactions.updated_ms",
                )?
                .execute(params![target, sender, json, at_ms])?;
            Ok(n > 0)
        })
    }

    /// The reactions to the given messages, by message then sender.
    pub fn reactions(&self, messages: &[MessageId]) -> Result<Vec<ReactionSet>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sender, emojis FROM reactions
             WHERE message_id = ?1 AND emojis <> '[]' ORDER BY updated_ms, sender",
        )?;
        let mut out = Vec::new();
        for m in messages {
            let rows = stmt.query_map([m], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (sender, json) = row?;
                let emojis: Vec<String> = serde_json::from_str(&json)
                    .map_err(|_| StoreError::Corrupt("reactions are not a JSON list".into()))?;
                out.push(ReactionSet {
                    message: *m,
                    sender,
                    emojis,
                });
            }
        }
        Ok(out)
    }

    /// XEP-0333: the peer displayed `up_to` and so everything we sent before it. Returns
    /// whether anything changed.
    pub fn mark_displayed_up_to(
        &self,
        conversation: ConversationId,
        up_to: MessageId,
    ) -> Result<bool> {
        self.atomic(|| {
            let (ts, id) = self.message_position(conversation, up_to)?;
            let n = self
                .conn
                .prepare_cached(
                    "UPDATE messages SET delivery_state = ?4
                     WHERE conversation_id = ?1 AND direction = 1 AND kind = 0
                       AND delivery_state IN (?5, ?6) AND (timestamp_ms, id) <= (?2, ?3)",
                )?
                .execute(params![
                    conversation,
                    ts,
                    id,
                    DeliveryState::Read,
                    DeliveryState::Sent,
                    DeliveryState::Delivered
                ])?;
            if n > 0 {
                self.refresh_last_state(conversation)?;
            }
            Ok(n > 0)
        })
    }

    /// The newest incoming message of the history, for displayed markers.
    pub fn latest_incoming(&self, conversation: ConversationId) -> Result<Option<MessageRecord>> {
        Ok(self
            .conn
            .prepare_cached(sql::LATEST_INCOMING)?
            .query_row([conversation], message_from_row)
            .optional()?)
    }

    /// Keeps the chat list's preview in step when the last message's text changed.
    fn refresh_last_body(&self, conversation: ConversationId, message: MessageId) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE conversations SET last_body = (SELECT body FROM messages WHERE id = ?2)
                 WHERE id = ?1 AND last_message_id = ?2",
            )?
            .execute(params![conversation, message])?;
        Ok(())
    }
}
