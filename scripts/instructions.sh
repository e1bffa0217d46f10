#!/usr/bin/env bash
# Instructions per operation, counted by callgrind: a reading of each contender's cost
# that the machine's speed, steal and phase do not move (valgrind runs one thread at a
# time, so it counts work, not contention).
#
#   scripts/instructions.sh BENCH TASKS SIZE CONTENDER...
#   scripts/instructions.sh redis_ping 16 8 poolvisor "raw (1 conn/task)" "raw (one FIFO)"
#
# Each contender runs twice under callgrind (every task doing K1, then K2 operations,
# `--count`); the difference of the two totals over the difference of the operations is
# the marginal cost of an operation, with start-up and shutdown cancelled out. Start-up
# calibrates the clock for a set time, so its count varies by a few million
# instructions: make (K2 - K1) x TASKS at least 100,000 for operations as cheap as
# noop's. Needs valgrind, and the bench's servers up (scripts/services.sh).
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,14p "$0"; exit 2; }
bench=$1 tasks=$2 size=$3
shift 3
k1=${K1:-1000} k2=${K2:-11000}
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
cargo bench --bench "$bench" --no-run -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # contender, count -> "instructions operations" of the whole process
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="valgrind --tool=callgrind --callgrind-out-file=$out/cg.%p" \
        cargo bench -q --bench "$bench" -- --only "$1" --tasks "$tasks" --size "$size" --count "$2" \
        >/dev/null 2>"$out/log" || { cat "$out/log" >&2; exit 1; }
    local sum=0
    for f in "$out"/cg.*; do
        sum=$((sum + $(awk '/^totals:/ {print $2}' "$f")))
        rm "$f"
    done
    # The references without a pool run one task per connection: the bench says how
    # many operations it ran.
    echo "$sum $(awk '/^count:/ {print $2}' "$out/log")"
}
echo "| $bench $tasks / $size | instructions per operation |"
echo "|---|---|"
for c in "$@"; do
    first=$(run "$c" "$k1")
    second=$(run "$c" "$k2")
    read -r i1 n1 <<<"$first"
    read -r i2 n2 <<<"$second"
    [ "${n2:-0}" -gt "${n1:-0}" ] || { echo "no operations counted: is '$c' a contender of $bench?" >&2; exit 1; }
    echo "| $c | $(( (i2 - i1) / (n2 - n1) )) |"
done
