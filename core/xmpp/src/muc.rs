//! Group chats: XEP-0045 multi-user chat as Linnet uses it (private, members-only,
//! non-anonymous rooms, so that OMEMO can encrypt to every member), with occupant ids
//! (XEP-0421), self-ping (XEP-0410), invitations (XEP-0249 and XEP-0045 §7.8), private
//! messages between occupants (XEP-0045 §7.5) and bookmarks (XEP-0402).
//!
//! Builders return stanzas or IQ payloads; parsers take stanzas and return plain data, or
//! `None` for what is not theirs. Parsing is lenient per element (a bad `<occupant-id/>`
//! costs the occupant id, not the presence) and strict about identity: nicknames, JIDs and
//! ids that are malformed or beyond the limits below are refused, while free text (subjects,
//! reasons, names) is cut to its limit.
//!
//! A room is an ordinary JID: nothing in a stanza proves that its sender is a room. These
//! parsers say what a stanza claims; the caller applies them only to stanzas from rooms it
//! has joined (or is joining), which is what makes the claims the room's own. The same goes
//! for private messages: a chat message from `room/nick` is one only when we are in `room`
//! (see `inbound`), and one marked private from a room we are not in is not taken at all.

use std::fmt;

use xmpp_parsers::jid::Jid;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::elem::el;
use crate::error::RequestError;
use crate::jid::BareJid;
use crate::pep::{NodeConfig, PepItem, Published};
use crate::rich::MAX_ID_BYTES;
use crate::session::Session;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const FORM_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const FORM_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0249 direct invitations.
pub const NS_CONFERENCE: &str = "jabber:x:conference";
/// XEP-0402 bookmarks: the namespace of `<conference/>` and the name of the PEP node.
pub const NS_BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
pub const FEATURE_SELF_PING_OPTIMIZATION: &str =
    "http://jabber.org/protocol/muc#self-ping-optimization";
const NS_MAM: &str = "urn:xmpp:mam:2";

/// Nicknames are resourceparts (up to 1023 bytes), but no person picks one this long: a
/// longer one is refused, in what we send and in what we receive.
pub const MAX_NICK_BYTES: usize = 512;
/// Room names, as shown in lists.
pub const MAX_NAME_BYTES: usize = 256;
pub const MAX_SUBJECT_BYTES: usize = 4096;
/// Reasons of kicks, bans, invitations; error texts.
pub const MAX_REASON_BYTES: usize = 1024;
pub const MAX_PASSWORD_BYTES: usize = 256;
/// XEP-0421 sets no length; Prosody's ids are 44 bytes and ejabberd's 52.
pub const MAX_OCCUPANT_ID_BYTES: usize = 128;
/// The `<status/>` codes read from one stanza; the XEP defines 19.
pub const MAX_STATUS_CODES: usize = 16;
/// Entries of an affiliation list, and bookmarks of one notification.
pub const MAX_LIST_ITEMS: usize = 10_000;
/// A bookmark's opaque `<extensions/>`, as XML.
pub const MAX_EXTENSIONS_BYTES: usize = 64 * 1024;

// --- Affiliations, roles, occupant JIDs -------------------------------------------------

/// A long-lived relation of a user (bare JID) to the room (XEP-0045 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Affiliation {
    Owner,
    Admin,
    Member,
    /// Banned.
    Outcast,
    None,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Admin => "admin",
            Affiliation::Member => "member",
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        [
            Affiliation::Owner,
            Affiliation::Admin,
            Affiliation::Member,
            Affiliation::Outcast,
            Affiliation::None,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Owners, admins and members: the people a members-only room lets in, and so the
    /// people a group message is encrypted to.
    pub fn is_member(self) -> bool {
        matches!(
            self,
            Affiliation::Owner | Affiliation::Admin | Affiliation::Member
        )
    }
}

/// A relation of an occupant to the room that lasts while they are in it (XEP-0045 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Moderator,
    Participant,
    Visitor,
    /// Not in the room; setting it kicks the occupant out.
    None,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Visitor => "visitor",
            Role::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Moderator,
            Role::Participant,
            Role::Visitor,
            Role::None,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

fn bad(what: &str) -> RequestError {
    RequestError::BadArgument(what.to_owned())
}

/// `nick` if it is one we accept: not empty or blank, within [`MAX_NICK_BYTES`], no
/// control characters (they would reach the UI).
fn valid_nick(nick: &str) -> Option<&str> {
    let ok = !nick.trim().is_empty()
        && nick.len() <= MAX_NICK_BYTES
        && !nick.chars().any(char::is_control);
    ok.then_some(nick)
}

/// The occupant JID `room/nick`, with the nickname as the server will see it (RFC 7622
/// normalisation), or an error if it cannot be a nickname.
pub fn occupant_jid(room: &BareJid, nick: &str) -> Result<String, RequestError> {
    let nick = valid_nick(nick).ok_or_else(|| bad("nickname empty, too long or not printable"))?;
    let room = xmpp_parsers::jid::BareJid::new(room.as_str()).map_err(|_| bad("room JID"))?;
    let full = room
        .with_resource_str(nick)
        .map_err(|_| bad("nickname is not a valid JID resource"))?;
    Ok(full.as_str().to_owned())
}

/// Room and nickname of an occupant JID; `None` for a bare JID or a nickname we refuse.
pub fn split_occupant(jid: &str) -> Option<(BareJid, String)> {
    let jid = Jid::new(jid).ok()?;
    let nick = valid_nick(jid.resource()?.as_str())?.to_owned();
    let room = BareJid::parse(jid.to_bare().as_str()).ok()?;
    Some((room, nick))
}

/// The room of a stanza sent by the room itself (bare `from`), or `None`.
fn bare_sender(stanza: &Element) -> Option<BareJid> {
    let jid = Jid::new(stanza.attr("from")?).ok()?;
    if !jid.is_bare() {
        return None;
    }
    BareJid::parse(jid.as_str()).ok()
}

fn same_bare(jid: &str, room: &BareJid) -> bool {
    Jid::new(jid).is_ok_and(|j| j.is_bare() && j.as_str() == room.as_str())
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Text of a child element, cut to `max`; `None` when absent or empty.
fn child_text(parent: &Element, name: &str, ns_: &str, max: usize) -> Option<String> {
    let t = parent.get_child(name, ns_)?.text();
    (!t.trim().is_empty()).then(|| clip(t, max))
}

fn id_attr(e: &Element) -> Option<String> {
    e.attr("id")
        .filter(|i| !i.is_empty() && i.len() <= MAX_ID_BYTES)
        .map(str::to_owned)
}

fn xs_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The XEP-0421 occupant id of a stanza. A room strips the ones occupants put in, so two
/// of them mean a room that does not: then none is trusted.
fn occupant_id(stanza: &Element) -> Option<String> {
    let mut ids = stanza
        .children()
        .filter(|c| c.is("occupant-id", NS_OCCUPANT_ID));
    let first = ids.next()?;
    if ids.next().is_some() {
        return None;
    }
    first
        .attr("id")
        .filter(|i| !i.is_empty() && i.len() <= MAX_OCCUPANT_ID_BYTES)
        .map(str::to_owned)
}

/// The status codes of a `<x xmlns='…muc#user'>`, each once, in order.
fn status_codes(x: &Element) -> Vec<u16> {
    let mut codes = Vec::new();
    for s in x.children().filter(|c| c.is("status", NS_MUC_USER)) {
        let Some(code) = s.attr("code").and_then(|c| c.parse::<u16>().ok()) else {
            continue;
        };
        if !(100..1000).contains(&code) || codes.contains(&code) {
            continue;
        }
        if codes.len() == MAX_STATUS_CODES {
            break;
        }
        codes.push(code);
    }
    codes
}

/// The one `<x xmlns='…muc#user'>` of a stanza. Rooms strip those occupants send, so a
/// second one is a forgery that got through: the stanza's MUC data is not trusted at all.
fn muc_user_x(stanza: &Element) -> Result<Option<&Element>, ()> {
    let mut xs = stanza.children().filter(|c| c.is("x", NS_MUC_USER));
    let first = xs.next();
    if xs.next().is_some() {
        return Err(());
    }
    Ok(first)
}

// --- Occupant presence (XEP-0045 §7.2, §7.6, §8.2, §9.1, §10.9) -------------------------

/// Why an occupant left the room when they did not leave on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// 307.
    Kicked,
    /// 301.
    Banned,
    /// 321: their affiliation changed so that they may no longer be in the room.
    AffiliationChanged,
    /// 322: the room became members-only and they are not a member.
    MembersOnly,
    /// 332: the service is shutting down.
    Shutdown,
    /// 333: removed because of an error (e.g. their server stopped answering); rejoining
    /// is fine.
    Error,
    /// The room was destroyed (XEP-0045 §10.9), possibly pointing to a successor.
    Destroyed {
        alternate: Option<BareJid>,
        reason: Option<String>,
    },
}

/// An occupant's presence in a room, as the room reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccupantPresence {
    pub room: BareJid,
    pub nick: String,
    /// `false` for `type='unavailable'`: they left, were removed, or changed nickname.
    pub available: bool,
    /// `None` when the room gave none we recognise.
    pub affiliation: Option<Affiliation>,
    pub role: Option<Role>,
    /// The occupant's real (bare) JID as the room gives it: to everyone in a non-anonymous
    /// room, to moderators only in a semi-anonymous one. See [`Self::identified_jid`].
    pub real_jid: Option<BareJid>,
    /// XEP-0421: stable across nicknames and sessions; trust it only when the room
    /// announces `urn:xmpp:occupant-id:0` ([`RoomInfo::occupant_id`]).
    pub occupant_id: Option<String>,
    /// Every status code, including those also given as the flags below.
    pub status: Vec<u16>,
    /// 110: this presence is our own.
    pub is_self: bool,
    /// 201: we just created the room; it stays locked until configured.
    pub created: bool,
    /// 210: the service changed (assigned) our nickname; `nick` is the one it chose.
    pub nick_assigned: bool,
    /// 100 or 172: everyone in the room can see real JIDs.
    pub non_anonymous: bool,
    /// 170: the room is logged publicly.
    pub logged: bool,
    /// 303 on an unavailable presence: the occupant is now known under this nickname.
    pub new_nick: Option<String>,
    /// Set on unavailable presences only.
    pub removal: Option<Removal>,
    /// The reason given for a kick, ban or other change.
    pub reason: Option<String>,
    /// Nickname of who kicked or banned, when the room says.
    pub actor: Option<String>,
}

impl OccupantPresence {
    /// The real JID, when it identifies the person to everyone: in a room known to be
    /// non-anonymous (from its disco#info, or a 100/172 status on our own join). In other
    /// rooms a JID in a presence is the room's word to moderators only, and is not used to
    /// decide whom to encrypt to or who said what.
    pub fn identified_jid(&self, room_non_anonymous: bool) -> Option<&BareJid> {
        if room_non_anonymous {
            self.real_jid.as_ref()
        } else {
            None
        }
    }
}

/// An occupant presence (available or unavailable) from `room/nick` with its
/// `<x xmlns='http://jabber.org/protocol/muc#user'>`. `None` for anything else: presences
/// from a bare JID (ejabberd's room sends its own capabilities that way), without the MUC
/// payload, of another type, with a refused nickname, or with two MUC payloads.
pub fn parse_occupant_presence(presence: &Element) -> Option<OccupantPresence> {
    if !presence.is("presence", ns::JABBER_CLIENT) {
        return None;
    }
    let available = match presence.attr("type") {
        None => true,
        Some("unavailable") => false,
        Some(_) => return None,
    };
    let (room, nick) = split_occupant(presence.attr("from")?)?;
    let x = muc_user_x(presence).ok()??;
    let item = x.get_child("item", NS_MUC_USER);
    let status = status_codes(x);
    let has = |c: u16| status.contains(&c);
    let affiliation = item
        .and_then(|i| i.attr("affiliation"))
        .and_then(Affiliation::parse);
    let role = item.and_then(|i| i.attr("role")).and_then(Role::parse);
    let real_jid = item
        .and_then(|i| i.attr("jid"))
        .and_then(|j| Jid::new(j).ok())
        .and_then(|j| BareJid::parse(j.to_bare().as_str()).ok());
    let new_nick = if !available && has(303) {
        item.and_then(|i| i.attr("nick"))
            .and_then(valid_nick)
            .map(str::to_owned)
    } else {
        None
    };
    let reason = item.and_then(|i| child_text(i, "reason", NS_MUC_USER, MAX_REASON_BYTES));
    let actor = item
        .and_then(|i| i.get_child("actor", NS_MUC_USER))
        .and_then(|a| a.attr("nick"))
        .and_then(valid_nick)
        .map(str::to_owned);
    let removal = if available {
        None
    } else if let Some(d) = x.get_child("destroy", NS_MUC_USER) {
        Some(Removal::Destroyed {
            alternate: d.attr("jid").and_then(|j| BareJid::parse(j).ok()),
            reason: child_text(d, "reason", NS_MUC_USER, MAX_REASON_BYTES),
        })
    } else if has(301) {
        Some(Removal::Banned)
    } else if has(333) {
        // Some services add 307 to 333 (XEP-0045 §11.1 advises against it): the error is
        // what happened, and unlike a kick it is no reason not to rejoin.
        Some(Removal::Error)
    } else if has(307) {
        Some(Removal::Kicked)
    } else if has(321) {
        Some(Removal::AffiliationChanged)
    } else if has(322) {
        Some(Removal::MembersOnly)
    } else if has(332) {
        Some(Removal::Shutdown)
    } else {
        None
    };
    Some(OccupantPresence {
        room,
        nick,
        available,
        affiliation,
        role,
        real_jid,
        occupant_id: occupant_id(presence),
        is_self: has(110),
        created: has(201),
        nick_assigned: has(210),
        non_anonymous: has(100) || has(172),
        logged: has(170),
        new_nick,
        removal,
        reason,
        actor,
        status,
    })
}

/// Why the room refused us (XEP-0045 §7.2.5–7.2.10, §7.2.17; the same conditions answer a refused
/// nickname change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// `conflict`: someone else has this nickname.
    NickTaken,
    /// `registration-required`: members-only, and we are not a member.
    MembersOnly,
    /// `forbidden`: we are banned.
    Banned,
    /// `not-authorized`: a password is needed, or ours is wrong.
    PasswordRequired,
    /// `not-acceptable`: the room wants our reserved nickname.
    NickReserved,
    /// `service-unavailable`: the room is full.
    RoomFull,
    /// `item-not-found`: the room does not exist (or is locked, not yet configured).
    RoomNotFound,
    /// `not-allowed`: the service does not let us create rooms.
    CreationRestricted,
    /// Any other condition, by name.
    Other(String),
}

impl JoinError {
    pub fn from_condition(condition: &str) -> JoinError {
        match condition {
            "conflict" => JoinError::NickTaken,
            "registration-required" => JoinError::MembersOnly,
            "forbidden" => JoinError::Banned,
            "not-authorized" => JoinError::PasswordRequired,
            "not-acceptable" => JoinError::NickReserved,
            "service-unavailable" => JoinError::RoomFull,
            "item-not-found" => JoinError::RoomNotFound,
            "not-allowed" => JoinError::CreationRestricted,
            other => JoinError::Other(other.to_owned()),
        }
    }
}

/// A presence error from `room/nick`: our join (or nickname change) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinFailure {
    pub room: BareJid,
    pub nick: String,
    pub error: JoinError,
    /// The service's human-readable explanation, if any.
    pub text: Option<String>,
}

pub fn parse_join_error(presence: &Element) -> Option<JoinFailure> {
    if !presence.is("presence", ns::JABBER_CLIENT) || presence.attr("type") != Some("error") {
        return None;
    }
    let (room, nick) = split_occupant(presence.attr("from")?)?;
    let (condition, text) = crate::inbound::stanza_error(presence);
    Some(JoinFailure {
        room,
        nick,
        error: JoinError::from_condition(&condition),
        text: text
            .filter(|t| !t.trim().is_empty())
            .map(|t| clip(t, MAX_REASON_BYTES)),
    })
}

/// Presence that joins `room` as `nick` (XEP-0045 §7.2.1). It asks for no history: we read
/// the room's history from its archive (XEP-0313), which pages and does not duplicate.
pub fn join_presence(
    room: &BareJid,
    nick: &str,
    password: Option<&str>,
) -> Result<Element, RequestError> {
    let to = occupant_jid(room, nick)?;
    let mut x = el("x", NS_MUC).child(el("history", NS_MUC).attr("maxstanzas", "0"));
    if let Some(p) = password {
        if p.is_empty() || p.len() > MAX_PASSWORD_BYTES {
            return Err(bad("room password empty or too long"));
        }
        x = x.child(el("password", NS_MUC).text(p));
    }
    Ok(el("presence", ns::JABBER_CLIENT)
        .attr("to", to)
        .attr("id", crate::new_id())
        .child(x)
        .build())
}

/// Presence that leaves `room` (XEP-0045 §7.14).
pub fn leave_presence(room: &BareJid, nick: &str) -> Result<Element, RequestError> {
    Ok(el("presence", ns::JABBER_CLIENT)
        .attr("to", occupant_jid(room, nick)?)
        .attr("type", "unavailable")
        .build())
}

