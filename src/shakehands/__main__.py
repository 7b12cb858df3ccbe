"""The ``shakehands`` command line (also ``python -m shakehands``).

- no arguments: the seed's demo on 127.0.0.1:12345 (``--host``, ``--port``);
- ``echo``: a plain echo server, for conformance and benchmarks;
- ``client URI``: an interactive client (stdin lines out as text, messages printed);
- ``chat``: the chat demo, rooms over the in-memory hub or Redis (``--redis URL``, or
  ``--redis-cluster URL[,URL...]``).

``--workers N`` runs a server in N processes sharing the port (``SO_REUSEPORT``), each a full
server; the first process only starts them and waits.

Ctrl-C and SIGTERM stop a server cleanly: every client gets a 1001 close frame.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .asyncio.callback import CallbackConnection, Listener, serve_callbacks
from .asyncio.client import connect
from .asyncio.server import Server, ServerConnection, serve
from .chat import ChatServer
from .demo import meow, process_request
from .protocol.errors import ConnectionClosed, InvalidStatus, ShakehandsError
from .pubsub import Hub, RedisClusterBackend, RedisStreamsBackend

__all__ = ["main"]

#: The most bytes of a refusal's body that ``shakehands client`` prints.
_MAX_BODY_SHOWN = 2000


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


def _reuse(reuse_port: bool) -> dict[str, Any]:
    # Only when asked: SO_REUSEPORT would let a second server start silently on a busy port.
    return {"reuse_port": True} if reuse_port else {}


async def _demo(host: str, port: int, reuse_port: bool = False) -> None:
    async with serve(
        meow, host, port, process_request=process_request, **_reuse(reuse_port)
    ) as server:
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
    host: str,
    port: int,
    api: str,
    max_size: int | None,
    reuse_port: bool = False,
    max_connections: int | None = None,
) -> None:
    options: dict[str, Any] = {
        "max_message_size": max_size,
        "max_connections": max_connections,
        **_reuse(reuse_port),
    }
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


async def _chat(
    host: str,
    port: int,
    redis_url: str | None,
    reuse_port: bool = False,
    redis_cluster: str | None = None,
) -> None:
    # The hub reports Redis outages, reconnections and lost windows through logging.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if redis_cluster:
        hub = Hub(RedisClusterBackend(redis_cluster))
        bus = f"the Redis Cluster at {redis_cluster}"
    else:
        hub = Hub(RedisStreamsBackend(redis_url) if redis_url else None)
        bus = f"Redis at {redis_url}" if redis_url else "the in-memory hub"
    chat = ChatServer(hub)
    async with (
        hub,
        serve(
            chat.handler,
            host,
            port,
            process_request=chat.process_request,
            max_message_size=2**16,
            **_reuse(reuse_port),
        ) as server,
    ):
        await _run_until_signalled(
            server,
            lambda: print(
                f"Chat server on http://{host}:{server.port}/ ({bus}, process {os.getpid()}).",
                flush=True,
            ),
        )


def _run_workers(argv: Sequence[str], host: str, port: int, workers: int) -> int:
    """Start ``workers`` copies of this command sharing ``port``; wait for them all.

    SIGINT and SIGTERM are passed on, so each worker closes its connections (1001) and exits.
    """
    # Hold the port (bound, not listening: the kernel hands connections to listening sockets
    # only) so that port 0 becomes one port shared by every worker.
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    port = holder.getsockname()[1]
    command = [sys.executable, "-m", "shakehands", *argv, "--port", str(port), "--reuse-port"]
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    # Before the first child exists, so that no signal can leave one orphaned.
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    children.extend(subprocess.Popen(command) for _ in range(workers))
    holder.close()
    print(f"Started {workers} workers on {host}:{port} (SO_REUSEPORT).", flush=True)
    codes = [child.wait() for child in children]
    return max(codes, key=abs)


def _without_workers(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


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
    _add_process_options(parser)
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
    _add_process_options(echo)
    chat = commands.add_parser("chat", help="the chat demo: rooms at /<room>, page at /")
    chat.add_argument("--host", default=argparse.SUPPRESS)
    chat.add_argument("--port", type=int, default=argparse.SUPPRESS)
    chat.add_argument(
        "--redis",
        metavar="URL",
        help="share rooms with every process using this Redis (redis://127.0.0.1:6379/0); "
        "default: the in-memory hub of this process",
    )
    chat.add_argument(
        "--redis-cluster",
        metavar="URL[,URL...]",
        help="share rooms through a Redis Cluster, given some of its nodes "
        "(redis://127.0.0.1:7000,redis://127.0.0.1:7001): rooms spread over its shards",
    )
    _add_process_options(chat)
    client = commands.add_parser("client", help="an interactive client")
    client.add_argument("uri", help="ws:// or wss:// URI")
    return parser


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's default must not hide a value given before it (and vice versa).
    parser.add_argument(
        "--workers",
        type=int,
        default=argparse.SUPPRESS,
        help="processes sharing the port with SO_REUSEPORT, each a full server (default 1)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


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
    workers = getattr(args, "workers", 1)
    reuse_port = getattr(args, "reuse_port", False)
    default_port = 9001 if args.command == "echo" else 12345
    port = default_port if args.port is None else args.port
    try:
        if args.command != "client" and workers != 1:
            if workers < 1:
                print("shakehands: --workers must be at least 1", file=sys.stderr)
                return 2
            if args.command == "chat" and not (args.redis or args.redis_cluster):
                print(
                    "shakehands: without --redis each worker has rooms of its own",
                    file=sys.stderr,
                )
            raw = list(sys.argv[1:] if argv is None else argv)
            return _run_workers(_without_workers(raw), host, port, workers)
        if args.command == "echo":
            _run(
                _echo(
                    host,
                    port,
                    args.api,
                    args.max_size or None,
                    reuse_port,
                    args.max_connections or None,
                ),
                args.uvloop,
            )
        elif args.command == "chat":
            if args.redis and args.redis_cluster:
                print("shakehands: give --redis or --redis-cluster, not both", file=sys.stderr)
                return 2
            _run(_chat(host, port, args.redis, reuse_port, args.redis_cluster))
        elif args.command == "client":
            return int(_run(_client(args.uri)))
        else:
            _run(_demo(host, port, reuse_port))
    except KeyboardInterrupt:
        return 130
    except (OSError, ShakehandsError, TimeoutError) as exc:
        print(f"shakehands: {exc}", file=sys.stderr)
        if isinstance(exc, InvalidStatus) and exc.response.body:
            # The server's own words about the refusal ("missing token"), cut short.
            body = exc.response.body[:_MAX_BODY_SHOWN].decode("utf-8", "replace").rstrip()
            cut = "\n[...]" if len(exc.response.body) > _MAX_BODY_SHOWN else ""
            print(f"{body}{cut}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
