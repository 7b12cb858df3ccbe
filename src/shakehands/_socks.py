"""What the asyncio and the sync clients' SOCKS tunnels share (``python-socks``, an optional
extra, imported by each client for its own flavour): the proxy object made from a
:class:`~shakehands.protocol.proxy.Proxy`, and the translation of its errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .protocol.proxy import Proxy, ProxyError

__all__ = ["socks_proxy", "socks_errors"]


def socks_proxy(proxy_class: Any, proxy: Proxy) -> Any:
    """A ``python_socks`` proxy of ``proxy_class`` (its sync or asyncio ``Proxy``) for
    ``proxy``: ``socks5h`` and ``socks4a`` let the proxy resolve the host, ``socks5`` and
    ``socks4`` resolve it here."""
    from python_socks import ProxyType

    proxy_type = ProxyType.SOCKS5 if proxy.scheme.startswith("socks5") else ProxyType.SOCKS4
    return proxy_class(
        proxy_type,
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=proxy.password,
        rdns=proxy.scheme in ("socks5h", "socks4a"),
    )


@contextlib.contextmanager
def socks_errors(proxy: Proxy) -> Iterator[None]:
    """Around ``connect``: python-socks' timeout becomes :class:`TimeoutError`, a refusal a
    :class:`~shakehands.protocol.proxy.ProxyError` naming ``proxy``; an unreachable proxy's
    error (``ProxyConnectionError``, an ``OSError``) stays as it is."""
    from python_socks import ProxyConnectionError, ProxyTimeoutError
    from python_socks import ProxyError as SocksError

    try:
        yield
    except ProxyTimeoutError as exc:
        raise TimeoutError(str(exc)) from exc
    except ProxyConnectionError:
        raise
    except SocksError as exc:
        raise ProxyError(f"SOCKS proxy {proxy.url} refused: {exc}") from exc
