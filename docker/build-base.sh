#!/usr/bin/env bash
# Builds the local base images, with no image registry involved:
#
#   steerbench/debian-base:bookworm   Debian bookworm (debootstrap --variant=minbase) plus
#                                     ca-certificates, imported with `docker import`
#   steerbench/postgres:15            the base plus Debian's postgresql-15 (docker/postgres/)
#   steerbench/prometheus:2.42        the base plus Debian's prometheus (docker/prometheus/)
#
# Usage: docker/build-base.sh [--force] [--base-only]
#
#   --base-only   build only steerbench/debian-base:bookworm
#
# Each image is skipped if it already exists, unless --force. The base needs root (debootstrap),
# the `debootstrap` package (apt-get install -y debootstrap) and a reachable Debian mirror. The
# mirror is the one this machine's apt uses (/etc/apt/sources.list and sources.list.d), or
# DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR if set. DOCKER_BUILD_NETWORK (e.g. `host`) is passed
# to `docker build --network` for the postgres and prometheus images, whose builds run apt-get.
set -euo pipefail

readonly BASE_IMAGE=steerbench/debian-base:bookworm
readonly PG_IMAGE=steerbench/postgres:15
readonly PROM_IMAGE=steerbench/prometheus:2.42
readonly SUITE=bookworm
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

force=false
base_only=false
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    --base-only) base_only=true ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 64 ;;
  esac
done

log() { printf '[build-base] %s\n' "$*" >&2; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
# After a rebuild, removes the image that tag $1 pointed to before ($2) so --force leaves no
# untagged copies behind; does nothing if a container or another image still uses it.
drop_replaced() {
  if [[ -n $2 && $2 != "$(image_id "$1")" ]]; then
    docker rmi "$2" >/dev/null 2>&1 || true
  fi
}

# Prints the first URI that apt on this machine uses for suite $1, from one-line (.list) and
# deb822 (.sources) files; nothing if none does.
apt_uri_for_suite() {
  local suite=$1 f
  local files=()
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list; do [[ -f $f ]] && files+=("$f"); done
  if ((${#files[@]})); then
    awk -v s="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
        if ($(i + 1) == s) { print $i; exit }
      }' "${files[@]}"
  fi
  files=()
  for f in /etc/apt/sources.list.d/*.sources; do [[ -f $f ]] && files+=("$f"); done
  if ((${#files[@]})); then
    awk -v s="$suite" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled !~ /^no$/ && (" " suites " ") ~ (" " s " ") && uris != "") {
          split(uris, u, " "); print u[1]; found = 1
        }
        types = ""; uris = ""; suites = ""; enabled = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { flush(); if (found) exit; next }
      { key = tolower($1); $1 = ""; sub(/^ +/, "") }
      key == "types:" { types = $0 }
      key == "uris:" { uris = $0 }
      key == "suites:" { suites = $0 }
      key == "enabled:" { enabled = tolower($0) }
      END { if (!found) flush() }' "${files[@]}"
  fi
}

build_base() {
  local mirror security root started=$SECONDS
  mirror=${DEBIAN_MIRROR:-$(apt_uri_for_suite "$SUITE" | head -n1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  security=${DEBIAN_SECURITY_MIRROR:-$(apt_uri_for_suite "$SUITE-security" | head -n1)}
  security=${security:-http://deb.debian.org/debian-security}

  if [[ $(id -u) -ne 0 ]]; then
    echo "debootstrap needs root: run this script with sudo" >&2
    exit 1
  fi
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

  # /var/tmp rather than /tmp: it is on disk and not mounted nodev/noexec on most systems.
  root=$(mktemp -d /var/tmp/steerbench-rootfs.XXXXXX)
  # debootstrap mounts /proc and /sys inside the target while it runs; if it dies half-way they
  # may still be mounted, so unmount before removing, and never cross into another filesystem.
  cleanup() {
    local m
    for m in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
      umount -l "$m" || true
    done
    rm -rf --one-file-system "$root"
  }
  trap cleanup EXIT

  log "debootstrap --variant=minbase $SUITE from $mirror into $root"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$root" "$mirror" >&2

  # apt sources of the image: the same mirror, plus updates and security.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Containers have no init: package scripts must not try to start services.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  # Keep images small: no downloaded .debs or package lists left behind by any later layer.
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
  # Docker provides these at run time.
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
    "$root"/var/log/apt/* "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/var/tmp/*

  log "importing $BASE_IMAGE"
  tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE + ca-certificates, from $mirror" \
    - "$BASE_IMAGE" >/dev/null
  cleanup
  trap - EXIT
  log "built $BASE_IMAGE in $((SECONDS - started))s"
}

# Builds image $1 from the Dockerfile in directory $2 (FROM the base image).
build_on_base() {
  local image=$1 dir=$2 started=$SECONDS
  local network=()
  [[ -n ${DOCKER_BUILD_NETWORK:-} ]] && network=(--network "$DOCKER_BUILD_NETWORK")
  log "building $image from $dir"
  # The legacy builder resolves FROM against local images; BuildKit without buildx may not.
  DOCKER_BUILDKIT=0 docker build "${network[@]}" --tag "$image" "$dir" >&2
  log "built $image in $((SECONDS - started))s"
}

total=$SECONDS
old_base=$(image_id "$BASE_IMAGE")
old_pg=$(image_id "$PG_IMAGE")
old_prom=$(image_id "$PROM_IMAGE")
if ! $force && [[ -n $old_base ]]; then
  log "$BASE_IMAGE exists; skipping (use --force to rebuild)"
else
  build_base
fi
# Image $1 from directory $2, whose current id is $3 (empty: it does not exist).
maybe_build_on_base() {
  if $base_only; then
    log "--base-only: not building $1"
  elif ! $force && [[ -n $3 ]]; then
    log "$1 exists; skipping (use --force to rebuild)"
  else
    build_on_base "$1" "$2"
  fi
}
maybe_build_on_base "$PG_IMAGE" "$here/postgres" "$old_pg"
maybe_build_on_base "$PROM_IMAGE" "$here/prometheus" "$old_prom"
# The old postgres and prometheus images are children of the old base: remove them first.
drop_replaced "$PG_IMAGE" "$old_pg"
drop_replaced "$PROM_IMAGE" "$old_prom"
drop_replaced "$BASE_IMAGE" "$old_base"
log "done in $((SECONDS - total))s"
