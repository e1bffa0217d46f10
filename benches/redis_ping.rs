//! `redis_ping`: checkout, `PING`, drop — poolvisor (default config) against bb8
//! (default, and without its check-out test), deadpool-redis (default), raw connections
//! (one per task, as many tasks as connections: the limit), every task taking turns on
//! that many raw connections (what handing a connection from task to task costs, with
//! no pool), one shared multiplexed connection, and a new connection per operation.
//! Needs Redis at `POOLVISOR_REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! `cargo bench --bench redis_ping [-- --passes 3]`

mod harness;

use std::sync::Arc;

use harness::assigned::{fifo, turns, Assigned, Fifo, Turns};
use harness::{measure, run_grid, Contender, Op, Settings};
use poolvisor::backends::Redis;
use poolvisor::prelude::*;
use redis::aio::MultiplexedConnection;

fn url() -> String {
    std::env::var("POOLVISOR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn ping<C: redis::aio::ConnectionLike>(conn: &mut C) {
    let pong: String = redis::cmd("PING").query_async(conn).await.expect("PING");
    debug_assert_eq!(pong, "PONG");
}

#[derive(Clone)]
struct Poolvisor(PoolHandle<Redis>);
impl Op for Poolvisor {
    async fn run(&self) {
        let mut conn = self.0.checkout().await.expect("checkout");
        ping(&mut *conn).await;
    }
}

#[derive(Clone)]
struct PoolvisorShared(PoolHandle<Redis>);
impl Op for PoolvisorShared {
    async fn run(&self) {
        let conn = self.0.checkout_shared().await.expect("checkout");
        ping(&mut conn.handle()).await;
    }
}

#[derive(Clone)]
struct Bb8(bb8::Pool<bb8_redis::RedisConnectionManager>);
impl Op for Bb8 {
    async fn run(&self) {
        let mut conn = self.0.get().await.expect("checkout");
        ping(&mut *conn).await;
    }
}

#[derive(Clone)]
struct Deadpool(deadpool_redis::Pool);
impl Op for Deadpool {
    async fn run(&self) {
        let mut conn = self.0.get().await.expect("checkout");
        ping(&mut *conn).await;
    }
}

impl Op for Assigned<MultiplexedConnection> {
    async fn run(&self) {
        ping(&mut self.mine().clone()).await;
    }
}

impl Op for Turns<MultiplexedConnection> {
    async fn run(&self) {
        ping(&mut *self.mine().lock().await).await;
    }
}

impl Op for Arc<Fifo<MultiplexedConnection>> {
    async fn run(&self) {
        ping(self.get().await.conn()).await;
    }
}

#[derive(Clone)]
struct Unpooled(redis::Client);
impl Op for Unpooled {
    async fn run(&self) {
        let mut conn = self
            .0
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        ping(&mut conn).await;
    }
}

async fn connections(n: usize) -> Vec<MultiplexedConnection> {
    let client = redis::Client::open(url()).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            client
                .get_multiplexed_async_connection()
                .await
                .expect("Redis reachable"),
        );
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
                .redis("r", &url(), cfg)
                .start()
                .await
                .unwrap();
            let o = measure(PoolvisorShared(sup.redis("r").unwrap()), tasks, &s).await;
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
                        .redis("r", &url(), PoolConfig::default().max_size(size))
                        .start()
                        .await
                        .unwrap();
                    let o = measure(Poolvisor(sup.redis("r").unwrap()), tasks, &s).await;
                    sup.shutdown().await.unwrap();
                    o
                })
            }),
        ),
        (
            "bb8",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move {
                    let m = bb8_redis::RedisConnectionManager::new(url()).unwrap();
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
                    let m = bb8_redis::RedisConnectionManager::new(url()).unwrap();
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
                    let p = deadpool_redis::Config::from_url(url())
                        .builder()
                        .unwrap()
                        .max_size(size)
                        .runtime(deadpool_redis::Runtime::Tokio1)
                        .build()
                        .unwrap();
                    measure(Deadpool(p), tasks, &s).await
                })
            }),
        ),
        (
            "raw (1 conn/task)",
            Box::new(|_tasks, size, s: Settings| {
                Box::pin(async move {
                    let op = Assigned::new(connections(size).await);
                    measure(op, size, &s).await
                })
            }),
        ),
        (
            "one shared conn",
            Box::new(|tasks, _size, s: Settings| {
                Box::pin(async move {
                    let op = Assigned::new(connections(1).await);
                    measure(op, tasks, &s).await
                })
            }),
        ),
        ("poolvisor shared spread", shared(SharePolicy::Spread)),
        ("poolvisor shared packed", shared(SharePolicy::Pack)),
        (
            "raw (tasks take turns)",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move { measure(turns(connections(size).await), tasks, &s).await })
            }),
        ),
        (
            "raw (one FIFO)",
            Box::new(|tasks, size, s: Settings| {
                Box::pin(async move { measure(fifo(connections(size).await), tasks, &s).await })
            }),
        ),
    ]
}

fn main() {
    let settings = Settings::from_args();
    let cases = [(16, 8), (64, 8), (16, 16), (64, 16)];
    let list = contenders();
    let grid = run_grid("redis_ping", &cases, &list, &settings);
    harness::print_ratios(
        "poolvisor / raw connections (target ≥ 0.95); tail and fairness at 64 / 8 (target Jain ≥ 0.99, max ≤ 50 ms):",
        &cases,
        &grid,
    );
    harness::print_shared_ratios(
        "poolvisor checkout_shared / bb8 without its check-out test, same connections (target at 64 tasks ≥ 2×; a Redis pool packs by default):",
        &cases,
        &grid,
    );
    // The unpooled baseline: a new connection per operation.
    let client = redis::Client::open(url()).unwrap();
    println!("\nnew connection per operation:");
    for tasks in [1, 16] {
        if !settings.wants("unpooled", tasks) && settings.only.is_some() {
            continue;
        }
        let o = harness::runtime().block_on(measure(Unpooled(client.clone()), tasks, &settings));
        harness::row(&format!("{tasks} tasks"), "new conn per op", &o);
    }
}
