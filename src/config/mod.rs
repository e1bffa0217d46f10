//! The configuration file: TOML, every key overridable from the environment
//! (`POOLVISOR_POOLS__DB__MAX_SIZE=30`), validated with errors that name the key path and
//! the bad value — never a password.
//!
//! ```toml
//! [supervisor]
//! max_connections = 40
//! heartbeat_interval = "1s"
//!
//! [admin]
//! listen = "127.0.0.1:9464"
//!
//! [pools.db]
//! kind = "postgres"
//! url = "postgres://app@127.0.0.1:5432/app"
//! max_size = 20
//! checkout_timeout = "2s"
//!
//! [pools.cache]
//! kind = "redis"
//! url = "redis://127.0.0.1:6379"
//! validation = { if_idle_for = "500ms" }
//! response_timeout = "10s"   # Redis only: how long a command waits for its reply
//!
//! [pools.secure]
//! kind = "postgres"
//! url = "postgres://app@db.internal/app?sslmode=require"
//! ca_file = "/etc/ssl/db-ca.pem"   # TLS pools: trust these roots, not the system's
//! init_sql = ["SET search_path TO app"]   # PostgreSQL only: run on every new connection
//!
//! [pools.loki]
//! kind = "http"
//! url = "http://127.0.0.1:3100"
//! health_path = "/ready"   # HTTP only: GET on every new connection and validation
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use poolvisor_actors::{
    is_valid_pool_name, redact, PoolConfig, StartError, Supervisor, SupervisorBuilder,
};
use serde::Deserialize;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::RootCertStore;

use crate::backends::{packing, BackendError, Http, InitSql, Postgres, Redis};

/// A configuration that does not hold: which key, and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key path, e.g. `pools.db.max_size` (or the file, for a file that cannot be read).
    pub key: String,
    /// What is wrong, with the bad value (passwords removed).
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigError {
            key: key.into(),
            message: redact(&message.to_string()),
        }
    }

    fn from_figment(prefix: &str, e: figment::Error) -> Self {
        let mut path: Vec<String> = prefix
            .split('.')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        path.extend(e.path.iter().cloned());
        let key = if path.is_empty() {
            "(document)".to_string()
        } else {
            path.join(".")
        };
        ConfigError::new(key, e.kind)
    }
}

/// Which backend a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// PostgreSQL (`url = "postgres://..."`).
    Postgres,
    /// Redis (`url = "redis://..."`).
    Redis,
    /// An HTTP(S) upstream (`url = "http://..."` or `"https://..."`).
    Http,
}

impl BackendKind {
    /// `"postgres"`, `"redis"` or `"http"`, as in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Postgres => "postgres",
            BackendKind::Redis => "redis",
            BackendKind::Http => "http",
        }
    }
}

/// `[supervisor]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSettings {
    /// The global budget (default: the sum of the pools' `max_size`).
    pub max_connections: Option<usize>,
    /// Heartbeat period.
    #[serde(with = "poolvisor_actors::serde_duration")]
    pub heartbeat_interval: Duration,
    /// A pool actor silent this long is killed and restarted.
    #[serde(with = "poolvisor_actors::serde_duration")]
    pub heartbeat_timeout: Duration,
    /// More restarts than this within `restart_window` mark a pool Failed.
    pub max_restarts: u32,
    /// See `max_restarts`.
    #[serde(with = "poolvisor_actors::serde_duration")]
    pub restart_window: Duration,
    /// Refuse to start when a pool cannot connect.
    pub fail_fast: bool,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            max_connections: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            fail_fast: false,
        }
    }
}

