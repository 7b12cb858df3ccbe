"""Liveness of the blocking server (``shakehands.sync``) against peers that do not read, against
more than 1 024 connections, and during shutdown under load; and the lingering close after a
refusal. Each test reproduces an attack on real sockets on 127.0.0.1.

- F2: a peer that never reads is dropped by keepalive, a ``send()`` blocked on it raises, a ping
  flood does not stop the reader, and ``shutdown()`` returns within ``close_timeout``;
- F3: connections whose file descriptor is above 1 023 still get keepalive and timers;
- F4: SIGTERM with 1 000 clients (995 streaming, 5 that never read) exits within
  ``close_timeout`` plus a margin, every streaming client getting 1001 after every echo that
  ``send()`` accepted;
- F5: a refused peer that keeps sending still reads the whole answer (no reset), and a peer
  failed for a protocol violation still reads its close frame.

The servers run in a child process (``sync_echo_server.py``) where the test needs their exit,
their descriptor limit or their memory; in a thread otherwise. Each F test failed on the tree
before the fix (the F5 violation test is a regression guard: that path already lingered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import ConnectionClosedError, sync

from ..helpers import HOST, OP_CLOSE, OP_PING, upgrade_request
from ..sync.sync_helpers import RawClient, running
from .hardening_helpers import EchoProcess, gather_limited, proc_available

pytestmark = pytest.mark.timeout(120)

SERVER_SCRIPT = Path(__file__).resolve().parent / "sync_echo_server.py"


def raise_nofile(target: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class SyncEchoProcess(EchoProcess):
    """``sync_echo_server.py`` in a child process: its port, its pid, its exit."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def command(self) -> list[str]:
        return [sys.executable, str(SERVER_SCRIPT), json.dumps(self.options)]


@contextlib.contextmanager
def bounded_server(handler: Any, **options: Any) -> Iterator[sync.Server]:
    """Like ``sync_helpers.running``, but a ``shutdown()`` that hangs fails the test in 10 s
    instead of hanging it until pytest-timeout (it did, before the fix of F2)."""
    server = sync.serve(handler, HOST, 0, **options)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield server
    finally:
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "shutdown() hangs"


def big_frame(payload_size: int) -> bytes:
    """A masked binary frame with a zero mask key (the payload goes out as is: no XOR cost)."""
    return struct.pack("!BBQ", 0x82, 0x80 | 127, payload_size) + b"\0\0\0\0" + b"x" * payload_size


