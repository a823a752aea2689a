#!/usr/bin/env bash
# The demo: builds everything (installing the wasm32-wasip1 target on a fresh machine), then
# runs sandboxed tools the way a person, a script and an agent platform would.
set -euo pipefail
cd "$(dirname "$0")"
guests="$(bash scripts/build-guests.sh)"
cargo build --release --quiet
# The JavaScript and Python interpreters, next to the binary (installs clang-19 and wasi-libc
# headers from Debian on a fresh machine).
bash scripts/build-interpreters.sh >/dev/null
zb="$PWD/target/release/zeroboot-wasm"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "A tool, run like 'wasmtime run': args and env in, stdout out" \
     "zeroboot-wasm run --env GREETING=hi args_env.wasm --flag value"
"$zb" run --env GREETING=hi "$guests/args_env.wasm" --flag value

step "The guest's exit code becomes ours" "zeroboot-wasm run exit_code.wasm 3; echo \$?"
"$zb" run "$guests/exit_code.wasm" 3 2>/dev/null && code=0 || code=$?
echo "exit code: $code"

step "A granted directory, and escapes out of it refused" \
     "zeroboot-wasm run --dir \$WORK::/data fs.wasm /data"
echo "a file the host put there" > "$work/input.txt"
"$zb" run --dir "$work::/data" "$guests/fs.wasm" /data | grep -E '^(input=|read_back=|entries=|escape_)'
echo "host sees: $(cat "$work/result.txt")"

step "A trap is a structured outcome, not a crash" "zeroboot-wasm run --json trap.wasm"
"$zb" run --json "$guests/trap.wasm" | python3 -c 'import json,sys; o=json.load(sys.stdin); print("status:", o["status"], "| stdout:", o["stdout"].strip(), "| message:", o["message"].splitlines()[0])' || true

step "One warm template, many forked tasks (worker: JSON lines in, JSON lines out)" \
     "printf '{}\\n%.0s' {1..5} | zeroboot-wasm worker random.wasm"
for _ in 1 2 3 4 5; do echo '{}'; done | "$zb" worker "$guests/random.wasm" \
  | python3 -c 'import json,sys
for l in sys.stdin:
    o=json.loads(l); t=o["timings_us"]
    how = "pre-forked sandbox" if t["fork"] == 0 else "forked in %dus" % t["fork"]
    print(o["status"], o["stdout"].strip()[:32]+"…", "%s, guest ran %dus, total %dus" % (how, t["run"], t["total"]))'

step "Hostile guests end with an honest status; the worker keeps serving" \
     "spin with a 300ms deadline; then a malformed line between two hello tasks"
printf '%s\n' '{"timeout_ms": 300}' > "$work/spin.jsonl"
"$zb" worker "$guests/spin.wasm" < "$work/spin.jsonl" | python3 -c 'import json,sys; o=json.loads(sys.stdin.readline()); print("spin:", o["status"], "-", o["message"].splitlines()[0], "| partial stdout:", o["stdout"].strip())'
printf '%s\n' '{}' 'not json' '{}' | "$zb" worker "$guests/hello.wasm" | python3 -c 'import json,sys
for l in sys.stdin:
    o=json.loads(l); print("hello worker:", o["status"], "-", (o.get("stdout") or o.get("message")).strip())'

step "Snippets for agents: JavaScript and Python, the interpreter warmed once and forked per run" \
     "zeroboot-wasm js -e '…'; zeroboot-wasm py -c '…'"
"$zb" js -e 'const xs = [3, 1, 2].sort(); console.log("sorted:", xs, "random:", Math.random() < 1)'
"$zb" py -c 'import json, statistics; print(json.dumps({"mean": statistics.mean([1, 2, 3, 4])}))'

step "Each snippet is its own fork: globals never leak, random values never repeat" \
     "worker --lang py: three snippets, JSON lines in and out"
printf '%s\n' '{"code": "x = 42\nimport random; print(random.random())"}' \
               '{"code": "print(\"x\" in globals())\nimport random; print(random.random())"}' \
               '{"code": "while True: pass", "timeout_ms": 300}' \
  | "$zb" worker --lang py | python3 -c 'import json,sys
for l in sys.stdin:
    o=json.loads(l); print(o["status"], "|", o["stdout"].strip().replace("\n", " "), "| total %dus" % o["timings_us"]["total"])'

printf '\nDone. See README.md for the flags, the outcome format and the security model.\n'
