//! The measuring harness shared by the benchmarks: N tasks on a 2-worker multi-thread
//! runtime run one operation in a loop; each operation is timed from just before checkout
//! to just after the guard is dropped, followed by `consume_budget()`. 0.5 s warm-up, then
//! a measured window (3 s unless `--seconds` says otherwise).
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub mod noop;

/// One operation under test (checkout, use, drop).
pub trait Op: Clone + Send + Sync + 'static {
    fn run(&self) -> impl Future<Output = ()> + Send;
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub jain: f64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub warmup: Duration,
    pub measure: Duration,
    pub passes: usize,
    /// `--only NAME`: measure only this pool (for profiling).
    pub only: Option<String>,
    /// `--tasks N`: measure only cases with this many tasks.
    pub tasks: Option<usize>,
}

impl Settings {
    pub fn wants(&self, pool: &str, tasks: usize) -> bool {
        self.only.as_deref().is_none_or(|o| o == pool) && self.tasks.is_none_or(|t| t == tasks)
    }
}

impl Settings {
    /// `--seconds S` (measured window), `--passes N` (median of N), `--quick`.
    pub fn from_args() -> Self {
        let mut s = Settings {
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(3),
            passes: 1,
            only: None,
            tasks: None,
        };
        let args: Vec<String> = std::env::args().collect();
        let mut i = 1;
        while i < args.len() {
            match args[i].as_str() {
                "--seconds" => {
                    s.measure = Duration::from_secs_f64(args[i + 1].parse().expect("--seconds S"));
                    i += 1;
                }
                "--passes" => {
                    s.passes = args[i + 1].parse().expect("--passes N");
                    i += 1;
                }
                "--only" => {
                    s.only = Some(args[i + 1].clone());
                    i += 1;
                }
                "--tasks" => {
                    s.tasks = Some(args[i + 1].parse().expect("--tasks N"));
                    i += 1;
                }
                "--quick" => {
                    s.warmup = Duration::from_millis(100);
                    s.measure = Duration::from_millis(500);
                }
                _ => {} // cargo bench passes --bench
            }
            i += 1;
        }
        s
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Latencies go into a few shared histograms (task `i` uses shard `i % SHARDS`), not one
/// per task: a histogram at 3 significant digits is ~230 KiB, and 10,000 of them would
/// measure the cache, not the pool. A shard's lock is held for one `record`.
const SHARDS: usize = 16;

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// Runs `tasks` copies of `op` and measures them.
pub async fn measure<O: Op>(op: O, tasks: usize, settings: &Settings) -> Outcome {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let shards: Arc<Vec<parking_lot::Mutex<Histogram<u64>>>> = Arc::new(
        (0..SHARDS)
            .map(|_| parking_lot::Mutex::new(histogram()))
            .collect(),
    );
    let mut handles = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let op = op.clone();
        let phase = phase.clone();
        let shards = shards.clone();
        handles.push(tokio::spawn(async move {
            let shard = &shards[i % SHARDS];
            let mut count = 0u64;
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == STOP {
                    break;
                }
                let t0 = Instant::now();
                op.run().await;
                let dt = t0.elapsed();
                if p == MEASURE {
                    shard.lock().saturating_record(dt.as_nanos() as u64);
                    count += 1;
                }
                tokio::task::consume_budget().await;
            }
            count
        }));
    }
    tokio::time::sleep(settings.warmup).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(settings.measure).await;
    phase.store(STOP, Ordering::Relaxed);
    let window = started.elapsed();
    let mut counts = Vec::with_capacity(tasks);
    for h in handles {
        counts.push(h.await.expect("bench task") as f64);
    }
    let mut all = histogram();
    for shard in shards.iter() {
        all.add(&*shard.lock()).unwrap();
    }
    // Operations that finished after the window closed are few and counted; the window
    // is measured, so ops/s is total / window.
    let total: f64 = counts.iter().sum();
    let sq: f64 = counts.iter().map(|c| c * c).sum();
    let us = |v: u64| v as f64 / 1e3;
    Outcome {
        ops_per_s: total / window.as_secs_f64(),
        p50_us: us(all.value_at_quantile(0.5)),
        p99_us: us(all.value_at_quantile(0.99)),
        p999_us: us(all.value_at_quantile(0.999)),
        max_us: us(all.max()),
        jain: if sq == 0.0 {
            0.0
        } else {
            total * total / (counts.len() as f64 * sq)
        },
    }
}

/// The median outcome (by ops/s) of several.
pub fn median(mut outcomes: Vec<Outcome>) -> Outcome {
    outcomes.sort_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
    outcomes[outcomes.len() / 2].clone()
}

pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}

