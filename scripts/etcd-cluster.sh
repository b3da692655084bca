#!/usr/bin/env bash
# A local three-member etcd (Debian's etcd-server, 3.4) on loopback: the peer our store is
# measured against. Same layout and verbs as scripts/cluster.sh, so `bosun bench failover`
# can kill its leader the same way; mTLS on both ports with a PKI made by `bosun pki init`.
#
#   scripts/etcd-cluster.sh up    --dir DIR [--ip-base 127.0.1]
#   scripts/etcd-cluster.sh stop|kill|start NAME --dir DIR
#   scripts/etcd-cluster.sh down  --dir DIR
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"


cmd="${1:-}"; shift || true
name=""
if [[ "$cmd" =~ ^(stop|kill|start)$ ]]; then name="${1:-}"; shift || true; fi
dir=""; ip_base="127.0.1"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2;;
    --ip-base) ip_base="$2"; shift 2;;
    *) die "unknown argument $1";;
  esac
done
[[ -n "$dir" ]] || die "--dir is required"
command -v etcd >/dev/null || die "etcd not found: apt-get install etcd-server"
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
[[ -f "$dir/ip-base" ]] && ip_base="$(cat "$dir/ip-base")"
ip_of() { echo "$ip_base.$((10 + ${1#s}))"; }
cluster="s1=https://$(ip_of s1):2380,s2=https://$(ip_of s2):2380,s3=https://$(ip_of s3):2380"


start_one() {
  local n="$1" ip state=new; ip="$(ip_of "$n")"
  if alive "$n"; then return; fi
  [[ -d "$dir/data/$n/member" ]] && state=existing
  # ETCD_UNSUPPORTED_ARCH is harmless on amd64; fsync stays on (etcd's default).
  nohup etcd --name "$n" --data-dir "$dir/data/$n" \
    --listen-client-urls "https://$ip:2379" --advertise-client-urls "https://$ip:2379" \
    --listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
    --listen-metrics-urls "http://$ip:2381" \
    --initial-cluster "$cluster" --initial-cluster-state "$state" --initial-cluster-token bosun-bench \
    --client-cert-auth --trusted-ca-file "$dir/pki/ca.crt" \
    --cert-file "$dir/pki/servers/$n.crt" --key-file "$dir/pki/servers/$n.key" \
    --peer-client-cert-auth --peer-trusted-ca-file "$dir/pki/ca.crt" \
    --peer-cert-file "$dir/pki/servers/$n.crt" --peer-key-file "$dir/pki/servers/$n.key" \
    >> "$dir/$n.log" 2>&1 &
  echo $! > "$dir/$n.pid"
}


case "$cmd" in
  up)
    echo "$ip_base" > "$dir/ip-base"
    [[ -f "$dir/pki/ca.crt" ]] || "$(bosun_bin)" pki init --dir "$dir/pki" --cluster-name etcd \
      --servers "s1=$(ip_of s1),s2=$(ip_of s2),s3=$(ip_of s3)" > /dev/null
    cat > "$dir/env" <<ENV
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS=https://$(ip_of s1):2379,https://$(ip_of s2):2379,https://$(ip_of s3):2379
export ETCDCTL_CACERT=$dir/pki/ca.crt
export ETCDCTL_CERT=$dir/pki/users/admin.crt
export ETCDCTL_KEY=$dir/pki/users/admin.key
ENV
    write_ctl "$here/etcd-cluster.sh"
    for n in s1 s2 s3; do start_one "$n"; done
    # shellcheck disable=SC1091
    source "$dir/env"
    deadline=$((SECONDS + 60))
    until etcdctl endpoint status > /dev/null 2>&1 && etcdctl put /etcd-cluster/up 1 > /dev/null 2>&1; do
      (( SECONDS < deadline )) || die "etcd did not come up (logs in $dir/*.log)"
      sleep 0.2
    done
    etcdctl endpoint status -w table
    ;;
  start) start_one "$name" ;;
  stop) stop_one "$name" TERM ;;
  kill) stop_one "$name" KILL ;;
  down) for f in "$dir"/*.pid; do [[ -e "$f" ]] || continue; stop_one "$(basename "$f" .pid)" TERM; done ;;
  *) die "usage: etcd-cluster.sh up|start|stop|kill|down --dir DIR" ;;
esac
