//! Soak: a mixed load over PostgreSQL, Redis and an in-process HTTP server for a given
//! time, with churn (discarded connections, short pauses, an occasional idle spell that
//! lets connections be reaped and reopened), printing RSS and open file descriptors every
//! 10 s so that growth shows. Needs PostgreSQL and Redis (`scripts/services.sh`).
//!
//! `cargo run --release --example soak -- --duration 10m`

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use poolvisor::prelude::*;
use tokio::net::TcpListener;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn http_server() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let duration = match args.iter().position(|a| a == "--duration") {
        Some(i) => humantime::parse_duration(args.get(i + 1).ok_or("--duration needs a value")?)?,
        None => Duration::from_secs(60),
    };
    let pg = std::env::var("POOLVISOR_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let redis =
        std::env::var("POOLVISOR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let http = http_server().await?;
    let cfg = PoolConfig::default()
        .max_size(8)
        .idle_timeout(Some(Duration::from_secs(5)))
        .max_lifetime(Some(Duration::from_secs(30)))
        .health_check_interval(Some(Duration::from_secs(10)));
    let sup = Supervisor::builder()
        .max_connections(20)
        .postgres("db", &pg, cfg.clone())
        .redis("cache", &redis, cfg.clone())
        .http("api", &format!("http://{http}"), cfg)
        .fail_fast(true)
        .start()
        .await?;
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..48u64 {
        let (sup, ops, errors, stop) = (sup.clone(), ops.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let db = sup.postgres("db").expect("db");
            let cache = sup.redis("cache").expect("cache");
            let api = sup.http("api").expect("api");
            let mut rng = fastrand::Rng::with_seed(t);
            while !stop.load(Ordering::Relaxed) {
                let ok = match rng.u8(0..3) {
                    0 => match db.checkout().await {
                        Ok(conn) => {
                            let ok = conn.simple_query("SELECT 1").await.is_ok();
                            if rng.u8(..) < 3 {
                                conn.discard();
                            }
                            ok
                        }
                        Err(_) => false,
                    },
                    1 => match cache.checkout().await {
                        Ok(mut conn) => {
                            let r: Result<String, _> =
                                redis::cmd("PING").query_async(&mut *conn).await;
                            r.is_ok()
                        }
                        Err(_) => false,
                    },
                    _ => {
                        let req = Request::get("/")
                            .body(Full::new(Bytes::new()))
                            .expect("request");
                        api.request(req, Duration::from_secs(2)).await.is_ok()
                    }
                };
                ops.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                // Now and then a task goes quiet long enough for idle reaping to work.
                if rng.u16(..) < 8 {
                    tokio::time::sleep(Duration::from_secs(6)).await;
                } else if rng.u8(..) < 16 {
                    tokio::time::sleep(Duration::from_millis(rng.u64(1..20))).await;
                }
            }
        }));
    }
    let started = Instant::now();
    println!("soak: {duration:?}, 48 tasks over PostgreSQL, Redis and HTTP, budget 20");
    println!(
        "{:>7} {:>10} {:>8} {:>9} {:>5} {:>9} {:>10}",
        "time", "ops", "errors", "RSS KiB", "fds", "open", "closes"
    );
    loop {
        let snap = sup.metrics().await?;
        let open: usize = snap.pools.iter().map(|p| p.open).sum();
        let closes: u64 = snap
            .pools
            .iter()
            .flat_map(|p| p.closes.iter().map(|c| c.1))
            .sum();
        println!(
            "{:>6.0}s {:>10} {:>8} {:>9} {:>5} {:>9} {:>10}",
            started.elapsed().as_secs_f64(),
            ops.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
            rss_kib(),
            open_fds(),
            open,
            closes
        );
        if started.elapsed() >= duration {
            break;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    sup.shutdown().await?;
    println!("after shutdown: RSS {} KiB, {} fds", rss_kib(), open_fds());
    Ok(())
}
