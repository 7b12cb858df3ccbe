"""The seed's demo, as its users knew it: greet every client, echo with ", MEOW!" appended.

A WebSocket client first receives 滴水之恩当以涌泉相报, then every text message comes back with
``, MEOW!`` appended (binary: the bytes plus the UTF-8 bytes of ``, MEOW!``). A plain HTTP GET
of ``/`` gets a page that opens a WebSocket to this server: the seed's request inspection
(``getRequest``) used for real, through :func:`process_request`.
"""

from __future__ import annotations

from http import HTTPStatus

from .asyncio.server import ServerConnection
from .protocol.handshake import Headers, Request, Response
from .static import page

__all__ = ["WELCOME", "MEOW", "meow", "process_request", "PAGE"]

#: The first message every client receives, as in the seed ("a drop of water given in need is
#: repaid with a gushing spring").
WELCOME = "滴水之恩当以涌泉相报"
#: What every message comes back with, appended (as UTF-8 bytes to a binary message).
MEOW = ", MEOW!"

#: The page served on a plain GET (``static/demo.html``).
PAGE = page("demo.html")


def process_request(request: Request) -> Response | None:
    """Serve the page on a plain GET of ``/``; let WebSocket upgrades through."""
    if request.is_upgrade:
        return None
    if request.method == "GET" and request.path == "/":
        headers = Headers([("Content-Type", "text/html; charset=utf-8")])
        return Response(HTTPStatus.OK, headers, PAGE.encode("utf-8"))
    if request.method == "GET":
        return Response(
            HTTPStatus.NOT_FOUND,
            Headers([("Content-Type", "text/plain; charset=utf-8")]),
            b"Not Found\n",
        )
    return None


async def meow(ws: ServerConnection) -> None:
    """The seed's ``talkTo``: welcome, then echo every message with ``, MEOW!``."""
    await ws.send(WELCOME)
    print("Shook hands, sent welcome message.", flush=True)
    try:
        async for message in ws:
            if isinstance(message, str):
                await ws.send(message + MEOW)
            else:
                await ws.send(message + MEOW.encode("utf-8"))
    finally:
        print("Client quit, closed handle.", flush=True)
