//! The XEP-0420 Stanza Content Encryption envelope with OMEMO 2's profile (XEP-0384 §SCE
//! profile): `<rpad/>` is always present, `<from/>` should be, `<to/>` is required in group
//! chats, `<time/>` is optional. This is what OMEMO 2 encrypts as its payload.

use minidom::Element;
use rand::{CryptoRng, Rng, RngCore};

use crate::error::{Error, Result};

/// Namespace of the SCE envelope.
pub const NS_SCE: &str = "urn:xmpp:sce:1";
const NS_CLIENT: &str = "jabber:client";
/// XEP-0420 suggests random padding of 0 to 200 characters.
const MAX_RPAD: usize = 200;

/// An envelope's meaningful parts. Content elements travel as serialized XML strings, each
/// with its namespace declared, so this crate needs no XMPP types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The children of `<content/>`, each one serialized element.
    pub content: Vec<String>,
    /// `<from jid=…/>`: the sender's bare JID.
    pub from: Option<String>,
    /// `<to jid=…/>`: the recipient's bare JID (required for group chats).
    pub to: Option<String>,
    /// `<time stamp=…/>`: XEP-0082 date-time.
    pub time: Option<String>,
}

impl Envelope {
    /// An envelope holding one `<body xmlns='jabber:client'/>` with `text`.
    pub fn with_body(text: &str, from: &str) -> Self {
        let body = Element::builder("body", NS_CLIENT).append(text).build();
        Self {
            content: vec![serialize(&body)],
            from: Some(from.to_owned()),
            to: None,
            time: None,
        }
    }

    /// The text of the `<body xmlns='jabber:client'/>` content element, if any.
    pub fn body(&self) -> Option<String> {
        self.content.iter().find_map(|c| {
            let e: Element = c.parse().ok()?;
            e.is("body", NS_CLIENT).then(|| e.text())
        })
    }

    /// Serializes the envelope with fresh random padding.
    pub fn to_bytes<R: RngCore + CryptoRng>(&self, rng: &mut R) -> Result<Vec<u8>> {
        let mut content = Element::builder("content", NS_SCE).build();
        for c in &self.content {
            let child: Element = c
                .parse()
                .map_err(|_| Error::Envelope("content element is not namespaced XML"))?;
            content.append_child(child);
        }
        let len = rng.gen_range(0..=MAX_RPAD);
        // Printable padding keeps the envelope plain text without escaping concerns.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let rpad: String = (0..len)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect();
        let mut envelope = Element::builder("envelope", NS_SCE)
            .append(content)
            .append(Element::builder("rpad", NS_SCE).append(rpad).build())
            .build();
        for (name, attr, value) in [
            ("from", "jid", &self.from),
            ("to", "jid", &self.to),
            ("time", "stamp", &self.time),
        ] {
            if let Some(v) = value {
                envelope.append_child(
                    Element::builder(name, NS_SCE)
                        .attr(
                            attr.try_into()
                                .map_err(|_| Error::Envelope("attribute name"))?,
                            v.as_str(),
                        )
                        .build(),
                );
            }
        }
        Ok(serialize(&envelope).into_bytes())
    }

    /// Parses a decrypted envelope. Unknown affix elements are ignored; a missing `<content/>`
    /// or `<rpad/>` (mandatory in OMEMO's profile) is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Envelope("not UTF-8"))?;
        let root: Element = text
            .parse()
            .map_err(|_| Error::Envelope("not well-formed XML"))?;
        if !root.is("envelope", NS_SCE) {
            return Err(Error::Envelope(
                "root is not <envelope xmlns='urn:xmpp:sce:1'/>",
            ));
        }
        let content = root
            .get_child("content", NS_SCE)
            .ok_or(Error::Envelope("no <content/>"))?;
        if !root.has_child("rpad", NS_SCE) {
            return Err(Error::Envelope("no <rpad/>"));
        }
        let attr = |name: &str, attr: &str| {
            root.get_child(name, NS_SCE)
                .and_then(|e| e.attr(attr))
                .map(str::to_owned)
        };
        Ok(Self {
            content: content.children().map(serialize).collect(),
            from: attr("from", "jid"),
            to: attr("to", "jid"),
            time: attr("time", "stamp"),
        })
    }
}

fn serialize(e: &Element) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for I/O reasons; the tree is valid by construction.
    if e.write_to(&mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_escaping_and_affixes() {
        let mut env = Envelope::with_body("1 < 2 & \"quotes\" ]]>", "romeo@montague.lit");
        env.to = Some("juliet@capulet.lit".into());
        env.time = Some("2004-01-25T06:05:00+01:00".into());
        let bytes = env.to_bytes(&mut rand::thread_rng()).unwrap();
        let parsed = Envelope::from_bytes(&bytes).unwrap();
        assert_eq!(parsed.body().as_deref(), Some("1 < 2 & \"quotes\" ]]>"));
        assert_eq!(parsed.from.as_deref(), Some("romeo@montague.lit"));
        assert_eq!(parsed.to.as_deref(), Some("juliet@capulet.lit"));
        assert_eq!(parsed.time.as_deref(), Some("2004-01-25T06:05:00+01:00"));
    }

    #[test]
    fn padding_is_random_in_length() {
        let env = Envelope::with_body("same", "a@b");
        let mut rng = rand::thread_rng();
        let lens: std::collections::HashSet<usize> = (0..20)
            .map(|_| env.to_bytes(&mut rng).unwrap().len())
            .collect();
        assert!(lens.len() > 1);
    }

    #[test]
    fn parses_the_xep_0420_example_shape() {
        let xml = "<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>Hi</body>\
                   <x xmlns='jabber:x:oob'><url>https://example.org/</url></x></content>\
                   <rpad>C1DHN9HK-9A25tSmwK4hU!Jji9%GKYK^syIlHJT9TnI4</rpad>\
                   <from jid='opportunity@mars.planet'/><unknown-affix/></envelope>";
        let env = Envelope::from_bytes(xml.as_bytes()).unwrap();
        assert_eq!(env.body().as_deref(), Some("Hi"));
        assert_eq!(env.content.len(), 2);
        assert_eq!(env.from.as_deref(), Some("opportunity@mars.planet"));
    }

    #[test]
    fn rejects_bad_envelopes() {
        for bad in [
            &b"not xml"[..],
            b"<envelope xmlns='urn:xmpp:sce:1'><content/></envelope>",
            b"<envelope xmlns='urn:xmpp:sce:1'><rpad/></envelope>",
            b"<envelope xmlns='urn:xmpp:sce:0'><content/><rpad/></envelope>",
            b"<envelope xmlns='urn:xmpp:sce:1'><content><body>",
            b"\xff\xfe",
        ] {
            assert!(matches!(Envelope::from_bytes(bad), Err(Error::Envelope(_))));
        }
        let unnamespaced = Envelope {
            content: vec!["<body>x</body>".into()],
            ..Envelope::default()
        };
        assert!(unnamespaced.to_bytes(&mut rand::thread_rng()).is_err());
    }
}
