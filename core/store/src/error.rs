use rusqlite::ErrorCode;

/// Result alias used throughout the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
///
/// Messages never contain user data (JIDs, bodies, keys), so an error can be logged as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLCipher could not decrypt the first page: the key is wrong, or the file is
    /// something else (a plaintext SQLite file, garbage, another app's database).
    #[error("database key is wrong or the file is not a Linnet database")]
    WrongKey,
    /// Applying `PRAGMA key`/`rekey` failed. Details are dropped on purpose: the failing
    /// statement text contains the key.
    #[error("the database key could not be applied")]
    Keying,
    /// The linked SQLite has no codec, so `PRAGMA key` would be silently ignored and the
    /// database written in clear. We refuse rather than leak.
    #[error("SQLCipher is not available in this build; refusing to open an unencrypted database")]
    EncryptionUnavailable,
    /// The file was written by a newer Linnet; opening it with older code could corrupt it.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    TooNew { found: u32, supported: u32 },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    #[error("database is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        match &e {
            // A value we cannot decode means the file holds something our schema forbids.
            E::FromSqlConversionFailure(..)
            | E::IntegralValueOutOfRange(..)
            | E::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
            E::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
            {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

pub(crate) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Maps a foreign-key failure to `NotFound(what)`: the parent row the caller named is gone.
pub(crate) fn fk_not_found(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound(what)
        } else {
            e.into()
        }
    }
}
