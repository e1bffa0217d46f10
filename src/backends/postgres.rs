//! PostgreSQL pools: bb8-postgres's manager (tokio-postgres, no TLS), with errors that name
//! the server.

use std::str::FromStr;
use std::sync::Arc;

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use super::error::BackendError;

/// A PostgreSQL connection manager. Connections are `tokio_postgres::Client`s; validation
/// (when the pool's policy asks for it) is `simple_query("")`; a closed client is broken.
///
/// ```
/// use poolvisor::backends::Postgres;
/// let pg = Postgres::from_url("postgres://app:secret@127.0.0.1:5432/db?application_name=svc").unwrap();
/// assert_eq!(pg.target(), "127.0.0.1:5432/db");
/// assert!(Postgres::from_url("postgres://h:notaport/db").is_err());
/// ```
#[derive(Clone)]
pub struct Postgres {
    inner: PostgresConnectionManager<NoTls>,
    target: Arc<str>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("target", &self.target)
            .finish()
    }
}

impl Postgres {
    /// From a libpq-style URL (`postgres://user:password@host:port/db?application_name=x`).
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
        Ok(Self::from_config(config))
    }

    /// From a tokio-postgres `Config`.
    pub fn from_config(config: Config) -> Self {
        let target = describe(&config).into();
        Postgres {
            inner: PostgresConnectionManager::new(config, NoTls),
            target,
        }
    }

    /// `host:port/db`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }
}

fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{host}:{port}/{db}")
}

impl ManageConnection for Postgres {
    type Connection = Client;
    type Error = BackendError;

    async fn connect(&self) -> Result<Client, BackendError> {
        self.inner
            .connect()
            .await
            .map_err(|e| BackendError::server(&self.target, e))
    }

    async fn is_valid(&self, conn: &mut Client) -> Result<(), BackendError> {
        self.inner
            .is_valid(conn)
            .await
            .map_err(|e| BackendError::server(&self.target, e))
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        conn.is_closed()
    }
}
