"""Which proxy a URI goes through: proxy URLs, the environment as curl reads it, NO_PROXY
(shakehands.protocol.proxy; no sockets)."""

from __future__ import annotations

import pytest

from shakehands.protocol.proxy import (
    Proxy,
    parse_proxy,
    proxy_bypassed,
    proxy_from_environment,
    select_proxy,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:3128", Proxy("http", "127.0.0.1", 3128)),
        ("http://proxy.example", Proxy("http", "proxy.example", 80)),
        ("HTTPS://proxy.example", Proxy("https", "proxy.example", 443)),
        ("proxy.example:8080", Proxy("http", "proxy.example", 8080)),
        ("socks5://[::1]", Proxy("socks5", "::1", 1080)),
        ("socks5h://h:9050", Proxy("socks5h", "h", 9050)),
        ("socks4://h", Proxy("socks4", "h", 1080)),
        ("socks4a://u@h", Proxy("socks4a", "h", 1080, "u")),
        ("http://al%20ice:p%40ss%3Aw0rd%C3%A9@h:1/", Proxy("http", "h", 1, "al ice", "p@ss:w0rdé")),
        ("http://alice:@h:1", Proxy("http", "h", 1, "alice", "")),
    ],
)
def test_parse_proxy(url: str, expected: Proxy) -> None:
    assert parse_proxy(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://proxy:21",
        "socks6://h",
        "http://",
        "http://:3128",
        "http://h:99999",
        "http://h:port",
        "http://h:1/path",
        "http://h:1?q",
        "not a url",
        "http://bad host:3128",
        "http://h\x00st",
    ],
)
def test_parse_proxy_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_proxy(url)


def test_parse_proxy_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="URL string, True or None"):
        parse_proxy(3128)  # type: ignore[arg-type]


def test_url_hides_credentials() -> None:
    assert parse_proxy("http://u:secret@h:1").url == "http://h:1"
    assert parse_proxy("socks5://u:secret@[::1]:2").url == "socks5://[::1]:2"


# The environment, as curl reads it (lib/url.c, detect_proxy).


@pytest.mark.parametrize(
    ("env", "secure", "expected"),
    [
        ({}, False, None),
        ({}, True, None),
        ({"http_proxy": "p1"}, False, "p1"),
        ({"http_proxy": "p1"}, True, None),
        ({"https_proxy": "p2"}, True, "p2"),
        ({"https_proxy": "p2"}, False, None),
        ({"HTTPS_PROXY": "p2"}, True, "p2"),
        # Upper-case HTTP_PROXY is ignored (httpoxy), as curl does.
        ({"HTTP_PROXY": "p1"}, False, None),
        ({"HTTP_PROXY": "p1", "all_proxy": "p3"}, False, "p3"),
        # Lower case wins.
        ({"https_proxy": "lower", "HTTPS_PROXY": "upper"}, True, "lower"),
        ({"all_proxy": "lower", "ALL_PROXY": "upper"}, False, "lower"),
        ({"ALL_PROXY": "upper"}, True, "upper"),
        # The scheme's own variable first, then the http(s) one, then all_proxy.
        ({"ws_proxy": "w", "http_proxy": "h", "all_proxy": "a"}, False, "w"),
        ({"WS_PROXY": "W", "http_proxy": "h"}, False, "W"),
        ({"wss_proxy": "w", "https_proxy": "h"}, True, "w"),
        ({"WSS_PROXY": "W", "https_proxy": "h"}, True, "W"),
        ({"http_proxy": "h", "all_proxy": "a"}, False, "h"),
        ({"https_proxy": "h", "all_proxy": "a"}, True, "h"),
        # A variable set to "" means no proxy (and stops the search).
        ({"https_proxy": "", "all_proxy": "a"}, True, None),
        ({"http_proxy": "  ", "all_proxy": "a"}, False, None),
    ],
)
def test_proxy_from_environment(env: dict[str, str], secure: bool, expected: str | None) -> None:
    assert proxy_from_environment("example.com", 443 if secure else 80, secure, env) == expected


