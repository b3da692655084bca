#!/usr/bin/env bash
# From a fresh machine to a running three-server bosun control plane on loopback:
# installs missing packages, builds, makes a PKI, starts s1-s3 on 127.0.0.11-13 with four
# hollow nodes, and applies the example app (config/examples/web.yaml).
#   scripts/quickstart.sh [DIR]      (default DIR: ./.bosun-local)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${1:-$PWD/.bosun-local}"

scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
echo "== building bosun (the first build compiles RocksDB: about 10 minutes on 2 cores)"
cargo build -p bosun
echo "== starting three servers in $dir"
scripts/cluster.sh up --dir "$dir" --hollow 4
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
# The scheduler places the Deployment's pods on the hollow nodes; they report them running.
"$bosun" rollout status deployment/web -n web --timeout 120
"$bosun" get deploy,rs,svc,ep -n web
"$bosun" get pods -n web -o wide
cat <<MSG

bosun is running. Next:
  source $dir/env                 # BOSUN_CONFIG and ETCDCTL_* for this cluster
  $bosun cluster status
  $bosun get all -n web ; $bosun describe deployment web -n web ; $bosun get svc web -n web -o yaml
  $bosun auth can-i create deployments -n web --as alice
  scripts/cluster.sh kill s1 --dir $dir ; $bosun get ns -v   # kill a server: another answers
  scripts/cluster.sh start s1 --dir $dir
  $bosun scale deployment web -n web --replicas 6 ; $bosun get pods -n web -o wide
  $bosun set image deployment/web -n web web=bosun/busybox:v2 ; $bosun rollout status deployment/web -n web
  $bosun delete -f config/examples/web.yaml
  scripts/cluster.sh down --dir $dir   # stop everything
(The nodes are hollow: simulated by one process, they report pods running without Docker.
The Docker agent comes in a later release.)
MSG
