"""Both clients (asyncio and blocking) through real proxies started by the tests: tinyproxy
(HTTP CONNECT, with and without Basic auth, its 407 and 403), tinyproxy behind a TLS front (an
https:// proxy), Dante (SOCKS5, SOCKS5h, SOCKS4, SOCKS4a, a refused CONNECT); ws:// and wss://;
the environment (http_proxy, https_proxy, all_proxy, NO_PROXY) and proxy=None."""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import shakehands
import shakehands.sync
from shakehands.protocol.errors import InvalidHandshake
from shakehands.protocol.proxy import InvalidProxyMessage, InvalidProxyStatus, ProxyError

from ..helpers import HOST, free_port
from .proxy_helpers import TLSFront, danted, microsocks, silent_listener, tinyproxy

pytestmark = pytest.mark.timeout(60)

CLIENTS = ["asyncio", "sync"]


def echo_once(client: str, uri: str, **kwargs: Any) -> tuple[str, Any]:
    """Connect with ``client``, send a message, return its echo and the connection."""
    if client == "asyncio":

        async def main() -> tuple[str, Any]:
            async with asyncio.timeout(30), shakehands.connect(uri, **kwargs) as ws:
                await ws.send("through the proxy")
                return str(await ws.recv()), ws

        return asyncio.run(main())
    with shakehands.sync.connect(uri, **kwargs) as ws:
        ws.send("through the proxy")
        return str(ws.recv(timeout=30)), ws


def connect_error(client: str, uri: str, **kwargs: Any) -> BaseException:
    """The exception that connecting raises."""
    with pytest.raises(Exception) as info:
        echo_once(client, uri, **kwargs)
    return info.value


@pytest.fixture
def client_ssl(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def connects_logged(log: str, port: int) -> int:
    return log.count(f"CONNECT {HOST}:{port}")


# ---------------------------------------------------------------------------------------------
# HTTP CONNECT through tinyproxy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_ws_through_tinyproxy(client: str, tmp_path: Path, ws_port: int) -> None:
    with tinyproxy(tmp_path) as proxy:
        echo, ws = echo_once(client, f"ws://{HOST}:{ws_port}/", proxy=proxy.url())
        assert echo == "through the proxy"
        assert ws.close_code == 1000
        assert connects_logged(proxy.log_text(), ws_port) == 1
        assert ws.remote_address[:2] == (HOST, proxy.port)


@pytest.mark.parametrize("client", CLIENTS)
def test_wss_through_tinyproxy(
    client: str, tmp_path: Path, wss_port: int, client_ssl: ssl.SSLContext
) -> None:
    with tinyproxy(tmp_path) as proxy:
        uri = f"wss://{HOST}:{wss_port}/"
        echo, _ = echo_once(client, uri, proxy=proxy.url(), ssl=client_ssl)
        assert echo == "through the proxy"
        assert connects_logged(proxy.log_text(), wss_port) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_wss_through_proxy_checks_server_certificate(
    client: str, tmp_path: Path, wss_port: int
) -> None:
    # The default context does not trust the test certificate: TLS to the server is verified
    # end to end, inside the tunnel.
    with tinyproxy(tmp_path) as proxy:
        exc = connect_error(client, f"wss://{HOST}:{wss_port}/", proxy=proxy.url())
        assert isinstance(exc, ssl.SSLCertVerificationError), exc


@pytest.mark.parametrize("client", CLIENTS)
def test_basic_auth_ok(client: str, tmp_path: Path, ws_port: int) -> None:
    # tinyproxy's passwords are [A-Za-z0-9._-]: %2E, a percent-encoded ".", is decoded.
    with tinyproxy(tmp_path, auth=("alice", "p.ss-w_0rd")) as proxy:
        url = proxy.url("alice:p%2Ess-w_0rd")
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/", proxy=url)
        assert echo == "through the proxy"


@pytest.mark.parametrize("client", CLIENTS)
def test_407_without_credentials(client: str, tmp_path: Path, ws_port: int) -> None:
    with tinyproxy(tmp_path, auth=("alice", "p.ss-w_0rd")) as proxy:
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=proxy.url())
        assert isinstance(exc, InvalidProxyStatus), exc
        assert exc.response.status == 407
        assert exc.status == 407
        assert exc.response.reason == "Proxy Authentication Required"
        assert "Basic" in exc.response.headers["Proxy-Authenticate"]
        assert "407 Proxy Authentication Required" in str(exc)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    "userinfo", ["alice:wrong", "bob:p.ss-w_0rd", "alice:p.ss-w_0r", "alice", "alice:"]
)
def test_wrong_credentials(client: str, userinfo: str, tmp_path: Path, ws_port: int) -> None:
    # tinyproxy 1.11 answers wrong credentials with 401 Unauthorized (RFC 9110 says 407): the
    # error carries whatever status the proxy sent. "alice" alone sends "alice:".
    with tinyproxy(tmp_path, auth=("alice", "p.ss-w_0rd")) as proxy:
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=proxy.url(userinfo))
        assert isinstance(exc, InvalidProxyStatus), exc
        assert exc.response.status in (401, 407)
        assert exc.status == exc.response.status
        assert f"{exc.response.status} {exc.response.reason}" in str(exc)
        assert "w0r" not in str(exc) and "wrong" not in str(exc)