def test_no_proxy_lower_case_wins() -> None:
    env = {"http_proxy": "p", "no_proxy": "other.org", "NO_PROXY": "example.com"}
    assert proxy_from_environment("example.com", 80, False, env) == "p"
    env = {"http_proxy": "p", "NO_PROXY": "example.com"}
    assert proxy_from_environment("example.com", 80, False, env) is None
    # Set but empty: nothing is exempt (NO_PROXY is not read).
    env = {"http_proxy": "p", "no_proxy": "", "NO_PROXY": "example.com"}
    assert proxy_from_environment("example.com", 80, False, env) == "p"


def test_proxy_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    assert proxy_from_environment("example.com", 443, True) == "http://proxy:3128"
    assert proxy_from_environment("localhost", 443, True) is None


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        ("example.com", 80, "", False),
        ("example.com", 80, "*", True),
        ("10.0.0.1", 80, " * ", True),
        # Domain names: the name and its subdomains, with or without a leading dot.
        ("example.com", 80, "example.com", True),
        ("ws.example.com", 80, "example.com", True),
        ("ws.example.com", 80, ".example.com", True),
        ("example.com", 80, ".example.com", True),
        ("badexample.com", 80, "example.com", False),
        ("example.com.evil", 80, "example.com", False),
        ("EXAMPLE.com.", 80, "example.COM", True),
        ("example.com", 80, "example.com.", True),
        ("example.org", 80, "a.com,b.com, example.org", True),
        ("example.org", 80, "a.com b.com\texample.org", True),
        ("example.org", 80, ",,", False),
        ("other.org", 80, "a.com,b.com", False),
        # "*" is special only alone (as in curl).
        ("example.org", 80, "a.com,*", False),
        # IP addresses and CIDR ranges; names are not resolved.
        ("127.0.0.1", 80, "127.0.0.1", True),
        ("127.0.0.2", 80, "127.0.0.1", False),
        ("127.0.0.1", 80, "localhost", False),
        ("localhost", 80, "127.0.0.1", False),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("10.1.2.3", 80, "10.0.0.0/abc", False),
        ("::1", 80, "::1", True),
        ("::1", 80, "[::1]", True),
        ("[::1]", 80, "0:0::1", True),
        ("fd00::5", 80, "fd00::/8", True),
        ("::1", 80, "127.0.0.1", False),
        # host:port (an addition to curl): only that port.
        ("localhost", 8080, "localhost:8080", True),
        ("localhost", 9000, "localhost:8080", False),
        ("ws.example.com", 443, ".example.com:443", True),
        ("127.0.0.1", 8080, "127.0.0.1:8080", True),
        ("127.0.0.1", 8081, "127.0.0.1:8080", False),
        ("::1", 8080, "[::1]:8080", True),
        ("::1", 8081, "[::1]:8080", False),
    ],
)
def test_proxy_bypassed(host: str, port: int, no_proxy: str, bypassed: bool) -> None:
    assert proxy_bypassed(host, port, no_proxy) is bypassed


def test_select_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_proxy(None, "h", 80, False) is None
    assert select_proxy("socks5h://p:1", "h", 80, False) == Proxy("socks5h", "p", 1)
    assert select_proxy(True, "h", 80, False) is None
    monkeypatch.setenv("http_proxy", "http://p:2")
    assert select_proxy(True, "h", 80, False) == Proxy("http", "p", 2)
    assert select_proxy(None, "h", 80, False) is None
    monkeypatch.setenv("no_proxy", "h")
    assert select_proxy(True, "h", 80, False) is None
    # An explicit URL is used even for a host that no_proxy exempts.
    assert select_proxy("http://p:3", "h", 80, False) == Proxy("http", "p", 3)
    monkeypatch.setenv("http_proxy", "gopher://p:2")
    monkeypatch.delenv("no_proxy")
    with pytest.raises(ValueError, match="from the environment"):
        select_proxy(True, "h", 80, False)
