#!/usr/bin/env bash
# Builds the Python guest (RustPython, with its standard library frozen in) for wasm32-wasip1 and
# prints the absolute path of zeroboot-py.wasm on stdout; everything else goes to stderr.
# Idempotent: installs the wasm32-wasip1 target, and a host C toolchain for build scripts, only
# when they are missing. Needs nothing from the network but crates (and Debian packages if the
# host linker is missing).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$root/guests/py/Cargo.toml"
wasm="$root/guests/py/target/wasm32-wasip1/release/zeroboot-py.wasm"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v cargo >/dev/null 2>&1 || ! command -v rustup >/dev/null 2>&1; then
    echo "build-py: cargo and rustup are needed (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    echo "build-py: installing the wasm32-wasip1 target" >&2
    rustup target add wasm32-wasip1 >&2
fi
# Build scripts (proc macros, build.rs) are linked for the host with `cc`.
if ! command -v cc >/dev/null 2>&1; then
    echo "build-py: installing a host C toolchain (gcc) for build scripts" >&2
    as_root apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev >&2
fi

# --ignore-rust-version: RustPython 0.6.0 supports Rust 1.95, but its parser crates
# (rustpython-ruff_* 0.16.5, pinned in Cargo.lock) declare 1.96 while building fine with 1.95.
echo "build-py: building $wasm" >&2
start=$(date +%s)
cargo build --locked --ignore-rust-version --release --target wasm32-wasip1 \
    --manifest-path "$manifest" --target-dir "$root/guests/py/target" >&2
echo "build-py: done in $(($(date +%s) - start)) s" >&2

if [ ! -f "$wasm" ]; then
    echo "build-py: $wasm was not produced" >&2
    exit 1
fi
echo "$wasm"
