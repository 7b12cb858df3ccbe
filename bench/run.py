"""The benchmark harness: every server, every workload, one command.

    python -m bench            # the full grid: 3 repetitions, medians (about 20 minutes)
    python -m bench --quick    # one short repetition (about 2-3 minutes)

It builds the C load generator (bench/loadgen.c) with the system compiler into bench/build/,
then for each repetition starts every echo server of :mod:`bench.servers` in turn (pinned to
core 0 with ``taskset``; the load generator runs on core 1), runs the workloads against it, and
stops it. Results: ``bench/results/latest.md`` (medians, ratios to each peer, the targets of
issue 5), ``latest.json`` (every sample) and ``latest.png`` (a chart).

Needs Linux, a C compiler and ``pip install -e '.[bench]'`` (the peers, uvloop, matplotlib).
Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
RESULTS = BENCH / "results"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    unit: str  # what the median is in
    higher_is_better: bool = True
    conns: int = 0
    depth: int = 0
    size: int = 0


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
CEILING = "raw-tcp"
LOOP_SERVERS = SHAKEHANDS + PEERS + [CEILING]
LOOPS = ["asyncio", "uvloop"]
# Servers on threads (blocking APIs): no event loop.
SYNC_SERVERS = ["shakehands-sync", "websockets-sync"]
# The default configuration (compression on): idle memory only.
DEFLATE_VARIANT = "shakehands-callback-deflate"


@dataclass
class Settings:
    reps: int
    warmup: float
    duration: float
    idle_base: int
    idle_extra: int
    churn_concurrency: int


FULL = Settings(
    reps=3, warmup=0.5, duration=1.5, idle_base=100, idle_extra=1000, churn_concurrency=16
)
QUICK = Settings(
    reps=1, warmup=0.3, duration=0.7, idle_base=50, idle_extra=300, churn_concurrency=16
)


# --------------------------------------------------------------------------------------------
# Running things
# --------------------------------------------------------------------------------------------


def build_loadgen() -> Path:
    """Compile bench/loadgen.c with the system C compiler (cached until the source changes)."""
    source = BENCH / "loadgen.c"
    binary = BUILD / "loadgen"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    BUILD.mkdir(exist_ok=True)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("a C compiler (cc) is needed to build bench/loadgen.c")
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def pinned(core: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *argv]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
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
    def __init__(self, name: str, loop: str) -> None:
        self.name = name
        self.port = free_port()
        argv = [sys.executable, "-m", "bench.servers", name, "--port", str(self.port)]
        if loop != "threads":
            argv += ["--loop", loop]
        # The shakehands of this source tree (src/), not whatever else is installed.
        root = BENCH.parent
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]))
        self.proc = subprocess.Popen(
            pinned(0, argv),
            cwd=BENCH.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc)
        time.sleep(0.2)  # let the probe connection be cleaned up

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def loadgen(binary: Path, args: list[str], timeout: float) -> dict[str, Any]:
    argv = pinned(1, [str(binary), *args])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"loadgen {' '.join(args)}: {result.stderr.strip() or result.stdout}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def run_workload(binary: Path, server: ServerProcess, work: Workload, settings: Settings) -> float:
    port = str(server.port)
    raw = server.name == CEILING
    if work.key == "idle":
        args = ["idle", HOST, port, str(server.proc.pid), str(settings.idle_base)]
        args.append(str(settings.idle_extra))
        if server.name == DEFLATE_VARIANT:
            args.append("deflate")
        elif raw:
            args.append("raw")
        return float(loadgen(binary, args, 120)["kib_per_conn"])
    if work.key == "churn":
        args = ["churn", HOST, port, str(settings.churn_concurrency)]
        args += [str(settings.warmup), str(settings.duration)]
        return float(loadgen(binary, args, 60)["handshakes_per_s"])
    args = ["echo", HOST, port, str(work.conns), str(work.depth), str(work.size)]
    args += [str(settings.warmup), str(settings.duration)]
    if raw:
        args.append("raw")
    data = loadgen(binary, args, settings.warmup + settings.duration + 60)
    return float(data["mb_per_s"] if work.unit == "MB/s" else data["msg_per_s"])


def workloads_for(name: str) -> list[Workload]:
    if name == DEFLATE_VARIANT:
        return [WORKLOAD_BY_KEY["idle"]]
    # The raw TCP ceiling has no handshake: no churn row.
    return [w for w in WORKLOADS if not (name == CEILING and w.key == "churn")]


def grid(only: list[str] | None, loops: list[str]) -> list[tuple[str, str]]:
    cells = [(name, loop) for loop in loops for name in LOOP_SERVERS]
    cells += [(name, "threads") for name in SYNC_SERVERS]
    cells.append((DEFLATE_VARIANT, "asyncio"))
    if only:
        cells = [c for c in cells if c[0] in only]
    return cells


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

Samples = dict[str, dict[str, dict[str, list[float]]]]  # loop -> server -> workload -> values


def median(samples: Samples, loop: str, server: str, key: str) -> float | None:
    values = samples.get(loop, {}).get(server, {}).get(key)
    return statistics.median(values) if values else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "KiB/conn":
        return f"{value:.1f}"
    if unit == "MB/s":
        return f"{value:,.0f}"
    if value >= 10000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.0f}"


def ratio(ours: float | None, theirs: float | None, work: Workload) -> float | None:
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if work.higher_is_better else theirs / ours


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


def targets(samples: Samples) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each target of issue 5."""
    rows: list[tuple[str, str, str]] = []
    speed = [w for w in WORKLOADS if w.key != "idle"]
    for loop in LOOPS:
        worst = None
        for w in speed:
            r = ratio(
                median(samples, loop, "shakehands-callback", w.key),
                median(samples, loop, "picows", w.key),
                w,
            )
            if r is not None and (worst is None or r < worst[0]):
                worst = (r, w.key)
        if worst:
            rows.append(
                (
                    f"callback >= 1.0x picows on every row ({loop})",
                    f"lowest {worst[0]:.2f}x ({worst[1]})",
                    "yes" if worst[0] >= 1.0 else "no",
                )
            )
    for loop in LOOPS:
        worst = None
        for w in WORKLOADS:
            r = ratio(
                median(samples, loop, "shakehands-coroutine", w.key),
                median(samples, loop, "websockets", w.key),
                w,
            )
            if r is not None and (worst is None or r < worst[0]):
                worst = (r, w.key)
        if worst:
            rows.append(
                (
                    f"coroutine >= 2x websockets on every row ({loop})",
                    f"lowest {worst[0]:.2f}x ({worst[1]})",
                    "yes" if worst[0] >= 2.0 else "no",
                )
            )
    if "shakehands-sync" in samples.get("threads", {}):
        worst = None
        for w in WORKLOADS:
            r = ratio(
                median(samples, "threads", "shakehands-sync", w.key),
                median(samples, "threads", "websockets-sync", w.key),
                w,
            )
            if r is not None and (worst is None or r < worst[0]):
                worst = (r, w.key)
        if worst:
            rows.append(
                (
                    "blocking API >= websockets' sync API",
                    f"lowest {worst[0]:.2f}x ({worst[1]})",
                    "yes" if worst[0] >= 1.0 else "no",
                )
            )
    else:
        rows.append(
            ("blocking API >= websockets' sync API", "not measured (no shakehands.sync)", "-")
        )
    big = WORKLOAD_BY_KEY["4x2x1m"]
    for loop in LOOPS:
        ceiling = median(samples, loop, CEILING, big.key)
        ours = median(samples, loop, "shakehands-callback", big.key)
        r = ratio(ours, ceiling, big)
        if r is not None:
            rows.append(
                (
                    f"1 MiB messages >= 85% of raw TCP ({loop})",
                    f"{r * 100:.0f}%",
                    "yes" if r >= 0.85 else "no",
                )
            )
    idle = median(samples, "asyncio", "shakehands-callback", "idle")
    if idle is not None:
        rows.append(
            (
                "idle connection <= 4 KiB (compression off)",
                f"{idle:.1f} KiB",
                "yes" if idle <= 4 else "no",
            )
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
            rows.append(
                (f"handshakes/s >= 1.5x picows ({loop})", f"{r:.2f}x", "yes" if r >= 1.5 else "no")
            )
    return rows


def write_markdown(
    samples: Samples,
    settings: Settings,
    quick: bool,
    started: str,
    path: Path,
    merged: list[str] | None = None,
) -> None:
    """The report: medians per loop, ratios to each peer, the targets of issue 5.

    ``merged``: what this run measured ("server (loop: workloads)") when it was merged
    (``--merge``) into the samples of an earlier one; the report says which numbers are new.
    """
    lines = [
        "# shakehands benchmark results",
        "",
        f"Run {started} UTC with `python -m bench{' --quick' if quick else ''}`: "
        f"{settings.reps} repetition(s), {settings.warmup} s warm-up + {settings.duration} s "
        "measured per workload; medians.",
        f"Machine: {machine_description()}. Server pinned to core 0, load generator (C, epoll) "
        "to core 1.",
        f"Versions: {versions()}.",
        "",
    ]
    if merged is not None:
        lines += [
            f"Merged run (`--merge`): this run measured only {'; '.join(merged)}. Every other "
            "number is from the samples the previous latest.json held (its run is in the git "
            "history of bench/results/).",
            "",
        ]
    lines += [
        "Every server echoes binary messages with no compression, no size limit, no keepalive. "
        "msg/s counts echoed messages, MB/s echoed payload bytes (10^6) per second, KiB/conn the "
        "server's RSS growth per idle connection (slope between "
        f"{settings.idle_base} and {settings.idle_base + settings.idle_extra} connections), "
        "hs/s complete connect-handshake-close cycles per second (16 at a time).",
        "",
    ]
    for loop in [*LOOPS, "threads"]:
        servers = [s for s in samples.get(loop, {}) if s != DEFLATE_VARIANT]
        if not servers:
            continue
        order = [s for s in [*LOOP_SERVERS, *SYNC_SERVERS] if s in servers]
        lines += [
            f"## Medians, {loop}" + (" (blocking APIs)" if loop == "threads" else " loop"),
            "",
        ]
        lines.append("| workload | unit | " + " | ".join(order) + " |")
        lines.append("|---|---|" + "---|" * len(order))
        for w in WORKLOADS:
            cells = [fmt(median(samples, loop, s, w.key), w.unit) for s in order]
            lines.append(f"| {w.label} | {w.unit} | " + " | ".join(cells) + " |")
        lines.append("")
    for api in [*SHAKEHANDS, "shakehands-sync"]:
        for loop in [*LOOPS, "threads"]:
            if api not in samples.get(loop, {}):
                continue
            peers = [
                p
                for p in [*PEERS, CEILING, *SYNC_SERVERS]
                if p in samples.get(loop, {}) and not p.startswith("shakehands")
            ]
            lines += [
                f"## Ratios: {api} / peer, {loop}",
                "",
                "Above 1.00x shakehands is better "
                "(for memory: the peer uses that many times more).",
                "",
                "| workload | " + " | ".join(peers) + " |",
                "|---|" + "---|" * len(peers),
            ]
            for w in WORKLOADS:
                ours = median(samples, loop, api, w.key)
                cells = [fmt_ratio(ratio(ours, median(samples, loop, p, w.key), w)) for p in peers]
                lines.append(f"| {w.label} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Targets (issue 5)", "", "| target | measured | met |", "|---|---|---|"]
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
    fig, axes = plt.subplots(panels, 1, figsize=(13, 4.2 * panels), squeeze=False)
    servers = [*SHAKEHANDS, *PEERS, CEILING]
    colors = [
        "#d62728",
        "#ff7f0e",
        "#1f77b4",
        "#2ca02c",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
    ]
    for ax, loop in zip(axes[: len(loops), 0], loops, strict=True):
        width = 0.8 / len(servers)
        for i, server in enumerate(servers):
            xs, ys = [], []
            for j, w in enumerate(WORKLOADS):
                base = median(samples, loop, "picows", w.key)
                value = median(samples, loop, server, w.key)
                r = ratio(value, base, w) if server != "picows" else (1.0 if base else None)
                if r is not None:
                    xs.append(j + (i - len(servers) / 2 + 0.5) * width)
                    ys.append(r)
            ax.bar(xs, ys, width, label=server, color=colors[i % len(colors)])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(WORKLOADS)))
        ax.set_xticklabels([w.label.replace(", ", ",\n", 1) for w in WORKLOADS], fontsize=8)
        ax.set_ylabel("relative to picows (higher is better)")
        ax.set_title(f"Echo servers, {loop} loop (memory row: picows' KiB / server's KiB)")
        ax.legend(fontsize=8, ncol=4)
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


