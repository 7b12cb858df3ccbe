"""The ``impl``, ``coro_impl`` and ``api_impl`` fixtures: every test here runs on the compiled
data path and on pure Python (callback API, coroutine API, or both)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest

from shakehands.asyncio import _fastcoro, _fastpath


@contextmanager
def _data_path(module: ModuleType, name: str) -> Iterator[None]:
    """``module`` (``_fastpath`` or ``_fastcoro``) makes compiled connections if ``name`` is
    "compiled", pure-Python ones if "python"; skipped when the compiled path is not built."""
    if name == "compiled" and not module.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")
    saved = module.enabled
    module.enabled = name == "compiled"
    try:
        yield
    finally:
        module.enabled = saved


@pytest.fixture(params=["compiled", "python"])
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which callback connection :func:`shakehands.serve_callbacks` makes in this test."""
    name = str(request.param)
    with _data_path(_fastpath, name):
        yield name


@pytest.fixture(params=["compiled", "python"])
def coro_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which coroutine connection :func:`shakehands.serve` makes in this test."""
    name = str(request.param)
    with _data_path(_fastcoro, name):
        yield name


@pytest.fixture(
    params=[
        ("callback", "compiled"),
        ("callback", "python"),
        ("coroutine", "compiled"),
        ("coroutine", "python"),
    ],
    ids=lambda param: "-".join(param),
)
def api_impl(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """Which API's server (callback or coroutine) and which of its connections (compiled or
    pure Python) this test uses."""
    api, name = request.param
    with _data_path(_fastpath if api == "callback" else _fastcoro, name):
        yield api, name
