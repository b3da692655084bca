#!/usr/bin/env bash
# Runs everything CI runs: format check, clippy (warnings are errors) and all tests.
# Tests start real bosun processes on loopback, with real RocksDB and real TLS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# One shared build cache outside the checkout (a cold RocksDB build takes ~10 minutes).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
# Cluster tests each start several servers: two at a time on a two-core machine.
cargo test --workspace -- --test-threads="${BOSUN_TEST_THREADS:-2}"
