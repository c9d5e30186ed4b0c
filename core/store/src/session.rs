use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use crate::error::{fk_not_found, Result};
use crate::tx::{now_ms, Tx};
use crate::types::AccountId;

/// What lets a session come back quickly after a drop or a restart. Debug redacts the
/// token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// XEP-0198 stream id of a resumable session, if any.
    pub sm_id: Option<String>,
    pub sm_location: Option<String>,
    /// Inbound stanzas handled and committed in that session (the `h` we may acknowledge).
    pub sm_inbound: u32,
    pub fast: Option<FastToken>,
    pub fast_count: u32,
    pub user_agent_id: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct FastToken {
    pub mechanism: String,
    pub token: Zeroizing<String>,
    pub expiry: Option<String>,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState")
            .field("sm", &self.sm_id.is_some())
            .field("sm_inbound", &self.sm_inbound)
            .field("fast", &self.fast.as_ref().map(|t| t.mechanism.as_str()))
            .field("fast_count", &self.fast_count)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FastToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastToken")
            .field("mechanism", &self.mechanism)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Tx<'_> {
    /// The stored state, or the default (nothing to resume, no token) if none.
    pub fn session_state(&self, account: AccountId) -> Result<SessionState> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT sm_id, sm_location, sm_inbound, fast_mechanism, fast_token, fast_expiry,
                        fast_count, user_agent_id
                 FROM session_state WHERE account_id = ?1",
            )?
            .query_row([account], |r| {
                let mechanism: Option<String> = r.get(3)?;
                let token: Option<String> = r.get(4)?;
                Ok(SessionState {
                    sm_id: r.get(0)?,
                    sm_location: r.get(1)?,
                    sm_inbound: r.get(2)?,
                    fast: match (mechanism, token) {
                        (Some(mechanism), Some(token)) => Some(FastToken {
                            mechanism,
                            token: Zeroizing::new(token),
                            expiry: r.get(5)?,
                        }),
                        _ => None,
                    },
                    fast_count: r.get(6)?,
                    user_agent_id: r.get(7)?,
                })
            })
            .optional()?;
        Ok(row.unwrap_or_default())
    }

    pub fn set_session_state(&self, account: AccountId, s: &SessionState) -> Result<()> {
        let (mechanism, token, expiry) = match &s.fast {
            Some(t) => (
                Some(t.mechanism.as_str()),
                Some(t.token.as_str()),
                t.expiry.as_deref(),
            ),
            None => (None, None, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO session_state (account_id, sm_id, sm_location, sm_inbound,
                     fast_mechanism, fast_token, fast_expiry, fast_count, user_agent_id, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (account_id) DO UPDATE SET
                     sm_id = excluded.sm_id, sm_location = excluded.sm_location,
                     sm_inbound = excluded.sm_inbound, fast_mechanism = excluded.fast_mechanism,
                     fast_token = excluded.fast_token, fast_expiry = excluded.fast_expiry,
                     fast_count = excluded.fast_count, user_agent_id = excluded.user_agent_id,
                     updated_ms = excluded.updated_ms",
            )?
            .execute(params![
                account,
                s.sm_id,
                s.sm_location,
                s.sm_inbound,
                mechanism,
                token,
                expiry,
                s.fast_count,
                s.user_agent_id,
                now_ms()
            ])
            .map_err(fk_not_found("account"))?;
        Ok(())
    }

    /// Records how many inbound stanzas of the current stream are durably handled; call in
    /// the transaction that stores what they carried.
    pub fn set_sm_inbound(&self, account: AccountId, handled: u32) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE session_state SET sm_inbound = ?2, updated_ms = ?3 WHERE account_id = ?1",
            )?
            .execute(params![account, handled, now_ms()])?;
        Ok(())
    }
}
