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
//!
//! The picture we publish is never the one the app hands us: a camera photo is megabytes,
//! past any server's stanza limit. It is decoded (whatever its format), cropped to a
//! centred square, scaled down to at most 192 pixels a side (`AVATAR_MAX_SIDE`), and
//! published as the PNG XEP-0084 requires in the data node.

use std::collections::HashMap;
use std::sync::Arc;

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::{self, FilterType};
use image::metadata::Orientation;
use image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageError, ImageReader, Limits,
    RgbaImage,
};
use linnet_store::{AccountId, AvatarSource, StoreError, Tx};
use linnet_xmpp::profile::{
    Access, AvatarMetadata, PhotoUpdate, ProfileError, Vcard4, Vcard4Entry, MAX_AVATAR_BYTES,
    NS_AVATAR_METADATA, NS_NICK,
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

/// Longest side, in pixels, of the avatar we publish. XEP-0084 has set no size since its
/// version 0.11 (the 32–96 px, 64 recommended, of its drafts lives on in XEP-0153) and
/// asks receivers not to scale a picture up, so what we send is the sharpest anyone
/// shows: 192 px is that old 64 px at the 3× density of today's phone screens, within the
/// 255 px its schema allowed before 1.1.2, and even incompressible its PNG, in base64,
/// fits the 256 KiB stanza limit Prosody announces by default.
const AVATAR_MAX_SIDE: u32 = 192;

/// Sides tried, in order, when the server's stanza limit refuses the PNG at the one
/// before (a detailed photo at 192 px can pass the 64 KiB assumed for servers that
/// announce no limit). Below 64 px a face is no longer recognisable.
const AVATAR_SIDES: [u32; 5] = [AVATAR_MAX_SIDE, 160, 128, 96, 64];

/// Bounds on what a picture may decode to: a few kilobytes can claim gigapixels. The
/// largest camera photos (about 50 MP) stay within them.
const MAX_SOURCE_SIDE: u32 = 8192;
const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// The centred square of a decoded picture, reduced to at most twice the largest side we
/// publish so that the final scaling works on little, and the orientation its file asked
/// for, still to apply (a centred square rotates into the same square).
struct AvatarSquare {
    pixels: RgbaImage,
    orientation: Orientation,
}

impl AvatarSquare {
    fn side(&self) -> u32 {
        self.pixels.width()
    }
}

/// A PNG ready to publish.
struct ScaledAvatar {
    png: Vec<u8>,
    side: u16,
}

fn avatar_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    limits
}

fn unreadable(e: ImageError) -> ClientError {
    match e {
        ImageError::Limits(_) => ClientError::BadInput(format!(
            "picture too large to decode (at most {MAX_SOURCE_SIDE}×{MAX_SOURCE_SIDE} pixels)"
        )),
        ImageError::Unsupported(_) => ClientError::BadInput(
            "not a picture in a format we read (PNG, JPEG, WebP or GIF)".into(),
        ),
        e => ClientError::BadInput(format!("picture could not be decoded: {e}")),
    }
}

/// Decodes `image` (its format guessed from its content) within `limits` and keeps its
/// centred square.
fn avatar_square(image: &[u8], limits: Limits) -> Result<AvatarSquare> {
    if image.is_empty() {
        return Err(ClientError::BadInput("empty picture".into()));
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(image))
        .with_guessed_format()
        .map_err(|e| ClientError::BadInput(format!("picture could not be read: {e}")))?;
    let max_alloc = limits.max_alloc;
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    // The whole decoded picture is allocated at once: `ImageReader::decode` would weigh it
    // against the limits, `into_decoder` (needed for the orientation) leaves it to us.
    if max_alloc.is_some_and(|max| decoder.total_bytes() > max) {
        return Err(unreadable(ImageError::Limits(
            image::error::LimitError::from_kind(image::error::LimitErrorKind::InsufficientMemory),
        )));
    }
    // A photo's rotation lives in its Exif: unreadable Exif is no reason to refuse it.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let decoded = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    let (width, height) = (decoded.width(), decoded.height());
    let side = width.min(height);
    if side == 0 {
        return Err(ClientError::BadInput("picture has no pixels".into()));
    }
    let square = imageops::crop_imm(
        &decoded,
        (width - side) / 2,
        (height - side) / 2,
        side,
        side,
    );
    // Averaging blocks of pixels is fast and does not alias on large reductions; the final
    // filter then works from a copy of at most this size, not from the whole photo.
    let pre = 2 * AVATAR_MAX_SIDE;
    let pixels = if side > pre {
        imageops::thumbnail(&*square, pre, pre)
    } else {
        square.to_image()
    };
    Ok(AvatarSquare {
        pixels,
        orientation,
    })
}

