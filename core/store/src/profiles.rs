//! Profiles (schema v10): the nickname and avatar each contact (and the account itself)
//! published, and the avatar pictures, kept by their SHA-1 id so that a picture is fetched
//! once and a contact's new one replaces it. Pictures no profile of the account points to
//! any more are deleted as soon as that happens.
//!
//! Nicknames and JIDs are user data: the record's `Debug` shows neither.

use rusqlite::{params, OptionalExtension};

use crate::error::{fk_not_found, Result, StoreError};
use crate::tx::Tx;
use crate::types::AccountId;

/// Which protocol an avatar came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvatarSource {
    /// XEP-0084 (PEP). Once a contact has published there, vCard photos are ignored.
    Pep,
    /// The XEP-0153 vCard photo, the fallback.
    Vcard,
}

impl AvatarSource {
    fn code(self) -> &'static str {
        match self {
            AvatarSource::Pep => "pep",
            AvatarSource::Vcard => "vcard",
        }
    }

    fn from_code(s: Option<String>) -> Option<AvatarSource> {
        match s.as_deref() {
            Some("pep") => Some(AvatarSource::Pep),
            Some("vcard") => Some(AvatarSource::Vcard),
            _ => None,
        }
    }
}

/// What one JID says of itself.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProfileRecord {
    pub jid: String,
    pub nick: Option<String>,
    /// The SHA-1 id of the current avatar; `None`: none, or not known yet.
    pub avatar: Option<String>,
    pub avatar_source: Option<AvatarSource>,
}

impl std::fmt::Debug for ProfileRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileRecord")
            .field("nick", &self.nick.is_some())
            .field("avatar", &self.avatar)
            .field("avatar_source", &self.avatar_source)
            .finish_non_exhaustive()
    }
}

/// An avatar picture.
#[derive(Clone, PartialEq, Eq)]
pub struct AvatarImage {
    pub media_type: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for AvatarImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvatarImage")
            .field("media_type", &self.media_type)
            .field("bytes", &self.data.len())
            .finish()
    }
}

fn profile_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProfileRecord> {
    Ok(ProfileRecord {
        jid: r.get(0)?,
        nick: r.get(1)?,
        avatar: r.get(2)?,
        avatar_source: AvatarSource::from_code(r.get(3)?),
    })
}

fn is_avatar_id(id: &str) -> bool {
    id.len() == 40
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_id(id: &str) -> Result<()> {
    if is_avatar_id(id) {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(
            "avatar id is not a lowercase SHA-1",
        ))
    }
}

impl Tx<'_> {
    /// The profile of `jid`, if anything is known of it.
    pub fn profile(&self, account: AccountId, jid: &str) -> Result<Option<ProfileRecord>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT jid, nick, avatar, avatar_source FROM profiles
                 WHERE account_id = ?1 AND jid = ?2",
            )?
            .query_row(params![account, jid], profile_from_row)
            .optional()?)
    }

    /// Every profile the account holds.
    pub fn profiles(&self, account: AccountId) -> Result<Vec<ProfileRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, nick, avatar, avatar_source FROM profiles WHERE account_id = ?1
             ORDER BY jid",
        )?;
        let rows = stmt.query_map(params![account], profile_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets the nickname `jid` published (`None`: withdrawn). Returns whether it changed.
    pub fn set_profile_nick(
        &self,
        account: AccountId,
        jid: &str,
        nick: Option<&str>,
    ) -> Result<bool> {
        if jid.is_empty() {
            return Err(StoreError::InvalidInput("empty JID"));
        }
        Ok(self
            .conn
            .prepare_cached(
                "INSERT INTO profiles (account_id, jid, nick) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account_id, jid) DO UPDATE SET nick = ?3
                 WHERE nick IS NOT ?3",
            )?
            .execute(params![account, jid, nick])
            .map_err(fk_not_found("account"))?
            > 0)
    }

    /// Sets `jid`'s avatar (`None`: none) as learnt from `source`, and deletes pictures
    /// of the account nobody points to any more. Returns whether it changed.
    pub fn set_profile_avatar(
        &self,
        account: AccountId,
        jid: &str,
        avatar: Option<&str>,
        source: AvatarSource,
    ) -> Result<bool> {
        if jid.is_empty() {
            return Err(StoreError::InvalidInput("empty JID"));
        }
        if let Some(id) = avatar {
            check_id(id)?;
        }
        self.atomic(|| {
            let changed = self
                .conn
                .prepare_cached(
                    "INSERT INTO profiles (account_id, jid, avatar, avatar_source)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (account_id, jid) DO UPDATE SET avatar = ?3, avatar_source = ?4
                     WHERE avatar IS NOT ?3 OR avatar_source IS NOT ?4",
                )?
                .execute(params![account, jid, avatar, source.code()])
                .map_err(fk_not_found("account"))?
                > 0;
            if changed {
                self.conn
                    .prepare_cached(
                        "DELETE FROM avatars WHERE account_id = ?1 AND id NOT IN
                         (SELECT avatar FROM profiles WHERE account_id = ?1
                          AND avatar IS NOT NULL)",
                    )?
                    .execute(params![account])?;
            }
            Ok(changed)
        })
    }

    /// Keeps a picture under its id. The caller has checked that `data` hashes to `id`.
    pub fn put_avatar(
        &self,
        account: AccountId,
        id: &str,
        media_type: &str,
        data: &[u8],
    ) -> Result<()> {
        check_id(id)?;
        if data.is_empty() || media_type.is_empty() {
            return Err(StoreError::InvalidInput("empty avatar or media type"));
        }
        self.conn
            .prepare_cached(
                "INSERT INTO avatars (account_id, id, media_type, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account_id, id) DO NOTHING",
            )?
            .execute(params![account, id, media_type, data])
            .map_err(fk_not_found("account"))?;
        Ok(())
    }

    /// The picture `id`, if held.
    pub fn avatar(&self, account: AccountId, id: &str) -> Result<Option<AvatarImage>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT media_type, data FROM avatars WHERE account_id = ?1 AND id = ?2",
            )?
            .query_row(params![account, id], |r| {
                Ok(AvatarImage {
                    media_type: r.get(0)?,
                    data: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Whether the picture `id` is held.
    pub fn has_avatar(&self, account: AccountId, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM avatars WHERE account_id = ?1 AND id = ?2")?
            .query_row(params![account, id], |_| Ok(()))
            .optional()?
            .is_some())
    }
}
