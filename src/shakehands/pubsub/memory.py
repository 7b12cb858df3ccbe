"""The in-process backend of a :class:`~shakehands.pubsub.Hub`: nothing to install or run.

Publishing delivers at once to this process's subscribers; other processes see nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .backend import Deliver, Gap, Message

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Messages stay within this process: publishing delivers at once to local subscribers."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        self._deliver = deliver

    def subscribe(self, topic: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def unsubscribe(self, topic: str) -> None:
        pass

    async def publish(self, topic: str, message: Message) -> int:
        assert self._deliver is not None, "the hub was not started"
        self._deliver(topic, message)
        return 1

    async def close(self) -> None:
        self._deliver = None
