//! Managers that can tell when the server has let go of a closed connection.

use std::future::Future;

use bb8::ManageConnection;

/// A `ManageConnection` that can close a connection and resolve once the server has let
/// go of it (for example: it closed its side of the socket). The pool holds a closed
/// connection's share of the global budget until then, so that a connection opened in its
/// place never overlaps it in the server's own count.
///
/// Pools built with `SupervisorBuilder::try_graceful_pool` use it; `close` is bounded by
/// the pool's `connect_timeout`.
pub trait GracefulClose: ManageConnection {
    /// Closes `conn` and resolves when the server no longer counts it.
    fn close(&self, conn: Self::Connection) -> impl Future<Output = ()> + Send;
}
