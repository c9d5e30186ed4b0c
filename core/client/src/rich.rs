//! Rich messages: corrections (XEP-0308), retractions (XEP-0424), replies (XEP-0461/0428)
//! and reactions (XEP-0444) in 1:1 conversations and groups; displayed markers (XEP-0333)
//! and typing notifications (XEP-0085) in 1:1 conversations.
//!
//! A change to a message travels and is stored like a message (a hidden row pointing at
//! its target, see the store's v6 migration), so it is queued, re-sent, deduplicated and
//! ordered by the same code; in a group it waits, like a group message, until we are in
//! the room. Who may change what is decided here for 1:1 conversations (for received group
//! changes, in `groups`): a correction or retraction must come from the author of the
//! message it names (our own account for ours, the peer for theirs); a reaction changes
//! only its sender's reactions. We correct and retract only our own messages.

use std::collections::hash_map::{Entry, HashMap};

use linnet_store::{
    AccountId, ConversationId, ConversationKind, DeliveryState, Direction, EncryptionPolicy,
    MessageId, MessageKind, MessageRecord, NewMessage, StoreError, Subscription as RosterSub, Tx,
};
use linnet_xmpp::rich::{self as xr, ChatState, Extras, MessageType, Reply};
use linnet_xmpp::{BareJid, ChatMessage};

use crate::snapshot::{MessageItem, Reaction, ReplyPreview, StyleSpan, TextStyle};
use crate::{lock, now_ms, Client, ClientError, Result, MAX_BODY_BYTES};

/// What a received message does.
pub(crate) enum Change {
    /// A message of its own.
    Message,
    /// Changes the message `1` of the conversation.
    Apply(MessageKind, MessageId),
    /// Names nothing we hold, or something its sender may not change: nothing to show.
    Drop,
}

pub(crate) fn change_of(
    tx: &Tx<'_>,
    conversation: ConversationId,
    m: &ChatMessage,
) -> std::result::Result<Change, StoreError> {
    let r = &m.rich;
    let direction = if m.outgoing {
        Direction::Outgoing
    } else {
        Direction::Incoming
    };
    let target = |id: &str| tx.message_by_reference(conversation, id);
    if let Some(id) = &r.retract {
        return Ok(match target(id)? {
            Some(t) if t.direction == direction => Change::Apply(MessageKind::Retraction, t.id),
            _ => {
                tracing::debug!("ignoring a retraction of a message its sender did not write");
                Change::Drop
            }
        });
    }
    if let Some(reactions) = &r.reactions {
        return Ok(match target(&reactions.id)? {
            Some(t) => Change::Apply(MessageKind::Reactions, t.id),
            None => Change::Drop,
        });
    }
    if let Some(id) = &r.replace {
        match target(id)? {
            Some(t) if t.direction == direction => {
                return Ok(Change::Apply(MessageKind::Correction, t.id))
            }
            // XEP-0308 lets a receiver show what it cannot apply as a message: its text was
            // meant to be read. Whatever it names stays as it was.
            _ => tracing::debug!("a correction of a message its sender did not write"),
        }
    }
    Ok(Change::Message)
}

/// Stores a received change (once: a copy seen again is a duplicate) and applies it.
/// Returns whether the conversation changed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_change(
    tx: &Tx<'_>,
    conversation: ConversationId,
    own: &BareJid,
    m: &ChatMessage,
    kind: MessageKind,
    target: MessageId,
    timestamp_ms: i64,
    encryption: linnet_store::Encryption,
    error: Option<String>,
) -> std::result::Result<bool, StoreError> {
    let emojis = m
        .rich
        .reactions
        .as_ref()
        .map(|r| r.emojis.clone())
        .unwrap_or_default();
    // A correction of a reply quotes what it answers, like the reply did (see
    // `Client::correct_message`): the text is what follows the quote. We show what a
    // reply answers, so its quote goes even when the correction's `<reply>` did not
    // come through (one we could not read).
    let answers = m.rich.reply.is_some()
        || (kind == MessageKind::Correction && tx.message(target)?.reply_to.is_some());
    let text = without_quote(&m.body, &m.rich, answers);
    let reply_to = m.rich.reply.as_ref().map(|r| r.id.as_str());
    let body = match kind {
        MessageKind::Correction => text.clone(),
        // Reactions hold no control characters, so a line each is unambiguous.
        MessageKind::Reactions => emojis.join("\n"),
        _ => String::new(),
    };
    let row = crate::account::received_row(
        conversation,
        own,
        m,
        body,
        timestamp_ms,
        encryption,
        error.clone(),
    );
    let sender = row.sender.clone();
    let inserted = tx.insert_message(&NewMessage {
        // Hidden rows are never unread.
        delivery_state: if m.outgoing {
            DeliveryState::Sent
        } else {
            DeliveryState::Read
        },
        kind,
        target: Some(target),
        reply_to: match kind {
            MessageKind::Correction => reply_to.map(str::to_owned),
            _ => None,
        },
        ..row
    })?;
    if !matches!(inserted, linnet_store::Inserted::New(_)) {
        return Ok(false);
    }
    match kind {
        // An undecryptable correction leaves the text as it was. One without a reply
        // (older clients send only the new text) leaves what the message answers.
        MessageKind::Correction if error.is_none() && !text.trim().is_empty() => {
            tx.apply_correction_with_reply(target, &text, reply_to, timestamp_ms)
        }
        MessageKind::Retraction => tx.apply_retraction(target, timestamp_ms),
        MessageKind::Reactions => tx.set_reactions(target, &sender, &emojis, timestamp_ms),
        _ => Ok(false),
    }
}

