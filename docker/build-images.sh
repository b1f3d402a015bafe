#!/usr/bin/env bash
# Builds steerbench/coordinator:dev and steerbench/worker:dev from the prebuilt release binary.
#
# Usage: docker/build-images.sh [--cargo]
#
#   --cargo   run `cargo build --release -p orchestrator` first (otherwise target/release/steer
#             must already exist)
#
# The build context is a temporary directory holding only the `steer` binary, so nothing else
# of the workspace (target/ is gigabytes) is sent to the Docker engine. The images are FROM
# steerbench/debian-base:bookworm: run docker/build-base.sh first. STEER_BIN overrides the
# binary's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(dirname "$here")
bin=${STEER_BIN:-$workspace/target/release/steer}
log() { printf '[build-images] %s\n' "$*" >&2; }

cargo=false
for arg in "$@"; do
  case "$arg" in
    --cargo) cargo=true ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 64 ;;
  esac
done

if $cargo; then
  log "cargo build --release -p orchestrator"
  (cd "$workspace" && cargo build --release -p orchestrator)
fi
if [[ ! -x $bin ]]; then
  echo "no steer binary at $bin: run \`cargo build --release -p orchestrator\` (or pass --cargo)" >&2
  exit 1
fi
if ! docker image inspect steerbench/debian-base:bookworm >/dev/null 2>&1; then
  echo "steerbench/debian-base:bookworm is missing: run docker/build-base.sh first" >&2
  exit 1
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/steerbench-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
install -m 0755 "$bin" "$context/steer"
log "context: $context ($(du -sh "$context" | cut -f1), $("$bin" --version))"

total=$SECONDS
for component in coordinator worker; do
  started=$SECONDS
  old=$(docker image inspect --format '{{.Id}}' "steerbench/$component:dev" 2>/dev/null || true)
  # The legacy builder resolves FROM against local images; BuildKit without buildx may not.
  DOCKER_BUILDKIT=0 docker build --file "$here/$component.Dockerfile" \
    --tag "steerbench/$component:dev" "$context" >&2
  # Remove the image this tag replaced, unless a container still uses it.
  if [[ -n $old && $old != "$(docker image inspect --format '{{.Id}}' "steerbench/$component:dev")" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  log "built steerbench/$component:dev in $((SECONDS - started))s"
done
log "done in $((SECONDS - total))s"
