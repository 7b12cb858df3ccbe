"""Bytes in both directions at once through tunnels, TLS inside TLS included (wss:// through an
https:// proxy: the blocking client's relay threads), and nothing left behind after a close."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from pathlib import Path

import pytest

import shakehands
import shakehands.sync

from ..helpers import HOST, make_certificate
from .proxy_helpers import TLSFront, danted, tinyproxy

pytestmark = pytest.mark.timeout(90)

# Sent before reading any echo: more than the socket buffers hold, less than max_queue
# messages, so that a relay which let one direction block the other would hang.
MESSAGES = [os.urandom(512 * 1024) for _ in range(8)]


def relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("shakehands-proxy-")]


def sync_streams(uri: str, **kwargs: object) -> None:
    with shakehands.sync.connect(uri, open_timeout=30, **kwargs) as ws:  # type: ignore[arg-type]
        for message in MESSAGES:
            ws.send(message)
        for message in MESSAGES:
            assert ws.recv(timeout=30) == message
    assert ws.close_code == 1000


async def asyncio_streams(uri: str, **kwargs: object) -> None:
    async with asyncio.timeout(60):
        async with shakehands.connect(uri, open_timeout=30, **kwargs) as ws:  # type: ignore[arg-type]
            for message in MESSAGES:
                await ws.send(message)
            for message in MESSAGES:
                assert await ws.recv() == message
        assert ws.close_code == 1000


@pytest.fixture
def client_ssl(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.mark.parametrize("client", ["asyncio", "sync"])
@pytest.mark.usefixtures("trust_test_certificate")
def test_wss_through_https_proxy_both_directions(
    client: str,
    tmp_path: Path,
    wss_port: int,
    server_context: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
) -> None:
    with tinyproxy(tmp_path) as proxy, TLSFront(server_context, proxy.port) as front:
        uri = f"wss://{HOST}:{wss_port}/"
        for _ in range(2):
            if client == "sync":
                sync_streams(uri, proxy=front.url(), ssl=client_ssl)
            else:
                asyncio.run(asyncio_streams(uri, proxy=front.url(), ssl=client_ssl))
        # The relay threads (blocking client) end with the connection.
        deadline = time.monotonic() + 10
        while relay_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay_threads() == []


@pytest.mark.parametrize("client", ["asyncio", "sync"])
@pytest.mark.parametrize("via", ["http", "socks5"])
def test_ws_both_directions(client: str, via: str, tmp_path: Path, ws_port: int) -> None:
    daemon = tinyproxy(tmp_path) if via == "http" else danted(tmp_path)
    with daemon as proxy:
        uri = f"ws://{HOST}:{ws_port}/"
        if client == "sync":
            sync_streams(uri, proxy=proxy.url())
        else:
            asyncio.run(asyncio_streams(uri, proxy=proxy.url()))


def test_server_closing_ends_relay(
    tmp_path: Path,
    server_context: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server closes first (1001 on shutdown): the blocking client sees the close and the
    # relay threads end.
    from ..sync.sync_helpers import running

    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))

    def close_at_once(ws: shakehands.sync.ServerConnection) -> None:
        ws.close(4000, "bye")

    with (
        running(close_at_once, ssl=server_context) as server,
        tinyproxy(tmp_path) as proxy,
        TLSFront(server_context, proxy.port) as front,
    ):
        uri = f"wss://{HOST}:{server.port}/"
        with shakehands.sync.connect(uri, proxy=front.url(), ssl=client_ssl) as ws:
            with pytest.raises(shakehands.ConnectionClosed):
                ws.recv(timeout=30)
            assert ws.close_code == 4000
        deadline = time.monotonic() + 10
        while relay_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay_threads() == []


@pytest.mark.parametrize("client", ["asyncio", "sync"])
@pytest.mark.usefixtures("trust_test_certificate")
def test_untrusted_server_through_https_proxy(
    client: str, tmp_path: Path, wss_port: int, server_context: ssl.SSLContext
) -> None:
    # TLS inside TLS: the proxy is trusted, the server is checked against another CA and fails;
    # the relay (blocking client) ends with the attempt.
    (tmp_path / "other").mkdir()
    other = make_certificate(tmp_path / "other")
    assert other is not None
    context = ssl.create_default_context(cafile=str(other[0]))
    with tinyproxy(tmp_path) as proxy, TLSFront(server_context, proxy.port) as front:
        uri = f"wss://{HOST}:{wss_port}/"
        with pytest.raises(ssl.SSLCertVerificationError):
            if client == "sync":
                shakehands.sync.connect(uri, proxy=front.url(), ssl=context, open_timeout=30)
            else:
                asyncio.run(asyncio_streams(uri, proxy=front.url(), ssl=context))
        deadline = time.monotonic() + 10
        while relay_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay_threads() == []
