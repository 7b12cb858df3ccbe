"""HTTP Basic auth (``shakehands.basic_auth``) on real servers, with real clients.

Every malformed ``Authorization`` header the issue names is sent on the wire, by hand (a client
library would refuse to build most of them): missing, wrong scheme, bad base64, no colon,
non-UTF-8, wrong password; each gets 401 with the challenge.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import shakehands
from shakehands import InvalidStatus, Request, Response, Router, basic_auth, sync
from shakehands.auth import parse_basic_credentials

from ..helpers import HOST

TIMEOUT = 30.0
CHALLENGE = 'Basic realm="test realm", charset="UTF-8"'
USERS = {"alice": "s3cr3t", "bob": "pässwörd", "carol": ""}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def raw_request(port: int, authorization: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send an upgrade request with these ``Authorization`` values; the status, headers, body."""
    lines = [
        b"GET /chat HTTP/1.1",
        f"Host: {HOST}:{port}".encode(),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
        *(b"Authorization: " + value for value in authorization),
    ]
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"101" in head.split(b"\r\n")[0]:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


BAD_HEADERS = [
    pytest.param([], b"missing credentials", id="missing"),
    pytest.param([b"Bearer abc.def"], b"expected Basic credentials", id="wrong-scheme"),
    pytest.param([b"Basic"], b"no ':'", id="empty-token"),
    pytest.param([b"Basic %%%notbase64%%%"], b"not base64", id="bad-base64"),
    pytest.param([b"Basic YWxpY2U"], b"not base64", id="bad-padding"),
    pytest.param([b"Basic " + base64.b64encode(b"alices3cr3t")], b"no ':'", id="no-colon"),
    pytest.param([b"Basic " + base64.b64encode(b"al\xffice:s3cr3t")], b"not UTF-8", id="non-utf8"),
    pytest.param([basic("alice", "wrong").encode()], b"invalid credentials", id="wrong-password"),
    pytest.param([basic("mallory", "s3cr3t").encode()], b"invalid credentials", id="unknown-user"),
    pytest.param([basic("alice", "s3cr3t ").encode()], b"invalid credentials", id="extra-space"),
    pytest.param([basic("Alice", "s3cr3t").encode()], b"invalid credentials", id="user-case"),
    pytest.param([basic("alice", "s3cr3t").encode()] * 2, b"more than one", id="two-headers"),
]


async def greet(ws: shakehands.ServerConnection) -> None:
    await ws.send(f"hello {ws.context['user']}")


class Greeter(shakehands.Listener):
    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        ws.send(f"hello {ws.context['user']}")


def start(api: str, hook: Any) -> Any:
    if api == "coroutine":
        return shakehands.serve(greet, HOST, 0, process_request=hook)
    return shakehands.serve_callbacks(Greeter(), HOST, 0, process_request=hook)


@pytest.mark.parametrize(("authorization", "reason"), BAD_HEADERS)
async def test_bad_credentials_get_401(api: str, authorization: list[bytes], reason: bytes) -> None:
    async with start(api, basic_auth("test realm", credentials=USERS)) as server:
        status, headers, body = await asyncio.to_thread(raw_request, server.port, authorization)
    assert status == 401
    assert headers["www-authenticate"] == CHALLENGE
    assert reason in body


async def test_good_credentials(api: str) -> None:
    async with start(api, basic_auth("test realm", credentials=USERS)) as server:
        for user, password in USERS.items():
            async with shakehands.connect(
                f"ws://{HOST}:{server.port}/",
                extra_headers={"Authorization": basic(user, password)},
            ) as ws:
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == f"hello {user}"
        # Scheme names are case-insensitive (RFC 9110 §11.1).
        token = basic("alice", "s3cr3t").split()[1]
        async with shakehands.connect(
            f"ws://{HOST}:{server.port}/", extra_headers={"Authorization": f"bAsIc {token}"}
        ) as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello alice"


async def test_refusal_seen_by_client(api: str) -> None:
    async with start(api, basic_auth("test realm", credentials=USERS)) as server:
        with pytest.raises(InvalidStatus) as info:
            async with shakehands.connect(f"ws://{HOST}:{server.port}/"):
                pass
    assert info.value.response.status == 401
    assert info.value.response.headers["WWW-Authenticate"] == CHALLENGE


