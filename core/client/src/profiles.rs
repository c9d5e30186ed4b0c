//! Profiles in the client: the nickname (XEP-0172) and avatar (XEP-0084, with the XEP-0153
//! vCard photo as the fallback) of each contact and of the account itself, and the vCard4
//! (XEP-0292) basics read and written on demand.
//!
//! Our `+notify` features make the server push a contact's avatar metadata and nickname
//! as they change, and their current ones on each login; pictures are fetched once, by
//! their SHA-1, and kept in the database. Only contacts in the roster (and our own
//! account) are listened to: anyone can send a message shaped like a notification.
//!
//! What we publish is readable by those who see our presence (the "presence" access
//! model), as our picture and name are for contacts. For the same reason our avatar is
//! not put in the vcard-temp, which servers give to anyone who asks; contacts whose
//! clients know only XEP-0153 see no picture of ours, and theirs reach us through it.

use std::collections::HashMap;
use std::sync::Arc;

use linnet_store::{AccountId, AvatarSource, StoreError, Tx};
use linnet_xmpp::profile::{
    Access, AvatarMetadata, PhotoUpdate, Vcard4, Vcard4Entry, MAX_AVATAR_BYTES, NS_AVATAR_METADATA,
    NS_NICK,
};
use linnet_xmpp::{BareJid, PepItem, Session};

use crate::{lock, Client, ClientError, Inner, Result};

pub use linnet_store::AvatarImage;

/// The basics of a vCard4 profile, as an app shows and edits them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProfileCard {
    pub full_name: Option<String>,
    /// "About me".
    pub note: Option<String>,
    pub urls: Vec<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
}

/// Longest text field of a card we publish, and most values of one kind.
const MAX_CARD_TEXT_BYTES: usize = 4096;
const MAX_CARD_VALUES: usize = 16;

/// What applying events leaves to do once they are committed, in the order it arose.
#[derive(Default)]
pub(crate) struct ProfileEffects {
    /// JIDs whose nickname or avatar changed.
    changed: Vec<String>,
    /// Per JID, in order: a picture to fetch, or the source that settled the avatar
    /// without one (so that an earlier fetch of that source or a lesser one must not
    /// overwrite it).
    wants: Vec<(BareJid, Want)>,
}

enum Want {
    Fetch(Fetch),
    Settled(AvatarSource),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Fetch {
    Pep { id: String, media_type: String },
    Vcard { hash: String },
}

impl Fetch {
    fn id(&self) -> &str {
        match self {
            Fetch::Pep { id, .. } => id,
            Fetch::Vcard { hash } => hash,
        }
    }

