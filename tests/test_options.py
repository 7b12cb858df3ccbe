"""Every option reaches every front end where it applies, and README's table says so.

The options are defined once (:mod:`shakehands.protocol.config`); each front end maps its
keyword arguments onto that definition. For each option and each front end that the README's
table marks with ✓, a non-default value given to the front end must be the value its
connections use; the table's default must be the definition's default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import DeflateOptions, Request, Response, sync
from shakehands.protocol.config import ClientConfig, ServerConfig

from .helpers import HOST, run_mypy

ROOT = Path(__file__).resolve().parent.parent
FRONT_ENDS = ["serve", "serve_callbacks", "sync.serve", "connect"]


def _process_request(request: Request) -> Response | None:
    return None


def _select_subprotocol(request: Request, offered: Any) -> str | None:
    return None


#: A valid value other than the default, for every option.
SAMPLES: dict[str, Any] = {
    "max_message_size": 12_345,
    "max_frame_size": 999,
    "max_queue": 7,
    "write_limit": 4096,
    "ping_interval": 11.0,
    "ping_timeout": 12.0,
    "open_timeout": 13.0,
    "close_timeout": 14.0,
    "compression": None,
    "process_request": _process_request,
    "origins": ("https://a.test", None),
    "subprotocols": ("chat",),
    "select_subprotocol": _select_subprotocol,
    "max_line": 4000,
    "max_headers": 50,
    "max_header_bytes": 4000,
    "max_connections": 9,
    "legacy_hixie76": True,
    "http2": False,
    "http2_max_streams": 10,
    "origin": "https://a.test",
    "extra_headers": {"X-A": "1"},
    "max_redirects": 3,
    "backoff_initial_delay": 0.5,
    "backoff_factor": 2.0,
    "backoff_max_delay": 5.0,
    "proxy": None,
}


def options_table() -> dict[str, dict[str, str]]:
    """README's options table: option -> column -> cell."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Options and their defaults") :]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip().strip("`") for cell in lines[0].strip("|").split("|")]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        name = cells[0].strip("`")
        rows[name] = dict(zip(header, cells, strict=True))
    return rows


TABLE = options_table()


def applies(option: str, front_end: str) -> bool:
    column = "connect`, `sync.connect" if front_end == "connect" else front_end
    cell = TABLE[option][column]
    assert cell in ("✓", "–"), (option, front_end, cell)
    return cell == "✓"


def cases() -> Iterator[Any]:
    for option in SAMPLES:
        for front_end in FRONT_ENDS:
            if option in TABLE and applies(option, front_end):
                yield pytest.param(option, front_end, id=f"{front_end}-{option}")


def test_every_option_is_in_the_table_with_its_default() -> None:
    defined = {f.name: f for f in dataclasses.fields(ServerConfig)}
    defined.update({f.name: f for f in dataclasses.fields(ClientConfig)})
    assert set(TABLE) == set(defined) == set(SAMPLES)
    for name, definition in defined.items():
        default = (
            definition.default_factory()  # type: ignore[misc]
            if definition.default_factory is not dataclasses.MISSING
            else definition.default
        )
        literal = re.match(r"`([^`]*)`", TABLE[name]["default"])
        assert literal is not None, name
        value = eval(literal.group(1), {})  # noqa: S307 - README's own literals
        if name == "compression":
            assert value == "deflate" and default == DeflateOptions()
        else:
            assert value == default, name


def test_every_option_applies_somewhere() -> None:
    for option in TABLE:
        assert any(applies(option, front_end) for front_end in FRONT_ENDS), option


async def _noop(ws: Any) -> None:
    await ws.wait_closed()


def _config_of(front_end: str, option: str, value: Any) -> Any:
    """The config that a connection of ``front_end`` uses when given ``option=value``."""
    options = {option: value}
    if front_end == "serve":
        return _asyncio_server_config(lambda: shakehands.serve(_noop, HOST, 0, **options))
    if front_end == "serve_callbacks":
        return _asyncio_server_config(
            lambda: shakehands.serve_callbacks(shakehands.Listener(), HOST, 0, **options)
        )
    if front_end == "sync.serve":
        with sync.serve(lambda ws: None, HOST, 0, **options) as server:
            return server.config
    assert front_end == "connect"
    return _client_configs(options)


def _asyncio_server_config(start: Any) -> Any:
    async def main() -> Any:
        async with start() as server:
            return server.config

    return asyncio.run(main())


def _client_configs(options: dict[str, Any]) -> Any:
    """The configs of an asyncio client and of a blocking one, both given ``options``."""
    if "compression" in options:
        pass  # both sides must agree only if it is negotiated; None is fine with any server
    with sync.serve(lambda ws: ws.recv(), HOST, 0, subprotocols=["chat"]) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            uri = f"ws://{HOST}:{server.port}/"

            async def main() -> Any:
                async with shakehands.connect(uri, **options) as ws:
                    return ws.config

            asyncio_config = asyncio.run(main())
            with sync.connect(uri, **options) as ws:
                sync_config = ws.config
        finally:
            server.shutdown()
            thread.join(10)
    assert asyncio_config == sync_config
    return asyncio_config


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("option", "front_end"), list(cases()))
def test_front_end_applies_option(option: str, front_end: str) -> None:
    value = SAMPLES[option]
    config = _config_of(front_end, option, value)
    got = getattr(config, option)
    if isinstance(value, dict):
        assert dict(got) == value
    else:
        assert got == value


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_misspelt_option_is_a_type_error_naming_it(front_end: str) -> None:
    with pytest.raises(TypeError, match="max_mesage_size"):
        _config_of(front_end, "max_mesage_size", 1)


