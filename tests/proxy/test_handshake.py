"""The HTTP CONNECT exchange, sans I/O: the request's bytes, the answer's parsing, its limits
and every way a proxy can refuse (shakehands.protocol.proxy.ProxyHandshake; no sockets)."""

from __future__ import annotations

import base64
from http import HTTPStatus

import pytest

from shakehands.protocol.errors import InvalidHandshake
from shakehands.protocol.proxy import (
    InvalidProxyMessage,
    InvalidProxyStatus,
    ProxyError,
    ProxyHandshake,
    parse_proxy,
)

PROXY = parse_proxy("http://127.0.0.1:3128")


def test_request() -> None:
    h = ProxyHandshake(PROXY, "example.com", 443)
    assert h.request == b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"


def test_request_ipv6() -> None:
    h = ProxyHandshake(PROXY, "::1", 8080)
    assert h.request.startswith(b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n")


def test_request_international_domain_name() -> None:
    h = ProxyHandshake(PROXY, "bücher.example", 443)
    assert h.request.startswith(b"CONNECT xn--bcher-kva.example:443 HTTP/1.1\r\n")


def test_request_basic_auth_percent_decoded_utf8() -> None:
    proxy = parse_proxy("http://al%C3%AFce:p%40ss%3Aword@h:1")
    h = ProxyHandshake(proxy, "example.com", 80)
    (line,) = [x for x in h.request.split(b"\r\n") if x.startswith(b"Proxy-Authorization")]
    token = line.split(b"Basic ")[1]
    assert base64.b64decode(token) == "alïce:p@ss:word".encode()


def test_request_username_without_password() -> None:
    h = ProxyHandshake(parse_proxy("http://alice@h:1"), "example.com", 80)
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"alice:") in h.request


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 Connection established\r\n\r\n",
        b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy\r\n\r\n",
        b"HTTP/1.1 200\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
)
def test_tunnel_opens(answer: bytes) -> None:
    h = ProxyHandshake(PROXY, "example.com", 443)
    assert h.receive_data(answer)
    assert h.response is not None and 200 <= h.response.status < 300
    assert h.rest == b""


def test_answer_in_pieces_and_rest() -> None:
    h = ProxyHandshake(PROXY, "example.com", 443)
    answer = b"HTTP/1.1 200 OK\r\nVia: 1.1 p\r\n\r\nearly"
    for i in range(len(answer) - 6):
        assert not h.receive_data(answer[i : i + 1])
    assert h.receive_data(answer[-6:])
    assert h.rest == b"early"
    assert h.response is not None and h.response.headers["Via"] == "1.1 p"


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (
            b"HTTP/1.0 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="p"\r\n\r\n<html>',
            407,
            "Proxy Authentication Required",
        ),
        (b"HTTP/1.1 403 Access violation\r\n\r\n", 403, "Access violation"),
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", 502, "Bad Gateway"),
        (b"HTTP/1.1 500 Unable to connect\r\n\r\n", 500, "Unable to connect"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 101, "Switching Protocols"),
        (b"HTTP/1.1 301 Moved\r\nLocation: /\r\n\r\n", 301, "Moved"),
        (b"HTTP/1.1 599\r\n\r\n", 599, ""),
    ],
)
def test_refusals_carry_status_and_reason(answer: bytes, status: int, reason: str) -> None:
    h = ProxyHandshake(PROXY, "example.com", 443)
    with pytest.raises(InvalidProxyStatus) as info:
        h.receive_data(answer)
    exc = info.value
    assert exc.response.status == status
    assert exc.response.reason == reason
    assert exc.status == (status if status != 599 else HTTPStatus.BAD_GATEWAY)
    assert f"{status} {reason}".strip() in str(exc)
    assert isinstance(exc, ProxyError) and isinstance(exc, InvalidHandshake)
    if status == 407:
        assert exc.response.headers["Proxy-Authenticate"] == 'Basic realm="p"'


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x03\x01\x02\x00",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 \x01\r\n\r\n",
    ],
)
def test_malformed_answers(answer: bytes) -> None:
    h = ProxyHandshake(PROXY, "example.com", 443)
    with pytest.raises(InvalidProxyMessage, match="^proxy: "):
        h.receive_data(answer)


def test_status_line_too_long() -> None:
    h = ProxyHandshake(PROXY, "example.com", 443, max_line=100)
    with pytest.raises(InvalidProxyMessage, match="too long"):
        h.receive_data(b"HTTP/1.1 200 " + b"x" * 200)


def test_headers_too_large_bounded() -> None:
    h = ProxyHandshake(PROXY, "example.com", 443, max_header_bytes=1000)
    with pytest.raises(InvalidProxyMessage, match="too large"):
        h.receive_data(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):
            h.receive_data(b"X-Filler: " + b"y" * 50 + b"\r\n")


def test_too_many_headers() -> None:
    h = ProxyHandshake(PROXY, "example.com", 443, max_headers=3)
    with pytest.raises(InvalidProxyMessage, match="too many headers"):
        h.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 4 + b"\r\n")


def test_eof_before_answer() -> None:
    h = ProxyHandshake(PROXY, "example.com", 443)
    h.receive_data(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(InvalidProxyMessage, match="closed the connection before answering"):
        h.receive_eof()
