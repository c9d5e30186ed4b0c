//! OMEMO elements (XEP-0384): device lists, bundles and encrypted messages, both versions.
//!
//! OMEMO 0.3 is `eu.siacs.conversations.axolotl` as in XEP-0384 0.3.0 (what Conversations,
//! Monal, Dino and Gajim speak); OMEMO 2 is `urn:xmpp:omemo:2` as in XEP-0384 0.8 and later.
//! Everything here is plain data in and out: the cryptography lives in linnet-omemo, the PEP
//! plumbing in the session. Each parser takes the payload element (`<list>`/`<devices>`,
//! `<bundle>`, `<encrypted>`) and either returns all of it, checked, or an [`OmemoXmlError`]:
//! a peer's list or bundle is never half-applied.
//!
//! Rules applied to input from the network (and, by the builders, to our own output, so that
//! whatever we build parses back unchanged):
//! - device ids (`id`, `sid`, `rid`) are 1..=2^31-1, as both versions of the XEP say; OMEMO 2
//!   key ids (`spk`/`pk` `id`) too. OMEMO 0.3 states no range for key ids, and libsignal's
//!   are 24-bit numbers, so there any `u32` is accepted;
//! - public keys are 33 bytes with the 0x05 type prefix (0.3) or 32 raw bytes (2), signatures
//!   64 bytes;
//! - counts are bounded ([`MAX_DEVICES`], [`MAX_PREKEYS`], [`MAX_KEYS`]) and ids unique;
//! - elements of the OMEMO namespace that the XEP does not define at a place, and text where
//!   only elements belong, are errors; elements of other namespaces are skipped, as RFC 6120
//!   §8.4 asks of unknown extensions.

use std::collections::HashSet;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use xmpp_parsers::minidom::{Element, Node};

use crate::elem::el;
use crate::jid::BareJid;

/// Namespace of OMEMO 0.3.
pub const NS_OMEMO_03: &str = "eu.siacs.conversations.axolotl";
/// Namespace of OMEMO 2.
pub const NS_OMEMO_2: &str = "urn:xmpp:omemo:2";
/// PEP item id of the device list in both versions (XEP-0060 §12.20 singleton node).
pub const DEVICE_LIST_ITEM_ID: &str = "current";
/// Largest device id (and OMEMO 2 key id): "between 1 and 2^31 - 1" in both versions.
pub const MAX_DEVICE_ID: u32 = 0x7FFF_FFFF;
/// Devices accepted in one device list. Real accounts have a handful; a thousand leaves room
/// for accounts that never prune while bounding the fan-out a hostile list can cause.
pub const MAX_DEVICES: usize = 1000;
/// Prekeys accepted in one bundle: the XEP asks for about 100, so twice that.
pub const MAX_PREKEYS: usize = 200;
/// `<key>` elements accepted in one `<encrypted>`: a large group chat times a few devices.
pub const MAX_KEYS: usize = 10_000;
/// Bytes accepted in one `<key>`. A (PreKey)WhisperMessage or OMEMOKeyExchange carrying a
/// 32-byte key and tag is about 200 bytes; anything near this bound is not one.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest device label kept, in Unicode code points. The XEP recommends under 53; longer
/// labels are dropped like unsigned ones rather than shown cut (the signature covers it all).
pub const MAX_LABEL_CHARS: usize = 128;

const SIGNATURE_LEN: usize = 64;
/// libsignal's type byte for Curve25519 ("DJB") public keys, which OMEMO 0.3 keeps on the wire.
const DJB_TYPE: u8 = 0x05;

/// Which OMEMO a piece of XML belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OmemoVersion {
    /// `eu.siacs.conversations.axolotl` (XEP-0384 0.3.0).
    V03,
    /// `urn:xmpp:omemo:2` (XEP-0384 0.8+).
    V2,
}

impl OmemoVersion {
    pub fn namespace(self) -> &'static str {
        match self {
            OmemoVersion::V03 => NS_OMEMO_03,
            OmemoVersion::V2 => NS_OMEMO_2,
        }
    }

    pub fn from_namespace(ns: &str) -> Option<Self> {
        match ns {
            NS_OMEMO_03 => Some(OmemoVersion::V03),
            NS_OMEMO_2 => Some(OmemoVersion::V2),
            _ => None,
        }
    }

    /// The PEP node holding the device list.
    pub fn devices_node(self) -> &'static str {
        match self {
            OmemoVersion::V03 => "eu.siacs.conversations.axolotl.devicelist",
            OmemoVersion::V2 => "urn:xmpp:omemo:2:devices",
        }
    }

    /// The PEP node holding `device_id`'s bundle: one node per device in 0.3, one node for
    /// all devices in 2.
    pub fn bundle_node(self, device_id: u32) -> String {
        match self {
            OmemoVersion::V03 => format!("eu.siacs.conversations.axolotl.bundles:{device_id}"),
            OmemoVersion::V2 => "urn:xmpp:omemo:2:bundles".to_owned(),
        }
    }

    /// The PEP item id under which `device_id`'s bundle is published.
    pub fn bundle_item_id(self, device_id: u32) -> String {
        match self {
            OmemoVersion::V03 => DEVICE_LIST_ITEM_ID.to_owned(),
            OmemoVersion::V2 => device_id.to_string(),
        }
    }

    /// The device a bundle belongs to, from where it was published: the node name's suffix in
    /// 0.3, the item id in 2. The bundle itself does not name its device.
    pub fn bundle_device_id(self, node: &str, item_id: &str) -> Result<u32> {
        match self {
            OmemoVersion::V03 => {
                let id = node
                    .strip_prefix("eu.siacs.conversations.axolotl.bundles:")
                    .ok_or(OmemoXmlError::NotBundleNode)?;
                parse_device_id(id)
            }
            OmemoVersion::V2 => {
                if node != "urn:xmpp:omemo:2:bundles" {
                    return Err(OmemoXmlError::NotBundleNode);
                }
                parse_device_id(item_id)
            }
        }
    }
}

