//! One open connection and what the pool knows about it.

use std::panic::Location;
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::Permit;

/// A connection as the pool holds it: the driver's connection plus its bookkeeping and
/// its share of the global budget. Dropping it closes the connection and frees the share,
/// so it is only ever dropped through `PoolShared::close` or after a count was taken
/// off under the pool lock.
pub(crate) struct Conn<C> {
    pub(crate) conn: C,
    pub(crate) id: u64,
    pub(crate) expires_at: Option<Instant>,
    /// When it was last returned (or opened or validated).
    pub(crate) idle_since: Instant,
    /// When it was last lent.
    pub(crate) lent_at: Instant,
    pub(crate) location: &'static Location<'static>,
    pub(crate) _permit: Permit,
}

impl<C> Conn<C> {
    pub(crate) fn new(
        conn: C,
        id: u64,
        now: Instant,
        max_lifetime: Option<Duration>,
        permit: Permit,
    ) -> Self {
        // Up to 10 % earlier than max_lifetime, so connections opened together do not all
        // expire together.
        let expires_at = max_lifetime.map(|l| now + l.mul_f64(1.0 - fastrand::f64() * 0.1));
        Conn {
            conn,
            id,
            expires_at,
            idle_since: now,
            lent_at: now,
            location: Location::caller(),
            _permit: permit,
        }
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}
