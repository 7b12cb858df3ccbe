"""Run every atheris target for a while, from our seeds, and report what ran.

    python fuzz/run.py --seconds 20            # the CI step: about a minute in all
    python fuzz/run.py --seconds 600 --corpus fuzz/corpus   # a long run, corpus kept

Each target runs in its own process (libFuzzer's ``-max_total_time``); the number of inputs it
executed comes from libFuzzer's final statistics. A crash, a failed check or a timeout makes the
target exit non-zero: the input is saved under ``fuzz/crashes/`` and this script fails.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402

# Seeds per target: (flags, cuts, seed name) -> see each target's docstring for the flags.
SEEDS: dict[str, list[tuple[int, list[int], str]]] = {
    "fuzz_request": [
        (0, [], "request"),
        (2, [3, 40, 41], "request_and_frames"),
        (1, [10], "request"),
        (0, [], "request_and_frames"),
    ],
    "fuzz_response": [
        (1, [], "response_101"),
        (1, [5, 20], "response_404"),
        (0, [], "response_404"),
        (2, [7], "server_frames"),
        (6, [], "server_frames"),
    ],
    "fuzz_frames": [
        (0, [], "client_frames"),
        (2, [1, 9, 30], "client_frames"),
        (4, [], "client_frames"),
        (6, [2], "client_frames"),
        (1, [], "server_frames"),
        (3, [100], "server_frames"),
    ],
}


def run_target(name: str, seconds: int, corpus: Path, crashes: Path) -> tuple[int, int, str]:
    """Run one target; return (exit status, inputs executed, last lines of its output)."""
    corpus.mkdir(parents=True, exist_ok=True)
    all_seeds = targets.seeds()
    for i, (flags, cuts, seed) in enumerate(SEEDS[name]):
        (corpus / f"seed-{i}").write_bytes(targets.encode(flags, cuts, all_seeds[seed]))
    crashes.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(HERE / f"{name}.py"),
        str(corpus),
        f"-max_total_time={seconds}",
        "-print_final_stats=1",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=4096",
        f"-artifact_prefix={crashes}/{name}-",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    output = result.stdout + result.stderr
    match = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    executed = int(match.group(1)) if match else 0
    tail = "\n".join(output.strip().splitlines()[-25:])
    return result.returncode, executed, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="per target (default 20)")
    parser.add_argument("--corpus", type=Path, help="keep the corpus here (default: temporary)")
    parser.add_argument("--crashes", type=Path, default=HERE / "crashes")
    parser.add_argument("targets", nargs="*", default=list(SEEDS), help="default: all")
    args = parser.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("!!! atheris is not installed: no fuzzing done", file=sys.stderr)
        return 2
    failed = False
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        base = args.corpus or Path(tmp)
        for name in args.targets:
            start = time.monotonic()
            status, executed, tail = run_target(name, args.seconds, base / name, args.crashes)
            elapsed = time.monotonic() - start
            total += executed
            verdict = "ok" if status == 0 else f"FAILED (exit {status})"
            print(f"{name:14} {executed:>10,} inputs in {elapsed:5.0f} s  {verdict}", flush=True)
            if status != 0:
                failed = True
                print(tail, file=sys.stderr)
    print(f"{'total':14} {total:>10,} inputs", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
