"""Slow and stuck peers: half handshakes, slowloris trickles and frames that never end are
dropped by the server's timers while well-behaved clients are served meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import shakehands

from ..asyncio.asyncio_helpers import RawClient, echo_server, uri, wait_for_condition
from ..helpers import OP_BINARY, OP_CLOSE, OP_PING, frame_header, upgrade_request
from .hardening_helpers import gather_limited

pytestmark = pytest.mark.timeout(120)


async def assert_served(server: shakehands.Server[Any], rounds: int = 3) -> None:
    """A fresh client connects and gets its messages echoed: the server is up and serving."""
    async with asyncio.timeout(10), shakehands.connect(uri(server)) as ws:
        for i in range(rounds):
            await ws.send(f"still serving {i}")
            assert await ws.recv() == f"still serving {i}"


def partial_request(port: int, i: int) -> bytes:
    """Different ways to stop in the middle of a handshake."""
    request = upgrade_request(port)
    cut = [0, 5, 16, len(request) // 2, len(request) - 2][i % 5]
    return request[:cut]


async def test_500_stalled_handshakes_dropped_after_open_timeout(api: str) -> None:
    open_timeout = 2.0
    async with echo_server(api, open_timeout=open_timeout) as server:
        port = server.port

        async def stall(i: int) -> tuple[RawClient, float]:
            client = await RawClient.open(port)
            client.send(partial_request(port, i))
            return client, time.monotonic()

        async with asyncio.timeout(60):
            stalled = await gather_limited([lambda i=i: stall(i) for i in range(500)])
            await wait_for_condition(lambda: len(server.connections) >= 500, timeout=30)
            # While 500 peers hold half-open handshakes, a good client is served at once.
            await assert_served(server)

            async def dropped(client: RawClient, connected: float) -> float:
                assert await client.read_eof() == b""  # no answer: just closed
                return time.monotonic() - connected

            lifetimes = await asyncio.gather(*(dropped(c, t) for c, t in stalled))
            # Never before open_timeout (the server's timer starts after our connect returned).
            assert min(lifetimes) >= open_timeout * 0.95
            await wait_for_condition(lambda: not server.connections, timeout=10)
            await assert_served(server)
            for client, _ in stalled:
                await client.close()


async def test_slowloris_trickle_is_dropped_at_open_timeout(api: str) -> None:
    # open_timeout is a deadline for the whole handshake, not an idle timeout: a peer that keeps
    # sending one byte at a time never completes and is dropped all the same.
    open_timeout = 1.0
    async with echo_server(api, open_timeout=open_timeout) as server:
        async with asyncio.timeout(20):
            clients = [await RawClient.open(server.port) for _ in range(20)]
            request = upgrade_request(server.port)
            start = time.monotonic()

            async def trickle(client: RawClient) -> int:
                sent = 0
                try:
                    for byte in request[:-1]:
                        client.send(bytes([byte]))
                        await client.writer.drain()
                        sent += 1
                        await asyncio.sleep(0.05)
                except ConnectionError:
                    pass
                return sent

            tasks = [asyncio.ensure_future(trickle(c)) for c in clients]
            await asyncio.sleep(0.2)
            await assert_served(server)
            for client in clients:
                assert await client.read_eof() == b""
            assert time.monotonic() - start >= open_timeout * 0.95
            sent = await asyncio.gather(*tasks)
            # Dropped well before the request could be complete.
            assert max(sent) < len(request) - 1
            for client in clients:
                await client.close()
            await wait_for_condition(lambda: not server.connections)


async def test_peers_stalled_mid_frame_are_dropped_by_keepalive(api: str) -> None:
    # A peer that stops in the middle of a frame cannot answer a ping: a pong would be read as
    # payload of the unfinished frame. Keepalive (ping_interval + ping_timeout) is therefore the
    # idle timeout of an open connection: it fails the connection with 1011.
    async with echo_server(api, ping_interval=0.5, ping_timeout=0.5) as server:
        async with asyncio.timeout(30):
            stuck = []
            for _ in range(50):
                client = await RawClient.open(server.port)
                await client.handshake(server.port)
                # The header announces 1000 bytes; only 10 of them ever come.
                client.send(frame_header(OP_BINARY, 1000) + b"\x00" * 4 + b"0123456789")
                stuck.append(client)
            await wait_for_condition(lambda: len(server.connections) == 50)
            await assert_served(server)
            for client in stuck:
                opcodes = []
                while True:
                    _, opcode, payload = await client.read_frame()
                    opcodes.append(opcode)
                    if opcode == OP_CLOSE:
                        break
                assert opcodes[0] == OP_PING
                assert int.from_bytes(payload[:2], "big") == 1011
                assert await client.read_eof() == b""
            await wait_for_condition(lambda: not server.connections)
            await assert_served(server)
            for client in stuck:
                await client.close()


async def test_peer_stalled_mid_frame_kept_when_keepalive_disabled(api: str) -> None:
    # The documented trade-off: with ping_interval=None nothing times out an open connection.
    async with echo_server(api, ping_interval=None, open_timeout=0.3) as server:
        async with asyncio.timeout(10):
            client = await RawClient.open(server.port)
            await client.handshake(server.port)
            client.send(frame_header(OP_BINARY, 1000) + b"\x00" * 4 + b"0123456789")
            await asyncio.sleep(1.0)
            assert len(server.connections) == 1
            # The rest of the frame completes the message, which is echoed.
            client.send(b"\x00" * 990)
            _, opcode, payload = await client.read_frame()
            assert (opcode, len(payload)) == (OP_BINARY, 1000)
            await client.close()
