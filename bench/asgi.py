"""The ASGI benchmark of issue 13: one Starlette echo endpoint under uvicorn, with uvicorn's
WebSocket implementation set to shakehands (``shakehands.asgi:UvicornWebSocket``),
``websockets-sansio`` and ``wsproto``, on asyncio and uvloop.

    python -m bench.asgi            # 3 repetitions, medians (about 10 minutes)
    python -m bench.asgi --quick    # one short repetition
    python -m bench.asgi --cpu      # server CPU time per message / handshake (a busy machine)

Same harness as ``python -m bench`` (bench/run.py: the C load generator on core 1, the server on
core 0, the same workloads and fair settings: no compression, no size limit, no keepalive).
What differs from the main benchmark is the server: uvicorn, Starlette and the application's
``receive``/``send`` are on every message's path, so the numbers say what a FastAPI or Starlette
user gets, and the ratios what the WebSocket implementation changes under that. Results:
``bench/results/asgi.md``, ``asgi.json`` (every sample) and ``asgi.png`` (a chart; ``--redraw``
rewrites the report and chart from ``asgi.json`` without measuring).

``--cpu`` measures what a shared machine cannot blur much: the CPU time (user + system, from
``/proc/PID/stat``) the uvicorn server process spends per echoed message, or per handshake
(connect, handshake, close), for shakehands and websockets-sansio. Both servers run at once,
pinned to core 0, and the load generator (core 1) drives them in turn, alternating the order
in each repetition; each run starts without a warm-up (the loop count includes every message
the server saw), after one unmeasured run per server. Prints a markdown table of medians and the
ratio websockets-sansio / shakehands (the issue's target is 1.5x), with the floor: the same
measure for the raw TCP echo of ``bench/servers.py`` (a Python ``asyncio.Protocol`` that writes
back what it reads: no WebSocket, no uvicorn, no Starlette) on the same loop.
``bench/asgi_profile.py`` breaks the same runs down by package.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.run import (
    CEILING,
    FULL,
    HOST,
    LOOPS,
    QUICK,
    RESULTS,
    WORKLOADS,
    Samples,
    ServerProcess,
    Settings,
    build_loadgen,
    fmt,
    fmt_ratio,
    loadgen,
    machine_description,
    median,
    ratio,
    run_workload,
    versions,
)

OURS = "uvicorn-shakehands"
REFERENCE = "uvicorn-websockets-sansio"
SERVERS = [OURS, REFERENCE, "uvicorn-wsproto"]
MESSAGE_ROWS = ["1x1x256", "1x64x256", "100x1x256", "100x16x256", "1x1x64k", "4x2x1m"]


#: The rows of ``--cpu``: every message row and the handshakes.
CPU_ROWS = [*MESSAGE_ROWS, "churn"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_run(
    binary: Path, port: int, pid: int, key: str, duration: float, raw: bool = False
) -> float:
    """One run of workload ``key`` against the server of process ``pid`` listening on
    ``port``, without warm-up: the server's CPU microseconds per message (per handshake for
    ``churn``). ``raw``: plain TCP messages, for the raw TCP echo."""
    if key == "churn":
        args = ["churn", HOST, str(port), str(FULL.churn_concurrency), "0", str(duration)]
    else:
        work = next(w for w in WORKLOADS if w.key == key)
        args = ["echo", HOST, str(port), str(work.conns), str(work.depth), str(work.size)]
        args += ["0", str(duration)]
        if raw:
            args.append("raw")
    before = cpu_seconds(pid)
    data, _ = loadgen(binary, args, duration + 60)
    used = cpu_seconds(pid) - before
    count = data["handshakes"] if key == "churn" else data["messages"]
    if not count:
        raise RuntimeError(f"{key}: nothing done")
    return float(used / count * 1e6)


def cpu_main(rows: list[str], loops: list[str], reps: int, duration: float) -> None:
    """``--cpu``: server CPU per message / handshake, shakehands against websockets-sansio."""
    binary = build_loadgen()
    # The raw TCP echo of bench/servers.py (no WebSocket, no uvicorn): the floor of a Python
    # server on this loop, kernel and event loop included. No handshakes: no churn row.
    names = [OURS, REFERENCE, CEILING]
    results: dict[tuple[str, str, str], list[float]] = {}

    def run(server: ServerProcess, key: str, seconds: float) -> float:
        raw = server.name == CEILING
        return cpu_run(binary, server.port, server.proc.pid, key, seconds, raw)

    for loop in loops:
        servers = {name: ServerProcess(name, loop) for name in names}
        try:
            for key in rows:  # one unmeasured run each: imports, caches, first connections
                for name in names:
                    if not (name == CEILING and key == "churn"):
                        run(servers[name], key, min(duration, 0.3))
            for rep in range(reps):
                for key in rows:
                    for name in names if rep % 2 == 0 else names[::-1]:
                        if name == CEILING and key == "churn":
                            continue
                        micros = run(servers[name], key, duration)
                        results.setdefault((loop, key, name), []).append(micros)
                        print(
                            f"[{loop} rep {rep + 1}/{reps}] {name:26} {key:10} {micros:8.2f} us",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.stop()
    print(
        f"Server CPU time per message (per handshake for churn), {reps} runs of {duration} s, "
        "medians [range]; lower is better\n"
    )
    print(
        f"| loop | workload | {OURS} (us) | {REFERENCE} (us) | {REFERENCE} / {OURS} "
        f"| {CEILING} floor (us) | 1.5x needs ours at most (us) |"
    )
    print("|---|---|---|---|---|---|---|")
    for loop in loops:
        for key in rows:
            cells = []
            medians = []
            for name in (OURS, REFERENCE):
                values = results[(loop, key, name)]
                medians.append(statistics.median(values))
                cells.append(f"{medians[-1]:.2f} [{min(values):.2f}-{max(values):.2f}]")
            floor = results.get((loop, key, CEILING))
            floor_cell = f"{statistics.median(floor):.2f}" if floor else "-"
            print(
                f"| {loop} | {key} | {' | '.join(cells)} | {medians[1] / medians[0]:.2f}x "
                f"| {floor_cell} | {medians[1] / 1.5:.2f} |"
            )


def targets(samples: Samples) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each target of issue 13, per loop."""
    rows = []
    for loop in LOOPS:
        by_key = {w.key: w for w in WORKLOADS}
        speed = [
            (
                key,
                ratio(
                    median(samples, loop, OURS, key),
                    median(samples, loop, REFERENCE, key),
                    by_key[key],
                ),
            )
            for key in [*MESSAGE_ROWS, "churn"]
        ]
        measured = [(r, key) for key, r in speed if r is not None]
        if measured:
            worst = min(measured)
            rows.append(
                (
                    f">= 1.5x websockets-sansio on every message row and handshakes/s ({loop})",
                    f"lowest {worst[0]:.2f}x ({worst[1]})",
                    "yes" if worst[0] >= 1.5 else "no",
                )
            )
        ours = median(samples, loop, OURS, "idle")
        theirs = median(samples, loop, REFERENCE, "idle")
        if ours is not None and theirs is not None and theirs > 0:
            rows.append(
                (
                    f"idle memory <= 0.7x websockets-sansio ({loop})",
                    f"{ours / theirs:.2f}x ({ours:.1f} vs {theirs:.1f} KiB/conn)",
                    "yes" if ours / theirs <= 0.7 else "no",
                )
            )
    return rows


