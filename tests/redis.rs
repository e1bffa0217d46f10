//! Redis pools against a real server (`POOLVISOR_REDIS_URL`).

mod common;

use std::time::Duration;

use common::*;
use poolvisor::backends::{BackendError, Redis, RedisConnection};
use poolvisor::prelude::*;
use poolvisor::{CloseReason, PoolStatus, Validation};

async fn named_pool(name: &str, cfg: PoolConfig) -> (Supervisor, PoolHandle<Redis>) {
    let manager = Redis::from_url(&redis_url()).unwrap().client_name(name);
    let sup = Supervisor::builder()
        .graceful_pool("cache", "redis", manager, cfg)
        .start()
        .await
        .unwrap();
    let pool = sup.redis("cache").unwrap();
    (sup, pool)
}

async fn ping(pool: &PoolHandle<Redis>) -> Result<String, redis::RedisError> {
    let mut conn = pool.checkout().await.expect("checkout");
    redis::cmd("PING").query_async(&mut *conn).await
}

fn closes(pool: &PoolHandle<Redis>, reason: CloseReason) -> u64 {
    pool.snapshot()
        .closes
        .iter()
        .find(|(r, _)| *r == reason)
        .unwrap()
        .1
}

#[tokio::test]
async fn ping_through_the_supervisor_reusing_one_server_connection() {
    let name = unique_name("pv_redis_reuse");
    let (sup, pool) = named_pool(&name, PoolConfig::default()).await;
    for _ in 0..20 {
        assert_eq!(ping(&pool).await.unwrap(), "PONG");
    }
    let mut admin = redis_admin().await;
    assert_eq!(redis_count(&mut admin, &name).await, 1);
    sup.shutdown().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut admin = admin.clone();
            let name = name.clone();
            async move { redis_count(&mut admin, &name).await == 0 }
        })
        .await
    );
}

