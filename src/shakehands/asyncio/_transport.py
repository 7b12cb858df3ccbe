"""A lean transport for accepted plain TCP sockets on asyncio's selector loop.

asyncio's ``_SelectorSocketTransport`` costs an accepted connection, besides the socket, a
transport object with a ``__dict__`` and a dict of extra info, a ``TransportSocket`` wrapper,
the ``sockname`` tuple, a weak reference in the loop's ``_transports``, a reader ``Handle``
(with its ``Context`` and a bound method) held by the selector, and two ``call_soon`` handles
to start (``connection_made``, ``_add_reader``). This transport is slotted and is its own
reader handle: the loop's selector holds ``(transport, None)`` as the key's data, and the loop
calls :meth:`LeanTransport._run` (what it calls on a ``Handle``: asyncio's selector loop only
needs ``_cancelled``, ``cancel()`` and ``_run()`` of the objects it is given, identical in
3.11, 3.12 and 3.13). ``connection_made`` and the start of reading are one ``call_soon``.

It keeps asyncio's behaviour where the callback stack and applications can see it:
``connection_made`` on the next loop iteration, then reads; ``connection_lost`` through
``call_soon`` once closed, the socket closed after it, the ``asyncio.Server`` told
(``_attach`` / ``_detach``, so ``wait_closed`` and ``close_clients`` work); writes sent at once
while nothing is buffered, the rest buffered with the writer registered and
``pause_writing`` / ``resume_writing`` at the high / low water marks; errors reported and the
connection closed as asyncio's transport does. Differences: the ``sockname`` is read from the
socket on the first ``get_extra_info("sockname")`` (then kept), ``get_extra_info("socket")``
makes a ``TransportSocket`` per call, no ``sendfile`` fast path and no ``start_tls`` (both
fall back or refuse as for a transport without them), and the loop's ``_transports`` does not
know the fd (``loop.add_reader`` on it is not refused).

Used only by :class:`~.server.DirectAccept` for the callback API's compiled path
(:mod:`._fastpath`), which reads the socket itself once a connection is open: the transport's
``_reader`` is then the connection's ``FastPath`` and :meth:`_run` calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import select
import selectors
import socket
from asyncio import base_events, constants, trsock
from typing import Any

__all__ = ["LeanTransport"]

logger = logging.getLogger("asyncio")

_EVENT_READ = selectors.EVENT_READ
_SelectorKey = selectors.SelectorKey
#: The selector whose bookkeeping :meth:`LeanTransport._listen` and :meth:`~LeanTransport.close`
#: do themselves when nothing else is registered for the fd: ``_fd_to_key`` and the epoll
#: object, as ``register`` / ``unregister`` do (the same in 3.11, 3.12 and 3.13), without
#: their five Python frames. Any other selector: its own methods.
_EpollSelector: Any = getattr(selectors, "EpollSelector", None)
_EPOLLIN = getattr(select, "EPOLLIN", 0)
_MAX_READ = 256 * 1024  # what asyncio's transport reads at most per recv()
_HIGH_WATER = 64 * 1024  # asyncio's defaults, shared objects (one int per connection less)
_LOW_WATER = _HIGH_WATER // 4
_NOTHING = b""  # the write buffer while empty (a bytearray only while something is buffered)

# Python 3.13's Server keeps a WeakSet of its transports: _attach(transport).
_ATTACH_TAKES_TRANSPORT = len(inspect.signature(base_events.Server._attach).parameters) > 1  # type: ignore[attr-defined]


class LeanTransport(asyncio.Transport):
    """An ``asyncio.Transport`` over an accepted, non-blocking stream socket (see the module
    docstring); made by ``LeanTransport(loop, sock, protocol, peername, server)``."""

    __slots__ = (
        "_loop",
        "_protocol_paused",
        "_high_water",
        "_low_water",
        "_sock",
        "_protocol",
        "_buffered",
        "_server",
        "_buffer",
        "_conn_lost",
        "_closing",
        "_paused",
        "_eof",
        "_peername",
        "_sockname",
        "_reader",
        "_cancelled",
        "_context",
        "__weakref__",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        peername: Any,
        server: Any = None,
    ) -> None:
        self._loop: Any = loop
        self._protocol_paused = False
        self._high_water = _HIGH_WATER
        self._low_water = _LOW_WATER
        self._sock: socket.socket | None = sock
        self._protocol: Any = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._server = server
        self._buffer: bytes | bytearray = _NOTHING
        self._conn_lost = 0
        self._closing = False
        self._paused = False
        self._eof = False
        self._peername = peername
        self._sockname: Any = None
        #: What :meth:`_run` calls when the socket is readable; ``None``: :meth:`_read_ready`.
        self._reader: Any = None
        self._cancelled = True  # not registered with the selector yet
        self._context = contextvars.copy_context()
        if type(peername) is tuple:  # AF_INET, AF_INET6 (AF_UNIX: a str or bytes)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server is not None:
            if _ATTACH_TAKES_TRANSPORT:
                server._attach(self)
            else:
                server._attach()
        loop.call_soon(self._start, context=self._context)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "closing" if self._closing else "open"
        return f"<{type(self).__name__} fd={self._sock_fd} {state}>"

    @property
    def _sock_fd(self) -> int:
        sock = self._sock
        return -1 if sock is None else sock.fileno()

    # -- the selector's view: this object is the fd's reader handle ------------------------

    def cancel(self) -> None:
        """What the loop calls on the fd's reader when it removes it (``_remove_reader``)."""
        self._cancelled = True

    def _run(self) -> None:
        """Called by the event loop when the socket is readable (as ``Handle._run``)."""
        try:
            reader = self._reader
            if reader is None:
                self._context.run(self._read_ready)
            else:
                self._context.run(reader)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"Exception in callback {self!r}._read_ready()",
                    "exception": exc,
                    "transport": self,
                }
            )

    def _listen(self) -> None:
        """Register this transport as the reader of its fd (``loop._add_reader`` without a
        ``Handle``)."""
        fd = self._sock_fd
        self._cancelled = False
        selector: Any = self._loop._selector
        if type(selector) is _EpollSelector:
            fd_to_key = selector._fd_to_key
            if fd not in fd_to_key:
                selector._selector.register(fd, _EPOLLIN)
                fd_to_key[fd] = _SelectorKey(fd, fd, _EVENT_READ, (self, None))
                return
        try:
            selector.register(fd, _EVENT_READ, (self, None))
        except KeyError:  # the writer is registered (a write during connection_made)
            key = selector.get_key(fd)
            reader, writer = key.data
            selector.modify(fd, key.events | _EVENT_READ, (self, writer))
            if reader is not None and reader is not self:
                reader.cancel()

    def _start(self) -> None:
        try:
            self._protocol.connection_made(self)
        finally:
            if not self._closing and not self._paused:
                try:
                    self._listen()
                except OSError as exc:  # e.g. epoll refusing the fd: never left open unread
                    self._fatal_error(exc, "Fatal error: the socket could not be registered")

    # -- reading ----------------------------------------------------------------------------

    def _read_ready(self) -> None:
        """What asyncio's ``_read_ready__get_buffer`` / ``_read_ready__data_received`` do."""
        if self._conn_lost:
            return
        sock: Any = self._sock
        protocol = self._protocol
        if self._buffered:
            try:
                buf = protocol.get_buffer(-1)
                if not len(buf):
                    raise RuntimeError("get_buffer() returned an empty buffer")
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            try:
                nbytes = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
                return
            if not nbytes:
                self._read_ready__on_eof()
                return
            try:
                protocol.buffer_updated(nbytes)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
            return
        try:
            data = sock.recv(_MAX_READ)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not data:
            self._read_ready__on_eof()
            return
        try:
            protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _read_ready__on_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            self._loop._remove_reader(self._sock_fd)
        else:
            self.close()

    def is_reading(self) -> bool:
        """Whether the transport is receiving."""
        return not self._closing and not self._paused

    def pause_reading(self) -> None:
        """Stop calling the protocol with received data until :meth:`resume_reading`."""
        if self._closing or self._paused:
            return
        self._paused = True
        self._loop._remove_reader(self._sock_fd)

    def resume_reading(self) -> None:
        """Resume the receiving end after :meth:`pause_reading`."""
        if self._closing or not self._paused:
            return
        self._paused = False
        self._listen()

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` now, or buffer what the socket does not take (see the module
        docstring)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            sock: Any = self._sock
            try:
                n = sock.send(data)
            except (BlockingIOError, InterruptedError):
                pass
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            else:
                if n == len(data):
                    return
                data = memoryview(data).cast("B")[n:]
            self._buffer = bytearray(data)
            self._loop._add_writer(self._sock_fd, self._write_ready)
        else:
            self._buffer.extend(data)  # type: ignore[union-attr]
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        """Write an iterable of bytes-like objects (joined into one write)."""
        self.write(b"".join(list_of_data))

    def _write_ready(self) -> None:
        if self._conn_lost:
            return
        buffer: Any = self._buffer
        sock: Any = self._sock
        try:
            n = sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop._remove_writer(self._sock_fd)
            self._buffer = _NOTHING
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        if n:
            del buffer[:n]
        if not buffer:
            self._buffer = _NOTHING
        self._maybe_resume_protocol()  # may write more
        if not self._buffer:
            self._loop._remove_writer(self._sock_fd)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                sock.shutdown(socket.SHUT_WR)

    def get_write_buffer_size(self) -> int:
        """The number of bytes buffered for sending."""
        return len(self._buffer)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the high and low water marks of the write buffer (as asyncio's transports)."""
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``: the water marks of the write buffer."""
        return (self._low_water, self._high_water)

    def _maybe_pause_protocol(self) -> None:
        if len(self._buffer) <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.pause_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or len(self._buffer) > self._low_water:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.resume_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def can_write_eof(self) -> bool:
        """Always ``True``: a stream socket can be shut down for writing."""
        return True

    def write_eof(self) -> None:
        """Shut the socket down for writing once the buffer is sent."""
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            sock: Any = self._sock
            sock.shutdown(socket.SHUT_WR)

    # -- closing ----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` was called, or the connection was lost."""
        return self._closing

    def close(self) -> None:
        """Close once the buffered data is sent; ``connection_lost(None)`` follows."""
        if self._closing:
            return
        self._closing = True
        loop: Any = self._loop
        fd = self._sock_fd
        if not self._buffer:
            self._conn_lost += 1
            self._unregister(fd)
            loop.call_soon(self._call_connection_lost, None, context=self._context)
        else:
            loop._remove_reader(fd)

    def _unregister(self, fd: int) -> None:
        """Take the fd out of the selector (``_remove_reader`` and ``_remove_writer``)."""
        loop: Any = self._loop
        selector: Any = loop._selector
        if type(selector) is _EpollSelector:
            key = selector._fd_to_key.get(fd)
            if key is None:
                return  # paused, or the loop was closed
            reader, writer = key.data
            if writer is None:
                del selector._fd_to_key[fd]
                with contextlib.suppress(OSError):
                    selector._selector.unregister(fd)
                if reader is not None:
                    reader.cancel()
                return
        loop._remove_reader(fd)
        loop._remove_writer(fd)

    def abort(self) -> None:
        """Close at once, dropping buffered data; ``connection_lost(None)`` follows."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        loop: Any = self._loop
        self._buffer = _NOTHING
        self._closing = True
        self._unregister(self._sock_fd)
        self._conn_lost += 1
        loop.call_soon(self._call_connection_lost, exc, context=self._context)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._reader = None
            sock = self._sock
            if sock is not None:
                sock.close()
                self._sock = None
            self._protocol = None
            server = self._server
            if server is not None:
                self._server = None
                if _ATTACH_TAKES_TRANSPORT:
                    server._detach(self)
                else:
                    server._detach()

    # -- the rest of asyncio.Transport --------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername``, ``sockname``, ``socket`` (a ``TransportSocket``); ``default``
        otherwise (no TLS here)."""
        if name == "peername":
            return self._peername
        if name == "sockname":
            sockname = self._sockname
            if sockname is None and self._sock is not None:
                try:
                    sockname = self._sockname = self._sock.getsockname()
                except OSError:
                    return default
            return default if sockname is None else sockname
        if name == "socket":
            sock = self._sock
            return default if sock is None else trsock.TransportSocket(sock)
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Set a new protocol (as asyncio's transports)."""
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The current protocol."""
        protocol: asyncio.BaseProtocol = self._protocol
        return protocol
