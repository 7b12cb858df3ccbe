"""Real browsers against the servers: Debian's chromium and firefox-esr, headless.

Each test starts a WebSocket server (the asyncio demo ``python -m shakehands``, the blocking
server of :mod:`shakehands.sync`, or ``examples/meow.py``), an HTTP server of its own that serves
``page.html`` and receives the page's report (a ``fetch`` POST), and a headless browser with a
fresh profile. The page checks the welcome, ASCII / CJK / emoji text, a 70 000 character message
and a binary ``ArrayBuffer`` (each answered with ``, MEOW!``), then closes with code 4000.
Without the browser on the machine the test skips, saying so; ``.ci/run`` installs both.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shakehands import sync

from ..helpers import HOST, free_port

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PAGE = (HERE / "page.html").read_bytes()
WELCOME = "滴水之恩当以涌泉相报"
MEOW = ", MEOW!"
EXPECTED_CHECKS = ["open", "welcome", "ascii", "cjk", "emoji", "long70000", "binary", "close 4000"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

FIREFOX_PREFS = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.tabs.warnOnClose": False,
}


# ---------------------------------------------------------------------------------------------
# The test's own HTTP endpoint: serves the page, receives the report
# ---------------------------------------------------------------------------------------------


class ReportServer:
    def __init__(self) -> None:
        reports: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reports = reports

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/page"):
                    self._answer(200, "text/html; charset=utf-8", PAGE)
                else:
                    self._answer(404, "text/plain", b"not found\n")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                self._answer(204, "text/plain", b"")
                if self.path == "/result":
                    reports.put(json.loads(body))

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def page_url(self, ws_url: str) -> str:
        return f"http://{HOST}:{self.port}/page?ws={ws_url}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# Browsers
# ---------------------------------------------------------------------------------------------


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@contextlib.contextmanager
def launched(command: list[str], env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a browser for the duration of the block, then end its whole process group."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def chromium(url: str, profile: Path) -> contextlib.AbstractContextManager[None]:
    exe = _find("chromium", "chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    return launched([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url])


def firefox(url: str, profile: Path) -> contextlib.AbstractContextManager[None]:
    exe = _find("firefox-esr", "firefox")
    if exe is None:
        pytest.skip("firefox-esr is not installed (Debian package; .ci/run installs it)")
    profile.mkdir(parents=True, exist_ok=True)
    prefs = "".join(
        f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in FIREFOX_PREFS.items()
    )
    (profile / "user.js").write_text(prefs)
    env = dict(os.environ, HOME=str(profile), MOZ_CRASHREPORTER_DISABLE="1")
    return launched([exe, "--headless", "--no-remote", "--profile", str(profile), url], env)


BROWSERS: dict[str, Callable[[str, Path], contextlib.AbstractContextManager[None]]] = {
    "chromium": chromium,
    "firefox": firefox,
}


# ---------------------------------------------------------------------------------------------
# Servers under test
# ---------------------------------------------------------------------------------------------


def _wait_for_line(process: subprocess.Popen[str], expected: str) -> None:
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    while True:
        line = lines.get(timeout=30)
        if line == expected:
            return


@contextlib.contextmanager
def program(args: list[str], port: int) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        cwd=ROOT,
    )
    try:
        _wait_for_line(process, f"Listening on port {port}.")
        yield f"ws://{HOST}:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def asyncio_demo() -> contextlib.AbstractContextManager[str]:
    port = free_port()
    return program(["-m", "shakehands", "--port", str(port)], port)


def meow_example() -> contextlib.AbstractContextManager[str]:
    port = free_port()
    return program([str(ROOT / "examples" / "meow.py"), str(port)], port)


SYNC_CLOSE_CODES: list[int | None] = []


@contextlib.contextmanager
def blocking_server() -> Iterator[str]:
    def meow(ws: sync.ServerConnection) -> None:
        ws.send(WELCOME)
        try:
            # 4000 is not a "normal" code: iteration ends with ConnectionClosedError.
            for message in ws:
                ws.send(message + MEOW if isinstance(message, str) else message + MEOW.encode())
        finally:
            SYNC_CLOSE_CODES.append(ws.close_code)

    server = sync.serve(meow, HOST, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://{HOST}:{server.port}/"
    finally:
        server.shutdown()
        thread.join(10)


SERVERS: dict[str, Callable[[], contextlib.AbstractContextManager[str]]] = {
    "asyncio-demo": asyncio_demo,
    "blocking": blocking_server,
    "meow-example": meow_example,
}


@pytest.mark.parametrize("server_name", list(SERVERS))
@pytest.mark.parametrize("browser_name", list(BROWSERS))
def test_browser(browser_name: str, server_name: str) -> None:
    reports = ReportServer()
    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"shakehands-{browser_name}-") as tmp,
            SERVERS[server_name]() as ws_url,
            BROWSERS[browser_name](reports.page_url(ws_url), Path(tmp) / "profile"),
        ):
            try:
                report = reports.reports.get(timeout=90)
            except queue.Empty:
                pytest.fail(f"{browser_name} sent no report within 90 s")
    finally:
        reports.close()
    assert report["errors"] == [], report
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [], report
    assert [c["name"] for c in report["checks"]] == EXPECTED_CHECKS
    if server_name == "blocking":
        # The server saw the browser's close frame with its code (its thread has ended: the
        # server's shutdown joins connection threads).
        assert SYNC_CLOSE_CODES[-1] == 4000
