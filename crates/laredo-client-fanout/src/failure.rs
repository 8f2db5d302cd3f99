//! [`SessionError`]: why the client is not streaming, as [`ClientStats`](crate::ClientStats)
//! reports it.

use std::error::Error as StdError;
use std::fmt;

/// Why a connection attempt or a stream failed (see [`ClientStats::last_error`]).
///
/// [`ClientStats::last_error`]: crate::ClientStats::last_error
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionError {
    /// The endpoint (URL) it happened on.
    pub endpoint: String,
    /// What kind of failure.
    pub kind: SessionErrorKind,
    /// The details: the server's status message, or the transport's error chain.
    pub message: String,
}

/// The kinds of [`SessionError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionErrorKind {
    /// The server answered `UNAUTHENTICATED`: no token was sent, or one it does not
    /// know. The server's message says which kind of token it needs.
    Unauthenticated,
    /// The server answered `PERMISSION_DENIED`: the token is known but its role may not
    /// call `Sync` (the server lists `Sync` among its admin methods).
    PermissionDenied,
    /// The token file could not be read or holds no usable token.
    TokenFile,
    /// No connection: TCP, the TLS handshake (an unknown CA, a certificate that does
    /// not name the server) or HTTP/2.
    Connect,
    /// The server refused the stream with another status, or did not answer with a
    /// handshake.
    Refused,
    /// An open stream failed, ended, fell silent or sent what the client cannot apply.
    Lost,
}

impl SessionError {
    pub(crate) fn new(
        endpoint: impl Into<String>,
        kind: SessionErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            kind,
            message: message.into(),
        }
    }

    /// A failed call's status: UNAUTHENTICATED and PERMISSION_DENIED get their own
    /// kinds, any other status `other`.
    pub(crate) fn from_status(
        endpoint: &str,
        status: &tonic::Status,
        other: SessionErrorKind,
    ) -> Self {
        let kind = match status.code() {
            tonic::Code::Unauthenticated => SessionErrorKind::Unauthenticated,
            tonic::Code::PermissionDenied => SessionErrorKind::PermissionDenied,
            _ => other,
        };
        let mut message = format!("{} ({:?})", status.message(), status.code());
        if let Some(source) = status.source() {
            message = format!("{message}: {}", chain(source));
        }
        Self::new(endpoint, kind, message)
    }

    /// Whether the server refused the credentials, or there are none to send: retrying
    /// soon cannot help, so the client waits its longest backoff.
    pub fn is_credentials(&self) -> bool {
        matches!(
            self.kind,
            SessionErrorKind::Unauthenticated
                | SessionErrorKind::PermissionDenied
                | SessionErrorKind::TokenFile
        )
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.endpoint, self.message)
    }
}

impl StdError for SessionError {}

/// An error and its sources, `: `-separated, leaving out a source whose text the
/// previous one already shows (tonic's transport errors repeat their cause).
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut source = error.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !last.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        last = part;
        source = err.source();
    }
    text
}
