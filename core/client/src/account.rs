//! One task per logged-in account: connect, run the session, apply its events to the
//! database and the model, reconnect with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linnet_store::{
    ContactRecord, DeliveryState, Direction, Inserted, NewMessage, Subscription as RosterSub,
};
use linnet_xmpp::omemo::OmemoVersion;
use linnet_xmpp::{
    ArchiveFrom, BareJid, ChatMessage, ConnectError, Event, RosterItem, Session, Subscription,
};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::omemo::Opened;
use crate::{lock, now_ms, ClientError, ConnectionState, Inner, ServerOverride, SyncProgress};
use linnet_store::{AccountId, ConversationId, MessageId, Tx};

/// Events applied per batch before one snapshot is published: bounds latency under a flood
/// while still coalescing bursts (e.g. offline messages at login).
const BATCH: usize = 256;

/// kv key of the full JID of the last session (a legacy resume does not repeat it).
const KV_BOUND_JID: &str = "sm.bound_jid";

/// kv key of the archive id (XEP-0313/0359 stanza-id) up to which we have every message of
/// our archive; "" when the archive was empty then. Catch-up after a fresh login starts here.
const KV_ARCHIVE_LAST: &str = "mam.last";

/// The server's features at the last login (see linnet_xmpp::login_hint).
const KV_LOGIN_HINT: &str = "login.hint";

