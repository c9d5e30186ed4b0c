use thiserror::Error;

/// Why a connection, login or registration did not succeed. The variants are the ones a
/// caller acts on differently: retry later (network), ask the user (auth), refuse (TLS,
/// policy), or report (protocol).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    #[error("network: {0}")]
    Network(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server does not offer TLS; refusing to continue without encryption")]
    NoTls,
    #[error("authentication failed: {condition}{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Auth {
        condition: String,
        text: Option<String>,
    },
    #[error("no acceptable authentication mechanism offered")]
    NoMechanism,
    #[error("registration refused: {condition}{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Registration {
        condition: String,
        text: Option<String>,
    },
    #[error("the server does not offer in-band registration")]
    RegistrationUnsupported,
    #[error("stream error from server: {0}")]
    Stream(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ConnectError {
    /// `Auth` condition of a failed FAST (XEP-0484) login: the token is no longer accepted.
    /// The caller discards it and logs in with the password (the server's own condition is
    /// in the text).
    pub const FAST_TOKEN_REJECTED: &'static str = "fast-token-rejected";

    /// `Timeout` reason of a stream whose server went on sending but never answered our
    /// probe: it no longer reads what we send. Prosody 13.0.1 does this to a resumed stream
    /// when the connection before it broke in the middle of a stanza (it feeds the new
    /// connection to the old one's parser), and every later resumption of that stream
    /// inherits it: the caller should log in afresh instead of resuming.
    pub const UNREAD_STREAM: &'static str = "the server does not read the stream";

    /// The stream is alive one way only (see [`Self::UNREAD_STREAM`]).
    pub fn is_unread_stream(&self) -> bool {
        matches!(self, ConnectError::Timeout(r) if *r == Self::UNREAD_STREAM)
    }

    /// A FAST token login failed: drop the token, log in with the password.
    pub fn is_fast_token_rejected(&self) -> bool {
        matches!(self, ConnectError::Auth { condition, .. } if condition == Self::FAST_TOKEN_REJECTED)
    }

    /// Errors that retrying later may fix (as opposed to wrong credentials or certificates).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Network(_) | ConnectError::Timeout(_) | ConnectError::Stream(_)
        )
    }
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut {
            ConnectError::Timeout("no response from server")
        } else {
            ConnectError::Network(e.to_string())
        }
    }
}

/// Errors of a running session's requests.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("the session is closed")]
    Closed,
    #[error("no response in time")]
    Timeout,
    #[error("the server answered with an error: {condition}{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Stanza {
        condition: String,
        text: Option<String>,
    },
    #[error("unexpected response: {0}")]
    Unexpected(String),
    #[error("invalid argument: {0}")]
    BadArgument(String),
}
