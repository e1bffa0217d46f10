//! The supervisor: its builder, the handle users keep, and its actor.

pub(crate) mod actor;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8::{CustomizeConnection, ManageConnection};
use parking_lot::Mutex;
use ractor::{Actor, ActorRef};
use serde::Serialize;
use tokio::time::Instant;

use self::actor::{Settings, SupArgs, SupMsg, SupervisorActor};
use crate::budget::{Budget, BudgetSnapshot};
use crate::config::PoolConfig;
use crate::error::{CheckoutError, ControlError, StartError};
use crate::event::{EventBus, EventKind, EventStream};
use crate::graceful::GracefulClose;
use crate::metrics::{MetricsMsg, MetricsSnapshot};
use crate::pool::actor::PoolMsg;
use crate::pool::admin::DrainReport;
use crate::pool::conn::Closer;
use crate::pool::control::PoolControl;
use crate::pool::handle::PoolHandle;
use crate::pool::shared::{Customizer, PoolShared, PoolSpec};
use crate::pool::status::PoolStatus;

/// How long `Supervisor::shutdown` waits for lent connections to come back.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Bound on a request to the metrics actor.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a pool's shared state, given its slot, the event bus, the budget and its
/// customizer (a `Customizer<M>` of its manager type, boxed; checked by `validate`).
type MakePool = Box<
    dyn FnOnce(usize, EventBus, Arc<Budget>, Option<Box<dyn Any + Send>>) -> Arc<dyn PoolControl>
        + Send,
>;

