//! Classification of inbound stanzas into typed events. Pure functions: every stanza from
//! the network is treated as hostile until checked here, and the checks are unit-tested with
//! scripted stanzas (see tests at the bottom and HOSTILE-INPUTS.md).

use std::time::{SystemTime, UNIX_EPOCH};

use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::elem::{el, ElExt};
use crate::jid::{split_bare, BareJid};

pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_HINTS: &str = "urn:xmpp:hints";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Names our software in entity capabilities (XEP-0115 §4: a URI of the client's own).
pub const CAPS_NODE: &str = "urn:x-linnet:client";

/// What our client advertises in disco#info. The `+notify` features (XEP-0163 §4) make
/// the servers send us our contacts' OMEMO device lists as they change, for both versions.
pub const FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_PING,
    NS_RECEIPTS,
    NS_CARBONS,
    NS_SID,
    "urn:xmpp:omemo:2:devices+notify",
    "eu.siacs.conversations.axolotl.devicelist+notify",
    // XEP-0402 §4: changes to our bookmarks, for autojoin across our devices.
    "urn:xmpp:bookmarks:1+notify",
    // XEP-0084 §4.4 and XEP-0172 §4.6: contacts' avatars and nicknames as they change.
    "urn:xmpp:avatar:metadata+notify",
    "http://jabber.org/protocol/nick+notify",
    crate::muc::NS_CONFERENCE,
];

/// Our one disco identity: category, type, name.
const IDENTITY: (&str, &str, &str) = ("client", "phone", "Linnet");

/// The XEP-0115 §5.1 verification string of our identity and features, hashed with SHA-1:
/// servers use it to learn our `+notify` features once per version rather than per login.
pub fn caps_ver() -> String {
    caps_hash(IDENTITY, &all_features())
}

/// Everything disco#info names: ours and the calls' (XEP-0353/0166/0167 and friends).
fn all_features() -> Vec<&'static str> {
    FEATURES
        .iter()
        .chain(crate::jingle::FEATURES)
        .copied()
        .collect()
}

/// XEP-0115 §5.1 for one identity without a language and no extended forms.
fn caps_hash((category, type_, name): (&str, &str, &str), features: &[&str]) -> String {
    use base64::Engine as _;
    use sha1::{Digest, Sha1};
    let mut s = format!("{category}/{type_}//{name}<");
    let mut features: Vec<&str> = features.to_vec();
    // Sorted by octets, as the XEP says (i;octet collation).
    features.sort_unstable();
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    None,
    To,
    From,
    Both,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: BareJid,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// A subscription request from us is pending.
    pub ask: bool,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The other party of the conversation.
    pub peer: BareJid,
    /// Sent by another device of ours (a "sent" carbon).
    pub outgoing: bool,
    /// Arrived as a carbon copy rather than addressed to this resource.
    pub carbon: bool,
    /// Full JID of the sender, for receipts.
    pub from_full: String,
    pub body: String,
    /// The stanza's `id` attribute.
    pub id: Option<String>,
    pub origin_id: Option<String>,
    /// XEP-0359 id assigned by our own archive (only kept when `by` is our account).
    pub stanza_id: Option<String>,
    pub stanza_id_by: Option<String>,
    /// Delay stamp (offline/archived delivery), clamped to sane values.
    pub timestamp_ms: Option<i64>,
    pub wants_receipt: bool,
    /// Fetched from our archive (XEP-0313) rather than delivered live.
    pub archived: bool,
    /// Fetched by a scroll-back query ([`crate::Session::history_before`]): older than what
    /// the caller holds of the conversation, not part of a catch-up.
    pub scrollback: bool,
    /// The message's OMEMO `<encrypted>` elements, at most one per version, each parsed or
    /// refused with the reason. When there are any, `body` is only the fallback text for
    /// clients without OMEMO (possibly empty) and must not be shown.
    pub encrypted: Vec<Result<crate::omemo::Encrypted, crate::omemo::OmemoXmlError>>,
    /// Corrections, retractions, replies, reactions, markers: checked here for form only;
    /// whether the sender may change what they refer to is for the caller to decide.
    pub rich: Box<crate::rich::Rich>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message(ChatMessage),
    /// XEP-0184 receipt from a peer: the message with this id reached one of their devices.
    Receipt {
        from: BareJid,
        id: String,
    },
    /// A message we sent bounced. `condition`: the RFC 6120 one, or "blocked" when our own
    /// server refused it because we block the addressee (XEP-0191 `<blocked/>`).
    MessageError {
        id: String,
        condition: String,
    },
    RosterPush(RosterItem),
    SubscriptionRequest {
        from: BareJid,
        /// The nickname the request carries (XEP-0172 §4.2): what the asker calls
        /// themselves, unverified; a hint to show next to the JID.
        nick: Option<String>,
    },
    Subscribed {
        from: BareJid,
    },
    Unsubscribed {
        from: BareJid,
    },
    Presence {
        from_full: String,
        available: bool,
        /// The XEP-0153 avatar hash it carries, if any.
        photo: Option<crate::profile::PhotoUpdate>,
    },
    /// The server acknowledged (XEP-0198) the stanza we sent with this tracking id.
    Acked {
        id: String,
    },
    /// A query of our archive ([`crate::Session::archive_query`]) ended; its messages came
    /// before this as `Message` events. `last`: the archive id of the newest message of the
    /// page (of the archive, for [`crate::ArchiveFrom::Latest`]); `complete`: nothing newer.
    ArchivePage {
        from: crate::ArchiveFrom,
        complete: bool,
        last: Option<String>,
    },
    /// A query of our archive was refused (`condition` as in RFC 6120 §8.3).
    ArchiveFailed {
        from: crate::ArchiveFrom,
        condition: String,
    },
    /// The answer to an `ArchiveFrom::Oldest` query: the oldest message the archive
    /// holds (its archive id and time), `None` when the archive is empty.
    ArchiveOldest {
        id: Option<String>,
        stamp_ms: Option<i64>,
    },
    /// How far a catch-up ([`crate::Session::catch_up`]) has come: results received, and
    /// how many there are in all once the server has counted them (ejabberd does, Prosody
    /// by default does not).
    ArchiveProgress {
        received: u32,
        total: Option<u32>,
    },
    /// A page of older history ([`crate::Session::history_before`]) ended; `complete`:
    /// the archive holds nothing older.
    HistoryPage {
        with: BareJid,
        complete: bool,
    },
    HistoryFailed {
        with: BareJid,
        condition: String,
    },
    /// New items of a node a contact (or we) published to, pushed because we asked for
    /// them with `+notify` (XEP-0163).
    PepItems {
        from: BareJid,
        node: String,
        items: Vec<crate::PepItem>,
    },
    /// XEP-0085: the peer is typing, stopped, left… (live messages only).
    ChatState {
        from: BareJid,
        state: crate::rich::ChatState,
    },
    /// XEP-0333: the message `id` of the conversation with `peer`, and all before it, were
    /// displayed: by the peer, or (`outgoing`) by another device of ours.
    Displayed {
        peer: BareJid,
        id: String,
        outgoing: bool,
    },
    /// A message in a room we are in (or are joining), live or from the room's archive.
    RoomMessage(Box<crate::muc::RoomMessage>),
    /// A private message through a room we are in or joining (XEP-0045 §7.5), between us
    /// and the occupant `nick`: theirs, or ours sent from another device (a "sent" carbon,
    /// `message.outgoing`), live or from our own archive. `message.peer` is the room and
    /// `message.from_full` the sender's JID (their occupant JID, or ours); it has a body or
    /// OMEMO elements. Receipts, chat states and markers through a room are not taken.
    PrivateMessage {
        nick: String,
        message: Box<ChatMessage>,
    },
    /// An occupant's presence in a room we are in (or are joining), ours included.
    RoomPresence(Box<crate::muc::OccupantPresence>),
    /// The room refused our join or nickname change.
    RoomJoinFailed(crate::muc::JoinFailure),
    /// Someone invites us to a room (XEP-0249, or XEP-0045 mediated).
    Invitation(crate::muc::Invitation),
    /// Our bookmarks changed (XEP-0402), on another device of ours or here.
    Bookmarks(Vec<crate::muc::BookmarkChange>),
    /// A query of a room's archive ([`crate::Session::room_history`]) ended; its messages
    /// came before this as `RoomMessage` events. `last`: the archive id of the newest
    /// message of the page; `complete`: the query reached the end it was going to.
    RoomHistoryPage {
        room: BareJid,
        query: crate::muc::RoomQuery,
        complete: bool,
        last: Option<String>,
    },
    RoomHistoryFailed {
        room: BareJid,
        query: crate::muc::RoomQuery,
        condition: String,
    },
    /// Our blocklist changed (XEP-0191), on another device of ours or here.
    Blocklist(crate::profile::BlockingPush),
    /// The server sent an element past [`crate::InboundLimits`]: it was dropped unread (a
    /// stanza among them still counts as received), the session goes on. Something may be
    /// missing, e.g. a message too large to show.
    Dropped {
        reason: crate::DropReason,
    },
    /// A XEP-0353 call message from a contact's device, or one of ours (carbon).
    Call(Box<crate::jingle::CallSignal>),
    /// A Jingle IQ set (XEP-0166), well-formed; the client must answer it.
    Jingle(Box<crate::jingle::JingleRequest>),
    /// The session ended; reason given.
    Closed(crate::ConnectError),
}

