//! poolvisor: supervised connection pools as actors.
//!
//! This crate re-exports the engine (`poolvisor-actors`): [`Supervisor`], [`PoolHandle`],
//! [`Pooled`], [`PoolConfig`], health events, metrics snapshots and the [`testing`] kit.
//! Backends for PostgreSQL, Redis and HTTP, the config file, the admin endpoint and the
//! CLI will live here too. See `README.md` and `ARCHITECTURE.md`.

#![warn(missing_docs)]

pub use poolvisor_actors::*;
