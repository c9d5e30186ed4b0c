//! `linnet_omemo`'s store traits on the encrypted database: one account's OMEMO identity,
//! prekeys, sessions and peer identities (schema v4); and what trust decisions need beside
//! them: all identities of a JID, the trust of a device across both versions, and which
//! device each decrypted message came from (schema v13).
//!
//! An [`OmemoStore`] works on a [`Tx`], so OMEMO writes join whatever else the caller
//! commits with them (the decrypted message, the stream-management counter).
//! [`Store::atomically`](linnet_omemo::Store::atomically) runs under a savepoint inside such
//! a transaction: a message that fails to decrypt rolls back to it and the caller's
//! transaction goes on. [`Store::omemo_transaction`] is the shortcut for OMEMO work alone.
//!
//! Private keys leave SQLite's buffers straight into zeroizing containers, sessions into
//! the one `Vec` the manager zeroizes; errors carry no key, JID or plaintext (see
//! [`StoreError`]).

use linnet_omemo::store::{
    IdentityKeyStore, IdentityRecord, IdentityStore, PreKeyRecord, PreKeyStore, SessionStore,
    SignedPreKeyRecord, SignedPreKeyStore,
};
use linnet_omemo::{DeviceAddress, IdentityKeyPair, KeyPair, Trust, Version};
use rusqlite::types::FromSqlError;
use rusqlite::{params, OptionalExtension, Row};
use zeroize::Zeroizing;

use crate::error::{fk_not_found, StoreError};
use crate::store::Store;
use crate::tx::Tx;
use crate::types::{AccountId, MessageId};

type OmemoResult<T> = linnet_omemo::Result<T>;

/// One account's OMEMO state inside a database transaction; implements
/// [`linnet_omemo::Store`], so it is what a [`linnet_omemo::SessionManager`] runs on.
///
/// Build one per transaction and the manager with it; the manager reads what it keeps in
/// memory (our identity) back when it is created.
pub struct OmemoStore<'c> {
    tx: Tx<'c>,
    account: AccountId,
}

impl std::fmt::Debug for OmemoStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmemoStore")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl<'c> OmemoStore<'c> {
    /// The OMEMO state of `account`, read and written through `tx`. Writes for an account
    /// that does not exist fail with `NotFound("account")`.
    pub fn new(tx: &Tx<'c>, account: AccountId) -> Self {
        OmemoStore {
            tx: Tx::new(tx.conn),
            account,
        }
    }

    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The transaction it works in, for what the caller records beside the OMEMO state
    /// (such as the trust its policy gives a device first seen).
    pub fn tx(&self) -> &Tx<'c> {
        &self.tx
    }
}

impl Store {
    /// Runs `f` on `account`'s OMEMO state in one transaction: committed if `f` returns
    /// `Ok`, rolled back otherwise. Store failures come back as
    /// [`linnet_omemo::Error::Store`].
    pub fn omemo_transaction<T>(
        &mut self,
        account: AccountId,
        f: impl FnOnce(OmemoStore<'_>) -> OmemoResult<T>,
    ) -> OmemoResult<T> {
        let mut failure = None;
        let result = self.transaction(|tx| {
            f(OmemoStore::new(tx, account)).map_err(|e| {
                failure = Some(e);
                StoreError::InvalidInput("OMEMO operation failed")
            })
        });
        result.map_err(|e| failure.unwrap_or_else(|| store_error(e)))
    }
}

/// Store errors as the OMEMO crate carries them. `StoreError`'s messages hold no user data.
fn store_error(e: StoreError) -> linnet_omemo::Error {
    linnet_omemo::Error::Store(e.to_string())
}

fn sql_error(e: rusqlite::Error) -> linnet_omemo::Error {
    store_error(e.into())
}

/// Writes name the account through a foreign key; a missing one is the caller's mistake.
fn write_error(e: rusqlite::Error) -> linnet_omemo::Error {
    store_error(fk_not_found("account")(e))
}

/// The OMEMO major version, as the schema stores it.
fn version_code(version: Version) -> i64 {
    match version {
        Version::Omemo03 => 0,
        Version::Omemo2 => 2,
    }
}

fn trust_code(trust: Trust) -> &'static str {
    match trust {
        Trust::Undecided => "undecided",
        Trust::BlindlyTrusted => "blind",
        Trust::Verified => "verified",
        Trust::Distrusted => "distrusted",
    }
}

