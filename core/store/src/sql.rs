//! SQL text of the queries whose speed matters, in one place so that the query-plan test
//! below checks exactly the statements that run.

macro_rules! account_select {
    () => {
        "SELECT id, jid, password, resource, enabled, server_host, server_port, direct_tls
         FROM accounts"
    };
}

/// Columns in the order `messages::message_from_row` reads them.
macro_rules! message_select {
    () => {
        "SELECT m.id, m.conversation_id, c.account_id, m.direction, m.sender, m.body,
                m.origin_id, m.stanza_id, m.stanza_id_by, m.timestamp_ms, m.received_ms,
                m.delivery_state, m.encryption, m.error, m.kind, m.target_id, m.edited_ms,
                m.retracted_ms, m.reply_to, m.markable, m.replaces, m.occupant_id,
                m.private_with
         FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    };
}

/// Columns in the order `conversations::summary_from_row` reads them. The last
/// message's preview is denormalized into the conversation row; only the file it may
/// carry is looked up, by primary key.
macro_rules! summary_select {
    () => {
        "SELECT c.id, c.account_id, c.peer, c.kind, c.last_activity_ms, c.unread_count,
                c.last_message_id, c.last_sender, c.last_body, c.last_direction,
                c.last_delivery_state, c.last_timestamp_ms, a.name, a.url
         FROM conversations c LEFT JOIN attachments a ON a.message_id = c.last_message_id"
    };
}

pub(crate) const ACCOUNT_BY_ID: &str = concat!(account_select!(), " WHERE id = ?1");
pub(crate) const ACCOUNT_BY_JID: &str = concat!(account_select!(), " WHERE jid = ?1");
pub(crate) const ACCOUNTS: &str = concat!(account_select!(), " ORDER BY id");

pub(crate) const CONVERSATION_SUMMARY: &str = concat!(summary_select!(), " WHERE c.id = ?1");
/// One index scan over conversations; messages are not touched.
pub(crate) const CONVERSATION_LIST: &str = concat!(
    summary_select!(),
    " ORDER BY c.last_activity_ms DESC, c.id DESC"
);

// The literal `direction = 0 AND delivery_state <> 3` lets SQLite use the partial index
// messages_unread; with bound parameters it could not prove the index applies.
pub(crate) const UNREAD_UP_TO: &str = concat!(
    message_select!(),
    " WHERE m.conversation_id = ?1 AND m.direction = 0 AND m.delivery_state <> 3
        AND (m.timestamp_ms, m.id) <= (?2, ?3)
      ORDER BY m.timestamp_ms, m.id"
);
pub(crate) const MARK_READ_UP_TO: &str = "
    UPDATE messages SET delivery_state = 3
    WHERE conversation_id = ?1 AND direction = 0 AND delivery_state <> 3
      AND (timestamp_ms, id) <= (?2, ?3)";
pub(crate) const RECOUNT_UNREAD: &str = "
    UPDATE conversations SET unread_count = (
        SELECT count(*) FROM messages
        WHERE conversation_id = ?1 AND direction = 0 AND delivery_state <> 3)
    WHERE id = ?1";

pub(crate) const MESSAGE_BY_ID: &str = concat!(message_select!(), " WHERE m.id = ?1");
pub(crate) const MESSAGE_BY_ORIGIN_ID: &str = concat!(
    message_select!(),
    " WHERE m.conversation_id = ?1 AND m.origin_id = ?2"
);
pub(crate) const MESSAGE_BY_ACCOUNT_ORIGIN_ID: &str = concat!(
    message_select!(),
    " WHERE c.account_id = ?1 AND m.origin_id = ?2 ORDER BY m.id DESC LIMIT 1"
);
pub(crate) const MESSAGE_PAGE: &str = concat!(
    message_select!(),
    " WHERE m.conversation_id = ?1 AND (m.timestamp_ms, m.id) < (?2, ?3) AND m.kind = 0
      ORDER BY m.timestamp_ms DESC, m.id DESC LIMIT ?4"
);
pub(crate) const OLDEST_MESSAGE: &str = concat!(
    message_select!(),
    " WHERE m.conversation_id = ?1 AND m.kind = 0 ORDER BY m.timestamp_ms, m.id LIMIT 1"
);
pub(crate) const LATEST_INCOMING: &str = concat!(
    message_select!(),
    " WHERE m.conversation_id = ?1 AND m.direction = 0 AND m.kind = 0
      ORDER BY m.timestamp_ms DESC, m.id DESC LIMIT 1"
);
pub(crate) const MESSAGE_BY_ROOM_STANZA_ID: &str = concat!(
    message_select!(),
    " WHERE m.conversation_id = ?1 AND m.stanza_id_by = ?2 AND m.stanza_id = ?3 AND m.kind = 0"
);
pub(crate) const STAND_IN: &str = concat!(
    message_select!(),
    " WHERE m.conversation_id = ?1 AND m.replaces = ?2 AND m.kind = 0 ORDER BY m.id LIMIT 1"
);
pub(crate) const DUPLICATE_BY_ORIGIN_ID: &str =
    "SELECT id FROM messages WHERE conversation_id = ?1 AND origin_id = ?2";
