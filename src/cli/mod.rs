//! The `poolvisor` command line: what each subcommand does, so that the binary stays a
//! thin `main` that parses arguments and prints.

mod bench;
mod check;
mod serve;

pub use bench::{
    bench, recommend, BenchError, BenchReport, BenchSpec, Latency, Op, PhaseReport, Progress,
    Recommendation,
};
pub use check::{check, CheckRow};
pub use serve::{shutdown_signal, ServeError, Serving};
