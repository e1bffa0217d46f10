//! One line per pool: `.postgres(name, url, cfg)` on the builder, `sup.postgres(name)` on
//! the supervisor.

use poolvisor_actors::{
    CheckoutError, PoolConfig, PoolHandle, SharePolicy, Supervisor, SupervisorBuilder,
};

use super::{Http, Postgres, Redis};

/// Adds backend pools to a [`SupervisorBuilder`]. A bad URL is reported by `start()` as
/// `StartError::InvalidBackend`, naming the pool, without the password.
///
/// ```no_run
/// use poolvisor::prelude::*;
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let sup = Supervisor::builder()
///     .max_connections(40)
///     .postgres("db", "postgres://root@127.0.0.1:5432/test", PoolConfig::default())
///     .redis("cache", "redis://127.0.0.1:6379", PoolConfig::default())
///     .http("loki", "http://127.0.0.1:3100", PoolConfig::default())
///     .start()
///     .await?;
/// let db = sup.postgres("db")?;
/// db.checkout().await?.simple_query("SELECT 1").await?;
/// # Ok(()) }
/// ```
pub trait BuilderBackends: Sized {
    /// A PostgreSQL pool (backend kind `postgres`).
    fn postgres(self, name: &str, url: &str, config: PoolConfig) -> Self;
    /// A Redis pool (backend kind `redis`). Shared checkouts pack unless `config` sets
    /// `share_policy`: Redis runs commands one at a time, so more connections add no
    /// parallelism, while a deeper pipeline on fewer connections saves writes.
    fn redis(self, name: &str, url: &str, config: PoolConfig) -> Self;
    /// An HTTP(S) pool for the upstream of `base_url` (backend kind `http`). Shared
    /// checkouts (HTTP/2 only) pack unless `config` sets `share_policy`.
    fn http(self, name: &str, base_url: &str, config: PoolConfig) -> Self;
}

impl BuilderBackends for SupervisorBuilder {
    fn postgres(self, name: &str, url: &str, config: PoolConfig) -> Self {
        self.try_graceful_pool(name, "postgres", Postgres::from_url(url), config)
    }

    fn redis(self, name: &str, url: &str, config: PoolConfig) -> Self {
        self.try_graceful_pool(name, "redis", Redis::from_url(url), packing(config))
    }

    fn http(self, name: &str, base_url: &str, config: PoolConfig) -> Self {
        self.try_graceful_pool(name, "http", Http::new(base_url), packing(config))
    }
}

/// `config`, with shared checkouts packing unless it chose otherwise.
pub(crate) fn packing(mut config: PoolConfig) -> PoolConfig {
    config.share_policy.get_or_insert(SharePolicy::Pack);
    config
}

/// Typed handles of backend pools.
pub trait SupervisorBackends {
    /// The handle of PostgreSQL pool `name`.
    fn postgres(&self, name: &str) -> Result<PoolHandle<Postgres>, CheckoutError>;
    /// The handle of Redis pool `name`.
    fn redis(&self, name: &str) -> Result<PoolHandle<Redis>, CheckoutError>;
    /// The handle of HTTP pool `name`.
    fn http(&self, name: &str) -> Result<PoolHandle<Http>, CheckoutError>;
}

impl SupervisorBackends for Supervisor {
    fn postgres(&self, name: &str) -> Result<PoolHandle<Postgres>, CheckoutError> {
        self.pool(name)
    }

    fn redis(&self, name: &str) -> Result<PoolHandle<Redis>, CheckoutError> {
        self.pool(name)
    }

    fn http(&self, name: &str) -> Result<PoolHandle<Http>, CheckoutError> {
        self.pool(name)
    }
}
