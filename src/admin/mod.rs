//! The admin HTTP endpoint: `/health`, `/pools`, `/metrics` (Prometheus), behind an
//! optional bearer token. Server-Sent Events and the control routes are to come.

mod exposition;
mod server;

pub use exposition::prometheus_text;
pub use server::AdminServer;
