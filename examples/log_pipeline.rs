//! A logging pipeline whose components share one supervisor, as a service would wire it:
//!
//! - enrichers look up each record's tenant (Redis cache in front of PostgreSQL) and its
//!   client address's location (an HTTP geo-IP API);
//! - a sink ships batches of enriched lines over HTTP in the Loki push format.
//!
//! The HTTP services (the Loki-like sink and the geo-IP API) run in-process on loopback,
//! so the demo needs no external server. PostgreSQL and Redis join when
//! `POOLVISOR_PG_URL` / `POOLVISOR_REDIS_URL` (or their loopback defaults) answer. Half-way
//! through, the geo-IP API goes away for a few seconds: watch its pool go Down (lookups
//! fail fast instead of timing out) and recover.
//!
//! `cargo run --release --example log_pipeline [-- --duration 15s]`

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use poolvisor::prelude::*;
use poolvisor::{EventError, MetricsSnapshot};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

const ENRICHERS: usize = 24;
const TENANTS: i32 = 200;
const BATCH: usize = 200;

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    shipped: AtomicU64,
    batches: AtomicU64,
    cache_hits: AtomicU64,
    db_lookups: AtomicU64,
    geo_failed: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let duration = parse_duration()?;
    println!("poolvisor log-pipeline demo: {duration:?}, {ENRICHERS} enrichers, one supervisor\n");

    // In-process HTTP services.
    let loki = LokiSink::start().await?;
    let geo = GeoApi::start().await?;
    println!("loki sink  : http://{} (in-process)", loki.addr);
    println!("geo-ip API : http://{} (in-process)", geo.addr);

    // Optional backends: join if reachable.
    let pg_url = env_or("POOLVISOR_PG_URL", "postgres://root@127.0.0.1:5432/test");
    let redis_url = env_or("POOLVISOR_REDIS_URL", "redis://127.0.0.1:6379");
    let pg = probe_postgres(&pg_url).await;
    let redis_ok = probe_redis(&redis_url).await;
    let shown_pg = poolvisor::redact(&pg_url);
    let shown_redis = poolvisor::redact(&redis_url);
    match &pg {
        Ok(()) => println!("postgres   : used ({shown_pg}): tenant lookups"),
        Err(why) => println!(
            "postgres   : not used ({shown_pg}: {why}); tenants come from a built-in table"
        ),
    }
    match &redis_ok {
        Ok(()) => println!("redis      : used ({shown_redis}): tenant cache"),
        Err(why) => println!("redis      : not used ({shown_redis}: {why}); no cache"),
    }

    let http_cfg = PoolConfig::default()
        .max_size(6)
        .connect_timeout(Duration::from_secs(1))
        .checkout_timeout(Duration::from_secs(2));
    let mut builder = Supervisor::builder()
        .max_connections(16)
        .http(
            "loki",
            &format!("http://{}", loki.addr),
            http_cfg.clone().max_size(3).reserve(1),
        )
        .http("geoip", &format!("http://{}", geo.addr), http_cfg);
    if pg.is_ok() {
        builder = builder.postgres("db", &pg_url, PoolConfig::default().max_size(6).min_idle(1));
    }
    if redis_ok.is_ok() {
        builder = builder.redis("cache", &redis_url, PoolConfig::default().max_size(4));
    }
    let sup = builder.start().await?;
    let admin_settings = poolvisor::config::AdminSettings {
        listen: "127.0.0.1:0".parse()?,
        token: None,
    };
    let admin = poolvisor::admin::AdminServer::start(sup.clone(), &admin_settings).await?;
    println!(
        "supervisor : pools {:?}, global budget 16 connections",
        sup.pool_names()
    );
    println!(
        "admin      : http://{0}/metrics  http://{0}/pools  http://{0}/health (curl them while it runs)\n",
        admin.addr()
    );
    if pg.is_ok() {
        seed_tenants(&sup).await?;
    }

    // Health events, as an operator would see them.
    let mut events = sup.subscribe();
    let started = Instant::now();
    let event_log = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => println!(
                    "  [{:>5.1}s] event: {:<6} {:?}",
                    started.elapsed().as_secs_f64(),
                    e.pool,
                    e.kind
                ),
                Err(EventError::Missed { missed }) => println!("  (missed {missed} events)"),
                Err(EventError::Closed) => break,
            }
        }
    });

    // The pipeline: enrichers -> batching sink.
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<String>(10_000);
    let sink = tokio::spawn(ship(sup.clone(), rx, counters.clone()));
    let mut enrichers = Vec::new();
    for worker in 0..ENRICHERS {
        enrichers.push(tokio::spawn(enrich(
            sup.clone(),
            worker as u64,
            tx.clone(),
            counters.clone(),
            stop.clone(),
        )));
    }
    drop(tx);

    // Live progress; the geo-IP outage half-way.
    let mut last = 0;
    let mut outage_done = false;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !outage_done && started.elapsed() >= duration / 2 {
            outage_done = true;
            println!(
                "  [{:>5.1}s] -- the geo-IP API goes away for 3 s --",
                started.elapsed().as_secs_f64()
            );
            geo.outage(Duration::from_secs(3));
        }
        let records = counters.records.load(Ordering::Relaxed);
        let snap = sup.metrics().await?;
        println!(
            "  [{:>5.1}s] {:>7} records ({:>6}/s), {:>6} lines shipped | {}",
            started.elapsed().as_secs_f64(),
            records,
            records - last,
            counters.shipped.load(Ordering::Relaxed),
            pool_line(&snap)
        );
        last = records;
    }
    stop.store(true, Ordering::Relaxed);
    for e in enrichers {
        e.await?;
    }
    sink.await?;
    let elapsed = started.elapsed();

    let snap = sup.metrics().await?;
    let report = sup.shutdown().await?;
    event_log.await?; // ends: shutdown closes the event stream
    print_summary(
        &snap,
        &counters,
        elapsed,
        loki.received.load(Ordering::Relaxed),
    );
    println!("\nshut down in {:?}; every connection closed", report.took);
    Ok(())
}

