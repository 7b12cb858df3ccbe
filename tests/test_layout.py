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


# The twin modules of the two I/O layers (issue "One engine, many front ends", item 3): the same
# files, and in each pair of twin classes the methods they share in the same order, so that a
# diff between twins shows only I/O differences.
TWINS = [
    ("base", "TransportProtocol", "SocketProtocol"),
    ("connection", "WebSocketConnection", "Connection"),
    ("messages", "Inbox", "Inbox"),
    ("server", "ServerConnection", "ServerConnection"),
    ("server", "Server", "Server"),
    ("client", "ClientConnection", "ClientConnection"),
]


#: Files only one layer has, and why: the callback API (and its compiled data path,
#: _fastpath.py, with the lean transport of its accepted sockets, _transport.py), the coroutine
#: API's compiled data path (_fastcoro.py) and broadcast are asyncio's; the seed's functions
#: work on blocking sockets.
ONLY_IN = {
    "asyncio": {"callback.py", "_fastpath.py", "_fastcoro.py", "_transport.py", "broadcast.py"},
    "sync": {"seed.py"},
}


def test_io_layers_have_the_same_files() -> None:
    if not SOURCE.is_dir():
        pytest.skip("no src/shakehands next to tests/ (an installed package is tested)")
    files = {
        layer: {p.name for p in (SOURCE / layer).glob("*.py")} - ONLY_IN[layer]
        for layer in ("asyncio", "sync")
    }
    assert files["asyncio"] == files["sync"], files
    assert {"base.py", "connection.py", "messages.py", "handshake.py", "server.py"} <= files["sync"]


def _methods(path: Path, name: str) -> list[str]:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
    raise AssertionError(f"no class {name} in {path}")


@pytest.mark.parametrize(("module", "async_class", "sync_class"), TWINS)
def test_io_layers_are_twins(module: str, async_class: str, sync_class: str) -> None:
    if not SOURCE.is_dir():
        pytest.skip("no src/shakehands next to tests/ (an installed package is tested)")
    async_methods = _methods(SOURCE / "asyncio" / f"{module}.py", async_class)
    sync_methods = _methods(SOURCE / "sync" / f"{module}.py", sync_class)
    shared = set(async_methods) & set(sync_methods)
    assert [m for m in async_methods if m in shared] == [m for m in sync_methods if m in shared]


def _api(cls: type) -> set[str]:
    """Public methods and properties (not attributes set per instance or slots)."""
    return {
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def test_blocking_connection_offers_the_coroutine_api() -> None:
    """Every method of the coroutine API exists in the blocking one, and what only the asyncio
    connection has is asyncio plumbing or the broadcast seam (listed here, with the reason)."""
    from shakehands.asyncio.connection import WebSocketConnection
    from shakehands.sync.connection import Connection

    asyncio_only = {
        # asyncio.Protocol callbacks: the event loop calls them.
        "connection_made", "data_received", "eof_received", "connection_lost",
        "pause_writing", "resume_writing", "get_buffer", "buffer_updated",
        # What broadcast() writes through (asyncio/broadcast.py); no blocking broadcast.
        "can_take_messages", "write_buffer_size", "write_queued", "fail",
        # A future to await; the blocking layer has wait_closed(timeout).
        "closed_future",
        # Properties over the transport; plain attributes in the blocking layer.
        "remote_address", "local_address",
    }  # fmt: skip
    blocking = _api(Connection)
    coroutine = _api(WebSocketConnection)
    assert coroutine - blocking <= asyncio_only, sorted(coroutine - blocking - asyncio_only)
    assert blocking - coroutine == set(), sorted(blocking - coroutine)