def write_markdown(
    samples: Samples, settings: Settings, quick: bool, started: str, path: Path
) -> None:
    lines = [
        "# ASGI benchmark: Starlette under uvicorn, three WebSocket implementations",
        "",
        f"Run {started} UTC with `python -m bench.asgi{' --quick' if quick else ''}`: "
        f"{settings.reps} repetition(s), {settings.warmup} s warm-up + {settings.duration} s "
        "measured per workload; medians.",
        f"Machine: {machine_description()}. Server pinned to core 0, load generator (C, epoll) "
        "to core 1.",
        f"Versions: {versions()}.",
        "",
        "One Starlette endpoint echoes binary messages (`await websocket.receive()`, then "
        "`send_bytes`), served by uvicorn with `--ws` set to each implementation; no "
        "compression, no size limit, no keepalive. Units as in `latest.md`.",
        "",
    ]
    for loop in LOOPS:
        if loop not in samples:
            continue
        order = [s for s in SERVERS if s in samples[loop]]
        lines += [f"## Medians, {loop} loop", ""]
        lines.append("| workload | unit | " + " | ".join(order) + " |")
        lines.append("|---|---|" + "---|" * len(order))
        for w in WORKLOADS:
            cells = [fmt(median(samples, loop, s, w.key), w.unit) for s in order]
            lines.append(f"| {w.label} | {w.unit} | " + " | ".join(cells) + " |")
        lines.append("")
        peers = [s for s in order if s != OURS]
        if OURS in order and peers:
            lines += [
                f"Ratios, {OURS} / peer ({loop}; above 1.00x shakehands is better, for memory: "
                "the peer uses that many times more):",
                "",
                "| workload | " + " | ".join(peers) + " |",
                "|---|" + "---|" * len(peers),
            ]
            for w in WORKLOADS:
                ours = median(samples, loop, OURS, w.key)
                cells = [fmt_ratio(ratio(ours, median(samples, loop, p, w.key), w)) for p in peers]
                lines.append(f"| {w.label} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Targets (issue 13)", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in targets(samples)]
    lines += ["", "![chart](asgi.png)", ""]
    path.write_text("\n".join(lines))


