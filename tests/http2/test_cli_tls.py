"""The command line with ``--certfile`` / ``--keyfile``: ``https://`` and ``wss://``, HTTP/2 on
by default (``--no-http2`` to keep to HTTP/1.1), for the demo, echo and chat commands.

Real ``python -m shakehands`` subprocesses on free ports of 127.0.0.1 (the ``cli`` fixture of
tests/test_cli.py), talked to over TLS with ``h2`` and with shakehands' client.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

import shakehands
from shakehands.demo import MEOW, WELCOME

from ..helpers import HOST
from ..test_cli import CLI, _start_listening
from ..test_cli import cli as cli  # noqa: PLC0414 - the fixture, under its own name
from .h2_helpers import h2_client

pytestmark = pytest.mark.timeout(90)


def tls_args(certificate: tuple[Path, Path]) -> list[str]:
    return ["--certfile", str(certificate[0]), "--keyfile", str(certificate[1])]


def test_echo_over_http2_and_http11(
    cli: Callable[..., CLI], certificate: tuple[Path, Path]
) -> None:
    process, port = _start_listening(
        cli,
        lambda port: ["echo", "--port", str(port), *tls_args(certificate)],
        lambda port: f"Echo server (coroutine API) listening on {HOST}:{port}.",
    )
    lines = process.wait_until(lambda lines: len(lines) >= 2, 10)
    assert lines is not None and lines[1] == f"TLS: https://{HOST}:{port}/ and wss://, HTTP/2 on."

    async def main() -> None:
        async with h2_client(port, certificate) as client:
            stream = client.websocket()
            await client.accepted(stream)
            client.send_text(stream, "over h2")
            assert await client.message(stream) == "over h2"
        context = ssl.create_default_context(cafile=str(certificate[0]))
        async with shakehands.connect(f"wss://localhost:{port}/", ssl=context) as ws:
            await ws.send("over 1.1")
            assert await ws.recv() == "over 1.1"

    asyncio.run(main())


def test_demo_page_and_websocket_over_http2(
    cli: Callable[..., CLI], certificate: tuple[Path, Path]
) -> None:
    process, port = _start_listening(
        cli,
        lambda port: ["--port", str(port), *tls_args(certificate)],
        lambda port: f"Listening on port {port}.",
    )

    async def main() -> None:
        async with h2_client(port, certificate) as client:
            page = client.request("GET", "/")
            await client.wait(page, lambda s: s.ended)
            assert page.status == 200
            assert b"<html" in bytes(page.data).lower()
            stream = client.websocket()
            await client.accepted(stream)
            assert await client.message(stream) == WELCOME
            client.send_text(stream, "hi")
            assert await client.message(stream) == "hi" + MEOW

    asyncio.run(main())


def test_no_http2_keeps_to_http11(cli: Callable[..., CLI], certificate: tuple[Path, Path]) -> None:
    # The chat banner ends with a process id: read the port from it (--port 0: a free one).
    process = cli("chat", "--port", "0", *tls_args(certificate), "--no-http2")
    lines = process.wait_until(lambda lines: len(lines) >= 2, 15)
    assert lines is not None, process.describe()
    assert lines[0].startswith("Chat server on https://"), lines
    assert lines[1].endswith("HTTP/2 off."), lines
    port = int(lines[0].split(":")[2].split("/")[0])

    async def main() -> None:
        context = ssl.create_default_context(cafile=str(certificate[0]))
        context.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=context, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        writer.close()
        await writer.wait_closed()

    asyncio.run(main())


@pytest.mark.parametrize(
    "args",
    [["--keyfile", "key.pem"], ["--no-http2"], ["echo", "--no-http2"]],
    ids=["keyfile-alone", "no-http2-alone", "echo-no-http2-alone"],
)
def test_tls_options_without_certfile_are_a_usage_error(
    cli: Callable[..., CLI], args: list[str]
) -> None:
    process = cli(*args)
    assert process.wait() == 2
    assert "go with --certfile" in process.stderr


def test_a_missing_certificate_is_an_error(cli: Callable[..., CLI], tmp_path: Path) -> None:
    process = cli("echo", "--port", "0", "--certfile", str(tmp_path / "nope.pem"))
    assert process.wait() == 1
    assert "Traceback" not in process.stderr
    assert process.stderr.startswith("shakehands: ")