@pytest.mark.parametrize("client", CLIENTS)
def test_403_port_not_allowed(client: str, tmp_path: Path, ws_port: int) -> None:
    with tinyproxy(tmp_path, connect_ports=(ws_port + 1,)) as proxy:
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=proxy.url())
        assert isinstance(exc, InvalidProxyStatus), exc
        assert (exc.response.status, exc.response.reason) == (403, "Access violation")
        assert "403 Access violation" in str(exc)


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_cannot_reach_server(client: str, tmp_path: Path) -> None:
    with tinyproxy(tmp_path) as proxy:
        exc = connect_error(client, f"ws://{HOST}:{free_port()}/", proxy=proxy.url())
        assert isinstance(exc, InvalidProxyStatus), exc
        assert exc.response.status == 500  # tinyproxy's "Unable to connect"


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_unreachable(client: str) -> None:
    exc = connect_error(client, f"ws://{HOST}:{free_port()}/", proxy=f"http://{HOST}:{free_port()}")
    assert isinstance(exc, ConnectionRefusedError), exc


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_that_never_answers_counts_in_open_timeout(client: str) -> None:
    with silent_listener() as port:
        exc = connect_error(
            client, f"ws://{HOST}:{free_port()}/", proxy=f"http://{HOST}:{port}", open_timeout=1
        )
        assert isinstance(exc, TimeoutError), exc


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_that_is_not_http(client: str, ws_port: int) -> None:
    # A WebSocket server is no proxy: it answers CONNECT with an HTTP error we report.
    exc = connect_error(client, f"ws://{HOST}:{free_port()}/", proxy=f"http://{HOST}:{ws_port}")
    assert isinstance(exc, ProxyError), exc


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_that_speaks_tls_to_an_http_proxy_url(
    client: str, tmp_path: Path, ws_port: int, server_context: ssl.SSLContext
) -> None:
    with tinyproxy(tmp_path) as proxy, TLSFront(server_context, proxy.port) as front:
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=f"http://{HOST}:{front.port}")
        assert isinstance(exc, (InvalidProxyMessage, OSError)), exc


