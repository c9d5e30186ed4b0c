use rusqlite::types::Type;
use rusqlite::{params, OptionalExtension, Row};

use crate::error::{fk_not_found, Result, StoreError};
use crate::tx::{now_ms, Tx};
use crate::types::{AccountId, ContactRecord, Subscription};

/// A pending incoming subscription request.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriptionRequestRecord {
    /// The bare JID asking.
    pub jid: String,
    /// The nickname the request carried (XEP-0172 §4.2): what the asker calls themselves,
    /// unverified.
    pub nick: Option<String>,
}

impl std::fmt::Debug for SubscriptionRequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRequestRecord")
            .field("nick", &self.nick.is_some())
            .finish_non_exhaustive()
    }
}

fn contact_from_row(row: &Row<'_>) -> rusqlite::Result<ContactRecord> {
    let groups: String = row.get(4)?;
    let groups = serde_json::from_str(&groups)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, Type::Text, Box::new(e)))?;
    Ok(ContactRecord {
        jid: row.get(0)?,
        name: row.get(1)?,
        subscription: row.get(2)?,
        ask: row.get(3)?,
        groups,
    })
}

impl Tx<'_> {
    /// Applies one roster item (a roster push): inserts or replaces it, or deletes the
    /// contact when its subscription is `Remove`.
    pub fn upsert_contact(&self, account: AccountId, contact: &ContactRecord) -> Result<()> {
        if contact.subscription == Subscription::Remove {
            self.remove_contact(account, &contact.jid)?;
            return Ok(());
        }
        if contact.jid.is_empty() {
            return Err(StoreError::InvalidInput("empty JID"));
        }
        let groups = serde_json::to_string(&contact.groups)
            .map_err(|_| StoreError::InvalidInput("roster groups"))?;
        self.conn
            .prepare_cached(
                "INSERT INTO contacts (account_id, jid, name, subscription, ask, groups)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (account_id, jid) DO UPDATE SET
                     name = excluded.name, subscription = excluded.subscription,
                     ask = excluded.ask, groups = excluded.groups",
            )?
            .execute(params![
                account,
                contact.jid,
                contact.name,
                contact.subscription.as_str(),
                contact.ask,
                groups
            ])
            .map_err(fk_not_found("account"))?;
        Ok(())
    }

    /// Returns whether the contact existed.
    pub fn remove_contact(&self, account: AccountId, jid: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM contacts WHERE account_id = ?1 AND jid = ?2")?
            .execute(params![account, jid])?;
        Ok(n > 0)
    }

    pub fn contact(&self, account: AccountId, jid: &str) -> Result<Option<ContactRecord>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT jid, name, subscription, ask, groups FROM contacts
                 WHERE account_id = ?1 AND jid = ?2",
            )?
            .query_row(params![account, jid], contact_from_row)
            .optional()?)
    }

    /// The roster, ordered by JID.
    pub fn contacts(&self, account: AccountId) -> Result<Vec<ContactRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, name, subscription, ask, groups FROM contacts
             WHERE account_id = ?1 ORDER BY jid",
        )?;
        let rows = stmt.query_map([account], contact_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_roster_version(&self, account: AccountId, version: Option<&str>) -> Result<()> {
        let n = self
            .conn
            .prepare_cached("UPDATE accounts SET roster_version = ?2 WHERE id = ?1")?
            .execute(params![account, version])?;
        if n == 0 {
            return Err(StoreError::NotFound("account"));
        }
        Ok(())
    }

    /// The RFC 6121 roster version to send with the next roster get.
    pub fn roster_version(&self, account: AccountId) -> Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT roster_version FROM accounts WHERE id = ?1")?
            .query_row([account], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NotFound("account"))
    }

    /// Replaces the whole roster with a full roster result, atomically: the roster and
    /// its version never disagree, even after a crash.
    pub fn replace_roster(
        &self,
        account: AccountId,
        items: &[ContactRecord],
        version: Option<&str>,
    ) -> Result<()> {
        self.atomic(|| {
            self.set_roster_version(account, version)?;
            self.conn
                .prepare_cached("DELETE FROM contacts WHERE account_id = ?1")?
                .execute([account])?;
            for item in items
                .iter()
                .filter(|i| i.subscription != Subscription::Remove)
            {
                self.upsert_contact(account, item)?;
            }
            tracing::debug!(account = account.0, items = items.len(), "roster replaced");
            Ok(())
        })
    }

    /// Records an incoming subscription request with the nickname it carried, if any;
    /// returns false if already pending. A re-sent request with a nickname replaces the
    /// one stored; one without keeps it.
    pub fn add_subscription_request(
        &self,
        account: AccountId,
        jid: &str,
        nick: Option<&str>,
    ) -> Result<bool> {
        if jid.is_empty() {
            return Err(StoreError::InvalidInput("empty JID"));
        }
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO subscription_requests (account_id, jid, received_ms, nick)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?
            .execute(params![account, jid, now_ms(), nick])
            .map_err(fk_not_found("account"))?;
        if n == 0 && nick.is_some() {
            self.conn
                .prepare_cached(
                    "UPDATE subscription_requests SET nick = ?3
                     WHERE account_id = ?1 AND jid = ?2",
                )?
                .execute(params![account, jid, nick])?;
        }
        Ok(n > 0)
    }

    /// Returns whether a request was pending.
    pub fn remove_subscription_request(&self, account: AccountId, jid: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM subscription_requests WHERE account_id = ?1 AND jid = ?2")?
            .execute(params![account, jid])?;
        Ok(n > 0)
    }

    /// Pending requests, oldest first.
    pub fn subscription_requests(
        &self,
        account: AccountId,
    ) -> Result<Vec<SubscriptionRequestRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT jid, nick FROM subscription_requests WHERE account_id = ?1
             ORDER BY rowid",
        )?;
        let rows = stmt.query_map([account], |r| {
            Ok(SubscriptionRequestRecord {
                jid: r.get(0)?,
                nick: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
