//! Group chats (XEP-0045) in the client: creating private groups, joining and leaving,
//! invitations, nicknames, kicks and bans, the subject, bookmarks (XEP-0402) that carry
//! autojoin across our devices, each room's history from its archive (XEP-0313), and
//! self-pings (XEP-0410) that notice a room that silently lost us.
//!
//! What a room says is only believed from a room we are in or joining: the session takes
//! no other room's presences or groupchat messages (see `linnet_xmpp::inbound`). Who sent
//! a group message is its occupant JID (`room/nick`) and, where the room stamps them, its
//! occupant id (XEP-0421); a correction, retraction or reaction is applied only when its
//! sender is the author of what it names, compared by occupant id where the room gives
//! them and by occupant JID otherwise.
//!
//! Private messages between occupants (XEP-0045 §7.5) live in the group's conversation,
//! marked with the other occupant's nickname (`private_with`); the session takes them only
//! from rooms we are in. Ours wait, like group messages, until we are in the room; nothing
//! of them (replies, reactions, corrections) may ever go to the whole group.
//!
//! Membership lives in the database (`rooms`, `room_members`), presence in memory
//! ([`RoomLive`]): the room sends every occupant again on each join.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use linnet_store::{
    AccountId, ConversationId, DeliveryState, Direction, Encryption, MessageKind, MessageRecord,
    NewMessage, RoomFeatures, RoomInvitation, RoomMember, StoreError, Tx,
};
use linnet_xmpp::muc::{
    self, Affiliation, Bookmark, BookmarkChange, JoinError, OccupantPresence, Removal, Role,
    RoomMessage, RoomQuery, SelfPing,
};
use linnet_xmpp::{BareJid, Event, Session};
use tokio::sync::oneshot;

use crate::omemo::Opened;
use crate::snapshot::{GroupMember, GroupState, JoinState, Occupant};
use crate::{lock, now_ms, Client, ClientError, Inner, Result};

/// kv key: our bookmarks were read on this device before, so the server's list is the
/// truth (a room missing from it was left on another device).
const KV_BOOKMARKS_SYNCED: &str = "bookmarks.synced";

/// Why we are no longer in a room, as the snapshot says it.
const LEFT_KICKED: &str = "kicked";
const LEFT_BANNED: &str = "banned";
const LEFT_NOT_MEMBER: &str = "no longer a member";
const LEFT_DESTROYED: &str = "destroyed";

/// Each room's live state, by conversation.
pub(crate) type Rooms = HashMap<ConversationId, RoomLive>;

type JoinWaiter = oneshot::Sender<std::result::Result<bool, ClientError>>;

pub(crate) struct RoomLive {
    account: AccountId,
    state: JoinState,
    /// Our nickname, as the room last confirmed it.
    nick: String,
    /// XEP-0421: ours, to recognise our own messages sent from other devices.
    occupant_id: Option<String>,
    affiliation: Option<Affiliation>,
    role: Option<Role>,
    occupants: BTreeMap<String, OccupantInfo>,
    /// Reading the room's archive forward: live messages do not move its cursor meanwhile.
    catching_up: bool,
    /// The first read of this room's archive on this device: its history was read before
    /// we joined, so it is not unread.
    first_read: bool,
    /// When the room last sent anything (self-pings go to rooms that fell silent).
    last_heard: tokio::time::Instant,
    /// While scrolling back: the time of the oldest message held when the page was asked
    /// for. The page's messages go before it even when their stamps say the same second
    /// (Prosody's archive stamps whole seconds).
    scrollback_floor: Option<i64>,
    /// The room's information and members were read since this join: who an encrypted
    /// message goes to is known (see `omemo::group`).
    members_read: bool,
    /// The room showed it gives everyone's address to everyone (status 100 on our join),
    /// before its configuration is read and stored.
    non_anonymous: bool,
    /// Counts changes to the stored members (presences, the room's notices, our own
    /// requests), so that a member list read meanwhile does not overwrite them.
    member_changes: u64,
    waiters: Vec<JoinWaiter>,
}

#[derive(Clone)]
struct OccupantInfo {
    /// Their real JID, once the room is known to show it to everyone.
    jid: Option<String>,
    /// The real JID the presence carried before that was known: the presences of those
    /// already in a room come before our own, whose status 100 says the room is
    /// non-anonymous.
    offered_jid: Option<String>,
    affiliation: Option<Affiliation>,
    role: Option<Role>,
}

impl RoomLive {
    fn new(account: AccountId, nick: &str) -> RoomLive {
        RoomLive {
            account,
            state: JoinState::NotJoined,
            nick: nick.to_owned(),
            occupant_id: None,
            affiliation: None,
            role: None,
            occupants: BTreeMap::new(),
            catching_up: false,
            first_read: false,
            last_heard: tokio::time::Instant::now(),
            scrollback_floor: None,
            members_read: false,
            non_anonymous: false,
            member_changes: 0,
            waiters: Vec::new(),
        }
    }

    fn not_joined(&mut self, outcome: std::result::Result<bool, ClientError>) {
        self.state = JoinState::NotJoined;
        self.occupants.clear();
        self.affiliation = None;
        self.role = None;
        self.catching_up = false;
        self.members_read = false;
        self.non_anonymous = false;
        for w in self.waiters.drain(..) {
            let _ = w.send(outcome.clone());
        }
    }
}

/// What room events leave to do once they are committed.
#[derive(Default)]
pub(crate) struct GroupEffects {
    /// Rooms just joined: read their information, members and history.
    joined: Vec<ConversationId>,
    /// Rooms to join now (bookmarks from another device, a room that lost us).
    join: Vec<ConversationId>,
    /// Rooms to leave (a bookmark deleted on another device).
    leave: Vec<(BareJid, String)>,
    /// Rooms whose stanzas the session should stop taking.
    forget: Vec<BareJid>,
    /// Further archive pages to ask for.
    pages: Vec<(BareJid, RoomQuery)>,
    /// Fetches of older history that ended.
    pub older_loaded: Vec<ConversationId>,
    /// The room's configuration changed: read its information again.
    refresh: Vec<ConversationId>,
    /// Invitations or room names changed: the chat list's accounts need refreshing.
    pub list_changed: bool,
    /// Group snapshots to rebuild (occupants changed), not the chat list.
    pub snapshots: Vec<ConversationId>,
    /// Receipts asked for by private messages, as (occupant JID, message id): they go out
    /// with the others, once what they confirm is on disk.
    pub receipts: Vec<(String, String)>,
}

fn affiliation_str(a: Affiliation) -> &'static str {
    a.as_str()
}

fn left_reason(removal: &Removal) -> Option<&'static str> {
    match removal {
        Removal::Kicked => Some(LEFT_KICKED),
        Removal::Banned => Some(LEFT_BANNED),
        Removal::AffiliationChanged | Removal::MembersOnly => Some(LEFT_NOT_MEMBER),
        Removal::Destroyed { .. } => Some(LEFT_DESTROYED),
        // The service restarts or lost us by mistake: join again.
        Removal::Shutdown | Removal::Error => None,
    }
}

fn join_error(e: &JoinError) -> ClientError {
    let text = match e {
        JoinError::NickTaken => "that nickname is taken in this group",
        JoinError::MembersOnly => "this group is for members only",
        JoinError::Banned => "you are banned from this group",
        JoinError::PasswordRequired => "this group needs a password",
        JoinError::NickReserved => "this group wants your registered nickname",
        JoinError::RoomFull => "this group is full",
        JoinError::RoomNotFound => "no such group",
        JoinError::CreationRestricted => "the server does not let you create groups",
        JoinError::Other(_) => "the group refused to let you in",
    };
    ClientError::Policy(text.into())
}