# ---------------------------------------------------------------------------------------------
# An https:// proxy: TLS to the proxy, then TLS to the server inside it for wss://
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.usefixtures("trust_test_certificate")
def test_ws_through_https_proxy(
    client: str, tmp_path: Path, ws_port: int, server_context: ssl.SSLContext
) -> None:
    with (
        tinyproxy(tmp_path, auth=("alice", "pw")) as proxy,
        TLSFront(server_context, proxy.port) as front,
    ):
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/", proxy=front.url("alice:pw"))
        assert echo == "through the proxy"
        assert connects_logged(proxy.log_text(), ws_port) == 1
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=front.url())
        assert isinstance(exc, InvalidProxyStatus) and exc.response.status == 407


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.usefixtures("trust_test_certificate")
def test_wss_through_https_proxy(
    client: str,
    tmp_path: Path,
    wss_port: int,
    server_context: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
) -> None:
    with tinyproxy(tmp_path) as proxy, TLSFront(server_context, proxy.port) as front:
        uri = f"wss://{HOST}:{wss_port}/"
        echo, _ = echo_once(client, uri, proxy=front.url(), ssl=client_ssl)
        assert echo == "through the proxy"
        assert connects_logged(proxy.log_text(), wss_port) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_https_proxy_certificate_is_checked(
    client: str, tmp_path: Path, ws_port: int, server_context: ssl.SSLContext
) -> None:
    with tinyproxy(tmp_path) as proxy, TLSFront(server_context, proxy.port) as front:
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=front.url())
        assert isinstance(exc, ssl.SSLCertVerificationError), exc
        assert connects_logged(proxy.log_text(), ws_port) == 0


# ---------------------------------------------------------------------------------------------
# SOCKS through Dante
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "socks4", "socks4a"])
def test_ws_through_socks(client: str, scheme: str, tmp_path: Path, ws_port: int) -> None:
    with danted(tmp_path) as proxy:
        url = f"{scheme}://{HOST}:{proxy.port}"
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/", proxy=url)
        assert echo == "through the proxy"


@pytest.mark.parametrize("client", CLIENTS)
def test_wss_through_socks5(
    client: str, tmp_path: Path, wss_port: int, client_ssl: ssl.SSLContext
) -> None:
    with danted(tmp_path) as proxy:
        echo, _ = echo_once(client, f"wss://{HOST}:{wss_port}/", proxy=proxy.url(), ssl=client_ssl)
        assert echo == "through the proxy"


@pytest.mark.parametrize("client", CLIENTS)
def test_socks_refusal(client: str, tmp_path: Path, ws_port: int) -> None:
    with danted(tmp_path, blocked_port=ws_port) as proxy:
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=proxy.url())
        assert type(exc) is ProxyError, exc
        assert "SOCKS proxy" in str(exc) and f"{HOST}:{proxy.port}" in str(exc)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_with_password(client: str, scheme: str, tmp_path: Path, ws_port: int) -> None:
    with microsocks(tmp_path, auth=("alice", "s3cret:@")) as proxy:
        url = f"{scheme}://alice:s3cret%3A%40@{HOST}:{proxy.port}"
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/", proxy=url)
        assert echo == "through the proxy"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("userinfo", ["", "alice:wrong@", "bob:s3cret@"])
def test_socks5_refuses_credentials(
    client: str, userinfo: str, tmp_path: Path, ws_port: int
) -> None:
    with microsocks(tmp_path, auth=("alice", "s3cret")) as proxy:
        url = f"socks5://{userinfo}{HOST}:{proxy.port}"
        exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=url)
        assert type(exc) is ProxyError, exc
        assert "SOCKS proxy" in str(exc) and "wrong" not in str(exc)


