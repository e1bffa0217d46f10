//! The handle callers check out through.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use bb8::ManageConnection;

use super::pooled::Pooled;
use super::shared::{PoolShared, Take};
use super::sharing::Shared;
use super::stats::PoolSnapshot;
use super::status::PoolStatus;
use super::wait::Wait;
use crate::error::CheckoutError;

/// A cheap, cloneable handle to one pool. It holds the pool's shared state, never an
/// actor reference, so it keeps working across restarts of the pool actor.
///
/// ```
/// # use poolvisor_actors::{Supervisor, PoolConfig, testing::MockManager};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sup = Supervisor::builder()
///     .pool("mock", MockManager::new(), PoolConfig::default())
///     .start()
///     .await?;
/// let pool = sup.pool::<MockManager>("mock")?;
/// let conn = pool.checkout().await?;
/// assert!(conn.ping().is_ok());
/// drop(conn);
/// sup.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct PoolHandle<M: ManageConnection> {
    shared: Arc<PoolShared<M>>,
}

impl<M: ManageConnection> Clone for PoolHandle<M> {
    fn clone(&self) -> Self {
        PoolHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<M: ManageConnection> fmt::Debug for PoolHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("pool", &self.shared.name)
            .field("backend", &self.shared.backend)
            .finish()
    }
}

impl<M: ManageConnection> PoolHandle<M> {
    pub(crate) fn new(shared: Arc<PoolShared<M>>) -> Self {
        PoolHandle { shared }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The pool's state now.
    pub fn status(&self) -> PoolStatus {
        self.shared.status()
    }

    /// The pool's counters now.
    pub fn snapshot(&self) -> PoolSnapshot {
        self.shared.snapshot()
    }

    /// Borrows a connection: an idle one at once if nobody waits before us, else waits in
    /// FIFO order for one to be returned or opened, for at most `checkout_timeout`
    /// (then `CheckoutError::Timeout`).
    ///
    /// Cancel-safe: dropping the future at any point loses no connection. The call site
    /// is remembered for leak reports.
    ///
    /// For a shorter bound on one call, wrap it in `tokio::time::timeout`; with
    /// `Duration::ZERO` that is a try: an idle connection if one is free and nobody
    /// waits before us, else `Elapsed` at once, the caller's place in the queue given up.
    ///
    /// ```
    /// # use poolvisor_actors::{Supervisor, PoolConfig, testing::MockManager};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sup = Supervisor::builder()
    ///     .pool("mock", MockManager::new(), PoolConfig::default().max_size(1))
    ///     .start()
    ///     .await?;
    /// let pool = sup.pool::<MockManager>("mock")?;
    /// let held = pool.checkout().await?;
    /// assert!(tokio::time::timeout(Duration::ZERO, pool.checkout()).await.is_err());
    /// drop(held);
    /// let conn = tokio::time::timeout(Duration::ZERO, pool.checkout()).await??;
    /// # drop(conn);
    /// # sup.shutdown().await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn checkout(&self) -> impl Future<Output = Result<Pooled<M>, CheckoutError>> + Send + '_ {
        self.checkout_from(Location::caller())
    }

    /// Borrows a connection that other callers may use at the same time, for drivers whose
    /// connections serve concurrent requests (tokio-postgres pipelines them, Redis
    /// multiplexes them, HTTP/2 has streams). The guard derefs to `&M::Connection`.
    ///
    /// A connection serves at most `max_shares` callers at once. With `SharePolicy::Spread`
    /// (the engine's default) an idle connection is put into shared use before an
    /// existing one takes another caller; with `Pack` the busiest connection with room
    /// takes the caller first. When every connection in shared use is full and none can be
    /// opened, or while other checkouts wait, this waits in arrival order with every
    /// other checkout, exclusive or shared, for at most `checkout_timeout`. Cancel-safe.
    /// See [`Shared`] for when a connection leaves shared use.
    ///
    /// ```
    /// # use poolvisor_actors::{Supervisor, PoolConfig, testing::MockManager};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sup = Supervisor::builder()
    ///     .pool("mock", MockManager::new(), PoolConfig::default().max_size(1).max_shares(2))
    ///     .start()
    ///     .await?;
    /// let pool = sup.pool::<MockManager>("mock")?;
    /// let a = pool.checkout_shared().await?;
    /// let b = pool.checkout_shared().await?;
    /// assert_eq!(a.id(), b.id()); // one connection, two callers
    /// assert!(a.ping().is_ok() && b.ping().is_ok());
    /// # drop((a, b));
    /// # sup.shutdown().await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn checkout_shared(
        &self,
    ) -> impl Future<Output = Result<Shared<M>, CheckoutError>> + Send + '_
    where
        M::Connection: Sync,
    {
        let location = Location::caller();
        async move {
            match self.shared.take(location, true) {
                Take::Ready(conn) => Ok(self.shared.share(conn)),
                Take::Share(slot, lease) => Ok(Shared::join(slot, self.shared.clone(), lease)),
                Take::Fail(err) => Err(err),
                Take::WaitShared(queued) => self.shared.wait_shared(queued).await,
                Take::Wait(_) => unreachable!("shared checkouts wait in the shared queue"),
            }
        }
    }

    async fn checkout_from(
        &self,
        location: &'static Location<'static>,
    ) -> Result<Pooled<M>, CheckoutError> {
        let queued = match self.shared.take(location, false) {
            Take::Ready(conn) => return Ok(Pooled::new(conn, &self.shared)),
            Take::Share(..) | Take::WaitShared(_) => {
                unreachable!("only shared checkouts are given a share")
            }
            Take::Fail(err) => return Err(err),
            Take::Wait(queued) => queued,
        };
        let (wait, since) = Wait::new(
            &self.shared,
            queued,
            |st| &mut st.waiters,
            |shared, conn| shared.put_back_unused(conn),
        );
        let conn = wait.delivered().await?;
        // Recorded here, not by whoever handed it over: a caller that left before the
        // connection reached it did not check out.
        self.shared
            .recorder
            .checkout(conn.lent_at.saturating_duration_since(since));
        Ok(Pooled::new(conn, &self.shared))
    }
}