/// One enricher: makes records, looks up tenant and location, hands lines to the sink.
async fn enrich(
    sup: Supervisor,
    worker: u64,
    tx: mpsc::Sender<String>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let geoip = sup.http("geoip").expect("geoip pool");
    let db = sup.postgres("db").ok();
    let cache = sup.redis("cache").ok();
    let mut rng = fastrand::Rng::with_seed(worker);
    while !stop.load(Ordering::Relaxed) {
        let tenant_id = rng.i32(1..=TENANTS);
        let ip = format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(1..255));
        let tenant = tenant_name(tenant_id, db.as_ref(), cache.as_ref(), &counters).await;
        let geo = match geoip
            .request(get(&format!("/geo/{ip}")), Duration::from_millis(500))
            .await
        {
            Ok(resp) if resp.status() == StatusCode::OK => {
                String::from_utf8_lossy(resp.body()).into_owned()
            }
            _ => {
                counters.geo_failed.fetch_add(1, Ordering::Relaxed);
                "unknown".into()
            }
        };
        let line = format!("level=info tenant={tenant} ip={ip} geo={geo} msg=\"request served\"");
        counters.records.fetch_add(1, Ordering::Relaxed);
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

async fn tenant_name(
    id: i32,
    db: Option<&PoolHandle<Postgres>>,
    cache: Option<&PoolHandle<Redis>>,
    counters: &Counters,
) -> String {
    let key = format!("poolvisor_demo:tenant:{id}");
    if let Some(cache) = cache {
        if let Ok(mut conn) = cache.checkout().await {
            let hit: Result<Option<String>, _> =
                redis::cmd("GET").arg(&key).query_async(&mut *conn).await;
            if let Ok(Some(name)) = hit {
                counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return name;
            }
        }
    }
    let name = match db {
        Some(db) => {
            counters.db_lookups.fetch_add(1, Ordering::Relaxed);
            match db.checkout().await {
                Ok(conn) => conn
                    .query_opt(
                        "SELECT name FROM poolvisor_demo_tenants WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .ok()
                    .flatten()
                    .map(|row| row.get::<_, String>(0))
                    .unwrap_or_else(|| "unknown".into()),
                Err(_) => "unknown".into(),
            }
        }
        None => format!("tenant-{id}"),
    };
    if let Some(cache) = cache {
        if let Ok(mut conn) = cache.checkout().await {
            let _: Result<(), _> = redis::cmd("SET")
                .arg(&key)
                .arg(&name)
                .arg("EX")
                .arg(5)
                .query_async(&mut *conn)
                .await;
        }
    }
    name
}

/// The sink: batches lines and pushes them in Loki's JSON push format.
async fn ship(sup: Supervisor, mut rx: mpsc::Receiver<String>, counters: Arc<Counters>) {
    let loki = sup.http("loki").expect("loki pool");
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let flush = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(flush);
        let closed = loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => {
                        batch.push(line);
                        if batch.len() >= BATCH {
                            break false;
                        }
                    }
                    None => break true,
                },
                _ = &mut flush => break false,
            }
        };
        if !batch.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_string();
            let values: Vec<[&str; 2]> = batch.iter().map(|l| [now.as_str(), l.as_str()]).collect();
            let body = serde_json::json!({
                "streams": [{ "stream": { "app": "poolvisor-demo" }, "values": values }]
            });
            let req = Request::post("/loki/api/v1/push")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("request");
            if let Ok(resp) = loki.request(req, Duration::from_secs(2)).await {
                if resp.status() == StatusCode::NO_CONTENT {
                    counters
                        .shipped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                }
            }
            batch.clear();
        }
        if closed {
            return;
        }
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn pool_line(snap: &MetricsSnapshot) -> String {
    snap.pools
        .iter()
        .map(|p| format!("{} {}/{} {}", p.name, p.in_use, p.open, p.status.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(snap: &MetricsSnapshot, c: &Counters, elapsed: Duration, loki_received: u64) {
    let records = c.records.load(Ordering::Relaxed);
    println!(
        "\n== {records} records in {:.1} s ({:.0}/s) ==",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64()
    );
    println!(
        "shipped {} lines in {} batches (the sink received {loki_received}); tenant cache hits {}, db lookups {}, geo lookups failed {}",
        c.shipped.load(Ordering::Relaxed),
        c.batches.load(Ordering::Relaxed),
        c.cache_hits.load(Ordering::Relaxed),
        c.db_lookups.load(Ordering::Relaxed),
        c.geo_failed.load(Ordering::Relaxed),
    );
    println!(
        "global budget: {} connections, peak {} in use at once\n",
        snap.budget.max_connections, snap.budget.peak
    );
    println!(
        "| {:<6} | {:<8} | {:>9} | {:>6} | {:>9} | {:>9} | {:>9} | {:>9} | events",
        "pool", "backend", "checkouts", "opened", "peak used", "wait p50", "wait p99", "failures"
    );
    let mut events: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &snap.events {
        events
            .entry(&e.pool)
            .or_default()
            .push(format!("{} {}", e.kind, e.count));
    }
    for p in &snap.pools {
        let failures = p.checkouts.timeout + p.checkouts.unavailable + p.checkouts.exhausted;
        println!(
            "| {:<6} | {:<8} | {:>9} | {:>6} | {:>9} | {:>9} | {:>9} | {:>9} | {}",
            p.name,
            p.backend,
            p.checkouts.ok,
            p.connects_ok,
            p.peak_in_use,
            fmt_dur(p.wait.p50),
            fmt_dur(p.wait.p99),
            failures,
            events
                .get(p.name.as_str())
                .map(|v| v.join(", "))
                .unwrap_or_default()
        );
    }
}

fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_micros(1) {
        "<1µs".into()
    } else if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn parse_duration() -> Result<Duration, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--duration") {
        Some(i) => {
            let text = args
                .get(i + 1)
                .ok_or("--duration needs a value, e.g. 15s")?;
            let d =
                humantime::parse_duration(text).map_err(|e| format!("--duration {text}: {e}"))?;
            if d < Duration::from_secs(2) {
                return Err("--duration must be at least 2s".into());
            }
            Ok(d)
        }
        None => Ok(Duration::from_secs(15)),
    }
}

async fn probe_postgres(url: &str) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Ok(Err(e)) => Err(poolvisor::redact(&e.to_string())),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

async fn probe_redis(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| poolvisor::redact(&e.to_string()))?;
    let connect = client.get_multiplexed_async_connection();
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(mut conn)) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(poolvisor::redact(&e.to_string())),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

