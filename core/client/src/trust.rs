//! OMEMO trust: which devices we encrypt for, fingerprints, and verification by the `xmpp:`
//! URIs other clients put in their QR codes.
//!
//! # Policy
//!
//! XEP-0384 §8: a client "MUST NOT use a newly built session to transmit data without
//! ensuring trust first"; how trust is decided is left to the client. Ours, per JID (a
//! contact, and our own account for our other devices):
//!
//! - **Blind trust before verification** (the default, [`TrustPolicy::BlindTrust`], as in
//!   Conversations): while no device of a JID is verified, a device first seen is trusted
//!   blindly ([`DeviceTrust::Blind`]) and encrypted for. Once any device of the JID is
//!   verified, a device first seen is [`DeviceTrust::Undecided`] and gets nothing until the
//!   user verifies or trusts it. Devices trusted blindly before the verification stay
//!   trusted (shown as not verified).
//! - [`TrustPolicy::Manual`]: every device first seen is undecided.
//! - A [`DeviceTrust::Distrusted`] device is never encrypted for. A message whose
//!   recipient has devices but none trusted fails, with the reason; it never falls back
//!   to plaintext.
//! - A device is "first seen" when its identity key is first recorded: when we build a
//!   session from its bundle, or it builds one with us. The same device id met in the other
//!   OMEMO version with the same identity key (compared in Curve25519 form, see below)
//!   keeps the trust it has there; with another key it counts as a new device.
//! - Messages decrypted from devices that are not trusted are shown, never dropped, with
//!   `MessageItem::trust` saying so (the trust the device has now, so a later verification
//!   or distrust shows on the earlier messages too). Empty OMEMO messages (session
//!   completion, heartbeats) carry no content and go to untrusted devices too, as the XEP
//!   allows.
//! - [`TrustDecision::Revoke`] gives a device what the policy would give it if it were
//!   first seen now: blind trust if no other device of the JID is verified, else undecided.
//!
//! # Fingerprints
//!
//! XEP-0384 §8 (0.8): the fingerprint SHOULD be the identity key "in its byte-encoded
//! Curve25519 form", shown as lowercase hex in 8 groups of 8. That is what Conversations,
//! Dino, Gajim and Monal show for OMEMO 0.3 (the key without its 0x05 type byte), and
//! python-omemo shows for both versions; for OMEMO 2 the Ed25519 identity key is converted.
//! So a device has one fingerprint whatever version it speaks, and it is the one other
//! clients show and put in their QR codes.
//!
//! # Verification URIs
//!
//! Conversations (and Dino, Gajim, Monal, Snikket, monocles) show
//! `xmpp:user@host?omemo-sid-<device id>=<fingerprint>;omemo-sid-<id>=<fingerprint>` (an
//! XEP-0147 query, `;`-separated; the hex of the Curve25519 key without 0x05); the account's
//! QR code carries its device and its other devices it has verified. We produce that, and
//! read it together with two other forms:
//! - `omemo2-sid-<id>=<hex>` (Moxxy's, OMEMO 2);
//! - XEP-0434 Trust Message URIs, `xmpp:user@host?trust-message;encryption=urn:xmpp:omemo:2;
//!   trust=<hex>;distrust=<hex>` (Kaidan's): keys without device ids.
//!
//! A value matches a device if it is the device's fingerprint or (OMEMO 2) its Ed25519 key.
//!
//! What a URI does ([`Client::verify_by_uri`]): all at once or nothing. A device id whose
//! recorded key differs from the URI's is a mismatch: nothing changes and the call fails
//! ([`ClientError::Policy`]; it may be an attack, or a stale code). Devices whose keys match
//! are verified (`distrust=` entries distrusted). A device id we have no key for yet is
//! **pre-verified**: its key is recorded as verified, so the device is trusted when it
//! shows up with that key and unusable if it shows up with another (a QR code scanned when
//! first meeting someone must count). Only `omemo-sid-` values, whose form the convention
//! fixes, are recorded so; other keys we do not know are counted as unknown and ignored.

use std::fmt::Write as _;

use linnet_omemo::store::IdentityRecord;
use linnet_omemo::{SessionManager, Trust, Version};
use linnet_store::{AccountId, StoreError, Tx};
use linnet_xmpp::BareJid;
use serde::Serialize;

use crate::{lock, Client, ClientError, DeviceTrust, Inner, Result};

/// How devices first seen are trusted (per account; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustPolicy {
    /// Blind trust before verification: new devices of a JID none of whose devices is
    /// verified are trusted; after a verification, new devices wait for the user.
    #[default]
    BlindTrust,
    /// Every new device waits for the user's decision.
    Manual,
}

