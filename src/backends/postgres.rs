//! PostgreSQL pools over tokio-postgres (TLS through rustls for `sslmode=require`),
//! validated with `simple_query("")` like bb8-postgres's manager, plus a graceful close: a
//! closed connection keeps its budget share until the server's backend is gone.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;

use bb8::{CustomizeConnection, ManageConnection};
use poolvisor_actors::{GracefulClose, SetupFuture};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::TlsConnect;
use tokio_postgres::{Client, Config, NoTls};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::TlsConnector;

use super::eof_stream::EofOnShutdown;
use super::error::BackendError;
use super::pg_tls::RustlsConnect;
use super::tls;

/// A PostgreSQL connection manager. It connects like bb8-postgres's
/// `PostgresConnectionManager<NoTls>` (which also plugs into any pool unchanged), but owns
/// the socket so that closing a connection can wait for the server to let go of it.
/// Validation (when the pool's policy asks) is `simple_query("")`; a closed client is
/// broken.
///
/// ```
/// use poolvisor::backends::Postgres;
/// let pg = Postgres::from_url("postgres://app:secret@127.0.0.1:5432/db?application_name=svc").unwrap();
/// assert_eq!(pg.target(), "127.0.0.1:5432/db");
/// assert!(Postgres::from_url("postgres://h:notaport/db").is_err());
/// let tls = Postgres::from_url("postgres://app@db.internal/app?sslmode=require").unwrap();
/// assert_eq!(tls.target(), "db.internal:5432/app (tls)");
/// ```
#[derive(Clone)]
pub struct Postgres {
    config: Arc<Config>,
    target: Arc<str>,
    /// For `sslmode=require`.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("target", &self.target)
            .finish()
    }
}

/// A pooled PostgreSQL connection: derefs to `tokio_postgres::Client`.
pub struct PgConnection {
    client: Client,
    driver: JoinHandle<()>,
}

impl Deref for PgConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Postgres {
    /// From a libpq-style URL (`postgres://user:password@host:port/db?application_name=x`).
    /// `sslmode=require` connects over TLS (rustls), verifying the server's certificate
    /// against the system's roots unless `root_certificates` says otherwise, and its
    /// name against the URL's host; `prefer`, the default, connects without TLS.
    pub fn from_url(url: &str) -> Result<Self, BackendError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(BackendError::invalid_url(
                "postgres",
                url,
                "expected postgres:// or postgresql://",
            ));
        }
        let config =
            Config::from_str(url).map_err(|e| BackendError::invalid_url("postgres", url, e))?;
        if config.get_hosts().is_empty() {
            return Err(BackendError::invalid_url("postgres", url, "no host"));
        }
        Self::from_config(config)
    }

    /// From a tokio-postgres `Config` (its first host is used). Fails only if TLS, for
    /// `sslmode=require`, cannot be set up.
    pub fn from_config(config: Config) -> Result<Self, BackendError> {
        let mut target = describe(&config);
        let tls = if config.get_ssl_mode() == SslMode::Require {
            target.push_str(" (tls)");
            Some(tls::connector(None, Vec::new(), &target.as_str().into())?)
        } else {
            None
        };
        Ok(Postgres {
            config: Arc::new(config),
            target: target.into(),
            tls,
        })
    }

    /// For `sslmode=require`: trusts exactly these roots instead of the system's.
    pub fn root_certificates(mut self, roots: RootCertStore) -> Result<Self, BackendError> {
        tls::trust_only(&mut self.tls, roots, &self.target, "sslmode=require")?;
        Ok(self)
    }

    /// `host:port/db`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn start<S, T>(&self, stream: S, tls: T) -> Result<PgConnection, BackendError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        T: TlsConnect<EofOnShutdown<S>>,
        T::Stream: Send + 'static,
    {
        let (client, connection) = self
            .config
            .connect_raw(EofOnShutdown::new(stream), tls)
            .await
            .map_err(|e| BackendError::server_with_causes(&self.target, &e))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(PgConnection { client, driver })
    }
}

fn port(config: &Config) -> u16 {
    config.get_ports().first().copied().unwrap_or(5432)
}

fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{host}:{}/{db}", port(config))
}

impl ManageConnection for Postgres {
    type Connection = PgConnection;
    type Error = BackendError;

    async fn connect(&self) -> Result<PgConnection, BackendError> {
        let err = |e: std::io::Error| BackendError::server(&self.target, e);
        match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => {
                let tcp = TcpStream::connect((host.as_str(), port(&self.config)))
                    .await
                    .map_err(err)?;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    Some(connector) => {
                        let name = ServerName::try_from(host.clone())
                            .map_err(|e| BackendError::server(&self.target, e))?;
                        let tls = RustlsConnect {
                            connector: connector.clone(),
                            name,
                        };
                        self.start(tcp, tls).await
                    }
                    None => self.start(tcp, NoTls).await,
                }
            }
            #[cfg(unix)]
            Some(Host::Unix(dir)) => {
                let path = dir.join(format!(".s.PGSQL.{}", port(&self.config)));
                let unix = tokio::net::UnixStream::connect(path).await.map_err(err)?;
                self.start(unix, NoTls).await
            }
            _ => Err(BackendError::server(&self.target, "no usable host")),
        }
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), BackendError> {
        conn.client
            .simple_query("")
            .await
            .map(drop)
            .map_err(|e| BackendError::server_with_causes(&self.target, &e))
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.client.is_closed()
    }
}

impl GracefulClose for Postgres {
    /// Drops the client (tokio-postgres sends `Terminate` and shuts the socket down) and
    /// waits for the driver, which ends once the server closed its side: by then the
    /// backend has left `pg_stat_activity`.
    async fn close(&self, conn: PgConnection) {
        let PgConnection { client, driver } = conn;
        drop(client);
        let _ = driver.await;
    }
}

/// Statements run on every new connection before a caller gets it, in order (HikariCP's
/// `connectionInitSql`; `init_sql` in a config file): a connection customizer for
/// `SupervisorBuilder::customize`.
///
/// ```no_run
/// # use poolvisor::prelude::*;
/// # use poolvisor::backends::InitSql;
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let sup = Supervisor::builder()
///     .postgres("db", "postgres://app@127.0.0.1/app", PoolConfig::default())
///     .customize::<Postgres>("db", InitSql::new(["SET search_path TO app", "SET statement_timeout = '5s'"]))
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSql(Arc<[String]>);

impl InitSql {
    /// The statements, each run with `batch_execute`.
    pub fn new(statements: impl IntoIterator<Item = impl Into<String>>) -> Self {
        InitSql(statements.into_iter().map(Into::into).collect())
    }
}

impl CustomizeConnection<PgConnection, BackendError> for InitSql {
    fn on_acquire<'a>(&'a self, conn: &'a mut PgConnection) -> SetupFuture<'a, BackendError> {
        Box::pin(async move {
            for statement in self.0.iter() {
                conn.batch_execute(statement).await?;
            }
            Ok(())
        })
    }
}
