"""The options of a connection, defined once: typed, frozen, validated and documented.

This module owns every option that ``serve``, ``serve_callbacks``, ``sync.serve``, ``connect``,
``unix_connect``, ``sync.connect``, ``sync.unix_connect`` and ``sync.reconnect`` accept, apart
from the I/O layer's own (``ssl``, ``sock``, ``backlog``, ``reuse_port``, ``server_hostname``,
``unix_path``): its name, type, default, valid values, and what it means. The client's
connect-time options (``max_redirects``, ``backoff_*``, ``proxy``) are here too: the front ends
read them from the :class:`ClientConfig`, none validates them on its own.

- :class:`ServerConfig` and :class:`ClientConfig` are the options themselves, one frozen
  dataclass per role (with :class:`Config` for what both roles share). Building one validates
  every value: a bad one raises :class:`ValueError` or :class:`TypeError` naming the option
  and the value.
- :class:`ServerOptions` and :class:`ClientOptions` are the same names and types as a
  ``TypedDict``, for the keyword arguments of the front ends (``**options:
  Unpack[ServerOptions]``), so that a type checker catches a misspelt option.
  ``tests/protocol/test_config.py`` checks that each ``TypedDict`` and its dataclass agree.

Timeouts and queue sizes are used by the I/O layers (the core has no clock and no queue); they
are defined here all the same, so that every front end reads them from one place. This module
imports nothing from the I/O layers.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, Unpack

from .extensions.permessage_deflate import DeflateOptions, compression_options
from .headers import HeadersLike
from .http11 import MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE, Request, Response
from .proxy import ProxyArgument, parse_proxy

__all__ = [
    "Config",
    "ServerConfig",
    "ClientConfig",
    "ServerOptions",
    "ClientOptions",
    "UnixClientOptions",
    "Compression",
    "ProcessRequest",
    "SelectSubprotocol",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "server_config",
    "client_config",
    "unix_client_config",
    "ConfiguredConnection",
    "check_handler",
    "check_backoff",
]

#: Default ``max_message_size``: 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 2**20

#: What ``compression=`` accepts: ``"deflate"`` (permessage-deflate with the
#: :class:`~shakehands.DeflateOptions` defaults), a ``DeflateOptions``, or ``None`` (off).
Compression = Literal["deflate"] | DeflateOptions | None

#: ``process_request(request)``: ``None`` to go on with the upgrade, or a
#: :class:`~shakehands.Response` to answer instead (the seed's ``putResponse``). In the asyncio
#: front ends it may also return an awaitable of either.
ProcessRequest = Callable[[Request], "Response | None | Awaitable[Response | None]"]

#: ``select_subprotocol(request, offered) -> chosen or None``.
SelectSubprotocol = Callable[[Request, Sequence[str]], "str | None"]


# ---------------------------------------------------------------------------------------------
# Validation helpers: each names the option and the value it refuses.
# ---------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, *, minimum: int, optional: bool) -> None:
    if value is None and optional:
        return
    if type(value) is bool or not isinstance(value, int):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")


def _check_seconds(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if type(value) is bool or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")


def _strings(name: str, value: object, *, allow_none_items: bool) -> tuple[Any, ...]:
    """A sequence of str (or None items) as a tuple; a bare string is a mistake, not a list."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    kinds = "strings or None" if allow_none_items else "strings"
    for item in items:
        if not (isinstance(item, str) or (item is None and allow_none_items)):
            raise TypeError(f"{name} must hold {kinds}, got {item!r}")
    return items


