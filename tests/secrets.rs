//! Secrets: with a sentinel password in every URL, nothing the library shows — errors,
//! `Debug` output, metrics, events, tracing logs at every level, and the admin endpoint's
//! `/pools`, `/metrics` and `/events` — contains it. (The CLI's output is checked in
//! `tests/cli.rs`.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use poolvisor::admin::AdminServer;
use poolvisor::config::AdminSettings;
use poolvisor::prelude::*;
use poolvisor::testing::FaultProxy;

const SENTINEL: &str = "S3NT1NEL-pw-4c1d";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_password_appears_nowhere() {
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut seen: Vec<String> = Vec::new();
    // Bad URLs: each is a start error.
    for (kind, url) in [
        (
            "postgres",
            format!("postgres://root:{SENTINEL}@127.0.0.1:badport/test"),
        ),
        ("redis", format!("redis://:{SENTINEL}@127.0.0.1:notaport")),
        ("redis", format!("rediss://:{SENTINEL}@127.0.0.1/#insecure")),
        ("http", format!("gopher://u:{SENTINEL}@127.0.0.1/")),
    ] {
        let b = Supervisor::builder();
        let b = match kind {
            "postgres" => b.postgres("p", &url, PoolConfig::default()),
            "redis" => b.redis("p", &url, PoolConfig::default()),
            _ => b.http("p", &url, PoolConfig::default()),
        };
        let err = b.start().await.unwrap_err();
        seen.push(format!("{err} {err:?}"));
    }

    // Working and failing pools, all with the sentinel in their URLs.
    let closed = free_port().await;
    let pg_ok = {
        let url = pg_url();
        let rest = url.split("://").nth(1).unwrap();
        let (user, host) = rest.split_once('@').unwrap();
        let user = user.split(':').next().unwrap();
        format!("postgres://{user}:{SENTINEL}@{host}")
    };
    let redis_auth = format!(
        "redis://:{SENTINEL}@{}",
        redis_url().trim_start_matches("redis://")
    );
    // A pool that is Up, then loses its server while `/events` is open.
    let proxy = FaultProxy::start(pg_addr()).await.unwrap();
    let pg_flaky = format!(
        "postgres://root:{SENTINEL}@{}/{}",
        proxy.addr(),
        pg_ok.rsplit('/').next().unwrap()
    );
    let sup = Supervisor::builder()
        .postgres("pg", &pg_ok, PoolConfig::default())
        .postgres("pg_flaky", &pg_flaky, PoolConfig::default())
        .postgres(
            "pg_down",
            &format!("postgres://root:{SENTINEL}@127.0.0.1:{closed}/test"),
            PoolConfig::default(),
        )
        .redis("redis_auth", &redis_auth, PoolConfig::default())
        .redis(
            "redis_down",
            &format!("redis://:{SENTINEL}@127.0.0.1:{closed}"),
            PoolConfig::default(),
        )
        .redis(
            "rediss_down",
            &format!("rediss://:{SENTINEL}@127.0.0.1:{closed}"),
            PoolConfig::default(),
        )
        .postgres(
            "pg_tls_down",
            &format!("postgres://root:{SENTINEL}@127.0.0.1:{closed}/test?sslmode=require"),
            PoolConfig::default(),
        )
        .http(
            "http_down",
            &format!("http://u:{SENTINEL}@127.0.0.1:{closed}"),
            PoolConfig::default(),
        )
        .start()
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let admin = AdminServer::start(
        sup.clone(),
        &AdminSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
        },
    )
    .await
    .unwrap();
    let mut sse = Sse::open(admin.addr(), None).await;
    proxy.refuse();
    proxy.reset_all();
    let flaky = sup.postgres("pg_flaky").unwrap();
    // Use the pool until it notices: the reset connection fails its query, and
    // reconnects are refused.
    for _ in 0..50 {
        match flaky.checkout().await {
            Ok(conn) => {
                if let Err(e) = conn.simple_query("SELECT 1").await {
                    seen.push(format!("{e} {e:?}"));
                }
            }
            Err(e) => seen.push(format!("{e} {e:?}")),
        }
        if sup.status("pg_flaky").unwrap() == poolvisor::PoolStatus::Down {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sse.read_until("event: down", Duration::from_secs(10)).await,
        "pg_flaky went Down while /events was open: {}",
        sse.text
    );
    seen.push(format!("{sup:?}"));
    let pg = sup.postgres("pg").unwrap();
    seen.push(format!("{pg:?}"));
    let conn = pg.checkout().await.unwrap();
    conn.simple_query("SELECT 1").await.unwrap();
    seen.push(format!("{conn:?}"));
    drop(conn);
    for name in ["pg_down"] {
        let err = sup.postgres(name).unwrap().checkout().await.unwrap_err();
        seen.push(format!("{err} {err:?}"));
    }
    for name in ["redis_auth", "redis_down"] {
        let err = sup.redis(name).unwrap().checkout().await.unwrap_err();
        seen.push(format!("{err} {err:?}"));
    }
    let req = hyper::Request::get("/")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let err = sup
        .http("http_down")
        .unwrap()
        .request(req, Duration::from_secs(1))
        .await
        .unwrap_err();
    seen.push(format!("{err} {err:?}"));
    let snap = sup.metrics().await.unwrap();
    seen.push(format!("{snap:?}"));
    seen.push(serde_json::to_string(&snap).unwrap());
    for path in ["/pools", "/metrics", "/health"] {
        let (status, body) = get(admin.addr(), path, None).await;
        assert!(status == 200 || status == 503, "{path}: {status}");
        seen.push(body);
    }
    sup.shutdown().await.unwrap();
    assert!(sse.read_to_end(Duration::from_secs(5)).await);
    assert!(
        sse.text.contains("127.0.0.1"),
        "the stream names its servers"
    );
    seen.push(sse.text.clone());
    while let Ok(e) = events.recv().await {
        seen.push(format!("{e:?}"));
        seen.push(serde_json::to_string(&e).unwrap());
    }
    seen.push(String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned());

    let log = seen.last().unwrap();
    assert!(
        log.contains("connect failed") && log.contains("pool event"),
        "error paths were logged"
    );
    assert!(
        seen.iter().any(|s| s.contains("127.0.0.1")),
        "the texts name their servers"
    );
    for text in &seen {
        if let Some(at) = text.find(SENTINEL) {
            let from = at.saturating_sub(200);
            panic!(
                "the password leaked: …{}…",
                &text[from..(at + SENTINEL.len() + 50).min(text.len())]
            );
        }
    }
}
