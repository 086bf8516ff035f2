#!/usr/bin/env bash
# The whole Weir test suite, on a fresh machine or an old one.
#
# Installs what the tests need (idempotent and cached under ~/.cache/weir-test:
# nothing is downloaded twice), then runs formatting and lint checks, the doc
# tests, and every unit and integration test. The tests start the servers they
# need themselves, on loopback (an S3-compatible moto_server for checkpoint
# storage). The last lines are the test runner's summary.
#
#   ./test.sh
#
# Needs: the Rust toolchain (cargo) and python3 with venv (the exact-answer
# oracles of bench/oracle, or WEIR_ORACLE_DIR; moto_server).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A test run builds once: incremental caches would only take disk (they were
# the largest part of the target directory).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n== %s\n' "$*"; }

step "checking tools"
command -v cargo >/dev/null || { echo "test.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "test.sh: python3 is required for the benchmark oracles" >&2; exit 1; }
oracle="${WEIR_ORACLE_DIR:-$(pwd)/bench/oracle}"
[ -f "$oracle/orders.py" ] || { echo "test.sh: the benchmark oracle is missing at $oracle (set WEIR_ORACLE_DIR)" >&2; exit 1; }
cargo --version

step "benchmark oracles (bench/oracle against bench/WORKLOADS.md)"
python3 bench/oracle/test_oracles.py

step "test servers"
bash scripts/test-deps.sh

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "crate boundaries (the operator links no connector: it only checks pipelines)"
if cargo tree -p weir-operator -e normal --locked --prefix none | grep -E '^(rdkafka|rdkafka-sys|postgres|redis|weir-kafka|weir-postgres|weir-redis) '; then
  echo "test.sh: weir-operator depends on a connector (above); it must only check pipelines" >&2
  exit 1
fi
echo "weir-operator links no connector"

step "doc tests"
cargo test --workspace --doc --locked

step "Helm chart (the real Helm engine, manifests validated against Kubernetes' schemas)"
"${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}/venv/bin/python" charts/test_chart.py

step "end to end on a real Kubernetes control plane"
bash e2e/run.sh

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
  cargo test --workspace --locked --no-fail-fast
fi
