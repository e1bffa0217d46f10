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
    /// A new connection's setup failed: what a connection customizer returns
    /// (`SupervisorBuilder::customize`), made with [`BackendError::setup`] or `?` on a
    /// driver's error.
    #[error("{message}")]
    Setup {
        /// What failed, with its causes, password removed.
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

    /// A connection's setup failed with `err` (its causes follow its message; any
    /// password is removed). For connection customizers:
    ///
    /// ```
    /// # use poolvisor::backends::BackendError;
    /// let err = BackendError::setup(&std::io::Error::other("no such schema"));
    /// assert_eq!(err.to_string(), "no such schema");
    /// ```
    pub fn setup(err: &dyn std::error::Error) -> Self {
        BackendError::Setup {
            message: redact(&with_causes(err)),
        }
    }

    /// As `server`, with the error's causes after it, for drivers whose message leaves
    /// them out (tokio-postgres says "db error" or "error performing TLS handshake" and
    /// keeps the why in `source()`).
    pub(crate) fn server_with_causes(target: &Arc<str>, err: &dyn std::error::Error) -> Self {
        Self::server(target, with_causes(err))
    }
}

/// An error's message, then its causes', joined by `: `.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        message.push_str(": ");
        message.push_str(&e.to_string());
        cause = e.source();
    }
    message
}

/// `?` on tokio-postgres's errors in a connection customizer.
impl From<tokio_postgres::Error> for BackendError {
    fn from(err: tokio_postgres::Error) -> Self {
        BackendError::setup(&err)
    }
}

/// `?` on redis-rs's errors in a connection customizer.
impl From<redis::RedisError> for BackendError {
    fn from(err: redis::RedisError) -> Self {
        BackendError::setup(&err)
    }
}
