//! SCRAM client (RFC 5802 / RFC 7677) with channel binding (RFC 5929, RFC 9266).
//!
//! Written here rather than taken from the `sasl` crate because the channel-binding flag must
//! be chosen per XEP-0440 (the crate switches to `-PLUS` whenever it has binding data, which
//! is what makes tokio-xmpp's login fail against ejabberd), and the same code serves SASL2.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Iteration counts outside this range are refused: too few means the server stores weak
/// verifiers (or an attacker wants a cheap dictionary attack), too many is a CPU denial of service.
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<Vec<u8>> {
        match self {
            ScramHash::Sha1 => {
                let mut out = Zeroizing::new(vec![0u8; 20]);
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out
            }
            ScramHash::Sha256 => {
                let mut out = Zeroizing::new(vec![0u8; 32]);
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// The channel binding decided for one authentication.
#[derive(Clone, PartialEq, Eq)]
pub enum Binding {
    /// We do not bind: gs2 flag "n". Used when the server did not tell us (XEP-0440) which
    /// binding type it supports, so that a login never fails over channel binding.
    None,
    /// We could bind but the server offered no -PLUS mechanism: gs2 flag "y", which lets a
    /// server that does support binding detect a downgrade.
    SupportedButNotOffered,
    /// `p=<name>` with the binding data.
    Bind { name: &'static str, data: Vec<u8> },
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Binding::None => f.write_str("None"),
            Binding::SupportedButNotOffered => f.write_str("SupportedButNotOffered"),
            Binding::Bind { name, .. } => write!(f, "Bind({name})"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    #[error("server nonce does not extend ours")]
    NonceMismatch,
    #[error("SCRAM iteration count {0} outside the accepted range")]
    Iterations(u32),
    #[error("server reported SCRAM error: {0}")]
    ServerError(String),
    #[error("server signature is wrong: the server does not know our password")]
    BadServerSignature,
    #[error("SCRAM exchange used out of order")]
    State,
    #[error(
        "downgrade detected: the server's mechanism or channel-binding list was altered (XEP-0474)"
    )]
    Downgrade,
}

enum State {
    Initial,
    SentFirst,
    SentFinal { server_signature: Vec<u8> },
    Done,
}

pub struct ScramClient {
    hash: ScramHash,
    username: String,
    password: Zeroizing<String>,
    nonce: String,
    binding: Binding,
    client_first_bare: String,
    state: State,
    /// XEP-0474: our hash of the mechanism and channel-binding lists the server offered.
    ssdp_expected: Option<String>,
    ssdp_verified: bool,
}

/// XEP-0474 (SSDP) hash: the sorted mechanism names joined by %x1E, then (if the server used
/// XEP-0440) %x1F and the sorted channel-binding types joined by %x1E, hashed with the SCRAM
/// hash and base64-encoded. Sorting is by octets ("i;octet").
pub fn ssdp_hash(
    hash: ScramHash,
    mechanisms: &[String],
    channel_bindings: Option<&[String]>,
) -> String {
    let mut mechs: Vec<&str> = mechanisms.iter().map(String::as_str).collect();
    mechs.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut s = mechs.join("\u{1e}");
    if let Some(cbs) = channel_bindings {
        let mut cbs: Vec<&str> = cbs.iter().map(String::as_str).collect();
        cbs.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        s.push('\u{1f}');
        s.push_str(&cbs.join("\u{1e}"));
    }
    B64.encode(hash.hash(s.as_bytes()))
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str, binding: Binding) -> Self {
        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = B64.encode(raw);
        Self::with_nonce(hash, username, password, binding, nonce)
    }

    #[cfg(test)]
    pub(crate) fn new_for_test(
        hash: ScramHash,
        username: &str,
        password: &str,
        binding: Binding,
        nonce: &str,
    ) -> Self {
        Self::with_nonce(hash, username, password, binding, nonce.to_owned())
    }

    fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        binding: Binding,
        nonce: String,
    ) -> Self {
        let escaped = username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={escaped},r={nonce}");
        ScramClient {
            hash,
            username: username.to_owned(),
            password: Zeroizing::new(password.to_owned()),
            nonce,
            binding,
            client_first_bare,
            state: State::Initial,
            ssdp_expected: None,
            ssdp_verified: false,
        }
    }

    pub fn mechanism_name(&self) -> &'static str {
        match (self.hash, matches!(self.binding, Binding::Bind { .. })) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    /// Enables XEP-0474 downgrade protection: `mechanisms` and `channel_bindings` are what
    /// the server advertised (for the SASL profile in use; `None` if it did not use
    /// XEP-0440). If the server-first-message carries an `h` attribute that does not match,
    /// the exchange fails with [`ScramError::Downgrade`].
    pub fn expect_downgrade_hash(
        &mut self,
        mechanisms: &[String],
        channel_bindings: Option<&[String]>,
    ) {
        self.ssdp_expected = Some(ssdp_hash(self.hash, mechanisms, channel_bindings));
    }

    /// Whether the server sent an XEP-0474 hash and it matched.
    pub fn downgrade_hash_verified(&self) -> bool {
        self.ssdp_verified
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    fn gs2_header(&self) -> String {
        match &self.binding {
            Binding::None => "n,,".to_owned(),
            Binding::SupportedButNotOffered => "y,,".to_owned(),
            Binding::Bind { name, .. } => format!("p={name},,"),
        }
    }

    pub fn client_first(&mut self) -> Vec<u8> {
        self.state = State::SentFirst;
        format!("{}{}", self.gs2_header(), self.client_first_bare).into_bytes()
    }

    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::SentFirst) {
            return Err(ScramError::State);
        }
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let attrs = parse_attrs(server_first)?;
        if let Some(e) = attr(&attrs, 'e') {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        if attr(&attrs, 'm').is_some() {
            return Err(ScramError::Malformed("mandatory extension"));
        }
        // XEP-0474: the hash is part of the server-first-message, hence of the AuthMessage
        // both sides sign, so a MITM who rewrote the lists cannot also fix the hash.
        if let (Some(received), Some(expected)) = (attr(&attrs, 'h'), &self.ssdp_expected) {
            if !constant_time_eq(received.as_bytes(), expected.as_bytes()) {
                return Err(ScramError::Downgrade);
            }
            self.ssdp_verified = true;
        }
        let nonce = attr(&attrs, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64
            .decode(attr(&attrs, 's').ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = attr(&attrs, 'i')
            .ok_or(ScramError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }

        let mut cbind_input = self.gs2_header().into_bytes();
        if let Binding::Bind { data, .. } = &self.binding {
            cbind_input.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={}", B64.encode(&cbind_input), nonce);
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );

        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iterations);
        let mut client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        client_key.zeroize();
        let server_key = h.hmac(&salted, b"Server Key");
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        self.state = State::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message: this is what proves the server knows our
    /// credentials, so a success without a valid signature is still a failure.
    pub fn verify_server_final(&mut self, server_final: &[u8]) -> Result<(), ScramError> {
        let State::SentFinal { server_signature } = &self.state else {
            return Err(ScramError::State);
        };
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let attrs = parse_attrs(text)?;
        if let Some(e) = attr(&attrs, 'e') {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let v = B64
            .decode(attr(&attrs, 'v').ok_or(ScramError::Malformed("no verifier"))?)
            .map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        if !constant_time_eq(&v, server_signature) {
            return Err(ScramError::BadServerSignature);
        }
        self.state = State::Done;
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_attrs(s: &str) -> Result<Vec<(char, &str)>, ScramError> {
    s.split(',')
        .map(|part| {
            let mut chars = part.chars();
            let key = chars
                .next()
                .ok_or(ScramError::Malformed("empty attribute"))?;
            if chars.next() != Some('=') {
                return Err(ScramError::Malformed("attribute without value"));
            }
            Ok((key, &part[2..]))
        })
        .collect()
}

fn attr<'a>(attrs: &[(char, &'a str)], key: char) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 5802 §5 test vector (SCRAM-SHA-1).
    #[test]
    fn rfc5802_vector() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha1,
            "user",
            "pencil",
            Binding::None,
            "fyko+d2lbbFgONRv9qkxdawL".into(),
        );
        assert_eq!(c.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let fin = c
            .client_final(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(
            fin,
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
        assert!(c.is_done());
    }

    // RFC 7677 §3 test vector (SCRAM-SHA-256).
    #[test]
    fn rfc7677_vector() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha256,
            "user",
            "pencil",
            Binding::None,
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        c.client_first();
        let fin = c
            .client_final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            fin,
            &b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="[..]
        );
        assert_eq!(
            c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(())
        );
    }

    #[test]
    fn rejects_forged_server_signature_and_bad_nonce() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha1,
            "user",
            "pencil",
            Binding::None,
            "abc".into(),
        );
        c.client_first();
        assert_eq!(
            c.client_final(b"r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha1,
            "user",
            "pencil",
            Binding::None,
            "abc".into(),
        );
        c.client_first();
        assert_eq!(
            c.client_final(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=1"),
            Err(ScramError::Iterations(1))
        );
        c.client_first();
        c.client_final(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(
            c.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
            Err(ScramError::BadServerSignature)
        );
    }

    // XEP-0474 §4 example: SHA-1 of
    // 'SCRAM-SHA-1 \x1e SCRAM-SHA-1-PLUS \x1f tls-exporter \x1e tls-server-end-point'.
    #[test]
    fn ssdp_hash_matches_xep_example() {
        let mechs = vec!["SCRAM-SHA-1-PLUS".to_owned(), "SCRAM-SHA-1".to_owned()];
        let cbs = vec!["tls-server-end-point".to_owned(), "tls-exporter".to_owned()];
        assert_eq!(
            ssdp_hash(ScramHash::Sha1, &mechs, Some(&cbs)),
            "G6k/rBLDqgOhRRaCuuatSDFkJ08="
        );
    }

    #[test]
    fn ssdp_mismatch_fails_match_passes_absence_is_ignored() {
        let mechs = vec!["SCRAM-SHA-1".to_owned(), "PLAIN".to_owned()];
        let good = ssdp_hash(ScramHash::Sha1, &mechs, None);
        let mk = || {
            let mut c = ScramClient::with_nonce(
                ScramHash::Sha1,
                "user",
                "pencil",
                Binding::None,
                "abc".into(),
            );
            c.expect_downgrade_hash(&mechs, None);
            c.client_first();
            c
        };
        // What a MITM who stripped SCRAM-SHA-256 from the list would leave us to see: the
        // server hashed a longer list than ours.
        let longer = ssdp_hash(
            ScramHash::Sha1,
            &[
                "SCRAM-SHA-256".to_owned(),
                "SCRAM-SHA-1".to_owned(),
                "PLAIN".to_owned(),
            ],
            None,
        );
        let mut c = mk();
        assert_eq!(
            c.client_final(format!("r=abcdef,s=QSXCR+Q6sek8bf92,i=4096,h={longer}").as_bytes()),
            Err(ScramError::Downgrade)
        );
        let mut c = mk();
        c.client_final(format!("r=abcdef,s=QSXCR+Q6sek8bf92,i=4096,h={good}").as_bytes())
            .unwrap();
        assert!(c.downgrade_hash_verified());
        let mut c = mk();
        c.client_final(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert!(!c.downgrade_hash_verified());
    }

    #[test]
    fn channel_binding_flags() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha256,
            "a,b=c",
            "p",
            Binding::Bind {
                name: "tls-exporter",
                data: vec![1, 2, 3],
            },
            "n".into(),
        );
        assert_eq!(c.mechanism_name(), "SCRAM-SHA-256-PLUS");
        assert_eq!(c.client_first(), b"p=tls-exporter,,n=a=2Cb=3Dc,r=n");
        let fin = String::from_utf8(c.client_final(b"r=nX,s=AAAA,i=4096").unwrap()).unwrap();
        let expected_c = B64.encode([b"p=tls-exporter,,".as_slice(), &[1, 2, 3]].concat());
        assert!(fin.starts_with(&format!("c={expected_c},")));
        let mut y = ScramClient::new(ScramHash::Sha1, "u", "p", Binding::SupportedButNotOffered);
        assert!(y.client_first().starts_with(b"y,,"));
        assert_eq!(y.mechanism_name(), "SCRAM-SHA-1");
    }
}
