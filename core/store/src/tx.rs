use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::error::Result;

/// The data operations, on a connection that is either inside a
/// [`Store::transaction`](crate::Store::transaction) or in autocommit mode (every
/// `Store` data method runs through here).
///
/// Operations with several statements wrap themselves in a savepoint, so each one is
/// atomic on its own: a failed call inside a transaction leaves no half-done write
/// behind, and the caller may continue the transaction.
pub struct Tx<'c> {
    pub(crate) conn: &'c Connection,
}

impl<'c> Tx<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Tx { conn }
    }

    /// Runs `f` atomically: in its own IMMEDIATE transaction when called in autocommit
    /// mode, under a savepoint when nested in a caller's transaction.
    ///
    /// IMMEDIATE rather than a bare savepoint (which begins DEFERRED): our writes read
    /// first, and upgrading a read transaction to a write one fails at once with
    /// SQLITE_BUSY if another connection wrote meanwhile, whereas waiting for the write
    /// lock up front honours the busy timeout.
    pub(crate) fn atomic<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let outermost = self.conn.is_autocommit();
        let (begin, commit, undo) = if outermost {
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
        } else {
            (
                "SAVEPOINT linnet_op",
                "RELEASE linnet_op",
                "ROLLBACK TO linnet_op; RELEASE linnet_op",
            )
        };
        self.conn.prepare_cached(begin)?.execute([])?;
        let result = f().and_then(|value| {
            self.conn.prepare_cached(commit)?.execute([])?;
            Ok(value)
        });
        if result.is_err() {
            // A failed COMMIT can leave the transaction open; a failed statement inside
            // leaves our partial work. Either way undo it, so the next call does not run
            // inside a stale transaction.
            let still_open = !outermost || !self.conn.is_autocommit();
            if still_open {
                if let Err(e) = self.conn.execute_batch(undo) {
                    tracing::warn!(error = %e, "rolling back a failed write failed");
                }
            }
        }
        result
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
