"""The client's policies, in the sans-I/O core (``shakehands.protocol.client``): the backoff
with full jitter, which failures are worth a retry, redirect targets, redacted URIs; and the
checks of the new arguments."""

from __future__ import annotations

import errno
import random

import pytest

import shakehands
from shakehands import (
    ConnectionRefused,
    HandshakeInterrupted,
    HostNotFound,
    InsecureRedirect,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    NotWebSocketServer,
    OpenTimeout,
    RedirectLoop,
    Response,
    TLSVerificationError,
    sync,
)
from shakehands.protocol.client import (
    RETRY_CLOSE_CODES,
    Backoff,
    ClientProtocol,
    follow_redirect,
    is_transient,
    parse_uri,
    redact,
)


def test_backoff_full_jitter_bounds() -> None:
    backoff = Backoff(initial_delay=0.5, factor=2.0, max_delay=3.0)
    delays = backoff.delays(random.Random(1))
    bounds = [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    drawn = [next(delays) for _ in bounds]
    assert all(0.0 <= d <= b for d, b in zip(drawn, bounds, strict=True))
    # Full jitter: the delays are spread over [0, bound], not clustered at the bound.
    many = Backoff(1.0, 1.0, 1.0).delays(random.Random(2))
    sample = [next(many) for _ in range(1000)]
    assert min(sample) < 0.1 and max(sample) > 0.9


def test_backoff_defaults() -> None:
    assert Backoff() == Backoff(initial_delay=1.0, factor=1.618, max_delay=60.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"initial_delay": 0}, ValueError, "initial_delay must be > 0"),
        ({"initial_delay": -1.0}, ValueError, "initial_delay must be > 0"),
        ({"factor": 0.9}, ValueError, "factor must be >= 1"),
        ({"max_delay": 0.5}, ValueError, "max_delay .* must be >= initial_delay"),
        ({"factor": "2"}, TypeError, "factor must be a number"),
        ({"max_delay": True}, TypeError, "max_delay must be a number"),
        ({"initial_delay": float("nan")}, ValueError, "initial_delay must be > 0"),
    ],
)
def test_backoff_bad_values(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]
    renamed = {f"backoff_{k}": v for k, v in kwargs.items()}
    with pytest.raises(error, match=message):
        shakehands.connect("ws://example.com/", **renamed)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        sync.reconnect("ws://example.com/", **renamed)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_max_redirects_checked(value: object) -> None:
    with pytest.raises((TypeError, ValueError), match="max_redirects"):
        shakehands.connect("ws://example.com/", max_redirects=value)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match="max_redirects"):
        sync.connect("ws://example.com/", max_redirects=value)  # type: ignore[arg-type]


def status(code: int) -> InvalidStatus:
    return InvalidStatus(f"HTTP {code}", Response(code))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefused("refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (ConnectionAbortedError(), True),
        (OpenTimeout("timed out", "TCP connect"), True),
        (TimeoutError(), True),
        (OSError(errno.ENETUNREACH, "network is unreachable"), True),
        (HostNotFound("temporary failure", -3), True),  # EAI_AGAIN
        (HostNotFound("unknown host", -2), False),  # EAI_NONAME
        (status(500), True),
        (status(503), True),
        (status(599), True),
        (status(400), False),
        (status(401), False),
        (status(404), False),
        (status(302), False),
        (NotWebSocketServer("200", Response(200)), False),
        (RedirectLoop("loop", Response(302)), False),
        (InsecureRedirect("downgrade", Response(301)), False),
        (InvalidURI("bad"), False),
        (InvalidResponse("bad accept"), False),
        (HandshakeInterrupted("connection closed before any response"), True),
        (TLSVerificationError("self-signed certificate"), False),
        (ValueError(), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_retry_close_codes() -> None:
    assert sorted(RETRY_CLOSE_CODES) == [1001, 1006, 1011, 1012, 1013]


def test_redact() -> None:
    assert redact("ws://u:p@h:1/x?y") == "ws://u:***@h:1/x?y"
    assert redact("ws://h/") == "ws://h/"
    assert redact("ws://[::1") == "ws://[::1"  # unparsable: as is


def test_user_info_stays_out_of_repr() -> None:
    uri = parse_uri("wss://alice:secret@example.com/")
    assert uri.user_info == ("alice", "secret")
    assert "secret" not in repr(uri)


def test_authorization_header_from_uri() -> None:
    protocol = ClientProtocol("ws://alice:secret@example.com/")
    assert protocol.request.headers["Authorization"] == "Basic YWxpY2U6c2VjcmV0"
    assert protocol.request.headers["Host"] == "example.com"
    empty = ClientProtocol("ws://:@example.com/")
    assert empty.request.headers["Authorization"] == "Basic Og=="


def test_user_without_password_is_invalid() -> None:
    with pytest.raises(InvalidURI, match="has a user but no password"):
        parse_uri("ws://alice@example.com/")


@pytest.mark.parametrize(
    ("uri", "location", "target"),
    [
        ("ws://h/a/b", "c", "ws://h/a/c"),
        ("ws://h/a/b", "../c?x", "ws://h/c?x"),
        ("ws://h/a", "//other:81/z", "ws://other:81/z"),
        ("ws://h/a", "https://secure/z", "wss://secure/z"),
        ("wss://h/a", "wss://h2/z#frag", "wss://h2/z"),
        ("wss://u:p@h/a", "/b", "wss://u:p@h/b"),
        ("wss://u:p@h/a", "wss://h:444/b", "wss://h:444/b"),
        ("wss://u:p@h/a", "wss://v:q@h/b", "wss://v:q@h/b"),
    ],
)
def test_follow_redirect_targets(uri: str, location: str, target: str) -> None:
    visited = [uri]
    assert follow_redirect(uri, Response(301, {"Location": location}), visited, 10) == target
    assert visited == [uri, target]
