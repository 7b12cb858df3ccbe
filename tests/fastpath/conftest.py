"""The ``impl`` and ``coro_impl`` fixtures: every test here runs on the compiled data path and on
pure Python (callback API and coroutine API)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shakehands.asyncio import _fastcoro, _fastpath


@pytest.fixture(params=["compiled", "python"])
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which callback connection :func:`shakehands.serve_callbacks` makes in this test."""
    name = str(request.param)
    if name == "compiled" and not _fastpath.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")
    saved = _fastpath.enabled
    _fastpath.enabled = name == "compiled"
    try:
        yield name
    finally:
        _fastpath.enabled = saved


@pytest.fixture(params=["compiled", "python"])
def coro_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which coroutine connection :func:`shakehands.serve` makes in this test."""
    name = str(request.param)
    if name == "compiled" and not _fastcoro.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")
    saved = _fastcoro.enabled
    _fastcoro.enabled = name == "compiled"
    try:
        yield name
    finally:
        _fastcoro.enabled = saved
