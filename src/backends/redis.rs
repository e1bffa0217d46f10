//! Redis pools: a `MultiplexedConnection` per pooled connection, made as bb8-redis's
//! manager makes it (which also plugs into any pool unchanged) but over a socket we own,
//! so that a connection the server closed is known to be broken before anyone gets it,
//! and so that `rediss://` can speak TLS through rustls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8::ManageConnection;
use poolvisor_actors::GracefulClose;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, Value,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::TlsConnector;

use super::close_watch::CloseWatch;
use super::error::BackendError;
use super::tls;

/// redis-rs's default reply timeout (`AsyncConnectionConfig`'s).
const DEFAULT_RESPONSE_TIMEOUT: Option<Duration> = Some(Duration::from_millis(500));

/// A Redis connection manager. Validation (when the pool's policy asks for it) is `PING`.
/// A connection is broken once its socket saw the server close it (or an I/O error), or
/// a command through it failed because the connection dropped or timed out, so a
/// connection the server closed while idle is replaced before a caller gets it.
///
/// ```
/// use poolvisor::backends::Redis;
/// let r = Redis::from_url("redis://:secret@127.0.0.1:6379/0").unwrap();
/// assert_eq!(r.target(), "127.0.0.1:6379");
/// assert!(Redis::from_url("http://127.0.0.1").is_err());
/// let tls = Redis::from_url("rediss://cache.internal:6380").unwrap();
/// assert_eq!(tls.target(), "cache.internal:6380 (tls)");
/// ```
#[derive(Clone)]
pub struct Redis {
    info: Arc<ConnectionInfo>,
    target: Arc<str>,
    client_name: Option<String>,
    response_timeout: Option<Duration>,
    /// For `rediss://`.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.target)
            .finish()
    }
}

impl Redis {
    /// From a redis URL: `redis://[[user]:password@]host[:port][/db]`, `rediss://` (TLS,
    /// verified against the system's roots unless `root_certificates` says otherwise;
    /// `#insecure` is refused) or `unix:///path/to/socket`.
    pub fn from_url(url: &str) -> Result<Self, BackendError> {
        let bad = |e: &dyn std::fmt::Display| BackendError::invalid_url("redis", url, e);
        // redis-rs parses `rediss://` only when built with its own TLS; ours is rustls,
        // so the URL is parsed as `redis://` and the handshake is done here.
        let (plain, tls) = match url.strip_prefix("rediss://") {
            Some(_) if url.contains('#') => {
                return Err(bad(
                    &"rediss:// with a fragment (#insecure) is not supported",
                ))
            }
            Some(rest) => (format!("redis://{rest}"), true),
            None => (url.to_string(), false),
        };
        let info = plain.into_connection_info().map_err(|e| bad(&e))?;
        let mut target = info.addr().to_string();
        let tls = if tls {
            target.push_str(" (tls)");
            let target: Arc<str> = target.as_str().into();
            Some(tls::connector(None, Vec::new(), &target)?)
        } else {
            None
        };
        Ok(Redis {
            target: target.into(),
            info: Arc::new(info),
            client_name: None,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            tls,
        })
    }

    /// For `rediss://`: trusts exactly these roots instead of the system's.
    pub fn root_certificates(mut self, roots: RootCertStore) -> Result<Self, BackendError> {
        tls::trust_only(&mut self.tls, roots, &self.target, "a rediss:// URL")?;
        Ok(self)
    }

    /// How long a command may wait for its reply (redis-rs's default, 500 ms, unless set).
    /// A command that times out fails and marks its connection broken, so a blocking
    /// command (`BLPOP key 5`, `XREAD BLOCK`) needs a longer one; `None` waits as long as
    /// the server takes, bounded only by the caller.
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
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
    driver: AbortHandle,
}

impl Drop for RedisConnection {
    /// Ends the driver task, and with it the socket, even with a blocking command in flight.
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl RedisConnection {
    /// The multiplexed connection underneath. A command through it that times out does not
    /// mark this connection broken; the connection closing does, however it is used.
    pub fn multiplexed(&mut self) -> &mut MultiplexedConnection {
        &mut self.handle.conn
    }

    /// Whether the connection is gone (its socket saw the server close it or an I/O
    /// error), or a command saw it drop or time out.
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
        let err = |e: std::io::Error| BackendError::server(&self.target, e);
        let mut conn = match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(err)?;
                // As redis-rs sets it from the connection info (off unless asked for).
                let _ = tcp.set_nodelay(self.info.tcp_settings().nodelay());
                match &self.tls {
                    Some(connector) => {
                        let name = ServerName::try_from(host.clone())
                            .map_err(|e| BackendError::server(&self.target, e))?;
                        let tls = connector.connect(name, tcp).await.map_err(err)?;
                        self.start(tls).await?
                    }
                    None => self.start(tcp).await?,
                }
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => {
                let unix = tokio::net::UnixStream::connect(path).await.map_err(err)?;
                self.start(unix).await?
            }
            _ => return Err(BackendError::server(&self.target, "no usable address")),
        };
        if let Some(name) = &self.client_name {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| BackendError::server(&self.target, e))?;
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

impl Redis {
    /// The handshake (`AUTH`, `SELECT`, as redis-rs does it) over `stream`, watched for
    /// the server closing it, and the driver task.
    async fn start<S>(&self, stream: S) -> Result<RedisConnection, BackendError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let broken = Arc::new(AtomicBool::new(false));
        let stream = CloseWatch::new(stream, broken.clone());
        let (conn, driver) = MultiplexedConnection::new_with_config(
            self.info.redis_settings(),
            stream,
            AsyncConnectionConfig::new().set_response_timeout(self.response_timeout),
        )
        .await
        .map_err(|e| BackendError::server(&self.target, e))?;
        let driver = tokio::spawn(driver).abort_handle();
        Ok(RedisConnection {
            handle: RedisHandle { conn, broken },
            driver,
        })
    }
}

impl GracefulClose for Redis {
    /// `QUIT`, then waits until the socket sees the server close it: the server unlinks a
    /// client before it closes its socket, so by then `CLIENT LIST` no longer has it.
    /// Bounded here and by the pool's `connect_timeout`.
    async fn close(&self, mut conn: RedisConnection) {
        if conn.is_broken() {
            return; // the server already dropped it
        }
        let _ = redis::cmd("QUIT")
            .query_async::<()>(conn.multiplexed())
            .await;
        for _ in 0..100 {
            if conn.is_broken() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
