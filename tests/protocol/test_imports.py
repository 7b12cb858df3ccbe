"""The sans-I/O core imports no I/O machinery, and ``import shakehands`` stays cheap.

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shakehands

#: Modules whose presence would mean the core (or the bare package) performs or prepares I/O.
IO_MODULES = ["asyncio", "threading", "socket", "selectors", "ssl"]
PROTOCOL_DIR = Path(shakehands.__file__).parent / "protocol"
PROTOCOL_MODULES = sorted(
    f"shakehands.protocol.{path.stem}"
    for path in PROTOCOL_DIR.glob("*.py")
    if path.stem != "__init__"
)


def imported_after(statements: str) -> set[str]:
    """Run ``statements`` in a fresh interpreter; return the I/O modules it has loaded."""
    code = (
        "import json, sys\n"
        f"{statements}\n"
        f"print(json.dumps(sorted(set({IO_MODULES!r}) & set(sys.modules))))\n"
    )
    # -I would drop PYTHONPATH and the editable install's path hook; -S is not needed either.
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    return set(json.loads(result.stdout))


def test_protocol_modules_are_listed() -> None:
    assert "shakehands.protocol.connection" in PROTOCOL_MODULES
    assert "shakehands.protocol.handshake" in PROTOCOL_MODULES


@pytest.mark.parametrize("module", ["shakehands.protocol", *PROTOCOL_MODULES])
def test_protocol_imports_no_io(module: str) -> None:
    assert imported_after(f"import {module}") == set()


def test_every_protocol_module_together_imports_no_io() -> None:
    statements = "\n".join(f"import {module}" for module in PROTOCOL_MODULES)
    assert imported_after(statements) == set()


def test_import_shakehands_is_lazy() -> None:
    # The package itself: errors, Headers, Request, Response, DeflateOptions; no asyncio yet.
    assert imported_after("import shakehands\nshakehands.Response, shakehands.CloseCode") == set()


def test_lazy_names_import_on_first_use() -> None:
    loaded = imported_after("import shakehands\nshakehands.serve")
    assert "asyncio" in loaded
    loaded = imported_after("from shakehands import sync\nsync.serve")
    assert "threading" in loaded


def test_every_public_name_resolves() -> None:
    for name in shakehands.__all__:
        assert getattr(shakehands, name) is not None, name
    assert set(shakehands._LAZY) <= set(shakehands.__all__)
    assert set(shakehands.__all__) <= set(dir(shakehands))
    with pytest.raises(AttributeError):
        _ = shakehands.no_such_name  # type: ignore[attr-defined]


def test_lazy_names_are_the_objects_of_their_modules() -> None:
    from shakehands.asyncio.server import serve
    from shakehands.hub import Hub
    from shakehands.sync import serve as sync_serve

    assert shakehands.serve is serve
    assert shakehands.Hub is Hub
    assert shakehands.sync.serve is sync_serve


def test_broadcast_names_the_function_whatever_was_imported_first() -> None:
    # The submodule shakehands.broadcast and the function shakehands.broadcast share a name.
    code = (
        "import sys\n"
        "from shakehands.broadcast import SlowClientPolicy\n"  # the submodule first
        "import shakehands\n"
        "from shakehands import broadcast\n"
        "assert callable(broadcast) and broadcast.__name__ == 'broadcast', broadcast\n"
        "assert shakehands.broadcast is broadcast\n"
        "assert sys.modules['shakehands.broadcast'].broadcast is broadcast\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hub_module_keeps_its_names() -> None:
    import shakehands.hub as old
    import shakehands.pubsub as new

    for name in old.__all__:
        assert getattr(old, name) is getattr(new.backend, name, None) or getattr(
            old, name
        ) is getattr(new, name), name
    assert shakehands.Hub is new.Hub is new.hub.Hub
    assert shakehands.RedisBackend is new.redis.RedisBackend
    assert old.logger.name == "shakehands.hub"  # deployments filter on it


def test_one_module_picks_compiled_code() -> None:
    # protocol/_accel.py decides whether the core uses the C extensions (shakehands._speedups,
    # and shakehands._fastpath for the callback API's data path); no other module of the
    # package imports them itself (asyncio/_fastpath.py is the Python side, asking _accel).
    package = Path(shakehands.__file__).parent
    markers = (
        "shakehands._speedups",
        "shakehands._fastpath",
        "from shakehands import _speedups",
        "from shakehands import _fastpath",
        'import_module(f"shakehands.',
    )
    importers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if any(
            "import" in line and any(marker in line for marker in markers)
            for line in path.read_text("utf-8").splitlines()
            if not line.strip().startswith(("#", '"', "'", ":", "``"))
        )
    )
    assert importers == ["protocol/_accel.py"]


@pytest.mark.parametrize("flag", ["1", "yes"])
def test_no_speedups_flag_turns_off_every_compiled_path(flag: str) -> None:
    code = (
        "from shakehands.protocol import _accel, connection, frames, masking\n"
        "assert _accel.speedups is None and not _accel.USING_SPEEDUPS\n"
        "assert connection._parse_data_frames is None\n"
        "assert frames.build_frame is frames.build_frame_python\n"
        "assert masking.apply_mask is masking.apply_mask_python\n"
        "assert masking.join_masked is masking.join_masked_python\n"
    )
    env = {**os.environ, "SHAKEHANDS_NO_SPEEDUPS": flag}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
