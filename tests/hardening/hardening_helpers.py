"""Helpers of the hardening tests: a server in a child process (to measure its memory and to
signal it), and small async utilities for many raw connections at once."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import shakehands

T = TypeVar("T")


class EchoProcess:
    """``python -m shakehands echo`` in a child process, on a free port of 127.0.0.1."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def command(self) -> list[str]:
        """The child's command line; its first line of output must end with ``:PORT.``"""
        return [sys.executable, "-m", "shakehands", "echo", "--port", "0", *self.args]

    def __enter__(self) -> EchoProcess:
        # The child imports the very copy of shakehands that the tests use.
        env = dict(os.environ)
        src = str(Path(shakehands.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r":(\d+)\.$", line.strip())
        assert match, f"unexpected first line from the echo server: {line!r}"
        self.port = int(match.group(1))
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def status(self, field: str) -> int:
        """A ``/proc/PID/status`` field: memory ones (``VmRSS``, ``VmHWM``) in bytes, counts
        (``Threads``) as they are."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    value, *unit = line.split()[1:]
                    return int(value) * (1024 if unit == ["kB"] else 1)
        raise KeyError(field)

    def __exit__(self, *exc_info: Any) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)


def proc_available() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/status")


async def gather_limited(
    factories: Iterable[Callable[[], Awaitable[T]]], limit: int = 64
) -> list[T]:
    """Run coroutines at most ``limit`` at a time (connecting 1 000 sockets at once would
    overflow the listening socket's backlog and stall on SYN retries)."""
    semaphore = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(run(f) for f in factories))
