//! One open connection and what the pool knows about it.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::Permit;
use crate::clock::Instant;

/// Closes a connection and resolves once the server has let go of it (see
/// `GracefulClose`); already bounded by a timeout.
pub(crate) type Closer<C> =
    Arc<dyn Fn(C) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A connection as the pool holds it: the driver's connection plus its bookkeeping and
/// its share of the global budget.
///
/// Dropping it closes the connection and frees the share. With a closer, the share is
/// freed only when the closer is done, so that a new connection elsewhere never overlaps
/// one the server still counts. It is only ever dropped after its pool took it off its
/// count (under the lock) and outside the lock.
pub(crate) struct Conn<C: Send + 'static>(Box<Parts<C>>);

/// What a [`Conn`] holds, boxed: a connection moves between the idle set, the caller's
/// guard and the waiters several times per checkout, and a pointer moves cheaper than
/// the driver's connection plus its bookkeeping.
pub(crate) struct Parts<C: Send + 'static> {
    conn: Option<C>,
    pub(crate) id: u64,
    pub(crate) expires_at: Option<Instant>,
    /// When it was last returned (or opened or validated).
    pub(crate) idle_since: Instant,
    /// When it was last lent.
    pub(crate) lent_at: Instant,
    pub(crate) location: &'static Location<'static>,
    permit: Option<Permit>,
    closer: Option<Closer<C>>,
}

impl<C: Send + 'static> Conn<C> {
    pub(crate) fn new(
        conn: C,
        id: u64,
        now: Instant,
        max_lifetime: Option<Duration>,
        permit: Permit,
        closer: Option<Closer<C>>,
    ) -> Self {
        // Up to 10 % earlier than max_lifetime, so connections opened together do not all
        // expire together.
        let expires_at = max_lifetime.map(|l| now + l.mul_f64(1.0 - fastrand::f64() * 0.1));
        Conn(Box::new(Parts {
            conn: Some(conn),
            id,
            expires_at,
            idle_since: now,
            lent_at: now,
            location: Location::caller(),
            permit: Some(permit),
            closer,
        }))
    }
}

impl<C: Send + 'static> std::ops::Deref for Conn<C> {
    type Target = Parts<C>;
    fn deref(&self) -> &Parts<C> {
        &self.0
    }
}

impl<C: Send + 'static> std::ops::DerefMut for Conn<C> {
    fn deref_mut(&mut self) -> &mut Parts<C> {
        &mut self.0
    }
}

impl<C: Send + 'static> Parts<C> {
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    pub(crate) fn get(&self) -> &C {
        self.conn.as_ref().expect("present until drop")
    }

    pub(crate) fn get_mut(&mut self) -> &mut C {
        self.conn.as_mut().expect("present until drop")
    }
}

impl<C: Send + 'static> Drop for Parts<C> {
    fn drop(&mut self) {
        let (Some(conn), Some(closer)) = (self.conn.take(), self.closer.take()) else {
            return; // dropped at once; the permit goes with it
        };
        let permit = self.permit.take();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    closer(conn).await;
                    drop(permit);
                });
            }
            Err(_) => drop((conn, permit)),
        }
    }
}
