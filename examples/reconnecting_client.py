"""A client that survives server restarts: ``async for ws in shakehands.connect(uri)``.

``python examples/reconnecting_client.py ws://127.0.0.1:12345/`` prints what any server sends
(try the demo, ``python -m shakehands``); stop and start that server: the client connects again,
waiting longer after each refusal (exponential backoff with jitter). Ctrl-C to stop.

``python examples/reconnecting_client.py --demo`` runs a server of its own, stops and restarts
it twice on the same port, and exits once the client has heard from all three servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import shakehands


async def listen(uri: str, messages: asyncio.Queue[str] | None = None) -> None:
    """Print every message from ``uri``, reconnecting whenever the connection is lost."""
    async for ws in shakehands.connect(uri, backoff_initial_delay=0.1, backoff_max_delay=5.0):
        try:
            async for message in ws:
                print(f"received: {message}")
                if messages is not None:
                    messages.put_nowait(str(message))
        except shakehands.ConnectionClosed as exc:
            print(f"connection lost ({exc.code}), reconnecting")
            continue


async def demo() -> None:
    """Three servers in a row on one port, and one client that follows them."""
    generation = 1

    async def hello(ws: shakehands.ServerConnection) -> None:
        await ws.send(f"hello from server #{generation}")
        async for _ in ws:  # keep the connection until the server stops
            pass

    server = await shakehands.serve(hello, "127.0.0.1", 0).__aenter__()
    port = server.port
    messages: asyncio.Queue[str] = asyncio.Queue()
    client = asyncio.create_task(listen(f"ws://127.0.0.1:{port}/", messages))
    async with asyncio.timeout(30):
        while True:
            assert await messages.get() == f"hello from server #{generation}"
            server.close()  # every client gets 1001 (going away)
            await server.wait_closed()
            if generation == 3:
                break
            print(f"server #{generation} stopped; starting #{generation + 1} in 0.5 s")
            await asyncio.sleep(0.5)  # the client's attempts are refused meanwhile
            generation += 1
            server = await shakehands.serve(hello, "127.0.0.1", port).__aenter__()
    client.cancel()
    print("the client heard from all three servers")


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO)
    if sys.argv[1:] == ["--demo"]:
        asyncio.run(demo())
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(listen(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:12345/"))
