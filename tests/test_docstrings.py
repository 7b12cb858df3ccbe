"""The ``>>>`` examples of every docstring in ``src/shakehands`` run, and must pass.

One test per module (``pkgutil.walk_packages``: ``import shakehands`` itself is lazy, so its
submodules are imported one by one). A module that needs an optional dependency which is not
installed is skipped, saying which; an import error inside shakehands fails.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import shakehands

MODULES = ["shakehands"] + sorted(
    info.name for info in pkgutil.walk_packages(shakehands.__path__, "shakehands.")
)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] == "shakehands" or not missing:
            raise
        pytest.skip(f"{name} needs {missing}, which is not installed")


def test_modules_are_found() -> None:
    assert "shakehands.protocol.connection" in MODULES
    assert "shakehands.pubsub.hub" in MODULES
    assert len(MODULES) > 20


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = _import(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(verbose=False)
    report: list[str] = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)


def test_some_examples_exist() -> None:
    """The examples are really found (a finder that sees nothing would pass every module)."""
    module = importlib.import_module("shakehands.protocol.connection")
    tests = doctest.DocTestFinder().find(module, module.__name__)
    assert sum(len(test.examples) for test in tests) >= 3