def check_backoff(initial_delay: float, factor: float, max_delay: float) -> None:
    """Check the three numbers of an exponential backoff (the clients' ``backoff_*`` options,
    :class:`~shakehands.protocol.client.Backoff`): the one place they are validated.

    Raises:
        TypeError: a value is not a number.
        ValueError: ``initial_delay`` not positive, ``factor`` below 1, or ``max_delay`` below
            ``initial_delay``.
    """
    values = {"initial_delay": initial_delay, "factor": factor, "max_delay": max_delay}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"backoff {name} must be a number, got {value!r}")
    if not initial_delay > 0:
        raise ValueError(f"backoff initial_delay must be > 0, got {initial_delay!r}")
    if not factor >= 1:
        raise ValueError(f"backoff factor must be >= 1, got {factor!r}")
    if not max_delay >= initial_delay:
        raise ValueError(
            f"backoff max_delay ({max_delay!r}) must be >= initial_delay ({initial_delay!r})"
        )


def _check_proxy(value: object) -> None:
    if value is None or value is True:
        return
    # A URL is parsed now, so that a bad one fails before any I/O (parse_proxy raises
    # TypeError for anything but a string, naming the accepted values).
    parse_proxy(value)  # type: ignore[arg-type]


def check_handler(handler: object, *, coroutine: bool, expected: str) -> None:
    """Check a connection handler's shape when the server is made, not at the first connection.

    It must be callable with one positional argument (the connection); ``coroutine``: it must
    be an ``async def`` function (or an object whose ``__call__`` is one), else it must not be.

    Raises:
        TypeError: naming the handler and the ``expected`` signature.
    """
    name = getattr(handler, "__qualname__", None) or repr(handler)
    if not callable(handler):
        raise TypeError(f"handler must be a function {expected}, got {handler!r}")
    is_coroutine = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the method, to inspect it
    )
    if coroutine and not is_coroutine:
        raise TypeError(
            f"handler {name} is not a coroutine function: expected {expected} "
            "(use shakehands.sync.serve for a plain function)"
        )
    if not coroutine and is_coroutine:
        raise TypeError(
            f"handler {name} is a coroutine function: the blocking server runs {expected} "
            "in a thread (use shakehands.serve for async def)"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell
        return
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            f"handler {name}{signature} must take one argument, the connection: expected {expected}"
        ) from None


