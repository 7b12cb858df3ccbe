"""The benchmark harness: every server, every workload, one command.

    python -m bench            # the full grid: 5 repetitions, medians and spread (about 35 minutes)
    python -m bench --quick    # one short repetition (about 4 minutes)
    python -m bench --render   # rewrite latest.md / latest.png from latest.json, measure nothing

It builds the C load generator (bench/loadgen.c) and the C epoll echo (bench/c_echo.c) with the
system compiler into bench/build/. Each repetition starts every echo server of
:mod:`bench.servers` at once (each pinned to core 0 with ``taskset``; the load generator runs on
core 1), then measures them in turn, workload by workload, interleaved: servers A B C ... on one
repetition, ... C B A on the next, so that a burst of load from another tenant of the machine
hits them alike. Idle memory is measured first, on servers that have not carried any traffic
yet. Before each measurement the harness waits until no server uses CPU (the previous one may
still be tearing 1 000 connections down), and it records the CPU that the servers not being
measured used meanwhile (it should be none).

Two metrics per echo and handshake row: throughput (from the load generator) and the server's
CPU time per message or handshake (``/proc/PID/stat`` at the start and the end of the measured
window, :mod:`bench.procstat`), which moves much less than throughput with the other tenants of
a shared machine.

Results: ``bench/results/latest.md`` (median [min-max] per cell, ratios to each peer, the
targets of issues 14 and 5), ``latest.json`` (every sample and how the run was made) and
``latest.png`` (a chart).

Needs Linux, a C compiler and ``pip install -e '.[bench]'`` (the peers, uvloop, matplotlib).
Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from .procstat import cpu_seconds

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
SERVER_CORE = 0
LOADGEN_CORE = 1


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    unit: str  # what the median is in
    higher_is_better: bool = True
    conns: int = 0
    depth: int = 0
    size: int = 0

    @property
    def cpu_unit(self) -> str | None:
        """The unit of the second metric, server CPU per unit of work (None: not measured)."""
        if self.key == "idle":
            return None
        return "µs/hs" if self.key == "churn" else "µs/msg"


WORKLOADS = [
    Workload("1x1x256", "1 conn, 1 in flight, 256 B", "msg/s", conns=1, depth=1, size=256),
    Workload("1x64x256", "1 conn, 64 in flight, 256 B", "msg/s", conns=1, depth=64, size=256),
    Workload("100x1x256", "100 conns, 1 in flight, 256 B", "msg/s", conns=100, depth=1, size=256),
    Workload(
        "100x16x256", "100 conns, 16 in flight, 256 B", "msg/s", conns=100, depth=16, size=256
    ),
    Workload("1x1x64k", "1 conn, 1 in flight, 64 KiB", "MB/s", conns=1, depth=1, size=65536),
    Workload("4x2x1m", "4 conns, 2 in flight, 1 MiB", "MB/s", conns=4, depth=2, size=2**20),
    Workload("idle", "idle connection memory", "KiB/conn", higher_is_better=False),
    Workload("churn", "handshakes/s (connect, handshake, close)", "hs/s"),
]
WORKLOAD_BY_KEY = {w.key: w for w in WORKLOADS}

SHAKEHANDS = ["shakehands-callback", "shakehands-coroutine"]
PEERS = ["picows", "aiohttp", "websockets", "wsproto", "tornado"]
#: The Python raw TCP echo: the ceiling of a Python server on the same loop.
CEILING = "raw-tcp"
#: The C epoll echo (bench/c_echo.c): the physical ceiling. It runs on no Python loop: its cells
#: are under the "loop" NATIVE, and every table shows it beside the loop's own servers.
C_CEILING = "c-echo"
NATIVE = "native"
#: Servers that speak raw TCP, not WebSocket: no handshake (no churn row), raw load.
RAW_SERVERS = {CEILING, C_CEILING}
LOOP_SERVERS = SHAKEHANDS + PEERS + [CEILING]
LOOPS = ["asyncio", "uvloop"]
# Servers on threads (blocking APIs): no event loop.
SYNC_SERVERS = ["shakehands-sync", "websockets-sync"]
# The default configuration (compression on): idle memory only.
DEFLATE_VARIANT = "shakehands-callback-deflate"
ALL_SERVERS = [*LOOP_SERVERS, *SYNC_SERVERS, C_CEILING, DEFLATE_VARIANT]

Cell = tuple[str, str]  # (server, loop)


@dataclass
class Settings:
    reps: int
    warmup: float
    duration: float
    idle_base: int
    idle_extra: int
    churn_concurrency: int


FULL = Settings(
    reps=5, warmup=0.5, duration=1.5, idle_base=100, idle_extra=1000, churn_concurrency=16
)
QUICK = Settings(
    reps=1, warmup=0.3, duration=0.7, idle_base=50, idle_extra=300, churn_concurrency=16
)


# --------------------------------------------------------------------------------------------
# Building and running things
# --------------------------------------------------------------------------------------------


def build_c(name: str) -> Path:
    """Compile ``bench/NAME.c`` with the system C compiler into bench/build/NAME.

    Cached until the source changes; the binary is written under another name and renamed, so
    that two runs building at once never execute a half-written file.
    """
    source = BENCH / f"{name}.c"
    binary = BUILD / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    BUILD.mkdir(exist_ok=True)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit(f"a C compiler (cc) is needed to build bench/{name}.c")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=BUILD)
    os.close(fd)
    try:
        command = [compiler, "-O2", "-o", tmp, str(source)]
        if name == "loadgen":
            # zlib for its deflate mode, when its header is there; without, that mode says so.
            built = subprocess.run([*command, "-lz"], capture_output=True)
            if built.returncode != 0:
                subprocess.run([*command, "-DNO_ZLIB"], check=True)
        else:
            subprocess.run(command, check=True)
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return binary


def build_loadgen() -> Path:
    """Compile bench/loadgen.c (see :func:`build_c`)."""
    return build_c("loadgen")


def pinned(core: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *argv]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def raise_open_files_limit() -> None:
    """Soft limit on open files up to the hard one, for this process and the servers it starts
    (1 100 idle connections per server, and c_echo does not raise its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


class ServerProcess:
    """One echo server of bench/servers.py, pinned to the server core.

    The constructor starts it and waits until it listens; with ``wait=False`` it returns at
    once and :meth:`wait_ready` waits (so that every server of a run can start at once).
    """

    def __init__(self, name: str, loop: str, *, wait: bool = True) -> None:
        self.name = name
        self.loop = loop
        self.port = free_port()
        argv = [sys.executable, "-m", "bench.servers", name, "--port", str(self.port)]
        if loop in LOOPS:
            argv += ["--loop", loop]
        # The shakehands of this source tree (src/), not whatever else is installed; then the
        # PYTHONPATH given, if any (e.g. peers installed with pip --target).
        root = BENCH.parent
        given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        paths = [str(root / "src"), str(root), *given]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))
        self.proc = subprocess.Popen(
            pinned(SERVER_CORE, argv),
            cwd=BENCH.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if wait:
            try:
                self.wait_ready()
            except RuntimeError:
                self.stop()
                raise

    @property
    def cell(self) -> Cell:
        return (self.name, self.loop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        wait_listening(self.port, self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_servers(cells: Sequence[Cell], log: Callable[[str], None] = print) -> list[ServerProcess]:
    """Start a server for every cell at once, then wait until each listens.

    A server that cannot start is reported and left out; the others are returned, in the order
    of ``cells``.
    """
    started: list[ServerProcess] = []
    for name, loop in cells:
        try:
            started.append(ServerProcess(name, loop, wait=False))
        except OSError as exc:
            log(f"{name} ({loop}): cannot start: {exc}")
    ready = []
    for server in started:
        try:
            server.wait_ready()
        except RuntimeError as exc:
            log(f"{server.name} ({server.loop}): cannot start: {exc}")
            server.stop()
            continue
        ready.append(server)
    return ready


def cpu_of(servers: Iterable[ServerProcess]) -> dict[Cell, float]:
    """CPU seconds used so far by each live server."""
    times = {}
    for server in servers:
        with contextlib.suppress(OSError):  # it has exited
            times[server.cell] = cpu_seconds(server.pid)
    return times


def settle(
    servers: Sequence[ServerProcess],
    window: float = 0.25,
    timeout: float = 5.0,
) -> bool:
    """Wait until no server uses CPU (at most one clock tick per ``window`` each).

    After a measurement the server may still be closing its connections (1 000 of them after
    the idle row): the next measurement must not share the core with that.

    Returns:
        Whether the servers went quiet before ``timeout`` seconds.
    """
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while True:
        before = cpu_of(servers)
        time.sleep(window)
        after = cpu_of(servers)
        busy = [c for c, t in after.items() if c in before and t - before[c] > tick * 1.01]
        if not busy:
            return True
        if time.monotonic() >= deadline:
            return False


def interleaved(cells: Sequence[Cell], rep: int) -> list[Cell]:
    """The order in which repetition ``rep`` measures the servers: A B C, then C B A, ..."""
    return list(cells) if rep % 2 == 0 else list(reversed(cells))


def plan(cells: Sequence[Cell], works: Sequence[Workload], rep: int) -> list[tuple[Cell, Workload]]:
    """Every measurement of one repetition, in order.

    Idle memory first (no server has carried traffic yet: freed memory would be reused by the
    new connections), then each workload in turn, for every server that has it, in the
    :func:`interleaved` order of the repetition.
    """
    ordered = sorted(works, key=lambda w: w.key != "idle")  # stable: idle first
    cells = interleaved(cells, rep)
    return [(cell, work) for work in ordered for cell in cells if work in workloads_for(cell[0])]


@dataclass(frozen=True)
class Sample:
    value: float  # in the workload's unit
    cpu_us: float | None = None  # server CPU per message or handshake, µs


MEASURING = {"measuring": True}


def loadgen(
    binary: Path, args: list[str], timeout: float, pid: int | None = None
) -> tuple[dict[str, Any], float | None]:
    """Run the load generator; return its result line and the server's CPU over the window.

    The load generator prints ``{"measuring": true}`` when its measured window opens and its
    result line when it closes: with ``pid``, the server's CPU time is read at both (None if
    the window never opened).
    """
    argv = pinned(LOADGEN_CORE, [str(binary), *args])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    start: float | None = None
    used: float | None = None
    result: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data == MEASURING:
                start = cpu_seconds(pid) if pid is not None else None
                continue
            if pid is not None and start is not None and used is None:
                used = cpu_seconds(pid) - start
            result = data
        stderr = proc.stderr.read()
        returncode = proc.wait()
    except OSError as exc:  # the server is gone: no /proc/PID
        proc.kill()
        proc.wait()
        raise RuntimeError(f"loadgen {' '.join(args)}: {exc}") from exc
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    if returncode != 0 or result is None:
        why = "timed out" if returncode == -signal.SIGKILL else stderr.strip() or returncode
        raise RuntimeError(f"loadgen {' '.join(args)}: {why}")
    return result, used


def per_unit(used: float | None, count: float) -> float | None:
    """CPU seconds over ``count`` messages or handshakes, in µs each (None if unknown)."""
    if used is None or count <= 0:
        return None
    return used / count * 1e6


def run_workload(binary: Path, server: ServerProcess, work: Workload, settings: Settings) -> float:
    """The first metric only (throughput, or KiB/conn for idle memory): bench/asgi.py's use."""
    return measure_workload(binary, server, work, settings).value


def measure_workload(
    binary: Path, server: ServerProcess, work: Workload, settings: Settings
) -> Sample:
    """One measurement: the workload's metric and the server's CPU per message or handshake."""
    port = str(server.port)
    raw = server.name in RAW_SERVERS
    if work.key == "idle":
        args = ["idle", HOST, port, str(server.pid), str(settings.idle_base)]
        args.append(str(settings.idle_extra))
        if server.name == DEFLATE_VARIANT:
            args.append("deflate")
        elif raw:
            args.append("raw")
        data, _ = loadgen(binary, args, 120)
        return Sample(float(data["kib_per_conn"]))
    if work.key == "churn":
        args = ["churn", HOST, port, str(settings.churn_concurrency)]
        args += [str(settings.warmup), str(settings.duration)]
        data, used = loadgen(binary, args, settings.warmup + settings.duration + 60, server.pid)
        return Sample(float(data["handshakes_per_s"]), per_unit(used, data["handshakes"]))
    args = ["echo", HOST, port, str(work.conns), str(work.depth), str(work.size)]
    args += [str(settings.warmup), str(settings.duration)]
    if raw:
        args.append("raw")
    data, used = loadgen(binary, args, settings.warmup + settings.duration + 60, server.pid)
    value = float(data["mb_per_s"] if work.unit == "MB/s" else data["msg_per_s"])
    return Sample(value, per_unit(used, data["messages"]))


def workloads_for(name: str) -> list[Workload]:
    if name == DEFLATE_VARIANT:
        return [WORKLOAD_BY_KEY["idle"]]
    # The raw TCP ceilings have no handshake: no churn row.
    return [w for w in WORKLOADS if not (name in RAW_SERVERS and w.key == "churn")]


def grid(only: Sequence[str] | None, loops: Sequence[str]) -> list[Cell]:
    cells = [(name, loop) for loop in loops for name in LOOP_SERVERS]
    cells += [(name, "threads") for name in SYNC_SERVERS]
    cells.append((C_CEILING, NATIVE))
    cells.append((DEFLATE_VARIANT, "asyncio"))
    if only:
        cells = [c for c in cells if c[0] in only]
    return cells


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

Samples = dict[str, dict[str, dict[str, list[float]]]]  # loop -> server -> workload -> values
#: loop -> server -> one value per repetition: % of a core the server used while others ran.
Bystanders = dict[str, dict[str, list[float]]]

FORMAT = 2


@dataclass
class Results:
    """What ``latest.json`` holds: every sample, and how the run was made."""

    samples: Samples = field(default_factory=dict)  # throughput (or KiB/conn): the first metric
    cpu_us: Samples = field(default_factory=dict)  # server CPU per message or handshake, µs
    bystander_cpu: Bystanders = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)  # when, settings, machine, versions
    #: [loop, server, workload, repetition] of each measurement that failed: the samples of
    #: such a cell no longer line up with the repetitions, so they are not paired.
    failed: list[list[Any]] = field(default_factory=list)
    #: loop -> server -> workload -> when the run that measured the cell started: after a
    #: --merge, cells of different runs are not paired. Absent (first format): one run.
    origin: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def add(self, cell: Cell, work: Workload, sample: Sample) -> None:
        server, loop = cell
        self.samples.setdefault(loop, {}).setdefault(server, {}).setdefault(work.key, [])
        self.samples[loop][server][work.key].append(sample.value)
        if sample.cpu_us is not None:
            self.cpu_us.setdefault(loop, {}).setdefault(server, {}).setdefault(work.key, [])
            self.cpu_us[loop][server][work.key].append(sample.cpu_us)

    def to_json(self) -> str:
        data = {"format": FORMAT, **asdict(self)}
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        """Either format: 2 (this one) or the first (only the samples, loop -> server -> ...)."""
        if data.get("format") != FORMAT:
            return cls(samples=data)
        return cls(
            samples=data["samples"],
            cpu_us=data.get("cpu_us", {}),
            bystander_cpu=data.get("bystander_cpu", {}),
            run=data.get("run", {}),
            failed=data.get("failed", []),
            origin=data.get("origin", {}),
        )

    def stamp(self, started: str) -> None:
        """Say that every cell with samples was measured by the run that started then."""
        for loop, servers in self.samples.items():
            for server, works in servers.items():
                for key in works:
                    self.origin.setdefault(loop, {}).setdefault(server, {})[key] = started

    def pairable(self, loop: str, ours: str, theirs: str, key: str) -> bool:
        """Whether the i-th samples of two cells are from the same repetition of one run."""
        cells = [(NATIVE if s == C_CEILING else loop, s) for s in (ours, theirs)]
        if any(f[:3] == [lp, s, key] for f in self.failed for lp, s in cells):
            return False
        first, second = (self.origin.get(lp, {}).get(s, {}).get(key) for lp, s in cells)
        return first == second


def load_results(path: Path) -> Results:
    """The results of an earlier run (its latest.json), or empty ones if there is no such file."""
    if not path.exists():
        return Results()
    return Results.from_json(json.loads(path.read_text()))


T = TypeVar("T")


def merge_samples(
    old: dict[str, dict[str, dict[str, T]]], new: dict[str, dict[str, dict[str, T]]]
) -> dict[str, dict[str, dict[str, T]]]:
    """``old`` with every (loop, server, workload) that ``new`` measured replaced by ``new``'s.

    Samples are replaced, never pooled: the medians of one cell always come from one run.
    """
    merged: dict[str, dict[str, dict[str, T]]] = {
        loop: {server: dict(works) for server, works in servers.items()}
        for loop, servers in old.items()
    }
    for loop, servers in new.items():
        for server, works in servers.items():
            merged.setdefault(loop, {}).setdefault(server, {}).update(works)
    return merged


def merge_results(old: Results, new: Results) -> Results:
    """``new``'s cells replace ``old``'s (see :func:`merge_samples`); the run is ``new``'s."""
    cpu_old = merge_samples(old.cpu_us, {})
    # A re-measured cell takes its CPU samples from the new run only, even if it has none.
    for loop, servers in new.samples.items():
        for server, works in servers.items():
            for key in works:
                cpu_old.get(loop, {}).get(server, {}).pop(key, None)
    bystander: Bystanders = {loop: dict(per) for loop, per in old.bystander_cpu.items()}
    for loop, per in new.bystander_cpu.items():
        bystander.setdefault(loop, {}).update(per)
    remeasured = {
        (loop, server, key)
        for loop, servers in new.samples.items()
        for server, works in servers.items()
        for key in works
    }
    failed = [f for f in old.failed if tuple(f[:3]) not in remeasured] + new.failed
    return Results(
        samples=merge_samples(old.samples, new.samples),
        cpu_us=merge_samples(cpu_old, new.cpu_us),
        bystander_cpu=bystander,
        run=new.run,
        failed=failed,
        origin=merge_samples(old.origin, new.origin),
    )


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def values_of(samples: Samples, loop: str, server: str, key: str) -> list[float]:
    """The samples of a cell; the C echo's (loop NATIVE) stand in every loop's tables."""
    if server == C_CEILING:
        loop = NATIVE
    return samples.get(loop, {}).get(server, {}).get(key) or []


def median(samples: Samples, loop: str, server: str, key: str) -> float | None:
    values = values_of(samples, loop, server, key)
    return statistics.median(values) if values else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "KiB/conn":
        return f"{value:.1f}"
    if unit == "MB/s":
        return f"{value:,.0f}"
    if unit.startswith("µs"):
        return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    if value >= 10000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.0f}"


def fmt_spread(values: Sequence[float], unit: str) -> str:
    """``median [min-max]`` (just the value for one sample, ``-`` for none)."""
    if not values:
        return "-"
    middle = fmt(statistics.median(values), unit)
    if len(values) == 1:
        return middle
    return f"{middle} [{fmt(min(values), unit)}-{fmt(max(values), unit)}]"


def ratio(ours: float | None, theirs: float | None, work: Workload) -> float | None:
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if work.higher_is_better else theirs / ours


def cpu_ratio(ours: float | None, theirs: float | None) -> float | None:
    """Their CPU per message over ours: above 1.0 ours is cheaper."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return theirs / ours


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}"


def versions() -> str:
    names = ["picows", "aiohttp", "websockets", "wsproto", "tornado", "uvloop"]
    parts = [f"Python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (absent)")
    try:
        from shakehands.protocol.masking import USING_SPEEDUPS

        parts.append("shakehands C masking " + ("on" if USING_SPEEDUPS else "off"))
    except ImportError:
        pass
    return ", ".join(parts)


Target = tuple[str, str, str]  # (target, measured, met: "yes", "no" or "-")
SPEED_ROWS = [w for w in WORKLOADS if w.key != "idle"]


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _lowest(
    samples: Samples, loop: str, ours: str, theirs: str, rows: Sequence[Workload]
) -> tuple[float, str] | None:
    worst: tuple[float, str] | None = None
    for w in rows:
        r = ratio(median(samples, loop, ours, w.key), median(samples, loop, theirs, w.key), w)
        if r is not None and (worst is None or r < worst[0]):
            worst = (r, w.key)
    return worst


def targets_issue14(results: Results) -> list[Target]:
    """(target, measured, met) for each target of issue 14, from the medians."""
    samples, cpu = results.samples, results.cpu_us
    rows: list[Target] = []
    callback, coroutine = SHAKEHANDS
    for loop in LOOPS:
        below = []
        for w in SPEED_ROWS:
            r = ratio(
                median(samples, loop, callback, w.key), median(samples, loop, "picows", w.key), w
            )
            if r is not None and r < 1.2:
                below.append(f"{w.key} {r:.2f}x")
        worst = _lowest(samples, loop, callback, "picows", SPEED_ROWS)
        if worst:
            measured = f"lowest {worst[0]:.2f}x ({worst[1]})"
            if below:
                measured += "; below: " + ", ".join(below)
            rows.append(
                (f"callback >= 1.2x picows on every row ({loop})", measured, _yes(not below))
            )
    for loop in LOOPS:
        parts, met = [], True
        for key in ("100x1x256", "4x2x1m"):
            w = WORKLOAD_BY_KEY[key]
            r = ratio(median(samples, loop, callback, key), median(samples, loop, CEILING, key), w)
            if r is None:
                continue
            met = met and r >= 0.8
            c = cpu_ratio(median(cpu, loop, callback, key), median(cpu, loop, CEILING, key))
            parts.append(f"{key} {r * 100:.0f}%" + (f" (CPU/msg {c * 100:.0f}%)" if c else ""))
        if parts:
            rows.append(
                (
                    f"callback >= 80% of raw TCP, 100x1 and 1 MiB ({loop})",
                    ", ".join(parts),
                    _yes(met),
                )
            )
    churn = WORKLOAD_BY_KEY["churn"]
    for loop in LOOPS:
        r = ratio(
            median(samples, loop, callback, "churn"),
            median(samples, loop, "picows", "churn"),
            churn,
        )
        if r is not None:
            rows.append((f"handshakes/s >= 1.2x picows ({loop})", f"{r:.2f}x", _yes(r >= 1.2)))
    for loop in LOOPS:
        missed, lowest = [], None
        for w in WORKLOADS:
            ours = median(samples, loop, coroutine, w.key)
            r = ratio(ours, median(samples, loop, "websockets", w.key), w)
            if r is None:
                continue
            lowest = r if lowest is None else min(lowest, r)
            if r >= 2.0:
                continue
            # 2x websockets may be above the ceiling: then 80 % of raw TCP is the target.
            ceiling = median(samples, loop, CEILING, w.key)
            above = ratio(ceiling, median(samples, loop, "websockets", w.key), w)
            r_raw = ratio(ours, ceiling, w)
            if above is not None and above < 2.0 and r_raw is not None and r_raw >= 0.8:
                continue
            missed.append(f"{w.key} {r:.2f}x")
        if lowest is not None:
            measured = f"lowest {lowest:.2f}x" + (
                "; not met: " + ", ".join(missed) if missed else ""
            )
            rows.append(
                (
                    f"coroutine >= 2x websockets (or >= 80% of raw TCP) on every row ({loop})",
                    measured,
                    _yes(not missed),
                )
            )
    for loop in LOOPS:
        idle = median(samples, loop, callback, "idle")
        if idle is not None:
            rows.append(
                (f"idle callback connection <= 2 KiB ({loop})", f"{idle:.1f} KiB", _yes(idle <= 2))
            )
    rows.append(
        (
            "broadcast() to 10 000 connections >= 500k deliveries/s of server CPU",
            "not measured by python -m bench (python bench/broadcast.py)",
            "-",
        )
    )
    return rows


def targets(samples: Samples) -> list[Target]:
    """(target, measured, met?) for each target of issue 5."""
    rows: list[Target] = []
    for loop in LOOPS:
        worst = _lowest(samples, loop, "shakehands-callback", "picows", SPEED_ROWS)
        if worst:
            rows.append(
                (
                    f"callback >= 1.0x picows on every row ({loop})",
                    f"lowest {worst[0]:.2f}x ({worst[1]})",
                    _yes(worst[0] >= 1.0),
                )
            )
    for loop in LOOPS:
        worst = _lowest(samples, loop, "shakehands-coroutine", "websockets", WORKLOADS)
        if worst:
            rows.append(
                (
                    f"coroutine >= 2x websockets on every row ({loop})",
                    f"lowest {worst[0]:.2f}x ({worst[1]})",
                    _yes(worst[0] >= 2.0),
                )
            )
    if "shakehands-sync" in samples.get("threads", {}):
        worst = _lowest(samples, "threads", "shakehands-sync", "websockets-sync", WORKLOADS)
        if worst:
            rows.append(
                (
                    "blocking API >= websockets' sync API",
                    f"lowest {worst[0]:.2f}x ({worst[1]})",
                    _yes(worst[0] >= 1.0),
                )
            )
    else:
        rows.append(("blocking API >= websockets' sync API", "not measured in this run", "-"))
    big = WORKLOAD_BY_KEY["4x2x1m"]
    for loop in LOOPS:
        ceiling = median(samples, loop, CEILING, big.key)
        ours = median(samples, loop, "shakehands-callback", big.key)
        r = ratio(ours, ceiling, big)
        if r is not None:
            rows.append(
                (f"1 MiB messages >= 85% of raw TCP ({loop})", f"{r * 100:.0f}%", _yes(r >= 0.85))
            )
    idle = median(samples, "asyncio", "shakehands-callback", "idle")
    if idle is not None:
        rows.append(
            ("idle connection <= 4 KiB (compression off)", f"{idle:.1f} KiB", _yes(idle <= 4))
        )
    deflate = median(samples, "asyncio", DEFLATE_VARIANT, "idle")
    if deflate is not None:
        rows.append(
            ("idle connection, default config (deflate on): documented", f"{deflate:.1f} KiB", "-")
        )
    churn = WORKLOAD_BY_KEY["churn"]
    for loop in LOOPS:
        r = ratio(
            median(samples, loop, "shakehands-callback", "churn"),
            median(samples, loop, "picows", "churn"),
            churn,
        )
        if r is not None:
            rows.append((f"handshakes/s >= 1.5x picows ({loop})", f"{r:.2f}x", _yes(r >= 1.5)))
    return rows


def table_loops(samples: Samples) -> list[str]:
    """The loops that get tables: the C echo stands beside the servers of each."""
    loops = [loop for loop in [*LOOPS, "threads"] if samples.get(loop)]
    return loops or ([NATIVE] if samples.get(NATIVE) else [])


def columns(samples: Samples, loop: str) -> list[str]:
    present = set(samples.get(loop, {})) - {DEFLATE_VARIANT}
    if samples.get(NATIVE, {}).get(C_CEILING):
        present.add(C_CEILING)
    return [s for s in ALL_SERVERS if s in present]


def loop_title(loop: str) -> str:
    if loop == "threads":
        return "threads (blocking APIs)"
    return "C epoll" if loop == NATIVE else f"{loop} loop"


def header(results: Results, merged: list[str] | None) -> list[str]:
    run = results.run
    lines = ["# shakehands benchmark results", ""]
    if run:
        lines += [
            f"Run {run['started']} UTC with `{run['command']}`: {run['reps']} repetition(s), "
            f"{run['warmup']} s warm-up + {run['duration']} s measured per workload. "
            f"{run.get('method', '')}",
            f"Machine: {run['machine']}. Servers pinned to core {SERVER_CORE}, load generator "
            f"(C, epoll) to core {LOADGEN_CORE}.",
            f"Versions: {run['versions']}.",
            "",
        ]
    else:
        lines += [
            "Samples of an earlier run whose latest.json did not record how it was made (see "
            "the git history of bench/results/): each server was started in turn, not all at "
            "once, and no server CPU was measured.",
            "",
        ]
    if merged is not None:
        lines += [
            f"Merged run (`--merge`): this run measured only {'; '.join(merged)}. Every other "
            "number is from the samples the previous latest.json held (its run is in the git "
            "history of bench/results/).",
            "",
        ]
    idle_base = run.get("idle_base", 100)
    idle_top = idle_base + run.get("idle_extra", 1000)
    lines += [
        "Every server echoes binary messages with no compression, no size limit, no keepalive. "
        "msg/s counts echoed messages, MB/s echoed payload bytes (10^6) per second, KiB/conn the "
        f"server's RSS growth per idle connection (slope between {idle_base} and {idle_top} "
        "connections), hs/s complete connect-handshake-close cycles per second "
        f"({run.get('churn_concurrency', 16)} at a time). Each cell: median [min-max] of the "
        "repetitions. `raw-tcp` echoes raw TCP (no WebSocket): the ceiling of a Python server "
        "on that loop."
        + (
            " `c-echo` does it in C on epoll: the ceiling of any server on this machine."
            if results.samples.get(NATIVE, {}).get(C_CEILING)
            else ""
        ),
        "",
    ]
    return lines


def metric_tables(samples: Samples, cpu: Samples) -> list[str]:
    lines: list[str] = []
    for loop in table_loops(samples):
        order = columns(samples, loop)
        lines += [f"## Throughput, {loop_title(loop)}", ""]
        lines.append("| workload | unit | " + " | ".join(order) + " |")
        lines.append("|---|---|" + "---|" * len(order))
        for w in WORKLOADS:
            cells = [fmt_spread(values_of(samples, loop, s, w.key), w.unit) for s in order]
            if any(c != "-" for c in cells):
                lines.append(f"| {w.label} | {w.unit} | " + " | ".join(cells) + " |")
        lines.append("")
        order = [s for s in columns(cpu, loop) if s in order]
        if not order:
            continue
        lines += [
            f"## Server CPU per message, {loop_title(loop)}",
            "",
            "User + system CPU time of the server process over the measured window, over the "
            "messages echoed (or handshakes completed); lower is better.",
            "",
            "| workload | unit | " + " | ".join(order) + " |",
            "|---|---|" + "---|" * len(order),
        ]
        for w in WORKLOADS:
            if w.cpu_unit is None:
                continue
            cells = [fmt_spread(values_of(cpu, loop, s, w.key), w.cpu_unit) for s in order]
            if any(c != "-" for c in cells):
                lines.append(f"| {w.label} | {w.cpu_unit} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def ratio_cell(
    results: Results,
    metric: Samples,
    loop: str,
    ours: str,
    theirs: str,
    work: Workload,
    compare: Callable[[float | None, float | None], float | None],
) -> str:
    """The ratio of the medians; then, if the samples pair up by repetition, the range of the
    ratio within each repetition (the two servers were measured close together in time, so
    most of the machine's noise cancels out of it)."""
    a, b = values_of(metric, loop, ours, work.key), values_of(metric, loop, theirs, work.key)
    r = compare(statistics.median(a) if a else None, statistics.median(b) if b else None)
    text = fmt_ratio(r)
    pairable = results.pairable(loop, ours, theirs, work.key)
    if r is None or not pairable or len(a) != len(b) or len(a) < 2:
        return text
    per_rep = [x for x in map(compare, a, b) if x is not None]
    return f"{text} [{min(per_rep):.2f}-{max(per_rep):.2f}]" if per_rep else text


def ratio_tables(results: Results) -> list[str]:
    samples, cpu = results.samples, results.cpu_us
    lines: list[str] = []
    for api in [*SHAKEHANDS, "shakehands-sync"]:
        for loop in [*LOOPS, "threads"]:
            if api not in samples.get(loop, {}):
                continue
            peers = [p for p in columns(samples, loop) if not p.startswith("shakehands")]
            lines += [
                f"## Ratios: {api} / peer, {loop}",
                "",
                "Ratio of the medians [lowest-highest ratio within one repetition]. Above 1.00x "
                "shakehands is better (for memory: the peer uses that many times more; for CPU: "
                "the peer spends that many times more per message).",
                "",
                "| workload | " + " | ".join(peers) + " |",
                "|---|" + "---|" * len(peers),
            ]
            for w in WORKLOADS:

                def speed(x: float | None, y: float | None, w: Workload = w) -> float | None:
                    return ratio(x, y, w)

                cells = [ratio_cell(results, samples, loop, api, p, w, speed) for p in peers]
                if any(c != "-" for c in cells):
                    lines.append(f"| {w.label} | " + " | ".join(cells) + " |")
            for w in WORKLOADS:
                if w.cpu_unit is None or median(cpu, loop, api, w.key) is None:
                    continue
                cells = [ratio_cell(results, cpu, loop, api, p, w, cpu_ratio) for p in peers]
                if any(c != "-" for c in cells):
                    lines.append(f"| CPU: {w.label} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def bystander_lines(bystander: Bystanders) -> list[str]:
    """What the servers not being measured cost: each should use no CPU at all."""
    worst = [
        (max(values), server, loop)
        for loop, servers in bystander.items()
        for server, values in servers.items()
        if values
    ]
    if not worst:
        return []
    top, server, loop = max(worst)
    if top >= 0.005:
        highest = f"at most {top:.2f} % of a core ({server}, {loop})"
    else:
        highest = "0.00 % of a core, every one of them"
    lines = [
        "## Servers not being measured",
        "",
        "Every server of a repetition runs at once; while one is measured, the others wait "
        f"without traffic. Their CPU over that time: {highest}.",
    ]
    busy = sorted((w for w in worst if w[0] >= 1.0), reverse=True)
    if busy:
        lines.append(
            "At or above 1 %: " + ", ".join(f"{s} ({lp}) {v:.1f} %" for v, s, lp in busy) + "."
        )
    return [*lines, ""]


def write_markdown(results: Results, path: Path, merged: list[str] | None = None) -> None:
    """The report: median [min-max] per cell and loop, both metrics, ratios, the targets.

    ``merged``: what this run measured ("server (loop: workloads)") when it was merged
    (``--merge``) into the samples of an earlier one; the report says which numbers are new.
    """
    samples, cpu = results.samples, results.cpu_us
    lines = header(results, merged)
    lines += metric_tables(samples, cpu)
    lines += ratio_tables(results)
    lines += bystander_lines(results.bystander_cpu)
    if results.failed:
        lines += [
            "## Failed measurements",
            "",
            ", ".join(
                f"{server} ({loop}) {key} in repetition {rep + 1}"
                for loop, server, key, rep in results.failed
            )
            + ".",
            "",
        ]
    lines += [
        "## Targets (issue 14)",
        "",
        "From the medians above; throughput decides, the CPU ratio is shown where it helps.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in targets_issue14(results)]
    lines += ["", "## Targets (issue 5)", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in targets(samples)]
    lines += ["", "![chart](latest.png)", ""]
    path.write_text("\n".join(lines))


def write_chart(samples: Samples, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is absent: no chart (pip install -e '.[bench]')")
        return False
    loops = [loop for loop in LOOPS if loop in samples]
    threads = samples.get("threads", {})
    blocking = "shakehands-sync" in threads and "websockets-sync" in threads
    panels = len(loops) + blocking
    if not panels:
        return False
    fig, axes = plt.subplots(panels, 1, figsize=(13, 4.2 * panels), squeeze=False)
    servers = [*SHAKEHANDS, *PEERS, CEILING, C_CEILING]
    colors = [
        "#d62728",
        "#ff7f0e",
        "#1f77b4",
        "#2ca02c",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#17becf",
    ]
    for ax, loop in zip(axes[: len(loops), 0], loops, strict=True):
        width = 0.8 / len(servers)
        for i, server in enumerate(servers):
            xs, ys = [], []
            for j, w in enumerate(WORKLOADS):
                if server == C_CEILING and w.key == "idle":
                    continue  # a C struct per connection: no comparison with an interpreter
                base = median(samples, loop, "picows", w.key)
                value = median(samples, loop, server, w.key)
                r = ratio(value, base, w) if server != "picows" else (1.0 if base else None)
                if r is not None:
                    xs.append(j + (i - len(servers) / 2 + 0.5) * width)
                    ys.append(r)
            if xs:  # no legend entry for a server this run did not measure
                ax.bar(xs, ys, width, label=server, color=colors[i % len(colors)])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(WORKLOADS)))
        ax.set_xticklabels([w.label.replace(", ", ",\n", 1) for w in WORKLOADS], fontsize=8)
        ax.set_ylabel("relative to picows (higher is better)")
        ax.set_title(f"Echo servers, {loop} loop, medians (memory row: picows' KiB / server's KiB)")
        ax.legend(fontsize=8, ncol=5)
    if blocking:
        # The blocking APIs against each other: shakehands-sync / websockets-sync.
        ax = axes[-1, 0]
        xs, ys = [], []
        for j, w in enumerate(WORKLOADS):
            r = ratio(
                median(samples, "threads", "shakehands-sync", w.key),
                median(samples, "threads", "websockets-sync", w.key),
                w,
            )
            if r is not None:
                xs.append(j)
                ys.append(r)
        ax.bar(xs, ys, 0.5, color=colors[0], label="shakehands-sync / websockets-sync")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(WORKLOADS)))
        ax.set_xticklabels([w.label.replace(", ", ",\n", 1) for w in WORKLOADS], fontsize=8)
        ax.set_ylabel("relative to websockets-sync")
        ax.set_title("Blocking APIs, a thread per connection (memory row: inverse ratio of KiB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

METHOD = (
    "All servers of a repetition were started at once (each pinned), then measured in turn, "
    "workload by workload, in the order A B C ... on even repetitions and ... C B A on odd "
    "ones; idle memory first, on servers that had carried no traffic; before each measurement "
    "the harness waited until no server used CPU."
)


def measure(
    binary: Path,
    cells: Sequence[Cell],
    works: Sequence[Workload],
    settings: Settings,
    log: Callable[[str], None] = print,
) -> Results:
    """Run the repetitions: start every server at once, measure them in turn, stop them."""
    results = Results()
    t0 = time.monotonic()
    for rep in range(settings.reps):
        servers = start_servers(cells, log)
        by_cell = {server.cell: server for server in servers}
        missing = [cell for cell in cells if cell not in by_cell]
        results.failed += [
            [loop, name, w.key, rep] for (name, loop), w in plan(missing, works, rep)
        ]
        # CPU of each server while another one is measured, and the time that lasted.
        idle_cpu: dict[Cell, float] = dict.fromkeys(by_cell, 0.0)
        idle_wall: dict[Cell, float] = dict.fromkeys(by_cell, 0.0)
        try:
            for cell, work in plan(list(by_cell), works, rep):
                name, loop = cell
                server = by_cell[cell]
                if server.proc.poll() is not None:
                    log(f"  {name} ({loop}) {work.key}: the server has exited")
                    results.failed.append([loop, name, work.key, rep])
                    continue
                if not settle(servers):
                    log(f"  servers still busy after 5 s (before {name} {loop} {work.key})")
                others = [s for s in servers if s is not server]
                cpu_before, wall_before = cpu_of(others), time.monotonic()
                try:
                    sample = measure_workload(binary, server, work, settings)
                except (RuntimeError, KeyError, ValueError) as exc:
                    log(f"  {name} ({loop}) {work.key}: failed: {exc}")
                    results.failed.append([loop, name, work.key, rep])
                    continue
                finally:
                    wall = time.monotonic() - wall_before
                    for other, used in cpu_of(others).items():
                        if other in cpu_before:
                            idle_cpu[other] += used - cpu_before[other]
                            idle_wall[other] += wall
                results.add(cell, work, sample)
                cpu = f"  {fmt(sample.cpu_us, 'µs')} {work.cpu_unit}" if sample.cpu_us else ""
                log(
                    f"[{rep + 1}/{settings.reps} {time.monotonic() - t0:5.0f}s] "
                    f"{name:28} {loop:8} {work.key:10} {fmt(sample.value, work.unit):>9} "
                    f"{work.unit}{cpu}"
                )
        finally:
            for server in servers:
                server.stop()
        for (name, loop), wall in idle_wall.items():
            if wall > 0:
                percent = idle_cpu[(name, loop)] / wall * 100
                results.bystander_cpu.setdefault(loop, {}).setdefault(name, []).append(percent)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, quick 1)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SERVER",
        choices=ALL_SERVERS,
        help="run only these servers: " + ", ".join(ALL_SERVERS),
    )
    parser.add_argument("--loop", choices=LOOPS, action="append", help="only this loop")
    parser.add_argument("--workload", nargs="+", choices=list(WORKLOAD_BY_KEY), help="only these")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="where to write latest.md/json/png"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the samples already in OUTPUT/latest.json for every server, loop and "
        "workload this run does not measure (e.g. with --only: rerun some servers only)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite OUTPUT/latest.md and latest.png from OUTPUT/latest.json",
    )
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    out: Path = args.output
    if args.render:
        results = load_results(out / "latest.json")
        if not results.samples:
            sys.exit(f"no samples in {out / 'latest.json'}")
        write_markdown(results, out / "latest.md", results.run.get("merged"))
        write_chart(results.samples, out / "latest.png")
        print(f"wrote {out / 'latest.md'}")
        return
    settings = QUICK if args.quick else FULL
    if args.reps:
        settings = Settings(**{**settings.__dict__, "reps": args.reps})
    raise_open_files_limit()
    binary = build_loadgen()
    build_c("c_echo")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    cells = grid(args.only, args.loop or LOOPS)
    works = [w for w in WORKLOADS if not args.workload or w.key in args.workload]
    results = measure(binary, cells, works, settings, lambda line: print(line, flush=True))
    results.stamp(started)
    results.run = {
        "started": started,
        "command": "python -m bench" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        **asdict(settings),
        "method": METHOD,
        "machine": machine_description(),
        "versions": versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    merged = None
    if args.merge:
        merged = sorted(
            f"{server} ({loop}: {', '.join(sorted(keys))})"
            for loop, per_server in results.samples.items()
            for server, keys in per_server.items()
        )
        results = merge_results(load_results(out / "latest.json"), results)
        results.run["merged"] = merged
    (out / "latest.json").write_text(results.to_json())
    write_markdown(results, out / "latest.md", merged)
    write_chart(results.samples, out / "latest.png")
    print(f"wrote {out / 'latest.md'}")
    for target, measured, met in [*targets_issue14(results), *targets(results.samples)]:
        print(f"  {target}: {measured} [{met}]")


if __name__ == "__main__":
    main()
