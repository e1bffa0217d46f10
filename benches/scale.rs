//! `scale`: checkout cost from 8 to 10,000 waiting tasks (and with none, for reference),
//! beside deadpool's (FIFO through tokio's semaphore: what serving that many tasks in
//! turn costs any fair pool on this machine); the time to start 1,000 pools under one
//! supervisor; memory per pool and per idle connection (heap bytes, counted by the
//! allocator while they are made, and the RSS delta beside them).
//!
//! `cargo bench --bench scale -- --passes 5`

mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
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

/// The system allocator, counting the net bytes allocated while `COUNTING` is on (off for
/// the timed rows: a relaxed load per allocation is all they pay).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static NET: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize) {
    if COUNTING.load(Relaxed) {
        NET.fetch_add(bytes, Relaxed);
    }
}

// SAFETY: every call goes to `System` unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Net heap bytes allocated from now until `stop_counting`.
fn start_counting() {
    NET.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
}

fn stop_counting() -> isize {
    COUNTING.store(false, Relaxed);
    NET.load(Relaxed)
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
        start_counting();
        let mut b = Supervisor::builder();
        for i in 0..1_000 {
            b = b.pool(format!("p{i}"), Noop, PoolConfig::default().max_size(4));
        }
        let started = Instant::now();
        let sup = b.start().await.unwrap();
        let took = started.elapsed();
        let heap = stop_counting();
        let after = rss_kib();
        println!(
            "\n1,000 pools under one supervisor: started in {took:?}; heap +{} KiB, {:.1} KiB per pool (its actor, state and one idle connection; no checkout yet); RSS +{} KiB",
            heap / 1024,
            heap as f64 / 1024.0 / 1_000.0,
            after.saturating_sub(before),
        );
        sup.shutdown().await.unwrap();

        // 10,000 idle connections in one pool: memory per idle connection.
        // Against the same pool with one idle connection, so that the pool's own cost
        // cancels out.
        let idle_pool = |n: usize| async move {
            let before = rss_kib();
            start_counting();
            let cfg = PoolConfig::default().max_size(n).min_idle(n);
            let sup = Supervisor::builder().pool("big", Noop, cfg).start().await.unwrap();
            // What the boot's connect tasks held is freed once they are reaped.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let heap = stop_counting();
            let rss = rss_kib().saturating_sub(before);
            let pool: PoolHandle<Noop> = sup.pool("big").unwrap();
            assert_eq!(pool.snapshot().open, n);
            sup.shutdown().await.unwrap();
            (heap, rss)
        };
        // Five times: what the runtime keeps of 10,000 connect tasks varies.
        let mut per_conn = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..5 {
            let (one, _) = idle_pool(1).await;
            let (many, kib) = idle_pool(10_000).await;
            per_conn.push((many - one) as f64 / 9_999.0);
            rss.push(kib);
        }
        per_conn.sort_by(f64::total_cmp);
        rss.sort();
        println!(
            "10,000 idle connections (noop: the pool's own record per connection): heap {:.0} bytes per connection over a pool with one (median of 5; {:.0}–{:.0}); RSS +{} KiB (median)",
            per_conn[2], per_conn[0], per_conn[4], rss[2],
        );
    });
}
