"""Fixtures of the hardening tests: hostile and broken peers against real servers on 127.0.0.1.

The raw-socket client and the echo servers of ``tests/asyncio/asyncio_helpers.py`` are reused
(that directory is put on ``sys.path`` here), so these tests add attacks, not plumbing; so are the
parser checks of ``fuzz/targets.py``, which the property tests drive with hypothesis.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(_ROOT / "tests" / "asyncio"))
sys.path.insert(0, str(_ROOT / "fuzz"))  # the checks shared with the atheris targets

APIS = ["coroutine", "callback"]


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    """Which server API a test attacks: ``"coroutine"`` (serve) or ``"callback"``."""
    return str(request.param)
