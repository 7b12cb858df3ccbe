"""Send one message to many connections: the former home of :mod:`shakehands.asyncio.broadcast`.

Every name that was importable from here still is. ``shakehands.broadcast`` (the package
attribute) is the function, as it always was.
"""

from __future__ import annotations

from .asyncio.broadcast import (
    DEFAULT_POLICY,
    BroadcastResult,
    ConnectionCounters,
    Message,
    SlowClientPolicy,
    broadcast,
    broadcast_counters,
    get_slow_client_policy,
    set_slow_client_policy,
)

__all__ = [
    "broadcast",
    "BroadcastResult",
    "ConnectionCounters",
    "SlowClientPolicy",
    "broadcast_counters",
    "get_slow_client_policy",
    "set_slow_client_policy",
    "DEFAULT_POLICY",
    "Message",
]