pub(crate) async fn run(
    inner: Arc<Inner>,
    account: AccountId,
    slot: Arc<Mutex<Option<Session>>>,
    wake: Arc<Notify>,
    send_wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    first: oneshot::Sender<Result<(), ClientError>>,
) {
    let mut first = Some(first);
    let mut backoff = inner.opts.min_backoff;
    let mut last_immediate: Option<tokio::time::Instant> = None;
    // The session that ended last in this process: what its stream left unacknowledged is
    // sent again if the next stream resumes it.
    let mut previous: Option<Session> = None;
    // Receipts for stored messages that could not be written because the session had just
    // ended: the next session sends them.
    let mut unsent_receipts: Vec<(String, String)> = Vec::new();
    let mut placement = Placement::default();
    // Whether the stream now open at the server got its setup (roster, carbons, initial
    // presence, rooms) from this process. A fresh stream that broke during its setup is
    // resumed without it, and the server then holds our resource unavailable: messages to
    // our bare JID go to offline storage instead of to us, for as long as it lasts.
    let mut stream_set_up = false;
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let record = match inner.store().account(account) {
            Ok(r) => r,
            Err(e) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Err(e.into()));
                }
                break;
            }
        };
        let Ok(jid) = BareJid::parse(&record.jid) else {
            break;
        };
        let server = record.server_host.as_ref().map(|h| ServerOverride {
            host: h.clone(),
            port: record.server_port.unwrap_or(5222),
            direct_tls: record.direct_tls,
        });
        // One resource per device, kept across sessions: a fresh one per login would leave
        // the server holding ghost sessions and split carbons between them.
        let resource = match record.resource.clone() {
            Some(r) => r,
            None => {
                let r = format!("linnet.{}", &linnet_xmpp::new_id()[..12]);
                if let Err(e) = inner.store().set_account_resource(account, Some(&r)) {
                    tracing::warn!(error = %e, "storing the resource failed");
                }
                r
            }
        };
        let mut cfg =
            inner.connect_config(&jid, &record.password, server.as_ref(), Some(&resource));
        drop(record);
        let mut state = inner.store().session_state(account).unwrap_or_default();
        apply_session_state(&mut cfg, &mut state);
        if let Some(previd) = state.sm_id.clone().filter(|_| inner.opts.stream_resumption) {
            // XEP-0198: pick the old stream up where it broke, with the count of stanzas we
            // stored durably, so the server re-sends exactly what we do not have.
            cfg.resume = Some(linnet_xmpp::ResumeRequest {
                previd,
                location: state.sm_location.clone(),
                h: state.sm_inbound,
                bound_jid: inner
                    .store()
                    .kv_get(Some(account), KV_BOUND_JID)
                    .ok()
                    .flatten(),
            });
        }
        if let Err(e) = inner.store().set_session_state(account, &state) {
            tracing::warn!(error = %e, "storing session state failed");
        }
        inner.set_connection(account, ConnectionState::Connecting);
        // The first login of this process plans from what the last one saw of the server,
        // as later ones do (see linnet_xmpp::login_hint).
        let stored_hint = inner
            .store()
            .kv_get(Some(account), KV_LOGIN_HINT)
            .ok()
            .flatten();
        if linnet_xmpp::login_hint(&cfg).is_none() {
            if let Some(h) = &stored_hint {
                if let Err(e) = linnet_xmpp::set_login_hint(&cfg, h) {
                    tracing::debug!(error = %e, "stored login hint unusable");
                }
            }
        }
        let attempt = linnet_xmpp::connect(&cfg).await;
        if attempt.is_ok() {
            if let Some(h) =
                linnet_xmpp::login_hint(&cfg).filter(|h| Some(h) != stored_hint.as_ref())
            {
                if let Err(e) = inner.store().kv_set(Some(account), KV_LOGIN_HINT, &h) {
                    tracing::warn!(error = %e, "storing the login hint failed");
                }
            }
        }
        if let Ok(conn) = &attempt {
            if let Some(token) = &conn.negotiated.fast_token {
                // A new (or rotated) token: its counter starts again.
                state.fast = Some(linnet_store::FastToken {
                    mechanism: token.mechanism.clone(),
                    token: token.token.clone(),
                    expiry: Some(token.expiry.clone()),
                });
                state.fast_count = 0;
                if let Err(e) = inner.store().set_session_state(account, &state) {
                    tracing::warn!(error = %e, "storing the FAST token failed");
                }
            }
        }
        if let Err(e) = &attempt {
            if e.is_fast_token_rejected() {
                // XEP-0484: a refused token is dropped; the password path follows at once.
                tracing::info!(
                    account = account.0,
                    "FAST token refused; using the password"
                );
                state.fast = None;
                state.fast_count = 0;
                if let Err(e) = inner.store().set_session_state(account, &state) {
                    tracing::warn!(error = %e, "clearing the FAST token failed");
                }
                continue;
            }
        }
        let mut was_online = false;
        let mut online_at = tokio::time::Instant::now();
        let reason = match attempt {
            Ok(conn) => {
                backoff = inner.opts.min_backoff;
                let resumed = conn.negotiated.resumed.is_some();
                let base = conn.negotiated.sm_base();
                let (session, events) = Session::start_durable(conn, jid.clone(), base);
                let sm = session.sm_state();
                tracing::debug!(
                    account = account.0,
                    resumed,
                    asked_h = ?cfg.resume.as_ref().map(|r| r.h),
                    inbound = base.inbound,
                    outbound = base.outbound,
                    "session started"
                );
                state.sm_id = sm.id;
                state.sm_location = sm.location;
                state.sm_inbound = sm.inbound_handled;
                let stored = {
                    // One guard for both writes (taking the lock twice in one expression
                    // would deadlock).
                    let store = inner.store();
                    store.set_session_state(account, &state).and_then(|()| {
                        store.kv_set(Some(account), KV_BOUND_JID, &session.negotiated.bound_jid)
                    })
                };
                if let Err(e) = stored {
                    tracing::warn!(error = %e, "storing stream-management state failed");
                }
                let prev = previous.take();
                let carried = match prev {
                    Some(prev) => session.carry_over(&prev),
                    None => Vec::new(),
                };
                // A resumed stream keeps roster, presence and carbons, if it got them. After
                // a restart we cannot know it did: setting up again is harmless.
                let needs_setup = !resumed || !stream_set_up;
                stream_set_up = false;
                let setup = if !needs_setup {
                    Ok(())
                } else {
                    match setup(&inner, account, &session).await {
                        // Bundles are published after every fresh login (what was used
                        // of them is replaced), beside the session.
                        Ok(false) => {
                            tokio::spawn(crate::omemo::publish_own_device(
                                inner.clone(),
                                account,
                                session.clone(),
                            ));
                            Ok(())
                        }
                        Ok(true) => Ok(()),
                        Err(e) => Err(e),
                    }
                };
                match setup {
                    Ok(()) => {
                        stream_set_up = true;
                        {
                            // Under the slot lock, which `send_message` holds while it queues
                            // and sends: every message queued before is re-sent here first,
                            // every later one goes out after them, so order is kept.
                            let mut published = lock(&slot);
                            resend_outbox(&inner, account, &session, &carried);
                            for (to, id) in std::mem::take(&mut unsent_receipts) {
                                if session.send_receipt(&to, &id).is_err() {
                                    unsent_receipts.push((to, id));
                                }
                            }
                            // A new session starts active; a resumed one keeps what the
                            // old stream last said, which may be stale.
                            let foreground = inner.foreground.load(Ordering::SeqCst);
                            if !foreground || resumed {
                                let _ = session.set_active(foreground);
                            }
                            if resumed {
                                // A resumed stream the server cannot read takes everything
                                // we send (see `UNREAD_STREAM`): find out at once.
                                let _ = session.check_link();
                            }
                            *published = Some(session.clone());
                        }
                        tokio::spawn(crate::omemo::send_queued(
                            inner.clone(),
                            account,
                            slot.clone(),
                            session.clone(),
                            send_wake.clone(),
                        ));
                        if needs_setup {
                            tokio::spawn(crate::blocking::refresh(
                                inner.clone(),
                                account,
                                session.clone(),
                            ));
                        }
                        tokio::spawn(crate::groups::on_session(
                            inner.clone(),
                            account,
                            session.clone(),
                            !needs_setup,
                        ));
                        crate::files::session_up(&inner, account);
                        was_online = true;
                        online_at = tokio::time::Instant::now();
                        // Every session catches up from the archive (see `pump`). Before
                        // "online", so that no one sees online and caught up before the
                        // catch-up started.
                        inner.set_catching_up(account, true);
                        inner.set_connection(account, ConnectionState::Online);
                        if let Some(f) = first.take() {
                            let _ = f.send(Ok(()));
                        }
                        let reason = pump(
                            &inner,
                            account,
                            &session,
                            events,
                            &mut unsent_receipts,
                            &mut placement,
                        )
                        .await;
                        *lock(&slot) = None;
                        // The server may have been told a higher h than the last batch
                        // stored (stanzas without events count at once), and refuses to
                        // resume with less than it was told.
                        let sm = session.sm_state();
                        if sm.id.is_some() && sm.id == state.sm_id {
                            raise_sm_inbound(&inner, account, sm.inbound_handled);
                        }
                        if reason.is_unread_stream() {
                            // Resuming would bring the same deafness back: a new stream,
                            // to which the previous one's unacknowledged stanzas go again
                            // (receivers drop what they already have), and the archive
                            // catch-up brings what its queue held.
                            tracing::info!(
                                account = account.0,
                                "server stopped reading the stream; next login is fresh"
                            );
                            state.sm_id = None;
                            if let Err(e) = inner.store().set_session_state(account, &state) {
                                tracing::warn!(error = %e, "clearing stream-management state failed");
                            }
                        }
                        previous = Some(session);
                        inner.denials_ended(account);
                        reason
                    }
                    Err(e) => {
                        session.close().await;
                        *lock(&slot) = None;
                        // What it was handed (the previous stream's receipts) goes on to
                        // the next one.
                        previous = Some(session);
                        e
                    }
                }
            }
            Err(e) => e,
        };
        if stop.load(Ordering::SeqCst) {
            // Logged out: the stream was closed, there is nothing to resume.
            state.sm_id = None;
            state.sm_inbound = 0;
            if let Err(e) = inner.store().set_session_state(account, &state) {
                tracing::warn!(error = %e, "clearing stream-management state failed");
            }
            break;
        }
        // Wrong credentials or certificates will not fix themselves; a protocol hiccup or a
        // network failure may, so those are retried with backoff.
        let retry = reason.is_transient() || matches!(reason, ConnectError::Protocol(_));
        if !retry {
            tracing::info!(account = account.0, error = %reason, "login failed; not retrying");
            inner.set_connection(
                account,
                ConnectionState::Offline {
                    reason: Some(reason.to_string()),
                },
            );
            if let Some(f) = first.take() {
                let _ = f.send(Err(reason.into()));
            }
            break;
        }
        // A session that was up and dropped is retried at once (the link usually flickered);
        // failed attempts then back off exponentially with full jitter, so that many clients
        // dropped together by one outage do not come back in lockstep.
        let recently = last_immediate.is_some_and(|t| t.elapsed() < Duration::from_secs(30));
        let healthy = online_at.elapsed() >= HEALTHY_SESSION;
        if was_online && (healthy || !recently) {
            // A session that lasted was healthy: each of its drops is worth an immediate
            // retry. Short-lived ones get one per 30 s at most, so a server that drops us
            // right after login does not get a tight reconnect loop.
            last_immediate = Some(tokio::time::Instant::now());
            continue;
        }
        let delay = {
            let ms = backoff.as_millis() as u64;
            Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
        };
        backoff = (backoff * 2).min(inner.opts.max_backoff);
        inner.set_connection(
            account,
            ConnectionState::Waiting {
                retry_at_ms: now_ms() + delay.as_millis() as i64,
                reason: reason.to_string(),
            },
        );
        if let Some(f) = first.take() {
            let _ = f.send(Err(reason.into()));
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified() => { backoff = inner.opts.min_backoff; }
        }
    }
}

