"""A user's ``mypy --strict`` accepts the router, ``basic_auth`` and the ``unix_serve`` twins
as documented (the ``@router.route`` decorator keeps the handler's type) and reports the
mistakes on the lines marked ``# error``, and nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shakehands

from ..helpers import run_mypy

SOURCE = Path(shakehands.__file__).resolve().parent.parent

PROGRAM = """\
import shakehands
from shakehands import Router, basic_auth, sync

router = Router()


@router.route("/rooms/{name}")
async def room(ws: shakehands.ServerConnection) -> None:
    name: str = ws.path_params["name"]
    await ws.send(name)


def blocking(ws: sync.ServerConnection) -> None:
    ws.send(str(ws.path_params))


class Room(shakehands.Listener):
    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        ws.send(str(ws.path_params))


async def correct() -> None:
    hook = basic_auth("realm", credentials={"alice": "s3cr3t"})
    async with shakehands.serve(router, "127.0.0.1", 0, process_request=hook) as server:
        await server.serve_forever()
    async with shakehands.unix_serve(room, "/tmp/x.sock", max_message_size=10):
        pass
    async with shakehands.unix_serve_callbacks(Router([("/", Room())]), "/tmp/y.sock"):
        pass
    with sync.unix_serve(Router([("/", blocking)]), "/tmp/z.sock", backlog=5) as blocking_server:
        blocking_server.serve_forever()
    same: int = router.route("/items/{id:int}", 3)


async def mistakes() -> None:
    shakehands.unix_serve(room, "/tmp/x.sock", reuse_port=True)  # error
    shakehands.unix_serve(room, "/tmp/x.sock", max_mesage_size=1)  # error
    basic_auth("realm", credentials={"alice": 1})  # error
    wrong: str = router.route("/x", 3)  # error
"""


@pytest.mark.timeout(600)
def test_user_program_types(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    result = run_mypy(program, SOURCE)
    expected = {i for i, line in enumerate(PROGRAM.splitlines(), 1) if line.endswith("# error")}
    reported = {int(m.group(1)) for m in re.finditer(r"program\.py:(\d+): error", result.stdout)}
    assert reported == expected, result.stdout
