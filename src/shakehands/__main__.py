"""The ``shakehands`` command line (also ``python -m shakehands``).

- no arguments: the seed's demo on 127.0.0.1:12345 (``--host``, ``--port``);
- ``echo``: a plain echo server, for conformance and benchmarks;
- ``client URI``: an interactive client (stdin lines out as text, messages printed).

Ctrl-C and SIGTERM stop a server cleanly: every client gets a 1001 close frame.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .asyncio.callback import CallbackConnection, Listener, serve_callbacks
from .asyncio.client import connect
from .asyncio.server import Server, ServerConnection, serve
from .demo import meow, process_request
from .protocol.errors import ConnectionClosed, ShakehandsError

__all__ = ["main"]


async def _run_until_signalled(server: Server[Any], started: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, request_stop)
    started()
    await stop
    server.close()
    await server.wait_closed()


async def _demo(host: str, port: int) -> None:
    async with serve(meow, host, port, process_request=process_request) as server:
        await _run_until_signalled(
            server, lambda: print(f"Listening on port {server.port}.", flush=True)
        )


async def _echo_handler(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class _EchoListener(Listener):
    def on_message(self, ws: CallbackConnection, message: str | bytes) -> None:
        # A message read together with the client's close frame comes after our close reply.
        if ws.open:
            ws.send(message)


async def _echo(
    host: str, port: int, api: str, max_size: int | None, max_connections: int | None = None
) -> None:
    options: dict[str, Any] = {"max_message_size": max_size, "max_connections": max_connections}
    context = (
        serve_callbacks(_EchoListener(), host, port, **options)
        if api == "callback"
        else serve(_echo_handler, host, port, **options)
    )
    async with context as server:
        await _run_until_signalled(
            server,
            lambda: print(
                f"Echo server ({api} API) listening on {host}:{server.port}.", flush=True
            ),
        )


async def _client(uri: str) -> int:
    loop = asyncio.get_running_loop()
    async with connect(uri) as ws:
        print(f"Connected to {uri}. Type messages; Ctrl-D to quit.", flush=True)

        async def printer() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    print(f"< {message!r}" if isinstance(message, bytes) else f"< {message}")
                    sys.stdout.flush()

        # Read stdin in a daemon thread: a readline() blocked in an executor thread would keep
        # the process alive after the connection closes or Ctrl-C, until the next line or EOF.
        lines: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:
            while True:
                line = sys.stdin.readline()
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                except RuntimeError:  # the event loop is closed
                    return
                if not line:
                    return

        threading.Thread(target=read_stdin, name="shakehands-stdin", daemon=True).start()
        reader = asyncio.create_task(printer())
        while not reader.done():
            line_task = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({reader, line_task}, return_when=asyncio.FIRST_COMPLETED)
            if line_task not in done:
                line_task.cancel()
                break
            line = line_task.result()
            if not line:
                break
            try:
                await ws.send(line.rstrip("\n"))
            except ConnectionClosed:
                break
        await ws.close()
        await reader
    print(f"Connection closed: {ws.close_code} {ws.close_reason or ''}".rstrip(), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shakehands",
        description="WebSocket servers and clients. Without a command: the seed's demo.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 12345; echo: 9001)")
    commands = parser.add_subparsers(dest="command")
    echo = commands.add_parser("echo", help="an echo server (text and binary)")
    # SUPPRESS: `shakehands --port P echo` and `shakehands echo --port P` mean the same.
    echo.add_argument("--host", default=argparse.SUPPRESS)
    echo.add_argument("--port", type=int, default=argparse.SUPPRESS)
    echo.add_argument("--api", choices=("coroutine", "callback"), default="coroutine")
    echo.add_argument(
        "--max-size",
        type=int,
        default=2**20,
        help="largest message accepted, in bytes; 0 for no limit (default 1 MiB)",
    )
    echo.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="most connections at once; beyond it requests get HTTP 503 (default 0: no limit)",
    )
    echo.add_argument("--uvloop", action="store_true", help="run on uvloop (if installed)")
    client = commands.add_parser("client", help="an interactive client")
    client.add_argument("uri", help="ws:// or wss:// URI")
    return parser


def _run(coroutine: Awaitable[Any], use_uvloop: bool = False) -> Any:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            print(
                "shakehands: --uvloop needs uvloop: pip install 'shakehands[uvloop]'",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)  # type: ignore[arg-type]
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``shakehands`` / ``python -m shakehands``; returns the exit status."""
    args = _parser().parse_args(argv)
    host = args.host or "127.0.0.1"
    try:
        if args.command == "echo":
            port = 9001 if args.port is None else args.port
            _run(
                _echo(host, port, args.api, args.max_size or None, args.max_connections or None),
                args.uvloop,
            )
        elif args.command == "client":
            return int(_run(_client(args.uri)))
        else:
            _run(_demo(host, 12345 if args.port is None else args.port))
    except KeyboardInterrupt:
        return 130
    except (OSError, ShakehandsError, TimeoutError) as exc:
        print(f"shakehands: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