struct PendingPool {
    name: String,
    config: PoolConfig,
    /// `Err` when the backend could not be built; reported by `start()`.
    make: Result<MakePool, String>,
    /// Its manager's type, which a customizer must be for.
    manager: (TypeId, &'static str),
}

/// A customizer given for a pool by name (`SupervisorBuilder::customize`).
struct PendingCustomizer {
    pool: String,
    manager: (TypeId, &'static str),
    /// A `Customizer<M>`.
    customizer: Box<dyn Any + Send>,
}

/// Collects pools and supervisor settings; `start()` validates them and spawns the actors.
///
/// ```
/// # use std::time::Duration;
/// # use poolvisor_actors::{Supervisor, PoolConfig, testing::MockManager};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sup = Supervisor::builder()
///     .max_connections(40)
///     .pool("db", MockManager::new(), PoolConfig::default().max_size(20).min_idle(2))
///     .pool("cache", MockManager::new(), PoolConfig::default().max_size(30).reserve(5))
///     .heartbeat(Duration::from_secs(1), Duration::from_secs(3))
///     .start()
///     .await?;
/// assert_eq!(sup.pool_names(), vec!["db", "cache"]);
/// sup.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct SupervisorBuilder {
    max_connections: Option<usize>,
    pools: Vec<PendingPool>,
    customizers: Vec<PendingCustomizer>,
    settings: Settings,
    fail_fast: bool,
    event_capacity: usize,
}

impl Default for SupervisorBuilder {
    fn default() -> Self {
        SupervisorBuilder {
            max_connections: None,
            pools: Vec::new(),
            customizers: Vec::new(),
            settings: Settings {
                heartbeat_interval: Duration::from_secs(1),
                heartbeat_timeout: Duration::from_secs(5),
                max_restarts: 5,
                restart_window: Duration::from_secs(60),
            },
            fail_fast: false,
            event_capacity: 1024,
        }
    }
}

/// Whether `name` is a valid pool name: 1 to 64 characters of `[A-Za-z0-9_.-]`.
///
/// ```
/// assert!(poolvisor_actors::is_valid_pool_name("db-main.v2"));
/// assert!(!poolvisor_actors::is_valid_pool_name("bad name!"));
/// ```
pub fn is_valid_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl SupervisorBuilder {
    /// The global budget: open connections over all pools never exceed it. Default: the
    /// sum of the pools' `max_size`.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Adds a pool of any `bb8::ManageConnection` (backend kind `custom`).
    pub fn pool<M: ManageConnection>(
        self,
        name: impl Into<String>,
        manager: M,
        config: PoolConfig,
    ) -> Self {
        self.pool_with_backend(name, "custom", manager, config)
    }

    /// Adds a pool and names its backend kind (`postgres`, `redis`, `http`, ...) for
    /// events and metrics.
    pub fn pool_with_backend<M: ManageConnection>(
        self,
        name: impl Into<String>,
        backend: &str,
        manager: M,
        config: PoolConfig,
    ) -> Self {
        self.try_pool_with_backend(name, backend, Ok::<M, String>(manager), config)
    }

    /// Adds a pool whose manager may have failed to build (e.g. from a bad URL); the
    /// error, which must not contain a password, is reported by `start()` with the pool's
    /// name. This is how backend constructors with a URL plug into the builder.
    pub fn try_pool_with_backend<M: ManageConnection, E: std::fmt::Display>(
        self,
        name: impl Into<String>,
        backend: &str,
        manager: Result<M, E>,
        config: PoolConfig,
    ) -> Self {
        self.push_pool(name.into(), backend, manager.map(Arc::new), config, None)
    }

    /// Adds a pool whose manager implements `GracefulClose` (see `try_graceful_pool`).
    pub fn graceful_pool<M: GracefulClose>(
        self,
        name: impl Into<String>,
        backend: &str,
        manager: M,
        config: PoolConfig,
    ) -> Self {
        self.try_graceful_pool(name, backend, Ok::<M, String>(manager), config)
    }

    /// Like `try_pool_with_backend`, for a manager that can tell when the server let go
    /// of a closed connection: its budget permit is held until then (bounded by
    /// `connect_timeout`), so that the servers' own counts stay within the budget.
    pub fn try_graceful_pool<M: GracefulClose, E: std::fmt::Display>(
        self,
        name: impl Into<String>,
        backend: &str,
        manager: Result<M, E>,
        config: PoolConfig,
    ) -> Self {
        let timeout = config.connect_timeout;
        let manager = manager.map(Arc::new);
        let closer = manager.as_ref().ok().map(|m| {
            let m = m.clone();
            let closer: Closer<M::Connection> = Arc::new(move |conn| {
                let m = m.clone();
                Box::pin(async move {
                    let _ = tokio::time::timeout(timeout, m.close(conn)).await;
                })
            });
            closer
        });
        self.push_pool(name.into(), backend, manager, config, closer)
    }

    fn push_pool<M: ManageConnection, E: std::fmt::Display>(
        mut self,
        name: String,
        backend: &str,
        manager: Result<Arc<M>, E>,
        config: PoolConfig,
        closer: Option<Closer<M::Connection>>,
    ) -> Self {
        let backend: Arc<str> = backend.into();
        let pool_name: Arc<str> = name.as_str().into();
        let cfg = config.clone();
        let make = manager
            .map_err(|e| e.to_string())
            .map(|manager| -> MakePool {
                Box::new(move |index, events, budget, customizer| {
                    let customizer = customizer.map(|c| {
                        *c.downcast::<Customizer<M>>()
                            .expect("`validate` checked the customizer's manager type")
                    });
                    PoolShared::new(
                        PoolSpec {
                            name: pool_name,
                            backend,
                            index,
                            manager,
                            config: cfg,
                            closer,
                            customizer,
                        },
                        events,
                        budget,
                    )
                })
            });
        let manager = (TypeId::of::<M>(), std::any::type_name::<M>());
        self.pools.push(PendingPool {
            name,
            config,
            make,
            manager,
        });
        self
    }

    /// Runs `customizer` (bb8's [`CustomizeConnection`]) on every connection the pool
    /// `pool` opens, before anyone gets it: a search path, a statement timeout, a client
    /// name. A connection whose setup fails, or does not finish within the pool's
    /// `connect_timeout` (counted with the connect), is closed and counted as a failed
    /// connect (so a setup that always fails takes the pool Down, with its error).
    ///
    /// `M` is the pool's manager type, which `start()` checks, with the pool's name.
    ///
    /// ```
    /// # use poolvisor_actors::{Supervisor, PoolConfig, CustomizeConnection, SetupFuture};
    /// # use poolvisor_actors::testing::{MockConnection, MockError, MockManager};
    /// #[derive(Debug)]
    /// struct Greet;
    /// impl CustomizeConnection<MockConnection, MockError> for Greet {
    ///     fn on_acquire<'a>(&'a self, conn: &'a mut MockConnection) -> SetupFuture<'a, MockError> {
    ///         Box::pin(async move { conn.ping() })
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sup = Supervisor::builder()
    ///     .pool("mock", MockManager::new(), PoolConfig::default())
    ///     .customize::<MockManager>("mock", Greet)
    ///     .start()
    ///     .await?;
    /// # sup.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn customize<M: ManageConnection>(
        mut self,
        pool: &str,
        customizer: impl CustomizeConnection<M::Connection, M::Error>,
    ) -> Self {
        let customizer: Customizer<M> = Arc::new(customizer);
        self.customizers.push(PendingCustomizer {
            pool: pool.to_owned(),
            manager: (TypeId::of::<M>(), std::any::type_name::<M>()),
            customizer: Box::new(customizer),
        });
        self
    }

