//! The measuring harness shared by the benchmarks: N tasks on a 2-worker multi-thread
//! runtime run one operation in a loop; each operation is timed from just before checkout
//! to just after the guard is dropped, followed by `consume_budget()`. 0.5 s warm-up, then
//! a measured window (3 s unless `--seconds` says otherwise). The clock is the CPU's
//! time-stamp counter (`quanta`): `std::time::Instant` costs more than twice as much per
//! read, the same for every contender, which pulls every ratio toward 1.0.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quanta::Instant;

use hdrhistogram::Histogram;

pub mod assigned;
pub mod cpu;
pub mod noop;
pub mod probe;

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
    /// The CPUs' round trip (`probe`) just before and just after the measurement, in ns.
    pub round_trip_ns: [Option<f64>; 2],
    /// The slowest of the measured window's 100 ms slices over the fastest, by operations
    /// completed: below `STEADY` the speed changed within the measurement, which the two
    /// probes around it cannot see.
    pub steadiness: f64,
    /// The CPU the measured window used per operation (`cpu`), where `/proc` tells.
    pub cpu: Option<cpu::CpuUse>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub warmup: Duration,
    pub measure: Duration,
    pub passes: usize,
    /// `--only NAME[,NAME…]`: measure only these pools (for profiling or an A/B run).
    pub only: Option<Vec<String>>,
    /// `--tasks N`: measure only cases with this many tasks.
    pub tasks: Option<usize>,
    /// `--size N`: measure only cases with this many connections.
    pub size: Option<usize>,
    /// `--count K`: instead of measuring a window, every task runs `K` operations and
    /// nothing else is read (no probe, no `/proc`): for counting instructions under
    /// callgrind (`scripts/instructions.sh`).
    pub count: Option<u64>,
}

impl Settings {
    pub fn wants(&self, pool: &str, tasks: usize) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|name| name == pool))
            && self.tasks.is_none_or(|t| t == tasks)
    }

    /// Whether a case with `tasks` tasks on `size` connections is wanted.
    pub fn wants_case(&self, pool: &str, tasks: usize, size: usize) -> bool {
        self.wants(pool, tasks) && self.size.is_none_or(|n| n == size)
    }
}

