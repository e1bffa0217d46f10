//! The error every backend manager returns: says which server, never the password.

use std::fmt;
use std::sync::Arc;

use poolvisor_actors::redact;

/// A backend failed: a bad URL, or a connect / validation / request error, naming the
/// server it was talking to. Its `Debug` is its message, since the engine reports manager
/// errors through `Debug`.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The URL does not parse or has an unsupported scheme.
    #[error("invalid {kind} URL `{url}`: {reason}")]
    InvalidUrl {
        /// `postgres`, `redis` or `http`.
        kind: &'static str,
        /// The URL, password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server (at `target`) failed or could not be reached.
    #[error("{target}: {message}")]
    Server {
        /// `host:port` (and database), no password.
        target: Arc<str>,
        /// The driver's message, password removed.
        message: String,
    },
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl BackendError {
    pub(crate) fn invalid_url(kind: &'static str, url: &str, reason: impl fmt::Display) -> Self {
        BackendError::InvalidUrl {
            kind,
            url: redact(url),
            reason: redact(&reason.to_string()),
        }
    }

    pub(crate) fn server(target: &Arc<str>, err: impl fmt::Display) -> Self {
        BackendError::Server {
            target: target.clone(),
            message: redact(&err.to_string()),
        }
    }

    /// As `server`, with the error's causes after it, for drivers whose message leaves
    /// them out (tokio-postgres says "db error" or "error performing TLS handshake" and
    /// keeps the why in `source()`).
    pub(crate) fn server_with_causes(target: &Arc<str>, err: &dyn std::error::Error) -> Self {
        let mut message = err.to_string();
        let mut cause = err.source();
        while let Some(e) = cause {
            message.push_str(": ");
            message.push_str(&e.to_string());
            cause = e.source();
        }
        Self::server(target, message)
    }
}