@pytest.mark.parametrize("client", CLIENTS)
def test_socks_without_python_socks(
    client: str, monkeypatch: pytest.MonkeyPatch, ws_port: int
) -> None:
    # As if python-socks were not installed: its import fails.
    for name in [m for m in sys.modules if m == "python_socks" or m.startswith("python_socks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "python_socks", None)
    exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy=f"socks5://{HOST}:1")
    assert isinstance(exc, ImportError), exc
    assert "shakehands[socks]" in str(exc)


# ---------------------------------------------------------------------------------------------
# The environment, NO_PROXY, proxy=None
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("variable", ["http_proxy", "ws_proxy", "all_proxy", "ALL_PROXY"])
def test_ws_proxy_from_environment(
    client: str, variable: str, tmp_path: Path, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv(variable, proxy.url())
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/")
        assert echo == "through the proxy"
        assert connects_logged(proxy.log_text(), ws_port) == 1


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("variable", ["https_proxy", "HTTPS_PROXY", "wss_proxy"])
def test_wss_proxy_from_environment(
    client: str,
    variable: str,
    tmp_path: Path,
    wss_port: int,
    client_ssl: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv(variable, proxy.url())
        monkeypatch.setenv("http_proxy", f"http://{HOST}:{free_port()}")  # not for wss://
        echo, _ = echo_once(client, f"wss://{HOST}:{wss_port}/", ssl=client_ssl)
        assert echo == "through the proxy"
        assert connects_logged(proxy.log_text(), wss_port) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_socks_proxy_from_environment(
    client: str, tmp_path: Path, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with danted(tmp_path) as proxy:
        monkeypatch.setenv("all_proxy", f"socks5h://{HOST}:{proxy.port}")
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/")
        assert echo == "through the proxy"


@pytest.mark.parametrize("client", CLIENTS)
def test_upper_case_http_proxy_is_ignored(
    client: str, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{HOST}:{free_port()}")  # nothing listens there
    echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/")
    assert echo == "through the proxy"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    "no_proxy", ["127.0.0.1", "localhost,127.0.0.0/8", "*", "{host}:{port}", "[127.0.0.1]"]
)
def test_no_proxy_bypasses(
    client: str, no_proxy: str, tmp_path: Path, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url())
        monkeypatch.setenv("NO_PROXY", no_proxy.format(host=HOST, port=ws_port))
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/")
        assert echo == "through the proxy"
        assert connects_logged(proxy.log_text(), ws_port) == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_no_proxy_other_port_does_not_bypass(
    client: str, tmp_path: Path, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url())
        monkeypatch.setenv("no_proxy", f"{HOST}:{ws_port + 1},example.com")
        echo_once(client, f"ws://{HOST}:{ws_port}/")
        assert connects_logged(proxy.log_text(), ws_port) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_none_disables_the_environment(
    client: str, tmp_path: Path, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url())
        monkeypatch.setenv("all_proxy", proxy.url())
        echo, _ = echo_once(client, f"ws://{HOST}:{ws_port}/", proxy=None)
        assert echo == "through the proxy"
        assert connects_logged(proxy.log_text(), ws_port) == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_explicit_proxy_overrides_environment(
    client: str, tmp_path: Path, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("http_proxy", f"http://{HOST}:{free_port()}")
        monkeypatch.setenv("no_proxy", "*")
        echo_once(client, f"ws://{HOST}:{ws_port}/", proxy=proxy.url())
        assert connects_logged(proxy.log_text(), ws_port) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_invalid_proxy_urls_fail_before_any_io(
    client: str, ws_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    exc = connect_error(client, f"ws://{HOST}:{ws_port}/", proxy="ftp://p:21")
    assert isinstance(exc, ValueError) and "unsupported proxy scheme" in str(exc)
    monkeypatch.setenv("http_proxy", "http://p:notaport")
    exc = connect_error(client, f"ws://{HOST}:{ws_port}/")
    assert isinstance(exc, ValueError) and "from the environment" in str(exc)


@pytest.mark.parametrize("client", CLIENTS)
def test_ws_uri_of_tls_server_through_proxy(client: str, tmp_path: Path) -> None:
    # The wrong scheme through a proxy: an error, and no direct TLS probe of the server (which
    # would go around the proxy): the server sees exactly one connection, the proxy's.
    accepted = []
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted.append(conn)
                conn.recv(4096)
                conn.close()  # answers nothing, like a TLS server to plain HTTP

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with tinyproxy(tmp_path) as proxy:
            exc = connect_error(client, f"ws://{HOST}:{port}/", proxy=proxy.url(), open_timeout=10)
            assert isinstance(exc, (InvalidHandshake, OSError)), exc
            time.sleep(0.5)
            assert len(accepted) == 1
