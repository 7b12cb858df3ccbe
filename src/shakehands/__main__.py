"""The ``shakehands`` command line (also ``python -m shakehands``).

- no arguments: the seed's demo on 127.0.0.1:12345 (``--host``, ``--port``);
- ``echo``: a plain echo server, for conformance and benchmarks;
- ``client URI``: a client, interactive (stdin lines out as text, messages printed, ``/ping``,
  ``/close``, ``/binary``) or for scripts (``--send TEXT``, ``--count N``);
- ``chat``: the chat demo, rooms over the in-memory hub or Redis (``--redis URL``, or
  ``--redis-cluster URL[,URL...]``).

``--workers N`` runs a server in N processes sharing the port (``SO_REUSEPORT``), each a full
server; the first process only starts them and waits.

``--certfile PEM`` (and ``--keyfile PEM`` when the key is apart) serves ``https://`` and
``wss://`` for the demo, echo and chat commands, with WebSockets over HTTP/2 (RFC 8441) on when
the ``h2`` package is installed; ``--no-http2`` keeps to HTTP/1.1.

Ctrl-C and SIGTERM stop a server cleanly: every client gets a 1001 close frame.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import ssl as ssl_module
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .asyncio.callback import CallbackConnection, Listener, serve_callbacks
from .asyncio.client import ClientConnection, connect
from .asyncio.server import Server, ServerConnection, serve
from .chat import ChatServer
from .demo import meow, process_request
from .protocol.errors import CloseCode, ConnectionClosed, InvalidStatus, ShakehandsError
from .pubsub import Hub, MemoryBackend, RedisClusterBackend, RedisStreamsBackend

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


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    """``serve``'s TLS options from ``--certfile``, ``--keyfile`` and ``--no-http2``."""
    certfile = getattr(args, "certfile", None)
    keyfile = getattr(args, "keyfile", None)
    no_http2 = getattr(args, "no_http2", False)
    if certfile is None:
        if keyfile is not None or no_http2:
            raise _UsageError("--keyfile and --no-http2 go with --certfile")
        return {}
    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return {"ssl": context, "http2": False if no_http2 else None}


def _tls_line(server: Server[Any], host: str) -> None:
    """Say how a TLS server serves (after the line that says where it listens)."""
    if server.secure:
        http2 = "on" if server.config.http2 else "off"
        print(f"TLS: https://{host}:{server.port}/ and wss://, HTTP/2 {http2}.", flush=True)


async def _demo(
    host: str, port: int, reuse_port: bool = False, tls: dict[str, Any] | None = None
) -> None:
    async with serve(
        meow, host, port, process_request=process_request, **_reuse(reuse_port), **(tls or {})
    ) as server:

        def started() -> None:
            print(f"Listening on port {server.port}.", flush=True)
            _tls_line(server, host)

        await _run_until_signalled(server, started)


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
    tls: dict[str, Any] | None = None,
) -> None:
    options: dict[str, Any] = {
        "max_message_size": max_size,
        "max_connections": max_connections,
        **_reuse(reuse_port),
        **(tls or {}),
    }
    context = (
        serve_callbacks(_EchoListener(), host, port, **options)
        if api == "callback"
        else serve(_echo_handler, host, port, **options)
    )
    async with context as server:

        def started() -> None:
            print(f"Echo server ({api} API) listening on {host}:{server.port}.", flush=True)
            _tls_line(server, host)

        await _run_until_signalled(server, started)


async def _chat(
    host: str,
    port: int,
    redis_url: str | None,
    reuse_port: bool = False,
    redis_cluster: str | None = None,
    tls: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
) -> None:
    # The hub reports Redis outages, reconnections and lost windows through logging.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    history = history or {}
    backend: RedisClusterBackend | RedisStreamsBackend | MemoryBackend
    try:
        if redis_cluster:
            backend = RedisClusterBackend(redis_cluster, **history)
            bus = f"the Redis Cluster at {redis_cluster}"
        elif redis_url:
            backend = RedisStreamsBackend(redis_url, **history)
            bus = f"Redis at {redis_url}"
        else:
            backend = MemoryBackend(**history)
            bus = "the in-memory hub"
    except ValueError as exc:  # --history-size / --history-age out of range for this backend
        raise _UsageError(str(exc)) from None
    hub = Hub(backend)
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
            **(tls or {}),
        ) as server,
    ):
        scheme = "https" if server.secure else "http"

        def started() -> None:
            print(
                f"Chat server on {scheme}://{host}:{server.port}/ ({bus}, process {os.getpid()}).",
                flush=True,
            )
            _tls_line(server, host)

        await _run_until_signalled(server, started)


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