def ping_frame(payload: bytes) -> bytes:
    return bytes((0x80 | OP_PING, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def fill_until_blocked(sock: socket.socket, chunk: bytes, stall: float = 0.5) -> int:
    """Send ``chunk`` until a send makes no progress for ``stall`` seconds; return bytes sent."""
    sock.settimeout(stall)
    total = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
        except TimeoutError:
            return total
        total += len(chunk)
    raise AssertionError("the server kept reading for 20 s")


# ---------------------------------------------------------------------------------------------
# F2: a peer that never reads
# ---------------------------------------------------------------------------------------------


class Outcome:
    """What the echo handler of the F2 tests ran into."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def handler(self, ws: sync.ServerConnection) -> None:
        self.started.set()
        try:
            for message in ws:
                ws.send(message)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_f2_keepalive_drops_a_peer_that_never_reads() -> None:
    outcome = Outcome()
    with bounded_server(
        outcome.handler, ping_interval=1, ping_timeout=1, close_timeout=1
    ) as server:
        raw = RawClient(server.port)
        raw.handshake()
        assert outcome.started.wait(5)
        start = time.monotonic()
        # Messages echoed by a handler whose send() blocks: both directions fill up.
        sent = fill_until_blocked(raw.sock, big_frame(2**16))
        assert sent > 0
        # Keepalive (1 s + 1 s from the handshake) drops it; the blocked send() raises.
        assert outcome.done.wait(5), "the handler is still blocked in send()"
        elapsed = time.monotonic() - start
        assert isinstance(outcome.error, ConnectionClosedError), outcome.error
        assert wait_for(lambda: not server.connections, 2)
        raw.close()
    print(f"\n[F2 non-reading peer] {sent / 2**20:.1f} MiB sent; dropped {elapsed:.2f} s later")
    assert elapsed < 5


def test_f2_ping_flood_from_a_peer_that_never_reads() -> None:
    outcome = Outcome()
    with bounded_server(
        outcome.handler, ping_interval=1, ping_timeout=1, close_timeout=1
    ) as server:
        raw = RawClient(server.port)
        raw.handshake()
        assert outcome.started.wait(5)
        flood = b"".join(ping_frame(b"%08d" % i) for i in range(1000))
        raw.sock.settimeout(0.5)
        start = time.monotonic()
        sent = 0
        error: BaseException | None = None
        while time.monotonic() - start < 10:
            try:
                raw.sock.sendall(flood)
                sent += len(flood)
            except TimeoutError:
                continue  # the server stopped reading (it used to, forever)
            except OSError as exc:  # reset: the server dropped us
                error = exc
                break
        elapsed = time.monotonic() - start
        assert error is not None, "the ping flood went on for 10 s"
        assert outcome.done.wait(2)
        assert wait_for(lambda: not server.connections, 2)
        raw.close()
    print(f"\n[F2 ping flood] {sent / 2**20:.1f} MiB of pings; dropped after {elapsed:.2f} s")
    assert elapsed < 5


def test_f2_shutdown_returns_with_a_peer_that_never_reads() -> None:
    outcome = Outcome()
    # No keepalive: only close_timeout can end it.
    server = sync.serve(outcome.handler, HOST, 0, ping_interval=None, close_timeout=1)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    raw = RawClient(server.port)
    try:
        raw.handshake()
        assert outcome.started.wait(5)
        fill_until_blocked(raw.sock, big_frame(2**16))
        start = time.monotonic()
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(5)
        elapsed = time.monotonic() - start
        assert not stopper.is_alive(), "shutdown() is still running after 5 s"
        assert outcome.done.wait(2)
        assert isinstance(outcome.error, ConnectionClosedError), outcome.error
    finally:
        raw.close()
    print(f"\n[F2 shutdown] returned in {elapsed:.2f} s (close_timeout 1 s)")
    assert elapsed < 1 + 2


# ---------------------------------------------------------------------------------------------
# F3: more than 1 024 connections
# ---------------------------------------------------------------------------------------------

MANY = 1150


def test_f3_keepalive_runs_on_descriptors_above_1023() -> None:
    raise_nofile(MANY * 2 + 1000)
    with SyncEchoProcess(ping_interval=1, ping_timeout=1, close_timeout=1) as server:
        selector = selectors.DefaultSelector()  # epoll: no descriptor limit either
        buffers: dict[socket.socket, bytes] = {}
        pending: set[socket.socket] = set()
        try:
            for _ in range(MANY):
                sock = socket.create_connection((HOST, server.port), timeout=10)
                sock.sendall(upgrade_request(server.port))
                sock.setblocking(False)
                buffers[sock] = b""
                pending.add(sock)
                selector.register(sock, selectors.EVENT_READ)
            # Read everything, never answer anything, until every server closes us.
            pinged: set[socket.socket] = set()
            closes: dict[socket.socket, int] = {}
            upgraded: set[socket.socket] = set()
            deadline = time.monotonic() + 30
            all_open: float | None = None
            while pending and time.monotonic() < deadline:
                if all_open is not None and time.monotonic() > all_open + 2 + 4:
                    break
                for key, _ in selector.select(0.5):
                    sock = key.fileobj  # type: ignore[assignment]
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        selector.unregister(sock)
                        pending.discard(sock)
                        continue
                    buffer = buffers[sock] + data
                    if sock not in upgraded:
                        if b"\r\n\r\n" not in buffer:
                            buffers[sock] = buffer
                            continue
                        head, _, buffer = buffer.partition(b"\r\n\r\n")
                        assert head.startswith(b"HTTP/1.1 101"), head[:40]
                        upgraded.add(sock)
                        if len(upgraded) == MANY:
                            all_open = time.monotonic()
                    # Frames from the server (unmasked, small): pings, then a close frame.
                    while len(buffer) >= 2 and len(buffer) >= 2 + (buffer[1] & 0x7F):
                        opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
                        payload, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                        if opcode == OP_PING:
                            pinged.add(sock)
                        elif opcode == OP_CLOSE:
                            closes[sock] = struct.unpack("!H", payload[:2])[0]
                    buffers[sock] = buffer
            assert len(upgraded) == MANY, f"{len(upgraded)} of {MANY} handshakes completed"
            assert all_open is not None
            still_open = len(pending)
            print(
                f"\n[F3] {MANY} connections: {len(pinged)} pinged, {len(closes)} close frames "
                f"({set(closes.values())}), {still_open} still open "
                f"{time.monotonic() - all_open:.1f} s after the last handshake"
            )
            assert still_open == 0, f"{still_open} connections never timed out"
            assert len(pinged) == MANY
            assert set(closes.values()) <= {1011}
        finally:
            selector.close()
            for sock in buffers:
                sock.close()


# ---------------------------------------------------------------------------------------------
# F4: shutdown under load
# ---------------------------------------------------------------------------------------------

BUSY = 1000
STUCK = 5  # of which raw peers that send but never read: their handlers block in send()
CLOSE_TIMEOUT = 3.0
PAD = "x" * 1000
INTERVAL = 1.0  # each client sends a message a second: 1 000 messages a second in all


def stuck_peer(port: int) -> socket.socket:
    """A peer that sends until the server's echoes fill every buffer, and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # less to send before that
    sock.settimeout(10)
    sock.connect((HOST, port))
    sock.sendall(upgrade_request(port, "/?stuck"))
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: nothing of the frames after it
    assert response.startswith(b"HTTP/1.1 101"), response
    fill_until_blocked(sock, big_frame(2**16))
    return sock


async def busy_clients(port: int, process: subprocess.Popen[str]) -> tuple[list[Any], float]:
    async def open_client(cid: int) -> shakehands.ClientConnection:
        return await shakehands.connect(f"ws://{HOST}:{port}/?{cid}", max_queue=100000)

    clients = await gather_limited(
        [lambda cid=cid: open_client(cid) for cid in range(BUSY - STUCK)]
    )
    stuck = [stuck_peer(port) for _ in range(STUCK)]
    stop = asyncio.Event()

    async def stream(cid: int, ws: shakehands.ClientConnection) -> None:
        # Spread out: 1 000 messages arriving together would wake 1 000 threads together.
        await asyncio.sleep(random.random() * INTERVAL)
        i = 0
        while not stop.is_set():
            try:
                await ws.send(f"{cid}:{i}:{PAD}")
            except shakehands.ConnectionClosed:
                return
            i += 1
            await asyncio.sleep(INTERVAL)

    async def collect(ws: shakehands.ClientConnection) -> list[str]:
        received = []
        with contextlib.suppress(shakehands.ConnectionClosed):  # the close code is checked
            async for item in ws:
                assert isinstance(item, str)
                received.append(item)
        return received

    senders = [asyncio.ensure_future(stream(cid, ws)) for cid, ws in enumerate(clients)]
    readers = [asyncio.ensure_future(collect(ws)) for ws in clients]
    await asyncio.sleep(2)  # everyone streaming
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(subprocess.TimeoutExpired):
        await loop.run_in_executor(None, process.wait, CLOSE_TIMEOUT + 12)
    elapsed = time.monotonic() - start
    stop.set()
    for task in senders:
        task.cancel()
    done, _ = await asyncio.wait(readers, timeout=10)
    results = [task.result() if task in done else None for task in readers]
    for task in readers:
        task.cancel()
    for ws in clients:
        await ws.close()
    for sock in stuck:
        sock.close()
    return [(ws, received) for ws, received in zip(clients, results, strict=True)], elapsed


def test_f4_sigterm_with_1000_busy_clients() -> None:
    raise_nofile(BUSY * 2 + 1000)
    with SyncEchoProcess(close_timeout=CLOSE_TIMEOUT, ping_interval=None) as server:
        assert server.process is not None
        pairs, elapsed = asyncio.run(busy_clients(server.port, server.process))
        alive = server.process.poll() is None
        if alive:
            server.process.kill()
        out, err = server.process.communicate(timeout=30)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        report = json.loads(lines[-1]) if lines else {"shutdown": None, "accepted": {}}
        codes: dict[int | None, int] = {}
        for ws, _ in pairs:
            codes[ws.close_code] = codes.get(ws.close_code, 0) + 1
        total = sum(len(received or []) for _, received in pairs)
        print(
            f"\n[F4] {BUSY - STUCK} busy + {STUCK} stuck: SIGTERM -> exit {elapsed:.2f} s "
            f"(shutdown() {report['shutdown']}), "
            f"close codes {codes}, {total} echoes"
        )
        assert not alive, f"the server was still running {elapsed:.0f} s after SIGTERM"
        assert server.process.returncode == 0
        assert "Traceback" not in err
        assert elapsed < CLOSE_TIMEOUT + 2
        accepted: dict[str, int] = report["accepted"]
        for cid, (ws, received) in enumerate(pairs):
            assert ws.close_code == 1001, (cid, ws.close_code)
            assert received is not None
            # In order, nothing lost: every echo send() accepted came before the 1001.
            assert received == [f"{cid}:{i}:{PAD}" for i in range(len(received))]
            assert len(received) >= accepted.get(str(cid), 0), cid


# ---------------------------------------------------------------------------------------------
# F5: the lingering close after a refusal
# ---------------------------------------------------------------------------------------------


def refused_while_sending(port: int, first: bytes) -> tuple[int, bytes]:
    """Send ``first`` (a request to refuse), then 20 kB in 1 kB writes 10 ms apart (the server
    reads them one by one), then read the answer."""
    sock = socket.create_connection((HOST, port), timeout=10)
    try:
        sock.sendall(first)
        for _ in range(20):
            time.sleep(0.01)
            sock.sendall(os.urandom(1000))
        sock.shutdown(socket.SHUT_WR)
        response = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    finally:
        sock.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    assert length is not None and len(body) == int(length.group(1)), (head, body)
    return status, body


@pytest.mark.parametrize("first", ["bad request", "random bytes"])
def test_f5_refused_peer_that_keeps_sending_reads_the_answer(first: str) -> None:
    trials = 30
    results: list[int | str] = []

    def trial() -> None:
        if first == "bad request":
            data = b"GET / HTTP/1.1\r\nHost: \r\n\r\n"  # an empty Host: 400
        else:
            data = b"\x16\x03\x01" + os.urandom(61)  # not HTTP at all: 400 at once
        try:
            results.append(refused_while_sending(server.port, data)[0])
        except (OSError, IndexError, ValueError, AssertionError) as exc:
            results.append(type(exc).__name__)

    with running(close_timeout=5) as server:
        threads = [threading.Thread(target=trial) for _ in range(trials)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    lost = [r for r in results if r != 400]
    print(f"\n[F5 {first}] {len(lost)} of {trials} answers lost ({set(lost)})")
    assert results == [400] * trials


def test_f5_failed_connection_lingers_until_eof() -> None:
    # A protocol violation (an unmasked frame), then more bytes: the close frame must arrive.
    lost = 0
    with running(close_timeout=5) as server:
        for _ in range(10):
            raw = RawClient(server.port)
            raw.handshake()
            raw.send(b"\x81\x05hello")  # unmasked: 1002
            try:
                for _ in range(20):
                    time.sleep(0.002)
                    raw.send(os.urandom(1000))
                raw.sock.shutdown(socket.SHUT_WR)
                assert raw.read_close()[0] == 1002
                raw.read_eof()
            except (ConnectionResetError, BrokenPipeError, EOFError):
                lost += 1
            raw.close()
    assert lost == 0


# ---------------------------------------------------------------------------------------------
# Memory per idle connection (documented in docs/security.md)
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not proc_available(), reason="needs /proc")
def test_idle_memory_per_connection() -> None:
    count = 400
    with SyncEchoProcess() as server:
        time.sleep(0.3)
        before = server.status("VmRSS")
        threads_before = server.status("Threads")

        async def run() -> tuple[int, int]:
            clients = await gather_limited(
                [lambda: shakehands.connect(f"ws://{HOST}:{server.port}/") for _ in range(count)]
            )
            for ws in clients[:5]:
                await ws.send("warm")
                assert await ws.recv() == "warm"
            await asyncio.sleep(0.5)
            rss, threads = server.status("VmRSS"), server.status("Threads")
            for ws in clients:
                await ws.close()
            return rss, threads

        after, threads = asyncio.run(run())
    per_connection = (after - before) / count / 1024  # KiB
    print(
        f"\n[idle] {count} connections: {per_connection:.1f} KiB RSS and "
        f"{(threads - threads_before) / count:.1f} threads per connection"
    )
    assert threads - threads_before == 2 * count
    assert per_connection < 128