/// What the driver must do with an inbound stanza.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub reply: Option<Element>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Earliest believable timestamp (2000-01-01); a stamp before it, or more than a minute in
/// the future, is replaced by "now" (Pidgin CVE-2013-6477 crashed on far-future stamps).
const MIN_PLAUSIBLE_MS: i64 = 946_684_800_000;

pub(crate) fn parse_stamp(stamp: &str) -> Option<i64> {
    let dt: xmpp_parsers::date::DateTime = stamp.parse().ok()?;
    let ms = dt.0.timestamp_millis();
    let now = now_ms();
    if ms < MIN_PLAUSIBLE_MS || ms > now + 60_000 {
        return Some(now);
    }
    Some(ms)
}

pub struct Context<'a> {
    pub own: &'a BareJid,
    pub own_full: &'a str,
    /// The rooms we are in or joining: only their groupchat messages, occupant presences
    /// and private messages are taken, since nothing else proves a sender is a room.
    pub rooms: &'a std::collections::HashSet<BareJid>,
}

impl Context<'_> {
    /// RFC 6120 §8.1.2.1: a stanza without `from` comes from our own account.
    fn sender_bare(&self, el: &Element) -> Option<String> {
        match el.attr("from") {
            None => Some(self.own.as_str().to_owned()),
            Some(f) => split_bare(f),
        }
    }

    fn is_from_own_account(&self, el: &Element) -> bool {
        match el.attr("from") {
            None => true,
            Some(f) => split_bare(f).as_deref() == Some(self.own.as_str()) && !f.contains('/'),
        }
    }
}

pub fn classify(el: &Element, cx: &Context<'_>) -> Outcome {
    if el.ns() != ns::JABBER_CLIENT {
        return Outcome::default();
    }
    match el.name() {
        "message" => Outcome {
            events: classify_message(el, cx),
            reply: None,
        },
        "presence" => Outcome {
            events: classify_presence(el, cx),
            reply: None,
        },
        "iq" => classify_iq(el, cx),
        _ => Outcome::default(),
    }
}

/// The defined condition and text of a stanza's `<error/>` (RFC 6120 §8.3);
/// "undefined-condition" when it has none we recognise.
pub(crate) fn stanza_error(stanza: &Element) -> (String, Option<String>) {
    let err = stanza.get_child("error", ns::JABBER_CLIENT);
    let condition = err
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
        })
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into());
    let text = err
        .and_then(|e| e.get_child("text", ns::XMPP_STANZAS))
        .map(|t| t.text());
    (condition, text)
}

fn classify_message(el: &Element, cx: &Context<'_>) -> Vec<Event> {
    let type_ = el.attr("type").unwrap_or("normal");
    if type_ == "error" {
        let (mut condition, _) = stanza_error(el);
        if crate::profile::is_blocked_error(el) {
            // XEP-0191: our own server refused it, because we block the addressee.
            condition = "blocked".into();
        }
        return el
            .attr("id")
            .map(|id| {
                vec![Event::MessageError {
                    id: id.to_owned(),
                    condition,
                }]
            })
            .unwrap_or_default();
    }
    if let Some(event) = el.get_child("event", NS_PUBSUB_EVENT) {
        let bookmarks = event
            .get_child("items", NS_PUBSUB_EVENT)
            .is_some_and(|i| i.attr("node") == Some(crate::muc::NS_BOOKMARKS));
        if bookmarks {
            // Retractions matter here (a bookmark deleted elsewhere), which generic PEP
            // events leave out.
            let changes = crate::muc::parse_bookmarks_event(el, cx.own);
            return if changes.is_empty() {
                Vec::new()
            } else {
                vec![Event::Bookmarks(changes)]
            };
        }
        return pep_event(el, event, cx);
    }
    if type_ == "groupchat" {
        return match crate::muc::parse_groupchat(el) {
            Some(m) if cx.rooms.contains(&m.room) => vec![Event::RoomMessage(Box::new(
                crate::muc::RoomMessage::live(el, m),
            ))],
            Some(_) => {
                tracing::debug!("dropping a groupchat message from a room we are not in");
                Vec::new()
            }
            None => Vec::new(),
        };
    }
    if let Some(m) = crate::muc::parse_affiliation_notice(el) {
        return if cx.rooms.contains(&m.room) {
            vec![Event::RoomMessage(Box::new(crate::muc::RoomMessage::live(
                el, m,
            )))]
        } else {
            Vec::new()
        };
    }
    if let Some(invitation) = crate::muc::parse_invitation(el) {
        return vec![Event::Invitation(invitation)];
    }
    // Carbons: only our own server may send them, on behalf of our bare JID
    // (XEP-0280 §Security; CVE-2017-5589 and friends).
    for (kind, outgoing) in [("received", false), ("sent", true)] {
        if let Some(wrapper) = el.get_child(kind, NS_CARBONS) {
            if !cx.is_from_own_account(el) || el.attr("from").is_none() {
                tracing::warn!("dropping carbon not sent by our own account");
                return Vec::new();
            }
            let Some(inner) = wrapper
                .get_child("forwarded", NS_FORWARD)
                .and_then(|f| f.get_child("message", ns::JABBER_CLIENT))
            else {
                return Vec::new();
            };
            return direct_message(inner, cx, true, outgoing);
        }
    }
    direct_message(el, cx, false, false)
}

