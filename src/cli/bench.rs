//! `poolvisor bench`: load one pool of a configuration, then the same load with a new
//! connection per operation, and recommend a pool size from Little's law.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use poolvisor_actors::{ManageConnection, PoolHandle};

use crate::backends::{
    Http, HttpConnection, PgConnection, Postgres, Redis, RedisConnection, SupervisorBackends,
};
use crate::config::{BackendKind, Config};

/// What each operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Redis `PING`.
    Ping,
    /// PostgreSQL `SELECT 1` (simple query protocol).
    Select1,
    /// HTTP `GET` of this path; a status other than 2xx counts as an error.
    Get(String),
}

impl FromStr for Op {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Op, BenchError> {
        match s {
            "ping" => Ok(Op::Ping),
            "select1" => Ok(Op::Select1),
            _ => match s.strip_prefix("get:") {
                Some(path) if path.starts_with('/') => Ok(Op::Get(path.to_string())),
                _ => Err(BenchError::BadOp(s.to_string())),
            },
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Ping => f.write_str("ping"),
            Op::Select1 => f.write_str("select1"),
            Op::Get(path) => write!(f, "get:{path}"),
        }
    }
}

impl Op {
    /// The backend this operation speaks to.
    pub fn backend(&self) -> BackendKind {
        match self {
            Op::Ping => BackendKind::Redis,
            Op::Select1 => BackendKind::Postgres,
            Op::Get(_) => BackendKind::Http,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// The pool, by its name in the configuration.
    pub pool: String,
    /// Concurrent tasks.
    pub tasks: usize,
    /// How long each phase runs.
    pub duration: Duration,
    /// The operation.
    pub op: Op,
    /// Whether to run the unpooled phase too.
    pub unpooled: bool,
    /// Check out with `checkout_shared` (callers share connections).
    pub shared: bool,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// `--op` is not `ping`, `select1` or `get:/path`.
    #[error("invalid op `{0}`: expected ping, select1 or get:/path")]
    BadOp(String),
    /// No pool has this name.
    #[error("no pool named `{0}` in the configuration")]
    UnknownPool(String),
    /// The operation does not speak the pool's protocol.
    #[error("op `{op}` needs a {needs} pool, but `{pool}` is {kind}")]
    OpMismatch {
        /// The op.
        op: Op,
        /// The pool.
        pool: String,
        /// The pool's backend.
        kind: &'static str,
        /// The backend the op needs.
        needs: &'static str,
    },
    /// `--tasks 0` or a zero duration.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The pool could not start (its message has no password).
    #[error("{0}")]
    Start(String),
}

/// Latencies of one kind in one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

/// One phase's results.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// How long the phase ran.
    pub elapsed: Duration,
    /// Checkout time (pooled) or connect time (unpooled).
    pub wait: Latency,
    /// From checkout (or connect) to drop.
    pub hold: Latency,
}

impl PhaseReport {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Little's law applied to the pooled phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// `ceil(throughput × mean hold × 1.5)`, at least 1, at most the budget.
    pub max_size: usize,
    /// Whether the budget lowered it.
    pub capped_by_budget: bool,
}

/// Everything `bench` measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The pool's backend.
    pub backend: &'static str,
    /// The pool's `max_size` in the configuration.
    pub max_size: usize,
    /// The supervisor's budget, if any.
    pub budget: Option<usize>,
    /// Through the pool.
    pub pooled: PhaseReport,
    /// A new connection per operation (when asked for).
    pub unpooled: Option<PhaseReport>,
    /// The suggested `max_size`.
    pub recommended: Recommendation,
}

/// Little's law: connections in use ≈ throughput × mean hold; 1.5× for headroom.
///
/// ```
/// use std::time::Duration;
/// use poolvisor::cli::recommend;
/// let r = recommend(10_000.0, Duration::from_micros(400), Some(100));
/// assert_eq!(r.max_size, 6); // 10,000/s × 0.4 ms × 1.5 = 6
/// assert_eq!(recommend(10_000.0, Duration::from_millis(40), Some(100)).max_size, 100);
/// ```
pub fn recommend(throughput: f64, mean_hold: Duration, budget: Option<usize>) -> Recommendation {
    let wanted = (throughput * mean_hold.as_secs_f64() * 1.5).ceil().max(1.0);
    let wanted = if wanted.is_finite() && wanted < usize::MAX as f64 {
        wanted as usize
    } else {
        usize::MAX
    };
    match budget {
        Some(b) if wanted > b => Recommendation {
            max_size: b,
            capped_by_budget: true,
        },
        _ => Recommendation {
            max_size: wanted,
            capped_by_budget: false,
        },
    }
}

/// A progress callback: phase name, time into the phase, operations so far.
pub type Progress<'a> = &'a (dyn Fn(&str, Duration, u64) + Sync);

