#!/usr/bin/env bash
# A local bosun cluster on loopback: the one way tests, chaos, benchmarks and people start one.
#
#   scripts/cluster.sh up    --dir DIR [--servers N] [--ip-base 127.0.0] [--snapshot-every N] [--election-ms MIN-MAX] [--compact RETAIN:INTERVAL_MS]
#                            [--hollow N] [--heartbeat-ms MS] [--node-grace GRACE_MS:EVICTION_MS]
#                            [--agents N] [--backoff-ms MS] [--service-cidr CIDR] [--max-value-bytes N]
#   (--agents N: N Docker agents worker-1..N on this host's Docker Engine, node certificates
#    from the cluster PKI; images are not pulled: build them with scripts/images.sh)
#   scripts/cluster.sh stop  NAME --dir DIR     # SIGTERM, then SIGKILL after 10 s
#   scripts/cluster.sh kill  NAME --dir DIR     # SIGKILL
#   scripts/cluster.sh start NAME --dir DIR     # (re)start one server or agent (worker-N)
#   scripts/cluster.sh join  NAME --dir DIR     # start a new server that joins (then: bosun cluster add-member)
#   scripts/cluster.sh status --dir DIR
#   scripts/cluster.sh down  --dir DIR          # stops every process it started, removes the agents' containers
#
# Layout of DIR: pki/, <name>.toml, <name>.pid, <name>.log, data/<name>/, client.toml,
# env (source it: BOSUN_CONFIG and ETCDCTL_*), ctl (this script bound to DIR).
# Servers listen on IP_BASE.1X: client port 2379, peer 2380, metrics 2381. Agents worker-N
# report IP_BASE.(20+N) as their address; their pods are on the Docker network "bosun".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"



cmd="${1:-}"; shift || true
name=""
if [[ "$cmd" =~ ^(stop|kill|start|join)$ ]]; then name="${1:-}"; shift || true; [[ -n "$name" ]] || die "$cmd needs a server name"; fi
dir=""; servers=3; ip_base="127.0.0"; snapshot_every=10000; election=""; compact=""
hollow=0; heartbeat_ms=2500; node_grace=""; agents=0; backoff_ms=10000; service_cidr=""; max_value=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2;;
    --servers) servers="$2"; shift 2;;
    --ip-base) ip_base="$2"; shift 2;;
    --snapshot-every) snapshot_every="$2"; shift 2;;
    --election-ms) election="$2"; shift 2;;   # MIN-MAX, e.g. 200-400
    --compact) compact="$2"; shift 2;;        # RETAIN:INTERVAL_MS, e.g. 10000:30000
    --hollow) hollow="$2"; shift 2;;          # start N hollow nodes (bosun agent --hollow N)
    --heartbeat-ms) heartbeat_ms="$2"; shift 2;;
    --node-grace) node_grace="$2"; shift 2;;  # GRACE_MS:EVICTION_MS, e.g. 10000:30000
    --agents) agents="$2"; shift 2;;          # start N Docker agents worker-1..N
    --backoff-ms) backoff_ms="$2"; shift 2;;  # the agents' first restart back-off
    --service-cidr) service_cidr="$2"; shift 2;;  # service IP range, e.g. 10.96.0.0/28 (a tiny one makes allocations clash)
    --max-value-bytes) max_value="$2"; shift 2;;  # largest stored value, also the object size limit (default 1.5 MiB)
    *) die "unknown argument $1";;
  esac
done
[[ -n "$dir" ]] || die "--dir is required"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
[[ -f "$dir/ip-base" ]] && ip_base="$(cat "$dir/ip-base")"

ip_of() { echo "$ip_base.$((10 + ${1#s}))"; }


write_config() { # name id join
  local n="$1" id="$2" join="$3" ip i; ip="$(ip_of "$n")"
  {
    echo "name = \"$n\""
    echo "id = $id"
    echo "data_dir = \"$dir/data/$n\""
    echo "peer_addr = \"$ip:2380\""
    echo "client_addr = \"$ip:2379\""
    echo "admin_addr = \"$ip:2381\""
    echo "join = $join"
    if [[ -n "$compact" ]]; then
      echo "compaction_retain_revisions = ${compact%:*}"
      echo "compaction_interval_ms = ${compact#*:}"
    fi
    if [[ -n "$max_value" ]]; then
      echo "max_value_bytes = $max_value"
    fi
    if [[ -n "$node_grace" ]]; then
      echo "[controllers]"
      echo "node_grace_ms = ${node_grace%:*}"
      echo "eviction_ms = ${node_grace#*:}"
    fi
    if [[ -n "$service_cidr" ]]; then
      echo "[api]"
      echo "service_cidr = \"$service_cidr\""
    fi
    echo "[tls]"
    echo "ca = \"$dir/pki/ca.crt\""
    echo "cert = \"$dir/pki/servers/$n.crt\""
    echo "key = \"$dir/pki/servers/$n.key\""
    echo "[raft]"
    echo "snapshot_every = $snapshot_every"
    echo "keep_after_snapshot = $(( snapshot_every < 1000 ? snapshot_every / 2 : 1000 ))"
    if [[ -n "$election" ]]; then
      echo "election_min_ms = ${election%-*}"
      echo "election_max_ms = ${election#*-}"
    fi
    if [[ "$join" == false ]]; then
      for i in $(seq 1 "$servers"); do
        echo "[[members]]"
        echo "id = $i"
        echo "name = \"s$i\""
        echo "peer_addr = \"$(ip_of "s$i"):2380\""
        echo "client_addr = \"$(ip_of "s$i"):2379\""
      done
    fi
  } > "$dir/$n.toml"
}

