#!/usr/bin/env bash
# A multi-host test bed on this machine's Docker engine: Postgres, a coordinator, N workers and
# the replay LLM server, each its own container with its own address on a private network.
# Workers start their sandboxes on the host's engine (its socket is mounted). The fault tests
# (steer/tests/testbed.rs) cut, kill and restart these containers.
#
# Usage:
#   docker/testbed.sh images                 build steerbench/{postgres:15,coordinator:dev,worker:dev}
#                                            (STEER_BIN: the steer binary to bake in; default
#                                            target/release/steer, else target/debug/steer)
#   docker/testbed.sh up NAME [options]      start a test bed; prints the path of its env file
#   docker/testbed.sh down NAME              remove its containers, its sandboxes and its network
#   docker/testbed.sh psql NAME SQL          run SQL in its database (unaligned, tuples only)
#
# Options of `up`:
#   --workers N        workers (default 3)
#   --slots N          runs per worker at once (default 2)
#   --port P           host port of the coordinator on 127.0.0.1 (default: a free one)
#   --replay-port P    host port of the replay server on 127.0.0.1 (default: a free one)
#   --lease-ttl D      lease without a heartbeat, e.g. 6s (default 30s)
#   --drain-timeout D  workers' drain on SIGTERM (default 60s)
#   --llm-delay-ms MS  the replay server waits this long before every answer (default 0)
#   --llm-attempts N / --llm-timeout D / --llm-max-backoff D   workers' model-call retries
#   --pull-attempts N                   workers' attempts at pulling a missing image (default 5)
#   --scenarios DIR    replay scenarios (default examples/replay)
#
# The env file ($STEER_TESTBED_DIR or /tmp/steerbench-testbed, NAME.env, mode 600) holds
# STEER_COORDINATOR and STEER_TOKEN (an admin token) for `steer` on the host, REPLAY_URL for
# the replay server's storm control, and the secrets the bed was made with (the replay API key,
# the worker token, the registry password) so tests can check none of them leaks.
#
# Every container is labelled steerbench.testbed=NAME; containers are NAME-postgres,
# NAME-coordinator, NAME-replay and NAME-worker-<i>, on network NAME-net.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(dirname "$here")
state_dir=${STEER_TESTBED_DIR:-/tmp/steerbench-testbed}
log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf 'testbed: %s\n' "$*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }

# Waits until command "$@" succeeds, for up to $1 seconds; $2 names what is awaited.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
    sleep 0.5
  done
}

cmd_images() {
  local bin=${STEER_BIN:-}
  if [[ -z $bin ]]; then
    for candidate in "${CARGO_TARGET_DIR:-$workspace/target}/release/steer" "${CARGO_TARGET_DIR:-$workspace/target}/debug/steer"; do
      [[ -x $candidate ]] && { bin=$candidate; break; }
    done
  fi
  [[ -n $bin && -x $bin ]] || die "no steer binary: build one (cargo build -p steer) or set STEER_BIN"
  if ! docker image inspect steerbench/postgres:15 >/dev/null 2>&1; then
    local sudo_=""
    [[ $(id -u) == 0 ]] || sudo_=sudo
    $sudo_ "$here/build-base.sh"
  fi
  STEER_BIN=$bin "$here/build-images.sh"
}

