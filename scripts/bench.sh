#!/usr/bin/env bash
# bosun's store beside etcd 3.4 (Debian's etcd-server) on this machine, in one run, both
# with mTLS and fsync on, three members each on loopback, measured by the same client
# (`bosun bench`, which speaks only the etcd v3 API). Failover is measured twice: the
# leader killed (kill -9), and the leader paused (SIGSTOP, a hung process).
#
#   scripts/bench.sh [--ops N] [--kills N]
#
# BOSUN_BIN picks the binary (default: a release build of this checkout).
# Prints one JSON line per measurement and a Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ops=50000; kills=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ops) ops="$2"; shift 2;;
    --kills) kills="$2"; shift 2;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 1;;
  esac
done

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
use_release_bin
work="$(mktemp -d /tmp/bosun-bench.XXXX)"
cleanup() {
  scripts/cluster.sh down --dir "$work/bosun" >/dev/null 2>&1 || true
  scripts/etcd-cluster.sh down --dir "$work/etcd" >/dev/null 2>&1 || true
}
trap cleanup EXIT

scripts/cluster.sh up --dir "$work/bosun" --ip-base 127.0.2 > /dev/null
scripts/etcd-cluster.sh up --dir "$work/etcd" --ip-base 127.0.3 > /dev/null

max_term() { # the highest Raft term any member reports
  etcdctl endpoint status -w json 2>/dev/null | python3 -c \
    'import json,sys; print(max(e["Status"]["header"]["raft_term"] for e in json.load(sys.stdin)))'
}

results="$work/results.jsonl"
for sys in bosun etcd; do
  (
    # shellcheck disable=SC1090
    source "$work/$sys/env"
    term0="$(max_term)"
    run() { # label, bench args…
      local label="$1"; shift
      local out; out="$("$BOSUN_BIN" bench kv --json "$@")"
      echo "{\"system\":\"$sys\",\"case\":\"$label\",\"result\":$out}" | tee -a "$results"
    }
    # A warm-up, not recorded: both systems measured warm, neither in its first seconds
    # after start (when bosun's single-client figure came out a third low).
    "$BOSUN_BIN" bench kv --clients 8 --ops 2000 --value-size 256 > /dev/null
    run "put-1" --clients 1 --ops $((ops / 10)) --value-size 256
    run "put-64" --clients 64 --ops "$ops" --value-size 256
    run "get-64-linearizable" --clients 64 --ops "$ops" --mode get
    term1="$(max_term)"
    echo "{\"system\":\"$sys\",\"case\":\"elections-under-load\",\"result\":{\"term_before\":$term0,\"term_after\":$term1}}" | tee -a "$results"
    out="$("$BOSUN_BIN" bench failover --dir "$work/$sys" --kills "$kills" --json)"
    echo "{\"system\":\"$sys\",\"case\":\"failover\",\"result\":$out}" | tee -a "$results"
    # A hung leader (SIGSTOP): its connections stay open, so nothing resets them.
    out="$("$BOSUN_BIN" bench failover --dir "$work/$sys" --kills "$kills" --pause --json)"
    echo "{\"system\":\"$sys\",\"case\":\"failover-pause\",\"result\":$out}" | tee -a "$results"
  )
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
get = lambda s, c: next(r["result"] for r in rows if r["system"] == s and r["case"] == c)
print()
print("| measurement | bosun | etcd 3.4 | bosun / etcd |")
print("|---|---|---|---|")
for case, label in [("put-1", "writes/s, 1 client"), ("put-64", "writes/s, 64 clients"), ("get-64-linearizable", "linearizable reads/s, 64 clients")]:
    b, e = get("bosun", case), get("etcd", case)
    print(f"| {label} | {b['ops_per_sec']:.0f} | {e['ops_per_sec']:.0f} | {b['ops_per_sec']/e['ops_per_sec']:.2f}x |")
    print(f"| {label}: p50 / p99 ms | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {e['p50_ms']:.2f} / {e['p99_ms']:.2f} | |")
for s in ("bosun", "etcd"):
    t = get(s, "elections-under-load")
    print(f"| {s}: Raft term before / after the load | {t['term_before']} / {t['term_after']} | | |") if s == "bosun" else print(f"| etcd: Raft term before / after the load | | {t['term_before']} / {t['term_after']} | |")
b, e = get("bosun", "failover"), get("etcd", "failover")
print(f"| leader kill -9 → writes resume, median ms ({b['kills']} kills) | {b['median_ms']:.0f} | {e['median_ms']:.0f} | |")
print(f"| leader kill -9 → writes resume, max ms | {b['max_ms']:.0f} | {e['max_ms']:.0f} | |")
b, e = get("bosun", "failover-pause"), get("etcd", "failover-pause")
print(f"| leader paused (SIGSTOP) → writes resume, median ms ({b['kills']} pauses) | {b['median_ms']:.0f} | {e['median_ms']:.0f} | |")
print(f"| leader paused (SIGSTOP) → writes resume, max ms | {b['max_ms']:.0f} | {e['max_ms']:.0f} | |")
PY