start_one() {
  local n="$1" bin; bin="$(bosun_bin)"
  [[ -f "$dir/$n.toml" ]] || die "no config $dir/$n.toml"
  if alive "$n"; then echo "$n already running (pid $(cat "$dir/$n.pid"))"; return; fi
  if [[ "$n" == worker-* ]]; then
    nohup "$bin" agent --config "$dir/$n.toml" >> "$dir/$n.log" 2>&1 &
  else
    nohup "$bin" server -c "$dir/$n.toml" >> "$dir/$n.log" 2>&1 &
  fi
  echo $! > "$dir/$n.pid"
}

write_agent_config() { # name index
  local n="$1" i="$2" servers_list="" j
  for j in $(seq 1 "$servers"); do servers_list+="${servers_list:+, }\"$(ip_of "s$j"):2379\""; done
  if [[ ! -f "$dir/pki/nodes/$n.crt" ]]; then
    "$(bosun_bin)" pki issue --dir "$dir/pki" --node "$n" > /dev/null
  fi
  cat > "$dir/$n.toml" <<TOML
name = "$n"
servers = [$servers_list]
ca = "$dir/pki/ca.crt"
cert = "$dir/pki/nodes/$n.crt"
key = "$dir/pki/nodes/$n.key"
address = "$ip_base.$((20 + i))"
data_dir = "$dir/data/$n"
port = 10250
pulls = false
cpu = "2"
memory = "4Gi"
heartbeat_ms = $heartbeat_ms
backoff_initial_ms = $backoff_ms
TOML
}

# Removes the containers of the agents of this cluster (by the owner id each one wrote).
remove_agent_containers() {
  local f id ids
  command -v docker > /dev/null || return 0
  for f in "$dir"/data/worker-*/agent-id; do
    [[ -e "$f" ]] || continue
    id="$(cat "$f")"
    ids="$(docker ps -aq --filter "label=bosun.io/agent=$id" 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [[ -z "$ids" ]] || docker rm -f $ids > /dev/null 2>&1 || true
  done
}

wait_leader() {
  local bin deadline; bin="$(bosun_bin)"; deadline=$((SECONDS + ${1:-60}))
  until "$bin" cluster status --config "$dir/client.toml" > "$dir/status.out" 2>&1; do
    (( SECONDS < deadline )) || { cat "$dir/status.out" >&2; die "no leader after ${1:-60}s (logs in $dir/*.log)"; }
    sleep 0.2
  done
}


case "$cmd" in
  up)
    echo "$ip_base" > "$dir/ip-base"
    bin="$(bosun_bin)"
    echo "$bin" > "$dir/bin"
    if [[ ! -f "$dir/pki/ca.crt" ]]; then
      specs=""
      for i in $(seq 1 "$servers"); do specs+="${specs:+,}s$i=$(ip_of "s$i")"; done
      "$bin" pki init --dir "$dir/pki" --servers "$specs" > /dev/null
    fi
    endpoints=""; servers_toml=""
    for i in $(seq 1 "$servers"); do
      write_config "s$i" "$i" false
      endpoints+="${endpoints:+,}https://$(ip_of "s$i"):2379"
      servers_toml+="${servers_toml:+, }\"$(ip_of "s$i"):2379\""
    done
    cat > "$dir/client.toml" <<TOML
servers = [$servers_toml]
ca = "$dir/pki/ca.crt"
cert = "$dir/pki/users/admin.crt"
key = "$dir/pki/users/admin.key"
namespace = "default"
TOML
    cat > "$dir/env" <<ENV
export BOSUN_CONFIG=$dir/client.toml
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS=$endpoints
export ETCDCTL_CACERT=$dir/pki/ca.crt
export ETCDCTL_CERT=$dir/pki/users/admin.crt
export ETCDCTL_KEY=$dir/pki/users/admin.key
ENV
    write_ctl "$here/cluster.sh"
    for i in $(seq 1 "$servers"); do start_one "s$i"; done
    wait_leader 60
    if [[ "$hollow" -gt 0 ]] && ! alive hollow; then
      nohup "$bin" agent --hollow "$hollow" --heartbeat-ms "$heartbeat_ms" --config "$dir/client.toml" >> "$dir/hollow.log" 2>&1 &
      echo $! > "$dir/hollow.pid"
    fi
    for i in $(seq 1 "$agents"); do
      write_agent_config "worker-$i" "$i"
      start_one "worker-$i"
    done
    cat "$dir/status.out"
    if [[ "$hollow" -gt 0 ]]; then echo "hollow nodes: $hollow (log $dir/hollow.log)"; fi
    if [[ "$agents" -gt 0 ]]; then echo "agents: worker-1..$agents (logs $dir/worker-*.log)"; fi
    echo "cluster up in $dir: source $dir/env"
    ;;
  start) start_one "$name"; ;;
  join)
    id="${name#s}"
    [[ "$id" =~ ^[0-9]+$ ]] || die "join: names are sN"
    if [[ ! -f "$dir/pki/servers/$name.crt" ]]; then
      "$(bosun_bin)" pki issue --dir "$dir/pki" --server "$name=$(ip_of "$name")" > /dev/null
    fi
    write_config "$name" "$id" true
    start_one "$name"
    ;;
  stop) stop_one "$name" TERM ;;
  kill) stop_one "$name" KILL ;;
  status) "$(bosun_bin)" cluster status --config "$dir/client.toml" ;;
  down)
    for f in "$dir"/*.pid; do [[ -e "$f" ]] || continue; stop_one "$(basename "$f" .pid)" TERM; done
    remove_agent_containers
    ;;
  *) die "usage: cluster.sh up|start|stop|kill|join|status|down --dir DIR" ;;
esac