/// A PEP notification. It comes from the publisher's bare JID (the server sends it for
/// the account): one from a full JID is some client's own message dressed up as one.
fn pep_event(el: &Element, event: &Element, cx: &Context<'_>) -> Vec<Event> {
    let from = match el.attr("from") {
        None => cx.own.clone(),
        Some(f) => match BareJid::parse(f) {
            Ok(b) if !f.contains('/') => b,
            _ => {
                tracing::warn!("dropping a PEP event not from a bare JID");
                return Vec::new();
            }
        },
    };
    let Some(items) = event.get_child("items", NS_PUBSUB_EVENT) else {
        return Vec::new();
    };
    let Some(node) = items.attr("node").filter(|n| !n.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items.children().filter(|c| c.is("item", NS_PUBSUB_EVENT)) {
        if out.len() == crate::pep::MAX_ITEMS {
            tracing::warn!("dropping a PEP event with too many items");
            return Vec::new();
        }
        if let Some(payload) = item.children().next() {
            out.push(crate::PepItem {
                id: item.attr("id").map(str::to_owned),
                payload: String::from(payload),
            });
        }
    }
    if out.is_empty() {
        return Vec::new();
    }
    vec![Event::PepItems {
        from,
        node: node.to_owned(),
        items: out,
    }]
}

fn direct_message(el: &Element, cx: &Context<'_>, carbon: bool, outgoing: bool) -> Vec<Event> {
    let type_ = el.attr("type").unwrap_or("normal");
    if type_ != "chat" && type_ != "normal" {
        return Vec::new();
    }
    let from_bare = match cx.sender_bare(el) {
        Some(f) => f,
        None => return Vec::new(),
    };
    if outgoing && from_bare != cx.own.as_str() {
        // A "sent" carbon whose inner sender is not us would let a peer put words in our mouth.
        return Vec::new();
    }
    let peer_str = if outgoing {
        match el.attr("to").and_then(split_bare) {
            Some(p) => p,
            None => return Vec::new(),
        }
    } else {
        from_bare
    };
    let Ok(peer) = BareJid::parse(&peer_str) else {
        return Vec::new();
    };
    // The other party as addressed: an occupant JID when this goes through a room.
    let other = if outgoing {
        el.attr("to")
    } else {
        el.attr("from")
    };
    if cx.rooms.contains(&peer) {
        // Its sender is an occupant, not the room's JID: it belongs with the room, never in
        // a conversation with the room's JID as if the room were a contact.
        return private_message(el, cx, carbon, outgoing, peer, other)
            .into_iter()
            .collect();
    }
    if crate::muc::marked_private(el) && other.is_some_and(|o| o.contains('/')) {
        // XEP-0280 §6: we cannot answer through a room we are not in, and nothing shows
        // that the sender is one.
        tracing::debug!("dropping a private message through a room we are not in");
        return Vec::new();
    }
    if let Some(jmi) = crate::jingle::parse_jmi(el) {
        let Some((sid, action)) = jmi else {
            tracing::debug!("dropping a malformed call message");
            return Vec::new();
        };
        let delayed_ms = el
            .get_child("delay", NS_DELAY)
            .and_then(|d| d.attr("stamp"))
            .and_then(parse_stamp);
        return vec![Event::Call(Box::new(crate::jingle::CallSignal {
            sid,
            action,
            peer,
            from_full: el.attr("from").map(str::to_owned),
            outgoing,
            delayed_ms,
        }))];
    }

    let mut events = Vec::new();
    if let Some(r) = el.get_child("received", NS_RECEIPTS) {
        if let (Some(id), false) = (r.attr("id"), outgoing) {
            events.push(Event::Receipt {
                from: peer.clone(),
                id: id.to_owned(),
            });
        }
    }
    let rich = Box::new(crate::rich::parse(el));
    if let Some(state) = rich.chat_state {
        if !outgoing {
            events.push(Event::ChatState {
                from: peer.clone(),
                state,
            });
        }
    }
    if let Some(id) = &rich.displayed {
        events.push(Event::Displayed {
            peer: peer.clone(),
            id: id.clone(),
            outgoing,
        });
    }
    // Reactions and retractions need no body.
    let change = rich.reactions.is_some() || rich.retract.is_some();
    if let Some(m) = chat_message(el, cx, peer, carbon, outgoing, rich, change) {
        events.push(Event::Message(m));
    }
    events
}

/// A private message through `room` (XEP-0045 §7.5), or a copy of one: `other` must be an
/// occupant JID of that room, whose nickname names the other party. Only what has a body
/// (or OMEMO elements) is taken: the rest (receipts, chat states, markers, reactions) would
/// concern the room's conversation and come from a single occupant.
fn private_message(
    el: &Element,
    cx: &Context<'_>,
    carbon: bool,
    outgoing: bool,
    room: BareJid,
    other: Option<&str>,
) -> Option<Event> {
    let Some((occupant_room, nick)) = other.and_then(crate::muc::split_occupant) else {
        tracing::debug!("dropping a message through a room that names no occupant");
        return None;
    };
    if occupant_room != room {
        return None;
    }
    let rich = Box::new(crate::rich::parse(el));
    let message = chat_message(el, cx, room, carbon, outgoing, rich, false)?;
    Some(Event::PrivateMessage {
        nick,
        message: Box::new(message),
    })
}

/// The message a chat or normal stanza carries, from or (`outgoing`) to `peer`; `None`
/// when there is nothing to show: no body, no OMEMO elements, and not a `change` (a
/// reaction or retraction) that needs none.
fn chat_message(
    el: &Element,
    cx: &Context<'_>,
    peer: BareJid,
    carbon: bool,
    outgoing: bool,
    rich: Box<crate::rich::Rich>,
    change: bool,
) -> Option<ChatMessage> {
    let encrypted = omemo_elements(el);
    let body = el
        .children()
        .find(|c| c.is("body", ns::JABBER_CLIENT))
        .map(|b| b.text());
    // An OMEMO message without a body is still one: a key transport or heartbeat moves the
    // ratchet, and a message may carry its fallback text nowhere.
    let body = match body {
        Some(b) if !b.trim().is_empty() => b,
        _ if !encrypted.is_empty() || change => String::new(),
        _ => return None,
    };
    let origin_id = el
        .get_child("origin-id", NS_SID)
        .and_then(|o| o.attr("id"))
        .map(str::to_owned);
    let (stanza_id, stanza_id_by) = el
        .children()
        .filter(|c| c.is("stanza-id", NS_SID))
        // XEP-0359: only an id stamped by our own archive is trustworthy.
        .find(|c| c.attr("by") == Some(cx.own.as_str()))
        .map(|c| {
            (
                c.attr("id").map(str::to_owned),
                c.attr("by").map(str::to_owned),
            )
        })
        .unwrap_or((None, None));
    let timestamp_ms = el
        .get_child("delay", NS_DELAY)
        .and_then(|d| d.attr("stamp"))
        .and_then(parse_stamp);
    Some(ChatMessage {
        peer,
        outgoing,
        carbon,
        from_full: el.attr("from").unwrap_or(cx.own.as_str()).to_owned(),
        body,
        id: el.attr("id").map(str::to_owned),
        origin_id,
        stanza_id,
        stanza_id_by,
        timestamp_ms,
        wants_receipt: el.has_child("request", NS_RECEIPTS) && el.attr("id").is_some(),
        archived: false,
        scrollback: false,
        encrypted,
        rich,
    })
}

/// The `<encrypted>` children of a message, one per OMEMO version: a second element of the
/// same version makes that version's result an error, since a sender cannot mean both.
pub(crate) fn omemo_elements(
    el: &Element,
) -> Vec<Result<crate::omemo::Encrypted, crate::omemo::OmemoXmlError>> {
    use crate::omemo::{OmemoVersion, OmemoXmlError};
    let mut out: Vec<(OmemoVersion, Result<_, _>)> = Vec::new();
    for child in el.children().filter(|c| c.name() == "encrypted") {
        let Some(version) = OmemoVersion::from_namespace(&child.ns()) else {
            continue;
        };
        let parsed = crate::omemo::parse_encrypted(child);
        match out.iter_mut().find(|(v, _)| *v == version) {
            Some((_, slot)) => {
                *slot = Err(OmemoXmlError::DuplicateChild {
                    parent: "message",
                    child: "encrypted",
                })
            }
            None => out.push((version, parsed)),
        }
    }
    out.into_iter().map(|(_, r)| r).collect()
}

/// The `queryid` of a XEP-0313 result message, if `el` is one (checked or not).
pub(crate) fn archive_result_query_id(el: &Element) -> Option<&str> {
    if !el.is("message", ns::JABBER_CLIENT) {
        return None;
    }
    let result = el.get_child("result", NS_MAM)?;
    Some(result.attr("queryid").unwrap_or_default())
}

/// A message of our own archive (XEP-0313 §4.2), already matched to a query of ours. Only
/// our own account may send results of our archive; the archived stanza must be one we sent
/// or one addressed to us. The archive id is the stanza-id our archive assigned.
pub(crate) fn archived_message(el: &Element, cx: &Context<'_>) -> Vec<Event> {
    if !cx.is_from_own_account(el) {
        tracing::warn!("dropping archive result not sent by our own account");
        return Vec::new();
    }
    let Some(result) = el.get_child("result", NS_MAM) else {
        return Vec::new();
    };
    let Some(archive_id) = result.attr("id").filter(|i| !i.is_empty()) else {
        return Vec::new();
    };
    let Some(forwarded) = result.get_child("forwarded", NS_FORWARD) else {
        return Vec::new();
    };
    let Some(inner) = forwarded.get_child("message", ns::JABBER_CLIENT) else {
        return Vec::new();
    };
    let from_bare = inner.attr("from").and_then(split_bare);
    let to_bare = inner.attr("to").and_then(split_bare);
    let own = Some(cx.own.as_str().to_owned());
    let outgoing = if from_bare == own {
        true
    } else if to_bare == own && from_bare.is_some() {
        false
    } else {
        return Vec::new();
    };
    let mut events = direct_message(inner, cx, false, outgoing);
    // What someone was typing long ago is of no interest.
    events.retain(|e| !matches!(e, Event::ChatState { .. }));
    let stamp = forwarded
        .get_child("delay", NS_DELAY)
        .and_then(|d| d.attr("stamp"))
        .and_then(parse_stamp);
    for ev in &mut events {
        let m = match ev {
            Event::Message(m) => m,
            Event::PrivateMessage { message, .. } => message.as_mut(),
            Event::Call(sig) => {
                // XEP-0353 §Business rules: a proposal found in the archive still rings
                // if it is recent and nothing after it ended it. Its age is the archive's
                // stamp; without one it counts as old (epoch), so it never rings.
                sig.delayed_ms = sig.delayed_ms.or(stamp).or(Some(0));
                continue;
            }
            _ => continue,
        };
        m.archived = true;
        m.stanza_id = Some(archive_id.to_owned());
        m.stanza_id_by = Some(cx.own.as_str().to_owned());
        m.timestamp_ms = m.timestamp_ms.or(stamp);
        // A receipt request in the archive is answered only once the message is new to
        // us; the caller decides, as for live messages.
    }
    events
}

/// The archive id and archive time of a result of our own archive.
pub(crate) fn archive_result_meta(el: &Element, cx: &Context<'_>) -> Option<(String, Option<i64>)> {
    if !cx.is_from_own_account(el) {
        tracing::warn!("dropping archive result not sent by our own account");
        return None;
    }
    let result = el.get_child("result", NS_MAM)?;
    let id = result
        .attr("id")
        .filter(|i| !i.is_empty() && i.len() <= crate::rich::MAX_ID_BYTES)?;
    let stamp = result
        .get_child("forwarded", NS_FORWARD)
        .and_then(|f| f.get_child("delay", NS_DELAY))
        .and_then(|d| d.attr("stamp"))
        .and_then(parse_stamp);
    Some((id.to_owned(), stamp))
}

/// RSM `<count>` of a XEP-0313 `<fin/>`, when the server counted.
pub(crate) fn archive_fin_count(iq: &Element) -> Option<u32> {
    iq.get_child("fin", NS_MAM)?
        .get_child("set", NS_RSM)?
        .get_child("count", NS_RSM)?
        .text()
        .trim()
        .parse()
        .ok()
}

/// `<fin/>` of a XEP-0313 query: (complete, last archive id of the page).
pub(crate) fn archive_fin(iq: &Element) -> (bool, Option<String>) {
    let Some(fin) = iq.get_child("fin", NS_MAM) else {
        return (true, None);
    };
    let complete = matches!(fin.attr("complete"), Some("true") | Some("1"));
    let last = fin
        .get_child("set", NS_RSM)
        .and_then(|s| s.get_child("last", NS_RSM))
        .map(|l| l.text())
        .filter(|l| !l.is_empty());
    (complete, last)
}

fn classify_presence(el: &Element, cx: &Context<'_>) -> Vec<Event> {
    let Some(from_attr) = el.attr("from") else {
        return Vec::new();
    };
    let Some(from_bare) = split_bare(from_attr) else {
        return Vec::new();
    };
    let Ok(from) = BareJid::parse(&from_bare) else {
        return Vec::new();
    };
    if cx.rooms.contains(&from) {
        if let Some(failure) = crate::muc::parse_join_error(el) {
            return vec![Event::RoomJoinFailed(failure)];
        }
        return crate::muc::parse_occupant_presence(el)
            .map(|p| vec![Event::RoomPresence(Box::new(p))])
            .unwrap_or_default();
    }
    match el.attr("type") {
        Some("subscribe") if from != *cx.own => vec![Event::SubscriptionRequest {
            from,
            nick: crate::profile::stanza_nick(el),
        }],
        Some("subscribed") => vec![Event::Subscribed { from }],
        Some("unsubscribed") => vec![Event::Unsubscribed { from }],
        None => vec![Event::Presence {
            from_full: from_attr.to_owned(),
            available: true,
            photo: crate::profile::parse_photo_update(el),
        }],
        Some("unavailable") => vec![Event::Presence {
            from_full: from_attr.to_owned(),
            available: false,
            photo: None,
        }],
        _ => Vec::new(),
    }
}

pub(crate) fn iq_error_reply(
    st: &Element,
    condition: &'static str,
    type_: &'static str,
) -> Element {
    el("iq", ns::JABBER_CLIENT)
        .attr("type", "error")
        .attr("id", st.attr("id").unwrap_or(""))
        .attr_opt("to", st.attr("from"))
        .child(
            el("error", ns::JABBER_CLIENT)
                .attr("type", type_)
                .child(el(condition, ns::XMPP_STANZAS)),
        )
        .build()
}

fn iq_result(st: &Element) -> crate::elem::El {
    el("iq", ns::JABBER_CLIENT)
        .attr("type", "result")
        .attr("id", st.attr("id").unwrap_or(""))
        .attr_opt("to", st.attr("from"))
}

fn classify_iq(st: &Element, cx: &Context<'_>) -> Outcome {
    let type_ = st.attr("type").unwrap_or("");
    if type_ != "get" && type_ != "set" {
        // Responses are matched by the driver; anything left over is unsolicited.
        return Outcome::default();
    }
    if st.attr("id").is_none() {
        return Outcome::default();
    }
    if let Some(push) = crate::profile::blocking_push(st, cx.own) {
        return Outcome {
            events: push.push.ok().map(Event::Blocklist).into_iter().collect(),
            reply: Some(push.reply),
        };
    }
    let Some(payload) = st.children().next() else {
        return Outcome {
            events: Vec::new(),
            reply: Some(iq_error_reply(st, "bad-request", "modify")),
        };
    };
    match (type_, payload.name(), payload.ns().as_str()) {
        ("set", "query", ns::ROSTER) => {
            // RFC 6121 §2.1.6: a roster push not from our own account MUST be ignored.
            if !cx.is_from_own_account(st) {
                tracing::warn!("ignoring roster push from a foreign entity");
                return Outcome {
                    events: Vec::new(),
                    reply: Some(iq_error_reply(st, "service-unavailable", "cancel")),
                };
            }
            let items = parse_roster_items(payload);
            if items.len() != 1 {
                return Outcome {
                    events: Vec::new(),
                    reply: Some(iq_error_reply(st, "bad-request", "modify")),
                };
            }
            Outcome {
                events: items.into_iter().map(Event::RosterPush).collect(),
                reply: Some(iq_result(st).build()),
            }
        }
        ("set", "jingle", crate::jingle::NS_JINGLE) => {
            match crate::jingle::parse_jingle_iq(st, payload) {
                Ok(req) => Outcome {
                    events: vec![Event::Jingle(Box::new(req))],
                    reply: None,
                },
                Err(reply) => Outcome {
                    events: Vec::new(),
                    reply: Some(reply),
                },
            }
        }
        ("get", "ping", NS_PING) => Outcome {
            events: Vec::new(),
            reply: Some(iq_result(st).build()),
        },
        ("get", "query", NS_DISCO_INFO) => {
            let (category, type_, name) = IDENTITY;
            let mut q = el("query", NS_DISCO_INFO).child(
                el("identity", NS_DISCO_INFO)
                    .attr("category", category)
                    .attr("type", type_)
                    .attr("name", name),
            );
            for f in all_features() {
                q = q.child(el("feature", NS_DISCO_INFO).attr("var", f));
            }
            if let Some(node) = payload.attr("node") {
                q = q.attr("node", node);
            }
            Outcome {
                events: Vec::new(),
                reply: Some(iq_result(st).child(q).build()),
            }
        }
        _ => Outcome {
            events: Vec::new(),
            reply: Some(iq_error_reply(st, "service-unavailable", "cancel")),
        },
    }
}

pub(crate) fn parse_roster_items(query: &Element) -> Vec<RosterItem> {
    query
        .children()
        .filter(|c| c.is("item", ns::ROSTER))
        .filter_map(|item| {
            let jid = BareJid::parse(item.attr("jid")?).ok()?;
            let subscription = match item.attr("subscription").unwrap_or("none") {
                "to" => Subscription::To,
                "from" => Subscription::From,
                "both" => Subscription::Both,
                "remove" => Subscription::Remove,
                _ => Subscription::None,
            };
            Some(RosterItem {
                jid,
                name: item
                    .attr("name")
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
                subscription,
                ask: item.attr("ask") == Some("subscribe"),
                groups: item
                    .children()
                    .filter(|g| g.is("group", ns::ROSTER))
                    .map(|g| g.text())
                    .collect(),
            })
        })
        .collect()
}

#[allow(dead_code)]
pub(crate) fn text_of(el: &Element, name: &str, ns_: &str) -> Option<String> {
    el.child_text(name, ns_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("test XML")
    }

    fn only_message(events: Vec<Event>) -> ChatMessage {
        // Our own messages carry the "active" chat state, which is not the point here.
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| !matches!(e, Event::ChatState { .. }))
            .collect();
        match <[Event; 1]>::try_from(events) {
            Ok([Event::Message(m)]) => m,
            other => panic!("expected one message, got {other:?}"),
        }
    }

    static NO_ROOMS: std::sync::LazyLock<std::collections::HashSet<BareJid>> =
        std::sync::LazyLock::new(Default::default);

    fn cx<'a>(own: &'a BareJid) -> Context<'a> {
        Context {
            own,
            own_full: "me@example.org/phone",
            rooms: &NO_ROOMS,
        }
    }

    #[test]
    fn caps_hash_matches_the_xep_0115_example() {
        // XEP-0115 §5.2, the simple example.
        let ver = caps_hash(
            ("client", "pc", "Exodus 0.9.1"),
            &[
                "http://jabber.org/protocol/muc",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#items",
            ],
        );
        assert_eq!(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    const DEVICE_EVENT: &str = "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:omemo:2:devices'><item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='7'/></devices></item></items></event>";

    #[test]
    fn pep_event_from_a_bare_jid() {
        let own = BareJid::parse("me@example.org").unwrap();
        let xml = format!("<message xmlns='jabber:client' from='Bob@example.org' to='me@example.org/phone' type='headline'>{DEVICE_EVENT}</message>");
        let out = classify(&parse(&xml), &cx(&own));
        let [Event::PepItems { from, node, items }] = out.events.as_slice() else {
            panic!("{:?}", out.events)
        };
        assert_eq!(from.as_str(), "bob@example.org");
        assert_eq!(node, "urn:xmpp:omemo:2:devices");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id.as_deref(), Some("current"));
        assert!(items[0].payload.contains("urn:xmpp:omemo:2"));
        // Our own PEP service sends ours without a from.
        let xml = format!(
            "<message xmlns='jabber:client' to='me@example.org/phone'>{DEVICE_EVENT}</message>"
        );
        let out = classify(&parse(&xml), &cx(&own));
        assert!(matches!(out.events.as_slice(), [Event::PepItems { from, .. }] if from == &own));
    }

    #[test]
    fn pep_event_from_a_full_jid_is_dropped() {
        let own = BareJid::parse("me@example.org").unwrap();
        let xml = format!("<message xmlns='jabber:client' from='bob@example.org/evil' to='me@example.org/phone' type='headline'>{DEVICE_EVENT}</message>");
        assert!(classify(&parse(&xml), &cx(&own)).events.is_empty());
    }

    #[test]
    fn pep_event_flood_is_dropped() {
        let own = BareJid::parse("me@example.org").unwrap();
        let items: String = (0..=crate::pep::MAX_ITEMS)
            .map(|i| format!("<item id='{i}'><x xmlns='urn:example'/></item>"))
            .collect();
        let xml = format!("<message xmlns='jabber:client' from='bob@example.org'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'>{items}</items></event></message>");
        assert!(classify(&parse(&xml), &cx(&own)).events.is_empty());
    }

    #[test]
    fn plain_chat_message() {
        let own = BareJid::parse("me@example.org").unwrap();
        let out = classify(&parse("<message xmlns='jabber:client' from='Bob@example.org/pc' to='me@example.org/phone' type='chat' id='m1'><body>hi</body><request xmlns='urn:xmpp:receipts'/><origin-id xmlns='urn:xmpp:sid:0' id='o1'/><stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='me@example.org'/><stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='evil.org'/></message>"), &cx(&own));
        let [Event::Message(m)] = out.events.as_slice() else {
            panic!("{:?}", out.events)
        };
        assert_eq!(m.peer.as_str(), "bob@example.org");
        assert!(!m.outgoing && !m.carbon && m.wants_receipt);
        assert_eq!(m.origin_id.as_deref(), Some("o1"));
        assert_eq!(m.stanza_id.as_deref(), Some("s1"));
        assert_eq!(m.body, "hi");
    }

    fn omemo2_encrypted(sid: u32, rid: u32) -> crate::omemo::Encrypted {
        crate::omemo::Encrypted {
            version: crate::omemo::OmemoVersion::V2,
            sid,
            keys: vec![crate::omemo::KeyEntry {
                jid: Some(BareJid::parse("me@example.org").unwrap()),
                rid,
                kex: true,
                data: vec![1, 2, 3],
            }],
            iv: None,
            payload: Some(vec![9; 20]),
        }
    }

    #[test]
    fn omemo_messages_built_here_classify_with_their_elements() {
        let own = BareJid::parse("me@example.org").unwrap();
        let enc = omemo2_encrypted(5, 7);
        let built = crate::omemo::chat_stanza(
            &own,
            "m1",
            std::slice::from_ref(&enc),
            Some("fallback"),
            &Default::default(),
        )
        .unwrap();
        let mut xml = String::from(&built).replace("to='me@example.org'", "");
        xml = xml.replacen("<message ", "<message from='bob@example.org/pc' ", 1);
        let m = only_message(classify(&parse(&xml), &cx(&own)).events);
        assert_eq!(m.encrypted, vec![Ok(enc.clone())]);
        assert!(m.wants_receipt);
        assert_eq!(m.origin_id.as_deref(), Some("m1"));
        // An empty message (heartbeat) has no body and still arrives.
        let built = crate::omemo::chat_stanza(
            &own,
            "m2",
            std::slice::from_ref(&enc),
            None,
            &Default::default(),
        )
        .unwrap();
        let xml =
            String::from(&built).replacen("<message ", "<message from='bob@example.org/pc' ", 1);
        let m = only_message(classify(&parse(&xml), &cx(&own)).events);
        assert_eq!(m.body, "");
        assert!(!m.wants_receipt);
        assert_eq!(m.encrypted, vec![Ok(enc)]);
    }

    #[test]
    fn malformed_and_doubled_omemo_elements_are_reported_not_dropped() {
        let own = BareJid::parse("me@example.org").unwrap();
        // A bad sid: the message still arrives, with the reason.
        let xml = "<message xmlns='jabber:client' from='bob@example.org/pc' type='chat' id='x'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='0'><keys jid='me@example.org'><key rid='7'>AQID</key></keys></header></encrypted><body>fallback</body></message>";
        let m = only_message(classify(&parse(xml), &cx(&own)).events);
        assert!(
            matches!(m.encrypted.as_slice(), [Err(_)]),
            "{:?}",
            m.encrypted
        );
        // Two elements of one version: neither is believed.
        let one = String::from(
            &crate::omemo::chat_stanza(
                &own,
                "y",
                &[omemo2_encrypted(5, 7)],
                None,
                &Default::default(),
            )
            .unwrap(),
        );
        let inner = &one[one.find("<encrypted").unwrap()..one.find("</encrypted>").unwrap() + 12];
        let xml = format!("<message xmlns='jabber:client' from='bob@example.org/pc' type='chat' id='y'>{inner}{inner}</message>");
        let m = only_message(classify(&parse(&xml), &cx(&own)).events);
        assert!(matches!(
            m.encrypted.as_slice(),
            [Err(crate::omemo::OmemoXmlError::DuplicateChild { .. })]
        ));
        // Without OMEMO and without body: no message.
        let xml = "<message xmlns='jabber:client' from='bob@example.org/pc' type='chat' id='z'/>";
        assert!(classify(&parse(xml), &cx(&own)).events.is_empty());
    }

    fn archive_result(outer_from: Option<&str>, inner: &str) -> Element {
        let from = outer_from
            .map(|f| format!(" from='{f}'"))
            .unwrap_or_default();
        parse(&format!("<message xmlns='jabber:client'{from} to='me@example.org/phone'><result xmlns='urn:xmpp:mam:2' queryid='q1' id='arch-7'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2024-05-01T10:00:00Z'/>{inner}</forwarded></result></message>"))
    }

    #[test]
    fn archived_call_messages_carry_the_archive_stamp() {
        let own = BareJid::parse("me@example.org").unwrap();
        let el: Element = "<message xmlns='jabber:client'><result xmlns='urn:xmpp:mam:2' id='a1'>\
            <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-01-01T00:00:00Z'/>\
            <message xmlns='jabber:client' type='chat' from='romeo@example.org/orchard' to='me@example.org'>\
            <propose xmlns='urn:xmpp:jingle-message:0' id='s1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>\
            </message></forwarded></result></message>"
            .parse()
            .unwrap();
        let events = archived_message(&el, &cx(&own));
        let [Event::Call(sig)] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(sig.delayed_ms, Some(1_262_304_000_000));
        let undated = String::from(&el).replace(
            "<delay xmlns='urn:xmpp:delay' stamp='2010-01-01T00:00:00Z'/>",
            "",
        );
        let events = archived_message(&undated.parse().unwrap(), &cx(&own));
        let [Event::Call(sig)] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(sig.delayed_ms, Some(0));
    }

    #[test]
    fn archived_messages_in_both_directions() {
        let own = BareJid::parse("me@example.org").unwrap();
        let el = archive_result(None, "<message xmlns='jabber:client' from='bob@example.org/pc' to='me@example.org/tablet' type='chat' id='m1'><body>hi</body></message>");
        assert_eq!(archive_result_query_id(&el), Some("q1"));
        let m = only_message(archived_message(&el, &cx(&own)));
        assert!(m.archived && !m.outgoing && !m.carbon);
        assert_eq!(m.peer.as_str(), "bob@example.org");
        assert_eq!(m.stanza_id.as_deref(), Some("arch-7"));
        assert_eq!(m.stanza_id_by.as_deref(), Some("me@example.org"));
        assert_eq!(m.timestamp_ms, Some(1_714_557_600_000));
        let el = archive_result(Some("me@example.org"), "<message xmlns='jabber:client' from='me@example.org/tablet' to='bob@example.org' type='chat' id='m2'><body>yo</body></message>");
        let m = only_message(archived_message(&el, &cx(&own)));
        assert!(m.outgoing);
        assert_eq!(m.peer.as_str(), "bob@example.org");
    }

    #[test]
    fn foreign_archive_results_are_ignored() {
        let own = BareJid::parse("me@example.org").unwrap();
        let inner = "<message xmlns='jabber:client' from='bob@example.org/pc' to='me@example.org' type='chat'><body>forged history</body></message>";
        // Results of an archive that is not ours.
        for from in ["bob@example.org", "me@example.org/other", "example.org"] {
            let el = archive_result(Some(from), inner);
            assert!(archived_message(&el, &cx(&own)).is_empty(), "{from}");
        }
        // An archived stanza between two others.
        let el = archive_result(None, "<message xmlns='jabber:client' from='bob@example.org/pc' to='carol@example.org' type='chat'><body>not ours</body></message>");
        assert!(archived_message(&el, &cx(&own)).is_empty());
        // Outside a query the result wrapper makes no message at all.
        let el = archive_result(None, inner);
        assert!(classify(&el, &cx(&own)).events.is_empty());
    }

    #[test]
    fn archive_fin_reads_completion_and_cursor() {
        let iq = parse("<iq xmlns='jabber:client' type='result' id='q1'><fin xmlns='urn:xmpp:mam:2' complete='true'><set xmlns='http://jabber.org/protocol/rsm'><first>a</first><last>z</last></set></fin></iq>");
        assert_eq!(archive_fin(&iq), (true, Some("z".into())));
        let iq = parse("<iq xmlns='jabber:client' type='result' id='q1'><fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'/></fin></iq>");
        assert_eq!(archive_fin(&iq), (false, None));
    }

    #[test]
    fn spoofed_carbons_are_ignored() {
        let own = BareJid::parse("me@example.org").unwrap();
        // From a peer instead of our own account.
        for from in ["eve@example.org", "me@example.org/other", "example.org"] {
            let xml = format!("<message xmlns='jabber:client' from='{from}' to='me@example.org/phone'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='me@example.org/pc' to='bob@example.org' type='chat'><body>forged</body></message></forwarded></sent></message>");
            assert!(
                classify(&parse(&xml), &cx(&own)).events.is_empty(),
                "{from}"
            );
        }
        // A genuine wrapper whose inner "sent" message is not from us.
        let xml = "<message xmlns='jabber:client' from='me@example.org' to='me@example.org/phone'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='eve@example.org/x' to='bob@example.org' type='chat'><body>forged</body></message></forwarded></sent></message>";
        assert!(classify(&parse(xml), &cx(&own)).events.is_empty());
    }

    #[test]
    fn genuine_carbons() {
        let own = BareJid::parse("me@example.org").unwrap();
        let sent = "<message xmlns='jabber:client' from='me@example.org' to='me@example.org/phone'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='me@example.org/pc' to='bob@example.org' type='chat' id='x'><body>hello</body></message></forwarded></sent></message>";
        let m = only_message(classify(&parse(sent), &cx(&own)).events);
        assert!(m.outgoing && m.carbon);
        assert_eq!(m.peer.as_str(), "bob@example.org");
        let recv = "<message xmlns='jabber:client' from='me@example.org' to='me@example.org/phone'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='bob@example.org/pc' to='me@example.org/pc' type='chat' id='y'><body>yo</body></message></forwarded></received></message>";
        let m = only_message(classify(&parse(recv), &cx(&own)).events);
        assert!(!m.outgoing && m.carbon);
    }

    #[test]
    fn foreign_roster_push_is_ignored() {
        let own = BareJid::parse("me@example.org").unwrap();
        let xml = "<iq xmlns='jabber:client' type='set' id='p1' from='eve@example.org/x'><query xmlns='jabber:iq:roster'><item jid='eve@example.org' subscription='both'/></query></iq>";
        let out = classify(&parse(xml), &cx(&own));
        assert!(out.events.is_empty());
        assert_eq!(
            out.reply.as_ref().and_then(|r| r.attr("type")),
            Some("error")
        );
        let ok = "<iq xmlns='jabber:client' type='set' id='p2'><query xmlns='jabber:iq:roster'><item jid='bob@example.org' subscription='both' name='Bob'><group>Friends</group></item></query></iq>";
        let out = classify(&parse(ok), &cx(&own));
        assert_eq!(
            out.reply.as_ref().and_then(|r| r.attr("type")),
            Some("result")
        );
        let [Event::RosterPush(item)] = out.events.as_slice() else {
            panic!()
        };
        assert_eq!(item.subscription, Subscription::Both);
        assert_eq!(item.groups, vec!["Friends".to_owned()]);
    }

    #[test]
    fn absurd_timestamps_are_clamped() {
        let own = BareJid::parse("me@example.org").unwrap();
        let xml = "<message xmlns='jabber:client' from='bob@example.org/pc' type='chat'><body>x</body><delay xmlns='urn:xmpp:delay' stamp='9999-12-31T23:59:59Z'/></message>";
        let m = only_message(classify(&parse(xml), &cx(&own)).events);
        assert!(m.timestamp_ms.unwrap() <= now_ms() + 1000);
    }

    #[test]
    fn unknown_iq_gets_error_and_ping_gets_result() {
        let own = BareJid::parse("me@example.org").unwrap();
        let out = classify(&parse("<iq xmlns='jabber:client' type='get' id='1' from='x@y/z'><foo xmlns='urn:foo'/></iq>"), &cx(&own));
        assert_eq!(out.reply.unwrap().attr("type"), Some("error"));
        let out = classify(&parse("<iq xmlns='jabber:client' type='get' id='2' from='example.org'><ping xmlns='urn:xmpp:ping'/></iq>"), &cx(&own));
        assert_eq!(out.reply.unwrap().attr("type"), Some("result"));
    }

    fn in_room<'a>(own: &'a BareJid, rooms: &'a std::collections::HashSet<BareJid>) -> Context<'a> {
        Context {
            own,
            own_full: "me@example.org/phone",
            rooms,
        }
    }

    #[test]
    fn only_rooms_we_are_in_speak_as_rooms() {
        let own = BareJid::parse("me@example.org").unwrap();
        let room = BareJid::parse("r@muc.example.org").unwrap();
        let rooms: std::collections::HashSet<BareJid> = [room.clone()].into();
        let msg = "<message xmlns='jabber:client' from='r@muc.example.org/bob' type='groupchat' id='1'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='r@muc.example.org' id='s1'/></message>";
        match classify(&parse(msg), &in_room(&own, &rooms))
            .events
            .as_slice()
        {
            [Event::RoomMessage(m)] => {
                assert_eq!(m.msg.nick.as_deref(), Some("bob"));
                assert_eq!(m.msg.stanza_id.as_deref(), Some("s1"));
                assert!(!m.archived);
            }
            other => panic!("{other:?}"),
        }
        // The same from a room we are not in, or from anyone's bare JID: nothing.
        assert!(classify(&parse(msg), &cx(&own)).events.is_empty());
        let fake = "<message xmlns='jabber:client' from='mallory@example.org/x' type='groupchat'><body>hi</body></message>";
        assert!(classify(&parse(fake), &in_room(&own, &rooms))
            .events
            .is_empty());
        // A private message through the room is not a message from the room's JID.
        let pm = "<message xmlns='jabber:client' from='r@muc.example.org/bob' type='chat'><body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        assert!(matches!(
            classify(&parse(pm), &in_room(&own, &rooms)).events.as_slice(),
            [Event::PrivateMessage { nick, .. }] if nick == "bob"
        ));
        // Occupant presence from the room; not taken as a contact's presence.
        let pres = "<presence xmlns='jabber:client' from='r@muc.example.org/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant'/></x></presence>";
        match classify(&parse(pres), &in_room(&own, &rooms))
            .events
            .as_slice()
        {
            [Event::RoomPresence(p)] => assert_eq!(p.nick, "bob"),
            other => panic!("{other:?}"),
        }
        let err = "<presence xmlns='jabber:client' from='r@muc.example.org/me' type='error'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>";
        assert!(matches!(
            classify(&parse(err), &in_room(&own, &rooms))
                .events
                .as_slice(),
            [Event::RoomJoinFailed(_)]
        ));
    }

    fn only_private(events: Vec<Event>) -> (String, ChatMessage) {
        match <[Event; 1]>::try_from(events) {
            Ok([Event::PrivateMessage { nick, message }]) => (nick, *message),
            other => panic!("expected one private message, got {other:?}"),
        }
    }

    const ROOM: &str = "r@muc.example.org";

    fn carbon(kind: &str, outer_from: &str, inner: &str) -> Element {
        parse(&format!("<message xmlns='jabber:client' from='{outer_from}' to='me@example.org/phone'><{kind} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{inner}</forwarded></{kind}></message>"))
    }

    #[test]
    fn private_messages_through_rooms_we_are_in() {
        let own = BareJid::parse("me@example.org").unwrap();
        let rooms: std::collections::HashSet<BareJid> = [BareJid::parse(ROOM).unwrap()].into();
        let cx = in_room(&own, &rooms);
        // XEP-0045 §7.5, as the room delivers it, with what Linnet sends beside.
        let live = "<message xmlns='jabber:client' from='r@muc.example.org/bob' to='me@example.org/phone' type='chat' id='m1'><body>psst</body><origin-id xmlns='urn:xmpp:sid:0' id='o1'/><stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='me@example.org'/><stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='r@muc.example.org'/><request xmlns='urn:xmpp:receipts'/><x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        let (nick, m) = only_private(classify(&parse(live), &cx).events);
        assert_eq!(nick, "bob");
        assert_eq!(m.peer.as_str(), ROOM);
        assert_eq!(m.from_full, "r@muc.example.org/bob");
        assert!(!m.outgoing && !m.carbon && !m.archived && m.wants_receipt);
        assert_eq!(m.body, "psst");
        assert_eq!(m.id.as_deref(), Some("m1"));
        assert_eq!(m.origin_id.as_deref(), Some("o1"));
        assert_eq!(
            (m.stanza_id.as_deref(), m.stanza_id_by.as_deref()),
            (Some("s1"), Some("me@example.org")),
            "only our own archive's id"
        );
        // Senders older than XEP-0045 1.28 add no <x/>; a normal message is one too.
        let unmarked = "<message xmlns='jabber:client' from='r@muc.example.org/Bob B' to='me@example.org/phone'><body>psst</body></message>";
        let (nick, m) = only_private(classify(&parse(unmarked), &cx).events);
        assert_eq!((nick.as_str(), m.body.as_str()), ("Bob B", "psst"));
        // Encrypted, without a body: still a message, to be reported unreadable.
        let encrypted = "<message xmlns='jabber:client' from='r@muc.example.org/bob' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='5'><keys jid='me@example.org'><key rid='7' kex='true'>AQID</key></keys></header><payload>CQkJ</payload></encrypted></message>";
        let (_, m) = only_private(classify(&parse(encrypted), &cx).events);
        assert_eq!((m.body.as_str(), m.encrypted.len()), ("", 1));
        // What only names the room's conversation is not taken from one occupant: chat
        // states, receipts, markers, a body-less reaction.
        for payload in [
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
            "<received xmlns='urn:xmpp:receipts' id='x1'/>",
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='x1'/>",
            "<reactions xmlns='urn:xmpp:reactions:0' id='x1'><reaction>👍</reaction></reactions>",
            "<body>  </body>",
        ] {
            let xml = format!("<message xmlns='jabber:client' from='r@muc.example.org/bob' type='chat'>{payload}</message>");
            assert!(classify(&parse(&xml), &cx).events.is_empty(), "{payload}");
        }
        // From the room's own JID, or with a nickname we refuse: no one to answer.
        let long = "n".repeat(crate::muc::MAX_NICK_BYTES + 1);
        for from in [ROOM.to_owned(), format!("{ROOM}/{long}")] {
            let xml = format!("<message xmlns='jabber:client' from='{from}' type='chat'><body>psst</body></message>");
            assert!(classify(&parse(&xml), &cx).events.is_empty(), "{from}");
        }
        // Another device of ours got one (a "received" carbon), or sent one ("sent").
        let inner = "<message xmlns='jabber:client' from='r@muc.example.org/bob' to='me@example.org/pc' type='chat' id='m2'><body>yo</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        let (nick, m) =
            only_private(classify(&carbon("received", "me@example.org", inner), &cx).events);
        assert_eq!(nick, "bob");
        assert!(m.carbon && !m.outgoing);
        assert_eq!(m.peer.as_str(), ROOM);
        let inner = "<message xmlns='jabber:client' from='me@example.org/pc' to='r@muc.example.org/bob' type='chat' id='m3'><body>answer</body><origin-id xmlns='urn:xmpp:sid:0' id='m3'/><x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        let (nick, m) =
            only_private(classify(&carbon("sent", "me@example.org", inner), &cx).events);
        assert_eq!(nick, "bob", "the addressee");
        assert!(m.carbon && m.outgoing);
        assert_eq!(m.peer.as_str(), ROOM);
        assert_eq!(m.origin_id.as_deref(), Some("m3"));
        // From our archive, in both directions.
        let el = archive_result(None, "<message xmlns='jabber:client' from='r@muc.example.org/bob' to='me@example.org/pc' type='chat' id='m4'><body>kept</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>");
        let (nick, m) = only_private(archived_message(&el, &cx));
        assert_eq!(nick, "bob");
        assert!(m.archived && !m.outgoing);
        assert_eq!(m.stanza_id.as_deref(), Some("arch-7"));
        assert_eq!(m.timestamp_ms, Some(1_714_557_600_000));
        let el = archive_result(None, "<message xmlns='jabber:client' from='me@example.org/pc' to='r@muc.example.org/bob' type='chat' id='m5'><body>mine</body></message>");
        let (nick, m) = only_private(archived_message(&el, &cx));
        assert_eq!(nick, "bob");
        assert!(m.archived && m.outgoing);
    }

    #[test]
    fn hostile_private_messages_are_dropped() {
        let own = BareJid::parse("me@example.org").unwrap();
        let rooms: std::collections::HashSet<BareJid> = [BareJid::parse(ROOM).unwrap()].into();
        let cx = in_room(&own, &rooms);
        let marked = "<message xmlns='jabber:client' from='other@muc.example.org/bob' to='me@example.org/phone' type='chat'><body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        // From a room we are not in: nothing shows that the sender is a room, and we could
        // not answer. Live, as a carbon, or from our archive.
        assert!(classify(&parse(marked), &cx).events.is_empty());
        assert!(classify(&parse(marked), &super::tests::cx(&own))
            .events
            .is_empty());
        assert!(classify(&carbon("received", "me@example.org", marked), &cx)
            .events
            .is_empty());
        let sent = "<message xmlns='jabber:client' from='me@example.org/pc' to='other@muc.example.org/bob' type='chat'><body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        assert!(classify(&carbon("sent", "me@example.org", sent), &cx)
            .events
            .is_empty());
        assert!(archived_message(&archive_result(None, marked), &cx).is_empty());
        // A "sent" carbon claiming another sender: an occupant, or anyone.
        for from in [
            "r@muc.example.org/bob",
            "eve@example.org/x",
            "r@muc.example.org",
        ] {
            let inner = format!("<message xmlns='jabber:client' from='{from}' to='r@muc.example.org/carol' type='chat'><body>forged</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>");
            assert!(
                classify(&carbon("sent", "me@example.org", &inner), &cx)
                    .events
                    .is_empty(),
                "{from}"
            );
        }
        // A carbon not from our own account, around a genuine-looking private message.
        let inner = "<message xmlns='jabber:client' from='r@muc.example.org/bob' to='me@example.org/pc' type='chat'><body>forged</body></message>";
        for outer in [
            "r@muc.example.org/bob",
            "r@muc.example.org",
            "me@example.org/pc",
        ] {
            assert!(
                classify(&carbon("received", outer, inner), &cx)
                    .events
                    .is_empty(),
                "{outer}"
            );
        }
        // Unmarked, a message from someone's resource is an ordinary one-to-one message.
        let plain = "<message xmlns='jabber:client' from='other@muc.example.org/bob' type='chat'><body>hi</body></message>";
        assert_eq!(
            only_message(classify(&parse(plain), &cx).events)
                .peer
                .as_str(),
            "other@muc.example.org"
        );
    }

    #[test]
    fn invitations_and_bookmark_retractions_are_events() {
        let own = BareJid::parse("me@example.org").unwrap();
        let inv = "<message xmlns='jabber:client' from='bob@example.org/pc' to='me@example.org'><x xmlns='jabber:x:conference' jid='r@muc.example.org' reason='join us'/><body>join us</body></message>";
        match classify(&parse(inv), &cx(&own)).events.as_slice() {
            [Event::Invitation(i)] => assert_eq!(i.room.as_str(), "r@muc.example.org"),
            other => panic!("{other:?}"),
        }
        let retract = "<message xmlns='jabber:client' from='me@example.org'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:bookmarks:1'><retract id='r@muc.example.org'/></items></event></message>";
        match classify(&parse(retract), &cx(&own)).events.as_slice() {
            [Event::Bookmarks(changes)] => assert!(matches!(
                changes.as_slice(),
                [crate::muc::BookmarkChange::Removed(r)] if r.as_str() == "r@muc.example.org"
            )),
            other => panic!("{other:?}"),
        }
        // Someone else's "bookmarks" are not ours.
        let forged = retract.replace("from='me@example.org'", "from='mallory@example.org'");
        assert!(classify(&parse(&forged), &cx(&own)).events.is_empty());
    }

    #[test]
    fn blocklist_pushes_only_from_our_account() {
        let own = BareJid::parse("me@example.org").unwrap();
        let push = "<iq xmlns='jabber:client' type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='spam@example.net'/></block></iq>";
        let out = classify(&parse(push), &cx(&own));
        assert!(matches!(
            out.events.as_slice(),
            [Event::Blocklist(crate::profile::BlockingPush::Blocked(j))] if j == &["spam@example.net".to_owned()]
        ));
        assert_eq!(out.reply.unwrap().attr("type"), Some("result"));
        // From anyone else: an error, and nothing changes (else a spammer could unblock itself).
        let forged = push.replace("id='b1'", "id='b2' from='spam@example.net/x'");
        let out = classify(&parse(&forged), &cx(&own));
        assert!(out.events.is_empty());
        assert_eq!(out.reply.unwrap().attr("type"), Some("error"));
    }

    #[test]
    fn subscription_requests_carry_the_nickname_they_claim() {
        let own = BareJid::parse("me@example.org").unwrap();
        let request = |xml: &str| match classify(&parse(xml), &cx(&own)).events.as_slice() {
            [Event::SubscriptionRequest { from, nick }] => (from.as_str().to_owned(), nick.clone()),
            other => panic!("{other:?}"),
        };
        // Cleaned as any nickname: whitespace folded, ends trimmed.
        let with = "<presence xmlns='jabber:client' from='Juliet@capulet.lit/balcony' to='me@example.org' type='subscribe'><nick xmlns='http://jabber.org/protocol/nick'> Juliet\n\t Capulet </nick></presence>";
        assert_eq!(
            request(with),
            (
                "juliet@capulet.lit".to_owned(),
                Some("Juliet Capulet".to_owned())
            )
        );
        let without =
            "<presence xmlns='jabber:client' from='romeo@montague.lit' type='subscribe'/>";
        assert_eq!(request(without), ("romeo@montague.lit".to_owned(), None));
        // An empty one, or one in another namespace, is no nickname.
        let empty = "<presence xmlns='jabber:client' from='romeo@montague.lit' type='subscribe'><nick xmlns='http://jabber.org/protocol/nick'>  </nick></presence>";
        assert_eq!(request(empty), ("romeo@montague.lit".to_owned(), None));
        let foreign = "<presence xmlns='jabber:client' from='romeo@montague.lit' type='subscribe'><nick xmlns='urn:example'>Romeo</nick></presence>";
        assert_eq!(request(foreign), ("romeo@montague.lit".to_owned(), None));
        // Our own account asking us is no request.
        let own_request = "<presence xmlns='jabber:client' from='me@example.org/tablet' type='subscribe'><nick xmlns='http://jabber.org/protocol/nick'>Me</nick></presence>";
        assert!(classify(&parse(own_request), &cx(&own)).events.is_empty());
    }
}