/// `[admin]`: where the admin endpoint listens (it lands with the admin issue).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Listen address; loopback by default.
    pub listen: SocketAddr,
    /// Bearer token guarding everything but `/health`.
    pub token: Option<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: None,
        }
    }
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `[pools.<name>]`.
#[derive(Clone, PartialEq)]
pub struct PoolEntry {
    /// The pool's name (the table's key).
    pub name: String,
    /// Its backend.
    pub kind: BackendKind,
    /// Its URL (may hold a password: shown redacted).
    pub url: String,
    /// Every `PoolConfig` field, defaults for those not given.
    pub settings: PoolConfig,
    /// `response_timeout` (Redis pools only): `Redis::response_timeout`, when given.
    pub response_timeout: Option<Duration>,
    /// `ca_file` (pools over TLS): a PEM file of the roots to trust instead of the
    /// system's (`root_certificates` of the backend).
    pub ca_file: Option<PathBuf>,
    /// `init_sql` (PostgreSQL pools only): statements run on every new connection
    /// ([`InitSql`], the pool's customizer: `Config::builder()` gives such a pool no room
    /// for another).
    pub init_sql: Vec<String>,
    /// `health_path` (HTTP pools only): `Http::health_path`, when given.
    pub health_path: Option<String>,
}

impl fmt::Debug for PoolEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolEntry")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &redact(&self.url))
            .field("settings", &self.settings)
            .field("response_timeout", &self.response_timeout)
            .field("ca_file", &self.ca_file)
            .field("init_sql", &self.init_sql)
            .field(
                "health_path",
                &self.health_path.as_ref().map(|p| p.split('?').next()),
            )
            .finish()
    }
}

/// The whole file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[supervisor]`.
    pub supervisor: SupervisorSettings,
    /// `[admin]`.
    pub admin: AdminSettings,
    /// `[pools.*]`, by name.
    pub pools: Vec<PoolEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    supervisor: SupervisorSettings,
    #[serde(default)]
    admin: AdminSettings,
    #[serde(default)]
    pools: BTreeMap<String, Dict>,
}

