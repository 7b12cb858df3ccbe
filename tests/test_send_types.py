"""What ``send`` takes, in every API: ``str``, bytes-like, or a message's fragments; a ``dict``
or a ``set`` (iterables of their keys) is refused with a ``TypeError`` naming its type, at run
time and by the type checker, and the connection goes on as if nothing happened."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import sync

from .helpers import HOST

NOT_MESSAGES: list[Any] = [{"type": "alert", "text": "hi"}, {"a", "b"}, frozenset({"x"}), 42]


@pytest.mark.parametrize("bad", NOT_MESSAGES, ids=lambda b: type(b).__name__)
async def test_coroutine_api_refuses_what_is_no_message(bad: Any) -> None:
    errors: list[str] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            try:
                await ws.send(bad)
            except TypeError as exc:
                errors.append(str(exc))
            await ws.send(message)  # the connection is unharmed

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        shakehands.connect(f"ws://{HOST}:{server.port}/") as ws,
    ):
        await ws.send("hello")
        assert await ws.recv() == "hello"  # and not "type", "text" first
        with pytest.raises(TypeError, match=f"cannot send {type(bad).__name__}"):
            await ws.send(bad)  # the client too
        await ws.send(["frag", "ments"])
        assert await ws.recv() == "fragments"
    assert len(errors) == 2 and f"cannot send {type(bad).__name__}" in errors[0]
    if isinstance(bad, dict):
        assert "json.dumps" in errors[0]


async def test_callback_api_refuses_what_is_no_message() -> None:
    errors: list[str] = []

    class Listener(shakehands.Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            try:
                ws.send({"type": "alert"})  # type: ignore[arg-type]
            except TypeError as exc:
                errors.append(str(exc))
            ws.send(message)

    async with (
        shakehands.serve_callbacks(Listener(), HOST, 0) as server,
        shakehands.connect(f"ws://{HOST}:{server.port}/") as ws,
    ):
        await ws.send("hello")
        assert await ws.recv() == "hello"
    assert errors and errors[0].startswith("cannot send dict")
    assert "str or bytes-like" in errors[0]


@pytest.mark.parametrize("bad", NOT_MESSAGES, ids=lambda b: type(b).__name__)
def test_blocking_api_refuses_what_is_no_message(bad: Any) -> None:
    errors: list[str] = []

    def handler(ws: sync.ServerConnection) -> None:
        for message in ws:
            try:
                ws.send(bad)
            except TypeError as exc:
                errors.append(str(exc))
            ws.send(message)

    with sync.serve(handler, HOST, 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        with sync.connect(f"ws://{HOST}:{server.port}/") as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            with pytest.raises(TypeError, match=f"cannot send {type(bad).__name__}"):
                ws.send(bad)
            ws.send(iter([b"frag", b"ments"]))
            assert ws.recv(timeout=10) == b"fragments"
        server.shutdown()
    assert len(errors) == 2 and f"cannot send {type(bad).__name__}" in errors[0]


def test_the_type_checker_refuses_what_is_no_message(tmp_path: Path) -> None:
    program = tmp_path / "sends.py"
    program.write_text(
        "from collections.abc import AsyncIterator\n"
        "import shakehands\n"
        "from shakehands import sync\n"
        "async def parts() -> AsyncIterator[str]:\n"
        "    yield 'a'\n"
        "async def good(ws: shakehands.ServerConnection, b: sync.ClientConnection) -> None:\n"
        "    await ws.send('text')\n"
        "    await ws.send(b'bytes')\n"
        "    await ws.send(bytearray(b'x'))\n"
        "    await ws.send(['a', 'b'])\n"
        "    await ws.send((b'a', memoryview(b'b')))\n"
        "    await ws.send(s for s in ['a'])\n"
        "    await ws.send(parts())\n"
        "    b.send('text')\n"
        "    b.send([b'a', b'b'])\n"
        "async def bad(ws: shakehands.ServerConnection, b: sync.ClientConnection) -> None:\n"
        "    await ws.send({'type': 'alert'})  # line 17\n"
        "    await ws.send({'a', 'b'})  # line 18\n"
        "    b.send({'type': 'alert'})  # line 19\n"
        "    b.send(42)  # line 20\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    lines = {int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line}
    assert lines == {17, 18, 19, 20}, result.stdout
