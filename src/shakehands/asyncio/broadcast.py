"""Send one message to many connections: frame (and compress) once, write to each.

This module owns fan-out and the slow-client policy. It sits next to the connections it writes
to and uses only what they offer for it (:meth:`~.base.TransportProtocol.can_take_messages`,
``write_buffer_size``, ``write_queued``, ``fail``, and the per-connection ``broadcast_policy``
and ``broadcast_dropped``): no transport, no private state. It never frames by hand: frames
come from :func:`shakehands.protocol.frames.serialize_frame` and compression from
:class:`shakehands.protocol.deflate.PerMessageDeflate`, and they are queued on each connection's
sans-I/O core with :meth:`~shakehands.protocol.connection.Connection.send_serialized`, so a
broadcast frame is ordered with everything else the connection sends.

Theory of operation. A frame can be shared by every connection that would have produced the same
bytes for the message:

- server connections without permessage-deflate (or with ``compress=False``) all share one
  unmasked frame;
- server connections whose deflate runs *without context takeover* (the compressor starts fresh
  for every message) share one compressed frame per set of compressor parameters (window bits,
  level, memory level);
- connections whose compressor keeps its context between messages (the default of
  :class:`~shakehands.DeflateOptions`), and client connections (every frame has its own mask),
  cannot share: the message goes through their own core, compressed for each. For big fan-outs,
  serve with ``compression=DeflateOptions(server_no_context_takeover=True)`` or broadcast with
  ``compress=False``.

Slow clients. Writing never waits: a broadcast must not let one slow reader hold up the others.
Instead each connection's write buffer is checked against its :class:`SlowClientPolicy` before the
message is queued: past ``max_buffer`` bytes the message is dropped for that client, or the client
is closed with ``close_code`` (1013 "try again later" by default, or 1008). Memory per connection
stays bounded by ``max_buffer`` plus one message, whatever the fan-out rate. What was dropped or
closed is counted per connection (:func:`broadcast_counters`) and per call
(:class:`BroadcastResult`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..protocol.connection import Role
from ..protocol.errors import CloseCode, InvalidState
from ..protocol.extensions.permessage_deflate import PerMessageDeflate
from ..protocol.frames import Opcode, is_valid_close_code, serialize_frame
from .base import TransportProtocol

__all__ = [
    "broadcast",
    "BroadcastResult",
    "ConnectionCounters",
    "SlowClientPolicy",
    "broadcast_counters",
    "get_slow_client_policy",
    "set_slow_client_policy",
]

Message = str | bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class SlowClientPolicy:
    """What a broadcast does with a client that does not read fast enough.

    Attributes:
        max_buffer: bytes that may wait in the connection's write buffer. A message that would
            take it past this limit (while something is already waiting) is not queued.
        action: ``"drop"`` skips the message for that client (it stays connected and misses
            it); ``"close"`` closes the connection with ``close_code``.
        close_code: 1013 (try again later) by default; 1008 (policy violation) also fits.

    Example:
        >>> strict = SlowClientPolicy(max_buffer=256 * 1024, action="close", close_code=1008)
    """

    max_buffer: int = 2**20
    action: Literal["drop", "close"] = "drop"
    close_code: int = CloseCode.TRY_AGAIN_LATER

    def __post_init__(self) -> None:
        if self.max_buffer < 0:
            raise ValueError("max_buffer must not be negative")
        if self.action not in ("drop", "close"):
            raise ValueError("action must be 'drop' or 'close'")
        if not is_valid_close_code(self.close_code):
            raise ValueError(f"invalid close code {self.close_code}")


#: The policy of connections that were given none: drop past 1 MiB.
DEFAULT_POLICY = SlowClientPolicy()


@dataclass(slots=True)
class ConnectionCounters:
    """What broadcasts dropped for one connection (see :func:`broadcast_counters`)."""

    dropped_messages: int = 0
    dropped_bytes: int = 0
    #: The connection was closed by its slow-client policy.
    closed_as_slow: bool = False


@dataclass(slots=True)
class BroadcastResult:
    """What one :func:`broadcast` call did.

    Attributes:
        sent: connections the message was queued on.
        dropped: slow connections that missed it (policy ``"drop"``).
        closed: slow connections closed by their policy (``"close"``).
        skipped: connections that were not open (closing, closed, or still in the handshake),
            or in the middle of sending a fragmented message (nothing may come between its
            frames).
        frames: how many times the message was framed (shared framings plus per-connection ones).
    """

    sent: int = 0
    dropped: int = 0
    closed: int = 0
    skipped: int = 0
    frames: int = 0
    #: The connections the message was dropped for or that were closed, for logging.
    slow: list[TransportProtocol] = field(default_factory=list)


def set_slow_client_policy(connection: TransportProtocol, policy: SlowClientPolicy) -> None:
    """Give ``connection`` its own slow-client policy (overrides a broadcast's ``policy``)."""
    connection.broadcast_policy = policy


def get_slow_client_policy(connection: TransportProtocol) -> SlowClientPolicy | None:
    """The policy set with :func:`set_slow_client_policy`, or ``None``."""
    policy: SlowClientPolicy | None = connection.broadcast_policy
    return policy


def broadcast_counters(connection: TransportProtocol) -> ConnectionCounters:
    """What broadcasts dropped for ``connection`` so far (zeros if nothing was)."""
    counters: ConnectionCounters | None = connection.broadcast_dropped
    return counters or ConnectionCounters()


# A framing key says which connections would produce identical bytes for a message.
_PLAIN = ("plain",)
_OWN: tuple[str, ...] = ()  # this connection frames for itself (client, or deflate context)


def _framing_key(connection: TransportProtocol, compress: bool) -> tuple[object, ...]:
    protocol = connection.protocol
    if protocol.role is Role.CLIENT or not protocol.shares_frames:
        return _OWN  # a client masks each frame; draft-76 frames differ
    codec = protocol.deflate
    if codec is None or not compress:
        return _PLAIN
    if codec.local_no_context_takeover:
        return (
            "deflate",
            codec.local_max_window_bits,
            codec.compress_level,
            codec.memory_level,
        )
    return _OWN


def _shared_frame(key: tuple[object, ...], opcode: int, payload: bytes) -> bytes:
    if key is _PLAIN:
        return serialize_frame(opcode, payload)
    _, bits, level, memory = key
    assert isinstance(bits, int) and isinstance(level, int) and isinstance(memory, int)
    codec = PerMessageDeflate(
        local_no_context_takeover=True,
        remote_no_context_takeover=True,
        local_max_window_bits=bits,
        remote_max_window_bits=15,
        compress_level=level,
        memory_level=memory,
    )
    return serialize_frame(opcode, codec.compress(payload, True), rsv1=True)


def _too_slow(
    connection: TransportProtocol,
    size: int,
    policy: SlowClientPolicy,
    result: BroadcastResult,
) -> bool:
    """Apply the policy if queuing ``size`` more bytes would pass the limit; True if so."""
    buffered = connection.write_buffer_size(policy.max_buffer)
    if not buffered or buffered + size <= policy.max_buffer:
        return False
    counters: ConnectionCounters | None = connection.broadcast_dropped
    if counters is None:
        counters = connection.broadcast_dropped = ConnectionCounters()
    counters.dropped_messages += 1
    counters.dropped_bytes += size
    result.slow.append(connection)
    if policy.action == "close":
        counters.closed_as_slow = True
        result.closed += 1
        # Stop queuing now; the close frame goes behind what is buffered, and the transport
        # is aborted after close_timeout if the client never reads it.
        connection.fail(policy.close_code, "too slow to read broadcast messages")
    else:
        result.dropped += 1
    return True


def broadcast(
    connections: Iterable[TransportProtocol],
    message: Message,
    *,
    compress: bool = True,
    policy: SlowClientPolicy | None = None,
    frames: dict[tuple[object, ...], bytes] | None = None,
    flush: bool = True,
) -> BroadcastResult:
    """Queue ``message`` on every open connection of ``connections``, framing it once.

    Works with any shakehands connection: :class:`~shakehands.ServerConnection` (coroutine API),
    :class:`~shakehands.CallbackConnection` (callback API), even client connections. It is a
    plain function and never waits: a client whose write buffer is full is handled by its
    :class:`SlowClientPolicy` (the one set with :func:`set_slow_client_policy`, else ``policy``,
    else drop past 1 MiB), so one slow reader never holds up the others.

    Args:
        connections: where to send; connections that are not open are skipped.
        message: ``str`` for a text message, bytes-like for a binary one.
        compress: with permessage-deflate negotiated, compress the message (once per group of
            connections with the same compressor settings, when they can share it).
        policy: the slow-client policy of connections that have none of their own.
        frames: a dictionary kept with ``message`` by a caller that sends it in several calls
            (a replay to one client after another): frames built are stored in it and reused,
            so the message is framed once in all.
        flush: write each connection's queued frames now (the default). With ``False`` they
            stay queued on its core until the caller calls ``connection.write_queued()``: a
            caller sending many messages to one connection in a row (a replay) writes them
            with one system call.

    Returns:
        A :class:`BroadcastResult`: how many connections got it, missed it, were closed.

    Example::

        async def handler(ws):
            async for message in ws:
                broadcast(server.connections, message)
    """
    if isinstance(message, str):
        opcode: int = Opcode.TEXT
        payload = message.encode("utf-8")
    elif isinstance(message, (bytes, bytearray, memoryview)):
        opcode = Opcode.BINARY
        payload = bytes(message)
    else:
        raise TypeError(f"cannot send {type(message).__name__}")
    default_policy = policy or DEFAULT_POLICY
    size = len(payload)
    if frames is None:
        frames = {}
    result = BroadcastResult()
    for connection in connections:
        if not connection.can_take_messages():
            result.skipped += 1
            continue
        protocol = connection.protocol
        if _too_slow(connection, size, connection.broadcast_policy or default_policy, result):
            continue
        key = _framing_key(connection, compress)
        try:
            if key is _OWN:
                protocol.send_message(message, compress=compress)
                result.frames += 1
            else:
                frame = frames.get(key)
                if frame is None:
                    frame = frames[key] = _shared_frame(key, opcode, payload)
                    result.frames += 1
                protocol.send_serialized(frame)
        except InvalidState:
            # The application is sending a fragmented message on it: nothing may come between.
            result.skipped += 1
            continue
        # Anything the core queued before (a pong) leaves first, through the connection's one
        # write path; a close frame the core owes cannot be pending here (checked above).
        if flush:
            connection.write_queued()
        result.sent += 1
    return result