/// `square` scaled down (never up) to at most `max_side`, upright, as a PNG of the fewest
/// channels that keep it (grey, alpha only where transparent).
fn encode_avatar(square: &AvatarSquare, max_side: u32) -> Result<ScaledAvatar> {
    let side = square.side().min(max_side);
    let scaled = if side < square.side() {
        imageops::resize(&square.pixels, side, side, FilterType::CatmullRom)
    } else {
        square.pixels.clone()
    };
    let mut upright = DynamicImage::ImageRgba8(scaled);
    upright.apply_orientation(square.orientation);
    let rgba = upright.into_rgba8();
    let opaque = rgba.pixels().all(|p| p[3] == u8::MAX);
    let grey = rgba.pixels().all(|p| p[0] == p[1] && p[1] == p[2]);
    let (samples, color): (Vec<u8>, _) = match (grey, opaque) {
        (true, true) => (rgba.pixels().map(|p| p[0]).collect(), ExtendedColorType::L8),
        (true, false) => (
            rgba.pixels().flat_map(|p| [p[0], p[3]]).collect(),
            ExtendedColorType::La8,
        ),
        (false, true) => (
            rgba.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect(),
            ExtendedColorType::Rgb8,
        ),
        (false, false) => (rgba.into_raw(), ExtendedColorType::Rgba8),
    };
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, PngFilter::Adaptive)
        .write_image(&samples, side, side, color)
        .map_err(|e| ClientError::Internal(format!("avatar not encoded: {e}")))?;
    if png.len() > MAX_AVATAR_BYTES {
        return Err(ClientError::BadInput(format!(
            "picture still too large once scaled ({} bytes as PNG)",
            png.len()
        )));
    }
    let side = u16::try_from(side)
        .map_err(|_| ClientError::Internal("avatar side out of range".into()))?;
    Ok(ScaledAvatar { png, side })
}

fn blocking_failed(e: tokio::task::JoinError) -> ClientError {
    ClientError::Internal(format!("picture processing failed: {e}"))
}

