# Rust Cortex. `make run` starts the all-in-one; `make test` runs every unit and
# in-process test; `make ci` adds the end-to-end suite against real peers.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: build test lint ci run e2e
build:
	$(CARGO) build --workspace --bins

test:
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: lint test
