"""Real browsers speak WebSockets over HTTP/2 (RFC 8441) to shakehands, and the server sees it.

The server (``serve`` with TLS, in a thread of this process) serves a page on ``GET /`` through
``process_request`` and an echo WebSocket at ``/ws``; the certificate is made at test time.
Headless Chromium (``--ignore-certificate-errors``) and Firefox (the certificate accepted by
the browser's own WebDriver capability ``acceptInsecureCerts``, over Marionette) load the page
over ``https://`` and converse over a WebSocket to the same origin. The SERVER records, for the
page's GET and for the WebSocket, the HTTP version and the TCP connection they came on; the test
asserts that the WebSocket was an extended CONNECT stream (``HTTP/2``) on the page's own
connection. With ``http2=False`` the same page and WebSocket go over HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import Headers, Response

from ..helpers import HOST, free_port
from .test_browsers import CHROMIUM_FLAGS, FIREFOX_PREFS, _find, launched

pytestmark = pytest.mark.timeout(120)

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>h2</title></head><body><p id="state">loading</p>
<script>
const state = document.getElementById("state");
const ws = new WebSocket(`wss://${location.host}/ws`);
ws.onopen = () => { state.textContent = "open"; ws.send("hello over h2"); };
ws.onmessage = (event) => {
  if (event.data === "echo: hello over h2") {
    state.textContent = "echoed";
    ws.send("done");
  }
};
ws.onerror = () => { state.textContent = "error"; };
</script></body></html>
"""


class Recorder:
    """The server under test, in a thread: what it saw of the page and of the WebSocket."""

    def __init__(self, certificate: tuple[Path, Path], http2: bool) -> None:
        self.pages: list[dict[str, Any]] = []
        self.websockets: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.port = 0
        self._certificate = certificate
        self._http2 = http2
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def process_request(self, request: shakehands.Request) -> Response | None:
        if request.is_upgrade:
            return None
        if request.path == "/":
            self.pages.append({"version": request.version, "connection": request.remote_address})
            headers = Headers([("Content-Type", "text/html; charset=utf-8")])
            return Response(200, headers, PAGE)
        return Response(404, body=b"not found\n")

    async def handler(self, ws: shakehands.ServerConnection) -> None:
        seen = {
            "version": ws.request.version,
            "connection": ws.request.remote_address,
            "http_version": ws.transport.get_extra_info("http_version"),
            "stream": ws.transport.get_extra_info("h2_stream_id"),
            "messages": [],
        }
        self.websockets.append(seen)
        async for message in ws:
            seen["messages"].append(message)
            if message == "done":
                self.done.set()
            else:
                await ws.send(f"echo: {message}")

    async def _main(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self._certificate)
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with shakehands.serve(
            self.handler,
            HOST,
            free_port(),
            ssl=context,
            http2=self._http2,
            process_request=self.process_request,
        ) as server:
            self.port = server.port
            self._ready.set()
            await self._stop

    def __enter__(self) -> Recorder:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(20)


def chromium(url: str, profile: Path) -> contextlib.AbstractContextManager[None]:
    exe = _find("chromium", "chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    return launched(
        [exe, *CHROMIUM_FLAGS, "--ignore-certificate-errors", f"--user-data-dir={profile}", url]
    )


@contextlib.contextmanager
def firefox(url: str, profile: Path) -> Iterator[None]:
    """Firefox, driven over Marionette (its own remote protocol) only to open a session that
    accepts the test certificate (``acceptInsecureCerts``) and to navigate to ``url``."""
    exe = _find("firefox-esr", "firefox")
    if exe is None:
        pytest.skip("firefox-esr is not installed (Debian package; .ci/run installs it)")
    profile.mkdir(parents=True, exist_ok=True)
    port = free_port()
    prefs = {**FIREFOX_PREFS, "marionette.port": port}
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    env = {"HOME": str(profile), "MOZ_CRASHREPORTER_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    command = [exe, "--headless", "--no-remote", "--marionette", "--profile", str(profile)]
    with launched(command, env):
        marionette = Marionette(port)
        try:
            marionette.command("WebDriver:NewSession", {"acceptInsecureCerts": True})
            marionette.command("WebDriver:Navigate", {"url": url})
            yield
        finally:
            marionette.close()


class Marionette:
    """The few Marionette commands needed: length-prefixed JSON over TCP."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sock = socket.create_connection((HOST, port), timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buffer = b""
        self.next_id = 0
        self._read()  # the server's hello

    def _read(self) -> Any:
        while b":" not in self.buffer:
            self._recv()
        length, _, rest = self.buffer.partition(b":")
        self.buffer = rest
        while len(self.buffer) < int(length):
            self._recv()
        message, self.buffer = self.buffer[: int(length)], self.buffer[int(length) :]
        return json.loads(message)

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Marionette closed the connection")
        self.buffer += chunk

    def command(self, name: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        body = json.dumps([0, self.next_id, name, params]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            reply = self._read()
            if isinstance(reply, list) and reply[0] == 1 and reply[1] == self.next_id:
                if reply[2] is not None:
                    raise RuntimeError(f"Marionette {name}: {reply[2]}")
                return reply[3]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


BROWSERS = {"chromium": chromium, "firefox": firefox}


@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http11"])
@pytest.mark.parametrize("browser_name", list(BROWSERS))
def test_browser_websocket_over_http2(
    browser_name: str, http2: bool, certificate: tuple[Path, Path]
) -> None:
    with (
        tempfile.TemporaryDirectory(prefix=f"shakehands-h2-{browser_name}-") as tmp,
        Recorder(certificate, http2) as recorder,
        BROWSERS[browser_name](f"https://localhost:{recorder.port}/", Path(tmp) / "profile"),
    ):
        assert recorder.done.wait(90), (recorder.pages, recorder.websockets)
    assert recorder.pages, "the page was never requested"
    page = recorder.pages[-1]
    ws = recorder.websockets[-1]
    assert ws["messages"] == ["hello over h2", "done"]
    if http2:
        assert page["version"] == "HTTP/2"
        assert ws["version"] == "HTTP/2"
        assert ws["http_version"] == "2" and ws["stream"] is not None
        # The same TCP connection: the WebSocket was a stream of the page's connection.
        assert ws["connection"] == page["connection"], (recorder.pages, recorder.websockets)
    else:
        assert page["version"] == "HTTP/1.1"
        assert ws["version"] == "HTTP/1.1"
        assert ws["http_version"] is None