    /// Heartbeat period, and how long a pool actor may leave one unanswered before it is
    /// killed and restarted (wedge detection). Defaults: 1 s and 5 s.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.settings.heartbeat_interval = interval;
        self.settings.heartbeat_timeout = timeout;
        self
    }

    /// More than `max_restarts` restarts of one pool within `window` mark it Failed.
    /// Defaults: 5 in 60 s.
    pub fn restart_limit(mut self, max_restarts: u32, window: Duration) -> Self {
        self.settings.max_restarts = max_restarts;
        self.settings.restart_window = window;
        self
    }

    /// Fail `start()` if any pool cannot connect at boot (default: start it Down).
    pub fn fail_fast(mut self, yes: bool) -> Self {
        self.fail_fast = yes;
        self
    }

    /// Events buffered per subscriber before a slow one is told it missed some.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    fn validate(&self) -> Result<usize, StartError> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.pools {
            if !is_valid_pool_name(&p.name) {
                return Err(StartError::InvalidName {
                    name: p.name.clone(),
                });
            }
            if !seen.insert(p.name.as_str()) {
                return Err(StartError::DuplicatePool {
                    name: p.name.clone(),
                });
            }
            if let Err(message) = &p.make {
                return Err(StartError::InvalidBackend {
                    pool: p.name.clone(),
                    message: crate::redact(message),
                });
            }
            p.config
                .validate()
                .map_err(|source| StartError::InvalidConfig {
                    pool: p.name.clone(),
                    source,
                })?;
        }
        let mut customized = std::collections::HashSet::new();
        for c in &self.customizers {
            let bad = |message: String| {
                Err(StartError::InvalidCustomizer {
                    pool: c.pool.clone(),
                    message,
                })
            };
            let Some(p) = self.pools.iter().find(|p| p.name == c.pool) else {
                return bad("no such pool".into());
            };
            if p.manager.0 != c.manager.0 {
                return bad(format!(
                    "the customizer is for a {} pool, this one is a {} pool",
                    c.manager.1, p.manager.1
                ));
            }
            if !customized.insert(c.pool.as_str()) {
                return bad("customized twice".into());
            }
        }
        let s = &self.settings;
        let bad = |field, message: &str| {
            Err(StartError::InvalidSupervisor {
                field,
                message: message.to_string(),
            })
        };
        if s.heartbeat_interval.is_zero() {
            return bad("heartbeat_interval", "must be greater than zero");
        }
        if s.heartbeat_timeout < s.heartbeat_interval {
            return bad("heartbeat_timeout", "must be at least heartbeat_interval");
        }
        if s.restart_window.is_zero() {
            return bad("restart_window", "must be greater than zero");
        }
        if self.event_capacity == 0 {
            return bad("event_capacity", "must be at least 1");
        }
        let max = match self.max_connections {
            Some(0) => return bad("max_connections", "must be at least 1"),
            Some(m) => m,
            None => self
                .pools
                .iter()
                .map(|p| p.config.max_size)
                .sum::<usize>()
                .max(1),
        };
        let reserved: usize = self.pools.iter().map(|p| p.config.reserve).sum();
        if reserved > max {
            return Err(StartError::ReservesExceedBudget {
                reserved,
                max_connections: max,
            });
        }
        let needed = self
            .pools
            .iter()
            .map(|p| p.config.min_idle.max(p.config.reserve))
            .sum();
        if needed > max {
            return Err(StartError::MinIdleExceedsBudget {
                needed,
                max_connections: max,
            });
        }
        Ok(max)
    }

    /// Validates everything, spawns the supervisor, metrics and pool actors, and returns
    /// once every pool has made its first connect attempts (each bounded by its
    /// `connect_timeout`). A pool that cannot connect starts Down unless `fail_fast`.
    pub async fn start(self) -> Result<Supervisor, StartError> {
        let max = self.validate()?;
        // The first read of the checkout clock calibrates it: here, not in a checkout.
        let _ = crate::clock::now();
        let events = EventBus::new(self.event_capacity);
        let budget = Budget::new(max, self.pools.iter().map(|p| p.config.reserve).collect());
        let mut by_name = HashMap::new();
        let mut pools = Vec::with_capacity(self.pools.len());
        let mut customizers: HashMap<String, Box<dyn Any + Send>> = self
            .customizers
            .into_iter()
            .map(|c| (c.pool, c.customizer))
            .collect();
        for (i, p) in self.pools.into_iter().enumerate() {
            let make = p.make.expect("checked by validate");
            let customizer = customizers.remove(&p.name);
            by_name.insert(p.name, i);
            pools.push(make(i, events.clone(), budget.clone(), customizer));
        }
        let metrics = Arc::new(Mutex::new(None));
        let args = SupArgs {
            pools: pools.clone(),
            settings: self.settings,
            budget: budget.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
        };
        let (actor, _) = Actor::spawn(None, SupervisorActor, args)
            .await
            .map_err(|e| StartError::Spawn {
                what: "supervisor".into(),
                message: crate::redact(&e.to_string()),
            })?;
        let sup = Supervisor {
            inner: Arc::new(Inner {
                actor,
                pools,
                by_name,
                events,
                budget,
                metrics,
                shut_down: AtomicBool::new(false),
            }),
        };
        if self.fail_fast {
            let down = sup
                .inner
                .pools
                .iter()
                .find(|p| p.status() == PoolStatus::Down);
            if let Some(pool) = down {
                let err = StartError::PoolDown {
                    pool: pool.name().to_string(),
                    cause: pool.snapshot().last_error.unwrap_or_default(),
                };
                let _ = sup.shutdown().await;
                return Err(err);
            }
        }
        Ok(sup)
    }
}

