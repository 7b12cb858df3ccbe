"""The router (``shakehands.router``): patterns checked at definition time, matching rules,
and routing on the three servers (coroutine, callback, blocking) with real clients.

Bad input the issue names, each with a test: invalid patterns (duplicate names, unknown
converters), percent-encoded paths, trailing slashes, query strings, very long paths.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import shakehands
from shakehands import InvalidStatus, Request, Response, Router, sync
from shakehands.router import Route, parse_pattern, split_path

from ..helpers import HOST, free_port

TIMEOUT = 30.0

# --- patterns -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("rooms/{name}", "must start with '/'"),
        ("/rooms/{name}/{name}", "duplicate parameter 'name'"),
        ("/items/{id:integer}", "unknown converter 'integer'"),
        ("/items/{id:}", "unknown converter ''"),
        ("/files/{rest:path}/more", "must be last"),
        ("/items/id-{id}", "whole segment"),
        ("/items/{id", "whole segment"),
        ("/items/{}", "is not a parameter name"),
        ("/items/{1st}", "is not a parameter name"),
        ("/items?page={page}", "no '?'"),
    ],
)
def test_invalid_patterns_are_refused_at_definition(pattern: str, message: str) -> None:
    router = Router()
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        router.route(pattern, lambda ws: None)
    assert router.routes == ()


def test_pattern_must_be_a_str() -> None:
    with pytest.raises(TypeError):
        parse_pattern(b"/rooms")  # type: ignore[arg-type]


def test_the_same_pattern_twice_is_refused() -> None:
    router = Router([("/rooms/{name}", "a")])
    with pytest.raises(ValueError, match="already routed"):
        router.route("/rooms/{name}", "b")
    # Another parameter name, the same shape: also the same route.
    with pytest.raises(ValueError, match="already routed"):
        router.route("/rooms/{room}", "b")


def test_decorator_returns_the_function() -> None:
    router = Router()

    @router.route("/a")
    async def a(ws: Any) -> None: ...

    assert router.routes[0].endpoint is a
    assert router.routes[0].parameters == ()
    assert "'/a'" in repr(router)


# --- matching -------------------------------------------------------------------------------


@pytest.fixture
def router() -> Router:
    return Router(
        [
            ("/", "root"),
            ("/rooms/new", "new room"),  # before /rooms/{name}: first match wins
            ("/rooms/{name}", "room"),
            ("/rooms/{name}/", "room, trailing slash"),
            ("/items/{id:int}", "item"),
            ("/users/{uid:uuid}", "user"),
            ("/files/{rest:path}", "file"),
            ("/ünïcode/{x:str}", "unicode"),
        ]
    )


def endpoint(router: Router, path: str) -> tuple[Any, dict[str, Any]] | None:
    found = router.match(path)
    return None if found is None else (found[0].endpoint, found[1])


def test_typed_parameters(router: Router) -> None:
    assert endpoint(router, "/") == ("root", {})
    assert endpoint(router, "/rooms/lobby") == ("room", {"name": "lobby"})
    assert endpoint(router, "/rooms/new") == ("new room", {})
    assert endpoint(router, "/items/42") == ("item", {"id": 42})
    assert endpoint(router, "/items/007") == ("item", {"id": 7})
    assert endpoint(router, "/items/-1") is None
    assert endpoint(router, "/items/4.2") is None
    assert endpoint(router, "/items/x") is None
    assert endpoint(router, "/items/" + "9" * 19) is None  # no giant ints from a path
    value = uuid.uuid4()
    assert endpoint(router, f"/users/{value}") == ("user", {"uid": value})
    assert endpoint(router, f"/users/{value.hex}") is None  # the hyphenated form only
    assert endpoint(router, "/users/not-a-uuid-at-all-not-a-uuid-at-al") is None
    assert endpoint(router, "/files/a/b/c.txt") == ("file", {"rest": "a/b/c.txt"})
    assert endpoint(router, "/files/") is None
    assert endpoint(router, "/files") is None
    assert endpoint(router, "/nothing") is None
    assert endpoint(router, "/rooms/lobby/extra") is None


def test_trailing_slash_is_exact(router: Router) -> None:
    assert endpoint(router, "/rooms/lobby/") == ("room, trailing slash", {"name": "lobby"})
    only = Router([("/chat", "chat")])
    assert endpoint(only, "/chat") == ("chat", {})
    assert endpoint(only, "/chat/") is None
    assert endpoint(only, "//chat") is None


def test_percent_encoded_paths(router: Router) -> None:
    # Decoded per segment: %2F stays inside the parameter, it never splits a segment.
    assert endpoint(router, "/rooms/a%2Fb") == ("room", {"name": "a/b"})
    assert endpoint(router, "/rooms/caf%C3%A9") == ("room", {"name": "café"})
    assert endpoint(router, "/r%6Foms/lobby") == ("room", {"name": "lobby"})  # literal too
    assert endpoint(router, "/%C3%BCn%C3%AFcode/x") == ("unicode", {"x": "x"})
    assert endpoint(router, "/items/%34%32") == ("item", {"id": 42})
    assert endpoint(router, "/files/a%2Fb/c") == ("file", {"rest": "a/b/c"})
    assert endpoint(router, "/rooms/a%20b") == ("room", {"name": "a b"})
    assert endpoint(router, "/rooms/100%") == ("room", {"name": "100%"})  # not an escape
    # Invalid UTF-8 after decoding: no match (the hook answers 400).
    assert split_path("/rooms/%FF") is None
    assert endpoint(router, "/rooms/%FF") is None


def test_dot_segments_never_match_a_parameter(router: Router) -> None:
    assert endpoint(router, "/rooms/..") is None
    assert endpoint(router, "/rooms/.") is None
    assert endpoint(router, "/rooms/%2E%2E") is None
    assert endpoint(router, "/files/../etc/passwd") is None
    assert endpoint(router, "/files/a//b") is None
    assert endpoint(router, "/rooms/...") == ("room", {"name": "..."})


def test_very_long_paths(router: Router) -> None:
    long_name = "x" * 100_000
    assert endpoint(router, f"/rooms/{long_name}") == ("room", {"name": long_name})
    assert endpoint(router, "/a" * 50_000) is None
    request = Request("GET", "/nope/" + "y" * 5000, shakehands.Headers())
    answer = router.process_request(request)
    assert answer is not None and answer.status == 404
    assert len(answer.body) < 300  # the path is cut short in the reason


def test_process_request_answers(router: Router) -> None:
    request = Request("GET", "/rooms/lobby?token=abc", shakehands.Headers())
    assert router.process_request(request) is None  # the query is not matched
    assert request.context["path_params"] == {"name": "lobby"}
    assert isinstance(request.context["route"], Route)
    assert request.context["route"].pattern == "/rooms/{name}"
    assert request.param("token") == "abc"
    missing = router.process_request(Request("GET", "/missing?x=1", shakehands.Headers()))
    assert missing is not None and missing.status == 404
    assert missing.body == b"no WebSocket endpoint at /missing\n"
    bad = router.process_request(Request("GET", "/rooms/%C3", shakehands.Headers()))
    assert bad is not None and bad.status == 400
    assert b"percent-encoding" in bad.body


def test_endpoint_for_without_the_hook(router: Router) -> None:
    request = Request("GET", "/items/3", shakehands.Headers())
    assert router.endpoint_for(request) == "item"  # matched on demand
    assert request.context["path_params"] == {"id": 3}
    with pytest.raises(LookupError):
        router.endpoint_for(Request("GET", "/missing", shakehands.Headers()))
    with pytest.raises(LookupError):
        router.endpoint_for(None)


# --- on the servers -------------------------------------------------------------------------


async def room(ws: shakehands.ServerConnection) -> None:
    await ws.send(f"room {ws.path_params['name']} {ws.context.get('user')}")


async def item(ws: shakehands.ServerConnection) -> None:
    await ws.send(f"item {ws.path_params['id'] + 1}")


class RoomListener(shakehands.Listener):
    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        ws.send(f"room {ws.path_params['name']} {ws.context.get('user')}")

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.send(f"room echo {message!r}")


class ItemListener(shakehands.Listener):
    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        ws.send(f"item {ws.path_params['id'] + 1}")

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.send(f"item echo {message!r}")


def asyncio_router(api: str) -> Router:
    router = Router()
    if api == "coroutine":
        router.route("/rooms/{name}", room)
        router.route("/items/{id:int}", item)
    else:
        router.route("/rooms/{name}", RoomListener())
        router.route("/items/{id:int}", ItemListener())
    return router


def start(api: str, router: Router, **options: Any) -> Any:
    if api == "coroutine":
        return shakehands.serve(router, HOST, 0, **options)
    return shakehands.serve_callbacks(router, HOST, 0, **options)


async def test_routes_on_asyncio_servers(api: str) -> None:
    async with start(api, asyncio_router(api)) as server:
        base = f"ws://{HOST}:{server.port}"
        async with shakehands.connect(f"{base}/rooms/caf%C3%A9?x=1") as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "room café None"
        async with shakehands.connect(f"{base}/items/41") as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "item 42"
            if api == "callback":
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "item echo 'hi'"
        for path, status, body in [
            ("/nowhere", 404, b"no WebSocket endpoint at /nowhere\n"),
            ("/items/x", 404, b"no WebSocket endpoint at /items/x\n"),
            ("/rooms/lobby/", 404, b"no WebSocket endpoint at /rooms/lobby/\n"),
            ("/rooms/%FF", 400, b"invalid percent-encoding in the request path\n"),
        ]:
            with pytest.raises(InvalidStatus) as info:
                async with shakehands.connect(base + path):
                    pass
            assert info.value.response.status == status, path
            assert info.value.response.body == body


async def test_router_and_own_process_request(api: str) -> None:
    seen: list[str] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request.context["route"].pattern)
        if request.context["path_params"].get("name") == "secret":
            return Response(403, body=b"not this room\n")
        request.context["user"] = "alice"
        return None

    async with start(api, asyncio_router(api), process_request=process_request) as server:
        base = f"ws://{HOST}:{server.port}"
        async with shakehands.connect(f"{base}/rooms/lobby") as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "room lobby alice"
        with pytest.raises(InvalidStatus) as info:
            async with shakehands.connect(f"{base}/rooms/secret"):
                pass
        assert info.value.response.status == 403
        with pytest.raises(InvalidStatus) as info:
            async with shakehands.connect(f"{base}/unrouted"):
                pass
        assert info.value.response.status == 404
    # Unrouted requests never reach the user's hook: the router answers first.
    assert seen == ["/rooms/{name}", "/rooms/{name}"]


async def test_async_process_request_after_router() -> None:
    async def process_request(request: Request) -> Response | None:
        await asyncio.sleep(0)
        request.context["user"] = "bob"
        return None

    async with (
        shakehands.serve(
            asyncio_router("coroutine"), HOST, 0, process_request=process_request
        ) as server,
        shakehands.connect(f"ws://{HOST}:{server.port}/rooms/x") as ws,
    ):
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "room x bob"


async def test_router_on_unix_socket(api: str) -> None:
    path = f"\0shakehands-router-{api}-{free_port()}"
    start_unix = shakehands.unix_serve if api == "coroutine" else shakehands.unix_serve_callbacks
    async with start_unix(asyncio_router(api), path):  # type: ignore[operator]
        from websockets.asyncio.client import unix_connect

        async with unix_connect(path, "ws://localhost/items/1") as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "item 2"


def test_wrong_kind_of_endpoint_is_refused_at_serve_time() -> None:
    def plain(ws: Any) -> None: ...

    async def coroutine(ws: Any) -> None: ...

    with pytest.raises(TypeError, match="not a coroutine function"):
        shakehands.serve(Router([("/a", plain)]), HOST, 0)
    with pytest.raises(TypeError, match="Listener"):
        shakehands.serve_callbacks(Router([("/a", coroutine)]), HOST, 0)
    with pytest.raises(TypeError, match="is a coroutine function"):
        sync.serve(Router([("/a", coroutine)]), HOST, 0)


def test_very_long_path_on_the_wire() -> None:
    """Past the request-line limit the core answers 400; just under it, the router's 404."""

    async def main() -> None:
        async with shakehands.serve(asyncio_router("coroutine"), HOST, 0) as server:
            port = server.port
            for length, status in [(7000, b"404"), (9000, b"400")]:
                reply = await asyncio.to_thread(raw_get, port, "/rooms/a/" + "z" * length)
                assert reply.split(b" ")[1] == status, (length, reply[:100])

    asyncio.run(main())


