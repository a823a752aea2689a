#!/usr/bin/env python3
"""Per-task latency of `zeroboot-wasm worker`: N tasks of one module through one warm template.

Usage: scripts/worker_latency.py MODULE.wasm [N] [extra worker flags...]
Prints p50/p99/max of the timings each outcome carries (fork, setup, run, total, in µs) and
the zygote's thread and mapping counts at fork. `total` is measured by the zygote from the task
being handed to it to the outcome in hand (report and output collected).
"""
import json
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
module = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
extra = sys.argv[3:]
binary = root / "target" / "release" / "zeroboot-wasm"
proc = subprocess.run(
    [str(binary), "worker", "--stats", *extra, module],
    input=("{}\n" * n).encode(),
    capture_output=True,
    check=True,
)
rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
bad = [r for r in rows if r["status"] != "exited"]
if bad:
    sys.exit(f"{len(bad)} tasks did not exit cleanly, e.g. {bad[0]}")
print(f"{len(rows)} tasks of {Path(module).name} ({' '.join(extra) or 'default isolation'})")
for key in ["fork", "setup", "run", "total"]:
    v = sorted(r["timings_us"][key] for r in rows)
    print(f"  {key:6} p50 {v[len(v) // 2]:6} us   p99 {v[int(len(v) * 0.99)]:6} us   max {v[-1]:6} us")
z = rows[-1]["zygote"]
print(f"  zygote at fork: threads={z['threads']} mappings={z['mappings']} "
      f"namespaces={z['namespaces']} seccomp={z['seccomp']} memory_cgroup={z['memory_cgroup']}")
