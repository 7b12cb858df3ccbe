"""Publish/subscribe for connections: topics (rooms) within a process, or across many via Redis.

- :mod:`.hub`: :class:`Hub`, the topics of this process's connections; publishing hands each
  message to :func:`shakehands.broadcast` for the local subscribers.
- :mod:`.backend`: the :class:`HubBackend` interface, :class:`Gap`, :class:`PublishError`; for
  backends with history, :class:`HistoryBackend`, :class:`Position`, :class:`Subscription` and
  :class:`HistoryLost`.
- :mod:`.memory`: :class:`MemoryBackend` (the default, within one process).
- :mod:`.redis`: :class:`RedisBackend` (across processes and machines, through Redis pub/sub).
- :mod:`.redis_streams`: :class:`RedisStreamsBackend` (the same through Redis Streams, with
  history: subscribers resume after a reconnection, offsets survive a Redis restart with AOF).
- :mod:`.redis_cluster`: :class:`RedisClusterBackend` (topics spread over the shards of a Redis
  Cluster: streams and sharded pub/sub, following failovers).

``shakehands.hub`` is this package's former single module; it re-exports the same names.
"""

from __future__ import annotations

from .backend import (
    Gap,
    HistoryBackend,
    HistoryLost,
    HubBackend,
    HubCounters,
    Position,
    PublishError,
    Subscription,
)
from .hub import Hub, connection_of
from .memory import MemoryBackend
from .redis import RedisBackend
from .redis_cluster import RedisClusterBackend
from .redis_streams import RedisStreamsBackend

__all__ = [
    "Hub",
    "connection_of",
    "HubBackend",
    "MemoryBackend",
    "RedisBackend",
    "RedisStreamsBackend",
    "RedisClusterBackend",
    "Gap",
    "HubCounters",
    "PublishError",
    "Position",
    "HistoryLost",
    "Subscription",
    "HistoryBackend",
]