/// Presence that changes our nickname in `room` (XEP-0045 §7.6): plain presence to the new
/// occupant JID, without the join payload.
pub fn nick_change_presence(room: &BareJid, new_nick: &str) -> Result<Element, RequestError> {
    Ok(el("presence", ns::JABBER_CLIENT)
        .attr("to", occupant_jid(room, new_nick)?)
        .attr("id", crate::new_id())
        .build())
}

// --- Room configuration (XEP-0045 §10.1.3, §10.2) ---------------------------------------

/// Payload of the IQ get that asks a room for its configuration form.
pub fn owner_config_query() -> Element {
    el("query", NS_MUC_OWNER).build()
}

/// A filled configuration form, ready to submit, and what it could set besides the
/// essentials.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivateGroupForm {
    /// Payload of the IQ set (`<query xmlns='…muc#owner'>` with the submitted form).
    pub query: Element,
    /// The room archives its messages (the form had an archiving field).
    pub archiving: bool,
    /// Members may invite (the form had such a field).
    pub member_invites: bool,
}

/// What a private group was configured with beyond the essentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateGroupConfigured {
    pub archiving: bool,
    pub member_invites: bool,
}

/// Fields of the servers' forms that turn on the room archive (XEP-0313): Prosody's
/// mod_muc_mam and ejabberd's mod_mam each use their own.
const ARCHIVING_FIELDS: &[&str] = &["muc#roomconfig_enablearchiving", "mam"];
/// Fields that let members invite: the XEP's (ejabberd's form) and Prosody's own (its form
/// has only that one, though its disco#info shows both).
const MEMBER_INVITE_FIELDS: &[&str] = &[
    "muc#roomconfig_allowinvites",
    "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites",
];

fn data_form(reply: &Element) -> Option<&Element> {
    if reply.is("x", ns::DATA_FORMS) {
        return Some(reply);
    }
    let query = if reply.is("query", NS_MUC_OWNER) {
        reply
    } else {
        reply.get_child("query", NS_MUC_OWNER)?
    };
    query.get_child("x", ns::DATA_FORMS)
}

fn form_fields(form: &Element) -> impl Iterator<Item = &Element> {
    form.children().filter(|c| c.is("field", ns::DATA_FORMS))
}

fn form_field<'a>(form: &'a Element, var: &str) -> Option<&'a Element> {
    form_fields(form).find(|f| f.attr("var") == Some(var))
}

fn field_values(field: &Element) -> impl Iterator<Item = String> + '_ {
    field
        .children()
        .filter(|c| c.is("value", ns::DATA_FORMS))
        .map(|v| v.text())
}

/// Fills the room's configuration form (the IQ result, its `<query/>` or its `<x/>`) for a
/// private group: members-only, non-anonymous (real JIDs visible to all, which OMEMO
/// needs), persistent, not listed publicly, archived and open to members' invitations
/// where the form allows, named `name` (nothing when empty). Only fields the server's form
/// has are submitted, each with a value the form allows. A form without the members-only,
/// whois (with "anyone") or persistence fields cannot make a private group: an error.
pub fn fill_private_group_form(
    reply: &Element,
    name: &str,
) -> Result<PrivateGroupForm, RequestError> {
    let form = data_form(reply)
        .ok_or_else(|| RequestError::Unexpected("no room configuration form".into()))?;
    let form_type = form_field(form, "FORM_TYPE").and_then(|f| field_values(f).next());
    if form_type.as_deref().map(str::trim) != Some(FORM_ROOMCONFIG) {
        return Err(RequestError::Unexpected(
            "not a room configuration form".into(),
        ));
    }
    let mut submit: Vec<(&str, String)> = Vec::new();
    for var in [
        "muc#roomconfig_membersonly",
        "muc#roomconfig_persistentroom",
    ] {
        if form_field(form, var).is_none() {
            return Err(RequestError::Unexpected(format!(
                "the room configuration form lacks {var}"
            )));
        }
        submit.push((var, "1".into()));
    }
    let whois = form_field(form, "muc#roomconfig_whois").ok_or_else(|| {
        RequestError::Unexpected("the room configuration form lacks muc#roomconfig_whois".into())
    })?;
    let options: Vec<String> = whois
        .children()
        .filter(|c| c.is("option", ns::DATA_FORMS))
        .flat_map(|o| field_values(o).collect::<Vec<_>>())
        .collect();
    if !options.is_empty() && !options.iter().any(|o| o.trim() == "anyone") {
        return Err(RequestError::Unexpected(
            "the room cannot be made non-anonymous".into(),
        ));
    }
    submit.push(("muc#roomconfig_whois", "anyone".into()));
    if form_field(form, "muc#roomconfig_publicroom").is_some() {
        submit.push(("muc#roomconfig_publicroom", "0".into()));
    }
    let name = name.trim();
    if !name.is_empty() && form_field(form, "muc#roomconfig_roomname").is_some() {
        submit.push((
            "muc#roomconfig_roomname",
            clip(name.to_owned(), MAX_NAME_BYTES),
        ));
    }
    let archiving = ARCHIVING_FIELDS
        .iter()
        .find(|v| form_field(form, v).is_some());
    if let Some(var) = archiving {
        submit.push((var, "1".into()));
    }
    let mut member_invites = false;
    for var in MEMBER_INVITE_FIELDS {
        if form_field(form, var).is_some() {
            submit.push((var, "1".into()));
            member_invites = true;
        }
    }
    let mut x = el("x", ns::DATA_FORMS).attr("type", "submit").child(
        el("field", ns::DATA_FORMS)
            .attr("var", "FORM_TYPE")
            .attr("type", "hidden")
            .child(el("value", ns::DATA_FORMS).text(FORM_ROOMCONFIG)),
    );
    for (var, value) in submit {
        x = x.child(
            el("field", ns::DATA_FORMS)
                .attr("var", var)
                .child(el("value", ns::DATA_FORMS).text(value)),
        );
    }
    Ok(PrivateGroupForm {
        query: el("query", NS_MUC_OWNER).child(x).build(),
        archiving: archiving.is_some(),
        member_invites,
    })
}

/// Payload of the IQ set that destroys a room (XEP-0045 §10.9); its occupants are told,
/// with the reason.
pub fn destroy_query(reason: Option<&str>) -> Element {
    let mut d = el("destroy", NS_MUC_OWNER);
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        d = d.child(el("reason", NS_MUC_OWNER).text(clip(r.to_owned(), MAX_REASON_BYTES)));
    }
    el("query", NS_MUC_OWNER).child(d).build()
}

// --- Affiliations and roles (XEP-0045 §8, §9, §10) --------------------------------------

/// Payload of the IQ set that gives `jid` the affiliation `affiliation` (member: may enter
/// a members-only room; none: no longer; outcast: banned).
pub fn set_affiliation_query(
    jid: &BareJid,
    affiliation: Affiliation,
    reason: Option<&str>,
) -> Element {
    let mut item = el("item", NS_MUC_ADMIN)
        .attr("affiliation", affiliation.as_str())
        .attr("jid", jid.as_str());
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        item = item.child(el("reason", NS_MUC_ADMIN).text(clip(r.to_owned(), MAX_REASON_BYTES)));
    }
    el("query", NS_MUC_ADMIN).child(item).build()
}

/// Payload of the IQ set that gives occupant `nick` the role `role` ([`Role::None`]
/// kicks them).
pub fn set_role_query(
    nick: &str,
    role: Role,
    reason: Option<&str>,
) -> Result<Element, RequestError> {
    let nick = valid_nick(nick).ok_or_else(|| bad("nickname empty, too long or not printable"))?;
    let mut item = el("item", NS_MUC_ADMIN)
        .attr("nick", nick)
        .attr("role", role.as_str());
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        item = item.child(el("reason", NS_MUC_ADMIN).text(clip(r.to_owned(), MAX_REASON_BYTES)));
    }
    Ok(el("query", NS_MUC_ADMIN).child(item).build())
}

/// Payload of the IQ get for everyone with `affiliation`.
pub fn affiliation_list_query(affiliation: Affiliation) -> Element {
    el("query", NS_MUC_ADMIN)
        .child(el("item", NS_MUC_ADMIN).attr("affiliation", affiliation.as_str()))
        .build()
}

/// One entry of an affiliation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffiliationItem {
    pub jid: BareJid,
    pub affiliation: Affiliation,
    /// Their reserved nickname, or current one when in the room.
    pub nick: Option<String>,
    pub reason: Option<String>,
}

/// The entries of an affiliation list reply (the IQ result or its `<query/>`). Entries
/// without a valid JID or affiliation are left out; more than [`MAX_LIST_ITEMS`] is an
/// error.
pub fn parse_affiliation_list(reply: &Element) -> Result<Vec<AffiliationItem>, RequestError> {
    let query = if reply.is("query", NS_MUC_ADMIN) {
        reply
    } else {
        reply
            .get_child("query", NS_MUC_ADMIN)
            .ok_or_else(|| RequestError::Unexpected("affiliation list without query".into()))?
    };
    let mut out: Vec<AffiliationItem> = Vec::new();
    for item in query.children().filter(|c| c.is("item", NS_MUC_ADMIN)) {
        if out.len() == MAX_LIST_ITEMS {
            return Err(RequestError::Unexpected("affiliation list too long".into()));
        }
        let Some(affiliation) = item.attr("affiliation").and_then(Affiliation::parse) else {
            continue;
        };
        let Some(jid) = item
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .and_then(|j| BareJid::parse(j.to_bare().as_str()).ok())
        else {
            continue;
        };
        if out.iter().any(|o| o.jid == jid) {
            continue;
        }
        out.push(AffiliationItem {
            jid,
            affiliation,
            nick: item.attr("nick").and_then(valid_nick).map(str::to_owned),
            reason: child_text(item, "reason", NS_MUC_ADMIN, MAX_REASON_BYTES),
        });
    }
    Ok(out)
}

// --- Messages: groupchat, subject (XEP-0045 §7.4, §8.1) ---------------------------------

/// A `type='groupchat'` message, with what a group message has beyond a 1:1 one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMessage {
    pub room: BareJid,
    /// The sender's nickname; `None` for messages of the room itself (subject on join,
    /// configuration changes).
    pub nick: Option<String>,
    pub id: Option<String>,
    pub origin_id: Option<String>,
    /// XEP-0359 id the room's archive gave it: kept only when stamped by the room itself.
    pub stanza_id: Option<String>,
    /// XEP-0421: see [`OccupantPresence::occupant_id`].
    pub occupant_id: Option<String>,
    /// Delay stamp given by the room (history), clamped to sane values.
    pub timestamp_ms: Option<i64>,
    pub body: Option<String>,
    /// A subject change (a `<subject/>` without body or thread): the new subject, possibly
    /// empty (the subject was removed).
    pub subject: Option<String>,
    /// Status codes of a message from the room itself (104: configuration changed, 170/171
    /// logging, 172/173 anonymity); those in occupants' messages are not the room's and
    /// are ignored.
    pub status: Vec<u16>,
    /// The sender's real JID as a non-anonymous room's archive records it (`<x
    /// xmlns='…muc#user'><item jid=…/>`). In a live message it could be the sender's own
    /// invention (rooms need not strip it): believe it only in an archive result.
    pub real_jid: Option<BareJid>,
    /// From the room itself: affiliations changed of people not in it (XEP-0045 §9.3-§10.7
    /// let a room tell its occupants so). Who may decrypt the group's messages follows them.
    pub affiliations: Vec<(BareJid, Affiliation)>,
}

/// A groupchat message from `room/nick` or from `room`; `None` for other types.
pub fn parse_groupchat(message: &Element) -> Option<GroupMessage> {
    if !message.is("message", ns::JABBER_CLIENT) || message.attr("type") != Some("groupchat") {
        return None;
    }
    let from = message.attr("from")?;
    let (room, nick) = match bare_sender(message) {
        Some(room) => (room, None),
        None => {
            let (room, nick) = split_occupant(from)?;
            (room, Some(nick))
        }
    };
    let stanza_ids: Vec<&Element> = message
        .children()
        .filter(|c| c.is("stanza-id", ns::SID))
        .filter(|c| c.attr("by").is_some_and(|b| same_bare(b, &room)))
        .collect();
    // XEP-0359: the room replaces any stanza-id claiming to be its own; two of them mean it
    // did not, and either could be the forgery.
    let stanza_id = match stanza_ids.as_slice() {
        [one] => id_attr(one),
        _ => None,
    };
    let origin_id = message.get_child("origin-id", ns::SID).and_then(id_attr);
    let timestamp_ms = message
        .children()
        .filter(|c| c.is("delay", ns::DELAY))
        .find(|d| d.attr("from").is_some_and(|f| same_bare(f, &room)))
        .and_then(|d| d.attr("stamp"))
        .and_then(crate::inbound::parse_stamp);
    let body = message
        .get_child("body", ns::JABBER_CLIENT)
        .map(|b| b.text());
    let subject = subject_change(message);
    let status = match (&nick, muc_user_x(message)) {
        (None, Ok(Some(x))) => status_codes(x),
        _ => Vec::new(),
    };
    let affiliations = match (&nick, muc_user_x(message)) {
        (None, Ok(Some(x))) => affiliation_items(x),
        _ => Vec::new(),
    };
    let real_jid = match (&nick, muc_user_x(message)) {
        (Some(_), Ok(Some(x))) => x
            .get_child("item", NS_MUC_USER)
            .and_then(|i| i.attr("jid"))
            .and_then(|j| BareJid::parse(j.split('/').next().unwrap_or(j)).ok()),
        _ => None,
    };
    Some(GroupMessage {
        room,
        nick,
        id: id_attr(message),
        origin_id,
        stanza_id,
        occupant_id: occupant_id(message),
        timestamp_ms,
        body,
        subject,
        status,
        real_jid,
        affiliations,
    })
}

/// A room's notice to its occupants that someone not in it changed affiliation (XEP-0045
/// §9.3-§10.7: a message of no type from the room's bare JID, with `<item jid
/// affiliation/>`s and nothing else to say), as a [`GroupMessage`] of the room's own with
/// only `affiliations` set. `None` for anything else (an invitation, a message of a type).
pub fn parse_affiliation_notice(message: &Element) -> Option<GroupMessage> {
    if !message.is("message", ns::JABBER_CLIENT)
        || !matches!(message.attr("type"), None | Some("normal"))
        || message.get_child("body", ns::JABBER_CLIENT).is_some()
    {
        return None;
    }
    let room = bare_sender(message)?;
    let x = muc_user_x(message).ok()??;
    if x.children()
        .any(|c| !c.is("item", NS_MUC_USER) && !c.is("status", NS_MUC_USER))
    {
        return None;
    }
    let affiliations = affiliation_items(x);
    if affiliations.is_empty() {
        return None;
    }
    Some(GroupMessage {
        room,
        nick: None,
        id: id_attr(message),
        origin_id: None,
        stanza_id: None,
        occupant_id: None,
        timestamp_ms: None,
        body: None,
        subject: None,
        status: Vec::new(),
        real_jid: None,
        affiliations,
    })
}

fn affiliation_items(x: &Element) -> Vec<(BareJid, Affiliation)> {
    x.children()
        .filter(|i| i.is("item", NS_MUC_USER))
        .filter_map(|i| {
            let jid = i.attr("jid")?;
            let jid = BareJid::parse(jid.split('/').next().unwrap_or(jid)).ok()?;
            Some((jid, Affiliation::parse(i.attr("affiliation")?)?))
        })
        .collect()
}

/// XEP-0045 §8.1: a message with a subject and a body or thread is a message that has a
/// subject, not a subject change.
fn subject_change(message: &Element) -> Option<String> {
    let subject = message.get_child("subject", ns::JABBER_CLIENT)?;
    if message.get_child("body", ns::JABBER_CLIENT).is_some()
        || message.get_child("thread", ns::JABBER_CLIENT).is_some()
    {
        return None;
    }
    Some(clip(subject.text(), MAX_SUBJECT_BYTES))
}

/// A subject change in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectChange {
    pub room: BareJid,
    /// Who changed it; `None` when the room sends it (on join).
    pub nick: Option<String>,
    /// Empty: the room has no subject.
    pub subject: String,
}

pub fn parse_subject(message: &Element) -> Option<SubjectChange> {
    let m = parse_groupchat(message)?;
    Some(SubjectChange {
        room: m.room,
        nick: m.nick,
        subject: m.subject?,
    })
}

/// A message that sets the room's subject (empty: removes it).
pub fn subject_message(room: &BareJid, subject: &str) -> Result<Element, RequestError> {
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(bad("subject too long"));
    }
    Ok(el("message", ns::JABBER_CLIENT)
        .attr("to", room.as_str())
        .attr("type", "groupchat")
        .attr("id", crate::new_id())
        .child(el("subject", ns::JABBER_CLIENT).text(subject))
        .build())
}

/// A message to everyone in `room`. `id` is also the XEP-0359 origin-id, which the room
/// keeps when it reflects the message back to us: that is how we recognise our own.
/// Receipts are not requested: in a group they would come from everyone.
pub fn groupchat_message(
    room: &BareJid,
    body: &str,
    id: &str,
    extras: &crate::rich::Extras,
) -> Element {
    let m = el("message", ns::JABBER_CLIENT)
        .attr("to", room.as_str())
        .attr("type", "groupchat")
        .attr("id", id)
        .child(el("body", ns::JABBER_CLIENT).text(body))
        .child(el("origin-id", ns::SID).attr("id", id))
        .build();
    extras.apply(m)
}