/// A received message of the history: its answer text (without the quote that stands in
/// for the reply for other clients) and what it answers.
pub(crate) fn message_parts(m: &ChatMessage) -> (String, Option<String>) {
    (
        reply_text(&m.body, &m.rich),
        m.rich.reply.as_ref().map(|r| r.id.clone()),
    )
}

/// The text of a received message without the quote that stands in for its reply
/// (XEP-0461, XEP-0428) for clients without replies.
pub(crate) fn reply_text(body: &str, rich: &xr::Rich) -> String {
    without_quote(body, rich, rich.reply.is_some())
}

/// `body` without its reply fallback when the message is shown as a reply (`answers`).
fn without_quote(body: &str, rich: &xr::Rich, answers: bool) -> String {
    if !answers {
        return body.to_owned();
    }
    let text = rich.strip_fallback(body, &[xr::NS_REPLY]);
    // A reply that is all quote still says something: show it whole.
    if text.trim().is_empty() {
        body.to_owned()
    } else {
        text
    }
}

/// XEP-0333: `peer` displayed our message `id` (and all before it), or another device of
/// ours (`outgoing`) displayed theirs and so read the conversation up to it.
pub(crate) fn on_displayed(
    tx: &Tx<'_>,
    account: AccountId,
    peer: &BareJid,
    id: &str,
    outgoing: bool,
) -> std::result::Result<Option<ConversationId>, StoreError> {
    let Some(conversation) = tx.conversation(account, peer.as_str(), false)? else {
        return Ok(None);
    };
    let Some(target) = tx.message_by_reference(conversation, id)? else {
        return Ok(None);
    };
    let changed = match (outgoing, target.direction) {
        (false, Direction::Outgoing) => tx.mark_displayed_up_to(conversation, target.id)?,
        (true, Direction::Incoming) => !tx.mark_read(conversation, Some(target.id))?.is_empty(),
        // A marker for a message of the other side's is not a marker (XEP-0333 §Business
        // Rules: none for one's own messages).
        _ => false,
    };
    Ok(changed.then_some(conversation))
}

/// Whether a contact may learn of our activity (receipts, markers, typing): only one who
/// sees our presence anyway.
pub(crate) fn shares_presence(contact: Option<linnet_store::ContactRecord>) -> bool {
    contact.is_some_and(|c| matches!(c.subscription, RosterSub::From | RosterSub::Both))
}

/// What an outgoing row is and how it travels.
pub(crate) struct Outgoing {
    pub body: String,
    pub kind: MessageKind,
    pub target: Option<MessageId>,
    pub reply_to: Option<String>,
    pub wire: Wire,
}

pub(crate) enum Wire {
    /// A chat message: encrypted or not as the conversation's policy says.
    Chat(Extras),
    /// A stanza that always goes as it is (reactions and retractions carry no text).
    Stanza(String),
}

/// A message of the history that a call acts on, and where it is.
struct Held {
    message: MessageRecord,
    /// The contact, or the room.
    peer: BareJid,
    /// Our account's bare JID.
    own: String,
    /// In a group: our occupant JID there.
    occupant: Option<String>,
}

impl Held {
    fn room(&self) -> Option<&str> {
        self.occupant.as_ref().map(|_| self.peer.as_str())
    }

    fn message_type(&self) -> MessageType {
        match self.occupant {
            Some(_) => MessageType::Groupchat,
            None => MessageType::Chat,
        }
    }

    /// Who we are among a message's reactions. In a group it is our occupant JID, the
    /// name the room gives every reaction (ours echoed included, see `groups::on_message`).
    fn reactor(&self) -> &str {
        self.occupant.as_deref().unwrap_or(&self.own)
    }

    /// What an answer to this message carries (XEP-0461, XEP-0428): its reference and
    /// author, and the quote of its start for clients without replies (empty, so no
    /// fallback, when it was deleted).
    fn answer(&self, reference: String) -> (Reply, String) {
        let to = author(
            &self.message,
            self.peer.as_str(),
            &self.own,
            self.occupant.as_deref(),
        );
        (
            Reply {
                to: Some(to),
                id: reference,
            },
            xr::reply_quote(crate::files::quotable(&self.message.body)),
        )
    }

