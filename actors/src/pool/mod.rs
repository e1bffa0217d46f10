//! One pool: its shared state (the hot path), its actor (the slow path), the handle and
//! guard callers use, and the view the supervisor has of it.

pub(crate) mod actor;
pub(crate) mod admin;
pub(crate) mod conn;
pub(crate) mod control;
pub(crate) mod handle;
pub(crate) mod opening;
pub(crate) mod pooled;
pub(crate) mod recorder;
pub(crate) mod shared;
pub(crate) mod sharing;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod wait;
pub(crate) mod waiters;