/// Applies a room event inside the pump's transaction. Returns whether it was one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    inner: &Inner,
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    ev: &mut Option<Event>,
    fx: &mut GroupEffects,
    omemo_fx: &mut crate::omemo::OmemoEffects,
    changed: &mut Vec<ConversationId>,
) -> std::result::Result<(), StoreError> {
    match ev.take() {
        Some(Event::RoomPresence(p)) => on_presence(inner, tx, account, *p, fx, changed),
        Some(Event::RoomJoinFailed(f)) => {
            let Some(room) = tx.room_by_jid(account, f.room.as_str())? else {
                return Ok(());
            };
            tracing::info!(account = account.0, error = ?f.error, "group join refused");
            let removed = match f.error {
                JoinError::Banned => Some(LEFT_BANNED),
                JoinError::MembersOnly => Some(LEFT_NOT_MEMBER),
                JoinError::RoomNotFound => Some(LEFT_DESTROYED),
                _ => None,
            };
            if let Some(r) = removed {
                tx.set_room_left(room.conversation, Some(r))?;
            }
            if let Some(live) = lock(&inner.rooms).get_mut(&room.conversation) {
                live.not_joined(Err(join_error(&f.error)));
            }
            fx.forget.push(f.room);
            changed.push(room.conversation);
            Ok(())
        }
        Some(Event::RoomMessage(m)) => {
            on_message(inner, tx, account, own, *m, fx, omemo_fx, changed)
        }
        Some(Event::PrivateMessage { nick, message }) => {
            on_private_message(inner, tx, account, own, &nick, *message, fx, changed)
        }
        Some(Event::RoomHistoryPage {
            room,
            query,
            complete,
            last,
        }) => {
            let Some(rec) = tx.room_by_jid(account, room.as_str())? else {
                return Ok(());
            };
            let c = rec.conversation;
            match query {
                RoomQuery::Before(_) => {
                    if complete {
                        tx.set_history_complete(c, true)?;
                    }
                    if let Some(live) = lock(&inner.rooms).get_mut(&c) {
                        live.scrollback_floor = None;
                    }
                    fx.older_loaded.push(c);
                }
                RoomQuery::After(_) | RoomQuery::Latest => {
                    if let Some(last) = &last {
                        tx.set_room_cursor(c, last)?;
                    }
                    if query == RoomQuery::Latest && complete {
                        // The newest page held everything: there is nothing older.
                        tx.set_history_complete(c, true)?;
                    }
                    let more = matches!(query, RoomQuery::After(_)) && !complete;
                    match (more, last) {
                        (true, Some(last)) => fx.pages.push((room, RoomQuery::After(last))),
                        _ => {
                            if let Some(live) = lock(&inner.rooms).get_mut(&c) {
                                live.catching_up = false;
                                live.first_read = false;
                            }
                        }
                    }
                }
            }
            changed.push(c);
            Ok(())
        }
        Some(Event::RoomHistoryFailed {
            room,
            query,
            condition,
        }) => {
            tracing::info!(account = account.0, condition = %condition, "group history refused");
            if let Some(rec) = tx.room_by_jid(account, room.as_str())? {
                let c = rec.conversation;
                match query {
                    RoomQuery::Before(_) => {
                        if let Some(live) = lock(&inner.rooms).get_mut(&c) {
                            live.scrollback_floor = None;
                        }
                        fx.older_loaded.push(c);
                    }
                    _ => {
                        if let Some(live) = lock(&inner.rooms).get_mut(&c) {
                            live.catching_up = false;
                            live.first_read = false;
                        }
                    }
                }
            }
            Ok(())
        }
        Some(Event::Invitation(inv)) => {
            if let Some(rec) = tx.room_by_jid(account, inv.room.as_str())? {
                if rec.autojoin {
                    // Already in it (a mediated invitation next to a direct one, say).
                    return Ok(());
                }
            }
            tx.add_room_invitation(
                account,
                &RoomInvitation {
                    room: inv.room.as_str().to_owned(),
                    inviter: inv.inviter.as_str().to_owned(),
                    reason: inv.reason.clone(),
                    password: inv.password.clone(),
                    received_ms: now_ms(),
                },
            )?;
            fx.list_changed = true;
            Ok(())
        }
        Some(Event::Bookmarks(changes)) => {
            if !lock(&inner.bookmarks_read).contains(&account) {
                // Before this session has read the list, a notification is the server
                // replaying its last item on our presence, possibly one since deleted:
                // the list read after login decides (see `sync_bookmarks`).
                tracing::debug!(
                    account = account.0,
                    "bookmark notification before the list was read"
                );
                return Ok(());
            }
            for change in changes {
                bookmark_changed(tx, account, own, change, fx)?;
            }
            Ok(())
        }
        other => {
            *ev = other;
            Ok(())
        }
    }
}

fn on_presence(
    inner: &Inner,
    tx: &Tx<'_>,
    account: AccountId,
    p: OccupantPresence,
    fx: &mut GroupEffects,
    changed: &mut Vec<ConversationId>,
) -> std::result::Result<(), StoreError> {
    let Some(rec) = tx.room_by_jid(account, p.room.as_str())? else {
        fx.forget.push(p.room);
        return Ok(());
    };
    let c = rec.conversation;
    let mut rooms = lock(&inner.rooms);
    let live = rooms
        .entry(c)
        .or_insert_with(|| RoomLive::new(account, &rec.nick));
    live.last_heard = tokio::time::Instant::now();
    if p.is_self && p.non_anonymous {
        live.non_anonymous = true;
    }
    let non_anonymous = rec.non_anonymous || p.non_anonymous || live.non_anonymous;
    let real_jid = p
        .identified_jid(non_anonymous)
        .map(|j| j.as_str().to_owned());
    if p.is_self {
        if p.available {
            live.affiliation = p.affiliation;
            live.role = p.role;
            live.occupant_id = p.occupant_id.clone();
            if live.nick != p.nick {
                live.nick = p.nick.clone();
                tx.set_room_nick(c, &p.nick)?;
            }
            live.occupants.insert(
                p.nick.clone(),
                OccupantInfo {
                    jid: None,
                    offered_jid: None,
                    affiliation: p.affiliation,
                    role: p.role,
                },
            );
            if non_anonymous {
                // Now known to show everyone's address: those who were here first.
                for (nick, o) in live.occupants.iter_mut() {
                    if o.jid.is_none() {
                        o.jid = o.offered_jid.clone();
                        if let (Some(jid), Some(a)) = (&o.jid, o.affiliation) {
                            if a.is_member() {
                                tx.set_room_member(c, jid, Some(affiliation_str(a)), Some(nick))?;
                                live.member_changes += 1;
                            }
                        }
                    }
                }
            }
            if live.state != JoinState::Joined {
                live.state = JoinState::Joined;
                tracing::debug!(account = account.0, conversation = c.0, "group joined");
                // A room we just created stays locked until configured: whoever created it
                // configures it, then reads it.
                if !p.created {
                    fx.joined.push(c);
                }
                for w in live.waiters.drain(..) {
                    let _ = w.send(Ok(p.created));
                }
            }
        } else if let Some(new_nick) = &p.new_nick {
            // Our nickname changed; the available presence under it follows.
            live.occupants.remove(&p.nick);
            live.nick = new_nick.clone();
            tx.set_room_nick(c, new_nick)?;
        } else if live.state == JoinState::Joining && p.removal.is_none() {
            // The room's answer to a leave sent before this join, late: not about it.
            tracing::debug!(account = account.0, "a late answer to an earlier leave");
        } else {
            let reason = p.removal.as_ref().and_then(left_reason);
            let rejoin = p.removal.is_some() && reason.is_none();
            if let Some(r) = reason {
                tracing::info!(account = account.0, reason = r, "removed from a group");
                tx.set_room_left(c, Some(r))?;
            }
            live.not_joined(Err(ClientError::Policy("left the group".into())));
            fx.forget.push(p.room.clone());
            if rejoin && rec.autojoin {
                fx.join.push(c);
            }
        }
    } else if p.available {
        live.occupants.insert(
            p.nick.clone(),
            OccupantInfo {
                jid: real_jid.clone(),
                offered_jid: p.real_jid.as_ref().map(|j| j.as_str().to_owned()),
                affiliation: p.affiliation,
                role: p.role,
            },
        );
        if let (Some(jid), Some(a)) = (&real_jid, p.affiliation) {
            if a.is_member() {
                tx.set_room_member(c, jid, Some(affiliation_str(a)), Some(&p.nick))?;
                live.member_changes += 1;
            }
        }
    } else {
        live.occupants.remove(&p.nick);
        if let (Some(jid), Some(a)) = (&real_jid, p.affiliation) {
            if !a.is_member() {
                tx.set_room_member(c, jid, None, None)?;
                live.member_changes += 1;
            }
        }
    }
    drop(rooms);
    fx.snapshots.push(c);
    if p.is_self {
        changed.push(c);
    }
    Ok(())
}

