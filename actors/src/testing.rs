//! A test kit: a `bb8::ManageConnection` whose connects can fail, stall or be slow, whose
//! connections can be killed or broken on command, and that counts its live connections;
//! plus fault injection into a running supervisor (crash or wedge a pool actor).
//!
//! ```
//! # use poolvisor_actors::{Supervisor, PoolConfig, testing::MockManager};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockManager::new();
//! let sup = Supervisor::builder().pool("m", mock.clone(), PoolConfig::default()).start().await?;
//! let pool = sup.pool::<MockManager>("m")?;
//! let conn = pool.checkout().await?;
//! mock.kill_all(); // the "server" drops every connection
//! assert!(conn.ping().is_err());
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::ControlError;
use crate::pool::actor::PoolMsg;
use crate::supervisor::Supervisor;

/// The error a mock connect or validation returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mock: {0}")]
pub struct MockError(pub String);

#[derive(Default)]
struct Inner {
    fail_connects: AtomicBool,
    stall_connects: AtomicBool,
    connect_delay: Mutex<Duration>,
    /// Connections opened from now on report `has_broken` on their first return.
    break_next: AtomicUsize,
    connects: AtomicU64,
    validations: AtomicU64,
    live: AtomicUsize,
    peak_live: AtomicUsize,
    next_id: AtomicU64,
    conns: Mutex<Vec<Weak<ConnFlags>>>,
    /// Text of connect errors (to test redaction).
    error_text: Mutex<Option<String>>,
}

#[derive(Default)]
struct ConnFlags {
    killed: AtomicBool,
    broken: AtomicBool,
}

/// A connection manager for tests; clones share their state.
#[derive(Clone, Default)]
pub struct MockManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockManager")
            .field("live", &self.live())
            .finish()
    }
}

/// A mock connection. Dropping it "closes" it.
pub struct MockConnection {
    id: u64,
    flags: Arc<ConnFlags>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConnection")
            .field("id", &self.id)
            .finish()
    }
}

impl MockConnection {
    /// The manager's id for it, from 1 in connect order.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A round trip: fails if the "server" killed this connection.
    pub fn ping(&self) -> Result<(), MockError> {
        if self.flags.killed.load(Ordering::Acquire) {
            Err(MockError(format!("connection {} was killed", self.id)))
        } else {
            Ok(())
        }
    }

    /// Makes `has_broken` report this connection as broken (like a closed socket).
    pub fn mark_broken(&self) {
        self.flags.broken.store(true, Ordering::Release);
    }
}

impl Drop for MockConnection {
    fn drop(&mut self) {
        self.inner.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl MockManager {
    /// A manager whose connects succeed at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects fail (true) or succeed (false) from now on.
    pub fn fail_connects(&self, fail: bool) {
        self.inner.fail_connects.store(fail, Ordering::Release);
    }

    /// Connects never complete (true) from now on, until set back to false.
    pub fn stall_connects(&self, stall: bool) {
        self.inner.stall_connects.store(stall, Ordering::Release);
    }

    /// Each connect takes this long.
    pub fn set_connect_delay(&self, delay: Duration) {
        *self.inner.connect_delay.lock() = delay;
    }

    /// The text of connect errors from now on (e.g. one with a URL and password).
    pub fn set_error_text(&self, text: impl Into<String>) {
        *self.inner.error_text.lock() = Some(text.into());
    }

    /// The next `n` connections opened report `has_broken` when returned.
    pub fn break_next(&self, n: usize) {
        self.inner.break_next.store(n, Ordering::Release);
    }

    /// The "server" kills every open connection: `ping` and `is_valid` fail on them, but
    /// `has_broken` does not notice (like a socket closed while idle).
    pub fn kill_all(&self) {
        for flags in self.inner.conns.lock().iter().filter_map(Weak::upgrade) {
            flags.killed.store(true, Ordering::Release);
        }
    }

    /// Every open connection reports `has_broken` from now on (its driver saw it close).
    pub fn break_all(&self) {
        for flags in self.inner.conns.lock().iter().filter_map(Weak::upgrade) {
            flags.broken.store(true, Ordering::Release);
        }
    }

    /// Connections open now (made and not dropped).
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// The most connections ever open at once.
    pub fn peak_live(&self) -> usize {
        self.inner.peak_live.load(Ordering::Acquire)
    }

    /// Connects attempted.
    pub fn connects(&self) -> u64 {
        self.inner.connects.load(Ordering::Acquire)
    }

    /// Validations (`is_valid` calls) made.
    pub fn validations(&self) -> u64 {
        self.inner.validations.load(Ordering::Acquire)
    }
}

impl bb8::ManageConnection for MockManager {
    type Connection = MockConnection;
    type Error = MockError;

    async fn connect(&self) -> Result<MockConnection, MockError> {
        let inner = &self.inner;
        inner.connects.fetch_add(1, Ordering::AcqRel);
        let delay = *inner.connect_delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        while inner.stall_connects.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if inner.fail_connects.load(Ordering::Acquire) {
            let text = inner.error_text.lock().clone();
            return Err(MockError(
                text.unwrap_or_else(|| "connection refused".into()),
            ));
        }
        let flags = Arc::new(ConnFlags::default());
        let broken = inner
            .break_next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        flags.broken.store(broken, Ordering::Release);
        {
            let mut conns = inner.conns.lock();
            conns.retain(|w| w.strong_count() > 0);
            conns.push(Arc::downgrade(&flags));
        }
        let live = inner.live.fetch_add(1, Ordering::AcqRel) + 1;
        inner.peak_live.fetch_max(live, Ordering::AcqRel);
        Ok(MockConnection {
            id: inner.next_id.fetch_add(1, Ordering::AcqRel) + 1,
            flags,
            inner: inner.clone(),
        })
    }

    async fn is_valid(&self, conn: &mut MockConnection) -> Result<(), MockError> {
        self.inner.validations.fetch_add(1, Ordering::AcqRel);
        conn.ping()
    }

    fn has_broken(&self, conn: &mut MockConnection) -> bool {
        conn.flags.broken.load(Ordering::Acquire)
    }
}

fn pool_actor(sup: &Supervisor, pool: &str) -> Result<ractor::ActorRef<PoolMsg>, ControlError> {
    sup.pool_names()
        .contains(&pool)
        .then(|| sup.pool_actor(pool))
        .ok_or_else(|| ControlError::UnknownPool { name: pool.into() })?
        .ok_or(ControlError::ShutDown)
}

/// Makes pool `pool`'s actor panic, as a bug would; the supervisor restarts it.
pub fn crash_pool(sup: &Supervisor, pool: &str) -> Result<(), ControlError> {
    let actor = pool_actor(sup, pool)?;
    actor
        .cast(PoolMsg::Crash)
        .map_err(|_| ControlError::ShutDown)
}

/// Blocks pool `pool`'s actor for `duration`, as a wedged actor would; the supervisor
/// kills and restarts it once a heartbeat goes unanswered for the heartbeat timeout.
pub fn wedge_pool(sup: &Supervisor, pool: &str, duration: Duration) -> Result<(), ControlError> {
    let actor = pool_actor(sup, pool)?;
    actor
        .cast(PoolMsg::Stall(duration))
        .map_err(|_| ControlError::ShutDown)
}
