"""End-to-end tests of the ``shakehands`` command line (``python -m shakehands``).

Every test runs the CLI as a real subprocess listening on a free port of 127.0.0.1 and talks to it
over real sockets: the seed's demo (WebSocket and its HTML page), signal handling, the ``echo``
server under load (both APIs, asyncio and uvloop), its message size limit, and the interactive
``client`` (interactive commands, its options, and its script mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import shakehands
from shakehands import ConnectionClosedError, ConnectionClosedOK, Request, Response, sync

from .helpers import APIS, HOST, OP_CLOSE, OP_TEXT, close_payload, frame, free_port, upgrade_request

WELCOME = "滴水之恩当以涌泉相报"
STARTUP_TIMEOUT = 15.0  # seconds for the interpreter to start and print its banner
EXIT_TIMEOUT = 5.0  # seconds for a clean exit after a signal or the end of stdin
KiB = 2**10
MiB = 2**20


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (like asyncio's: with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


class CLI:
    """One ``python -m shakehands ...`` subprocess; stdout and stderr are read by threads."""

    def __init__(self, *args: str, stdin: bool = False) -> None:
        self.args = args
        env = dict(os.environ, PYTHONIOENCODING="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shakehands", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        self._lines: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._stdout_done = False
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._stdout_done = True
            self._cond.notify_all()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._err.append(line)

    # --- output ---------------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self._err)

    def describe(self) -> str:
        return (
            f"shakehands {' '.join(self.args)} (exit code {self.proc.poll()})\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def wait_until(
        self, done: Callable[[list[str]], bool], timeout: float = EXIT_TIMEOUT
    ) -> list[str] | None:
        """Stdout's lines once ``done(lines)``; ``None`` if stdout ends or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self._lines):
                remaining = deadline - time.monotonic()
                if self._stdout_done or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return list(self._lines)

    def wait_for_line(self, match: Callable[[str], bool], timeout: float = EXIT_TIMEOUT) -> str:
        """The first stdout line for which ``match`` is true; fails after ``timeout`` seconds."""
        lines = self.wait_until(lambda lines: any(map(match, lines)), timeout)
        if lines is None:
            pytest.fail(f"no such line on stdout within {timeout} s\n{self.describe()}")
        return next(line for line in lines if match(line))

    def wait_for_text(self, text: str, timeout: float = EXIT_TIMEOUT) -> str:
        return self.wait_for_line(lambda line: text in line, timeout)

    async def await_line(self, match: Callable[[str], bool], timeout: float = EXIT_TIMEOUT) -> str:
        return await asyncio.to_thread(self.wait_for_line, match, timeout)

    async def await_text(self, text: str, timeout: float = EXIT_TIMEOUT) -> str:
        return await asyncio.to_thread(self.wait_for_text, text, timeout)

    # --- process --------------------------------------------------------------------------

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        """The exit code; fails (and kills the process) if it does not exit within ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._join()
            pytest.fail(f"did not exit within {timeout} s\n{self.describe()}")
        self._join()
        return code

    async def await_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        return await asyncio.to_thread(self.wait, timeout)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(2.0)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def write_stdin(self, text: str, *, close: bool = False) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()
        if close:
            self.proc.stdin.close()

    def close(self) -> None:
        """Terminate the process if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._join()


@pytest.fixture
def cli() -> Iterator[Callable[..., CLI]]:
    """Start ``python -m shakehands ARGS``; every process is terminated after the test."""
    started: list[CLI] = []

    def start(*args: str, stdin: bool = False) -> CLI:
        process = CLI(*args, stdin=stdin)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def _start_listening(
    cli: Callable[..., CLI], make_args: Callable[[int], list[str]], banner: Callable[[int], str]
) -> tuple[CLI, int]:
    """Start a server on a free port; retry on a fresh port if someone grabbed it meanwhile."""
    for _ in range(3):
        port = free_port()
        process = cli(*make_args(port))
        lines = process.wait_until(lambda lines: bool(lines), STARTUP_TIMEOUT)
        if lines is not None and lines[0] == banner(port):
            return process, port
        if lines is None and process.proc.poll() is not None:
            process.wait()
            if "address already in use" in process.stderr.lower():
                continue  # lost a race for the port: try another one
        pytest.fail(f"no banner {banner(port)!r}\n{process.describe()}")
    pytest.fail("could not find a free port in 3 attempts")


def start_demo(cli: Callable[..., CLI]) -> tuple[CLI, int]:
    return _start_listening(
        cli, lambda port: ["--port", str(port)], lambda port: f"Listening on port {port}."
    )


def start_echo(cli: Callable[..., CLI], *options: str, api: str = "coroutine") -> tuple[CLI, int]:
    return _start_listening(
        cli,
        lambda port: ["echo", "--port", str(port), "--api", api, *options],
        lambda port: f"Echo server ({api} API) listening on {HOST}:{port}.",
    )


