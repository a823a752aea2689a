#!/usr/bin/env bash
# Runs the whole test suite: builds the guests and the interpreter guests (installing the
# wasm32-wasip1 target and the C toolchain packages on a fresh machine) and the runtime, then
# every unit and integration test.
#
# Tests that need user namespaces are #[ignore]d, so a machine without them reports them as
# ignored; where the machine can create them (checked here with util-linux's unshare, not with
# our own code), they run, and a confinement regression fails the suite.
#
# `--features testkit` builds the test-support binary (`zeroboot-testkit`: the escape probes
# and the benchmark's cold runner) and the test hooks it needs in the library; a plain
# `cargo build --release` ships neither.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/build-guests.sh >/dev/null
# The JavaScript and Python interpreter guests (tests/interpreters.rs), built from source;
# installs Debian's clang-19 and wasi-libc headers on a fresh machine.
bash scripts/build-interpreters.sh >/dev/null
# Python's reference MCP SDK (PyPI `mcp`, pinned) in target/mcp-venv, the independent client
# tests/clients.rs drives `zeroboot-wasm mcp` and `/mcp` with.
bash scripts/mcp-client.sh >/dev/null
if unshare --user --map-root-user --mount --net true 2>/dev/null; then
    cargo test --release --features testkit "$@" -- --include-ignored
else
    echo "test.sh: this machine cannot create user namespaces: the isolation tests are reported as ignored" >&2
    cargo test --release --features testkit "$@"
fi
