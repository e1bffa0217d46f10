//! poolvisor: supervised connection pools as actors.
//!
//! The engine (`poolvisor-actors`) is re-exported here: [`Supervisor`], [`PoolHandle`],
//! [`Pooled`], [`PoolConfig`], health events, metrics snapshots and the [`testing`] kit.
//! [`backends`] adds PostgreSQL, Redis and HTTP(S) pools. See `README.md` and
//! `ARCHITECTURE.md`.

#![warn(missing_docs)]

pub mod admin;
pub mod backends;
pub mod cli;
pub mod config;
pub mod testing;

/// The driver crates, re-exported so that callers use the versions poolvisor was built
/// with; bb8-postgres's and bb8-redis's managers plug into `SupervisorBuilder::pool`
/// unchanged.
pub mod drivers {
    pub use ::{bb8_postgres, bb8_redis, hyper, redis, tokio_postgres};
}

pub use poolvisor_actors::*;

/// Everything a service usually needs, in one import.
pub mod prelude {
    pub use crate::backends::{
        BuilderBackends, Http, HttpPoolExt, Postgres, Redis, SupervisorBackends,
    };
    pub use poolvisor_actors::{
        CheckoutError, CustomizeConnection, EventKind, HealthEvent, PoolConfig, PoolHandle, Pooled,
        SetupFuture, SharePolicy, Shared, Supervisor, Validation,
    };
}
