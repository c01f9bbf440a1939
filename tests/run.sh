#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, then every test of the workspace.
#   tests/run.sh                 # everything: the fast lane and the long lane (what CI runs)
#   tests/run.sh --fast          # the fast lane only (COFFER_LONG_TESTS unset)
#   tests/run.sh --test e2e_cli  # extra arguments go to cargo test / nextest
# The long lane (COFFER_LONG_TESTS=1) adds the crash matrix's 100 kills (tests/e2e_crash.rs) and
# real-data round trips of /usr/share/doc and Python's standard library (tests/e2e_real_data.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fast" ]; then
  shift
  unset COFFER_LONG_TESTS
else
  export COFFER_LONG_TESTS=1
fi

tests/install-deps.sh

# A clean clone gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# Benchmarks are built (so they keep compiling) but not run: they measure, they don't test.
cargo build --workspace --benches

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
else
  exec cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
fi
