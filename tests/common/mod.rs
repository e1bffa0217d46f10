//! Helpers for tests against real servers: URLs, server-side connection counts, a TCP
//! forwarder standing in for a server that appears later.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub fn pg_url() -> String {
    std::env::var("POOLVISOR_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("POOLVISOR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A name no other test (or test run) uses, for `application_name` / `CLIENT SETNAME`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with `application_name` set.
pub fn pg_url_named(name: &str) -> String {
    let url = pg_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// A direct connection for looking at the server (not through a pool). Fails the test
/// with the URL if the server cannot be reached.
pub async fn pg_admin() -> tokio_postgres::Client {
    let url = pg_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is not reachable ({e}); run scripts/services.sh")
        });
    tokio::spawn(conn);
    client
}

/// Backends the server has for `application_name`.
pub async fn pg_count(admin: &tokio_postgres::Client, app: &str) -> usize {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_activity");
    row.get::<_, i64>(0) as usize
}

/// Backend PIDs the server has for any of these `application_name`s, in one snapshot.
pub async fn pg_pids(
    admin: &tokio_postgres::Client,
    apps: &[&str],
) -> std::collections::HashSet<i32> {
    let apps: Vec<String> = apps.iter().map(|a| a.to_string()).collect();
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = ANY($1)",
            &[&apps],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|row| row.get::<_, i32>(0))
        .collect()
}

pub async fn redis_admin() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("redis url");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} is not reachable ({e}); run scripts/services.sh")
        })
}

/// The ids of the clients the server has with this `CLIENT SETNAME`.
pub async fn redis_ids(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("CLIENT LIST");
    let needle = format!(" name={name} ");
    list.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(String::from)
        })
        .collect()
}

/// Clients the server has with this `CLIENT SETNAME`.
pub async fn redis_count(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> usize {
    redis_ids(admin, name).await.len()
}

/// Kills (`CLIENT KILL ID`) every client with this `CLIENT SETNAME`; returns how many.
pub async fn redis_kill_named(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> usize {
    let ids = redis_ids(admin, name).await;
    for id in &ids {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await
            .expect("CLIENT KILL");
    }
    ids.len()
}

/// A loopback port nothing listens on (bound, then released).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Forwards `127.0.0.1:port` to `target` until the returned task is aborted: a server
/// that "appears" on a port.
pub async fn forward(port: u16, target: &str) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind forward port");
    let target = target.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// Waits for an event of this kind (any pool); `false` after `within`.
pub async fn saw_event(events: &mut poolvisor::EventStream, kind: &str, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while let Ok(e) = events.recv().await {
            if e.kind.name() == kind {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Polls `f` every 10 ms until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
