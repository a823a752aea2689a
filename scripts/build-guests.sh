#!/usr/bin/env bash
# Builds the guests in guests/ for wasm32-wasip1 (core modules) and wasm32-wasip2 (components),
# installing the targets if needed, and prints the directory holding the .wasm files of one
# target: wasip1 (the default) or, given `wasip2` as the argument, the components.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
want="${1:-wasip1}"
case "$want" in
    wasip1 | wasip2) ;;
    *) echo "usage: $0 [wasip1|wasip2]" >&2; exit 2 ;;
esac
installed="$(rustup target list --installed 2>/dev/null)"
for target in wasm32-wasip1 wasm32-wasip2; do
    if ! grep -qx "$target" <<<"$installed"; then
        rustup target add "$target" >&2
    fi
done
# The same guests as core modules and as components (twins), plus the component-only ones.
cargo build --quiet --release --target wasm32-wasip1 --manifest-path "$root/guests/Cargo.toml" \
    --workspace --exclude wit_tools >&2
cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$root/guests/Cargo.toml" >&2
echo "$root/guests/target/wasm32-$want/release"
