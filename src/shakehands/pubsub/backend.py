"""What a :class:`~shakehands.pubsub.Hub` and its backends share: the backend interface, the
events a backend reports (:class:`Gap`), the error publishing raises (:class:`PublishError`) and
the hub's counters; and, for backends that keep history, the positions of publications
(:class:`Position`), the history interface (:class:`HistoryBackend`) and what resuming from a
position gives (:class:`Subscription`, :class:`HistoryLost`).

A backend moves messages between publishers and subscribers (within a process, or across many
through a message bus); it knows nothing about connections or frames. The hub knows nothing
about where messages travel.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..protocol.errors import ShakehandsError

__all__ = [
    "HubBackend",
    "HistoryBackend",
    "Gap",
    "HubCounters",
    "PublishError",
    "Message",
    "Deliver",
    "Position",
    "HistoryLost",
    "Subscription",
    "Entry",
    "logger",
]

#: One logger for the hub and its backends. Its name is the module's first one,
#: ``shakehands.hub``, which deployments filter on (docs/deployment.md).
logger = logging.getLogger("shakehands.hub")

Message = str | bytes

_EPOCH = re.compile(r"[0-9A-Za-z_-]{1,64}")
_OFFSET = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a publication sits in its topic: its ``offset`` within the topic's ``epoch``.

    Offsets start at 1 and increase by one per publication on a topic. The epoch names one
    unbroken history of the topic: it changes whenever that history was lost (a process
    restart with the in-memory backend, Redis losing its data), so an offset of an old epoch
    says nothing about the new one. Epochs are random per topic: a position of one topic is
    never valid for another.

    ``str(position)`` is ``"<epoch>:<offset>"``, which :meth:`parse` reads back:

    >>> Position.parse("f3a9c0de:42")
    Position(epoch='f3a9c0de', offset=42)
    >>> str(Position("f3a9c0de", 42))
    'f3a9c0de:42'
    """

    epoch: str
    offset: int

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, str) or not _EPOCH.fullmatch(self.epoch):
            raise ValueError(f"malformed epoch {self.epoch!r}: 1-64 of A-Z a-z 0-9 _ -")
        if (
            not isinstance(self.offset, int)
            or isinstance(self.offset, bool)
            or not 0 <= self.offset < 2**63
        ):
            raise ValueError(f"malformed offset {self.offset!r}: an integer from 0 to 2**63-1")

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read ``"<epoch>:<offset>"`` (what ``str()`` gives), as a client sends it back.

        Raises:
            ValueError: ``text`` is not of that shape, saying why.

        >>> Position.parse("nonsense")
        Traceback (most recent call last):
          ...
        ValueError: malformed position 'nonsense': expected '<epoch>:<offset>'
        """
        epoch, colon, offset = str(text).rpartition(":")
        if not colon or not _EPOCH.fullmatch(epoch) or not _OFFSET.fullmatch(offset):
            raise ValueError(f"malformed position {text!r}: expected '<epoch>:<offset>'")
        return cls(epoch, int(offset))


#: One publication read back from history: its position and the message.
Entry = tuple[Position, Message]


class Deliver(Protocol):
    """What a backend calls for each message on a subscribed topic (the hub's entry point)."""

    def __call__(self, topic: str, message: Message, position: Position | None = None) -> None:
        """Hand ``message`` to the local subscribers of ``topic``; ``position`` if it has one."""


@dataclass(frozen=True, slots=True)
class HistoryLost:
    """A resume that cannot be served: the history no longer reaches back to ``since``.

    The subscriber gets live publications from now on, but what was published between
    ``since`` and now is not all available: the application should reload the state of the
    topic from where it keeps it (its database) and resume from ``current``.

    ``reason``:

    - ``"epoch"``: ``since`` is of another epoch (the history was lost since, or ``since``
      belongs to another topic);
    - ``"trimmed"``: the history was trimmed (by count or age) past ``since``;
    - ``"ahead"``: ``since`` is beyond the last publication (a forged or corrupted position);
    - ``"unsupported"``: the backend keeps no history (:class:`~shakehands.RedisBackend`);
    - ``"unavailable"``: the history could not be read (Redis unreachable).
    """

    topic: str
    since: Position
    reason: Literal["epoch", "trimmed", "ahead", "unsupported", "unavailable"]
    #: The topic's last position when this was found (``None`` if the backend has none).
    current: Position | None


@dataclass(frozen=True, slots=True)
class Subscription:
    """What :meth:`Hub.subscribe <shakehands.pubsub.Hub.subscribe>` ends with.

    ``position``: everything of the topic up to here was delivered to the subscriber (or
    published before it subscribed without ``since``); live publications follow. ``None``
    when the backend keeps no positions, or the connection closed before the subscription was
    live.
    """

    topic: str
    position: Position | None = None
    #: How many missed publications were delivered from history.
    replayed: int = 0
    #: Set when ``since`` could not be served (the missed publications are not all delivered).
    lost: HistoryLost | None = None


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
    #: Subscriptions served from a position, publications delivered from history, and
    #: resumes answered with :class:`HistoryLost`.
    resumed: int = 0
    replayed: int = 0
    history_lost: int = 0
    #: History pages read from the backend for replays, wire messages built for replays and
    #: frames built for them: with a herd resuming from the same position, each publication is
    #: built and framed once, not once per client (frames: once per group of connections with
    #: the same framing, see :func:`~shakehands.broadcast`).
    history_reads: int = 0
    replay_built: int = 0
    replay_frames: int = 0


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


@runtime_checkable
class HistoryBackend(HubBackend, Protocol):
    """A backend that numbers publications and keeps a bounded history of each topic.

    Its ``deliver`` calls pass each message's :class:`Position`; :meth:`Hub.subscribe
    <shakehands.pubsub.Hub.subscribe>` reads missed publications back with :meth:`read_history`.
    """

    async def read_history(
        self, topic: str, since: Position, limit: int
    ) -> Sequence[Entry] | HistoryLost:
        """Up to ``limit`` publications of ``topic`` after ``since``, oldest first; or
        :class:`HistoryLost` if those after ``since`` are not all kept (or ``since`` is of
        another epoch, or ahead of the last publication)."""

    async def head(self, topic: str) -> Position:
        """The position of the last publication on ``topic`` (offset 0 if none yet)."""
