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

/// The PostgreSQL server's socket address (from `pg_url()`, loopback expected).
pub fn pg_addr() -> std::net::SocketAddr {
    let url = pg_url();
    let authority = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:5432")
    };
    authority
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("PostgreSQL on a loopback address")
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

/// The current values of these settings in `client`'s session.
pub async fn pg_settings(client: &tokio_postgres::Client, names: &[&str]) -> Vec<String> {
    let mut values = Vec::with_capacity(names.len());
    for name in names {
        let row = client
            .query_one("select current_setting($1)", &[name])
            .await
            .expect("current_setting");
        values.push(row.get(0));
    }
    values
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

/// Connections open on both servers at one instant, as far as two servers can be read at
/// one instant: PostgreSQL backends (of these `application_name`s) present both before and
/// after the Redis count (`CLIENT SETNAME` = `name`) were open when Redis was counted, so
/// `total` never counts a permit twice (it misses only connections younger than a
/// sample). `pg` is the larger of the two PostgreSQL snapshots, each exact on its own.
pub async fn open_on_both(
    pg: &tokio_postgres::Client,
    apps: &[&str],
    redis: &mut redis::aio::MultiplexedConnection,
    name: &str,
) -> OpenCount {
    let before = pg_pids(pg, apps).await;
    let redis_open = redis_count(redis, name).await;
    let after = pg_pids(pg, apps).await;
    OpenCount {
        total: before.intersection(&after).count() + redis_open,
        pg: before.len().max(after.len()),
    }
}

/// What [`open_on_both`] saw.
pub struct OpenCount {
    pub total: usize,
    pub pg: usize,
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

/// One raw HTTP/1.1 exchange, read to the end (at most 5 s); returns (status, body).
/// Status 0 when the server closed without answering.
pub async fn http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn auth_header(token: Option<&str>) -> String {
    token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

/// `GET path` with an optional bearer token.
pub async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = auth_header(token);
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await
}

/// `POST path` with a body and an optional bearer token.
pub async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = auth_header(token);
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// An open `GET /events` stream: the raw bytes read so far.
pub struct Sse {
    tcp: TcpStream,
    pub text: String,
}

impl Sse {
    pub async fn open(addr: std::net::SocketAddr, token: Option<&str>) -> Sse {
        use tokio::io::AsyncWriteExt;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let auth = auth_header(token);
        tcp.write_all(
            format!("GET /events HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut sse = Sse {
            tcp,
            text: String::new(),
        };
        assert!(
            sse.read_until(": keepalive", Duration::from_secs(5)).await,
            "the stream opened: {}",
            sse.text
        );
        sse
    }

    /// Reads until the text holds `needle` (true), the stream ends or `within` passes.
    pub async fn read_until(&mut self, needle: &str, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 4096];
        while !self.text.contains(needle) {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.text.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => return false,
            }
        }
        true
    }

    /// Reads to the end of the stream; true if it ended within `within`.
    pub async fn read_to_end(&mut self, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(within, self.tcp.read_to_end(&mut rest))
            .await
            .is_ok();
        self.text.push_str(&String::from_utf8_lossy(&rest));
        ended
    }
}
