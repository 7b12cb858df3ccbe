"""The blocking client: against the asyncio server, refusals, timeouts, TLS."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import ConnectionClosedError, ConnectionClosedOK, InvalidHandshake, InvalidURI, sync

from ..helpers import HOST, accept_for, make_certificate
from .sync_helpers import running, uri

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def asyncio_echo_port() -> Iterator[int]:
    """An asyncio echo server of the same library, in its own thread and loop."""
    ready = threading.Event()
    port: list[int] = []
    stop: list[Any] = []

    async def echo(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with shakehands.serve(echo, HOST, 0) as server:
            port.append(server.port)
            stop.append((asyncio.get_running_loop(), asyncio.Event()))
            ready.set()
            await stop[0][1].wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port[0]
    loop, event = stop[0]
    loop.call_soon_threadsafe(event.set)
    thread.join(10)


def test_blocking_client_against_the_asyncio_server(asyncio_echo_port: int) -> None:
    with sync.connect(f"ws://{HOST}:{asyncio_echo_port}/") as ws:
        for message in ["text", "🐱 猫", b"\x00" * 70_000, ""]:
            ws.send(message)
            assert ws.recv(timeout=10) == message
        assert ws.ping().wait(10) >= 0
    assert ws.close_code == 1000


def test_server_close_ends_iteration() -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.send("a")
        ws.send("b")
        ws.close(1000, "that is all")

    with running(handler) as server, sync.connect(uri(server)) as ws:
        assert list(ws) == ["a", "b"]
        assert (ws.close_code, ws.close_reason) == (1000, "that is all")
        with pytest.raises(ConnectionClosedOK):
            ws.send("late")


def test_bad_uri() -> None:
    with pytest.raises(InvalidURI):
        sync.connect("http://127.0.0.1/")


def test_http2_is_refused_by_the_blocking_client() -> None:
    """``http2=True`` is an asyncio-client option: the blocking client says so before any I/O
    rather than silently speaking HTTP/1.1."""
    for call in (sync.connect, sync.reconnect):
        with pytest.raises(TypeError, match="asyncio client"):
            call("wss://127.0.0.1:9/", http2=True)
    with pytest.raises(TypeError, match="asyncio client"):
        sync.unix_connect("/nonexistent.sock", "ws://localhost/", http2=True)


def test_open_timeout_on_a_server_that_never_answers() -> None:
    listener = socket.create_server((HOST, 0))
    with listener:
        port = listener.getsockname()[1]
        with pytest.raises(TimeoutError):
            sync.connect(f"ws://{HOST}:{port}/", open_timeout=0.2)


def test_connection_refused() -> None:
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(OSError):
        sync.connect(f"ws://{HOST}:{port}/")


def _make_cert(tmp: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key),
            "-out", str(cert), "-addext", f"subjectAltName=IP:{HOST},DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_echo(tmp_path: Path) -> None:
    made = _make_cert(tmp_path)
    if made is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = made
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    with running(ssl=server_context) as server:
        with sync.connect(uri(server, scheme="wss"), ssl=client_context) as ws:
            ws.send("secret")
            assert ws.recv(timeout=10) == "secret"
            ws.send(b"\xff" * 100_000)
            assert ws.recv(timeout=10) == b"\xff" * 100_000
        assert ws.close_code == 1000
        # A plain-text client on the TLS port fails its handshake; the server goes on.
        with pytest.raises((OSError, shakehands.InvalidHandshake)):
            sync.connect(uri(server), open_timeout=5)
        with sync.connect(uri(server, scheme="wss"), ssl=client_context) as ws:
            ws.send("again")
            assert ws.recv(timeout=10) == "again"


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate and a client context trusting it (skips the
    test when no certificate can be made)."""
    certificate = make_certificate(tmp_path)
    if certificate is None:
        pytest.skip("cannot make a test certificate")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(*certificate)
    return server_context, ssl.create_default_context(cafile=str(certificate[0]))


def test_tls_full_duplex_from_many_threads(tmp_path: Path) -> None:
    """Over TLS, the reader thread and sending threads use one OpenSSL connection: both ends send
    and receive at once (the server from its handler and a second thread, the client from two
    threads) and every message arrives whole and in order (the TLS lock of sync/base.py)."""
    server_context, client_context = _tls_contexts(tmp_path)
    count = 300

    def payload(side: bytes, i: int) -> bytes:
        return side + i.to_bytes(4, "big") * (1 + (i * 97) % 4000)

    def send_all(ws: Any, side: bytes) -> None:
        for i in range(count):
            ws.send(payload(side, i))

    server_got: list[bytes] = []

    def handler(ws: sync.ServerConnection) -> None:
        sender = threading.Thread(target=send_all, args=(ws, b"S"))
        sender.start()
        for _ in range(count):
            server_got.append(ws.recv(timeout=30))
        sender.join(30)
        ws.send(b"done")

    with (
        running(handler, ssl=server_context) as server,
        sync.connect(uri(server, scheme="wss"), ssl=client_context) as ws,
    ):
        sender = threading.Thread(target=send_all, args=(ws, b"C"))
        sender.start()
        client_got = [ws.recv(timeout=30) for _ in range(count)]
        sender.join(30)
        assert ws.recv(timeout=30) == b"done"
    assert client_got == [payload(b"S", i) for i in range(count)]
    assert server_got == [payload(b"C", i) for i in range(count)]


def test_wrong_scheme_is_named(tmp_path: Path) -> None:
    """ws:// to a TLS server and wss:// to a plain one: an error that names the scheme to use,
    for the blocking and the asyncio servers."""
    server_context, client_context = _tls_contexts(tmp_path)

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.send("hi")

    async def check_asyncio_servers() -> None:
        async with (
            shakehands.serve(handler, HOST, 0, ssl=server_context) as tls,
            shakehands.serve(handler, HOST, 0) as plain,
        ):
            await asyncio.to_thread(check, tls.port, plain.port)

    def check(tls_port: int, plain_port: int) -> None:
        with pytest.raises(InvalidHandshake, match="use a wss:// URI, not ws://"):
            sync.connect(f"ws://{HOST}:{tls_port}/")
        with pytest.raises(InvalidHandshake, match="use a ws:// URI, not wss://"):
            sync.connect(f"wss://{HOST}:{plain_port}/", ssl=client_context)

    with running(ssl=server_context) as tls, running() as plain:
        check(tls.port, plain.port)
    asyncio.run(check_asyncio_servers())


def test_keepalive_timeout_says_so() -> None:
    """A server that never answers pings: the error names the keepalive ping."""
    release = threading.Event()
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def serve_raw() -> None:
        sock, _ = listener.accept()
        with sock:
            request = b""
            while b"\r\n\r\n" not in request:
                request += sock.recv(4096)
            key = [
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            ][0]
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_for(key.decode()).encode()
                + b"\r\n\r\n"
            )
            release.wait(30)  # read nothing more: pings go unanswered

    thread = threading.Thread(target=serve_raw, daemon=True)
    thread.start()
    try:
        with (
            # close_timeout: the raw server never answers the 1011 either; recv() raises once the
            # client has waited that long for it (10 s by default).
            sync.connect(
                f"ws://{HOST}:{port}/", ping_interval=0.1, ping_timeout=0.1, close_timeout=1
            ) as ws,
            pytest.raises(ConnectionClosedError) as excinfo,
        ):
            ws.recv()
        assert excinfo.value.sent_code == 1011
        assert "keepalive ping not answered within 0.1 s" in str(excinfo.value), str(excinfo.value)
    finally:
        release.set()
        thread.join(10)
        listener.close()
