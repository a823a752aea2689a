#!/usr/bin/env bash
# Installs Python's `mcp` package (the reference MCP SDK, from PyPI) into a virtual environment
# under target/, for the MCP tests (tests/mcp.rs) to drive `zeroboot-wasm mcp` and `/mcp` with a
# client that is not our own. Idempotent: a second run only checks. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
MCP_VERSION="2.3.0"
venv="$PWD/target/mcp-venv"
py="$venv/bin/python"
if [ -x "$py" ] && "$py" -c "import mcp, importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_VERSION')" 2>/dev/null; then
    echo "$py"
    exit 0
fi
python3 -m venv "$venv" >&2
"$py" -m pip install --quiet --disable-pip-version-check "mcp==$MCP_VERSION" >&2
"$py" -c "import mcp" >&2
echo "$py"
