"""``examples/fastapi_echo.py``, run as its docstring says, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shakehands import InvalidStatus, sync

from ..helpers import HOST, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fastapi_echo.py"
STARTUP_TIMEOUT = 30.0  # seconds for the program to listen (the machine may be loaded)


@pytest.fixture
def example_port() -> Iterator[int]:
    port = free_port()
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                with sync.connect(f"ws://{HOST}:{port}/ws", open_timeout=10):
                    break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the example does not listen"
                time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert "[accepted]" in output


def test_fastapi_echo_example(example_port: int) -> None:
    uri = f"ws://{HOST}:{example_port}/ws"
    with sync.connect(uri, subprotocols=["echo"]) as ws:
        assert ws.subprotocol == "echo"
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x01\x02")
        assert ws.recv() == b"\x01\x02"
    with sync.connect(uri + "?token=secret") as ws:
        ws.send("ok")
        assert ws.recv() == "ok"
    with pytest.raises(InvalidStatus) as caught, sync.connect(uri + "?token=wrong"):
        pass
    assert caught.value.response.status == 403
    assert caught.value.response.body == b"bad token"