@pytest.mark.timeout(120)
def test_mypy_catches_a_misspelt_option(tmp_path: Path) -> None:
    program = tmp_path / "misspelt.py"
    program.write_text(
        "import shakehands\n"
        "from shakehands import sync\n"
        "async def handler(ws: shakehands.ServerConnection) -> None: ...\n"
        "shakehands.serve(handler, max_mesage_size=1)\n"
        "shakehands.serve_callbacks(shakehands.Listener(), ping_intervall=1)\n"
        "shakehands.connect('ws://x/', orign='o')\n"
        "sync.serve(lambda ws: None, close_timout=1)\n"
        "sync.connect('ws://x/', max_queu=1)\n"
        "shakehands.serve(handler, max_queue='many')\n"
        "shakehands.unix_connect('/s', proxy=None)\n"
        "sync.reconnect('ws://x/', max_redirect=1)\n"
    )
    result = run_mypy(program, Path(shakehands.__file__).resolve().parent.parent)
    misspelt = ("max_mesage_size", "ping_intervall", "orign", "close_timout", "max_queu")
    # proxy: not an option of unix_connect (a Unix domain socket is reached directly).
    for name in (*misspelt, "max_redirect", "proxy"):
        assert f'"{name}"' in result.stdout, (name, result.stdout)
    assert 'Argument "max_queue"' in result.stdout, result.stdout


@pytest.mark.parametrize(
    "function",
    [shakehands.serve, shakehands.serve_callbacks, sync.serve, shakehands.connect, sync.connect],
    ids=lambda f: f"{f.__module__}.{f.__qualname__}",
)
def test_front_ends_do_not_restate_defaults(function: Any) -> None:
    """A default is written once, in the configuration (and the README's table, checked above):
    the front ends' docstrings describe options without quoting their defaults again."""
    options = {f.name for f in dataclasses.fields(ServerConfig)} | {
        f.name for f in dataclasses.fields(ClientConfig)
    }
    # The Args entries of options: "name[, name]: text", with its indented continuation lines.
    entries = re.findall(r"^ {8}([\w, ]+): (.*(?:\n {12}.*)*)", function.__doc__ or "", re.M)
    for names, text in entries:
        if not {n.strip() for n in names.split(",")} & options:
            continue
        quoted = re.findall(r"\(\d+(?:\.\d+)?(?: ?[KM]iB| s)?[);]|by default|\(default", text)
        assert not quoted, (names, quoted)


def _client_front_ends() -> Iterator[Any]:
    """Every client entry point, called without any I/O happening before validation."""
    yield pytest.param(lambda **o: shakehands.connect("ws://example.com/", **o), id="connect")
    yield pytest.param(
        lambda **o: shakehands.unix_connect("/nonexistent.sock", **o), id="unix_connect"
    )
    yield pytest.param(lambda **o: sync.connect("ws://example.com/", **o), id="sync.connect")
    yield pytest.param(
        lambda **o: sync.unix_connect("/nonexistent.sock", **o), id="sync.unix_connect"
    )
    yield pytest.param(lambda **o: sync.reconnect("ws://example.com/", **o), id="sync.reconnect")


@pytest.mark.parametrize("open_client", list(_client_front_ends()))
@pytest.mark.parametrize(
    "options",
    [
        {"max_redirects": -1},
        {"max_redirects": "3"},
        {"backoff_factor": 0.5},
        {"backoff_initial_delay": 0},
        {"backoff_max_delay": True},
        {"max_queue": 0},
    ],
    ids=repr,
)
def test_client_front_ends_validate_through_the_config(
    open_client: Any, options: dict[str, Any]
) -> None:
    """Each client front end maps its keyword arguments onto ClientConfig: a bad value fails
    before any I/O with the configuration's own error, not one of the front end's."""
    with pytest.raises((TypeError, ValueError)) as expected:
        ClientConfig(**options)
    with pytest.raises(type(expected.value)) as got:
        open_client(**options)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("open_client", list(_client_front_ends())[::2])
def test_a_bad_proxy_url_fails_before_any_io(open_client: Any) -> None:
    with pytest.raises(ValueError, match="unsupported proxy scheme"):
        open_client(proxy="ftp://proxy.test:21")


@pytest.mark.parametrize("open_client", list(_client_front_ends())[1:4:2])
def test_unix_clients_refuse_a_proxy(open_client: Any) -> None:
    with pytest.raises(TypeError, match="proxy does not apply to a Unix domain socket"):
        open_client(proxy=None)
