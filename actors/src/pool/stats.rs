//! Counters a pool keeps under its lock (those of every checkout are in `recorder`), and
//! the snapshot the metrics actor reads.

use std::time::Duration;

use serde::Serialize;

use super::status::PoolStatus;
use crate::histogram::LatencySummary;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Idle longer than `idle_timeout`.
    Idle,
    /// Older than `max_lifetime`.
    Lifetime,
    /// `has_broken` said so on return.
    Broken,
    /// Failed validation.
    Validation,
    /// Closed to give the budget to another pool's callers: idle, or on its return.
    Reclaimed,
    /// Closed by a drain or shutdown.
    Shutdown,
    /// The caller called `Pooled::discard`.
    Discarded,
    /// The caller panicked while holding it.
    Panicked,
    /// Above `max_size` after a resize.
    Resized,
}

impl CloseReason {
    /// Every reason, in a fixed order.
    pub const ALL: [CloseReason; 9] = [
        CloseReason::Idle,
        CloseReason::Lifetime,
        CloseReason::Broken,
        CloseReason::Validation,
        CloseReason::Reclaimed,
        CloseReason::Shutdown,
        CloseReason::Discarded,
        CloseReason::Panicked,
        CloseReason::Resized,
    ];

    /// Lower-case name, as in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Broken => "broken",
            CloseReason::Validation => "validation",
            CloseReason::Reclaimed => "reclaimed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Discarded => "discarded",
            CloseReason::Panicked => "panicked",
            CloseReason::Resized => "resized",
        }
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) timeouts: u64,
    pub(crate) exhausted: u64,
    pub(crate) unavailable: u64,
    pub(crate) refused: u64,
    pub(crate) connects_ok: u64,
    pub(crate) connects_failed: u64,
    pub(crate) validations_failed: u64,
    pub(crate) closes: [u64; CloseReason::ALL.len()],
    pub(crate) peak_lent: usize,
}

impl Stats {
    pub(crate) fn closed(&mut self, reason: CloseReason) {
        self.closes[reason as usize] += 1;
    }
}

/// Checkouts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckoutCounts {
    /// Got a connection.
    pub ok: u64,
    /// Waited `checkout_timeout` in vain.
    pub timeout: u64,
    /// Turned away: `max_waiters` reached.
    pub exhausted: u64,
    /// Failed fast: the pool was Down.
    pub unavailable: u64,
    /// Refused: paused, draining, shut down or failed.
    pub refused: u64,
}

/// One pool at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSnapshot {
    /// The pool's name.
    pub name: String,
    /// Its backend kind.
    pub backend: String,
    /// Its state.
    pub status: PoolStatus,
    /// Its current `max_size`.
    pub max_size: usize,
    /// Its `min_idle`.
    pub min_idle: usize,
    /// Its reserve of the global budget.
    pub reserve: usize,
    /// Open connections (idle + in use + being validated).
    pub open: usize,
    /// Idle connections.
    pub idle: usize,
    /// Connections lent to callers (a connection in shared use counts once).
    pub in_use: usize,
    /// Callers on connections in shared use (`checkout_shared`).
    pub sharing: usize,
    /// Connects in flight.
    pub connecting: usize,
    /// Connections being validated.
    pub validating: usize,
    /// The most connections ever lent at once.
    pub peak_in_use: usize,
    /// Callers waiting.
    pub waiters: usize,
    /// How long the oldest waiter has waited.
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub oldest_waiter: Duration,
    /// Checkouts by outcome.
    pub checkouts: CheckoutCounts,
    /// Successful connects.
    pub connects_ok: u64,
    /// Failed connects.
    pub connects_failed: u64,
    /// Closes by reason (`idle`, `lifetime`, `broken`, ...), zeros included.
    pub closes: Vec<(CloseReason, u64)>,
    /// Time from checkout call to connection, for checkouts that got one.
    pub wait: LatencySummary,
    /// Time a connection was held by a caller.
    pub hold: LatencySummary,
    /// The last connect error (password removed).
    pub last_error: Option<String>,
    /// Checkout waits per bucket at [`LATENCY_BUCKETS`] (then `+Inf`), for exposition.
    #[serde(skip)]
    pub wait_buckets: Vec<(f64, u64)>,
}

/// Upper bounds (seconds) of the wait-time buckets in [`PoolSnapshot::wait_buckets`].
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
