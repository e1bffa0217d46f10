//! `mixed`: exclusive and shared checkouts on one pool at the same time (a manager whose
//! connect and validation do nothing), to show whether either kind starves the other.
//! 64 tasks check out exclusively and 8 share (`checkout_shared`), on 8 connections,
//! with a 1 s `checkout_timeout`; each kind's throughput, fairness, worst wait and
//! timeouts. bb8 and deadpool have no shared checkout, so there is no peer here.
//!
//! `cargo bench --bench mixed [-- --seconds 3 --passes 3]`

mod harness;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::noop::Noop;
use harness::{jain, runtime, Settings};
use poolvisor::{CheckoutError, PoolConfig, PoolHandle, Supervisor};
use quanta::Instant;

const EXCLUSIVE: usize = 64;
const SHARED: usize = 8;
const SIZE: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(1);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What one task saw in the measured window.
struct Seen {
    ops: u64,
    timeouts: u64,
    worst: Duration,
}

async fn caller(pool: PoolHandle<Noop>, shared: bool, phase: Arc<AtomicU8>) -> Seen {
    let mut seen = Seen {
        ops: 0,
        timeouts: 0,
        worst: Duration::ZERO,
    };
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            return seen;
        }
        let t0 = Instant::now();
        let result = if shared {
            pool.checkout_shared().await.map(drop)
        } else {
            pool.checkout().await.map(drop)
        };
        let waited = t0.elapsed();
        if p == MEASURE {
            match result {
                Ok(()) => seen.ops += 1,
                Err(CheckoutError::Timeout { .. }) => seen.timeouts += 1,
                Err(e) => panic!("checkout: {e}"),
            }
            seen.worst = seen.worst.max(waited);
        }
        tokio::task::consume_budget().await;
    }
}

async fn one_pass(settings: &Settings) -> Vec<(bool, Seen)> {
    let cfg = PoolConfig::default()
        .max_size(SIZE)
        .checkout_timeout(TIMEOUT);
    let sup = Supervisor::builder()
        .pool("noop", Noop, cfg)
        .start()
        .await
        .unwrap();
    let pool = sup.pool::<Noop>("noop").unwrap();
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = (0..EXCLUSIVE + SHARED)
        .map(|i| {
            let shared = i >= EXCLUSIVE;
            let task = tokio::spawn(caller(pool.clone(), shared, phase.clone()));
            (shared, task)
        })
        .collect();
    tokio::time::sleep(settings.warmup).await;
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(settings.measure).await;
    phase.store(STOP, Ordering::Relaxed);
    let mut seen = Vec::with_capacity(tasks.len());
    for (shared, task) in tasks {
        seen.push((shared, task.await.expect("bench task")));
    }
    sup.shutdown().await.unwrap();
    seen
}

fn main() {
    let settings = Settings::from_args();
    println!(
        "mixed: {EXCLUSIVE} exclusive and {SHARED} shared tasks on {SIZE} connections, checkout_timeout {TIMEOUT:?}; \
         {} pass(es), {:?} warm-up, {:?} measured\n",
        settings.passes, settings.warmup, settings.measure
    );
    println!("| pass | kind | tasks | ops/s | Jain | worst wait ms | timeouts |");
    println!("|---|---|---|---|---|---|---|");
    for pass in 1..=settings.passes {
        let seen = runtime().block_on(one_pass(&settings));
        for (kind, shared) in [("exclusive", false), ("shared", true)] {
            let mine: Vec<&Seen> = seen
                .iter()
                .filter(|(s, _)| *s == shared)
                .map(|(_, seen)| seen)
                .collect();
            let counts: Vec<f64> = mine.iter().map(|s| s.ops as f64).collect();
            let ops: f64 = counts.iter().sum();
            let worst = mine.iter().map(|s| s.worst).max().unwrap_or_default();
            let timeouts: u64 = mine.iter().map(|s| s.timeouts).sum();
            println!(
                "| {pass} | {kind} | {} | {} | {:.3} | {:.1} | {timeouts} |",
                mine.len(),
                harness::fmt_rate(ops / settings.measure.as_secs_f64()),
                jain(&counts),
                worst.as_secs_f64() * 1e3,
            );
        }
    }
}
