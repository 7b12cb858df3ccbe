#!/usr/bin/env bash
# Smoke run of the benchmark harness (docs/performance.md): builds the C load generator and
# runs a few workloads against the callback API and the raw TCP ceiling, asyncio loop only
# (the peers are in the bench extra, not installed here). Checks that numbers came out; the
# numbers themselves are not judged (speed lives in bench/results/, not in CI).
set -euo pipefail
out="$(mktemp -d)"
python -m bench --quick --only shakehands-callback shakehands-coroutine raw-tcp --loop asyncio \
    --workload 1x64x256 4x2x1m idle churn --output "$out"
python - "$out/latest.json" <<'PY'
import json, sys
samples = json.load(open(sys.argv[1]))["asyncio"]
for server, keys in {
    "shakehands-callback": ["1x64x256", "4x2x1m", "idle", "churn"],
    "shakehands-coroutine": ["1x64x256", "4x2x1m", "idle", "churn"],
    "raw-tcp": ["1x64x256", "4x2x1m", "idle"],
}.items():
    for key in keys:
        values = samples[server][key]
        assert values and all(v > 0 for v in values), (server, key, values)
print("bench smoke: every workload produced a number")
PY
