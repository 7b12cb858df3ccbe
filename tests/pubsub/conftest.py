"""Fixtures of the scale-out tests: a real ``redis-server`` on 127.0.0.1, chat server processes.

The Redis server runs on a free port with its own temporary directory and no persistence; tests
that need it skip, saying why, only when it cannot be started (no ``redis-server`` installed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .pubsub_helpers import ChatProcess


@pytest.fixture
def chat_processes() -> Iterator[list[ChatProcess]]:
    """A list the test appends ChatProcess objects to; all stopped at the end."""
    processes: list[ChatProcess] = []
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()