impl Config {
    /// Reads `path` and applies `POOLVISOR_SUPERVISOR__*`, `POOLVISOR_ADMIN__*` and
    /// `POOLVISOR_POOLS__<NAME>__*` from the environment on top.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::new(path.display().to_string(), "no such file"));
        }
        Self::from_figment(Figment::from(Toml::file(path)).merge(env()))
    }

    /// Parses a TOML document (no environment).
    pub fn from_toml(document: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(document)))
    }

    /// Parses a TOML document with the environment applied on top.
    pub fn from_toml_with_env(document: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(document)).merge(env()))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| {
            let mut err = ConfigError::from_figment("", e);
            if err.key == "admin.listen" {
                let value = figment
                    .find_value("admin.listen")
                    .ok()
                    .and_then(|v| v.into_string());
                err.message = format!(
                    "{err_message} ({value:?})",
                    err_message = err.message,
                    value = value.unwrap_or_default()
                );
            }
            err
        })?;
        let mut pools = Vec::with_capacity(raw.pools.len());
        for (name, mut table) in raw.pools {
            let key = |field: &str| format!("pools.{name}.{field}");
            if !is_valid_pool_name(&name) {
                return Err(ConfigError::new(
                    format!("pools.{name}"),
                    "pool names are 1 to 64 characters of [A-Za-z0-9_.-]",
                ));
            }
            let kind = match table.remove("kind") {
                None => {
                    return Err(ConfigError::new(
                        key("kind"),
                        "missing: postgres, redis or http",
                    ))
                }
                Some(v) => BackendKind::deserialize(&v)
                    .map_err(|e| ConfigError::new(key("kind"), e.kind))?,
            };
            let url = match table.remove("url") {
                None => return Err(ConfigError::new(key("url"), "missing")),
                Some(Value::String(_, s)) => s,
                Some(other) => {
                    return Err(ConfigError::new(
                        key("url"),
                        format!("expected a string, found {}", other.to_actual()),
                    ))
                }
            };
            let response_timeout = match table.remove("response_timeout") {
                None => None,
                Some(_) if kind != BackendKind::Redis => {
                    return Err(ConfigError::new(
                        key("response_timeout"),
                        "only for kind = \"redis\"",
                    ))
                }
                Some(v) => Some(
                    positive_duration(&v)
                        .map_err(|e| ConfigError::new(key("response_timeout"), e))?,
                ),
            };
            let ca_file = match table.remove("ca_file") {
                None => None,
                Some(Value::String(_, path)) => Some(PathBuf::from(path)),
                Some(other) => {
                    return Err(ConfigError::new(
                        key("ca_file"),
                        format!("expected a path, found {}", other.to_actual()),
                    ))
                }
            };
            let init_sql = match table.remove("init_sql") {
                None => Vec::new(),
                Some(_) if kind != BackendKind::Postgres => {
                    return Err(ConfigError::new(
                        key("init_sql"),
                        "only for kind = \"postgres\"",
                    ))
                }
                Some(v) => statements(&v).map_err(|e| ConfigError::new(key("init_sql"), e))?,
            };
            let health_path = match table.remove("health_path") {
                None => None,
                Some(_) if kind != BackendKind::Http => {
                    return Err(ConfigError::new(
                        key("health_path"),
                        "only for kind = \"http\"",
                    ))
                }
                Some(Value::String(_, path)) => Some(path),
                Some(other) => {
                    return Err(ConfigError::new(
                        key("health_path"),
                        format!(
                            "expected a path such as \"/ready\", found {}",
                            other.to_actual()
                        ),
                    ))
                }
            };
            let settings = PoolConfig::deserialize(&Value::from(table))
                .map_err(|e| ConfigError::from_figment(&format!("pools.{name}"), e))?;
            pools.push(PoolEntry {
                name,
                kind,
                url,
                settings,
                response_timeout,
                ca_file,
                init_sql,
                health_path,
            });
        }
        let config = Config {
            supervisor: raw.supervisor,
            admin: raw.admin,
            pools,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.supervisor;
        if s.max_connections == Some(0) {
            return Err(ConfigError::new(
                "supervisor.max_connections",
                "0: must be at least 1",
            ));
        }
        if s.heartbeat_interval.is_zero() {
            return Err(ConfigError::new(
                "supervisor.heartbeat_interval",
                "0s: must be greater than zero",
            ));
        }
        if s.heartbeat_timeout < s.heartbeat_interval {
            return Err(ConfigError::new(
                "supervisor.heartbeat_timeout",
                format!(
                    "{:?} is shorter than heartbeat_interval {:?}",
                    s.heartbeat_timeout, s.heartbeat_interval
                ),
            ));
        }
        if s.restart_window.is_zero() {
            return Err(ConfigError::new(
                "supervisor.restart_window",
                "0s: must be greater than zero",
            ));
        }
        for p in &self.pools {
            p.settings.validate().map_err(|e| {
                ConfigError::new(format!("pools.{}.{}", p.name, e.field), e.message)
            })?;
            match p.kind {
                BackendKind::Postgres => p.postgres().map(drop)?,
                BackendKind::Redis => p.redis().map(drop)?,
                BackendKind::Http => p.http().map(drop)?,
            }
        }
        let reserved: usize = self.pools.iter().map(|p| p.settings.reserve).sum();
        let budget = s
            .max_connections
            .unwrap_or_else(|| self.pools.iter().map(|p| p.settings.max_size).sum());
        if reserved > budget && !self.pools.is_empty() {
            return Err(ConfigError::new(
                "supervisor.max_connections",
                format!("{budget}: the pools' reserves add up to {reserved}"),
            ));
        }
        let needed: usize = self
            .pools
            .iter()
            .map(|p| p.settings.min_idle.max(p.settings.reserve))
            .sum();
        if needed > budget && !self.pools.is_empty() {
            return Err(ConfigError::new(
                "supervisor.max_connections",
                format!(
                    "{budget}: the pools' min_idle (or reserve, where larger) add up to {needed}"
                ),
            ));
        }
        Ok(())
    }

    /// A builder with every pool of the file, ready to `start()`.
    pub fn builder(&self) -> SupervisorBuilder {
        let s = &self.supervisor;
        let mut b = Supervisor::builder()
            .heartbeat(s.heartbeat_interval, s.heartbeat_timeout)
            .restart_limit(s.max_restarts, s.restart_window)
            .fail_fast(s.fail_fast);
        if let Some(max) = s.max_connections {
            b = b.max_connections(max);
        }
        for p in &self.pools {
            let (name, settings) = (&p.name, p.settings.clone());
            b = match p.kind {
                BackendKind::Postgres if p.init_sql.is_empty() => {
                    b.try_graceful_pool(name, "postgres", p.postgres(), settings)
                }
                BackendKind::Postgres => b
                    .try_graceful_pool(name, "postgres", p.postgres(), settings)
                    .customize::<Postgres>(name, InitSql::new(p.init_sql.iter().cloned())),
                BackendKind::Redis => {
                    b.try_graceful_pool(name, "redis", p.redis(), packing(settings))
                }
                BackendKind::Http => b.try_graceful_pool(name, "http", p.http(), packing(settings)),
            };
        }
        b
    }
}

