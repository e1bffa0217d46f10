//! `scale`: checkout cost from 8 to 10,000 waiting tasks (and with none, for reference),
//! beside deadpool's (FIFO through tokio's semaphore: what serving that many tasks in
//! turn costs any fair pool on this machine); the time to start 1,000 pools under one
//! supervisor; memory per pool and per idle connection (RSS deltas).
//!
//! `cargo bench --bench scale -- --passes 5`

mod harness;

use std::time::{Duration, Instant};

use harness::noop::{Deadpool, Noop};
use harness::{
    fmt_rate, measure, median, one_phase, progress, runtime, Op, Outcome, Ratio, Settings,
};
use poolvisor::{PoolConfig, PoolHandle, Supervisor};

#[derive(Clone)]
struct Checkout(PoolHandle<Noop>);
impl Op for Checkout {
    async fn run(&self) {
        drop(self.0.checkout().await.expect("checkout"));
    }
}

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

fn main() {
    let settings = Settings::from_args();

    // Waiting tasks beyond the pool's 8 connections: 0 is the fast path (nobody queues),
    // from 8 on every checkout queues. Rows run interleaved, pass by pass.
    const WAITING: [usize; 5] = [0, 8, 100, 1_000, 10_000];
    let mut runs: Vec<Vec<Outcome>> = vec![Vec::new(); WAITING.len()];
    let mut reference: Vec<Vec<Outcome>> = vec![Vec::new(); WAITING.len()];
    for pass in 0..settings.passes {
        for (row, waiting) in WAITING.iter().enumerate() {
            let tasks = 8 + waiting;
            // The two take turns going first, pass by pass.
            for pool in [pass % 2, 1 - pass % 2] {
                let o = runtime().block_on(async {
                    if pool == 1 {
                        let p = deadpool::managed::Pool::builder(Noop)
                            .max_size(8)
                            .build()
                            .unwrap();
                        return measure(Deadpool(p), tasks, &settings).await;
                    }
                    let cfg = PoolConfig::default()
                        .max_size(8)
                        .max_waiters(20_000)
                        .checkout_timeout(Duration::from_secs(60));
                    let sup = Supervisor::builder()
                        .pool("noop", Noop, cfg)
                        .start()
                        .await
                        .unwrap();
                    let o = measure(Checkout(sup.pool("noop").unwrap()), tasks, &settings).await;
                    sup.shutdown().await.unwrap();
                    o
                });
                let (name, into) = match pool {
                    0 => ("poolvisor", &mut runs),
                    _ => ("deadpool", &mut reference),
                };
                progress(pass, &format!("{tasks} tasks"), name, &o);
                into[row].push(o);
            }
        }
    }
    println!(
        "checkout cost against the number of waiting tasks (pool of 8, noop manager, {} pass(es)):\n",
        settings.passes
    );
    println!(
        "| waiting | tasks | ops/s | vs 8 waiting, per pass | p50 µs | p99 µs | max µs | Jain | deadpool ops/s | deadpool vs 8 waiting |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // Each row against the 8-waiting row of the same pass.
    let against_8 = |runs: &[Vec<Outcome>], row: usize| {
        Ratio::of(
            runs[row]
                .iter()
                .zip(&runs[1])
                .map(|(o, base)| (o.ops_per_s / base.ops_per_s, one_phase(&[o, base])))
                .collect(),
        )
    };
    for (row, waiting) in WAITING.iter().enumerate() {
        let o = median(runs[row].clone());
        let r = median(reference[row].clone());
        println!(
            "| {waiting} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.3} | {} | {} |",
            8 + waiting,
            fmt_rate(o.ops_per_s),
            against_8(&runs, row),
            o.p50_us,
            o.p99_us,
            o.max_us,
            o.jain,
            fmt_rate(r.ops_per_s),
            against_8(&reference, row),
        );
    }

    runtime().block_on(async {
        // 1,000 pools: start time and memory per pool (each boots one probe connection).
        let before = rss_kib();
        let mut b = Supervisor::builder();
        for i in 0..1_000 {
            b = b.pool(format!("p{i}"), Noop, PoolConfig::default().max_size(4));
        }
        let started = Instant::now();
        let sup = b.start().await.unwrap();
        let took = started.elapsed();
        let after = rss_kib();
        println!(
            "\n1,000 pools under one supervisor: started in {took:?}; RSS +{} KiB, about {:.1} KiB per pool (its actor, state and one idle connection; no checkout yet)",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / 1_000.0
        );
        sup.shutdown().await.unwrap();

        // 10,000 idle connections in one pool: memory per idle connection.
        let before = rss_kib();
        let cfg = PoolConfig::default().max_size(10_000).min_idle(10_000);
        let sup = Supervisor::builder().pool("big", Noop, cfg).start().await.unwrap();
        let pool: PoolHandle<Noop> = sup.pool("big").unwrap();
        let after = rss_kib();
        println!(
            "10,000 idle connections (noop: the pool's own record per connection): RSS +{} KiB, about {:.0} bytes per connection ({} open)",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 * 1024.0 / 10_000.0,
            pool.snapshot().open
        );
        sup.shutdown().await.unwrap();
    });
}
