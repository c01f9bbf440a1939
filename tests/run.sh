#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, then every test of the workspace.
#   tests/run.sh                 # everything
#   tests/run.sh --test e2e_cli  # extra arguments go to cargo test / nextest
set -euo pipefail
cd "$(dirname "$0")/.."

tests/install-deps.sh

# Benchmarks are built (so they keep compiling) but not run: they measure, they don't test.
cargo build --workspace --benches

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
else
  exec cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
fi
