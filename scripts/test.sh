#!/usr/bin/env bash
# Runs everything CI runs: format check, clippy (warnings are errors) and all tests.
# Tests start real bosun processes on loopback, with real RocksDB and real TLS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# The agent tests run pods on this host's Docker Engine, from images built here (no
# registry). Under CI=true a missing Docker fails; elsewhere those tests are skipped.
if docker info > /dev/null 2>&1; then
  scripts/images.sh
elif [[ "${CI:-}" == true ]]; then
  echo "test.sh: the Docker daemon does not answer; CI needs it for the agent tests" >&2
  exit 1
else
  echo "test.sh: no Docker daemon: the agent tests will be skipped" >&2
fi
# One shared build cache outside the checkout (a cold RocksDB build takes ~10 minutes).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
# Cluster tests each start several servers: two at a time on a two-core machine.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace -- --test-threads="${BOSUN_TEST_THREADS:-2}" 2>&1 | tee "$log"
# .cargo/config.toml builds RocksDB for SSE4.2 and PCLMULQDQ, so that it checksums its
# WAL with the CPU's CRC32C instruction (docs/benchmarks.md); the three-way CRC32C
# function exists only in such a build.
if [[ "$(uname -m)" == x86_64 ]] && ! nm -C "$CARGO_TARGET_DIR/debug/bosun" | grep crc32c_3way > /dev/null; then
  echo "test.sh: RocksDB was built without hardware CRC32C (is CXXFLAGS_x86_64_unknown_linux_gnu overridden?)" >&2
  exit 1
fi
# One closing line with the totals over every test binary (cargo ends on the last crate's).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log"
