"""A FastAPI echo endpoint served by uvicorn with shakehands as its WebSocket implementation.

Run it with ``python examples/fastapi_echo.py [--port 8000]`` (needs ``pip install
'shakehands[asgi]' fastapi``), or with uvicorn's command line::

    uvicorn examples.fastapi_echo:app --ws shakehands.asgi:UvicornWebSocket

then talk to ``ws://127.0.0.1:8000/ws`` (``python -m shakehands.client`` style clients,
``examples/client.py``, or a browser's ``new WebSocket(...)``). Subprotocol ``"echo"`` is accepted
when offered; ``/ws?token=...`` with a wrong token is refused with a 403 and a body, through the
ASGI WebSocket Denial Response extension.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.websocket("/ws")
async def echo(websocket: WebSocket, token: str | None = None) -> None:
    if token is not None and token != "secret":
        await websocket.send_denial_response(PlainTextResponse("bad token", status_code=403))
        return
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol="echo" if "echo" in offered else None)
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


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, ws="shakehands.asgi:UvicornWebSocket")


if __name__ == "__main__":
    main()