/// Runs `spec` against `config`'s pool: the pooled phase, then (if asked) the unpooled
/// one, each for `spec.duration`.
pub async fn bench(
    config: &Config,
    spec: &BenchSpec,
    progress: Progress<'_>,
) -> Result<BenchReport, BenchError> {
    if spec.tasks == 0 {
        return Err(BenchError::Zero("--tasks"));
    }
    if spec.duration.is_zero() {
        return Err(BenchError::Zero("--duration"));
    }
    let entry = config
        .pools
        .iter()
        .find(|p| p.name == spec.pool)
        .ok_or_else(|| BenchError::UnknownPool(spec.pool.clone()))?;
    if spec.op.backend() != entry.kind {
        return Err(BenchError::OpMismatch {
            op: spec.op.clone(),
            pool: entry.name.clone(),
            kind: entry.kind.as_str(),
            needs: spec.op.backend().as_str(),
        });
    }
    let only = Config {
        pools: vec![entry.clone()],
        ..config.clone()
    };
    let sup = only
        .builder()
        .start()
        .await
        .map_err(|e| BenchError::Start(e.to_string()))?;
    let op = Arc::new(spec.op.clone());
    let failed = |e: &dyn fmt::Display| BenchError::Start(e.to_string());
    let (pooled, unpooled) = match entry.kind {
        BackendKind::Postgres => (
            lend(
                sup.postgres(&entry.name).map_err(|e| failed(&e))?,
                op.clone(),
                spec.shared,
            ),
            unpooled(Postgres::from_url(&entry.url).map_err(|e| failed(&e))?, op),
        ),
        BackendKind::Redis => (
            lend(
                sup.redis(&entry.name).map_err(|e| failed(&e))?,
                op.clone(),
                spec.shared,
            ),
            unpooled(Redis::from_url(&entry.url).map_err(|e| failed(&e))?, op),
        ),
        BackendKind::Http => (
            lend(
                sup.http(&entry.name).map_err(|e| failed(&e))?,
                op.clone(),
                spec.shared,
            ),
            unpooled(Http::new(&entry.url).map_err(|e| failed(&e))?, op),
        ),
    };
    let phase = if spec.shared { "shared" } else { "pooled" };
    let pooled_report = run_phase(phase, spec, pooled, progress).await;
    let _ = sup.shutdown().await;
    let unpooled_report = match spec.unpooled {
        true => Some(run_phase("unpooled", spec, unpooled, progress).await),
        false => None,
    };
    let budget = config.supervisor.max_connections;
    Ok(BenchReport {
        backend: entry.kind.as_str(),
        max_size: entry.settings.max_size,
        budget,
        recommended: recommend(pooled_report.throughput(), pooled_report.hold.mean, budget),
        pooled: pooled_report,
        unpooled: unpooled_report,
    })
}

/// Bound on one operation (checkout or connect included), so that a stalled server
/// cannot hold a phase open.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed operation, so that a pool that fails fast is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

type Timed = Pin<Box<dyn Future<Output = Result<(Duration, Duration), String>> + Send>>;
type OpFn = Arc<dyn Fn() -> Timed + Send + Sync>;

/// How an operation runs on one connection of a backend.
trait Exercise: ManageConnection {
    /// On a connection of its own.
    fn exercise<'a>(conn: &'a mut Self::Connection, op: &'a Op) -> Outcome<'a>;

    /// On a connection others may be using at the same time (`checkout_shared`).
    fn exercise_shared<'a>(conn: &'a Self::Connection, op: &'a Op) -> Outcome<'a>;
}

type Outcome<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

impl Exercise for Postgres {
    fn exercise<'a>(conn: &'a mut PgConnection, op: &'a Op) -> Outcome<'a> {
        Self::exercise_shared(conn, op)
    }