/// A user's decision about one device (`Client::set_device_trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustDecision {
    /// The fingerprint was compared with the device's own: verified.
    Verify,
    /// Trusted without verification.
    Trust,
    /// Never encrypt for it again.
    Distrust,
    /// Take back a verification, trust or distrust: the device gets what the policy gives a
    /// device first seen now.
    Revoke,
}

/// What a verification URI did (`Client::verify_by_uri`). Device ids ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UriVerification {
    /// The JID the URI is about.
    pub jid: String,
    /// Devices now verified (including those that were already).
    pub verified: Vec<u32>,
    /// Devices not met yet whose keys were recorded as verified in advance.
    pub pre_verified: Vec<u32>,
    /// Devices now distrusted (a trust message's `distrust=`).
    pub distrusted: Vec<u32>,
    /// Keys in the URI that match no device we know, and that could not be recorded in
    /// advance; ignored.
    pub unknown: u32,
}

const KV_POLICY: &str = "omemo.trust_policy";

/// A recorded identity of one of a JID's devices: the version it was seen in, the device
/// id, its key and trust (as `Tx::omemo_identities` gives them).
pub(crate) type IdentityRow = (Version, u32, IdentityRecord);

impl From<Trust> for DeviceTrust {
    fn from(t: Trust) -> Self {
        match t {
            Trust::Undecided => DeviceTrust::Undecided,
            Trust::BlindlyTrusted => DeviceTrust::Blind,
            Trust::Verified => DeviceTrust::Verified,
            Trust::Distrusted => DeviceTrust::Distrusted,
        }
    }
}

/// Whether messages may be encrypted for a device of this trust.
pub(crate) fn usable(trust: Trust) -> bool {
    matches!(trust, Trust::BlindlyTrusted | Trust::Verified)
}

// ---------------------------------------------------------------------------------------------
// Fingerprints

/// The identity key in the form fingerprints are made of (Curve25519); `None` for an
/// OMEMO 2 key that is no valid point (it can match nothing).
pub(crate) fn curve_form(version: Version, key: &[u8; 32]) -> Option<[u8; 32]> {
    match version {
        Version::Omemo03 => Some(*key),
        Version::Omemo2 => linnet_omemo::ed25519_to_curve25519(key).ok(),
    }
}

pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fingerprint as people compare it: lowercase hex in groups of 8 separated by spaces
/// ("05ab12cd 9f…", 8 groups for a 64-digit fingerprint).
pub fn format_fingerprint(fingerprint: &str) -> String {
    let clean: Vec<char> = fingerprint
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    clean
        .chunks(8)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a key given for a device (in a URI) is the recorded identity's: its fingerprint,
/// or for OMEMO 2 the Ed25519 key itself.
fn key_matches(value: &[u8; 32], version: Version, recorded: &[u8; 32]) -> bool {
    curve_form(version, recorded).as_ref() == Some(value)
        || (version == Version::Omemo2 && recorded == value)
}

// ---------------------------------------------------------------------------------------------
// Policy

/// The trust a device's identity gets when first recorded in `version` with `key`, given
/// what is recorded for the JID already (`known`, which may hold the new record itself).
pub(crate) fn initial_trust(
    policy: TrustPolicy,
    known: &[IdentityRow],
    device_id: u32,
    version: Version,
    key: &[u8; 32],
) -> Trust {
    let fingerprint = curve_form(version, key);
    let same_device = known.iter().find(|(v, d, r)| {
        *d == device_id && *v != version && fingerprint.is_some() && {
            curve_form(*v, &r.key) == fingerprint
        }
    });
    if let Some((_, _, r)) = same_device {
        return r.trust;
    }
    // A verified identity of the same device id with another key counts too: the device
    // the user verified is not this one.
    fresh_trust(policy, known, None)
}

/// What the policy gives a device of the JID that has no trust of its own, leaving out
/// what is recorded for `except` (a device whose trust is revoked).
fn fresh_trust(policy: TrustPolicy, known: &[IdentityRow], except: Option<u32>) -> Trust {
    let verified_elsewhere = known
        .iter()
        .any(|(_, d, r)| Some(*d) != except && r.trust == Trust::Verified);
    match policy {
        TrustPolicy::BlindTrust if !verified_elsewhere => Trust::BlindlyTrusted,
        _ => Trust::Undecided,
    }
}

/// Applies the policy to an identity the OMEMO layer just recorded as undecided. A failure
/// leaves it undecided, which is safe.
pub(crate) fn on_first_sight(
    tx: &Tx<'_>,
    account: AccountId,
    jid: &str,
    device_id: u32,
    version: Version,
    key: &[u8; 32],
) {
    let decided = policy_in(tx, account).and_then(|policy| {
        let known = tx.omemo_identities(account, jid)?;
        let trust = initial_trust(policy, &known, device_id, version, key);
        if trust != Trust::Undecided {
            tx.set_omemo_trust(account, jid, device_id, Some(version), trust)?;
        }
        Ok(trust)
    });
    match decided {
        Ok(trust) => {
            tracing::debug!(
                account = account.0,
                device = device_id,
                ?trust,
                "new OMEMO device"
            )
        }
        Err(e) => {
            tracing::warn!(account = account.0, error = %e, "trust policy not applied; device left undecided")
        }
    }
}

fn policy_in(tx: &Tx<'_>, account: AccountId) -> linnet_store::Result<TrustPolicy> {
    Ok(match tx.kv_get(Some(account), KV_POLICY)?.as_deref() {
        Some("manual") => TrustPolicy::Manual,
        _ => TrustPolicy::BlindTrust,
    })
}

// ---------------------------------------------------------------------------------------------
// Verification URIs

/// Device ids are 1..2^31-1 (XEP-0384 §5.3).
const MAX_DEVICE_ID: u32 = linnet_xmpp::omemo::MAX_DEVICE_ID;
/// A QR code holds a few kilobytes at most; anything longer is not one of these.
const MAX_URI_BYTES: usize = 4096;
/// An account's code holds its device and the other devices it verified: a handful.
const MAX_KEYS: usize = 64;

/// One key a URI vouches for (or, `distrust`, against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UriKey {
    /// The device it belongs to, when the URI says (`omemo-sid-<id>`).
    pub device_id: Option<u32>,
    pub key: [u8; 32],
    /// In the Curve25519 form by convention (`omemo-sid-`): may be recorded in advance.
    pub curve: bool,
    pub distrust: bool,
}

