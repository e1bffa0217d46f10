//! The errors a caller can match on.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigError;

/// Why a checkout (or a pool lookup) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckoutError {
    /// No connection became available within `checkout_timeout`.
    #[error(
        "pool `{pool}`: no connection within {waited:?}{}",
        last_error_suffix(last_error)
    )]
    Timeout {
        /// The pool.
        pool: Arc<str>,
        /// How long the caller waited.
        waited: Duration,
        /// The last connect error of the pool, if there was one (password removed).
        last_error: Option<Arc<str>>,
    },
    /// `max_waiters` callers already wait.
    #[error("pool `{pool}`: exhausted, {waiters} callers already waiting")]
    Exhausted {
        /// The pool.
        pool: Arc<str>,
        /// Callers waiting when this one was turned away.
        waiters: usize,
    },
    /// The pool is Down: its backend does not accept connections.
    #[error("pool `{pool}`: unavailable: {cause}")]
    Unavailable {
        /// The pool.
        pool: Arc<str>,
        /// The last connect error (password removed).
        cause: Arc<str>,
    },
    /// The pool is paused by an operator.
    #[error("pool `{pool}`: paused")]
    Paused {
        /// The pool.
        pool: Arc<str>,
    },
    /// The pool is being drained, or was drained and not resumed.
    #[error("pool `{pool}`: draining")]
    Draining {
        /// The pool.
        pool: Arc<str>,
    },
    /// The supervisor was shut down.
    #[error("pool `{pool}`: shut down")]
    ShutDown {
        /// The pool.
        pool: Arc<str>,
    },
    /// The pool crashed more often than the restart limit allows.
    #[error("pool `{pool}`: failed after {restarts} restarts")]
    Failed {
        /// The pool.
        pool: Arc<str>,
        /// Restarts in the window when it was given up.
        restarts: u32,
    },
    /// No pool has this name.
    #[error("no pool named `{name}`")]
    UnknownPool {
        /// The name asked for.
        name: String,
    },
    /// The pool exists but manages another connection type.
    #[error("pool `{name}` manages {actual}, not {expected}")]
    WrongType {
        /// The name asked for.
        name: String,
        /// The manager type asked for.
        expected: &'static str,
        /// The manager type of the pool.
        actual: &'static str,
    },
}

fn last_error_suffix(last: &Option<Arc<str>>) -> String {
    match last {
        Some(e) => format!(" (last connect error: {e})"),
        None => String::new(),
    }
}

/// Why `Supervisor::builder().start()` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A pool's configuration is out of range.
    #[error("pool `{pool}`: {source}")]
    InvalidConfig {
        /// The pool.
        pool: String,
        /// The field and what is wrong with it.
        source: ConfigError,
    },
    /// A pool's backend could not be set up (a bad URL, say); the message has no password.
    #[error("pool `{pool}`: {message}")]
    InvalidBackend {
        /// The pool.
        pool: String,
        /// What is wrong.
        message: String,
    },
    /// A pool name is empty, too long or has characters other than `[A-Za-z0-9_.-]`.
    #[error("invalid pool name {name:?}: use 1 to 64 characters of [A-Za-z0-9_.-]")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A customizer (`SupervisorBuilder::customize`) names no pool, or a pool of
    /// another manager type, or a pool already customized.
    #[error("customizer for pool `{pool}`: {message}")]
    InvalidCustomizer {
        /// The pool it names.
        pool: String,
        /// What is wrong.
        message: String,
    },
    /// Two pools share a name.
    #[error("pool `{name}` is defined twice")]
    DuplicatePool {
        /// The name.
        name: String,
    },
    /// The supervisor's own settings are out of range.
    #[error("supervisor: `{field}` {message}")]
    InvalidSupervisor {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The pools' reserves add up to more than the global budget.
    #[error("reserves add up to {reserved}, more than max_connections {max_connections}")]
    ReservesExceedBudget {
        /// Sum of the pools' reserves.
        reserved: usize,
        /// The global budget.
        max_connections: usize,
    },
    /// The budget cannot hold every pool's `min_idle` at once: each pool needs the larger
    /// of its `min_idle` and its `reserve`, and those add up to more than the budget.
    #[error(
        "min_idle and reserves need {needed} connections at once, more than max_connections \
         {max_connections}"
    )]
    MinIdleExceedsBudget {
        /// Σ max(min_idle, reserve) over the pools.
        needed: usize,
        /// The global budget.
        max_connections: usize,
    },
    /// `fail_fast` is set and a pool could not connect at boot.
    #[error("pool `{pool}` is down at boot: {cause}")]
    PoolDown {
        /// The pool.
        pool: String,
        /// Its connect error (password removed).
        cause: String,
    },
    /// The actor runtime refused to spawn an actor.
    #[error("could not spawn the {what} actor: {message}")]
    Spawn {
        /// Which actor.
        what: String,
        /// ractor's error.
        message: String,
    },
}

/// Why a runtime control request (resize, pause, drain, ...) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No pool has this name.
    #[error("no pool named `{name}`")]
    UnknownPool {
        /// The name.
        name: String,
    },
    /// The requested value is out of range.
    #[error("pool `{pool}`: {source}")]
    InvalidConfig {
        /// The pool.
        pool: String,
        /// The field and what is wrong with it.
        source: ConfigError,
    },
    /// The supervisor was shut down.
    #[error("the supervisor is shut down")]
    ShutDown,
    /// An actor did not answer in time.
    #[error("the {what} actor did not answer in time")]
    Unresponsive {
        /// Which actor.
        what: &'static str,
    },
    /// The pool gave up after too many restarts.
    #[error("pool `{pool}` has failed")]
    Failed {
        /// The pool.
        pool: String,
    },
}
