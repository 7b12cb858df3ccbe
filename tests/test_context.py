"""Per-connection application state from the handshake to the handler (``request.context`` in
``process_request``, ``ws.context`` in the handler), the same in every API."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs

import pytest

import shakehands
from shakehands import Request, Response, sync

from .helpers import HOST

TOKENS = {"secret-1": "alice"}


def authenticate(request: Request) -> Response | None:
    user = TOKENS.get(parse_qs(request.query).get("token", [""])[0])
    if user is None:
        return Response(401, body=b"who are you?")
    request.context["user"] = user
    return None


async def test_coroutine_handler_reads_what_process_request_stored() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.send(f"hello {ws.context['user']}")

    async with (
        shakehands.serve(handler, HOST, 0, process_request=authenticate) as server,
        shakehands.connect(f"ws://{HOST}:{server.port}/?token=secret-1") as ws,
    ):
        assert await ws.recv() == "hello alice"
        assert ws.context == {}  # the client's own, empty


async def test_callback_listener_reads_what_process_request_stored() -> None:
    class Greeter(shakehands.Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            ws.send(f"hello {ws.context['user']}")

    async with (
        shakehands.serve_callbacks(Greeter(), HOST, 0, process_request=authenticate) as server,
        shakehands.connect(f"ws://{HOST}:{server.port}/?token=secret-1") as ws,
    ):
        assert await ws.recv() == "hello alice"


def test_blocking_handler_reads_what_process_request_stored() -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.context["seen"] = True
        ws.send(f"hello {ws.context['user']}")

    with sync.serve(handler, HOST, 0, process_request=authenticate) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with sync.connect(f"ws://{HOST}:{server.port}/?token=secret-1") as ws:
            assert ws.recv(timeout=10) == "hello alice"
        with pytest.raises(shakehands.InvalidStatus) as refused:
            sync.connect(f"ws://{HOST}:{server.port}/?token=wrong")
        assert refused.value.response.status == 401  # type: ignore[attr-defined]
        server.shutdown()


def test_context_is_made_on_first_use_and_kept() -> None:
    request = Request("GET", "/", shakehands.Headers())
    assert request._context is None  # no dictionary per connection until one is needed
    request.context["a"] = 1
    assert request.context == {"a": 1}
    assert "context" not in repr(request)
