#!/usr/bin/env bash
# From a fresh machine to a running three-server bosun control plane on loopback:
# installs missing packages, builds, makes a PKI, starts s1-s3 on 127.0.0.11-13.
#   scripts/quickstart.sh [DIR]      (default DIR: ./.bosun-local)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${1:-$PWD/.bosun-local}"

scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
echo "== building bosun (the first build compiles RocksDB: about 10 minutes on 2 cores)"
cargo build -p bosun
echo "== starting three servers in $dir"
scripts/cluster.sh up --dir "$dir"
# shellcheck disable=SC1091
source "$dir/env"
echo "== writing and reading through the etcd v3 API"
etcdctl put /quickstart/hello world
etcdctl get --prefix /quickstart/
etcdctl endpoint status -w table
cat <<MSG

bosun is running. Next:
  source $dir/env                 # BOSUN_CONFIG and ETCDCTL_* for this cluster
  $CARGO_TARGET_DIR/debug/bosun cluster status
  scripts/cluster.sh kill s1 --dir $dir ; $CARGO_TARGET_DIR/debug/bosun cluster status   # kill a server, watch it heal
  scripts/cluster.sh start s1 --dir $dir
  scripts/cluster.sh down --dir $dir   # stop everything
(The API server, scheduler and worker agent come in later releases: no example app yet.)
MSG
