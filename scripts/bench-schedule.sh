#!/usr/bin/env bash
# Scheduling throughput on hollow nodes (docs/benchmarks.md, "Scheduling on hollow nodes"):
# a three-server cluster with one agent of N hollow nodes, then `bosun bench schedule`
# RUNS times. Per run, from its start to its last binding: the leader, the bench's figures,
# the CPU seconds every process used (/proc/PID/stat), the share of both CPUs idle, in
# iowait and stolen (/proc/stat), and the snapshot builds that overlapped it (server logs);
# per process also its CPU seconds in the kernel, its minor page faults, and its resident
# memory (MiB) after the run.
#
#   scripts/bench-schedule.sh [--nodes 5000] [--pods 10000] [--runs 3] [--heartbeat-ms 600000] [--deployment 0]
#                             [--snapshot-every 10000]
#
# BOSUN_BIN picks the binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
nodes=5000; pods=10000; runs=3; heartbeat=600000; deployment=0; snapshot_every=10000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2;;
    --pods) pods="$2"; shift 2;;
    --runs) runs="$2"; shift 2;;
    --heartbeat-ms) heartbeat="$2"; shift 2;;
    --deployment) deployment="$2"; shift 2;;
    --snapshot-every) snapshot_every="$2"; shift 2;;
    *) echo "bench-schedule.sh: unknown argument $1" >&2; exit 1;;
  esac
done

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
use_release_bin
dir="$(mktemp -d /tmp/bosun-sched.XXXX)"
trap 'scripts/cluster.sh down --dir "$dir" > /dev/null 2>&1 || true' EXIT

# Heartbeats far apart by default: a run measures scheduling, not node status writes.
scripts/cluster.sh up --dir "$dir" --ip-base 127.0.7 --hollow "$nodes" --snapshot-every "$snapshot_every" \
  --heartbeat-ms "$heartbeat" --node-grace "$((heartbeat * 6)):$((heartbeat * 6))" > /dev/null
export BOSUN_CONFIG="$dir/client.toml"
wait_ready_nodes "$nodes"
echo "$nodes hollow nodes Ready"

cpu() { # "name=ticks ..." for the servers and the hollow agent, then their kernel-mode
  # ticks ("name.sys") and minor page faults ("name.minflt"), then the machine's idle,
  # iowait, steal and total ticks (from /proc/stat, both CPUs together)
  for p in s1 s2 s3 hollow; do
    awk -v p="$p" '{ printf "%s=%d %s.sys=%d %s.minflt=%d ", p, $14 + $15, p, $15, p, $10 }' \
      "/proc/$(cat "$dir/$p.pid")/stat"
  done
  awk '$1 == "cpu" { printf "@idle=%d @iowait=%d @steal=%d @all=%d", $5, $6, $9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat
}
# Snapshot builds (from the servers' "snapshot built ... took_ms" lines) that overlapped
# the window from $1 to $2 (epoch seconds): how many, and their seconds inside it.
snapshots() {
  python3 - "$1" "$2" "$dir"/s[0-9]*.log <<'EOF'
import datetime, re, sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
line = re.compile(r"^(\S+Z).*snapshot built.*took_ms=(\d+)")
n, inside = 0, 0.0
for path in sys.argv[3:]:
    for raw in open(path, errors="replace"):
        m = line.match(re.sub(r"\x1b\[[0-9;]*m", "", raw))
        if not m:
            continue
        end = datetime.datetime.fromisoformat(m[1].replace("Z", "+00:00")).timestamp()
        overlap = min(end, t1) - max(end - int(m[2]) / 1000, t0)
        if overlap > 0:
            n, inside = n + 1, inside + overlap
print(f"snapshot builds overlapping start to last binding: {n} ({inside:.1f} s of build time inside)")
EOF
}
leader() { "$bin" cluster status 2>/dev/null | awk '$4 == "leader" && $1 ~ /^s[0-9]/ {print $1}'; }

for r in $(seq 1 "$runs"); do
  echo "run $r: leader $(leader)"
  before="$(cpu)"; started="$(date +%s.%N)"
  # Emptied here, not by the redirection below: that happens in the child, and the loop
  # could otherwise read the last run's line before it and take no CPU figures.
  : > "$dir/bench.out"
  "$bin" bench schedule --pods "$pods" --deployment "$deployment" > "$dir/bench.out" 2>&1 &
  bench=$!
  # The bench prints its scheduling line at the last binding, then cleans up.
  until grep -q '^schedule' "$dir/bench.out" || ! kill -0 "$bench" 2> /dev/null; do sleep 0.05; done
  after="$(cpu)"; ended="$(date +%s.%N)"
  wait "$bench" || { cat "$dir/bench.out" >&2; exit 1; }
  grep -E '^(schedule|namespace|deployment)' "$dir/bench.out"
  snapshots "$started" "$ended"
  printf 'resident memory after the run:'
  for p in s1 s2 s3 hollow; do
    awk -v p="$p" '$1 == "VmRSS:" { printf " %s=%d MiB", p, $2 / 1024 }' "/proc/$(cat "$dir/$p.pid")/status"
  done
  echo
  python3 - "$before" "$after" "$(getconf CLK_TCK)" <<'EOF'
import sys
before, after = (dict(kv.split("=") for kv in arg.split()) for arg in sys.argv[1:3])
tick = int(sys.argv[3])
delta = {k: float(after[k]) - float(before[k]) for k in after}
machine = {k[1:]: v / tick for k, v in delta.items() if k.startswith("@")}
used = {k: v / tick for k, v in delta.items() if "." not in k and not k.startswith("@")}
print("cpu s, start to last binding:", " ".join(f"{k}={v:.1f}" for k, v in used.items()), f"total={sum(used.values()):.1f}")
print("of which in the kernel:", " ".join(f"{k}={delta[k + '.sys'] / tick:.2f}" for k in used))
print("minor page faults:", " ".join(f"{k}={delta[k + '.minflt']:.0f}" for k in used))
share = lambda k: 100 * machine[k] / machine["all"] if machine["all"] > 0 else 0.0
print("both CPUs, start to last binding:", " ".join(f"{k} {share(k):.1f} %" for k in ("idle", "iowait", "steal")))
EOF
done