async def test_check_function_sync_and_async(api: str) -> None:
    calls: list[tuple[str, str]] = []

    def check(user: str, password: str) -> bool:
        calls.append((user, password))
        return password == user[::-1]

    async def async_check(user: str, password: str) -> bool:
        await asyncio.sleep(0)
        return check(user, password)

    for hook in (basic_auth("test realm", check=check), basic_auth("r", check=async_check)):
        async with start(api, hook) as server:
            url = f"ws://{HOST}:{server.port}/"
            async with shakehands.connect(
                url, extra_headers={"Authorization": basic("anna", "anna")}
            ) as ws:
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello anna"
            with pytest.raises(InvalidStatus) as info:
                async with shakehands.connect(
                    url, extra_headers={"Authorization": basic("anna", "nope")}
                ):
                    pass
            assert info.value.response.status == 401
    assert calls == [("anna", "anna"), ("anna", "nope")] * 2


async def test_composes_with_own_process_request_and_router(api: str) -> None:
    seen: list[str | None] = []

    async def own(request: Request) -> Response | None:
        seen.append(request.context.get("user"))
        if request.path == "/rooms/closed":
            return Response(403, body=b"closed\n")
        return None

    hook = basic_auth("test realm", credentials=[("alice", "s3cr3t")], process_request=own)
    router = Router()
    if api == "coroutine":
        router.route("/rooms/{name}", greet)
        context = shakehands.serve(router, HOST, 0, process_request=hook)
    else:
        router.route("/rooms/{name}", Greeter())
        context = shakehands.serve_callbacks(router, HOST, 0, process_request=hook)
    good = {"Authorization": basic("alice", "s3cr3t")}
    async with context as server:
        base = f"ws://{HOST}:{server.port}"
        async with shakehands.connect(f"{base}/rooms/open", extra_headers=good) as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello alice"
        for path, headers, status in [
            ("/rooms/closed", good, 403),  # authenticated, then refused by the own hook
            ("/rooms/open", None, 401),  # never reaches the own hook
            ("/elsewhere", good, 404),  # the router answers first
        ]:
            with pytest.raises(InvalidStatus) as info:
                async with shakehands.connect(base + path, extra_headers=headers):
                    pass
            assert info.value.response.status == status
    assert seen == ["alice", "alice"]


# --- the blocking server --------------------------------------------------------------------


@pytest.fixture
def sync_server() -> Iterator[sync.Server]:
    def greet_sync(ws: sync.ServerConnection) -> None:
        ws.send(f"hello {ws.context['user']}")

    hook = basic_auth("test realm", credentials=USERS)
    with sync.serve(greet_sync, HOST, 0, process_request=hook) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"stop_signals": ()})
        thread.start()
        yield server
        server.shutdown()
        thread.join(TIMEOUT)


@pytest.mark.parametrize(("authorization", "reason"), BAD_HEADERS)
def test_sync_bad_credentials_get_401(
    sync_server: sync.Server, authorization: list[bytes], reason: bytes
) -> None:
    status, headers, body = raw_request(sync_server.port, authorization)
    assert status == 401
    assert headers["www-authenticate"] == CHALLENGE
    assert reason in body


def test_sync_good_credentials(sync_server: sync.Server) -> None:
    with sync.connect(
        f"ws://{HOST}:{sync_server.port}/",
        extra_headers={"Authorization": basic("bob", "pässwörd")},
    ) as ws:
        assert ws.recv(timeout=TIMEOUT) == "hello bob"


# --- definition-time checks -----------------------------------------------------------------


def test_definition_errors() -> None:
    with pytest.raises(TypeError, match="exactly one"):
        basic_auth("r")
    with pytest.raises(TypeError, match="exactly one"):
        basic_auth("r", credentials={}, check=lambda u, p: True)
    for realm in ['say "hi"', "back\\slash", "", "tab\there", "ünïcode"]:
        with pytest.raises(ValueError, match="realm"):
            basic_auth(realm, credentials={})
    with pytest.raises(ValueError, match="contains ':'"):
        basic_auth("r", credentials={"a:b": "c"})
    with pytest.raises(TypeError, match="str"):
        basic_auth("r", credentials={"a": b"bytes"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="callable"):
        basic_auth("r", check="nope")  # type: ignore[arg-type]


def test_parse_basic_credentials_password_may_hold_colons() -> None:
    request = Request("GET", "/", shakehands.Headers([("Authorization", basic("u", "p:a:s:s"))]))
    assert parse_basic_credentials(request) == ("u", "p:a:s:s")
