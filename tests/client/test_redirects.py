"""Redirects (issue 15, item 3): 301, 302, 303, 307 and 308 are followed, relative or absolute,
up to ``max_redirects`` (10; 0 follows none); never from wss:// to ws://; loops are errors; the
connection's ``uri`` is the last one. The servers are shakehands servers whose
``process_request`` answers with the redirects."""

from __future__ import annotations

import logging
import ssl

import pytest

import shakehands
from shakehands import (
    InsecureRedirect,
    InvalidStatus,
    RedirectError,
    RedirectLoop,
    Response,
    TLSVerificationError,
    TooManyRedirects,
)

from ..helpers import HOST
from .client_helpers import routes
from .conftest import Client

pytestmark = pytest.mark.timeout(60)


async def greet(ws: shakehands.ServerConnection) -> None:
    assert ws.request is not None
    await ws.send(ws.request.path)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_relative_redirect(client: Client, status: int) -> None:
    table = {"/old": Response(status, {"Location": "/new?x=1"})}
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        opened = await client.open(f"ws://{HOST}:{server.port}/old", recv=True)
        assert opened.uri == f"ws://{HOST}:{server.port}/new?x=1"
    assert opened.received == "/new"
    assert opened.request.target == "/new?x=1"


async def test_absolute_redirect_to_another_server(client: Client) -> None:
    async with shakehands.serve(greet, HOST, 0) as target:
        # http:// in Location means ws:// (a web server's redirect).
        there = f"http://localhost:{target.port}/there"
        table = {"/": Response(301, {"Location": there})}
        async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
            opened = await client.open(f"ws://{HOST}:{server.port}/", recv=True)
        assert opened.uri == f"ws://localhost:{target.port}/there"
        assert opened.request.headers["Host"] == f"localhost:{target.port}"
    assert opened.received == "/there"


async def test_chain_of_redirects_is_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    table = {f"/{n}": Response(302, {"Location": f"/{n + 1}"}) for n in range(3)}
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        port = server.port
        with caplog.at_level(logging.INFO, logger="shakehands.client"):
            opened = await client.open(f"ws://{HOST}:{port}/0", recv=True)
    assert opened.received == "/3"
    redirects = [r.getMessage() for r in caplog.records if "redirected" in r.getMessage()]
    assert redirects == [f"HTTP 302: redirected to ws://{HOST}:{port}/{n}" for n in (1, 2, 3)]


async def test_too_many_redirects(client: Client) -> None:
    table = {f"/{n}": Response(302, {"Location": f"/{n + 1}"}) for n in range(20)}
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        with pytest.raises(TooManyRedirects) as caught:
            await client.open(f"ws://{HOST}:{server.port}/0")
        assert str(caught.value).startswith("more than 10 redirects")
        with pytest.raises(TooManyRedirects, match="more than 2 redirects"):
            await client.open(f"ws://{HOST}:{server.port}/0", max_redirects=2)
        opened = await client.open(f"ws://{HOST}:{server.port}/17", max_redirects=3, recv=True)
        assert opened.received == "/20"


async def test_max_redirects_zero_follows_none(client: Client) -> None:
    table = {"/": Response(302, {"Location": "/elsewhere"})}
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        with pytest.raises(InvalidStatus) as caught:
            await client.open(f"ws://{HOST}:{server.port}/", max_redirects=0)
    assert type(caught.value) is InvalidStatus
    assert caught.value.response.status == 302
    assert caught.value.response.headers["Location"] == "/elsewhere"


async def test_redirect_loop(client: Client) -> None:
    table = {
        "/a": Response(302, {"Location": "/b"}),
        "/b": Response(307, {"Location": "/a"}),
    }
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        port = server.port
        with pytest.raises(RedirectLoop) as caught:
            await client.open(f"ws://{HOST}:{port}/a")
    assert str(caught.value) == (
        f"redirect loop: ws://{HOST}:{port}/b redirects (HTTP 307) to "
        f"ws://{HOST}:{port}/a, requested already"
    )
    assert isinstance(caught.value, TooManyRedirects)


async def test_redirect_to_itself(client: Client) -> None:
    table = {"/": Response(308, {"Location": "/"})}
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        with pytest.raises(RedirectLoop):
            await client.open(f"ws://{HOST}:{server.port}/")


async def test_redirect_without_location(client: Client) -> None:
    table = {"/": Response(302)}
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        with pytest.raises(RedirectError, match="HTTP 302 redirect without a Location header"):
            await client.open(f"ws://{HOST}:{server.port}/")


async def test_redirect_to_another_scheme(client: Client) -> None:
    table = {"/": Response(302, {"Location": "ftp://example.com/"})}
    async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as server:
        with pytest.raises(RedirectError, match="not a WebSocket URI"):
            await client.open(f"ws://{HOST}:{server.port}/")


async def test_wss_never_downgraded_to_ws(
    client: Client, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with shakehands.serve(greet, HOST, 0) as plain:
        table = {"/": Response(301, {"Location": f"ws://{HOST}:{plain.port}/"})}
        async with shakehands.serve(
            greet, HOST, 0, ssl=server_context, process_request=routes(table)
        ) as secure:
            with pytest.raises(InsecureRedirect) as caught:
                await client.open(f"wss://{HOST}:{secure.port}/", ssl=client_context)
    assert "refusing to downgrade wss:// to ws://" in str(caught.value)


async def test_ws_upgraded_to_wss(client: Client, server_context: ssl.SSLContext) -> None:
    async with shakehands.serve(greet, HOST, 0, ssl=server_context) as secure:
        table = {"/": Response(301, {"Location": f"wss://{HOST}:{secure.port}/"})}
        async with shakehands.serve(greet, HOST, 0, process_request=routes(table)) as plain:
            # The redirect to wss:// runs TLS with the system's trust store, which rejects the
            # test's self-signed certificate: the error proves that TLS ran.
            with pytest.raises(TLSVerificationError):
                await client.open(f"ws://{HOST}:{plain.port}/")
