//! The admin HTTP endpoint (hyper, HTTP/1.1, loopback by default).
//!
//! | route | what |
//! |---|---|
//! | `GET /health[?pool=NAME]` | 200 when every pool (or that one) is Up, else 503 naming the others |
//! | `GET /pools` | a JSON snapshot of every pool |
//! | `GET /metrics` | Prometheus text (0.0.4), or OpenMetrics if `Accept` asks for it |
//! | `GET /events` | health events as Server-Sent Events |
//! | `POST /pools/{name}/pause`, `/resume` | stop or restart lending |
//! | `POST /pools/{name}/drain` | `{"deadline": "5s"}` (optional): close idle, wait for lent |
//! | `POST /pools/{name}/resize` | `{"max_size": N}` |
//!
//! An optional bearer token (compared in constant time) guards every route but `/health`.

mod control;
mod events;
mod exposition;
mod response;
mod server;

pub use control::{DEFAULT_DRAIN_DEADLINE, MAX_BODY, MAX_DRAIN_DEADLINE};
pub use events::KEEPALIVE;
pub use exposition::{
    openmetrics_text, prometheus_text, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE,
};
pub use server::{AdminServer, CLOSE_GRACE, HEADER_READ_TIMEOUT};
