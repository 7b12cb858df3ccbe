"""Unix domain socket servers: ``unix_serve`` (coroutine), ``unix_serve_callbacks`` (callback)
and ``shakehands.sync.unix_serve`` (blocking), each with a real client over the socket.

The client is the ``websockets`` library's (``unix_connect``): a second implementation. The
socket file's life is checked too: created, replaced when stale (a crashed run), refused when a
server still listens there or when the path is not a socket, removed on close.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import unix_connect as ws_unix_connect
from websockets.sync.client import unix_connect as ws_sync_unix_connect

import shakehands
from shakehands import Request, Response, sync
from shakehands.asyncio.server import ServeContext

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")

TIMEOUT = 30.0  # generous: the machine is shared


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A socket path short enough for ``sun_path`` (108 bytes): not under pytest's tmp_path."""
    directory = tempfile.mkdtemp(prefix="sh-", dir="/tmp")
    try:
        yield Path(directory) / "ws.sock"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def echo(ws: shakehands.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class Echo(shakehands.Listener):
    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.send(message)


def start(api: str, path: Path | str | None, **options: Any) -> ServeContext[Any]:
    if api == "coroutine":
        return shakehands.unix_serve(echo, path, **options)
    return shakehands.unix_serve_callbacks(Echo(), path, **options)


def sync_echo(ws: sync.ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def is_socket(path: Path) -> bool:
    return path.is_socket()


def make_stale(path: Path) -> None:
    """A socket file with nothing listening: what a killed server leaves behind."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # closed, not unlinked


# --- the asyncio servers --------------------------------------------------------------------


async def test_echo_over_unix_socket(api: str, sock_path: Path) -> None:
    async with start(api, sock_path) as server:
        assert is_socket(sock_path)
        async with ws_unix_connect(str(sock_path), "ws://localhost/chat") as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello"
            await ws.send(b"\x00\xff")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\xff"
        assert len(server.sockets) == 1
    assert not sock_path.exists(), "the socket file is removed on close"


async def test_options_apply_over_unix_socket(api: str, sock_path: Path) -> None:
    seen: list[Request] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request)
        if request.path == "/forbidden":
            return Response(403, body=b"no\n")
        return None

    async with start(api, sock_path, process_request=process_request, subprotocols=["v1"]):
        async with ws_unix_connect(
            str(sock_path),
            "ws://localhost/ok",
            subprotocols=["v1"],  # type: ignore[list-item]
        ) as ws:
            assert ws.subprotocol == "v1"
            await ws.send("x")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x"
        with pytest.raises(Exception, match="403"):
            async with ws_unix_connect(str(sock_path), "ws://localhost/forbidden"):
                pass
    assert [r.path for r in seen] == ["/ok", "/forbidden"]
    assert seen[0].remote_address == ""  # an unnamed Unix socket: no address


async def test_pathlike_and_str_paths(api: str, sock_path: Path) -> None:
    async with start(api, str(sock_path)):
        assert is_socket(sock_path)
    assert not sock_path.exists()


async def test_stale_socket_file_is_replaced(api: str, sock_path: Path) -> None:
    make_stale(sock_path)
    assert is_socket(sock_path)
    async with start(api, sock_path), ws_unix_connect(str(sock_path), "ws://localhost/") as ws:
        await ws.send("after a crash")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "after a crash"
    assert not sock_path.exists()


async def test_live_socket_is_not_stolen(api: str, sock_path: Path) -> None:
    async with start(api, sock_path):
        with pytest.raises(OSError) as info:
            async with start(api, sock_path):
                pass
        assert info.value.errno == errno.EADDRINUSE
        assert "already listening" in str(info.value)
        # The first server still owns its file and still answers.
        async with ws_unix_connect(str(sock_path), "ws://localhost/") as ws:
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "still here"
    assert not sock_path.exists()


async def test_path_that_is_not_a_socket_is_left_alone(api: str, sock_path: Path) -> None:
    sock_path.write_text("precious")
    with pytest.raises(FileExistsError, match="not a socket"):
        async with start(api, sock_path):
            pass
    assert sock_path.read_text() == "precious"


async def test_file_replaced_by_another_server_is_not_removed(api: str, sock_path: Path) -> None:
    async with start(api, sock_path):
        # Someone removes our file and binds the path again: closing must not delete theirs.
        os.unlink(sock_path)
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(sock_path))
        other.listen()
    try:
        assert is_socket(sock_path)
    finally:
        other.close()


async def test_sock_option(api: str, sock_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    async with (
        start(api, None, sock=listener),
        ws_unix_connect(str(sock_path), "ws://localhost/") as ws,
    ):
        await ws.send("given socket")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "given socket"
    assert sock_path.exists(), "a socket the caller bound is the caller's file to remove"


async def test_path_or_sock_exactly_one(api: str, sock_path: Path) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        start(api, None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener, pytest.raises(TypeError, match="exactly one"):
        start(api, sock_path, sock=listener)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with tcp, pytest.raises(ValueError, match="AF_UNIX"):
        start(api, None, sock=tcp)


async def test_unknown_option_is_refused(api: str, sock_path: Path) -> None:
    with pytest.raises(TypeError, match="max_mesage_size"):
        start(api, sock_path, max_mesage_size=10)
    assert not sock_path.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets: Linux only")
async def test_abstract_socket(api: str) -> None:
    name = f"\0shakehands-test-{os.getpid()}-{api}"
    async with start(api, name), ws_unix_connect(name, "ws://localhost/") as ws:
        await ws.send("abstract")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "abstract"


async def test_tls_over_unix_socket(
    api: str, sock_path: Path, server_context: Any, client_context: Any
) -> None:
    async with (
        start(api, sock_path, ssl=server_context),
        ws_unix_connect(
            str(sock_path), "wss://127.0.0.1/", ssl=client_context, server_hostname="127.0.0.1"
        ) as ws,
    ):
        await ws.send("secret")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "secret"


# --- the blocking server --------------------------------------------------------------------


def serving(server: sync.Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"stop_signals": ()})
    thread.start()
    return thread


def test_sync_echo_over_unix_socket(sock_path: Path) -> None:
    with sync.unix_serve(sync_echo, sock_path, close_timeout=5) as server:
        thread = serving(server)
        assert is_socket(sock_path)
        with ws_sync_unix_connect(str(sock_path), "ws://localhost/") as ws:
            ws.send("hello")
            assert ws.recv(timeout=TIMEOUT) == "hello"
            ws.send(b"\x01\x02")
            assert ws.recv(timeout=TIMEOUT) == b"\x01\x02"
        server.shutdown()
        thread.join(TIMEOUT)
    assert not sock_path.exists()


def test_sync_process_request_over_unix_socket(sock_path: Path) -> None:
    def process_request(request: Request) -> Response | None:
        return Response(404, body=b"nothing here\n") if request.path != "/ok" else None

    with sync.unix_serve(sync_echo, sock_path, process_request=process_request) as server:
        thread = serving(server)
        with ws_sync_unix_connect(str(sock_path), "ws://localhost/ok") as ws:
            ws.send("ok")
            assert ws.recv(timeout=TIMEOUT) == "ok"
        with pytest.raises(Exception, match="404"):
            ws_sync_unix_connect(str(sock_path), "ws://localhost/nope")
        server.shutdown()
        thread.join(TIMEOUT)


def test_sync_stale_live_and_foreign_files(sock_path: Path) -> None:
    make_stale(sock_path)
    with sync.unix_serve(sync_echo, sock_path) as server:
        thread = serving(server)
        with pytest.raises(OSError) as info:
            sync.unix_serve(sync_echo, sock_path)
        assert info.value.errno == errno.EADDRINUSE
        with ws_sync_unix_connect(str(sock_path), "ws://localhost/") as ws:
            ws.send("x")
            assert ws.recv(timeout=TIMEOUT) == "x"
        server.shutdown()
        thread.join(TIMEOUT)
    assert not sock_path.exists()
    sock_path.write_text("precious")
    with pytest.raises(FileExistsError):
        sync.unix_serve(sync_echo, sock_path)
    assert sock_path.read_text() == "precious"


def test_sync_path_or_sock(sock_path: Path) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        sync.unix_serve(sync_echo)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen()
    with sync.unix_serve(sync_echo, sock=listener) as server:
        thread = serving(server)
        with ws_sync_unix_connect(str(sock_path), "ws://localhost/") as ws:
            ws.send("given")
            assert ws.recv(timeout=TIMEOUT) == "given"
        server.shutdown()
        thread.join(TIMEOUT)
    assert sock_path.exists()


async def test_a_unix_server_has_no_port(api: str, sock_path: Path) -> None:
    async with start(api, sock_path) as server:
        with pytest.raises(ValueError, match="no port"):
            _ = server.port
        assert server.sockets[0].getsockname() == str(sock_path)


def test_a_blocking_unix_server_has_no_port(sock_path: Path) -> None:
    with (
        sync.unix_serve(sync_echo, sock_path) as server,
        pytest.raises(ValueError, match="no port"),
    ):
        _ = server.port


# --- shakehands' own Unix clients against the three servers ----------------------------------


async def test_own_client_over_unix_socket(api: str, sock_path: Path) -> None:
    async with start(api, sock_path):
        async with shakehands.unix_connect(str(sock_path), "ws://localhost/chat") as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello"
            await ws.send(b"\x00\xff")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\xff"

        # The blocking client, from a thread (the server runs on this loop).
        def talk() -> str | bytes:
            with sync.unix_connect(str(sock_path), "ws://localhost/") as ws:
                ws.send("from a thread")
                return ws.recv(timeout=TIMEOUT)

        assert await asyncio.to_thread(talk) == "from a thread"
    assert not sock_path.exists()


def test_own_clients_against_sync_unix_server(sock_path: Path) -> None:
    with sync.unix_serve(sync_echo, sock_path, close_timeout=5) as server:
        thread = serving(server)
        with sync.unix_connect(str(sock_path), "ws://localhost/") as ws:
            ws.send("hello")
            assert ws.recv(timeout=TIMEOUT) == "hello"

        async def talk() -> str | bytes:
            async with shakehands.unix_connect(str(sock_path)) as ws:
                await ws.send(b"\x01")
                return await asyncio.wait_for(ws.recv(), TIMEOUT)

        assert asyncio.run(talk()) == b"\x01"
        server.shutdown()
        thread.join(TIMEOUT)
    assert not sock_path.exists()
