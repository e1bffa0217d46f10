//! Proofs against the servers' own connection counts (`pg_stat_activity`, `CLIENT LIST`):
//! the global budget and the reserves under load, connections moving from a busy pool to
//! another pool's callers, and shutdown closing every socket.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use poolvisor::backends::{Postgres, Redis};
use poolvisor::prelude::*;

/// A PostgreSQL pool and a Redis pool share a budget of 6 under 40 tasks with churn
/// (some connections discarded, so the pools keep closing and opening). A sampler counts
/// this test's connections on both servers (`pg_stat_activity`, `CLIENT LIST`, read as
/// [`open_on_both`] says) every 10 ms while the load runs; the most it ever sees is within
/// the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_holds_against_the_servers_own_counts() {
    const BUDGET: usize = 6;
    let app = unique_name("pv_budget_pg");
    let name = unique_name("pv_budget_redis");
    let cfg = PoolConfig::default()
        .max_size(5)
        .checkout_timeout(Duration::from_secs(10));
    let sup = Supervisor::builder()
        .max_connections(BUDGET)
        .graceful_pool(
            "db",
            "postgres",
            Postgres::from_url(&pg_url_named(&app)).unwrap(),
            cfg.clone(),
        )
        .graceful_pool(
            "cache",
            "redis",
            Redis::from_url(&redis_url()).unwrap().client_name(&name),
            cfg,
        )
        .start()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_seen, samples) = (stop.clone(), max_seen.clone(), samples.clone());
        let (app, name) = (app.clone(), name.clone());
        tokio::spawn(async move {
            let pg = pg_admin().await;
            let mut redis = redis_admin().await;
            while !stop.load(Ordering::Acquire) {
                let open = open_on_both(&pg, &[&app], &mut redis, &name).await;
                max_seen.fetch_max(open.total, Ordering::AcqRel);
                samples.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let db = sup.postgres("db").unwrap();
    let cache = sup.redis("cache").unwrap();
    let mut tasks = Vec::new();
    for t in 0..40u64 {
        let (db, cache) = (db.clone(), cache.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t);
            for _ in 0..150 {
                if t % 2 == 0 {
                    let conn = db.checkout().await.expect("pg checkout");
                    conn.simple_query("SELECT 1").await.expect("SELECT 1");
                    if rng.u8(..) < 8 {
                        conn.discard();
                    }
                } else {
                    let mut conn = cache.checkout().await.expect("redis checkout");
                    let _: String = redis::cmd("PING")
                        .query_async(&mut *conn)
                        .await
                        .expect("PING");
                    if rng.u8(..) < 8 {
                        conn.discard();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Release);
    sampler.await.unwrap();
    let max_seen = max_seen.load(Ordering::Acquire);
    let samples = samples.load(Ordering::Acquire);
    let snap = sup.metrics().await.unwrap();
    let discards: u64 = snap
        .pools
        .iter()
        .flat_map(|p| p.closes.iter())
        .filter(|(r, _)| *r == poolvisor::CloseReason::Discarded)
        .map(|(_, n)| n)
        .sum();
    sup.shutdown().await.unwrap();
    eprintln!(
        "servers: at most {max_seen} of {BUDGET} over {samples} samples; {discards} discards"
    );
    assert!(
        samples >= 10,
        "the sampler ran while the load ran ({samples} samples)"
    );
    assert!(
        discards > 50,
        "the load churned connections ({discards} discarded)"
    );
    assert!(max_seen >= 4, "the load used the budget (saw {max_seen})");
    assert!(
        max_seen <= BUDGET,
        "servers saw {max_seen} connections, budget {BUDGET}"
    );
    assert!(snap.budget.peak <= BUDGET);
}

/// Three pools — two PostgreSQL, one Redis with a reserve of 2 — under 200 tasks and more
/// than 100,000 checkouts with churn. Sampled every 10 ms on the servers: the PostgreSQL
/// pools, counted in one exact snapshot of their server, never eat into the Redis pool's
/// reserve (together they stay within budget − reserve: this is where permits change
/// hands between pools and an early release would show), and the total over both servers
/// never exceeds the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_and_reserves_hold_for_three_pools_under_200_tasks() {
    const BUDGET: usize = 10;
    const RESERVE: usize = 2;
    let (app_a, app_b, name_r) = (
        unique_name("pv_b3_a"),
        unique_name("pv_b3_b"),
        unique_name("pv_b3_r"),
    );
    let cfg = PoolConfig::default()
        .max_size(8)
        .checkout_timeout(Duration::from_secs(10));
    let sup = Supervisor::builder()
        .max_connections(BUDGET)
        .graceful_pool(
            "a",
            "postgres",
            Postgres::from_url(&pg_url_named(&app_a)).unwrap(),
            cfg.clone(),
        )
        .graceful_pool(
            "b",
            "postgres",
            Postgres::from_url(&pg_url_named(&app_b)).unwrap(),
            cfg.clone(),
        )
        .graceful_pool(
            "r",
            "redis",
            Redis::from_url(&redis_url()).unwrap().client_name(&name_r),
            cfg.clone().max_size(4).reserve(RESERVE),
        )
        .start()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(parking_lot::Mutex::new((0usize, 0usize, 0usize)));
    let sampler = {
        let (stop, worst) = (stop.clone(), worst.clone());
        let (app_a, app_b, name_r) = (app_a.clone(), app_b.clone(), name_r.clone());
        tokio::spawn(async move {
            let pg = pg_admin().await;
            let mut redis = redis_admin().await;
            let mut samples = 0;
            while !stop.load(Ordering::Acquire) {
                let open = open_on_both(&pg, &[&app_a, &app_b], &mut redis, &name_r).await;
                samples += 1;
                {
                    let mut w = worst.lock();
                    w.0 = w.0.max(open.total);
                    w.1 = w.1.max(open.pg);
                    w.2 = samples;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let (a, b, r) = (
        sup.postgres("a").unwrap(),
        sup.postgres("b").unwrap(),
        sup.redis("r").unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..200u64 {
        let (a, b, r) = (a.clone(), b.clone(), r.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t);
            for _ in 0..510 {
                match t % 10 {
                    0 => {
                        let mut conn = r.checkout().await.expect("redis checkout");
                        let _: String = redis::cmd("PING")
                            .query_async(&mut *conn)
                            .await
                            .expect("PING");
                    }
                    n => {
                        let pool = if n % 2 == 0 { &a } else { &b };
                        let conn = pool.checkout().await.expect("pg checkout");
                        if rng.u8(..) < 64 {
                            conn.simple_query("SELECT 1").await.expect("SELECT 1");
                        }
                        if rng.u16(..) < 100 {
                            conn.discard();
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Release);
    sampler.await.unwrap();
    let snap = sup.metrics().await.unwrap();
    sup.shutdown().await.unwrap();
    let checkouts: u64 = snap.pools.iter().map(|p| p.checkouts.ok).sum();
    let moved: u64 = snap
        .pools
        .iter()
        .flat_map(|p| &p.closes)
        .filter(|(reason, _)| *reason == poolvisor::CloseReason::Reclaimed)
        .map(|(_, n)| n)
        .sum();
    let (max_total, max_pg, samples) = *worst.lock();
    eprintln!("servers: at most {max_total} of {BUDGET} ({max_pg} PostgreSQL) over {samples} samples, {checkouts} checkouts, {moved} connections given up to another pool");
    assert!(checkouts >= 100_000, "{checkouts} checkouts");
    assert!(samples >= 20, "{samples} samples");
    assert!(
        max_total <= BUDGET,
        "servers saw {max_total} connections, budget {BUDGET}"
    );
    assert!(
        max_pg <= BUDGET - RESERVE,
        "PostgreSQL pools held {max_pg}, eating into the reserve of {RESERVE}"
    );
    assert!(
        max_pg >= BUDGET - RESERVE - 2,
        "the load pressed on the budget ({max_pg})"
    );
}

/// `shutdown()` in the middle of a load: every connection comes back, every socket is
/// closed on the servers when it returns, and it keeps its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_closes_every_socket_within_its_deadline() {
    let (app, name) = (unique_name("pv_shut_pg"), unique_name("pv_shut_r"));
    let sup = Supervisor::builder()
        .graceful_pool(
            "db",
            "postgres",
            Postgres::from_url(&pg_url_named(&app)).unwrap(),
            PoolConfig::default().max_size(6),
        )
        .graceful_pool(
            "cache",
            "redis",
            Redis::from_url(&redis_url()).unwrap().client_name(&name),
            PoolConfig::default().max_size(6),
        )
        .start()
        .await
        .unwrap();
    let (db, cache) = (sup.postgres("db").unwrap(), sup.redis("cache").unwrap());
    let mut tasks = Vec::new();
    for t in 0..40u64 {
        let (db, cache) = (db.clone(), cache.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            loop {
                let result = if t % 2 == 0 {
                    match db.checkout().await {
                        Ok(conn) => conn
                            .simple_query("SELECT 1")
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string()),
                        Err(e) => return (ok, e),
                    }
                } else {
                    match cache.checkout().await {
                        Ok(mut conn) => redis::cmd("PING")
                            .query_async::<String>(&mut *conn)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string()),
                        Err(e) => return (ok, e),
                    }
                };
                result.expect("operations succeed until shutdown");
                ok += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg = pg_admin().await;
    let mut redis = redis_admin().await;
    assert!(pg_count(&pg, &app).await > 0 && redis_count(&mut redis, &name).await > 0);
    let deadline = Duration::from_secs(5);
    let report = sup.shutdown_within(deadline).await.unwrap();
    assert!(report.took < deadline, "{report:?}");
    assert!(
        report.pools.iter().all(|(_, d)| d.still_lent == 0),
        "{report:?}"
    );
    // Closed on the servers by the time shutdown returned: no waiting here.
    assert_eq!(pg_count(&pg, &app).await, 0);
    assert_eq!(redis_count(&mut redis, &name).await, 0);
    for t in tasks {
        let (ok, err) = t.await.unwrap();
        assert!(ok > 0);
        assert!(
            matches!(
                err,
                CheckoutError::ShutDown { .. } | CheckoutError::Draining { .. }
            ),
            "{err:?}"
        );
    }
}

/// The mechanism behind the budget proof: a closed connection's permit comes back only
/// once the server has let go of it. Right after a client closes, PostgreSQL sometimes
/// still lists the backend (seen in about 3 of 50 closes here); a freed permit must never
/// leave such a backend behind.
#[tokio::test]
async fn a_permit_is_freed_only_after_the_server_let_go() {
    let app = unique_name("pv_permit");
    let sup = Supervisor::builder()
        .max_connections(1)
        .postgres("db", &pg_url_named(&app), PoolConfig::default().max_size(1))
        .start()
        .await
        .unwrap();
    let db = sup.postgres("db").unwrap();
    let admin = pg_admin().await;
    for _ in 0..50 {
        let conn = db.checkout().await.unwrap();
        conn.simple_query("SELECT 1").await.unwrap();
        conn.discard();
        // Count on the server the moment the permit is back, not a poll interval later.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sup.budget().in_use > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the permit never came back"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pg_count(&admin, &app).await,
            0,
            "a backend outlived its permit"
        );
    }
    sup.shutdown().await.unwrap();
}

/// Two PostgreSQL pools on a budget of 4. Eight callers keep all four connections of the
/// first busy; four callers of the second come half a second later. The first closes
/// connections as they come back until the two hold two each, and the server's own
/// count (one `pg_stat_activity` snapshot over both pools, every 10 ms) never exceeds
/// the budget meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_gives_connections_to_another_pools_callers_within_the_budget() {
    const BUDGET: usize = 4;
    let (app_a, app_b) = (unique_name("pv_move_a"), unique_name("pv_move_b"));
    let cfg = PoolConfig::default()
        .max_size(BUDGET)
        .checkout_timeout(Duration::from_secs(3));
    let sup = Supervisor::builder()
        .max_connections(BUDGET)
        .graceful_pool(
            "a",
            "postgres",
            Postgres::from_url(&pg_url_named(&app_a)).unwrap(),
            cfg.clone(),
        )
        .graceful_pool(
            "b",
            "postgres",
            Postgres::from_url(&pg_url_named(&app_b)).unwrap(),
            cfg,
        )
        .start()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, worst) = (stop.clone(), worst.clone());
        let (app_a, app_b) = (app_a.clone(), app_b.clone());
        tokio::spawn(async move {
            let pg = pg_admin().await;
            while !stop.load(Ordering::Acquire) {
                let open = pg_pids(&pg, &[&app_a, &app_b]).await.len();
                worst.fetch_max(open, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let load = |pool: PoolHandle<Postgres>, tasks: usize| {
        (0..tasks)
            .map(|_| {
                let (pool, stop) = (pool.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut ops = 0u32;
                    while !stop.load(Ordering::Acquire) {
                        let conn = pool.checkout().await.expect("checkout");
                        conn.simple_query("SELECT 1").await.expect("SELECT 1");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        drop(conn);
                        ops += 1;
                    }
                    ops
                })
            })
            .collect::<Vec<_>>()
    };
    let a = load(sup.postgres("a").unwrap(), 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = load(sup.postgres("b").unwrap(), 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let admin = pg_admin().await;
    let held = (
        pg_count(&admin, &app_a).await,
        pg_count(&admin, &app_b).await,
    );
    stop.store(true, Ordering::Release);
    let b_ops: Vec<u32> = ops_of(b).await;
    ops_of(a).await;
    sampler.await.unwrap();
    sup.shutdown().await.unwrap();
    let worst = worst.load(Ordering::Acquire);
    eprintln!("server: a and b hold {held:?}, at most {worst} of {BUDGET}; b's callers: {b_ops:?}");
    assert_eq!(held, (2, 2), "connections on the server by pool");
    assert!(
        worst <= BUDGET,
        "the server saw {worst} connections, budget {BUDGET}"
    );
    assert!(
        b_ops.iter().all(|&n| n >= 20),
        "b's callers were served: {b_ops:?}"
    );
}

async fn ops_of(tasks: Vec<tokio::task::JoinHandle<u32>>) -> Vec<u32> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