def load_samples(path: Path) -> Samples:
    """The samples of an earlier run (its latest.json), or none if there is no such file."""
    if not path.exists():
        return {}
    data: Samples = json.loads(path.read_text())
    return data


def merge_samples(old: Samples, new: Samples) -> Samples:
    """``old`` with every (loop, server, workload) that ``new`` measured replaced by ``new``'s.

    Samples are replaced, never pooled: the medians of one cell always come from one run.
    """
    merged: Samples = {
        loop: {server: dict(works) for server, works in servers.items()}
        for loop, servers in old.items()
    }
    for loop, servers in new.items():
        for server, works in servers.items():
            merged.setdefault(loop, {}).setdefault(server, {}).update(works)
    return merged


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--only", nargs="+", metavar="SERVER", help="run only these servers")
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
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.reps:
        settings = Settings(**{**settings.__dict__, "reps": args.reps})
    binary = build_loadgen()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    cells = grid(args.only, args.loop or LOOPS)
    samples: Samples = {}
    t0 = time.monotonic()
    for rep in range(settings.reps):
        for name, loop in cells:
            works = [w for w in workloads_for(name) if not args.workload or w.key in args.workload]
            # Idle memory on a fresh server of its own: after traffic, freed memory would be
            # reused by the new connections, and tearing 1000 connections down would slow the
            # workload that follows.
            phases = [[w for w in works if w.key == "idle"], [w for w in works if w.key != "idle"]]
            for phase in phases:
                if not phase:
                    continue
                try:
                    server = ServerProcess(name, loop)
                except (RuntimeError, OSError) as exc:
                    print(f"[{rep + 1}/{settings.reps}] {name} ({loop}): cannot start: {exc}")
                    continue
                try:
                    for work in phase:
                        try:
                            value = run_workload(binary, server, work, settings)
                        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as e:
                            print(f"  {name} ({loop}) {work.key}: failed: {e}")
                            continue
                        samples.setdefault(loop, {}).setdefault(name, {}).setdefault(
                            work.key, []
                        ).append(value)
                        print(
                            f"[{rep + 1}/{settings.reps} {time.monotonic() - t0:5.0f}s] "
                            f"{name:28} {loop:8} {work.key:10} {fmt(value, work.unit):>9} "
                            f"{work.unit}",
                            flush=True,
                        )
                finally:
                    server.stop()
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    merged = None
    if args.merge:
        merged = sorted(
            f"{server} ({loop}: {', '.join(sorted(works))})"
            for loop, servers in samples.items()
            for server, works in servers.items()
        )
        samples = merge_samples(load_samples(out / "latest.json"), samples)
    (out / "latest.json").write_text(json.dumps(samples, indent=1, sort_keys=True) + "\n")
    write_markdown(samples, settings, args.quick, started, out / "latest.md", merged)
    write_chart(samples, out / "latest.png")
    print(f"wrote {out / 'latest.md'}")
    for target, measured, met in targets(samples):
        print(f"  {target}: {measured} [{met}]")


if __name__ == "__main__":
    main()