# ---------------------------------------------------------------------------------------------
# The options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Config:
    """The options both roles share. Build a :class:`ServerConfig` or :class:`ClientConfig`.

    Example:
        >>> ServerConfig(max_message_size=2**16).max_message_size
        65536
        >>> ServerConfig(ping_interval=-1)
        Traceback (most recent call last):
        ...
        ValueError: ping_interval must be a positive, finite number of seconds, got -1
    """

    #: Largest message accepted, in bytes, after decompression (``None``: no limit). A larger
    #: one fails the connection with close code 1009 before its payload is buffered.
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    #: Largest single frame accepted (``None``: no limit); 1009 beyond.
    max_frame_size: int | None = None
    #: Received messages buffered for a coroutine or blocking reader before reading from the
    #: socket pauses (TCP then pushes back on the peer). The callback API has no queue.
    max_queue: int = 32
    #: High-water mark of the write buffer, in bytes: above it ``send()`` waits (coroutine
    #: API) or reading from the peer pauses (callback API).
    write_limit: int = 2**16
    #: Seconds between keepalive pings (``None``: no pings). Also the idle timeout of an open
    #: connection: a peer that does not answer is dropped with 1011.
    ping_interval: float | None = 20.0
    #: Seconds to wait for the pong of a keepalive ping (``None``: wait forever).
    ping_timeout: float | None = 20.0
    #: Seconds to complete the opening handshake: a deadline, not an idle timer (``None``: no
    #: deadline). On a client it covers TCP, TLS and the handshake together.
    open_timeout: float | None = 10.0
    #: Seconds for the closing handshake, the lingering close after a refusal, and a close
    #: frame held back until the application has read the messages before it.
    close_timeout: float | None = 10.0
    #: permessage-deflate (RFC 7692): ``"deflate"`` (the :class:`DeflateOptions` defaults), a
    #: ``DeflateOptions``, or ``None`` to neither offer nor accept it. Stored resolved.
    compression: DeflateOptions | None = field(default_factory=DeflateOptions)

    def __post_init__(self) -> None:
        _check_int("max_message_size", self.max_message_size, minimum=1, optional=True)
        _check_int("max_frame_size", self.max_frame_size, minimum=1, optional=True)
        _check_int("max_queue", self.max_queue, minimum=1, optional=False)
        _check_int("write_limit", self.write_limit, minimum=1, optional=False)
        for name in ("ping_interval", "ping_timeout", "open_timeout", "close_timeout"):
            _check_seconds(name, getattr(self, name))
        self._set("compression", compression_options(self.compression))

    @property
    def close_limit(self) -> float:
        """The seconds after which a connection that is closing is dropped for good:
        ``close_timeout``, or 10 s when it is ``None`` (a closing handshake or a lingering close
        must end; an abort is never put off forever)."""
        return self.close_timeout if self.close_timeout is not None else 10.0

    def _set(self, name: str, value: object) -> None:
        """Store a normalised value in this frozen instance (validation only)."""
        object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> Any:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class ServerConfig(Config):
    """The options of a server: those of :class:`Config`, and the ones below."""

    #: Sees every request before any answer (the seed's ``getRequest``); returns ``None`` to go
    #: on with the upgrade or a :class:`~shakehands.Response` to answer instead. If it raises,
    #: the request is answered with 500.
    process_request: ProcessRequest | None = None
    #: Allowed ``Origin`` values, exact matches (``None`` in the list allows a request without
    #: ``Origin``, as non-browser clients send); others get 403. ``None``: any origin.
    origins: Sequence[str | None] | None = None
    #: Subprotocols this server speaks, in order of preference.
    subprotocols: Sequence[str] = ()
    #: A custom choice among the client's offered subprotocols (overrides the default: the
    #: first of the client's offers that is in ``subprotocols``).
    select_subprotocol: SelectSubprotocol | None = None
    #: Longest request line, in bytes (400 beyond).
    max_line: int = MAX_LINE
    #: Most request headers (431 beyond).
    max_headers: int = MAX_HEADERS
    #: Largest size of all request headers together, in bytes (431 beyond).
    max_header_bytes: int = MAX_HEADER_BYTES
    #: Most connections held at once, handshakes included (``None``: no limit); beyond it a
    #: request is answered ``503 Service Unavailable`` with ``Retry-After: 1``.
    max_connections: int | None = None
    #: Also accept the seed's draft-hixie-76 clients (off by default).
    legacy_hixie76: bool = False
    #: WebSockets over HTTP/2 (RFC 8441) on a TLS listener of the asyncio servers: ALPN offers
    #: ``h2`` and ``http/1.1`` on one port. ``None``: on when there is TLS and the ``h2``
    #: package (the ``http2`` extra) is installed; ``True``: on, an error without TLS or
    #: ``h2``; ``False``: HTTP/1.1 only.
    http2: bool | None = None
    #: HTTP/2: most streams open at once on one connection (``SETTINGS_MAX_CONCURRENT_STREAMS``).
    http2_max_streams: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.process_request is not None and not callable(self.process_request):
            raise TypeError(f"process_request must be callable, got {self.process_request!r}")
        if self.select_subprotocol is not None and not callable(self.select_subprotocol):
            raise TypeError(f"select_subprotocol must be callable, got {self.select_subprotocol!r}")
        if self.origins is not None:
            self._set("origins", _strings("origins", self.origins, allow_none_items=True))
        self._set(
            "subprotocols",
            _strings("subprotocols", self.subprotocols or (), allow_none_items=False),
        )
        _check_int("max_line", self.max_line, minimum=16, optional=False)
        _check_int("max_headers", self.max_headers, minimum=1, optional=False)
        _check_int("max_header_bytes", self.max_header_bytes, minimum=1, optional=False)
        _check_int("max_connections", self.max_connections, minimum=1, optional=True)
        if not isinstance(self.legacy_hixie76, bool):
            raise TypeError(f"legacy_hixie76 must be a bool, got {self.legacy_hixie76!r}")
        if self.http2 is not None and not isinstance(self.http2, bool):
            raise TypeError(f"http2 must be a bool or None, got {self.http2!r}")
        _check_int("http2_max_streams", self.http2_max_streams, minimum=1, optional=False)


