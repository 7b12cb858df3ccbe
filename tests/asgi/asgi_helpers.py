"""uvicorn servers in a thread, for the tests of ``shakehands.asgi``; a raw asyncio client."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import struct
import threading
from types import TracebackType
from typing import Any

import uvicorn

from shakehands.asgi import UvicornWebSocket

from ..helpers import HOST, frame, parse_head, upgrade_request


class PythonUvicornWebSocket(UvicornWebSocket):
    """Ours on the pure-Python data path: ``UvicornWebSocket(...)`` makes a
    :class:`~shakehands.asgi.FastUvicornWebSocket` when the C path is built; a subclass is
    made as it is, so this one tests the fallback in the same run."""


#: The implementations every test runs against: ours (on the compiled data path when it is
#: built, and on pure Python), and uvicorn's ``websockets-sansio`` as the reference (what the
#: tests expect is specified behaviour, not our quirks).
IMPLEMENTATIONS: dict[str, Any] = {
    "shakehands": UvicornWebSocket,
    "shakehands-python": PythonUvicornWebSocket,
    "websockets-sansio": "websockets-sansio",
}


class UvicornThread:
    """A ``uvicorn.Server`` serving ``app`` on 127.0.0.1 (a free port) in a thread.

    The listening socket is bound and listening before the thread starts: clients may connect
    at once (the backlog holds them until uvicorn runs).
    """

    def __init__(self, app: Any, ws: Any, **options: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(256)
        self.port: int = self.sock.getsockname()[1]
        options.setdefault("lifespan", "off")
        options.setdefault("log_level", "warning")
        options.setdefault("loop", "asyncio")
        options.setdefault("timeout_graceful_shutdown", 30)
        config = uvicorn.Config(app, ws=ws, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def uri(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def start(self) -> None:
        self.thread.start()

    def shutdown(self) -> None:
        """Graceful shutdown (what Ctrl-C does), waited for."""
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "uvicorn did not shut down"
        self.sock.close()

    async def stop(self) -> None:
        """:meth:`shutdown` without blocking this loop (its clients must answer the close)."""
        await asyncio.to_thread(self.shutdown)

    async def __aenter__(self) -> UvicornThread:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def take(events: queue.Queue[tuple[str, object]], name: str) -> object:
    """The next event called ``name`` reported by an app, skipping others (waited for in a
    thread: the app runs in the server's thread, and this loop must keep serving clients)."""
    while True:
        got, value = await asyncio.to_thread(events.get, True, 30)
        if got == name:
            return value


class RawClient:
    """A WebSocket client by hand (asyncio streams, frames from ``tests/helpers.py``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def request(cls, port: int, path: str, **kwargs: Any) -> tuple[RawClient, int]:
        """Send an upgrade request (see ``upgrade_request``); return the client and status."""
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(upgrade_request(port, path, **kwargs))
        head = await reader.readuntil(b"\r\n\r\n")
        status, _ = parse_head(head)
        return cls(reader, writer), status

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.writer.write(frame(opcode, payload))

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked): ``(opcode, payload)``."""
        b0, b1 = await self.reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
