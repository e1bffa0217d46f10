//! `poolvisor check`: validate a configuration file and connect every pool once.

use std::time::{Duration, Instant};

use poolvisor_actors::{redact, PoolStatus};

use crate::backends::{Http, Postgres, Redis};
use crate::config::{BackendKind, Config};

/// One pool's line in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    /// The pool.
    pub pool: String,
    /// `postgres`, `redis` or `http`.
    pub backend: &'static str,
    /// `host:port` (and database), no password.
    pub address: String,
    /// How long its first connect attempts took.
    pub connect_time: Duration,
    /// Up or Down after them.
    pub status: PoolStatus,
    /// Why it is down (password removed).
    pub cause: Option<String>,
}

/// Starts each pool of `config` on its own (so each connect time is its own), records its
/// state after its first connect attempts, and shuts it down again.
pub async fn check(config: &Config) -> Vec<CheckRow> {
    let mut rows = Vec::with_capacity(config.pools.len());
    for entry in &config.pools {
        let address = match entry.kind {
            BackendKind::Postgres => Postgres::from_url(&entry.url).map(|m| m.target().to_string()),
            BackendKind::Redis => Redis::from_url(&entry.url).map(|m| m.target().to_string()),
            BackendKind::Http => Http::new(&entry.url).map(|m| m.target().to_string()),
        };
        let address = address.unwrap_or_else(|_| redact(&entry.url));
        let single = Config {
            supervisor: crate::config::SupervisorSettings {
                max_connections: None,
                fail_fast: false,
                ..config.supervisor.clone()
            },
            admin: config.admin.clone(),
            pools: vec![entry.clone()],
        };
        let started = Instant::now();
        let (connect_time, status, cause) = match single.builder().start().await {
            Ok(sup) => {
                let connect_time = started.elapsed();
                let status = sup.status(&entry.name).unwrap_or(PoolStatus::Down);
                let cause = match status {
                    PoolStatus::Up => None,
                    _ => sup
                        .metrics()
                        .await
                        .ok()
                        .and_then(|m| m.pool(&entry.name).and_then(|p| p.last_error.clone())),
                };
                let _ = sup.shutdown().await;
                (connect_time, status, cause)
            }
            Err(e) => (started.elapsed(), PoolStatus::Down, Some(e.to_string())),
        };
        rows.push(CheckRow {
            pool: entry.name.clone(),
            backend: entry.kind.as_str(),
            address,
            connect_time,
            status,
            cause,
        });
    }
    rows
}
