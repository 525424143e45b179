# gemini-rotator: a static musl binary on distroless (no shell, no libc, non-root).
#   docker build -t gemini-rotator .
#   docker run -p 7860:7860 -v "$PWD/deploy/docker:/etc/gemini-rotator:ro" gemini-rotator
# README.md, "Docker", has the rest. Checked offline by scripts/check-deploy.sh (hadolint).

# ---- build: Alpine's Rust targets musl natively, so the result needs no libc at run time ----
FROM rust:1.95-alpine AS build
# ring (rustls) compiles a little C and assembly.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src

# Dependencies first, in their own layer: rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
# Every target Cargo.toml names must exist for it to parse: stub the bench too (benches/ is
# not sent to the build).
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_paths.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src ./src
# The stub build above left a newer lib and bin behind: touch so cargo rebuilds ours.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked \
    && strip target/release/gemini-rotator \
    && ./target/release/gemini-rotator --version

# ---- run --------------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/gemini-rotator /usr/local/bin/gemini-rotator
# A default config (listen 0.0.0.0:7860, keys in keys.txt beside it). Mount your own config
# FOLDER over /etc/gemini-rotator (not the file alone), so edits reach the running proxy.
# It holds a (placeholder) client token, so only the proxy's user may read it: a config with
# secrets that every user can read is warned about at each load.
COPY --chown=65532:65532 --chmod=0600 deploy/docker/config.toml /etc/gemini-rotator/config.toml
ENV GEMINI_ROTATOR_CONFIG=/etc/gemini-rotator/config.toml
# distroless's nonroot user (uid/gid 65532); the files you mount must be readable by it.
USER 65532:65532
EXPOSE 7860
# The binary checks itself: no curl in this image. Without a URL it knocks on /livez at the
# config's server.listen (the port follows your config; loopback for 0.0.0.0).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/gemini-rotator", "--healthcheck"]
ENTRYPOINT ["/usr/local/bin/gemini-rotator"]
