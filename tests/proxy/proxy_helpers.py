"""Real proxy servers for the proxy tests: tinyproxy (HTTP CONNECT), danted (SOCKS), and a TLS
front for tinyproxy (an ``https://`` proxy), each on a free port of 127.0.0.1 with its config
in a temporary directory, always stopped (process group killed) when the block ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import HOST, free_port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"exited with {process.returncode}: {text[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} after 15 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Our own process group (start_new_session): danted forks children, tinyproxy may too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class ProxyProcess:
    """A proxy daemon in the foreground: ``port``, ``log`` (its log file), ``url``."""

    def __init__(self, scheme: str, port: int, log: Path) -> None:
        self.scheme = scheme
        self.port = port
        self.log = log

    def url(self, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"{self.scheme}://{at}{HOST}:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def _daemon(
    argv: list[str], scheme: str, port: int, log: Path, what: str
) -> Iterator[ProxyProcess]:
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.with_suffix(".stderr").open("wb"),
        start_new_session=True,
    )
    try:
        try:
            _wait_for_port(port, process, log.with_suffix(".stderr"))
        except RuntimeError as exc:
            pytest.skip(f"{what} could not be started: {exc}")
        yield ProxyProcess(scheme, port, log)
    finally:
        _stop(process)


@contextlib.contextmanager
def tinyproxy(
    directory: Path, *, auth: tuple[str, str] | None = None, connect_ports: tuple[int, ...] = ()
) -> Iterator[ProxyProcess]:
    """A real tinyproxy on 127.0.0.1: ``BasicAuth`` if ``auth``, CONNECT allowed to every port
    unless ``connect_ports`` restricts it (then others get 403 "Access violation")."""
    executable = shutil.which("tinyproxy")
    if executable is None:
        pytest.skip("tinyproxy is not installed (Debian package tinyproxy)")
    port = free_port()
    log = directory / "tinyproxy.log"
    lines = [
        f"Port {port}",
        f"Listen {HOST}",
        "Timeout 30",
        "MaxClients 50",
        f"Allow {HOST}",
        "LogLevel Connect",
        f'LogFile "{log}"',
        f'PidFile "{directory / "tinyproxy.pid"}"',
    ]
    lines += [f"ConnectPort {p}" for p in connect_ports]
    if auth is not None:
        lines.append(f"BasicAuth {auth[0]} {auth[1]}")
    config = directory / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    with _daemon([executable, "-d", "-c", str(config)], "http", port, log, "tinyproxy") as p:
        yield p


@contextlib.contextmanager
def danted(directory: Path, *, blocked_port: int | None = None) -> Iterator[ProxyProcess]:
    """A real Dante SOCKS server (v4 and v5, no authentication) on 127.0.0.1; CONNECT to
    ``blocked_port`` is refused by a ``socks block`` rule."""
    executable = shutil.which("danted") or (
        "/usr/sbin/danted" if os.path.exists("/usr/sbin/danted") else None
    )
    if executable is None:
        pytest.skip("danted is not installed (Debian package dante-server)")
    port = free_port()
    log = directory / "danted.log"
    rules = [
        f"logoutput: {log}",
        f"internal: {HOST} port = {port}",
        f"external: {HOST}",
        "clientmethod: none",
        "socksmethod: none",
        f"client pass {{ from: {HOST}/32 to: 0.0.0.0/0 }}",
    ]
    if blocked_port is not None:
        rules.append(f"socks block {{ from: {HOST}/32 to: {HOST}/32 port = {blocked_port} }}")
    rules.append(f"socks pass {{ from: {HOST}/32 to: 0.0.0.0/0 log: connect }}")
    config = directory / "danted.conf"
    config.write_text("\n".join(rules) + "\n")
    with _daemon([executable, "-f", str(config), "-N", "1"], "socks5", port, log, "danted") as p:
        yield p


@contextlib.contextmanager
def microsocks(directory: Path, *, auth: tuple[str, str]) -> Iterator[ProxyProcess]:
    """A real microsocks (SOCKS5 with user name and password, RFC 1929) on 127.0.0.1: Dante
    checks SOCKS passwords against the system's users only, which tests must not create."""
    executable = shutil.which("microsocks")
    if executable is None:
        pytest.skip("microsocks is not installed (Debian package microsocks)")
    port = free_port()
    argv = [executable, "-i", HOST, "-p", str(port), "-u", auth[0], "-P", auth[1]]
    with _daemon(argv, "socks5", port, directory / "microsocks.log", "microsocks") as p:
        yield p


class TLSFront:
    """A TLS-terminating front for a plain proxy (test infrastructure: tinyproxy has no TLS
    listener): accepts TLS on ``port`` with ``context`` and relays the bytes to ``target``."""

    def __init__(self, context: ssl.SSLContext, target: int) -> None:
        self.context = context
        self.target = target
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._relay, HOST, 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def __enter__(self) -> TLSFront:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def url(self, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"https://{at}{HOST}:{self.port}"


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.create_server((HOST, 0), backlog=8) as sock:
        yield sock.getsockname()[1]
