"""``user:password@`` in a client URI sends ``Authorization: Basic`` (issue 15, item 5, client
side), checked by a real shakehands server's ``process_request``."""

from __future__ import annotations

import base64
import logging

import pytest

import shakehands
from shakehands import InvalidStatus, Request, Response

from ..helpers import HOST
from .client_helpers import routes
from .conftest import Client

pytestmark = pytest.mark.timeout(60)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def require(user: str, password: str) -> shakehands.protocol.config.ProcessRequest:
    def process_request(request: Request) -> Response | None:
        if request.headers.get("Authorization") != basic(user, password):
            return Response(401, {"WWW-Authenticate": 'Basic realm="test"'}, "who are you?")
        return None

    return process_request


async def whoami(ws: shakehands.ServerConnection) -> None:
    assert ws.request is not None
    await ws.send(ws.request.headers.get("Authorization") or "")


async def test_credentials_in_uri(client: Client) -> None:
    async with shakehands.serve(whoami, HOST, 0, process_request=require("alice", "s3cret")) as s:
        port = s.port
        opened = await client.open(f"ws://alice:s3cret@{HOST}:{port}/", recv=True)
    assert opened.received == basic("alice", "s3cret")
    # The credentials are not in the Host header.
    assert opened.request.headers["Host"] == f"{HOST}:{port}"


async def test_percent_encoded_credentials(client: Client) -> None:
    # "@", ":" and non-ASCII characters are percent-encoded in a URI; the header has them
    # decoded (UTF-8, RFC 7617).
    password = "p@ss:wörd"
    server = shakehands.serve(whoami, HOST, 0, process_request=require("bob@home", password))
    async with server as s:
        uri = f"ws://bob%40home:p%40ss%3Aw%C3%B6rd@{HOST}:{s.port}/"
        opened = await client.open(uri, recv=True)
    assert opened.received == basic("bob@home", password)


async def test_wrong_password_is_a_401(client: Client) -> None:
    async with shakehands.serve(whoami, HOST, 0, process_request=require("alice", "s3cret")) as s:
        with pytest.raises(InvalidStatus) as caught:
            await client.open(f"ws://alice:guess@{HOST}:{s.port}/")
    assert caught.value.response.status == 401
    assert caught.value.response.headers["WWW-Authenticate"] == 'Basic realm="test"'


async def test_extra_headers_authorization_wins(client: Client) -> None:
    async with shakehands.serve(whoami, HOST, 0) as s:
        opened = await client.open(
            f"ws://alice:s3cret@{HOST}:{s.port}/",
            extra_headers={"Authorization": "Bearer token"},
            recv=True,
        )
    assert opened.received == "Bearer token"
    assert opened.request.headers.get_all("Authorization") == ["Bearer token"]


async def test_credentials_kept_on_same_origin_redirect(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    table = {"/old": Response(302, {"Location": "/new"})}

    def process_request(request: Request) -> Response | None:
        return routes(table)(request) or require("alice", "s3cret")(request)

    async with shakehands.serve(whoami, HOST, 0, process_request=process_request) as s:
        port = s.port
        with caplog.at_level(logging.INFO, logger="shakehands.client"):
            opened = await client.open(f"ws://alice:s3cret@{HOST}:{port}/old", recv=True)
    assert opened.received == basic("alice", "s3cret")
    assert opened.uri == f"ws://alice:s3cret@{HOST}:{port}/new"
    # Logs never show the password.
    assert "s3cret" not in caplog.text
    assert f"redirected to ws://alice:***@{HOST}:{port}/new" in caplog.text


async def test_credentials_dropped_on_redirect_to_another_host(client: Client) -> None:
    async with shakehands.serve(whoami, HOST, 0) as target:
        table = {"/": Response(302, {"Location": f"ws://localhost:{target.port}/"})}
        async with shakehands.serve(whoami, HOST, 0, process_request=routes(table)) as s:
            opened = await client.open(f"ws://alice:s3cret@{HOST}:{s.port}/", recv=True)
    assert opened.received == ""
