# Shared by cluster.sh and etcd-cluster.sh (sourced; expects $dir and $root to be set),
# and by the benchmark scripts (use_release_bin, wait_ready_nodes).

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# The bosun binary: $BOSUN_BIN, else the one the cluster was brought up with, else a fresh
# debug build (a no-op when up to date, never a stale binary).
bosun_bin() {
  if [[ -n "${BOSUN_BIN:-}" ]]; then echo "$BOSUN_BIN"; return; fi
  if [[ -n "${dir:-}" && -f "$dir/bin" ]]; then cat "$dir/bin"; return; fi
  local t="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
  (cd "$root" && CARGO_TARGET_DIR="$t" cargo build -q -p bosun) >&2 || die "building bosun failed"
  echo "$t/debug/bosun"
}

# Whether process $1 runs. A zombie counts as gone: where PID 1 does not reap orphans
# (some containers), a killed server stays a zombie, and `kill -0` would still succeed.
pid_alive() {
  local st
  st="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$st" && "${st:0:1}" != Z ]]
}

# Whether the process of member $1 runs.
alive() { [[ -f "$dir/$1.pid" ]] && pid_alive "$(cat "$dir/$1.pid")"; }

# Stops member $1 with signal $2 (TERM: SIGKILL after 10 s) and removes its pid file.
stop_one() {
  local n="$1" sig="$2" pid deadline
  [[ -f "$dir/$n.pid" ]] || return 0
  pid="$(cat "$dir/$n.pid")"
  kill "-$sig" "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while pid_alive "$pid"; do
    (( SECONDS < deadline )) || kill -9 "$pid" 2>/dev/null || true
    sleep 0.05
  done
  rm -f "$dir/$n.pid"
}

# Writes DIR/ctl: script $1 bound to this cluster directory.
write_ctl() {
  printf '#!/bin/sh\nexec %q "$@" --dir %q\n' "$1" "$dir" > "$dir/ctl"
  chmod +x "$dir/ctl"
}

# For the benchmark scripts (run from the repository root): $BOSUN_BIN, else a release
# build of this checkout (after scripts/setup.sh); sets `bin`.
use_release_bin() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
  if [[ -z "${BOSUN_BIN:-}" ]]; then
    scripts/setup.sh
    cargo build --release -q -p bosun
    export BOSUN_BIN="$CARGO_TARGET_DIR/release/bosun"
  fi
  bin="$BOSUN_BIN"
}

# Waits (up to 600 s) until the cluster of $BOSUN_CONFIG has $1 Ready nodes.
wait_ready_nodes() {
  local want="$1" deadline=$((SECONDS + 600))
  until [[ "$("$bin" get nodes 2>/dev/null | grep -c ' Ready')" -ge "$want" ]]; do
    [[ $SECONDS -lt $deadline ]] || die "$want nodes not Ready within 600 s"
    sleep 1
  done
}
