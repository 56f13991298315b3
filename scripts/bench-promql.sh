#!/usr/bin/env bash
# `make bench-promql`: our all-in-one against a real Prometheus 2.42 on the same data,
# PromQL range queries shaped like Prometheus's promql/bench_test.go. Prints one line
# per case (median latencies, ratio ours/Prometheus) and `promql-bench: median ratio R`.
# Not part of `make ci`. Extra arguments go to the driver (e.g. --reps 11).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
bash scripts/install-peers.sh >/dev/null
cargo build -q --release --bin cortex --bin promql-bench
exec "$target_dir/release/promql-bench" --cortex "$target_dir/release/cortex" "$@"