@dataclass(frozen=True, kw_only=True)
class ClientConfig(Config):
    """The options of a client: those of :class:`Config`, and the ones below."""

    #: An ``Origin`` header to send (browsers always do; other clients need not).
    origin: str | None = None
    #: Subprotocols to offer, in order of preference.
    subprotocols: Sequence[str] = ()
    #: More request headers.
    extra_headers: HeadersLike | None = None
    #: Redirects (301, 302, 303, 307, 308) followed at most; 0 follows none (the 30x is then
    #: raised as :class:`~shakehands.InvalidStatus`).
    max_redirects: int = 10
    #: Reconnection (``async for ws in connect(...)``, ``sync.reconnect``): the wait before the
    #: n-th retry is random in ``[0, min(backoff_max_delay, backoff_initial_delay *
    #: backoff_factor ** n)]`` (:class:`~shakehands.protocol.client.Backoff`), in seconds.
    backoff_initial_delay: float = 1.0
    #: See ``backoff_initial_delay``; at least 1.
    backoff_factor: float = 1.618
    #: See ``backoff_initial_delay``; at least ``backoff_initial_delay``.
    backoff_max_delay: float = 60.0
    #: ``True``: the proxy of the environment, as curl picks it (``wss_proxy``,
    #: ``https_proxy``, ..., ``no_proxy``), for the URI and for each redirect; a proxy URL
    #: (``http://``, ``https://``, ``socks5[h]://``, ``socks4[a]://``): that proxy; ``None``: no
    #: proxy. See ``docs/proxies.md``. Over a Unix domain socket there is none.
    proxy: ProxyArgument = True
    #: ``True``: for a ``wss://`` URI, offer ``h2`` by ALPN and, when the server advertises
    #: ``SETTINGS_ENABLE_CONNECT_PROTOCOL``, open the WebSocket as an HTTP/2 extended CONNECT
    #: stream (RFC 8441); otherwise (``ws://``, a proxy, ``http/1.1`` chosen, the setting
    #: absent) the usual HTTP/1.1 upgrade. Needs the ``http2`` extra (``h2``). ``None`` (the
    #: server's default name) or ``False``: HTTP/1.1 only, as HTTP/2 is opt-in on the client.
    #: asyncio ``connect`` only. See ``docs/http2.md``.
    http2: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.http2 is not None and not isinstance(self.http2, bool):
            raise TypeError(f"http2 must be a bool or None, got {self.http2!r}")
        if self.origin is not None and not isinstance(self.origin, str):
            raise TypeError(f"origin must be a string or None, got {self.origin!r}")
        self._set(
            "subprotocols",
            _strings("subprotocols", self.subprotocols or (), allow_none_items=False),
        )
        _check_int("max_redirects", self.max_redirects, minimum=0, optional=False)
        check_backoff(self.backoff_initial_delay, self.backoff_factor, self.backoff_max_delay)
        _check_proxy(self.proxy)


# ---------------------------------------------------------------------------------------------
# The same names, as keyword arguments of the front ends
# ---------------------------------------------------------------------------------------------


class _CommonOptions(TypedDict, total=False):
    max_message_size: int | None
    max_frame_size: int | None
    max_queue: int
    write_limit: int
    ping_interval: float | None
    ping_timeout: float | None
    open_timeout: float | None
    close_timeout: float | None
    compression: Compression


class ServerOptions(_CommonOptions, total=False):
    """The keyword arguments of ``serve``, ``serve_callbacks`` and ``sync.serve`` that
    :class:`ServerConfig` defines (see there for what each means and its default)."""

    process_request: ProcessRequest | None
    origins: Sequence[str | None] | None
    subprotocols: Sequence[str] | None
    select_subprotocol: SelectSubprotocol | None
    max_line: int
    max_headers: int
    max_header_bytes: int
    max_connections: int | None
    legacy_hixie76: bool
    http2: bool | None
    http2_max_streams: int


