//! OMEMO in group chats (XEP-0384 §6.5). A group's messages are encrypted for every
//! member's devices and our own other devices, when the room shows everyone's real address
//! to members (non-anonymous) and lets only members in (members-only): that is what
//! `create_group` makes. The recipients are the room's members, admins and owners as read
//! on each join and kept up to date from presences (`groups`), offline members included.
//!
//! The choice is made when the message goes out, not when it is written: right after a
//! join the room's configuration and members may not be known yet, and guessing "public"
//! would send a private group's first message in the clear. So a group message waits in the
//! outbox as [`KIND_GROUP_TO_ENCRYPT`] until we are in the room and have read it; it then
//! becomes an ordinary group message (`groups::KIND_GROUPCHAT`) holding the stanza, sent
//! again as it is if the room lost it.
//!
//! With the conversation's policy `Auto`, a group that is not private, or that has a member
//! known to have no OMEMO device, gets the message in the clear (as a 1:1 chat with a
//! contact without OMEMO does); once one message went encrypted the policy becomes `Omemo`
//! and no later message falls back. With `Omemo`, a member nobody can encrypt for fails the
//! message with a reason naming them. An encrypted file's link never goes in the clear.

use super::*;
use linnet_store::{MessageRecord, RoomRecord};

/// Outbox kind of a group message still to be prepared (encrypted or not, see the module's
/// documentation); its payload is the message's extras, as for [`KIND_TO_ENCRYPT`].
pub(crate) const KIND_GROUP_TO_ENCRYPT: &str = "omemo-group";

/// Members shown in a reason, at most.
const NAMED_IN_REASON: usize = 5;

