//! FAST tokens (XEP-0484) and the Hashed Token SASL mechanisms they are used with
//! (draft-schmaus-kitten-sasl-ht-08, the revision XEP-0484 references).
//!
//! HT is a single round trip: the client sends `authcid NUL HMAC(token, "Initiator" ||
//! cb-data)` and the server answers with `HMAC(token, "Responder" || cb-data)` in its success,
//! which the client checks (mutual authentication). We implement HT-SHA-256 without channel
//! binding (`-NONE`) and with tls-exporter (`-EXPR`); tls-unique is undefined on TLS 1.3 and
//! tls-server-end-point would need the certificate hash, which buys nothing over the exporter.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub(crate) const HT_SHA_256_NONE: &str = "HT-SHA-256-NONE";
pub(crate) const HT_SHA_256_EXPR: &str = "HT-SHA-256-EXPR";

/// A FAST token as issued by the server. It is a password-equivalent secret: the caller
/// stores it like one (never in logs, backups or UI). `Debug` never shows the secret and the
/// secret is wiped from memory when the value is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct FastToken {
    /// The HT mechanism the token is bound to (the server refuses it with any other).
    pub mechanism: String,
    pub token: Zeroizing<String>,
    /// XEP-0082 date-time at which the server will stop accepting the token.
    pub expiry: String,
}

impl FastToken {
    pub fn new(mechanism: &str, token: &str, expiry: &str) -> FastToken {
        FastToken {
            mechanism: mechanism.to_owned(),
            token: Zeroizing::new(token.to_owned()),
            expiry: expiry.to_owned(),
        }
    }
}

impl std::fmt::Debug for FastToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastToken")
            .field("mechanism", &self.mechanism)
            .field("token", &"<redacted>")
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// The channel binding an HT mechanism uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HtBinding {
    None,
    TlsExporter,
}

/// The HT mechanisms we can perform, by name (as a `'static` name for `Negotiated`).
pub(crate) fn ht_mechanism(name: &str) -> Option<(&'static str, HtBinding)> {
    match name {
        HT_SHA_256_NONE => Some((HT_SHA_256_NONE, HtBinding::None)),
        HT_SHA_256_EXPR => Some((HT_SHA_256_EXPR, HtBinding::TlsExporter)),
        _ => None,
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// `initiator-msg = authcid NUL HMAC(token, "Initiator" || cb-data)`.
pub(crate) fn initiator_message(username: &str, token: &str, cb_data: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut msg = Zeroizing::new(Vec::with_capacity(username.len() + 33));
    msg.extend_from_slice(username.as_bytes());
    msg.push(0);
    msg.extend_from_slice(&hmac_sha256(token.as_bytes(), &[b"Initiator", cb_data]));
    msg
}

/// `responder-msg = HMAC(token, "Responder" || cb-data)`, compared in constant time.
pub(crate) fn verify_responder(token: &str, cb_data: &[u8], received: &[u8]) -> bool {
    let expected = hmac_sha256(token.as_bytes(), &[b"Responder", cb_data]);
    expected.len() == received.len()
        && expected
            .iter()
            .zip(received)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;

    // Neither XEP-0484 nor the HT draft has test vectors. These were computed independently
    // (Python's hmac module: hmac.new(token, b"Initiator" + cb, sha256)) from the definition.
    const TOKEN: &str = "secret-token:fast-WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZm";

    #[test]
    fn initiator_message_without_binding() {
        let msg = initiator_message("juliet", TOKEN, &[]);
        assert_eq!(&msg[..7], b"juliet\0");
        assert_eq!(
            B64.encode(&msg[7..]),
            "X5w25lHHdoNsaiNIH86Ldt2KF03oqlJpBC75mH8Av+k="
        );
    }

    #[test]
    fn initiator_and_responder_with_exporter() {
        let cb: Vec<u8> = (0u8..32).collect();
        let msg = initiator_message("juliet", TOKEN, &cb);
        assert_eq!(
            B64.encode(&msg[7..]),
            "AzDcfcdrNS6m3fWhE3Ch3k1MhRKiUMtHOMS8AUlmoug="
        );
        let responder = B64
            .decode("rixK2D9VxoplSsTLwcVQH9VpauOU8oaXEEZZQBL8/AU=")
            .unwrap();
        assert!(verify_responder(TOKEN, &cb, &responder));
        // Same token, other channel: the proof does not transfer.
        assert!(!verify_responder(TOKEN, &[], &responder));
        assert!(!verify_responder(TOKEN, &cb, &responder[..31]));
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let t = FastToken::new(HT_SHA_256_NONE, TOKEN, "2030-01-01T00:00:00Z");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("secret-token"), "{dbg}");
        assert!(dbg.contains("HT-SHA-256-NONE"));
        assert_eq!(
            ht_mechanism("HT-SHA-256-EXPR"),
            Some((HT_SHA_256_EXPR, HtBinding::TlsExporter))
        );
        assert_eq!(ht_mechanism("HT-SHA-256-ENDP"), None);
    }
}
