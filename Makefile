# Rust Cortex — Prometheus as a service.
#   make run    all-in-one on embedded defaults (:9009 HTTP, :9095 gRPC, data under ./data)
#   make test   unit + in-process multi-component tests (installs the real peers some need)
#   make ci     lint + test + end-to-end suite against real Prometheus/etcd/nginx
#               + a short fuzz run (FUZZ_CI_SECONDS per target)
#   make fuzz   every fuzz target for FUZZ_SECONDS each (libFuzzer on stable Rust)
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
ARGS ?=
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)

.PHONY: build release run test lint e2e ci peers promqltest fmt bench-promql bench-longrange bench bench-chunks deploy-check docs dashboards fuzz fuzz-ci

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --bin cortex

run: release
	$(TARGET_DIR)/release/cortex $(ARGS)

peers:
	bash scripts/install-peers.sh

test: peers
	$(CARGO) test --workspace --exclude e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# End-to-end: our real binaries with real peers. One test at a time: each
# suite starts its own processes on free loopback ports.
e2e: peers build
	CORTEX_BIN_DIR=$(TARGET_DIR)/debug $(CARGO) test -p e2e -- --test-threads=1 --nocapture

promqltest:
	$(CARGO) run -q -p promql --example promqltest

# PromQL latency against a real Prometheus on the same data (not part of ci).
bench-promql:
	bash scripts/bench-promql.sh

# Long-range queries from the chunk store against Prometheus blocks, and bytes on disk
# (not part of ci): DAYS=7 REPS=5 make bench-longrange
bench-longrange:
	bash scripts/bench-longrange.sh

fmt:
	$(CARGO) fmt --all

# Ingest benchmark against Prometheus 2.42 (not part of ci):
#   SERIES=200000 SAMPLES_PER_SERIES=10 BATCH=1000 CONCURRENCY=4 make bench
bench:
	CARGO=$(CARGO) bash scripts/bench-ingest.sh

# Bytes per sample of flushed chunks for node-exporter-like data (not part of ci):
#   HOSTS=50 HOURS=4 make bench-chunks
bench-chunks:
	$(CARGO) run --release -q -p ingester --example bench_chunks

# k8s/ schemas, nginx -t, hadolint, promtool check/test rules, dashboards up to date.
deploy-check: peers
	bash scripts/check-deploy.sh

# Regenerate docs/configuration.md from the flag table and dashboards/*.json.
docs:
	UPDATE_DOCS=1 $(CARGO) test -q -p cortex --test flag_reference
dashboards:
	python3 dashboards/generate.py


# Fuzz targets (fuzz/, a workspace of its own with its own target dir):
# remote write, remote read, PromQL through the HTTP API, XOR chunks, WAL
# replay, chunk objects. Crashing inputs land in fuzz/target/artifacts/.
FUZZ_SECONDS ?= 300
FUZZ_CI_SECONDS ?= 60
fuzz: peers
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

fuzz-ci: peers
	FUZZ_SECONDS=$(FUZZ_CI_SECONDS) bash scripts/fuzz.sh

ci: lint test deploy-check e2e fuzz-ci
