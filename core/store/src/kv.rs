use rusqlite::{params, OptionalExtension};

use crate::error::{fk_not_found, Result};
use crate::sql;
use crate::tx::Tx;
use crate::types::AccountId;

impl Tx<'_> {
    /// A small per-account (or, with `None`, global) setting such as a sync cursor.
    pub fn kv_get(&self, account: Option<AccountId>, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(sql::KV_GET)?
            .query_row(params![account, key], |r| r.get(0))
            .optional()?)
    }

    pub fn kv_set(&self, account: Option<AccountId>, key: &str, value: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO kv (account_id, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ifnull(account_id, 0), key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![account, key, value])
            .map_err(fk_not_found("account"))?;
        Ok(())
    }

    /// Returns whether the key existed.
    pub fn kv_remove(&self, account: Option<AccountId>, key: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM kv WHERE ifnull(account_id, 0) = ifnull(?1, 0) AND key = ?2",
            )?
            .execute(params![account, key])?;
        Ok(n > 0)
    }
}