    /// What a reply, reaction or retraction names the message by (`what`: the act, for
    /// the error).
    fn reference(&self, what: &str) -> Result<String> {
        if self.message.retracted_ms.is_some() {
            return Err(ClientError::BadInput("that message was deleted".into()));
        }
        match reference(&self.message, self.room()) {
            Some(r) => Ok(r.to_owned()),
            None if self.occupant.is_some() => Err(ClientError::BadInput(format!(
                "that message cannot be {what}: the group gave it no id"
            ))),
            None => Err(ClientError::BadInput(format!(
                "that message cannot be {what}"
            ))),
        }
    }
}

/// How a reply, reaction or retraction names `m` (XEP-0461, XEP-0444 and XEP-0424, "Using
/// the correct ID"): in a group by the id the room stamped it with, since senders' own ids
/// are not unique there, so a message the room did not stamp cannot be named; elsewhere
/// by the id it was sent with.
fn reference<'a>(m: &'a MessageRecord, room: Option<&str>) -> Option<&'a str> {
    match room {
        Some(room) if m.stanza_id_by.as_deref() == Some(room) => m.stanza_id.as_deref(),
        Some(_) => None,
        None => m.origin_id.as_deref(),
    }
}

/// XEP-0461 'to': who wrote `m`. A bare JID in a 1:1 conversation; in a group the occupant
/// JID it came from, for ours sent from here (stored under our bare JID) our occupant JID.
fn author(m: &MessageRecord, peer: &str, own: &str, occupant: Option<&str>) -> String {
    match (m.direction, occupant) {
        (Direction::Incoming, None) => peer.to_owned(),
        (Direction::Outgoing, None) => own.to_owned(),
        (Direction::Incoming, Some(_)) => m.sender.clone(),
        (Direction::Outgoing, Some(ours)) => {
            let from_room = m
                .sender
                .strip_prefix(peer)
                .is_some_and(|nick| nick.starts_with('/'));
            if from_room {
                m.sender.clone()
            } else {
                ours.to_owned()
            }
        }
    }
}

