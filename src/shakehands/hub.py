"""Publish/subscribe for connections: the former home of :mod:`shakehands.pubsub`.

Every name that was importable from here still is; new code imports from
:mod:`shakehands.pubsub` (or from ``shakehands``, for :class:`Hub`, the backends, :class:`Gap`
and :class:`PublishError`).
"""

from __future__ import annotations

from .pubsub.backend import Deliver, Gap, HubBackend, HubCounters, Message, PublishError, logger
from .pubsub.hub import Hub
from .pubsub.memory import MemoryBackend
from .pubsub.redis import RedisBackend

__all__ = [
    "Hub",
    "HubBackend",
    "MemoryBackend",
    "RedisBackend",
    "Gap",
    "HubCounters",
    "PublishError",
    "Deliver",
    "Message",
    "logger",
]
