"""``examples/reconnecting_client.py --demo`` runs: its client follows three servers in a row on
one port (each stopped with 1001, the next started after a pause of refused attempts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import shakehands

pytestmark = pytest.mark.timeout(90)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reconnecting_client.py"


def test_reconnecting_client_demo() -> None:
    source = str(Path(shakehands.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=source, PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    received = [line for line in done.stdout.splitlines() if line.startswith("received: ")]
    assert received == [f"received: hello from server #{n}" for n in (1, 2, 3)]
    assert done.stdout.splitlines()[-1] == "the client heard from all three servers"
    # Each attempt is logged, refusals with the delay before the next one.
    assert "refused the connection (is the server running?); retrying in" in done.stderr
    assert "closed the connection with 1001; reconnecting in" in done.stderr