// --- Private messages (XEP-0045 §7.5) --------------------------------------------------

/// Whether a message says it went through a room privately: XEP-0045 §7.5 (since 1.28) has
/// the sender and the room add an `<x xmlns='…muc#user'/>`, so that servers can copy it to
/// our other devices (XEP-0280 §6). Older senders do not: its absence proves nothing.
pub fn marked_private(message: &Element) -> bool {
    message.children().any(|c| c.is("x", NS_MUC_USER))
}

/// A private message to the occupant `nick` of `room`: of type chat (a groupchat one would
/// be refused), to their occupant JID, marked with the `<x/>` of [`marked_private`]. `id`
/// is also the XEP-0359 origin-id, by which our other devices and archive copies are
/// recognised. No receipt is asked for: it would come back through the room, from whoever
/// holds that nickname by then. Prosody 13 copies no message with that `<x/>` to our other
/// devices (its carbons rule takes each for one a room sent us); they find it in our
/// archive when they next catch up.
pub fn private_message(
    room: &BareJid,
    nick: &str,
    body: &str,
    id: &str,
) -> Result<Element, RequestError> {
    let to = occupant_jid(room, nick)?;
    Ok(el("message", ns::JABBER_CLIENT)
        .attr("to", to)
        .attr("type", "chat")
        .attr("id", id)
        .child(el("body", ns::JABBER_CLIENT).text(body))
        .child(el("origin-id", ns::SID).attr("id", id))
        .child(el("x", NS_MUC_USER))
        .build())
}

/// A group message with what a one-to-one message also carries: rich payloads (corrections,
/// retractions, replies, reactions) and OMEMO elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    pub msg: GroupMessage,
    /// The occupant JID (or the room's) that sent it.
    pub from_full: String,
    pub rich: Box<crate::rich::Rich>,
    pub encrypted: Vec<Result<crate::omemo::Encrypted, crate::omemo::OmemoXmlError>>,
    /// Read from the room's archive rather than delivered live.
    pub archived: bool,
    /// From a scroll-back query: older than what the caller holds.
    pub scrollback: bool,
}

impl RoomMessage {
    /// A live message, already parsed by [`parse_groupchat`].
    pub(crate) fn live(stanza: &Element, msg: GroupMessage) -> RoomMessage {
        RoomMessage {
            from_full: stanza.attr("from").unwrap_or_default().to_owned(),
            rich: Box::new(crate::rich::parse(stanza)),
            encrypted: crate::inbound::omemo_elements(stanza),
            archived: false,
            scrollback: false,
            msg,
        }
    }
}

// --- Room archives (XEP-0313 on a room) -------------------------------------------------

/// Which part of a room's archive a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomQuery {
    /// Forward from after the message with this archive id, a page at a time: catching up.
    After(String),
    /// The newest page: the history a first join shows.
    Latest,
    /// The page before the message with this archive id: scrolling back.
    Before(String),
}

/// Messages asked for per page when catching up; the servers cap it (Prosody at 50,
/// ejabberd at 250), and say when more is left.
pub const ROOM_CATCH_UP_PAGE: u32 = 250;
/// Messages per page shown on a first join and per scroll-back step.
pub const ROOM_HISTORY_PAGE: u32 = 50;

/// The IQ that queries `room`'s archive, its id and query id both `id`.
pub fn room_archive_query(id: &str, room: &BareJid, query: &RoomQuery) -> Element {
    let rsm = "http://jabber.org/protocol/rsm";
    let set = el("set", rsm);
    let set = match query {
        RoomQuery::After(after) => set
            .child(el("max", rsm).text(ROOM_CATCH_UP_PAGE.to_string()))
            .child(el("after", rsm).text(after)),
        RoomQuery::Latest => set
            .child(el("max", rsm).text(ROOM_HISTORY_PAGE.to_string()))
            .child(el("before", rsm)),
        RoomQuery::Before(before) => set
            .child(el("max", rsm).text(ROOM_HISTORY_PAGE.to_string()))
            .child(el("before", rsm).text(before)),
    };
    el("iq", ns::JABBER_CLIENT)
        .attr("type", "set")
        .attr("id", id)
        .attr("to", room.as_str())
        .child(el("query", NS_MAM).attr("queryid", id).child(set))
        .build()
}

/// A result of a query of `room`'s archive (already matched to the query by its id). The
/// result must come from the room itself and carry a groupchat message of that same room;
/// its archive id is the room's stanza-id of the message, and the forwarded delay its time.
pub fn parse_room_archive_result(stanza: &Element, room: &BareJid) -> Option<RoomMessage> {
    if !stanza.is("message", ns::JABBER_CLIENT) || !same_bare(stanza.attr("from")?, room) {
        return None;
    }
    let result = stanza.get_child("result", NS_MAM)?;
    let archive_id = id_attr(result)?;
    let forwarded = result.get_child("forwarded", crate::inbound::NS_FORWARD)?;
    let inner = forwarded.get_child("message", ns::JABBER_CLIENT)?;
    let mut msg = parse_groupchat(inner)?;
    if msg.room != *room {
        return None;
    }
    msg.stanza_id = Some(archive_id);
    msg.timestamp_ms = forwarded
        .get_child("delay", ns::DELAY)
        .and_then(|d| d.attr("stamp"))
        .and_then(crate::inbound::parse_stamp)
        .or(msg.timestamp_ms);
    Some(RoomMessage {
        from_full: inner.attr("from").unwrap_or_default().to_owned(),
        rich: Box::new(crate::rich::parse(inner)),
        encrypted: crate::inbound::omemo_elements(inner),
        archived: true,
        scrollback: false,
        msg,
    })
}

// --- Invitations (XEP-0249, XEP-0045 §7.8) ----------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationKind {
    /// XEP-0249: sent by the inviter to us.
    Direct,
    /// XEP-0045 §7.8.2: sent by the room on the inviter's behalf.
    Mediated,
}

/// An invitation to a room.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    pub room: BareJid,
    /// Who invites: the sender of a direct invitation; for a mediated one, whom the room
    /// names (which may be an occupant JID, then this is the room).
    pub inviter: BareJid,
    pub reason: Option<String>,
    pub password: Option<String>,
    pub kind: InvitationKind,
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("room", &self.room)
            .field("inviter", &self.inviter)
            .field("kind", &self.kind)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

fn password_text(p: String) -> Option<String> {
    (!p.is_empty() && p.len() <= MAX_PASSWORD_BYTES).then_some(p)
}

/// An invitation in a message of type normal: mediated (from a bare JID, the room) when
/// there is one, else direct. Servers put a legacy `jabber:x:conference` element next to
/// the mediated one (XEP-0045 §7.8.2 implementation note); the mediated one wins.
pub fn parse_invitation(message: &Element) -> Option<Invitation> {
    parse_mediated_invitation(message).or_else(|| parse_direct_invitation(message))
}

fn normal_message(message: &Element) -> bool {
    message.is("message", ns::JABBER_CLIENT)
        && matches!(message.attr("type"), None | Some("normal"))
}

/// XEP-0249. The room is the `jid` attribute; the inviter is the sender.
pub fn parse_direct_invitation(message: &Element) -> Option<Invitation> {
    if !normal_message(message) {
        return None;
    }
    let x = message.get_child("x", NS_CONFERENCE)?;
    let room = x.attr("jid").filter(|j| !j.contains('/'))?;
    let room = BareJid::parse(room).ok()?;
    let inviter = BareJid::parse(&crate::jid::split_bare(message.attr("from")?)?).ok()?;
    Some(Invitation {
        room,
        inviter,
        reason: x
            .attr("reason")
            .filter(|r| !r.trim().is_empty())
            .map(|r| clip(r.to_owned(), MAX_REASON_BYTES)),
        password: x
            .attr("password")
            .map(str::to_owned)
            .and_then(password_text),
        kind: InvitationKind::Direct,
    })
}

/// XEP-0045 §7.8.2, as the room delivers it: from the room's bare JID, the inviter in the
/// `from` of `<invite/>`.
pub fn parse_mediated_invitation(message: &Element) -> Option<Invitation> {
    if !normal_message(message) {
        return None;
    }
    let room = bare_sender(message)?;
    let x = muc_user_x(message).ok()??;
    let invite = x.get_child("invite", NS_MUC_USER)?;
    let inviter = invite
        .attr("from")
        .and_then(crate::jid::split_bare)
        .and_then(|j| BareJid::parse(&j).ok())
        .unwrap_or_else(|| room.clone());
    Some(Invitation {
        inviter,
        reason: child_text(invite, "reason", NS_MUC_USER, MAX_REASON_BYTES),
        password: x
            .get_child("password", NS_MUC_USER)
            .map(|p| p.text())
            .and_then(password_text),
        kind: InvitationKind::Mediated,
        room,
    })
}

/// XEP-0249 invitation of `invitee` to `room`. For a members-only room the invitee must
/// be made a member first ([`set_affiliation_query`]; [`Session::muc_invite`] does both),
/// or the room will not let them in.
pub fn direct_invitation(
    invitee: &BareJid,
    room: &BareJid,
    reason: Option<&str>,
    password: Option<&str>,
) -> Element {
    let x = el("x", NS_CONFERENCE)
        .attr("jid", room.as_str())
        .attr_opt(
            "reason",
            reason
                .filter(|r| !r.is_empty())
                .map(|r| clip(r.to_owned(), MAX_REASON_BYTES)),
        )
        .attr_opt("password", password.filter(|p| !p.is_empty()));
    el("message", ns::JABBER_CLIENT)
        .attr("to", invitee.as_str())
        .attr("id", crate::new_id())
        .child(x)
        .build()
}

/// XEP-0045 §7.8.2 invitation of `invitee`, sent to `room` for it to forward. Prosody 13
/// and ejabberd 24.12 both make the invitee a member of a members-only room when its owner
/// invites this way (XEP-0045 says a service MAY); other inviters, and other servers, need
/// the admin IQ first ([`set_affiliation_query`]).
pub fn mediated_invitation(room: &BareJid, invitee: &BareJid, reason: Option<&str>) -> Element {
    let mut invite = el("invite", NS_MUC_USER).attr("to", invitee.as_str());
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        invite = invite.child(el("reason", NS_MUC_USER).text(clip(r.to_owned(), MAX_REASON_BYTES)));
    }
    el("message", ns::JABBER_CLIENT)
        .attr("to", room.as_str())
        .attr("id", crate::new_id())
        .child(el("x", NS_MUC_USER).child(invite))
        .build()
}

// --- Self-ping (XEP-0410) ---------------------------------------------------------------

/// Whether we are still in a room, by the answer to a ping to our own occupant JID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfPing {
    Joined,
    /// Rejoin.
    NotJoined,
    /// No decision possible (timeout, the room's server unreachable): ping again later.
    TryLater,
}

impl SelfPing {
    /// XEP-0410 §3.2 for an error answer: `service-unavailable` and
    /// `feature-not-implemented` (the ping reached a client of ours that does not answer
    /// pings) and `item-not-found` (another client of ours changed the nickname) mean we
    /// are joined; `remote-server-not-found` and `remote-server-timeout` decide nothing;
    /// any other error (`not-acceptable` is the recommended one) means we are not.
    pub fn from_error(condition: &str) -> SelfPing {
        match condition {
            "service-unavailable" | "feature-not-implemented" | "item-not-found" => {
                SelfPing::Joined
            }
            "remote-server-not-found" | "remote-server-timeout" => SelfPing::TryLater,
            _ => SelfPing::NotJoined,
        }
    }

    /// The outcome of a self-ping request as [`Session`] reports it. A closed session is
    /// no answer at all: try later.
    pub fn from_outcome(outcome: &Result<Element, RequestError>) -> SelfPing {
        match outcome {
            Ok(reply) => classify_self_ping(reply),
            Err(RequestError::Stanza { condition, .. }) => SelfPing::from_error(condition),
            Err(RequestError::Timeout) | Err(RequestError::Closed) => SelfPing::TryLater,
            Err(_) => SelfPing::NotJoined,
        }
    }
}

/// Payload of the self-ping IQ get, sent to our occupant JID ([`occupant_jid`]).
pub fn self_ping_payload() -> Element {
    el("ping", ns::PING).build()
}

/// The answer (an IQ of type result or error) to a self-ping, as [`SelfPing::from_error`]
/// says, with one refinement: an `item-not-found` that the error's `by` attributes to
/// another entity than the room (Prosody's service, for a room that does not exist) is
/// about the room, not our nickname: not joined.
pub fn classify_self_ping(reply: &Element) -> SelfPing {
    match reply.attr("type") {
        Some("result") => SelfPing::Joined,
        Some("error") => {
            let condition = crate::inbound::stanza_error(reply).0;
            let by = reply
                .get_child("error", ns::JABBER_CLIENT)
                .and_then(|e| e.attr("by"));
            let room = reply.attr("from").and_then(split_occupant).map(|(r, _)| r);
            match (condition.as_str(), by, room) {
                ("item-not-found", Some(by), Some(room)) if !same_bare(by, &room) => {
                    SelfPing::NotJoined
                }
                _ => SelfPing::from_error(&condition),
            }
        }
        _ => SelfPing::TryLater,
    }
}

// --- Room information (XEP-0045 §6.4) ---------------------------------------------------

/// What a room's disco#info says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomInfo {
    /// It has the identity conference/text or the MUC feature.
    pub is_room: bool,
    pub name: Option<String>,
    pub members_only: bool,
    pub non_anonymous: bool,
    pub persistent: bool,
    pub password_protected: bool,
    /// It keeps an archive we can query (XEP-0313 v2).
    pub mam: bool,
    /// It stamps XEP-0421 occupant ids (and strips forged ones).
    pub occupant_id: bool,
    /// XEP-0410 §3.3: it answers self-pings itself.
    pub self_ping_optimization: bool,
}

impl RoomInfo {
    /// OMEMO in a group needs to know every member's real JID: the room must let only
    /// members in and show their JIDs to all.
    pub fn suitable_for_omemo(&self) -> bool {
        self.is_room && self.members_only && self.non_anonymous
    }
}

/// The room information in a disco#info reply (the IQ result or its `<query/>`).
pub fn parse_room_info(reply: &Element) -> Option<RoomInfo> {
    let query = if reply.is("query", ns::DISCO_INFO) {
        reply
    } else {
        reply.get_child("query", ns::DISCO_INFO)?
    };
    let features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    let has = |f: &str| features.contains(&f);
    let identity = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .find(|i| i.attr("category") == Some("conference") && i.attr("type") == Some("text"));
    let name = identity
        .and_then(|i| i.attr("name"))
        .filter(|n| !n.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| {
            query
                .children()
                .filter(|c| c.is("x", ns::DATA_FORMS))
                .find(|x| {
                    form_field(x, "FORM_TYPE")
                        .and_then(|f| field_values(f).next())
                        .is_some_and(|v| v.trim() == FORM_ROOMINFO)
                })
                .and_then(|x| form_field(x, "muc#roomconfig_roomname"))
                .and_then(|f| field_values(f).next())
                .filter(|n| !n.trim().is_empty())
        })
        .map(|n| clip(n, MAX_NAME_BYTES));
    Some(RoomInfo {
        is_room: identity.is_some() || has(NS_MUC),
        name,
        members_only: has("muc_membersonly"),
        non_anonymous: has("muc_nonanonymous"),
        persistent: has("muc_persistent"),
        password_protected: has("muc_passwordprotected"),
        mam: has(NS_MAM),
        occupant_id: has(NS_OCCUPANT_ID),
        self_ping_optimization: has(FEATURE_SELF_PING_OPTIMIZATION),
    })
}

/// Whether a disco#info reply is that of a MUC service (not a room: rooms are found by
/// name, services by this).
fn is_muc_service(reply: &Element) -> bool {
    let Some(query) = reply.get_child("query", ns::DISCO_INFO) else {
        return false;
    };
    let identity = query.children().any(|c| {
        c.is("identity", ns::DISCO_INFO)
            && c.attr("category") == Some("conference")
            && c.attr("type") == Some("text")
    });
    let feature = query
        .children()
        .any(|c| c.is("feature", ns::DISCO_INFO) && c.attr("var") == Some(NS_MUC));
    identity && feature
}

// --- Bookmarks (XEP-0402) ---------------------------------------------------------------

/// A room the user keeps, synchronised between their devices.
#[derive(Clone, PartialEq, Eq)]
pub struct Bookmark {
    /// The item id.
    pub room: BareJid,
    pub name: Option<String>,
    /// Join on login (and now, when a notification says so).
    pub autojoin: bool,
    pub nick: Option<String>,
    pub password: Option<String>,
    /// Other clients' `<extensions/>` element, as XML, kept to be published back unchanged
    /// (XEP-0402 §3.4). Absent when there is none or it is over [`MAX_EXTENSIONS_BYTES`].
    pub extensions: Option<String>,
}

impl fmt::Debug for Bookmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bookmark")
            .field("room", &self.room)
            .field("autojoin", &self.autojoin)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// The node configuration bookmarks need (XEP-0402 §3.3): readable by us only, every item
/// kept, and no item replayed at login: the replay would look like a bookmark just
/// published, and could join us again to a room another device of ours has left since.
pub fn bookmarks_node_config() -> NodeConfig {
    NodeConfig {
        access_model: Some("whitelist".into()),
        max_items: Some("max".into()),
        persist_items: Some("true".into()),
        send_last_published_item: Some("never".into()),
    }
}

