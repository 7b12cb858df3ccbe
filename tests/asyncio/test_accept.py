"""Accepting connections and the opening handshake's timer, on real sockets.

On asyncio's selector loop without TLS the servers accept connections themselves
(:class:`shakehands.asyncio.server.DirectAccept`: no ``Task`` per connection); every test here
runs on that path and on asyncio's own (the ``accept_path`` fixture), for both server APIs.
The ``open_timeout`` of a server's connections is one timer for them all
(:class:`shakehands.asyncio.handshake.OpenTimeouts`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands.asyncio.server import DirectAccept

from ..helpers import OP_TEXT, upgrade_request
from .asyncio_helpers import (
    EchoListener,
    RawClient,
    echo_handler,
    echo_server,
    uri,
    wait_for_condition,
)

pytestmark = pytest.mark.timeout(60)

SRC = Path(shakehands.__file__).resolve().parent.parent


@pytest.fixture(params=["direct", "asyncio"])
def accept_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Whether servers take their accept over (``direct``) or keep asyncio's (``asyncio``)."""
    saved = DirectAccept.enabled
    DirectAccept.enabled = request.param == "direct"
    try:
        yield str(request.param)
    finally:
        DirectAccept.enabled = saved


async def echo_once(port: int, text: str) -> None:
    """Open a raw connection, handshake, get ``text`` echoed, close cleanly."""
    client = await RawClient.open(port)
    try:
        await client.handshake(port)
        client.send_frame(OP_TEXT, text.encode())
        fin, opcode, payload = await client.read_frame()
        assert (fin, opcode, payload) == (True, OP_TEXT, text.encode())
        client.send_frame(0x8, b"\x03\xe8")
        assert await client.read_close() == (1000, "")
        assert await client.read_eof() == b""
    finally:
        await client.close()


async def test_direct_accept_used_on_plain_selector_loop(api: str, accept_path: str) -> None:
    async with echo_server(api) as server:
        if accept_path == "direct":
            assert isinstance(server._acceptor, DirectAccept)
        else:
            assert server._acceptor is None
        await echo_once(server.port, "hello")


