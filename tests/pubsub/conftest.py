"""Fixtures of the scale-out tests: a real ``redis-server`` on 127.0.0.1, chat server processes.

The Redis server runs on a free port with its own temporary directory and no persistence; tests
that need it skip, saying why, only when it cannot be started (no ``redis-server`` installed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pubsub_helpers import ChatProcess, LocalRedisCluster, RedisServer


@pytest.fixture
def chat_processes() -> Iterator[list[ChatProcess]]:
    """A list the test appends ChatProcess objects to; all stopped at the end."""
    processes: list[ChatProcess] = []
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def chats_over_redis(
    redis_server: RedisServer, chat_processes: list[ChatProcess]
) -> tuple[ChatProcess, ChatProcess]:
    """Two chat server processes (``python -m shakehands chat --redis``) sharing
    ``redis_server``, started in turn and stopped at the end (``chat_processes``)."""
    first = ChatProcess("--redis", redis_server.url)
    chat_processes.append(first)
    second = ChatProcess("--redis", redis_server.url)
    chat_processes.append(second)
    return first, second


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    """A real Redis Cluster of 3 masters and 3 replicas on 127.0.0.1, replicas in sync; skips
    without ``redis-server`` and ``redis-cli``."""
    executable, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if executable is None or cli is None:
        pytest.skip("redis-server / redis-cli are not installed (Debian package redis-server)")
    cluster = LocalRedisCluster(executable, cli, tmp_path)
    try:
        cluster.start()
    except (OSError, RuntimeError) as exc:
        cluster.stop()
        pytest.skip(f"the Redis Cluster could not be started: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
