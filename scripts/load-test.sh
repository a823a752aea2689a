#!/usr/bin/env bash
# Load test of `zeroboot-wasm serve` with a real HTTP generator (wrk, from Debian), beside the
# in-process figures of the same machine measured in the same run:
#   1. `zeroboot-wasm bench MODULE` (server_pool: the fork server with a pool, as serve uses it)
#      and scripts/worker_latency.py (`worker`'s per-task `total`), for the hello guest;
#   2. HTTP `POST /v1/tools/{id}/run` of the same guest on loopback with wrk: req/s and
#      p50/p99 at concurrency 1 and at concurrency = cores;
#   3. REQUESTS requests (default 10000) at concurrency = cores, every answer checked (status
#      200, `"status":"exited"`, the guest's line in stdout), and the server's own /metrics
#      count of exited runs compared with the requests sent: 0 lost, 0 mismatched.
# Usage: scripts/load-test.sh [REQUESTS] [SECONDS per latency run] (ZB_SERVE_FLAGS: extra serve
# flags, e.g. `--scratch-size 0`).
# when missing (idempotent). Not part of test.sh (it takes a minute or two).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
requests="${1:-10000}"
seconds="${2:-10}"
cores="$(nproc)"

if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get)" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >&2; else sudo apt-get install -y wrk >&2; fi
fi
# ZB_CARGO_FLAGS: extra cargo flags (e.g. `--features testkit`, to reuse the test build).
# shellcheck disable=SC2086
cargo build --quiet --release ${ZB_CARGO_FLAGS:-} --manifest-path "$root/Cargo.toml" >&2
bin="$root/target/release/zeroboot-wasm"
guests="$(bash "$root/scripts/build-guests.sh")"
hello="$guests/hello.wasm"

echo "machine: $(nproc) cores, $(uname -r); $(date -u +%FT%TZ)"
echo
echo "== in-process figures (same machine, same run) =="
"$bin" bench --tasks 1000 --no-snippets --json "$hello" >/tmp/zb-load-bench.json
python3 - <<'EOF'
import json
r = json.load(open("/tmp/zb-load-bench.json"))
p = r["server_pool"]
print(f"bench server_pool: p50 {p['p50_us']:.0f} us  p99 {p['p99_us']:.0f} us  "
      f"{p['per_s']:.0f} tasks/s at c=1  {p.get('per_s_concurrent') or 0:.0f} tasks/s at c=cores")
EOF
python3 "$root/scripts/worker_latency.py" "$hello" 2000 | sed -n '1,5p'

data="$(mktemp -d)"
log="$data/serve.log"
# shellcheck disable=SC2086
"$bin" serve --no-auth --listen 127.0.0.1:0 --data-dir "$data" ${ZB_SERVE_FLAGS:-} >"$data/addr" 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q listening "$data/addr" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^listening on //p' "$data/addr")"
id="$(curl -sf --data-binary @"$hello" "$base/v1/tools?name=hello" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
url="$base/v1/tools/$id/run"

# Each wrk thread has one connection and stops after its share of `quota` answers (0: run
# for the duration); every answer is checked.
lua="$data/run.lua"
cat >"$lua" <<'EOF'
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) quota = tonumber(args[1]) or 0; answers = 0; bad = 0; non200 = 0 end
function response(status, headers, body)
    answers = answers + 1
    if status ~= 200 then non200 = non200 + 1
    elseif not (body:find('"status":"exited"', 1, true)
                and body:find("hello from a zeroboot-wasm sandbox", 1, true)) then
        bad = bad + 1
    end
    if quota > 0 and answers >= quota then wrk.thread:stop() end
end
function done(summary, latency, requests)
    local a, b, n = 0, 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("answers"); b = b + t:get("bad"); n = n + t:get("non200")
    end
    io.write(string.format("answers %d  non-200 %d  mismatched %d  socket errors %d\n", a, n, b,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
    io.write(string.format("req/s %.0f  p50 %.0f us  p99 %.0f us  max %.0f us\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(50),
        latency:percentile(99), latency.max))
end
EOF

exited() {
    curl -sf "$base/metrics" | sed -n "s/^zeroboot_tasks_total{tool=\"$id\",status=\"exited\"} //p" | grep . || echo 0
}
echo
echo "== HTTP run of hello on loopback (wrk) =="
wrk -t1 -c1 -d2s -s "$lua" "$url" >/dev/null # warm-up
echo "-- concurrency 1, ${seconds}s"
wrk -t1 -c1 -d"${seconds}s" -s "$lua" "$url" | tail -2
echo "-- concurrency $cores (cores), ${seconds}s"
wrk -t"$cores" -c"$cores" -d"${seconds}s" -s "$lua" "$url" | tail -2 | tee "$data/wrk-cores.out"
python3 - "$data/wrk-cores.out" <<'EOF'
import json, re, sys
http = float(re.search(r"req/s (\d+)", open(sys.argv[1]).read()).group(1))
pool = json.load(open("/tmp/zb-load-bench.json"))["server_pool"].get("per_s_concurrent") or 0
if pool:
    print(f"HTTP at c=cores: {100 * http / pool:.1f} % of bench server_pool's rate at c=cores (target 80 %)")
EOF
before="$(exited)"
echo "-- $requests requests at concurrency $cores"
per=$(( (requests + cores - 1) / cores ))
# wrk's main thread sleeps for the whole duration even when every thread has stopped: once
# the server has counted the runs (or the time is up), SIGINT ends it and it reports.
wrk -t"$cores" -c"$cores" -d600s -s "$lua" "$url" -- "$per" >"$data/wrk.out" &
gen=$!
for _ in $(seq 6000); do
    [ "$(exited)" -ge "$((before + per * cores))" ] && break
    sleep 0.1
done
sleep 0.5
kill -INT "$gen" 2>/dev/null || true
wait "$gen" || true
tail -2 "$data/wrk.out"
after="$(exited)"
echo "server /metrics: $((after - before)) runs exited during the $((per * cores)) requests"
[ "$((after - before))" = "$((per * cores))" ] || { echo "LOST OR EXTRA RUNS" >&2; exit 1; }
