//! The actor engine of poolvisor: supervised connection pools over any
//! `bb8::ManageConnection`, a global connection budget, health events and metrics.
//!
//! This crate knows nothing of PostgreSQL, Redis or HTTP; the `poolvisor` crate adds
//! those backends and re-exports everything here. See `ARCHITECTURE.md` for the map.
//!
//! ```
//! use poolvisor_actors::{PoolConfig, Supervisor, testing::MockManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sup = Supervisor::builder()
//!     .max_connections(40)
//!     .pool("db", MockManager::new(), PoolConfig::default().max_size(20).min_idle(2))
//!     .start()
//!     .await?;
//! let db = sup.pool::<MockManager>("db")?;
//! let conn = db.checkout().await?;
//! conn.ping()?;
//! drop(conn);
//! let mut events = sup.subscribe();
//! let snap = sup.metrics().await?;
//! assert_eq!(snap.pool("db").unwrap().checkouts.ok, 1);
//! sup.shutdown().await?;
//! # let _ = events.try_recv();
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod budget;
mod clock;
mod config;
mod error;
mod event;
mod graceful;
mod histogram;
mod metrics;
mod pool;
mod redact;
pub mod serde_duration;
mod supervisor;
pub mod testing;
mod ticker;

pub use budget::BudgetSnapshot;
pub use config::{ConfigError, PoolConfig, SharePolicy, Validation};
pub use error::{CheckoutError, ControlError, StartError};
pub use event::{EventError, EventKind, EventStream, HealthEvent};
pub use graceful::GracefulClose;
pub use histogram::LatencySummary;
pub use metrics::{EventCount, MetricsSnapshot};
pub use pool::admin::DrainReport;
pub use pool::handle::PoolHandle;
pub use pool::pooled::Pooled;
pub use pool::sharing::{Shared, SLOT_MAX_TERM, SLOT_TERM};
pub use pool::stats::{CheckoutCounts, CloseReason, PoolSnapshot, LATENCY_BUCKETS};
pub use pool::status::PoolStatus;
pub use redact::redact;
pub use supervisor::{
    is_valid_pool_name, ShutdownReport, Supervisor, SupervisorBuilder, DEFAULT_SHUTDOWN_DEADLINE,
};

/// The bb8 trait every pool's manager implements, re-exported for convenience.
pub use bb8::{CustomizeConnection, ManageConnection};

/// What [`CustomizeConnection::on_acquire`] returns, spelled once: a connection's setup,
/// borrowing it for `'a`, failing with `E`.
pub type SetupFuture<'a, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), E>> + Send + 'a>>;
