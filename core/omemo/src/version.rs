/// The OMEMO version spoken with a device. Each version has its own keys on the wire, its
/// own KDF labels and its own message formats; a session belongs to exactly one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// OMEMO 0.3, namespace `eu.siacs.conversations.axolotl` (Signal protocol v3 wire format).
    Omemo03,
    /// OMEMO 2, namespace `urn:xmpp:omemo:2` (XEP-0384 0.8 and later).
    Omemo2,
}

impl Version {
    /// The XML namespace of this version.
    pub fn namespace(self) -> &'static str {
        match self {
            Version::Omemo03 => "eu.siacs.conversations.axolotl",
            Version::Omemo2 => "urn:xmpp:omemo:2",
        }
    }

    pub(crate) fn x3dh_info(self) -> &'static [u8] {
        match self {
            Version::Omemo03 => b"WhisperText",
            Version::Omemo2 => b"OMEMO X3DH",
        }
    }

    pub(crate) fn root_info(self) -> &'static [u8] {
        match self {
            Version::Omemo03 => b"WhisperRatchet",
            Version::Omemo2 => b"OMEMO Root Chain",
        }
    }

    pub(crate) fn message_key_info(self) -> &'static [u8] {
        match self {
            Version::Omemo03 => b"WhisperMessageKeys",
            Version::Omemo2 => b"OMEMO Message Key Material",
        }
    }

    /// Length of the ratchet message's truncated HMAC-SHA-256.
    pub(crate) fn mac_len(self) -> usize {
        match self {
            Version::Omemo03 => 8,
            Version::Omemo2 => 16,
        }
    }

    pub(crate) fn index(self) -> u32 {
        match self {
            Version::Omemo03 => 0,
            Version::Omemo2 => 2,
        }
    }

    pub(crate) fn from_index(i: u32) -> Option<Self> {
        match i {
            0 => Some(Version::Omemo03),
            2 => Some(Version::Omemo2),
            _ => None,
        }
    }
}

/// Signal protocol v3's version byte: current version 3 in the high nibble, minimum 3 in the low.
pub(crate) const SIGNAL_V3_VERSION_BYTE: u8 = 0x33;