/// Puts the stored FAST token (with its next counter) and the device's user-agent id into
/// the login, creating the id on first use. The counter is stored before the attempt, so a
/// crash mid-login can never make us reuse a count.
fn apply_session_state(
    cfg: &mut linnet_xmpp::ConnectConfig,
    state: &mut linnet_store::SessionState,
) {
    let id = state
        .user_agent_id
        .get_or_insert_with(linnet_xmpp::new_user_agent_id)
        .clone();
    cfg.user_agent_id = id;
    if let Some(t) = &state.fast {
        state.fast_count = state.fast_count.saturating_add(1);
        cfg.fast = Some(linnet_xmpp::FastToken::new(
            &t.mechanism,
            &t.token,
            t.expiry.as_deref().unwrap_or(""),
        ));
        cfg.fast_count = state.fast_count;
    }
}

/// After login: roster, initial presence (which releases offline messages), carbons, and
/// whatever the outbox still holds.
/// Returns whether our OMEMO device was published during it.
async fn setup(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
) -> Result<bool, ConnectError> {
    let to_conn = |e: linnet_xmpp::RequestError| match e {
        linnet_xmpp::RequestError::Timeout => ConnectError::Timeout("setup"),
        other => ConnectError::Network(other.to_string()),
    };
    // Pipelined: both requests go out at once, one round trip for the two.
    let (roster, carbons) = tokio::join!(session.fetch_roster(), session.enable_carbons());
    if let Err(e) = carbons {
        tracing::info!(error = %e, "carbons not enabled");
    }
    let roster = roster.map_err(to_conn)?;
    let records: Vec<ContactRecord> = roster.iter().filter_map(contact_record).collect();
    if let Err(e) = inner.store().replace_roster(account, &records, None) {
        tracing::error!(error = %e, "storing roster failed");
    }
    inner.refresh_account(account);
    // A device not yet in our device lists goes there before our presence does: contacts
    // who see a new resource of ours may look, and ejabberd notifies of a list published
    // by a session only the contacts whose presence that session has received, while it
    // sends the current list to each contact whose presence reaches it afterwards.
    let publish_first = !crate::omemo::own_device_listed(inner, account, session.own_jid());
    if publish_first {
        crate::omemo::publish_own_device(inner.clone(), account, session.clone()).await;
    }
    session.send_presence(None, None).map_err(to_conn)?;
    inner.publish_chat_list();
    Ok(publish_first)
}

/// Sends the outbox again, but not what `carried` names (the resumed stream took care of it).
fn resend_outbox(inner: &Inner, account: AccountId, session: &Session, carried: &[String]) {
    let entries = match inner.store().outbox(account) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "reading outbox failed");
            return;
        }
    };
    for entry in entries {
        if entry.kind == crate::omemo::KIND_TO_ENCRYPT
            || entry.kind == crate::omemo::KIND_GROUP_TO_ENCRYPT
        {
            // Not a stanza yet: the encrypting sender takes it (see `omemo::send_queued`).
            continue;
        }
        if entry.kind == crate::groups::KIND_GROUPCHAT {
            // Goes out once we are in its room again (see `groups::after_join`).
            continue;
        }
        let origin = entry
            .message
            .and_then(|m| inner.store().message(m).ok())
            .and_then(|m| m.origin_id);
        let Some(id) = origin else {
            let _ = inner.store().outbox_remove(entry.id);
            continue;
        };
        if carried.contains(&id) {
            continue;
        }
        if session.send_raw_tracked(&entry.payload, &id).is_err() {
            return;
        }
        let _ = inner.store().outbox_bump_attempts(entry.id);
    }
}

/// Stores a durable inbound count if it is ahead of the stored one (XEP-0198 arithmetic).
fn raise_sm_inbound(inner: &Inner, account: AccountId, handled: u32) {
    let store = inner.store();
    let stored = match store.session_state(account) {
        Ok(s) => s.sm_inbound,
        Err(e) => {
            tracing::warn!(error = %e, "reading stream-management state failed");
            return;
        }
    };
    if (handled.wrapping_sub(stored) as i32) > 0 {
        if let Err(e) = store.set_sm_inbound(account, handled) {
            tracing::warn!(error = %e, "storing stream-management state failed");
        }
    }
}

/// How long a batch waits for more results while catching up (see `pump`).
const CATCH_UP_GATHER: Duration = Duration::from_millis(10);

