"""Each way connecting can fail raises its own exception, which says what happened (issue 15,
item 8): DNS failure, connection refused, a timeout naming its phase, TLS verification with its
reason, "not a WebSocket server" with the status and the body's first bytes."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import (
    ConnectionRefused,
    HandshakeInterrupted,
    HostNotFound,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    NotWebSocketServer,
    OpenTimeout,
    Response,
    ShakehandsError,
    TLSVerificationError,
    sync,
)

from ..helpers import HOST, free_port
from ..sync.sync_helpers import running
from .client_helpers import routes, silent_server, unreachable_port, web_server
from .conftest import Client

pytestmark = pytest.mark.timeout(60)


async def echo(ws: shakehands.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def test_host_not_found(client: Client) -> None:
    # .invalid never resolves (RFC 6761 §6.4).
    with pytest.raises(HostNotFound) as caught:
        await client.open("ws://no-such-host.invalid/")
    assert "cannot resolve 'no-such-host.invalid'" in str(caught.value)
    assert isinstance(caught.value, OSError) and isinstance(caught.value, ShakehandsError)
    assert caught.value.errno is not None


async def test_connection_refused(client: Client) -> None:
    port = free_port()
    with pytest.raises(ConnectionRefused) as caught:
        await client.open(f"ws://{HOST}:{port}/")
    assert f"{HOST}:{port} refused the connection" in str(caught.value)
    # Old code catching the standard exceptions still works.
    assert isinstance(caught.value, ConnectionRefusedError)
    assert isinstance(caught.value, OSError)


async def test_timeout_during_tcp_connect(client: Client) -> None:
    with unreachable_port() as port:
        if port is None:
            pytest.skip("this kernel does not drop SYNs to a full accept queue")
        with pytest.raises(OpenTimeout) as caught:
            await client.open(f"ws://{HOST}:{port}/", open_timeout=0.5)
    assert caught.value.phase == "TCP connect"
    assert "timed out during the TCP connect" in str(caught.value)
    assert isinstance(caught.value, TimeoutError)


async def test_timeout_during_tls_handshake(client: Client) -> None:
    with silent_server() as port, pytest.raises(OpenTimeout) as caught:
        await client.open(f"wss://{HOST}:{port}/", open_timeout=0.5)
    assert caught.value.phase == "TLS handshake"
    assert "timed out during the TLS handshake" in str(caught.value)


async def test_timeout_during_websocket_handshake(client: Client) -> None:
    with silent_server() as port, pytest.raises(OpenTimeout) as caught:
        await client.open(f"ws://{HOST}:{port}/", open_timeout=0.5)
    assert caught.value.phase == "WebSocket handshake"
    assert f"opening handshake with ws://{HOST}:{port}/ timed out" in str(caught.value)


async def test_tls_untrusted_certificate(client: Client, server_context: ssl.SSLContext) -> None:
    async with shakehands.serve(echo, HOST, 0, ssl=server_context) as server:
        with pytest.raises(TLSVerificationError) as caught:
            # The system's trust store does not know the test's self-signed certificate.
            await client.open(f"wss://{HOST}:{server.port}/")
    error = caught.value
    assert "self-signed certificate" in error.verify_message
    assert str(error) == f"TLS certificate of {HOST} rejected: {error.verify_message}"
    assert isinstance(error, ssl.SSLCertVerificationError)


async def test_tls_hostname_mismatch(
    client: Client, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with shakehands.serve(echo, HOST, 0, ssl=server_context) as server:
        with pytest.raises(TLSVerificationError) as caught:
            await client.open(
                f"wss://{HOST}:{server.port}/",
                ssl=client_context,
                server_hostname="other.example",
            )
    assert "other.example" in str(caught.value)
    assert "Hostname mismatch" in caught.value.verify_message


async def test_tls_trusted_certificate_connects(
    client: Client, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with shakehands.serve(echo, HOST, 0, ssl=server_context) as server:
        port = server.port
        opened = await client.open(f"wss://{HOST}:{port}/", ssl=client_context)
    assert opened.uri == f"wss://{HOST}:{port}/"


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_not_a_websocket_server(client: Client, version: str) -> None:
    with web_server(version) as port, pytest.raises(NotWebSocketServer) as caught:
        await client.open(f"ws://{HOST}:{port}/")
    message = str(caught.value)
    assert message.startswith("not a WebSocket server: answered HTTP 200 OK")
    assert "<!doctype html><title>Just a web page</title>" in message
    assert message.endswith("...")  # the body is longer than the excerpt
    assert caught.value.response.status == 200
    assert isinstance(caught.value, InvalidStatus)


async def test_refusal_has_status_and_body(client: Client) -> None:
    refuse = routes({"/": Response(403, body="members only")})
    async with shakehands.serve(echo, HOST, 0, process_request=refuse) as server:
        with pytest.raises(InvalidStatus) as caught:
            await client.open(f"ws://{HOST}:{server.port}/")
    assert type(caught.value) is InvalidStatus
    assert (
        str(caught.value) == "server refused the upgrade: HTTP 403 Forbidden; body: b'members only'"
    )


@pytest.mark.parametrize(
    "uri", ["http://example.com/", "ws://", "ws://host/#fragment", "ws://user@host/"]
)
async def test_invalid_uri(client: Client, uri: str) -> None:
    with pytest.raises(InvalidURI):
        await client.open(uri)


async def test_unix_socket_missing(client: Client, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await client.open("ws://localhost/", unix_path=str(tmp_path / "none.sock"))


async def test_unix_socket_refused(client: Client, tmp_path: Path) -> None:
    import socket

    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # bound, never listening: connecting is refused
        with pytest.raises(ConnectionRefused) as caught:
            await client.open("ws://localhost/", unix_path=str(path))
    assert f"{path} refused the connection" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "connection closed before any response"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", "during the handshake"),
    ],
)
async def test_server_closes_during_handshake(client: Client, answer: bytes, message: str) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hang_up, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(HandshakeInterrupted, match=message) as caught:
            await client.open(f"ws://{HOST}:{port}/")
    assert isinstance(caught.value, InvalidResponse)


def test_blocking_client_dns_lookup_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver takes no timeout; a lookup that hangs (an unreachable DNS server, which
    # cannot be staged on loopback) must not hold connect() past open_timeout.
    real_getaddrinfo = socket.getaddrinfo
    release = threading.Event()

    def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":
            release.wait(10)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    started = time.monotonic()
    try:
        with pytest.raises(OpenTimeout) as caught:
            sync.connect("ws://slow.example/", open_timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 5
    assert caught.value.phase == "DNS lookup"
    assert "timed out during the DNS lookup" in str(caught.value)


def test_blocking_client_resolves_names_within_the_deadline() -> None:
    # A name (not an address literal) goes through the bounded lookup, for real.
    with running() as server, sync.connect(f"ws://localhost:{server.port}/", open_timeout=10) as ws:
        ws.send("by name")
        assert ws.recv(timeout=10) == "by name"
