//! `pg_select1`: checkout, `simple_query("SELECT 1")`, drop — poolvisor (default config)
//! against bb8-postgres (default, and without its check-out test), deadpool-postgres
//! (default), raw connections (one per task, as many tasks as connections: the limit),
//! every task taking turns on that many raw connections (what handing a connection from
//! task to task costs, with no pool), one shared client (tokio-postgres pipelines
//! concurrent queries), and a new connection per operation. Needs PostgreSQL at
//! `POOLVISOR_PG_URL` (default `postgres://root@127.0.0.1:5432/test`).
//!
//! `cargo bench --bench pg_select1 [-- --passes 3]`

mod harness;

use bb8_postgres::PostgresConnectionManager;
use harness::assigned::{turns, Assigned, Turns};
use harness::{measure, run_grid, Contender, Op, Settings};
use poolvisor::backends::Postgres;
use poolvisor::prelude::*;
use tokio_postgres::{Client, NoTls};

fn url() -> String {
    std::env::var("POOLVISOR_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

async fn select1(client: &Client) {
    let rows = client.simple_query("SELECT 1").await.expect("SELECT 1");
    debug_assert!(!rows.is_empty());
}

#[derive(Clone)]
struct Poolvisor(PoolHandle<Postgres>);
impl Op for Poolvisor {
    async fn run(&self) {
        let conn = self.0.checkout().await.expect("checkout");
        select1(&conn).await;
    }
}

#[derive(Clone)]
struct PoolvisorShared(PoolHandle<Postgres>);
impl Op for PoolvisorShared {
    async fn run(&self) {
        let conn = self.0.checkout_shared().await.expect("checkout");
        select1(&conn).await;
    }
}

#[derive(Clone)]
struct Bb8(bb8::Pool<PostgresConnectionManager<NoTls>>);
impl Op for Bb8 {
    async fn run(&self) {
        let conn = self.0.get().await.expect("checkout");
        select1(&conn).await;
    }
}

#[derive(Clone)]
struct Deadpool(deadpool_postgres::Pool);
impl Op for Deadpool {
    async fn run(&self) {
        let conn = self.0.get().await.expect("checkout");
        select1(&conn).await;
    }
}

impl Op for Assigned<Client> {
    async fn run(&self) {
        select1(self.mine()).await;
    }
}

impl Op for Turns<Client> {
    async fn run(&self) {
        select1(&*self.mine().lock().await).await;
    }
}

#[derive(Clone)]
struct Unpooled;
impl Op for Unpooled {
    async fn run(&self) {
        let (client, conn) = tokio_postgres::connect(&url(), NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(conn);
        select1(&client).await;
        drop(client);
        let _ = driver.await;
    }
}

async fn clients(n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (client, conn) = tokio_postgres::connect(&url(), NoTls)
            .await
            .expect("PostgreSQL reachable");
        tokio::spawn(conn);
        out.push(client);
    }
    out
}

/// `checkout_shared` with every connection open (the same connection count as the other
/// pools) and placed by `policy`.
fn shared(policy: SharePolicy) -> Contender {
    Box::new(move |tasks, size, s: Settings| {
        Box::pin(async move {
            let cfg = PoolConfig::default()
                .max_size(size)
                .min_idle(size)
                .share_policy(policy);
            let sup = Supervisor::builder()
                .postgres("db", &url(), cfg)
                .start()
                .await
                .unwrap();
            let o = measure(PoolvisorShared(sup.postgres("db").unwrap()), tasks, &s).await;
            sup.shutdown().await.unwrap();
            o
        })
    })
}

fn contenders() -> Vec<(&'static str, Contender)> {
    vec![
        (
            "poolvisor",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move {
                    let sup = Supervisor::builder()
                        .postgres("db", &url(), PoolConfig::default().max_size(size))
                        .start()
                        .await
                        .unwrap();
                    let o = measure(Poolvisor(sup.postgres("db").unwrap()), tasks, &s).await;
                    sup.shutdown().await.unwrap();
                    o
                })
            }),
        ),
        (
            "bb8",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move {
                    let m = PostgresConnectionManager::new_from_stringlike(url(), NoTls).unwrap();
                    let p = bb8::Pool::builder()
                        .max_size(size as u32)
                        .build(m)
                        .await
                        .unwrap();
                    measure(Bb8(p), tasks, &s).await
                })
            }),
        ),
        (
            "bb8 no test",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move {
                    let m = PostgresConnectionManager::new_from_stringlike(url(), NoTls).unwrap();
                    let p = bb8::Pool::builder()
                        .max_size(size as u32)
                        .test_on_check_out(false)
                        .build(m)
                        .await
                        .unwrap();
                    measure(Bb8(p), tasks, &s).await
                })
            }),
        ),
        (
            "deadpool",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move {
                    let mut cfg = deadpool_postgres::Config::new();
                    cfg.url = Some(url());
                    cfg.pool = Some(deadpool_postgres::PoolConfig::new(size));
                    let p = cfg
                        .create_pool(Some(deadpool_postgres::Runtime::Tokio1), NoTls)
                        .unwrap();
                    measure(Deadpool(p), tasks, &s).await
                })
            }),
        ),
        (
            "raw (1 conn/task)",
            Box::new(|_tasks, size, s: Settings| {
                Box::pin(async move {
                    let op = Assigned::new(clients(size).await);
                    measure(op, size, &s).await
                })
            }),
        ),
        (
            "one shared conn",
            Box::new(|tasks, _size, s: Settings| {
                Box::pin(async move {
                    let op = Assigned::new(clients(1).await);
                    measure(op, tasks, &s).await
                })
            }),
        ),
        ("poolvisor shared spread", shared(SharePolicy::Spread)),
        ("poolvisor shared packed", shared(SharePolicy::Pack)),
        (
            "raw (tasks take turns)",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move { measure(turns(clients(size).await), tasks, &s).await })
            }),
        ),
    ]
}

fn main() {
    let settings = Settings::from_args();
    let cases = [(16, 8), (64, 8), (16, 16), (64, 16)];
    let list = contenders();
    let grid = run_grid("pg_select1", &cases, &list, &settings);
    harness::print_ratios(
        "poolvisor / raw connections (target ≥ 0.95), and against the other pools:",
        &cases,
        &grid,
    );
    harness::print_shared_ratios(
        "poolvisor checkout_shared / bb8 without its check-out test, same connections (target at 64 tasks ≥ 1.4×; a PostgreSQL pool spreads by default):",
        &cases,
        &grid,
    );
    println!("\nnew connection per operation:");
    for tasks in [1, 16] {
        if !settings.wants("unpooled", tasks) && settings.only.is_some() {
            continue;
        }
        let o = harness::runtime().block_on(measure(Unpooled, tasks, &settings));
        harness::row(&format!("{tasks} tasks"), "new conn per op", &o);
    }
}
