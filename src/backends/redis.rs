//! Redis pools: bb8-redis's manager (a `MultiplexedConnection` per pooled connection),
//! wrapped so that a connection whose socket died is known to be broken when it returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8::ManageConnection;
use bb8_redis::RedisConnectionManager;
use poolvisor_actors::GracefulClose;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, Value};

use super::error::BackendError;

/// A Redis connection manager. Validation (when the pool's policy asks for it) is `PING`.
///
/// ```
/// use poolvisor::backends::Redis;
/// let r = Redis::from_url("redis://:secret@127.0.0.1:6379/0").unwrap();
/// assert_eq!(r.target(), "127.0.0.1:6379");
/// assert!(Redis::from_url("http://127.0.0.1").is_err());
/// ```
#[derive(Clone)]
pub struct Redis {
    inner: Arc<RedisConnectionManager>,
    target: Arc<str>,
    client_name: Option<String>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.target)
            .finish()
    }
}

impl Redis {
    /// From a redis URL (`redis://[:password@]host:port[/db]`, `rediss://`, `unix://`).
    pub fn from_url(url: &str) -> Result<Self, BackendError> {
        let client =
            redis::Client::open(url).map_err(|e| BackendError::invalid_url("redis", url, e))?;
        let info = client.get_connection_info().clone();
        let target = match info.addr() {
            ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port} (tls)"),
            other => format!("{other}"),
        };
        let inner = RedisConnectionManager::new(info)
            .map_err(|e| BackendError::invalid_url("redis", url, e))?;
        Ok(Redis {
            inner: Arc::new(inner),
            target: target.into(),
            client_name: None,
        })
    }

    /// Names every connection (`CLIENT SETNAME`), so that it can be found in `CLIENT LIST`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// `host:port`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// A pooled Redis connection. Use it wherever redis-rs takes an async connection
/// (`cmd.query_async(&mut *conn)`); a command that fails because the connection dropped
/// marks it broken, and the pool closes it instead of lending it again.
///
/// Through `checkout_shared`, where callers get `&RedisConnection`, run commands on
/// [`handle()`](Self::handle): `cmd.query_async(&mut conn.handle())`.
pub struct RedisConnection {
    handle: RedisHandle,
}

impl RedisConnection {
    /// The multiplexed connection underneath (errors through it are not tracked).
    pub fn multiplexed(&mut self) -> &mut MultiplexedConnection {
        &mut self.handle.conn
    }

    /// Whether a command saw the connection drop.
    pub fn is_broken(&self) -> bool {
        self.handle.broken.load(Ordering::Relaxed)
    }

    /// A handle that sends commands on this connection from a shared reference, for
    /// callers of `checkout_shared`. Cheap: it clones the multiplexed connection's
    /// sender. A dropped connection seen through it marks this connection broken.
    pub fn handle(&self) -> RedisHandle {
        self.handle.clone()
    }
}

/// Commands on a pooled Redis connection, from [`RedisConnection::handle`]. Use it only
/// while the connection is checked out.
#[derive(Clone)]
pub struct RedisHandle {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl RedisHandle {
    fn track<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(e) = &result {
            if e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() {
                self.broken.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

// `send_packed_command(s)` rather than `req_packed_command(s)`: the latter box their
// future, and ours is boxed already.
impl ConnectionLike for RedisHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.send_packed_command(cmd).await;
            self.track(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self
                .conn
                .send_packed_commands(pipeline, offset, count)
                .await;
            self.track(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.handle.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.handle.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.handle.get_db()
    }
}

impl ManageConnection for Redis {
    type Connection = RedisConnection;
    type Error = BackendError;

    async fn connect(&self) -> Result<RedisConnection, BackendError> {
        let err = |e| BackendError::server(&self.target, e);
        let conn = self.inner.connect().await.map_err(err)?;
        let mut conn = RedisConnection {
            handle: RedisHandle {
                conn,
                broken: Arc::new(AtomicBool::new(false)),
            },
        };
        if let Some(name) = &self.client_name {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query_async::<()>(&mut conn)
                .await
                .map_err(err)?;
        }
        Ok(conn)
    }

    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<(), BackendError> {
        let pong: String = redis::cmd("PING")
            .query_async(conn)
            .await
            .map_err(|e| BackendError::server(&self.target, e))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(BackendError::server(
                &self.target,
                format!("PING answered {pong:?}"),
            ))
        }
    }

    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.is_broken()
    }
}

impl GracefulClose for Redis {
    /// `QUIT`, then waits until the connection sees the server close it (a `PING` fails):
    /// the server unlinks a client before it closes its socket, so by then `CLIENT LIST`
    /// no longer has it. Bounded here and by the pool's `connect_timeout`.
    async fn close(&self, mut conn: RedisConnection) {
        if conn.is_broken() {
            return; // the server already dropped it
        }
        let conn = conn.multiplexed();
        let _ = redis::cmd("QUIT").query_async::<()>(conn).await;
        for _ in 0..100 {
            if redis::cmd("PING")
                .query_async::<String>(conn)
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