cmd_up() {
  local name=$1
  shift
  local workers=3 slots=2 port="" replay_port="" lease_ttl=30s drain_timeout=60s delay_ms=0
  local llm_attempts=6 llm_timeout=600s llm_max_backoff=60s pull_attempts=5 scenarios=$workspace/examples/replay
  while (($#)); do
    case "$1" in
      --workers) workers=$2 ;;
      --slots) slots=$2 ;;
      --port) port=$2 ;;
      --replay-port) replay_port=$2 ;;
      --lease-ttl) lease_ttl=$2 ;;
      --drain-timeout) drain_timeout=$2 ;;
      --llm-delay-ms) delay_ms=$2 ;;
      --llm-attempts) llm_attempts=$2 ;;
      --llm-timeout) llm_timeout=$2 ;;
      --llm-max-backoff) llm_max_backoff=$2 ;;
      --pull-attempts) pull_attempts=$2 ;;
      --scenarios) scenarios=$(cd "$2" && pwd) ;;
      *) die "unknown option of up: $1 (try --help)" ;;
    esac
    shift 2
  done
  for image in steerbench/postgres:15 steerbench/coordinator:dev steerbench/worker:dev; do
    docker image inspect "$image" >/dev/null 2>&1 || die "$image is missing: run docker/testbed.sh images"
  done
  cmd_down "$name" 2>/dev/null || true
  port=${port:-$(free_port)}
  replay_port=${replay_port:-$(free_port)}
  local pg_password replay_key registry_password
  pg_password=$(secret)
  replay_key=sk-testbed-$(secret)
  registry_password=registry-$(secret)
  local label=(--label "steerbench.testbed=$name")
  local net=$name-net

  docker network create "${label[@]}" "$net" >/dev/null
  log "postgres"
  docker run -d "${label[@]}" --name "$name-postgres" --network "$net" --network-alias postgres \
    -e POSTGRES_USER=steer -e POSTGRES_DB=steerbench -e POSTGRES_PASSWORD="$pg_password" \
    steerbench/postgres:15 >/dev/null
  wait_for 90 "postgres" docker exec "$name-postgres" pg_isready --host=127.0.0.1 --username=steer --dbname=steerbench

  log "coordinator on 127.0.0.1:$port (lease ${lease_ttl})"
  docker run -d "${label[@]}" --name "$name-coordinator" --network "$net" --network-alias coordinator \
    -p "127.0.0.1:$port:8420" \
    -e DATABASE_URL="postgres://steer:$pg_password@postgres:5432/steerbench" \
    -e STEER_LEASE_TTL="$lease_ttl" -e RUST_LOG=info \
    steerbench/coordinator:dev serve >/dev/null
  wait_for 60 "the coordinator's /healthz" curl -fsS "http://127.0.0.1:$port/healthz"

  log "replay LLM server on 127.0.0.1:$replay_port (delay ${delay_ms} ms)"
  docker run -d "${label[@]}" --name "$name-replay" --network "$net" --network-alias replay \
    -p "127.0.0.1:$replay_port:18080" -v "$scenarios:/scenarios:ro" \
    -e REPLAY_API_KEY="$replay_key" \
    steerbench/coordinator:dev mock-llm --script /scenarios --bind 0.0.0.0:18080 \
    --require-key-env REPLAY_API_KEY --delay-ms "$delay_ms" >/dev/null
  wait_for 60 "the replay server" curl -fsS -H "Authorization: Bearer $replay_key" "http://127.0.0.1:$replay_port/v1/models"

  local admin_token worker_token
  admin_token=$(docker exec "$name-coordinator" steer token create --role admin --name testbed-admin)
  worker_token=$(docker exec "$name-coordinator" steer token create --role worker --name testbed-workers)
  local docker_gid
  docker_gid=$(stat -c %g /var/run/docker.sock)
  for i in $(seq 1 "$workers"); do
    log "worker $i"
    docker run -d "${label[@]}" --name "$name-worker-$i" --hostname "$name-worker-$i" --network "$net" \
      -v /var/run/docker.sock:/var/run/docker.sock --group-add "$docker_gid" \
      -e STEER_COORDINATOR=http://coordinator:8420 -e STEER_TOKEN="$worker_token" \
      -e STEER_WORKER_NAME="$name-worker-$i" -e STEER_SLOTS="$slots" \
      -e STEER_DRAIN_TIMEOUT="$drain_timeout" -e STEER_CLAIM_WAIT=2s \
      -e STEER_LLM_ATTEMPTS="$llm_attempts" -e STEER_LLM_TIMEOUT="$llm_timeout" \
      -e STEER_LLM_MAX_BACKOFF="$llm_max_backoff" -e STEER_PULL_ATTEMPTS="$pull_attempts" \
      -e REPLAY_API_KEY="$replay_key" -e STEER_ALLOW_KEY_ENV=REPLAY_API_KEY \
      -e STEER_REGISTRY_USERNAME=testbed -e STEER_REGISTRY_PASSWORD="$registry_password" \
      -e RUST_LOG=info \
      steerbench/worker:dev worker >/dev/null
  done
  wait_for 60 "$workers workers to register" bash -c \
    "[[ \$(docker exec -u postgres '$name-postgres' psql -U steer -d steerbench -Atc \"SELECT count(*) FROM workers WHERE name LIKE '$name-worker-%'\") -ge $workers ]]"

  mkdir -p "$state_dir"
  chmod 700 "$state_dir"
  local env_file=$state_dir/$name.env
  (
    umask 077
    cat >"$env_file" <<EOF
STEER_COORDINATOR=http://127.0.0.1:$port
STEER_TOKEN=$admin_token
REPLAY_URL=http://127.0.0.1:$replay_port
TESTBED_NETWORK=$net
SECRET_REPLAY_KEY=$replay_key
SECRET_WORKER_TOKEN=$worker_token
SECRET_ADMIN_TOKEN=$admin_token
SECRET_REGISTRY_PASSWORD=$registry_password
SECRET_PG_PASSWORD=$pg_password
EOF
  )
  log "up: $workers workers; env in $env_file"
  echo "$env_file"
}

cmd_down() {
  local name=$1
  local ids
  # The bed's containers, then the sandboxes its workers left (labelled with the worker name).
  ids=$(docker ps -aq --filter "label=steerbench.testbed=$name")
  [[ -z $ids ]] || docker rm -f $ids >/dev/null
  ids=$(docker ps -a --format '{{.ID}} {{.Label "steerbench.worker"}}' | awk -v p="$name-worker-" 'index($2, p) == 1 { print $1 }')
  [[ -z $ids ]] || docker rm -f $ids >/dev/null
  docker network rm "$name-net" >/dev/null 2>&1 || true
  rm -f "$state_dir/$name.env"
}

cmd_psql() {
  docker exec -u postgres "$1-postgres" psql -U steer -d steerbench -v ON_ERROR_STOP=1 -Atc "$2"
}

case "${1:-}" in
  images) cmd_images ;;
  up) [[ $# -ge 2 ]] || die "usage: testbed.sh up NAME [options]"; shift; cmd_up "$@" ;;
  down) [[ $# -eq 2 ]] || die "usage: testbed.sh down NAME"; cmd_down "$2" ;;
  psql) [[ $# -eq 3 ]] || die "usage: testbed.sh psql NAME SQL"; cmd_psql "$2" "$3" ;;
  -h|--help|"") sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command $1 (try --help)" ;;
esac
