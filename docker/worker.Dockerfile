# steerbench/worker:dev — `steer worker`. Built by docker/build-images.sh from a context holding
# only the prebuilt `steer` binary. Needs STEER_COORDINATOR and STEER_TOKEN (a `worker` token)
# at run time; it never talks to Postgres.
FROM steerbench/debian-base:bookworm

RUN groupadd --system --gid 10001 steer \
    && useradd --system --uid 10001 --gid steer --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin steer
# build-images.sh copies the binary with mode 0755 (COPY --chmod would need BuildKit).
COPY steer /usr/local/bin/steer

USER steer:steer
# Logs go to docker's log driver, not a terminal: no ANSI colours.
ENV NO_COLOR=1
ENTRYPOINT ["/usr/local/bin/steer"]
CMD ["worker"]