pub fn header() {
    println!("| case | pool | ops/s | p50 µs | p99 µs | p99.9 µs | max µs | Jain |");
    println!("|---|---|---|---|---|---|---|---|");
}

pub fn row(case: &str, pool: &str, o: &Outcome) {
    println!(
        "| {case} | {pool} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.3} |",
        fmt_rate(o.ops_per_s),
        o.p50_us,
        o.p99_us,
        o.p999_us,
        o.max_us,
        o.jain
    );
}

/// A contender: measures `tasks` tasks on a pool of `size` connections.
pub type Contender =
    Box<dyn Fn(usize, usize, Settings) -> std::pin::Pin<Box<dyn Future<Output = Outcome>>>>;

/// Runs every contender on every (tasks, size) case, `passes` times (interleaved, a fresh
/// runtime each), and prints the medians and the ratios to raw connections.
pub fn run_grid(
    title: &str,
    cases: &[(usize, usize)],
    contenders: &[(&str, Contender)],
    settings: &Settings,
) -> Vec<Vec<Outcome>> {
    let mut results: Vec<Vec<Vec<Outcome>>> = vec![vec![Vec::new(); contenders.len()]; cases.len()];
    for _ in 0..settings.passes {
        for (c, &(tasks, size)) in cases.iter().enumerate() {
            for (k, (name, run)) in contenders.iter().enumerate() {
                if !settings.wants(name, tasks) {
                    continue;
                }
                let o = runtime().block_on(run(tasks, size, settings.clone()));
                results[c][k].push(o);
            }
        }
    }
    println!(
        "{title}: {} pass(es), {:?} warm-up, {:?} measured per case, 2 workers\n",
        settings.passes, settings.warmup, settings.measure
    );
    header();
    let meds: Vec<Vec<Outcome>> = results
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|o| {
                    if o.is_empty() {
                        Outcome::none()
                    } else {
                        median(o)
                    }
                })
                .collect()
        })
        .collect();
    for (c, &(tasks, size)) in cases.iter().enumerate() {
        for (k, (name, _)) in contenders.iter().enumerate() {
            if meds[c][k].ops_per_s > 0.0 {
                row(&format!("{tasks} / {size}"), name, &meds[c][k]);
            }
        }
    }
    meds
}

/// Prints poolvisor's ratios to raw connections and to the other pools, for grids whose
/// contenders are, in order: poolvisor, bb8, bb8 no test, deadpool, raw (1 conn/task).
pub fn print_ratios(title: &str, cases: &[(usize, usize)], meds: &[Vec<Outcome>]) {
    println!("\n{title}");
    for (c, &(tasks, size)) in cases.iter().enumerate() {
        let (pv, raw) = (&meds[c][0], &meds[c][4]);
        if pv.ops_per_s > 0.0 && raw.ops_per_s > 0.0 {
            println!(
                "- {tasks} / {size}: {:.2}× raw, {:.2}× bb8, {:.2}× bb8 no test, {:.2}× deadpool; Jain {:.3}, max {:.1} ms",
                pv.ops_per_s / raw.ops_per_s,
                pv.ops_per_s / meds[c][1].ops_per_s,
                pv.ops_per_s / meds[c][2].ops_per_s,
                pv.ops_per_s / meds[c][3].ops_per_s,
                pv.jain,
                pv.max_us / 1e3
            );
        }
    }
}

/// Ratios for the contenders at index 6 and 7, `poolvisor shared` spread and packed (see
/// the benches' lists).
pub fn print_shared_ratios(title: &str, cases: &[(usize, usize)], meds: &[Vec<Outcome>]) {
    println!("\n{title}");
    for (c, &(tasks, size)) in cases.iter().enumerate() {
        // Contenders 6 and 7: `checkout_shared` spread and packed.
        for (i, policy) in [(6, "spread"), (7, "packed")] {
            let (shared, bb8_no_test) = (&meds[c][i], &meds[c][2]);
            if shared.ops_per_s > 0.0 && bb8_no_test.ops_per_s > 0.0 {
                println!(
                    "- {tasks} / {size} {policy}: {:.2}× bb8 no test, {:.2}× raw, {:.2}× one shared conn; Jain {:.3}, max {:.1} ms",
                    shared.ops_per_s / bb8_no_test.ops_per_s,
                    shared.ops_per_s / meds[c][4].ops_per_s,
                    shared.ops_per_s / meds[c][5].ops_per_s,
                    shared.jain,
                    shared.max_us / 1e3
                );
            }
        }
    }
}

impl Outcome {
    pub fn none() -> Self {
        Outcome {
            ops_per_s: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            p999_us: 0.0,
            max_us: 0.0,
            jain: 0.0,
        }
    }
}
