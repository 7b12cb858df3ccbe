"""The callback API on the compiled data path: :class:`FastCallbackConnection`.

It owns the seam between :class:`~.callback.CallbackConnection` (the pure-Python callback
connection, driving the sans-I/O core) and ``shakehands._fastpath`` (C): which one
:func:`~.callback.serve_callbacks` uses (:func:`connection_factory`), and the hand-over of
bytes between the C path and the core. It must not know the protocol's rules: every one of them
stays in the core (:mod:`shakehands.protocol`).

Theory of operation. The connection is an ``asyncio.BufferedProtocol`` from the start, so that
the transport never has to switch protocols (switching after the handshake would need
``transport.set_protocol`` while bytes read with the request may already be buffered).
asyncio's socket transports then read into ``get_buffer()``; uvloop does not (it takes the
buffered path only for protocols that are not ``asyncio.Protocol`` subclasses, and this class
is one through :class:`~.base.TransportProtocol`), nor does asyncio's TLS transport feed it
without a copy: they call ``data_received(bytes)``, which parses the bytes where they are.
``get_buffer``, ``buffer_updated``, ``data_received`` and ``send`` are C
(``CallbackFastPathMixin``); the state is the C ``FastPath`` in ``_fast``.

* While the C path is off (the handshake, a fragmented message, after a control frame, while
  closing), every byte read goes to :meth:`_slow_received`, i.e. the core, in order.
* It is turned on (:meth:`_refresh_fast`) only when the core is open and *between messages*
  (:meth:`~shakehands.protocol.reader.FrameReader.between_messages`): nothing buffered, no
  message in progress, no close frame owed, and no extension or only one on RSV1
  (permessage-deflate).
* While on, C parses whole, unfragmented, masked text and binary frames within the limits,
  unmasks them, decodes compressed ones with one call to the extension's ``decode`` (the
  core's own object, so context takeover spans both paths; when it raises, the core fails
  the connection: :meth:`_fast_decode_failed`), checks UTF-8 and calls
  ``listener.on_message(ws, message)`` for each; ``send`` compresses with one call to its
  ``encode`` unless ``compress=False``,
  builds the frame in C and queues it until the end of the batch (one write per read, as in
  the Python path). The first frame it does not take (a control frame, a fragment, RSV bits,
  a frame over the limit, invalid UTF-8) ends its run: it writes what was queued, turns itself
  off and hands that frame and everything after it to the core, which answers, fails or
  closes exactly as it does without the C path.
* Anything Python writes (pings, close frames, broadcasts) first writes what C queued
  (:meth:`_flush`, :meth:`write_queued`), so frames leave in the order they were sent; a
  state change that ends the open state (close, failure) turns the C path off.

Direct socket I/O, on asyncio's plain TCP transport only (:func:`direct_fd`: exactly
``_SelectorSocketTransport``, so no TLS, no uvloop, no proactor). C writes with ``send(2)``
on the socket itself while the transport is not closing and its write buffer is empty, which
is all ``transport.write`` does then, minus its Python frame; what the kernel does not take
goes to ``transport.write``, and so does everything after an error (it reports it and closes
as for its own sends). Once the connection is open, the ``FastPath`` also replaces the
transport's ``_read_ready`` (:meth:`_take_reads`): the loop then calls C, which does what
asyncio's ``_read_ready__get_buffer`` does (``recv`` into the read buffer, then
``buffer_updated``; EOF, errors and failures through the transport's own methods) without its
two Python frames. The fd is forgotten in ``connection_lost``, which asyncio calls before it
closes the socket; nothing is sent once the transport is closing.

On asyncio's selector loop without TLS, the server makes these connections'
transports itself (:class:`~.server.DirectAccept`, asked through :attr:`_Factory.transport`):
:class:`~._transport.LeanTransport`, slotted and its own selector handle, in place of
``_SelectorSocketTransport``; the FastPath then becomes its ``_reader``. The direct I/O above is
the same on either.

Large frames. A frame the C path takes of more than 64 KiB that a read cuts is read straight
into its message: its ``bytes`` object is made once its header is in, what was read of it is
unmasked into it, and later reads go into it (``get_buffer`` and the compiled reader offer
exactly the rest of its payload) and are unmasked in place; ``data_received`` (uvloop, TLS)
unmasks from where the bytes are. One copy after the kernel's, where the connection's own
buffer cost two. If the C path is turned off before the frame is whole, the frame so far is
handed to the core as it was received; ``attach(None)`` frees it. On uvloop's transports
(:func:`gathers_writes`) a large payload leaves with its header in one ``writelines`` (one
``writev``, uncopied) rather than two writes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from asyncio import selector_events
from collections.abc import Callable
from typing import Any

from ..protocol._accel import fastpath as _compiled
from ..protocol.connection import State
from ..protocol.errors import CloseCode, ConnectionClosed, InvalidPayload, ProtocolError
from ..protocol.reader import INVALID_UTF8
from ._transport import LeanTransport
from .base import TransportProtocol
from .callback import CallbackConnection, Listener
from .server import Server

__all__ = [
    "AVAILABLE",
    "enabled",
    "direct_sends",
    "direct_reads",
    "direct_fd",
    "gathers_writes",
    "connection_factory",
    "FastCallbackConnection",
]

logger = logging.getLogger("shakehands.server")

#: Whether the compiled data path is built and allowed (not ``SHAKEHANDS_NO_SPEEDUPS=1``).
AVAILABLE: bool = _compiled is not None

#: Whether :func:`~.callback.serve_callbacks` uses it: :data:`AVAILABLE` by default; tests set
#: it to ``False`` to run the same tests on the pure-Python path in the same process.
enabled: bool = AVAILABLE

#: Whether the C path sends on the socket of asyncio's plain TCP transport itself
#: (:func:`direct_fd`); read when a connection is made. Off: every write is
#: ``transport.write`` (and :data:`direct_reads` is off too).
direct_sends: bool = bool(getattr(_compiled, "DIRECT", False))

#: Whether it also reads that socket itself, in place of the transport's ``_read_ready``
#: (:meth:`FastCallbackConnection._take_reads`); read when a connection opens.
direct_reads: bool = direct_sends

_SelectorSocketTransport: Any = getattr(selector_events, "_SelectorSocketTransport", None)

# What the compiled reader calls on the transport, as asyncio's _read_ready__get_buffer does.
_READER_NEEDS = ("_read_ready", "_read_ready__on_eof", "_fatal_error", "_conn_lost", "_sock_fd")

# What _backlog holds while the C path delivers a large read over several loop iterations
# (CallbackConnection's own backlog is a list of the core's events; this one is C's bytes).
_FAST_BACKLOG: tuple[list[Any], int] = ([], 0)

# The RSV bit of the one extension the C path decodes and encodes through (permessage-deflate).
_RSV1 = 0x40


class _NoMixin:
    __slots__ = ()


_Mixin: Any = getattr(_compiled, "CallbackFastPathMixin", _NoMixin)


def direct_fd(transport: asyncio.BaseTransport) -> int:
    """The file descriptor of ``transport``'s socket if the compiled path may send on it
    itself (:data:`direct_sends`): the transport is exactly asyncio's plain TCP transport
    (``selector_events._SelectorSocketTransport``: no TLS, no subclass; uvloop's transports
    and the proactor's are other types) on a stream socket. Otherwise ``-1``."""
    if not direct_sends or _SelectorSocketTransport is None:
        return -1
    if type(transport) is LeanTransport:
        return transport._sock_fd
    if type(transport) is not _SelectorSocketTransport:
        return -1
    if transport.get_extra_info("sslcontext") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return -1
    return int(sock.fileno())


def gathers_writes(transport: asyncio.BaseTransport) -> bool:
    """Whether ``transport.writelines`` writes its list in one call with no join (uvloop's TCP
    and Unix transports: one ``writev``; asyncio's 3.11 transports join the list into one
    bytes object). The C path then sends a large payload and its header with one
    ``writelines`` instead of two ``write`` calls."""
    kind = type(transport)
    return kind.__module__ == "uvloop.loop" and kind.__name__ in ("TCPTransport", "UnixTransport")


class CompiledConnection(TransportProtocol):
    """What the connections of the compiled path share (callback: :class:`FastCallbackConnection`,
    coroutine: :class:`~._fastcoro.FastServerConnection`): attaching the transport to the C
    ``FastPath`` in ``_fast``, the hand-over of bytes to the core, and the order of writes
    (what C queued leaves before anything the core writes; a state change that ends the open
    state turns the C path off). Placed after the C mixin
    and before the connection class in the bases, so that ``super()`` here is the core's
    connection (the pure-Python ``data_received``)."""

    __slots__ = ()

    _fast: Any
    _in_slow: bool

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._fast.attach(self.transport, direct_fd(self.transport))
        self._fast.gather = gathers_writes(self.transport)

    def _slow_received(self, data: bytes) -> None:
        """Bytes for the core (the C path is off, or handed these over)."""
        self._in_slow = True
        try:
            super().data_received(data)
        finally:
            self._in_slow = False
        self._refresh_fast()

    def _refresh_fast(self) -> None:
        """Turn the C path on if the connection's state lets it take the next frames."""
        raise NotImplementedError

    def _process(self) -> None:
        super()._process()
        if not self._in_slow:
            self._refresh_fast()  # e.g. after an awaitable process_request answered

    def _flush(self) -> None:
        self._fast.flush()  # what C queued leaves first
        super()._flush()
        protocol = self.protocol
        if protocol.state is not State.OPEN or protocol.close_pending:
            self._fast.disable()

    def write_queued(self) -> None:
        """Write now what the core has queued (never an owed close frame: see rule 3)."""
        self._fast.flush()
        super().write_queued()


def connection_factory(listener: Listener) -> Callable[[Server[Any]], CallbackConnection]:
    """The connection factory of one callback server: compiled if :data:`enabled`."""
    if not (enabled and _compiled is not None):
        return lambda server: CallbackConnection(server, listener)
    # One read buffer per server: a server's connections share one event loop, which reads
    # one socket at a time.
    return _Factory(listener, _compiled.ReadBuffer())


class _Factory:
    """The compiled path's connection factory; its :attr:`transport` asks
    :class:`~.server.DirectAccept` for :class:`~._transport.LeanTransport` (plain TCP on
    asyncio's selector loop only: elsewhere the loop makes the transport)."""

    __slots__ = ("listener", "read_buffer")

    transport = LeanTransport

    def __init__(self, listener: Listener, read_buffer: Any) -> None:
        self.listener = listener
        self.read_buffer = read_buffer

    def __call__(self, server: Server[Any]) -> CallbackConnection:
        return FastCallbackConnection(server, self.listener, self.read_buffer)


class FastCallbackConnection(
    _Mixin,  # type: ignore[misc]
    CompiledConnection,
    CallbackConnection,
    asyncio.BufferedProtocol,
):
    """A :class:`~.callback.CallbackConnection` whose common data path is compiled (see the
    module docstring); it behaves the same in every other respect."""

    __slots__ = ("_fast", "_in_slow")

    #: The core's send, for what the C ``send`` does not build (closed, extensions, odd types).
    _send_slow = CallbackConnection.send

    def __init__(self, server: Server[Any], listener: Listener, read_buffer: Any) -> None:
        super().__init__(server, listener)
        assert _compiled is not None
        self._fast = _compiled.FastPath(read_buffer, self.batch_limit)
        self._in_slow = False

    def _refresh_fast(self) -> None:
        """Turn the C path on if the core lets it take the next frames (see
        :meth:`~shakehands.protocol.connection.Connection.frames_takeable`) and this connection
        is not busy with a backlog or closing."""
        if (
            self._in_slow
            or self._backlog is not None
            or self._hold_close
            or self._eof_sent
            or self._lost
            or self.transport.is_closing()
        ):
            return
        protocol = self.protocol
        limit = protocol.frames_takeable(extensions=True)
        if limit is None:
            return
        fast = self._fast
        if direct_reads and not fast.reading and fast.fd >= 0:
            self._take_reads()
        extensions = protocol.extensions
        if not extensions:
            self._fast.enable(self.listener, limit)
        elif len(extensions) == 1 and extensions[0].rsv_bits == _RSV1:
            # permessage-deflate (or any one extension on RSV1): C takes its whole messages
            # and calls its decode/encode, as the core does (see _fast_decode_failed).
            max_message = protocol.max_message_size
            self._fast.enable(
                self.listener, limit, extensions[0], -1 if max_message is None else max_message
            )

    def _take_reads(self) -> None:
        """From now on, C reads the socket (see the module docstring): the ``FastPath``
        becomes the transport's ``_read_ready`` (what asyncio's transport registers with the
        selector on ``resume_reading``), and replaces it now if the transport is reading. Left
        alone if the transport is not what the compiled reader expects."""
        transport: Any = self.transport
        fast = self._fast
        if type(transport) is LeanTransport:
            if transport._sock_fd == fast.fd:
                # The transport is the fd's reader handle: it calls the FastPath from now on.
                fast.take_reads(self)
                transport._reader = fast
            return
        if (
            not all(hasattr(transport, name) for name in _READER_NEEDS)
            or "_read_ready" in vars(transport)
            or transport._sock_fd != fast.fd
            or not isinstance(self.loop, selector_events.BaseSelectorEventLoop)
        ):
            return
        loop: Any = self.loop
        fast.take_reads(self)
        transport._read_ready = fast
        if transport.is_reading():
            # What resume_reading does: the loop's reader for this fd becomes the FastPath.
            loop._add_reader(fast.fd, fast)

    def _fast_error(self, exc: BaseException) -> None:
        """The listener raised in the C path: as :meth:`CallbackConnection._deliver` does."""
        if isinstance(exc, ConnectionClosed):
            return  # it sent on a connection that closed meanwhile: nothing to report
        if not isinstance(exc, Exception):
            raise exc
        logger.error("listener failed", exc_info=exc)
        self._fail(CloseCode.INTERNAL_ERROR, "")

    def _fast_decode_failed(self, exc: BaseException) -> None:
        """C could not take a compressed message: the extension's ``decode`` raised (1009,
        1007), or the text it gave is not UTF-8. The extension has consumed the frame, so the
        core cannot parse it again: it fails the connection as if it had found this itself
        (:meth:`~shakehands.protocol.reader.FrameReader.fail_received`). C has dropped the
        bytes after that frame, as the core drops them."""
        if isinstance(exc, UnicodeDecodeError):
            exc = InvalidPayload(INVALID_UTF8)
        if not isinstance(exc, ProtocolError):
            raise exc  # e.g. MemoryError: as the core's receive_data would let it through
        self.protocol.fail_received(exc)
        self._slow_received(b"")  # the core answers: the close frame, the closing handshake

    def _fast_backlog(self) -> None:
        """C delivered ``batch_limit`` messages of one read: the rest at the next iteration."""
        self.transport.pause_reading()
        self._backlog = _FAST_BACKLOG
        self.loop.call_soon(self._fast_continue)

    def _fast_continue(self) -> None:
        if self._backlog is not _FAST_BACKLOG:
            return  # delivered when the connection was lost
        # _backlog stays set (and reading paused) while these are delivered.
        self._fast.resume(self, False)
        if self._fast.backlogged or self._backlog is not _FAST_BACKLOG:
            return  # more to deliver next time, or the core's own backlog now
        self._backlog = None
        if not self._read_paused_for_write and not self.transport.is_closing():
            self.transport.resume_reading()
        if not self._fast.active:
            self._refresh_fast()

    def _on_connection_lost(self) -> None:
        if self._backlog is _FAST_BACKLOG:
            # Messages received before the end are delivered before on_close.
            self._backlog = None
            self._fast.resume(self, True)
        if self._fast.reading:
            # The transport keeps no reference to this connection (asyncio drops its own).
            transport: Any = self.transport
            if type(transport) is LeanTransport:
                transport._reader = None
            else:
                vars(transport).pop("_read_ready", None)
        self._fast.attach(None)
        super()._on_connection_lost()