def ws_uri(port: int, path: str = "/") -> str:
    return f"ws://{HOST}:{port}{path}"


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=EXIT_TIMEOUT)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def assert_no_traceback(process: CLI) -> None:
    assert "Traceback" not in process.stderr, process.describe()


# ---------------------------------------------------------------------------------------------
# The demo (no subcommand)
# ---------------------------------------------------------------------------------------------


def test_demo_banner_is_the_first_line(cli: Callable[..., CLI]) -> None:
    process, port = start_demo(cli)
    assert process.lines[0] == f"Listening on port {port}."


async def test_demo_welcome_and_meow(cli: Callable[..., CLI]) -> None:
    process, port = start_demo(cli)
    async with shakehands.connect(ws_uri(port)) as ws:
        assert await ws.recv() == WELCOME
        for text in ["hello", "滴水之恩", "🐱 meow 😺", "ünïcödé \u2028 \x00", "x" * 70_000]:
            await ws.send(text)
            assert await ws.recv() == text + ", MEOW!"
        await ws.send("")
        assert await ws.recv() == ", MEOW!"
        await ws.send(b"\x00\x01")
        echoed = await ws.recv()
        assert isinstance(echoed, bytes)
        assert echoed == b"\x00\x01, MEOW!"
        await ws.send(b"")
        assert await ws.recv() == b", MEOW!"
        await ws.send(["frag", "mented ", "猫"])
        assert await ws.recv() == "fragmented 猫, MEOW!"
        await ws.send([b"\xff", b"\xfe"])
        assert await ws.recv() == b"\xff\xfe, MEOW!"
    assert ws.close_code == 1000
    await process.await_line(lambda line: line == "Client quit, closed handle.")
    assert process.lines[1:] == [
        "Shook hands, sent welcome message.",
        "Client quit, closed handle.",
    ]
    assert process.proc.poll() is None, "the demo must keep serving after a client leaves"
    assert_no_traceback(process)


async def test_demo_serves_clients_concurrently(cli: Callable[..., CLI]) -> None:
    process, port = start_demo(cli)

    async def client(n: int) -> None:
        async with shakehands.connect(ws_uri(port)) as ws:
            assert await ws.recv() == WELCOME
            for i in range(5):
                await ws.send(f"client {n} message {i}")
                assert await ws.recv() == f"client {n} message {i}, MEOW!"

    async with asyncio.timeout(20):
        await asyncio.gather(*(client(n) for n in range(10)))
    lines = await asyncio.to_thread(
        process.wait_until, lambda lines: lines.count("Client quit, closed handle.") == 10
    )
    assert lines is not None, process.describe()
    assert process.stdout.count("Shook hands, sent welcome message.") == 10
    assert_no_traceback(process)


async def test_demo_with_the_websockets_client(cli: Callable[..., CLI]) -> None:
    ws_client = pytest.importorskip("websockets.asyncio.client")
    process, port = start_demo(cli)
    async with ws_client.connect(ws_uri(port)) as ws:
        assert await ws.recv() == WELCOME
        await ws.send("hello")
        assert await ws.recv() == "hello, MEOW!"
        await ws.send("表情 🎉")
        assert await ws.recv() == "表情 🎉, MEOW!"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01, MEOW!"
        await ws.send(["frag", "ment"])
        assert await ws.recv() == "fragment, MEOW!"
    assert ws.close_code == 1000
    await process.await_text("Client quit, closed handle.")
    assert_no_traceback(process)