#[tokio::test]
async fn a_client_killed_while_idle_is_replaced_without_validating_it() {
    // No validation at all: only the socket's own EOF can tell the pool. Checked out well
    // within the 500 ms threshold that validation would otherwise need.
    let name = unique_name("pv_redis_eof");
    let config = PoolConfig::default()
        .max_size(2)
        .validation(Validation::Never);
    let (sup, pool) = named_pool(&name, config).await;
    drop(vec![
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ]);
    let mut admin = redis_admin().await;
    assert_eq!(redis_kill_named(&mut admin, &name).await, 2);
    // Time for the drivers to read the EOF; validation is off, so waiting longer would
    // not let a dead connection pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        assert_eq!(
            ping(&pool).await.expect("a dead connection was handed out"),
            "PONG"
        );
    }
    assert_eq!(closes(&pool, CloseReason::Broken), 2);
    assert_eq!(closes(&pool, CloseReason::Validation), 0);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_killed_in_use_is_broken_before_any_command_sees_it() {
    // Whatever a caller does with it (here: nothing, as through `multiplexed()`), a
    // connection the server closed goes back broken.
    let name = unique_name("pv_redis_quiet");
    let (sup, pool) = named_pool(&name, PoolConfig::default().max_size(1)).await;
    let conn = pool.checkout().await.unwrap();
    let mut admin = redis_admin().await;
    assert_eq!(redis_kill_named(&mut admin, &name).await, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !conn.is_broken() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conn.is_broken(), "no command ran, yet the EOF marks it");
    drop(conn);
    assert_eq!(closes(&pool, CloseReason::Broken), 1);
    assert_eq!(ping(&pool).await.unwrap(), "PONG");
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn bb8_redis_manager_plugs_in_unchanged() {
    use poolvisor::drivers::bb8_redis::RedisConnectionManager;
    let manager = RedisConnectionManager::new(redis_url()).unwrap();
    let sup = Supervisor::builder()
        .pool_with_backend("cache", "redis", manager, PoolConfig::default())
        .start()
        .await
        .unwrap();
    let cache = sup.pool::<RedisConnectionManager>("cache").unwrap();
    let mut conn = cache.checkout().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut *conn).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_that_dropped_in_use_is_closed_on_return() {
    let name = unique_name("pv_redis_broken");
    let (sup, pool) = named_pool(&name, PoolConfig::default().max_size(1)).await;
    let mut conn = pool.checkout().await.unwrap();
    let mut admin = redis_admin().await;
    assert_eq!(redis_kill_named(&mut admin, &name).await, 1);
    let failed: Result<String, _> = redis::cmd("PING").query_async(&mut *conn).await;
    assert!(failed.is_err());
    assert!(conn.is_broken());
    drop(conn);
    assert_eq!(closes(&pool, CloseReason::Broken), 1);
    // Within the validation threshold, the next caller still gets a live connection.
    assert_eq!(ping(&pool).await.unwrap(), "PONG");
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_down_with_the_address_and_comes_back() {
    let port = free_port().await;
    let sup = Supervisor::builder()
        .redis(
            "cache",
            &format!("redis://127.0.0.1:{port}"),
            PoolConfig::default(),
        )
        .start()
        .await
        .unwrap();
    let pool = sup.redis("cache").unwrap();
    let mut events = sup.subscribe();
    assert_eq!(pool.status(), PoolStatus::Down);
    let err = pool.checkout().await.unwrap_err();
    let CheckoutError::Unavailable { cause, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(cause.contains(&format!("127.0.0.1:{port}")), "{cause}");
    let target = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let fwd = forward(port, &target).await;
    assert!(
        saw_event(&mut events, "recovered", Duration::from_secs(10)).await,
        "no recovered event"
    );
    assert_eq!(ping(&pool).await.unwrap(), "PONG");
    sup.shutdown().await.unwrap();
    fwd.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_checkouts_multiplex_and_a_killed_connection_is_replaced() {
    let name = unique_name("pv_redis_shared");
    let (sup, pool) = named_pool(&name, PoolConfig::default().max_size(1).max_shares(8)).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            tokio::spawn(async move {
                let conn = pool.checkout_shared().await.unwrap();
                // Bounded: a caller left out fails the test instead of hanging it.
                tokio::time::timeout(std::time::Duration::from_secs(10), barrier.wait())
                    .await
                    .expect("all 8 got a place");
                for _ in 0..20 {
                    let pong: String = redis::cmd("PING")
                        .query_async(&mut conn.handle())
                        .await
                        .unwrap();
                    assert_eq!(pong, "PONG");
                }
                conn.id()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "8 callers on one connection");
    let mut admin = redis_admin().await;
    assert_eq!(redis_count(&mut admin, &name).await, 1);

    // The server drops it while two callers share it: their commands fail, it is marked
    // broken, and it closes when they leave; the next caller gets a new connection.
    let a = pool.checkout_shared().await.unwrap();
    let b = pool.checkout_shared().await.unwrap();
    assert_eq!(redis_kill_named(&mut admin, &name).await, 1);
    let failed = redis::cmd("PING")
        .query_async::<String>(&mut a.handle())
        .await;
    assert!(failed.is_err());
    assert!(a.is_broken() && b.is_broken());
    let old = a.id();
    drop((a, b));
    assert_eq!(closes(&pool, CloseReason::Broken), 1);
    let c = pool.checkout_shared().await.unwrap();
    assert_ne!(c.id(), old);
    let pong: String = redis::cmd("PING")
        .query_async(&mut c.handle())
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
    drop(c);
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pool_packs_shared_checkouts_unless_told_otherwise() {
    /// The connection ids three shared callers get when the pool has 4 idle connections.
    async fn ids(config: PoolConfig) -> Vec<u64> {
        let sup = Supervisor::builder()
            .redis("cache", &redis_url(), config.max_size(4))
            .start()
            .await
            .unwrap();
        let pool = sup.redis("cache").unwrap();
        let mut warm = Vec::new();
        for _ in 0..4 {
            warm.push(pool.checkout().await.unwrap());
        }
        drop(warm);
        assert_eq!(pool.snapshot().idle, 4);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pool.checkout_shared().await.unwrap());
        }
        let ids = held.iter().map(|c| c.id()).collect();
        drop(held);
        sup.shutdown().await.unwrap();
        ids
    }
    let packed = ids(PoolConfig::default()).await;
    assert!(packed.iter().all(|&id| id == packed[0]), "{packed:?}");
    let mut spread = ids(PoolConfig::default().share_policy(SharePolicy::Spread)).await;
    spread.sort_unstable();
    spread.dedup();
    assert_eq!(spread.len(), 3, "{spread:?}");
}

const TLS_PASSWORD: &str = "s3cret-tls";

/// A private redis-server with a scratch directory, no persistence and no TCP port but
/// what `args` open; killed, and its directory removed, when dropped.
struct PrivateRedis {
    _child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PrivateRedis {
    fn dir(prefix: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts it and waits until `ready` (a connect to where it listens) succeeds.
    async fn start<F, Fut>(dir: std::path::PathBuf, args: &[String], ready: F) -> PrivateRedis
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on PATH (scripts/services.sh installs it)");
        let up = eventually(Duration::from_secs(5), ready).await;
        assert!(up, "private redis-server {args:?} did not start");
        PrivateRedis { _child: child, dir }
    }
}

fn path(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn rediss_speaks_tls_and_checks_the_servers_certificate() {
    use poolvisor::drivers::bb8_redis::bb8::ManageConnection;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::RootCertStore;
    // Speaks only TLS, with a self-signed certificate for `localhost` and a password.
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = PrivateRedis::dir("pv_redis_tls");
    let (cert, pkey) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&pkey, key.signing_key.serialize_pem()).unwrap();
    let port = free_port().await;
    let args = [
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &path(&cert),
        "--tls-key-file",
        &path(&pkey),
        "--tls-ca-cert-file",
        &path(&cert),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        TLS_PASSWORD,
    ]
    .map(String::from);
    let _server = PrivateRedis::start(dir, &args, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let url = format!("rediss://:{TLS_PASSWORD}@localhost:{port}");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(key.cert.der().to_vec()))
        .unwrap();

    let trusted = Redis::from_url(&url)
        .unwrap()
        .root_certificates(roots)
        .unwrap();
    let mut admin = trusted
        .connect()
        .await
        .expect("a TLS connection outside the pool");
    let sup = Supervisor::builder()
        .graceful_pool("cache", "redis", trusted, PoolConfig::default().max_size(2))
        .start()
        .await
        .unwrap();
    let pool = sup.redis("cache").unwrap();
    assert_eq!(ping(&pool).await.unwrap(), "PONG");
    // The server closing a TLS connection is seen as for a plain one.
    let killed: usize = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ping(&pool).await.unwrap(), "PONG");
    assert_eq!(closes(&pool, CloseReason::Broken), 1);
    sup.shutdown().await.unwrap();

    // Without the server's certificate among the roots, the handshake fails, clearly
    // and without the password.
    let untrusted = Redis::from_url(&url).unwrap();
    let err = match untrusted.connect().await {
        Ok(_) => panic!("a self-signed certificate was trusted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&format!("localhost:{port} (tls)")), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains(TLS_PASSWORD), "{err}");
}

#[tokio::test]
async fn a_unix_socket_url_connects_and_names_its_path() {
    let dir = PrivateRedis::dir("pv_redis_unix");
    let socket = dir.join("redis.sock");
    let args = ["--unixsocket".to_string(), path(&socket)];
    let probe = socket.clone();
    let _server = PrivateRedis::start(dir, &args, || {
        let probe = probe.clone();
        async move { tokio::net::UnixStream::connect(probe).await.is_ok() }
    })
    .await;
    let manager = Redis::from_url(&format!("unix://{}", path(&socket))).unwrap();
    assert_eq!(manager.target(), path(&socket));
    let sup = Supervisor::builder()
        .graceful_pool("cache", "redis", manager, PoolConfig::default())
        .start()
        .await
        .unwrap();
    let pool = sup.redis("cache").unwrap();
    assert_eq!(ping(&pool).await.unwrap(), "PONG");
    sup.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_blocking_command_needs_a_longer_response_timeout() {
    async fn blpop(manager: Redis) -> (Result<redis::Value, redis::RedisError>, bool) {
        let sup = Supervisor::builder()
            .graceful_pool("cache", "redis", manager, PoolConfig::default().max_size(1))
            .start()
            .await
            .unwrap();
        let pool = sup.redis("cache").unwrap();
        let mut conn = pool.checkout().await.unwrap();
        let key = unique_name("pv_redis_blpop");
        let result = redis::cmd("BLPOP")
            .arg(&key)
            .arg(1)
            .query_async(&mut *conn)
            .await;
        let broken = conn.is_broken();
        drop(conn);
        sup.shutdown().await.unwrap();
        (result, broken)
    }
    let base = Redis::from_url(&redis_url()).unwrap();
    // A second is longer than redis-rs's default reply timeout: the command fails and
    // the connection is not lent again.
    let (result, broken) = blpop(base.clone()).await;
    assert!(result.is_err(), "{result:?}");
    assert!(broken);
    let (result, broken) = blpop(base.response_timeout(Some(Duration::from_secs(3)))).await;
    assert_eq!(result.unwrap(), redis::Value::Nil, "BLPOP's own timeout");
    assert!(!broken);
}

/// Names every new connection (`CLIENT SETNAME`) in a customizer, with `?` on redis-rs's
/// errors.
#[derive(Debug)]
struct SetName(String);

impl CustomizeConnection<RedisConnection, BackendError> for SetName {
    fn on_acquire<'a>(&'a self, conn: &'a mut RedisConnection) -> SetupFuture<'a, BackendError> {
        Box::pin(async move {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(&self.0)
                .query_async::<()>(conn)
                .await?;
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_customizer_sets_up_every_new_redis_connection() {
    let name = unique_name("pv_redis_customized");
    let sup = Supervisor::builder()
        .redis("cache", &redis_url(), PoolConfig::default().max_size(2))
        .customize::<Redis>("cache", SetName(name.clone()))
        .start()
        .await
        .unwrap();
    let pool = sup.redis("cache").unwrap();
    let (mut a, b) = (
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    );
    let own: String = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut *a)
        .await
        .unwrap();
    assert_eq!(own, name);
    let mut admin = redis_admin().await;
    assert_eq!(redis_count(&mut admin, &name).await, 2);
    drop((a, b));
    sup.shutdown().await.unwrap();
}
