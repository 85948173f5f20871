# syntax=docker/dockerfile:1
# Flotilla: a multi-stage build. The runtime image holds the binary, git and tmux (agents run
# in tmux panes inside git worktrees), runs as an unprivileged user, keeps its SQLite database
# and worktrees on the /data volume, and reports health from /readyz.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin flotilla \
 && install -D -m 0755 target/release/flotilla /out/flotilla

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git tmux \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/flotilla --uid 10001 flotilla \
 && mkdir -p /data && chown flotilla:flotilla /data
COPY --from=build /out/flotilla /usr/local/bin/flotilla
USER 10001
ENV FLOTILLA_HOME=/data \
    FLOTILLA__SERVER__BIND=0.0.0.0 \
    FLOTILLA__SERVER__PORT=7700
VOLUME ["/data"]
EXPOSE 7700
# A non-loopback bind needs server.token: pass FLOTILLA__SERVER__TOKEN at run time.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:7700/readyz"]
ENTRYPOINT ["/usr/local/bin/flotilla"]
CMD ["serve"]