def test_minimal_client_example_talks_to_the_demo(cli: Callable[..., CLI]) -> None:
    # examples/minimal_client.py: the smallest front end (docs/architecture.md), a blocking
    # client on a raw socket that drives the sans-I/O core directly.
    demo, port = start_demo(cli)
    example = Path(__file__).resolve().parent.parent / "examples" / "minimal_client.py"
    result = subprocess.run(
        [sys.executable, str(example), ws_uri(port), "hello", "滴水"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [WELCOME, "hello, MEOW!", "滴水, MEOW!"]
    # The closing handshake was clean: the demo logs the client's departure.
    assert demo.wait_until(lambda lines: "Client quit, closed handle." in lines, 10) is not None


def test_demo_default_port_is_12345(cli: Callable[..., CLI]) -> None:
    if not port_is_free(12345):
        pytest.skip("127.0.0.1:12345 is in use on this machine")
    process = cli()
    lines = process.wait_until(lambda lines: bool(lines), STARTUP_TIMEOUT)
    if lines is None and process.wait() == 1 and "address already in use" in process.stderr:
        pytest.skip("127.0.0.1:12345 was taken meanwhile")
    assert lines is not None, process.describe()
    assert lines[0] == "Listening on port 12345."
    status, _, body = http_get(12345, "/")
    assert status == 200
    assert b"new WebSocket(" in body


def test_demo_port_in_use_is_a_clean_error(cli: Callable[..., CLI]) -> None:
    _, port = start_demo(cli)
    second = cli("--port", str(port))
    assert second.wait() == 1, second.describe()
    assert second.stderr.startswith("shakehands:"), second.describe()
    assert str(port) in second.stderr
    assert_no_traceback(second)
    assert second.lines == []


def test_bad_arguments_exit_with_status_2(cli: Callable[..., CLI]) -> None:
    for args in (["--port", "not-a-port"], ["echo", "--api", "nope"], ["client"], ["bogus"]):
        process = cli(*args)
        assert process.wait() == 2, process.describe()
        assert "usage:" in process.stderr
        assert_no_traceback(process)


# ---------------------------------------------------------------------------------------------
# The demo's HTML page (plain HTTP)
# ---------------------------------------------------------------------------------------------


def test_page_is_served_on_get_slash(cli: Callable[..., CLI]) -> None:
    _, port = start_demo(cli)
    status, headers, body = http_get(port, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    page = body.decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "new WebSocket(" in page
    # A query string does not change the page.
    status, _, body_with_query = http_get(port, "/?x=1")
    assert status == 200
    assert body_with_query == body


@pytest.mark.parametrize("path", ["/missing", "/ws", "/index.html", "//"])
def test_other_paths_are_404(cli: Callable[..., CLI], path: str) -> None:
    _, port = start_demo(cli)
    status, headers, body = http_get(port, path)
    assert status == 404
    assert headers["content-type"].startswith("text/plain")
    assert body == b"Not Found\n"


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT"])
def test_other_methods_are_refused(cli: Callable[..., CLI], method: str) -> None:
    process, port = start_demo(cli)
    status, headers, _ = http_get(port, "/", method)
    assert status == 405
    assert headers["allow"] == "GET"
    # The server is still fine.
    assert http_get(port, "/")[0] == 200
    assert process.proc.poll() is None
    assert_no_traceback(process)


async def test_page_and_websocket_on_the_same_port(cli: Callable[..., CLI]) -> None:
    """HTTP requests in between do not disturb an open WebSocket connection."""
    process, port = start_demo(cli)
    async with shakehands.connect(ws_uri(port)) as ws:
        assert await ws.recv() == WELCOME
        status, _, _ = await asyncio.to_thread(http_get, port, "/")
        assert status == 200
        await ws.send("still here")
        assert await ws.recv() == "still here, MEOW!"
    # The HTTP request did not run the WebSocket handler.
    await process.await_text("Client quit, closed handle.")
    assert process.stdout.count("Shook hands") == 1


# ---------------------------------------------------------------------------------------------
# Signals: a clean shutdown, 1001 to every client
# ---------------------------------------------------------------------------------------------

SERVERS = {
    "demo": start_demo,
    "echo-coroutine": lambda cli: start_echo(cli, api="coroutine"),
    "echo-callback": lambda cli: start_echo(cli, api="callback"),
}
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("kind", list(SERVERS))
async def test_signal_closes_clients_with_1001(
    cli: Callable[..., CLI], kind: str, signum: int
) -> None:
    process, port = SERVERS[kind](cli)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(shakehands.connect(ws_uri(port))) for _ in range(3)
        ]
        await _signal_and_check(process, kind, signum, clients)


async def _signal_and_check(
    process: CLI, kind: str, signum: int, clients: list[shakehands.ClientConnection]
) -> None:
    for ws in clients:
        if kind == "demo":
            assert await ws.recv() == WELCOME
        await ws.send("ping?")
        assert (await ws.recv()).startswith("ping?")
    started = time.monotonic()
    process.send_signal(signum)
    for ws in clients:
        with pytest.raises(ConnectionClosedOK) as info:
            async with asyncio.timeout(EXIT_TIMEOUT):
                await ws.recv()
        assert info.value.code == 1001
        assert ws.close_code == 1001
        assert ws.close_reason == "server shutting down"
    code = await process.await_exit()
    assert code in ((0,) if signum == signal.SIGTERM else (0, 130)), process.describe()
    assert time.monotonic() - started < EXIT_TIMEOUT
    assert_no_traceback(process)
    assert process.stderr == ""
    if kind == "demo":
        assert process.stdout.count("Client quit, closed handle.") == 3


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("kind", list(SERVERS))
def test_signal_without_clients(cli: Callable[..., CLI], kind: str, signum: int) -> None:
    process, port = SERVERS[kind](cli)
    process.send_signal(signum)
    code = process.wait()
    assert code in ((0,) if signum == signal.SIGTERM else (0, 130)), process.describe()
    assert process.stderr == "", process.describe()
    assert port_is_free(port)


@pytest.mark.parametrize("kind", list(SERVERS))
def test_sigterm_with_a_connection_still_in_the_handshake(
    cli: Callable[..., CLI], kind: str
) -> None:
    """A TCP connection that never sends its request does not delay the shutdown."""
    process, port = SERVERS[kind](cli)
    with socket.create_connection((HOST, port), timeout=EXIT_TIMEOUT) as idle:
        # Half a request: the server is waiting for the rest.
        idle.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait() == 0, process.describe()
        idle.settimeout(EXIT_TIMEOUT)
        with contextlib.suppress(ConnectionResetError):
            assert idle.recv(1024) == b""  # dropped, without a response
    assert process.stderr == "", process.describe()


def _raw_handshake(port: int) -> socket.socket:
    """A raw TCP connection that completed the opening handshake."""
    sock = socket.create_connection((HOST, port), timeout=EXIT_TIMEOUT)
    sock.sendall(upgrade_request(port))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, response
        response += chunk
    assert response.startswith(b"HTTP/1.1 101 "), response
    return sock


@pytest.mark.parametrize("kind", list(SERVERS))
def test_message_and_close_in_one_segment(cli: Callable[..., CLI], kind: str) -> None:
    """A client that sends a message and its close frame at once: a clean close, no traceback.

    The server answers the close as soon as it reads it, so the message cannot be answered
    any more: that must not be reported as an error (the same happens with a piped
    ``shakehands client`` that reaches the end of its input).
    """
    process, port = SERVERS[kind](cli)
    for _ in range(10):
        with _raw_handshake(port) as sock:
            sock.sendall(frame(OP_TEXT, b"bye") + frame(OP_CLOSE, close_payload(1000)))
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        # The close frame comes last: 0x88, length 2, code 1000.
        assert received.endswith(b"\x88\x02\x03\xe8"), received
    assert process.proc.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    assert process.stderr == "", process.describe()


# ---------------------------------------------------------------------------------------------
# echo: both APIs, asyncio and uvloop, big and fragmented messages, many clients
# ---------------------------------------------------------------------------------------------


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


LOOPS = [
    pytest.param(False, id="asyncio"),
    pytest.param(
        True,
        id="uvloop",
        marks=pytest.mark.skipif(not _uvloop_available(), reason="uvloop is not installed"),
    ),
]

_SPRINKLES = ["é", "ß", "滴水", "之恩", "🐱", "😺🎉", "\u2028", "\x00", "\ufeff"]


def random_text(rng: random.Random, size: int) -> str:
    """Random text of about ``size`` UTF-8 bytes, with 1- to 4-byte characters."""
    parts: list[str] = []
    total = 0
    while total < size:
        chunk = rng.randbytes(min(size - total, rng.randint(1, 64 * KiB))).decode("latin-1")
        sprinkle = rng.choice(_SPRINKLES)
        parts += (chunk, sprinkle)
        total += len(chunk.encode("utf-8")) + len(sprinkle.encode("utf-8"))
    return "".join(parts)


def random_message(rng: random.Random, size: int, text: bool) -> str | bytes:
    return random_text(rng, size) if text else rng.randbytes(size)


def fragments(rng: random.Random, message: str | bytes) -> list[str] | list[bytes]:
    """Split ``message`` at random places, with an empty fragment in the middle."""
    cuts = sorted(rng.randrange(len(message) + 1) for _ in range(rng.randint(1, 8)))
    bounds = [0, *cuts, len(message)]
    pieces = [message[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    pieces.insert(len(pieces) // 2, message[:0])
    assert type(message)().join(pieces) == message  # type: ignore[arg-type]
    return pieces  # type: ignore[return-value]


def message_plan(client: int) -> list[tuple[int, bool, bool]]:
    """(size, text, fragmented) for each message a client sends; 16 MiB only for a few."""
    sizes = [KiB, 64 * KiB, MiB] + ([16 * MiB] if client < 2 else [])
    return [
        (size, text, fragmented)
        for size in sizes
        for text in (False, True)
        for fragmented in (False, True)
        if size < 16 * MiB or fragmented == (client == 0)
    ]


async def echo_client(port: int, client: int) -> int:
    """Send this client's messages while reading the echoes; return the bytes echoed."""
    rng = random.Random(client)
    plan = message_plan(client)
    messages = [random_message(rng, size, text) for size, text, _ in plan]
    async with shakehands.connect(ws_uri(port), max_message_size=None) as ws:

        async def sender() -> None:
            for message, (_, _, fragmented) in zip(messages, plan, strict=True):
                await ws.send(fragments(rng, message) if fragmented else message)

        send_task = asyncio.create_task(sender())
        try:
            for index, expected in enumerate(messages):
                received = await ws.recv()
                assert type(received) is type(expected), (client, index)
                assert len(received) == len(expected), (client, index)
                same = received == expected  # no assertion diff of megabytes
                assert same, f"client {client}: message {index} differs"
        except BaseException:
            send_task.cancel()
            raise
        await send_task
    assert ws.close_code == 1000
    return sum(len(message) for message in messages)


@pytest.mark.parametrize("use_uvloop", LOOPS)
@pytest.mark.parametrize("api", APIS)
async def test_echo_many_clients_big_messages(
    cli: Callable[..., CLI], api: str, use_uvloop: bool
) -> None:
    options = ["--max-size", "0"] + (["--uvloop"] if use_uvloop else [])
    process, port = start_echo(cli, *options, api=api)
    # A guard against a hang, not a speed test: 20 clients compress and echo 40+ MiB of random
    # data, which takes minutes on a loaded 2-core machine.
    async with asyncio.timeout(240):
        totals = await asyncio.gather(*(echo_client(port, n) for n in range(20)))
    assert sum(totals) > 40 * MiB
    assert process.proc.poll() is None
    assert_no_traceback(process)
    process.send_signal(signal.SIGTERM)
    assert await process.await_exit() == 0
    assert process.stderr == "", process.describe()


@pytest.mark.parametrize("api", APIS)
async def test_echo_with_the_websockets_client(cli: Callable[..., CLI], api: str) -> None:
    ws_client = pytest.importorskip("websockets.asyncio.client")
    _, port = start_echo(cli, api=api)
    async with ws_client.connect(ws_uri(port), max_size=None) as ws:
        for message in ["text", "滴水 🐱", b"\x00\xff", "", b"", os.urandom(MiB)]:
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send(["a", "b", "c"])
        assert await ws.recv() == "abc"


# ---------------------------------------------------------------------------------------------
# echo: the default 1 MiB limit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("api", APIS)
async def test_echo_default_max_size_is_1_mib(
    cli: Callable[..., CLI], api: str, text: bool, fragmented: bool
) -> None:
    process, port = start_echo(cli, api=api)
    rng = random.Random(42)
    async with shakehands.connect(ws_uri(port), max_message_size=None) as ws:
        # Exactly 1 MiB is accepted.
        limit = "a" * MiB if text else rng.randbytes(MiB)
        await ws.send(fragments(rng, limit) if fragmented else limit)
        assert await ws.recv() == limit
        # 2 MiB is not: 1009.
        too_big = "a" * (2 * MiB) if text else rng.randbytes(2 * MiB)
        with contextlib.suppress(ConnectionClosedError):
            # The server may close before the whole message is out.
            await ws.send(fragments(rng, too_big) if fragmented else too_big)
        with pytest.raises(ConnectionClosedError) as info:
            async with asyncio.timeout(EXIT_TIMEOUT):
                await ws.recv()
    assert info.value.code == 1009
    assert ws.close_code == 1009
    # The server carries on.
    async with shakehands.connect(ws_uri(port)) as ws:
        await ws.send("after")
        assert await ws.recv() == "after"
    assert process.proc.poll() is None
    assert_no_traceback(process)


async def test_echo_max_size_option(cli: Callable[..., CLI]) -> None:
    _, port = start_echo(cli, "--max-size", "1000")
    async with shakehands.connect(ws_uri(port)) as ws:
        await ws.send(b"x" * 1000)
        assert await ws.recv() == b"x" * 1000
        await ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.code == 1009


# ---------------------------------------------------------------------------------------------
# client URI
# ---------------------------------------------------------------------------------------------


def test_client_echo_until_end_of_input(cli: Callable[..., CLI]) -> None:
    _, port = start_echo(cli)
    client = cli("client", ws_uri(port), stdin=True)
    client.wait_for_text("Connected to", STARTUP_TIMEOUT)
    client.write_stdin("one\ntwo\n滴水 🐱\n\n")
    # The end of input closes the connection at once: answers still on their way would be
    # lost (the server answers the close first), so wait for them before closing stdin.
    client.wait_until(lambda lines: len(lines) >= 5)
    client.write_stdin("", close=True)
    assert client.wait() == 0, client.describe()
    lines = client.lines
    assert lines[0] == f"Connected to {ws_uri(port)}. Type messages; Ctrl-D to quit."
    assert lines[1:5] == ["< one", "< two", "< 滴水 🐱", "< "], client.describe()
    assert lines[-1] == "Connection closed: 1000", client.describe()
    assert client.stderr == ""


def test_client_against_the_demo(cli: Callable[..., CLI]) -> None:
    _, port = start_demo(cli)
    client = cli("client", ws_uri(port), stdin=True)
    client.wait_for_text(f"< {WELCOME}", STARTUP_TIMEOUT)
    client.write_stdin("hi\n")
    client.wait_for_text("< hi, MEOW!")
    client.write_stdin("", close=True)
    assert client.wait() == 0, client.describe()
    assert client.lines[-1] == "Connection closed: 1000"


def test_client_exits_when_the_server_goes_away(cli: Callable[..., CLI]) -> None:
    """The server closes (1001) while the client waits for input: the client must exit."""
    server, port = start_echo(cli)
    client = cli("client", ws_uri(port), stdin=True)
    client.wait_for_text("Connected to", STARTUP_TIMEOUT)
    client.write_stdin("x\n")  # stdin stays open
    client.wait_for_text("< x")
    server.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert client.wait() == 0, client.describe()
    assert client.lines[-1] == "Connection closed: 1001 server shutting down"
    assert_no_traceback(client)


def test_client_ctrl_c(cli: Callable[..., CLI]) -> None:
    """SIGINT while the client waits for input: a prompt exit, no traceback."""
    _, port = start_echo(cli)
    client = cli("client", ws_uri(port), stdin=True)
    client.wait_for_text("Connected to", STARTUP_TIMEOUT)
    client.write_stdin("x\n")
    client.wait_for_text("< x")
    client.send_signal(signal.SIGINT)
    assert client.wait() in (0, 130), client.describe()
    assert_no_traceback(client)


def test_client_connection_refused(cli: Callable[..., CLI]) -> None:
    port = free_port()  # nothing listens there
    client = cli("client", ws_uri(port), stdin=True)
    assert client.wait(STARTUP_TIMEOUT) == 1, client.describe()
    assert client.stderr.startswith("shakehands:"), client.describe()
    assert_no_traceback(client)
    assert client.lines == []


@pytest.mark.parametrize("uri", ["http://x", "ws://", "wss://host/#fragment", "not a uri"])
def test_client_bad_uri(cli: Callable[..., CLI], uri: str) -> None:
    client = cli("client", uri, stdin=True)
    assert client.wait(STARTUP_TIMEOUT) == 1, client.describe()
    assert client.stderr.startswith("shakehands:"), client.describe()
    assert client.stderr.count("\n") == 1, client.describe()
    assert_no_traceback(client)


def test_client_refused_by_an_http_server(cli: Callable[..., CLI]) -> None:
    """A server that answers 404 instead of upgrading: a clean error."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # a WebSocket client rightly rejects HTTP/1.0

        def do_GET(self) -> None:  # noqa: N802
            self.send_error(404)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = http.server.ThreadingHTTPServer((HOST, 0), NotFound)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = cli("client", ws_uri(httpd.server_address[1]), stdin=True)
        assert client.wait(STARTUP_TIMEOUT) == 1, client.describe()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert client.stderr.startswith("shakehands:"), client.describe()
    assert "404" in client.stderr
    assert_no_traceback(client)


def test_client_shows_the_body_of_a_refusal(cli: Callable[..., CLI]) -> None:
    """The server's reason for a refusal (its body) is what a user needs to see."""

    def process_request(request: Request) -> Response:
        return Response(401, body="missing token: add ?token=... to the URI\n")

    with sync.serve(lambda ws: None, HOST, 0, process_request=process_request) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            client = cli("client", ws_uri(server.port), stdin=True)
            assert client.wait(STARTUP_TIMEOUT) == 1, client.describe()
        finally:
            server.shutdown()
            thread.join(10)
    assert client.stderr.startswith("shakehands: server refused the upgrade: HTTP 401")
    assert "missing token: add ?token=... to the URI" in client.stderr, client.describe()
    assert_no_traceback(client)


# ---------------------------------------------------------------------------------------------
# client options: headers, subprotocols, origin, TLS, binary, /ping, /close, scripts
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def blocking_server(
    handler: Callable[[sync.ServerConnection], None], **options: object
) -> Iterator[tuple[int, list[Request]]]:
    """A shakehands blocking server in a thread; yields its port and the requests it saw."""
    requests: list[Request] = []

    def process_request(request: Request) -> Response | None:
        requests.append(request)
        return None

    with sync.serve(handler, HOST, 0, process_request=process_request, **options) as server:  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve_forever, kwargs={"stop_signals": ()})
        thread.start()
        try:
            yield server.port, requests
        finally:
            server.shutdown()
            thread.join(10)


def test_client_script_mode_send_and_count(cli: Callable[..., CLI]) -> None:
    _, port = start_echo(cli)
    client = cli("client", ws_uri(port), "--send", "one", "--send", "滴水 🐱", "--count", "2")
    assert client.wait(STARTUP_TIMEOUT) == 0, client.describe()
    assert client.lines == ["one", "滴水 🐱"], client.describe()  # messages alone on stdout
    assert f"Connected to {ws_uri(port)}." in client.stderr
    assert client.stderr.rstrip().endswith("Connection closed: 1000"), client.describe()


def test_client_script_mode_send_only_closes(cli: Callable[..., CLI]) -> None:
    _, port = start_echo(cli)
    client = cli("client", ws_uri(port), "--send", "fire and forget")
    assert client.wait(STARTUP_TIMEOUT) == 0, client.describe()
    assert "Connection closed: 1000" in client.stderr


def test_client_count_without_send(cli: Callable[..., CLI]) -> None:
    _, port = start_demo(cli)
    client = cli("client", ws_uri(port), "--count", "1")
    assert client.wait(STARTUP_TIMEOUT) == 0, client.describe()
    assert client.lines == [WELCOME]


@pytest.mark.parametrize(
    ("binary_format", "sent", "shown"),
    [("hex", "00ff 10", "00ff10"), ("base64", "AP8Q", "AP8Q")],
)
def test_client_binary_script_mode(
    cli: Callable[..., CLI], binary_format: str, sent: str, shown: str
) -> None:
    received: list[object] = []

    def handler(ws: sync.ServerConnection) -> None:
        message = ws.recv()
        received.append(message)
        ws.send(message)

    with blocking_server(handler) as (port, _):
        client = cli(
            "client", ws_uri(port), "--binary", "--binary-format", binary_format,
            "--send", sent, "--count", "1",
        )  # fmt: skip
        assert client.wait(STARTUP_TIMEOUT) == 0, client.describe()
    assert received == [b"\x00\xff\x10"]
    assert client.lines == [shown]


def test_client_headers_subprotocols_origin(cli: Callable[..., CLI]) -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.send(f"subprotocol={ws.subprotocol}")

    with blocking_server(handler, subprotocols=["chat.v1", "chat.v2"]) as (port, requests):
        client = cli(
            "client", ws_uri(port, "/room?x=1"),
            "-H", "X-Token: abc", "--header", "X-Two:  two words ", "-H", "X-Token: again",
            "--subprotocol", "chat.v2", "--subprotocol", "chat.v1",
            "--origin", "https://example.com",
            "--count", "1",
        )  # fmt: skip
        assert client.wait(STARTUP_TIMEOUT) == 0, client.describe()
    (request,) = requests
    assert request.headers.get_all("X-Token") == ["abc", "again"]
    assert request.headers["X-Two"] == "two words"
    assert request.subprotocols == ["chat.v2", "chat.v1"]
    assert request.origin == "https://example.com"
    assert request.target == "/room?x=1"
    # The default choice: the client's first offer that the server speaks (ServerConfig).
    assert client.lines == ["subprotocol=chat.v2"]
    assert "(subprotocol chat.v2)" in client.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-H", "no colon here"], "Name: value"),
        (["-H", ": empty name"], "Name: value"),
        (["--insecure"], "wss://"),
        (["--cafile", "/nonexistent.pem"], "wss://"),
        (["--binary", "--send", "zz"], "not valid hex"),
        (["--binary", "--binary-format", "base64", "--send", "!!"], "not valid base64"),
        (["--count", "-1"], "--count"),
    ],
)
def test_client_bad_arguments(cli: Callable[..., CLI], args: list[str], message: str) -> None:
    port = free_port()  # never reached: the arguments are refused first
    client = cli("client", ws_uri(port), *args)
    assert client.wait(STARTUP_TIMEOUT) == 2, client.describe()
    assert message in client.stderr, client.describe()
    assert_no_traceback(client)


def test_client_wss_cafile_insecure_and_refusal(
    cli: Callable[..., CLI], certificate: tuple[Path, Path], server_context: object
) -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.send("over TLS")

    with blocking_server(handler, ssl=server_context) as (port, _):
        uri = f"wss://{HOST}:{port}/"
        trusted = cli("client", uri, "--cafile", str(certificate[0]), "--count", "1")
        insecure = cli("client", uri, "--insecure", "--count", "1")
        untrusted = cli("client", uri, "--count", "1")
        assert trusted.wait(STARTUP_TIMEOUT) == 0, trusted.describe()
        assert insecure.wait(STARTUP_TIMEOUT) == 0, insecure.describe()
        assert untrusted.wait(STARTUP_TIMEOUT) == 1, untrusted.describe()
    assert trusted.lines == ["over TLS"]
    assert insecure.lines == ["over TLS"]
    assert untrusted.stderr.startswith("shakehands:"), untrusted.describe()
    assert "certificate" in untrusted.stderr.lower(), untrusted.describe()
    assert_no_traceback(untrusted)


def test_client_interactive_commands(cli: Callable[..., CLI]) -> None:
    closes: list[tuple[int | None, str | None]] = []

    def handler(ws: sync.ServerConnection) -> None:
        ws.send(b"\x00\xfe")
        try:
            for message in ws:
                ws.send(message)
        finally:  # 4000 is not a normal closure: the loop raises ConnectionClosedError
            closes.append((ws.close_code, ws.close_reason))

    with blocking_server(handler) as (port, _):
        client = cli("client", ws_uri(port), stdin=True)
        client.wait_for_text("< [binary] 00fe", STARTUP_TIMEOUT)
        client.write_stdin("/ping\n")
        client.wait_for_text("Pong: round-trip time")
        client.write_stdin("/ping hello\n/binary 01 02 ff\n")
        client.wait_for_text("< [binary] 0102ff")
        client.write_stdin("//not a command\n")
        client.wait_for_text("< /not a command")
        client.write_stdin("/bogus\n/binary xyz\n/close 99\n/help\n")
        client.wait_for_text("/ping [TEXT]")
        client.write_stdin("/close 4000 bye now\n")
        assert client.wait(STARTUP_TIMEOUT) == 0, client.describe()
    pings = [line for line in client.lines if line.startswith("Pong: round-trip time ")]
    assert len(pings) == 2 and all(line.endswith(" ms") for line in pings)
    # The server got our code and reason; the line shows its answer (the code, here no reason).
    assert closes == [(4000, "bye now")]
    assert client.lines[-1] == "Connection closed: 4000"
    assert "unknown command /bogus" in client.stderr
    assert "not valid hex" in client.stderr
    assert "99 is not a close code" in client.stderr
    assert_no_traceback(client)


def test_client_interactive_base64(cli: Callable[..., CLI]) -> None:
    def handler(ws: sync.ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with blocking_server(handler) as (port, _):
        client = cli("client", ws_uri(port), "--binary-format", "base64", "--binary", stdin=True)
        client.wait_for_text("Connected to", STARTUP_TIMEOUT)
        client.write_stdin("AAEC\n")  # --binary: every line is data
        client.wait_for_text("< [binary] AAEC")
        client.write_stdin("", close=True)
        assert client.wait() == 0, client.describe()
    assert client.lines[-1] == "Connection closed: 1000"


@pytest.mark.parametrize(
    ("code", "reason", "status"),
    [(1000, "done", 0), (1001, "", 0), (1011, "oops", 3), (4001, "custom", 3)],
)
def test_client_exit_status_follows_the_close(
    cli: Callable[..., CLI], code: int, reason: str, status: int
) -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.send("bye")
        ws.close(code, reason)

    with blocking_server(handler) as (port, _):
        interactive = cli("client", ws_uri(port), stdin=True)
        # Scripted: with --count 1 the client may close first, crossing the server's close
        # (then its own 1000 comes back: clean); waiting for a second message that never comes
        # makes it see the server's close, whose code decides.
        count = "1" if status == 0 else "2"
        scripted = cli("client", ws_uri(port), "--count", count)
        assert interactive.wait(STARTUP_TIMEOUT) == status, interactive.describe()
        assert scripted.wait(STARTUP_TIMEOUT) == status, scripted.describe()
        if status != 0:
            assert f"Connection closed: {code} {reason}" in scripted.describe()
    assert interactive.lines[-1] == f"Connection closed: {code} {reason}".rstrip()
    assert scripted.lines == ["bye"]


def test_client_fewer_messages_than_count(cli: Callable[..., CLI]) -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.send("only one")

    with blocking_server(handler) as (port, _):
        client = cli("client", ws_uri(port), "--count", "2")
        assert client.wait(STARTUP_TIMEOUT) == 3, client.describe()
    assert client.lines == ["only one"]
    assert "closed after 1 of 2 messages" in client.stderr


def test_client_count_timeout(cli: Callable[..., CLI]) -> None:
    stop = threading.Event()

    def handler(ws: sync.ServerConnection) -> None:
        ws.send("first")
        with contextlib.suppress(Exception):
            ws.recv(timeout=30)
        stop.set()

    with blocking_server(handler) as (port, _):
        client = cli("client", ws_uri(port), "--count", "2", "--timeout", "0.5")
        assert client.wait(STARTUP_TIMEOUT) == 3, client.describe()
    assert client.lines == ["first"]
    assert "1 of 2 messages after 0.5 s" in client.stderr
    assert "Connection closed: 1000" in client.stderr


def test_client_help_lists_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shakehands", "client", "--help"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert result.returncode == 0
    options = ["--header", "--subprotocol", "--origin", "--insecure", "--cafile", "--proxy"]
    options += ["--binary-format", "--binary", "--send", "--count", "--timeout", "/ping", "/close"]
    for option in options:
        assert option in result.stdout, option


# ---------------------------------------------------------------------------------------------
# The console script
# ---------------------------------------------------------------------------------------------


def _console_script() -> str | None:
    script = Path(sys.executable).parent / "shakehands"
    return str(script) if script.exists() else shutil.which("shakehands")


@pytest.mark.parametrize("args", [["--help"], ["echo", "--help"], ["client", "--help"]])
def test_console_script_help(args: list[str]) -> None:
    script = _console_script()
    if script is None:
        pytest.skip("the shakehands console script is not installed")
    result = subprocess.run(
        [script, *args], capture_output=True, text=True, timeout=STARTUP_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: shakehands")
    assert result.stderr == ""


def test_module_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shakehands", "--help"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert result.returncode == 0
    assert "echo" in result.stdout
    assert "client" in result.stdout
