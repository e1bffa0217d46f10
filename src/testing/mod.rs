//! Test kit: the engine's [`MockManager`] and fault injection into a running supervisor,
//! plus a [`FaultProxy`] to put between a pool and a real server.

pub use poolvisor_actors::testing::*;

mod fault_proxy;

pub use fault_proxy::{FaultProxy, ProxyMode};