/// Why an OMEMO element was refused. Messages name elements and attributes of the XEP, never
/// content from the input, so they are safe to log.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OmemoXmlError {
    #[error("not well-formed XML")]
    NotXml,
    #[error("expected <{name} xmlns='{ns}'>")]
    WrongElement {
        name: &'static str,
        ns: &'static str,
    },
    #[error("<{parent}> lacks <{child}>")]
    MissingChild {
        parent: &'static str,
        child: &'static str,
    },
    #[error("<{parent}> has more than one <{child}>")]
    DuplicateChild {
        parent: &'static str,
        child: &'static str,
    },
    #[error("<{0}> contains an element the XEP does not define there")]
    UnexpectedElement(&'static str),
    #[error("<{0}> contains text where only elements belong")]
    UnexpectedText(&'static str),
    #[error("<{element}> lacks the '{attr}' attribute")]
    MissingAttribute {
        element: &'static str,
        attr: &'static str,
    },
    #[error("'{attr}' of <{element}> is not an unsigned integer")]
    BadNumber {
        element: &'static str,
        attr: &'static str,
    },
    #[error("'{attr}' of <{element}> is not a boolean")]
    BadBoolean {
        element: &'static str,
        attr: &'static str,
    },
    #[error("{what} {value} is outside 1..=2147483647")]
    IdOutOfRange { what: &'static str, value: u64 },
    #[error("{what} {id} appears more than once")]
    DuplicateId { what: &'static str, id: u32 },
    #[error("more than {limit} <{what}> elements")]
    TooMany { what: &'static str, limit: usize },
    #[error("<{0}> is not valid base64")]
    BadBase64(&'static str),
    #[error("<{what}> holds {got} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        expected: &'static str,
        got: usize,
    },
    #[error("<{0}> is not a 0x05-prefixed Curve25519 public key")]
    BadKeyType(&'static str),
    #[error("'jid' of <keys> is not a bare JID")]
    BadJid,
    #[error("not a bundle node of this OMEMO version")]
    NotBundleNode,
    /// Builders only: the data cannot be expressed in the requested version.
    #[error("cannot be expressed: {0}")]
    Unrepresentable(&'static str),
}

type Result<T> = std::result::Result<T, OmemoXmlError>;

/// One entry of a device list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: u32,
    /// OMEMO 2 only. Not yet verified: show it only after checking `labelsig` against the
    /// device's identity key (the XEP says an unverified label MUST be ignored). A label that
    /// comes without a decodable 64-byte `labelsig`, or is longer than [`MAX_LABEL_CHARS`],
    /// is dropped while parsing, with its signature.
    pub label: Option<String>,
    /// OMEMO 2 only: the signature over the label's UTF-8 bytes, decoded.
    pub labelsig: Option<Vec<u8>>,
}

impl Device {
    pub fn new(id: u32) -> Self {
        Device {
            id,
            label: None,
            labelsig: None,
        }
    }
}

/// The payload of the device-list item (`<list>` in 0.3, `<devices>` in 2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceListItem {
    pub devices: Vec<Device>,
}

/// A device's bundle, keys as they travel (base64-decoded): 0x05-prefixed 33-byte keys in
/// 0.3, raw 32-byte keys (Ed25519 identity key) in 2. Signatures are not checked here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleItem {
    pub spk_id: u32,
    /// Signed prekey (`signedPreKeyPublic` / `spk`).
    pub spk: Vec<u8>,
    /// Signed prekey signature (`signedPreKeySignature` / `spks`).
    pub spks: Vec<u8>,
    /// Identity key (`identityKey` / `ik`).
    pub ik: Vec<u8>,
    /// One-time prekeys with their ids (`preKeyPublic` / `pk`), in document order.
    pub prekeys: Vec<(u32, Vec<u8>)>,
}

/// One `<key>`: the ratchet message for one recipient device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// OMEMO 2: the `jid` of the enclosing `<keys>`. OMEMO 0.3 has none (`None`).
    pub jid: Option<BareJid>,
    pub rid: u32,
    /// A key exchange: `prekey='true'` (0.3) / `kex='true'` (2).
    pub kex: bool,
    pub data: Vec<u8>,
}

/// The `<encrypted>` element of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    pub version: OmemoVersion,
    /// The sending device.
    pub sid: u32,
    /// In document order. When built for OMEMO 2, keys are grouped into one `<keys>` per JID
    /// in the order each JID first appears.
    pub keys: Vec<KeyEntry>,
    /// OMEMO 0.3 only: the GCM nonce (12 bytes, or 16 from older senders). Required when
    /// there is a payload; a message without payload may omit it.
    pub iv: Option<Vec<u8>>,
    /// `None` for an empty message (key transport, heartbeat, session repair).
    pub payload: Option<Vec<u8>>,
}

impl Encrypted {
    /// The key meant for one of our devices. In 0.3 keys carry no JID and match on the device
    /// id alone, as that version of the XEP does.
    pub fn key_for(&self, own: &BareJid, device_id: u32) -> Option<&KeyEntry> {
        self.keys
            .iter()
            .find(|k| k.rid == device_id && k.jid.as_ref().is_none_or(|j| j == own))
    }

    /// Parses a serialized `<encrypted>` element of either version (told apart by namespace).
    pub fn from_xml(xml: &str) -> Result<Self> {
        parse_encrypted(&parse_xml(xml)?)
    }

    /// Serializes as an `<encrypted>` element, after the same checks the parser applies.
    pub fn to_xml(&self) -> Result<String> {
        Ok(String::from(&encrypted_element(self)?))
    }
}

impl DeviceListItem {
    /// Parses a serialized `<list>` (0.3) or `<devices>` (2) element.
    pub fn from_xml(version: OmemoVersion, xml: &str) -> Result<Self> {
        parse_device_list(version, &parse_xml(xml)?)
    }

    pub fn to_xml(&self, version: OmemoVersion) -> Result<String> {
        Ok(String::from(&device_list_element(version, self)?))
    }
}

impl BundleItem {
    /// Parses a serialized `<bundle>` element.
    pub fn from_xml(version: OmemoVersion, xml: &str) -> Result<Self> {
        parse_bundle(version, &parse_xml(xml)?)
    }

    pub fn to_xml(&self, version: OmemoVersion) -> Result<String> {
        Ok(String::from(&bundle_element(version, self)?))
    }
}

/// Fallback text for clients without OMEMO, in the words Conversations and others use, so
/// that such a contact understands what reached them.
pub const FALLBACK_BODY: &str =
    "I sent you an OMEMO encrypted message but your client doesn't seem to support that.";

/// A chat message carrying OMEMO: one `<encrypted>` per version in use (devices are reached
/// by the version each speaks), the XEP-0380 hint naming it, a fallback body, the XEP-0334
/// store hint (so that archives keep empty messages too, which other devices need to move
/// their ratchets) and origin-id. `fallback` is `None` for an empty message (heartbeat,
/// session completion or repair), which asks for no receipt.
pub fn chat_stanza(
    to: &BareJid,
    id: &str,
    encrypted: &[Encrypted],
    fallback: Option<&str>,
    extras: &crate::rich::Extras,
) -> Result<Element> {
    message_stanza(to, "chat", id, encrypted, fallback, extras)
}

/// A group message carrying OMEMO (XEP-0384 §6.5), to the room: as [`chat_stanza`], but of
/// type groupchat and asking for no receipt (a room's receipts would come from everyone).
pub fn groupchat_stanza(
    room: &BareJid,
    id: &str,
    encrypted: &[Encrypted],
    fallback: &str,
    extras: &crate::rich::Extras,
) -> Result<Element> {
    message_stanza(room, "groupchat", id, encrypted, Some(fallback), extras)
}

fn message_stanza(
    to: &BareJid,
    kind: &str,
    id: &str,
    encrypted: &[Encrypted],
    fallback: Option<&str>,
    extras: &crate::rich::Extras,
) -> Result<Element> {
    if encrypted.is_empty() {
        return Err(OmemoXmlError::MissingChild {
            parent: "message",
            child: "encrypted",
        });
    }
    let mut m = el("message", "jabber:client")
        .attr("to", to.as_str())
        .attr("type", kind)
        .attr("id", id);
    for e in encrypted {
        m = m.child(encrypted_element(e)?);
    }
    for e in encrypted {
        let name = match e.version {
            OmemoVersion::V03 => "OMEMO",
            OmemoVersion::V2 => "OMEMO 2",
        };
        m = m.child(
            el("encryption", "urn:xmpp:eme:0")
                .attr("namespace", e.version.namespace())
                .attr("name", name),
        );
    }
    if let Some(text) = fallback {
        m = m.child(el("body", "jabber:client").text(text.to_owned()));
        if kind == "chat" {
            m = m
                .child(el("request", crate::inbound::NS_RECEIPTS))
                .child(el("markable", "urn:xmpp:chat-markers:0"))
                .child(el("active", crate::rich::NS_CHAT_STATES));
        }
    }
    let m = m
        .child(el("store", crate::inbound::NS_HINTS))
        .child(el("origin-id", crate::inbound::NS_SID).attr("id", id))
        .build();
    Ok(extras.apply(m))
}

/// Parses a device id (a PEP item id or an attribute value) as the XEP bounds it.
pub fn parse_device_id(s: &str) -> Result<u32> {
    let n = parse_unsigned(s).ok_or(OmemoXmlError::BadNumber {
        element: "item",
        attr: "id",
    })?;
    check_id(n, "device id")
}

fn parse_xml(xml: &str) -> Result<Element> {
    xml.parse().map_err(|_| OmemoXmlError::NotXml)
}

// ---------------------------------------------------------------------------------------------
// Device lists

pub(crate) fn parse_device_list(version: OmemoVersion, root: &Element) -> Result<DeviceListItem> {
    let ns = version.namespace();
    let name = list_name(version);
    if !root.is(name, ns) {
        return Err(OmemoXmlError::WrongElement { name, ns });
    }
    no_text(root, name)?;
    let mut devices = Vec::new();
    let mut seen = HashSet::new();
    for child in own_children(root, ns) {
        if child.name() != "device" {
            return Err(OmemoXmlError::UnexpectedElement(name));
        }
        if devices.len() == MAX_DEVICES {
            return Err(OmemoXmlError::TooMany {
                what: "device",
                limit: MAX_DEVICES,
            });
        }
        no_text(child, "device")?;
        let id = check_id(attr_number(child, "device", "id")?, "device id")?;
        if !seen.insert(id) {
            return Err(OmemoXmlError::DuplicateId {
                what: "device id",
                id,
            });
        }
        let (label, labelsig) = match version {
            // 0.3 has no labels; attributes some client might add are not ours to interpret.
            OmemoVersion::V03 => (None, None),
            OmemoVersion::V2 => parse_label(child),
        };
        devices.push(Device {
            id,
            label,
            labelsig,
        });
    }
    Ok(DeviceListItem { devices })
}

/// The XEP makes an unsigned or badly signed label something to ignore, not a reason to refuse
/// the list: a label is kept only with a signature that could possibly verify.
fn parse_label(device: &Element) -> (Option<String>, Option<Vec<u8>>) {
    let (Some(label), Some(sig)) = (device.attr("label"), device.attr("labelsig")) else {
        return (None, None);
    };
    if label.chars().count() > MAX_LABEL_CHARS {
        return (None, None);
    }
    match decode_b64(sig) {
        Some(sig) if sig.len() == SIGNATURE_LEN => (Some(label.to_owned()), Some(sig)),
        _ => (None, None),
    }
}

pub(crate) fn device_list_element(version: OmemoVersion, list: &DeviceListItem) -> Result<Element> {
    if list.devices.len() > MAX_DEVICES {
        return Err(OmemoXmlError::TooMany {
            what: "device",
            limit: MAX_DEVICES,
        });
    }
    let ns = version.namespace();
    let mut seen = HashSet::new();
    let mut out = el(list_name(version), ns);
    for d in &list.devices {
        check_id(u64::from(d.id), "device id")?;
        if !seen.insert(d.id) {
            return Err(OmemoXmlError::DuplicateId {
                what: "device id",
                id: d.id,
            });
        }
        match (version, &d.label, &d.labelsig) {
            (_, None, None) => {}
            (OmemoVersion::V03, _, _) => {
                return Err(OmemoXmlError::Unrepresentable("device labels in OMEMO 0.3"))
            }
            (OmemoVersion::V2, Some(label), Some(sig)) => {
                if label.chars().count() > MAX_LABEL_CHARS {
                    return Err(OmemoXmlError::Unrepresentable("a label this long"));
                }
                if sig.len() != SIGNATURE_LEN {
                    return Err(OmemoXmlError::BadLength {
                        what: "labelsig",
                        expected: "64",
                        got: sig.len(),
                    });
                }
            }
            (OmemoVersion::V2, _, _) => {
                // The XEP: a label MUST be accompanied by labelsig.
                return Err(OmemoXmlError::Unrepresentable(
                    "a label without its signature, or a signature without label",
                ));
            }
        }
        out = out.child(
            el("device", ns)
                .attr("id", d.id.to_string())
                .attr_opt("label", d.label.as_deref())
                .attr_opt("labelsig", d.labelsig.as_deref().map(encode_b64)),
        );
    }
    Ok(out.build())
}

fn list_name(version: OmemoVersion) -> &'static str {
    match version {
        OmemoVersion::V03 => "list",
        OmemoVersion::V2 => "devices",
    }
}

// ---------------------------------------------------------------------------------------------
// Bundles

/// Element and attribute names of a bundle, per version.
struct BundleNames {
    spk: &'static str,
    spk_id: &'static str,
    spks: &'static str,
    ik: &'static str,
    pk: &'static str,
    pk_id: &'static str,
}

fn bundle_names(version: OmemoVersion) -> BundleNames {
    match version {
        OmemoVersion::V03 => BundleNames {
            spk: "signedPreKeyPublic",
            spk_id: "signedPreKeyId",
            spks: "signedPreKeySignature",
            ik: "identityKey",
            pk: "preKeyPublic",
            pk_id: "preKeyId",
        },
        OmemoVersion::V2 => BundleNames {
            spk: "spk",
            spk_id: "id",
            spks: "spks",
            ik: "ik",
            pk: "pk",
            pk_id: "id",
        },
    }
}

pub(crate) fn parse_bundle(version: OmemoVersion, root: &Element) -> Result<BundleItem> {
    let ns = version.namespace();
    let n = bundle_names(version);
    if !root.is("bundle", ns) {
        return Err(OmemoXmlError::WrongElement { name: "bundle", ns });
    }
    no_text(root, "bundle")?;
    let (mut spk, mut spks, mut ik, mut prekeys) = (None, None, None, None);
    for child in own_children(root, ns) {
        let name = child.name();
        if name == n.spk {
            let id = key_id(
                version,
                attr_number(child, n.spk, n.spk_id)?,
                n.spk,
                n.spk_id,
            )?;
            let key = public_key(version, n.spk, b64_content(child, n.spk)?)?;
            set_once(&mut spk, (id, key), "bundle", n.spk)?;
        } else if name == n.spks {
            let sig = signature(n.spks, b64_content(child, n.spks)?)?;
            set_once(&mut spks, sig, "bundle", n.spks)?;
        } else if name == n.ik {
            let key = public_key(version, n.ik, b64_content(child, n.ik)?)?;
            set_once(&mut ik, key, "bundle", n.ik)?;
        } else if name == "prekeys" {
            set_once(
                &mut prekeys,
                parse_prekeys(version, child)?,
                "bundle",
                "prekeys",
            )?;
        } else {
            return Err(OmemoXmlError::UnexpectedElement("bundle"));
        }
    }
    let missing = |child| OmemoXmlError::MissingChild {
        parent: "bundle",
        child,
    };
    let (spk_id, spk) = spk.ok_or(missing(n.spk))?;
    Ok(BundleItem {
        spk_id,
        spk,
        spks: spks.ok_or(missing(n.spks))?,
        ik: ik.ok_or(missing(n.ik))?,
        prekeys: prekeys.ok_or(missing("prekeys"))?,
    })
}

