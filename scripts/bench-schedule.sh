#!/usr/bin/env bash
# Scheduling throughput on hollow nodes (docs/benchmarks.md, "Scheduling on hollow nodes"):
# a three-server cluster with one agent of N hollow nodes, then `bosun bench schedule`
# RUNS times. Per run: the leader, the bench's figures, and the CPU seconds every process
# used from the run's start to its last binding (from /proc/PID/stat).
#
#   scripts/bench-schedule.sh [--nodes 5000] [--pods 10000] [--runs 3] [--heartbeat-ms 600000] [--deployment 0]
#
# BOSUN_BIN picks the binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
nodes=5000; pods=10000; runs=3; heartbeat=600000; deployment=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2;;
    --pods) pods="$2"; shift 2;;
    --runs) runs="$2"; shift 2;;
    --heartbeat-ms) heartbeat="$2"; shift 2;;
    --deployment) deployment="$2"; shift 2;;
    *) echo "bench-schedule.sh: unknown argument $1" >&2; exit 1;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
if [[ -z "${BOSUN_BIN:-}" ]]; then
  scripts/setup.sh
  cargo build --release -q -p bosun
  export BOSUN_BIN="$CARGO_TARGET_DIR/release/bosun"
fi
bin="$BOSUN_BIN"
dir="$(mktemp -d /tmp/bosun-sched.XXXX)"
trap 'scripts/cluster.sh down --dir "$dir" > /dev/null 2>&1 || true' EXIT

# Heartbeats far apart by default: a run measures scheduling, not node status writes.
scripts/cluster.sh up --dir "$dir" --ip-base 127.0.7 --hollow "$nodes" \
  --heartbeat-ms "$heartbeat" --node-grace "$((heartbeat * 6)):$((heartbeat * 6))" > /dev/null
export BOSUN_CONFIG="$dir/client.toml"
deadline=$((SECONDS + 600))
until [[ "$("$bin" get nodes 2>/dev/null | grep -c ' Ready')" -ge "$nodes" ]]; do
  [[ $SECONDS -lt $deadline ]] || { echo "bench-schedule.sh: $nodes nodes not Ready within 600 s" >&2; exit 1; }
  sleep 1
done
echo "$nodes hollow nodes Ready"

cpu() { # "name=ticks ..." for the servers and the hollow agent
  for p in s1 s2 s3 hollow; do
    printf '%s=%s ' "$p" "$(awk '{print $14 + $15}' "/proc/$(cat "$dir/$p.pid")/stat")"
  done
}
leader() { "$bin" cluster status 2>/dev/null | awk '$4 == "leader" && $1 ~ /^s[0-9]/ {print $1}'; }

for r in $(seq 1 "$runs"); do
  echo "run $r: leader $(leader)"
  before="$(cpu)"
  "$bin" bench schedule --pods "$pods" --deployment "$deployment" > "$dir/bench.out" 2>&1 &
  bench=$!
  # The bench prints its scheduling line at the last binding, then cleans up.
  until grep -q '^schedule' "$dir/bench.out" || ! kill -0 "$bench" 2> /dev/null; do sleep 0.05; done
  after="$(cpu)"
  wait "$bench" || { cat "$dir/bench.out" >&2; exit 1; }
  grep -E '^(schedule|deployment)' "$dir/bench.out"
  python3 - "$before" "$after" "$(getconf CLK_TCK)" <<'EOF'
import sys
before, after = (dict(kv.split("=") for kv in arg.split()) for arg in sys.argv[1:3])
tick = int(sys.argv[3])
used = {k: (float(after[k]) - float(before[k])) / tick for k in after}
print("cpu s, start to last binding:", " ".join(f"{k}={v:.1f}" for k, v in used.items()), f"total={sum(used.values()):.1f}")
EOF
done
