"""``python -m shakehands client --proxy URL``: the command-line client through a real proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import HOST
from .proxy_helpers import tinyproxy

TIMEOUT = 60.0


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [sys.executable, "-m", "shakehands", "client", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_cli_client_through_tinyproxy(tmp_path: Path, ws_port: int) -> None:
    with tinyproxy(tmp_path) as proxy:
        uri = f"ws://{HOST}:{ws_port}/"
        done = run_client(uri, "--proxy", proxy.url(), "--send", "via the proxy", "--count", "1")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["via the proxy"]
        assert proxy.log_text().count(f"CONNECT {HOST}:{ws_port}") == 1


def test_cli_client_proxy_refusal(tmp_path: Path, ws_port: int) -> None:
    with tinyproxy(tmp_path, auth=("user", "secret")) as proxy:
        done = run_client(f"ws://{HOST}:{ws_port}/", "--proxy", proxy.url(), "--send", "x")
        assert done.returncode == 1, done.stderr  # could not connect
        assert "407" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("proxy", ["ftp://127.0.0.1:21", "not a url"])
def test_cli_client_bad_proxy_url(proxy: str, ws_port: int) -> None:
    done = run_client(f"ws://{HOST}:{ws_port}/", "--proxy", proxy, "--send", "x")
    assert done.returncode == 2, done.stderr  # a usage error, before any connection
    assert "Traceback" not in done.stderr
    assert "--proxy" in done.stderr
