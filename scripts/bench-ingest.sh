#!/usr/bin/env bash
# Ingest benchmark: the same remote-write load into Prometheus 2.42
# (--web.enable-remote-write-receiver) and into our all-in-one (RF 1), one
# after the other (never both at once: the machine has 2 cores), then each
# figure side by side with the ratio ours/Prometheus.
#
#   SERIES=200000 SAMPLES_PER_SERIES=10 BATCH=1000 CONCURRENCY=4 make bench
#
# Per target: samples/s (loadgen), CPU seconds per million samples (utime +
# stime of the server from /proc/<pid>/stat, before/after the load), peak RSS
# (VmHWM) and RSS per active series ((VmRSS after load − VmRSS idle) / SERIES).
# The last line is `bench: ingest ratio X, bytes/series Y` (ours).
set -euo pipefail
cd "$(dirname "$0")/.."

SERIES=${SERIES:-200000}
SAMPLES_PER_SERIES=${SAMPLES_PER_SERIES:-10}
BATCH=${BATCH:-1000}
CONCURRENCY=${CONCURRENCY:-4}
TARGETS=${TARGETS:-"prometheus cortex"}
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

$CARGO build --release --bin cortex --bin loadgen
bash scripts/install-peers.sh >/dev/null
LOADGEN=$TARGET_DIR/release/loadgen
CORTEX=$TARGET_DIR/release/cortex
CLK_TCK=$(getconf CLK_TCK)

work=$(mktemp -d -t bench-ingest.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill -9 "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { # utime + stime; fields after the ")" that ends comm: 12 and 13
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

wait_ready() {
  local url=$1 deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then echo "bench: server exited; log:" >&2; tail -20 "$work/server.log" >&2; exit 1; fi
    if ((SECONDS > deadline)); then echo "bench: $url not ready after 60s" >&2; tail -20 "$work/server.log" >&2; exit 1; fi
    sleep 0.2
  done
}

declare -A RATE CPU_PER_M HWM_KB PER_SERIES

# measure NAME PUSH_URL: load the running server ($server_pid) and record its figures.
measure() {
  local name=$1 url=$2
  sleep 1 # let start-up work settle before the idle RSS reading
  local rss0 cpu0 cpu1 out
  rss0=$(status_kb "$server_pid" VmRSS)
  cpu0=$(cpu_ticks "$server_pid")
  if ! out=$("$LOADGEN" --url "$url" --series "$SERIES" --samples-per-series "$SAMPLES_PER_SERIES" \
    --batch "$BATCH" --concurrency "$CONCURRENCY" 2>"$work/loadgen.err"); then
    echo "$out"; cat "$work/loadgen.err" >&2
    echo "bench: $name: load failed (non-2xx answers above)" >&2; exit 1
  fi
  cpu1=$(cpu_ticks "$server_pid")
  sleep 1 # background work triggered by the load (Go GC, compaction of nothing) lands in RSS
  local rss1 hwm samples rate
  rss1=$(status_kb "$server_pid" VmRSS)
  hwm=$(status_kb "$server_pid" VmHWM)
  samples=$(echo "$out" | awk '/^sent /{print $2}')
  rate=$(echo "$out" | awk '/^sent /{print $(NF-1)}')
  echo "$name: $(echo "$out" | head -1)"
  echo "$name: $(echo "$out" | sed -n 2p)"
  RATE[$name]=$rate
  CPU_PER_M[$name]=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$samples" 'BEGIN{printf "%.3f", d / hz / (n / 1e6)}')
  HWM_KB[$name]=$hwm
  PER_SERIES[$name]=$(awk -v a="$rss1" -v b="$rss0" -v n="$SERIES" 'BEGIN{printf "%.0f", (a - b) * 1024 / n}')
  printf '%s: %s samples/s, %s CPU s per million samples, peak RSS %.1f MiB, RSS idle %.1f MiB -> after %s series %.1f MiB = %s bytes/series\n' \
    "$name" "$rate" "${CPU_PER_M[$name]}" "$(awk -v k="$hwm" 'BEGIN{print k/1024}')" \
    "$(awk -v k="$rss0" 'BEGIN{print k/1024}')" "$SERIES" "$(awk -v k="$rss1" 'BEGIN{print k/1024}')" "${PER_SERIES[$name]}"
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

echo "bench: $SERIES series x $SAMPLES_PER_SERIES samples, $BATCH samples/request, $CONCURRENCY in flight; $(nproc) cores"
for target in $TARGETS; do
  port=$("$LOADGEN" --free-port)
  case $target in
    prometheus)
      mkdir -p "$work/prom"
      printf 'global:\n  scrape_interval: 1m\n' >"$work/prom.yml"
      prometheus --config.file="$work/prom.yml" --storage.tsdb.path="$work/prom" \
        --web.listen-address="127.0.0.1:$port" --web.enable-remote-write-receiver >"$work/server.log" 2>&1 &
      server_pid=$!
      wait_ready "http://127.0.0.1:$port/-/ready"
      echo "prometheus: $(prometheus --version 2>&1 | head -1) (head + WAL on disk)"
      measure prometheus "http://127.0.0.1:$port/api/v1/write"
      ;;
    cortex)
      grpc_port=$("$LOADGEN" --free-port)
      mkdir -p "$work/cortex"
      (cd "$work/cortex" && exec "$CORTEX" -server.http-listen-port="$port" -server.grpc-listen-port="$grpc_port" \
        -distributor.ingestion-rate-limit=1000000000 -distributor.ingestion-burst-size=1000000000 \
        -ingester.max-series-per-user=0 -ingester.max-series-per-metric=0 -log.level=warn) >"$work/server.log" 2>&1 &
      server_pid=$!
      wait_ready "http://127.0.0.1:$port/ready"
      # Captured first: `grep -q` closing the pipe early would fail it under pipefail.
      help=$("$CORTEX" -help 2>&1 || true)
      if grep -q -- '-ingester.wal-enabled' <<<"$help"; then wal="WAL on (defaults: ./data/wal, fsync interval)"; else wal="no WAL yet: in-memory only"; fi
      echo "cortex: all-in-one, RF 1, $wal"
      measure cortex "http://127.0.0.1:$port/api/v1/push"
      if [ -d "$work/cortex/data/wal" ]; then echo "cortex: WAL after load: $(du -sh "$work/cortex/data/wal" | cut -f1)"; fi
      ;;
    *) echo "bench: unknown target $target" >&2; exit 2 ;;
  esac
  stop_server
done

if [ -n "${RATE[prometheus]:-}" ] && [ -n "${RATE[cortex]:-}" ]; then
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
  echo "ratio ours/prometheus: samples/s $(ratio "${RATE[cortex]}" "${RATE[prometheus]}")x," \
    "CPU per sample $(ratio "${CPU_PER_M[cortex]}" "${CPU_PER_M[prometheus]}")x," \
    "peak RSS $(ratio "${HWM_KB[cortex]}" "${HWM_KB[prometheus]}")x," \
    "bytes/series $(ratio "${PER_SERIES[cortex]}" "${PER_SERIES[prometheus]}")x"
  echo "bench: ingest ratio $(ratio "${RATE[cortex]}" "${RATE[prometheus]}"), bytes/series ${PER_SERIES[cortex]}"
elif [ -n "${RATE[cortex]:-}" ]; then
  echo "bench: ingest ratio n/a (prometheus not measured), bytes/series ${PER_SERIES[cortex]}"
fi
