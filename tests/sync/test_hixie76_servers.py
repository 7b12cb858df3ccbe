"""draft-76 on real sockets: a hand-written draft-76 client against the asyncio server and the
blocking server with ``legacy_hixie76=True``, and refused (426) without it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import shakehands
from shakehands import sync
from shakehands.demo import MEOW, WELCOME

from ..helpers import HOST
from .sync_helpers import RawClient, running

pytestmark = pytest.mark.timeout(60)

KEY1 = "4 @1  46546xW%0l 1 5"
KEY2 = "12998 5 Y3 1  .P00"
KEY3 = b"^n:ds[4U"
ANSWER = b"8jKS'y:G*Co,Wxa-"


def draft76_request(port: int) -> bytes:
    return (
        f"GET /demo HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key2: {KEY2}\r\nUpgrade: WebSocket\r\n"
        f"Sec-WebSocket-Key1: {KEY1}\r\nOrigin: http://{HOST}\r\n\r\n"
    ).encode() + KEY3


def read_text_frame(raw: RawClient) -> str | None:
    """One draft-76 frame: the text, or None for the 0xFF 0x00 close."""
    kind = raw._read(1)
    if kind == b"\xff":
        assert raw._read(1) == b"\x00"
        return None
    assert kind == b"\x00"
    data = b""
    while (byte := raw._read(1)) != b"\xff":
        data += byte
    return data.decode()


def meow_sync(ws: sync.ServerConnection) -> None:
    ws.send(WELCOME)
    for message in ws:
        assert isinstance(message, str)
        ws.send(message + MEOW)


@contextlib.contextmanager
def in_a_thread(serve: Any) -> Iterator[int]:
    """The asyncio server ``serve()`` (an async context manager) running in a thread of its
    own, on its own loop: its port."""
    ready = threading.Event()
    state: list[object] = []

    async def main() -> None:
        async with serve() as server:
            stop = asyncio.Event()
            state.extend([server.port, asyncio.get_running_loop(), stop])
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield int(state[0])  # type: ignore[call-overload]
    finally:
        loop, stop = state[1], state[2]
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(10)


@contextlib.contextmanager
def asyncio_server(**options: Any) -> Iterator[int]:
    """The asyncio demo handler (shakehands.demo.meow) in a thread of its own."""
    from shakehands.demo import meow

    with in_a_thread(lambda: shakehands.serve(meow, HOST, 0, **options)) as port:
        yield port


class MeowListener(shakehands.Listener):
    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        ws.send(WELCOME)

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        assert isinstance(message, str)
        ws.send(message + MEOW)


@contextlib.contextmanager
def callback_server(**options: Any) -> Iterator[int]:
    """The callback API, which shares the server handshake (and so the option)."""
    with in_a_thread(
        lambda: shakehands.serve_callbacks(MeowListener(), HOST, 0, **options)
    ) as port:
        yield port


@contextlib.contextmanager
def blocking_server(**options: object) -> Iterator[int]:
    with running(meow_sync, **options) as server:
        yield server.port


SERVERS = {"asyncio": asyncio_server, "callback": callback_server, "blocking": blocking_server}


@pytest.mark.parametrize("kind", list(SERVERS))
def test_a_draft76_conversation(kind: str) -> None:
    with SERVERS[kind](legacy_hixie76=True, ping_interval=0.05) as port:
        raw = RawClient(port)
        raw.send(draft76_request(port))
        status, headers, _ = raw.read_response()
        assert status == 101
        assert headers["sec-websocket-location"] == f"ws://{HOST}:{port}/demo"
        assert headers["sec-websocket-origin"] == f"http://{HOST}"
        assert raw._read(16) == ANSWER
        assert read_text_frame(raw) == WELCOME
        for text in ["Hello", "滴水之恩 🐱", "x" * 70_000, ""]:
            raw.send(b"\x00" + text.encode() + b"\xff")
            # No keepalive ping may appear, even with a short ping_interval: draft-76 has none.
            assert read_text_frame(raw) == text + MEOW
        raw.send(b"\xff\x00")
        assert read_text_frame(raw) is None
        raw.read_eof()
        raw.close()


@pytest.mark.parametrize("kind", list(SERVERS))
def test_draft76_limits_and_errors(kind: str) -> None:
    with SERVERS[kind](legacy_hixie76=True, max_message_size=1000) as port:
        raw = RawClient(port)
        raw.send(draft76_request(port))
        assert raw.read_response()[0] == 101
        raw._read(16)
        assert read_text_frame(raw) == WELCOME
        raw.send(b"\x00" + b"y" * 5000)  # no sentinel: refused at the limit, not buffered
        assert read_text_frame(raw) is None
        raw.read_eof()
        raw.close()

        raw = RawClient(port)
        raw.send(draft76_request(port).replace(KEY1.encode(), b"no spaces no digits"))
        status, _, body = raw.read_response()
        assert status == 400 and b"draft-76 key" in body
        raw.close()


@pytest.mark.parametrize("kind", list(SERVERS))
def test_draft76_is_off_by_default(kind: str) -> None:
    with SERVERS[kind]() as port:
        raw = RawClient(port)
        raw.send(draft76_request(port))
        status, headers, _ = raw.read_response()
        assert status == 426
        assert headers["sec-websocket-version"] == "13"
        raw.close()


@pytest.mark.parametrize("kind", list(SERVERS))
def test_rfc6455_clients_still_work_with_the_option(kind: str) -> None:
    with SERVERS[kind](legacy_hixie76=True) as port, sync.connect(f"ws://{HOST}:{port}/") as ws:
        assert ws.recv(timeout=10) == WELCOME
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi" + MEOW
        assert ws.ping().wait(10) >= 0


def test_broadcast_frames_the_draft76_way_for_draft76_clients() -> None:
    """broadcast() shares RFC 6455 frames among RFC 6455 connections; a draft-76 connection
    gets the text framed its own way, and a binary message (the draft has none) skips it."""
    ready = threading.Event()
    state: list[object] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            if message == "go":
                text = shakehands.broadcast(server.connections, "to everyone")
                binary = shakehands.broadcast(server.connections, b"\x01\x02")
                await ws.send(f"{text.sent} {binary.sent} {binary.skipped}")

    async def main() -> None:
        nonlocal server
        async with shakehands.serve(handler, HOST, 0, legacy_hixie76=True) as server:
            stop = asyncio.Event()
            state.extend([server.port, asyncio.get_running_loop(), stop])
            ready.set()
            await stop.wait()

    server: shakehands.Server[shakehands.ServerConnection]
    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    port = int(state[0])  # type: ignore[call-overload]
    try:
        raw = RawClient(port)
        raw.send(draft76_request(port))
        assert raw.read_response()[0] == 101
        assert raw._read(16) == ANSWER
        with sync.connect(f"ws://{HOST}:{port}/") as ws:
            ws.send("go")
            assert ws.recv(timeout=10) == "to everyone"
            assert ws.recv(timeout=10) == b"\x01\x02"
            # Text to both; binary to the RFC 6455 client only, the draft-76 one skipped.
            assert ws.recv(timeout=10) == "2 1 1"
            assert read_text_frame(raw) == "to everyone"
            raw.send(b"\xff\x00")
            assert read_text_frame(raw) is None  # nothing but the text came before the close
        raw.close()
    finally:
        loop, stop = state[1], state[2]
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(10)
