//! Group chats (schema v8): the rooms an account is in or was in, their members, and the
//! invitations waiting for an answer.

use rusqlite::{params, OptionalExtension, Row};

use crate::error::{fk_not_found, Result, StoreError};
use crate::tx::Tx;
use crate::types::{AccountId, ConversationId, ConversationKind};

/// Invitations kept per account; past this the oldest go (anyone can send them).
const MAX_INVITATIONS: i64 = 50;

/// What we keep of a room between sessions.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub conversation: ConversationId,
    pub account: AccountId,
    /// The room's bare JID.
    pub jid: String,
    pub nick: String,
    pub name: Option<String>,
    pub subject: Option<String>,
    pub password: Option<String>,
    pub autojoin: bool,
    pub archive_cursor: Option<String>,
    pub members_only: bool,
    pub non_anonymous: bool,
    pub archived: bool,
    pub occupant_ids: bool,
    pub removed: Option<String>,
}

impl std::fmt::Debug for RoomRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomRecord")
            .field("conversation", &self.conversation)
            .field("autojoin", &self.autojoin)
            .finish_non_exhaustive()
    }
}

/// A room's features as its disco#info gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomFeatures {
    pub members_only: bool,
    pub non_anonymous: bool,
    pub archived: bool,
    pub occupant_ids: bool,
}

/// Someone who may be in a members-only room, by real JID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMember {
    pub jid: String,
    /// "owner", "admin" or "member".
    pub affiliation: String,
    pub nick: Option<String>,
}

/// An invitation to a room, until accepted or declined.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomInvitation {
    pub room: String,
    pub inviter: String,
    pub reason: Option<String>,
    pub password: Option<String>,
    pub received_ms: i64,
}

impl std::fmt::Debug for RoomInvitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomInvitation")
            .field("received_ms", &self.received_ms)
            .finish_non_exhaustive()
    }
}

const ROOM_SELECT: &str = "SELECT r.conversation_id, c.account_id, c.peer, r.nick, r.name,
        r.subject, r.password, r.autojoin, r.archive_cursor, r.members_only, r.non_anonymous,
        r.archived, r.occupant_ids, r.removed
    FROM rooms r JOIN conversations c ON c.id = r.conversation_id";

fn room_from_row(row: &Row<'_>) -> rusqlite::Result<RoomRecord> {
    Ok(RoomRecord {
        conversation: row.get(0)?,
        account: row.get(1)?,
        jid: row.get(2)?,
        nick: row.get(3)?,
        name: row.get(4)?,
        subject: row.get(5)?,
        password: row.get(6)?,
        autojoin: row.get(7)?,
        archive_cursor: row.get(8)?,
        members_only: row.get(9)?,
        non_anonymous: row.get(10)?,
        archived: row.get(11)?,
        occupant_ids: row.get(12)?,
        removed: row.get(13)?,
    })
}

fn check_affiliation(a: &str) -> Result<()> {
    if matches!(a, "owner" | "admin" | "member") {
        Ok(())
    } else {
        Err(StoreError::InvalidInput("affiliation"))
    }
}

