//! Blocking (XEP-0191) and spam reports (XEP-0377) in the client. The blocklist is the
//! server's: it refuses to route anything between us and a blocked JID, for every device
//! of ours. Here it is mirrored (in the key/value table) for the snapshot, kept current by
//! the server's pushes and read again after every fresh login, which also asks the server
//! to push to this session (XEP-0191 §3.2).

use linnet_store::{AccountId, StoreError, Tx};
use linnet_xmpp::profile::{BlockingPush, Report, ReportReason};
use linnet_xmpp::{BareJid, Session};

use crate::{Client, ClientError, Inner, Result};

/// kv key: the blocklist, a JID per line (a JID holds no line break).
const KV_BLOCKLIST: &str = "blocklist";

/// The mirrored blocklist.
pub(crate) fn blocklist(
    tx: &Tx<'_>,
    account: AccountId,
) -> std::result::Result<Vec<String>, StoreError> {
    Ok(tx
        .kv_get(Some(account), KV_BLOCKLIST)?
        .map(|v| parse(&v))
        .unwrap_or_default())
}

fn store_blocklist(
    tx: &Tx<'_>,
    account: AccountId,
    list: &[String],
) -> std::result::Result<(), StoreError> {
    tx.kv_set(Some(account), KV_BLOCKLIST, &list.join("\n"))
}

fn parse(v: &str) -> Vec<String> {
    v.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The mirrored blocklist, for the snapshot (empty if unreadable).
pub(crate) fn stored(store: &linnet_store::Store, account: AccountId) -> Vec<String> {
    store
        .kv_get(Some(account), KV_BLOCKLIST)
        .ok()
        .flatten()
        .map(|v| parse(&v))
        .unwrap_or_default()
}

/// A push of our server: applied to the mirror. A newly blocked JID's subscription
/// request goes too: whoever is blocked is not waiting for an answer.
pub(crate) fn apply_push(
    tx: &Tx<'_>,
    account: AccountId,
    push: BlockingPush,
) -> std::result::Result<(), StoreError> {
    let mut list = blocklist(tx, account)?;
    match push {
        BlockingPush::Blocked(jids) => {
            for j in jids {
                tx.remove_subscription_request(account, &j)?;
                if !list.contains(&j) {
                    list.push(j);
                }
            }
        }
        BlockingPush::Unblocked(jids) => list.retain(|j| !jids.contains(j)),
        BlockingPush::UnblockedAll => list.clear(),
    }
    store_blocklist(tx, account, &list)
}

/// After a fresh login: the server's list replaces the mirror.
pub(crate) async fn refresh(inner: std::sync::Arc<Inner>, account: AccountId, session: Session) {
    match session.blocklist().await {
        Ok(list) => {
            let stored = inner
                .store()
                .transaction(|tx| store_blocklist(tx, account, &list));
            if let Err(e) = stored {
                tracing::warn!(error = %e, "storing the blocklist failed");
            }
            inner.refresh_account(account);
            inner.publish_chat_list();
        }
        Err(e) => tracing::info!(error = %e, "blocklist not read"),
    }
}

impl Client {
    /// Blocks `jid` (a bare JID, or a domain) on the server, for every device of ours: it
    /// can no longer reach us, nor we it. With `report_spam`, the server is also told it
    /// sent spam (XEP-0377) when it takes reports; returns whether a report was sent.
    pub async fn block_contact(
        &self,
        account: AccountId,
        jid: &str,
        report_spam: bool,
    ) -> Result<bool> {
        let who = BareJid::parse(jid)?;
        let session = self.session(account)?;
        if who == *session.own_jid() {
            return Err(ClientError::BadInput("cannot block yourself".into()));
        }
        let sent = if report_spam {
            let support = session.blocking_support().await?;
            session
                .block_and_report(who.as_str(), &Report::new(ReportReason::Spam), &support)
                .await?
        } else {
            session.block(&[who.as_str()]).await?;
            false
        };
        // The push follows; applied now too, so the caller sees it at once.
        self.inner.store().transaction(|tx| {
            apply_push(
                tx,
                account,
                BlockingPush::Blocked(vec![who.as_str().to_owned()]),
            )
        })?;
        self.inner.refresh_account(account);
        self.inner.publish_chat_list();
        Ok(sent)
    }

    /// Unblocks `jid`.
    pub async fn unblock_contact(&self, account: AccountId, jid: &str) -> Result<()> {
        let who = BareJid::parse(jid)?;
        let session = self.session(account)?;
        session.unblock(&[who.as_str()]).await?;
        self.inner.store().transaction(|tx| {
            apply_push(
                tx,
                account,
                BlockingPush::Unblocked(vec![who.as_str().to_owned()]),
            )
        })?;
        self.inner.refresh_account(account);
        self.inner.publish_chat_list();
        Ok(())
    }

    /// The JIDs this account blocks, as last read from the server.
    pub fn blocked_contacts(&self, account: AccountId) -> Result<Vec<String>> {
        self.inner.store().account(account)?;
        Ok(self
            .inner
            .store()
            .transaction(|tx| blocklist(tx, account))?)
    }
}
