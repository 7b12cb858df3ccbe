#!/usr/bin/env bash
# Smoke run of the benchmark harness (docs/performance.md): builds the C load generator and the
# C epoll echo, starts the callback and coroutine APIs, the raw TCP echo and the C echo at once,
# and runs a few workloads against them in turn, asyncio loop only (the peers are in the bench
# extra, not installed here). Checks that numbers came out, throughput and server CPU per
# message; the numbers themselves are not judged (speed lives in bench/results/, not in CI).
# ci: alongside
# (.ci/run: runs in the background with the main tests: no install, free ports only.)
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

# WebSockets over HTTP/2 (bench/http2.py, docs/http2.md): 10 WebSockets, half a second each,
# h2-driven client, our client (connect_session) and HTTP/1.1; numbers out, not judged.
python bench/http2.py --websockets 10 --seconds 0.5 | tee "$out.http2"
python - "$out.http2" <<'PY'
import re, sys
rows = [line for line in open(sys.argv[1]) if re.match(r"\| HTTP/", line)]
assert len(rows) == 3, rows
for row in rows:
    numbers = [float(cell) for cell in row.strip().strip("|").split("|")[1:]]
    assert len(numbers) == 3 and all(n > 0 for n in numbers[1:]), row
print("bench smoke: HTTP/2 benchmark produced its three rows")
PY
rm -f "$out.http2"
