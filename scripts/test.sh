#!/usr/bin/env bash
# The whole test suite, as CI runs it: servers up, format and lint checks, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo fmt --all --check
cargo clippy -j2 --workspace --all-targets -- -D warnings
cargo test -j2 --workspace "$@"
# The README's first command, briefly: the main job must keep working.
cargo run -q -j2 --example log_pipeline -- --duration 3s > /dev/null