fn parse_prekeys(version: OmemoVersion, prekeys: &Element) -> Result<Vec<(u32, Vec<u8>)>> {
    let n = bundle_names(version);
    no_text(prekeys, "prekeys")?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for child in own_children(prekeys, version.namespace()) {
        if child.name() != n.pk {
            return Err(OmemoXmlError::UnexpectedElement("prekeys"));
        }
        if out.len() == MAX_PREKEYS {
            return Err(OmemoXmlError::TooMany {
                what: n.pk,
                limit: MAX_PREKEYS,
            });
        }
        let id = key_id(version, attr_number(child, n.pk, n.pk_id)?, n.pk, n.pk_id)?;
        if !seen.insert(id) {
            return Err(OmemoXmlError::DuplicateId {
                what: "prekey id",
                id,
            });
        }
        out.push((id, public_key(version, n.pk, b64_content(child, n.pk)?)?));
    }
    // OMEMO key exchanges always consume a one-time prekey: a bundle without any is useless.
    if out.is_empty() {
        return Err(OmemoXmlError::MissingChild {
            parent: "prekeys",
            child: n.pk,
        });
    }
    Ok(out)
}

pub(crate) fn bundle_element(version: OmemoVersion, bundle: &BundleItem) -> Result<Element> {
    let ns = version.namespace();
    let n = bundle_names(version);
    key_id(version, u64::from(bundle.spk_id), n.spk, n.spk_id)?;
    public_key(version, n.spk, &bundle.spk)?;
    signature(n.spks, &bundle.spks)?;
    public_key(version, n.ik, &bundle.ik)?;
    if bundle.prekeys.is_empty() {
        return Err(OmemoXmlError::MissingChild {
            parent: "prekeys",
            child: n.pk,
        });
    }
    if bundle.prekeys.len() > MAX_PREKEYS {
        return Err(OmemoXmlError::TooMany {
            what: n.pk,
            limit: MAX_PREKEYS,
        });
    }
    let mut seen = HashSet::new();
    let mut prekeys = el("prekeys", ns);
    for (id, key) in &bundle.prekeys {
        key_id(version, u64::from(*id), n.pk, n.pk_id)?;
        if !seen.insert(*id) {
            return Err(OmemoXmlError::DuplicateId {
                what: "prekey id",
                id: *id,
            });
        }
        public_key(version, n.pk, key)?;
        prekeys = prekeys.child(
            el(n.pk, ns)
                .attr(n.pk_id, id.to_string())
                .text(encode_b64(key)),
        );
    }
    Ok(el("bundle", ns)
        .child(
            el(n.spk, ns)
                .attr(n.spk_id, bundle.spk_id.to_string())
                .text(encode_b64(&bundle.spk)),
        )
        .child(el(n.spks, ns).text(encode_b64(&bundle.spks)))
        .child(el(n.ik, ns).text(encode_b64(&bundle.ik)))
        .child(prekeys)
        .build())
}

/// Key ids: bounded like device ids in OMEMO 2; any `u32` in 0.3, which states no range.
fn key_id(
    version: OmemoVersion,
    value: u64,
    element: &'static str,
    attr: &'static str,
) -> Result<u32> {
    match version {
        OmemoVersion::V03 => {
            u32::try_from(value).map_err(|_| OmemoXmlError::BadNumber { element, attr })
        }
        OmemoVersion::V2 => check_id(value, element),
    }
}

fn public_key<K: AsRef<[u8]>>(version: OmemoVersion, what: &'static str, key: K) -> Result<K> {
    let bytes = key.as_ref();
    let expected = match version {
        OmemoVersion::V03 => 33,
        OmemoVersion::V2 => 32,
    };
    if bytes.len() != expected {
        return Err(OmemoXmlError::BadLength {
            what,
            expected: if expected == 33 { "33" } else { "32" },
            got: bytes.len(),
        });
    }
    if version == OmemoVersion::V03 && bytes[0] != DJB_TYPE {
        return Err(OmemoXmlError::BadKeyType(what));
    }
    Ok(key)
}

fn signature<S: AsRef<[u8]>>(what: &'static str, sig: S) -> Result<S> {
    let got = sig.as_ref().len();
    if got != SIGNATURE_LEN {
        return Err(OmemoXmlError::BadLength {
            what,
            expected: "64",
            got,
        });
    }
    Ok(sig)
}

// ---------------------------------------------------------------------------------------------
// Encrypted messages

/// Parses an `<encrypted>` element; the namespace says which version.
pub(crate) fn parse_encrypted(root: &Element) -> Result<Encrypted> {
    let version = if root.is("encrypted", NS_OMEMO_03) {
        OmemoVersion::V03
    } else if root.is("encrypted", NS_OMEMO_2) {
        OmemoVersion::V2
    } else {
        return Err(OmemoXmlError::WrongElement {
            name: "encrypted",
            ns: "eu.siacs.conversations.axolotl' or 'urn:xmpp:omemo:2",
        });
    };
    let ns = version.namespace();
    no_text(root, "encrypted")?;
    let (mut header, mut payload) = (None, None);
    for child in own_children(root, ns) {
        match child.name() {
            "header" => set_once(&mut header, child, "encrypted", "header")?,
            "payload" => set_once(
                &mut payload,
                b64_content(child, "payload")?,
                "encrypted",
                "payload",
            )?,
            _ => return Err(OmemoXmlError::UnexpectedElement("encrypted")),
        }
    }
    let header = header.ok_or(OmemoXmlError::MissingChild {
        parent: "encrypted",
        child: "header",
    })?;
    no_text(header, "header")?;
    let sid = check_id(attr_number(header, "header", "sid")?, "sid")?;
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    let mut iv = None;
    for child in own_children(header, ns) {
        match (version, child.name()) {
            (OmemoVersion::V03, "key") => {
                let key = parse_key(child, None, version)?;
                push_key(&mut keys, &mut seen, key)?;
            }
            (OmemoVersion::V03, "iv") => set_once(
                &mut iv,
                iv_bytes(b64_content(child, "iv")?)?,
                "header",
                "iv",
            )?,
            (OmemoVersion::V2, "keys") => {
                no_text(child, "keys")?;
                let jid = child.attr("jid").ok_or(OmemoXmlError::MissingAttribute {
                    element: "keys",
                    attr: "jid",
                })?;
                let jid = parse_bare_jid(jid)?;
                let before = keys.len();
                for key in own_children(child, ns) {
                    if key.name() != "key" {
                        return Err(OmemoXmlError::UnexpectedElement("keys"));
                    }
                    let key = parse_key(key, Some(jid.clone()), version)?;
                    push_key(&mut keys, &mut seen, key)?;
                }
                if keys.len() == before {
                    return Err(OmemoXmlError::MissingChild {
                        parent: "keys",
                        child: "key",
                    });
                }
            }
            _ => return Err(OmemoXmlError::UnexpectedElement("header")),
        }
    }
    if keys.is_empty() {
        return Err(OmemoXmlError::MissingChild {
            parent: "header",
            child: match version {
                OmemoVersion::V03 => "key",
                OmemoVersion::V2 => "keys",
            },
        });
    }
    // The 0.3 schema makes <iv> mandatory, but python-oldmemo leaves it out of messages
    // without payload; only a payload needs it.
    if version == OmemoVersion::V03 && payload.is_some() && iv.is_none() {
        return Err(OmemoXmlError::MissingChild {
            parent: "header",
            child: "iv",
        });
    }
    Ok(Encrypted {
        version,
        sid,
        keys,
        iv,
        payload,
    })
}

fn parse_key(key: &Element, jid: Option<BareJid>, version: OmemoVersion) -> Result<KeyEntry> {
    let rid = check_id(attr_number(key, "key", "rid")?, "rid")?;
    let flag = match version {
        OmemoVersion::V03 => "prekey",
        OmemoVersion::V2 => "kex",
    };
    let kex = match key.attr(flag) {
        None => false,
        Some(v) => parse_bool(v).ok_or(OmemoXmlError::BadBoolean {
            element: "key",
            attr: flag,
        })?,
    };
    let data = key_data(b64_content(key, "key")?)?;
    Ok(KeyEntry {
        jid,
        rid,
        kex,
        data,
    })
}

/// Two keys for one device leave no right answer as to which to decrypt, so both versions
/// refuse them; the count bound is checked before anything more is stored.
fn push_key(
    keys: &mut Vec<KeyEntry>,
    seen: &mut HashSet<(Option<BareJid>, u32)>,
    key: KeyEntry,
) -> Result<()> {
    if keys.len() == MAX_KEYS {
        return Err(OmemoXmlError::TooMany {
            what: "key",
            limit: MAX_KEYS,
        });
    }
    if !seen.insert((key.jid.clone(), key.rid)) {
        return Err(OmemoXmlError::DuplicateId {
            what: "rid",
            id: key.rid,
        });
    }
    keys.push(key);
    Ok(())
}

fn key_data<D: AsRef<[u8]>>(data: D) -> Result<D> {
    let got = data.as_ref().len();
    if got == 0 || got > MAX_KEY_BYTES {
        return Err(OmemoXmlError::BadLength {
            what: "key",
            expected: "1..=1024",
            got,
        });
    }
    Ok(data)
}

fn iv_bytes<V: AsRef<[u8]>>(iv: V) -> Result<V> {
    let got = iv.as_ref().len();
    // 12 is the GCM standard nonce; Conversations sent 16 for years and still decrypts them.
    if got != 12 && got != 16 {
        return Err(OmemoXmlError::BadLength {
            what: "iv",
            expected: "12 or 16",
            got,
        });
    }
    Ok(iv)
}

/// A full JID is refused rather than cut down to its bare part: the XEP says bare, and a
/// sender that gets this wrong cannot be trusted with the rest of the header.
fn parse_bare_jid(s: &str) -> Result<BareJid> {
    BareJid::parse(s).map_err(|_| OmemoXmlError::BadJid)
}

