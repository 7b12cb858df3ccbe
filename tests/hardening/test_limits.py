"""``max_connections``: a full server answers ``503 Service Unavailable`` and stays up."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import shakehands
from shakehands import InvalidStatus

from ..asyncio.asyncio_helpers import RawClient, echo_server, uri, wait_for_condition
from ..helpers import upgrade_request
from .hardening_helpers import EchoProcess

pytestmark = pytest.mark.timeout(60)


async def test_503_when_full_then_admitted_when_a_slot_frees(api: str) -> None:
    async with echo_server(api, max_connections=3) as server:
        async with asyncio.timeout(20):
            clients = [await shakehands.connect(uri(server)) for _ in range(3)]
            for _ in range(5):
                with pytest.raises(InvalidStatus) as excinfo:
                    await shakehands.connect(uri(server))
                response = excinfo.value.response
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert response.headers["Connection"] == "close"
                assert b"too many connections" in response.body
            # The admitted clients are unaffected.
            for ws in clients:
                await ws.send("still here")
                assert await ws.recv() == "still here"
            # Refused connections are released: only the three remain.
            await wait_for_condition(lambda: len(server.connections) == 3)
            await clients[0].close()
            await wait_for_condition(lambda: len(server.connections) == 2)
            async with shakehands.connect(uri(server)) as ws:
                await ws.send("admitted")
                assert await ws.recv() == "admitted"
            for ws in clients[1:]:
                await ws.close()


async def test_handshakes_in_progress_count_and_free_their_slot_at_open_timeout(api: str) -> None:
    # Connections still in their handshake hold a slot: a peer cannot exceed the limit by never
    # finishing, and open_timeout frees the slots of those that stall.
    async with echo_server(api, max_connections=2, open_timeout=0.5) as server:
        async with asyncio.timeout(20):
            stalled = [await RawClient.open(server.port) for _ in range(2)]
            for client in stalled:
                client.send(b"GET / HTTP/1.1\r\n")
            await wait_for_condition(lambda: len(server.connections) == 2)
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server))
            assert excinfo.value.response.status == 503
            for client in stalled:
                assert await client.read_eof() == b""
                await client.close()
            await wait_for_condition(lambda: not server.connections)
            async with shakehands.connect(uri(server)) as ws:
                await ws.send("after the stall")
                assert await ws.recv() == "after the stall"


async def test_flood_of_refused_connections_leaves_the_server_serving(api: str) -> None:
    async with echo_server(api, max_connections=1) as server:
        async with asyncio.timeout(30):
            admitted = await shakehands.connect(uri(server))

            async def knock() -> int:
                client = await RawClient.open(server.port)
                client.send(upgrade_request(server.port))
                status, _, _ = await client.read_response()
                assert await client.read_eof() == b""
                await client.close()
                return status

            statuses = await asyncio.gather(*(knock() for _ in range(200)))
            assert set(statuses) == {503}
            await wait_for_condition(lambda: len(server.connections) == 1)
            await admitted.send("fine")
            assert await admitted.recv() == "fine"
            await admitted.close()


async def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ValueError):
        shakehands.serve(lambda ws: asyncio.sleep(0), "127.0.0.1", 0, max_connections=0)


@pytest.mark.parametrize("api", ["coroutine", "callback"])
async def test_cli_echo_max_connections(api: str) -> None:
    with EchoProcess("--api", api, "--max-connections", "2") as echo:
        target = f"ws://127.0.0.1:{echo.port}/"
        async with asyncio.timeout(20):
            first = await shakehands.connect(target)
            second = await shakehands.connect(target)
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(target)
            assert excinfo.value.response.status == 503
            await first.close()
            async with shakehands.connect(target) as ws:
                await ws.send("echo")
                assert await ws.recv() == "echo"
            await second.close()


def test_cli_help_mentions_max_connections() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shakehands", "echo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "--max-connections" in result.stdout