async fn seed_tenants(sup: &Supervisor) -> Result<(), Box<dyn std::error::Error>> {
    let db = sup.postgres("db")?;
    let conn = db.checkout().await?;
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS poolvisor_demo_tenants (id int PRIMARY KEY, name text NOT NULL)",
    )
    .await?;
    conn.execute(
        "INSERT INTO poolvisor_demo_tenants SELECT i, 'acme-' || i FROM generate_series(1, $1::int) i ON CONFLICT (id) DO NOTHING",
        &[&TENANTS],
    )
    .await?;
    Ok(())
}

/// The Loki-like sink: accepts `POST /loki/api/v1/push` with a JSON body and counts the
/// lines it received.
struct LokiSink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
}

impl LokiSink {
    async fn start() -> std::io::Result<LokiSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let ok = req.uri().path() == "/loki/api/v1/push";
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let lines = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| {
                                    Some(
                                        v["streams"]
                                            .as_array()?
                                            .iter()
                                            .filter_map(|s| s["values"].as_array())
                                            .map(|v| v.len())
                                            .sum::<usize>(),
                                    )
                                });
                            let status = match (ok, lines) {
                                (true, Some(n)) => {
                                    counter.fetch_add(n as u64, Ordering::Relaxed);
                                    StatusCode::NO_CONTENT
                                }
                                _ => StatusCode::BAD_REQUEST,
                            };
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(LokiSink { addr, received })
    }
}