fn trust_from_code(code: &str) -> Option<Trust> {
    Some(match code {
        "undecided" => Trust::Undecided,
        "blind" => Trust::BlindlyTrusted,
        "verified" => Trust::Verified,
        "distrusted" => Trust::Distrusted,
        _ => return None,
    })
}

/// A 32-byte column copied from SQLite's buffer into zeroizing memory, with no other copy
/// on the heap.
fn secret32(row: &Row<'_>, idx: usize) -> rusqlite::Result<Zeroizing<[u8; 32]>> {
    let blob = row.get_ref(idx)?.as_blob()?;
    let mut out = Zeroizing::new([0u8; 32]);
    if blob.len() != out.len() {
        return Err(FromSqlError::InvalidBlobSize {
            expected_size: 32,
            blob_size: blob.len(),
        }
        .into());
    }
    out.copy_from_slice(blob);
    Ok(out)
}

impl OmemoStore<'_> {
    fn u32_ids(&self, sql: &str, version: Version) -> OmemoResult<Vec<u32>> {
        let mut stmt = self.tx.conn.prepare_cached(sql).map_err(sql_error)?;
        let ids = stmt
            .query_map(params![self.account, version_code(version)], |r| r.get(0))
            .map_err(sql_error)?
            .collect::<rusqlite::Result<Vec<u32>>>()
            .map_err(sql_error)?;
        Ok(ids)
    }
}

impl IdentityKeyStore for OmemoStore<'_> {
    fn identity_key_pair(&self) -> OmemoResult<Option<IdentityKeyPair>> {
        let seed = self
            .tx
            .conn
            .prepare_cached("SELECT seed FROM omemo_identity WHERE account_id = ?1")
            .map_err(sql_error)?
            .query_row([self.account], |r| secret32(r, 0))
            .optional()
            .map_err(sql_error)?;
        Ok(seed.map(|seed| IdentityKeyPair::from_seed(*seed)))
    }

    fn save_identity_key_pair(&mut self, key_pair: &IdentityKeyPair) -> OmemoResult<()> {
        self.tx
            .conn
            .prepare_cached(
                "INSERT INTO omemo_identity (account_id, seed) VALUES (?1, ?2)
                 ON CONFLICT (account_id) DO UPDATE SET seed = excluded.seed",
            )
            .map_err(sql_error)?
            .execute(params![self.account, &key_pair.seed()[..]])
            .map_err(write_error)?;
        Ok(())
    }
}

impl SignedPreKeyStore for OmemoStore<'_> {
    fn signed_prekey(&self, version: Version, id: u32) -> OmemoResult<Option<SignedPreKeyRecord>> {
        self.tx
            .conn
            .prepare_cached(
                "SELECT secret, signature FROM omemo_signed_prekeys
                 WHERE account_id = ?1 AND version = ?2 AND id = ?3",
            )
            .map_err(sql_error)?
            .query_row(params![self.account, version_code(version), id], |r| {
                let secret = secret32(r, 0)?;
                Ok(SignedPreKeyRecord {
                    id,
                    key_pair: KeyPair::from_secret_bytes(*secret),
                    signature: r.get(1)?,
                })
            })
            .optional()
            .map_err(sql_error)
    }

    fn signed_prekey_ids(&self, version: Version) -> OmemoResult<Vec<u32>> {
        self.u32_ids(
            "SELECT id FROM omemo_signed_prekeys WHERE account_id = ?1 AND version = ?2
             ORDER BY id",
            version,
        )
    }

    fn current_signed_prekey_id(&self, version: Version) -> OmemoResult<Option<u32>> {
        let id = self
            .tx
            .conn
            .prepare_cached(
                "SELECT current_signed_id FROM omemo_prekey_state
                 WHERE account_id = ?1 AND version = ?2",
            )
            .map_err(sql_error)?
            .query_row(params![self.account, version_code(version)], |r| {
                r.get::<_, Option<u32>>(0)
            })
            .optional()
            .map_err(sql_error)?;
        Ok(id.flatten())
    }

    fn save_current_signed_prekey(
        &mut self,
        version: Version,
        record: &SignedPreKeyRecord,
    ) -> OmemoResult<()> {
        let secret = record.key_pair.secret_bytes();
        let (account, version) = (self.account, version_code(version));
        self.tx
            .atomic(|| {
                self.tx
                    .conn
                    .prepare_cached(
                        "INSERT INTO omemo_signed_prekeys (account_id, version, id, secret, signature)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (account_id, version, id) DO UPDATE SET
                             secret = excluded.secret, signature = excluded.signature",
                    )?
                    .execute(params![
                        account,
                        version,
                        record.id,
                        &secret[..],
                        record.signature
                    ])
                    .map_err(fk_not_found("account"))?;
                self.tx
                    .conn
                    .prepare_cached(
                        "INSERT INTO omemo_prekey_state (account_id, version, current_signed_id)
                         VALUES (?1, ?2, ?3)
                         ON CONFLICT (account_id, version) DO UPDATE SET
                             current_signed_id = excluded.current_signed_id",
                    )?
                    .execute(params![account, version, record.id])?;
                Ok(())
            })
            .map_err(store_error)
    }

    fn remove_signed_prekey(&mut self, version: Version, id: u32) -> OmemoResult<()> {
        self.tx
            .conn
            .prepare_cached(
                "DELETE FROM omemo_signed_prekeys WHERE account_id = ?1 AND version = ?2 AND id = ?3",
            )
            .map_err(sql_error)?
            .execute(params![self.account, version_code(version), id])
            .map_err(sql_error)?;
        Ok(())
    }
}