/// Whether a group message is ours: one we sent from here (its origin-id), or from another
/// device of ours (our occupant id where the room gives them, else our nickname).
fn is_ours(
    tx: &Tx<'_>,
    c: ConversationId,
    live: Option<&RoomLive>,
    rec: &linnet_store::RoomRecord,
    m: &RoomMessage,
) -> std::result::Result<bool, StoreError> {
    if let Some(o) = &m.msg.origin_id {
        if let Some(held) = tx.message_by_origin_id(c, o)? {
            return Ok(held.direction == Direction::Outgoing);
        }
    }
    if rec.occupant_ids {
        if let (Some(ours), Some(theirs)) = (
            live.and_then(|l| l.occupant_id.as_ref()),
            &m.msg.occupant_id,
        ) {
            return Ok(ours == theirs);
        }
    }
    let nick = live.map(|l| l.nick.as_str()).unwrap_or(rec.nick.as_str());
    Ok(m.msg.nick.as_deref() == Some(nick))
}

/// Whether we hold this group message already (our own, reflected by the room; a live
/// copy met again in the archive): it is not decrypted again, its keys are gone.
fn held(
    tx: &Tx<'_>,
    account: AccountId,
    c: ConversationId,
    room: &BareJid,
    m: &RoomMessage,
) -> std::result::Result<bool, StoreError> {
    if let Some(o) = m.msg.origin_id.as_ref().or(m.msg.id.as_ref()) {
        if tx.message_by_origin_id(c, o)?.is_some() {
            return Ok(true);
        }
    }
    Ok(match &m.msg.stanza_id {
        Some(id) => tx
            .message_by_archive_id(account, room.as_str(), id)?
            .is_some(),
        None => false,
    })
}

/// The author check of a change: same occupant id where the room stamps them, else same
/// occupant JID; our own changes apply to our own messages only.
fn same_author(target: &MessageRecord, ours: bool, occupant_ids: bool, m: &RoomMessage) -> bool {
    if ours || target.direction == Direction::Outgoing {
        return ours && target.direction == Direction::Outgoing;
    }
    match (&target.occupant_id, &m.msg.occupant_id) {
        (Some(a), Some(b)) if occupant_ids => a == b,
        _ => !occupant_ids && target.sender == m.from_full,
    }
}