/// The `<conference/>` payload of a bookmark's item (its id is the room's JID).
pub fn bookmark_element(b: &Bookmark) -> Element {
    let mut c = el("conference", NS_BOOKMARKS)
        .attr_opt("name", b.name.as_deref().filter(|n| !n.is_empty()))
        .attr("autojoin", if b.autojoin { "true" } else { "false" });
    if let Some(nick) = b.nick.as_deref().and_then(valid_nick) {
        c = c.child(el("nick", NS_BOOKMARKS).text(nick));
    }
    if let Some(p) = b.password.as_deref().filter(|p| !p.is_empty()) {
        c = c.child(el("password", NS_BOOKMARKS).text(p));
    }
    if let Some(ext) = b
        .extensions
        .as_deref()
        .and_then(|x| x.parse::<Element>().ok())
        .filter(|x| x.is("extensions", NS_BOOKMARKS))
    {
        c = c.child(ext);
    }
    c.build()
}

/// A bookmark from its item id and `<conference/>` payload; `None` when the id is not a
/// bare JID or the payload not a conference.
pub fn parse_bookmark(item_id: &str, conference: &Element) -> Option<Bookmark> {
    if !conference.is("conference", NS_BOOKMARKS) || item_id.contains('/') {
        return None;
    }
    let room = BareJid::parse(item_id).ok()?;
    let extensions = conference
        .get_child("extensions", NS_BOOKMARKS)
        .map(String::from)
        .filter(|x| x.len() <= MAX_EXTENSIONS_BYTES);
    Some(Bookmark {
        room,
        name: conference
            .attr("name")
            .filter(|n| !n.trim().is_empty())
            .map(|n| clip(n.to_owned(), MAX_NAME_BYTES)),
        autojoin: conference
            .attr("autojoin")
            .and_then(xs_bool)
            .unwrap_or(false),
        nick: conference
            .get_child("nick", NS_BOOKMARKS)
            .map(|n| n.text())
            .filter(|n| valid_nick(n).is_some()),
        password: conference
            .get_child("password", NS_BOOKMARKS)
            .map(|p| p.text())
            .and_then(password_text),
        extensions,
    })
}

/// A bookmark from a PEP item as [`Session::pep_items`] and `Event::PepItems` give them.
pub fn parse_bookmark_item(item: &PepItem) -> Option<Bookmark> {
    let payload: Element = item.payload.parse().ok()?;
    parse_bookmark(item.id.as_deref()?, &payload)
}

/// Payload of the IQ set that deletes the bookmark of `room`, telling our other clients.
pub fn bookmark_retract_query(room: &BareJid) -> Element {
    el("pubsub", ns::PUBSUB)
        .child(
            el("retract", ns::PUBSUB)
                .attr("node", NS_BOOKMARKS)
                .attr("notify", "true")
                .child(el("item", ns::PUBSUB).attr("id", room.as_str())),
        )
        .build()
}

/// A change pushed by our server to our bookmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookmarkChange {
    /// Added or changed.
    Set(Bookmark),
    /// Deleted: leave the room if we are in it.
    Removed(BareJid),
}

/// The bookmark changes of a PEP notification (XEP-0402 §4). Only our own account's
/// (a bare `from` equal to `own`, or none) count: anyone can send us an event.
pub fn parse_bookmarks_event(message: &Element, own: &BareJid) -> Vec<BookmarkChange> {
    if !message.is("message", ns::JABBER_CLIENT) {
        return Vec::new();
    }
    if let Some(from) = message.attr("from") {
        if !same_bare(from, own) {
            return Vec::new();
        }
    }
    let Some(items) = message
        .get_child("event", ns::PUBSUB_EVENT)
        .and_then(|e| e.get_child("items", ns::PUBSUB_EVENT))
        .filter(|i| i.attr("node") == Some(NS_BOOKMARKS))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in items.children() {
        if out.len() == MAX_LIST_ITEMS {
            break;
        }
        if c.is("item", ns::PUBSUB_EVENT) {
            let bookmark = c
                .attr("id")
                .zip(c.children().next())
                .and_then(|(id, payload)| parse_bookmark(id, payload));
            if let Some(b) = bookmark {
                out.push(BookmarkChange::Set(b));
            }
        } else if c.is("retract", ns::PUBSUB_EVENT) {
            if let Some(room) = c
                .attr("id")
                .filter(|id| !id.contains('/'))
                .and_then(|id| BareJid::parse(id).ok())
            {
                out.push(BookmarkChange::Removed(room));
            }
        }
    }
    out
}

// --- Requests ---------------------------------------------------------------------------

fn not_found(e: &RequestError) -> bool {
    matches!(e, RequestError::Stanza { condition, .. } if condition == "item-not-found")
}

impl Session {
    /// Sends a stanza built here.
    fn send_built(&self, stanza: &Element) -> Result<(), RequestError> {
        self.send_xml(&String::from(stanza))
    }

