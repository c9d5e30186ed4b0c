use thiserror::Error;

/// The client's public error: one variant per thing an app can act on differently
/// (DESIGN.md §8). Messages never contain JIDs, bodies or keys.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The server could not be reached or the connection broke; retrying may help.
    #[error("network: {0}")]
    Network(String),
    /// Wrong credentials or the account is disabled: ask the user.
    #[error("authentication: {0}")]
    Auth(String),
    /// The server's certificate is not trusted, or it would not encrypt. Never retried blindly.
    #[error("security: {0}")]
    Tls(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The server or our policy refuses (registration closed, username taken, …).
    #[error("refused: {0}")]
    Policy(String),
    /// The app passed something invalid.
    #[error("invalid argument: {0}")]
    BadInput(String),
    /// The database key is wrong.
    #[error("the database key is wrong")]
    WrongKey,
    #[error("internal: {0}")]
    Internal(String),
}

impl From<linnet_store::StoreError> for ClientError {
    fn from(e: linnet_store::StoreError) -> Self {
        use linnet_store::StoreError as S;
        match e {
            S::WrongKey => ClientError::WrongKey,
            S::NotFound(what) => ClientError::NotFound(what.to_owned()),
            S::Conflict(what) => ClientError::Policy(what),
            S::InvalidInput(what) => ClientError::BadInput(what.to_owned()),
            other => ClientError::Internal(other.to_string()),
        }
    }
}

impl From<linnet_xmpp::ConnectError> for ClientError {
    fn from(e: linnet_xmpp::ConnectError) -> Self {
        use linnet_xmpp::ConnectError as C;
        match e {
            C::Network(m) => ClientError::Network(m),
            C::Tls(m) => ClientError::Tls(m),
            C::Timeout(_) | C::Stream(_) => ClientError::Network(e.to_string()),
            C::NoTls => ClientError::Tls(e.to_string()),
            C::Auth { .. } | C::NoMechanism => ClientError::Auth(e.to_string()),
            C::Registration { .. } | C::RegistrationUnsupported => {
                ClientError::Policy(e.to_string())
            }
            C::Config(_) => ClientError::BadInput(e.to_string()),
            C::Protocol(_) => ClientError::Internal(e.to_string()),
        }
    }
}

impl From<linnet_xmpp::RequestError> for ClientError {
    fn from(e: linnet_xmpp::RequestError) -> Self {
        use linnet_xmpp::RequestError as R;
        match e {
            R::Closed | R::Timeout => ClientError::Network(e.to_string()),
            R::Stanza { .. } => ClientError::Policy(e.to_string()),
            R::BadArgument(_) => ClientError::BadInput(e.to_string()),
            R::Unexpected(_) => ClientError::Internal(e.to_string()),
        }
    }
}

impl From<linnet_xmpp::profile::ProfileError> for ClientError {
    fn from(e: linnet_xmpp::profile::ProfileError) -> Self {
        use linnet_xmpp::profile::ProfileError as P;
        match e {
            P::Request(r) => r.into(),
            P::BadArgument(what) => ClientError::BadInput(what.into()),
            // Too large to publish: the caller's data (the server's limits are checked
            // before sending).
            P::TooLarge { .. } => ClientError::BadInput(e.to_string()),
            P::NotFound(what) => ClientError::NotFound(what.into()),
            // What the server sent was unusable.
            other => ClientError::Network(other.to_string()),
        }
    }
}

impl From<linnet_xmpp::JidError> for ClientError {
    fn from(e: linnet_xmpp::JidError) -> Self {
        ClientError::BadInput(e.to_string())
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