impl Client {
    /// Queues and (when online) sends an outgoing row, running `change` on the same
    /// transaction. Returns the new row and its conversation.
    pub(crate) fn queue_outgoing(
        &self,
        account: AccountId,
        peer: &BareJid,
        id: &str,
        out: Outgoing,
        change: impl FnOnce(&Tx<'_>, MessageId) -> std::result::Result<(), StoreError>,
    ) -> Result<(MessageId, ConversationId)> {
        let own = lock(&self.inner.store).account(account)?.jid;
        // Held while queueing and sending, so that a session coming up re-sends the outbox
        // either before this row is queued or before it is sent (see account::run).
        let (slot, send_wake) = lock(&self.inner.runtimes)
            .get(&account)
            .map(|rt| (rt.session.clone(), rt.send_wake.clone()))
            .unzip();
        // A group's messages go out only while we are in it (see `groups::KIND_GROUPCHAT`).
        let group = lock(&self.inner.store)
            .room_by_jid(account, peer.as_str())?
            .map(|r| r.conversation);
        let group_joined = group.is_some_and(|c| self.inner.group_joined(c));
        let session = slot.as_ref().map(|s| lock(s));
        let (message, conversation, stanza) = {
            let mut store = lock(&self.inner.store);
            store.transaction(|tx| {
                let conversation = tx
                    .conversation(account, peer.as_str(), true)?
                    .ok_or(StoreError::NotFound("conversation"))?;
                let inserted = tx.insert_message(&NewMessage {
                    conversation,
                    direction: Direction::Outgoing,
                    sender: own.clone(),
                    body: out.body.clone(),
                    origin_id: Some(id.to_owned()),
                    stanza_id: None,
                    stanza_id_by: None,
                    timestamp_ms: now_ms(),
                    delivery_state: DeliveryState::Pending,
                    encryption: Default::default(),
                    error: None,
                    kind: out.kind,
                    target: out.target,
                    reply_to: out.reply_to.clone(),
                    markable: false,
                    replaces: None,
                })?;
                // The outbox holds the stanza, or (to be encrypted) the payloads to add.
                let (kind, payload) = match &out.wire {
                    Wire::Stanza(s) if group.is_some() => {
                        (crate::groups::KIND_GROUPCHAT, s.clone())
                    }
                    Wire::Stanza(s) => ("chat", s.clone()),
                    // Encrypted or not is decided when it goes (see `omemo::group`).
                    Wire::Chat(extras)
                        if group.is_some()
                            && tx.encryption_policy(conversation)? != EncryptionPolicy::Plain =>
                    {
                        (crate::omemo::KIND_GROUP_TO_ENCRYPT, extras.to_xml())
                    }
                    Wire::Chat(extras) if group.is_some() => (
                        crate::groups::KIND_GROUPCHAT,
                        linnet_xmpp::stanza_to_string(&linnet_xmpp::muc::groupchat_message(
                            peer,
                            &extras.wire_body(&out.body),
                            id,
                            extras,
                        )),
                    ),
                    Wire::Chat(extras) => {
                        let encrypt = match tx.encryption_policy(conversation)? {
                            EncryptionPolicy::Plain => false,
                            EncryptionPolicy::Omemo => true,
                            // The sender finds out (fetching the lists) unless we know.
                            EncryptionPolicy::Auto => {
                                crate::omemo::may_have_devices(tx, account, peer)?
                            }
                        };
                        if encrypt {
                            (crate::omemo::KIND_TO_ENCRYPT, extras.to_xml())
                        } else {
                            let s = linnet_xmpp::stanza_to_string(&linnet_xmpp::chat_stanza(
                                peer,
                                &extras.wire_body(&out.body),
                                id,
                                extras,
                            ));
                            ("chat", s)
                        }
                    }
                };
                let stanza = match kind {
                    crate::omemo::KIND_TO_ENCRYPT | crate::omemo::KIND_GROUP_TO_ENCRYPT => None,
                    crate::groups::KIND_GROUPCHAT if !group_joined => None,
                    _ => Some(payload.clone()),
                };
                tx.outbox_push(account, Some(inserted.id()), kind, &payload)?;
                change(tx, inserted.id())?;
                Ok((inserted.id(), conversation, stanza))
            })?
        };
        match stanza {
            None => {
                if let Some(w) = send_wake {
                    w.notify_one();
                }
            }
            Some(stanza) => {
                if let Some(s) = session
                    .as_ref()
                    .and_then(|g| g.as_ref())
                    .filter(|s| !s.is_closed())
                {
                    // If this fails the outbox still has it: the next session sends it.
                    let _ = s.send_raw_tracked(&stanza, id);
                }
            }
        }
        drop(session);
        self.inner.conversation_changed(conversation);
        self.inner.publish_chat_list();
        Ok((message, conversation))
    }

    /// A message of the history that this account may act on, and where it is.
    fn own_history_message(&self, account: AccountId, message: MessageId) -> Result<Held> {
        let store = lock(&self.inner.store);
        let m = store.message(message)?;
        if m.account != account || m.kind != MessageKind::Message {
            return Err(ClientError::NotFound("message".into()));
        }
        if m.private_with.is_some() {
            // What names it would go to the whole group, and quote it there.
            return Err(ClientError::BadInput(
                "a private message cannot be answered, changed or reacted to".into(),
            ));
        }
        let info = store.conversation_info(m.conversation)?;
        let peer = BareJid::parse(&info.peer)?;
        let own = store.account(account)?.jid;
        let occupant = match info.kind {
            ConversationKind::Chat => None,
            ConversationKind::GroupChat => {
                let rec = store
                    .room(m.conversation)?
                    .ok_or_else(|| ClientError::NotFound("group".into()))?;
                // Before the room confirmed a nickname, the one we join with.
                Some(
                    self.inner
                        .own_occupant(m.conversation, &rec.jid)
                        .unwrap_or_else(|| format!("{}/{}", rec.jid, rec.nick)),
                )
            }
        };
        Ok(Held {
            message: m,
            peer,
            own,
            occupant,
        })
    }

    /// What `held` answers, as an answer to it is sent again (see [`Held::answer`]):
    /// `None` when it is no reply. The reference is the one stored with it; a message it
    /// answers that we no longer hold is named without author or quote.
    fn answered_by(&self, held: &Held) -> Result<Option<(Reply, String)>> {
        let Some(reference) = held.message.reply_to.clone() else {
            return Ok(None);
        };
        let answered = {
            let store = lock(&self.inner.store);
            let conversation = held.message.conversation;
            match held.room() {
                Some(room) => store.message_by_room_reference(conversation, room, &reference)?,
                None => store.message_by_reference(conversation, &reference)?,
            }
        };
        Ok(Some(match answered {
            Some(message) => Held {
                message,
                peer: held.peer.clone(),
                own: held.own.clone(),
                occupant: held.occupant.clone(),
            }
            .answer(reference),
            None => (
                Reply {
                    to: None,
                    id: reference,
                },
                String::new(),
            ),
        }))
    }

    /// Sends `body` as an answer to `message` (XEP-0461), quoting its start for clients
    /// without replies.
    pub fn reply(&self, account: AccountId, message: MessageId, body: &str) -> Result<MessageId> {
        check_body(body)?;
        let held = self.own_history_message(account, message)?;
        let reference = held.reference("answered")?;
        let extras = Extras {
            replace: None,
            reply: Some(held.answer(reference.clone())),
            file: None,
        };
        let id = linnet_xmpp::new_id();
        let out = Outgoing {
            body: body.to_owned(),
            kind: MessageKind::Message,
            target: None,
            reply_to: Some(reference),
            wire: Wire::Chat(extras),
        };
        Ok(self
            .queue_outgoing(account, &held.peer, &id, out, |_, _| Ok(()))?
            .0)
    }

    /// Replaces the text of a message we sent (XEP-0308). The change shows at once. A
    /// reply stays a reply: the correction answers the same message, quoting it afresh.
    pub fn correct_message(
        &self,
        account: AccountId,
        message: MessageId,
        body: &str,
    ) -> Result<()> {
        check_body(body)?;
        let held = self.own_history_message(account, message)?;
        if held.message.direction != Direction::Outgoing {
            return Err(ClientError::BadInput(
                "only our own messages can be corrected".into(),
            ));
        }
        if held.message.retracted_ms.is_some() {
            return Err(ClientError::BadInput("that message was deleted".into()));
        }
        // XEP-0308 names the original by the id it was sent with, in groups too (ours
        // carry an origin-id equal to it).
        let Some(reference) = held.message.origin_id.clone() else {
            return Err(ClientError::BadInput(
                "that message cannot be corrected".into(),
            ));
        };
        // A correction of a reply answers the same, quoting it afresh: clients that
        // replace the whole message (most do) keep showing it as a reply.
        let reply = self.answered_by(&held)?;
        let Held {
            message: target,
            peer,
            ..
        } = held;
        let id = linnet_xmpp::new_id();
        let out = Outgoing {
            body: body.to_owned(),
            kind: MessageKind::Correction,
            target: Some(target.id),
            reply_to: target.reply_to.clone(),
            wire: Wire::Chat(Extras {
                replace: Some(reference),
                reply,
                file: None,
            }),
        };
        let text = body.to_owned();
        self.queue_outgoing(account, &peer, &id, out, move |tx, _| {
            tx.apply_correction(target.id, &text, now_ms()).map(|_| ())
        })?;
        Ok(())
    }

    /// Deletes a message we sent for everyone (XEP-0424). Clients without retraction
    /// support keep showing it; ours and supporting ones remove the text.
    pub fn retract_message(&self, account: AccountId, message: MessageId) -> Result<()> {
        let held = self.own_history_message(account, message)?;
        let target = held.message.id;
        if held.message.direction != Direction::Outgoing {
            return Err(ClientError::BadInput(
                "only our own messages can be deleted for everyone".into(),
            ));
        }
        if held.message.retracted_ms.is_some() {
            return Ok(());
        }
        let reference = held.reference("deleted")?;
        let id = linnet_xmpp::new_id();
        let stanza = xr::retraction_stanza(&held.peer, held.message_type(), &id, &reference);
        let out = Outgoing {
            body: String::new(),
            kind: MessageKind::Retraction,
            target: Some(target),
            reply_to: None,
            wire: Wire::Stanza(linnet_xmpp::stanza_to_string(&stanza)),
        };
        self.queue_outgoing(account, &held.peer, &id, out, move |tx, _| {
            tx.apply_retraction(target, now_ms()).map(|_| ())
        })?;
        Ok(())
    }

    /// Sets our reactions to a message (XEP-0444): the complete set; empty removes ours.
    pub fn react(&self, account: AccountId, message: MessageId, emojis: &[String]) -> Result<()> {
        let mut set: Vec<String> = Vec::new();
        for e in emojis {
            let e = e.trim();
            if e.is_empty() || e.len() > xr::MAX_REACTION_BYTES || e.chars().any(char::is_control) {
                return Err(ClientError::BadInput("a reaction is one emoji".into()));
            }
            if !set.iter().any(|x| x == e) {
                set.push(e.to_owned());
            }
        }
        if set.len() > xr::MAX_REACTIONS {
            return Err(ClientError::BadInput("too many reactions".into()));
        }
        let held = self.own_history_message(account, message)?;
        let target = held.message.id;
        let reference = held.reference("reacted to")?;
        let id = linnet_xmpp::new_id();
        let stanza = xr::reactions_stanza(&held.peer, held.message_type(), &id, &reference, &set);
        let out = Outgoing {
            body: set.join("\n"),
            kind: MessageKind::Reactions,
            target: Some(target),
            reply_to: None,
            wire: Wire::Stanza(linnet_xmpp::stanza_to_string(&stanza)),
        };
        let sender = held.reactor().to_owned();
        self.queue_outgoing(account, &held.peer, &id, out, move |tx, _| {
            tx.set_reactions(target, &sender, &set, now_ms())
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Tells the peer whether we are typing (XEP-0085). Only state changes go out, only to
    /// contacts who see our presence, and only while online: a lost notification is
    /// harmless and never queued.
    pub fn set_typing(&self, conversation: ConversationId, typing: bool) -> Result<()> {
        let (account, peer, allowed) = {
            let store = lock(&self.inner.store);
            let info = store.conversation_info(conversation)?;
            let allowed = shares_presence(store.contact(info.account, &info.peer)?)
                && info.kind == linnet_store::ConversationKind::Chat;
            (info.account, info.peer, allowed)
        };
        if !allowed {
            return Ok(());
        }
        let state = if typing {
            ChatState::Composing
        } else {
            ChatState::Paused
        };
        {
            let mut sent = lock(&self.inner.typing_sent);
            let was = sent.insert(conversation, typing);
            if was == Some(typing) || (was.is_none() && !typing) {
                return Ok(());
            }
        }
        let peer = BareJid::parse(&peer)?;
        if let Some(s) = self.inner.live_session(account) {
            let _ = s.send_xml(&linnet_xmpp::stanza_to_string(&xr::chat_state_stanza(
                &peer, state,
            )));
        }
        Ok(())
    }

    /// After marking read: a displayed marker (XEP-0333) for the newest incoming message,
    /// if its sender asked for markers and may learn that we read it. Archived, so our
    /// other devices learn it too.
    pub(crate) fn send_displayed(&self, conversation: ConversationId) -> Result<()> {
        let (account, peer, target) = {
            let store = lock(&self.inner.store);
            let info = store.conversation_info(conversation)?;
            if info.kind != linnet_store::ConversationKind::Chat {
                return Ok(());
            }
            let Some(latest) = store.latest_incoming(conversation)? else {
                return Ok(());
            };
            if !latest.markable || !shares_presence(store.contact(info.account, &info.peer)?) {
                return Ok(());
            }
            let Some(reference) = latest.origin_id else {
                return Ok(());
            };
            (info.account, info.peer, reference)
        };
        let peer = BareJid::parse(&peer)?;
        if let Some(s) = self.inner.live_session(account) {
            let stanza = xr::displayed_stanza(&peer, &linnet_xmpp::new_id(), &target);
            let _ = s.send_xml(&linnet_xmpp::stanza_to_string(&stanza));
        }
        Ok(())
    }
}

fn check_body(body: &str) -> Result<()> {
    if body.trim().is_empty() {
        return Err(ClientError::BadInput("empty message".into()));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ClientError::BadInput("message too long".into()));
    }
    Ok(())
}

/// Snapshot items for a page of history: reactions, reply previews and styling resolved.
pub(crate) fn message_items(
    tx: &linnet_store::Store,
    own: &str,
    own_occupant: Option<&str>,
    records: Vec<MessageRecord>,
) -> std::result::Result<Vec<MessageItem>, StoreError> {
    let ids: Vec<MessageId> = records.iter().map(|m| m.id).collect();
    let reactions = tx.reactions(&ids)?;
    // A page is one conversation's; a group's replies name messages by the room's ids.
    let mut rooms: HashMap<ConversationId, Option<String>> = HashMap::new();
    let mut attachments = crate::files::attachments_of(tx, &ids)?;
    let mut out = Vec::with_capacity(records.len());
    for m in records {
        let mut grouped: Vec<Reaction> = Vec::new();
        for set in reactions.iter().filter(|r| r.message == m.id) {
            for e in &set.emojis {
                let i = match grouped.iter().position(|g| &g.emoji == e) {
                    Some(i) => i,
                    None => {
                        grouped.push(Reaction {
                            emoji: e.clone(),
                            count: 0,
                            senders: Vec::new(),
                            mine: false,
                        });
                        grouped.len() - 1
                    }
                };
                let g = &mut grouped[i];
                g.count += 1;
                g.mine |= set.sender == own || Some(set.sender.as_str()) == own_occupant;
                g.senders.push(set.sender.clone());
            }
        }
        let reply_to = match &m.reply_to {
            Some(r) => {
                let room = match rooms.entry(m.conversation) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(tx.room(m.conversation)?.map(|rec| rec.jid)),
                };
                let target = match room {
                    Some(room) => tx.message_by_room_reference(m.conversation, room, r)?,
                    None => tx.message_by_reference(m.conversation, r)?,
                };
                Some(match target {
                    Some(t) => ReplyPreview {
                        message: Some(t.id),
                        sender: t.sender,
                        excerpt: if t.retracted_ms.is_some() {
                            String::new()
                        } else {
                            crate::files::quotable(&t.body).chars().take(160).collect()
                        },
                    },
                    None => ReplyPreview {
                        message: None,
                        sender: String::new(),
                        excerpt: String::new(),
                    },
                })
            }
            None => None,
        };
        let (body, attachment) = crate::files::shown(&mut attachments, m.id, m.body);
        let spans = styles(&body);
        let sender_nick = own_occupant
            .and_then(|_| m.sender.split_once('/'))
            .map(|(_, nick)| nick.to_owned());
        out.push(MessageItem {
            id: m.id,
            direction: m.direction,
            sender_nick,
            private_with: m.private_with,
            sender: m.sender,
            body,
            timestamp_ms: m.timestamp_ms,
            state: m.delivery_state,
            encryption: m.encryption,
            error: m.error,
            edited: m.edited_ms.is_some(),
            retracted: m.retracted_ms.is_some(),
            reply_to,
            reactions: grouped,
            spans,
            attachment,
            trust: None,
        });
    }
    Ok(out)
}

/// XEP-0393 styling, in UTF-16 offsets (what Android's String and iOS's NSAttributedString
/// index by), so that both apps render the same spans.
fn styles(body: &str) -> Vec<StyleSpan> {
    use linnet_xmpp::styling::{self, Style};
    let spans = styling::parse(body);
    styling::to_utf16(body, &spans)
        .into_iter()
        .map(|s| StyleSpan {
            style: match s.style {
                Style::Strong => TextStyle::Strong,
                Style::Emphasis => TextStyle::Emphasis,
                Style::Strike => TextStyle::Strike,
                Style::Preformatted => TextStyle::Code,
                Style::PreBlock => TextStyle::CodeBlock,
                Style::Quote => TextStyle::Quote,
            },
            start: s.start as u32,
            end: s.end as u32,
            depth: s.depth,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "plans@groups.example";

    fn record(direction: Direction, sender: &str) -> MessageRecord {
        MessageRecord {
            id: MessageId(1),
            conversation: ConversationId(1),
            account: AccountId(1),
            direction,
            sender: sender.to_owned(),
            body: "hi".to_owned(),
            origin_id: Some("origin".to_owned()),
            stanza_id: Some("sid".to_owned()),
            stanza_id_by: Some(ROOM.to_owned()),
            timestamp_ms: 0,
            received_ms: 0,
            delivery_state: DeliveryState::Delivered,
            encryption: Default::default(),
            error: None,
            kind: MessageKind::Message,
            target: None,
            edited_ms: None,
            retracted_ms: None,
            reply_to: None,
            markable: false,
            replaces: None,
            occupant_id: None,
            private_with: None,
        }
    }

    #[test]
    fn a_group_names_messages_by_the_rooms_stanza_id_only() {
        let m = record(Direction::Incoming, &format!("{ROOM}/bob"));
        assert_eq!(reference(&m, Some(ROOM)), Some("sid"));
        assert_eq!(
            reference(&m, None),
            Some("origin"),
            "1:1: the id it was sent with"
        );
        // Stamped by someone else (a server's archive, a forged element): not the room's.
        assert_eq!(reference(&m, Some("other@groups.example")), None);
        let unstamped = MessageRecord {
            stanza_id: None,
            stanza_id_by: None,
            ..m.clone()
        };
        assert_eq!(reference(&unstamped, Some(ROOM)), None);
        let no_origin = MessageRecord {
            origin_id: None,
            ..m
        };
        assert_eq!(reference(&no_origin, None), None);
    }

    /// A message as the session hands it over, from our other device (`outgoing`) or the
    /// peer: `body` as sent, with the payloads `rich`.
    fn received(id: &str, body: String, rich: xr::Rich, outgoing: bool) -> ChatMessage {
        ChatMessage {
            peer: BareJid::parse("bob@example.org").unwrap(),
            outgoing,
            carbon: outgoing,
            from_full: "bob@example.org/phone".into(),
            body,
            id: Some(id.to_owned()),
            origin_id: Some(id.to_owned()),
            stanza_id: None,
            stanza_id_by: None,
            timestamp_ms: None,
            wants_receipt: false,
            archived: false,
            scrollback: false,
            encrypted: Vec::new(),
            rich: Box::new(rich),
        }
    }

    /// A correction of a reply, from our other device or from the peer's client: the text
    /// shown is the new one without the quote, and the message still answers what it did
    /// (or, when the correction names something else, that); a correction that carries
    /// only the new text leaves what it answers alone.
    #[test]
    fn a_corrected_reply_stays_a_reply_without_its_quote() {
        let mut store =
            linnet_store::Store::open_in_memory(&linnet_store::DbKey::from_bytes([7; 32])).unwrap();
        let account = store.add_account("me@example.org", "pw").unwrap();
        let own = BareJid::parse("me@example.org").unwrap();
        let peer = BareJid::parse("bob@example.org").unwrap();
        let c = store
            .conversation(account, peer.as_str(), true)
            .unwrap()
            .unwrap();
        let row = |direction, body: &str, origin: &str, reply_to: Option<&str>| NewMessage {
            conversation: c,
            direction,
            sender: match direction {
                Direction::Outgoing => own.as_str().to_owned(),
                Direction::Incoming => peer.as_str().to_owned(),
            },
            body: body.to_owned(),
            origin_id: Some(origin.to_owned()),
            stanza_id: None,
            stanza_id_by: None,
            timestamp_ms: now_ms(),
            delivery_state: DeliveryState::Delivered,
            encryption: Default::default(),
            error: None,
            kind: MessageKind::Message,
            target: None,
            reply_to: reply_to.map(str::to_owned),
            markable: false,
            replaces: None,
        };
        let ids = store
            .transaction(|tx| {
                let q = tx.insert_message(&row(Direction::Incoming, "lunch?", "q1", None))?;
                let ours = tx.insert_message(&row(Direction::Outgoing, "yes", "r1", Some("q1")))?;
                let theirs =
                    tx.insert_message(&row(Direction::Incoming, "and you?", "t1", Some("r1")))?;
                tx.insert_message(&row(Direction::Incoming, "or pizza?", "q2", None))?;
                Ok((q.id(), ours.id(), theirs.id()))
            })
            .unwrap();
        let (_, ours, theirs) = ids;
        let quote = xr::reply_quote("lunch?");
        let reply = |id: &str| {
            Some((
                Reply {
                    to: Some(peer.as_str().to_owned()),
                    id: id.to_owned(),
                },
                quote.clone(),
            ))
        };
        // A correction as it goes out, and its body as sent.
        let correction = |id: &str, text: &str, replace: &str, reply| {
            let extras = Extras {
                replace: Some(replace.to_owned()),
                reply,
                file: None,
            };
            let body = extras.wire_body(text);
            (linnet_xmpp::chat_stanza(&peer, &body, id, &extras), body)
        };
        // Applies a received correction as `account::on_message` does.
        let apply = |store: &mut linnet_store::Store, m: ChatMessage| {
            store
                .transaction(|tx| match change_of(tx, c, &m)? {
                    Change::Apply(kind, target) => store_change(
                        tx,
                        c,
                        &own,
                        &m,
                        kind,
                        target,
                        now_ms(),
                        Default::default(),
                        None,
                    ),
                    _ => panic!("not applied as a correction"),
                })
                .unwrap()
        };
        let shown = |store: &linnet_store::Store, id| {
            let m = store.message(id).unwrap();
            (m.body, m.reply_to)
        };

        // Ours, corrected on our other device as we correct: quote and reply again.
        let (stanza, body) = correction("c1", "yes!", "r1", reply("q1"));
        assert!(body.starts_with("> lunch?\n"), "{body:?}");
        assert!(apply(
            &mut store,
            received("c1", body, xr::parse(&stanza), true)
        ));
        assert_eq!(shown(&store, ours), ("yes!".into(), Some("q1".into())));
        // Seen again (the archive's copy): nothing changes.
        let (stanza, body) = correction("c1", "yes!", "r1", reply("q1"));
        assert!(!apply(
            &mut store,
            received("c1", body, xr::parse(&stanza), true)
        ));
        // The peer's, by an older client: only the new text.
        let (stanza, body) = correction("c2", "and you??", "t1", None);
        assert!(apply(
            &mut store,
            received("c2", body, xr::parse(&stanza), false)
        ));
        assert_eq!(
            shown(&store, theirs),
            ("and you??".into(), Some("r1".into()))
        );
        // The peer's, now answering something else.
        let (stanza, body) = correction("c3", "or you?", "t1", reply("q2"));
        assert!(apply(
            &mut store,
            received("c3", body, xr::parse(&stanza), false)
        ));
        assert_eq!(shown(&store, theirs), ("or you?".into(), Some("q2".into())));
        // A quote marked as the reply's fallback goes even when the `<reply>` did not come
        // through, since the message is shown as a reply.
        let (mut stanza, body) = correction("c4", "yes, at one", "r1", reply("q1"));
        stanza.remove_child("reply", xr::NS_REPLY);
        let m = received("c4", body, xr::parse(&stanza), true);
        assert_eq!(m.rich.reply, None);
        assert!(apply(&mut store, m));
        assert_eq!(
            shown(&store, ours),
            ("yes, at one".into(), Some("q1".into()))
        );
    }

    #[test]
    fn a_reply_names_the_author_as_the_conversation_knows_them() {
        let own = "alice@example";
        let ours_here = format!("{ROOM}/alice");
        let theirs = record(Direction::Incoming, &format!("{ROOM}/bob"));
        assert_eq!(
            author(&theirs, ROOM, own, Some(&ours_here)),
            format!("{ROOM}/bob")
        );
        // Sent from here, stored under our bare JID: our occupant JID now.
        let sent = record(Direction::Outgoing, own);
        assert_eq!(author(&sent, ROOM, own, Some(&ours_here)), ours_here);
        // Sent from another device under another nickname: the one it came from.
        let elsewhere = record(Direction::Outgoing, &format!("{ROOM}/al"));
        assert_eq!(
            author(&elsewhere, ROOM, own, Some(&ours_here)),
            format!("{ROOM}/al")
        );
        // A JID that merely starts like the room's is not from it.
        let lookalike = record(Direction::Outgoing, &format!("{ROOM}x/al"));
        assert_eq!(author(&lookalike, ROOM, own, Some(&ours_here)), ours_here);
        let peer = "bob@example";
        assert_eq!(
            author(
                &record(Direction::Incoming, "bob@example/phone"),
                peer,
                own,
                None
            ),
            peer
        );
        assert_eq!(author(&sent, peer, own, None), own);
    }
}
