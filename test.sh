#!/usr/bin/env bash
# Runs the whole test suite: builds the guests (installing the wasm32-wasip1 target on a fresh
# machine) and the runtime, then every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/build-guests.sh >/dev/null
cargo test --release "$@"
