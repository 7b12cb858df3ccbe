"""Where the uvicorn server's CPU goes, by package: ours against shared costs.

``python -m bench.asgi_profile [--rows 1x1x256,churn] [--loop asyncio] [--duration 2]``

For each row of ``bench/asgi.py --cpu`` and each of shakehands and websockets-sansio, a fresh
uvicorn echo server (:mod:`bench.servers`, pinned to core 0) runs under ``cProfile``; the C load
generator (core 1) drives it for ``--duration`` seconds; on exit the server writes its profile,
and this script groups the time spent *in* each function (``tottime``) by the package of the
function's file: ``uvicorn``, ``starlette``, ``shakehands``, ``websockets``, ``asyncio`` (the
event loop, ``selectors``, ``socket``), ``other``. A built-in function (``socket.send``,
``bytes.join``, a C accelerator) has no file: its time goes to the packages of its callers, in
proportion to the calls each made. The server's CPU time per message, measured on an
unprofiled server (``/proc/PID/stat``, as ``--cpu``), is split in those proportions, so the table
reads "of the 57 us a message costs, so many are uvicorn's, Starlette's, ours...". The profiler
counts CPU time (``time.process_time``), not the time spent waiting for the next message.

cProfile slows Python functions more than C code, so the shares lean towards the packages with
many small Python calls; the split says what is shared (uvicorn's HTTP side, Starlette's
wrappers, the event loop) and what is the WebSocket implementation's. Last column: the ratio
the row could reach if the WebSocket implementation cost nothing, ``peer total / (our total -
our share)``; if it is below 1.5, the target cannot be met by this library alone.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.asgi import CPU_ROWS, OURS, REFERENCE, cpu_run
from bench.run import BENCH, ServerProcess, build_loadgen, free_port, pinned, wait_listening

PACKAGES = ["shakehands", "websockets", "uvicorn", "starlette", "asyncio", "other"]
#: The WebSocket implementation's own package, per server.
OWN = {OURS: "shakehands", REFERENCE: "websockets"}

#: Run in the server process: bench.servers under cProfile, the profile written on exit.
PROFILED_SERVER = """
import cProfile, signal, sys, time
from bench.servers import main
# CPU time, not wall time: a server waiting in epoll for the next message is not busy.
profile = cProfile.Profile(time.process_time)
# Profiled between SIGUSR1 and SIGUSR2 only: start-up (imports, argument parsing) is not.
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
try:
    main(sys.argv[2:])
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
"""


def package_of(filename: str) -> str:
    """The package a function's file belongs to (``"~"``: a built-in, no file)."""
    if filename == "~":
        return "~"
    parts = Path(filename).parts
    for name in ("shakehands", "websockets", "uvicorn", "starlette"):
        if name in parts:
            return name
    if any(p in parts for p in ("asyncio", "uvloop")) or Path(filename).stem in (
        "selectors",
        "socket",
    ):
        return "asyncio"
    return "other"


def split_by_package(stats: pstats.Stats) -> dict[str, float]:
    """Seconds spent in each package's functions, built-ins charged to their callers."""
    table = stats.stats  # type: ignore[attr-defined]
    totals = dict.fromkeys(PACKAGES, 0.0)

    def charge(func: tuple[str, int, str], seconds: float, depth: int = 0) -> None:
        package = package_of(func[0])
        if package != "~":
            totals[package] += seconds
            return
        callers = table.get(func, (0, 0, 0.0, 0.0, {}))[4]
        calls = sum(c[1] if isinstance(c, tuple) else c for c in callers.values())
        if not callers or not calls or depth > 5:
            totals["other"] += seconds
            return
        for caller, info in callers.items():
            count = info[1] if isinstance(info, tuple) else info
            charge(caller, seconds * count / calls, depth + 1)

    for func, (_, _, tottime, _, _) in table.items():
        charge(func, tottime)
    return totals


def plain_row(binary: Path, name: str, loop: str, key: str, duration: float) -> float:
    """Server CPU us per message for one row, without the profiler (one unmeasured run first)."""
    server = ServerProcess(name, loop)
    try:
        cpu_run(binary, server.port, server.proc.pid, key, 0.3)
        return cpu_run(binary, server.port, server.proc.pid, key, duration)
    finally:
        server.stop()


def profiled_row(binary: Path, name: str, loop: str, key: str, duration: float) -> dict[str, float]:
    """Seconds per package for one row, on a server running under cProfile."""
    port = free_port()
    root = BENCH.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.out"
        argv = [sys.executable, "-c", PROFILED_SERVER, str(out), name, "--port", str(port)]
        argv += ["--loop", loop]
        proc = subprocess.Popen(
            pinned(0, argv), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_listening(port, proc)
            time.sleep(0.2)
            cpu_run(binary, port, proc.pid, key, 0.3)  # unprofiled warm-up, as plain_row
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.05)
            cpu_run(binary, port, proc.pid, key, duration)
            proc.send_signal(signal.SIGUSR2)
            time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not out.exists():
            raise RuntimeError(f"{name}: the profiled server wrote no profile")
        return split_by_package(pstats.Stats(str(out)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_profile", description=__doc__)
    parser.add_argument("--rows", help=f"comma-separated rows (default: {CPU_ROWS})")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    args = parser.parse_args(argv)
    rows = args.rows.split(",") if args.rows else CPU_ROWS
    binary = build_loadgen()
    results: dict[tuple[str, str], tuple[float, dict[str, float]]] = {}
    for key in rows:
        for name in (OURS, REFERENCE):
            micros = plain_row(binary, name, args.loop, key, args.duration)
            seconds = profiled_row(binary, name, args.loop, key, args.duration)
            results[(key, name)] = (micros, seconds)
            print(f"{key} {name}: {micros:.1f} us", file=sys.stderr, flush=True)
    print(
        f"Server CPU per message (per handshake for churn), {args.loop} loop, {args.duration} s "
        "per run, split by package in the proportions a cProfile run of the same row gives (us)\n"
    )
    print("| workload | server | total | " + " | ".join(PACKAGES) + " | own share | at own = 0 |")
    print("|---|---|---|" + "---|" * len(PACKAGES) + "---|---|")
    for key in rows:
        peer_total = results[(key, REFERENCE)][0]
        for name in (OURS, REFERENCE):
            micros, seconds = results[(key, name)]
            whole = sum(seconds.values()) or 1.0
            cells = [f"{micros * seconds[p] / whole:.1f}" for p in PACKAGES]
            own = seconds[OWN[name]] / whole
            best = ""
            if name == OURS:
                shared = micros * (1 - own)
                best = f"{peer_total / shared:.2f}x" if shared else "-"
            print(f"| {key} | {name} | {micros:.1f} | {' | '.join(cells)} | {own:.0%} | {best} |")


if __name__ == "__main__":
    main()
