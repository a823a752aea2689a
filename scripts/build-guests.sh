#!/usr/bin/env bash
# Builds the guests in guests/ for wasm32-wasip1 (installing the target if needed) and prints
# the directory holding the .wasm files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    rustup target add wasm32-wasip1 >&2
fi
cargo build --quiet --release --target wasm32-wasip1 --manifest-path "$root/guests/Cargo.toml" >&2
echo "$root/guests/target/wasm32-wasip1/release"