pub(super) async fn send_one(
    inner: &Arc<Inner>,
    account: AccountId,
    slot: &Arc<Mutex<Option<Session>>>,
    session: &Session,
    entry: &OutboxEntry,
    message: MessageRecord,
    fetched: &mut HashSet<(BareJid, OmemoVersion)>,
) -> Result<(), SendError> {
    let c = message.conversation;
    if !inner.group_ready(c) {
        return Err(SendError::NotYet);
    }
    let (room, policy, members) = {
        let store = inner.store();
        let room = store
            .room(c)?
            .ok_or_else(|| SendError::Never("no longer a group".into()))?;
        let policy = store.encryption_policy(c)?;
        let members = store.room_members(c)?;
        (room, policy, members)
    };
    let room_jid =
        BareJid::parse(&room.jid).map_err(|_| SendError::Never("bad group address".into()))?;
    let own = session.own_jid().clone();
    let origin = message
        .origin_id
        .clone()
        .ok_or_else(|| SendError::Never("message without id".into()))?;
    let extras = linnet_xmpp::rich::Extras::from_xml(&entry.payload)
        .ok_or_else(|| SendError::Never("unreadable queued message".into()))?;
    let is_file = linnet_xmpp::files::AesgcmUrl::from_body(&message.body).is_some();
    let auto = policy == EncryptionPolicy::Auto;
    if !private(&room) {
        if auto && !is_file {
            return send_plain(inner, slot, session, entry, &room_jid, &message, &extras);
        }
        return Err(SendError::Never(
            "this group is not private (members-only, with members' addresses visible): its \
             messages cannot be encrypted"
                .into(),
        ));
    }
    let recipients: Vec<BareJid> = members
        .iter()
        .filter(|m| matches!(m.affiliation.as_str(), "owner" | "admin" | "member"))
        .filter_map(|m| BareJid::parse(&m.jid).ok())
        .filter(|j| *j != own)
        .collect();
    if recipients.is_empty() {
        if auto && !is_file {
            return send_plain(inner, slot, session, entry, &room_jid, &message, &extras);
        }
        return Err(SendError::Never(
            "no other member of this group to encrypt for".into(),
        ));
    }
    let device_id = own_device(inner, account).await?;
    for jid in recipients.iter().chain(std::iter::once(&own)) {
        // Once per session, as for a contact: members who are not contacts send us no
        // notification of a changed list.
        for (_, xv) in VERSIONS {
            if fetched.insert((jid.clone(), xv)) {
                if let Err(e) = fetch_device_list(inner, account, session, jid, xv).await {
                    fetched.remove(&(jid.clone(), xv));
                    return Err(e);
                }
            }
        }
    }
    let mut without: Vec<BareJid> = Vec::new();
    let mut all: Vec<Target> = Vec::new();
    for jid in &recipients {
        let found = targets(inner, account, jid, None)?;
        if found.is_empty() {
            without.push(jid.clone());
        }
        all.extend(found);
    }
    if !without.is_empty() {
        // Members whose every device stopped answering: never a reason for the clear.
        let mut stale = Vec::new();
        for j in &without {
            if crate::devices::all_stale(&inner.store(), account, j)?.is_some() {
                stale.push(j.clone());
            }
        }
        if !stale.is_empty() {
            return Err(SendError::Never(format!(
                "the OMEMO devices of {} are stale (none has answered our messages for long): \
                 one must write first",
                named(&stale)
            )));
        }
        let known_none = {
            let mut store = inner.store();
            store.transaction(|tx| {
                for j in &without {
                    if may_have_devices(tx, account, j)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            })?
        };
        if auto && !is_file && known_none {
            return send_plain(inner, slot, session, entry, &room_jid, &message, &extras);
        }
        return Err(SendError::Never(format!(
            "{} no OMEMO device to encrypt for: {}",
            if without.len() == 1 {
                "this member has"
            } else {
                "these members have"
            },
            named(&without)
        )));
    }
    all.extend(targets(inner, account, &own, Some(device_id))?);
    for t in &all {
        if !distrusted(inner, account, t)? {
            ensure_session(inner, account, session, &own, device_id, t, false).await?;
        }
    }
    let guard = lock(slot);
    if !live(&guard, session) || !inner.group_joined(c) {
        return Err(SendError::Later("session ended".into()));
    }
    let sealed = seal_entry(
        inner,
        &Sealing {
            account,
            own: &own,
            device_id,
            to: Destination::Group(&room_jid),
            recipients: &recipients,
            entry,
            message: &message,
            extras: &extras,
            targets: &all,
            kind: crate::groups::KIND_GROUPCHAT,
            policy,
        },
    )?;
    let stanza = match sealed {
        Err(Sealed::Missing {
            untrusted,
            unreachable,
        }) => {
            let mut why = Vec::new();
            if !untrusted.is_empty() {
                why.push(format!(
                    "no trusted OMEMO device of {} (verify or trust one, then send again)",
                    named(&untrusted)
                ));
            }
            if !unreachable.is_empty() {
                why.push(format!(
                    "no device of {} could be reached",
                    named(&unreachable)
                ));
            }
            return Err(SendError::Never(why.join("; ")));
        }
        Err(Sealed::Stanza(..)) => return Err(SendError::Never("OMEMO encryption failed".into())),
        Ok(s) => s,
    };
    let _ = session.send_raw_tracked(&stanza, &origin);
    drop(guard);
    tracing::debug!(
        account = account.0,
        devices = all.len(),
        "encrypted group message sent"
    );
    inner.conversation_changed(c);
    Ok(())
}

/// Whether the room is one whose messages are encrypted (XEP-0384 §6.5: non-anonymous,
/// and members-only so that the member list is everyone who can read them).
fn private(room: &RoomRecord) -> bool {
    room.members_only && room.non_anonymous
}

fn named(jids: &[BareJid]) -> String {
    let mut out: Vec<&str> = jids
        .iter()
        .take(NAMED_IN_REASON)
        .map(BareJid::as_str)
        .collect();
    let more = jids.len().saturating_sub(NAMED_IN_REASON);
    let more = format!("{more} more");
    if jids.len() > NAMED_IN_REASON {
        out.push(&more);
    }
    out.join(", ")
}

/// Sends the message to the room in the clear, in place of the entry.
fn send_plain(
    inner: &Inner,
    slot: &Arc<Mutex<Option<Session>>>,
    session: &Session,
    entry: &OutboxEntry,
    room: &BareJid,
    message: &MessageRecord,
    extras: &linnet_xmpp::rich::Extras,
) -> Result<(), SendError> {
    let origin = message
        .origin_id
        .as_deref()
        .ok_or_else(|| SendError::Never("message without id".into()))?;
    let stanza = linnet_xmpp::stanza_to_string(&linnet_xmpp::muc::groupchat_message(
        room,
        &extras.wire_body(&message.body),
        origin,
        extras,
    ));
    let guard = lock(slot);
    if !live(&guard, session) || !inner.group_joined(message.conversation) {
        return Err(SendError::Later("session ended".into()));
    }
    inner
        .store()
        .outbox_replace(entry.id, crate::groups::KIND_GROUPCHAT, &stanza)?;
    let _ = session.send_raw_tracked(&stanza, origin);
    drop(guard);
    Ok(())
}

/// The sender of a group message by real JID, for decrypting it: ourselves for our own
/// (from another device), else the occupant's address as the room showed it. An archived
/// message carries it from the room's archive, which knew it when the message was sent
/// (the nickname may be someone else's now); a live one is from an occupant whose
/// presence told us. `None`: the room hides it, so the message cannot be decrypted.
pub(crate) fn group_sender(
    ours: bool,
    own: &BareJid,
    archived_jid: Option<&BareJid>,
    occupant_jid: Option<&str>,
    member_jid: Option<&str>,
) -> Option<BareJid> {
    if ours {
        return Some(own.clone());
    }
    if let Some(j) = archived_jid {
        return Some(j.clone());
    }
    occupant_jid
        .or(member_jid)
        .and_then(|j| BareJid::parse(j).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    #[test]
    fn the_sender_is_ours_then_the_archives_then_the_occupants() {
        let own = jid("me@example.org");
        let archived = jid("then@example.org");
        let got = |ours, a: Option<&BareJid>, o: Option<&str>, m: Option<&str>| {
            group_sender(ours, &own, a, o, m).map(|j| j.as_str().to_owned())
        };
        assert_eq!(
            got(true, Some(&archived), Some("x@e.org"), None).as_deref(),
            Some("me@example.org")
        );
        assert_eq!(
            got(false, Some(&archived), Some("now@example.org"), None).as_deref(),
            Some("then@example.org"),
            "the nickname may be someone else's now"
        );
        assert_eq!(
            got(false, None, Some("now@example.org"), Some("m@example.org")).as_deref(),
            Some("now@example.org")
        );
        assert_eq!(
            got(false, None, None, Some("m@example.org")).as_deref(),
            Some("m@example.org")
        );
        assert_eq!(got(false, None, None, None), None);
        assert_eq!(got(false, None, Some("not a jid@@"), None), None);
    }

    #[test]
    fn reasons_name_a_few_members() {
        let few: Vec<BareJid> = (0..2).map(|i| jid(&format!("m{i}@e.org"))).collect();
        assert_eq!(named(&few), "m0@e.org, m1@e.org");
        let many: Vec<BareJid> = (0..8).map(|i| jid(&format!("m{i}@e.org"))).collect();
        assert_eq!(
            named(&many),
            "m0@e.org, m1@e.org, m2@e.org, m3@e.org, m4@e.org, 3 more"
        );
    }
}
