#!/usr/bin/env bash
# Where the CPU goes under a benchmark's load (docs/benchmarks.md uses its tables): starts a
# cluster, runs the workload once to warm it, then samples processes with
# `perf record --call-graph dwarf` during a second run and prints, per process, the share
# of samples under each outermost bosun function and the hottest symbols.
#
#   scripts/profile.sh schedule [--who leader|servers|all] [--seconds 3] [--out DIR]
#   scripts/profile.sh kv       [--who leader|servers|all] [--seconds 3] [--out DIR]
#
# schedule: 5,000 hollow nodes, `bosun bench schedule --pods 10000 --deployment 0`.
# kv:       `bosun bench kv --clients 64 --value-size 256` (a 20,000-write warm-up first).
# --who picks what is sampled: the Raft leader (default), the three servers, or every
# process of the cluster (servers, hollow agent, bench client).
# BOSUN_BIN picks the binary (default: a release build of this checkout). Needs `perf`
# (Debian: linux-perf) and permission to sample (root, or perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
[[ $# -ge 1 ]] || die "usage: scripts/profile.sh schedule|kv [--who leader|servers|all] [--seconds N] [--out DIR]"
mode="$1"; shift
who=leader; seconds=3; out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --who) who="$2"; shift 2;;
    --seconds) seconds="$2"; shift 2;;
    --out) out="$2"; shift 2;;
    *) die "unknown argument $1";;
  esac
done
case "$mode" in schedule|kv) ;; *) die "unknown workload $mode (schedule or kv)";; esac
case "$who" in leader|servers|all) ;; *) die "--who takes leader, servers or all, not $who";; esac
command -v perf > /dev/null || die "perf is missing (apt-get install linux-perf)"

use_release_bin
dir="$(mktemp -d /tmp/bosun-prof.XXXX)"
out="${out:-$dir}"
mkdir -p "$out"
trap 'scripts/cluster.sh down --dir "$dir" > /dev/null 2>&1 || true' EXIT

if [[ "$mode" == schedule ]]; then
  scripts/cluster.sh up --dir "$dir" --ip-base 127.0.8 --hollow 5000 --heartbeat-ms 600000 \
    --node-grace 3600000:3600000 > /dev/null
  export BOSUN_CONFIG="$dir/client.toml"
  wait_ready_nodes 5000
  workload=("$bin" bench schedule --pods 10000 --deployment 0)
else
  scripts/cluster.sh up --dir "$dir" --ip-base 127.0.8 > /dev/null
  # shellcheck disable=SC1091
  source "$dir/env"
  "$bin" bench kv --clients 64 --ops 20000 --value-size 256 > /dev/null
  workload=("$bin" bench kv --clients 64 --ops 60000 --value-size 256)
fi
if [[ "$mode" == schedule ]]; then
  echo "warm-up run"
  "${workload[@]}" > "$dir/warmup.out" 2>&1 || { cat "$dir/warmup.out" >&2; die "the warm-up run failed"; }
fi

leader="$("$bin" cluster status --config "$dir/client.toml" 2>/dev/null | awk '$4 == "leader" && $1 ~ /^s[0-9]/ {print $1}')"
[[ -n "$leader" ]] || die "no leader"
"${workload[@]}" > "$dir/run.out" 2>&1 &
load=$!
# The sampled processes, once the workload's own process exists.
case "$who" in
  leader) pids="$(cat "$dir/$leader.pid")";;
  servers) pids="$(cat "$dir"/s[0-9].pid | paste -sd,)";;
  all) pids="$( (cat "$dir"/s[0-9].pid; [[ -f "$dir/hollow.pid" ]] && cat "$dir/hollow.pid"; echo "$load") | paste -sd,)";;
esac
echo "leader $leader; sampling $who (pids $pids) for $seconds s"
perf record -q -F 499 --call-graph dwarf,16384 -p "$pids" -o "$out/perf.data" -- sleep "$seconds" 2> "$dir/perf.err" \
  || { cat "$dir/perf.err" >&2; die "perf record failed"; }
wait "$load" || { cat "$dir/run.out" >&2; die "the workload failed"; }
grep -vE '^\s*$' "$dir/run.out" | tail -n 4
perf script -i "$out/perf.data" -F comm,pid,tid,ip,sym 2> /dev/null > "$out/perf.txt"
python3 scripts/perf-buckets.py "$out/perf.txt" "$dir"
echo "samples kept in $out (perf.data, perf.txt)"