pub(crate) fn encrypted_element(msg: &Encrypted) -> Result<Element> {
    let version = msg.version;
    let ns = version.namespace();
    check_id(u64::from(msg.sid), "sid")?;
    if msg.keys.is_empty() {
        return Err(OmemoXmlError::MissingChild {
            parent: "header",
            child: "key",
        });
    }
    if msg.keys.len() > MAX_KEYS {
        return Err(OmemoXmlError::TooMany {
            what: "key",
            limit: MAX_KEYS,
        });
    }
    let mut seen = HashSet::new();
    for k in &msg.keys {
        check_id(u64::from(k.rid), "rid")?;
        key_data(&k.data)?;
        if !seen.insert((&k.jid, k.rid)) {
            return Err(OmemoXmlError::DuplicateId {
                what: "rid",
                id: k.rid,
            });
        }
    }
    let key_el = |k: &KeyEntry, flag: &'static str| {
        el("key", ns)
            .attr("rid", k.rid.to_string())
            .attr_opt(flag, k.kex.then_some("true"))
            .text(encode_b64(&k.data))
    };
    let mut header = el("header", ns).attr("sid", msg.sid.to_string());
    match version {
        OmemoVersion::V03 => {
            if msg.keys.iter().any(|k| k.jid.is_some()) {
                return Err(OmemoXmlError::Unrepresentable("a JID on an OMEMO 0.3 key"));
            }
            if msg.payload.is_some() && msg.iv.is_none() {
                return Err(OmemoXmlError::MissingChild {
                    parent: "header",
                    child: "iv",
                });
            }
            for k in &msg.keys {
                header = header.child(key_el(k, "prekey"));
            }
            if let Some(iv) = &msg.iv {
                iv_bytes(iv)?;
                header = header.child(el("iv", ns).text(encode_b64(iv)));
            }
        }
        OmemoVersion::V2 => {
            if msg.iv.is_some() {
                return Err(OmemoXmlError::Unrepresentable("an <iv> in OMEMO 2"));
            }
            let mut jids: Vec<&BareJid> = Vec::new();
            for k in &msg.keys {
                let jid = k
                    .jid
                    .as_ref()
                    .ok_or(OmemoXmlError::Unrepresentable("an OMEMO 2 key without JID"))?;
                if !jids.contains(&jid) {
                    jids.push(jid);
                }
            }
            for jid in jids {
                let mut group = el("keys", ns).attr("jid", jid.as_str());
                for k in msg.keys.iter().filter(|k| k.jid.as_ref() == Some(jid)) {
                    group = group.child(key_el(k, "kex"));
                }
                header = header.child(group);
            }
        }
    }
    let mut out = el("encrypted", ns).child(header);
    if let Some(payload) = &msg.payload {
        out = out.child(el("payload", ns).text(encode_b64(payload)));
    }
    Ok(out.build())
}

// ---------------------------------------------------------------------------------------------
// Shared checks

/// Child elements in `ns`; children of other namespaces are extensions we do not know.
fn own_children<'a>(parent: &'a Element, ns: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
    parent.children().filter(move |c| c.ns() == ns)
}

fn no_text(el: &Element, what: &'static str) -> Result<()> {
    if el.texts().any(|t| !t.trim().is_empty()) {
        return Err(OmemoXmlError::UnexpectedText(what));
    }
    Ok(())
}

/// The base64 text of a leaf element. A child element inside would make minidom's text()
/// silently join the pieces around it, so it is refused.
fn b64_content(el: &Element, what: &'static str) -> Result<Vec<u8>> {
    if el.nodes().any(|n| matches!(n, Node::Element(_))) {
        return Err(OmemoXmlError::UnexpectedElement(what));
    }
    decode_b64(&el.text()).ok_or(OmemoXmlError::BadBase64(what))
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    parent: &'static str,
    child: &'static str,
) -> Result<()> {
    if slot.is_some() {
        return Err(OmemoXmlError::DuplicateChild { parent, child });
    }
    *slot = Some(value);
    Ok(())
}

fn attr_number(el: &Element, element: &'static str, attr: &'static str) -> Result<u64> {
    let v = el
        .attr(attr)
        .ok_or(OmemoXmlError::MissingAttribute { element, attr })?;
    parse_unsigned(v).ok_or(OmemoXmlError::BadNumber { element, attr })
}

fn check_id(value: u64, what: &'static str) -> Result<u32> {
    match u32::try_from(value) {
        Ok(id) if (1..=MAX_DEVICE_ID).contains(&id) => Ok(id),
        _ => Err(OmemoXmlError::IdOutOfRange { what, value }),
    }
}

/// xs:unsignedInt's lexical space (whitespace collapsed, optional '+', leading zeros), read
/// into a u64 so that "too large" stays distinguishable from "not a number".
fn parse_unsigned(s: &str) -> Option<u64> {
    let s = s.trim_matches(is_xml_space);
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    if significant.len() > 19 {
        return Some(u64::MAX);
    }
    significant.parse().ok()
}

/// xs:boolean: "true", "false", "1", "0".
fn parse_bool(s: &str) -> Option<bool> {
    match s.trim_matches(is_xml_space) {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Standard alphabet; padding optional since some senders drop it and the value is the same
/// either way; non-canonical trailing bits stay an error.
const B64_IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// xs:base64Binary allows whitespace anywhere (the XEP's own examples wrap and indent it).
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !is_xml_space(*c)).collect();
    B64_IN.decode(compact).ok()
}

fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixtures: the examples of XEP-0384 (0.3.0 for eu.siacs.conversations.axolotl, 0.9.1 for
    // urn:xmpp:omemo:2) with their layout, ids and attributes as printed. The XEP's
    // placeholders ("BASE64ENCODED...", "b64/encoded/data") cannot be real keys, so the
    // fixtures carry keys of the right shape in their place; the placeholders themselves are
    // fed in by the `xep_placeholders_*` tests, which must reject them.

    /// XEP-0384 0.3.0, "Devicelist update received by subscribed clients": the item payload.
    const XEP03_LIST: &str = "<list xmlns='eu.siacs.conversations.axolotl'>
          <device id='12345' />
          <device id='4223' />
        </list>";

    /// XEP-0384 0.3.0, "Announcing bundle information".
    const XEP03_BUNDLE: &str = "<bundle xmlns='eu.siacs.conversations.axolotl'>
          <signedPreKeyPublic signedPreKeyId='1'>
            BV3DwbMF573A8z8BW0JWeohRPHio/KJ70s7as5Ts4bjC
          </signedPreKeyPublic>
          <signedPreKeySignature>
            8/FaI+Q/E4js5FwvALpBv9KSCyJ51ANwdlX2FTwRQgVkV2HvDLZp5MmHm7Lbtkxf3Y3hAhHzB/0NA2a2uWzu5Q==
          </signedPreKeySignature>
          <identityKey>
            BazaL5Cn0ZZQHAKybqtIHUSo3gZeYd685v+OFxBEXfv/
          </identityKey>
          <prekeys>
            <preKeyPublic preKeyId='1'>
              BazgjVp7NhcQKOm3jqCWTgRI48eRoP/byS3+9nPefB/J
            </preKeyPublic>
            <preKeyPublic preKeyId='2'>
              BQYgD89ognjy8pDWD8sa9H/oAl0bqihDsWBzSmjyjN+W
            </preKeyPublic>
            <preKeyPublic preKeyId='3'>
              BeOIilixyWSizUInYSW6UjvdGVyadhYizKhzZ1ubFJZX
            </preKeyPublic>
          </prekeys>
        </bundle>";

    /// XEP-0384 0.3.0, "Sending a message".
    const XEP03_MESSAGE: &str = "<encrypted xmlns='eu.siacs.conversations.axolotl'>
    <header sid='27183'>
      <key rid='31415'>SuQ/2DWEhKZbA8/zs/Dr5UeN6kg5jSRij0FClRjkvOATh20GJ6SPGY5dXuugROquznVFoRLYcu8fx692jk2nf1jgj2m6g4bi24dbGi2Sc0pMnE9i5Eli/SnlmlRvrbNmZ3TpezLUfk6EgBnHMz0K7PsetG8zWRfz</key>
      <key prekey=\"true\" rid='12321'>y2eQOmLT1NZOXAo7R35SI4BRz50zcq0Cfc6xNUP/FXPXHyOKa3TjsXMC9XHoKFV6knkdw4RwuzmcwsZ10XMCF0MrLnv0WD53bDr4PhlSq6fvPT5pVgpbUCCIOZCuqiPJ9o8xiec5TYs50bi9sDUinKrGfsPh1x++TEypoLLf8vtSCzKrxy35+x3k97aI9njCrHRJyN5mPDUgsRaPi21j7WQNowmoNjoC5dsfvTpgZ/Axw+Ja</key>
      <iv>NnEGZNYbkpXlQl/w</iv>
    </header>
    <payload>9d6yOlsirPzWDlYWnkmLLwJGs5fshv10KCAxqj57QKJ1864QVw==</payload>
  </encrypted>";

    /// XEP-0384 0.3.0, "Sending a key": a KeyTransportElement, no payload.
    const XEP03_KEY_TRANSPORT: &str = "<encrypted xmlns='eu.siacs.conversations.axolotl'>
  <header sid='27183'>
    <key rid='31415'>SuQ/2DWEhKZbA8/zs/Dr5UeN6kg5jSRij0FClRjk</key>
    <key prekey=\"true\" rid='12321'>y2eQOmLT1NZOXAo7R35SI4BRz50zcq0Cfc6xNUP/</key>
    <iv>NnEGZNYbkpXlQl/w</iv>
  </header>
</encrypted>";

    /// XEP-0384 0.9.1, "Devicelist update received by subscribed clients", exactly as printed.
    const XEP2_DEVICES_UPDATE: &str = "<devices xmlns='urn:xmpp:omemo:2'>
          <device id='12345' />
          <device id='4223' label='Gajim on Ubuntu Linux' labelsig='b64/encoded/data' />
        </devices>";

    /// XEP-0384 0.9.1, "Adding the own device id to the list", with 64-byte signatures in
    /// place of 'b64/encoded/data'.
    const XEP2_DEVICES_PUBLISH: &str = "<devices xmlns='urn:xmpp:omemo:2'>
          <device id='12345' label='Dino on Lenovo Thinkpad T495' labelsig='8/FaI+Q/E4js5FwvALpBv9KSCyJ51ANwdlX2FTwRQgVkV2HvDLZp5MmHm7Lbtkxf3Y3hAhHzB/0NA2a2uWzu5Q==' />
          <device id='4223' />
          <device id='31415' label='Conversations on Pixel 3' labelsig='8/FaI+Q/E4js5FwvALpBv9KSCyJ51ANwdlX2FTwRQgVkV2HvDLZp5MmHm7Lbtkxf3Y3hAhHzB/0NA2a2uWzu5Q==' />
        </devices>";

    /// XEP-0384 0.9.1, "Publishing bundle information" (pk 1, 2 and 100 of the example).
    const XEP2_BUNDLE: &str = "<bundle xmlns='urn:xmpp:omemo:2'>
          <spk id='1'>5RzFuGwCyE/NyGuK+I969Jzt8tqF9+TL6/OPqAXZSrY=</spk>
          <spks>8/FaI+Q/E4js5FwvALpBv9KSCyJ51ANwdlX2FTwRQgVkV2HvDLZp5MmHm7Lbtkxf3Y3hAhHzB/0NA2a2uWzu5Q==</spks>
          <ik>UyioqqMM+nncme79LV8JNPbHhAplrBxyJwuSSxq1+8k=</ik>
          <prekeys>
            <pk id='1'>ruUUdLDUJDrH8YLzwNGB/xkZukaQiMPpka3NGwdbR0w=</pk>
            <pk id='2'>88b7RcXCYk4Wmoa5y5crkxkV635eXPca/WQsQW00Rs8=</pk>
            <pk id='100'>nHZyWUoJ5b6ekMHzrMepD/L2txu4bYr2/hjRuDPb1rc=</pk>
          </prekeys>
        </bundle>";

    /// XEP-0384 0.9.1, "Sending a message": keys as printed ('b64/encoded/data' is valid
    /// base64 of 12 bytes), the payload placeholder replaced (it is not valid base64).
    const XEP2_MESSAGE: &str = "<encrypted xmlns='urn:xmpp:omemo:2'>
    <header sid='27183'>
      <keys jid='juliet@capulet.lit'>
        <key rid='31415'>b64/encoded/data</key>
      </keys>
      <keys jid='romeo@montague.lit'>
        <key rid='1337'>b64/encoded/data</key>
        <key kex='true' rid='12321'>b64/encoded/data</key>
      </keys>
    </header>
    <payload>
      9d6yOlsirPzWDlYWnkmLLwJGs5fshv10KCAxqj57QKJ1864QVw==
    </payload>
  </encrypted>";

    /// XEP-0384 0.9.1, "Juliet sends a message to a group chat with Romeo and Mercutio".
    const XEP2_GROUP_MESSAGE: &str = "<encrypted xmlns='urn:xmpp:omemo:2'>
    <header sid='27183'>
      <keys jid='juliet@capulet.lit'>
        <key rid='31415'>b64/encoded/data</key>
      </keys>
      <keys jid='romeo@montague.lit'>
        <key kex='true' rid='123'>b64/encoded/data</key>
      </keys>
      <keys jid='mercutio@verona.lit'>
        <key kex='true' rid='456'>b64/encoded/data</key>
      </keys>
    </header>
  </encrypted>";

    const SIG_B64: &str =
        "8/FaI+Q/E4js5FwvALpBv9KSCyJ51ANwdlX2FTwRQgVkV2HvDLZp5MmHm7Lbtkxf3Y3hAhHzB/0NA2a2uWzu5Q==";

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    fn b64(s: &str) -> Vec<u8> {
        decode_b64(s).unwrap()
    }

    fn key03(seed: u8) -> Vec<u8> {
        let mut k = vec![seed; 33];
        k[0] = 0x05;
        k
    }

    fn bundle(version: OmemoVersion, prekeys: usize) -> BundleItem {
        let key = |seed: u8| match version {
            OmemoVersion::V03 => key03(seed),
            OmemoVersion::V2 => vec![seed; 32],
        };
        BundleItem {
            spk_id: 7,
            spk: key(1),
            spks: vec![2; 64],
            ik: key(3),
            prekeys: (1..=prekeys as u32).map(|i| (i, key(i as u8))).collect(),
        }
    }

    fn message(version: OmemoVersion) -> Encrypted {
        let (j1, j2) = match version {
            OmemoVersion::V03 => (None, None),
            OmemoVersion::V2 => (
                Some(jid("juliet@capulet.lit")),
                Some(jid("romeo@montague.lit")),
            ),
        };
        Encrypted {
            version,
            sid: 27183,
            keys: vec![
                KeyEntry {
                    jid: j1,
                    rid: 31415,
                    kex: false,
                    data: vec![1; 60],
                },
                KeyEntry {
                    jid: j2,
                    rid: 12321,
                    kex: true,
                    data: vec![2; 180],
                },
            ],
            iv: (version == OmemoVersion::V03).then(|| vec![3; 12]),
            payload: Some(vec![4; 37]),
        }
    }

    #[test]
    fn a_group_message_goes_to_the_room_and_asks_for_no_receipt() {
        let room = jid("secret-room@conference.capulet.lit");
        let m = groupchat_stanza(
            &room,
            "g1",
            &[message(OmemoVersion::V2)],
            FALLBACK_BODY,
            &crate::rich::Extras::default(),
        )
        .unwrap();
        assert_eq!(m.attr("type"), Some("groupchat"));
        assert_eq!(m.attr("to"), Some(room.as_str()));
        assert!(m
            .get_child("encrypted", OmemoVersion::V2.namespace())
            .is_some());
        assert!(m.get_child("store", crate::inbound::NS_HINTS).is_some());
        assert!(m
            .get_child("request", crate::inbound::NS_RECEIPTS)
            .is_none());
        assert!(m.get_child("markable", "urn:xmpp:chat-markers:0").is_none());
        let chat = chat_stanza(
            &room,
            "c1",
            &[message(OmemoVersion::V2)],
            Some(FALLBACK_BODY),
            &crate::rich::Extras::default(),
        )
        .unwrap();
        assert_eq!(chat.attr("type"), Some("chat"));
        assert!(chat
            .get_child("request", crate::inbound::NS_RECEIPTS)
            .is_some());
    }

    fn ids(list: &DeviceListItem) -> Vec<u32> {
        list.devices.iter().map(|d| d.id).collect()
    }

    // --- The XEP's examples -------------------------------------------------------------

    #[test]
    fn xep03_device_list() {
        let list = DeviceListItem::from_xml(OmemoVersion::V03, XEP03_LIST).unwrap();
        assert_eq!(ids(&list), [12345, 4223]);
        assert!(list.devices.iter().all(|d| d.label.is_none()));
    }

    #[test]
    fn xep2_device_list_drops_a_label_whose_signature_cannot_be_one() {
        // The XEP's own labelsig placeholder decodes to 12 bytes: the label MUST be ignored.
        let list = DeviceListItem::from_xml(OmemoVersion::V2, XEP2_DEVICES_UPDATE).unwrap();
        assert_eq!(list.devices, [Device::new(12345), Device::new(4223)]);

        let list = DeviceListItem::from_xml(OmemoVersion::V2, XEP2_DEVICES_PUBLISH).unwrap();
        assert_eq!(ids(&list), [12345, 4223, 31415]);
        assert_eq!(
            list.devices[0].label.as_deref(),
            Some("Dino on Lenovo Thinkpad T495")
        );
        assert_eq!(list.devices[0].labelsig.as_deref(), Some(&b64(SIG_B64)[..]));
        assert_eq!(list.devices[1], Device::new(4223));
        assert_eq!(
            list.devices[2].label.as_deref(),
            Some("Conversations on Pixel 3")
        );
    }

    #[test]
    fn xep03_bundle_with_wrapped_base64() {
        let b = BundleItem::from_xml(OmemoVersion::V03, XEP03_BUNDLE).unwrap();
        assert_eq!(b.spk_id, 1);
        assert_eq!(b.spk, b64("BV3DwbMF573A8z8BW0JWeohRPHio/KJ70s7as5Ts4bjC"));
        assert_eq!(b.ik, b64("BazaL5Cn0ZZQHAKybqtIHUSo3gZeYd685v+OFxBEXfv/"));
        assert_eq!(b.spks, b64(SIG_B64));
        assert_eq!(
            b.prekeys.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            b.prekeys[1].1,
            b64("BQYgD89ognjy8pDWD8sa9H/oAl0bqihDsWBzSmjyjN+W")
        );
    }

    #[test]
    fn xep2_bundle() {
        let b = BundleItem::from_xml(OmemoVersion::V2, XEP2_BUNDLE).unwrap();
        assert_eq!(b.spk_id, 1);
        assert_eq!(b.ik, b64("UyioqqMM+nncme79LV8JNPbHhAplrBxyJwuSSxq1+8k="));
        assert_eq!(
            b.prekeys.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [1, 2, 100]
        );
    }

    #[test]
    fn xep03_messages() {
        let m = Encrypted::from_xml(XEP03_MESSAGE).unwrap();
        assert_eq!(m.version, OmemoVersion::V03);
        assert_eq!(m.sid, 27183);
        assert_eq!(
            m.keys
                .iter()
                .map(|k| (k.jid.is_none(), k.rid, k.kex))
                .collect::<Vec<_>>(),
            [(true, 31415, false), (true, 12321, true)]
        );
        assert_eq!(m.keys[0].data.len(), 120);
        assert_eq!(m.iv.as_deref(), Some(&b64("NnEGZNYbkpXlQl/w")[..]));
        assert_eq!(m.payload.as_ref().map(Vec::len), Some(37));
        // 0.3 keys carry no JID: ours is found by device id alone.
        let me = jid("juliet@capulet.lit");
        assert_eq!(m.key_for(&me, 12321).map(|k| k.kex), Some(true));
        assert!(m.key_for(&me, 1).is_none());

        let t = Encrypted::from_xml(XEP03_KEY_TRANSPORT).unwrap();
        assert_eq!(t.payload, None);
        assert_eq!(t.iv.as_ref().map(Vec::len), Some(12));
        assert_eq!(t.keys.len(), 2);
    }

    #[test]
    fn xep2_messages() {
        let m = Encrypted::from_xml(XEP2_MESSAGE).unwrap();
        assert_eq!(m.version, OmemoVersion::V2);
        assert_eq!(m.sid, 27183);
        assert_eq!(m.iv, None);
        let juliet = jid("juliet@capulet.lit");
        let romeo = jid("romeo@montague.lit");
        assert_eq!(
            m.keys
                .iter()
                .map(|k| (k.jid.clone().unwrap(), k.rid, k.kex))
                .collect::<Vec<_>>(),
            [
                (juliet.clone(), 31415, false),
                (romeo.clone(), 1337, false),
                (romeo.clone(), 12321, true)
            ]
        );
        assert_eq!(m.keys[0].data, b64("b64/encoded/data"));
        assert_eq!(m.payload.as_ref().map(Vec::len), Some(37));
        // In OMEMO 2 the JID is part of the match.
        assert_eq!(m.key_for(&juliet, 31415).map(|k| k.rid), Some(31415));
        assert!(m.key_for(&romeo, 31415).is_none());

        let g = Encrypted::from_xml(XEP2_GROUP_MESSAGE).unwrap();
        assert_eq!(g.keys.len(), 3);
        assert_eq!(g.payload, None);
        assert_eq!(
            g.keys[2].jid.as_ref().map(BareJid::as_str),
            Some("mercutio@verona.lit")
        );
    }

    #[test]
    fn xep_placeholders_are_not_keys() {
        let e = BundleItem::from_xml(
            OmemoVersion::V03,
            "<bundle xmlns='eu.siacs.conversations.axolotl'>
               <signedPreKeyPublic signedPreKeyId='1'>
                 BASE64ENCODED...
               </signedPreKeyPublic>
             </bundle>",
        );
        assert_eq!(e, Err(OmemoXmlError::BadBase64("signedPreKeyPublic")));
        let e = BundleItem::from_xml(
            OmemoVersion::V2,
            "<bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>b64/encoded/data</spk></bundle>",
        );
        assert_eq!(
            e,
            Err(OmemoXmlError::BadLength {
                what: "spk",
                expected: "32",
                got: 12
            })
        );
        let printed = XEP2_MESSAGE.replace(
            "9d6yOlsirPzWDlYWnkmLLwJGs5fshv10KCAxqj57QKJ1864QVw==",
            "base64/encoded/message/key/encrypted/envelope/element",
        );
        assert_eq!(
            Encrypted::from_xml(&printed),
            Err(OmemoXmlError::BadBase64("payload"))
        );
    }

    // --- Round trips ---------------------------------------------------------------------

    #[test]
    fn device_lists_round_trip() {
        let mut list = DeviceListItem {
            devices: vec![
                Device::new(1),
                Device::new(MAX_DEVICE_ID),
                Device::new(4223),
            ],
        };
        let xml = list.to_xml(OmemoVersion::V03).unwrap();
        assert!(xml.starts_with("<list xmlns='eu.siacs.conversations.axolotl'>"));
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V03, &xml).unwrap(),
            list
        );

        list.devices[2].label = Some("Linnet on a phone <&'\"> ☃".into());
        list.devices[2].labelsig = Some(vec![9; 64]);
        let xml = list.to_xml(OmemoVersion::V2).unwrap();
        assert!(xml.starts_with("<devices xmlns='urn:xmpp:omemo:2'>"));
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V2, &xml).unwrap(),
            list
        );

        let empty = DeviceListItem::default();
        for v in [OmemoVersion::V03, OmemoVersion::V2] {
            let xml = empty.to_xml(v).unwrap();
            assert_eq!(DeviceListItem::from_xml(v, &xml).unwrap(), empty);
        }
    }

    #[test]
    fn bundles_round_trip() {
        for v in [OmemoVersion::V03, OmemoVersion::V2] {
            let b = bundle(v, 100);
            let xml = b.to_xml(v).unwrap();
            assert_eq!(BundleItem::from_xml(v, &xml).unwrap(), b, "{v:?}");
        }
        let xml = bundle(OmemoVersion::V2, 1)
            .to_xml(OmemoVersion::V2)
            .unwrap();
        assert!(xml.contains("<spk id='7'>"), "{xml}");
        let xml = bundle(OmemoVersion::V03, 1)
            .to_xml(OmemoVersion::V03)
            .unwrap();
        assert!(xml.contains("<signedPreKeyPublic signedPreKeyId='7'>"));
        assert!(xml.contains("<preKeyPublic preKeyId='1'>"));
    }

    #[test]
    fn messages_round_trip() {
        for v in [OmemoVersion::V03, OmemoVersion::V2] {
            let m = message(v);
            let xml = m.to_xml().unwrap();
            assert_eq!(Encrypted::from_xml(&xml).unwrap(), m, "{v:?}");

            let mut empty = m.clone();
            empty.payload = None;
            let xml = empty.to_xml().unwrap();
            assert!(!xml.contains("payload"));
            assert_eq!(Encrypted::from_xml(&xml).unwrap(), empty);
        }
        let xml = message(OmemoVersion::V03).to_xml().unwrap();
        assert!(xml.contains("prekey='true'"));
        assert!(!xml.contains("prekey='false'"));
        let xml = message(OmemoVersion::V2).to_xml().unwrap();
        assert!(xml.contains("kex='true'"));
        assert!(xml.contains("<keys jid='juliet@capulet.lit'>"));
    }

    #[test]
    fn omemo2_keys_are_grouped_by_jid() {
        let mut m = message(OmemoVersion::V2);
        let mut third = m.keys[0].clone();
        third.rid = 99;
        m.keys.push(third);
        let parsed = Encrypted::from_xml(&m.to_xml().unwrap()).unwrap();
        assert_eq!(
            parsed.keys.iter().map(|k| k.rid).collect::<Vec<_>>(),
            [31415, 99, 12321]
        );
        assert_eq!(m.to_xml().unwrap().matches("<keys ").count(), 2);
    }

    #[test]
    fn omemo03_message_without_payload_may_omit_iv() {
        // python-oldmemo sends empty messages this way.
        let xml = "<encrypted xmlns='eu.siacs.conversations.axolotl'>\
                   <header sid='5'><key rid='6' prekey='1'>AAAA</key></header></encrypted>";
        let m = Encrypted::from_xml(xml).unwrap();
        assert_eq!((m.iv, m.payload, m.keys[0].kex), (None, None, true));
    }

    // --- Hostile input -------------------------------------------------------------------

    fn enc03(header_inner: &str, rest: &str) -> String {
        format!(
            "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'>{header_inner}\
             </header>{rest}</encrypted>"
        )
    }

    fn enc2(header_inner: &str, rest: &str) -> String {
        format!(
            "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='27183'>{header_inner}</header>\
             {rest}</encrypted>"
        )
    }

    const IV: &str = "<iv>NnEGZNYbkpXlQl/w</iv>";

    #[test]
    fn base64_that_does_not_decode() {
        let cases = [
            (enc03(&format!("<key rid='1'>A*AA</key>{IV}"), ""), "key"),
            (
                enc03(
                    &format!("<key rid='1'>AAAA</key>{IV}"),
                    "<payload>A</payload>",
                ),
                "payload",
            ),
            (enc03("<key rid='1'>AAAA</key><iv>!!</iv>", ""), "iv"),
            // Non-canonical trailing bits ("AB==" would be the canonical form of one byte).
            (
                enc2("<keys jid='a@b'><key rid='1'>AB==</key></keys>", ""),
                "key",
            ),
            (
                enc2(
                    "<keys jid='a@b'><key rid='1'>AAAA</key></keys>",
                    "<payload>ü</payload>",
                ),
                "payload",
            ),
        ];
        for (xml, what) in cases {
            assert_eq!(
                Encrypted::from_xml(&xml),
                Err(OmemoXmlError::BadBase64(what)),
                "{xml}"
            );
        }
        let ik_bad = XEP2_BUNDLE.replace("UyioqqMM+nncme79LV8JNPbHhAplrBxyJwuSSxq1+8k=", "%%%%");
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &ik_bad),
            Err(OmemoXmlError::BadBase64("ik"))
        );
        let pk_bad = XEP03_BUNDLE.replace("BQYgD89ognjy8pDWD8sa9H/oAl0bqihDsWBzSmjyjN+W", "B-Yg");
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V03, &pk_bad),
            Err(OmemoXmlError::BadBase64("preKeyPublic"))
        );
    }

    #[test]
    fn keys_of_the_wrong_length_or_type() {
        // 0.3: a raw 32-byte key (the OMEMO 2 form) in a 0.3 bundle.
        let raw = encode_b64(&[5; 32]);
        let xml = XEP03_BUNDLE.replace("BazaL5Cn0ZZQHAKybqtIHUSo3gZeYd685v+OFxBEXfv/", &raw);
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V03, &xml),
            Err(OmemoXmlError::BadLength {
                what: "identityKey",
                expected: "33",
                got: 32
            })
        );
        // 0.3: 33 bytes without the 0x05 type byte.
        let mut wrong = key03(7);
        wrong[0] = 0x06;
        let xml = XEP03_BUNDLE.replace(
            "BazgjVp7NhcQKOm3jqCWTgRI48eRoP/byS3+9nPefB/J",
            &encode_b64(&wrong),
        );
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V03, &xml),
            Err(OmemoXmlError::BadKeyType("preKeyPublic"))
        );
        // 2: a 0x05-prefixed 0.3 key in an OMEMO 2 bundle.
        let xml = XEP2_BUNDLE.replace(
            "ruUUdLDUJDrH8YLzwNGB/xkZukaQiMPpka3NGwdbR0w=",
            &encode_b64(&key03(1)),
        );
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::BadLength {
                what: "pk",
                expected: "32",
                got: 33
            })
        );
        // Signatures are 64 bytes in both.
        let xml = XEP2_BUNDLE.replace(SIG_B64, &encode_b64(&[1; 63]));
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::BadLength {
                what: "spks",
                expected: "64",
                got: 63
            })
        );
        // IVs are 12 or 16 bytes; keys are 1..=MAX_KEY_BYTES.
        let xml = enc03("<key rid='1'>AAAA</key><iv>AAAAAAAAAAA=</iv>", "");
        assert!(matches!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::BadLength {
                what: "iv",
                got: 8,
                ..
            })
        ));
        let xml = enc2("<keys jid='a@b'><key rid='1'> </key></keys>", "");
        assert!(matches!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::BadLength {
                what: "key",
                got: 0,
                ..
            })
        ));
        let big = encode_b64(&[0; MAX_KEY_BYTES + 1]);
        let xml = enc2(
            &format!("<keys jid='a@b'><key rid='1'>{big}</key></keys>"),
            "",
        );
        assert!(matches!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::BadLength { what: "key", .. })
        ));
    }

    #[test]
    fn device_ids_out_of_range_or_not_numbers() {
        for (id, err) in [
            (
                "0",
                OmemoXmlError::IdOutOfRange {
                    what: "device id",
                    value: 0,
                },
            ),
            (
                "2147483648",
                OmemoXmlError::IdOutOfRange {
                    what: "device id",
                    value: 1 << 31,
                },
            ),
            (
                "4294967296",
                OmemoXmlError::IdOutOfRange {
                    what: "device id",
                    value: 1 << 32,
                },
            ),
            (
                "99999999999999999999999999",
                OmemoXmlError::IdOutOfRange {
                    what: "device id",
                    value: u64::MAX,
                },
            ),
            (
                "-1",
                OmemoXmlError::BadNumber {
                    element: "device",
                    attr: "id",
                },
            ),
            (
                "0x10",
                OmemoXmlError::BadNumber {
                    element: "device",
                    attr: "id",
                },
            ),
            (
                "",
                OmemoXmlError::BadNumber {
                    element: "device",
                    attr: "id",
                },
            ),
        ] {
            for v in [OmemoVersion::V03, OmemoVersion::V2] {
                let xml = format!(
                    "<{n} xmlns='{ns}'><device id='1'/><device id='{id}'/></{n}>",
                    n = list_name(v),
                    ns = v.namespace()
                );
                assert_eq!(
                    DeviceListItem::from_xml(v, &xml),
                    Err(err.clone()),
                    "{id} {v:?}"
                );
            }
        }
        // xs:unsignedInt's lexical forms are accepted.
        let xml = "<list xmlns='eu.siacs.conversations.axolotl'><device id=' +0042 '/></list>";
        assert_eq!(
            ids(&DeviceListItem::from_xml(OmemoVersion::V03, xml).unwrap()),
            [42]
        );
        assert_eq!(
            Encrypted::from_xml(&enc2("<keys jid='a@b'><key rid='0'>AAAA</key></keys>", "")),
            Err(OmemoXmlError::IdOutOfRange {
                what: "rid",
                value: 0
            })
        );
        let xml = XEP03_MESSAGE.replace("sid='27183'", "sid='2147483648'");
        assert_eq!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::IdOutOfRange {
                what: "sid",
                value: 1 << 31
            })
        );
    }

    #[test]
    fn key_ids_follow_each_version() {
        // OMEMO 2 bounds key ids like device ids.
        let xml = XEP2_BUNDLE.replace("<pk id='1'>", "<pk id='0'>");
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::IdOutOfRange {
                what: "pk",
                value: 0
            })
        );
        let xml = XEP2_BUNDLE.replace("<spk id='1'>", "<spk id='2147483648'>");
        assert!(matches!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::IdOutOfRange { what: "spk", .. })
        ));
        // OMEMO 0.3 states no range; libsignal ids may be 0 and are below 2^24.
        let xml = XEP03_BUNDLE
            .replace("signedPreKeyId='1'", "signedPreKeyId='0'")
            .replace("preKeyId='3'", "preKeyId='16777215'");
        let b = BundleItem::from_xml(OmemoVersion::V03, &xml).unwrap();
        assert_eq!((b.spk_id, b.prekeys[2].0), (0, 16_777_215));
        let xml = XEP03_BUNDLE.replace("preKeyId='3'", "preKeyId='4294967296'");
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V03, &xml),
            Err(OmemoXmlError::BadNumber {
                element: "preKeyPublic",
                attr: "preKeyId"
            })
        );
    }

    #[test]
    fn too_many_devices_prekeys_or_keys() {
        let devices: String = (1..=MAX_DEVICES + 1)
            .map(|i| format!("<device id='{i}'/>"))
            .collect();
        let xml = format!("<devices xmlns='urn:xmpp:omemo:2'>{devices}</devices>");
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::TooMany {
                what: "device",
                limit: MAX_DEVICES
            })
        );
        let at_limit = format!(
            "<devices xmlns='urn:xmpp:omemo:2'>{}</devices>",
            (1..=MAX_DEVICES)
                .map(|i| format!("<device id='{i}'/>"))
                .collect::<String>()
        );
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V2, &at_limit)
                .unwrap()
                .devices
                .len(),
            MAX_DEVICES
        );

        let xml = bundle(OmemoVersion::V2, MAX_PREKEYS)
            .to_xml(OmemoVersion::V2)
            .unwrap();
        let extra = format!("<pk id='999'>{}</pk></prekeys>", encode_b64(&[1; 32]));
        let xml = xml.replace("</prekeys>", &extra);
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::TooMany {
                what: "pk",
                limit: MAX_PREKEYS
            })
        );

        let keys: String = (1..=MAX_KEYS + 1)
            .map(|i| format!("<key rid='{i}'>AAAA</key>"))
            .collect();
        let xml = enc03(&format!("{keys}{IV}"), "");
        assert_eq!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::TooMany {
                what: "key",
                limit: MAX_KEYS
            })
        );
        // Spread over many <keys> groups the bound is the same.
        let groups: String = (1..=MAX_KEYS + 1)
            .map(|i| format!("<keys jid='u{i}@example.org'><key rid='1'>AAAA</key></keys>"))
            .collect();
        assert_eq!(
            Encrypted::from_xml(&enc2(&groups, "")),
            Err(OmemoXmlError::TooMany {
                what: "key",
                limit: MAX_KEYS
            })
        );
    }

    #[test]
    fn duplicate_ids() {
        let xml = "<list xmlns='eu.siacs.conversations.axolotl'>\
                   <device id='4223'/><device id='12345'/><device id='04223'/></list>";
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V03, xml),
            Err(OmemoXmlError::DuplicateId {
                what: "device id",
                id: 4223
            })
        );
        let xml = XEP2_BUNDLE.replace("<pk id='100'>", "<pk id='2'>");
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::DuplicateId {
                what: "prekey id",
                id: 2
            })
        );
        let xml = enc03(
            &format!("<key rid='7'>AAAA</key><key rid='7'>BBBB</key>{IV}"),
            "",
        );
        assert_eq!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::DuplicateId { what: "rid", id: 7 })
        );
        // In OMEMO 2 a device is (jid, rid): the same rid under two JIDs is two devices, and
        // the same (jid, rid) in two <keys> groups is a duplicate.
        let two_jids = enc2(
            "<keys jid='a@b'><key rid='7'>AAAA</key></keys>\
             <keys jid='c@d'><key rid='7'>AAAA</key></keys>",
            "",
        );
        assert_eq!(Encrypted::from_xml(&two_jids).unwrap().keys.len(), 2);
        let split = enc2(
            "<keys jid='a@b'><key rid='7'>AAAA</key></keys>\
             <keys jid='A@b'><key rid='7'>BBBB</key></keys>",
            "",
        );
        assert_eq!(
            Encrypted::from_xml(&split),
            Err(OmemoXmlError::DuplicateId { what: "rid", id: 7 })
        );
    }

    #[test]
    fn missing_required_parts() {
        let missing = |parent, child| Err(OmemoXmlError::MissingChild { parent, child });
        let attr = |element, attr| Err(OmemoXmlError::MissingAttribute { element, attr });
        let cases: Vec<(String, Result<Encrypted>)> = vec![
            (
                "<encrypted xmlns='urn:xmpp:omemo:2'><payload>AAAA</payload></encrypted>".into(),
                missing("encrypted", "header"),
            ),
            (
                "<encrypted xmlns='urn:xmpp:omemo:2'><header><keys jid='a@b'>\
                 <key rid='1'>AAAA</key></keys></header></encrypted>"
                    .into(),
                attr("header", "sid"),
            ),
            (enc2("", ""), missing("header", "keys")),
            (enc2("<keys jid='a@b'/>", ""), missing("keys", "key")),
            (
                enc2("<keys><key rid='1'>AAAA</key></keys>", ""),
                attr("keys", "jid"),
            ),
            (
                enc2("<keys jid='a@b'><key>AAAA</key></keys>", ""),
                attr("key", "rid"),
            ),
            (enc03(IV, ""), missing("header", "key")),
            (
                enc03("<key rid='1'>AAAA</key>", "<payload>AAAA</payload>"),
                missing("header", "iv"),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(Encrypted::from_xml(&xml), want, "{xml}");
        }

        for (child, name) in [
            ("spk", "spk"),
            ("spks", "spks"),
            ("ik", "ik"),
            ("prekeys", "prekeys"),
        ] {
            let start = XEP2_BUNDLE.find(&format!("<{child}")).unwrap();
            let end_tag = format!("</{child}>");
            let end = XEP2_BUNDLE.find(&end_tag).unwrap() + end_tag.len();
            let xml = format!("{}{}", &XEP2_BUNDLE[..start], &XEP2_BUNDLE[end..]);
            assert_eq!(
                BundleItem::from_xml(OmemoVersion::V2, &xml),
                Err(OmemoXmlError::MissingChild {
                    parent: "bundle",
                    child: name
                })
            );
        }
        let no_prekeys = XEP03_BUNDLE
            .split("<prekeys>")
            .next()
            .map(|head| format!("{head}<prekeys/></bundle>"))
            .unwrap();
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V03, &no_prekeys),
            Err(OmemoXmlError::MissingChild {
                parent: "prekeys",
                child: "preKeyPublic"
            })
        );
        let xml = XEP03_BUNDLE.replace(" signedPreKeyId='1'", "");
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V03, &xml),
            Err(OmemoXmlError::MissingAttribute {
                element: "signedPreKeyPublic",
                attr: "signedPreKeyId"
            })
        );
        let xml = XEP2_BUNDLE.replace("<pk id='2'>", "<pk>");
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::MissingAttribute {
                element: "pk",
                attr: "id"
            })
        );
        let xml = "<devices xmlns='urn:xmpp:omemo:2'><device/></devices>";
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V2, xml),
            Err(OmemoXmlError::MissingAttribute {
                element: "device",
                attr: "id"
            })
        );
    }

    #[test]
    fn children_that_appear_twice() {
        let xml = XEP2_MESSAGE.replace("</payload>", "</payload><payload>AAAA</payload>");
        assert_eq!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::DuplicateChild {
                parent: "encrypted",
                child: "payload"
            })
        );
        let xml = XEP03_MESSAGE.replace("</header>", "</header><header sid='1'/>");
        assert_eq!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::DuplicateChild {
                parent: "encrypted",
                child: "header"
            })
        );
        let xml = XEP03_MESSAGE.replace("</header>", &format!("{IV}</header>"));
        assert_eq!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::DuplicateChild {
                parent: "header",
                child: "iv"
            })
        );
        let xml = XEP2_BUNDLE.replace(
            "<prekeys>",
            "<ik>UyioqqMM+nncme79LV8JNPbHhAplrBxyJwuSSxq1+8k=</ik><prekeys>",
        );
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::DuplicateChild {
                parent: "bundle",
                child: "ik"
            })
        );
    }

    #[test]
    fn text_and_elements_in_wrong_places() {
        fn text<T>(what: &'static str) -> Result<T> {
            Err(OmemoXmlError::UnexpectedText(what))
        }
        assert_eq!(
            DeviceListItem::from_xml(
                OmemoVersion::V03,
                "<list xmlns='eu.siacs.conversations.axolotl'>12345<device id='1'/></list>"
            ),
            text("list")
        );
        assert_eq!(
            DeviceListItem::from_xml(
                OmemoVersion::V2,
                "<devices xmlns='urn:xmpp:omemo:2'><device id='1'>x</device></devices>"
            ),
            text("device")
        );
        assert_eq!(
            BundleItem::from_xml(
                OmemoVersion::V2,
                &XEP2_BUNDLE.replace("<prekeys>", "<prekeys>stray")
            ),
            text("prekeys")
        );
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &XEP2_BUNDLE.replace("<ik>", "AAAA<ik>")),
            text("bundle")
        );
        assert_eq!(
            Encrypted::from_xml(
                &XEP2_MESSAGE.replace("<header sid='27183'>", "<header sid='27183'>AAAA")
            ),
            text("header")
        );
        assert_eq!(
            Encrypted::from_xml(&XEP2_MESSAGE.replace("<key rid='1337'>", "x<key rid='1337'>")),
            text("keys")
        );
        assert_eq!(
            Encrypted::from_xml(&XEP2_MESSAGE.replace("<payload>", "AAAA<payload>")),
            text("encrypted")
        );
        // An element inside base64 content would otherwise be skipped by text() silently.
        let xml = XEP2_BUNDLE.replace(
            "<ik>UyioqqMM+nncme79LV8JNPbHhAplrBxyJwuSSxq1+8k=</ik>",
            "<ik>UyioqqMM+nncme79LV8JNPbHhAplr<b/>BxyJwuSSxq1+8k=</ik>",
        );
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V2, &xml),
            Err(OmemoXmlError::UnexpectedElement("ik"))
        );
        // Elements the XEP does not define at a place, in its namespace.
        assert_eq!(
            Encrypted::from_xml(&XEP2_MESSAGE.replace("</header>", &format!("{IV}</header>"))),
            Err(OmemoXmlError::UnexpectedElement("header"))
        );
        assert_eq!(
            Encrypted::from_xml(&XEP03_MESSAGE.replace("<iv>", "<keys jid='a@b'/><iv>")),
            Err(OmemoXmlError::UnexpectedElement("header"))
        );
        assert_eq!(
            BundleItem::from_xml(
                OmemoVersion::V03,
                &XEP03_BUNDLE.replace("<prekeys>", "<prekeys><pk id='1'>AAAA</pk>")
            ),
            Err(OmemoXmlError::UnexpectedElement("prekeys"))
        );
    }

    #[test]
    fn foreign_namespaces_are_extensions_and_ignored() {
        let xml = XEP2_MESSAGE.replace(
            "<payload>",
            "<hint xmlns='urn:example:ext'>text is fine here</hint><payload>",
        );
        assert_eq!(
            Encrypted::from_xml(&xml).unwrap(),
            Encrypted::from_xml(XEP2_MESSAGE).unwrap()
        );
        // A <key> of the other OMEMO version is not ours either.
        let xml = XEP03_MESSAGE.replace("<iv>", "<key xmlns='urn:xmpp:omemo:2' rid='0'/><iv>");
        assert_eq!(Encrypted::from_xml(&xml).unwrap().keys.len(), 2);
    }

    #[test]
    fn wrong_element_or_version() {
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V2, XEP03_LIST),
            Err(OmemoXmlError::WrongElement {
                name: "devices",
                ns: NS_OMEMO_2
            })
        );
        assert_eq!(
            BundleItem::from_xml(OmemoVersion::V03, XEP2_BUNDLE),
            Err(OmemoXmlError::WrongElement {
                name: "bundle",
                ns: NS_OMEMO_03
            })
        );
        assert!(matches!(
            Encrypted::from_xml("<encrypted xmlns='urn:xmpp:omemo:1'/>"),
            Err(OmemoXmlError::WrongElement { .. })
        ));
        // A <list> in the OMEMO 2 namespace is neither version's device list.
        assert!(DeviceListItem::from_xml(
            OmemoVersion::V2,
            "<list xmlns='urn:xmpp:omemo:2'><device id='1'/></list>"
        )
        .is_err());
    }

    #[test]
    fn booleans_are_xs_boolean() {
        let key = |attr: &str| {
            Encrypted::from_xml(&enc2(
                &format!("<keys jid='a@b'><key rid='1' {attr}>AAAA</key></keys>"),
                "",
            ))
            .map(|m| m.keys[0].kex)
        };
        assert_eq!(key("kex='true'"), Ok(true));
        assert_eq!(key("kex='1'"), Ok(true));
        assert_eq!(key("kex='false'"), Ok(false));
        assert_eq!(key("kex='0'"), Ok(false));
        assert_eq!(key(""), Ok(false));
        // 0.3's flag is named differently; kex means nothing there.
        assert_eq!(key("prekey='true'"), Ok(false));
        for bad in ["kex='yes'", "kex='TRUE'", "kex=''"] {
            assert_eq!(
                key(bad),
                Err(OmemoXmlError::BadBoolean {
                    element: "key",
                    attr: "kex"
                }),
                "{bad}"
            );
        }
        let xml = enc03(&format!("<key rid='1' prekey='on'>AAAA</key>{IV}"), "");
        assert_eq!(
            Encrypted::from_xml(&xml),
            Err(OmemoXmlError::BadBoolean {
                element: "key",
                attr: "prekey"
            })
        );
    }

    #[test]
    fn keys_jid_must_be_a_bare_jid() {
        for bad in ["juliet@capulet.lit/balcony", "@capulet.lit", "", "a@b@c"] {
            let xml = enc2(
                &format!("<keys jid='{bad}'><key rid='1'>AAAA</key></keys>"),
                "",
            );
            assert_eq!(
                Encrypted::from_xml(&xml),
                Err(OmemoXmlError::BadJid),
                "{bad}"
            );
        }
        let xml = enc2(
            "<keys jid='Juliet@Capulet.LIT'><key rid='1'>AAAA</key></keys>",
            "",
        );
        let m = Encrypted::from_xml(&xml).unwrap();
        assert!(m.key_for(&jid("juliet@capulet.lit"), 1).is_some());
    }

    #[test]
    fn labels_without_a_plausible_signature_are_dropped() {
        let list = |attrs: &str| {
            DeviceListItem::from_xml(
                OmemoVersion::V2,
                &format!("<devices xmlns='urn:xmpp:omemo:2'><device id='1' {attrs}/></devices>"),
            )
            .map(|l| l.devices)
        };
        let plain = Ok(vec![Device::new(1)]);
        assert_eq!(list("label='Phone'"), plain);
        assert_eq!(list("label='Phone' labelsig='not base64!'"), plain);
        assert_eq!(list(&format!("labelsig='{SIG_B64}'")), plain);
        let long = "x".repeat(MAX_LABEL_CHARS + 1);
        assert_eq!(list(&format!("label='{long}' labelsig='{SIG_B64}'")), plain);
        let ok = "é".repeat(MAX_LABEL_CHARS);
        assert_eq!(
            list(&format!("label='{ok}' labelsig='{SIG_B64}'")).map(|d| d[0].label.clone()),
            Ok(Some(ok))
        );
        // 0.3 has no labels at all.
        let xml = format!(
            "<list xmlns='eu.siacs.conversations.axolotl'>\
             <device id='1' label='x' labelsig='{SIG_B64}'/></list>"
        );
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V03, &xml).map(|l| l.devices),
            plain
        );
    }

    #[test]
    fn not_xml_and_dtds_are_refused() {
        assert_eq!(
            Encrypted::from_xml("<encrypted xmlns='urn:xmpp:omemo:2'>"),
            Err(OmemoXmlError::NotXml)
        );
        assert_eq!(Encrypted::from_xml(""), Err(OmemoXmlError::NotXml));
        let laughs = "<?xml version='1.0'?><!DOCTYPE l [<!ENTITY a 'aaaaaaaaaa'>\
                      <!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>]>\
                      <list xmlns='eu.siacs.conversations.axolotl'><device id='1'/>&b;</list>";
        assert_eq!(
            DeviceListItem::from_xml(OmemoVersion::V03, laughs),
            Err(OmemoXmlError::NotXml)
        );
        // What is refused is the DTD, not the declaration.
        let plain = "<?xml version='1.0'?>\
                     <list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>";
        assert!(DeviceListItem::from_xml(OmemoVersion::V03, plain).is_ok());
    }

    #[test]
    fn builders_refuse_what_the_parser_would() {
        let mut m = message(OmemoVersion::V03);
        m.keys[0].jid = Some(jid("a@b"));
        assert!(matches!(m.to_xml(), Err(OmemoXmlError::Unrepresentable(_))));
        let mut m = message(OmemoVersion::V03);
        m.iv = None;
        assert_eq!(
            m.to_xml(),
            Err(OmemoXmlError::MissingChild {
                parent: "header",
                child: "iv"
            })
        );
        let mut m = message(OmemoVersion::V03);
        m.iv = Some(vec![0; 8]);
        assert!(matches!(
            m.to_xml(),
            Err(OmemoXmlError::BadLength { what: "iv", .. })
        ));
        let mut m = message(OmemoVersion::V2);
        m.keys[1].jid = None;
        assert!(matches!(m.to_xml(), Err(OmemoXmlError::Unrepresentable(_))));
        let mut m = message(OmemoVersion::V2);
        m.iv = Some(vec![0; 12]);
        assert!(matches!(m.to_xml(), Err(OmemoXmlError::Unrepresentable(_))));
        let mut m = message(OmemoVersion::V2);
        m.sid = 0;
        assert!(matches!(
            m.to_xml(),
            Err(OmemoXmlError::IdOutOfRange { .. })
        ));
        let mut m = message(OmemoVersion::V2);
        m.keys.clear();
        assert!(m.to_xml().is_err());
        let mut m = message(OmemoVersion::V2);
        m.keys[1] = m.keys[0].clone();
        assert_eq!(
            m.to_xml(),
            Err(OmemoXmlError::DuplicateId {
                what: "rid",
                id: 31415
            })
        );

        let labelled = DeviceListItem {
            devices: vec![Device {
                id: 1,
                label: Some("Phone".into()),
                labelsig: Some(vec![0; 64]),
            }],
        };
        assert!(matches!(
            labelled.to_xml(OmemoVersion::V03),
            Err(OmemoXmlError::Unrepresentable(_))
        ));
        let mut unsigned = labelled.clone();
        unsigned.devices[0].labelsig = None;
        assert!(matches!(
            unsigned.to_xml(OmemoVersion::V2),
            Err(OmemoXmlError::Unrepresentable(_))
        ));
        let dup = DeviceListItem {
            devices: vec![Device::new(5), Device::new(5)],
        };
        assert!(dup.to_xml(OmemoVersion::V2).is_err());
        let zero = DeviceListItem {
            devices: vec![Device::new(0)],
        };
        assert!(zero.to_xml(OmemoVersion::V03).is_err());

        let mut b = bundle(OmemoVersion::V2, 3);
        b.ik = key03(1);
        assert!(b.to_xml(OmemoVersion::V2).is_err());
        assert!(bundle(OmemoVersion::V2, 0)
            .to_xml(OmemoVersion::V2)
            .is_err());
        assert!(bundle(OmemoVersion::V2, MAX_PREKEYS + 1)
            .to_xml(OmemoVersion::V2)
            .is_err());
        let mut b = bundle(OmemoVersion::V03, 3);
        b.prekeys[2].0 = 1;
        assert!(b.to_xml(OmemoVersion::V03).is_err());
    }

    #[test]
    fn pep_coordinates() {
        use OmemoVersion::{V03, V2};
        assert_eq!(
            V03.devices_node(),
            "eu.siacs.conversations.axolotl.devicelist"
        );
        assert_eq!(V2.devices_node(), "urn:xmpp:omemo:2:devices");
        assert_eq!(
            V03.bundle_node(31415),
            "eu.siacs.conversations.axolotl.bundles:31415"
        );
        assert_eq!(V03.bundle_item_id(31415), "current");
        assert_eq!(V2.bundle_node(31415), "urn:xmpp:omemo:2:bundles");
        assert_eq!(V2.bundle_item_id(31415), "31415");
        assert_eq!(
            V03.bundle_device_id(&V03.bundle_node(31415), "current"),
            Ok(31415)
        );
        assert_eq!(
            V2.bundle_device_id("urn:xmpp:omemo:2:bundles", "31415"),
            Ok(31415)
        );
        assert_eq!(
            V2.bundle_device_id("urn:xmpp:omemo:2:bundles", "current"),
            Err(OmemoXmlError::BadNumber {
                element: "item",
                attr: "id"
            })
        );
        assert!(V03
            .bundle_device_id("eu.siacs.conversations.axolotl.bundles:0", "current")
            .is_err());
        assert_eq!(
            V2.bundle_device_id(V03.devices_node(), "1"),
            Err(OmemoXmlError::NotBundleNode)
        );
        assert_eq!(OmemoVersion::from_namespace(NS_OMEMO_03), Some(V03));
        assert_eq!(OmemoVersion::from_namespace("urn:xmpp:omemo:1"), None);
    }
}