/// The backend managers a pool entry describes (errors name the key).
impl PoolEntry {
    fn postgres(&self) -> Result<Postgres, ConfigError> {
        let pg = Postgres::from_url(&self.url).map_err(|e| self.error("url", e))?;
        self.trusting(pg, Postgres::root_certificates)
    }

    fn redis(&self) -> Result<Redis, ConfigError> {
        let mut redis = Redis::from_url(&self.url).map_err(|e| self.error("url", e))?;
        if let Some(timeout) = self.response_timeout {
            redis = redis.response_timeout(Some(timeout));
        }
        self.trusting(redis, Redis::root_certificates)
    }

    fn http(&self) -> Result<Http, ConfigError> {
        let mut http = Http::new(&self.url).map_err(|e| self.error("url", e))?;
        if let Some(path) = &self.health_path {
            http = http
                .health_path(path)
                .map_err(|e| self.error("health_path", e))?;
        }
        self.trusting(http, Http::root_certificates)
    }

    /// `backend`, trusting `ca_file`'s roots through its `root_certificates` if given.
    fn trusting<B>(
        &self,
        backend: B,
        root_certificates: fn(B, RootCertStore) -> Result<B, BackendError>,
    ) -> Result<B, ConfigError> {
        match self.roots()? {
            Some(roots) => root_certificates(backend, roots).map_err(|e| self.error("ca_file", e)),
            None => Ok(backend),
        }
    }

    /// The roots of `ca_file`, read now: every certificate of a PEM file, at least one.
    fn roots(&self) -> Result<Option<RootCertStore>, ConfigError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let bad = |e: &dyn fmt::Display| self.error("ca_file", format!("{}: {e}", path.display()));
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no PEM certificate in it"));
        }
        Ok(Some(roots))
    }

    fn error(&self, field: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::new(format!("pools.{}.{field}", self.name), message)
    }
}

/// A duration string (`"10s"`, `"250ms"`) greater than zero.
fn positive_duration(v: &Value) -> Result<Duration, String> {
    let Value::String(_, text) = v else {
        return Err(format!(
            "expected a duration such as \"10s\", found {}",
            v.to_actual()
        ));
    };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{text}: must be greater than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("invalid duration {text:?}: {e}")),
    }
}

/// `init_sql`: a list of statements, none empty.
fn statements(v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(_, items) = v else {
        return Err(format!(
            "expected a list of SQL statements, found {}",
            v.to_actual()
        ));
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(_, sql) if !sql.trim().is_empty() => Ok(sql.clone()),
            Value::String(..) => Err("an empty statement".to_owned()),
            other => Err(format!("expected a statement, found {}", other.to_actual())),
        })
        .collect()
}

/// `Supervisor::from_config(&config)`.
pub trait FromConfig: Sized {
    /// Starts a supervisor with every pool of `config`.
    fn from_config(
        config: &Config,
    ) -> impl std::future::Future<Output = Result<Self, StartError>> + Send;
}

impl FromConfig for Supervisor {
    async fn from_config(config: &Config) -> Result<Supervisor, StartError> {
        config.builder().start().await
    }
}

fn env() -> Env {
    Env::prefixed("POOLVISOR_")
        .filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            k.starts_with("supervisor__") || k.starts_with("admin__") || k.starts_with("pools__")
        })
        .split("__")
}