pub(crate) const DUPLICATE_BY_STANZA_ID: &str = "
    SELECT id FROM messages
    WHERE conversation_id = ?1 AND stanza_id_by = ?2 AND stanza_id = ?3";
/// Moves the last message only forward in (timestamp, id) order, so archive back-fill
/// does not replace it.
pub(crate) const ADVANCE_LAST_MESSAGE: &str = "
    UPDATE conversations
    SET last_message_id = ?2, last_timestamp_ms = ?3, last_sender = ?4, last_body = ?5,
        last_direction = ?6, last_delivery_state = ?7,
        last_activity_ms = max(last_activity_ms, ?3)
    WHERE id = ?1
      AND (last_message_id IS NULL OR (?3, ?2) > (last_timestamp_ms, last_message_id))";
/// Makes the newest message in (timestamp, id) order the preview again, after a message
/// moved in time.
pub(crate) const RESET_LAST_MESSAGE: &str = "
    UPDATE conversations
    SET (last_message_id, last_timestamp_ms, last_sender, last_body, last_direction,
         last_delivery_state) = (
        SELECT id, timestamp_ms, sender, body, direction, delivery_state FROM messages
        WHERE conversation_id = ?1 AND kind = 0 ORDER BY timestamp_ms DESC, id DESC LIMIT 1),
        last_activity_ms = max(last_activity_ms, ifnull(
            (SELECT max(timestamp_ms) FROM messages WHERE conversation_id = ?1 AND kind = 0),
            0))
    WHERE id = ?1";
/// Copies the last message's current delivery state into its preview.
pub(crate) const REFRESH_LAST_STATE: &str = "
    UPDATE conversations
    SET last_delivery_state = (
        SELECT delivery_state FROM messages WHERE id = conversations.last_message_id)
    WHERE id = ?1 AND last_message_id IS NOT NULL";
pub(crate) const MESSAGE_COUNT: &str =
    "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND kind = 0";

pub(crate) const OUTBOX: &str = "
    SELECT id, account_id, message_id, kind, payload, created_ms, attempts
    FROM outbox WHERE account_id = ?1 ORDER BY id";

pub(crate) const KV_GET: &str =
    "SELECT value FROM kv WHERE ifnull(account_id, 0) = ifnull(?1, 0) AND key = ?2";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{DbKey, Store};

    fn plan(store: &Store, sql: &str) -> Vec<String> {
        let conn = store.connection();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            out.push(row.get::<_, String>(3).unwrap());
        }
        out
    }

    /// Guards the indexes the hot paths rely on: no full scan of messages and no
    /// temporary sort, whatever the history size.
    #[test]
    fn hot_queries_use_indexes() {
        let store = Store::open_in_memory(&DbKey::from_bytes([3; 32])).unwrap();
        let hot = [
            CONVERSATION_SUMMARY,
            CONVERSATION_LIST,
            UNREAD_UP_TO,
            MARK_READ_UP_TO,
            RECOUNT_UNREAD,
            MESSAGE_BY_ID,
            MESSAGE_BY_ORIGIN_ID,
            MESSAGE_BY_ACCOUNT_ORIGIN_ID,
            MESSAGE_PAGE,
            OLDEST_MESSAGE,
            LATEST_INCOMING,
            STAND_IN,
            DUPLICATE_BY_ORIGIN_ID,
            DUPLICATE_BY_STANZA_ID,
            ADVANCE_LAST_MESSAGE,
            REFRESH_LAST_STATE,
            RESET_LAST_MESSAGE,
            MESSAGE_COUNT,
            OUTBOX,
            KV_GET,
        ];
        for sql in hot {
            let steps = plan(&store, sql);
            for step in &steps {
                let scan_ok = step == "SCAN c USING INDEX conversations_by_activity";
                assert!(
                    scan_ok || !step.starts_with("SCAN"),
                    "{step} in plan of {sql}"
                );
                assert!(!step.contains("TEMP B-TREE"), "{step} in plan of {sql}");
            }
        }
        let unread = plan(&store, MARK_READ_UP_TO).join("\n");
        assert!(unread.contains("messages_unread"), "{unread}");
        let page = plan(&store, MESSAGE_PAGE).join("\n");
        assert!(page.contains("messages_by_time"), "{page}");
        let list = plan(&store, CONVERSATION_LIST).join("\n");
        assert!(
            !list.contains("messages"),
            "chat list must not read messages: {list}"
        );
        let receipt = plan(&store, MESSAGE_BY_ACCOUNT_ORIGIN_ID).join("\n");
        assert!(receipt.contains("messages_by_origin_id"), "{receipt}");
    }
}
