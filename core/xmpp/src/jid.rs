//! JIDs cross our crate boundary as validated, normalized strings so that no other crate
//! depends on the `jid` crate's types.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid JID: {0}")]
pub struct JidError(String);

/// A normalized bare JID (`local@domain` or `domain`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BareJid(String);

impl BareJid {
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        let parsed =
            xmpp_parsers::jid::BareJid::new(s.trim()).map_err(|e| JidError(e.to_string()))?;
        Ok(BareJid(parsed.as_str().to_owned()))
    }
    pub fn from_parts(local: &str, domain: &str) -> Result<BareJid, JidError> {
        BareJid::parse(&format!("{local}@{domain}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn local(&self) -> Option<&str> {
        self.0.split_once('@').map(|(l, _)| l)
    }
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or(&self.0)
    }
}

impl TryFrom<String> for BareJid {
    type Error = JidError;
    fn try_from(s: String) -> Result<Self, JidError> {
        BareJid::parse(&s)
    }
}

impl From<BareJid> for String {
    fn from(j: BareJid) -> String {
        j.0
    }
}

impl fmt::Debug for BareJid {
    // JIDs are personal data: Debug output (which reaches logs) shows only a short hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let h = sha2::Sha256::digest(self.0.as_bytes());
        write!(f, "BareJid(#{:02x}{:02x}{:02x})", h[0], h[1], h[2])
    }
}

impl fmt::Display for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Normalized bare part of any JID string (full or bare); `None` if it is not a JID.
pub fn split_bare(s: &str) -> Option<String> {
    let jid = xmpp_parsers::jid::Jid::new(s).ok()?;
    Some(jid.to_bare().as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects() {
        let j = BareJid::parse("Alice@Example.ORG").unwrap();
        assert_eq!(j.as_str(), "alice@example.org");
        assert_eq!(j.local(), Some("alice"));
        assert_eq!(j.domain(), "example.org");
        assert!(
            BareJid::parse("a@b/c").is_err() || BareJid::parse("a@b/c").unwrap().as_str() == "a@b"
        );
        assert!(BareJid::parse("").is_err());
        assert!(BareJid::parse("@example.org").is_err());
        assert_eq!(split_bare("bob@x.org/phone").as_deref(), Some("bob@x.org"));
        assert!(!format!("{j:?}").contains("alice"));
    }
}