impl PreKeyStore for OmemoStore<'_> {
    fn prekey(&self, version: Version, id: u32) -> OmemoResult<Option<PreKeyRecord>> {
        self.tx
            .conn
            .prepare_cached(
                "SELECT secret FROM omemo_prekeys WHERE account_id = ?1 AND version = ?2 AND id = ?3",
            )
            .map_err(sql_error)?
            .query_row(params![self.account, version_code(version), id], |r| {
                let secret = secret32(r, 0)?;
                Ok(PreKeyRecord {
                    id,
                    key_pair: KeyPair::from_secret_bytes(*secret),
                })
            })
            .optional()
            .map_err(sql_error)
    }

    fn prekey_ids(&self, version: Version) -> OmemoResult<Vec<u32>> {
        self.u32_ids(
            "SELECT id FROM omemo_prekeys WHERE account_id = ?1 AND version = ?2 ORDER BY id",
            version,
        )
    }

    fn save_prekey(&mut self, version: Version, record: &PreKeyRecord) -> OmemoResult<()> {
        let secret = record.key_pair.secret_bytes();
        self.tx
            .conn
            .prepare_cached(
                "INSERT INTO omemo_prekeys (account_id, version, id, secret) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account_id, version, id) DO UPDATE SET secret = excluded.secret",
            )
            .map_err(sql_error)?
            .execute(params![
                self.account,
                version_code(version),
                record.id,
                &secret[..]
            ])
            .map_err(write_error)?;
        Ok(())
    }

    fn remove_prekey(&mut self, version: Version, id: u32) -> OmemoResult<()> {
        self.tx
            .conn
            .prepare_cached(
                "DELETE FROM omemo_prekeys WHERE account_id = ?1 AND version = ?2 AND id = ?3",
            )
            .map_err(sql_error)?
            .execute(params![self.account, version_code(version), id])
            .map_err(sql_error)?;
        Ok(())
    }

    fn next_prekey_id(&self, version: Version) -> OmemoResult<u32> {
        let next = self
            .tx
            .conn
            .prepare_cached(
                "SELECT next_prekey_id FROM omemo_prekey_state
                 WHERE account_id = ?1 AND version = ?2",
            )
            .map_err(sql_error)?
            .query_row(params![self.account, version_code(version)], |r| {
                r.get::<_, u32>(0)
            })
            .optional()
            .map_err(sql_error)?;
        // Ids start at 1, as in MemoryStore.
        Ok(next.unwrap_or(1))
    }

    fn set_next_prekey_id(&mut self, version: Version, id: u32) -> OmemoResult<()> {
        self.tx
            .conn
            .prepare_cached(
                "INSERT INTO omemo_prekey_state (account_id, version, next_prekey_id)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (account_id, version) DO UPDATE SET
                     next_prekey_id = excluded.next_prekey_id",
            )
            .map_err(sql_error)?
            .execute(params![self.account, version_code(version), id])
            .map_err(write_error)?;
        Ok(())
    }
}

