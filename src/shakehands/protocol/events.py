"""What the core hands up, and the two enums every part of it shares.

:class:`Role` and :class:`State` name a connection's end and its place in RFC 6455 §4-§7;
:class:`Ping`, :class:`Pong`, :class:`Close` and the plain ``str``/``bytes`` messages are the
:data:`Event` values of :meth:`~.connection.Connection.events_received`. Plain values only: no
parsing, no state machine, no I/O. :mod:`.connection` re-exports every name, where they lived
first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TypeAlias

__all__ = ["Role", "State", "Ping", "Pong", "Close", "Event"]


class Role(Enum):
    """Which end of the connection this is."""

    SERVER = "server"
    CLIENT = "client"


class State(IntEnum):
    """Connection states (RFC 6455 §4-§7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping frame was received (a pong has already been queued in answer)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong frame was received."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A valid close frame was received; ``code`` is 1005 when it carried no status."""

    code: int
    reason: str


#: What :meth:`.Connection.events_received` returns: messages are plain ``str``/``bytes``.
Event: TypeAlias = "str | bytes | Ping | Pong | Close | object"