class _UsageError(Exception):
    """A bad argument (``client``'s, or TLS options): reported like argparse's errors, exit
    status 2."""


#: Exit statuses of ``shakehands client`` (documented in the README).
_EXIT_CLEAN, _EXIT_ERROR, _EXIT_USAGE, _EXIT_UNCLEAN = 0, 1, 2, 3

_CLIENT_HELP = """\
Commands (a line starting with /; type // to send a text that starts with /):
  /ping [TEXT]              send a ping, print the round-trip time
  /close [CODE [REASON]]    close the connection (default 1000) and exit
  /binary DATA              send DATA (in --binary-format) as a binary message
  /help                     this list"""


def _decode_binary(data: str, binary_format: str) -> bytes:
    """``data`` in hex (spaces allowed) or base64, as bytes; ``ValueError`` if malformed."""
    try:
        if binary_format == "hex":
            return bytes.fromhex(data)
        return base64.b64decode(data.strip().encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise ValueError(f"not valid {binary_format}: {data[:60]!r}") from None


def _encode_binary(data: bytes, binary_format: str) -> str:
    return data.hex() if binary_format == "hex" else base64.b64encode(data).decode("ascii")


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    """``connect``'s keyword arguments from the command line; :class:`_UsageError` if bad."""
    options: dict[str, Any] = {}
    headers: list[tuple[str, str]] = []
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise _UsageError(f"-H/--header must be 'Name: value', got {header!r}")
        headers.append((name, value.strip()))
    if headers:
        options["extra_headers"] = headers
    if args.subprotocol:
        options["subprotocols"] = list(args.subprotocol)
    if args.origin is not None:
        options["origin"] = args.origin
    secure = args.uri.lower().startswith("wss:")
    if args.insecure or args.cafile is not None:
        if not secure:
            raise _UsageError("--insecure and --cafile apply to wss:// URIs only")
        context = ssl_module.create_default_context(cafile=args.cafile)
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        options["ssl"] = context
    if args.proxy is not None:
        from .protocol.proxy import parse_proxy

        try:
            parse_proxy(args.proxy)  # a bad URL is a usage error, not a failed connect
        except ValueError as exc:
            raise _UsageError(f"--proxy: {exc}") from None
        options["proxy"] = args.proxy  # only when given: connect's own default otherwise
    return options


def _exit_status(ws: ClientConnection, sent: int | None) -> int:
    """Clean after 1000/1001, or the echo of the code we closed with (``sent``); a different
    code is the server's own, even when its close frame crossed ours."""
    code = ws.close_code
    if code is None or code == CloseCode.ABNORMAL_CLOSURE:
        return _EXIT_UNCLEAN
    if code == sent or code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
        return _EXIT_CLEAN
    return _EXIT_UNCLEAN


async def _client(args: argparse.Namespace) -> int:
    binary_format: str = args.binary_format
    try:
        options = _client_options(args)
        sends: list[str | bytes] = [
            _decode_binary(text, binary_format) if args.binary else text for text in args.send
        ]
    except (_UsageError, ValueError) as exc:
        print(f"shakehands client: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    if args.count is not None and args.count < 0:
        print("shakehands client: --count must be 0 or more", file=sys.stderr)
        return _EXIT_USAGE
    # Scripts: --send / --count. Messages alone on stdout; the rest on stderr.
    interactive = not args.send and args.count is None
    status_out = sys.stdout if interactive else sys.stderr
    prefix = "< " if interactive else ""
    async with connect(args.uri, **options) as ws:
        protocol = f" (subprotocol {ws.subprotocol})" if ws.subprotocol else ""
        if interactive:
            print(f"Connected to {args.uri}{protocol}. Type messages; Ctrl-D to quit.", flush=True)
        else:
            print(f"Connected to {args.uri}{protocol}.", file=sys.stderr, flush=True)
        received = 0

        async def printer() -> None:
            nonlocal received
            if args.count == 0:
                return
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    if isinstance(message, str):
                        print(f"{prefix}{message}", flush=True)
                    else:
                        shown = _encode_binary(message, binary_format)
                        print(f"{prefix}[binary] {shown}" if interactive else shown, flush=True)
                    received += 1
                    if args.count is not None and received >= args.count:
                        return

        reader = asyncio.create_task(printer())
        timed_out = False
        if interactive:
            close_code, close_reason = await _client_interactive(ws, reader, args)
        else:
            close_code, close_reason = CloseCode.NORMAL_CLOSURE, ""
            try:
                for message in sends:
                    await ws.send(message)
                if args.count:
                    await asyncio.wait_for(asyncio.shield(reader), args.timeout)
            except ConnectionClosed:
                pass
            except TimeoutError:
                timed_out = True
                print(
                    f"shakehands client: {received} of {args.count} messages after "
                    f"{args.timeout} s",
                    file=sys.stderr,
                    flush=True,
                )
        we_closed = False
        if ws.close_code is None:
            we_closed = True
            await ws.close(close_code, close_reason)
        await reader
    print(
        f"Connection closed: {ws.close_code} {ws.close_reason or ''}".rstrip(),
        file=status_out,
        flush=True,
    )
    status = _exit_status(ws, close_code if we_closed else None)
    if args.count is not None and received < args.count and status == _EXIT_CLEAN:
        if not timed_out:
            print(
                f"shakehands client: closed after {received} of {args.count} messages",
                file=sys.stderr,
            )
        status = _EXIT_UNCLEAN
    return _EXIT_UNCLEAN if timed_out else status


@dataclasses.dataclass(frozen=True)
class _Command:
    """An interactive input line: ``send`` (``message``), ``ping`` (``message``: its data),
    ``close`` (``code``, ``reason``) or ``help``."""

    kind: str
    message: str | bytes | None = None
    code: int = CloseCode.NORMAL_CLOSURE
    reason: str = ""


async def _client_interactive(
    ws: ClientConnection, reader: asyncio.Task[None], args: argparse.Namespace
) -> tuple[int, str]:
    """Send stdin's lines and run its commands until EOF, ``/close`` or the end of ``reader``
    (the connection closed); the close code and reason to send."""
    loop = asyncio.get_running_loop()
    binary_format: str = args.binary_format
    close_code, close_reason = int(CloseCode.NORMAL_CLOSURE), ""
    # Read stdin in a daemon thread: a readline() blocked in an executor thread would
    # keep the process alive after the connection closes or Ctrl-C, until the next
    # line or EOF.
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
    while not reader.done():
        line_task = asyncio.ensure_future(lines.get())
        done, _ = await asyncio.wait({reader, line_task}, return_when=asyncio.FIRST_COMPLETED)
        if line_task not in done:
            line_task.cancel()
            break
        line = line_task.result()
        if not line:
            break
        line = line.rstrip("\n")
        try:
            command = _client_command(line, binary_format, args.binary)
        except ValueError as exc:
            print(f"shakehands client: {exc}", file=sys.stderr, flush=True)
            continue
        try:
            if command.kind == "send":
                assert command.message is not None
                await ws.send(command.message)
            elif command.kind == "ping":
                assert not isinstance(command.message, str)
                rtt = await ws.ping(command.message)
                print(f"Pong: round-trip time {rtt * 1000:.3f} ms", flush=True)
            elif command.kind == "help":
                print(_CLIENT_HELP, flush=True)
            else:
                close_code, close_reason = command.code, command.reason
                break
        except ConnectionClosed:
            break
    return close_code, close_reason


def _client_command(line: str, binary_format: str, binary: bool) -> _Command:
    """What an interactive input line asks for; ``ValueError`` for a bad command."""
    if not line.startswith("/") or line.startswith("//"):
        text = line[1:] if line.startswith("//") else line
        return _Command("send", _decode_binary(text, binary_format) if binary else text)
    name, _, rest = line[1:].partition(" ")
    if name == "ping":
        data = rest.encode("utf-8")
        if len(data) > 125:
            raise ValueError("a ping carries at most 125 bytes")
        return _Command("ping", data or None)
    if name == "close":
        code_text, _, reason = rest.strip().partition(" ")
        if not code_text:
            return _Command("close")
        if not code_text.isdigit():
            raise ValueError(f"/close takes a close code, got {code_text!r}")
        code = int(code_text)
        if not (
            code in (1000, 1001)
            or 1002 <= code <= 1003
            or 1007 <= code <= 1014
            or 3000 <= code <= 4999
        ):
            raise ValueError(f"{code} is not a close code an endpoint may send")
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("a close reason is at most 123 bytes")
        return _Command("close", code=code, reason=reason)
    if name == "binary":
        return _Command("send", _decode_binary(rest, binary_format))
    if name == "help":
        return _Command("help")
    raise ValueError(f"unknown command /{name}: /help lists them (// sends a text with /)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shakehands",
        description="WebSocket servers and clients. Without a command: the seed's demo.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 12345; echo: 9001)")
    _add_process_options(parser)
    _add_tls_options(parser)
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
    _add_tls_options(echo)
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
    chat.add_argument(
        "--history-size",
        type=int,
        metavar="N",
        help="messages kept per room for clients that reconnect with ?since= "
        "(default 1000; 0: none, in-memory hub only)",
    )
    chat.add_argument(
        "--history-age",
        type=float,
        metavar="SECONDS",
        help="how long a message is kept for them at most (default 300; inf: no bound by age)",
    )
    _add_process_options(chat)
    _add_tls_options(chat)
    client = commands.add_parser(
        "client",
        help="a client: interactive, or for scripts with --send / --count",
        description="Connect to a WebSocket server. Interactive: stdin lines are sent as text "
        "messages, received messages printed; type /help for the commands (/ping, /close, "
        "/binary). With --send or --count: no stdin; messages alone on stdout, one a line. "
        "Exit status: 0 closed cleanly (1000/1001, or a close we asked for), 1 could not "
        "connect, 2 bad arguments, 3 closed otherwise (another code, connection lost, fewer "
        "than --count messages, --timeout).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_CLIENT_HELP,
    )
    client.add_argument("uri", help="ws:// or wss:// URI")
    client.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header (repeat for more)",
    )
    client.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="offer this subprotocol (repeat for more, by preference)",
    )
    client.add_argument("--origin", help="the Origin header to send")
    client.add_argument(
        "--insecure",
        action="store_true",
        help="wss://: do not verify the server's certificate (testing only)",
    )
    client.add_argument(
        "--cafile", metavar="PEM", help="wss://: trust the CA certificates in this file"
    )
    client.add_argument(
        "--proxy",
        metavar="URL",
        help="connect through this proxy (http://, https://, socks5://)",
    )
    client.add_argument(
        "--binary-format",
        choices=("hex", "base64"),
        default="hex",
        help="how binary messages are printed and /binary data is read (default hex)",
    )
    client.add_argument(
        "--binary",
        action="store_true",
        help="send input lines and --send values as binary (decoded with --binary-format)",
    )
    client.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="TEXT",
        help="send this message, then close (repeat for more); does not read stdin",
    )
    client.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="exit after receiving N messages (closing with 1000); does not read stdin",
    )
    client.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --count: give up (exit status 3) if the messages take longer",
    )
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


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS, as for the process options: before or after the command, the same.
    parser.add_argument(
        "--certfile",
        metavar="PEM",
        default=argparse.SUPPRESS,
        help="serve https:// and wss:// with this certificate chain (and key, unless --keyfile)",
    )
    parser.add_argument(
        "--keyfile", metavar="PEM", default=argparse.SUPPRESS, help="the private key of --certfile"
    )
    parser.add_argument(
        "--no-http2",
        action="store_true",
        default=argparse.SUPPRESS,
        help="with --certfile: HTTP/1.1 only (default: WebSockets over HTTP/2 too, when the "
        "h2 package is installed)",
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
        tls = _tls(args) if args.command != "client" else {}
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
                    tls,
                ),
                args.uvloop,
            )
        elif args.command == "chat":
            if args.redis and args.redis_cluster:
                print("shakehands: give --redis or --redis-cluster, not both", file=sys.stderr)
                return 2
            history = {
                name: value
                for name, value in (
                    ("history_size", args.history_size),
                    ("history_age", args.history_age),
                )
                if value is not None
            }
            _run(_chat(host, port, args.redis, reuse_port, args.redis_cluster, tls, history))
        elif args.command == "client":
            return int(_run(_client(args)))
        else:
            _run(_demo(host, port, reuse_port, tls))
    except KeyboardInterrupt:
        return 130
    except _UsageError as exc:
        print(f"shakehands: {exc}", file=sys.stderr)
        return 2
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
