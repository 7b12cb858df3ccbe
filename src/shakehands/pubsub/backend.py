"""What a :class:`~shakehands.pubsub.Hub` and its backends share: the backend interface, the
events a backend reports (:class:`Gap`), the error publishing raises (:class:`PublishError`) and
the hub's counters.

A backend moves messages between publishers and subscribers (within a process, or across many
through a message bus); it knows nothing about connections or frames. The hub knows nothing
about where messages travel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..protocol.errors import ShakehandsError

__all__ = ["HubBackend", "Gap", "HubCounters", "PublishError", "Message", "Deliver", "logger"]

#: One logger for the hub and its backends. Its name is the module's first one,
#: ``shakehands.hub``, which deployments filter on (docs/deployment.md).
logger = logging.getLogger("shakehands.hub")

Message = str | bytes
Deliver = Callable[[str, Message], None]


class PublishError(ShakehandsError):
    """A message could not be handed to the message bus (Redis unreachable): nobody got it."""


@dataclass(frozen=True, slots=True)
class Gap:
    """A window in which messages on ``topics`` may have been missed by this process.

    ``since`` and ``until`` are wall-clock times (``time.time()``): the connection to the bus was
    lost at ``since`` and subscriptions were live again at ``until``.
    """

    topics: tuple[str, ...]
    since: float
    until: float

    @property
    def duration(self) -> float:
        """Length of the window in seconds."""
        return self.until - self.since


@dataclass(slots=True)
class HubCounters:
    """Running totals of a :class:`Hub`."""

    published: int = 0
    publish_failures: int = 0
    delivered: int = 0
    #: Subscribers not open, or busy sending a fragmented message, when a message came.
    skipped: int = 0
    dropped: int = 0
    closed_slow: int = 0
    gaps: int = 0


class HubBackend(Protocol):
    """How a :class:`Hub` moves messages between publishers and subscribers."""

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        """Start; call ``deliver(topic, message)`` for each message on a subscribed topic."""

    def subscribe(self, topic: str) -> asyncio.Future[None]:
        """Start receiving ``topic``; the future is done once messages on it will arrive."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""

    async def publish(self, topic: str, message: Message) -> int:
        """Publish; return how many receivers the bus reports. Raise PublishError on failure."""

    async def close(self) -> None:
        """Stop and release resources."""
