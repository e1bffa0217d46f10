#!/usr/bin/env bash
# The whole test suite, as CI runs it: servers up, format and lint checks, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo fmt --all --check
cargo clippy -j2 --workspace --all-targets -- -D warnings
# The engine's library as users build it (its tests turn on `tokio-clock`, see below).
cargo clippy -j2 -p poolvisor-actors --lib -- -D warnings
# Two runs, not one `--workspace`: the engine's tests pause tokio's clock and so build the
# engine with `tokio-clock`; the poolvisor crate's tests run on the clock users get.
cargo test -j2 -p poolvisor-actors "$@"
cargo test -j2 -p poolvisor "$@"
# The README's first command, briefly: the main job must keep working.
cargo run -q -j2 --example log_pipeline -- --duration 3s > /dev/null
