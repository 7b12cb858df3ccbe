"""TLS under attack: clients that offer only protocol versions the server refuses (made by hand,
so that the local OpenSSL's own client policy cannot hide the server's answer), and peers that
stall the TLS handshake, which ``open_timeout`` bounds. The certificate is made at test time."""

from __future__ import annotations

import asyncio
import os
import ssl
import struct
import time

import pytest

import shakehands

from ..asyncio.asyncio_helpers import RawClient, echo_server, uri, wait_for_condition

pytestmark = pytest.mark.timeout(60)


def client_hello(version: tuple[int, int]) -> bytes:
    """A minimal ClientHello offering only ``version`` (3, 0) = SSL 3.0, (3, 1) = TLS 1.0..."""
    suites = [0x002F, 0x0035, 0xC013, 0xC014, 0x000A]
    body = (
        bytes(version)
        + os.urandom(32)
        + b"\x00"  # no session id
        + struct.pack("!H", 2 * len(suites))
        + b"".join(struct.pack("!H", s) for s in suites)
        + b"\x01\x00"  # null compression only
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + bytes(version) + struct.pack("!H", len(handshake)) + handshake


# SSL 2.0's record format (RFC 6101 appendix E.2 "compatible" hello): 7 cipher specs, a
# 16-byte challenge.
SSLV2_CLIENT_HELLO = (
    bytes.fromhex("802e010002001500000010")
    + bytes.fromhex("0100800700c0030080060040020080040080050080")
    + os.urandom(16)
)


async def assert_wss_served(server: shakehands.Server, context: ssl.SSLContext) -> None:  # type: ignore[type-arg]
    async with shakehands.connect(uri(server, scheme="wss"), ssl=context) as ws:
        await ws.send("secure")
        assert await ws.recv() == "secure"


@pytest.mark.parametrize(
    "hello",
    [client_hello((3, 0)), client_hello((3, 1)), client_hello((3, 2)), SSLV2_CLIENT_HELLO],
    ids=["SSLv3", "TLSv1.0", "TLSv1.1", "SSLv2"],
)
async def test_obsolete_protocol_versions_refused_cleanly(
    api: str, hello: bytes, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with echo_server(api, ssl=server_context) as server:
        async with asyncio.timeout(10):
            client = await RawClient.open(server.port)
            client.send(hello)
            answer = await client.read_eof()
            await client.close()
            # A TLS alert record (protocol_version or handshake_failure) or a bare close: never
            # a ServerHello, never HTTP.
            assert answer == b"" or answer[0] == 0x15, answer[:16]
            if answer:
                assert answer[5:7] in (b"\x02\x46", b"\x02\x28"), answer[:16]
            assert server.connections == set()
            await assert_wss_served(server, client_context)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_python_client_limited_to_tls_1_1_is_refused(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this OpenSSL cannot even make a TLS 1.1 client: {exc}")
    async with echo_server("coroutine", ssl=server_context) as server:
        async with asyncio.timeout(10):
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await shakehands.connect(uri(server, scheme="wss"), ssl=old)
            assert server.connections == set()
            await assert_wss_served(server, client_context)


async def test_stalled_tls_handshakes_dropped_at_open_timeout(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # The TLS handshake happens before the WebSocket connection exists: serve() bounds it with
    # open_timeout too (asyncio's own default would be 60 s).
    open_timeout = 1.0
    async with echo_server(api, ssl=server_context, open_timeout=open_timeout) as server:
        async with asyncio.timeout(20):
            stalled = []
            for i in range(100):
                client = await RawClient.open(server.port)
                hello = client_hello((3, 3))
                client.send(hello[: i % len(hello)])  # nothing, or part of a ClientHello
                stalled.append((client, time.monotonic()))
            await assert_wss_served(server, client_context)
            for client, connected in stalled:
                await client.read_eof()
                assert time.monotonic() - connected >= open_timeout * 0.95
                await client.close()
            await wait_for_condition(lambda: not server.connections)
            await assert_wss_served(server, client_context)
