"""Server CPU per message of the callback API, compiled data path against pure Python.

``python -m bench.cpu_per_message [--reps 5] [--loop asyncio|uvloop] [--duration 3]
[--api callback|coroutine]``

``--api coroutine``: the same for the coroutine API (``shakehands-coroutine``, with
``shakehands.asyncio._fastcoro.enabled`` off and on) with ``websockets`` beside it (the
issue's reference for that API) and the row of 100 connections x 16 in flight; a second
table gives the messages per second of the same runs.

Throughput on a shared machine follows the other tenants; the CPU time the server process
spends per echoed message much less so. Four servers (``shakehands-callback`` of
:mod:`bench.servers` with ``shakehands.asyncio._fastpath.enabled`` off and on, the Python raw
TCP echo, the ceiling of a Python server, and the C epoll echo of ``bench/c_echo.c``, the
physical ceiling) are started at once, pinned to core 0; the C load generator (core 1) drives
them in turn within each repetition (A B C D, then D C B A, ...), and the server's
user+system time over the run (``/proc/PID/stat``) is divided by the messages echoed. Prints a
markdown table: median and range per workload. "raw TCP / compiled" is the share of the
ceiling reached (1.0: as cheap as the raw echo).

``--direct``: the compiled path's direct socket I/O (asyncio's plain TCP transport only, see
``shakehands.asyncio._fastpath``): compiled with every write through ``transport.write`` and
asyncio's ``_read_ready`` ("transport"), with direct sends ("sends"), with direct sends and
reads ("sends+reads", the default), beside picows (issue 14's reference) and the raw echoes,
on the rows of issue 14's grid.

``--deflate``: the same with permessage-deflate negotiated (the default configuration, what
browsers ask for), pure Python against compiled only (the raw echoes do not compress). The C
load generator then compresses (``loadgen echo ... deflate``: context takeover, text messages
that compress like chat, each different), and inflates and checks the echoes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .procstat import cpu_seconds
from .run import BUILD, HOST, build_loadgen, free_port, pinned

ROOT = Path(__file__).resolve().parent.parent

#: (label, conns, depth, size)
WORKLOADS = [
    ("100 conns x 1 in flight x 256 B", 100, 1, 256),
    ("1 conn x 64 in flight x 256 B", 1, 64, 256),
    ("1 conn x 1 x 64 KiB", 1, 1, 65536),
    ("4 conns x 2 x 1 MiB", 4, 2, 2**20),
]

SERVER = """
import sys
from shakehands.asyncio import _fastpath
_fastpath.enabled = sys.argv[1] == "compiled"
assert _fastpath.enabled == (sys.argv[1] == "compiled"), "the compiled path is not built"
from bench.servers import main
main(["shakehands-callback", "--port", sys.argv[2], "--loop", sys.argv[3]])
"""

SERVER_COROUTINE = """
import sys
from shakehands.asyncio import _fastcoro
_fastcoro.enabled = sys.argv[1] == "compiled"
assert _fastcoro.enabled == (sys.argv[1] == "compiled"), "the compiled path is not built"
from bench.servers import main
main(["shakehands-coroutine", "--port", sys.argv[2], "--loop", sys.argv[3]])
"""

#: The coroutine API's reference server (``--api coroutine``).
WEBSOCKETS = "websockets"
COROUTINE_WORKLOADS = [*WORKLOADS, ("100 conns x 16 in flight x 256 B", 100, 16, 256)]

SERVER_DIRECT = """
import sys
from shakehands.asyncio import _fastpath
mode = sys.argv[1]
_fastpath.direct_sends = mode != "transport"
_fastpath.direct_reads = mode == "sends+reads"
assert _fastpath.enabled and _fastpath.direct_sends == (mode != "transport"), "not built"
from bench.servers import main
main(["shakehands-callback", "--port", sys.argv[2], "--loop", sys.argv[3]])
"""
#: The variants of ``--direct``, and picows beside them.
DIRECT_MODES = ("transport", "sends", "sends+reads")
PICOWS = "picows"
DIRECT_WORKLOADS = [("1 conn x 1 in flight x 256 B", 1, 1, 256), *WORKLOADS]

SERVER_DEFLATE = SERVER.replace('"shakehands-callback",', '"shakehands-callback-deflate",')

#: (label, conns, depth, size) of ``--deflate``
DEFLATE_WORKLOADS = [
    ("100 conns x 1 in flight x 256 B, deflate", 100, 1, 256),
    ("10 conns x 1 in flight x 256 B, deflate", 10, 1, 256),
    ("1 conn x 16 in flight x 4 KiB, deflate", 1, 16, 4096),
]

IMPLS = ("python", "compiled")
#: The Python raw TCP echo of bench/servers.py: what a Python server cannot beat.
CEILING = "raw-tcp"
#: The C epoll echo (bench/c_echo.c): what no server on this machine can beat.
PHYSICAL = "c-echo"


def build_c_echo() -> Path:
    """Compile bench/c_echo.c with the system C compiler (cached until the source changes)."""
    source = Path(__file__).with_name("c_echo.c")
    binary = BUILD / "c_echo"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    BUILD.mkdir(exist_ok=True)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("a C compiler (cc) is needed to build bench/c_echo.c")
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def wait_for_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"no server on port {port}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="permessage-deflate negotiated (pure Python and compiled only)",
    )
    parser.add_argument("--api", choices=["callback", "coroutine"], default="callback")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="direct socket I/O of the compiled callback path off/sends/sends+reads, picows",
    )
    args = parser.parse_args(argv)
    coroutine = args.api == "coroutine"
    if coroutine and args.deflate:
        parser.error("--deflate measures the callback API only")
    if args.direct and (coroutine or args.deflate):
        parser.error("--direct measures the callback API without compression")
    workloads = (
        DEFLATE_WORKLOADS if args.deflate else COROUTINE_WORKLOADS if coroutine else WORKLOADS
    )
    if args.direct:
        workloads = DIRECT_WORKLOADS

    binary = build_loadgen()
    c_echo = build_c_echo()
    # A PYTHONPATH given first (e.g. another build of shakehands), then this tree.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT / "src"), str(ROOT)])}
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        order: tuple[str, ...] = IMPLS if args.deflate else (*IMPLS, CEILING, PHYSICAL)
        if coroutine:
            order = (*IMPLS, WEBSOCKETS, CEILING, PHYSICAL)
        if args.direct:
            order = (*DIRECT_MODES, PICOWS, CEILING, PHYSICAL)
        for impl in order:
            port = free_port()
            if impl == PHYSICAL:
                argv_ = [str(c_echo), str(port)]
            elif impl in DIRECT_MODES:
                argv_ = [sys.executable, "-c", SERVER_DIRECT, impl, str(port), args.loop]
            elif impl in (CEILING, WEBSOCKETS, PICOWS):
                argv_ = [sys.executable, "-m", "bench.servers", impl, "--port", str(port)]
                argv_ += ["--loop", args.loop]
            else:
                script = (
                    SERVER_DEFLATE if args.deflate else SERVER_COROUTINE if coroutine else SERVER
                )
                argv_ = [sys.executable, "-c", script, impl, str(port), args.loop]
            servers[impl] = (subprocess.Popen(pinned(0, argv_), env=env, cwd=ROOT), port)
            wait_for_port(port)
        samples: dict[tuple[str, str], list[float]] = {}
        rates: dict[tuple[str, str], list[float]] = {}
        for rep in range(args.reps):
            for label, conns, depth, size in workloads:
                for impl in order if rep % 2 == 0 else order[::-1]:
                    proc, port = servers[impl]
                    command = [str(binary), "echo", HOST, str(port), str(conns), str(depth)]
                    command += [str(size), "0", str(args.duration)]
                    if impl in (CEILING, PHYSICAL):
                        command.append("raw")
                    elif args.deflate:
                        command.append("deflate")
                    before = cpu_seconds(proc.pid)
                    result = subprocess.run(
                        pinned(1, command),
                        capture_output=True,
                        text=True,
                        timeout=args.duration + 60,
                        check=True,
                        env=env,
                    )
                    used = cpu_seconds(proc.pid) - before
                    data = json.loads(result.stdout.strip().splitlines()[-1])
                    micros = used / data["messages"] * 1e6
                    samples.setdefault((label, impl), []).append(micros)
                    if "msg_per_s" in data:
                        rates.setdefault((label, impl), []).append(data["msg_per_s"])
                    print(f"rep {rep} {label} {impl}: {micros:.2f} us/msg", file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)

    if coroutine:
        print_coroutine_tables(args, workloads, order, samples, rates)
        return
    if args.direct:
        print_direct_table(args, workloads, order, samples)
        return
    deflate = ", permessage-deflate negotiated" if args.deflate else ""
    print(
        f"Server CPU per message, callback API{deflate}, {args.loop} loop, {args.reps} repetitions"
    )
    print("(median, range in brackets; lower is better)\n")
    if args.deflate:
        print("| workload | pure Python (us) | compiled (us) | compiled / Python |")
        print("|---|---|---|---|")
        for label, *_ in workloads:
            per_impl = [samples[(label, impl)] for impl in IMPLS]
            python, compiled = (statistics.median(v) for v in per_impl)
            cells = [f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]" for v in per_impl]
            print(f"| {label} | {' | '.join(cells)} | {compiled / python:.2f}x |")
        return
    print(
        "| workload | pure Python (us) | compiled (us) | raw TCP echo (us) | C epoll echo (us) "
        "| compiled / Python | raw TCP / compiled |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, *_ in WORKLOADS:
        cells = []
        medians = []
        for impl in order:
            values = samples[(label, impl)]
            median = statistics.median(values)
            medians.append(median)
            cells.append(f"{median:.2f} [{min(values):.2f}-{max(values):.2f}]")
        python, compiled, raw, _ = medians
        print(
            f"| {label} | {' | '.join(cells)} | {compiled / python:.2f}x | {raw / compiled:.2f}x |"
        )


def print_direct_table(
    args: argparse.Namespace,
    workloads: list[tuple[str, int, int, int]],
    order: tuple[str, ...],
    samples: dict[tuple[str, str], list[float]],
) -> None:
    """The table of ``--direct``: CPU per message of each variant, picows and the echoes."""
    print(
        f"Server CPU per message, callback API, direct socket I/O, {args.loop} loop, "
        f"{args.reps} repetitions"
    )
    print("(median, range in brackets; lower is better)\n")
    print(
        "| workload | transport.write (us) | direct sends (us) | direct sends+reads (us) "
        "| picows (us) | raw TCP echo (us) | C epoll echo (us) | picows / sends+reads "
        "| raw TCP / sends+reads |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, *_ in workloads:
        values = [samples[(label, impl)] for impl in order]
        cells = [f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]" for v in values]
        _, _, direct, picows, raw, _ = (statistics.median(v) for v in values)
        print(f"| {label} | {' | '.join(cells)} | {picows / direct:.2f}x | {raw / direct:.2f}x |")


def print_coroutine_tables(
    args: argparse.Namespace,
    workloads: list[tuple[str, int, int, int]],
    order: tuple[str, ...],
    samples: dict[tuple[str, str], list[float]],
    rates: dict[tuple[str, str], list[float]],
) -> None:
    """The tables of ``--api coroutine``: CPU per message, then messages per second."""

    def cell(values: list[float], digits: int) -> str:
        low, high = min(values), max(values)
        return f"{statistics.median(values):.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"

    print(f"Server CPU per message, coroutine API, {args.loop} loop, {args.reps} repetitions")
    print("(median, range in brackets; lower is better)\n")
    print(
        "| workload | pure Python (us) | compiled (us) | websockets (us) | raw TCP echo (us) "
        "| C epoll echo (us) | compiled / Python | websockets / compiled | raw TCP / compiled |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, *_ in workloads:
        cells = [cell(samples[(label, impl)], 2) for impl in order]
        python, compiled, websockets, raw, _ = (
            statistics.median(samples[(label, impl)]) for impl in order
        )
        print(
            f"| {label} | {' | '.join(cells)} | {compiled / python:.2f}x "
            f"| {websockets / compiled:.2f}x | {raw / compiled:.2f}x |"
        )
    print("\nMessages per second of the same runs (higher is better)\n")
    print(
        "| workload | pure Python | compiled | websockets | raw TCP echo | C epoll echo "
        "| compiled / websockets | compiled / raw TCP |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, *_ in workloads:
        cells = [cell(rates[(label, impl)], 0) for impl in order]
        _, compiled, websockets, raw, _ = (
            statistics.median(rates[(label, impl)]) for impl in order
        )
        print(
            f"| {label} | {' | '.join(cells)} | {compiled / websockets:.2f}x "
            f"| {compiled / raw:.2f}x |"
        )


if __name__ == "__main__":
    main()
