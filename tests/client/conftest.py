"""Fixtures of the client tests: each test runs with the asyncio client and the blocking one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

import shakehands
from shakehands import Request, sync


@dataclass
class Opened:
    """What a test checks of a connection that opened (it is closed already)."""

    uri: str
    request: Request
    received: str | bytes | None


class Client:
    """Opens a connection with the asyncio client or the blocking one (in a thread, so that
    servers in the test's event loop keep running), reads one message if asked, closes."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def open(self, uri: str, *, recv: bool = False, **kwargs: Any) -> Opened:
        unix_path = kwargs.pop("unix_path", None)
        if self.kind == "asyncio":
            if unix_path is None:
                opening = shakehands.connect(uri, **kwargs)
            else:
                opening = shakehands.unix_connect(unix_path, uri, **kwargs)
            async with opening as ws:
                received = await ws.recv() if recv else None
                assert ws.request is not None
                return Opened(ws.uri, ws.request, received)

        def blocking() -> Opened:
            if unix_path is None:
                ws = sync.connect(uri, **kwargs)
            else:
                ws = sync.unix_connect(unix_path, uri, **kwargs)
            with ws:
                received = ws.recv() if recv else None
                assert ws.request is not None
                return Opened(ws.uri, ws.request, received)

        return await asyncio.to_thread(blocking)


@pytest.fixture(params=["asyncio", "sync"])
def client(request: pytest.FixtureRequest) -> Client:
    """The asyncio client, then the blocking one."""
    return Client(str(request.param))