/// A session online this long before it dropped was healthy (see the reconnect policy).
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Extra catch-up reads per session for messages the catch-up did not show (see
/// `Placement`): a message that never reaches the archive must not make it loop.
const MAX_RECHECKS: u32 = 2;

async fn pump(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    mut events: mpsc::UnboundedReceiver<(u32, Event)>,
    unsent_receipts: &mut Vec<(String, String)>,
    placement: &mut Placement,
) -> ConnectError {
    // A fresh session may have missed what the broken one had not delivered: the archive
    // fills that gap. A resumed one catches up too (one query, usually an empty page):
    // ejabberd may re-send the old stream's unacknowledged messages after ones routed to the
    // session during the handover, and the archive, read from before them, puts them back
    // in order. While catching up, live messages do not move the archive cursor: the gap
    // before them is not filled yet.
    let mut catching_up = false;
    // Where this session's catch-up began, to read it again when a late message comes that
    // the catch-up did not show (see `Placement::recheck_wanted`).
    let mut start: Option<(ArchiveFrom, Option<MessageId>)> = None;
    // Where the last catch-up ended, to read on from there when messages that came live
    // during it are not in what it read (see `Placement::unconfirmed_left`).
    let mut ended_at: Option<ArchiveFrom> = None;
    let mut rechecks = 0;
    // The archive time of the message the catch-up starts after, to tell whether the
    // archive expired what followed it (see `Event::ArchiveOldest`) and to read on by time
    // when that message itself is gone.
    let mut cursor_time: Option<i64> = None;
    {
        let from = match inner.store().kv_get(Some(account), KV_ARCHIVE_LAST) {
            Ok(Some(last)) if last.is_empty() => Some(ArchiveFrom::Start),
            Ok(Some(last)) => Some(ArchiveFrom::After(last)),
            // First login on this device: the newest page, which also holds what waited
            // for us (with Bind2, servers leave offline messages to the archive).
            Ok(None) => Some(ArchiveFrom::Recent),
            Err(e) => {
                tracing::warn!(error = %e, "reading the archive cursor failed");
                None
            }
        };
        if let Some(from) = from {
            let anchor = match &from {
                ArchiveFrom::After(last) => {
                    let own = session.own_jid().as_str();
                    inner
                        .store()
                        .message_by_archive_id(account, own, last)
                        .unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "finding the archive cursor's message failed");
                            None
                        })
                }
                _ => None,
            };
            placement.catch_up_from(anchor);
            catching_up = session.catch_up(from.clone()).is_ok();
            if let Some(a) = anchor {
                cursor_time = inner.store().message(a).ok().map(|m| m.timestamp_ms);
                let _ = session.archive_query(ArchiveFrom::Oldest);
            }
            start = Some((from, anchor));
        }
    }
    if !catching_up {
        inner.set_catching_up(account, false);
        placement.caught_up();
    }
    while let Some(ev) = events.recv().await {
        let mut batch = vec![ev];
        while batch.len() < BATCH {
            match events.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        // A catch-up's results trickle in as the server sends them: gathered for a moment,
        // they share one transaction and one fsync instead of one each.
        if catching_up && batch.len() < BATCH {
            let until = tokio::time::Instant::now() + CATCH_UP_GATHER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(until, events.recv()).await {
                    Ok(Some(ev)) => batch.push(ev),
                    _ => break,
                }
            }
        }
        // Results of our archive can be read again (the cursor moves in the same
        // transaction), so acknowledging them needs no fsync of their own.
        let rereadable = batch.iter().all(|(_, ev)| {
            matches!(ev, Event::Message(m) if m.archived)
                || matches!(
                    ev,
                    Event::ArchivePage { .. }
                        | Event::ArchiveProgress { .. }
                        | Event::ArchiveOldest { .. }
                        | Event::HistoryPage { .. }
                        | Event::HistoryFailed { .. }
                )
        });
        let mut closed = None;
        let mut next_page = None;
        let mut older_loaded = Vec::new();
        let mut effects = Effects::default();
        // One transaction per batch. The chat list is updated from inside it and published
        // while the commit runs (received messages may be shown before they are on disk;
        // they are not acknowledged before). The commit does not wait for the disk; the
        // fsync follows, and only then do receipts (which tell the sender we have it) go out.
        // The highest stanza seq in the batch: stored with what the stanzas carried, and
        // confirmed to the session (which acknowledges it to the server) once on disk.
        let handled = batch.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
        let result = blocking(|| {
            inner.store().transaction_unsynced(|tx| {
            if handled > 0 {
                tx.set_sm_inbound(account, handled)?;
            }
            for (_, ev) in batch {
                match ev {
                    Event::Closed(reason) => closed = Some(reason),
                    Event::ArchivePage { from, complete, last } => {
                        tracing::debug!(account = account.0, ?from, complete, "archive page");
                        // A catch-up hands its pages on in archive order, each page's last
                        // id moving the cursor; Latest and Recent are one page each.
                        let single = matches!(from, ArchiveFrom::Latest | ArchiveFrom::Recent);
                        let cursor = if single {
                            Some(last.unwrap_or_default())
                        } else {
                            last
                        };
                        if let Some(c) = &cursor {
                            tx.kv_set(Some(account), KV_ARCHIVE_LAST, c)?;
                        }
                        if complete || single {
                            catching_up = false;
                            ended_at = Some(match cursor.as_deref() {
                                Some("") => ArchiveFrom::Start,
                                Some(c) => ArchiveFrom::After(c.to_owned()),
                                None => from,
                            });
                        }
                    }
                    Event::ArchiveOldest { id, stamp_ms } => {
                        // The archive forgets oldest first: if even its oldest message is
                        // newer than where we left off, what lay between may be lost.
                        let cursor = match &start {
                            Some((ArchiveFrom::After(c), _)) => Some(c.as_str()),
                            _ => None,
                        };
                        if let Some(after) = cursor_time.take() {
                            let before = stamp_ms.unwrap_or_else(now_ms);
                            if id.as_deref() != cursor && before > after {
                                tracing::warn!(account = account.0, "the archive expired messages we had not read");
                                tx.add_history_gap(account, linnet_store::HistoryGap { after_ms: after, before_ms: before })?;
                                effects.gap = true;
                                // Everything the archive still holds is newer than our
                                // cursor, and a server may answer a query after a vanished
                                // id with nothing at all (Prosody does): read it all.
                                next_page = Some(ArchiveFrom::Start);
                            }
                        }
                    }
                    Event::ArchiveProgress { received, total } => {
                        inner.set_sync_progress(account, SyncProgress { received, total });
                    }
                    Event::HistoryPage { with, complete } => {
                        if let Some(c) = tx.conversation(account, with.as_str(), false)? {
                            placement.scrollback_done(c);
                            if complete {
                                tx.set_history_complete(c, true)?;
                            }
                            older_loaded.push(c);
                        }
                    }
                    Event::HistoryFailed { with, condition } => {
                        tracing::info!(account = account.0, condition = %condition, "older history refused");
                        if let Some(c) = tx.conversation(account, with.as_str(), false)? {
                            placement.scrollback_done(c);
                            older_loaded.push(c);
                        }
                    }
                    Event::ArchiveFailed { from, condition } => {
                        if condition == "item-not-found" && matches!(from, ArchiveFrom::After(_)) {
                            // The message our cursor names has left the archive (expired,
                            // or deleted): read what it holds from its start, where no
                            // clock can mislead us; what we hold already is recognised.
                            // Whether the archive lost more is `ArchiveOldest`'s to tell.
                            tracing::warn!(account = account.0, "archive cursor gone");
                            next_page = Some(ArchiveFrom::Start);
                        } else {
                            tracing::info!(account = account.0, condition = %condition, "archive catch-up refused");
                            catching_up = false;
                        }
                    }
                    ev @ (Event::RoomMessage(_)
                    | Event::PrivateMessage { .. }
                    | Event::RoomPresence(_)
                    | Event::RoomJoinFailed(_)
                    | Event::RoomHistoryPage { .. }
                    | Event::RoomHistoryFailed { .. }
                    | Event::Invitation(_)
                    | Event::Bookmarks(_)) => {
                        let mut ev = Some(ev);
                        if let Err(e) = crate::groups::apply(
                            inner,
                            tx,
                            account,
                            session.own_jid(),
                            &mut ev,
                            &mut effects.rooms,
                            &mut effects.omemo,
                            &mut effects.changed,
                        ) {
                            tracing::warn!(account = account.0, error = %e, "group event not applied");
                        }
                        effects.receipts.append(&mut effects.rooms.receipts);
                    }
                    ev @ (Event::Call(_) | Event::Jingle(_)) => effects.calls.push(ev),
                    ev if inner.stale_request(account, &ev) => {
                        tracing::debug!(account = account.0, "re-sent request to a denial dropped");
                    }
                    ev => {
                        // A late message (one with a delay stamp: offline, or re-sent from a
                        // broken stream) may stand before what came live ahead of it.
                        let cursor = match &ev {
                            Event::Message(m)
                                if !m.archived && !catching_up && m.timestamp_ms.is_none() =>
                            {
                                m.stanza_id.clone()
                            }
                            _ => None,
                        };
                        if let Some(c) = cursor {
                            tx.kv_set(Some(account), KV_ARCHIVE_LAST, &c)?;
                        }
                        // Each store call is atomic on its own, so one event the store
                        // refuses does not take the rest of the batch with it.
                        if let Err(e) = apply(tx, account, session.own_jid(), ev, &mut effects, placement) {
                            tracing::warn!(account = account.0, error = %e, "event not applied");
                        }
                    }
                }
            }
            effects.changed.sort_by_key(|c| c.0);
            effects.changed.dedup();
            for c in &effects.changed {
                if let Ok(summary) = tx.conversation_info(*c) {
                    inner.update_conversation_item(summary);
                }
            }
            if !effects.changed.is_empty() {
                inner.publish_chat_list();
            }
            Ok(())
        })
        });
        if let Err(e) = &result {
            // Nothing of the batch was stored, so nothing of it is confirmed to anyone, and
            // the model goes back to what the database holds.
            tracing::error!(account = account.0, error = %e, "storing a batch of events failed");
            effects = Effects::default();
            if let Err(e) = inner.reload_model() {
                tracing::error!(error = %e, "reloading the model failed");
            }
            inner.publish_chat_list();
        }
        if effects.roster_changed {
            inner.refresh_account(account);
            inner.publish_chat_list();
        }
        for c in &effects.changed {
            inner.conversation_snapshot_changed(*c);
        }
        for (c, typing) in std::mem::take(&mut effects.typing) {
            inner.set_peer_typing(c, typing);
        }
        // The publisher was woken during the transaction; let it run before the fsync.
        tokio::task::yield_now().await;
        let urgent = !effects.receipts.is_empty() || !effects.approvals.is_empty();
        if rereadable && !urgent {
            if result.is_ok() && handled > 0 {
                session.confirm_handled(handled);
            }
        } else if urgent || handled > 0 {
            match blocking(|| inner.store().sync()) {
                Ok(()) => {
                    if result.is_ok() && handled > 0 {
                        session.confirm_handled(handled);
                    }
                    for (to, id) in effects.receipts {
                        if session.send_receipt(&to, &id).is_err() {
                            unsent_receipts.push((to, id));
                        }
                    }
                    for to in effects.approvals {
                        let _ = session.send_presence(Some(&to), Some("subscribed"));
                    }
                }
                Err(e) => {
                    tracing::error!(account = account.0, error = %e, "sync failed; not acknowledging")
                }
            }
        } else if let Err(e) = blocking(|| inner.store().sync()) {
            tracing::error!(account = account.0, error = %e, "sync failed");
        }
        let omemo = std::mem::take(&mut effects.omemo);
        if result.is_ok() {
            crate::omemo::after_open(inner, account, session, omemo);
        }
        if let Some(from) = next_page {
            placement.catch_up_from(start.as_ref().and_then(|(_, anchor)| *anchor));
            catching_up = session.catch_up(from).is_ok();
            inner.set_catching_up(account, catching_up);
        }
        for c in older_loaded {
            inner.older_loaded(c);
        }
        if result.is_ok() {
            crate::groups::after_commit(
                inner,
                account,
                session,
                std::mem::take(&mut effects.rooms),
            );
            crate::profiles::after_commit(
                inner,
                account,
                session,
                std::mem::take(&mut effects.profiles),
            );
        }
        for ev in std::mem::take(&mut effects.calls) {
            match ev {
                Event::Call(sig) => crate::calls::on_signal(inner, account, session, *sig),
                Event::Jingle(req) => crate::calls::on_jingle(inner, account, session, *req),
                _ => {}
            }
        }
        if effects.presence_again {
            // ejabberd notifies (avatar, nickname, device lists) only the contacts whose
            // capabilities the publishing session took from a presence received while they
            // were subscribed to it. Ours reached this contact before they approved us.
            let _ = session.send_presence(None, None);
        }
        if effects.gap {
            for c in inner.subscribed_conversations(account) {
                inner.conversation_snapshot_changed(c);
            }
        }
        if !catching_up && placement.recheck_wanted() {
            match &start {
                Some((from, anchor)) if rechecks < MAX_RECHECKS => {
                    rechecks += 1;
                    tracing::debug!(
                        account = account.0,
                        "a late message was not in the catch-up; reading it again"
                    );
                    placement.catch_up_from(*anchor);
                    catching_up = session.catch_up(from.clone()).is_ok();
                    if catching_up {
                        inner.set_catching_up(account, true);
                    }
                }
                _ => placement.give_up_recheck(),
            }
        } else if !catching_up && placement.unconfirmed_left() {
            match ended_at.take() {
                Some(from) if rechecks < MAX_RECHECKS => {
                    rechecks += 1;
                    tracing::debug!(
                        account = account.0,
                        "messages came live during the catch-up; reading on"
                    );
                    catching_up = session.catch_up(from).is_ok();
                }
                _ => placement.give_up_recheck(),
            }
        }
        if !catching_up {
            inner.set_catching_up(account, false);
            placement.caught_up();
        }
        if let Some(reason) = closed {
            inner.set_catching_up(account, false);
            return reason;
        }
    }
    inner.set_catching_up(account, false);
    ConnectError::Network("session ended".into())
}

