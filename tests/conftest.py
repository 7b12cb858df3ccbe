"""Fixtures shared by every test folder (real sockets on 127.0.0.1, no mocks)."""

from __future__ import annotations

import pytest

from .helpers import APIS


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    """Which server API a test runs against: ``"coroutine"`` (serve) or ``"callback"``."""
    return str(request.param)
