# steerbench/coordinator:dev — `steer serve` on 0.0.0.0:8420. Built by docker/build-images.sh
# from a context holding only the prebuilt `steer` binary (cargo build --release -p orchestrator
# on a Debian bookworm host, so it links against the same glibc as this image).
#
# The entrypoint is `steer` and the default command `serve`, so the same image runs the other
# subcommands that need the database, e.g. `docker compose run --rm coordinator token create ...`.
FROM steerbench/debian-base:bookworm

RUN groupadd --system --gid 10001 steer \
    && useradd --system --uid 10001 --gid steer --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin steer
# build-images.sh copies the binary with mode 0755 (COPY --chmod would need BuildKit).
COPY steer /usr/local/bin/steer

USER steer:steer
# Logs go to docker's log driver, not a terminal: no ANSI colours.
ENV NO_COLOR=1
# DATABASE_URL must be given at run time; it is never baked into the image.
ENV STEER_BIND=0.0.0.0:8420
EXPOSE 8420
ENTRYPOINT ["/usr/local/bin/steer"]
CMD ["serve"]
