//! The handle callers check out through.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use bb8::ManageConnection;
use tokio::sync::oneshot;

use super::pooled::Pooled;
use super::shared::{PoolShared, Take};
use super::stats::PoolSnapshot;
use super::status::PoolStatus;
use super::waiters::Delivery;
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
    #[track_caller]
    pub fn checkout(&self) -> impl Future<Output = Result<Pooled<M>, CheckoutError>> + Send + '_ {
        let location = Location::caller();
        async move {
            let rx = match self.shared.take(location) {
                Take::Ready(conn) => return Ok(Pooled::new(conn, self.shared.clone())),
                Take::Fail(err) => return Err(err),
                Take::Wait(rx) => rx,
            };
            // Bounded by the pool's sweeper, which fails this wait with `Timeout` once
            // `checkout_timeout` has passed (one timer per pool, not per waiter).
            let mut wait = Wait {
                shared: &self.shared,
                rx: Some(rx),
            };
            let rx = wait.rx.as_mut().expect("set above");
            let delivery = match rx.await {
                Ok(delivery) => delivery,
                // The sender is only ever dropped after sending; treat it as shutdown.
                Err(_) => Err(CheckoutError::ShutDown {
                    pool: self.shared.name.clone(),
                }),
            };
            wait.rx = None;
            delivery.map(|conn| Pooled::new(conn, self.shared.clone()))
        }
    }
}

/// A place in the queue; leaving it early (the future dropped) runs the cancel protocol,
/// which gives back a connection delivered in the meantime.
struct Wait<'a, M: ManageConnection> {
    shared: &'a Arc<PoolShared<M>>,
    rx: Option<oneshot::Receiver<Delivery<M::Connection>>>,
}

impl<M: ManageConnection> Drop for Wait<'_, M> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            if let Some(Ok(conn)) = self.shared.cancel_wait(&mut rx) {
                self.shared.put_back(conn, None);
            }
        }
    }
}