/// The geo-IP API: `GET /geo/{ip}` answers a country after ~1 ms. `outage` closes the port
/// and every connection for a while, then serves again on the same port.
struct GeoApi {
    addr: SocketAddr,
    down: watch::Sender<Option<Duration>>,
}

impl GeoApi {
    async fn start() -> std::io::Result<GeoApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (down, mut down_rx) = watch::channel(None::<Duration>);
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let l = match listener.take() {
                    Some(l) => l,
                    None => match TcpListener::bind(addr).await {
                        Ok(l) => l,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (close_all, _) = watch::channel(());
                let outage = loop {
                    tokio::select! {
                        accepted = l.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let mut closed = close_all.subscribe();
                            tokio::spawn(async move {
                                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                    let ip = req.uri().path().trim_start_matches("/geo/");
                                    let country = ["NL", "DE", "FR", "US", "BR", "JP"][ip.len() % 6];
                                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(country))))
                                });
                                let serve = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
                                tokio::select! {
                                    _ = serve => {}
                                    _ = closed.changed() => {}
                                }
                            });
                        }
                        changed = down_rx.changed() => {
                            if changed.is_err() { return; }
                            if let Some(d) = *down_rx.borrow_and_update() { break d; }
                        }
                    }
                };
                drop(l);
                let _ = close_all.send(());
                tokio::time::sleep(outage).await;
            }
        });
        Ok(GeoApi { addr, down })
    }

    fn outage(&self, d: Duration) {
        let _ = self.down.send(Some(d));
    }
}