struct Inner {
    actor: ActorRef<SupMsg>,
    pools: Vec<Arc<dyn PoolControl>>,
    by_name: HashMap<String, usize>,
    events: EventBus,
    budget: Arc<Budget>,
    metrics: Arc<Mutex<Option<ActorRef<MetricsMsg>>>>,
    shut_down: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without shutdown(): stop the actors; connections close as their pools'
        // last handles and guards go.
        if !self.shut_down.load(Ordering::Acquire) {
            self.actor.stop_children(None);
            self.actor.stop(None);
        }
    }
}

/// What `shutdown` did, pool by pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShutdownReport {
    /// Each pool's drain.
    pub pools: Vec<(String, DrainReport)>,
    /// How long it took.
    #[serde(serialize_with = "crate::serde_duration::millis")]
    pub took: Duration,
}

/// The running supervisor: look up pools, subscribe to events, read metrics, operate
/// pools, shut down. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("pools", &self.pool_names())
            .field("max_connections", &self.inner.budget.max())
            .finish()
    }
}

impl Supervisor {
    /// Starts describing a supervisor.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::default()
    }

    fn control(&self, name: &str) -> Result<&Arc<dyn PoolControl>, ControlError> {
        self.inner
            .by_name
            .get(name)
            .map(|&i| &self.inner.pools[i])
            .ok_or_else(|| ControlError::UnknownPool { name: name.into() })
    }

    /// The handle of pool `name`, whose manager must be `M`.
    pub fn pool<M: ManageConnection>(&self, name: &str) -> Result<PoolHandle<M>, CheckoutError> {
        let control = self
            .inner
            .by_name
            .get(name)
            .map(|&i| self.inner.pools[i].clone())
            .ok_or_else(|| CheckoutError::UnknownPool { name: name.into() })?;
        let actual = control.manager_type();
        control
            .as_any()
            .downcast::<PoolShared<M>>()
            .map(PoolHandle::new)
            .map_err(|_| CheckoutError::WrongType {
                name: name.into(),
                expected: std::any::type_name::<M>(),
                actual,
            })
    }

    /// The pools' names, in the order they were added.
    pub fn pool_names(&self) -> Vec<&str> {
        self.inner.pools.iter().map(|p| &**p.name()).collect()
    }

    /// The state of pool `name`.
    pub fn status(&self, name: &str) -> Result<PoolStatus, ControlError> {
        Ok(self.control(name)?.status())
    }

    /// Every health event from now on, in order.
    pub fn subscribe(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// The global budget now.
    pub fn budget(&self) -> BudgetSnapshot {
        self.inner.budget.snapshot()
    }

    fn metrics_actor(&self) -> Result<ActorRef<MetricsMsg>, ControlError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(ControlError::ShutDown);
        }
        self.inner
            .metrics
            .lock()
            .clone()
            .ok_or(ControlError::ShutDown)
    }

    /// A snapshot of every pool and the budget, from the metrics actor.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, ControlError> {
        let actor = self.metrics_actor()?;
        match actor
            .call(MetricsMsg::Snapshot, Some(METRICS_TIMEOUT))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(s)) => Ok(s),
            Ok(_) => Err(ControlError::Unresponsive { what: "metrics" }),
            Err(_) => Err(ControlError::ShutDown),
        }
    }

    /// Changes pool `name`'s `max_size`. Idle connections above it close at once, lent
    /// ones when they come back.
    pub fn resize(&self, name: &str, max_size: usize) -> Result<(), ControlError> {
        self.control(name)?.resize(max_size)
    }

    /// Stops lending from pool `name`: checkouts fail with `Paused`, idle connections stay.
    pub fn pause(&self, name: &str) -> Result<(), ControlError> {
        self.control(name)?.pause()
    }

    /// Lends again after `pause` or `drain`.
    pub fn resume(&self, name: &str) -> Result<(), ControlError> {
        self.control(name)?.resume()
    }

    /// Stops lending from pool `name`, closes its idle connections, and waits up to
    /// `deadline` for lent ones to come back (they close on return). `resume` reopens it.
    pub async fn drain(&self, name: &str, deadline: Duration) -> Result<DrainReport, ControlError> {
        let control = self.control(name)?.clone();
        Ok(control.drain(Instant::now() + deadline, false).await)
    }

    /// `shutdown_within(DEFAULT_SHUTDOWN_DEADLINE)`.
    pub async fn shutdown(&self) -> Result<ShutdownReport, ControlError> {
        self.shutdown_within(DEFAULT_SHUTDOWN_DEADLINE).await
    }

    /// Stops new checkouts, drains every pool (waiting up to `deadline` for lent
    /// connections), closes every connection, and stops the actors. Connections still
    /// lent at the deadline close when they come back.
    pub async fn shutdown_within(
        &self,
        deadline: Duration,
    ) -> Result<ShutdownReport, ControlError> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Err(ControlError::ShutDown);
        }
        let started = Instant::now();
        let until = started + deadline;
        let actors = self
            .inner
            .actor
            .call(SupMsg::BeginShutdown, Some(deadline))
            .await
            .ok()
            .and_then(|r| match r {
                ractor::rpc::CallResult::Success(a) => Some(a),
                _ => None,
            })
            .unwrap_or_default();
        let mut drains = tokio::task::JoinSet::new();
        for (i, pool) in self.inner.pools.iter().enumerate() {
            let fut = pool.clone().drain(until, true);
            drains.spawn(async move { (i, fut.await) });
        }
        let mut reports = vec![DrainReport::default(); self.inner.pools.len()];
        while let Some(Ok((i, report))) = drains.join_next().await {
            reports[i] = report;
        }
        stop_all(actors, until).await;
        // Closes run in the background (graceful closers); wait for the last permits.
        while self.inner.budget.snapshot().in_use > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(metrics) = self.inner.metrics.lock().take() {
            metrics.stop(None);
        }
        self.inner.actor.stop(None);
        for pool in &self.inner.pools {
            pool.emit(EventKind::Stopped);
        }
        self.inner.events.close();
        Ok(ShutdownReport {
            pools: self
                .inner
                .pools
                .iter()
                .map(|p| p.name().to_string())
                .zip(reports)
                .collect(),
            took: started.elapsed(),
        })
    }

    /// The live actor of pool `name` (test kit).
    pub(crate) fn pool_actor(&self, name: &str) -> Option<ActorRef<PoolMsg>> {
        let i = *self.inner.by_name.get(name)?;
        let control = self.inner.pools[i].clone();
        control.actor()
    }
}

async fn stop_all(actors: Vec<ActorRef<PoolMsg>>, until: Instant) {
    let mut stops = tokio::task::JoinSet::new();
    for actor in actors {
        stops.spawn(async move {
            let left = until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            if actor.stop_and_wait(None, Some(left)).await.is_err() {
                actor.kill();
            }
        });
    }
    while stops.join_next().await.is_some() {}
}
