"""A Django Channels consumer under uvicorn, with our class and with the reference."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator

import pytest

import shakehands
from shakehands import InvalidStatus

from .asgi_helpers import IMPLEMENTATIONS, UvicornThread, take

pytest.importorskip("channels")

from .channels_app import Events, channels_app  # noqa: E402


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[UvicornThread, Events]]:
    events: Events = queue.Queue()
    async with UvicornThread(channels_app(events), IMPLEMENTATIONS[request.param]) as server:
        yield server, events


async def test_consumer_echo_and_disconnect(server: tuple[UvicornThread, Events]) -> None:
    uvicorn, events = server
    async with shakehands.connect(uvicorn.uri("/echo/lobby/"), subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        await ws.send("hello")
        assert await ws.recv() == "lobby: hello"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01"
        await ws.close(4002)
    assert await take(events, "disconnect") == 4002


async def test_consumer_refusal_is_403(server: tuple[UvicornThread, Events]) -> None:
    uvicorn, _ = server
    with pytest.raises(InvalidStatus) as caught:
        async with shakehands.connect(uvicorn.uri("/refuse/")):
            pass
    assert caught.value.response.status == 403