/// Runs blocking database work without stalling the runtime: on a multi-threaded runtime
/// the worker hands its other tasks (such as the snapshot publisher it just woke) to another
/// thread first. A current-thread runtime has no other thread, so the work runs inline.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What applying events leaves to do once they are committed.
#[derive(Default)]
struct Effects {
    changed: Vec<ConversationId>,
    roster_changed: bool,
    receipts: Vec<(String, String)>,
    approvals: Vec<BareJid>,
    omemo: crate::omemo::OmemoEffects,
    /// Conversations whose peer started (true) or stopped typing.
    typing: Vec<(ConversationId, bool)>,
    /// A gap in the history was recorded.
    gap: bool,
    rooms: crate::groups::GroupEffects,
    profiles: crate::profiles::ProfileEffects,
    /// A contact approved our request: our presence goes out again (see below).
    presence_again: bool,
    /// Call messages and Jingle requests, for `calls` after the commit.
    calls: Vec<Event>,
}

fn apply(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    ev: Event,
    fx: &mut Effects,
    placement: &mut Placement,
) -> Result<(), linnet_store::StoreError> {
    match ev {
        Event::Message(m) => on_message(tx, account, own, m, fx, placement)?,
        Event::Receipt { from, id } => {
            if let Some(msg) = tx.message_by_account_origin_id(account, &id)? {
                // Only the peer the message went to can confirm its delivery.
                let peer = tx.conversation_info(msg.conversation)?.peer;
                if msg.direction == Direction::Outgoing
                    && peer == from.as_str()
                    && tx.set_delivery_state(msg.id, DeliveryState::Delivered)?
                {
                    fx.changed.push(msg.conversation);
                }
            }
        }
        Event::MessageError { id, condition } => {
            if let Some(msg) = tx.message_by_account_origin_id(account, &id)? {
                if msg.direction == Direction::Outgoing {
                    tracing::info!(message = msg.id.0, condition = %condition, "message bounced");
                    if condition == "blocked" {
                        tx.set_message_error(msg.id, Some("you block this contact"))?;
                    } else if msg.private_with.is_some() {
                        let reason = crate::groups::private_message_refused(&condition);
                        tx.set_message_error(msg.id, Some(reason))?;
                    }
                    if tx.set_delivery_state(msg.id, DeliveryState::Failed)? {
                        fx.changed.push(msg.conversation);
                    }
                }
            }
        }
        Event::Acked { id } => {
            if let Some(msg) = tx.message_by_account_origin_id(account, &id)? {
                for entry in tx.outbox(account)? {
                    if entry.message == Some(msg.id) {
                        tx.outbox_remove(entry.id)?;
                    }
                }
                // A bounce can come before the server's acknowledgement of what it refused.
                if msg.delivery_state != DeliveryState::Failed
                    && tx.set_delivery_state(msg.id, DeliveryState::Sent)?
                {
                    fx.changed.push(msg.conversation);
                }
            }
        }
        Event::RosterPush(item) => {
            if item.subscription == Subscription::Remove {
                tx.remove_contact(account, item.jid.as_str())?;
            } else if let Some(rec) = contact_record(&item) {
                if matches!(rec.subscription, RosterSub::From | RosterSub::Both) {
                    tx.remove_subscription_request(account, item.jid.as_str())?;
                }
                let before = tx.contact(account, item.jid.as_str())?;
                let sees = |s: &RosterSub| matches!(s, RosterSub::To | RosterSub::Both);
                if sees(&rec.subscription) && !before.is_some_and(|c| sees(&c.subscription)) {
                    fx.omemo.fetch_lists.push(item.jid.clone());
                }
                tx.upsert_contact(account, &rec)?;
            }
            fx.roster_changed = true;
        }
        Event::SubscriptionRequest { from, nick } => {
            let contact = tx.contact(account, from.as_str())?;
            // Approve without asking when they already see our presence (a re-sent
            // request) or when we asked for theirs first: adding someone means wanting
            // a mutual subscription.
            let approve = contact
                .map(|c| {
                    matches!(
                        c.subscription,
                        RosterSub::From | RosterSub::Both | RosterSub::To
                    ) || c.ask
                })
                .unwrap_or(false);
            if approve {
                fx.approvals.push(from);
            } else {
                // The nickname stays with the request, a hint beside the JID: it is not
                // the profile they publish, which only their PEP service speaks for.
                tx.add_subscription_request(account, from.as_str(), nick.as_deref())?;
                fx.roster_changed = true;
            }
        }
        Event::Unsubscribed { from } => {
            tx.remove_subscription_request(account, from.as_str())?;
            fx.roster_changed = true;
        }
        // Handled by the pump, which owns the catch-up state.
        Event::ArchivePage { .. }
        | Event::ArchiveFailed { .. }
        | Event::ArchiveOldest { .. }
        | Event::ArchiveProgress { .. }
        | Event::HistoryPage { .. }
        | Event::HistoryFailed { .. } => {}
        Event::PepItems { from, node, items } => {
            crate::profiles::on_pep(tx, account, own, &from, &node, &items, &mut fx.profiles)?;
            let version = [OmemoVersion::V03, OmemoVersion::V2]
                .into_iter()
                .find(|v| v.devices_node() == node);
            if let Some(version) = version {
                // A node keeps one list: the last item of a notification is the current one.
                let payload = items.last().map(|i| i.payload.as_str());
                if crate::omemo::device_list_seen(tx, account, own, &from, version, payload)? {
                    fx.omemo.republish = true;
                }
                // The conversation shows the peer's devices.
                if let Some(c) = tx.conversation(account, from.as_str(), false)? {
                    fx.changed.push(c);
                }
            }
        }
        Event::Presence {
            from_full,
            available: true,
            photo,
        } => {
            let Some(from) =
                linnet_xmpp::jid::split_bare(&from_full).and_then(|b| BareJid::parse(&b).ok())
            else {
                return Ok(());
            };
            // Another device of ours came online, maybe a new one: ejabberd does not
            // notify our other sessions of a device list published before its presence
            // (see `setup`), so our list is read again.
            if from == *own && !fx.omemo.fetch_lists.contains(own) {
                fx.omemo.fetch_lists.push(own.clone());
            }
            if let Some(photo) = photo {
                crate::profiles::on_photo(tx, account, own, &from, &photo, &mut fx.profiles)?;
            }
        }
        Event::Presence {
            from_full,
            available: false,
            ..
        } => {
            // Gone: whatever they were typing will not come.
            if let Some(peer) = linnet_xmpp::jid::split_bare(&from_full) {
                if let Some(c) = tx.conversation(account, &peer, false)? {
                    fx.typing.push((c, false));
                }
            }
        }
        Event::ChatState { from, state } => {
            if let Some(c) = tx.conversation(account, from.as_str(), false)? {
                fx.typing
                    .push((c, state == linnet_xmpp::rich::ChatState::Composing));
            }
        }
        Event::Displayed { peer, id, outgoing } => {
            if let Some(c) = crate::rich::on_displayed(tx, account, &peer, &id, outgoing)? {
                fx.changed.push(c);
            }
        }
        Event::Blocklist(push) => {
            crate::blocking::apply_push(tx, account, push)?;
            fx.roster_changed = true;
        }
        Event::Subscribed { .. } => fx.presence_again = true,
        // The session logged it; nothing of it was read that could be stored.
        Event::Closed(_) | Event::Dropped { .. } => {}
        // Handled by the pump (see `groups::apply`).
        Event::RoomMessage(_)
        | Event::PrivateMessage { .. }
        | Event::RoomPresence(_)
        | Event::RoomJoinFailed(_)
        | Event::RoomHistoryPage { .. }
        | Event::RoomHistoryFailed { .. }
        | Event::Invitation(_)
        | Event::Bookmarks(_)
        | Event::Call(_)
        | Event::Jingle(_) => {}
    }
    Ok(())
}

