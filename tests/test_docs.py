"""The code of the documentation runs: the Python blocks of ``README.md`` and of every
Markdown page under ``docs/`` (the site's tutorial and how-to guides included), and
``examples/*.py``.

Every ```` ```python ```` block compiles (top-level ``await`` allowed: fragments such as
``async with shakehands.connect(...) as ws:`` are meant to be pasted into a coroutine). A block
is run only when the line right before its fence says how, with an HTML comment (invisible on
GitHub); the marks are reviewed with the documentation:

- ``<!-- test: run [port=N] [demo=N] -->``: a program that must exit with status 0 (a fragment
  with top-level ``await`` runs as the body of a coroutine);
- ``<!-- test: server port=N [path=/p] -->``: a server that runs until stopped; it must accept a
  WebSocket connection on ``ws://127.0.0.1:PORT/p``, then it is stopped;
- ``<!-- test: compile -->``: compile only, said explicitly for a block that looks like a whole
  program (``asyncio.run(``, ``serve_forever(``, ``if __name__``) but is not one.

Every block, run or not, may take from shakehands only names that exist
(``from shakehands.x import name``, ``shakehands.name``): a renamed API fails its fragments too.

``port=N``: every ``N`` in the block is replaced by a free port of 127.0.0.1 (the documentation
keeps its memorable numbers; the tests never take a fixed port). ``demo=N``: the seed's demo
(``python -m shakehands``) is started on a free port first, and ``N`` replaced by that port.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

import shakehands
from shakehands import sync

from .helpers import HOST, free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
STARTUP_TIMEOUT = 30.0  # seconds for a server to answer (the machine may be loaded)
RUN_TIMEOUT = 60.0

MODES = {"compile", "run", "server"}
OPTIONS = {"port", "demo", "path"}
MARK = re.compile(r"^<!--\s*test:\s*(.*?)\s*-->$")
LOOKS_LIKE_A_PROGRAM = ("asyncio.run(", "serve_forever(", "if __name__")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    mode: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_mark(text: str, where: str) -> tuple[str, dict[str, str]]:
    mode, *words = text.split()
    assert mode in MODES, f"{where}: unknown test mode {mode!r} (one of {sorted(MODES)})"
    options = dict(word.split("=", 1) for word in words)
    assert set(options) <= OPTIONS, f"{where}: unknown options {sorted(set(options) - OPTIONS)}"
    return mode, options


def python_blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        mark = MARK.match(line)
        if mark:
            where = f"{path.relative_to(ROOT)}:{index + 1}"
            following = lines[index + 1] if index + 1 < len(lines) else ""
            assert following.strip() == "```python", f"{where}: a test mark not before a block"
        if line.startswith("```"):
            fence, start = line[:3], index
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith(fence))
            if line.strip() == "```python":
                block = Block(path, start + 1, "\n".join(lines[start + 1 : end]) + "\n")
                previous = MARK.match(lines[start - 1]) if start else None
                if previous:
                    block.mode, block.options = parse_mark(previous.group(1), block.name)
                yield block
            index = end
        index += 1


BLOCKS = [block for path in DOCUMENTS for block in python_blocks(path)]


def test_documents_have_python_blocks() -> None:
    assert len(BLOCKS) >= 15
    assert {block.mode for block in BLOCKS} == MODES | {None}


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_block_compiles(block: Block) -> None:
    compile(block.code, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if block.mode is None:
        looks = [word for word in LOOKS_LIKE_A_PROGRAM if word in block.code]
        assert not looks, (
            f"{block.name} looks like a whole program ({', '.join(looks)}): mark it with "
            "<!-- test: run ... -->, <!-- test: server ... --> or <!-- test: compile -->"
        )
    for option in ("port", "demo"):
        if option in block.options:
            number = block.options[option]
            assert re.search(rf"\b{number}\b", block.code), f"{block.name}: no {number} in it"


def shakehands_names(code: str) -> Iterator[tuple[str, str]]:
    """The ``(module, name)`` pairs a block takes from shakehands: ``from shakehands.x import
    name``, and ``shakehands.name`` / ``shakehands.sub.name`` attribute chains."""
    tree = compile(code, "<block>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if id(node) in inner:
            continue  # ``shakehands.sync`` of ``shakehands.sync.serve``: the whole chain counts
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "shakehands":
            for alias in node.names:
                yield str(node.module), alias.name
        elif isinstance(node, ast.Attribute):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "shakehands":
                yield "shakehands", ".".join(chain)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_block_uses_names_that_exist(block: Block) -> None:
    """Every name a block takes from shakehands exists, fragments included: a renamed or
    removed API fails here even where the block only compiles."""
    missing = []
    for module_name, dotted in shakehands_names(block.code):
        try:
            value: object = importlib.import_module(module_name)
        except ImportError as exc:  # an optional dependency of that module
            if (exc.name or "shakehands").split(".")[0] == "shakehands":
                raise
            continue
        for part in dotted.split("."):
            if isinstance(value, ModuleType) or part == dotted.split(".")[0]:
                if not hasattr(value, part):
                    missing.append(f"{module_name}.{dotted}")
                    break
                value = getattr(value, part)
            else:
                break  # an attribute of an object, not of a module: not checked here
    assert not missing, f"{block.name} uses names shakehands does not have: {missing}"


def test_names_check_sees_a_missing_name() -> None:
    code = "from shakehands.sync import serve, nope\nawait shakehands.sync.gone(1)\n"
    assert list(shakehands_names(code)) == [
        ("shakehands.sync", "serve"),
        ("shakehands.sync", "nope"),
        ("shakehands", "sync.gone"),
    ]
    with pytest.raises(AssertionError, match="nope.*gone"):
        test_block_uses_names_that_exist(Block(ROOT / "README.md", 1, code))


# ---------------------------------------------------------------------------------------------
# Running blocks
# ---------------------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    """The environment of the programs: this tree's shakehands first on the path."""
    source = str(Path(shakehands.__file__).resolve().parent.parent)
    paths = [source, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.terminate()
    try:
        return process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def wait_for_websocket(process: subprocess.Popen[str], uri: str) -> None:
    """Open and close a WebSocket connection to ``uri`` once the program listens."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            out, err = stop(process)
            pytest.fail(f"the program exited with {process.returncode}:\n{out}\n{err}")
        try:
            with sync.connect(uri, open_timeout=10) as ws:
                ws.close()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                out, err = stop(process)
                pytest.fail(f"nothing listens on {uri} after {STARTUP_TIMEOUT} s:\n{out}\n{err}")
            time.sleep(0.1)


@pytest.fixture
def demo_port() -> Iterator[int]:
    """The seed's demo (``python -m shakehands``) on a free port."""
    port = free_port()
    process = start(["-m", "shakehands", "--port", str(port)], ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == f"Listening on port {port}.", (line, stop(process))
        yield port
    finally:
        stop(process)


def has_top_level_await(code: str) -> bool:
    try:
        compile(code, "<block>", "exec")
    except SyntaxError:
        return True  # compiles only with PyCF_ALLOW_TOP_LEVEL_AWAIT (test_block_compiles)
    return False


RUN = [block for block in BLOCKS if block.mode in ("run", "server")]
#: README's server programs, in order: the asyncio one first, then the blocking one
#: (tests/asyncio/test_server.py and tests/sync/test_sync_server.py stop them with signals).
#: Fragments (top-level ``await``) are not programs of their own.
README_SERVERS = [
    block
    for block in BLOCKS
    if block.mode == "server"
    and block.path.name == "README.md"
    and not has_top_level_await(block.code)
]


def start_server_block(block: Block, directory: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a ``server`` block as a program on a free port, once it accepts a WebSocket
    connection: the process and its URI."""
    assert block.mode == "server" and "port" in block.options, block.name
    port = free_port()
    code = re.sub(rf"\b{block.options['port']}\b", str(port), block.code)
    program = directory / "block.py"
    program.write_text(f"# {block.name}\n{code}", encoding="utf-8")
    process = start([str(program)], directory)
    uri = f"ws://{HOST}:{port}{block.options.get('path', '/')}"
    try:
        wait_for_websocket(process, uri)
    except BaseException:
        stop(process)
        raise
    return process, uri


#: Runs a block with top-level ``await`` (``async with shakehands.connect(...) as ws:``) as the
#: body of a coroutine, the way it is meant to be pasted: with ``asyncio`` and ``shakehands``
#: imported.
FRAGMENT_RUNNER = """\
import ast, asyncio, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as file:
    code = compile(file.read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
import shakehands  # a fragment is pasted where shakehands is imported
result = eval(code, {"__name__": "__main__", "asyncio": asyncio, "shakehands": shakehands})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


@pytest.mark.parametrize("block", RUN, ids=lambda block: block.name)
def test_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    code = block.code
    port = free_port()
    if "port" in block.options:
        code = re.sub(rf"\b{block.options['port']}\b", str(port), code)
    if "demo" in block.options:
        demo = request.getfixturevalue("demo_port")
        code = re.sub(rf"\b{block.options['demo']}\b", str(demo), code)
    program = tmp_path / "block.py"
    program.write_text(f"# {block.name}\n{code}", encoding="utf-8")
    if has_top_level_await(code):  # a fragment meant for a coroutine: run it in one
        program.with_name("fragment.py").write_text(FRAGMENT_RUNNER, encoding="utf-8")
        process = start([str(program.with_name("fragment.py")), str(program)], tmp_path)
    else:
        process = start([str(program)], tmp_path)
    if block.mode == "server":
        assert "port" in block.options, f"{block.name}: a server needs port=N"
        try:
            wait_for_websocket(process, f"ws://{HOST}:{port}{block.options.get('path', '/')}")
        finally:
            stop(process)
    else:
        try:
            out, err = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            out, err = stop(process)
            pytest.fail(f"{block.name} did not finish in {RUN_TIMEOUT} s:\n{out}\n{err}")
        assert process.returncode == 0, f"{block.name} exited with {process.returncode}:\n{err}"


def test_run_blocks_exist() -> None:
    assert {block.mode for block in RUN} == {"run", "server"}


# ---------------------------------------------------------------------------------------------
# examples/
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_compiles_and_imports(path: Path) -> None:
    """Each example imports without running (its program is under ``if __name__``)."""
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
    spec = importlib.util.spec_from_file_location(f"_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__doc__, f"{path.name} has no docstring saying how to run it"


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5