/// A parsed verification URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerificationUri {
    pub jid: BareJid,
    pub keys: Vec<UriKey>,
}

fn bad(what: &str) -> ClientError {
    ClientError::BadInput(format!("verification URI: {what}"))
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16));
            match (hi, lo) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(bad("a broken %-escape")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("not UTF-8"))
}

/// RFC 3986 unreserved characters and `@` stay as they are; everything else of the JID is
/// %-escaped, so that `?`, `#` or `;` in a local part cannot end the path early.
fn percent_encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn parse_key(value: &str) -> Result<[u8; 32]> {
    let v = value.trim();
    // Some show the 0.3 key with its 0x05 type byte.
    let v = match v.len() {
        66 if v.starts_with("05") => &v[2..],
        _ => v,
    };
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("a fingerprint is not 64 hex digits"));
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).map_err(|_| bad("bad hex"))?;
    }
    Ok(key)
}

fn parse_device_id(s: &str) -> Result<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("a device id is not a number"));
    }
    s.parse::<u32>()
        .ok()
        .filter(|id| (1..=MAX_DEVICE_ID).contains(id))
        .ok_or_else(|| bad("a device id is out of range"))
}

const OMEMO_NAMESPACES: [&str; 3] = [
    "urn:xmpp:omemo:2",
    "urn:xmpp:omemo:1",
    "eu.siacs.conversations.axolotl",
];