    /// Our domain's MUC service: the first entity of its disco#items with the identity
    /// conference/text and the MUC feature. `None` when there is none; an entity that
    /// answers with an error is passed over.
    pub async fn discover_muc_service(&self) -> Result<Option<BareJid>, RequestError> {
        let domain = self.own_jid().domain().to_owned();
        let items = match self
            .iq("get", Some(&domain), el("query", ns::DISCO_ITEMS).build())
            .await
        {
            Ok(reply) => crate::upload::disco_items(&reply, &domain),
            Err(RequestError::Stanza { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // All at once; the server's order decides, not who answers first.
        let answers = futures::future::join_all(items.iter().map(|jid| {
            self.iq(
                "get",
                Some(jid.as_str()),
                el("query", ns::DISCO_INFO).build(),
            )
        }))
        .await;
        for (jid, answer) in items.iter().zip(answers) {
            match answer {
                Ok(reply) if is_muc_service(&reply) => {
                    return Ok(BareJid::parse(jid).ok());
                }
                Err(RequestError::Closed) => return Err(RequestError::Closed),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Sends our join presence for `room` (see [`join_presence`]). The outcome comes back
    /// as presence: our own occupant presence, or a [`JoinFailure`].
    ///
    /// From here on, the room's presences and groupchat messages reach us as events, until
    /// [`Session::forget_room`]. A resumed session keeps the rooms of the one before it
    /// ([`Session::carry_over`]); a new one is in none.
    pub fn muc_join(
        &self,
        room: &BareJid,
        nick: &str,
        password: Option<&str>,
    ) -> Result<(), RequestError> {
        let presence = join_presence(room, nick, password)?;
        self.track_room(room, true);
        self.send_built(&presence)
    }

    /// Stops taking stanzas from `room` (after we left it, or it removed us).
    pub fn forget_room(&self, room: &BareJid) {
        self.track_room(room, false);
    }

    /// Reads a part of `room`'s archive: the messages arrive as `Event::RoomMessage` (with
    /// `archived`; `scrollback` for [`RoomQuery::Before`]), then `Event::RoomHistoryPage`
    /// or `Event::RoomHistoryFailed`. Only a room we are in is queried.
    pub fn room_history(&self, room: &BareJid, query: RoomQuery) -> Result<(), RequestError> {
        if !self.in_room(room) {
            return Err(bad("not in this room"));
        }
        self.send_room_history(room, query)
    }

    pub fn muc_leave(&self, room: &BareJid, nick: &str) -> Result<(), RequestError> {
        self.send_built(&leave_presence(room, nick)?)
    }

    /// Configures a room we own as a private group (see [`fill_private_group_form`]): the
    /// room's form first, then our submission. For a room we just created (status 201)
    /// this also unlocks it.
    pub async fn muc_configure_private_group(
        &self,
        room: &BareJid,
        name: &str,
    ) -> Result<PrivateGroupConfigured, RequestError> {
        let form = self
            .iq("get", Some(room.as_str()), owner_config_query())
            .await?;
        let filled = fill_private_group_form(&form, name)?;
        self.iq("set", Some(room.as_str()), filled.query).await?;
        Ok(PrivateGroupConfigured {
            archiving: filled.archiving,
            member_invites: filled.member_invites,
        })
    }

    /// Destroys a room we own (XEP-0045 §10.9).
    pub async fn muc_destroy(
        &self,
        room: &BareJid,
        reason: Option<&str>,
    ) -> Result<(), RequestError> {
        self.iq("set", Some(room.as_str()), destroy_query(reason))
            .await
            .map(|_| ())
    }

    pub async fn muc_set_affiliation(
        &self,
        room: &BareJid,
        jid: &BareJid,
        affiliation: Affiliation,
        reason: Option<&str>,
    ) -> Result<(), RequestError> {
        self.iq(
            "set",
            Some(room.as_str()),
            set_affiliation_query(jid, affiliation, reason),
        )
        .await
        .map(|_| ())
    }

    /// Sets an occupant's role; [`Role::None`] kicks them.
    pub async fn muc_set_role(
        &self,
        room: &BareJid,
        nick: &str,
        role: Role,
        reason: Option<&str>,
    ) -> Result<(), RequestError> {
        let query = set_role_query(nick, role, reason)?;
        self.iq("set", Some(room.as_str()), query).await.map(|_| ())
    }

    /// Everyone with `affiliation` in `room`.
    pub async fn muc_affiliations(
        &self,
        room: &BareJid,
        affiliation: Affiliation,
    ) -> Result<Vec<AffiliationItem>, RequestError> {
        let reply = self
            .iq(
                "get",
                Some(room.as_str()),
                affiliation_list_query(affiliation),
            )
            .await?;
        parse_affiliation_list(&reply)
    }

    /// Everyone a members-only room lets in: its owners, admins and members, each once
    /// with the highest of their affiliations. Both servers give these lists to members
    /// of non-anonymous rooms, as XEP-0045 §9.5 recommends.
    pub async fn muc_members(&self, room: &BareJid) -> Result<Vec<AffiliationItem>, RequestError> {
        let (owners, admins, members) = futures::future::join3(
            self.muc_affiliations(room, Affiliation::Owner),
            self.muc_affiliations(room, Affiliation::Admin),
            self.muc_affiliations(room, Affiliation::Member),
        )
        .await;
        let mut all: Vec<AffiliationItem> = Vec::new();
        for item in owners?.into_iter().chain(admins?).chain(members?) {
            if !item.affiliation.is_member() {
                continue;
            }
            match all.iter_mut().find(|a| a.jid == item.jid) {
                // Owner < Admin < Member in the enum's order.
                Some(a) if item.affiliation < a.affiliation => *a = item,
                Some(_) => {}
                None => all.push(item),
            }
        }
        Ok(all)
    }

    /// Invites `invitee` to a private group: makes them a member (the room would not let
    /// them in otherwise), then sends them a direct invitation (XEP-0249), which comes
    /// from us rather than from a room they do not know.
    pub async fn muc_invite(
        &self,
        room: &BareJid,
        invitee: &BareJid,
        reason: Option<&str>,
    ) -> Result<(), RequestError> {
        self.muc_set_affiliation(room, invitee, Affiliation::Member, None)
            .await?;
        self.send_built(&direct_invitation(invitee, room, reason, None))
    }

    /// The room's disco#info.
    pub async fn muc_disco(&self, room: &BareJid) -> Result<RoomInfo, RequestError> {
        let reply = self
            .iq(
                "get",
                Some(room.as_str()),
                el("query", ns::DISCO_INFO).build(),
            )
            .await?;
        parse_room_info(&reply)
            .ok_or_else(|| RequestError::Unexpected("disco#info result without query".into()))
    }

    /// XEP-0410: whether we are still joined to `room` as `nick`. Only a closed session
    /// or a bad nickname is an error; no answer in time is [`SelfPing::TryLater`].
    ///
    /// `item-not-found` means, per the XEP, that another client of ours changed the
    /// nickname; but both servers also answer it for a room that does not exist (any
    /// more), and ejabberd says nothing to tell the two apart. So that answer is checked
    /// with the room's disco#info: a room that is not found is not joined.
    pub async fn muc_self_ping(
        &self,
        room: &BareJid,
        nick: &str,
    ) -> Result<SelfPing, RequestError> {
        let to = occupant_jid(room, nick)?;
        let outcome = self.iq("get", Some(&to), self_ping_payload()).await;
        if matches!(outcome, Err(RequestError::Closed)) {
            return Err(RequestError::Closed);
        }
        let verdict = SelfPing::from_outcome(&outcome);
        if let Err(RequestError::Stanza { condition, .. }) = &outcome {
            tracing::debug!(condition = %condition, verdict = ?verdict, "MUC self-ping answered with an error");
            if condition == "item-not-found" {
                return match self.muc_disco(room).await {
                    Err(RequestError::Closed) => Err(RequestError::Closed),
                    Err(e) if not_found(&e) => Ok(SelfPing::NotJoined),
                    Ok(_) => Ok(SelfPing::Joined),
                    Err(_) => Ok(SelfPing::TryLater),
                };
            }
        }
        Ok(verdict)
    }

    /// Our bookmarks (XEP-0402); none when the node does not exist yet. Items that are not
    /// bookmarks are left out.
    pub async fn bookmarks_fetch(&self) -> Result<Vec<Bookmark>, RequestError> {
        match self.pep_items(None, NS_BOOKMARKS, None).await {
            Ok(items) => Ok(items.iter().filter_map(parse_bookmark_item).collect()),
            Err(e) if not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Adds or replaces the bookmark of `bookmark.room`, on a node only we can read.
    pub async fn bookmark_publish(&self, bookmark: &Bookmark) -> Result<Published, RequestError> {
        let payload = String::from(&bookmark_element(bookmark));
        self.pep_publish(
            NS_BOOKMARKS,
            Some(bookmark.room.as_str()),
            &payload,
            &bookmarks_node_config(),
        )
        .await
    }

    /// Deletes the bookmark of `room`; deleting one that does not exist is not an error.
    pub async fn bookmark_retract(&self, room: &BareJid) -> Result<(), RequestError> {
        match self.iq("set", None, bookmark_retract_query(room)).await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// XEP examples omit the stream's default namespace; stanzas here are in it.
    fn xml(s: &str) -> Element {
        let s = s.trim();
        let end = s
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap();
        let with_ns = format!("{} xmlns='jabber:client'{}", &s[..end], &s[end..]);
        with_ns.parse().unwrap()
    }

    /// `stanza` as received from `from`.
    fn with_from(stanza: &Element, from: &str) -> Element {
        let s = String::from(stanza);
        let name_end = s.find(' ').unwrap();
        format!("{} from='{from}'{}", &s[..name_end], &s[name_end..])
            .parse()
            .unwrap()
    }

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    // -- occupant presence --

    #[test]
    fn own_presence_on_join_xep_example() {
        // XEP-0045 Example 32 (§7.2.12, Room Logging).
        let p = parse_occupant_presence(&xml(
            "<presence from='coven@chat.shakespeare.lit/thirdwitch' id='n13mt3l' to='hag66@shakespeare.lit/pda'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='member' role='participant'/>
                <status code='100'/><status code='110'/><status code='170'/><status code='210'/>
              </x></presence>",
        ))
        .unwrap();
        assert_eq!(p.room.as_str(), "coven@chat.shakespeare.lit");
        assert_eq!(p.nick, "thirdwitch");
        assert!(p.available && p.is_self && p.non_anonymous && p.logged && p.nick_assigned);
        assert!(!p.created);
        assert_eq!(p.affiliation, Some(Affiliation::Member));
        assert_eq!(p.role, Some(Role::Participant));
        assert_eq!(p.real_jid, None);
        assert_eq!(p.status, vec![100, 110, 170, 210]);
        assert_eq!(p.removal, None);
    }

    #[test]
    fn others_presence_with_real_jid_xep_example() {
        // XEP-0045 Example 23 (§7.2.3), "Service Sends Full JID to All Occupants".
        let p = parse_occupant_presence(&xml(
            "<presence from='coven@chat.shakespeare.lit/thirdwitch' id='17232D15' to='crone1@shakespeare.lit/desktop'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='none' jid='hag66@shakespeare.lit/pda' role='participant'/>
              </x></presence>",
        ))
        .unwrap();
        assert_eq!(p.real_jid, Some(jid("hag66@shakespeare.lit")));
        assert_eq!(p.identified_jid(true), Some(&jid("hag66@shakespeare.lit")));
        assert!(!p.is_self);
        assert_eq!(p.affiliation, Some(Affiliation::None));
    }

    #[test]
    fn a_real_jid_in_an_anonymous_room_identifies_no_one() {
        // Semi-anonymous rooms show JIDs to moderators, and a room that fails to strip an
        // occupant's own <x/> would pass on whatever they claim: not an identity.
        let p = parse_occupant_presence(&xml("<presence from='room@muc.example/mallory'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='member' role='participant' jid='alice@example.org/phone'/>
              </x></presence>"))
        .unwrap();
        assert_eq!(p.real_jid, Some(jid("alice@example.org")));
        assert_eq!(p.identified_jid(false), None);
    }

    #[test]
    fn two_muc_payloads_are_not_trusted() {
        let forged = "<presence from='room@muc.example/mallory'>
              <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator' jid='alice@example.org'/><status code='110'/></x>
              <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/></x>
            </presence>";
        assert_eq!(parse_occupant_presence(&xml(forged)), None);
    }

    #[test]
    fn room_creation_as_prosody_and_ejabberd_send_it() {
        let prosody = parse_occupant_presence(&xml(
            r#"<presence to="a@prosody.localhost/res" xml:lang="en" from="x1@conference.prosody.localhost/Alice"><x xmlns="vcard-temp:x:update"><photo /></x><occupant-id xmlns="urn:xmpp:occupant-id:0" id="J60MlpWb8+ttum7u/RgbNnAUjjD8PgJAuWaUzmjKrJc=" /><x xmlns="http://jabber.org/protocol/muc#user"><status code="201" /><item affiliation="owner" jid="a@prosody.localhost/res" role="moderator" /><status code="110" /></x></presence>"#,
        ))
        .unwrap();
        assert!(prosody.created && prosody.is_self);
        assert_eq!(prosody.affiliation, Some(Affiliation::Owner));
        assert_eq!(prosody.role, Some(Role::Moderator));
        assert_eq!(
            prosody.occupant_id.as_deref(),
            Some("J60MlpWb8+ttum7u/RgbNnAUjjD8PgJAuWaUzmjKrJc=")
        );
        let ejabberd = parse_occupant_presence(&xml(
            r#"<presence xml:lang="en" to="a@ejabberd.localhost/res" from="x1@conference.ejabberd.localhost/Alice"><x xmlns="vcard-temp:x:update" /><occupant-id xmlns="urn:xmpp:occupant-id:0" id="g20AAAAgUXVEMlbpBmQEFV7x05YQMcGMIeEKT+iz6PR/QcibBtA=" /><x xmlns="http://jabber.org/protocol/muc#user"><item jid="a@ejabberd.localhost/res" role="moderator" affiliation="owner" /><status code="201" /><status code="110" /></x></presence>"#,
        ))
        .unwrap();
        assert!(ejabberd.created && ejabberd.is_self);
        // ejabberd's room also sends presence from its bare JID (its capabilities): not an
        // occupant.
        let caps = xml(
            r#"<presence to="a@ejabberd.localhost/res" from="x1@conference.ejabberd.localhost" id="1"><c xmlns="http://jabber.org/protocol/caps" ver="p9eVARsd5yD6Oc1R9XBG3qJ1VvY=" node="https://www.process-one.net/ejabberd/" hash="sha-1" /></presence>"#,
        );
        assert_eq!(parse_occupant_presence(&caps), None);
    }

    #[test]
    fn nick_change_xep_example() {
        // XEP-0045 Example 50, "Service Updates Nick".
        let p = parse_occupant_presence(&xml(
            "<presence from='coven@chat.shakespeare.lit/thirdwitch' id='5C1B95B3' to='crone1@shakespeare.lit/desktop' type='unavailable'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='member' jid='hag66@shakespeare.lit/pda' nick='oldhag' role='participant'/>
                <status code='303'/>
              </x></presence>",
        ))
        .unwrap();
        assert!(!p.available);
        assert_eq!(p.nick, "thirdwitch");
        assert_eq!(p.new_nick.as_deref(), Some("oldhag"));
        assert_eq!(p.removal, None);
    }

    #[test]
    fn kick_ban_and_removals() {
        // XEP-0045 Example 90, "Service Removes Kicked Occupant".
        let kicked = parse_occupant_presence(&xml(
            "<presence from='harfleur@chat.shakespeare.lit/pistol' to='pistol@shakespeare.lit/harfleur' type='unavailable'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='none' role='none'><actor nick='Fluellen'/><reason>Avaunt, you cullion!</reason></item>
                <status code='110'/><status code='307'/>
              </x></presence>",
        ))
        .unwrap();
        assert_eq!(kicked.removal, Some(Removal::Kicked));
        assert!(kicked.is_self);
        assert_eq!(kicked.actor.as_deref(), Some("Fluellen"));
        assert_eq!(kicked.reason.as_deref(), Some("Avaunt, you cullion!"));
        // XEP-0045 Example 113, "Service Removes Banned User".
        let banned = parse_occupant_presence(&xml(
            "<presence from='southampton@chat.shakespeare.lit/cambridge' to='earlofcambridge@shakespeare.lit/stabber' type='unavailable'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='outcast' role='none'><actor nick='The ♚'/><reason>Treason</reason></item>
                <status code='301'/>
              </x></presence>",
        ))
        .unwrap();
        assert_eq!(banned.removal, Some(Removal::Banned));
        assert_eq!(banned.actor.as_deref(), Some("The ♚"));
        assert_eq!(banned.affiliation, Some(Affiliation::Outcast));
        // XEP-0045 Example 205 (§11.1, 333), with the 307 some services add.
        let error = parse_occupant_presence(&xml(
            "<presence from='harfleur@chat.shakespeare.lit/pistol' type='unavailable'>
              <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/>
              <status code='110'/><status code='307'/><status code='333'/></x></presence>",
        ))
        .unwrap();
        assert_eq!(error.removal, Some(Removal::Error));
        for (code, removal) in [
            (321, Removal::AffiliationChanged),
            (322, Removal::MembersOnly),
            (332, Removal::Shutdown),
        ] {
            let p = parse_occupant_presence(&xml(&format!(
                "<presence from='r@muc.example/n' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/><status code='{code}'/></x></presence>"
            )))
            .unwrap();
            assert_eq!(p.removal, Some(removal));
        }
        // A plain leave is no removal; codes on an available presence remove no one.
        let left = parse_occupant_presence(&xml(
            "<presence from='r@muc.example/n' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='none'/></x></presence>",
        ))
        .unwrap();
        assert_eq!(left.removal, None);
        let odd = parse_occupant_presence(&xml(
            "<presence from='r@muc.example/n'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant'/><status code='307'/></x></presence>",
        ))
        .unwrap();
        assert_eq!(odd.removal, None);
    }

    #[test]
    fn room_destruction_as_prosody_sends_it() {
        let p = parse_occupant_presence(&xml(
            r#"<presence type="unavailable" from="x2@conference.prosody.localhost/Bob" to="b@prosody.localhost/res"><occupant-id xmlns="urn:xmpp:occupant-id:0" id="enlclcvomMCn5lJFmvoGAgToJVLOA0UYrzqf1xlKjR4=" /><x xmlns="http://jabber.org/protocol/muc#user"><destroy /><item affiliation="member" jid="b@prosody.localhost/res" role="none" /><status code="110" /></x></presence>"#,
        ))
        .unwrap();
        assert_eq!(
            p.removal,
            Some(Removal::Destroyed {
                alternate: None,
                reason: None
            })
        );
    }

    #[test]
    fn garbage_attributes_cost_only_themselves() {
        let p = parse_occupant_presence(&xml(
            "<presence from='r@muc.example/n'>
              <occupant-id xmlns='urn:xmpp:occupant-id:0'/>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='emperor' role='' jid='not a jid@@'/>
                <status code='abc'/><status code='-1'/><status code='99999'/><status/><status code='110'/><status code='110'/>
              </x></presence>",
        ))
        .unwrap();
        assert_eq!(p.affiliation, None);
        assert_eq!(p.role, None);
        assert_eq!(p.real_jid, None);
        assert_eq!(p.occupant_id, None);
        assert_eq!(p.status, vec![110]);
        assert!(p.is_self);
        // No item at all.
        let p = parse_occupant_presence(&xml(
            "<presence from='r@muc.example/n'><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
        ))
        .unwrap();
        assert_eq!((p.affiliation, p.role), (None, None));
        // Too many status codes are cut, an oversized occupant id is dropped.
        let many: String = (100..140)
            .map(|c| format!("<status code='{c}'/>"))
            .collect();
        let p = parse_occupant_presence(&xml(&format!(
            "<presence from='r@muc.example/n'><occupant-id xmlns='urn:xmpp:occupant-id:0' id='{}'/><x xmlns='http://jabber.org/protocol/muc#user'>{many}</x></presence>",
            "x".repeat(MAX_OCCUPANT_ID_BYTES + 1)
        )))
        .unwrap();
        assert_eq!(p.status.len(), MAX_STATUS_CODES);
        assert_eq!(p.occupant_id, None);
        // Two occupant ids: the room did not strip a forged one.
        let p = parse_occupant_presence(&xml(
            "<presence from='r@muc.example/n'><occupant-id xmlns='urn:xmpp:occupant-id:0' id='a'/><occupant-id xmlns='urn:xmpp:occupant-id:0' id='b'/><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
        ))
        .unwrap();
        assert_eq!(p.occupant_id, None);
    }

    #[test]
    fn what_is_not_an_occupant_presence() {
        for s in [
            // No from, bare from, garbage from.
            "<presence><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
            "<presence from='r@muc.example'><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
            "<presence from='@@/x'><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
            // Blank or control-character nicknames.
            "<presence from='r@muc.example/ '><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
            "<presence from='r@muc.example/a&#x85;b'><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
            // Other types; no MUC payload (a contact's presence looks the same otherwise).
            "<presence from='r@muc.example/n' type='subscribe'><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
            "<presence from='r@muc.example/n' type='error'><x xmlns='http://jabber.org/protocol/muc#user'/></presence>",
            "<presence from='bob@example.org/phone'/>",
            "<presence from='r@muc.example/n'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
        ] {
            assert_eq!(parse_occupant_presence(&xml(s)), None, "{s}");
        }
        let iq: Element = "<iq xmlns='jabber:client' from='r@muc.example/n'/>"
            .parse()
            .unwrap();
        assert_eq!(parse_occupant_presence(&iq), None);
    }

    #[test]
    fn oversized_nicknames_are_refused() {
        let long = "n".repeat(MAX_NICK_BYTES + 1);
        let s = format!("<presence from='r@muc.example/{long}'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant'/></x></presence>");
        assert_eq!(parse_occupant_presence(&xml(&s)), None);
        let ok = "n".repeat(MAX_NICK_BYTES);
        let s = format!("<presence from='r@muc.example/{ok}'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant'/></x></presence>");
        assert_eq!(parse_occupant_presence(&xml(&s)).unwrap().nick, ok);
        // A 303 naming an oversized new nick leaves the new nick unknown.
        let s = format!("<presence from='r@muc.example/n' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'><item nick='{long}'/><status code='303'/></x></presence>");
        assert_eq!(parse_occupant_presence(&xml(&s)).unwrap().new_nick, None);
        let room = jid("r@muc.example");
        assert!(matches!(
            join_presence(&room, &long, None),
            Err(RequestError::BadArgument(_))
        ));
        assert!(join_presence(&room, "", None).is_err());
        assert!(join_presence(&room, "  ", None).is_err());
        assert!(set_role_query(&long, Role::None, None).is_err());
        assert!(occupant_jid(&room, "a\u{7}b").is_err());
        assert!(occupant_jid(&room, "a\u{85}b").is_err());
    }

    #[test]
    fn a_presence_is_attributed_to_the_room_it_comes_from() {
        // A presence from another room cannot pass for one of ours: the caller looks the
        // room up by what is parsed here, the sender's bare JID.
        let p = parse_occupant_presence(&xml(
            "<presence from='other@muc.evil.example/alice' to='me@example.org/phone'>
              <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/><status code='110'/></x></presence>",
        ))
        .unwrap();
        assert_eq!(p.room.as_str(), "other@muc.evil.example");
        assert_ne!(p.room, jid("family@muc.example.org"));
    }

    // -- join errors --

    #[test]
    fn join_errors_xep_examples_and_servers() {
        let cases = [
            ("registration-required", "auth", JoinError::MembersOnly),
            ("forbidden", "auth", JoinError::Banned),
            ("conflict", "cancel", JoinError::NickTaken),
            ("not-authorized", "auth", JoinError::PasswordRequired),
            ("service-unavailable", "wait", JoinError::RoomFull),
            ("item-not-found", "cancel", JoinError::RoomNotFound),
            ("not-allowed", "cancel", JoinError::CreationRestricted),
            ("not-acceptable", "cancel", JoinError::NickReserved),
            (
                "jid-malformed",
                "modify",
                JoinError::Other("jid-malformed".into()),
            ),
        ];
        for (condition, type_, expected) in cases {
            // XEP-0045 §7.2.5–7.2.10 examples.
            let f = parse_join_error(&xml(&format!(
                "<presence from='coven@chat.shakespeare.lit/thirdwitch' id='n13mt3l' to='hag66@shakespeare.lit/pda' type='error'>
                  <x xmlns='http://jabber.org/protocol/muc'/>
                  <error by='coven@chat.shakespeare.lit' type='{type_}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
                </presence>"
            )))
            .unwrap();
            assert_eq!(f.error, expected);
            assert_eq!(f.room.as_str(), "coven@chat.shakespeare.lit");
            assert_eq!(f.nick, "thirdwitch");
        }
        // ejabberd: no `by`, a text, and our own payloads echoed.
        let f = parse_join_error(&xml(
            r#"<presence xml:lang="en" to="c@ejabberd.localhost/res" from="x1@conference.ejabberd.localhost/Carol" type="error"><x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="0" /></x><occupant-id xmlns="urn:xmpp:occupant-id:0" id="g20AAAAg3cJF" /><error type="auth"><registration-required xmlns="urn:ietf:params:xml:ns:xmpp-stanzas" /><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas" xml:lang="en">Membership is required to enter this room</text></error></presence>"#,
        ))
        .unwrap();
        assert_eq!(f.error, JoinError::MembersOnly);
        assert_eq!(
            f.text.as_deref(),
            Some("Membership is required to enter this room")
        );
        // Not errors, or not from an occupant JID.
        assert!(parse_join_error(&xml("<presence from='r@muc.example/n'/>")).is_none());
        assert!(parse_join_error(&xml("<presence from='r@muc.example' type='error'/>")).is_none());
        // An error without a condition is still a refusal.
        let f = parse_join_error(&xml("<presence from='r@muc.example/n' type='error'/>")).unwrap();
        assert_eq!(f.error, JoinError::Other("undefined-condition".into()));
    }

    #[test]
    fn join_leave_and_nick_change_stanzas() {
        let room = jid("coven@chat.shakespeare.lit");
        let join = join_presence(&room, "thirdwitch", Some("cauldronburn")).unwrap();
        assert_eq!(
            join.attr("to"),
            Some("coven@chat.shakespeare.lit/thirdwitch")
        );
        assert_eq!(join.attr("type"), None);
        let x = join.get_child("x", NS_MUC).unwrap();
        assert_eq!(
            x.get_child("history", NS_MUC).unwrap().attr("maxstanzas"),
            Some("0")
        );
        assert_eq!(
            x.get_child("password", NS_MUC).unwrap().text(),
            "cauldronburn"
        );
        let plain = join_presence(&room, "thirdwitch", None).unwrap();
        assert!(plain
            .get_child("x", NS_MUC)
            .unwrap()
            .get_child("password", NS_MUC)
            .is_none());
        assert!(join_presence(&room, "n", Some(&"p".repeat(MAX_PASSWORD_BYTES + 1))).is_err());
        let leave = leave_presence(&room, "thirdwitch").unwrap();
        assert_eq!(leave.attr("type"), Some("unavailable"));
        assert_eq!(
            leave.attr("to"),
            Some("coven@chat.shakespeare.lit/thirdwitch")
        );
        let change = nick_change_presence(&room, "oldhag").unwrap();
        assert_eq!(change.attr("to"), Some("coven@chat.shakespeare.lit/oldhag"));
        assert!(change.get_child("x", NS_MUC).is_none());
        assert_eq!(change.attr("type"), None);
        // Nicknames may hold what a resource may, slashes included.
        assert_eq!(
            occupant_jid(&room, "a/b c").unwrap(),
            "coven@chat.shakespeare.lit/a/b c"
        );
        assert_eq!(
            split_occupant("coven@chat.shakespeare.lit/a/b c"),
            Some((room.clone(), "a/b c".to_owned()))
        );
    }

    // -- configuration --

    const PROSODY_FORM: &str = r#"<iq type="result" from="x1@conference.prosody.localhost" to="a@prosody.localhost/res" id="cfg1"><query xmlns="http://jabber.org/protocol/muc#owner"><x xmlns="jabber:x:data" type="form"><title>Configuration for x1@conference.prosody.localhost</title><field type="hidden" var="FORM_TYPE"><value>http://jabber.org/protocol/muc#roomconfig</value></field><field type="fixed"><value>Room information</value></field><field type="text-single" label="Title" var="muc#roomconfig_roomname" /><field type="text-single" label="Description" var="muc#roomconfig_roomdesc"><value /></field><field type="text-single" var="muc#roomconfig_lang"><value>en</value></field><field type="boolean" var="muc#roomconfig_persistentroom"></field><field type="boolean" var="muc#roomconfig_publicroom"><value>0</value></field><field type="text-private" label="Password" var="muc#roomconfig_roomsecret"><value /></field><field type="boolean" var="muc#roomconfig_membersonly"></field><field type="boolean" label="Allow members to invite new members" var="{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites" /><field type="boolean" var="muc#roomconfig_changesubject"></field><field type="boolean" var="muc#roomconfig_moderatedroom"></field><field type="list-single" var="muc#roomconfig_whois"><option label="Moderators only"><value>moderators</value></option><option label="Anyone"><value>anyone</value></option><value>moderators</value></field><field type="text-single" var="muc#roomconfig_historylength"><value>20</value></field><field type="boolean" label="Archive chat on server" var="muc#roomconfig_enablearchiving"><value>1</value></field><field type="list-single" var="muc#roomconfig_allowpm"><option label="Everyone"><value>visitor</value></option><value>visitor</value></field></x></query></iq>"#;

    const EJABBERD_FORM: &str = r#"<iq xml:lang="en" to="a@ejabberd.localhost/res" from="x1@conference.ejabberd.localhost" type="result" id="cfg1"><query xmlns="http://jabber.org/protocol/muc#owner"><x xmlns="jabber:x:data" type="form"><title>Configuration of room x1@conference.ejabberd.localhost</title><field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/muc#roomconfig</value></field><field var="muc#roomconfig_roomname" type="text-single" label="Room title" /><field var="muc#roomconfig_persistentroom" type="boolean"><value>0</value></field><field var="muc#roomconfig_publicroom" type="boolean"><value>1</value></field><field var="public_list" type="boolean"><value>1</value></field><field var="muc#roomconfig_passwordprotectedroom" type="boolean"><value>0</value></field><field var="muc#roomconfig_roomsecret" type="text-private" /><field var="muc#roomconfig_maxusers" type="list-single"><value>200</value><option label="5"><value>5</value></option></field><field var="muc#roomconfig_whois" type="list-single"><value>moderators</value><option label="Moderators Only"><value>moderators</value></option><option label="Anyone"><value>anyone</value></option></field><field var="muc#roomconfig_membersonly" type="boolean"><value>0</value></field><field var="muc#roomconfig_moderatedroom" type="boolean"><value>1</value></field><field var="muc#roomconfig_allowinvites" type="boolean"><value>0</value></field><field var="allow_subscription" type="boolean"><value>0</value></field><field var="enable_hats" type="boolean"><value>0</value></field><field var="mam" type="boolean"><value>1</value></field></x></query></iq>"#;

    fn submitted(form: &PrivateGroupForm) -> Vec<(String, String)> {
        let x = form.query.get_child("x", ns::DATA_FORMS).unwrap();
        assert_eq!(x.attr("type"), Some("submit"));
        form_fields(x)
            .map(|f| {
                let vals: Vec<String> = field_values(f).collect();
                assert_eq!(vals.len(), 1);
                (f.attr("var").unwrap().to_owned(), vals[0].clone())
            })
            .collect()
    }

    fn has(fields: &[(String, String)], var: &str, value: &str) -> bool {
        fields.iter().any(|(k, v)| k == var && v == value)
    }

    #[test]
    fn prosodys_form_is_filled_with_its_own_fields() {
        let form = fill_private_group_form(&xml(PROSODY_FORM), "Family").unwrap();
        assert!(form.query.is("query", NS_MUC_OWNER));
        assert!(form.archiving && form.member_invites);
        let f = submitted(&form);
        for (var, value) in [
            ("FORM_TYPE", FORM_ROOMCONFIG),
            ("muc#roomconfig_membersonly", "1"),
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_whois", "anyone"),
            ("muc#roomconfig_publicroom", "0"),
            ("muc#roomconfig_roomname", "Family"),
            ("muc#roomconfig_enablearchiving", "1"),
            (
                "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites",
                "1",
            ),
        ] {
            assert!(has(&f, var, value), "{var} in {f:?}");
        }
        assert_eq!(f.len(), 8, "{f:?}");
    }

    #[test]
    fn ejabberds_form_is_filled_with_its_own_fields() {
        let form = fill_private_group_form(&xml(EJABBERD_FORM), "").unwrap();
        assert!(form.archiving && form.member_invites);
        let f = submitted(&form);
        assert!(has(&f, "mam", "1"));
        assert!(has(&f, "muc#roomconfig_allowinvites", "1"));
        assert!(has(&f, "muc#roomconfig_whois", "anyone"));
        // No name asked for: none submitted. Nothing the form lacks is invented.
        assert!(!f.iter().any(|(k, _)| k == "muc#roomconfig_roomname"));
        assert!(!f.iter().any(|(k, _)| k == "muc#roomconfig_enablearchiving"));
        assert_eq!(f.len(), 7, "{f:?}");
    }

    #[test]
    fn the_xep_form_is_filled_and_never_invented_upon() {
        // XEP-0045 Example 157, trimmed to its fields (no archiving field in it).
        let form = xml(
            "<iq from='coven@chat.shakespeare.lit' id='create1' type='result'>
              <query xmlns='http://jabber.org/protocol/muc#owner'>
                <x xmlns='jabber:x:data' type='form'>
                  <field type='hidden' var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>
                  <field type='text-single' var='muc#roomconfig_roomname'/>
                  <field type='boolean' var='muc#roomconfig_enablelogging'><value>0</value></field>
                  <field type='boolean' var='muc#roomconfig_allowinvites'><value>0</value></field>
                  <field type='boolean' var='muc#roomconfig_publicroom'><value>1</value></field>
                  <field type='boolean' var='muc#roomconfig_persistentroom'><value>0</value></field>
                  <field type='boolean' var='muc#roomconfig_membersonly'><value>0</value></field>
                  <field type='list-single' var='muc#roomconfig_whois'>
                    <option label='Moderators Only'><value>moderators</value></option>
                    <option label='Anyone'><value>anyone</value></option>
                    <value>moderators</value>
                  </field>
                </x></query></iq>",
        );
        let filled = fill_private_group_form(&form, "The Coven").unwrap();
        assert!(!filled.archiving);
        assert!(filled.member_invites);
        let f = submitted(&filled);
        // Public logging is not archiving, and is left alone.
        assert!(!f.iter().any(|(k, _)| k.contains("logging") || k == "mam"));
        assert!(has(&f, "muc#roomconfig_roomname", "The Coven"));
        // The <x/> or the <query/> alone are taken too.
        let query = form.get_child("query", NS_MUC_OWNER).unwrap();
        assert!(fill_private_group_form(query, "").is_ok());
        assert!(fill_private_group_form(query.get_child("x", ns::DATA_FORMS).unwrap(), "").is_ok());
    }

    #[test]
    fn a_form_that_cannot_make_a_private_group_is_an_error() {
        let base = |fields: &str| {
            xml(&format!(
                "<iq type='result'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='form'>
                  <field type='hidden' var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>{fields}</x></query></iq>"
            ))
        };
        let members = "<field var='muc#roomconfig_membersonly'/>";
        let persistent = "<field var='muc#roomconfig_persistentroom'/>";
        let whois =
            "<field var='muc#roomconfig_whois'><option><value>anyone</value></option></field>";
        let no_anyone =
            "<field var='muc#roomconfig_whois'><option><value>moderators</value></option></field>";
        assert!(
            fill_private_group_form(&base(&format!("{members}{persistent}{whois}")), "").is_ok()
        );
        for fields in [
            format!("{persistent}{whois}"),
            format!("{members}{whois}"),
            format!("{members}{persistent}"),
            format!("{members}{persistent}{no_anyone}"),
        ] {
            assert!(
                matches!(
                    fill_private_group_form(&base(&fields), ""),
                    Err(RequestError::Unexpected(_))
                ),
                "{fields}"
            );
        }
        // Another form type, or no form (a room with nothing to configure).
        let other = xml("<iq type='result'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='form'><field var='FORM_TYPE'><value>urn:other</value></field><field var='muc#roomconfig_membersonly'/></x></query></iq>");
        assert!(fill_private_group_form(&other, "").is_err());
        let empty =
            xml("<iq type='result'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
        assert!(fill_private_group_form(&empty, "").is_err());
    }

    #[test]
    fn long_names_are_cut() {
        let name = "é".repeat(MAX_NAME_BYTES);
        let f = submitted(&fill_private_group_form(&xml(PROSODY_FORM), &name).unwrap());
        let (_, v) = f
            .iter()
            .find(|(k, _)| k == "muc#roomconfig_roomname")
            .unwrap();
        assert!(v.len() <= MAX_NAME_BYTES && v.chars().all(|c| c == 'é'));
    }

    // -- admin --

    #[test]
    fn admin_queries() {
        let q = set_affiliation_query(
            &jid("hag66@shakespeare.lit"),
            Affiliation::Member,
            Some("family"),
        );
        assert!(q.is("query", NS_MUC_ADMIN));
        let item = q.get_child("item", NS_MUC_ADMIN).unwrap();
        assert_eq!(item.attr("affiliation"), Some("member"));
        assert_eq!(item.attr("jid"), Some("hag66@shakespeare.lit"));
        assert_eq!(
            item.get_child("reason", NS_MUC_ADMIN).unwrap().text(),
            "family"
        );
        let q = set_affiliation_query(&jid("x@y"), Affiliation::Outcast, None);
        let item = q.get_child("item", NS_MUC_ADMIN).unwrap();
        assert_eq!(item.attr("affiliation"), Some("outcast"));
        assert!(item.get_child("reason", NS_MUC_ADMIN).is_none());
        // XEP-0045 Example 89, "Moderator Kicks Occupant".
        let q = set_role_query("pistol", Role::None, Some("Avaunt, you cullion!")).unwrap();
        let item = q.get_child("item", NS_MUC_ADMIN).unwrap();
        assert_eq!(item.attr("nick"), Some("pistol"));
        assert_eq!(item.attr("role"), Some("none"));
        assert_eq!(item.attr("jid"), None);
        let q = affiliation_list_query(Affiliation::Member);
        assert_eq!(
            q.get_child("item", NS_MUC_ADMIN)
                .unwrap()
                .attr("affiliation"),
            Some("member")
        );
        assert_eq!(
            destroy_query(Some("bye"))
                .get_child("destroy", NS_MUC_OWNER)
                .unwrap()
                .get_child("reason", NS_MUC_OWNER)
                .unwrap()
                .text(),
            "bye"
        );
    }

    #[test]
    fn member_lists_xep_example_and_garbage() {
        // XEP-0045 Example 130, "Service Sends Member List to Admin".
        let items = parse_affiliation_list(&xml(
            "<iq from='coven@chat.shakespeare.lit' id='member3' to='crone1@shakespeare.lit/desktop' type='result'>
              <query xmlns='http://jabber.org/protocol/muc#admin'>
                <item affiliation='member' jid='hag66@shakespeare.lit' nick='thirdwitch' role='participant'/>
              </query></iq>",
        ))
        .unwrap();
        assert_eq!(
            items,
            vec![AffiliationItem {
                jid: jid("hag66@shakespeare.lit"),
                affiliation: Affiliation::Member,
                nick: Some("thirdwitch".into()),
                reason: None,
            }]
        );
        // Prosody, with a reason; ejabberd's order of attributes; full JIDs reduced; bad
        // entries skipped; duplicates once.
        let items = parse_affiliation_list(&xml(
            r#"<iq type="result"><query xmlns="http://jabber.org/protocol/muc#admin">
                <item affiliation="member" jid="b@prosody.localhost"><reason>fam</reason></item>
                <item jid="c@ejabberd.localhost" affiliation="member" />
                <item jid="d@example.org/phone" affiliation="admin" />
                <item affiliation="member" />
                <item affiliation="king" jid="e@example.org" />
                <item affiliation="member" jid="@@" />
                <item affiliation="member" jid="B@prosody.localhost" />
              </query></iq>"#,
        ))
        .unwrap();
        let jids: Vec<&str> = items.iter().map(|i| i.jid.as_str()).collect();
        assert_eq!(
            jids,
            [
                "b@prosody.localhost",
                "c@ejabberd.localhost",
                "d@example.org"
            ]
        );
        assert_eq!(items[0].reason.as_deref(), Some("fam"));
        assert_eq!(items[2].affiliation, Affiliation::Admin);
        assert!(parse_affiliation_list(&xml("<iq type='result'/>")).is_err());
    }

    // -- messages and subjects --

    const ROOM: &str = "x1@conference.prosody.localhost";

    #[test]
    fn the_room_tells_of_affiliations_changed_while_away() {
        let m = parse_groupchat(&xml(
            r#"<message type="groupchat" from="x1@conference.prosody.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item jid="bob@prosody.localhost" affiliation="member"/><item jid="eve@prosody.localhost/x" affiliation="none"/><item jid="bad jid@@" affiliation="member"/><item jid="c@prosody.localhost" affiliation="king"/></x></message>"#,
        ))
        .unwrap();
        let got: Vec<(&str, Affiliation)> = m
            .affiliations
            .iter()
            .map(|(j, a)| (j.as_str(), *a))
            .collect();
        assert_eq!(
            got,
            [
                ("bob@prosody.localhost", Affiliation::Member),
                ("eve@prosody.localhost", Affiliation::None)
            ]
        );
        // As XEP-0045 shows it: a message of no type.
        let m = parse_affiliation_notice(&xml(
            r#"<message from="x1@conference.prosody.localhost" id="n1" to="c@prosody.localhost/r"><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="member" jid="hecate@prosody.localhost" role="none"/></x></message>"#,
        ))
        .unwrap();
        assert_eq!(m.room.as_str(), ROOM);
        assert_eq!(m.nick, None);
        assert_eq!(m.affiliations.len(), 1);
        // An invitation is not one, nor is anything from an occupant or with a body.
        for not in [
            r#"<message from="x1@conference.prosody.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><invite from="a@prosody.localhost"/><item affiliation="member" jid="h@prosody.localhost"/></x></message>"#,
            r#"<message from="x1@conference.prosody.localhost/eve"><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="member" jid="h@prosody.localhost"/></x></message>"#,
            r#"<message from="x1@conference.prosody.localhost"><body>hi</body><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="member" jid="h@prosody.localhost"/></x></message>"#,
            r#"<message type="chat" from="x1@conference.prosody.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="member" jid="h@prosody.localhost"/></x></message>"#,
        ] {
            assert_eq!(parse_affiliation_notice(&xml(not)), None, "{not}");
        }
        // From an occupant, it is theirs to say nothing about.
        let m = parse_groupchat(&xml(
            r#"<message type="groupchat" from="x1@conference.prosody.localhost/mallory"><body>x</body><x xmlns="http://jabber.org/protocol/muc#user"><item jid="eve@prosody.localhost" affiliation="owner"/></x></message>"#,
        ))
        .unwrap();
        assert!(m.affiliations.is_empty());
    }

    #[test]
    fn an_archived_message_names_its_sender() {
        let m = parse_groupchat(&xml(
            r#"<message type="groupchat" id="m1" from="x1@conference.prosody.localhost/Alice"><body>hi</body><x xmlns="http://jabber.org/protocol/muc#user"><item jid="alice@prosody.localhost/phone"/></x></message>"#,
        ))
        .unwrap();
        assert_eq!(
            m.real_jid.as_ref().map(BareJid::as_str),
            Some("alice@prosody.localhost")
        );
        // The room's own messages have no sender to name.
        let m = parse_groupchat(&xml(
            r#"<message type="groupchat" from="x1@conference.prosody.localhost"><body>x</body><x xmlns="http://jabber.org/protocol/muc#user"><item jid="alice@prosody.localhost"/></x></message>"#,
        ))
        .unwrap();
        assert_eq!(m.real_jid, None);
        // Two payloads: neither is believed.
        let m = parse_groupchat(&xml(
            r#"<message type="groupchat" from="x1@conference.prosody.localhost/A"><body>x</body><x xmlns="http://jabber.org/protocol/muc#user"><item jid="a@prosody.localhost"/></x><x xmlns="http://jabber.org/protocol/muc#user"><item jid="b@prosody.localhost"/></x></message>"#,
        ))
        .unwrap();
        assert_eq!(m.real_jid, None);
    }

    #[test]
    fn groupchat_messages_from_both_servers() {
        let m = parse_groupchat(&xml(
            r#"<message type="groupchat" xml:lang="en" id="m1" to="b@prosody.localhost/res" from="x1@conference.prosody.localhost/Alice"><body>hello</body><origin-id xmlns="urn:xmpp:sid:0" id="m1" /><occupant-id xmlns="urn:xmpp:occupant-id:0" id="J60MlpWb8+ttum7u/RgbNnAUjjD8PgJAuWaUzmjKrJc=" /><stanza-id xmlns="urn:xmpp:sid:0" id="06b02023-df85-73f4-94f8-78b9d862003a" by="x1@conference.prosody.localhost" /></message>"#,
        ))
        .unwrap();
        assert_eq!(m.room.as_str(), ROOM);
        assert_eq!(m.nick.as_deref(), Some("Alice"));
        assert_eq!(m.id.as_deref(), Some("m1"));
        assert_eq!(m.origin_id.as_deref(), Some("m1"));
        assert_eq!(
            m.stanza_id.as_deref(),
            Some("06b02023-df85-73f4-94f8-78b9d862003a")
        );
        assert_eq!(
            m.occupant_id.as_deref(),
            Some("J60MlpWb8+ttum7u/RgbNnAUjjD8PgJAuWaUzmjKrJc=")
        );
        assert_eq!(m.body.as_deref(), Some("hello"));
        assert_eq!(m.subject, None);
        assert!(m.status.is_empty());
        let m = parse_groupchat(&xml(
            r#"<message xml:lang="en" to="b@ejabberd.localhost/res" from="x1@conference.ejabberd.localhost/Alice" type="groupchat" id="m1"><archived xmlns="urn:xmpp:mam:tmp" by="x1@conference.ejabberd.localhost" id="1795293780601270" /><stanza-id xmlns="urn:xmpp:sid:0" by="x1@conference.ejabberd.localhost" id="1795293780601270" /><origin-id xmlns="urn:xmpp:sid:0" id="m1" /><occupant-id xmlns="urn:xmpp:occupant-id:0" id="g20AAAAgUXVE" /><body>hello</body></message>"#,
        ))
        .unwrap();
        assert_eq!(m.stanza_id.as_deref(), Some("1795293780601270"));
    }

    #[test]
    fn a_stanza_id_not_stamped_by_the_room_is_ignored() {
        for sids in [
            "<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='mallory@example.org'/>",
            "<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='x1@conference.prosody.localhost/Alice'/>",
            "<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='other@conference.prosody.localhost'/>",
            "<stanza-id xmlns='urn:xmpp:sid:0' id='forged'/>",
            // Two claiming to be the room's: one is forged and the room did not strip it.
            "<stanza-id xmlns='urn:xmpp:sid:0' id='a' by='x1@conference.prosody.localhost'/><stanza-id xmlns='urn:xmpp:sid:0' id='b' by='x1@conference.prosody.localhost'/>",
        ] {
            let m = parse_groupchat(&xml(&format!(
                "<message type='groupchat' from='x1@conference.prosody.localhost/Alice'><body>hi</body>{sids}</message>"
            )))
            .unwrap();
            assert_eq!(m.stanza_id, None, "{sids}");
        }
        // The room's own among others is found; its JID compared normalised.
        let m = parse_groupchat(&xml(
            "<message type='groupchat' from='x1@conference.prosody.localhost/Alice'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' id='x' by='me@example.org'/><stanza-id xmlns='urn:xmpp:sid:0' id='good' by='X1@Conference.Prosody.Localhost'/></message>",
        ))
        .unwrap();
        assert_eq!(m.stanza_id.as_deref(), Some("good"));
    }

    #[test]
    fn history_delay_xep_example_and_forged_delays() {
        // XEP-0045 Example 33, "Delivery of Discussion History".
        let m = parse_groupchat(&xml(
            "<message from='coven@chat.shakespeare.lit/firstwitch' id='162BEBB1' to='hecate@shakespeare.lit/broom' type='groupchat'>
              <body>Thrice the brinded cat hath mew'd.</body>
              <delay xmlns='urn:xmpp:delay' from='coven@chat.shakespeare.lit' stamp='2002-10-13T23:58:37Z'/>
            </message>",
        ))
        .unwrap();
        assert_eq!(m.timestamp_ms, Some(1_034_553_517_000));
        // A delay an occupant added (not from the room) is not the room's word.
        let m = parse_groupchat(&xml(
            "<message from='coven@chat.shakespeare.lit/firstwitch' type='groupchat'><body>x</body>
              <delay xmlns='urn:xmpp:delay' from='firstwitch@shakespeare.lit' stamp='2002-10-13T23:58:37Z'/></message>",
        ))
        .unwrap();
        assert_eq!(m.timestamp_ms, None);
        // Far-future stamps are clamped.
        let m = parse_groupchat(&xml(
            "<message from='coven@chat.shakespeare.lit/firstwitch' type='groupchat'><body>x</body>
              <delay xmlns='urn:xmpp:delay' from='coven@chat.shakespeare.lit' stamp='9999-12-31T23:59:59Z'/></message>",
        ))
        .unwrap();
        assert!(m.timestamp_ms.unwrap() <= crate::inbound::now_ms() + 1000);
    }

    #[test]
    fn room_messages_carry_status_codes_occupant_messages_do_not() {
        // Prosody after a configuration change.
        let m = parse_groupchat(&xml(
            r#"<message type="groupchat" from="x1@conference.prosody.localhost" to="a@prosody.localhost/res"><x xmlns="http://jabber.org/protocol/muc#user"><status code="104" /><status code="172" /></x></message>"#,
        ))
        .unwrap();
        assert_eq!(m.nick, None);
        assert_eq!(m.status, vec![104, 172]);
        // XEP-0045 Example 171, "Configuration Status Code" (§10.2.1).
        let m = parse_groupchat(&xml(
            "<message from='coven@chat.shakespeare.lit' id='80349046-F26A-44F3-A7A6-54825064DD9E' to='crone1@shakespeare.lit/desktop' type='groupchat'>
              <x xmlns='http://jabber.org/protocol/muc#user'><status code='170'/></x></message>",
        ))
        .unwrap();
        assert_eq!(m.status, vec![170]);
        let m = parse_groupchat(&xml(
            "<message type='groupchat' from='x1@conference.prosody.localhost/mallory'><body>hi</body><x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>",
        ))
        .unwrap();
        assert!(m.status.is_empty());
    }

    #[test]
    fn what_is_not_a_groupchat_message() {
        for s in [
            "<message from='r@muc.example/n' type='chat'><body>x</body></message>",
            "<message from='r@muc.example/n'><body>x</body></message>",
            "<message from='r@muc.example/n' type='error'><body>x</body></message>",
            "<message type='groupchat'><body>x</body></message>",
            "<message from='r@muc.example/ ' type='groupchat'><body>x</body></message>",
        ] {
            assert_eq!(parse_groupchat(&xml(s)), None, "{s}");
        }
    }

    #[test]
    fn subject_changes_xep_examples_and_servers() {
        // XEP-0045 Example 85, "Service Informs All Occupants of Subject Change".
        let s = parse_subject(&xml(
            "<message from='coven@chat.shakespeare.lit/secondwitch' id='5BCE07C5' to='crone1@shakespeare.lit/desktop' type='groupchat'>
              <subject>Fire Burn and Cauldron Bubble!</subject></message>",
        ))
        .unwrap();
        assert_eq!(s.subject, "Fire Burn and Cauldron Bubble!");
        assert_eq!(s.nick.as_deref(), Some("secondwitch"));
        // XEP-0045 Example 41, "No Subject".
        let s = parse_subject(&xml(
            "<message from='coven@chat.shakespeare.lit/secondwitch' id='F437C672-D438-4BD3-9BFF-091050D32EE2' to='crone1@shakespeare.lit/desktop' type='groupchat'>
              <subject></subject></message>",
        ))
        .unwrap();
        assert_eq!(s.subject, "");
        // The same from the room itself, as both servers send it on join.
        let s = parse_subject(&xml(
            r#"<message type="groupchat" from="x1@conference.prosody.localhost" to="a@prosody.localhost/res"><subject /></message>"#,
        ))
        .unwrap();
        assert_eq!((s.subject.as_str(), s.nick), ("", None));
        // ejabberd archives subject changes: the stanza-id comes along.
        let m = parse_groupchat(&xml(
            r#"<message xml:lang="en" from="x1@conference.ejabberd.localhost/Alice" type="groupchat" id="subj1"><stanza-id xmlns="urn:xmpp:sid:0" by="x1@conference.ejabberd.localhost" id="17952" /><occupant-id xmlns="urn:xmpp:occupant-id:0" id="g20A" /><subject>Plans</subject></message>"#,
        ))
        .unwrap();
        assert_eq!(m.subject.as_deref(), Some("Plans"));
        assert_eq!(m.stanza_id.as_deref(), Some("17952"));
    }

    #[test]
    fn a_subject_with_a_body_or_thread_is_not_a_subject_change() {
        for extra in ["<body>hi</body>", "<thread>t1</thread>"] {
            let s = format!(
                "<message from='coven@chat.shakespeare.lit/secondwitch' type='groupchat'><subject>New</subject>{extra}</message>"
            );
            assert_eq!(parse_subject(&xml(&s)), None, "{extra}");
            assert_eq!(parse_groupchat(&xml(&s)).unwrap().subject, None);
        }
        // Not groupchat: not a room's subject.
        assert_eq!(
            parse_subject(&xml(
                "<message from='r@muc.example/n' type='chat'><subject>x</subject></message>"
            )),
            None
        );
        // Oversized subjects are cut.
        let long = "s".repeat(MAX_SUBJECT_BYTES * 2);
        let s = parse_subject(&xml(&format!(
            "<message from='r@muc.example/n' type='groupchat'><subject>{long}</subject></message>"
        )))
        .unwrap();
        assert_eq!(s.subject.len(), MAX_SUBJECT_BYTES);
    }

    #[test]
    fn outgoing_group_messages() {
        let room = jid("coven@chat.shakespeare.lit");
        // XEP-0045 Example 84, "Moderator Changes Subject".
        let s = subject_message(&room, "Fire Burn and Cauldron Bubble!").unwrap();
        assert_eq!(s.attr("type"), Some("groupchat"));
        assert_eq!(s.attr("to"), Some("coven@chat.shakespeare.lit"));
        assert!(s.get_child("body", ns::JABBER_CLIENT).is_none());
        let reparsed =
            parse_subject(&with_from(&s, "coven@chat.shakespeare.lit/wiccarocks")).unwrap();
        assert_eq!(reparsed.subject, "Fire Burn and Cauldron Bubble!");
        assert!(subject_message(&room, &"x".repeat(MAX_SUBJECT_BYTES + 1)).is_err());
        let m = groupchat_message(&room, "hello", "id-1", &Default::default());
        assert_eq!(m.attr("type"), Some("groupchat"));
        assert_eq!(m.attr("to"), Some("coven@chat.shakespeare.lit"));
        assert_eq!(m.attr("id"), Some("id-1"));
        assert_eq!(
            m.get_child("origin-id", ns::SID).unwrap().attr("id"),
            Some("id-1")
        );
        assert!(m.get_child("request", "urn:xmpp:receipts").is_none());
        let extras = crate::rich::Extras {
            replace: Some("id-0".into()),
            reply: None,
            file: None,
        };
        let m = groupchat_message(&room, "hello!", "id-2", &extras);
        assert!(m.get_child("replace", crate::rich::NS_CORRECT).is_some());
    }

    // -- private messages --

    #[test]
    fn private_messages_xep_0045_examples() {
        let room = jid("coven@chat.shakespeare.lit");
        // XEP-0045 Example 48, "Occupant Sends Private Message", with our origin-id.
        let m = private_message(&room, "firstwitch", "I'll give thee a wind.", "hgn27af1").unwrap();
        assert_eq!(m.attr("to"), Some("coven@chat.shakespeare.lit/firstwitch"));
        assert_eq!(m.attr("type"), Some("chat"));
        assert_eq!(m.attr("id"), Some("hgn27af1"));
        assert_eq!(
            m.get_child("body", ns::JABBER_CLIENT).map(|b| b.text()),
            Some("I'll give thee a wind.".to_owned())
        );
        assert_eq!(
            m.get_child("origin-id", ns::SID).unwrap().attr("id"),
            Some("hgn27af1")
        );
        assert!(marked_private(&m));
        assert!(m.get_child("request", "urn:xmpp:receipts").is_none());
        for nick in ["", "  ", "a\u{7}b", &"n".repeat(MAX_NICK_BYTES + 1)] {
            assert!(
                matches!(
                    private_message(&room, nick, "x", "i"),
                    Err(RequestError::BadArgument(_))
                ),
                "{nick:?}"
            );
        }
        // Example 49, "Recipient Receives the Private Message", is marked; a private
        // message from an older client is not, and a groupchat message neither.
        let received = xml(
            "<message from='coven@chat.shakespeare.lit/secondwitch' id='hgn27af1'
                 to='crone1@shakespeare.lit/desktop' type='chat'>
              <body>I'll give thee a wind.</body>
              <x xmlns='http://jabber.org/protocol/muc#user' />
            </message>",
        );
        assert!(marked_private(&received));
        let old = xml("<message from='coven@chat.shakespeare.lit/secondwitch' type='chat'><body>x</body></message>");
        assert!(!marked_private(&old));
    }

    // -- invitations --

    #[test]
    fn direct_invitations_xep_0249_examples() {
        // XEP-0249 Example 2 (with continue and thread, which we do not use).
        let inv = parse_invitation(&xml(
            "<message from='crone1@shakespeare.lit/desktop' to='hecate@shakespeare.lit'>
              <x xmlns='jabber:x:conference' continue='true' jid='darkcave@macbeth.shakespeare.lit' password='cauldronburn'
                 reason='Hey Hecate, this is the place for all good witches!' thread='e0ffe42b28561960c6b12b944a092794b9683a38'/>
            </message>",
        ))
        .unwrap();
        assert_eq!(inv.kind, InvitationKind::Direct);
        assert_eq!(inv.room.as_str(), "darkcave@macbeth.shakespeare.lit");
        assert_eq!(inv.inviter.as_str(), "crone1@shakespeare.lit");
        assert_eq!(inv.password.as_deref(), Some("cauldronburn"));
        assert_eq!(
            inv.reason.as_deref(),
            Some("Hey Hecate, this is the place for all good witches!")
        );
        assert!(!format!("{inv:?}").contains("cauldronburn"));
        // Built and read back.
        let built = direct_invitation(
            &jid("hecate@shakespeare.lit"),
            &jid("darkcave@macbeth.shakespeare.lit"),
            Some("come"),
            None,
        );
        assert_eq!(built.attr("to"), Some("hecate@shakespeare.lit"));
        let received = with_from(&built, "crone1@shakespeare.lit/desktop");
        let inv = parse_invitation(&received).unwrap();
        assert_eq!(inv.room.as_str(), "darkcave@macbeth.shakespeare.lit");
        assert_eq!(inv.reason.as_deref(), Some("come"));
        assert_eq!(inv.password, None);
        // Refused: no jid, an occupant JID as room, groupchat or error messages, no sender.
        for s in [
            "<message from='a@b/c'><x xmlns='jabber:x:conference'/></message>",
            "<message from='a@b/c'><x xmlns='jabber:x:conference' jid='room@muc.example/nick'/></message>",
            "<message from='a@b/c' type='groupchat'><x xmlns='jabber:x:conference' jid='room@muc.example'/></message>",
            "<message from='a@b/c' type='error'><x xmlns='jabber:x:conference' jid='room@muc.example'/></message>",
            "<message><x xmlns='jabber:x:conference' jid='room@muc.example'/></message>",
        ] {
            assert_eq!(parse_invitation(&xml(s)), None, "{s}");
        }
    }

    #[test]
    fn mediated_invitations_xep_example_and_servers() {
        // XEP-0045 Example 57, "Room Sends Invitation to Invitee on Behalf of Invitor".
        let inv = parse_invitation(&xml(
            "<message from='coven@chat.shakespeare.lit' id='nzd143v8' to='hecate@shakespeare.lit'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <invite from='crone1@shakespeare.lit/desktop'><reason>Hey Hecate, this is the place for all good witches!</reason></invite>
                <password>cauldronburn</password>
              </x></message>",
        ))
        .unwrap();
        assert_eq!(inv.kind, InvitationKind::Mediated);
        assert_eq!(inv.room.as_str(), "coven@chat.shakespeare.lit");
        assert_eq!(inv.inviter.as_str(), "crone1@shakespeare.lit");
        assert_eq!(inv.password.as_deref(), Some("cauldronburn"));
        // Prosody adds the legacy element with the reason as text; ejabberd with it as an
        // attribute: the mediated one is read either way.
        for s in [
            r#"<message xml:lang="en" from="x1@conference.prosody.localhost" to="c@prosody.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><invite from="a@prosody.localhost/res"><reason>join us</reason></invite></x><x xmlns="jabber:x:conference" jid="x1@conference.prosody.localhost">join us</x><body>a@prosody.localhost/res invited you to the room x1@conference.prosody.localhost (join us)</body></message>"#,
            r#"<message to="c@ejabberd.localhost" from="x1@conference.ejabberd.localhost"><x xmlns="http://jabber.org/protocol/muc#user"><invite from="a@ejabberd.localhost/res"><reason>join us</reason></invite></x><x xmlns="jabber:x:conference" reason="join us" jid="x1@conference.ejabberd.localhost" /><body xml:lang="en">invites you</body></message>"#,
        ] {
            let inv = parse_invitation(&xml(s)).unwrap();
            assert_eq!(inv.kind, InvitationKind::Mediated);
            assert_eq!(inv.reason.as_deref(), Some("join us"));
            assert!(inv.inviter.as_str().starts_with("a@"));
            assert!(inv.room.as_str().starts_with("x1@conference."));
        }
        // From a full JID it is not a room's: then only a direct invitation could count.
        let s = "<message from='mallory@example.org/pc'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@example.org'/></x></message>";
        assert_eq!(parse_invitation(&xml(s)), None);
        // XEP-0045 Example 56, as built.
        let built = mediated_invitation(
            &jid("coven@chat.shakespeare.lit"),
            &jid("hecate@shakespeare.lit"),
            Some("Hey Hecate"),
        );
        assert_eq!(built.attr("to"), Some("coven@chat.shakespeare.lit"));
        let invite = built
            .get_child("x", NS_MUC_USER)
            .unwrap()
            .get_child("invite", NS_MUC_USER)
            .unwrap();
        assert_eq!(invite.attr("to"), Some("hecate@shakespeare.lit"));
        assert_eq!(
            invite.get_child("reason", NS_MUC_USER).unwrap().text(),
            "Hey Hecate"
        );
    }

    // -- self-ping --

    #[test]
    fn self_ping_answers_per_xep_0410() {
        // XEP-0410 Example 2, "Server Response to a Non-Occupant".
        let not_joined = xml(
            "<iq from='characters@chat.shakespeare.lit/JuliC' id='s2c1' type='error' to='juliet@capulet.lit/client'>
              <error type='cancel' by='characters@chat.shakespeare.lit'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        );
        assert_eq!(classify_self_ping(&not_joined), SelfPing::NotJoined);
        assert_eq!(
            classify_self_ping(&xml("<iq type='result' from='r@muc.example/n' id='1'/>")),
            SelfPing::Joined
        );
        for (condition, verdict) in [
            ("service-unavailable", SelfPing::Joined),
            ("feature-not-implemented", SelfPing::Joined),
            ("item-not-found", SelfPing::Joined),
            ("remote-server-not-found", SelfPing::TryLater),
            ("remote-server-timeout", SelfPing::TryLater),
            ("not-acceptable", SelfPing::NotJoined),
            ("not-allowed", SelfPing::NotJoined),
            ("bad-request", SelfPing::NotJoined),
            ("undefined-condition", SelfPing::NotJoined),
        ] {
            assert_eq!(SelfPing::from_error(condition), verdict, "{condition}");
            let reply = xml(&format!(
                "<iq type='error' id='1'><error type='cancel'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ));
            assert_eq!(classify_self_ping(&reply), verdict, "{condition}");
            let outcome = Err(RequestError::Stanza {
                condition: condition.into(),
                text: None,
            });
            assert_eq!(SelfPing::from_outcome(&outcome), verdict);
        }
        assert_eq!(
            SelfPing::from_outcome(&Err(RequestError::Timeout)),
            SelfPing::TryLater
        );
        assert_eq!(
            SelfPing::from_outcome(&Ok(xml("<iq type='result'/>"))),
            SelfPing::Joined
        );
        // item-not-found: from the room (Prosody, a nickname we no longer have) we are
        // joined; from the service (Prosody, no such room) we are not; without `by`
        // (ejabberd, either case) the XEP's reading stands.
        let nf = |by: &str| {
            xml(&format!(
                "<iq type='error' from='x3@conference.prosody.localhost/Alice' id='1'><error type='cancel' {by}><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ))
        };
        assert_eq!(
            classify_self_ping(&nf("by='x3@conference.prosody.localhost'")),
            SelfPing::Joined
        );
        assert_eq!(
            classify_self_ping(&nf("by='conference.prosody.localhost'")),
            SelfPing::NotJoined
        );
        assert_eq!(classify_self_ping(&nf("")), SelfPing::Joined);
        assert!(self_ping_payload().is("ping", ns::PING));
    }

    // -- disco --

    #[test]
    fn room_info_xep_example_and_servers() {
        // XEP-0045 Example 9, "Room Returns Disco Info Result".
        let info = parse_room_info(&xml(
            "<iq from='coven@chat.shakespeare.lit' id='ik3vs715' to='hag66@shakespeare.lit/pda' type='result'>
              <query xmlns='http://jabber.org/protocol/disco#info'>
                <identity category='conference' name='A Dark Cave' type='text'/>
                <feature var='http://jabber.org/protocol/muc'/>
                <feature var='http://jabber.org/protocol/muc#stable_id'/>
                <feature var='muc_passwordprotected'/><feature var='muc_hidden'/><feature var='muc_temporary'/>
                <feature var='muc_open'/><feature var='muc_unmoderated'/><feature var='muc_nonanonymous'/>
              </query></iq>",
        ))
        .unwrap();
        assert!(info.is_room && info.password_protected && info.non_anonymous);
        assert!(!info.members_only && !info.persistent && !info.mam);
        assert_eq!(info.name.as_deref(), Some("A Dark Cave"));
        assert!(!info.suitable_for_omemo());
        let prosody = parse_room_info(&xml(
            r#"<iq type="result" from="x1@conference.prosody.localhost" id="disco1"><query xmlns="http://jabber.org/protocol/disco#info"><feature var="muc_unsecured" /><identity type="text" name="Family" category="conference" /><feature var="http://jabber.org/protocol/muc#request" /><feature var="urn:xmpp:occupant-id:0" /><feature var="muc_hidden" /><feature var="http://jabber.org/protocol/muc" /><feature var="http://jabber.org/protocol/muc#self-ping-optimization" /><feature var="urn:xmpp:mam:2" /><feature var="urn:xmpp:sid:0" /><feature var="muc_membersonly" /><feature var="muc_nonanonymous" /><feature var="muc_persistent" /><x xmlns="jabber:x:data" type="result"><field type="hidden" var="FORM_TYPE"><value>http://jabber.org/protocol/muc#roominfo</value></field><field type="text-single" label="Title" var="muc#roomconfig_roomname"><value>Family</value></field></x></query></iq>"#,
        ))
        .unwrap();
        assert_eq!(
            prosody,
            RoomInfo {
                is_room: true,
                name: Some("Family".into()),
                members_only: true,
                non_anonymous: true,
                persistent: true,
                password_protected: false,
                mam: true,
                occupant_id: true,
                self_ping_optimization: true,
            }
        );
        assert!(prosody.suitable_for_omemo());
        // ejabberd: no self-ping optimization announced.
        let ejabberd = parse_room_info(&xml(
            r#"<iq type="result"><query xmlns="http://jabber.org/protocol/disco#info"><identity name="Family" type="text" category="conference" /><feature var="http://jabber.org/protocol/muc" /><feature var="muc_hidden" /><feature var="muc_persistent" /><feature var="muc_membersonly" /><feature var="muc_nonanonymous" /><feature var="urn:xmpp:occupant-id:0" /><feature var="urn:xmpp:mam:2" /></query></iq>"#,
        ))
        .unwrap();
        assert!(ejabberd.suitable_for_omemo() && ejabberd.occupant_id && ejabberd.mam);
        assert!(!ejabberd.self_ping_optimization);
        // The name from the roominfo form when the identity has none.
        let info = parse_room_info(&xml(
            "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text'/>
              <x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roominfo</value></field>
              <field var='muc#roomconfig_roomname'><value>From the form</value></field></x></query></iq>",
        ))
        .unwrap();
        assert_eq!(info.name.as_deref(), Some("From the form"));
        // Not a room at all (a contact), and no query.
        let contact = parse_room_info(&xml(
            "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' type='pc'/><feature var='muc_membersonly'/><feature var='muc_nonanonymous'/></query></iq>",
        ))
        .unwrap();
        assert!(!contact.is_room && !contact.suitable_for_omemo());
        assert_eq!(parse_room_info(&xml("<iq type='result'/>")), None);
    }

    #[test]
    fn muc_services_are_found_among_disco_items() {
        let items = crate::upload::disco_items(
            &xml(
                r#"<iq type="result" from="ejabberd.localhost"><query xmlns="http://jabber.org/protocol/disco#items"><item jid="conference.ejabberd.localhost" /><item jid="pubsub.ejabberd.localhost" /><item jid="upload.ejabberd.localhost" /><item jid="ejabberd.localhost" /><item jid="ejabberd.localhost" node="x" /><item jid="user@ejabberd.localhost" /><item jid="a.b/c" /><item jid="conference.ejabberd.localhost" /><item/></query></iq>"#,
            ),
            "ejabberd.localhost",
        );
        assert_eq!(
            items,
            [
                "conference.ejabberd.localhost",
                "pubsub.ejabberd.localhost",
                "upload.ejabberd.localhost"
            ]
        );
        // XEP-0045 Example 4, "Service Returns Disco Info Result".
        assert!(is_muc_service(&xml(
            "<iq from='chat.shakespeare.lit' type='result'><query xmlns='http://jabber.org/protocol/disco#info'>
              <identity category='conference' name='Shakespearean Chat Service' type='text'/>
              <feature var='http://jabber.org/protocol/muc'/></query></iq>"
        )));
        assert!(!is_muc_service(&xml(
            "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='irc'/><feature var='http://jabber.org/protocol/muc'/></query></iq>"
        )));
        assert!(!is_muc_service(&xml(
            "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='store' type='file'/></query></iq>"
        )));
    }

    // -- bookmarks --

    #[test]
    fn bookmarks_xep_0402_examples() {
        // XEP-0402 Example 5, "Server returns the bookmarks".
        let reply = xml(
            "<iq type='result' to='juliet@capulet.lit/balcony' id='retrieve1'>
              <pubsub xmlns='http://jabber.org/protocol/pubsub'>
                <items node='urn:xmpp:bookmarks:1'>
                  <item id='theplay@conference.shakespeare.lit'>
                    <conference xmlns='urn:xmpp:bookmarks:1' name='The Play&apos;s the Thing' autojoin='true'><nick>JC</nick></conference>
                  </item>
                  <item id='orchard@conference.shakespeare.lit'>
                    <conference xmlns='urn:xmpp:bookmarks:1' name='The Orcard' autojoin='1'>
                      <nick>JC</nick>
                      <extensions><state xmlns='http://myclient.example/bookmark/state' minimized='true'/></extensions>
                    </conference>
                  </item>
                </items></pubsub></iq>",
        );
        let items = reply
            .get_child("pubsub", ns::PUBSUB)
            .unwrap()
            .get_child("items", ns::PUBSUB)
            .unwrap();
        let marks: Vec<Bookmark> = items
            .children()
            .map(|i| parse_bookmark(i.attr("id").unwrap(), i.children().next().unwrap()).unwrap())
            .collect();
        assert_eq!(marks[0].room.as_str(), "theplay@conference.shakespeare.lit");
        assert_eq!(marks[0].name.as_deref(), Some("The Play's the Thing"));
        assert!(marks[0].autojoin && marks[1].autojoin);
        assert_eq!(marks[0].nick.as_deref(), Some("JC"));
        assert_eq!(marks[0].extensions, None);
        let ext = marks[1].extensions.as_deref().unwrap();
        assert!(
            ext.contains("http://myclient.example/bookmark/state"),
            "{ext}"
        );
        // Republished, the extensions go back unchanged.
        let again = bookmark_element(&marks[1]);
        let back = parse_bookmark("orchard@conference.shakespeare.lit", &again).unwrap();
        assert_eq!(back, marks[1]);
        let state = again
            .get_child("extensions", NS_BOOKMARKS)
            .unwrap()
            .get_child("state", "http://myclient.example/bookmark/state")
            .unwrap();
        assert_eq!(state.attr("minimized"), Some("true"));
        // XEP-0402 Example 2, the minimalist conference element.
        let min = parse_bookmark(
            "a@b",
            &"<conference xmlns='urn:xmpp:bookmarks:1'/>"
                .parse()
                .unwrap(),
        )
        .unwrap();
        assert!(!min.autojoin && min.name.is_none() && min.nick.is_none());
    }

    #[test]
    fn bookmark_payload_and_pep_items() {
        let b = Bookmark {
            room: jid("family@conference.example.org"),
            name: Some("Family".into()),
            autojoin: true,
            nick: Some("Mum".into()),
            password: Some("secret".into()),
            extensions: None,
        };
        let e = bookmark_element(&b);
        assert!(e.is("conference", NS_BOOKMARKS));
        assert_eq!(e.attr("autojoin"), Some("true"));
        assert_eq!(e.get_child("nick", NS_BOOKMARKS).unwrap().text(), "Mum");
        assert_eq!(
            e.get_child("password", NS_BOOKMARKS).unwrap().text(),
            "secret"
        );
        let item = PepItem {
            id: Some("family@conference.example.org".into()),
            payload: String::from(&e),
        };
        assert_eq!(parse_bookmark_item(&item).unwrap(), b);
        assert!(!format!("{b:?}").contains("secret"));
        assert!(!format!("{b:?}").contains("family@"));
        let cfg = bookmarks_node_config();
        assert_eq!(cfg.access_model.as_deref(), Some("whitelist"));
        assert_eq!(cfg.max_items.as_deref(), Some("max"));
        // XEP-0402 Example 10, "Client removes a new bookmark".
        let r = bookmark_retract_query(&jid("theplay@conference.shakespeare.lit"));
        let retract = r.get_child("retract", ns::PUBSUB).unwrap();
        assert_eq!(retract.attr("node"), Some(NS_BOOKMARKS));
        assert_eq!(retract.attr("notify"), Some("true"));
        assert_eq!(
            retract.get_child("item", ns::PUBSUB).unwrap().attr("id"),
            Some("theplay@conference.shakespeare.lit")
        );
    }

    #[test]
    fn hostile_bookmarks() {
        let conf = |inner: &str| -> Element {
            format!("<conference xmlns='urn:xmpp:bookmarks:1' autojoin='yes' name='{}'>{inner}</conference>", "n".repeat(MAX_NAME_BYTES + 10))
                .parse()
                .unwrap()
        };
        // Ids that are not bare JIDs; payloads that are not conferences.
        assert!(parse_bookmark("room@muc.example/nick", &conf("")).is_none());
        assert!(parse_bookmark("", &conf("")).is_none());
        assert!(parse_bookmark("@@", &conf("")).is_none());
        let other: Element = "<conference xmlns='storage:bookmarks'/>".parse().unwrap();
        assert!(parse_bookmark("a@b", &other).is_none());
        // Garbage autojoin is false; long names cut; bad nicks and passwords dropped;
        // oversized extensions not kept.
        let big = format!(
            "<extensions><x xmlns='urn:x'>{}</x></extensions>",
            "x".repeat(MAX_EXTENSIONS_BYTES)
        );
        let b = parse_bookmark(
            "a@b",
            &conf(&format!(
                "<nick>{}</nick><password>{}</password>{big}",
                "n".repeat(MAX_NICK_BYTES + 1),
                "p".repeat(MAX_PASSWORD_BYTES + 1)
            )),
        )
        .unwrap();
        assert!(!b.autojoin);
        assert_eq!(b.name.as_ref().unwrap().len(), MAX_NAME_BYTES);
        assert_eq!((b.nick, b.password, b.extensions), (None, None, None));
        assert!(parse_bookmark_item(&PepItem {
            id: None,
            payload: "<conference xmlns='urn:xmpp:bookmarks:1'/>".into()
        })
        .is_none());
        assert!(parse_bookmark_item(&PepItem {
            id: Some("a@b".into()),
            payload: "<conference".into()
        })
        .is_none());
    }

    #[test]
    fn bookmark_notifications_xep_examples_and_spoofs() {
        let own = jid("juliet@capulet.lit");
        // XEP-0402 Examples 12 and 14.
        let added_from = |from: &str| {
            xml(&format!(
                "<message {from} to='juliet@capulet.lit/balcony' type='headline' id='new-room1'>
                  <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:bookmarks:1'>
                    <item id='theplay@conference.shakespeare.lit'>
                      <conference xmlns='urn:xmpp:bookmarks:1' name='The Play&apos;s the Thing' autojoin='1'><nick>JC</nick></conference>
                    </item></items></event></message>"
            ))
        };
        let added = added_from("from='juliet@capulet.lit'");
        let changes = parse_bookmarks_event(&added, &own);
        let [BookmarkChange::Set(b)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert!(b.autojoin);
        let removed = xml(
            "<message from='juliet@capulet.lit' to='juliet@capulet.lit/balcony' type='headline' id='removed-room1'>
              <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:bookmarks:1'>
                <retract id='theplay@conference.shakespeare.lit'/></items></event></message>",
        );
        assert_eq!(
            parse_bookmarks_event(&removed, &own),
            vec![BookmarkChange::Removed(jid(
                "theplay@conference.shakespeare.lit"
            ))]
        );
        // No from: from our own server for us.
        assert_eq!(parse_bookmarks_event(&added_from(""), &own).len(), 1);
        // From anyone else, or from a full JID of ours: ignored. Another node: ignored.
        for from in [
            "romeo@montague.lit",
            "juliet@capulet.lit/balcony",
            "capulet.lit",
        ] {
            let m = added_from(&format!("from='{from}'"));
            assert!(parse_bookmarks_event(&m, &own).is_empty(), "{from}");
        }
        let other_node = xml(
            "<message from='juliet@capulet.lit'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:omemo:2:devices'><item id='current'><conference xmlns='urn:xmpp:bookmarks:1'/></item></items></event></message>",
        );
        assert!(parse_bookmarks_event(&other_node, &own).is_empty());
    }

    #[test]
    fn room_archive_results_come_from_that_room_about_that_room() {
        let room = BareJid::parse("r@muc.example.org").unwrap();
        let result = |outer: &str, inner: &str| {
            xml(&format!(
                "<message from='{outer}' to='me@example.org/phone'><result xmlns='urn:xmpp:mam:2' queryid='q' id='a1'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2024-05-01T10:00:00Z'/><message xmlns='jabber:client' from='{inner}' type='groupchat'><body>old</body></message></forwarded></result></message>"
            ))
        };
        let m =
            parse_room_archive_result(&result("r@muc.example.org", "r@muc.example.org/bob"), &room)
                .unwrap();
        assert_eq!(m.msg.stanza_id.as_deref(), Some("a1"));
        assert_eq!(m.msg.nick.as_deref(), Some("bob"));
        assert_eq!(m.msg.timestamp_ms, Some(1_714_557_600_000));
        assert!(m.archived);
        // From an occupant, from another room, or about another room: refused.
        for (outer, inner) in [
            ("r@muc.example.org/bob", "r@muc.example.org/bob"),
            ("s@muc.example.org", "r@muc.example.org/bob"),
            ("r@muc.example.org", "s@muc.example.org/bob"),
        ] {
            assert!(parse_room_archive_result(&result(outer, inner), &room).is_none());
        }
        let q = room_archive_query("q1", &room, &RoomQuery::After("a1".into()));
        assert_eq!(q.attr("to"), Some("r@muc.example.org"));
    }
}
