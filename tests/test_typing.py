"""A user's ``mypy --strict`` catches their mistakes with the public API (issue 19, item 8).

One small program uses the API as documented and makes, on the lines marked ``# error``, the
mistakes a newcomer makes. ``mypy --strict`` (run on this tree's ``src``, see
``helpers.run_mypy``) must report an error on each marked line and nowhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shakehands

from .helpers import run_mypy

SOURCE = Path(shakehands.__file__).resolve().parent.parent

PROGRAM = """\
from http import HTTPStatus

import shakehands
from shakehands import Hub, InvalidStatus, Request, Response, TransportProtocol, sync


async def handler(ws: shakehands.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def blocking_handler(ws: sync.ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def process_request(request: Request) -> Response | None:
    token: str | None = request.param("token")
    rooms: list[str] = request.params.get("room", [])
    if token is None or not rooms:
        return Response(HTTPStatus.UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}, "no token")
    return Response(200, [("X-Rooms", ",".join(rooms))], b"ok")


def subscribe(hub: Hub, connection: TransportProtocol) -> None:
    hub.subscribe(connection, "news")


async def correct() -> None:
    server = await shakehands.serve(handler, "127.0.0.1", 0, ping_interval=3)
    typed_server: shakehands.Server[shakehands.ServerConnection] = server
    async with shakehands.serve(handler, process_request=process_request) as other:
        await other.serve_forever()
    ws = await shakehands.connect("ws://127.0.0.1:8765/", ping_interval=3)
    typed_ws: shakehands.ClientConnection = ws
    await ws.send("hello")
    subscribe(Hub(), ws)
    try:
        await shakehands.connect("ws://127.0.0.1:8765/")
    except InvalidStatus as exc:
        status: int = exc.response.status
        body: bytes = exc.response.body
    with sync.serve(blocking_handler, "127.0.0.1", 0, ping_interval=3) as blocking:
        blocking.serve_forever()


async def mistakes() -> None:
    shakehands.serve(handler, "127.0.0.1", 0, ping_intervall=3)  # error
    sync.serve(blocking_handler, "127.0.0.1", 0, ping_intervall=3)  # error
    sync.connect("ws://127.0.0.1:8765/", ping_intervall=3)  # error
    ws = await shakehands.connect("ws://127.0.0.1:8765/")
    await ws.sned("hello")  # error
    count: int = await shakehands.connect("ws://127.0.0.1:8765/")  # error
    server = await shakehands.serve(handler, "127.0.0.1", 0)
    server.serve_forevr()  # error
    try:
        await shakehands.connect("ws://127.0.0.1:8765/")
    except InvalidStatus as exc:
        print(exc.response.stauts)  # error
        text: str = exc.response.body  # error
    Hub().subscribe("not a connection", "news")  # error
    Response(401, headers=42)  # error
    Response(401, body=42)  # error
    Response("401")  # error
"""


@pytest.mark.timeout(300)
def test_mypy_strict_passes_correct_uses_and_reports_each_mistake(tmp_path: Path) -> None:
    program = tmp_path / "first_hour.py"
    program.write_text(PROGRAM, encoding="utf-8")
    result = run_mypy(program, SOURCE)
    marked = {
        number
        for number, line in enumerate(PROGRAM.splitlines(), start=1)
        if line.endswith("# error")
    }
    reported = {
        int(m.group(1))
        for m in re.finditer(r"^first_hour\.py:(\d+): error:", result.stdout, re.MULTILINE)
    }
    assert reported, result.stdout + result.stderr
    missed = sorted(marked - reported)
    wrong = sorted(reported - marked)
    lines = PROGRAM.splitlines()
    assert not missed, ("mistakes mypy let through", [lines[n - 1] for n in missed], result.stdout)
    assert not wrong, ("correct uses mypy rejects", [lines[n - 1] for n in wrong], result.stdout)
