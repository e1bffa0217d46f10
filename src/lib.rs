//! poolvisor: supervised connection pools as actors.
//!
//! The engine (`poolvisor-actors`) is re-exported here: [`Supervisor`], [`PoolHandle`],
//! [`Pooled`], [`PoolConfig`], health events, metrics snapshots and the [`testing`] kit.
//! [`backends`] adds PostgreSQL, Redis and HTTP(S) pools. See `README.md` and
//! `ARCHITECTURE.md`.

#![warn(missing_docs)]

pub mod backends;

pub use poolvisor_actors::*;

/// Everything a service usually needs, in one import.
pub mod prelude {
    pub use crate::backends::{
        BuilderBackends, Http, HttpPoolExt, Postgres, Redis, SupervisorBackends,
    };
    pub use poolvisor_actors::{
        CheckoutError, EventKind, HealthEvent, PoolConfig, PoolHandle, Pooled, Supervisor,
        Validation,
    };
}
