use rusqlite::{params, OptionalExtension, Row};
use zeroize::Zeroizing;

use crate::error::{is_unique_violation, Result, StoreError};
use crate::sql;
use crate::tx::{now_ms, Tx};
use crate::types::{AccountId, AccountRecord};

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        id: row.get(0)?,
        jid: row.get(1)?,
        password: Zeroizing::new(row.get(2)?),
        resource: row.get(3)?,
        enabled: row.get(4)?,
        server_host: row.get(5)?,
        server_port: row.get(6)?,
        direct_tls: row.get(7)?,
    })
}

impl Tx<'_> {
    /// Adds an account (enabled, no resource, no server override).
    /// `Conflict` if an account with this bare JID exists.
    pub fn add_account(&self, jid: &str, password: &str) -> Result<AccountId> {
        if jid.is_empty() {
            return Err(StoreError::InvalidInput("empty JID"));
        }
        self.conn
            .prepare_cached("INSERT INTO accounts (jid, password, created_ms) VALUES (?1, ?2, ?3)")?
            .execute(params![jid, password, now_ms()])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict("account already exists".into())
                } else {
                    e.into()
                }
            })?;
        let id = AccountId(self.conn.last_insert_rowid());
        tracing::info!(account = id.0, "account added");
        Ok(id)
    }

    pub fn account(&self, id: AccountId) -> Result<AccountRecord> {
        self.conn
            .prepare_cached(sql::ACCOUNT_BY_ID)?
            .query_row([id], account_from_row)
            .optional()?
            .ok_or(StoreError::NotFound("account"))
    }

    pub fn account_by_jid(&self, jid: &str) -> Result<Option<AccountRecord>> {
        Ok(self
            .conn
            .prepare_cached(sql::ACCOUNT_BY_JID)?
            .query_row([jid], account_from_row)
            .optional()?)
    }

    /// All accounts, oldest first.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>> {
        let mut stmt = self.conn.prepare_cached(sql::ACCOUNTS)?;
        let rows = stmt.query_map([], account_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_account_password(&self, id: AccountId, password: &str) -> Result<()> {
        self.update_account(
            "UPDATE accounts SET password = ?2 WHERE id = ?1",
            id,
            password,
        )
    }

    /// `None` lets the server choose the resource.
    pub fn set_account_resource(&self, id: AccountId, resource: Option<&str>) -> Result<()> {
        self.update_account(
            "UPDATE accounts SET resource = ?2 WHERE id = ?1",
            id,
            resource,
        )
    }

    pub fn set_account_enabled(&self, id: AccountId, enabled: bool) -> Result<()> {
        self.update_account(
            "UPDATE accounts SET enabled = ?2 WHERE id = ?1",
            id,
            enabled,
        )
    }

    /// Sets or (with `host = None`) clears the connection override.
    pub fn set_account_server(
        &self,
        id: AccountId,
        host: Option<&str>,
        port: Option<u16>,
        direct_tls: bool,
    ) -> Result<()> {
        if port == Some(0) {
            return Err(StoreError::InvalidInput("port 0"));
        }
        if host.is_some_and(str::is_empty) {
            return Err(StoreError::InvalidInput("empty server host"));
        }
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE accounts SET server_host = ?2, server_port = ?3, direct_tls = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, host, port, direct_tls])?;
        if changed == 0 {
            return Err(StoreError::NotFound("account"));
        }
        Ok(())
    }

    /// Removes the account and, through foreign-key cascades, its roster, subscription
    /// requests, conversations, messages, outbox and settings.
    pub fn remove_account(&self, id: AccountId) -> Result<()> {
        let changed = self
            .conn
            .prepare_cached("DELETE FROM accounts WHERE id = ?1")?
            .execute([id])?;
        if changed == 0 {
            return Err(StoreError::NotFound("account"));
        }
        tracing::info!(account = id.0, "account removed");
        Ok(())
    }

    fn update_account(&self, sql: &str, id: AccountId, value: impl rusqlite::ToSql) -> Result<()> {
        let changed = self.conn.prepare_cached(sql)?.execute(params![id, value])?;
        if changed == 0 {
            return Err(StoreError::NotFound("account"));
        }
        Ok(())
    }
}
