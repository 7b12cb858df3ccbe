"""An echo server with the coroutine API: ``python examples/echo_server.py``."""

import asyncio

import shakehands


async def echo(ws: shakehands.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    async with shakehands.serve(echo, "127.0.0.1", 8765) as server:
        print(f"Listening on ws://127.0.0.1:{server.port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
