"""A client: greet the demo server (``python -m shakehands``) and print its answers.

Run the demo, then: ``python examples/client.py``.
"""

import asyncio
import sys

import shakehands


async def main(uri: str) -> None:
    async with shakehands.connect(uri) as ws:
        print(await ws.recv())  # the welcome message
        await ws.send("Hello")
        print(await ws.recv())  # Hello, MEOW!
        print(f"round trip: {await ws.ping() * 1000:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:12345/"))
