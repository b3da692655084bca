#!/usr/bin/env bash
# Installs what building and testing bosun needs, if missing (Debian, as root or with sudo):
# clang/libclang (RocksDB bindings), protoc (gRPC code), etcd-client (etcdctl, for the
# compatibility tests), etcd-server (the peer our benchmarks compare against) and iptables
# (the chaos suite's network partitions).
set -euo pipefail

need=()
command -v clang >/dev/null || need+=(clang)
[[ -n "$(ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* 2>/dev/null | head -1)" ]] || need+=(libclang-dev)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v etcd >/dev/null || need+=(etcd-server)
command -v cc >/dev/null || need+=(build-essential)
# The chaos suite cuts the network between servers with iptables rules.
command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]] || need+=(iptables)
# The agent runs pods in Docker Engine (Debian's docker.io if none is installed).
command -v docker >/dev/null || need+=(docker.io)

if [[ ${#need[@]} -gt 0 ]]; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }
if ! docker info >/dev/null 2>&1; then
  # A freshly installed docker.io may need its daemon started (no systemd in containers).
  if command -v systemctl >/dev/null && systemctl start docker 2>/dev/null; then :;
  elif command -v service >/dev/null && service docker start >/dev/null 2>&1; then :; fi
  docker info >/dev/null 2>&1 || echo "setup: the Docker daemon does not answer: the agent and its tests need it" >&2
fi
