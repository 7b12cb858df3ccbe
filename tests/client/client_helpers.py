"""Helpers of the client tests: servers that answer redirects, refuse, or never answer.

Everything listens on 127.0.0.1 (or a Unix socket in a temporary directory) and is a real
server: shakehands servers whose ``process_request`` answers with a :class:`Response`, the
standard library's HTTP server, listening sockets that never accept.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from shakehands import Request, Response, sync

from ..helpers import HOST


def routes(table: dict[str, Response]) -> Callable[[Request], Response | None]:
    """A ``process_request`` that answers the paths of ``table`` with their response and
    upgrades the others."""

    def process_request(request: Request) -> Response | None:
        return table.get(request.path)

    return process_request


@contextlib.contextmanager
def sync_server(handler: Any, **options: Any) -> Iterator[sync.Server]:
    """A blocking shakehands server on 127.0.0.1 (``port`` in ``options``: that port, else a
    free one; ``sock``: that socket), serving in a thread for the duration of the block."""
    port = options.pop("port", 0)
    if "sock" in options:
        server = sync.serve(handler, **options)
    else:
        server = sync.serve(handler, HOST, port, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)


class _PageHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"<!doctype html><title>Just a web page</title>" + b"x" * 200

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass


class _OldPageHandler(_PageHandler):
    protocol_version = "HTTP/1.0"  # the standard library's default: an old server's answer


@contextlib.contextmanager
def web_server(version: str = "HTTP/1.1") -> Iterator[int]:
    """The standard library's HTTP server (a web page, no WebSocket) on a free port, answering
    with ``version`` (``"HTTP/1.1"`` or ``"HTTP/1.0"``)."""
    handler = _PageHandler if version == "HTTP/1.1" else _OldPageHandler
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A listening socket that never accepts: TCP connects (the kernel's backlog), then
    nothing is ever said (a TLS or WebSocket handshake waits forever)."""
    with socket.create_server((HOST, 0), backlog=16) as listener:
        yield listener.getsockname()[1]


@contextlib.contextmanager
def unreachable_port() -> Iterator[int | None]:
    """A port of 127.0.0.1 whose TCP connect hangs: a listener with ``listen(0)`` whose accept
    queue is full (Linux then drops further SYNs). ``None`` if this kernel does not do that."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((HOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.5)
            fillers.append(filler)
            try:
                filler.connect((HOST, port))
            except TimeoutError:
                yield port
                return
        yield None
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
