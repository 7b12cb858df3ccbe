"""The callback API: no coroutine, Future or task per message.

Run: ``python examples/callback_server.py``.
"""

import asyncio

import shakehands


class Echo(shakehands.Listener):
    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        ws.context["seen"] = 0  # per-connection state: messages seen

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.context["seen"] += 1
        ws.send(message)

    def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
        print(f"closed with {code} after {ws.context['seen']} messages", flush=True)


async def main() -> None:
    async with shakehands.serve_callbacks(Echo(), "127.0.0.1", 8767) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
