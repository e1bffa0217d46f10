//! The `poolvisor` command line: what each subcommand does, so that the binary stays a
//! thin `main`.

mod check;

pub use check::{check, CheckRow};
