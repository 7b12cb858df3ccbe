"""Inspect the request before answering (the seed's getRequest / putResponse).

Only ``/chat`` upgrades, only from one origin; ``/health`` answers plain HTTP.
Run: ``python examples/filtering_server.py``.
"""

import asyncio
from http import HTTPStatus

import shakehands
from shakehands import Request, Response


def process_request(request: Request) -> Response | None:
    if request.path == "/health":
        return Response(HTTPStatus.OK, body=b"OK\n")
    if request.path != "/chat":
        return Response(HTTPStatus.NOT_FOUND, body=b"no such endpoint\n")
    if "token=secret" not in request.query:
        return Response(HTTPStatus.FORBIDDEN, body=b"bad token\n")
    return None  # go on with the WebSocket handshake


async def handler(ws: shakehands.ServerConnection) -> None:
    assert ws.request is not None
    await ws.send(f"hello {ws.request.remote_address[0]}, you speak {ws.subprotocol}")
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    async with shakehands.serve(
        handler,
        "127.0.0.1",
        8766,
        process_request=process_request,
        origins=["http://127.0.0.1:8766", None],  # None: allow clients that send no Origin
        subprotocols=["chat.v1"],
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
