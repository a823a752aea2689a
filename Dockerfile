# zeroboot-wasm serve in a container: HTTP API and MCP (/mcp) on port 8080, API keys required.
#
#   docker build -t zeroboot-wasm .
#   printf '%s\n' "$(openssl rand -hex 24)" > api-keys
#   docker run --rm -p 127.0.0.1:8080:8080 \
#       --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#       -v "$PWD/api-keys:/run/secrets/zeroboot-api-keys:ro" -v zeroboot-data:/var/lib/zeroboot \
#       zeroboot-wasm
#
# Why those flags, and the alternatives, are in the README ("serve in a container").

# --- build: the release binary and the JavaScript/Python interpreter guests ---------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The repo's own scripts install what they need (wasm32-wasip1, clang-19 and wasi-libc from
# Debian) and put zeroboot-js.wasm / zeroboot-py.wasm next to the binary.
RUN bash scripts/build-interpreters.sh >/dev/null \
 && cargo build --release --locked \
 && mkdir -p /out \
 && cp target/release/zeroboot-wasm target/release/zeroboot-js.wasm target/release/zeroboot-py.wasm /out/

# --- runtime: glibc and nothing else ------------------------------------------------------
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/zeroboot zeroboot
# The interpreter guests sit next to the executable, where `serve` looks for them.
COPY --from=build /out/ /usr/local/bin/
USER zeroboot
VOLUME /var/lib/zeroboot
EXPOSE 8080
# Logs (JSON lines) go to stderr; the store and the compile cache live in the volume.
ENTRYPOINT ["zeroboot-wasm", "serve", "--listen", "0.0.0.0:8080", \
            "--data-dir", "/var/lib/zeroboot", \
            "--api-keys", "/run/secrets/zeroboot-api-keys", \
            "--log-format", "json"]
