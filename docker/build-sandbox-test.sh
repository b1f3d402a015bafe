#!/usr/bin/env bash
# Builds steerbench/sandbox-test:bookworm (docker/sandbox-test.Dockerfile: the base image plus
# git), which the worker's sandbox tests use. Does nothing if the image exists, unless --force.
# Needs steerbench/debian-base:bookworm (docker/build-base.sh) and a reachable Debian mirror;
# DOCKER_BUILD_NETWORK (e.g. `host`) is passed to `docker build --network`.
set -euo pipefail

readonly IMAGE=steerbench/sandbox-test:bookworm
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
force=false
case "${1:-}" in
  --force) force=true ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 64 ;;
esac

if ! $force && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
if ! docker image inspect steerbench/debian-base:bookworm >/dev/null 2>&1; then
  echo "steerbench/debian-base:bookworm is missing: run docker/build-base.sh first" >&2
  exit 1
fi
network=()
[[ -n ${DOCKER_BUILD_NETWORK:-} ]] && network=(--network "$DOCKER_BUILD_NETWORK")
started=$SECONDS
# No build context: the Dockerfile copies nothing. The legacy builder resolves FROM against
# local images; BuildKit without buildx may not.
DOCKER_BUILDKIT=0 docker build "${network[@]}" --tag "$IMAGE" - <"$here/sandbox-test.Dockerfile" >&2
printf '[build-sandbox-test] built %s in %ss\n' "$IMAGE" "$((SECONDS - started))" >&2