fn on_message(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    m: ChatMessage,
    fx: &mut Effects,
    placement: &mut Placement,
) -> Result<(), linnet_store::StoreError> {
    let Some(conversation) = tx.conversation(account, m.peer.as_str(), true)? else {
        return Ok(());
    };
    let mut m = m;
    let mut encryption = linnet_store::Encryption::Plain;
    let mut error = None;
    let mut from_device = None;
    if !m.encrypted.is_empty() {
        // A copy of a message we hold (the archive's, a re-sent one, our own sent one) is
        // not decrypted again: its key is gone, and so it would show as undecryptable.
        let origin = m.origin_id.as_ref().or(m.id.as_ref());
        let held = match origin {
            Some(o) => tx.message_by_origin_id(conversation, o)?.is_some(),
            None => false,
        } || match (&m.stanza_id, &m.stanza_id_by) {
            (Some(id), Some(by)) => tx.message_by_archive_id(account, by, id)?.is_some(),
            _ => false,
        };
        if !held {
            match crate::omemo::open_message(tx, account, own, &m, &mut fx.omemo)? {
                Opened::Body(body, e, device) => {
                    m.body = body;
                    encryption = e;
                    from_device = Some(device);
                }
                Opened::Nothing => return Ok(()),
                Opened::Failed(reason, e) => {
                    m.body = String::new();
                    encryption = e;
                    error = Some(reason);
                }
            }
        }
    }
    let change = crate::rich::change_of(tx, conversation, &m)?;
    if matches!(change, crate::rich::Change::Drop) {
        return Ok(());
    }
    let timestamp_ms = if m.scrollback {
        placement.scrollback_time(tx, conversation, m.timestamp_ms)?
    } else {
        placement.time_for(tx, conversation, m.archived, m.timestamp_ms)?
    };
    if !m.outgoing && !m.archived {
        // A message ends the typing that led to it.
        fx.typing.push((conversation, false));
    }
    if let crate::rich::Change::Apply(kind, target) = change {
        let applied = crate::rich::store_change(
            tx,
            conversation,
            own,
            &m,
            kind,
            target,
            timestamp_ms,
            encryption,
            error,
        )?;
        if applied {
            // The corrected text shows as coming from the correction's device.
            if let (linnet_store::MessageKind::Correction, Some(d)) = (kind, &from_device) {
                crate::omemo::record_sender(tx, target, d)?;
            }
            fx.changed.push(conversation);
        }
        // A correction asks for a receipt like the message it replaces.
        return if m.scrollback {
            Ok(())
        } else {
            receipt(tx, account, &m, fx)
        };
    }
    let (body, reply_to) = crate::rich::message_parts(&m);
    let inserted = tx.insert_message(&NewMessage {
        reply_to,
        markable: m.rich.markable,
        replaces: m.rich.replace.clone(),
        ..received_row(conversation, own, &m, body, timestamp_ms, encryption, error)
    })?;
    if let Inserted::New(rec) = &inserted {
        if let Some(d) = &from_device {
            crate::omemo::record_sender(tx, rec.id, d)?;
        }
        crate::files::store_received(tx, rec.id, !m.encrypted.is_empty(), &m.rich)?;
        crate::files::store_received_encrypted(tx, rec.id, encryption, &m.body)?;
    }
    match inserted {
        // Old history: read, placed by its own time, never acknowledged again.
        Inserted::New(_) if m.scrollback => {
            fx.changed.push(conversation);
            return Ok(());
        }
        Inserted::Duplicate(_) if m.scrollback => return Ok(()),
        Inserted::New(rec) => {
            // Only what our archive holds can be confirmed by it.
            let in_archive = m.stanza_id.is_some();
            let late = !m.archived && m.timestamp_ms.is_some() && in_archive;
            placement.stored(
                conversation,
                m.archived,
                in_archive,
                late,
                timestamp_ms,
                rec.id,
            );
            fx.changed.push(conversation);
        }
        Inserted::Duplicate(id) => {
            let held = tx.message(id)?;
            if !m.archived {
                placement.streamed_again(conversation, held.timestamp_ms);
            } else {
                // A message can stand in the archive more than once: a sender re-sends what
                // a refused resumption left unacknowledged with its original id, and
                // ejabberd archives a message again each time it delivers it again. Its
                // first entry is its place. The entry we hold it by came first unless the
                // message reached us live during a catch-up and this catch-up has not
                // shown that entry yet: then this one is earlier, and the message takes
                // its place and id.
                let other = match (&held.stanza_id, &m.stanza_id, &m.stanza_id_by) {
                    (Some(h), Some(r), Some(by)) if h != r => Some((r, by)),
                    _ => None,
                };
                let place = match other {
                    Some((r, by)) if placement.unconfirmed(id) => {
                        tx.set_stanza_id(id, r, by)?;
                        true
                    }
                    Some(_) => false,
                    None => true,
                };
                placement.confirmed(id);
                if place {
                    if let Some(t) =
                        placement.archived_again(tx, conversation, held.timestamp_ms, id)?
                    {
                        tx.set_message_time(id, t)?;
                        fx.changed.push(conversation);
                    }
                }
            }
        }
    }
    receipt(tx, account, &m, fx)
}

