//! The `poolvisor` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use poolvisor::config::Config;
use poolvisor::PoolStatus;

/// Supervised connection pools: check a configuration against its servers.
#[derive(Parser)]
#[command(name = "poolvisor", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file, connect every pool once, and print a table
    /// (pool, backend, address without password, connect time, state). Exits 1 if a
    /// pool is down, 2 if the file is invalid.
    Check {
        /// The TOML configuration file (`POOLVISOR_*` variables override its keys).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if config.pools.is_empty() {
                eprintln!("error: the configuration defines no pool ([pools.<name>])");
                return ExitCode::from(2);
            }
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
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
    }
}
