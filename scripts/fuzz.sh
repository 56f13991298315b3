#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ with libFuzzer (libfuzzer-sys) and
# SanitizerCoverage on *stable* Rust, then runs each for FUZZ_SECONDS.
#
#   FUZZ_SECONDS=60 scripts/fuzz.sh              every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh wal_replay  one target
#
# New inputs that add coverage go to fuzz/target/corpus/<target> (not
# committed); the seeds in fuzz/corpus/<target> are read, never written.
# A crash, panic, leak-free OOM (>2 GiB RSS or one malloc over it) or an
# input that takes over FUZZ_TIMEOUT seconds stops that target; its input is
# saved as fuzz/target/artifacts/<target>/crash-… (or oom-/timeout-), and the
# script exits 1 after the remaining targets have run. Reproduce one with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/target/artifacts/<target>/crash-…
# (under $CARGO_TARGET_DIR/fuzz/ instead when CARGO_TARGET_DIR is set).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
ALL=(remote_write remote_read promql_api xor_chunk wal_replay chunk_object)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")

# cargo fuzz's flags for --sanitizer none: coverage counters, comparison
# tracing and a PC table for libFuzzer; no -Z flag, so stable rustc works.
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cforce-frame-pointers"
# Build into a directory of its own (instrumented artefacts must not mix with
# the workspace's): under CARGO_TARGET_DIR when one is set (CI caches it),
# else fuzz/target. Corpus, artifacts and logs always go to fuzz/target.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros,
# which run on the host without libFuzzer to resolve the coverage hooks.
host=$(rustc -vV | sed -n 's/^host: //p')
bins=(); for t in "${TARGETS[@]}"; do bins+=(--bin "$t"); done
cargo build --release --locked --target "$host" "${bins[@]}"
out="$CARGO_TARGET_DIR/$host/release"

mkdir -p target/logs
failed=()
printf '\n%-14s %10s %8s %8s %8s  %s\n' target seconds execs exec/s corpus result
for t in "${TARGETS[@]}"; do
  mkdir -p "target/corpus/$t" "target/artifacts/$t"
  log="target/logs/$t.log"
  rc=0
  "$out/$t" "target/corpus/$t" "corpus/$t" \
    -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="target/artifacts/$t/" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "target/corpus/$t" -type f | wc -l)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  if ((rc == 0)); then result=ok; else
    result="FAILED (rc=$rc): $(grep -m1 -E '^==[0-9]+== ERROR|panicked at|deadly signal|out-of-memory|timeout' "$log" || echo see "$log")"
    failed+=("$t")
  fi
  printf '%-14s %10s %8s %8s %8s  %s\n' "$t" "${secs:-?}" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
done
if ((${#failed[@]})); then
  echo "fuzz: failing targets: ${failed[*]} (inputs under fuzz/target/artifacts/, logs under fuzz/target/logs/)" >&2
  for t in "${failed[@]}"; do echo "--- $t"; grep -E -A12 'panicked at|ERROR: libFuzzer' "target/logs/$t.log" 2>/dev/null | head -30 || true; done
  exit 1
fi
