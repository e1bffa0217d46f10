//! The global budget, proven against the servers' own connection counts.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use poolvisor::backends::{Postgres, Redis};
use poolvisor::prelude::*;

/// A PostgreSQL pool and a Redis pool share a budget of 6 under 40 tasks with churn
/// (some connections discarded, so the pools keep closing and opening). A sampler counts
/// this test's connections on both servers (`pg_stat_activity`, `CLIENT LIST`) every
/// 10 ms while the load runs; the most it ever sees is within the budget.
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
                let open = pg_count(&pg, &app).await + redis_count(&mut redis, &name).await;
                max_seen.fetch_max(open, Ordering::AcqRel);
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
