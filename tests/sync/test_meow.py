"""examples/meow.py, the seed's example: run it as a program and talk to it."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shakehands import sync

from ..helpers import HOST, free_port, upgrade_request
from .sync_helpers import RawClient

pytestmark = pytest.mark.timeout(60)

MEOW_PY = Path(__file__).resolve().parents[2] / "examples" / "meow.py"


class Program:
    """examples/meow.py running in a subprocess, its stdout lines in a queue."""

    def __init__(self, port: int) -> None:
        self.port = port
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, str(MEOW_PY), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self) -> str:
        return self.lines.get(timeout=20)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def meow() -> Iterator[Program]:
    program = Program(free_port())
    try:
        assert program.line() == f"Listening on port {program.port}."
        yield program
    finally:
        program.stop()


def test_the_seed_conversation(meow: Program) -> None:
    with sync.connect(f"ws://{HOST}:{meow.port}/") as ws:
        assert ws.recv(timeout=10) == "滴水之恩当以涌泉相报"
        assert meow.line() == "Shook hands, sent welcome message."
        for text in ["Hello", "猫", "🐱", "", "x" * 70_000]:
            ws.send(text)
            assert ws.recv(timeout=10) == text + ", MEOW!"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff, MEOW!"
    assert meow.line() == "Client quit, closed handle."


def test_two_clients_at_once(meow: Program) -> None:
    first = sync.connect(f"ws://{HOST}:{meow.port}/")
    second = sync.connect(f"ws://{HOST}:{meow.port}/")
    assert first.recv(timeout=10) == second.recv(timeout=10) == "滴水之恩当以涌泉相报"
    second.send("second")
    first.send("first")
    assert first.recv(timeout=10) == "first, MEOW!"
    assert second.recv(timeout=10) == "second, MEOW!"
    first.close()
    second.close()
    lines = [meow.line() for _ in range(4)]
    assert lines.count("Shook hands, sent welcome message.") == 2
    assert lines.count("Client quit, closed handle.") == 2


def test_a_bad_handshake_is_answered_and_logged(meow: Program) -> None:
    raw = RawClient(meow.port)
    raw.send(upgrade_request(meow.port, version="8"))
    status, headers, body = raw.read_response()
    assert status == 426
    raw.close()
    reason = body.decode().strip()
    assert meow.line() == reason
    assert meow.line() == "Client quit, closed handle."


def test_a_client_that_drops_tcp(meow: Program) -> None:
    raw = RawClient(meow.port)
    raw.handshake()
    raw.read_frame()
    raw.close()
    assert meow.line() == "Shook hands, sent welcome message."
    assert meow.line() == "Client quit, closed handle."