impl VerificationUri {
    pub(crate) fn parse(input: &str) -> Result<VerificationUri> {
        let input = input.trim();
        if input.len() > MAX_URI_BYTES {
            return Err(bad("too long"));
        }
        let rest = match input.get(..5) {
            Some(scheme) if scheme.eq_ignore_ascii_case("xmpp:") => &input[5..],
            _ => return Err(bad("not an xmpp: URI")),
        };
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        // RFC 5122's form with an authority (the account to act as) names the JID after it.
        let path = match path.strip_prefix("//") {
            Some(p) => p
                .split_once('/')
                .map(|(_, j)| j)
                .ok_or_else(|| bad("no JID"))?,
            None => path,
        };
        let path = percent_decode(path)?;
        let jid = linnet_xmpp::jid::split_bare(&path)
            .and_then(|b| BareJid::parse(&b).ok())
            .ok_or_else(|| bad("no valid JID"))?;

        let mut keys: Vec<UriKey> = Vec::new();
        let mut trust_message = false;
        let mut add = |k: UriKey| -> Result<()> {
            if let Some(id) = k.device_id {
                if keys
                    .iter()
                    .any(|o| o.device_id == Some(id) && o.curve == k.curve && o.key != k.key)
                {
                    return Err(bad("two fingerprints for one device"));
                }
            }
            if !keys.contains(&k) {
                if keys.len() == MAX_KEYS {
                    return Err(bad("too many fingerprints"));
                }
                keys.push(k);
            }
            Ok(())
        };
        for part in query.split([';', '&']).filter(|p| !p.is_empty()) {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (percent_decode(k)?.to_ascii_lowercase(), Some(v)),
                None => (percent_decode(part)?.to_ascii_lowercase(), None),
            };
            let Some(value) = value else {
                // A query type (XEP-0147): "message", "roster", "trust-message"…
                trust_message |= key == "trust-message";
                continue;
            };
            let value = percent_decode(value)?;
            if let Some(id) = key.strip_prefix("omemo-sid-") {
                add(UriKey {
                    device_id: Some(parse_device_id(id)?),
                    key: parse_key(&value)?,
                    curve: true,
                    distrust: false,
                })?;
            } else if let Some(id) = key.strip_prefix("omemo2-sid-") {
                add(UriKey {
                    device_id: Some(parse_device_id(id)?),
                    key: parse_key(&value)?,
                    curve: false,
                    distrust: false,
                })?;
            } else if trust_message && (key == "trust" || key == "distrust") {
                add(UriKey {
                    device_id: None,
                    key: parse_key(&value)?,
                    curve: false,
                    distrust: key == "distrust",
                })?;
            } else if trust_message
                && key == "encryption"
                && !OMEMO_NAMESPACES.contains(&value.trim())
            {
                return Err(bad("a trust message for another kind of encryption"));
            }
            // Anything else (a body, a name, a preauth token) is not ours to act on.
        }
        if keys.is_empty() {
            return Err(bad("no OMEMO fingerprint in it"));
        }
        Ok(VerificationUri { jid, keys })
    }

    /// The Conversations form: `xmpp:jid?omemo-sid-<id>=<fingerprint>;…`, for keys with
    /// device ids.
    pub(crate) fn to_uri(&self) -> String {
        let mut s = format!("xmpp:{}", percent_encode_path(self.jid.as_str()));
        let mut sep = '?';
        for k in &self.keys {
            if let (Some(id), false) = (k.device_id, k.distrust) {
                let _ = write!(s, "{sep}omemo-sid-{id}={}", hex(&k.key));
                sep = ';';
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The client's calls

/// Marks for rebuilding the snapshots a trust change of `jid`'s devices shows in: the
/// conversation with `jid`, or every open one of the account for our own devices (their
/// carbons are in all of them).
pub(crate) fn trust_changed(inner: &Inner, account: AccountId, jid: &BareJid, own: bool) {
    let open: Vec<linnet_store::ConversationId> = lock(&inner.conv_subs).keys().copied().collect();
    let store = inner.store();
    let changed: Vec<_> = if own {
        open.into_iter()
            .filter(|c| {
                store
                    .conversation_info(*c)
                    .is_ok_and(|i| i.account == account)
            })
            .collect()
    } else {
        store
            .conversation(account, jid.as_str(), false)
            .ok()
            .flatten()
            .into_iter()
            .collect()
    };
    drop(store);
    for c in changed {
        inner.conversation_snapshot_changed(c);
    }
}

/// Our own JID and device, and our identity key in Curve25519 form.
fn own_identity(inner: &Inner, account: AccountId) -> Result<(BareJid, u32, [u8; 32])> {
    let own = BareJid::parse(&inner.store().account(account)?.jid)?;
    let device_id = crate::omemo::own_device_id(inner, account)
        .map_err(|e| ClientError::Internal(e.to_string()))?;
    let key = inner
        .store()
        .omemo_transaction(account, |s| {
            Ok(SessionManager::new(s, own.as_str(), device_id)?.own_identity_key(Version::Omemo03))
        })
        .map_err(|e| ClientError::Internal(e.to_string()))?;
    Ok((own, device_id, key))
}

impl Client {
    /// This device's OMEMO fingerprint for `account` (64 lowercase hex digits; see
    /// [`format_fingerprint`]), what a contact compares with what their app shows for us.
    pub fn own_omemo_fingerprint(&self, account: AccountId) -> Result<String> {
        let (_, _, key) = own_identity(&self.inner, account)?;
        Ok(hex(&key))
    }

    /// The URI for our QR code, in the form Conversations and others scan:
    /// `xmpp:<our JID>?omemo-sid-<device>=<fingerprint>`, followed by our other devices this
    /// one has verified (a contact scanning it verifies them too).
    pub fn own_verification_uri(&self, account: AccountId) -> Result<String> {
        let (own, device_id, key) = own_identity(&self.inner, account)?;
        let mut keys = vec![UriKey {
            device_id: Some(device_id),
            key,
            curve: true,
            distrust: false,
        }];
        let store = self.inner.store();
        let active = |version| -> linnet_store::Result<Vec<u32>> {
            Ok(store
                .omemo_device_list(account, own.as_str(), version)?
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d.active)
                .map(|d| d.device_id)
                .collect())
        };
        let mut listed = active(Version::Omemo2)?;
        listed.extend(active(Version::Omemo03)?);
        for (version, id, record) in store.omemo_identities(account, own.as_str())? {
            if id == device_id || record.trust != Trust::Verified || !listed.contains(&id) {
                continue;
            }
            let Some(fp) = curve_form(version, &record.key) else {
                continue;
            };
            if !keys.iter().any(|k| k.device_id == Some(id)) {
                keys.push(UriKey {
                    device_id: Some(id),
                    key: fp,
                    curve: true,
                    distrust: false,
                });
            }
        }
        Ok(VerificationUri { jid: own, keys }.to_uri())
    }

    /// Verifies devices by a URI from a QR code or pasted (see the module docs for the
    /// forms read and what happens to devices not met yet). All or nothing: a key that
    /// contradicts the one recorded for its device fails with [`ClientError::Policy`] and
    /// changes nothing; a malformed URI is [`ClientError::BadInput`].
    pub fn verify_by_uri(&self, account: AccountId, uri: &str) -> Result<UriVerification> {
        let parsed = VerificationUri::parse(uri)?;
        let (own, own_device, own_key) = own_identity(&self.inner, account)?;
        let jid = parsed.jid.clone();
        let is_own = jid == own;
        let mut mismatch: Option<u32> = None;
        let mut out = UriVerification {
            jid: jid.as_str().to_owned(),
            verified: Vec::new(),
            pre_verified: Vec::new(),
            distrusted: Vec::new(),
            unknown: 0,
        };
        let result = self.inner.store().transaction(|tx| {
            let known = tx.omemo_identities(account, jid.as_str())?;
            // (version, device, trust) to set, and identities to record in advance.
            let mut set: Vec<(Version, u32, Trust)> = Vec::new();
            let mut preset: Vec<(u32, [u8; 32])> = Vec::new();
            for k in &parsed.keys {
                let trust = if k.distrust {
                    Trust::Distrusted
                } else {
                    Trust::Verified
                };
                match k.device_id {
                    Some(id) if is_own && id == own_device => {
                        // Our own device: nothing to record, but a wrong key is a mismatch.
                        if k.key != own_key {
                            mismatch = Some(id);
                            return Err(StoreError::InvalidInput("fingerprint mismatch"));
                        }
                    }
                    Some(id) => {
                        let records: Vec<_> = known.iter().filter(|(_, d, _)| *d == id).collect();
                        if records.is_empty() {
                            if k.curve && !k.distrust {
                                preset.push((id, k.key));
                            } else {
                                out.unknown += 1;
                            }
                            continue;
                        }
                        if !records
                            .iter()
                            .all(|(v, _, r)| key_matches(&k.key, *v, &r.key))
                        {
                            mismatch = Some(id);
                            return Err(StoreError::InvalidInput("fingerprint mismatch"));
                        }
                        set.extend(records.iter().map(|(v, d, _)| (*v, *d, trust)));
                    }
                    None => {
                        let matching: Vec<_> = known
                            .iter()
                            .filter(|(v, _, r)| key_matches(&k.key, *v, &r.key))
                            .map(|(v, d, _)| (*v, *d, trust))
                            .collect();
                        if matching.is_empty() {
                            out.unknown += 1;
                        }
                        set.extend(matching);
                    }
                }
            }
            for (version, id, trust) in &set {
                tx.set_omemo_trust(account, jid.as_str(), *id, Some(*version), *trust)?;
                let list = match trust {
                    Trust::Distrusted => &mut out.distrusted,
                    _ => &mut out.verified,
                };
                if !list.contains(id) {
                    list.push(*id);
                }
            }
            for (id, key) in &preset {
                let record = IdentityRecord {
                    key: *key,
                    trust: Trust::Verified,
                };
                tx.preset_omemo_identity(account, Version::Omemo03, jid.as_str(), *id, &record)?;
                out.pre_verified.push(*id);
            }
            Ok(())
        });
        if let Some(id) = mismatch {
            return Err(ClientError::Policy(format!(
                "the fingerprint given for device {id} is not the key it uses; nothing was changed"
            )));
        }
        result?;
        out.verified.sort_unstable();
        out.distrusted.sort_unstable();
        out.pre_verified.sort_unstable();
        tracing::info!(
            account = account.0,
            verified = out.verified.len(),
            pre_verified = out.pre_verified.len(),
            distrusted = out.distrusted.len(),
            unknown = out.unknown,
            "verification URI applied"
        );
        trust_changed(&self.inner, account, &jid, is_own);
        Ok(out)
    }

    /// The user's decision about one device of `jid` (a contact, or our own account),
    /// applied to its identity in both OMEMO versions. [`ClientError::NotFound`] while no
    /// key of the device is known (no session was built with it yet).
    pub fn set_device_trust(
        &self,
        account: AccountId,
        jid: &str,
        device_id: u32,
        decision: TrustDecision,
    ) -> Result<()> {
        let jid = BareJid::parse(jid)?;
        let own = BareJid::parse(&self.inner.store().account(account)?.jid)?;
        let is_own = jid == own;
        if is_own {
            let mine = crate::omemo::own_device_id(&self.inner, account)
                .map_err(|e| ClientError::Internal(e.to_string()))?;
            if mine == device_id {
                return Err(ClientError::BadInput("that is this device".into()));
            }
        }
        let set = self.inner.store().transaction(|tx| {
            let known = tx.omemo_identities(account, jid.as_str())?;
            if !known.iter().any(|(_, d, _)| *d == device_id) {
                return Err(StoreError::NotFound("identity key of the device"));
            }
            let trust = match decision {
                TrustDecision::Verify => Trust::Verified,
                TrustDecision::Trust => Trust::BlindlyTrusted,
                TrustDecision::Distrust => Trust::Distrusted,
                TrustDecision::Revoke => {
                    fresh_trust(policy_in(tx, account)?, &known, Some(device_id))
                }
            };
            tx.set_omemo_trust(account, jid.as_str(), device_id, None, trust)?;
            Ok(trust)
        })?;
        tracing::info!(account = account.0, device = device_id, trust = ?set, "device trust set");
        trust_changed(&self.inner, account, &jid, is_own);
        Ok(())
    }

    /// How devices first seen are trusted for `account`.
    pub fn omemo_trust_policy(&self, account: AccountId) -> Result<TrustPolicy> {
        let mut store = self.inner.store();
        store.account(account)?;
        Ok(store.transaction(|tx| policy_in(tx, account))?)
    }

    /// Sets how devices first seen from now on are trusted; devices already seen keep
    /// their trust.
    pub fn set_omemo_trust_policy(&self, account: AccountId, policy: TrustPolicy) -> Result<()> {
        let store = self.inner.store();
        store.account(account)?;
        let code = match policy {
            TrustPolicy::BlindTrust => "blind",
            TrustPolicy::Manual => "manual",
        };
        store.kv_set(Some(account), KV_POLICY, code)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CURVE: &str = "e3e9fbd6ab2d8ad7fdd7c8ff5e5d3b1b3f6a8e8c7d4e2f5a6b7c8d9e0f1a2b3c";

    fn record(key: [u8; 32], trust: Trust) -> IdentityRecord {
        IdentityRecord { key, trust }
    }

    #[test]
    fn fingerprints_are_shown_in_groups_of_eight() {
        assert_eq!(
            format_fingerprint(CURVE),
            "e3e9fbd6 ab2d8ad7 fdd7c8ff 5e5d3b1b 3f6a8e8c 7d4e2f5a 6b7c8d9e 0f1a2b3c"
        );
        // Grouped or upper case input comes out the same.
        assert_eq!(
            format_fingerprint(&format_fingerprint(&CURVE.to_uppercase())),
            format_fingerprint(CURVE)
        );
        assert_eq!(hex(&[0xab; 32]), "ab".repeat(32));
    }

    #[test]
    fn an_omemo2_key_has_the_fingerprint_of_its_curve25519_form() {
        let identity = linnet_omemo::IdentityKeyPair::from_seed([7; 32]);
        let ed = identity.ed25519_public();
        let curve = identity.curve25519_public();
        assert_eq!(curve_form(Version::Omemo2, &ed), Some(curve));
        assert_eq!(curve_form(Version::Omemo03, &curve), Some(curve));
        // Either form of the OMEMO 2 key matches; a 0.3 record matches its own form only.
        assert!(key_matches(&curve, Version::Omemo2, &ed));
        assert!(key_matches(&ed, Version::Omemo2, &ed));
        assert!(key_matches(&curve, Version::Omemo03, &curve));
        assert!(!key_matches(&ed, Version::Omemo03, &curve));
        assert!(!key_matches(&[1; 32], Version::Omemo2, &ed));
    }

    #[test]
    fn blind_trust_until_a_device_of_the_jid_is_verified() {
        let bt = TrustPolicy::BlindTrust;
        // Nothing known: trusted blindly.
        assert_eq!(
            initial_trust(bt, &[], 5, Version::Omemo2, &[1; 32]),
            Trust::BlindlyTrusted
        );
        // Other devices trusted blindly or undecided: still blind trust.
        let known = vec![
            (Version::Omemo2, 1, record([2; 32], Trust::BlindlyTrusted)),
            (Version::Omemo2, 2, record([3; 32], Trust::Undecided)),
            (Version::Omemo2, 3, record([4; 32], Trust::Distrusted)),
        ];
        assert_eq!(
            initial_trust(bt, &known, 5, Version::Omemo2, &[1; 32]),
            Trust::BlindlyTrusted
        );
        // One verified: new devices wait for the user.
        let mut verified = known.clone();
        verified.push((Version::Omemo03, 4, record([5; 32], Trust::Verified)));
        assert_eq!(
            initial_trust(bt, &verified, 5, Version::Omemo2, &[1; 32]),
            Trust::Undecided
        );
        // The manual policy trusts nothing by itself.
        assert_eq!(
            initial_trust(TrustPolicy::Manual, &[], 5, Version::Omemo2, &[1; 32]),
            Trust::Undecided
        );
        // The new record itself among the known ones changes nothing.
        let with_self = vec![(Version::Omemo2, 5, record([1; 32], Trust::Undecided))];
        assert_eq!(
            initial_trust(bt, &with_self, 5, Version::Omemo2, &[1; 32]),
            Trust::BlindlyTrusted
        );
    }

    #[test]
    fn a_device_met_in_the_other_version_keeps_its_trust_if_its_key_is_the_same() {
        let identity = linnet_omemo::IdentityKeyPair::from_seed([9; 32]);
        let (ed, curve) = (identity.ed25519_public(), identity.curve25519_public());
        for trust in [Trust::Verified, Trust::Distrusted, Trust::Undecided] {
            let known = vec![(Version::Omemo03, 7, record(curve, trust))];
            assert_eq!(
                initial_trust(TrustPolicy::BlindTrust, &known, 7, Version::Omemo2, &ed),
                trust
            );
            let known = vec![(Version::Omemo2, 7, record(ed, trust))];
            assert_eq!(
                initial_trust(TrustPolicy::BlindTrust, &known, 7, Version::Omemo03, &curve),
                trust
            );
        }
        // Another key under the same id is a new device; a verified one makes it wait.
        let other = linnet_omemo::IdentityKeyPair::from_seed([10; 32]).ed25519_public();
        let known = vec![(Version::Omemo03, 7, record(curve, Trust::Verified))];
        assert_eq!(
            initial_trust(TrustPolicy::BlindTrust, &known, 7, Version::Omemo2, &other),
            Trust::Undecided
        );
        let known = vec![(Version::Omemo03, 7, record(curve, Trust::BlindlyTrusted))];
        assert_eq!(
            initial_trust(TrustPolicy::BlindTrust, &known, 7, Version::Omemo2, &other),
            Trust::BlindlyTrusted
        );
    }

    #[test]
    fn revoking_gives_what_a_new_device_would_get() {
        let bt = TrustPolicy::BlindTrust;
        // Its own verification does not count.
        let known = vec![
            (Version::Omemo2, 1, record([1; 32], Trust::Verified)),
            (Version::Omemo2, 2, record([2; 32], Trust::Distrusted)),
        ];
        assert_eq!(fresh_trust(bt, &known, Some(1)), Trust::BlindlyTrusted);
        assert_eq!(fresh_trust(bt, &known, Some(2)), Trust::Undecided);
        assert_eq!(
            fresh_trust(TrustPolicy::Manual, &known, Some(1)),
            Trust::Undecided
        );
        assert!(usable(Trust::BlindlyTrusted) && usable(Trust::Verified));
        assert!(!usable(Trust::Undecided) && !usable(Trust::Distrusted));
    }

    fn key(hex_str: &str) -> [u8; 32] {
        parse_key(hex_str).unwrap()
    }

    #[test]
    fn conversations_uris_round_trip() {
        let uri = format!(
            "xmpp:alice@example.org?omemo-sid-1234={CURVE};omemo-sid-99={}",
            "0".repeat(64)
        );
        let parsed = VerificationUri::parse(&uri).unwrap();
        assert_eq!(parsed.jid.as_str(), "alice@example.org");
        assert_eq!(
            parsed.keys,
            vec![
                UriKey {
                    device_id: Some(1234),
                    key: key(CURVE),
                    curve: true,
                    distrust: false
                },
                UriKey {
                    device_id: Some(99),
                    key: [0; 32],
                    curve: true,
                    distrust: false
                },
            ]
        );
        assert_eq!(parsed.to_uri(), uri);
        assert_eq!(VerificationUri::parse(&parsed.to_uri()).unwrap(), parsed);
    }

    #[test]
    fn uris_are_read_leniently_where_clients_differ() {
        let want =
            VerificationUri::parse(&format!("xmpp:alice@example.org?omemo-sid-7={CURVE}")).unwrap();
        for uri in [
            // Upper case hex and scheme, a query type, unknown parameters, a fragment.
            format!(
                "XMPP:alice@example.org?message;omemo-sid-7={};body=hi%20there#x",
                CURVE.to_uppercase()
            ),
            // Conversations' invite links use `&`; a JID with a resource; %-escapes.
            format!("xmpp:alice%40example.org/phone?omemo-sid-7={CURVE}&name=Alice"),
            // The 0.3 key with its 0x05 type byte; the JID in another case.
            format!("xmpp:Alice@Example.org?OMEMO-SID-7=05{CURVE}"),
            // RFC 5122's authority form.
            format!("xmpp://bob@example.org/alice@example.org?omemo-sid-7={CURVE}"),
            format!("  xmpp:alice@example.org?;omemo-sid-7={CURVE};;  "),
        ] {
            assert_eq!(VerificationUri::parse(&uri).unwrap(), want, "{uri}");
        }
        // A JID whose local part needs escaping survives the round trip.
        let odd = VerificationUri {
            jid: BareJid::parse("a?b;c#d@example.org").unwrap(),
            keys: want.keys.clone(),
        };
        assert!(odd
            .to_uri()
            .starts_with("xmpp:a%3Fb%3Bc%23d@example.org?omemo-sid-7="));
        assert_eq!(VerificationUri::parse(&odd.to_uri()).unwrap(), odd);
    }

    #[test]
    fn omemo2_and_trust_message_uris_are_read() {
        let moxxy = VerificationUri::parse(&format!("xmpp:a@b.c?omemo2-sid-42={CURVE}")).unwrap();
        assert_eq!(
            moxxy.keys,
            vec![UriKey {
                device_id: Some(42),
                key: key(CURVE),
                curve: false,
                distrust: false
            }]
        );
        let other = "ab".repeat(32);
        let kaidan = VerificationUri::parse(&format!(
            "xmpp:a@b.c?trust-message;encryption=urn:xmpp:omemo:2;trust={CURVE};distrust={other}"
        ))
        .unwrap();
        assert_eq!(
            kaidan.keys,
            vec![
                UriKey {
                    device_id: None,
                    key: key(CURVE),
                    curve: false,
                    distrust: false
                },
                UriKey {
                    device_id: None,
                    key: [0xab; 32],
                    curve: false,
                    distrust: true
                },
            ]
        );
        // Keys without device ids are not written back out.
        assert_eq!(kaidan.to_uri(), "xmpp:a@b.c");
        // `trust=` means nothing outside a trust message.
        assert!(VerificationUri::parse(&format!("xmpp:a@b.c?trust={CURVE}")).is_err());
    }

    #[test]
    fn bad_uris_are_bad_input_and_never_panic() {
        let long = format!("xmpp:a@b.c?{}", "x".repeat(5000));
        let many: String = (1..=65)
            .map(|i| format!("omemo-sid-{i}={CURVE}"))
            .collect::<Vec<_>>()
            .join(";");
        let cases = [
            String::new(),
            "   ".into(),
            "xmpp".into(),
            "xmpp:".into(),
            "https://conversations.im/i/a@b.c".into(),
            format!("mailto:a@b.c?omemo-sid-1={CURVE}"),
            "xmpp:a@b.c".into(),
            "xmpp:a@b.c?message;body=hello".into(),
            format!("xmpp:?omemo-sid-1={CURVE}"),
            format!("xmpp:@@?omemo-sid-1={CURVE}"),
            format!("xmpp:a@b.c?omemo-sid-0={CURVE}"),
            format!("xmpp:a@b.c?omemo-sid-2147483648={CURVE}"),
            format!("xmpp:a@b.c?omemo-sid-99999999999999999999={CURVE}"),
            format!("xmpp:a@b.c?omemo-sid--1={CURVE}"),
            format!("xmpp:a@b.c?omemo-sid-={CURVE}"),
            format!("xmpp:a@b.c?omemo-sid-1x={CURVE}"),
            "xmpp:a@b.c?omemo-sid-1=".into(),
            "xmpp:a@b.c?omemo-sid-1=abcd".into(),
            format!("xmpp:a@b.c?omemo-sid-1={}", "g".repeat(64)),
            format!("xmpp:a@b.c?omemo-sid-1={CURVE}00"),
            format!("xmpp:a@b.c?omemo-sid-1=06{CURVE}"),
            format!("xmpp:a@b.c?omemo-sid-1={}", "é".repeat(32)),
            format!(
                "xmpp:a@b.c?omemo-sid-1={CURVE};omemo-sid-1={}",
                "0".repeat(64)
            ),
            format!("xmpp:a%zz@b.c?omemo-sid-1={CURVE}"),
            format!("xmpp:a%ff@b.c?omemo-sid-1={CURVE}"),
            format!("xmpp:a@b.c?omemo-sid-1={CURVE}%"),
            format!("xmpp:a@b.c?trust-message;encryption=urn:xmpp:openpgp:0;trust={CURVE}"),
            "xmpp://a@b.c?omemo-sid-1=00".into(),
            long,
            format!("xmpp:a@b.c?{many}"),
        ];
        for uri in &cases {
            match VerificationUri::parse(uri) {
                Err(ClientError::BadInput(_)) => {}
                other => panic!("{uri:?}: {other:?}"),
            }
        }
        // Arbitrary bytes cut anywhere: an error or a URI, never a panic.
        let good = format!("xmpp:a%40b.c?trust-message;omemo-sid-12={CURVE};omemo2-sid-3={CURVE}");
        for end in 0..=good.len() {
            if let Some(prefix) = good.get(..end) {
                let _ = VerificationUri::parse(prefix);
            }
        }
    }
}