#[allow(clippy::too_many_arguments)]
fn on_message(
    inner: &Inner,
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    m: RoomMessage,
    fx: &mut GroupEffects,
    omemo_fx: &mut crate::omemo::OmemoEffects,
    changed: &mut Vec<ConversationId>,
) -> std::result::Result<(), StoreError> {
    let room = m.msg.room.clone();
    let Some(rec) = tx.room_by_jid(account, room.as_str())? else {
        fx.forget.push(room);
        return Ok(());
    };
    let c = rec.conversation;
    let (catching_up, first_read, floor) = {
        let mut rooms = lock(&inner.rooms);
        match rooms.get_mut(&c) {
            Some(live) => {
                live.last_heard = tokio::time::Instant::now();
                (live.catching_up, live.first_read, live.scrollback_floor)
            }
            None => (false, false, None),
        }
    };
    if let Some(subject) = &m.msg.subject {
        if !m.archived && tx.set_room_subject(c, Some(subject))? {
            changed.push(c);
        }
        return Ok(());
    }
    if m.msg.nick.is_none() {
        if !m.archived {
            for (jid, a) in &m.msg.affiliations {
                let stored = a.is_member().then(|| affiliation_str(*a));
                member_changed(inner, c);
                if tx.set_room_member(c, jid.as_str(), stored, None)? {
                    fx.snapshots.push(c);
                }
            }
        }
        // The room's own word: 104 says its configuration changed.
        if m.msg.status.contains(&104) {
            fx.refresh.push(c);
        }
        return Ok(());
    }
    let ours = {
        let rooms = lock(&inner.rooms);
        is_ours(tx, c, rooms.get(&c), &rec, &m)?
    };
    let mut wire_body = m.msg.body.clone().unwrap_or_default();
    let (mut encryption, mut error, mut from_device) = (Encryption::Plain, None, None);
    if !m.encrypted.is_empty() && !held(tx, account, c, &room, &m)? {
        let sender = {
            let rooms = lock(&inner.rooms);
            let occupant = rooms
                .get(&c)
                .zip(m.msg.nick.as_ref())
                .and_then(|(l, n)| l.occupants.get(n))
                .and_then(|o| o.jid.clone());
            let member = match (&occupant, &m.msg.nick) {
                (None, Some(nick)) => tx
                    .room_members(c)?
                    .into_iter()
                    .find(|x| x.nick.as_deref() == Some(nick.as_str()))
                    .map(|x| x.jid),
                _ => None,
            };
            crate::omemo::group_sender(
                ours,
                own,
                m.msg.real_jid.as_ref().filter(|_| m.archived),
                occupant.as_deref(),
                member.as_deref(),
            )
        };
        match sender {
            None => {
                wire_body = String::new();
                encryption = Encryption::Omemo03;
                error = Some("the group hides who sent this, so it cannot be decrypted".into());
            }
            Some(sender) => match crate::omemo::open_encrypted(
                tx,
                account,
                own,
                &sender,
                &m.encrypted,
                Some(&room),
                omemo_fx,
            )? {
                Opened::Body(b, e, d) => {
                    wire_body = b;
                    encryption = e;
                    from_device = Some(d);
                }
                Opened::Nothing => return Ok(()),
                Opened::Failed(reason, e) => {
                    wire_body = String::new();
                    encryption = e;
                    error = Some(reason);
                }
            },
        }
    }
    let body = crate::rich::reply_text(&wire_body, &m.rich);
    let r = &m.rich;
    let target = |id: &str| tx.message_by_room_reference(c, room.as_str(), id);
    let change = if let Some(id) = &r.retract {
        match target(id)? {
            Some(t) if same_author(&t, ours, rec.occupant_ids, &m) => {
                Some((MessageKind::Retraction, t.id))
            }
            _ => {
                tracing::debug!("ignoring a group retraction not by the author");
                return Ok(());
            }
        }
    } else if let Some(reactions) = &r.reactions {
        match target(&reactions.id)? {
            Some(t) => Some((MessageKind::Reactions, t.id)),
            None => return Ok(()),
        }
    } else if let Some(id) = &r.replace {
        match target(id)? {
            Some(t) if same_author(&t, ours, rec.occupant_ids, &m) => {
                Some((MessageKind::Correction, t.id))
            }
            _ => {
                tracing::debug!("a group correction not by the author: shown as a message");
                None
            }
        }
    } else {
        None
    };
    if change.is_none() && body.trim().is_empty() && error.is_none() {
        return Ok(());
    }
    let mut timestamp_ms = m.msg.timestamp_ms.unwrap_or_else(now_ms);
    if let (true, Some(floor)) = (m.scrollback, floor) {
        timestamp_ms = timestamp_ms.min(floor - 1);
    }
    let stanza_id = m.msg.stanza_id.clone();
    let row = NewMessage {
        conversation: c,
        direction: if ours {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        sender: m.from_full.clone(),
        body: body.clone(),
        origin_id: m.msg.origin_id.clone().or_else(|| m.msg.id.clone()),
        stanza_id_by: stanza_id.as_ref().map(|_| room.as_str().to_owned()),
        stanza_id: stanza_id.clone(),
        timestamp_ms,
        delivery_state: if ours {
            DeliveryState::Delivered
        } else if m.scrollback || first_read {
            DeliveryState::Read
        } else {
            DeliveryState::Delivered
        },
        encryption,
        error,
        kind: MessageKind::Message,
        target: None,
        reply_to: r.reply.as_ref().map(|x| x.id.clone()),
        markable: false,
        replaces: r.replace.clone(),
    };
    if let Some((kind, target)) = change {
        let emojis = r
            .reactions
            .as_ref()
            .map(|x| x.emojis.clone())
            .unwrap_or_default();
        let inserted = tx.insert_message(&NewMessage {
            body: match kind {
                MessageKind::Reactions => emojis.join("\n"),
                MessageKind::Correction => body.clone(),
                _ => String::new(),
            },
            kind,
            target: Some(target),
            delivery_state: if ours {
                DeliveryState::Sent
            } else {
                DeliveryState::Read
            },
            reply_to: match kind {
                MessageKind::Correction => row.reply_to.clone(),
                _ => None,
            },
            ..row
        })?;
        if matches!(inserted, linnet_store::Inserted::New(_)) {
            let applied = match kind {
                // One that names what it answers moves the reply there; one with only the
                // new text (older clients) leaves it.
                MessageKind::Correction => tx.apply_correction_with_reply(
                    target,
                    &body,
                    r.reply.as_ref().map(|x| x.id.as_str()),
                    timestamp_ms,
                )?,
                MessageKind::Retraction => tx.apply_retraction(target, timestamp_ms)?,
                // Everyone's by occupant JID, ours too: what `Client::react` sets locally,
                // so that our reactions from another device replace those from this one.
                MessageKind::Reactions => {
                    tx.set_reactions(target, &m.from_full, &emojis, timestamp_ms)?
                }
                MessageKind::Message => false,
            };
            if applied {
                // The corrected text shows as coming from the correction's device.
                if let (MessageKind::Correction, Some(d)) = (kind, &from_device) {
                    crate::omemo::record_sender(tx, target, d)?;
                }
                changed.push(c);
            }
        }
    } else {
        match tx.insert_message(&row)? {
            linnet_store::Inserted::New(rec) => {
                if let Some(o) = &m.msg.occupant_id {
                    tx.set_occupant_id(rec.id, o)?;
                }
                if let Some(d) = &from_device {
                    crate::omemo::record_sender(tx, rec.id, d)?;
                }
                crate::files::store_received(tx, rec.id, !m.encrypted.is_empty(), &m.rich)?;
                crate::files::store_received_encrypted(tx, rec.id, encryption, &body)?;
                changed.push(c);
            }
            linnet_store::Inserted::Duplicate(id) => {
                // The room's copy of our own message: it reached the group.
                let held = tx.message(id)?;
                if held.direction == Direction::Outgoing
                    && matches!(
                        held.delivery_state,
                        DeliveryState::Pending | DeliveryState::Sent
                    )
                    && tx.set_delivery_state(id, DeliveryState::Delivered)?
                {
                    changed.push(c);
                }
            }
        }
    }
    if let Some(sid) = &stanza_id {
        if !m.scrollback && (m.archived || !catching_up) {
            tx.set_room_cursor(c, sid)?;
        }
    }
    Ok(())
}

/// A private message through a room (see the module's documentation): stored in the
/// group's conversation, from the occupant (their occupant JID as the sender, as for group
/// messages) or, sent from another device of ours, from our account. Its changes
/// (corrections, reactions…) are not applied: a correction shows as the message it is.
#[allow(clippy::too_many_arguments)]
fn on_private_message(
    inner: &Inner,
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    nick: &str,
    m: linnet_xmpp::ChatMessage,
    fx: &mut GroupEffects,
    changed: &mut Vec<ConversationId>,
) -> std::result::Result<(), StoreError> {
    let Some(rec) = tx.room_by_jid(account, m.peer.as_str())? else {
        fx.forget.push(m.peer);
        return Ok(());
    };
    let c = rec.conversation;
    if let Some(live) = lock(&inner.rooms).get_mut(&c) {
        live.last_heard = tokio::time::Instant::now();
    }
    let (body, error) = if m.encrypted.is_empty() {
        (m.body.clone(), None)
    } else {
        (
            String::new(),
            Some("encrypted private messages cannot be read yet".to_owned()),
        )
    };
    let row = NewMessage {
        conversation: c,
        direction: if m.outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        sender: if m.outgoing {
            own.as_str().to_owned()
        } else {
            m.from_full.clone()
        },
        body,
        origin_id: m.origin_id.clone().or_else(|| m.id.clone()),
        stanza_id: m.stanza_id.clone(),
        stanza_id_by: m.stanza_id_by.clone(),
        timestamp_ms: m.timestamp_ms.unwrap_or_else(now_ms),
        delivery_state: if m.outgoing {
            DeliveryState::Sent
        } else if m.scrollback {
            DeliveryState::Read
        } else {
            DeliveryState::Delivered
        },
        encryption: Default::default(),
        error,
        kind: MessageKind::Message,
        target: None,
        reply_to: None,
        markable: false,
        replaces: None,
    };
    match tx.insert_message(&row)? {
        linnet_store::Inserted::New(rec) => {
            tx.set_private_with(rec.id, nick)?;
            changed.push(c);
        }
        linnet_store::Inserted::Duplicate(id) => {
            tracing::debug!(message = id.0, "a private message seen again");
        }
    }
    // Whoever sent it is in the room with us and sees our presence there anyway.
    if m.wants_receipt && !m.outgoing && !m.carbon && !m.archived && !m.scrollback {
        if let Some(id) = m.id {
            fx.receipts.push((m.from_full, id));
        }
    }
    Ok(())
}

/// Why a room refused a private message of ours (XEP-0045 §7.5), for the message's error.
pub(crate) fn private_message_refused(condition: &str) -> &'static str {
    match condition {
        "item-not-found" | "recipient-unavailable" => "nobody in the group has that nickname now",
        "not-acceptable" => "not in the group",
        "forbidden" | "not-allowed" | "policy-violation" => {
            "the group does not allow private messages"
        }
        _ => "the group refused the private message",
    }
}

fn bookmark_changed(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    change: BookmarkChange,
    fx: &mut GroupEffects,
) -> std::result::Result<(), StoreError> {
    match change {
        BookmarkChange::Set(b) => {
            let held = tx.room_by_jid(account, b.room.as_str())?;
            if let (Some(h), Some(name)) = (&held, &b.name) {
                if h.name.as_deref() != Some(name) {
                    tx.set_room_name(h.conversation, Some(name))?;
                    fx.list_changed = true;
                }
            }
            match (b.autojoin, held) {
                (true, Some(h)) if h.autojoin => {}
                (true, _) => {
                    let nick = b.nick.clone().unwrap_or_else(|| default_nick(own));
                    let c =
                        tx.upsert_room(account, b.room.as_str(), &nick, b.password.as_deref())?;
                    if let Some(name) = &b.name {
                        tx.set_room_name(c, Some(name))?;
                    }
                    tx.remove_room_invitation(account, b.room.as_str())?;
                    fx.join.push(c);
                    fx.list_changed = true;
                }
                (false, Some(h)) if h.autojoin => {
                    tx.set_room_left(h.conversation, None)?;
                    fx.leave.push((b.room, h.nick));
                }
                (false, _) => {}
            }
        }
        BookmarkChange::Removed(room) => {
            if let Some(h) = tx.room_by_jid(account, room.as_str())? {
                if h.autojoin {
                    tx.set_room_left(h.conversation, None)?;
                    fx.leave.push((room, h.nick));
                }
            }
        }
    }
    Ok(())
}

