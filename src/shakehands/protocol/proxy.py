"""Client proxies, sans I/O: which proxy a URI goes through, and the HTTP CONNECT exchange.

This module owns three things and performs no I/O:

1. **Proxy URLs**: :func:`parse_proxy` turns ``http://user:pass@host:port`` (or ``https://``,
   ``socks5://``, ``socks5h://``, ``socks4://``, ``socks4a://``) into a :class:`Proxy`.
2. **Selection from the environment, as curl does it**: :func:`proxy_from_environment` and
   :func:`proxy_bypassed` (``NO_PROXY``). ``urllib.request.getproxies()`` is not curl (it
   reads ``HTTP_PROXY`` in upper case, knows nothing of ``ws_proxy``, and its ``no_proxy``
   matching differs), hence a function of our own.
3. **The CONNECT exchange** (RFC 9110 §9.3.6): :class:`ProxyHandshake` builds the request
   (with ``Proxy-Authorization: Basic`` from the URL's userinfo) and parses the answer with
   the core's bounded HTTP head parser; a 2xx opens the tunnel, anything else raises
   :class:`InvalidProxyStatus` carrying the proxy's status and reason.

SOCKS is not spoken here: the I/O layers hand it to ``python-socks`` (the ``socks`` extra).
The I/O layers (:mod:`shakehands.asyncio.proxy`, :mod:`shakehands.sync.proxy`) move the bytes.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, TypeAlias
from urllib.parse import unquote, urlsplit

from .errors import InvalidHandshake
from .headers import Headers
from .http11 import MAX_HEADER_BYTES, MAX_HEADERS, MAX_LINE, Response, _HeadParser

__all__ = [
    "Proxy",
    "ProxyArgument",
    "ProxyError",
    "InvalidProxyMessage",
    "InvalidProxyStatus",
    "ProxyHandshake",
    "parse_proxy",
    "proxy_from_environment",
    "proxy_bypassed",
    "select_proxy",
    "SOCKS_SCHEMES",
]

#: What the clients' ``proxy=`` accepts: ``True`` (the default: from the environment), a proxy
#: URL, or ``None`` (no proxy).
ProxyArgument: TypeAlias = str | Literal[True] | None

#: Proxy URL schemes spoken through ``python-socks``.
SOCKS_SCHEMES = frozenset({"socks5", "socks5h", "socks4", "socks4a"})
_DEFAULT_PORTS = {"http": 80, "https": 443} | dict.fromkeys(SOCKS_SCHEMES, 1080)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ProxyError(InvalidHandshake):
    """The proxy could not open a tunnel to the server (base class of the proxy errors).

    SOCKS refusals (from ``python-socks``) are raised as this class itself.
    """


class InvalidProxyMessage(ProxyError):
    """The proxy's answer to CONNECT is not valid HTTP, too large, or cut short."""


class InvalidProxyStatus(ProxyError):
    """The proxy answered CONNECT with a status other than 2xx (407: authentication required,
    403: forbidden, 502: the server is unreachable from the proxy, ...).

    Attributes:
        response: the proxy's answer (``response.status``, ``response.reason``,
            ``response.headers``, for example ``Proxy-Authenticate``); its body is not read.
        status: the same status as an :class:`http.HTTPStatus` (502 for a code that
            :class:`~http.HTTPStatus` does not know).
    """

    def __init__(self, response: Response) -> None:
        try:
            status = HTTPStatus(response.status)
        except ValueError:
            status = HTTPStatus.BAD_GATEWAY
        text = f"proxy refused the tunnel: {response.status} {response.reason}".rstrip()
        super().__init__(text, status)
        self.response = response


