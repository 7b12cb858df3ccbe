#!/usr/bin/env bash
# Smoke run of the benchmark harness (docs/performance.md): builds the C load generator and the
# C epoll echo, starts the callback and coroutine APIs, the raw TCP echo and the C echo at once,
# and runs a few workloads against them in turn, asyncio loop only (the peers are in the bench
# extra, not installed here). Checks that numbers came out, throughput and server CPU per
# message; the numbers themselves are not judged (speed lives in bench/results/, not in CI).
set -euo pipefail
out="$(mktemp -d)"
python -m bench --quick --only shakehands-callback shakehands-coroutine raw-tcp c-echo \
    --loop asyncio --workload 1x64x256 4x2x1m idle churn --output "$out"
python - "$out/latest.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
for loop, server, keys in [
    ("asyncio", "shakehands-callback", ["1x64x256", "4x2x1m", "idle", "churn"]),
    ("asyncio", "shakehands-coroutine", ["1x64x256", "4x2x1m", "idle", "churn"]),
    ("asyncio", "raw-tcp", ["1x64x256", "4x2x1m", "idle"]),
    ("native", "c-echo", ["1x64x256", "4x2x1m", "idle"]),
]:
    for key in keys:
        values = data["samples"][loop][server][key]
        assert values and all(v >= 0 if key == "idle" else v > 0 for v in values), (server, key)
        if key != "idle":
            cpu = data["cpu_us"][loop][server][key]
            assert cpu and all(v > 0 for v in cpu), (server, key, "cpu", cpu)
print("bench smoke: every workload produced a number and a CPU per message")
PY
rm -rf "$out"
