"""Run the Autobahn|Testsuite against shakehands and gate on the result.

    python conformance/run.py [--cases 1.* 2.*] [--only servers|client] [--serial] [--require]

- Installs the suite on Python 2.7 if ``wstest`` is missing (``pip install --user
  autobahntestsuite``; Python 2.7 comes from pyenv on this machine kind).
- Server agents: ``python -m shakehands echo --api coroutine`` and ``--api callback``, both with
  permessage-deflate on (the default), driven by ``wstest -m fuzzingclient``.
- Server agent ``shakehands-uvicorn``: ``conformance/uvicorn_testee.py``, a Starlette echo
  endpoint served by uvicorn with ``--ws shakehands.asgi:UvicornWebSocket`` (compression on),
  driven by ``wstest -m fuzzingclient`` too (``--only uvicorn`` runs it alone).
- Client: ``wstest -m fuzzingserver``, driven by ``conformance/client_testee.py`` (the shakehands
  client, offering permessage-deflate).
- Gate: every case's ``behavior`` and ``behaviorClose`` must be OK or INFORMATIONAL. Otherwise
  the failing case ids are printed with the suite's reason and the exit status is 1.

Reports land in ``conformance/reports/`` (HTML and JSON, not committed); a summary table in
``conformance/results/latest.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORTS = HERE / "reports"
RESULTS = HERE / "results"
GOOD = {"OK", "INFORMATIONAL"}
SERVER_AGENTS = {"shakehands-coroutine": "coroutine", "shakehands-callback": "callback"}
#: The ASGI agent: the api name stands for conformance/uvicorn_testee.py (see start_echo).
UVICORN_AGENT = "shakehands-uvicorn"
UVICORN_API = "uvicorn"
CLIENT_AGENT = "shakehands-client"
Index = dict[str, dict[str, dict[str, object]]]


def loud(message: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr, flush=True)


def find_python27() -> str | None:
    candidates = [shutil.which("python2.7"), shutil.which("python2")]
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidates.insert(0, f"{root}/versions/2.7.18/bin/python")
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append(str(Path.home() / ".pyenv/versions/2.7.18/bin/python"))
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return None


def find_wstest(install: bool) -> str | None:
    for path in (shutil.which("wstest"), str(Path.home() / ".local/bin/wstest")):
        if path and Path(path).exists():
            return path
    if not install:
        return None
    python27 = find_python27()
    if python27 is None:
        return None
    print(f"installing autobahntestsuite with {python27} ...", flush=True)
    subprocess.run(
        [python27, "-m", "pip", "install", "--user", "--quiet", "autobahntestsuite"],
        check=True,
    )
    path = Path.home() / ".local/bin/wstest"
    return str(path) if path.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def start_echo(api: str, port: int) -> subprocess.Popen[bytes]:
    if api == UVICORN_API:
        command = [sys.executable, str(HERE / "uvicorn_testee.py"), "--port", str(port)]
    else:
        command = [sys.executable, "-m", "shakehands", "echo", "--api", api]
        command += ["--port", str(port), "--max-size", "0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    wait_for_port(port)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_server_agent(
    wstest: str, agent: str, api: str, cases: list[str]
) -> dict[str, dict[str, dict[str, object]]]:
    """One server agent under ``wstest -m fuzzingclient`` (its own wstest process)."""
    port = free_port()
    process = start_echo(api, port)
    outdir = REPORTS / f"servers-{api}"
    shutil.rmtree(outdir, ignore_errors=True)
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": f"ws://127.0.0.1:{port}"}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = REPORTS / f"fuzzingclient-{api}.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    try:
        subprocess.run(
            [wstest, "-m", "fuzzingclient", "-s", str(spec_path)],
            check=True,
            cwd=REPORTS,
            stdout=subprocess.DEVNULL,
        )
    finally:
        stop(process)
    return json.loads((outdir / "index.json").read_text())  # type: ignore[no-any-return]


def run_client(wstest: str, cases: list[str]) -> dict[str, dict[str, dict[str, object]]]:
    port = free_port()
    outdir = REPORTS / "clients"
    shutil.rmtree(outdir, ignore_errors=True)
    spec = {
        "url": f"ws://127.0.0.1:{port}",
        "outdir": str(outdir),
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = REPORTS / "fuzzingserver.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    server = subprocess.Popen(
        [wstest, "-m", "fuzzingserver", "-s", str(spec_path)],
        cwd=REPORTS,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        subprocess.run(
            [
                sys.executable,
                str(HERE / "client_testee.py"),
                f"ws://127.0.0.1:{port}",
                CLIENT_AGENT,
            ],
            check=True,
        )
    finally:
        stop(server)
    return json.loads((outdir / "index.json").read_text())  # type: ignore[no-any-return]


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def gate(
    index: dict[str, dict[str, dict[str, object]]], outdir: Path
) -> tuple[list[str], list[str]]:
    """Return (summary lines, failure lines) for every agent in a report index."""
    summary, failures = [], []
    for agent, results in sorted(index.items()):
        behaviors = Counter(str(r["behavior"]) for r in results.values())
        closes = Counter(str(r["behaviorClose"]) for r in results.values())
        duration = sum(int(r.get("duration", 0) or 0) for r in results.values()) / 1000  # type: ignore[call-overload]
        summary.append(
            f"| {agent} | {len(results)} | "
            + " | ".join(str(behaviors.get(k, 0)) for k in COLUMNS)
            + f" | {', '.join(f'{k} {v}' for k, v in sorted(closes.items()))} | {duration:.0f} s |"
        )
        for case_id in sorted(results, key=case_key):
            result = results[case_id]
            if result["behavior"] in GOOD and result["behaviorClose"] in GOOD:
                continue
            reason = ""
            report = outdir / str(result.get("reportfile", ""))
            if report.is_file():
                detail = json.loads(report.read_text())
                reason = f"{detail.get('result', '')} / {detail.get('resultClose', '')}"
            failures.append(
                f"{agent} {case_id}: behavior={result['behavior']} "
                f"behaviorClose={result['behaviorClose']}: {reason}"
            )
    return summary, failures


COLUMNS = ["OK", "INFORMATIONAL", "NON-STRICT", "FAILED", "UNIMPLEMENTED"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=["*"], help="case patterns (default all)")
    parser.add_argument(
        "--only",
        choices=("servers", "client", "uvicorn"),
        help="run one side only (uvicorn: the ASGI server agent alone)",
    )
    parser.add_argument(
        "--serial", action="store_true", help="run the agents one after another, not at once"
    )
    parser.add_argument(
        "--require",
        action="store_true",
        help="fail (exit 2) if the suite cannot be installed, instead of skipping loudly",
    )
    args = parser.parse_args()

    wstest = find_wstest(install=True)
    if wstest is None:
        loud(
            "CONFORMANCE NOT RUN: Python 2.7 (needed by autobahntestsuite) was not found.\n"
            "Install it (pyenv install 2.7.18) and rerun conformance/run.py."
        )
        return 2 if args.require else 0

    REPORTS.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()
    summary: list[str] = []
    failures: list[str] = []
    # Each agent has its own wstest process (wstest is single-threaded and the slow side):
    # run them at the same time unless --serial.
    jobs: dict[str, tuple[Callable[[], Index], Path]] = {}
    server_agents = dict(SERVER_AGENTS)
    server_agents[UVICORN_AGENT] = UVICORN_API
    if args.only == "uvicorn":
        server_agents = {UVICORN_AGENT: UVICORN_API}
    if args.only in (None, "servers", "uvicorn"):
        for agent, api in server_agents.items():
            jobs[agent] = (
                functools.partial(run_server_agent, wstest, agent, api, args.cases),
                REPORTS / f"servers-{api}",
            )
    if args.only in (None, "client"):
        jobs[CLIENT_AGENT] = (
            functools.partial(run_client, wstest, args.cases),
            REPORTS / "clients",
        )
    with concurrent.futures.ThreadPoolExecutor(1 if args.serial else len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, (job, _) in jobs.items()}
        for name, (_, outdir) in jobs.items():
            s, f = gate(futures[name].result(), outdir)
            summary += s
            failures += f
    elapsed = time.monotonic() - started

    header = (
        "| agent | cases | "
        + " | ".join(COLUMNS)
        + " | behaviorClose | time in cases |\n|"
        + "---|" * (len(COLUMNS) + 4)
    )
    table = header + "\n" + "\n".join(summary)
    text = (
        f"Autobahn|Testsuite, cases {' '.join(args.cases)}, "
        f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {elapsed:.0f} s "
        f"(wall clock, install excluded).\n\n{table}\n"
    )
    if args.cases == ["*"] and args.only is None:
        (RESULTS / "latest.md").write_text(text)
    print(text)
    if failures:
        print(f"{len(failures)} case(s) not OK:")
        for line in failures:
            print("  " + line)
        return 1
    print("conformance: all cases OK or INFORMATIONAL")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
