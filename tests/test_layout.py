"""The layout of ``tests/`` (see ``tests/README.md``): packages that shadow nothing."""

from __future__ import annotations

import asyncio
import sys
import sysconfig
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SOURCE = TESTS.parent / "src" / "shakehands"


def test_asyncio_is_the_standard_library() -> None:
    """``tests/asyncio`` is the package ``tests.asyncio``: ``import asyncio`` is not it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(asyncio.__file__).resolve().is_relative_to(stdlib)
    import tests.asyncio

    assert Path(tests.asyncio.__file__).resolve() == TESTS / "asyncio" / "__init__.py"
    assert tests.asyncio is not asyncio
    assert not any(Path(p or ".").resolve() == TESTS for p in sys.path), "tests/ on sys.path"


@pytest.mark.parametrize(
    "folder", sorted(p.name for p in TESTS.iterdir() if p.is_dir() and p.name[0] not in "._")
)
def test_every_test_folder_is_a_package(folder: str) -> None:
    assert (TESTS / folder / "__init__.py").is_file()


def test_package_folders_mirror_the_source() -> None:
    """Each package of src/shakehands has a test folder of the same name."""
    if not SOURCE.is_dir():
        pytest.skip("no src/shakehands next to tests/ (an installed package is tested)")
    packages = {p.name for p in SOURCE.iterdir() if (p / "__init__.py").is_file()}
    packages.discard("static")  # data files: tests/test_static.py
    folders = {p.name for p in TESTS.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= folders, sorted(packages - folders)