# ---------------------------------------------------------------------------------------------
# Proxy URLs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """A parsed proxy URL (see :func:`parse_proxy`).

    Example:
        >>> p = parse_proxy("http://alice:s%3Acret@proxy.example:3128")
        >>> p.scheme, p.host, p.port, p.username, p.password
        ('http', 'proxy.example', 3128, 'alice', 's:cret')
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def is_socks(self) -> bool:
        """Whether this is a SOCKS proxy (spoken through ``python-socks``)."""
        return self.scheme in SOCKS_SCHEMES

    @property
    def url(self) -> str:
        """The URL without its credentials (fit for logs and error messages)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


#: A proxy's host: a DNS name or IPv4 address, or an IPv6 address (``[...]`` in the URL).
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._~-]+)?")


def parse_proxy(url: str) -> Proxy:
    """Parse a proxy URL: ``scheme://[user[:password]@]host[:port]``.

    The scheme is ``http`` (assumed when missing, as curl does), ``https`` (TLS to the proxy),
    ``socks5``, ``socks5h`` (the proxy resolves the name), ``socks4`` or ``socks4a``. The
    default ports are 80 for ``http``, 443 for ``https`` and 1080 for SOCKS. The user name
    and password are percent-decoded.

    Raises:
        ValueError: an unknown scheme, no host, a bad port, or a path in the URL.

    Example:
        >>> parse_proxy("127.0.0.1:8888")
        Proxy(scheme='http', host='127.0.0.1', port=8888, username=None, password=None)
    """
    if not isinstance(url, str):
        raise TypeError(f"proxy must be a URL string, True or None, got {url!r}")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"unsupported proxy scheme {parts.scheme!r} in {url!r}: use http, https, "
            "socks5, socks5h, socks4 or socks4a"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a proxy URL has no path, query or fragment: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in proxy URL {url!r}")
    if not _HOST_RE.fullmatch(host):
        raise ValueError(f"invalid host {host!r} in proxy URL {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in proxy URL {url!r}") from None
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return Proxy(scheme, host, port or _DEFAULT_PORTS[scheme], username, password)


# ---------------------------------------------------------------------------------------------
# Selection from the environment (curl's rules, lib/url.c detect_proxy and lib/noproxy.c)
# ---------------------------------------------------------------------------------------------


def _env_names(secure: bool) -> tuple[str, ...]:
    # curl reads <scheme>_proxy in lower case, then in upper case, then the HTTP fallbacks for
    # WebSocket, then all_proxy / ALL_PROXY. Upper-case HTTP_PROXY is never read (httpoxy: CGI
    # turns a request's ``Proxy:`` header into HTTP_PROXY).
    if secure:
        return ("wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    return ("ws_proxy", "WS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY")


def proxy_from_environment(
    host: str,
    port: int,
    secure: bool,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The proxy URL that curl would use for ``ws[s]://host:port``, or ``None``.

    The variables are read in this order; the first one that is set (even empty) wins, and an
    empty value means no proxy:

    - ``wss://``: ``wss_proxy``, ``WSS_PROXY``, ``https_proxy``, ``HTTPS_PROXY``, ``all_proxy``,
      ``ALL_PROXY``;
    - ``ws://``: ``ws_proxy``, ``WS_PROXY``, ``http_proxy``, ``all_proxy``, ``ALL_PROXY``
      (upper-case ``HTTP_PROXY`` is ignored, as curl does, because CGI servers set it from the
      request's ``Proxy:`` header).

    Then ``no_proxy`` (or, if unset, ``NO_PROXY``) may exempt the host: see
    :func:`proxy_bypassed`.

    Args:
        host: the server's host name or IP address (without brackets).
        port: the server's port.
        secure: ``True`` for ``wss://``.
        environ: the variables (default: ``os.environ``).

    Example:
        >>> env = {"https_proxy": "http://proxy:3128", "no_proxy": ".internal"}
        >>> proxy_from_environment("example.com", 443, True, env)
        'http://proxy:3128'
        >>> proxy_from_environment("db.internal", 443, True, env) is None
        True
    """
    if environ is None:
        environ = os.environ
    url = None
    for name in _env_names(secure):
        if name in environ:
            url = environ[name].strip()
            break
    if not url:
        return None
    no_proxy = environ.get("no_proxy")
    if no_proxy is None:
        no_proxy = environ.get("NO_PROXY", "")
    if proxy_bypassed(host, port, no_proxy):
        return None
    return url


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, ``[v6]``, a bare IPv6 address or a name: (host, port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return host, None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def proxy_bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` exempts ``host:port`` from the proxy (curl's matching, plus ports).

    ``no_proxy`` is a list separated by commas (and/or spaces). ``*`` alone exempts every
    host. Each entry is:

    - a domain name: it matches the name itself and its subdomains, with or without a leading
      dot (``example.com`` and ``.example.com`` both match ``example.com`` and
      ``ws.example.com``, not ``badexample.com``), case-insensitively;
    - an IP address (``127.0.0.1``, ``::1``, ``[::1]``), matched as an address, or a CIDR
      range (``10.0.0.0/8``, ``fd00::/8``);
    - any of these followed by ``:port`` (``localhost:8080``, ``[::1]:8080``): then only that
      port is exempt. This is an addition to curl, which has no ports in ``no_proxy``.

    Names are not resolved: ``localhost`` does not match ``127.0.0.1``.

    Example:
        >>> proxy_bypassed("ws.example.com", 443, "localhost, .example.com")
        True
        >>> proxy_bypassed("10.1.2.3", 80, "10.0.0.0/8")
        True
        >>> proxy_bypassed("localhost", 8080, "localhost:9000")
        False
    """
    no_proxy = no_proxy.strip()
    if not no_proxy:
        return False
    if no_proxy == "*":
        return True
    host = host.strip("[]").rstrip(".").lower()
    host_ip = _ip(host)
    for raw in re.split(r"[,\s]+", no_proxy):
        if not raw:
            continue
        entry, entry_port = _split_port(raw.lower())
        if entry_port is not None and entry_port != port:
            continue
        if host_ip is not None:
            if "/" in entry:
                try:
                    if host_ip in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    pass
                continue
            if _ip(entry) == host_ip:
                return True
            continue
        entry = entry.lstrip(".").rstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def select_proxy(proxy: ProxyArgument, host: str, port: int, secure: bool) -> Proxy | None:
    """The proxy a client's ``proxy=`` argument means for ``ws[s]://host:port``.

    ``True`` (the clients' default) reads the environment (:func:`proxy_from_environment`);
    a string is that proxy's URL (``NO_PROXY`` is not consulted); ``None`` means no proxy.

    Raises:
        ValueError, TypeError: the URL (given or from the environment) is invalid.
    """
    if proxy is None:
        return None
    if proxy is True:
        url = proxy_from_environment(host, port, secure)
        if url is None:
            return None
        try:
            return parse_proxy(url)
        except ValueError as exc:
            raise ValueError(f"{exc} (from the environment)") from None
    return parse_proxy(proxy)


# ---------------------------------------------------------------------------------------------
# The HTTP CONNECT exchange
# ---------------------------------------------------------------------------------------------


def _authority(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # what the resolver would be asked
    return f"{host}:{port}"


class _ConnectResponseParser(_HeadParser):
    """The head of the proxy's answer: HTTP/1.0 or 1.1 (tinyproxy, squid and others answer
    CONNECT in HTTP/1.0), under the core's limits; no body is read (a 2xx to CONNECT has none,
    and on a refusal the connection is closed)."""

    _STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: (.*))?")
    _PREFIX = b"HTTP/1."

    def _reject(self, reason: str) -> InvalidHandshake:
        return InvalidProxyMessage("proxy: " + reason.replace("request line", "status line"))

    def _too_large(self, reason: str) -> InvalidHandshake:
        return InvalidProxyMessage(f"proxy: response {reason}")

    def _check_start(self, start: bytes | bytearray) -> None:
        if not self._PREFIX.startswith(bytes(start[: len(self._PREFIX)])):
            raise self._bad_line(start)

    def _check_start_line(self, line: bytes) -> None:
        if self._STATUS_LINE.fullmatch(line) is None:
            raise self._bad_line(line)

    @staticmethod
    def _bad_line(line: bytes | bytearray) -> InvalidProxyMessage:
        first = bytes(line).partition(b"\r\n")[0]
        return InvalidProxyMessage(f"proxy: invalid status line: {first[:60]!r}")

    def feed(self, data: bytes) -> tuple[Response, bytes] | None:
        parsed = self.feed_head(data)
        if parsed is None:
            return None
        start, fields, rest = parsed
        m = self._STATUS_LINE.fullmatch(start)
        if m is None:  # pragma: no cover - _check_start_line ran on this line
            raise self._bad_line(start)
        try:
            response = Response(
                int(m.group(1)), Headers(fields), reason=(m.group(2) or b"").decode("latin-1")
            )
        except ValueError:
            raise self._bad_line(start) from None
        return response, rest


class ProxyHandshake:
    """One HTTP CONNECT exchange with a proxy: bytes in, bytes out.

    Send :attr:`request`; feed the proxy's bytes to :meth:`receive_data` until it returns
    ``True`` (the tunnel is open: the same connection now carries bytes to and from
    ``host:port``, starting with :attr:`rest`); it raises :class:`InvalidProxyStatus` for a
    non-2xx answer and :class:`InvalidProxyMessage` for a malformed one.

    Args:
        proxy: the proxy (``http`` or ``https``); its user name and password, if any, are
            sent as ``Proxy-Authorization: Basic`` (RFC 7617, UTF-8).
        host: the server's host name or IP address.
        port: the server's port.
        max_line, max_headers, max_header_bytes: limits on the answer's head (the core's
            HTTP limits by default).

    Example:
        >>> h = ProxyHandshake(parse_proxy("http://u:p@proxy:3128"), "example.com", 443)
        >>> print(h.request.decode())  # doctest: +NORMALIZE_WHITESPACE
        CONNECT example.com:443 HTTP/1.1
        Host: example.com:443
        Proxy-Authorization: Basic dTpw
        >>> h.receive_data(b"HTTP/1.1 200 Connection established\\r\\n\\r\\n")
        True
    """

    def __init__(
        self,
        proxy: Proxy,
        host: str,
        port: int,
        *,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.proxy = proxy
        authority = _authority(host, port)
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.username is not None:
            credentials = f"{proxy.username}:{proxy.password or ''}".encode()
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}")
        #: The CONNECT request, to send first.
        self.request: bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii", "strict")
        #: The proxy's answer, once complete.
        self.response: Response | None = None
        #: Bytes that came after the answer: the first bytes of the tunnel.
        self.rest = b""
        self._parser = _ConnectResponseParser(max_line, max_headers, max_header_bytes)

    def receive_data(self, data: bytes) -> bool:
        """Feed bytes from the proxy; ``True`` once the tunnel is open.

        Raises:
            InvalidProxyStatus: the proxy answered with a status other than 2xx.
            InvalidProxyMessage: the answer is not valid HTTP or exceeds the limits.
        """
        parsed = self._parser.feed(data)
        if parsed is None:
            return False
        self.response, self.rest = parsed
        if not 200 <= self.response.status < 300:
            raise InvalidProxyStatus(self.response)
        return True

    def receive_eof(self) -> None:
        """The proxy closed the connection before answering.

        Raises:
            InvalidProxyMessage: always.
        """
        raise InvalidProxyMessage(f"proxy {self.proxy.url} closed the connection before answering")
