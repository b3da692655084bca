#!/usr/bin/env bash
# Builds the local images bosun's examples and tests run, from Debian packages, with no
# registry: each is built only when Docker does not have it yet (--force rebuilds).
#   bosun/busybox:latest  busybox-static in an empty root (`docker import`); sh, httpd, nc
#                         work; its wget segfaults (static glibc without NSS). Also tagged
#                         bosun/busybox:v2, for trying rolling updates (`bosun set image`)
#   bosun/debian:latest   `debootstrap --variant=minbase` of this host's Debian release,
#                         with curl and dnsutils, for workloads needing a real HTTP client
#                         or resolver
#   scripts/images.sh [--force] [busybox|debian ...]      (default: both)
set -euo pipefail

force=0
want=()
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    busybox|debian) want+=("$a") ;;
    *) echo "images.sh: unknown argument '$a' (expected --force, busybox or debian)" >&2; exit 2 ;;
  esac
done
[[ ${#want[@]} -gt 0 ]] || want=(busybox debian)

command -v docker >/dev/null || { echo "images.sh: docker not found: install Docker Engine" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "images.sh: the Docker daemon does not answer (is it running?)" >&2; exit 1; }

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
updated=0
apt_install() {
  if [[ $updated -eq 0 ]]; then $sudo apt-get update -qq; updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

have() { [[ $force -eq 0 ]] && docker image inspect "$1" >/dev/null 2>&1; }

work="$(mktemp -d)"
trap '$sudo rm -rf "$work"' EXIT

build_busybox() {
  local img=bosun/busybox:latest
  if have "$img"; then
    docker image inspect bosun/busybox:v2 >/dev/null 2>&1 || docker tag "$img" bosun/busybox:v2
    echo "images.sh: $img present"
    return
  fi
  [[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -qx httpd \
    && file_is_static /bin/busybox || apt_install busybox-static
  local root="$work/busybox"
  mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root,var/www,home}
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | docker import \
    --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
    --message "busybox-static $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)" \
    - "$img" >/dev/null
  docker tag "$img" bosun/busybox:v2
  echo "images.sh: built $img (and bosun/busybox:v2)"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# The first Debian mirror apt is configured with (deb822 or one-line sources).
debian_mirror() {
  local m
  m="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)"
  [[ -n "$m" ]] || m="$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1)"
  echo "$m"
}

build_debian() {
  local img=bosun/debian:latest
  if have "$img"; then echo "images.sh: $img present"; return; fi
  command -v debootstrap >/dev/null || apt_install debootstrap
  local suite mirror root="$work/debian"
  suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  mirror="$(debian_mirror)"
  [[ -n "$mirror" ]] || { echo "images.sh: no Debian mirror found in apt's sources" >&2; exit 1; }
  echo "images.sh: debootstrap $suite (minbase, curl, dnsutils): a few minutes"
  $sudo debootstrap --variant=minbase --include=curl,dnsutils,ca-certificates "$suite" "$root" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  $sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  $sudo tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap minbase $suite" - "$img" >/dev/null
  echo "images.sh: built $img"
}

for w in "${want[@]}"; do "build_$w"; done
