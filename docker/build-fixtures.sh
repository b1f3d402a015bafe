#!/usr/bin/env bash
# Builds the images of the fixture tasks (docker/fixtures/), with no image registry involved:
#
#   steerbench/debian-base:bookworm   if missing, by docker/build-base.sh (needs root; that
#                                     script also builds steerbench/postgres:15 if missing)
#   steerbench/fixture-base:bookworm  the base plus Debian's python3, python3-pytest, git, patch
#                                     (docker/fixtures/fixture-base.Dockerfile)
#   steerbench/sweb.eval.x86_64.<id>:latest
#                                     one per instance of docker/fixtures/dataset.jsonl (<id>: the
#                                     instance id with "__" as "_1776_"): its repository at
#                                     /testbed, a git repository checked out at base_commit
#
# Usage: docker/build-fixtures.sh [--force] [--generate] [--verify] [INSTANCE_ID ...]
#
#   --force     rebuild the fixture base (without the layer cache) and every instance image
#   --generate  regenerate dataset.jsonl (docker/fixtures/generate.py) before the instance images
#   --verify    run docker/fixtures/verify.sh on the instances afterwards
#   INSTANCE_ID only these instances (default: all)
#
# An instance image is skipped if it exists and was built from the current fixture base and
# the dataset's base_commit, unless --force. Needs docker, git and python3 on the host. The
# fixture base runs apt-get during its build: DOCKER_BUILD_NETWORK (e.g. `host`) is passed to
# `docker build --network` if containers cannot reach the Debian mirror. Uses Docker's classic
# builder (DOCKER_BUILDKIT=0): no buildx needed, FROM resolves against local images.
set -euo pipefail

readonly BASE_IMAGE=steerbench/debian-base:bookworm
readonly FIXTURE_BASE=steerbench/fixture-base:bookworm
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fixtures=$here/fixtures
export DOCKER_BUILDKIT=0

force=false generate=false verify=false
ids=()
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    --generate) generate=true ;;
    --verify) verify=true ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown argument: $arg (try --help)" >&2; exit 64 ;;
    *) ids+=("$arg") ;;
  esac
done

log() { printf '[build-fixtures] %s\n' "$*" >&2; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
label() { docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }
network=()
[[ -n ${DOCKER_BUILD_NETWORK:-} ]] && network=(--network "$DOCKER_BUILD_NETWORK")

total=$SECONDS

# 1. The Debian base image.
if [[ -n $(image_id "$BASE_IMAGE") ]]; then
  log "$BASE_IMAGE exists; skipping (rebuild with docker/build-base.sh --force)"
else
  started=$SECONDS
  log "$BASE_IMAGE is missing: running docker/build-base.sh"
  if [[ $(id -u) -eq 0 ]]; then "$here/build-base.sh" --base-only; else sudo "$here/build-base.sh" --base-only; fi
  log "base: $BASE_IMAGE built in $((SECONDS - started))s"
fi

# 2. The fixture base image.
old_fixture_base=$(image_id "$FIXTURE_BASE")
if ! $force && [[ -n $old_fixture_base ]]; then
  log "$FIXTURE_BASE exists; skipping (use --force to rebuild)"
else
  started=$SECONDS
  no_cache=()
  $force && no_cache=(--no-cache)
  log "building $FIXTURE_BASE"
  # No build context: the Dockerfile copies nothing.
  docker build "${network[@]}" "${no_cache[@]}" --tag "$FIXTURE_BASE" - \
    <"$fixtures/fixture-base.Dockerfile" >&2
  log "fixture-base: $FIXTURE_BASE built in $((SECONDS - started))s"
fi
fixture_base_id=$(image_id "$FIXTURE_BASE")

# 3. The dataset, if asked.
if $generate; then
  started=$SECONDS
  python3 "$fixtures/generate.py"
  log "dataset: generated in $((SECONDS - started))s"
fi

# 4. The instance images: "instance_id repo_name base_commit image" per line.
mapfile -t rows < <(python3 - "$fixtures/dataset.jsonl" "${ids[@]}" <<'EOF'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
wanted = sys.argv[2:]
known = {r["instance_id"] for r in records}
for i in wanted:
    if i not in known:
        sys.exit(f"unknown instance id: {i}")
for r in records:
    if not wanted or r["instance_id"] in wanted:
        print(r["instance_id"], r["repo"].split("/", 1)[1], r["base_commit"], r["image"])
EOF
)
((${#rows[@]})) || { log "no instances"; exit 1; }

# The repositories must still be the ones the dataset was generated from (cheap: no docker).
declare -A current=()
while read -r name commit; do current[$name]=$commit; done < <(python3 "$fixtures/make_repo.py" --list)
for row in "${rows[@]}"; do
  read -r iid repo base _ <<<"$row"
  if [[ ${current[$repo]:-} != "$base" ]]; then
    log "error: $iid: $repo's repository is now at ${current[$repo]:-(missing)} but dataset.jsonl"
    log "       says $base; run docker/fixtures/generate.py (or this script with --generate)"
    exit 1
  fi
done

work=$(mktemp -d /var/tmp/steerbench-fixtures.XXXXXX)
trap 'rm -rf "$work"' EXIT
built=0 skipped=0
declare -A made=()
for row in "${rows[@]}"; do
  read -r iid repo base image <<<"$row"
  old=$(image_id "$image")
  if ! $force && [[ -n $old && $(label "$image" org.steerbench.fixture.fixture_base_id) == "$fixture_base_id" \
        && $(label "$image" org.steerbench.fixture.base_commit) == "$base" ]]; then
    log "$image is up to date; skipping"
    skipped=$((skipped + 1))
    continue
  fi
  started=$SECONDS
  # One build context per repository: the git repository (made once) and the Dockerfile.
  ctx=$work/$repo
  if [[ -z ${made[$repo]:-} ]]; then
    mkdir -p "$ctx"
    head=$(python3 "$fixtures/make_repo.py" "$repo" "$ctx/testbed")
    [[ $head == "$base" ]] || { log "error: $repo made at $head, expected $base"; exit 1; }
    # The index holds file times and inode numbers: without it the context is identical on
    # every build. The image recreates it (git reset).
    rm -f "$ctx/testbed/.git/index"
    cp "$fixtures/instance.Dockerfile" "$ctx/Dockerfile"
    made[$repo]=1
  fi
  log "building $image ($iid, $repo at ${base:0:12})"
  docker build --tag "$image" --build-arg "BASE_COMMIT=$base" \
    --label "org.steerbench.fixture.instance_id=$iid" \
    --label "org.steerbench.fixture.base_commit=$base" \
    --label "org.steerbench.fixture.fixture_base_id=$fixture_base_id" "$ctx" >&2
  # Remove the image this tag pointed to before, unless a container or another tag uses it.
  if [[ -n $old && $old != "$(image_id "$image")" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  log "instance: $image built in $((SECONDS - started))s"
  built=$((built + 1))
done
# A rebuilt fixture base leaves the old one untagged once no instance image uses it.
if [[ -n $old_fixture_base && $old_fixture_base != "$fixture_base_id" ]]; then
  docker rmi "$old_fixture_base" >/dev/null 2>&1 || true
fi
log "instance images: $built built, $skipped up to date"

# 5. Verification, if asked.
if $verify; then
  started=$SECONDS
  ver_ids=()
  for row in "${rows[@]}"; do ver_ids+=("${row%% *}"); done
  "$fixtures/verify.sh" "${ver_ids[@]}"
  log "verify: done in $((SECONDS - started))s"
fi
log "done in $((SECONDS - total))s"