impl SessionStore for OmemoStore<'_> {
    fn session(&self, version: Version, address: &DeviceAddress) -> OmemoResult<Option<Vec<u8>>> {
        self.tx
            .conn
            .prepare_cached(
                "SELECT session FROM omemo_sessions
                 WHERE account_id = ?1 AND version = ?2 AND jid = ?3 AND device_id = ?4",
            )
            .map_err(sql_error)?
            // One copy, out of SQLite's buffer into the Vec the manager zeroizes.
            .query_row(
                params![
                    self.account,
                    version_code(version),
                    address.jid,
                    address.device_id
                ],
                |r| Ok(r.get_ref(0)?.as_blob()?.to_vec()),
            )
            .optional()
            .map_err(sql_error)
    }

    fn save_session(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        session: &[u8],
    ) -> OmemoResult<()> {
        self.tx
            .conn
            .prepare_cached(
                "INSERT INTO omemo_sessions (account_id, version, jid, device_id, session)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account_id, version, jid, device_id) DO UPDATE SET
                     session = excluded.session",
            )
            .map_err(sql_error)?
            .execute(params![
                self.account,
                version_code(version),
                address.jid,
                address.device_id,
                session
            ])
            .map_err(write_error)?;
        Ok(())
    }

    fn remove_session(&mut self, version: Version, address: &DeviceAddress) -> OmemoResult<()> {
        self.tx
            .conn
            .prepare_cached(
                "DELETE FROM omemo_sessions
                 WHERE account_id = ?1 AND version = ?2 AND jid = ?3 AND device_id = ?4",
            )
            .map_err(sql_error)?
            .execute(params![
                self.account,
                version_code(version),
                address.jid,
                address.device_id
            ])
            .map_err(sql_error)?;
        Ok(())
    }
}

impl IdentityStore for OmemoStore<'_> {
    fn identity(
        &self,
        version: Version,
        address: &DeviceAddress,
    ) -> OmemoResult<Option<IdentityRecord>> {
        self.tx
            .conn
            .prepare_cached(
                "SELECT key, trust FROM omemo_identities
                 WHERE account_id = ?1 AND version = ?2 AND jid = ?3 AND device_id = ?4",
            )
            .map_err(sql_error)?
            .query_row(
                params![
                    self.account,
                    version_code(version),
                    address.jid,
                    address.device_id
                ],
                |r| {
                    let trust = r.get_ref(1)?.as_str()?;
                    let trust = trust_from_code(trust).ok_or(FromSqlError::InvalidType)?;
                    Ok(IdentityRecord {
                        key: r.get(0)?,
                        trust,
                    })
                },
            )
            .optional()
            .map_err(sql_error)
    }

    fn save_identity(
        &mut self,
        version: Version,
        address: &DeviceAddress,
        record: &IdentityRecord,
    ) -> OmemoResult<()> {
        self.tx
            .conn
            .prepare_cached(
                "INSERT INTO omemo_identities (account_id, version, jid, device_id, key, trust)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (account_id, version, jid, device_id) DO UPDATE SET
                     key = excluded.key, trust = excluded.trust",
            )
            .map_err(sql_error)?
            .execute(params![
                self.account,
                version_code(version),
                address.jid,
                address.device_id,
                &record.key[..],
                trust_code(record.trust)
            ])
            .map_err(write_error)?;
        Ok(())
    }
}

impl linnet_omemo::Store for OmemoStore<'_> {
    /// A transaction of its own in autocommit mode, a savepoint inside the caller's
    /// transaction: either way `f`'s writes are undone when it fails, and nothing else is.
    fn atomically<T>(&mut self, f: impl FnOnce(&mut Self) -> OmemoResult<T>) -> OmemoResult<T> {
        // A second handle on the connection, so that `f` can have `self` mutably.
        let tx = Tx::new(self.tx.conn);
        let mut failure = None;
        let result = tx.atomic(|| {
            f(self).map_err(|e| {
                failure = Some(e);
                StoreError::InvalidInput("OMEMO operation failed")
            })
        });
        result.map_err(|e| failure.unwrap_or_else(|| store_error(e)))
    }
}

/// A recorded peer identity: the version it was seen in, the device, its key and trust.
pub type IdentityRow = (Version, u32, IdentityRecord);

