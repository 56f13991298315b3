#!/usr/bin/env bash
# `make bench-longrange`: long-term storage against a real Prometheus 2.42 on the same data.
# DAYS (default 3; 7 supported) days of node-exporter-like data for 204 series, pushed into our
# all-in-one (release build, embedded defaults, data in a temp dir), flushed, restarted without
# its WAL; the same samples as Prometheus TSDB blocks (promtool tsdb create-blocks-from
# openmetrics). Prints per-query latency ratios ours/Prometheus, the median ratio and both
# sides' bytes on disk. Not part of `make ci`. REPS (default 5) warm runs per query; extra
# arguments go to the driver (e.g. --keep /tmp/lr, --cortex-arg -ingester.max-chunk-age=6h).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
bash scripts/install-peers.sh >/dev/null
cargo build -q --release --bin cortex --bin bench-longrange
exec "$target_dir/release/bench-longrange" --cortex "$target_dir/release/cortex" \
  --days "${DAYS:-3}" --reps "${REPS:-5}" "$@"