    fn exercise_shared<'a>(conn: &'a PgConnection, _: &'a Op) -> Outcome<'a> {
        Box::pin(async move {
            conn.simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

impl Exercise for Redis {
    fn exercise<'a>(conn: &'a mut RedisConnection, op: &'a Op) -> Outcome<'a> {
        Self::exercise_shared(conn, op)
    }

    fn exercise_shared<'a>(conn: &'a RedisConnection, _: &'a Op) -> Outcome<'a> {
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn.handle())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

impl Exercise for Http {
    fn exercise<'a>(conn: &'a mut HttpConnection, op: &'a Op) -> Outcome<'a> {
        Box::pin(async move {
            let resp = conn.send(get(op)?).await.map_err(|e| e.to_string())?;
            read(op, resp).await
        })
    }

    fn exercise_shared<'a>(conn: &'a HttpConnection, op: &'a Op) -> Outcome<'a> {
        Box::pin(async move {
            let resp = conn
                .send_shared(get(op)?)
                .await
                .map_err(|e| e.to_string())?;
            read(op, resp).await
        })
    }
}

fn path(op: &Op) -> &str {
    match op {
        Op::Get(path) => path.as_str(),
        _ => "/",
    }
}

fn get(op: &Op) -> Result<hyper::Request<Full<Bytes>>, String> {
    hyper::Request::get(path(op))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())
}

/// Reads the whole body; a status other than 2xx is an error.
async fn read(op: &Op, resp: hyper::Response<hyper::body::Incoming>) -> Result<(), String> {
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    match status.is_success() {
        true => Ok(()),
        false => Err(format!("GET {}: {status}", path(op))),
    }
}

/// Operations through the pool: exclusive checkouts, or shared ones.
fn lend<M: Exercise>(handle: PoolHandle<M>, op: Arc<Op>, share: bool) -> OpFn
where
    M::Connection: Sync,
{
    match share {
        true => shared(handle, op),
        false => pooled(handle, op),
    }
}

fn pooled<M: Exercise>(handle: PoolHandle<M>, op: Arc<Op>) -> OpFn {
    Arc::new(move || {
        let (handle, op) = (handle.clone(), op.clone());
        Box::pin(async move {
            let start = Instant::now();
            let mut conn = handle.checkout().await.map_err(|e| e.to_string())?;
            let got = Instant::now();
            match M::exercise(&mut conn, &op).await {
                Ok(()) => {
                    drop(conn);
                    Ok((got - start, got.elapsed()))
                }
                Err(e) => {
                    conn.discard();
                    Err(e)
                }
            }
        })
    })
}

fn unpooled<M: Exercise>(manager: M, op: Arc<Op>) -> OpFn {
    let manager = Arc::new(manager);
    Arc::new(move || {
        let (manager, op) = (manager.clone(), op.clone());
        Box::pin(async move {
            let start = Instant::now();
            let mut conn = manager
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            let got = Instant::now();
            M::exercise(&mut conn, &op).await?;
            drop(conn);
            Ok((got - start, got.elapsed()))
        })
    })
}

fn shared<M: Exercise>(handle: PoolHandle<M>, op: Arc<Op>) -> OpFn
where
    M::Connection: Sync,
{
    Arc::new(move || {
        let (handle, op) = (handle.clone(), op.clone());
        Box::pin(async move {
            let start = Instant::now();
            let conn = handle.checkout_shared().await.map_err(|e| e.to_string())?;
            let got = Instant::now();
            match M::exercise_shared(&conn, &op).await {
                Ok(()) => {
                    drop(conn);
                    Ok((got - start, got.elapsed()))
                }
                Err(e) => {
                    conn.discard();
                    Err(e)
                }
            }
        })
    })
}

/// One task's recordings, in microseconds.
struct Recorder {
    wait: Histogram<u64>,
    hold: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    fn new() -> Recorder {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds");
        Recorder {
            wait: h(),
            hold: h(),
            errors: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Recorder) {
        self.wait.add(&other.wait).expect("same bounds");
        self.hold.add(&other.hold).expect("same bounds");
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let us = Duration::from_micros;
    Latency {
        p50: us(h.value_at_quantile(0.5)),
        p99: us(h.value_at_quantile(0.99)),
        max: us(h.max()),
        mean: Duration::from_secs_f64(h.mean() / 1e6),
    }
}

async fn run_phase(name: &str, spec: &BenchSpec, op: OpFn, progress: Progress<'_>) -> PhaseReport {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + spec.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..spec.tasks {
        let (op, done) = (op.clone(), done.clone());
        tasks.spawn(async move {
            let mut rec = Recorder::new();
            while tokio::time::Instant::now() < deadline {
                let outcome = match tokio::time::timeout(OP_TIMEOUT, op()).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!(
                        "no answer within {}",
                        humantime::format_duration(OP_TIMEOUT)
                    )),
                };
                match outcome {
                    Ok((wait, hold)) => {
                        let _ = rec.wait.record(micros(wait));
                        let _ = rec.hold.record(micros(hold));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        rec.errors += 1;
                        rec.first_error.get_or_insert(e);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
                tokio::task::consume_budget().await;
            }
            rec
        });
    }
    let mut all = Recorder::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(rec)) => all.merge(rec),
                Some(Err(_)) => all.errors += 1,
                None => break,
            },
            _ = ticker.tick() => progress(name, start.elapsed(), done.load(Ordering::Relaxed)),
        }
    }
    let elapsed = start.elapsed();
    progress(name, elapsed, done.load(Ordering::Relaxed));
    PhaseReport {
        ops: all.wait.len(),
        errors: all.errors,
        first_error: all.first_error,
        elapsed,
        wait: latency(&all.wait),
        hold: latency(&all.hold),
    }
}