/// The nickname we take where none was chosen: the account's user name.
fn default_nick(own: &BareJid) -> String {
    own.local().unwrap_or("me").to_owned()
}

/// After room events are committed: what they asked for on the network.
pub(crate) fn after_commit(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    fx: GroupEffects,
) {
    for room in fx.forget {
        session.forget_room(&room);
    }
    for (room, query) in fx.pages {
        let _ = session.room_history(&room, query);
    }
    for (room, nick) in fx.leave {
        let _ = session.muc_leave(&room, &nick);
        // Bound first: the store's guard must not live through the block, which locks it.
        let held = inner.store().room_by_jid(account, room.as_str());
        if let Ok(Some(rec)) = held {
            if let Some(live) = lock(&inner.rooms).get_mut(&rec.conversation) {
                live.not_joined(Err(ClientError::Policy("left the group".into())));
            }
            inner.conversation_changed(rec.conversation);
        }
        session.forget_room(&room);
    }
    for c in fx.join {
        send_join(inner, account, session, c);
    }
    for c in fx.joined.into_iter().chain(fx.refresh) {
        tokio::spawn(after_join(inner.clone(), account, session.clone(), c));
    }
    for c in fx.older_loaded {
        inner.older_loaded(c);
    }
    for c in fx.snapshots {
        inner.conversation_snapshot_changed(c);
    }
    if fx.list_changed {
        inner.refresh_account(account);
        inner.publish_chat_list();
    }
}

/// Sends our join presence for a stored room. Returns a receiver of the outcome (whether
/// the room was created by this join), or `None` when the presence could not go out.
fn send_join(
    inner: &Inner,
    account: AccountId,
    session: &Session,
    c: ConversationId,
) -> Option<oneshot::Receiver<std::result::Result<bool, ClientError>>> {
    let rec = inner.store().room(c).ok()??;
    let room = BareJid::parse(&rec.jid).ok()?;
    let (tx, rx) = oneshot::channel();
    {
        let mut rooms = lock(&inner.rooms);
        let live = rooms
            .entry(c)
            .or_insert_with(|| RoomLive::new(account, &rec.nick));
        if live.state == JoinState::NotJoined {
            live.state = JoinState::Joining;
            live.nick = rec.nick.clone();
        }
        live.first_read = rec.archive_cursor.is_none();
        live.waiters.push(tx);
    }
    if let Err(e) = session.muc_join(&room, &rec.nick, rec.password.as_deref()) {
        tracing::info!(error = %e, "group join not sent");
        if let Some(live) = lock(&inner.rooms).get_mut(&c) {
            live.not_joined(Err(ClientError::Network("not connected".into())));
        }
        return None;
    }
    inner.conversation_snapshot_changed(c);
    Some(rx)
}

/// A room was joined: its queued messages go out, its information and members are read,
/// and its history from its archive.
async fn after_join(inner: Arc<Inner>, account: AccountId, session: Session, c: ConversationId) {
    let Ok(Some(rec)) = inner.store().room(c) else {
        return;
    };
    let Ok(room) = BareJid::parse(&rec.jid) else {
        return;
    };
    flush_outbox(&inner, account, &session, c);
    let info = match session.muc_disco(&room).await {
        Ok(info) => info,
        Err(e) => {
            tracing::info!(error = %e, "group information not read");
            // What the store knows from earlier joins decides (see `omemo::group`).
            members_read(&inner, account, c);
            return;
        }
    };
    let features = RoomFeatures {
        members_only: info.members_only,
        non_anonymous: info.non_anonymous,
        archived: info.mam,
        occupant_ids: info.occupant_id,
    };
    {
        let store = inner.store();
        let _ = store.set_room_features(c, features);
        if let Some(name) = &info.name {
            if rec.name.as_deref() != Some(name) && store.set_room_name(c, Some(name)).is_ok() {
                drop(store);
                inner.refresh_account(account);
                inner.publish_chat_list();
            }
        }
    }
    if info.members_only {
        // Read again if the members changed while the list was on its way: it may predate
        // the change, and would undo it.
        for _ in 0..3 {
            let before = member_changes(&inner, c);
            match session.muc_members(&room).await {
                Ok(items) => {
                    let members: Vec<RoomMember> = items
                        .into_iter()
                        .map(|i| RoomMember {
                            jid: i.jid.as_str().to_owned(),
                            affiliation: i.affiliation.as_str().to_owned(),
                            nick: i.nick,
                        })
                        .collect();
                    // Under the store's lock, which the session's events take first: no
                    // change can come between the look and the write.
                    let store = inner.store();
                    if member_changes(&inner, c) != before {
                        continue;
                    }
                    if let Err(e) = store.replace_room_members(c, &members) {
                        tracing::warn!(error = %e, "storing group members failed");
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "group members not read");
                    break;
                }
            }
        }
    }
    members_read(&inner, account, c);
    if info.mam && !lock(&inner.rooms).get(&c).is_some_and(|l| l.catching_up) {
        let query = match inner
            .store()
            .room(c)
            .ok()
            .flatten()
            .and_then(|r| r.archive_cursor)
        {
            Some(cursor) => RoomQuery::After(cursor),
            None => RoomQuery::Latest,
        };
        if let Some(live) = lock(&inner.rooms).get_mut(&c) {
            live.catching_up = true;
        }
        let _ = session.room_history(&room, query);
    }
    inner.conversation_changed(c);
    inner.publish_chat_list();
}

fn member_changes(inner: &Inner, c: ConversationId) -> u64 {
    lock(&inner.rooms).get(&c).map_or(0, |l| l.member_changes)
}

fn member_changed(inner: &Inner, c: ConversationId) {
    if let Some(live) = lock(&inner.rooms).get_mut(&c) {
        live.member_changes += 1;
    }
}

/// Marks the room's members as read for this join and wakes the encrypting sender, whose
/// group messages waited for them.
fn members_read(inner: &Inner, account: AccountId, c: ConversationId) {
    if let Some(live) = lock(&inner.rooms).get_mut(&c) {
        live.members_read = true;
    }
    let wake = lock(&inner.runtimes)
        .get(&account)
        .map(|rt| rt.send_wake.clone());
    if let Some(w) = wake {
        w.notify_one();
    }
}

/// Sends the group messages queued while we were not in the room.
fn flush_outbox(inner: &Inner, account: AccountId, session: &Session, c: ConversationId) {
    let entries = match inner.store().outbox(account) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "reading outbox failed");
            return;
        }
    };
    for entry in entries.into_iter().filter(|e| e.kind == KIND_GROUPCHAT) {
        let Some(m) = entry.message.and_then(|m| inner.store().message(m).ok()) else {
            continue;
        };
        if m.conversation != c {
            continue;
        }
        let Some(id) = m.origin_id else {
            let _ = inner.store().outbox_remove(entry.id);
            continue;
        };
        if session.send_raw_tracked(&entry.payload, &id).is_err() {
            return;
        }
        let _ = inner.store().outbox_bump_attempts(entry.id);
    }
}

/// Outbox kind of a group message: sent only while we are in its room (a room refuses
/// messages from non-occupants), so not by the general re-send after login.
pub(crate) const KIND_GROUPCHAT: &str = "groupchat";