def raw_get(port: int, path: str) -> bytes:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    head = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture
def sync_server() -> Iterator[sync.Server]:
    router = Router()

    @router.route("/rooms/{name}")
    def sync_room(ws: sync.ServerConnection) -> None:
        ws.send(f"room {ws.path_params['name']} {ws.context.get('user')}")

    @router.route("/files/{rest:path}")
    def sync_file(ws: sync.ServerConnection) -> None:
        ws.send(f"file {ws.path_params['rest']}")

    def process_request(request: Request) -> Response | None:
        request.context["user"] = "carol"
        return None

    with sync.serve(router, HOST, 0, process_request=process_request) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"stop_signals": ()})
        thread.start()
        yield server
        server.shutdown()
        thread.join(TIMEOUT)


def test_routes_on_blocking_server(sync_server: sync.Server) -> None:
    base = f"ws://{HOST}:{sync_server.port}"
    with sync.connect(f"{base}/rooms/a%2Fb") as ws:
        assert ws.recv(timeout=TIMEOUT) == "room a/b carol"
    with sync.connect(f"{base}/files/x/y/z.txt?v=2") as ws:
        assert ws.recv(timeout=TIMEOUT) == "file x/y/z.txt"
    with pytest.raises(InvalidStatus) as info:
        sync.connect(f"{base}/files/")
    assert info.value.response.status == 404
    with pytest.raises(InvalidStatus) as info:
        sync.connect(f"{base}/rooms/%C3%28")
    assert info.value.response.status == 400
