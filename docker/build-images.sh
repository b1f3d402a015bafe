#!/usr/bin/env bash
# Builds steerbench/coordinator and steerbench/worker (tag `dev`) from the prebuilt release binary.
#
# Usage: docker/build-images.sh [--cargo] [--tag TAG] [--force]
#
#   --cargo     run `cargo build --release -p steer` first (otherwise target/release/steer
#               must already exist)
#   --tag TAG   tag the images TAG instead of `dev` (compose.yaml reads STEER_IMAGE_TAG)
#   --force     rebuild an image even if it already holds this binary
#
# The build context is a temporary directory holding only the `steer` binary, so nothing else
# of the workspace (target/ is gigabytes) is sent to the Docker engine. Each image is labelled
# with the binary's SHA-256 and skipped when it already holds the same binary. The images are
# FROM steerbench/debian-base:bookworm: run docker/build-base.sh first. STEER_BIN overrides the
# binary's path (e.g. target/debug/steer).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(dirname "$here")
bin=${STEER_BIN:-$workspace/target/release/steer}
log() { printf '[build-images] %s\n' "$*" >&2; }

cargo=false
force=false
tag=dev
while (($#)); do
  case "$1" in
    --cargo) cargo=true ;;
    --force) force=true ;;
    --tag)
      [[ -n ${2:-} ]] || { echo "--tag needs a value" >&2; exit 64; }
      tag=$2
      shift
      ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 64 ;;
  esac
  shift
done

if $cargo; then
  log "cargo build --release -p steer"
  (cd "$workspace" && cargo build --release -p steer)
fi
if [[ ! -x $bin ]]; then
  echo "no steer binary at $bin: run \`cargo build --release -p steer\` (or pass --cargo)" >&2
  exit 1
fi
if ! docker image inspect steerbench/debian-base:bookworm >/dev/null 2>&1; then
  echo "steerbench/debian-base:bookworm is missing: run docker/build-base.sh first" >&2
  exit 1
fi

readonly label=org.steerbench.steer-sha256
sha=$(sha256sum "$bin" | cut -d' ' -f1)
context=""
trap '[[ -z $context ]] || rm -rf "$context"' EXIT

total=$SECONDS
for component in coordinator worker; do
  image=steerbench/$component:$tag
  started=$SECONDS
  old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  if ! $force && [[ -n $old ]] &&
    [[ $(docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$image") == "$sha" ]]; then
    log "$image already holds this binary; skipping (use --force to rebuild)"
    continue
  fi
  if [[ -z $context ]]; then
    context=$(mktemp -d "${TMPDIR:-/tmp}/steerbench-context.XXXXXX")
    install -m 0755 "$bin" "$context/steer"
    log "context: $context ($(du -sh "$context" | cut -f1), $("$bin" --version))"
  fi
  # The legacy builder resolves FROM against local images; BuildKit without buildx may not.
  DOCKER_BUILDKIT=0 docker build --file "$here/$component.Dockerfile" \
    --label "$label=$sha" --tag "$image" "$context" >&2
  # Remove the image this tag replaced, unless a container still uses it.
  if [[ -n $old && $old != "$(docker image inspect --format '{{.Id}}' "$image")" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  log "built $image in $((SECONDS - started))s"
done
log "done in $((SECONDS - total))s"
