"""Fixtures of the scale-out tests: a real ``redis-server`` on 127.0.0.1, chat server processes.

The Redis server runs on a free port with its own temporary directory and no persistence; tests
that need it skip, saying why, only when it cannot be started (no ``redis-server`` installed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pubsub_helpers import ChatProcess, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(executable, tmp_path)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"redis-server could not be started: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chat_processes() -> Iterator[list[ChatProcess]]:
    """A list the test appends ChatProcess objects to; all stopped at the end."""
    processes: list[ChatProcess] = []
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()