/// The row of a received message (or of a change to one): its sender, ids, time and
/// state as a message of the history; callers set what differs.
pub(crate) fn received_row(
    conversation: ConversationId,
    own: &BareJid,
    m: &ChatMessage,
    body: String,
    timestamp_ms: i64,
    encryption: linnet_store::Encryption,
    error: Option<String>,
) -> NewMessage {
    NewMessage {
        conversation,
        direction: if m.outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        sender: if m.outgoing {
            own.as_str().to_owned()
        } else {
            m.peer.as_str().to_owned()
        },
        body,
        origin_id: m.origin_id.clone().or_else(|| m.id.clone()),
        stanza_id: m.stanza_id.clone(),
        stanza_id_by: m.stanza_id_by.clone(),
        timestamp_ms,
        delivery_state: if m.outgoing {
            DeliveryState::Sent
        } else {
            DeliveryState::Delivered
        },
        encryption,
        error,
        kind: Default::default(),
        target: None,
        reply_to: None,
        markable: false,
        replaces: None,
    }
}

/// Receipts only to contacts who may see our presence anyway: a receipt tells a stranger
/// that we are online.
fn receipt(
    tx: &Tx<'_>,
    account: AccountId,
    m: &ChatMessage,
    fx: &mut Effects,
) -> Result<(), linnet_store::StoreError> {
    if m.wants_receipt && !m.carbon && !m.outgoing {
        let allowed = crate::rich::shares_presence(tx.contact(account, m.peer.as_str())?);
        if let (true, Some(id)) = (allowed, m.id.clone()) {
            fx.receipts.push((m.from_full.clone(), id));
        }
    }
    Ok(())
}

/// Gives received messages their times, which with the database id (on equal times)
/// order a conversation, so that the order shown is the server's:
/// - what arrives on the stream goes after what arrived before it (on this stream or an
///   earlier one), whatever its delay stamp says: a server delivers in order (RFC 6120
///   §10.1), but Prosody stamps offline messages and the stanzas it re-sends on a resumed
///   stream to the whole second, which alone would put them before messages that came
///   earlier in that second;
/// - the archive catch-up (after every login and resumption) is the server's order
///   itself: a result new to us goes after the previous result of its conversation (and
///   the first after the incoming messages held up to the one the catch-up starts after);
///   a result we hold stays where it is unless it stands before the previous result, and
///   then moves just after it. That puts right what arrived out of order live (ejabberd
///   re-sends a broken stream's queue after messages that came later). A message the
///   archive holds more than once stays placed by the entry we hold it by (see
///   `on_message`);
/// - the archive a catch-up reads can end before messages that came live during it (their
///   entries were written after the read), or a late message (re-sent from a broken
///   stream) can come after it: the catch-up then reads on, or again from where the
///   session's began, until the archive has shown them too (`MAX_RECHECKS` at most).
///
/// A moved message's time can be off by the gap it filled; the order is right once the
/// catch-up is complete (it carries on across resumptions until it is). The archive's
/// times are the server's clock and the others ours, so a skewed clock can still misplace
/// a result that is new to us relative to live messages of the same moment.
#[derive(Default)]
pub(crate) struct Placement {
    /// Per conversation, the latest time given on the stream path.
    stream: HashMap<ConversationId, i64>,
    /// Per conversation, (time, id) of the last catch-up result.
    archive: HashMap<ConversationId, (i64, MessageId)>,
    /// The message the current catch-up starts after, if we hold it.
    anchor: Option<MessageId>,
    /// Whether a catch-up is running (until its last page).
    catching_up: bool,
    /// Messages that reached us live while a catch-up ran, or late (see `late`), and that
    /// no catch-up result has shown by the archive entry we hold them by yet.
    unconfirmed: HashSet<MessageId>,
    /// The late ones among them: live with a delay stamp and an id in our archive. ejabberd
    /// re-sends a broken stream's queue after messages routed to the new stream, and can
    /// do so after the catch-up has read the archive (and before an entry it was writing
    /// showed in it). Such a message stands before what came ahead of it, where the catch-up
    /// no longer looks, so the session's catch-up is read again until it shows them.
    late: HashSet<MessageId>,
    /// Per conversation, the time before which a page of older history goes.
    scrollback: HashMap<ConversationId, i64>,
}