impl Settings {
    /// `--seconds S` (measured window), `--passes N` (median of N), `--quick`; `--only`,
    /// `--tasks` and `--size` pick contenders and cases; `--count K` (see `count`).
    pub fn from_args() -> Self {
        let mut s = Settings {
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(3),
            passes: 1,
            only: None,
            tasks: None,
            size: None,
            count: None,
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
                    s.only = Some(args[i + 1].split(',').map(str::to_owned).collect());
                    i += 1;
                }
                "--tasks" => {
                    s.tasks = Some(args[i + 1].parse().expect("--tasks N"));
                    i += 1;
                }
                "--size" => {
                    s.size = Some(args[i + 1].parse().expect("--size N"));
                    i += 1;
                }
                "--count" => {
                    s.count = Some(args[i + 1].parse().expect("--count K"));
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

/// Latencies go into one histogram per worker thread, not one per task: a histogram at 3
/// significant digits is ~230 KiB, and 10,000 of them would measure the cache, not the
/// pool. A worker records into its own shard, so recording moves no cache line between
/// the cores; the shard's lock is only ever contended when the results are read.
const SHARDS: usize = 8;

/// The shard of the calling thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
    INDEX.with(|i| *i)
}

/// Operations are also counted by the 100 ms slice they end in (for `steadiness`).
const SLICE: Duration = Duration::from_millis(100);

/// The least `steadiness` of a measurement in one phase. This machine read 0.52–0.97
/// at a phase's usual speed and 0.19–0.36 across a phase change.
const STEADY: f64 = 0.5;

/// The most steal (`cpu`) a measurement in one phase may have seen. The fourteenth
/// session's machine read 1 % at best and up to 47 % within minutes, and its ops/s fell
/// to a quarter with it.
const MAX_STEAL: f64 = 0.05;

/// Aligned so that no two shards share a cache line.
#[repr(align(128))]
struct Shard {
    latencies: Histogram<u64>,
    /// Operations ended in each slice since the tasks started.
    slices: Vec<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// Runs `tasks` copies of `op` and measures them.
pub async fn measure<O: Op>(op: O, tasks: usize, settings: &Settings) -> Outcome {
    if let Some(k) = settings.count {
        return run_count(op, tasks, k).await;
    }
    let probed_before = probe::round_trip_ns();
    let phase = Arc::new(AtomicU8::new(WARMUP));
    // Room for the warm-up, the window, and operations that end after it.
    let n_slices =
        ((settings.warmup + settings.measure).as_millis() / SLICE.as_millis()) as usize + 4;
    let shards: Arc<Vec<parking_lot::Mutex<Shard>>> = Arc::new(
        (0..SHARDS)
            .map(|_| {
                parking_lot::Mutex::new(Shard {
                    latencies: histogram(),
                    slices: vec![0; n_slices],
                })
            })
            .collect(),
    );
    let epoch = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let op = op.clone();
        let phase = phase.clone();
        let shards = shards.clone();
        handles.push(tokio::spawn(async move {
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
                    let slice = ((t0 + dt - epoch).as_millis() / SLICE.as_millis()) as usize;
                    // No await since `op` ended: this is the thread that timed it.
                    let mut shard = shards[shard_index()].lock();
                    shard.latencies.saturating_record(dt.as_nanos() as u64);
                    let last = shard.slices.len() - 1;
                    shard.slices[slice.min(last)] += 1;
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
    let cpu_before = cpu::Sample::now();
    tokio::time::sleep(settings.measure).await;
    phase.store(STOP, Ordering::Relaxed);
    let window = started.elapsed();
    let cpu_after = cpu::Sample::now();
    let mut counts = Vec::with_capacity(tasks);
    for h in handles {
        counts.push(h.await.expect("bench task") as f64);
    }
    let probed_after = probe::round_trip_ns();
    let mut all = histogram();
    let mut slices = vec![0u64; n_slices];
    for shard in shards.iter() {
        let shard = shard.lock();
        all.add(&shard.latencies).unwrap();
        for (sum, n) in slices.iter_mut().zip(&shard.slices) {
            *sum += n;
        }
    }
    // The slices wholly inside the window.
    let first = (started - epoch).as_millis().div_ceil(SLICE.as_millis()) as usize;
    let end = ((started + window - epoch).as_millis() / SLICE.as_millis()) as usize;
    let inside = &slices[first.min(end)..end];
    let steadiness = match (inside.iter().min(), inside.iter().max()) {
        (Some(&lo), Some(&hi)) if hi > 0 => lo as f64 / hi as f64,
        _ => 1.0,
    };
    // Operations that finished after the window closed are few and counted; the window
    // is measured, so ops/s is total / window.
    let total: f64 = counts.iter().sum();
    let us = |v: u64| v as f64 / 1e3;
    Outcome {
        ops_per_s: total / window.as_secs_f64(),
        p50_us: us(all.value_at_quantile(0.5)),
        p99_us: us(all.value_at_quantile(0.99)),
        p999_us: us(all.value_at_quantile(0.999)),
        max_us: us(all.max()),
        jain: jain(&counts),
        round_trip_ns: [probed_before, probed_after],
        steadiness,
        cpu: cpu_before
            .zip(cpu_after)
            .and_then(|(a, b)| a.until(b, total)),
    }
}

/// `tasks` copies of `op` run `k` operations each (`Settings::count`); only the rate and
/// Jain are filled in.
async fn run_count<O: Op>(op: O, tasks: usize, k: u64) -> Outcome {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..k {
                    op.run().await;
                    tokio::task::consume_budget().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    let ops = tasks as u64 * k;
    eprintln!("count: {ops} operations");
    let mut o = Outcome::none();
    o.ops_per_s = ops as f64 / started.elapsed().as_secs_f64();
    o.jain = 1.0;
    o
}

/// The median outcome (by ops/s) of several.
/// Jain's fairness index over the tasks' operation counts: 1 when every task did as
/// many, 1 / n when one did them all.
pub fn jain(counts: &[f64]) -> f64 {
    let total: f64 = counts.iter().sum();
    let sq: f64 = counts.iter().map(|c| c * c).sum();
    if sq == 0.0 {
        0.0
    } else {
        total * total / (counts.len() as f64 * sq)
    }
}

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

/// One measurement as it finishes, on stderr: the tables show medians, this shows the
/// passes they came from, and the CPUs' round trip before / after it (`probe`).
pub fn progress(pass: usize, case: &str, pool: &str, o: &Outcome) {
    let ns = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
    let cpu = o.cpu.map_or_else(String::new, |c| {
        format!(
            " | CPU/op {:.2} µs here, {:.2} µs machine | idle {:.0} % | steal {:.0} %",
            c.process_us_per_op,
            c.busy_us_per_op,
            c.idle * 100.0,
            c.steal * 100.0
        )
    });
    eprintln!(
        "pass {} | {case} | {pool} | {} | p50 {:.1} µs | Jain {:.3} | round trip {} / {} ns | steady {:.2}{cpu}",
        pass + 1,
        fmt_rate(o.ops_per_s),
        o.p50_us,
        o.jain,
        ns(o.round_trip_ns[0]),
        ns(o.round_trip_ns[1]),
        o.steadiness
    );
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

/// Every pass of every contender on every case: `passes[case][contender]` in pass order.
pub struct Grid {
    pub passes: Vec<Vec<Vec<Outcome>>>,
}

/// A ratio between two contenders, taken pass by pass (each pass measures both a few
/// seconds apart, so a machine that slows down for a minute moves both), then summarised:
/// over every pass, and over the passes whose measurements all ran in one phase of the
/// machine (`probe`; the phase can change within seconds).
pub struct Ratio {
    pub all: Spread,
    /// Over the passes measured in one phase, and how many those were.
    pub one_phase: Option<(Spread, usize)>,
    pub passes: usize,
}

/// The median and range of some per-pass ratios, and a 95 % confidence interval for
/// their median.
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Distribution-free (order statistics; the sign test's binomial): the interval from
    /// the k-th smallest to the k-th largest value that holds the true median with at
    /// least 95 % probability, whatever the shape of the passes' scatter. `None` under
    /// six values, where even the whole range holds it with less.
    pub ci95: Option<(f64, f64)>,
}

/// The largest `k` for which the `k`-th smallest and `k`-th largest of `n` values bound
/// their median with at least 95 % probability: each tail, `P(Binomial(n, ½) < k)`, at
/// most 2.5 %.
fn ci_rank(n: usize) -> Option<usize> {
    let mut below = 0.0; // P(X < k), built up one term at a time
    let mut term = 0.5f64.powi(n as i32); // P(X = 0)
    let mut best = None;
    for k in 1..=n / 2 {
        below += term;
        if below > 0.025 {
            break;
        }
        best = Some(k);
        // P(X = k) from P(X = k - 1).
        term *= (n - (k - 1)) as f64 / k as f64;
    }
    best
}

impl Spread {
    /// Of at least one value.
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        (n > 0).then(|| Spread {
            // Of an even number of values, the mean of the two middle ones.
            median: (values[(n - 1) / 2] + values[n / 2]) / 2.0,
            min: values[0],
            max: values[n - 1],
            ci95: ci_rank(n).map(|k| (values[k - 1], values[n - k])),
        })
    }
}

impl Ratio {
    /// Per pass: the ratio, and whether the outcomes it came from ran in one phase.
    pub fn of(per_pass: Vec<(f64, bool)>) -> Ratio {
        let passes = per_pass.len();
        let one_phase: Vec<f64> = per_pass.iter().filter(|p| p.1).map(|p| p.0).collect();
        let n = one_phase.len();
        Ratio {
            all: Spread::of(per_pass.into_iter().map(|p| p.0).collect()).expect("a pass"),
            one_phase: Spread::of(one_phase).map(|s| (s, n)),
            passes,
        }
    }
}

/// Whether these outcomes were all measured in one phase of the machine: every probe
/// before and after them within 1.5× of every other, none whose speed changed within
/// its window (its slowest slice below half its fastest: a phase change between the
/// probes, which they cannot see), and none during which the hypervisor took more than
/// `MAX_STEAL` of the vCPUs' time.
pub fn one_phase(outcomes: &[&Outcome]) -> bool {
    if outcomes
        .iter()
        .any(|o| o.steadiness < STEADY || o.cpu.is_some_and(|c| c.steal > MAX_STEAL))
    {
        return false;
    }
    let probes: Option<Vec<f64>> = outcomes.iter().flat_map(|o| o.round_trip_ns).collect();
    probes.is_some_and(|p| {
        let (lo, hi) = p
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        hi <= 1.5 * lo
    })
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            return write!(f, "{:.2}×", self.median);
        }
        write!(f, "{:.2}× ({:.2}–{:.2}", self.median, self.min, self.max)?;
        if let Some((lo, hi)) = self.ci95 {
            write!(f, "; median in {lo:.2}–{hi:.2}")?;
        }
        write!(f, ")")
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.all)?;
        match &self.one_phase {
            Some((_, n)) if *n == self.passes => write!(f, " [all in one phase]"),
            Some((s, n)) => write!(f, " [{n} of {} in one phase: {s}]", self.passes),
            None => write!(f, " [none in one phase]"),
        }
    }
}

impl Grid {
    /// The median outcome of contender `k` on case `c` (`Outcome::none()` if not run).
    pub fn median(&self, c: usize, k: usize) -> Outcome {
        match self.passes[c].get(k) {
            Some(runs) if !runs.is_empty() => median(runs.clone()),
            _ => Outcome::none(),
        }
    }

    /// Contender `a` over contender `b` on case `c`, pass by pass; `None` unless both ran.
    pub fn ratio(&self, c: usize, a: usize, b: usize) -> Option<Ratio> {
        self.paired(c, a, b, |o| Some(o.ops_per_s))
    }

    /// `value` of contender `a` over that of `b` on case `c`, pass by pass; `None` unless
    /// both are contenders of this bench, both ran and every pass has the value.
    fn paired(
        &self,
        c: usize,
        a: usize,
        b: usize,
        value: impl Fn(&Outcome) -> Option<f64>,
    ) -> Option<Ratio> {
        let (Some(a), Some(b)) = (self.passes[c].get(a), self.passes[c].get(b)) else {
            return None;
        };
        if a.is_empty() || a.len() != b.len() {
            return None;
        }
        let per_pass: Option<Vec<(f64, bool)>> = a
            .iter()
            .zip(b)
            .map(|(a, b)| Some((value(a)? / value(b)?, one_phase(&[a, b]))))
            .collect();
        Some(Ratio::of(per_pass?))
    }

    /// The median ops/s of contender `k` on case `c` over its measurements with at most
    /// `MAX_STEAL` steal, and how many those were. Unpaired, unlike `ratio`: it trades
    /// the pairing for the passes a steal-ridden run leaves, and a contender that makes
    /// the vCPUs idle more often may also draw more steal, which this leaves out.
    pub fn low_steal(&self, c: usize, k: usize) -> Option<(f64, usize)> {
        let rates: Vec<f64> = self.passes[c][k]
            .iter()
            .filter(|o| o.cpu.is_some_and(|u| u.steal <= MAX_STEAL))
            .map(|o| o.ops_per_s)
            .collect();
        let n = rates.len();
        Spread::of(rates).map(|s| (s.median, n))
    }

    /// The CPU per operation of contender `a` over `b` on case `c`, pass by pass: the
    /// bench process's (`here`) and the machine's; `None` unless both ran and `/proc`
    /// told. A ratio below 1.0 means `a` cost less CPU per operation.
    pub fn cpu_ratio(&self, c: usize, a: usize, b: usize) -> Option<[Ratio; 2]> {
        Some([
            self.paired(c, a, b, |o| Some(o.cpu?.process_us_per_op))?,
            self.paired(c, a, b, |o| Some(o.cpu?.busy_us_per_op))?,
        ])
    }
}

/// Runs every contender on every (tasks, size) case, `passes` times, a fresh runtime each,
/// and prints the medians. Passes are interleaved and each pass starts the case's list at
/// a different contender, so no contender always runs right after the same other one.
pub fn run_grid(
    title: &str,
    cases: &[(usize, usize)],
    contenders: &[(&str, Contender)],
    settings: &Settings,
) -> Grid {
    let mut passes: Vec<Vec<Vec<Outcome>>> = vec![vec![Vec::new(); contenders.len()]; cases.len()];
    for pass in 0..settings.passes {
        for (c, &(tasks, size)) in cases.iter().enumerate() {
            for i in 0..contenders.len() {
                let k = (i + pass) % contenders.len();
                let (name, run) = &contenders[k];
                if !settings.wants_case(name, tasks, size) {
                    continue;
                }
                let o = runtime().block_on(run(tasks, size, settings.clone()));
                progress(pass, &format!("{title} {tasks} / {size}"), name, &o);
                passes[c][k].push(o);
            }
        }
    }
    println!(
        "{title}: {} pass(es), {:?} warm-up, {:?} measured per case, 2 workers\n",
        settings.passes, settings.warmup, settings.measure
    );
    header();
    let grid = Grid { passes };
    for (c, &(tasks, size)) in cases.iter().enumerate() {
        for (k, (name, _)) in contenders.iter().enumerate() {
            let m = grid.median(c, k);
            if m.ops_per_s > 0.0 {
                row(&format!("{tasks} / {size}"), name, &m);
            }
        }
    }
    grid
}

fn or_dash(r: Option<Ratio>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| r.to_string())
}

/// Prints poolvisor's ratios to raw connections and to the other pools, for grids whose
/// contenders are, in order: poolvisor, bb8, bb8 no test, deadpool, raw (1 conn/task), at
/// index 8 raw with the tasks taking turns, and at 9 (if any) raw behind one FIFO. Each ratio is the median of the per-pass
/// ratios, with their range.
pub fn print_ratios(title: &str, cases: &[(usize, usize)], grid: &Grid) {
    println!("\n{title}");
    for (c, &(tasks, size)) in cases.iter().enumerate() {
        let (raw, turns) = (grid.ratio(c, 0, 4), grid.ratio(c, 0, 8));
        if raw.is_none() && turns.is_none() {
            continue;
        }
        let pv = grid.median(c, 0);
        println!(
            "- {tasks} / {size}: {} raw, {} raw with the tasks taking turns, {} bb8, {} bb8 no test, {} deadpool; Jain {:.3}, max {:.1} ms",
            or_dash(raw),
            or_dash(turns),
            or_dash(grid.ratio(c, 0, 1)),
            or_dash(grid.ratio(c, 0, 2)),
            or_dash(grid.ratio(c, 0, 3)),
            pv.jain,
            pv.max_us / 1e3
        );
        if let Some(turns) = grid.ratio(c, 8, 4) {
            println!("  (raw with the tasks taking turns: {turns} raw)");
        }
        if let Some(fifo) = grid.ratio(c, 9, 4) {
            println!(
                "  (raw behind one FIFO: {fifo} raw; poolvisor / it: {})",
                or_dash(grid.ratio(c, 0, 9))
            );
        }
        if let (Some((pv, n)), Some((raw, m))) = (grid.low_steal(c, 0), grid.low_steal(c, 4)) {
            println!(
                "  (over the measurements with ≤ {:.0} % steal, unpaired: poolvisor {} in {n}, raw {} in {m}: {:.2}×)",
                MAX_STEAL * 100.0,
                fmt_rate(pv),
                fmt_rate(raw),
                pv / raw
            );
        }
        for (k, reference) in [
            (4, "raw"),
            (8, "raw with the tasks taking turns"),
            (9, "raw behind one FIFO"),
        ] {
            if let Some([here, machine]) = grid.cpu_ratio(c, 0, k) {
                println!("  (CPU per operation, poolvisor / {reference}: {here} in the bench process, {machine} the whole machine)");
            }
        }
    }
}

/// Ratios for the contenders at index 6 and 7, `poolvisor shared spread` and `packed` (see
/// the benches' lists), to bb8 without its check-out test, raw connections and one shared
/// connection.
pub fn print_shared_ratios(title: &str, cases: &[(usize, usize)], grid: &Grid) {
    println!("\n{title}");
    for (c, &(tasks, size)) in cases.iter().enumerate() {
        for (k, policy) in [(6, "spread"), (7, "packed")] {
            let Some(bb8_no_test) = grid.ratio(c, k, 2) else {
                continue;
            };
            let shared = grid.median(c, k);
            println!(
                "- {tasks} / {size} {policy}: {bb8_no_test} bb8 no test, {} raw, {} one shared conn; Jain {:.3}, max {:.1} ms",
                or_dash(grid.ratio(c, k, 4)),
                or_dash(grid.ratio(c, k, 5)),
                shared.jain,
                shared.max_us / 1e3
            );
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
            round_trip_ns: [None; 2],
            steadiness: 1.0,
            cpu: None,
        }
    }
}
