#!/usr/bin/env bash
# From a fresh machine to a running bosun cluster on this host: installs missing packages,
# builds bosun and the local images (no registry needed), makes a PKI, starts servers s1-s3
# on 127.0.0.11-13 and one Docker agent (worker-1), and deploys the example app
# (config/examples/web.yaml) as real containers.
#   scripts/quickstart.sh [DIR]      (default DIR: ./.bosun-local)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${1:-$PWD/.bosun-local}"

scripts/setup.sh
echo "== building the local images (bosun/busybox, bosun/debian) from Debian packages"
scripts/images.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
echo "== building bosun (the first build compiles RocksDB: about 10 minutes on 2 cores)"
cargo build -p bosun
echo "== starting three servers and a worker agent in $dir"
scripts/cluster.sh up --dir "$dir" --agents 1
# shellcheck disable=SC1091
source "$dir/env"
echo "== writing and reading through the etcd v3 API"
etcdctl put /quickstart/hello world
etcdctl get --prefix /quickstart/
etcdctl endpoint status -w table
bosun="$CARGO_TARGET_DIR/debug/bosun"
echo "== applying the example app (config/examples/web.yaml)"
# Every server creates the default namespaces and roles once a leader exists.
for _ in $(seq 1 50); do
  "$bosun" get ns default > /dev/null 2>&1 && break
  sleep 0.2
done
"$bosun" apply -f config/examples/web.yaml
# The scheduler places the Deployment's pods on worker-1, which runs them in Docker.
"$bosun" rollout status deployment/web -n web --timeout 120
"$bosun" get deploy,rs,svc,ep -n web
"$bosun" get pods -n web -o wide
pod="$("$bosun" get pods -n web -o name | head -1)"
pod="${pod#pod/}"
echo "== inside $pod (bosun exec), and its page from this host"
"$bosun" exec -n web "$pod" -- cat /www/index.html
ip="$("$bosun" get pod "$pod" -n web -o json | sed -n 's/.*"podIP": *"\([^"]*\)".*/\1/p' | head -1)"
if command -v curl > /dev/null && [[ -n "$ip" ]]; then curl -s "http://$ip:8080/"; fi
cat <<MSG

bosun is running. Next:
  source $dir/env                 # BOSUN_CONFIG and ETCDCTL_* for this cluster
  $bosun cluster status
  $bosun get all -n web ; $bosun describe deployment web -n web ; $bosun get svc web -n web -o yaml
  $bosun auth can-i create deployments -n web --as alice
  scripts/cluster.sh kill s1 --dir $dir ; $bosun get ns -v   # kill a server: another answers
  scripts/cluster.sh start s1 --dir $dir
  $bosun logs -n web $pod ; $bosun exec -it -n web $pod -- sh
  docker ps --filter label=bosun.io/node=worker-1       # the pods' containers
  $bosun scale deployment web -n web --replicas 6 ; $bosun get pods -n web -o wide
  $bosun set image deployment/web -n web web=bosun/busybox:v2 ; $bosun rollout status deployment/web -n web
  $bosun delete -f config/examples/web.yaml
  scripts/cluster.sh down --dir $dir   # stop everything
(scripts/cluster.sh up --dir DIR --hollow 1000 adds simulated nodes for scale experiments.)
MSG
