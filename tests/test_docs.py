"""The code of the documentation runs: the Python blocks of ``README.md`` and of every
Markdown page under ``docs/`` (the site's tutorial and how-to guides included), and
``examples/*.py``.

Every ```` ```python ```` block is executed. The line right before its fence may say how, with
an HTML comment (invisible on GitHub and on the site); the marks are reviewed with the
documentation. ``<!-- test: MODE OPTION=VALUE ... -->``, values quoted as in a shell
(``expect="hello 2"``):

- no mark, or ``run``: a program that must exit with status 0. A fragment with top-level
  ``await`` (``async with shakehands.connect(...) as ws:``, meant to be pasted into a
  coroutine) runs as the body of one coroutine, with ``asyncio`` and ``shakehands`` imported;
- ``server``: a server that runs until stopped; it must accept a WebSocket connection on
  ``ws://127.0.0.1:PORT/p`` (``port=N``, ``path=/p``), then it is stopped;
- ``excerpt of=PATH``: the block is a part of the program ``PATH`` (the same lines, indented
  or not), which a test under ``tests/`` runs: ``examples/minimal_client.py`` for one;
- ``compile reason="..."``: compile only, the exception, and it says why. A ``compile`` mark
  without a reason fails.

Options:

- ``port=N`` (or ``port=N,M``): every ``N`` in the block is replaced by a free port of
  127.0.0.1 (the documentation keeps its memorable numbers; the tests never take a fixed
  port). A block that listens on ``"0.0.0.0"`` listens on ``"127.0.0.1"`` (the tests never
  listen beyond the loopback).
- Peers, started by the test first, ``N`` replaced by their port: ``demo=N`` the seed's demo
  (``python -m shakehands``); ``echo=N`` an echo server; ``restarting=N`` a server that says
  ``hello 1`` (``hello 2``, ...) to each connection and closes it with 1012 (service restart),
  for the reconnecting clients; ``redis=N`` a real ``redis-server`` (skipped without one).
- ``expect="TEXT"``: the output must contain ``TEXT``; a program still running when it
  appears (a client that reconnects forever) is stopped there.
- ``setup=NAME``: a named setup of :data:`SETUPS` below: the real peers the block needs
  (tinyproxy, Dante, a TLS server, uvicorn, gunicorn), the definitions a fragment takes from
  the blocks before it, and the checks of what the block defined. It may replace text of the
  block (``wss://example.com/`` by a local TLS server trusted through ``SSL_CERT_FILE``,
  ``fullchain.pem`` by the test certificate), run code before and after it in the same
  namespace, run another program that uses it (gunicorn loading a worker class from it), and
  say how the ``server`` check connects. The value of the block's last expression is ``_``
  there: a ``shakehands.serve(handler, ..., origins=[...])`` line is served and checked.

Every block may take from shakehands only names that exist (``from shakehands.x import name``,
``shakehands.name``): a renamed API fails its fragments too, before they run.

A block whose peer is not installed (``redis-server``, tinyproxy, Dante, gunicorn) is skipped,
unless ``SHAKEHANDS_REQUIRE_DOCS=1`` (``.ci/steps/40-docs-site.sh`` sets it): then it fails.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import itertools
import os
import queue
import re
import shlex
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import shakehands
from shakehands import sync

from .helpers import HOST, free_port
from .proxy.conftest import PROXY_VARIABLES
from .proxy.proxy_helpers import danted, tinyproxy
from .pubsub.pubsub_helpers import RedisServer
from .sync.sync_helpers import running

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
REQUIRED = os.environ.get("SHAKEHANDS_REQUIRE_DOCS") == "1"
STARTUP_TIMEOUT = 30.0  # seconds for a server to answer (the machine may be loaded)
RUN_TIMEOUT = 60.0

MODES = {"run", "server", "excerpt", "compile"}
#: The options that start a peer before the block: the fixture giving its port.
PEERS = {"demo": "demo_port", "echo": "echo_port", "restarting": "restarting_port",
         "redis": "redis_port"}  # fmt: skip
NUMBERS = {"port", *PEERS}
OPTIONS = NUMBERS | {"path", "expect", "setup", "of", "reason"}
MARK = re.compile(r"^<!--\s*test:\s*(.*?)\s*-->$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    mode: str = "run"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_mark(text: str, where: str) -> tuple[str, dict[str, str]]:
    mode, *words = shlex.split(text)
    assert mode in MODES, f"{where}: unknown test mode {mode!r} (one of {sorted(MODES)})"
    assert all("=" in word for word in words), f"{where}: options are NAME=VALUE: {words}"
    options = dict(word.split("=", 1) for word in words)
    assert set(options) <= OPTIONS, f"{where}: unknown options {sorted(set(options) - OPTIONS)}"
    if mode == "compile":
        assert options.get("reason", "").strip(), (
            f"{where}: a compile-only block must say why it cannot run: "
            '<!-- test: compile reason="..." --> (or give it a setup that runs it)'
        )
    if mode == "excerpt":
        assert "of" in options, f"{where}: <!-- test: excerpt of=PATH -->"
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


def numbers(block: Block) -> dict[str, list[str]]:
    """The numbers of the block each numeric option replaces: ``{"port": ["8771", "8772"]}``."""
    return {
        option: block.options[option].split(",") for option in NUMBERS if option in block.options
    }


def test_documents_have_python_blocks() -> None:
    assert len(BLOCKS) >= 15
    assert {block.mode for block in BLOCKS} <= MODES
    assert {"run", "server"} <= {block.mode for block in BLOCKS}


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_block_compiles(block: Block) -> None:
    compile(block.code, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if "setup" in block.options:
        assert block.options["setup"] in SETUPS, f"{block.name}: no such setup in SETUPS"
    for values in numbers(block).values():
        for number in values:
            assert re.search(rf"\b{number}\b", block.code), f"{block.name}: no {number} in it"


def test_compile_only_blocks_are_the_exception() -> None:
    """Every block runs, but for a few that say why they cannot (and a mark without a reason
    fails when the documents are read: see :func:`parse_mark`)."""
    compiled = [block.name for block in BLOCKS if block.mode == "compile"]
    assert len(compiled) <= 2, f"blocks that only compile: {compiled}; give them a setup"
    with pytest.raises(AssertionError, match="must say why"):
        parse_mark("compile", "README.md:1")
    with pytest.raises(AssertionError, match="must say why"):
        parse_mark('compile reason=""', "README.md:1")
    assert parse_mark('compile reason="an nginx file"', "README.md:1")[1] == {
        "reason": "an nginx file"
    }


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
# Excerpts
# ---------------------------------------------------------------------------------------------


def is_excerpt_of(code: str, program: str) -> bool:
    """Whether the lines of ``code`` are consecutive lines of ``program``, indented alike."""
    wanted = [line.rstrip() for line in code.rstrip().splitlines()]
    lines = [line.rstrip() for line in program.splitlines()]
    for start in range(len(lines) - len(wanted) + 1):
        window = lines[start : start + len(wanted)]
        if textwrap.dedent("\n".join(window)).splitlines() == wanted:
            return True
    return False


EXCERPTS = [block for block in BLOCKS if block.mode == "excerpt"]


@pytest.mark.parametrize("block", EXCERPTS, ids=lambda block: block.name)
def test_excerpt_is_in_its_program(block: Block) -> None:
    program = ROOT / block.options["of"]
    assert program.is_file(), f"{block.name}: no {block.options['of']}"
    assert is_excerpt_of(block.code, program.read_text(encoding="utf-8")), (
        f"{block.name} is no longer a part of {block.options['of']}: copy it again"
    )
    tests = [
        path
        for path in (ROOT / "tests").rglob("*.py")
        if path.name not in ("test_docs.py", "test_site.py")
        and program.name in path.read_text(encoding="utf-8")
    ]
    assert tests, f"no test runs {block.options['of']}, of which {block.name} is a part"


def test_excerpt_check_sees_a_change() -> None:
    program = "def f():\n    if x:\n        return 1\n    return 2\n"
    assert is_excerpt_of("if x:\n    return 1\n", program)
    assert not is_excerpt_of("if x:\n    return 3\n", program)
    assert not is_excerpt_of("return 1\nreturn 2\n", program)


# ---------------------------------------------------------------------------------------------
# Setups
# ---------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What a named setup gives a block (see the module's docstring)."""

    #: Text of the block -> what the test runs instead (a local peer for a public host).
    replace: dict[str, str] = field(default_factory=dict)
    #: Code run before the block, in its namespace: what it takes from earlier blocks.
    before: str = ""
    #: Code run after it, in the same namespace: the checks of what it defined (``_``: the
    #: value of its last expression).
    after: str = ""
    #: Environment variables of the program (``https_proxy``, ``SSL_CERT_FILE``).
    env: dict[str, str] = field(default_factory=dict)
    #: ``server`` blocks: the scheme and the ``sync.connect`` options of the check.
    scheme: str = "ws"
    client: dict[str, Any] = field(default_factory=dict)
    #: A program that uses the block (written as ``block.py`` beside it), run instead of it,
    #: and the port it serves on (a block that is a module for another program).
    command: list[str] | None = None
    port: int | None = None


