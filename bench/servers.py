"""Echo servers for the benchmark: shakehands' APIs, every peer, and the raw TCP ceilings.

``python -m bench.servers NAME --port PORT [--loop asyncio|uvloop]`` runs one until killed.
Every WebSocket server is configured the same way, so that the comparison is fair: no
compression, no message size limit, no keepalive pings, binary messages echoed as binary.
The ``shakehands-callback-deflate`` variant runs the default configuration (permessage-deflate
on) and is only used to measure what compression costs in memory per idle connection.

Two ceilings echo raw TCP (no WebSocket at all): ``raw-tcp``, an asyncio protocol (what a
Python server cannot beat), and ``c-echo``, bench/c_echo.c on epoll (what no server on this
machine can beat; it takes no ``--loop``).

The harness (bench/run.py) starts every server at once, each pinned to the server core with
``taskset``, and measures them in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"

#: name -> whether the server runs on an asyncio event loop (False: threads, no --loop).
SERVERS: dict[str, bool] = {}
_FACTORIES: dict[str, Callable[[int], Any]] = {}


def server(name: str, *, uses_loop: bool = True) -> Callable[[Callable[[int], Any]], Any]:
    def register(func: Callable[[int], Any]) -> Callable[[int], Any]:
        SERVERS[name] = uses_loop
        _FACTORIES[name] = func
        return func

    return register


async def _forever() -> None:
    await asyncio.Event().wait()


# --------------------------------------------------------------------------------------------
# shakehands
# --------------------------------------------------------------------------------------------

FAIR = {"compression": None, "max_message_size": None, "ping_interval": None}


@server("shakehands-callback")
async def shakehands_callback(port: int, **extra: Any) -> None:
    from shakehands.asyncio.callback import Listener, serve_callbacks

    class Echo(Listener):
        def on_message(self, ws: Any, message: str | bytes) -> None:
            ws.send(message)

    options = {**FAIR, **extra}
    async with serve_callbacks(Echo(), HOST, port, **options):
        await _forever()


@server("shakehands-callback-deflate")
async def shakehands_callback_deflate(port: int) -> None:
    # The default configuration: permessage-deflate on (used for the idle-memory row only).
    await shakehands_callback(port, compression="deflate")


@server("shakehands-callback-keepalive")
async def shakehands_callback_keepalive(port: int) -> None:
    # Keepalive pings at their default (20 s), compression off: the idle-memory cost of the
    # keepalive timers (used for idle memory only).
    from shakehands.protocol.config import Config

    await shakehands_callback(port, ping_interval=Config().ping_interval)


@server("shakehands-coroutine")
async def shakehands_coroutine(port: int) -> None:
    from shakehands.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, HOST, port, **FAIR):
        await _forever()


@server("shakehands-sync", uses_loop=False)
def shakehands_sync(port: int) -> None:
    # The blocking API: a thread per connection, like websockets' sync server below.
    from shakehands.sync import serve

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    with serve(echo, HOST, port, **FAIR) as srv:
        srv.serve_forever()


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------


@server("picows")
async def picows_server(port: int) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)

    srv = await ws_create_server(
        lambda _request: Echo(), HOST, port, max_frame_size=2**31, enable_auto_ping=False
    )
    async with srv:
        await _forever()


@server("aiohttp")
async def aiohttp_server(port: int) -> None:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=0, heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    await _forever()


@server("websockets")
async def websockets_server(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, HOST, port, compression=None, max_size=None, ping_interval=None):
        await _forever()


@server("websockets-sync", uses_loop=False)
def websockets_sync_server(port: int) -> None:
    from websockets.sync.server import serve

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    with serve(echo, HOST, port, compression=None, max_size=None) as srv:
        srv.serve_forever()


@server("wsproto")
async def wsproto_server(port: int) -> None:
    # wsproto is sans-I/O: this is the thin asyncio.Protocol its documentation suggests.
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Message,
        Ping,
        Request,
        TextMessage,
    )

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.ws = WSConnection(ConnectionType.SERVER)

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            ws.receive_data(data)
            out = []
            close = False
            for event in ws.events():
                if isinstance(event, BytesMessage | TextMessage):
                    out.append(
                        ws.send(Message(data=event.data, message_finished=event.message_finished))
                    )
                elif isinstance(event, Request):
                    out.append(ws.send(AcceptConnection()))
                elif isinstance(event, Ping):
                    out.append(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    out.append(ws.send(event.response()))
                    close = True
            if out:
                self.transport.write(b"".join(out))
            if close:
                self.transport.close()

        def eof_received(self) -> None:
            self.transport.close()

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, HOST, port)
    async with srv:
        await _forever()


@server("tornado")
async def tornado_server(port: int) -> None:
    import tornado.web
    import tornado.websocket

    class Echo(tornado.websocket.WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.write_message(message, binary=isinstance(message, bytes))

    app = tornado.web.Application(
        [("/", Echo)], websocket_max_message_size=2**31, websocket_ping_interval=None
    )
    app.listen(port, HOST)
    await _forever()


# --------------------------------------------------------------------------------------------
# The ceilings: TCP echo, no WebSocket work at all
# --------------------------------------------------------------------------------------------


@server("raw-tcp")
async def raw_tcp_server(port: int) -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, HOST, port)
    async with srv:
        await _forever()


@server("c-echo", uses_loop=False)
def c_echo_server(port: int) -> None:
    # The physical ceiling: bench/c_echo.c, a raw TCP echo in C on epoll (no interpreter at all).
    # The process becomes the C program (same PID: the harness reads its /proc entries).
    import os

    from bench.run import build_c

    binary = build_c("c_echo")
    os.execv(binary, [str(binary), str(port)])


# --------------------------------------------------------------------------------------------
# ASGI: a Starlette echo endpoint under uvicorn, with each WebSocket implementation (bench/asgi.py)
# --------------------------------------------------------------------------------------------


async def _uvicorn_echo(port: int, ws: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])

    app = Starlette(routes=[WebSocketRoute("/", echo)])
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        ws=ws,
        # The FAIR settings: no compression, no size limit (uvicorn needs a number), no pings.
        ws_per_message_deflate=False,
        ws_max_size=2**31,
        ws_ping_interval=None,
        loop="none",  # the loop bench.servers started (asyncio or uvloop)
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    await uvicorn.Server(config).serve()


@server("uvicorn-shakehands")
async def uvicorn_shakehands(port: int) -> None:
    await _uvicorn_echo(port, "shakehands.asgi:UvicornWebSocket")


@server("uvicorn-websockets-sansio")
async def uvicorn_websockets_sansio(port: int) -> None:
    await _uvicorn_echo(port, "websockets-sansio")


@server("uvicorn-wsproto")
async def uvicorn_wsproto(port: int) -> None:
    await _uvicorn_echo(port, "wsproto")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = _FACTORIES[args.name]
    if not SERVERS[args.name]:
        factory(args.port)
        return
    if args.loop == "uvloop":
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    else:
        runner = asyncio.run
    try:
        runner(factory(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