class UnixClientOptions(_CommonOptions, total=False):
    """The keyword arguments of ``unix_connect`` and ``sync.unix_connect``: those of
    :class:`ClientOptions` but ``proxy`` (a Unix domain socket is reached directly)."""

    origin: str | None
    subprotocols: Sequence[str] | None
    extra_headers: HeadersLike | None
    max_redirects: int
    backoff_initial_delay: float
    backoff_factor: float
    backoff_max_delay: float


class ClientOptions(UnixClientOptions, total=False):
    """The keyword arguments of ``connect``, ``sync.connect`` and ``sync.reconnect`` that
    :class:`ClientConfig` defines (see there for what each means and its default)."""

    proxy: ProxyArgument
    http2: bool | None


# ---------------------------------------------------------------------------------------------
# The one place where keyword arguments become a configuration
# ---------------------------------------------------------------------------------------------


def server_config(**options: Unpack[ServerOptions]) -> ServerConfig:
    """A :class:`ServerConfig` from a front end's keyword arguments.

    Raises:
        TypeError: an unknown option (its name is in the message), or a value of the wrong type.
        ValueError: a value out of range.
    """
    return ServerConfig(**_resolved(ServerConfig, dict(options)))


def client_config(**options: Unpack[ClientOptions]) -> ClientConfig:
    """A :class:`ClientConfig` from a front end's keyword arguments (see :func:`server_config`)."""
    return ClientConfig(**_resolved(ClientConfig, dict(options)))


def unix_client_config(**options: Unpack[UnixClientOptions]) -> ClientConfig:
    """A :class:`ClientConfig` for a client over a Unix domain socket: ``proxy`` is ``None``.

    Raises:
        TypeError: ``proxy`` among the options (a Unix socket is not reached through a proxy),
            or as :func:`client_config`.
        ValueError: as :func:`client_config`.
    """
    given: dict[str, Any] = dict(options)
    if "proxy" in given:
        raise TypeError("proxy does not apply to a Unix domain socket (unix_connect)")
    return ClientConfig(**_resolved(ClientConfig, given), proxy=None)


def _resolved(config: type[Config], options: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(options) - names)
    if unknown:
        role = "server" if config is ServerConfig else "client"
        raise TypeError(
            f"unknown {role} option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}"
        )
    # "deflate" and subprotocols=None are resolved by the dataclass itself (__post_init__).
    return options


class ConfiguredConnection:
    """What an I/O layer's connection reads from its :class:`Config` (both the asyncio and the
    blocking connections mix this in, so that the two layers expose the same attributes)."""

    __slots__ = ()

    config: Config
    #: The opening handshake's request (server: the client's; client: ours).
    request: Request | None

    @property
    def context(self) -> dict[str, Any]:
        """Application state for this connection: the dictionary ``process_request`` filled in
        as ``request.context`` (:attr:`Request.context <shakehands.Request.context>`), the same
        in every API; empty until something is put in it."""
        request = self.request
        if request is None:
            raise AttributeError("no context before the opening handshake")
        return request.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        request = self.request
        if request is None:
            raise AttributeError("no context before the opening handshake")
        # Any value is kept at run time: code written when the callback API's ws.context was a
        # free attribute (ws.context = 0) goes on working; the type says what new code stores.
        request._context = value

    @property
    def ping_timeout(self) -> float | None:
        """Seconds to wait for a keepalive pong (``config.ping_timeout``)."""
        return self.config.ping_timeout

    @property
    def close_timeout(self) -> float | None:
        """Seconds for the closing handshake (``config.close_timeout``)."""
        return self.config.close_timeout

    @property
    def write_limit(self) -> int:
        """Bytes buffered for the peer above which sending waits (``config.write_limit``)."""
        return self.config.write_limit
