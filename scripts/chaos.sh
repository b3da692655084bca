#!/usr/bin/env bash
# The chaos scenarios (chaos/scenarios/), longer than CI runs them: each kills -9 or pauses
# the leader, or restarts the whole control plane, ROUNDS times while clients read, write
# and compare-and-set, then checks every key's history for linearizability.
#
#   scripts/chaos.sh [--rounds 10] [--seed N] [SCENARIO-FILTER]
#
# A failure prints the seed (CHAOS_SEED replays the clients' choices; the faults' timing
# still varies), the operations that could not be placed, and the servers' last log lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=10; seed=""; filter=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2;;
    --seed) seed="$2"; shift 2;;
    -*) echo "chaos.sh: unknown argument $1" >&2; exit 1;;
    *) filter="$1"; shift;;
  esac
done
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
export CHAOS_ROUNDS="$rounds"
[[ -n "$seed" ]] && export CHAOS_SEED="$seed"
cargo test -p bosun --test chaos -- --test-threads=1 --nocapture ${filter:+"$filter"}