def write_chart(samples: Samples, path: Path) -> bool:
    """Bars: each implementation against websockets-sansio, per workload, one panel per loop."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is absent: no chart (pip install -e '.[bench]')")
        return False
    loops = [loop for loop in LOOPS if loop in samples]
    if not loops:
        return False
    fig, axes = plt.subplots(len(loops), 1, figsize=(12, 4.2 * len(loops)), squeeze=False)
    colors = {OURS: "#d62728", REFERENCE: "#1f77b4", "uvicorn-wsproto": "#2ca02c"}
    for ax, loop in zip(axes[:, 0], loops, strict=True):
        width = 0.8 / len(SERVERS)
        for i, server in enumerate(SERVERS):
            xs, ys = [], []
            for j, w in enumerate(WORKLOADS):
                r = ratio(
                    median(samples, loop, server, w.key), median(samples, loop, REFERENCE, w.key), w
                )
                if r is not None:
                    xs.append(j + (i - (len(SERVERS) - 1) / 2) * width)
                    ys.append(r)
            ax.bar(xs, ys, width, label=server, color=colors[server])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(1.5, color="gray", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(WORKLOADS)))
        ax.set_xticklabels([w.key for w in WORKLOADS])
        ax.set_ylabel("x websockets-sansio (higher is better)")
        ax.set_title(f"Starlette echo under uvicorn, {loop} loop")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.asgi", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="one short repetition")
    parser.add_argument("--loop", choices=LOOPS, action="append", help="only this loop")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write asgi.md/json")
    parser.add_argument(
        "--redraw", action="store_true", help="rewrite asgi.md and asgi.png from asgi.json"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="server CPU time per message, ours and the reference"
    )
    parser.add_argument("--rows", help=f"--cpu: comma-separated rows (default: {CPU_ROWS})")
    parser.add_argument("--reps", type=int, default=3, help="--cpu: runs per row (default 3)")
    parser.add_argument(
        "--duration", type=float, default=1.5, help="--cpu: seconds per run (default 1.5)"
    )
    args = parser.parse_args(argv)
    if args.cpu:
        rows = args.rows.split(",") if args.rows else CPU_ROWS
        unknown = set(rows) - set(CPU_ROWS)
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}: choose among {CPU_ROWS}")
        cpu_main(rows, args.loop or ["asyncio"], args.reps, args.duration)
        return
    out: Path = args.output
    if args.redraw:
        samples: Samples = json.loads((out / "asgi.json").read_text())
        header = (out / "asgi.md").read_text().splitlines()[2]
        started = header.split("Run ", 1)[1].split(" UTC", 1)[0]
        write_markdown(samples, FULL, False, started, out / "asgi.md")
        write_chart(samples, out / "asgi.png")
        return
    settings = QUICK if args.quick else FULL
    binary = build_loadgen()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    samples = {}
    t0 = time.monotonic()
    for rep in range(settings.reps):
        for loop in args.loop or LOOPS:
            for name in SERVERS:
                # Idle memory on a fresh server of its own, as in bench/run.py.
                phases = [
                    [w for w in WORKLOADS if w.key == "idle"],
                    [w for w in WORKLOADS if w.key != "idle"],
                ]
                for phase in phases:
                    try:
                        server = ServerProcess(name, loop)
                    except (RuntimeError, OSError) as exc:
                        print(f"[{rep + 1}/{settings.reps}] {name} ({loop}): cannot start: {exc}")
                        continue
                    try:
                        for work in phase:
                            try:
                                value = run_workload(binary, server, work, settings)
                            except (RuntimeError, OSError, KeyError, ValueError) as e:
                                print(f"  {name} ({loop}) {work.key}: failed: {e}")
                                continue
                            samples.setdefault(loop, {}).setdefault(name, {}).setdefault(
                                work.key, []
                            ).append(value)
                            print(
                                f"[{rep + 1}/{settings.reps} {time.monotonic() - t0:5.0f}s] "
                                f"{name:26} {loop:8} {work.key:10} {fmt(value, work.unit):>9} "
                                f"{work.unit}",
                                flush=True,
                            )
                    finally:
                        server.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "asgi.json").write_text(json.dumps(samples, indent=1, sort_keys=True) + "\n")
    write_markdown(samples, settings, args.quick, started, out / "asgi.md")
    write_chart(samples, out / "asgi.png")
    print(f"wrote {out / 'asgi.md'}")
    for target, measured, met in targets(samples):
        print(f"  {target}: {measured} [{met}]")


if __name__ == "__main__":
    main()