    fn source(&self) -> AvatarSource {
        match self {
            Fetch::Pep { .. } => AvatarSource::Pep,
            Fetch::Vcard { .. } => AvatarSource::Vcard,
        }
    }
}

/// The picture each JID's avatar is waiting for, and where it was announced (see
/// `ProfileEffects::wants`).
pub(crate) type Wanted = HashMap<(AccountId, BareJid), (String, AvatarSource)>;

fn is_wanted(wanted: &Wanted, key: &(AccountId, BareJid), id: &str) -> bool {
    wanted.get(key).is_some_and(|(w, _)| w == id)
}

fn listened_to(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    from: &BareJid,
) -> std::result::Result<bool, StoreError> {
    Ok(from == own || tx.contact(account, from.as_str())?.is_some())
}

/// A PEP notification: a nickname or avatar metadata of a contact or of ours.
pub(crate) fn on_pep(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    from: &BareJid,
    node: &str,
    items: &[PepItem],
    fx: &mut ProfileEffects,
) -> std::result::Result<(), StoreError> {
    if node != NS_NICK && node != NS_AVATAR_METADATA {
        return Ok(());
    }
    // Both nodes hold one current item: a notification's last item is it.
    let Some(item) = items.last() else {
        return Ok(());
    };
    if !listened_to(tx, account, own, from)? {
        return Ok(());
    }
    if node == NS_NICK {
        let Ok(nick) = linnet_xmpp::profile::nick_from_xml(&item.payload) else {
            return Ok(());
        };
        if tx.set_profile_nick(account, from.as_str(), nick.as_deref())? {
            fx.changed.push(from.as_str().to_owned());
        }
        return Ok(());
    }
    let Ok(meta) = AvatarMetadata::from_xml(&item.payload) else {
        return Ok(());
    };
    // Formats hosted at URLs are not fetched (a contact's avatar must not make us contact
    // a third party): one in the data node is needed.
    match meta.pubsub_info() {
        Some(info) if (info.bytes as usize) <= MAX_AVATAR_BYTES => {
            if tx.has_avatar(account, &info.id)? {
                settle(tx, account, from, Some(&info.id), AvatarSource::Pep, fx)?;
            } else {
                let fetch = Fetch::Pep {
                    id: info.id.clone(),
                    media_type: info.media_type.clone(),
                };
                fx.wants.push((from.clone(), Want::Fetch(fetch)));
            }
        }
        _ => settle(tx, account, from, None, AvatarSource::Pep, fx)?,
    }
    Ok(())
}

fn settle(
    tx: &Tx<'_>,
    account: AccountId,
    jid: &BareJid,
    avatar: Option<&str>,
    source: AvatarSource,
    fx: &mut ProfileEffects,
) -> std::result::Result<(), StoreError> {
    if tx.set_profile_avatar(account, jid.as_str(), avatar, source)? {
        fx.changed.push(jid.as_str().to_owned());
    }
    fx.wants.push((jid.clone(), Want::Settled(source)));
    Ok(())
}

/// The XEP-0153 hash of an available presence: the fallback, for those who have never
/// published an XEP-0084 avatar.
pub(crate) fn on_photo(
    tx: &Tx<'_>,
    account: AccountId,
    own: &BareJid,
    from: &BareJid,
    update: &PhotoUpdate,
    fx: &mut ProfileEffects,
) -> std::result::Result<(), StoreError> {
    if !listened_to(tx, account, own, from)? {
        return Ok(());
    }
    let profile = tx.profile(account, from.as_str())?.unwrap_or_default();
    if profile.avatar_source == Some(AvatarSource::Pep) {
        return Ok(());
    }
    match update {
        PhotoUpdate::NotReady => {}
        PhotoUpdate::NoPhoto => settle(tx, account, from, None, AvatarSource::Vcard, fx)?,
        PhotoUpdate::Photo(hash) if profile.avatar.as_deref() == Some(hash.as_str()) => {}
        PhotoUpdate::Photo(hash) if tx.has_avatar(account, hash)? => {
            settle(tx, account, from, Some(hash), AvatarSource::Vcard, fx)?
        }
        PhotoUpdate::Photo(hash) => fx.wants.push((
            from.clone(),
            Want::Fetch(Fetch::Vcard { hash: hash.clone() }),
        )),
    }
    Ok(())
}

/// Shows what changed, and fetches the pictures still missing.
pub(crate) fn after_commit(
    inner: &Arc<Inner>,
    account: AccountId,
    session: &Session,
    fx: ProfileEffects,
) {
    let mut fetches = Vec::new();
    {
        let mut wanted = lock(&inner.avatars_wanted);
        for (jid, want) in fx.wants {
            let key = (account, jid.clone());
            // What a vCard photo says never displaces an XEP-0084 avatar on its way.
            let pending = wanted.get(&key).map(|(_, s)| *s);
            match want {
                Want::Settled(AvatarSource::Vcard) if pending == Some(AvatarSource::Pep) => {}
                Want::Settled(_) => {
                    wanted.remove(&key);
                }
                Want::Fetch(f)
                    if f.source() == AvatarSource::Vcard && pending == Some(AvatarSource::Pep) => {}
                Want::Fetch(f) => {
                    let upgrade =
                        f.source() == AvatarSource::Pep && pending == Some(AvatarSource::Vcard);
                    if upgrade || !is_wanted(&wanted, &key, f.id()) {
                        wanted.insert(key, (f.id().to_owned(), f.source()));
                        fetches.push((jid, f));
                    }
                }
            }
        }
    }
    if !fx.changed.is_empty() {
        shown_changed(inner, account, &fx.changed);
    }
    if !fetches.is_empty() {
        tokio::spawn(fetch_pictures(
            inner.clone(),
            account,
            session.clone(),
            fetches,
        ));
    }
}

fn shown_changed(inner: &Inner, account: AccountId, jids: &[String]) {
    inner.refresh_account(account);
    inner.publish_chat_list();
    let conversations: Vec<_> = {
        let store = inner.store();
        jids.iter()
            .filter_map(|j| store.conversation(account, j, false).ok().flatten())
            .collect()
    };
    for c in conversations {
        inner.conversation_snapshot_changed(c);
    }
}

/// One picture at a time: they are small, and a login brings the avatars of every contact.
async fn fetch_pictures(
    inner: Arc<Inner>,
    account: AccountId,
    session: Session,
    fetches: Vec<(BareJid, Fetch)>,
) {
    for (jid, fetch) in fetches {
        let key = (account, jid.clone());
        if !is_wanted(&lock(&inner.avatars_wanted), &key, fetch.id()) {
            continue;
        }
        let got =
            match &fetch {
                Fetch::Pep { id, media_type } => session
                    .avatar_data(Some(&jid), id)
                    .await
                    .map(|data| Some((data, media_type.clone()))),
                Fetch::Vcard { hash } => session
                    .vcard_temp_photo(Some(&jid), Some(hash))
                    .await
                    .map(|p| {
                        p.map(|p| {
                            let media_type = p
                                .media_type
                                .unwrap_or_else(|| "application/octet-stream".into());
                            (p.data, media_type)
                        })
                    }),
            };
        let (data, media_type) = match got {
            Ok(Some(picture)) => picture,
            Ok(None) => {
                tracing::debug!(account = account.0, "announced avatar not found");
                lock(&inner.avatars_wanted).remove(&key);
                continue;
            }
            Err(e) => {
                // Tried again when the next notification or presence announces it.
                tracing::debug!(account = account.0, error = %e, "avatar not fetched");
                lock(&inner.avatars_wanted).remove(&key);
                continue;
            }
        };
        let source = fetch.source();
        let changed = {
            // Held across the write so that a newer notification settled in between is
            // not overwritten (it removes or replaces the wanted id under this lock).
            let mut wanted = lock(&inner.avatars_wanted);
            if !is_wanted(&wanted, &key, fetch.id()) {
                continue;
            }
            wanted.remove(&key);
            inner.store().transaction(|tx| {
                if source == AvatarSource::Vcard
                    && tx
                        .profile(account, jid.as_str())?
                        .and_then(|p| p.avatar_source)
                        == Some(AvatarSource::Pep)
                {
                    return Ok(false);
                }
                tx.put_avatar(account, fetch.id(), &media_type, &data)?;
                tx.set_profile_avatar(account, jid.as_str(), Some(fetch.id()), source)
            })
        };
        match changed {
            Ok(true) => shown_changed(&inner, account, &[jid.as_str().to_owned()]),
            Ok(false) => {}
            Err(e) => tracing::warn!(account = account.0, error = %e, "avatar not stored"),
        }
    }
}

fn check_card_text(what: &str, value: &str) -> Result<()> {
    if value.len() > MAX_CARD_TEXT_BYTES {
        return Err(ClientError::BadInput(format!("{what} too long")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ClientError::BadInput(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

fn check_card(card: &ProfileCard) -> Result<()> {
    for (what, v) in [("name", &card.full_name), ("note", &card.note)] {
        if let Some(v) = v {
            check_card_text(what, v)?;
        }
    }
    for (what, values) in [
        ("URL", &card.urls),
        ("email", &card.emails),
        ("phone", &card.phones),
    ] {
        if values.len() > MAX_CARD_VALUES {
            return Err(ClientError::BadInput(format!("too many {what}s")));
        }
        for v in values {
            if v.trim().is_empty() || v.contains('\n') {
                return Err(ClientError::BadInput(format!("empty or multi-line {what}")));
            }
            check_card_text(what, v)?;
        }
    }
    Ok(())
}

/// `values` as vCard entries, keeping the types an existing entry of the same value had.
fn entries(values: &[String], existing: &[Vcard4Entry]) -> Vec<Vcard4Entry> {
    values
        .iter()
        .map(|v| {
            existing
                .iter()
                .find(|e| e.value == *v)
                .cloned()
                .unwrap_or_else(|| Vcard4Entry::new(v.clone()))
        })
        .collect()
}

fn card_of(v: Vcard4) -> ProfileCard {
    ProfileCard {
        full_name: v.full_name,
        note: v.note,
        urls: v.urls,
        emails: v.emails.into_iter().map(|e| e.value).collect(),
        phones: v.tels.into_iter().map(|e| e.value).collect(),
    }
}

impl Client {
    /// Publishes `image` as our avatar for our contacts to see. Send PNG for the widest
    /// reach (XEP-0084 asks for it), scaled to a few hundred pixels: the server's stanza
    /// limit bounds it, and a picture over it is refused before anything is sent.
    pub async fn set_avatar(
        &self,
        account: AccountId,
        image: &[u8],
        media_type: &str,
    ) -> Result<()> {
        let session = self.session(account)?;
        let info = session
            .publish_avatar(image, media_type, None, None, Access::Presence)
            .await?;
        let own = session.own_jid().clone();
        let changed = self.inner.store().transaction(|tx| {
            tx.put_avatar(account, &info.id, media_type, image)?;
            tx.set_profile_avatar(account, own.as_str(), Some(&info.id), AvatarSource::Pep)
        })?;
        lock(&self.inner.avatars_wanted).remove(&(account, own.clone()));
        if changed {
            shown_changed(&self.inner, account, &[own.as_str().to_owned()]);
        }
        Ok(())
    }

    /// Withdraws our avatar.
    pub async fn remove_avatar(&self, account: AccountId) -> Result<()> {
        let session = self.session(account)?;
        session.remove_avatar().await?;
        let own = session.own_jid().clone();
        let changed = self.inner.store().transaction(|tx| {
            tx.set_profile_avatar(account, own.as_str(), None, AvatarSource::Pep)
        })?;
        lock(&self.inner.avatars_wanted).remove(&(account, own.clone()));
        if changed {
            shown_changed(&self.inner, account, &[own.as_str().to_owned()]);
        }
        Ok(())
    }

    /// Publishes the name our contacts see when they have not named us themselves;
    /// `None` withdraws it.
    pub async fn set_nickname(&self, account: AccountId, nick: Option<&str>) -> Result<()> {
        let nick = match nick.map(str::trim) {
            None | Some("") => None,
            Some(n) => Some(
                linnet_xmpp::profile::clean_nick(n)
                    .filter(|c| c == n)
                    .ok_or_else(|| {
                        ClientError::BadInput("nickname too long or with control characters".into())
                    })?,
            ),
        };
        let session = self.session(account)?;
        session
            .publish_nick(nick.as_deref(), Access::Presence)
            .await?;
        let own = session.own_jid().as_str().to_owned();
        if self
            .inner
            .store()
            .transaction(|tx| tx.set_profile_nick(account, &own, nick.as_deref()))?
        {
            shown_changed(&self.inner, account, &[own]);
        }
        Ok(())
    }

    /// The picture `id` (an `avatar` of the snapshot), as held on this device.
    pub fn avatar(&self, account: AccountId, id: &str) -> Result<Option<AvatarImage>> {
        Ok(self.inner.store().avatar(account, id)?)
    }

    /// The vCard4 profile `jid` published (ours when it is our JID); empty when none.
    pub async fn profile_card(&self, account: AccountId, jid: &str) -> Result<ProfileCard> {
        let jid = BareJid::parse(jid)?;
        let session = self.session(account)?;
        let who = (jid != *session.own_jid()).then_some(&jid);
        Ok(session
            .fetch_vcard4(who)
            .await?
            .map(card_of)
            .unwrap_or_default())
    }

    /// Publishes `card` as our vCard4 profile, for our contacts. Whatever else our card
    /// held (set by another client) is kept.
    pub async fn set_profile_card(&self, account: AccountId, card: &ProfileCard) -> Result<()> {
        check_card(card)?;
        let session = self.session(account)?;
        let mut vcard = session.fetch_vcard4(None).await?.unwrap_or_default();
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        vcard.full_name = text(&card.full_name);
        vcard.note = text(&card.note);
        vcard.urls = card.urls.iter().map(|u| u.trim().to_owned()).collect();
        vcard.emails = entries(&card.emails, &vcard.emails);
        vcard.tels = entries(&card.phones, &vcard.tels);
        session.publish_vcard4(&vcard, Access::Presence).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_with_bad_fields_are_refused() {
        let ok = ProfileCard {
            full_name: Some("Ada".into()),
            note: Some("line one\nline two".into()),
            urls: vec!["https://example.org".into()],
            emails: vec!["ada@example.org".into()],
            phones: vec!["tel:+1-555-0100".into()],
        };
        check_card(&ok).unwrap();
        let mut bad = ok.clone();
        bad.full_name = Some("a\u{7}b".into());
        assert!(check_card(&bad).is_err());
        let mut bad = ok.clone();
        bad.emails = vec!["a\nb".into()];
        assert!(check_card(&bad).is_err());
        let mut bad = ok.clone();
        bad.urls = vec!["https://example.org".into(); MAX_CARD_VALUES + 1];
        assert!(check_card(&bad).is_err());
        let mut bad = ok;
        bad.note = Some("x".repeat(MAX_CARD_TEXT_BYTES + 1));
        assert!(check_card(&bad).is_err());
    }

    #[test]
    fn entries_keep_the_types_of_values_kept() {
        let existing = vec![Vcard4Entry {
            value: "ada@example.org".into(),
            types: vec!["work".into()],
        }];
        let out = entries(
            &["ada@example.org".into(), "ada@home.example".into()],
            &existing,
        );
        assert_eq!(out[0].types, vec!["work".to_owned()]);
        assert!(out[1].types.is_empty());
    }
}
