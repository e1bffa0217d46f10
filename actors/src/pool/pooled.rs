//! The guard a checkout returns.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use bb8::ManageConnection;

use super::conn::Conn;
use super::shared::PoolShared;
use super::stats::CloseReason;

/// A connection lent by a pool. Derefs to `M::Connection`.
///
/// Dropping it gives the connection back: to the oldest waiter, or to the idle set. It is
/// closed instead when `ManageConnection::has_broken` says so, when it outlived
/// `max_lifetime`, when the caller panicked while holding it (it may be mid-protocol), or
/// when the pool is draining or shut down.
pub struct Pooled<M: ManageConnection> {
    conn: Option<Conn<M::Connection>>,
    /// The pool, without a reference count: a count changed by every checkout and
    /// return is a cache line both cores write. While `conn` is lent the pool's state
    /// holds a strong reference to the pool (`State::keep_alive`), dropped only after
    /// the last lent connection came back.
    pool: PoolRef<M>,
}

/// A pointer used only as a `&PoolShared<M>`.
struct PoolRef<M: ManageConnection>(NonNull<PoolShared<M>>);

// SAFETY: it is used only as a shared reference, which may cross and be shared between
// threads when the pool is `Sync`.
unsafe impl<M: ManageConnection> Send for PoolRef<M> where PoolShared<M>: Sync {}
// SAFETY: as for `Send`.
unsafe impl<M: ManageConnection> Sync for PoolRef<M> where PoolShared<M>: Sync {}

impl<M: ManageConnection> Pooled<M> {
    /// `conn` must have been lent by `pool` (counted in its `lent`).
    pub(crate) fn new(conn: Conn<M::Connection>, pool: &Arc<PoolShared<M>>) -> Self {
        Pooled {
            conn: Some(conn),
            pool: PoolRef(NonNull::from(&**pool)),
        }
    }

    fn shared(&self) -> &PoolShared<M> {
        // SAFETY: while this guard holds a lent connection the pool keeps itself alive
        // (`State::keep_alive`). Giving it back (`put_back`) hands over what kept the
        // pool alive, which the caller drops after the reference returned here is gone;
        // no method reaches here after that.
        unsafe { self.pool.0.as_ref() }
    }

    /// Closes the connection instead of giving it back (the caller knows it is bad).
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            let last = self.shared().put_back(conn, Some(CloseReason::Discarded));
            drop(last); // may free the pool: no reference to it is left
        }
    }

    /// The name of the pool it came from.
    pub fn pool(&self) -> &str {
        &self.shared().name
    }

    /// The pool's id for this connection (unique within the pool).
    pub fn id(&self) -> u64 {
        self.inner().id
    }

    fn inner(&self) -> &Conn<M::Connection> {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl<M: ManageConnection> Deref for Pooled<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        self.inner().get()
    }
}

impl<M: ManageConnection> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        self.conn
            .as_mut()
            .expect("connection present until drop")
            .get_mut()
    }
}

impl<M: ManageConnection> Drop for Pooled<M> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let close = if std::thread::panicking() {
            Some(CloseReason::Panicked)
        } else if self.shared().manager.has_broken(conn.get_mut()) {
            Some(CloseReason::Broken)
        } else {
            None
        };
        let last = self.shared().put_back(conn, close);
        drop(last); // may free the pool: no reference to it is left
    }
}

impl<M: ManageConnection> fmt::Debug for Pooled<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("pool", &self.shared().name)
            .field("id", &self.conn.as_ref().map(|c| c.id))
            .finish()
    }
}