fn identity_row(r: &Row<'_>) -> rusqlite::Result<IdentityRow> {
    let version = match r.get::<_, i64>(0)? {
        0 => Version::Omemo03,
        2 => Version::Omemo2,
        _ => return Err(FromSqlError::InvalidType.into()),
    };
    let key = r.get_ref(2)?.as_blob()?;
    let key: [u8; 32] = key.try_into().map_err(|_| FromSqlError::InvalidBlobSize {
        expected_size: 32,
        blob_size: key.len(),
    })?;
    let trust = trust_from_code(r.get_ref(3)?.as_str()?).ok_or(FromSqlError::InvalidType)?;
    Ok((version, r.get(1)?, IdentityRecord { key, trust }))
}

impl Tx<'_> {
    /// Every identity recorded for `jid`'s devices, in both versions, by device id.
    pub fn omemo_identities(
        &self,
        account: AccountId,
        jid: &str,
    ) -> crate::Result<Vec<IdentityRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT version, device_id, key, trust FROM omemo_identities
             WHERE account_id = ?1 AND version IN (0, 2) AND jid = ?2
             ORDER BY device_id, version",
        )?;
        let rows = stmt.query_map(params![account, jid], identity_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets the trust of one identity (`version`) or, with `None`, of every identity
    /// recorded for the device. Returns how many were recorded.
    pub fn set_omemo_trust(
        &self,
        account: AccountId,
        jid: &str,
        device_id: u32,
        version: Option<Version>,
        trust: Trust,
    ) -> crate::Result<usize> {
        let n = match version {
            Some(v) => self
                .conn
                .prepare_cached(
                    "UPDATE omemo_identities SET trust = ?5
                     WHERE account_id = ?1 AND version = ?2 AND jid = ?3 AND device_id = ?4",
                )?
                .execute(params![
                    account,
                    version_code(v),
                    jid,
                    device_id,
                    trust_code(trust)
                ])?,
            None => self
                .conn
                .prepare_cached(
                    "UPDATE omemo_identities SET trust = ?4
                     WHERE account_id = ?1 AND version IN (0, 2) AND jid = ?2 AND device_id = ?3",
                )?
                .execute(params![account, jid, device_id, trust_code(trust)])?,
        };
        Ok(n)
    }

    /// Records the identity of a device no session was built with yet (a fingerprint the
    /// user verified before the device was met), unless one is recorded already for
    /// `version`: a recorded key is never replaced. Returns whether it was recorded.
    pub fn preset_omemo_identity(
        &self,
        account: AccountId,
        version: Version,
        jid: &str,
        device_id: u32,
        record: &IdentityRecord,
    ) -> crate::Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO omemo_identities (account_id, version, jid, device_id, key, trust)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (account_id, version, jid, device_id) DO NOTHING",
            )?
            .execute(params![
                account,
                version_code(version),
                jid,
                device_id,
                &record.key[..],
                trust_code(record.trust)
            ])
            .map_err(fk_not_found("account"))?;
        Ok(n == 1)
    }

    /// Records the device a decrypted message (or the correction shown in its place) came
    /// from, replacing what was recorded for it.
    pub fn set_omemo_sender(
        &self,
        message: MessageId,
        jid: &str,
        version: Version,
        device_id: u32,
    ) -> crate::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO omemo_message_senders (message_id, jid, version, device_id)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (message_id) DO UPDATE SET
                     jid = excluded.jid, version = excluded.version, device_id = excluded.device_id",
            )?
            .execute(params![message, jid, version_code(version), device_id])
            .map_err(fk_not_found("message"))?;
        Ok(())
    }

    /// For those of `messages` that were decrypted, the trust now placed in the device
    /// they came from (`None`: its identity is not recorded, which is no trust either).
    pub fn omemo_sender_trust(
        &self,
        messages: &[MessageId],
    ) -> crate::Result<Vec<(MessageId, Option<Trust>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.trust FROM omemo_message_senders s
             JOIN messages m ON m.id = s.message_id
             JOIN conversations c ON c.id = m.conversation_id
             LEFT JOIN omemo_identities i
                 ON i.account_id = c.account_id AND i.version = s.version
                AND i.jid = s.jid AND i.device_id = s.device_id
             WHERE s.message_id = ?1",
        )?;
        let mut out = Vec::new();
        for id in messages {
            let found: Option<Option<String>> = stmt.query_row([id], |r| r.get(0)).optional()?;
            if let Some(code) = found {
                out.push((*id, code.as_deref().and_then(trust_from_code)));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::DbKey;

    fn store() -> (Store, AccountId) {
        let store = Store::open_in_memory(&DbKey::from_bytes([3; 32])).unwrap();
        let account = store.add_account("me@example.org", "pw").unwrap();
        (store, account)
    }

    #[test]
    fn codes_round_trip() {
        for trust in [
            Trust::Undecided,
            Trust::BlindlyTrusted,
            Trust::Verified,
            Trust::Distrusted,
        ] {
            assert_eq!(trust_from_code(trust_code(trust)), Some(trust));
        }
        assert_eq!(trust_from_code("trusted"), None);
        assert_ne!(
            version_code(Version::Omemo03),
            version_code(Version::Omemo2)
        );
    }

    #[test]
    fn writes_for_a_missing_account_are_not_found() {
        let (mut store, account) = store();
        store.remove_account(account).unwrap();
        let err = store
            .omemo_transaction(account, |mut s| {
                s.save_prekey(
                    Version::Omemo2,
                    &PreKeyRecord {
                        id: 1,
                        key_pair: KeyPair::from_secret_bytes([9; 32]),
                    },
                )
            })
            .unwrap_err();
        assert!(
            matches!(&err, linnet_omemo::Error::Store(m) if m.contains("account not found")),
            "{err}"
        );
    }

    #[test]
    fn accounts_are_kept_apart() {
        let (mut store, a) = store();
        let b = store.add_account("other@example.org", "pw").unwrap();
        let peer = DeviceAddress::new("peer@example.org", 7);
        store
            .omemo_transaction(a, |mut s| {
                s.save_session(Version::Omemo2, &peer, b"session of a")?;
                s.save_prekey(
                    Version::Omemo2,
                    &PreKeyRecord {
                        id: 5,
                        key_pair: KeyPair::from_secret_bytes([1; 32]),
                    },
                )?;
                s.set_next_prekey_id(Version::Omemo2, 6)
            })
            .unwrap();
        store
            .omemo_transaction(b, |s| {
                assert_eq!(s.session(Version::Omemo2, &peer)?, None);
                assert!(s.prekey_ids(Version::Omemo2)?.is_empty());
                assert_eq!(s.next_prekey_id(Version::Omemo2)?, 1);
                Ok(())
            })
            .unwrap();
        // Removing an account takes its OMEMO state with it.
        store.remove_account(a).unwrap();
        let left: i64 = store
            .connection()
            .query_row(
                "SELECT (SELECT count(*) FROM omemo_sessions)
                      + (SELECT count(*) FROM omemo_prekeys)
                      + (SELECT count(*) FROM omemo_prekey_state)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn versions_are_kept_apart() {
        let (mut store, account) = store();
        let peer = DeviceAddress::new("peer@example.org", 7);
        store
            .omemo_transaction(account, |mut s| {
                s.save_session(Version::Omemo03, &peer, b"old")?;
                s.save_identity(
                    Version::Omemo03,
                    &peer,
                    &IdentityRecord {
                        key: [4; 32],
                        trust: Trust::Verified,
                    },
                )?;
                assert_eq!(s.session(Version::Omemo2, &peer)?, None);
                assert_eq!(s.identity(Version::Omemo2, &peer)?, None);
                assert_eq!(
                    s.session(Version::Omemo03, &peer)?.as_deref(),
                    Some(&b"old"[..])
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn an_omemo_error_rolls_the_transaction_back_and_comes_back_unchanged() {
        let (mut store, account) = store();
        let peer = DeviceAddress::new("peer@example.org", 7);
        let err = store
            .omemo_transaction(account, |mut s| {
                s.save_session(Version::Omemo2, &peer, b"half")?;
                Err::<(), _>(linnet_omemo::Error::NoKeyForDevice)
            })
            .unwrap_err();
        assert!(matches!(err, linnet_omemo::Error::NoKeyForDevice));
        store
            .omemo_transaction(account, |s| {
                assert_eq!(s.session(Version::Omemo2, &peer)?, None);
                Ok(())
            })
            .unwrap();
    }
    #[test]
    fn identities_of_a_jid_and_their_trust() {
        let (mut store, account) = store();
        let record = |key: u8, trust| IdentityRecord {
            key: [key; 32],
            trust,
        };
        store
            .omemo_transaction(account, |mut s| {
                let peer = |d| DeviceAddress::new("peer@example.org", d);
                s.save_identity(Version::Omemo2, &peer(7), &record(1, Trust::BlindlyTrusted))?;
                s.save_identity(
                    Version::Omemo03,
                    &peer(7),
                    &record(2, Trust::BlindlyTrusted),
                )?;
                s.save_identity(Version::Omemo2, &peer(9), &record(3, Trust::Undecided))?;
                let other = DeviceAddress::new("other@example.org", 7);
                s.save_identity(Version::Omemo2, &other, &record(4, Trust::Verified))
            })
            .unwrap();
        let rows = store.omemo_identities(account, "peer@example.org").unwrap();
        assert_eq!(
            rows,
            vec![
                (Version::Omemo03, 7, record(2, Trust::BlindlyTrusted)),
                (Version::Omemo2, 7, record(1, Trust::BlindlyTrusted)),
                (Version::Omemo2, 9, record(3, Trust::Undecided)),
            ]
        );
        store
            .transaction(|tx| {
                // Both versions of device 7, not device 9 nor the other JID's device 7.
                assert_eq!(
                    tx.set_omemo_trust(account, "peer@example.org", 7, None, Trust::Verified)?,
                    2
                );
                assert_eq!(
                    tx.set_omemo_trust(
                        account,
                        "peer@example.org",
                        7,
                        Some(Version::Omemo03),
                        Trust::Distrusted
                    )?,
                    1
                );
                assert_eq!(
                    tx.set_omemo_trust(account, "peer@example.org", 8, None, Trust::Verified)?,
                    0
                );
                Ok(())
            })
            .unwrap();
        let trusts: Vec<_> = store
            .omemo_identities(account, "peer@example.org")
            .unwrap()
            .into_iter()
            .map(|(v, d, r)| (v, d, r.trust))
            .collect();
        assert_eq!(
            trusts,
            vec![
                (Version::Omemo03, 7, Trust::Distrusted),
                (Version::Omemo2, 7, Trust::Verified),
                (Version::Omemo2, 9, Trust::Undecided),
            ]
        );
        assert_eq!(
            store
                .omemo_identities(account, "other@example.org")
                .unwrap()[0]
                .2,
            record(4, Trust::Verified)
        );
    }

    #[test]
    fn a_preset_identity_never_replaces_a_recorded_key() {
        let (mut store, account) = store();
        let first = IdentityRecord {
            key: [5; 32],
            trust: Trust::Verified,
        };
        let other = IdentityRecord {
            key: [6; 32],
            trust: Trust::Verified,
        };
        store
            .transaction(|tx| {
                assert!(tx.preset_omemo_identity(account, Version::Omemo03, "p@x", 3, &first)?);
                assert!(!tx.preset_omemo_identity(account, Version::Omemo03, "p@x", 3, &other)?);
                Ok(())
            })
            .unwrap();
        store
            .omemo_transaction(account, |s| {
                let got = s.identity(Version::Omemo03, &DeviceAddress::new("p@x", 3))?;
                assert_eq!(got, Some(first.clone()));
                Ok(())
            })
            .unwrap();
        store.remove_account(account).unwrap();
        let err = store
            .transaction(|tx| tx.preset_omemo_identity(account, Version::Omemo2, "p@x", 3, &other))
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound("account")), "{err}");
    }

    #[test]
    fn a_message_shows_the_trust_its_device_has_now() {
        let (mut store, account) = store();
        store
            .connection()
            .execute_batch(&format!(
                "INSERT INTO conversations (id, account_id, peer, created_ms, last_activity_ms)
                 VALUES (1, {a}, 'peer@example.org', 0, 0);
                 INSERT INTO messages (id, conversation_id, direction, sender, body,
                                       timestamp_ms, received_ms, delivery_state)
                 VALUES (1, 1, 0, 'peer@example.org', 'one', 1, 1, 2),
                        (2, 1, 0, 'peer@example.org', 'two', 2, 2, 2),
                        (3, 1, 0, 'peer@example.org', 'plain', 3, 3, 2);",
                a = account.0
            ))
            .unwrap();
        store
            .omemo_transaction(account, |mut s| {
                s.save_identity(
                    Version::Omemo2,
                    &DeviceAddress::new("peer@example.org", 7),
                    &IdentityRecord {
                        key: [1; 32],
                        trust: Trust::Undecided,
                    },
                )
            })
            .unwrap();
        store
            .transaction(|tx| {
                tx.set_omemo_sender(MessageId(1), "peer@example.org", Version::Omemo2, 7)?;
                // Device 8's identity is not recorded.
                tx.set_omemo_sender(MessageId(2), "peer@example.org", Version::Omemo2, 8)?;
                let missing = tx.set_omemo_sender(MessageId(9), "p@x", Version::Omemo2, 7);
                assert!(matches!(missing, Err(StoreError::NotFound("message"))));
                Ok(())
            })
            .unwrap();
        let ids = [MessageId(1), MessageId(2), MessageId(3)];
        assert_eq!(
            store.omemo_sender_trust(&ids).unwrap(),
            vec![(MessageId(1), Some(Trust::Undecided)), (MessageId(2), None)]
        );
        store
            .transaction(|tx| {
                tx.set_omemo_trust(account, "peer@example.org", 7, None, Trust::Verified)?;
                // A correction from device 7 now shows in message 2's place.
                tx.set_omemo_sender(MessageId(2), "peer@example.org", Version::Omemo2, 7)
            })
            .unwrap();
        assert_eq!(
            store.omemo_sender_trust(&ids).unwrap(),
            vec![
                (MessageId(1), Some(Trust::Verified)),
                (MessageId(2), Some(Trust::Verified))
            ]
        );
        // Another account's identity of the same address is not this one's.
        let b = store.add_account("other@example.org", "pw").unwrap();
        store
            .omemo_transaction(b, |mut s| {
                s.save_identity(
                    Version::Omemo2,
                    &DeviceAddress::new("peer@example.org", 8),
                    &IdentityRecord {
                        key: [2; 32],
                        trust: Trust::Distrusted,
                    },
                )
            })
            .unwrap();
        store
            .transaction(|tx| {
                tx.set_omemo_sender(MessageId(2), "peer@example.org", Version::Omemo2, 8)
            })
            .unwrap();
        assert_eq!(
            store.omemo_sender_trust(&[MessageId(2)]).unwrap(),
            vec![(MessageId(2), None)]
        );
    }

    fn count(store: &Store, table: &str) -> i64 {
        store
            .connection()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_write_failing_half_way_through_a_decrypt_undoes_the_others() {
        use linnet_omemo::{MemoryStore, SessionManager};
        const ME: &str = "me@example.org";
        for v in [Version::Omemo03, Version::Omemo2] {
            let (mut store, account) = store();
            let me = DeviceAddress::new(ME, 2);
            let bundle = store
                .omemo_transaction(account, |s| SessionManager::new(s, ME, 2)?.bundle(v))
                .unwrap();
            let mut alice =
                SessionManager::new(MemoryStore::new(), "alice@example.org", 1).unwrap();
            alice.process_bundle(v, &me, &bundle).unwrap();
            let msg = alice.encrypt(v, Some(b"hi"), &[me]).unwrap().message;
            let prekeys = count(&store, "omemo_prekeys");

            // The session and the identity are written before the used prekey is deleted;
            // that deletion fails.
            store
                .connection()
                .execute_batch(
                    "CREATE TEMP TRIGGER fail_prekey_removal BEFORE DELETE ON omemo_prekeys
                     BEGIN SELECT RAISE(ABORT, 'injected'); END;",
                )
                .unwrap();
            let outcome = store
                .omemo_transaction(account, |s| {
                    let mut m = SessionManager::new(s, ME, 2)?;
                    Ok(m.decrypt(v, "alice@example.org", &msg).map(|_| ()))
                })
                .unwrap();
            assert!(matches!(outcome, Err(linnet_omemo::Error::Store(_))));
            assert_eq!(count(&store, "omemo_sessions"), 0);
            assert_eq!(count(&store, "omemo_identities"), 0);
            assert_eq!(count(&store, "omemo_prekeys"), prekeys);

            store
                .connection()
                .execute_batch("DROP TRIGGER fail_prekey_removal")
                .unwrap();
            let d = store
                .omemo_transaction(account, |s| {
                    SessionManager::new(s, ME, 2)?.decrypt(v, "alice@example.org", &msg)
                })
                .unwrap();
            assert_eq!(d.payload.unwrap().as_slice(), b"hi");
            assert_eq!(count(&store, "omemo_sessions"), 1);
        }
    }
}