/// After a login: a fresh session is in no room, so every autojoin room is joined again,
/// and the bookmarks are read for rooms joined or left on other devices. A resumed session
/// (`resumed`: one whose stream this process set up) is still in its rooms. Resuming a
/// stream this process did not set up (after a restart, or a setup cut short) counts as
/// fresh here: joining again is harmless.
pub(crate) async fn on_session(
    inner: Arc<Inner>,
    account: AccountId,
    session: Session,
    resumed: bool,
) {
    if resumed {
        tokio::spawn(self_ping_loop(inner, account, session));
        return;
    }
    lock(&inner.bookmarks_read).remove(&account);
    for live in lock(&inner.rooms)
        .values_mut()
        .filter(|l| l.account == account)
    {
        live.not_joined(Err(ClientError::Network("session ended".into())));
    }
    let rooms = inner.store().rooms(account).unwrap_or_default();
    for r in rooms.iter().filter(|r| r.autojoin) {
        send_join(&inner, account, &session, r.conversation);
    }
    sync_bookmarks(&inner, account, &session).await;
    tokio::spawn(self_ping_loop(inner, account, session));
}

/// Reads our bookmarks: rooms bookmarked for autojoin elsewhere are joined here. On the
/// first read on this device, rooms only we have are published; afterwards the server's
/// list is the truth, and an autojoin room missing from it was left on another device.
async fn sync_bookmarks(inner: &Arc<Inner>, account: AccountId, session: &Session) {
    for room in pending_retractions(inner, account) {
        let Ok(jid) = BareJid::parse(&room) else {
            continue;
        };
        if session.bookmark_retract(&jid).await.is_ok() {
            pending_retraction(inner, account, &room, false);
        }
    }
    let bookmarks = match session.bookmarks_fetch().await {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(error = %e, "bookmarks not read");
            lock(&inner.bookmarks_read).insert(account);
            return;
        }
    };
    let synced = inner
        .store()
        .kv_get(Some(account), KV_BOOKMARKS_SYNCED)
        .ok()
        .flatten()
        .is_some();
    let own = session.own_jid().clone();
    let mut fx = GroupEffects::default();
    let result = inner.store().transaction(|tx| {
        for b in &bookmarks {
            bookmark_changed(tx, account, &own, BookmarkChange::Set(b.clone()), &mut fx)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "applying bookmarks failed");
    }
    let local = inner.store().rooms(account).unwrap_or_default();
    for r in local.iter().filter(|r| r.autojoin) {
        if bookmarks.iter().any(|b| b.room.as_str() == r.jid) {
            continue;
        }
        let Ok(room) = BareJid::parse(&r.jid) else {
            continue;
        };
        if synced {
            let _ = inner.store().set_room_left(r.conversation, None);
            fx.leave.push((room, r.nick.clone()));
        } else {
            if let Some(b) = bookmark_of(r) {
                let _ = session.bookmark_publish(&b).await;
            }
        }
    }
    let _ = inner
        .store()
        .kv_set(Some(account), KV_BOOKMARKS_SYNCED, "1");
    lock(&inner.bookmarks_read).insert(account);
    fx.list_changed = true;
    after_commit(inner, account, session, fx);
}

/// kv key: rooms left while their bookmark could not be deleted, a JID per line.
const KV_PENDING_RETRACTIONS: &str = "bookmarks.retract";