SetupFactory = Callable[[pytest.FixtureRequest, Path], contextlib.AbstractContextManager[Setup]]
#: The named setups, ``setup=NAME``. Each is a context manager: the peers it starts are stopped
#: when the block is done; what follows its ``yield`` checks what the peers saw.
SETUPS: dict[str, SetupFactory] = {}


def setup(name: str) -> Callable[[Callable[..., Iterator[Setup]]], SetupFactory]:
    def register(function: Callable[..., Iterator[Setup]]) -> SetupFactory:
        factory = contextlib.contextmanager(function)
        SETUPS[name] = factory
        return factory

    return register


#: The handler of the blocks that serve ``handler`` without defining it: an echo.
ECHO_HANDLER = """\
async def handler(ws):
    async for message in ws:
        await ws.send(message)
"""

#: For the checks: the status of a refused upgrade (an assertion error if it was accepted).
STATUS_OF = """\
async def status_of(uri, **options):
    try:
        ws = await shakehands.connect(uri, **options)
    except shakehands.InvalidStatus as exc:
        return exc.response.status
    await ws.close()
    raise AssertionError(f"{uri} {options} was accepted")
"""


#: After-code: two clients of the room at ``uri`` (set before); a message reaches both.
#: ``{first_options}``: more arguments of the first connect.
ROOM_OF_TWO = """\
async with shakehands.connect(uri{first_options}) as first:
    await first.send("first here")
    assert await first.recv() == "first here"  # then first is a member
    async with shakehands.connect(uri) as second:
        await second.send("second here")
        assert await second.recv() == "second here"
        assert await first.recv() == "second here"
"""


