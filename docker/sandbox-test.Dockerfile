# steerbench/sandbox-test:bookworm — the base image plus git, for the worker's sandbox tests
# (`Sandbox::diff` needs a repository). Built by docker/build-sandbox-test.sh; no registry.
FROM steerbench/debian-base:bookworm

RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git; \
    rm -rf /var/lib/apt/lists/*