impl Placement {
    fn catch_up_from(&mut self, anchor: Option<MessageId>) {
        self.archive.clear();
        self.anchor = anchor;
        self.catching_up = true;
    }

    fn caught_up(&mut self) {
        self.catching_up = false;
    }

    fn unconfirmed(&self, id: MessageId) -> bool {
        self.unconfirmed.contains(&id)
    }

    fn confirmed(&mut self, id: MessageId) {
        self.unconfirmed.remove(&id);
        self.late.remove(&id);
    }

    /// Whether a late message waits for the archive to show where it stands.
    fn recheck_wanted(&self) -> bool {
        !self.late.is_empty()
    }

    /// Whether messages that came live during the catch-up wait for it to show them: the
    /// archive it read can end before them while what it showed went after them, so it
    /// reads on (their entries follow) and puts them after what it showed.
    fn unconfirmed_left(&self) -> bool {
        !self.unconfirmed.is_empty()
    }

    fn give_up_recheck(&mut self) {
        self.late.clear();
        self.unconfirmed.clear();
    }

    /// The time for a message of a page of older history (see `Session::history_before`):
    /// its own, but before every message held when the page began, which it is older than
    /// whatever the clocks say. The page comes oldest first, so equal times keep its order.
    fn scrollback_time(
        &mut self,
        tx: &Tx<'_>,
        conversation: ConversationId,
        stamp: Option<i64>,
    ) -> Result<i64, linnet_store::StoreError> {
        let bound = match self.scrollback.get(&conversation) {
            Some(b) => *b,
            None => {
                let b = match tx.oldest_message(conversation)? {
                    Some(oldest) => oldest.timestamp_ms.saturating_sub(1),
                    None => i64::MAX,
                };
                self.scrollback.insert(conversation, b);
                b
            }
        };
        Ok(stamp.unwrap_or(bound).min(bound))
    }

    fn scrollback_done(&mut self, conversation: ConversationId) {
        self.scrollback.remove(&conversation);
    }

    /// The time for a message not held yet (`stamp`: its delay stamp) that arrived live
    /// or, when `archived`, as a result of our catch-up.
    fn time_for(
        &mut self,
        tx: &Tx<'_>,
        conversation: ConversationId,
        archived: bool,
        stamp: Option<i64>,
    ) -> Result<i64, linnet_store::StoreError> {
        let own = stamp.unwrap_or_else(now_ms);
        let mark = if archived {
            self.archive_mark(tx, conversation)?.map(|(t, _)| t)
        } else {
            self.stream_mark(tx, conversation)?
        };
        Ok(mark.map_or(own, |m| own.max(m)))
    }

    /// Records a message just stored with `time` (a new id, so it follows every message
    /// with that time); `late`: see the field.
    fn stored(
        &mut self,
        conversation: ConversationId,
        archived: bool,
        in_archive: bool,
        late: bool,
        time: i64,
        id: MessageId,
    ) {
        if archived {
            self.archive.insert(conversation, (time, id));
        } else if in_archive && (self.catching_up || late) {
            // Bounded: what no catch-up ever confirms would otherwise pile up.
            if self.unconfirmed.len() >= 10_000 {
                self.unconfirmed.clear();
                self.late.clear();
            }
            self.unconfirmed.insert(id);
            if late {
                self.late.insert(id);
            }
        }
        self.raise_stream(conversation, time);
    }

    /// Places a catch-up result we already hold (at `time`); returns its time if it has to
    /// move.
    fn archived_again(
        &mut self,
        tx: &Tx<'_>,
        conversation: ConversationId,
        time: i64,
        id: MessageId,
    ) -> Result<Option<i64>, linnet_store::StoreError> {
        let moved = match self.archive_mark(tx, conversation)? {
            Some(mark) if (time, id) < mark => Some(mark.0.saturating_add(1)),
            _ => None,
        };
        let time = moved.unwrap_or(time);
        self.archive.insert(conversation, (time, id));
        self.raise_stream(conversation, time);
        Ok(moved)
    }

    /// A live message we already hold: what follows it on the stream goes after it.
    fn streamed_again(&mut self, conversation: ConversationId, time: i64) {
        self.raise_stream(conversation, time);
    }

    fn raise_stream(&mut self, conversation: ConversationId, time: i64) {
        let mark = self.stream.entry(conversation).or_insert(time);
        *mark = (*mark).max(time);
    }

    /// The latest time on the stream path; before the first message of this run, the
    /// latest incoming message held (what a new stream brings comes after it).
    fn stream_mark(
        &mut self,
        tx: &Tx<'_>,
        conversation: ConversationId,
    ) -> Result<Option<i64>, linnet_store::StoreError> {
        if let Some(m) = self.stream.get(&conversation) {
            return Ok(Some(*m));
        }
        let latest = tx
            .latest_incoming_up_to(conversation, MessageId(i64::MAX))?
            .map(|(t, _)| t);
        if let Some(l) = latest {
            self.stream.insert(conversation, l);
        }
        Ok(latest)
    }

    fn archive_mark(
        &mut self,
        tx: &Tx<'_>,
        conversation: ConversationId,
    ) -> Result<Option<(i64, MessageId)>, linnet_store::StoreError> {
        if let Some(m) = self.archive.get(&conversation) {
            return Ok(Some(*m));
        }
        let floor = match self.anchor {
            Some(anchor) => tx.latest_incoming_up_to(conversation, anchor)?,
            None => None,
        };
        if let Some(f) = floor {
            self.archive.insert(conversation, f);
        }
        Ok(floor)
    }
}

fn contact_record(item: &RosterItem) -> Option<ContactRecord> {
    let subscription = match item.subscription {
        Subscription::None => RosterSub::None,
        Subscription::To => RosterSub::To,
        Subscription::From => RosterSub::From,
        Subscription::Both => RosterSub::Both,
        Subscription::Remove => return None,
    };
    Some(ContactRecord {
        jid: item.jid.as_str().to_owned(),
        name: item.name.clone(),
        subscription,
        ask: item.ask,
        groups: item.groups.clone(),
    })
}
