"""Origin checks against cross-site WebSocket hijacking: ``origins=[...]`` is an exact allow
list; everything else, including look-alikes, gets 403 and never reaches the handler."""

from __future__ import annotations

import asyncio

import pytest

import shakehands
from shakehands import InvalidStatus

from ..asyncio.asyncio_helpers import RawClient, echo_server, uri, wait_for_condition
from ..helpers import upgrade_request

pytestmark = pytest.mark.timeout(30)

ALLOWED = "https://app.example.test"

HIJACKING_ORIGINS = [
    "https://evil.test",
    "https://app.example.test.evil.test",  # suffix attack
    "https://evilapp.example.test",
    "https://sub.app.example.test",
    "http://app.example.test",  # scheme downgrade
    "https://app.example.test:8443",  # another port is another origin
    "https://app.example.test/",  # not an origin serialization
    "HTTPS://APP.EXAMPLE.TEST",
    "null",  # sandboxed iframes, file:// pages, some redirects
    "",
    "*",
    "https://app.example.test, https://evil.test",
]


async def status_for(port: int, headers: list[tuple[str, str]]) -> int:
    client = await RawClient.open(port)
    client.send(upgrade_request(port, extra=headers))
    status, _, _ = await client.read_response()
    await client.read_eof()
    await client.close()
    return status


async def test_cross_site_hijacking_attempts_get_403(api: str) -> None:
    opened: list[str | None] = []

    def process_request(request: shakehands.Request) -> None:
        opened.append(request.origin)

    async with echo_server(api, origins=[ALLOWED], process_request=process_request) as server:
        async with asyncio.timeout(20):
            for origin in HIJACKING_ORIGINS:
                assert await status_for(server.port, [("Origin", origin)]) == 403, origin
            # The legitimate page connects.
            async with shakehands.connect(uri(server), origin=ALLOWED) as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"
            await wait_for_condition(lambda: not server.connections)


async def test_missing_origin_refused_unless_none_is_listed(api: str) -> None:
    async with echo_server(api, origins=[ALLOWED]) as server:
        async with asyncio.timeout(10):
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server))
            assert excinfo.value.response.status == 403
            assert b"missing Origin" in excinfo.value.response.body
    async with echo_server(api, origins=[ALLOWED, None]) as server:
        async with asyncio.timeout(10):
            async with shakehands.connect(uri(server)) as ws:  # no Origin: a non-browser client
                await ws.send("cli")
                assert await ws.recv() == "cli"
            # None in the list does not open the door to other origins.
            assert await status_for(server.port, [("Origin", "https://evil.test")]) == 403


async def test_two_origin_headers_are_refused(api: str) -> None:
    # A second Origin header must not let an allowed value smuggle a forbidden one past the check.
    async with echo_server(api, origins=[ALLOWED]) as server:
        async with asyncio.timeout(10):
            for pair in [(ALLOWED, "https://evil.test"), ("https://evil.test", ALLOWED)]:
                status = await status_for(server.port, [("Origin", pair[0]), ("Origin", pair[1])])
                assert status in (400, 403)


async def test_refused_origin_never_reaches_the_handler(api: str) -> None:
    reached: list[object] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        reached.append(ws)

    class Opened(shakehands.Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            reached.append(ws)

    context = (
        shakehands.serve(handler, "127.0.0.1", 0, origins=[ALLOWED])
        if api == "coroutine"
        else shakehands.serve_callbacks(Opened(), "127.0.0.1", 0, origins=[ALLOWED])
    )
    async with context as server:
        async with asyncio.timeout(10):
            with pytest.raises(InvalidStatus):
                await shakehands.connect(uri(server), origin="https://evil.test")
            await wait_for_condition(lambda: not server.connections)
    assert reached == []
