//! `poolvisor check`: validate a configuration file and connect every pool once (an HTTP
//! pool also makes one request, `GET` its `health_path` on connect or else `HEAD /`:
//! HTTP/1.1 says nothing on connect, so a port that accepts and never answers would
//! otherwise read as up).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use poolvisor_actors::{redact, PoolStatus, Supervisor};

use crate::backends::{Http, HttpPoolExt, Postgres, Redis, SupervisorBackends};
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
                // A health path was already asked on connect.
                let no_answer = match (entry.kind, status) {
                    (BackendKind::Http, PoolStatus::Up) if entry.health_path.is_none() => {
                        http_answers(&sup, &entry.name, entry.settings.connect_timeout).await
                    }
                    _ => None,
                };
                let status = if no_answer.is_some() {
                    PoolStatus::Down
                } else {
                    status
                };
                let cause = match status {
                    PoolStatus::Up => None,
                    _ if no_answer.is_some() => no_answer,
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

/// One `HEAD /` through the pool: any response is an answer. The failure, if none came
/// within `timeout` (the pool's `connect_timeout`).
async fn http_answers(sup: &Supervisor, pool: &str, timeout: Duration) -> Option<String> {
    let handle = match sup.http(pool) {
        Ok(handle) => handle,
        Err(e) => return Some(e.to_string()),
    };
    let head = Request::head("/")
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    match handle.request(head, timeout).await {
        Ok(_) => None,
        Err(e) => Some(redact(&format!("no HTTP answer to HEAD /: {e}"))),
    }
}
