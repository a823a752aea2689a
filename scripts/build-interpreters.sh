#!/usr/bin/env bash
# Builds the interpreter guests — JavaScript (QuickJS via rquickjs, guests/js) and Python
# (RustPython, guests/py) — for wasm32-wasip1, installing what they need on a fresh machine
# (see build-js.sh and build-py.sh), and puts them next to the zeroboot-wasm binary, where the
# `js` and `py` commands find them. Prints that directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${CARGO_TARGET_DIR:-$root/target}/release"
mkdir -p "$out"
js="$(bash "$root/scripts/build-js.sh")"
py="$(bash "$root/scripts/build-py.sh")"
install -m 0644 "$js" "$out/zeroboot-js.wasm"
install -m 0644 "$py" "$out/zeroboot-py.wasm"
echo "$out"
