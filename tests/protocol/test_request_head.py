"""The C request-head parser (``_speedups.parse_request_head``) against the pure-Python one.

tests/protocol/test_handshake.py runs every parser test against both; here the two are compared
with each other on the same bytes, valid or not: the same request (headers and their index
included), or the same error class, status and reason, whichever way the bytes arrive.
"""

from __future__ import annotations

import random

import pytest

from shakehands.protocol import http11
from shakehands.protocol.errors import InvalidHandshake
from shakehands.protocol.http11 import RequestParser

from .helpers import request_bytes

COMPILED = http11._parse_request_head

pytestmark = pytest.mark.skipif(COMPILED is None, reason="the C request-head parser is not in use")

Outcome = tuple[object, ...]


def outcome(
    data: bytes, compiled: bool, step: int | None = None, limits: tuple[int, int, int] | None = None
) -> Outcome:
    """What a fresh parser makes of ``data`` fed ``step`` bytes at a time: the request's parts
    (with the lower-cased index of its headers) and the bytes after it, or the error."""
    saved = http11._parse_request_head
    http11._parse_request_head = COMPILED if compiled else None
    try:
        parser = RequestParser(*limits) if limits else RequestParser()
        step = step or max(len(data), 1)
        try:
            for i in range(0, len(data), step):
                request = parser.feed(data[i : i + step])
                if request is not None:
                    headers = request.headers
                    index = {k: list(v) for k, v in headers._lookup().items()}
                    return (
                        "ok",
                        request.method,
                        request.target,
                        request.authority,
                        headers.items(),
                        index,
                        parser.rest,
                    )
        except InvalidHandshake as exc:
            return (type(exc).__name__, exc.status, str(exc))
        return ("incomplete",)
    finally:
        http11._parse_request_head = saved


def assert_same(data: bytes, step: int | None = None, limits: tuple[int, int, int] | None = None):
    c = outcome(data, True, step, limits)
    python = outcome(data, False, step, limits)
    assert c == python, data
    return c


CASES = [
    request_bytes(),
    request_bytes() + b"\x81\x80frames",
    request_bytes(target="/a?b=c&d=%20#frag", extra=[("X-Empty", ""), ("x-lower", " v ")]),
    request_bytes(extra=[("Host", "again"), ("HOST", "thrice")]),
    b"GET / HTTP/1.1\r\n\r\n",
    b"OPTIONS / HTTP/1.1\r\nA:b\r\n\r\n",
    b"M-SEARCH /x HTTP/1.1\r\nA:b\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: \t\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: b\r\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
    b"GET / HTTP/1.1\r\r\nA: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nA\r: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
    b"GET / HTTP/1.1\r\n:\r\n\r\n",
    b"GET / HTTP/1.1\r\n \r\n\r\n",
    b"GET / HTTP/1.1\r\n a: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\ta: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n a\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: caf\xe9\x80\xff\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.x\r\n\r\n",
    b"GET / HTTP/1.10\r\n\r\n",
    b"GET / HTTP/\xb9.1\r\n\r\n",
    b"GET  / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1 \r\n\r\n",
    b"GET /\tx HTTP/1.1\r\n\r\n",
    b"GET ws://h HTTP/1.1\r\n\r\n",
    b"GET ws://h/x?y HTTP/1.1\r\n\r\n",
    b"GET Ws://h?y HTTP/1.1\r\n\r\n",
    b"GET HTTPS://h:1#x HTTP/1.1\r\n\r\n",
    b"GET http://h\x01/ HTTP/1.1\r\n\r\n",
    b"GET http://h/\x7f HTTP/1.1\r\n\r\n",
    b"GET http:// HTTP/1.1\r\n\r\n",
    b"GET http://? HTTP/1.1\r\n\r\n",
    b"GET wss://user@h:443/p HTTP/1.1\r\n\r\n",
    b"GET ftp://h/ HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1",
    b"\r\n\r\n",
    b"GET\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
]


@pytest.mark.parametrize("data", CASES)
@pytest.mark.parametrize("step", [None, 1, 5])
def test_same_outcome(data: bytes, step: int | None) -> None:
    assert_same(data, step)


def test_same_outcome_under_limits() -> None:
    """Every limit, at and around its value, with small limits so each is reached."""
    limits = (20, 2, 30)
    heads = (
        [b"GET /" + b"a" * n + b" HTTP/1.1\r\nA: b\r\n\r\n" for n in range(3, 8)]
        + [
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            b"GET /" + b"a" * 30 + b" HTTP/1.1\r\nBad Name: 1\r\n\r\n",
            b"GET / HTTP/1.0\r\nA: " + b"1" * 40 + b"\r\n\r\n",
        ]
        + [b"GET / HTTP/1.1\r\nA: " + b"1" * n + b"\r\n\r\n" for n in range(24, 30)]
    )
    verdicts = set()
    for data in heads:
        for step in (None, 1, 3):
            verdicts.add(assert_same(data, step, limits)[0])
    assert verdicts == {"ok", "InvalidRequest", "HeadersTooLarge"}


def test_same_outcome_for_every_single_byte_change() -> None:
    """Each position of a real upgrade request, with each byte that matters to the grammar
    put in its place or inserted before it: both parsers agree on every one."""
    base = request_bytes(target="/chat?room=a", extra=[("Origin", "http://o.example")])
    head_end = base.index(b"\r\n\r\n")
    specials = [b"\x00", b"\t", b"\n", b"\r", b" ", b":", b"/", b"?", b"#", b"\x7f", b"\xe9", b"A"]
    verdicts = set()
    for i in range(head_end + 2):
        for byte in specials:
            for data in (base[:i] + byte + base[i + 1 :], base[:i] + byte + base[i:]):
                verdicts.add(assert_same(data)[0])
    assert verdicts == {"ok", "InvalidRequest", "incomplete"}


def test_same_outcome_for_random_heads() -> None:
    """Heads built at random from the pieces of the grammar (a fixed seed: reproducible)."""
    rng = random.Random(14)
    pieces = [
        b"GET", b"POST", b" ", b"/", b"ws://", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b":", b": ",
        b"Host", b"x", b"\t", b"\r", b"\n", b"\x00", b"\xff", b"?", b"#", b"h.example",
    ]  # fmt: skip
    verdicts = set()
    for _ in range(3000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 14))) + b"\r\n\r\n"
        if rng.random() < 0.5:
            data = b"GET / HTTP/1.1\r\n" + data
        verdicts.add(assert_same(data)[0])
    assert {"ok", "InvalidRequest"} <= verdicts


def test_compiled_request_is_indexed_and_its_methods_shared() -> None:
    """The C parser hands over the index of lower-cased names (no second pass to build it)
    and the common methods as the one shared string each."""
    saved = http11._parse_request_head
    try:
        http11._parse_request_head = COMPILED
        request = RequestParser().feed(request_bytes(extra=[("X-Two", "1"), ("x-two", "2")]))
    finally:
        http11._parse_request_head = saved
    assert request is not None
    assert request.headers._index is not None
    assert request.headers.get_all("X-TWO") == ["1", "2"]
    assert request.method is http11._METHODS[b"GET"]


def test_compiled_parser_rejects_bad_arguments() -> None:
    assert COMPILED is not None
    with pytest.raises(ValueError, match="end out of range"):
        COMPILED(b"GET / HTTP/1.1", 99, 10, 10, 10)
    with pytest.raises(TypeError):
        COMPILED(b"GET / HTTP/1.1", 1, 2)  # type: ignore[call-arg]
