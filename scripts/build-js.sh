#!/usr/bin/env bash
# Builds the JavaScript interpreter guest (guests/js: QuickJS-ng through rquickjs) for
# wasm32-wasip1 and prints the absolute path of zeroboot-js.wasm on stdout; everything else
# goes to stderr. Idempotent: installs what is missing and nothing else —
#   - Debian packages clang-19 (compiles QuickJS's C sources; its dependency binutils gives
#     the archiver) and wasi-libc (the C headers they are compiled against);
#   - the Rust target wasm32-wasip1.
# Downloads nothing at build time beyond crates.io: guests/js/.cargo/config.toml tells
# rquickjs-sys's build script to use the installed clang and headers instead of fetching a
# WASI SDK, and rquickjs-sys ships pregenerated wasm32-wasip1 bindings (no bindgen/libclang).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
guest="$root/guests/js"
wasi_include=/usr/include/wasm32-wasi

missing=()
command -v clang-19 >/dev/null 2>&1 || missing+=(clang-19)
[[ -f "$wasi_include/stdio.h" ]] || missing+=(wasi-libc)
command -v ar >/dev/null 2>&1 || missing+=(binutils)
if ((${#missing[@]})); then
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then sudo=(sudo); fi
    echo "build-js: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    rustup target add wasm32-wasip1 >&2
fi

# From inside guests/js, so that its .cargo/config.toml (target, C toolchain environment) applies.
cd "$guest"
cargo build --release --locked --target wasm32-wasip1 --target-dir "$guest/target" >&2
wasm="$guest/target/wasm32-wasip1/release/zeroboot-js.wasm"
[[ -f "$wasm" ]] || { echo "build-js: $wasm was not produced" >&2; exit 1; }
echo "$wasm"