def lobby_then_statuses(lobby: str, statuses: dict[str, int]) -> str:
    """After-code: the page's server (``_``) serving, the room at ``lobby`` greets, and each
    URI of ``statuses`` is refused with its status."""
    checks = "".join(
        f"    assert await status_of({uri!r}) == {status}\n" for uri, status in statuses.items()
    )
    return (
        STATUS_OF
        + "async with _:\n"
        + f"    async with shakehands.connect({lobby!r}) as ws:\n"
        + '        assert await ws.recv() == "welcome to lobby"\n'
        + checks
    )


@setup("handler-and-origins")
def _origins(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """``shakehands.serve(handler, ..., 8765, origins=["https://app.example.com"], ...)``:
    served, the allowed origin gets in, another one and none are refused with 403."""
    yield Setup(
        before=ECHO_HANDLER,
        after=STATUS_OF
        + """\
async with _:
    async with shakehands.connect("ws://127.0.0.1:8765/", origin="https://app.example.com") as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    assert await status_of("ws://127.0.0.1:8765/", origin="https://evil.example") == 403
    assert await status_of("ws://127.0.0.1:8765/") == 403
""",
    )


@setup("readme-process-request")
def _process_request(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """README's ``process_request``: ``/health`` answered over plain HTTP, 404 for other paths,
    the upgrade on ``/chat`` with its subprotocol, 403 for another origin."""
    yield Setup(
        before=ECHO_HANDLER,
        after=STATUS_OF
        + """\
import urllib.error, urllib.request

def get(path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:8766{path}", timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()

async with _:
    assert await asyncio.to_thread(get, "/health") == (200, b"OK\\n")
    assert await asyncio.to_thread(get, "/nowhere") == (404, b"no such endpoint\\n")
    async with shakehands.connect("ws://127.0.0.1:8766/chat", subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        await ws.send("hello")
        assert await ws.recv() == "hello"
    assert await status_of("ws://127.0.0.1:8766/chat", origin="https://evil.example") == 403
""",
    )


@setup("readme-router")
def _readme_router(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The router behind Basic auth: the room greets alice, 401 without credentials, 404 for
    a path no route matches."""
    yield Setup(
        after=lobby_then_statuses(
            "ws://alice:s3cr3t@127.0.0.1:8765/rooms/lobby",
            {
                "ws://127.0.0.1:8765/rooms/lobby": 401,
                "ws://alice:s3cr3t@127.0.0.1:8765/nowhere": 404,
            },
        ),
    )


@setup("readme-context")
def _readme_context(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """``authenticate`` and ``greet`` served together (README's imports before them): the
    token's user is greeted, a wrong token gets 401."""
    yield Setup(
        before="from http import HTTPStatus\nfrom shakehands import Response\n",
        after=STATUS_OF
        + """\
async with shakehands.serve(greet, "127.0.0.1", 0, process_request=authenticate) as server:
    async with shakehands.connect(f"ws://127.0.0.1:{server.port}/?token=secret-1") as ws:
        assert await ws.recv() == "hello alice"
    assert await status_of(f"ws://127.0.0.1:{server.port}/?token=nope") == 401
""",
    )


@setup("routing-own-hook")
def _routing_own_hook(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The page's router (its first block), with ``only_public_rooms``: a public room greets,
    a private one gets 403, an unrouted path 404."""
    yield Setup(
        before="""\
router = shakehands.Router()

@router.route("/rooms/{name}")
async def room(ws):
    await ws.send(f"welcome to {ws.path_params['name']}")
""",
        after=lobby_then_statuses(
            "ws://127.0.0.1:8770/rooms/lobby",
            {"ws://127.0.0.1:8770/rooms/_staff": 403, "ws://127.0.0.1:8770/nowhere": 404},
        ),
    )


@setup("routing-other-apis")
def _routing_other_apis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The callback router served as the block says, and the blocking server it made (``_``:
    ``sync.serve`` listens at once) serving in a thread: each greets the room."""
    yield Setup(
        after="""\
import threading

async with serve_callbacks(callback_router, "127.0.0.1", 8771):
    async with shakehands.connect("ws://127.0.0.1:8771/rooms/lobby") as ws:
        assert await ws.recv() == "welcome to lobby"
        await ws.send("hello")
        assert await ws.recv() == "hello"

with _ as server:
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        async with shakehands.connect("ws://127.0.0.1:8772/rooms/kitchen") as ws:
            assert await ws.recv() == "welcome to kitchen"
    finally:
        server.shutdown()
        thread.join()
""",
    )


@setup("callback-rooms")
def _callback_rooms(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The listener of the page's rooms, with the page's in-memory ``hub``, served as its last
    line says: a message reaches both members of the room."""
    yield Setup(
        before="from shakehands import Hub\n\nhub = Hub()\n",
        after="""\
async with hub, shakehands.serve_callbacks(Rooms(), "127.0.0.1", 0) as server:
    uri = f"ws://127.0.0.1:{server.port}/kitchen"
"""
        + textwrap.indent(ROOM_OF_TWO.format(first_options=""), "    "),
    )


@setup("fastapi-rooms")
def _fastapi_rooms(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The FastAPI ``app`` under uvicorn with shakehands (``redis=`` gives it a Redis server):
    a message reaches both members of the room."""
    yield Setup(
        after="""\
import socket
import uvicorn

sock = socket.create_server(("127.0.0.1", 0))
config = uvicorn.Config(app, ws="shakehands.asgi:UvicornWebSocket", lifespan="off",
                        log_level="warning")
server = uvicorn.Server(config)
serving = asyncio.create_task(server.serve(sockets=[sock]))
uri = f"ws://127.0.0.1:{sock.getsockname()[1]}/rooms/kitchen"
"""
        + ROOM_OF_TWO.format(first_options=", open_timeout=30")
        + """\
server.should_exit = True
await serving
""",
    )


#: An ASGI app that accepts a WebSocket only when shakehands serves it (the scope carries its
#: connection), and echoes.
SHAKEHANDS_ONLY_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    if "shakehands" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # a 403: not served by shakehands
        return
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text")})
"""


@setup("gunicorn-worker")
def _gunicorn_worker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The worker class, given to gunicorn (``--worker-class block.ShakehandsWorker``),
    serving an app that accepts a WebSocket only from shakehands (skipped without gunicorn)."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed (the dev extra has it)")
    (tmp_path / "app.py").write_text(SHAKEHANDS_ONLY_APP, encoding="utf-8")
    port = free_port()
    yield Setup(
        command=["-m", "gunicorn", "--bind", f"{HOST}:{port}", "--workers", "1",
                 "--worker-class", "block.ShakehandsWorker", "app:app"],
        port=port,
    )  # fmt: skip


@contextlib.contextmanager
def tls_echo(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[int, queue.Queue[str | bytes], str]]:
    """A blocking echo server over TLS (the test certificate) that records what it received:
    its port, the messages, and the certificate's file (for ``SSL_CERT_FILE``)."""
    cert, key = request.getfixturevalue("certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    received: queue.Queue[str | bytes] = queue.Queue()

    def echo(ws: sync.ServerConnection) -> None:
        for message in ws:
            received.put(message)
            ws.send(message)

    with running(echo, ssl=context) as server:
        yield server.port, received, str(cert)


@contextlib.contextmanager
def h2_server(request: pytest.FixtureRequest) -> Iterator[tuple[int, queue.Queue[str], str]]:
    """A shakehands server over TLS with HTTP/2 (the test certificate), in a thread with its own
    loop: ``/feed`` says "news from the feed" first, every path echoes. It records the HTTP
    version of each WebSocket that arrived (``"2"``: an extended CONNECT stream). Yields its
    port, those versions, and the certificate's file (for ``SSL_CERT_FILE``)."""
    pytest.importorskip("h2", reason="the http2 extra (h2) is not installed")
    import asyncio

    cert, key = request.getfixturevalue("certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    versions: queue.Queue[str] = queue.Queue()
    ready: queue.Queue[int] = queue.Queue()
    loop = asyncio.new_event_loop()
    stopped = loop.create_future()

    async def handler(ws: Any) -> None:
        versions.put(str(ws.transport.get_extra_info("http_version") or "1.1"))
        if ws.request.path == "/feed":
            await ws.send("news from the feed")
        async for message in ws:
            await ws.send(message)

    async def serve() -> None:
        async with shakehands.serve(handler, HOST, 0, ssl=context, http2=True) as server:
            ready.put(server.port)
            await stopped

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=STARTUP_TIMEOUT), versions, str(cert)
    finally:
        loop.call_soon_threadsafe(lambda: stopped.done() or stopped.set_result(None))
        thread.join(15)
        loop.close()


@setup("h2")
def _h2(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """``wss://example.com/`` is a local shakehands server over TLS with HTTP/2; ``main()`` is
    run; every WebSocket the block opened must have arrived as an HTTP/2 stream."""
    with h2_server(request) as (port, versions, cert):
        yield Setup(
            replace={"wss://example.com/": f"wss://{HOST}:{port}/"},
            after="await main()\n",
            env={"SSL_CERT_FILE": cert},
        )
        seen = [versions.get(timeout=10)]
        while not versions.empty():
            seen.append(versions.get_nowait())
        assert seen and set(seen) == {"2"}, seen


@setup("socks-tor")
def _socks_tor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """``wss://example.com/`` through ``socks5h://127.0.0.1:9050``: a local TLS echo server
    through Dante."""
    with tls_echo(request) as (port, received, cert), danted(tmp_path) as proxy:
        yield Setup(
            replace={
                "wss://example.com/": f"wss://{HOST}:{port}/",
                "127.0.0.1:9050": f"{HOST}:{proxy.port}",
            },
            env={"SSL_CERT_FILE": cert},
        )
        assert received.get(timeout=10) == "through Tor"  # its handler may not be done yet


@setup("proxies")
def _proxies(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """``wss://example.com/feed`` is a local TLS echo server; ``proxy:3128`` tinyproxy with
    ``alice:s3cret`` (and ``https_proxy`` of the environment, with the credentials);
    ``127.0.0.1:9050`` Dante. Both tinyproxy lines go through it."""
    auth = ("alice", "s3cret")
    with (
        tls_echo(request) as (port, _, cert),
        tinyproxy(tmp_path, auth=auth) as http_proxy,
        danted(tmp_path) as socks_proxy,
    ):
        yield Setup(
            replace={
                "wss://example.com/": f"wss://{HOST}:{port}/",
                "proxy:3128": f"{HOST}:{http_proxy.port}",
                "127.0.0.1:9050": f"{HOST}:{socks_proxy.port}",
            },
            env={"https_proxy": http_proxy.url("alice:s3cret"), "SSL_CERT_FILE": cert},
        )
        assert http_proxy.log_text().count(f"CONNECT {HOST}:{port}") == 2


@setup("proxy-refuses")
def _proxy_refuses(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """``http://proxy:3128`` is a tinyproxy that wants credentials (407)."""
    with tinyproxy(tmp_path, auth=("alice", "s3cret")) as proxy:
        yield Setup(
            replace={"wss://example.com/": f"wss://{HOST}:{free_port()}/",
                     "proxy:3128": f"{HOST}:{proxy.port}"},
        )  # fmt: skip


@setup("tls")
def _tls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The test certificate for ``fullchain.pem`` and ``privkey.pem``, ``handler`` an echo,
    ``main()`` run; the check connects with ``wss://``, trusting the certificate, from the
    allowed origin."""
    cert, key = request.getfixturevalue("certificate")
    yield Setup(
        replace={"fullchain.pem": str(cert), "privkey.pem": str(key)},
        before=ECHO_HANDLER,
        after="await main()\n",
        scheme="wss",
        client={
            "ssl": ssl.create_default_context(cafile=str(cert)),
            "origin": "https://app.example.com",
        },
    )


# ---------------------------------------------------------------------------------------------
# Running blocks
# ---------------------------------------------------------------------------------------------


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the programs: this tree's shakehands first on the path, no proxy
    variable but those a setup gives."""
    source = str(Path(shakehands.__file__).resolve().parent.parent)
    paths = [source, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {name: value for name, value in os.environ.items() if name not in PROXY_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=environment(env),
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


def wait_for_websocket(process: subprocess.Popen[str], uri: str, **options: Any) -> None:
    """Open and close a WebSocket connection to ``uri`` once the program listens."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            out, err = stop(process)
            pytest.fail(f"the program exited with {process.returncode}:\n{out}\n{err}")
        try:
            with sync.connect(uri, open_timeout=10, **options) as ws:
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


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An echo server (the blocking API, in a thread) on a free port."""
    with running() as server:
        yield server.port


@pytest.fixture
def restarting_port() -> Iterator[int]:
    """A server that says ``hello N`` to its N-th connection, then closes it with 1012."""
    count = itertools.count(1)

    def restarting(ws: sync.ServerConnection) -> None:
        ws.send(f"hello {next(count)}")
        ws.close(1012, "restarting")

    with running(restarting) as server:
        yield server.port


@pytest.fixture
def redis_port(redis_server: RedisServer) -> int:
    """A real ``redis-server`` (the ``redis_server`` fixture: skips without one)."""
    return redis_server.port


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
    and "setup" not in block.options
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


#: Runs a fragment (top-level ``await``), or a block with a setup, the way it is meant to be
#: pasted: the setup's code before it, the block, the setup's code after it, in one namespace
#: where ``asyncio`` and ``shakehands`` are imported, on one event loop (a block that calls
#: ``asyncio.run`` itself still may). The value of the block's last expression is ``_``.
RUNNER = """\
import ast, asyncio, sys
import shakehands

def compiled(path, keep_last):
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    if keep_last and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        tree.body[-1] = ast.copy_location(
            ast.Assign(targets=[ast.Name("_", ast.Store())], value=last.value), last
        )
        ast.fix_missing_locations(tree)
    return compile(tree, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

namespace = {"__name__": "__main__", "asyncio": asyncio, "shakehands": shakehands}
with asyncio.Runner() as runner:
    for piece in ("before.py", "block.py", "after.py"):
        result = eval(compiled(piece, piece == "block.py"), namespace)
        if asyncio.iscoroutine(result):
            runner.run(result)
"""


def substitute(text: str, replace: dict[str, str]) -> str:
    for old, new in replace.items():
        text = re.sub(rf"\b{re.escape(old)}\b" if old.isdigit() else re.escape(old), new, text)
    return text


def run_until(process: subprocess.Popen[str], expected: str) -> tuple[str, str]:
    """The output of ``process`` until it ends, or until ``expected`` is in it (then the
    process is stopped)."""
    assert process.stdout is not None
    timer = threading.Timer(RUN_TIMEOUT, process.kill)
    timer.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if expected in "".join(lines):
                break
    finally:
        timer.cancel()
    out, err = stop(process)
    return "".join(lines) + out, err


@pytest.mark.parametrize("block", RUN, ids=lambda block: block.name)
def test_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    try:
        run_block(block, tmp_path, request)
    except pytest.skip.Exception as exc:
        if REQUIRED:
            pytest.fail(f"{block.name} did not run: {exc} (SHAKEHANDS_REQUIRE_DOCS=1)")
        raise


def run_block(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Run ``block`` as its mark says (see the module's docstring); fail if it does not do
    what the mark promises."""
    replace = {"0.0.0.0": HOST}
    for option, values in numbers(block).items():
        for number in values:
            port = request.getfixturevalue(PEERS[option]) if option in PEERS else free_port()
            replace[number] = str(port)
    with contextlib.ExitStack() as stack:
        given = Setup()
        if "setup" in block.options:
            given = stack.enter_context(SETUPS[block.options["setup"]](request, tmp_path))
        replace.update(given.replace)
        code = substitute(block.code, replace)
        program = tmp_path / "block.py"
        program.write_text(f"# {block.name}\n{code}", encoding="utf-8")
        if given.command is not None:
            process = start(given.command, tmp_path, given.env)
        elif has_top_level_await(code) or "setup" in block.options:
            (tmp_path / "before.py").write_text(substitute(given.before, replace), "utf-8")
            (tmp_path / "after.py").write_text(substitute(given.after, replace), "utf-8")
            (tmp_path / "runner.py").write_text(RUNNER, encoding="utf-8")
            process = start([str(tmp_path / "runner.py")], tmp_path, given.env)
        else:
            process = start([str(program)], tmp_path, given.env)
        if block.mode == "server":
            assert "port" in block.options or given.port, f"{block.name}: a server needs port=N"
            port = given.port or int(replace[numbers(block)["port"][0]])
            uri = f"{given.scheme}://{HOST}:{port}{block.options.get('path', '/')}"
            try:
                wait_for_websocket(process, uri, **given.client)
            finally:
                stop(process)
        elif "expect" in block.options:
            out, err = run_until(process, block.options["expect"])
            assert block.options["expect"] in out, f"{block.name} did not print it:\n{out}\n{err}"
            assert process.returncode in (0, -15), f"{block.name} failed:\n{err}"
            assert "Traceback" not in err, f"{block.name}:\n{err}"
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