fn pending_retractions(inner: &Inner, account: AccountId) -> Vec<String> {
    inner
        .store()
        .kv_get(Some(account), KV_PENDING_RETRACTIONS)
        .ok()
        .flatten()
        .map(|v| v.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn pending_retraction(inner: &Inner, account: AccountId, room: &str, pending: bool) {
    let mut rooms = pending_retractions(inner, account);
    rooms.retain(|r| r != room);
    if pending {
        rooms.push(room.to_owned());
    }
    if let Err(e) = inner
        .store()
        .kv_set(Some(account), KV_PENDING_RETRACTIONS, &rooms.join("\n"))
    {
        tracing::warn!(error = %e, "storing a pending bookmark deletion failed");
    }
}

fn bookmark_of(r: &linnet_store::RoomRecord) -> Option<Bookmark> {
    Some(Bookmark {
        room: BareJid::parse(&r.jid).ok()?,
        name: r.name.clone(),
        autojoin: r.autojoin,
        nick: Some(r.nick.clone()),
        password: r.password.clone(),
        extensions: None,
    })
}

/// XEP-0410: rooms that fell silent are asked whether we are still in them; a room that
/// lost us is joined again.
async fn self_ping_loop(inner: Arc<Inner>, account: AccountId, session: Session) {
    let interval = inner.opts.room_ping_interval;
    loop {
        tokio::time::sleep(interval).await;
        if session.is_closed() {
            return;
        }
        let due: Vec<(ConversationId, String)> = lock(&inner.rooms)
            .iter()
            .filter(|(_, l)| {
                l.account == account
                    && l.state == JoinState::Joined
                    && l.last_heard.elapsed() >= interval
            })
            .map(|(c, l)| (*c, l.nick.clone()))
            .collect();
        for (c, nick) in due {
            let Ok(Some(rec)) = inner.store().room(c) else {
                continue;
            };
            let Ok(room) = BareJid::parse(&rec.jid) else {
                continue;
            };
            match session.muc_self_ping(&room, &nick).await {
                Ok(SelfPing::Joined) => {
                    if let Some(l) = lock(&inner.rooms).get_mut(&c) {
                        l.last_heard = tokio::time::Instant::now();
                    }
                }
                Ok(SelfPing::NotJoined) => {
                    tracing::info!(account = account.0, "a group lost us; joining again");
                    if let Some(l) = lock(&inner.rooms).get_mut(&c) {
                        l.not_joined(Err(ClientError::Network("not in the group".into())));
                    }
                    if rec.autojoin {
                        send_join(&inner, account, &session, c);
                    }
                    inner.conversation_changed(c);
                }
                Ok(SelfPing::TryLater) => {}
                Err(_) => return,
            }
        }
    }
}

impl Inner {
    /// A group's part of its conversation snapshot.
    pub(crate) fn group_state(&self, c: ConversationId) -> Option<GroupState> {
        let (rec, members) = {
            let store = self.store();
            let rec = store.room(c).ok()??;
            let members = store.room_members(c).unwrap_or_default();
            (rec, members)
        };
        let rooms = lock(&self.rooms);
        let live = rooms.get(&c);
        Some(GroupState {
            joined: live.map(|l| l.state).unwrap_or(JoinState::NotJoined),
            nick: live.map(|l| l.nick.clone()).unwrap_or(rec.nick),
            subject: rec.subject,
            removed: rec.removed,
            affiliation: live
                .and_then(|l| l.affiliation)
                .map(|a| a.as_str().to_owned()),
            role: live.and_then(|l| l.role).map(|r| r.as_str().to_owned()),
            occupants: live
                .map(|l| {
                    l.occupants
                        .iter()
                        .map(|(nick, o)| Occupant {
                            nick: nick.clone(),
                            jid: o.jid.clone(),
                            affiliation: o.affiliation.map(|a| a.as_str().to_owned()),
                            role: o.role.map(|r| r.as_str().to_owned()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            members: members
                .into_iter()
                .map(|m| GroupMember {
                    jid: m.jid,
                    affiliation: m.affiliation,
                    nick: m.nick,
                })
                .collect(),
            private: rec.members_only && rec.non_anonymous,
            archived: rec.archived,
        })
    }

    /// Whether we are in the group now (its messages can go out).
    pub(crate) fn group_joined(&self, c: ConversationId) -> bool {
        lock(&self.rooms)
            .get(&c)
            .is_some_and(|l| l.state == JoinState::Joined)
    }

    /// Whether we are in the group and know its members since joining: its encrypted
    /// messages can be prepared.
    pub(crate) fn group_ready(&self, c: ConversationId) -> bool {
        lock(&self.rooms)
            .get(&c)
            .is_some_and(|l| l.state == JoinState::Joined && l.members_read)
    }

    /// Our occupant JID in a group, for "mine" among reactions.
    pub(crate) fn own_occupant(&self, c: ConversationId, room: &str) -> Option<String> {
        lock(&self.rooms)
            .get(&c)
            .map(|l| format!("{room}/{}", l.nick))
    }

    /// Asks a group's archive for the page before the oldest message held.
    pub(crate) fn fetch_older_group(&self, c: ConversationId) -> Result<()> {
        let (account, room, before, floor) = {
            let store = self.store();
            let Some(rec) = store.room(c)? else {
                return Ok(());
            };
            if !rec.archived || store.history_complete(c)? {
                return Ok(());
            }
            let (before, floor) = match store.oldest_message(c)? {
                Some(m) => match (m.stanza_id, m.stanza_id_by) {
                    (Some(id), Some(by)) if by == rec.jid => {
                        (RoomQuery::Before(id), Some(m.timestamp_ms))
                    }
                    _ => return Ok(()),
                },
                None => (RoomQuery::Latest, None),
            };
            (rec.account, BareJid::parse(&rec.jid)?, before, floor)
        };
        let Some(session) = self.live_session(account) else {
            return Ok(());
        };
        if !self.group_joined(c) || !lock(&self.loading_older).insert(c) {
            return Ok(());
        }
        if let Some(live) = lock(&self.rooms).get_mut(&c) {
            live.scrollback_floor = floor;
        }
        if session.room_history(&room, before).is_err() {
            lock(&self.loading_older).remove(&c);
        }
        Ok(())
    }
}

fn check_reason(reason: Option<&str>) -> Result<Option<&str>> {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) if r.len() > muc::MAX_REASON_BYTES => {
            Err(ClientError::BadInput("reason too long".into()))
        }
        other => Ok(other),
    }
}

impl Client {
    /// The stored room of a group conversation, with its JID.
    fn group(&self, conversation: ConversationId) -> Result<(linnet_store::RoomRecord, BareJid)> {
        let rec = self
            .inner
            .store()
            .room(conversation)?
            .ok_or_else(|| ClientError::NotFound("group".into()))?;
        let jid = BareJid::parse(&rec.jid)?;
        Ok((rec, jid))
    }

    /// The conversation of the group `room` of `account` (joined or not).
    pub fn group_conversation(&self, account: AccountId, room: &str) -> Result<ConversationId> {
        let room = BareJid::parse(room)?;
        Ok(self
            .inner
            .store()
            .room_by_jid(account, room.as_str())?
            .ok_or_else(|| ClientError::NotFound("group".into()))?
            .conversation)
    }

    /// Waits for the outcome of a join sent with `send_join`.
    async fn await_join(
        &self,
        rx: Option<oneshot::Receiver<std::result::Result<bool, ClientError>>>,
    ) -> Result<bool> {
        let rx = rx.ok_or_else(|| ClientError::Network("account is not connected".into()))?;
        match tokio::time::timeout(self.inner.opts.step_timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ClientError::Network("session ended".into())),
            Err(_) => Err(ClientError::Network("the group did not answer".into())),
        }
    }

    /// Creates a private group on our server's group service: members only, real JIDs
    /// visible to members (what end-to-end encryption in groups needs), not listed,
    /// archived where the service can. We are its owner; `name` is what members see.
    pub async fn create_group(&self, account: AccountId, name: &str) -> Result<ConversationId> {
        let name = name.trim();
        if name.len() > muc::MAX_NAME_BYTES {
            return Err(ClientError::BadInput("group name too long".into()));
        }
        let session = self.session(account)?;
        let service = session
            .discover_muc_service()
            .await?
            .ok_or_else(|| ClientError::Policy("the server has no group service".into()))?;
        // Not guessable: a private group's address is not a secret, but nobody should
        // stumble on it.
        let local = format!("g{}", linnet_xmpp::new_id().to_lowercase().replace('-', ""));
        let room = BareJid::parse(&format!("{local}@{}", service.as_str()))?;
        let nick = default_nick(session.own_jid());
        let c = self
            .inner
            .store()
            .upsert_room(account, room.as_str(), &nick, None)?;
        if !name.is_empty() {
            self.inner.store().set_room_name(c, Some(name))?;
        }
        self.inner.load_model()?;
        let rx = send_join(&self.inner, account, &session, c);
        let created = self.await_join(rx).await?;
        if !created {
            // Someone else's room under our random name: not ours to configure.
            let _ = session.muc_leave(&room, &nick);
            self.inner.store().set_room_left(c, None)?;
            return Err(ClientError::Policy("that group already exists".into()));
        }
        session.muc_configure_private_group(&room, name).await?;
        let rec = self.inner.store().room(c)?;
        if let Some(b) = rec.as_ref().and_then(bookmark_of) {
            if let Err(e) = session.bookmark_publish(&b).await {
                tracing::info!(error = %e, "bookmark not published");
            }
        }
        after_join(self.inner.clone(), account, session, c).await;
        self.inner.publish_chat_list();
        Ok(c)
    }

    /// Joins a group (`nick`: our name in it, the account's user name if `None`), and
    /// keeps joining it on every login, here and (through bookmarks) on our other devices.
    pub async fn join_group(
        &self,
        account: AccountId,
        room: &str,
        nick: Option<&str>,
        password: Option<&str>,
    ) -> Result<ConversationId> {
        let room = BareJid::parse(room)?;
        if room.local().is_none() {
            return Err(ClientError::BadInput("a group address needs a name".into()));
        }
        let session = self.session(account)?;
        let nick = match nick.map(str::trim) {
            Some(n) => n.to_owned(),
            None => default_nick(session.own_jid()),
        };
        muc::occupant_jid(&room, &nick)?;
        if password.is_some_and(|p| p.is_empty() || p.len() > muc::MAX_PASSWORD_BYTES) {
            return Err(ClientError::BadInput("bad group password".into()));
        }
        let c = self
            .inner
            .store()
            .upsert_room(account, room.as_str(), &nick, password)?;
        self.inner
            .store()
            .remove_room_invitation(account, room.as_str())?;
        self.inner.load_model()?;
        self.inner.publish_chat_list();
        let rx = send_join(&self.inner, account, &session, c);
        match self.await_join(rx).await {
            Ok(created) => {
                if created {
                    // We made it by joining: a locked room nobody configured. Not what
                    // joining means; destroy it rather than leave a half-made room.
                    let _ = session.muc_destroy(&room, None).await;
                    self.inner.store().set_room_left(c, Some(LEFT_DESTROYED))?;
                    return Err(ClientError::NotFound("no such group".into()));
                }
            }
            Err(e) => return Err(e),
        }
        let rec = self.inner.store().room(c)?;
        if let Some(b) = rec.as_ref().and_then(bookmark_of) {
            if let Err(e) = session.bookmark_publish(&b).await {
                tracing::info!(error = %e, "bookmark not published");
            }
        }
        Ok(c)
    }

    /// Leaves a group, here and on our other devices (its bookmark goes). Its history stays.
    pub async fn leave_group(&self, conversation: ConversationId) -> Result<()> {
        let (rec, room) = self.group(conversation)?;
        self.inner.store().set_room_left(conversation, None)?;
        if let Some(live) = lock(&self.inner.rooms).get_mut(&conversation) {
            live.not_joined(Err(ClientError::Policy("left the group".into())));
        }
        let retracted = match self.inner.live_session(rec.account) {
            Some(session) => {
                let _ = session.muc_leave(&room, &rec.nick);
                session.forget_room(&room);
                session.bookmark_retract(&room).await.is_ok()
            }
            None => false,
        };
        if !retracted {
            // Else the next login would find the bookmark and join again.
            pending_retraction(&self.inner, rec.account, room.as_str(), true);
        }
        self.inner.conversation_changed(conversation);
        self.inner.publish_chat_list();
        Ok(())
    }

    /// Joins the group an invitation is for, and forgets the invitation.
    pub async fn accept_invitation(
        &self,
        account: AccountId,
        room: &str,
    ) -> Result<ConversationId> {
        let room = BareJid::parse(room)?;
        let inv = self
            .inner
            .store()
            .room_invitations(account)?
            .into_iter()
            .find(|i| i.room == room.as_str())
            .ok_or_else(|| ClientError::NotFound("invitation".into()))?;
        let c = self
            .join_group(account, room.as_str(), None, inv.password.as_deref())
            .await?;
        self.inner.refresh_account(account);
        self.inner.publish_chat_list();
        Ok(c)
    }

    /// Forgets an invitation without joining.
    pub fn decline_invitation(&self, account: AccountId, room: &str) -> Result<()> {
        let room = BareJid::parse(room)?;
        if !self
            .inner
            .store()
            .remove_room_invitation(account, room.as_str())?
        {
            return Err(ClientError::NotFound("invitation".into()));
        }
        self.inner.refresh_account(account);
        self.inner.publish_chat_list();
        Ok(())
    }

    /// Invites `jid` to a group: makes them a member (a private group lets only members
    /// in) and sends them an invitation (XEP-0249).
    pub async fn invite_to_group(
        &self,
        conversation: ConversationId,
        jid: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let invitee = BareJid::parse(jid)?;
        let reason = check_reason(reason)?;
        let (rec, room) = self.group(conversation)?;
        let session = self.session(rec.account)?;
        if invitee == *session.own_jid() {
            return Err(ClientError::BadInput("cannot invite yourself".into()));
        }
        session.muc_invite(&room, &invitee, reason).await?;
        member_changed(&self.inner, conversation);
        let _ = self.inner.store().set_room_member(
            conversation,
            invitee.as_str(),
            Some("member"),
            None,
        );
        self.inner.conversation_snapshot_changed(conversation);
        Ok(())
    }

    /// Sets the group's subject (empty removes it); the room may refuse non-moderators.
    pub fn set_group_subject(&self, conversation: ConversationId, subject: &str) -> Result<()> {
        if subject.len() > muc::MAX_SUBJECT_BYTES {
            return Err(ClientError::BadInput("subject too long".into()));
        }
        let (rec, room) = self.group(conversation)?;
        if !self.inner.group_joined(conversation) {
            return Err(ClientError::Policy("not in the group".into()));
        }
        let session = self.session(rec.account)?;
        let stanza = muc::subject_message(&room, subject)?;
        session.send_xml(&linnet_xmpp::stanza_to_string(&stanza))?;
        Ok(())
    }

    /// Changes our nickname in a group; the room confirms it (or refuses) by presence.
    pub fn set_group_nick(&self, conversation: ConversationId, nick: &str) -> Result<()> {
        let (rec, room) = self.group(conversation)?;
        let nick = nick.trim();
        muc::occupant_jid(&room, nick)?;
        if !self.inner.group_joined(conversation) {
            self.inner.store().set_room_nick(conversation, nick)?;
            self.inner.conversation_snapshot_changed(conversation);
            return Ok(());
        }
        let session = self.session(rec.account)?;
        let stanza = muc::nick_change_presence(&room, nick)?;
        session.send_xml(&linnet_xmpp::stanza_to_string(&stanza))?;
        Ok(())
    }

    /// Removes an occupant from the group for now (they may join again).
    pub async fn kick_from_group(
        &self,
        conversation: ConversationId,
        nick: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let reason = check_reason(reason)?;
        let (rec, room) = self.group(conversation)?;
        self.session(rec.account)?
            .muc_set_role(&room, nick, Role::None, reason)
            .await?;
        Ok(())
    }

    /// Bans `jid` from the group for good (until their affiliation is set again).
    pub async fn ban_from_group(
        &self,
        conversation: ConversationId,
        jid: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        self.set_group_affiliation_inner(conversation, jid, Affiliation::Outcast, reason)
            .await
    }

    /// Sets someone's affiliation: "owner", "admin", "member", or "none" (no longer a
    /// member: a private group will not let them in).
    pub async fn set_group_affiliation(
        &self,
        conversation: ConversationId,
        jid: &str,
        affiliation: &str,
    ) -> Result<()> {
        let a = Affiliation::parse(affiliation)
            .filter(|a| *a != Affiliation::Outcast)
            .ok_or_else(|| ClientError::BadInput("unknown affiliation".into()))?;
        self.set_group_affiliation_inner(conversation, jid, a, None)
            .await
    }

    async fn set_group_affiliation_inner(
        &self,
        conversation: ConversationId,
        jid: &str,
        a: Affiliation,
        reason: Option<&str>,
    ) -> Result<()> {
        let who = BareJid::parse(jid)?;
        let reason = check_reason(reason)?;
        let (rec, room) = self.group(conversation)?;
        self.session(rec.account)?
            .muc_set_affiliation(&room, &who, a, reason)
            .await?;
        let stored = if a.is_member() {
            Some(a.as_str())
        } else {
            None
        };
        member_changed(&self.inner, conversation);
        self.inner
            .store()
            .set_room_member(conversation, who.as_str(), stored, None)?;
        self.inner.conversation_snapshot_changed(conversation);
        Ok(())
    }

    /// Sends `body` to the occupant `nick` of a group alone (XEP-0045 §7.5). It shows in
    /// the group's conversation, marked private with `nick` ([`MessageItem::private_with`]);
    /// like a group message it is sent once we are in the group, and is then "sent", never
    /// "delivered" (no one confirms it). A room that refuses it (no one of that nickname,
    /// private messages not allowed) fails it, with the reason as its error.
    ///
    /// [`MessageItem::private_with`]: crate::MessageItem::private_with
    pub fn send_private_message(
        &self,
        conversation: ConversationId,
        nick: &str,
        body: &str,
    ) -> Result<linnet_store::MessageId> {
        if body.trim().is_empty() {
            return Err(ClientError::BadInput("empty message".into()));
        }
        if body.len() > crate::MAX_BODY_BYTES {
            return Err(ClientError::BadInput("message too long".into()));
        }
        let rec =
            self.inner.store().room(conversation)?.ok_or_else(|| {
                ClientError::BadInput("private messages go through a group".into())
            })?;
        let room = BareJid::parse(&rec.jid)?;
        // The nickname as the room will see it, which is how its answers will name it.
        let nick = muc::occupant_jid(&room, nick)
            .ok()
            .and_then(|to| muc::split_occupant(&to))
            .map(|(_, nick)| nick)
            .ok_or_else(|| ClientError::BadInput("not a nickname".into()))?;
        if self.inner.store().encryption_policy(conversation)?
            == linnet_store::EncryptionPolicy::Omemo
        {
            return Err(ClientError::Policy(
                "encrypted private messages are not supported yet".into(),
            ));
        }
        let id = linnet_xmpp::new_id();
        let stanza = muc::private_message(&room, &nick, body, &id)?;
        let out = crate::rich::Outgoing {
            body: body.to_owned(),
            kind: MessageKind::Message,
            target: None,
            reply_to: None,
            wire: crate::rich::Wire::Stanza(linnet_xmpp::stanza_to_string(&stanza)),
        };
        let (message, _) = self.queue_outgoing(rec.account, &room, &id, out, |tx, m| {
            tx.set_private_with(m, &nick)
        })?;
        Ok(message)
    }

    /// Destroys a group we own; its occupants are told. Its history stays here.
    pub async fn destroy_group(
        &self,
        conversation: ConversationId,
        reason: Option<&str>,
    ) -> Result<()> {
        let reason = check_reason(reason)?;
        let (rec, room) = self.group(conversation)?;
        let session = self.session(rec.account)?;
        session.muc_destroy(&room, reason).await?;
        self.inner
            .store()
            .set_room_left(conversation, Some(LEFT_DESTROYED))?;
        let _ = session.bookmark_retract(&room).await;
        self.inner.conversation_changed(conversation);
        self.inner.publish_chat_list();
        Ok(())
    }
}
