"""A Starlette echo endpoint under uvicorn with shakehands as the WebSocket implementation, as an
Autobahn|Testsuite testee (``wstest -m fuzzingclient``).

    python conformance/uvicorn_testee.py --port 9002

Every text or binary message comes back as it came; permessage-deflate is on (uvicorn's
default); the message size limit is raised to 64 MiB (the 9.x cases send 16 MiB) and keepalive
pings are off (the suite would see them as unexpected frames), as for the other server agents.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[WebSocketRoute("/", echo)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument(
        "--ws",
        default="shakehands.asgi:UvicornWebSocket",
        help="uvicorn's --ws (another implementation, to compare)",
    )
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        ws=args.ws,
        ws_max_size=2**26,
        ws_ping_interval=None,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
