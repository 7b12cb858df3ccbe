"""wss:// on real sockets: a self-signed certificate for 127.0.0.1 made at test time, echo over
TLS for both server APIs, and TLS failures that leave the server serving."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

import shakehands
from shakehands import ConnectionClosedOK, InvalidHandshake, Request

from ..helpers import HOST, upgrade_request
from ..sync.sync_helpers import running
from .asyncio_helpers import (
    RawClient,
    RawServer,
    RawServerConnection,
    echo_server,
    uri,
    wait_for_condition,
)

pytestmark = pytest.mark.timeout(30)


async def assert_wss_echo(server: shakehands.Server, client_context: ssl.SSLContext) -> None:
    async with (
        asyncio.timeout(5),
        shakehands.connect(uri(server, scheme="wss"), ssl=client_context) as ws,
    ):
        await ws.send("over tls")
        assert await ws.recv() == "over tls"


async def test_wss_echo(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with echo_server(api, ssl=server_context, max_message_size=None) as server:
        async with (
            asyncio.timeout(10),
            shakehands.connect(
                uri(server, "/secure", scheme="wss"), ssl=client_context, max_message_size=None
            ) as ws,
        ):
            assert ws.transport.get_extra_info("ssl_object") is not None
            for message in ["hello", "ünïcødé", "", b"\x00\xff", b"t" * (3 * 2**20)]:
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "fragmented"
            assert 0 <= await ws.ping() < 1
            (conn,) = server.connections
            assert conn.transport.get_extra_info("ssl_object") is not None
        # The closing handshake over TLS (no half-close there) ends cleanly too.
        assert ws.close_code == 1000
        await wait_for_condition(lambda: not server.connections)


async def test_wss_server_sees_request_and_closes_with_1001(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    seen: list[Request] = []

    def process_request(request: Request) -> None:
        seen.append(request)

    async with echo_server(
        "coroutine", ssl=server_context, process_request=process_request
    ) as server:
        async with asyncio.timeout(5):
            ws = await shakehands.connect(uri(server, "/p?x=1", scheme="wss"), ssl=client_context)
            server.close()
            with pytest.raises(ConnectionClosedOK) as excinfo:
                await ws.recv()
            assert excinfo.value.code == 1001
            await server.wait_closed()
    (request,) = seen
    assert request.path == "/p" and request.query == "x=1"
    assert request.remote_address is not None and request.remote_address[0] == HOST


async def test_wss_refusal_reaches_client(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    refuse = lambda request: shakehands.Response(404, body=b"nothing here\n")  # noqa: E731
    async with echo_server(api, ssl=server_context, process_request=refuse) as server:
        async with asyncio.timeout(5):
            with pytest.raises(shakehands.InvalidStatus) as excinfo:
                await shakehands.connect(uri(server, scheme="wss"), ssl=client_context)
            assert excinfo.value.response.status == 404
            assert excinfo.value.response.body == b"nothing here\n"
            await wait_for_condition(lambda: not server.connections)


async def test_tls_version_mismatch_fails_cleanly_and_server_stays_up(
    api: str, certificate: tuple[Path, Path], client_context: ssl.SSLContext
) -> None:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(*certificate)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_2
    server_context.maximum_version = ssl.TLSVersion.TLSv1_2
    strict = ssl.create_default_context(cafile=str(certificate[0]))
    strict.minimum_version = ssl.TLSVersion.TLSv1_3
    async with echo_server(api, ssl=server_context) as server:
        async with asyncio.timeout(5):
            # The server's OpenSSL refuses the ClientHello; asyncio's TLS layer then aborts the
            # socket, which usually destroys the protocol_version alert before it leaves, so the
            # client sees a reset rather than the alert. Either is a clean failure (an OSError).
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await shakehands.connect(uri(server, scheme="wss"), ssl=strict)
            assert server.connections == set()
            # The next good client (TLS 1.2 allowed) is served.
            await assert_wss_echo(server, client_context)


async def test_untrusted_certificate_fails_and_server_stays_up(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    untrusting = ssl.create_default_context()  # the system store does not know our cert
    async with echo_server(api, ssl=server_context) as server:
        async with asyncio.timeout(5):
            with pytest.raises(ssl.SSLCertVerificationError):
                await shakehands.connect(uri(server, scheme="wss"), ssl=untrusting)
            await assert_wss_echo(server, client_context)


async def test_wrong_hostname_fails(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context) as server:
        async with asyncio.timeout(5):
            with pytest.raises(ssl.SSLCertVerificationError):
                await shakehands.connect(
                    uri(server, scheme="wss"), ssl=client_context, server_hostname="example.com"
                )
            # server_hostname matching the certificate works.
            async with shakehands.connect(
                uri(server, scheme="wss"), ssl=client_context, server_hostname="localhost"
            ) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"


async def test_plain_client_on_tls_port_fails_and_server_stays_up(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with echo_server(api, ssl=server_context) as server:
        async with asyncio.timeout(5):
            with pytest.raises(InvalidHandshake, match="expects TLS: use a wss:// URI, not ws://"):
                await shakehands.connect(uri(server))
            raw = await RawClient.open(server.port)
            raw.send(upgrade_request(server.port))
            await raw.read_eof()  # dropped without an HTTP answer
            await raw.close()
            await assert_wss_echo(server, client_context)


async def test_tls_client_on_plain_port_is_told_to_use_ws(
    api: str, client_context: ssl.SSLContext
) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(5):
            # Not a raw ssl.SSLError (WRONG_VERSION_NUMBER): the scheme to use.
            with pytest.raises(
                InvalidHandshake, match="does not speak TLS: use a ws:// URI, not wss://"
            ) as excinfo:
                await shakehands.connect(uri(server, scheme="wss"), ssl=client_context)
            assert isinstance(excinfo.value.__cause__, ssl.SSLError)
            async with shakehands.connect(uri(server)) as ws:
                await ws.send("plain")
                assert await ws.recv() == "plain"


async def test_serve_rejects_non_context_ssl() -> None:
    with pytest.raises(TypeError):
        shakehands.serve(lambda ws: asyncio.sleep(0), HOST, 0, ssl=True)


async def test_normal_wss_close_logs_no_warning(
    api: str,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Closing over TLS is quiet: asyncio warns when eof_received() returns True under TLS
    ("has no effect when using ssl"); neither end may do that on a normal close."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    async with echo_server(api, ssl=server_context) as server:
        # The client closes first, then the server closes first (a handler that returns).
        await assert_wss_echo(server, client_context)
        await wait_for_condition(lambda: not server.connections)
        async with (
            asyncio.timeout(5),
            shakehands.connect(uri(server, scheme="wss"), ssl=client_context) as ws,
        ):
            (conn,) = server.connections
            closing = conn.close()
            if closing is not None:  # the coroutine API's close() is a coroutine
                await closing
            await ws.wait_closed()
        assert ws.close_code == 1000
        await wait_for_condition(lambda: not server.connections)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


async def test_asyncio_client_recognises_the_blocking_servers_scheme(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """ws:// to the blocking TLS server (it resets the connection), wss:// to a plain one."""
    with running(ssl=server_context) as tls, running() as plain:
        async with asyncio.timeout(10):
            with pytest.raises(InvalidHandshake, match="use a wss:// URI, not ws://"):
                await shakehands.connect(f"ws://{HOST}:{tls.port}/")
            with pytest.raises(InvalidHandshake, match="use a ws:// URI, not wss://"):
                await shakehands.connect(f"wss://{HOST}:{plain.port}/", ssl=client_context)


async def test_a_plain_server_that_closes_without_a_word_is_not_taken_for_tls() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.reader.read(1)  # then close, whatever was sent (a request, a TLS hello)

    async with RawServer(script) as raw, asyncio.timeout(10):
        with pytest.raises(InvalidHandshake) as excinfo:
            await shakehands.connect(raw.uri)
        assert "wss://" not in str(excinfo.value)
        assert str(excinfo.value) == "connection closed before any response"
