//! Backends: PostgreSQL and Redis made as their bb8 managers make them (over sockets of
//! our own), HTTP over our own hyper manager, the TLS they share, and the builder /
//! supervisor conveniences that name them in one line.

mod close_watch;
mod eof_stream;
mod error;
mod http;
mod pg_tls;
mod postgres;
mod redis;
mod shortcuts;
mod tls;

pub use self::error::BackendError;
pub use self::http::{Http, HttpConnection, HttpError, HttpPoolExt, HttpVersion};
pub use self::postgres::{InitSql, PgConnection, Postgres};
pub use self::redis::{Redis, RedisConnection, RedisHandle};
pub(crate) use self::shortcuts::packing;
pub use self::shortcuts::{BuilderBackends, SupervisorBackends};
