//! The `poolvisor` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use poolvisor::cli::{BenchReport, BenchSpec, Latency, Op, PhaseReport, Serving};
use poolvisor::config::Config;
use poolvisor::PoolStatus;

/// Supervised connection pools for PostgreSQL, Redis and HTTP: check a configuration,
/// serve its pools with an admin endpoint, or load one pool and size it.
///
/// Every command reads a TOML configuration file; `POOLVISOR_*` environment variables
/// override its keys (e.g. `POOLVISOR_POOLS__DB__MAX_SIZE=30`). Errors go to stderr.
/// Exit codes: 0 success, 1 a pool is down or a run failed, 2 invalid input.
#[derive(Parser)]
#[command(name = "poolvisor", version, about, long_about)]
struct Cli {
    /// Log level for the library's tracing output on stderr: error, warn, info, debug,
    /// trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file, connect every pool once, and print a table
    /// (pool, backend, address without password, connect time, state).
    ///
    /// An HTTP pool also sends `HEAD /`: any response counts, none within its
    /// `connect_timeout` reads as down. Exits 1 if a pool is down, 2 if the file is invalid.
    Check {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the supervisor and the admin endpoint (/health, /pools, /metrics, /events,
    /// POST /pools/{name}/pause|resume|drain|resize) until SIGINT or SIGTERM, then shut
    /// down gracefully: stop lending, wait for lent connections, close every connection,
    /// exit 0.
    ///
    /// A second signal during the shutdown exits at once with code 1.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Where the admin endpoint listens, instead of the file's `[admin] listen`
        /// (port 0 picks a free port; the address is printed on stderr).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// How long the shutdown waits for lent connections to come back.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        shutdown_deadline: Duration,
    },
    /// Load one pool with concurrent tasks, then run the same load opening a new
    /// connection per operation, and print throughput, wait and hold latencies
    /// (p50/p99/max) and a pool size from Little's law (throughput × mean hold × 1.5,
    /// bounded by the budget).
    Bench {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The pool to load.
        #[arg(long, value_name = "NAME")]
        pool: String,
        /// Concurrent tasks.
        #[arg(long, default_value_t = 64)]
        tasks: usize,
        /// How long each phase (pooled, unpooled) runs.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        duration: Duration,
        /// The operation: `ping` (Redis), `select1` (PostgreSQL), `get:/path` (HTTP).
        #[arg(long, value_name = "OP")]
        op: Op,
        /// Skip the phase without pooling.
        #[arg(long)]
        no_unpooled: bool,
        /// Check out with `checkout_shared`: callers share connections, up to the pool's
        /// `max_shares` each (an HTTP pool needs an HTTP/2 upstream).
        #[arg(long)]
        shared: bool,
    },
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    match Config::load(path) {
        Ok(c) if c.pools.is_empty() => {
            eprintln!("error: the configuration defines no pool ([pools.<name>])");
            Err(ExitCode::from(2))
        }
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Check { config } => check(&config).await,
        Command::Serve {
            config,
            listen,
            shutdown_deadline,
        } => serve(&config, listen, shutdown_deadline).await,
        Command::Bench {
            config,
            pool,
            tasks,
            duration,
            op,
            no_unpooled,
            shared,
        } => {
            let spec = BenchSpec {
                pool,
                tasks,
                duration,
                op,
                unpooled: !no_unpooled,
                shared,
            };
            bench(&config, &spec).await
        }
    };
    result.unwrap_or_else(|code| code)
}

async fn check(path: &Path) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    let rows = poolvisor::cli::check(&config).await;
    let width = rows
        .iter()
        .map(|r| r.address.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "{:<16} {:<8} {:<width$} {:>10}  state",
        "pool", "backend", "address", "connect"
    );
    for r in &rows {
        let state = match (&r.status, &r.cause) {
            (PoolStatus::Up, _) => "up".to_string(),
            (s, Some(cause)) => format!("{}: {cause}", s.as_str()),
            (s, None) => s.as_str().to_string(),
        };
        println!(
            "{:<16} {:<8} {:<width$} {:>8.1}ms  {state}",
            r.pool,
            r.backend,
            r.address,
            r.connect_time.as_secs_f64() * 1e3
        );
    }
    let down = rows.iter().filter(|r| r.status != PoolStatus::Up).count();
    if down > 0 {
        eprintln!("error: {down} of {} pools are not up", rows.len());
        return Err(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    path: &Path,
    listen: Option<SocketAddr>,
    deadline: Duration,
) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    let serving = Serving::start(&config, listen).await.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })?;
    eprintln!(
        "poolvisor: serving {} pools; admin endpoint on http://{}",
        config.pools.len(),
        serving.admin.addr()
    );
    let signal = poolvisor::cli::shutdown_signal().await;
    eprintln!(
        "poolvisor: {signal}: shutting down (deadline {})",
        humantime::format_duration(deadline)
    );
    let report = tokio::select! {
        report = serving.stop(deadline) => report,
        second = poolvisor::cli::shutdown_signal() => {
            eprintln!("error: {second} during shutdown: exiting now");
            return Err(ExitCode::from(1));
        }
    };
    match report {
        Ok(report) => {
            let still_lent: usize = report.pools.iter().map(|(_, d)| d.still_lent).sum();
            eprintln!(
                "poolvisor: shut down in {:.0?}; {still_lent} connections were still lent",
                report.took
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: shutdown: {e}");
            Err(ExitCode::from(1))
        }
    }
}