impl Client {
    /// Publishes `image` as our avatar for our contacts to see. Any PNG, JPEG, WebP or GIF
    /// (first frame) will do, whatever its size: its centred square is published, scaled
    /// down to at most 192×192 pixels (less if the server's stanza limit demands), upright
    /// per its Exif orientation, as PNG. Its format is read from its content: `media_type`
    /// is not consulted, as pickers often say `application/octet-stream`. What cannot be
    /// decoded is refused with [`ClientError::BadInput`] before anything is sent.
    pub async fn set_avatar(
        &self,
        account: AccountId,
        image: &[u8],
        _media_type: &str,
    ) -> Result<()> {
        let session = self.session(account)?;
        let square = {
            let image = image.to_vec();
            tokio::task::spawn_blocking(move || avatar_square(&image, avatar_limits()))
                .await
                .map_err(blocking_failed)??
        };
        let square = Arc::new(square);
        let mut tried = None;
        let mut published = None;
        for side in AVATAR_SIDES {
            let side = side.min(square.side());
            if tried == Some(side) {
                continue;
            }
            tried = Some(side);
            let scaled = {
                let square = square.clone();
                tokio::task::spawn_blocking(move || encode_avatar(&square, side))
                    .await
                    .map_err(blocking_failed)??
            };
            let dim = Some(scaled.side);
            match session
                .publish_avatar(&scaled.png, "image/png", dim, dim, Access::Presence)
                .await
            {
                Ok(info) => {
                    published = Some((info, scaled.png));
                    break;
                }
                // Refused before anything was sent: try smaller.
                Err(ProfileError::TooLarge { .. }) => {
                    tracing::debug!(
                        side,
                        bytes = scaled.png.len(),
                        "avatar too large, scaling down"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        let Some((info, png)) = published else {
            return Err(ClientError::BadInput(format!(
                "picture too large for the server's stanza limit, even scaled down to {0}×{0} \
                 pixels",
                tried.unwrap_or(0)
            )));
        };
        let own = session.own_jid().clone();
        let changed = self.inner.store().transaction(|tx| {
            tx.put_avatar(account, &info.id, &info.media_type, &png)?;
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
    use image::codecs::jpeg::JpegEncoder;
    use image::{GenericImageView, ImageFormat, Rgba};

    fn encoded(img: &RgbaImage, format: ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        match format {
            // JPEG has no alpha.
            ImageFormat::Jpeg => {
                DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(img.clone()).to_rgb8())
                    .write_to(&mut out, format)
                    .unwrap()
            }
            _ => img.write_to(&mut out, format).unwrap(),
        }
        out.into_inner()
    }

    fn gradient(width: u32, height: u32) -> RgbaImage {
        RgbaImage::from_fn(width, height, |x, y| {
            Rgba([(x * 255 / width) as u8, (y * 255 / height) as u8, 128, 255])
        })
    }

    fn scaled(input: &[u8], max_side: u32) -> (Vec<u8>, DynamicImage) {
        let square = avatar_square(input, avatar_limits()).unwrap();
        let out = encode_avatar(&square, max_side).unwrap();
        let png = image::load_from_memory_with_format(&out.png, ImageFormat::Png).unwrap();
        assert_eq!(
            (png.width(), png.height()),
            (u32::from(out.side), u32::from(out.side))
        );
        (out.png, png)
    }

    fn bad_input(r: Result<AvatarSquare>) -> String {
        match r {
            Err(ClientError::BadInput(why)) => why,
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_large_photo_becomes_a_centred_square_png_of_at_most_the_max_side() {
        let jpeg = encoded(&gradient(1000, 600), ImageFormat::Jpeg);
        let (png, out) = scaled(&jpeg, AVATAR_MAX_SIDE);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(out.dimensions(), (AVATAR_MAX_SIDE, AVATAR_MAX_SIDE));
        // The centre of the 1000-pixel-wide gradient, not its left part: red is about 51
        // (x = 200 of 1000) at the square's left edge and about 204 (x = 800) at its right.
        let left = out.get_pixel(0, AVATAR_MAX_SIDE / 2);
        assert!((40..=62).contains(&left[0]), "{left:?}");
        let right = out.get_pixel(AVATAR_MAX_SIDE - 1, AVATAR_MAX_SIDE / 2);
        assert!((192..=214).contains(&right[0]), "{right:?}");
        // Opaque colour: no alpha channel spent.
        assert_eq!(out.color(), image::ColorType::Rgb8);
        // Smaller sides on demand.
        let (_, smaller) = scaled(&jpeg, 96);
        assert_eq!(smaller.dimensions(), (96, 96));
    }

    #[test]
    fn small_pictures_are_cropped_but_never_scaled_up() {
        let png = encoded(&gradient(64, 64), ImageFormat::Png);
        assert_eq!(scaled(&png, AVATAR_MAX_SIDE).1.dimensions(), (64, 64));
        let wide = encoded(&gradient(100, 40), ImageFormat::Png);
        assert_eq!(scaled(&wide, AVATAR_MAX_SIDE).1.dimensions(), (40, 40));
        let tall = encoded(&gradient(30, 500), ImageFormat::WebP);
        assert_eq!(scaled(&tall, AVATAR_MAX_SIDE).1.dimensions(), (30, 30));
        let gif = encoded(&gradient(300, 200), ImageFormat::Gif);
        assert_eq!(scaled(&gif, AVATAR_MAX_SIDE).1.dimensions(), (192, 192));
    }

    #[test]
    fn transparency_is_kept_and_grey_stays_grey() {
        let mut img = gradient(50, 50);
        img.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
        let (_, out) = scaled(&encoded(&img, ImageFormat::Png), AVATAR_MAX_SIDE);
        assert_eq!(out.color(), image::ColorType::Rgba8);
        assert_eq!(out.get_pixel(0, 0)[3], 0);
        let grey = RgbaImage::from_fn(500, 500, |x, _| {
            let v = (x / 2) as u8;
            Rgba([v, v, v, 255])
        });
        let (_, out) = scaled(&encoded(&grey, ImageFormat::Png), AVATAR_MAX_SIDE);
        assert_eq!(out.color(), image::ColorType::L8);
    }

    /// A little-endian Exif block holding only an orientation.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut e = b"II*\0".to_vec();
        e.extend(8u32.to_le_bytes());
        e.extend(1u16.to_le_bytes());
        e.extend(0x0112u16.to_le_bytes());
        e.extend(3u16.to_le_bytes());
        e.extend(1u32.to_le_bytes());
        e.extend(value.to_le_bytes());
        e.extend([0, 0]);
        e.extend(0u32.to_le_bytes());
        e
    }

    #[test]
    fn a_photos_exif_orientation_is_applied() {
        // Red left half, blue right half, as stored; Exif 6 says "rotate 90° clockwise to
        // show", which puts red on top.
        let img = RgbaImage::from_fn(400, 200, |x, _| {
            if x < 200 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 0, 255, 255])
            }
        });
        let rgb = DynamicImage::ImageRgba8(img).to_rgb8();
        let mut jpeg = Vec::new();
        let mut enc = JpegEncoder::new_with_quality(&mut jpeg, 90);
        enc.set_exif_metadata(exif_orientation(6)).unwrap();
        enc.write_image(rgb.as_raw(), 400, 200, ExtendedColorType::Rgb8)
            .unwrap();
        let (_, out) = scaled(&jpeg, AVATAR_MAX_SIDE);
        let top = out.get_pixel(150, 20);
        let bottom = out.get_pixel(150, 180);
        assert!(top[0] > 200 && top[2] < 60, "{top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "{bottom:?}");
    }

    #[test]
    fn what_cannot_be_decoded_is_refused() {
        let why = bad_input(avatar_square(&[], avatar_limits()));
        assert!(why.contains("empty"), "{why}");
        let why = bad_input(avatar_square(b"<html>hello</html>", avatar_limits()));
        assert!(why.contains("format"), "{why}");
        // A PNG signature over garbage.
        let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
        fake.extend((0..4000u32).map(|i| (i * 31) as u8));
        bad_input(avatar_square(&fake, avatar_limits()));
        // A JPEG cut before its frame header (one cut later decodes, its missing part
        // filled in, as browsers show it).
        let jpeg = encoded(&gradient(300, 300), ImageFormat::Jpeg);
        bad_input(avatar_square(&jpeg[..20], avatar_limits()));
        // A format we do not read (a BMP signature).
        let mut bmp = b"BM".to_vec();
        bmp.extend([0; 60]);
        let why = bad_input(avatar_square(&bmp, avatar_limits()));
        assert!(why.contains("format"), "{why}");
    }

    #[test]
    fn pictures_decoding_too_large_are_refused() {
        let wide = RgbaImage::from_pixel(MAX_SOURCE_SIDE + 1, 1, Rgba([9, 9, 9, 255]));
        let why = bad_input(avatar_square(
            &encoded(&wide, ImageFormat::Png),
            avatar_limits(),
        ));
        assert!(why.contains("too large"), "{why}");
        // The memory bound, made small: 100×100 RGBA is 40 000 bytes.
        let mut limits = avatar_limits();
        limits.max_alloc = Some(10_000);
        let png = encoded(&gradient(100, 100), ImageFormat::Png);
        let why = bad_input(avatar_square(&png, limits));
        assert!(why.contains("too large"), "{why}");
    }

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