async def test_tls_server_keeps_asyncio_accept(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # The TLS handshake is awaited before connection_made: asyncio's Task stays.
    async with echo_server(api, ssl=server_context) as server:
        assert server._acceptor is None
        async with (
            asyncio.timeout(10),
            shakehands.connect(uri(server, scheme="wss"), ssl=client_context) as ws,
        ):
            await ws.send("secure")
            assert await ws.recv() == "secure"


async def test_many_simultaneous_connects(api: str, accept_path: str) -> None:
    # More connections at once than one wake-up of the listening socket accepts (backlog).
    async with echo_server(api, backlog=64) as server:
        async with asyncio.timeout(40):
            await asyncio.gather(*(echo_once(server.port, f"m{i}") for i in range(200)))
            await wait_for_condition(lambda: not server.connections)
        assert server._admitted == 0


async def test_handshake_cut_mid_head(api: str, accept_path: str) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(10):
            cut = [await RawClient.open(server.port) for _ in range(5)]
            for client in cut:
                client.send(upgrade_request(server.port)[:40])
            await wait_for_condition(lambda: len(server.connections) == 5)
            for i, client in enumerate(cut):
                if i % 2:
                    client.abort()  # a reset
                else:
                    await client.close()  # an EOF
            await wait_for_condition(lambda: not server.connections)
            await echo_once(server.port, "after")
            await wait_for_condition(lambda: not server.connections)
        assert server._admitted == 0


async def test_open_timeout_drops_every_slow_client(api: str, accept_path: str) -> None:
    # Slow clients arriving over several ticks of the timer are all dropped; the ones that
    # complete their handshake in time are not, and the timer stops once none is left.
    async with echo_server(api, open_timeout=0.4) as server:
        async with asyncio.timeout(20):
            slow = []
            for i in range(12):
                client = await RawClient.open(server.port)
                client.send(upgrade_request(server.port)[: 10 + i])
                slow.append(client)
                await asyncio.sleep(0.03)
            await echo_once(server.port, "in time")
            for client in slow:
                assert await client.read_eof() == b""
                await client.close()
            await wait_for_condition(lambda: not server.connections)
            timeouts = server._open_timeouts
            assert timeouts is not None
            await wait_for_condition(lambda: timeouts.handle is None)
            assert not timeouts.buckets


async def test_open_timeout_after_handshake_done_keeps_connection(
    api: str, accept_path: str
) -> None:
    async with (
        echo_server(api, open_timeout=0.2) as server,
        asyncio.timeout(10),
        shakehands.connect(uri(server)) as ws,
    ):
        await asyncio.sleep(0.5)  # past the timeout and its tick
        await ws.send("still open")
        assert await ws.recv() == "still open"
        timeouts = server._open_timeouts
        assert timeouts is not None
        await wait_for_condition(lambda: timeouts.handle is None)


async def test_shutdown_during_handshakes(api: str, accept_path: str) -> None:
    server = await echo_server(api, close_timeout=2)
    async with asyncio.timeout(20):
        halves = []
        for _ in range(8):
            client = await RawClient.open(server.port)
            client.send(upgrade_request(server.port)[:50])
            halves.append(client)
        open_client = await RawClient.open(server.port)
        await open_client.handshake(server.port)
        await wait_for_condition(lambda: len(server.connections) == 9)
        port = server.port
        server.close()
        for client in halves:
            assert await client.read_eof() == b""
            await client.close()
        assert (await open_client.read_close())[0] == 1001
        open_client.send_frame(0x8, b"\x03\xe9")
        assert await open_client.read_eof() == b""
        await open_client.close()
        await server.wait_closed()
        assert not server.connections
        assert server._admitted == 0
        # Closed: nothing listens any more.
        with pytest.raises(OSError):
            await RawClient.open(port)


async def test_max_connections_with_direct_accept(api: str, accept_path: str) -> None:
    async with echo_server(api, max_connections=2) as server:
        async with asyncio.timeout(10):
            held = [await RawClient.open(server.port) for _ in range(2)]
            for client in held:
                await client.handshake(server.port)
            extra = await RawClient.open(server.port)
            extra.send(upgrade_request(server.port))
            status, headers, _ = await extra.read_response()
            assert status == 503 and headers["retry-after"] == "1"
            await extra.close()
            for client in held:
                await client.close()
            await wait_for_condition(lambda: not server.connections)
            await echo_once(server.port, "room again")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
async def test_unix_server_direct_accept(api: str, accept_path: str) -> None:
    directory = tempfile.mkdtemp(prefix="sh-", dir="/tmp")  # short enough for sun_path
    path = Path(directory) / "ws.sock"
    if api == "coroutine":
        context: Any = shakehands.unix_serve(echo_handler, path)
    else:
        context = shakehands.unix_serve_callbacks(EchoListener(), path)
    try:
        async with context as server, asyncio.timeout(10):
            assert (server._acceptor is not None) == (accept_path == "direct")
            for text in ("one", "two"):
                client = RawClient(*await asyncio.open_unix_connection(str(path)))
                await client.handshake(80)
                client.send_frame(OP_TEXT, text.encode())
                assert (await client.read_frame())[2] == text.encode()
                await client.close()
            await wait_for_condition(lambda: not server.connections)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# A server process with only a few file descriptors to spare: accept() fails with EMFILE.
_FD_STARVED_SERVER = """
import asyncio, os, resource, sys
import shakehands
from shakehands.asyncio.server import DirectAccept

DirectAccept.enabled = sys.argv[1] == "direct"

class Echo(shakehands.Listener):
    def on_message(self, ws, message):
        ws.send(message)

def is_open(fd):  # the directory listing's own descriptor is closed by now
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

async def main():
    async with shakehands.serve_callbacks(Echo(), "127.0.0.1", 0, compression=None) as server:
        highest = max(fd for fd in map(int, os.listdir("/proc/self/fd")) if is_open(fd))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + 3, hard))
        print(server.port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
async def test_accept_out_of_file_descriptors_pauses_then_resumes(accept_path: str) -> None:
    # The server can hold 3 more sockets: the 4th accept fails (EMFILE). It says so, stops
    # accepting for a while instead of spinning, then accepts the waiting clients once the
    # first ones have left.
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FD_STARVED_SERVER,
        accept_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(30):
            port = int(await proc.stdout.readline())
            first = [await RawClient.open(port) for _ in range(3)]
            for client in first:
                await client.handshake(port)
            waiting = [await RawClient.open(port) for _ in range(3)]
            for client in waiting:
                client.send(upgrade_request(port))
            line = await proc.stderr.readline()
            assert b"socket.accept() out of system resource" in line
            for client in first:
                client.send_frame(0x8, b"\x03\xe8")
                assert await client.read_close() == (1000, "")
                assert await client.read_eof() == b""
                await client.close()
            for client in waiting:
                status, _ = await client.read_head()
                assert status == 101
                client.send_frame(OP_TEXT, b"late")
                assert (await client.read_frame())[2] == b"late"
                await client.close()
    finally:
        proc.kill()
        await proc.wait()