impl Tx<'_> {
    /// The room `jid` of `account`, created (with its conversation) when missing, to be
    /// joined as `nick` from now on: autojoin is set and any earlier removal forgotten.
    /// A one-to-one conversation with the same JID becomes the room's.
    pub fn upsert_room(
        &self,
        account: AccountId,
        jid: &str,
        nick: &str,
        password: Option<&str>,
    ) -> Result<ConversationId> {
        if jid.is_empty() || nick.is_empty() {
            return Err(StoreError::InvalidInput("empty room JID or nickname"));
        }
        self.atomic(|| {
            let conversation = self
                .conversation(account, jid, true)?
                .ok_or(StoreError::NotFound("conversation"))?;
            self.conn
                .prepare_cached("UPDATE conversations SET kind = ?2 WHERE id = ?1")?
                .execute(params![conversation, ConversationKind::GroupChat])?;
            self.conn
                .prepare_cached(
                    "INSERT INTO rooms (conversation_id, nick, password) VALUES (?1, ?2, ?3)
                     ON CONFLICT (conversation_id) DO UPDATE SET nick = ?2,
                         password = coalesce(?3, password), autojoin = 1, removed = NULL",
                )?
                .execute(params![conversation, nick, password])
                .map_err(fk_not_found("conversation"))?;
            Ok(conversation)
        })
    }

    pub fn room(&self, conversation: ConversationId) -> Result<Option<RoomRecord>> {
        Ok(self
            .conn
            .prepare_cached(&format!("{ROOM_SELECT} WHERE r.conversation_id = ?1"))?
            .query_row([conversation], room_from_row)
            .optional()?)
    }

    pub fn room_by_jid(&self, account: AccountId, jid: &str) -> Result<Option<RoomRecord>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "{ROOM_SELECT} WHERE c.account_id = ?1 AND c.peer = ?2"
            ))?
            .query_row(params![account, jid], room_from_row)
            .optional()?)
    }

    /// Every room of the account, joined or not.
    pub fn rooms(&self, account: AccountId) -> Result<Vec<RoomRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{ROOM_SELECT} WHERE c.account_id = ?1 ORDER BY r.conversation_id"
        ))?;
        let rows = stmt.query_map([account], room_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn update_room(
        &self,
        conversation: ConversationId,
        sql: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(&format!(
                "UPDATE rooms SET {sql} WHERE conversation_id = ?1"
            ))?
            .execute(params![conversation, value])?;
        Ok(n > 0)
    }

    pub fn set_room_nick(&self, conversation: ConversationId, nick: &str) -> Result<bool> {
        if nick.is_empty() {
            return Err(StoreError::InvalidInput("empty nickname"));
        }
        self.update_room(conversation, "nick = ?2", &nick)
    }

    pub fn set_room_name(&self, conversation: ConversationId, name: Option<&str>) -> Result<bool> {
        self.update_room(conversation, "name = ?2", &name)
    }

    /// The subject; `None` or empty: none. Returns whether it changed.
    pub fn set_room_subject(
        &self,
        conversation: ConversationId,
        subject: Option<&str>,
    ) -> Result<bool> {
        let subject = subject.filter(|s| !s.is_empty());
        let n = self
            .conn
            .prepare_cached(
                "UPDATE rooms SET subject = ?2 WHERE conversation_id = ?1 AND subject IS NOT ?2",
            )?
            .execute(params![conversation, subject])?;
        Ok(n > 0)
    }

    /// Where reading the room's archive continues next time.
    pub fn set_room_cursor(&self, conversation: ConversationId, cursor: &str) -> Result<bool> {
        self.update_room(conversation, "archive_cursor = ?2", &cursor)
    }

    pub fn set_room_features(
        &self,
        conversation: ConversationId,
        features: RoomFeatures,
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE rooms SET members_only = ?2, non_anonymous = ?3, archived = ?4,
                     occupant_ids = ?5 WHERE conversation_id = ?1",
            )?
            .execute(params![
                conversation,
                features.members_only,
                features.non_anonymous,
                features.archived,
                features.occupant_ids
            ])?;
        Ok(n > 0)
    }

    /// We are no longer in the room and will not rejoin it on our own: we left (`removed`
    /// `None`) or were removed, for the reason given.
    pub fn set_room_left(
        &self,
        conversation: ConversationId,
        removed: Option<&str>,
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE rooms SET autojoin = 0, removed = ?2 WHERE conversation_id = ?1",
            )?
            .execute(params![conversation, removed])?;
        Ok(n > 0)
    }

    pub fn room_members(&self, conversation: ConversationId) -> Result<Vec<RoomMember>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, affiliation, nick FROM room_members WHERE conversation_id = ?1
             ORDER BY jid",
        )?;
        let rows = stmt.query_map([conversation], |r| {
            Ok(RoomMember {
                jid: r.get(0)?,
                affiliation: r.get(1)?,
                nick: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records `jid`'s affiliation (`None`: no longer a member). A nickname of `None`
    /// keeps the one known. Returns whether anything changed.
    pub fn set_room_member(
        &self,
        conversation: ConversationId,
        jid: &str,
        affiliation: Option<&str>,
        nick: Option<&str>,
    ) -> Result<bool> {
        let n = match affiliation {
            None => self
                .conn
                .prepare_cached("DELETE FROM room_members WHERE conversation_id = ?1 AND jid = ?2")?
                .execute(params![conversation, jid])?,
            Some(a) => {
                check_affiliation(a)?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO room_members (conversation_id, jid, affiliation, nick)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (conversation_id, jid) DO UPDATE
                             SET affiliation = ?3, nick = coalesce(?4, nick)
                             WHERE affiliation IS NOT ?3 OR (?4 IS NOT NULL AND nick IS NOT ?4)",
                    )?
                    .execute(params![conversation, jid, a, nick])
                    .map_err(fk_not_found("room"))?
            }
        };
        Ok(n > 0)
    }

    /// Replaces the member list with the room's own (after asking it).
    pub fn replace_room_members(
        &self,
        conversation: ConversationId,
        members: &[RoomMember],
    ) -> Result<()> {
        for m in members {
            check_affiliation(&m.affiliation)?;
        }
        self.atomic(|| {
            self.conn
                .prepare_cached("DELETE FROM room_members WHERE conversation_id = ?1")?
                .execute([conversation])?;
            for m in members {
                self.set_room_member(
                    conversation,
                    &m.jid,
                    Some(&m.affiliation),
                    m.nick.as_deref(),
                )?;
            }
            Ok(())
        })
    }

    /// Keeps an invitation (a newer one to the same room replaces it). Returns whether it
    /// is new.
    pub fn add_room_invitation(&self, account: AccountId, inv: &RoomInvitation) -> Result<bool> {
        self.atomic(|| {
            let existed = self
                .conn
                .prepare_cached("DELETE FROM room_invitations WHERE account_id = ?1 AND room = ?2")?
                .execute(params![account, inv.room])?
                > 0;
            self.conn
                .prepare_cached(
                    "INSERT INTO room_invitations (account_id, room, inviter, reason, password,
                         received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    account,
                    inv.room,
                    inv.inviter,
                    inv.reason,
                    inv.password,
                    inv.received_ms
                ])
                .map_err(fk_not_found("account"))?;
            self.conn
                .prepare_cached(
                    "DELETE FROM room_invitations WHERE account_id = ?1 AND rowid NOT IN
                     (SELECT rowid FROM room_invitations WHERE account_id = ?1
                      ORDER BY rowid DESC LIMIT ?2)",
                )?
                .execute(params![account, MAX_INVITATIONS])?;
            Ok(!existed)
        })
    }

    pub fn room_invitations(&self, account: AccountId) -> Result<Vec<RoomInvitation>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT room, inviter, reason, password, received_ms FROM room_invitations
             WHERE account_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([account], |r| {
            Ok(RoomInvitation {
                room: r.get(0)?,
                inviter: r.get(1)?,
                reason: r.get(2)?,
                password: r.get(3)?,
                received_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn remove_room_invitation(&self, account: AccountId, room: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM room_invitations WHERE account_id = ?1 AND room = ?2")?
            .execute(params![account, room])?
            > 0)
    }

    /// A group message by the id another message names it with: its origin-id (our own
    /// messages, and what XEP-0308 corrections name) or the room's stanza-id (what replies,
    /// reactions and retractions in groups name).
    pub fn message_by_room_reference(
        &self,
        conversation: ConversationId,
        room: &str,
        id: &str,
    ) -> Result<Option<crate::MessageRecord>> {
        if let Some(m) = self.message_by_reference(conversation, id)? {
            return Ok(Some(m));
        }
        Ok(self
            .conn
            .prepare_cached(crate::sql::MESSAGE_BY_ROOM_STANZA_ID)?
            .query_row(
                params![conversation, room, id],
                crate::messages::message_from_row,
            )
            .optional()?)
    }

    /// Marks a message of a group's conversation as private (XEP-0045 §7.5): between us and
    /// the occupant `nick` alone. Refused for a message outside a group.
    pub fn set_private_with(&self, message: crate::MessageId, nick: &str) -> Result<()> {
        if nick.is_empty() {
            return Err(StoreError::InvalidInput(
                "a private message names an occupant",
            ));
        }
        let n = self
            .conn
            .prepare_cached(
                "UPDATE messages SET private_with = ?2
                 WHERE id = ?1 AND conversation_id IN (SELECT conversation_id FROM rooms)",
            )?
            .execute(params![message, nick])?;
        if n == 0 {
            self.message(message)?;
            return Err(StoreError::InvalidInput(
                "only a group's messages can be private",
            ));
        }
        Ok(())
    }

    /// Records the XEP-0421 occupant id of a group message.
    pub fn set_occupant_id(&self, message: crate::MessageId, occupant_id: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE messages SET occupant_id = ?2 WHERE id = ?1")?
            .execute(params![message, occupant_id])?;
        Ok(())
    }
}