async fn bench(path: &Path, spec: &BenchSpec) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    let bar = ProgressBar::new(spec.duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {elapsed:>4} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let progress = |phase: &str, elapsed: Duration, ops: u64| {
        if bar.prefix() != phase {
            bar.reset();
            bar.set_prefix(phase.to_string());
        }
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{:.0} ops/s",
            ops as f64 / elapsed.as_secs_f64().max(1e-3)
        ));
    };
    let report = poolvisor::cli::bench(&config, spec, &progress).await;
    bar.finish_and_clear();
    let report = report.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    print_bench(spec, &report);
    if report.pooled.ops == 0 {
        eprintln!("error: no operation succeeded");
        return Err(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn print_bench(spec: &BenchSpec, r: &BenchReport) {
    println!(
        "pool {} ({}), op {}, {} tasks, {} per phase",
        spec.pool,
        r.backend,
        spec.op,
        spec.tasks,
        humantime::format_duration(spec.duration)
    );
    println!(
        "{:<9} {:>11} {:>7}  {:>24}  {:>24}",
        "", "ops/s", "errors", "wait ms p50/p99/max", "hold ms p50/p99/max"
    );
    let lat = |l: &Latency| format!("{}/{}/{}", ms(l.p50), ms(l.p99), ms(l.max));
    let row = |name: &str, p: &PhaseReport| {
        println!(
            "{name:<9} {:>11.1} {:>7}  {:>24}  {:>24}",
            p.throughput(),
            p.errors,
            lat(&p.wait),
            lat(&p.hold)
        );
        if let Some(e) = &p.first_error {
            println!("{:<9} first error: {e}", "");
        }
    };
    row(if spec.shared { "shared" } else { "pooled" }, &r.pooled);
    if let Some(u) = &r.unpooled {
        row("unpooled", u);
        if u.throughput() > 0.0 {
            println!(
                "pooling: {:.1}× the throughput of a new connection per operation",
                r.pooled.throughput() / u.throughput()
            );
        }
    }
    let budget = match r.budget {
        Some(b) if r.recommended.capped_by_budget => format!(", capped by the budget of {b}"),
        Some(b) => format!(", within the budget of {b}"),
        None => String::new(),
    };
    println!(
        "recommended max_size: {} (throughput {:.0}/s × mean hold {} ms × 1.5{budget}; configured {})",
        r.recommended.max_size,
        r.pooled.throughput(),
        ms(r.pooled.hold.mean),
        r.max_size
    );
}
