"""The blocking server: echo, handshake answers, limits, keepalive, closing, shutdown.

Real sockets on 127.0.0.1: the peers are the blocking client, a raw hand-written client, and the
asyncio client of the same library.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import threading
from http import HTTPStatus
from pathlib import Path

import pytest

import shakehands
from shakehands import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    Request,
    Response,
    sync,
)

from ..helpers import HOST, OP_CLOSE, OP_PING, OP_TEXT, frame, upgrade_request
from ..test_docs import README_SERVERS, start_server_block, stop
from .sync_helpers import RawClient, echo, running, uri

pytestmark = pytest.mark.timeout(60)


def test_echo_text_binary_fragments_and_empty() -> None:
    with running() as server, sync.connect(uri(server)) as ws:
        ws.send("Hello")
        assert ws.recv() == "Hello"
        ws.send("滴水之恩当以涌泉相报 🐱")
        assert ws.recv() == "滴水之恩当以涌泉相报 🐱"
        ws.send(b"\x00\xff" * 40_000)
        assert ws.recv() == b"\x00\xff" * 40_000
        ws.send(["frag", "ment", "ed"])
        assert ws.recv() == "fragmented"
        ws.send([b"a", b"b"])
        assert ws.recv() == b"ab"
        ws.send("")
        assert ws.recv() == ""
        assert ws.subprotocol is None
    assert ws.close_code == 1000


def test_iteration_ends_quietly_on_a_clean_close() -> None:
    received: list[str | bytes] = []
    done = threading.Event()

    def handler(ws: sync.ServerConnection) -> None:
        received.extend(ws)
        done.set()

    with running(handler) as server:
        with sync.connect(uri(server)) as ws:
            ws.send("one")
            ws.send(b"two")
        assert done.wait(10)
    assert received == ["one", b"two"]


def test_recv_timeout_and_ping() -> None:
    with running() as server, sync.connect(uri(server)) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.05)
        latency = ws.ping(b"abc").wait(10)
        assert latency >= 0
        # The connection is still usable after the timeout.
        ws.send("after")
        assert ws.recv(timeout=10) == "after"


def test_recv_after_close_raises_connection_closed_ok() -> None:
    with running() as server:
        ws = sync.connect(uri(server))
        ws.close()
        with pytest.raises(ConnectionClosedOK):
            ws.recv()
        with pytest.raises(ConnectionClosedOK):
            ws.send("late")


def test_answers_leave_before_the_close_echo() -> None:
    """Messages followed at once by a close frame are all answered before our close frame."""
    with running() as server:
        raw = RawClient(server.port)
        raw.handshake()
        raw.send(
            b"".join(frame(OP_TEXT, f"m{i}".encode()) for i in range(5))
            + frame(OP_CLOSE, struct.pack("!H", 1000))
        )
        answers = []
        while True:
            _, opcode, payload = raw.read_frame()
            if opcode == OP_CLOSE:
                break
            answers.append(payload)
        assert answers == [f"m{i}".encode() for i in range(5)]
        assert struct.unpack("!H", payload)[0] == 1000
        raw.read_eof()
        raw.close()


def test_handler_exception_closes_with_1011() -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.recv()
        raise RuntimeError("boom")

    with running(handler) as server, sync.connect(uri(server)) as ws:
        ws.send("x")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=10)
        assert info.value.code == 1011


def test_handler_return_closes_with_1000() -> None:
    def handler(ws: sync.ServerConnection) -> None:
        ws.send("bye")

    with running(handler) as server, sync.connect(uri(server)) as ws:
        assert ws.recv() == "bye"
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)
        assert ws.close_code == 1000


def test_message_too_big_fails_with_1009() -> None:
    with running(max_message_size=1000) as server, sync.connect(uri(server)) as ws:
        ws.send("x" * 1000)
        assert ws.recv() == "x" * 1000
        ws.send("x" * 1001)
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=10)
        assert info.value.code == 1009


def test_protocol_error_from_raw_client_gets_1002() -> None:
    with running() as server:
        raw = RawClient(server.port)
        raw.handshake()
        raw.send_frame(OP_TEXT, b"unmasked", mask=False)
        assert raw.read_close()[0] == 1002
        raw.read_eof()
        raw.close()


def test_invalid_utf8_gets_1007() -> None:
    with running() as server:
        raw = RawClient(server.port)
        raw.handshake()
        raw.send_frame(OP_TEXT, b"\xff\xfe")
        assert raw.read_close()[0] == 1007
        raw.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 10_000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_requests_get_a_clean_4xx(request_bytes: bytes, status: int) -> None:
    with running() as server:
        raw = RawClient(server.port)
        raw.send(request_bytes)
        got, headers, body = raw.read_response()
        assert got == status
        assert body  # a readable reason
        raw.close()
        # The server keeps serving.
        with sync.connect(uri(server)) as ws:
            ws.send("still here")
            assert ws.recv() == "still here"


def test_wrong_version_gets_426_with_the_version_header() -> None:
    with running() as server:
        raw = RawClient(server.port)
        raw.send(upgrade_request(server.port, version="8"))
        status, headers, _ = raw.read_response()
        assert status == 426
        assert headers["sec-websocket-version"] == "13"
        raw.close()


def test_process_request_answers_plain_http_and_sees_the_request() -> None:
    seen: list[Request] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request)
        if request.path == "/health":
            return Response(HTTPStatus.OK, body=b"OK\n")
        if request.path != "/chat":
            return Response(HTTPStatus.NOT_FOUND, body=b"no such room\n")
        return None

    with running(process_request=process_request) as server:
        raw = RawClient(server.port)
        raw.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.read_response()[::2] == (200, b"OK\n")
        raw.close()
        with pytest.raises(InvalidStatus) as info:
            sync.connect(uri(server, "/lobby"))
        assert info.value.response.status == 404  # type: ignore[attr-defined]
        with sync.connect(uri(server, "/chat?x=1")) as ws:
            ws.send("hi")
            assert ws.recv() == "hi"
        assert seen[-1].path == "/chat"
        assert seen[-1].query == "x=1"
        assert seen[-1].remote_address is not None


def test_process_request_str_body_and_dict_headers_reach_the_client() -> None:
    def refuse(request: Request) -> Response:
        return Response(401, {"WWW-Authenticate": "Bearer"}, "missing token")

    with running(process_request=refuse) as server:
        with pytest.raises(InvalidStatus) as excinfo:
            sync.connect(uri(server))
        response = excinfo.value.response
        assert response.status == 401
        assert response.body == b"missing token"
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_process_request_that_raises_gets_500() -> None:
    def process_request(request: Request) -> Response | None:
        raise ValueError("bug")

    with running(process_request=process_request) as server:
        with pytest.raises(InvalidStatus) as info:
            sync.connect(uri(server))
        assert info.value.response.status == 500  # type: ignore[attr-defined]


def test_max_connections_answers_503_and_keeps_serving() -> None:
    # As in the asyncio servers: handshakes count; beyond the limit, 503 with Retry-After.
    with running(max_connections=2) as server:
        first = sync.connect(uri(server))
        second = sync.connect(uri(server))
        with pytest.raises(InvalidStatus) as info:
            sync.connect(uri(server))
        response = info.value.response  # type: ignore[attr-defined]
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert b"server full" in response.body
        for ws in (first, second):
            ws.send("still served")
            assert ws.recv() == "still served"
        first.close()
        first.wait_closed(5)
        # A slot is free again once a connection has gone.
        for _ in range(50):
            if len(server.connections) < 2:
                break
            threading.Event().wait(0.05)
        with sync.connect(uri(server)) as third:
            third.send("in")
            assert third.recv() == "in"
        second.close()


def test_origins_and_subprotocols() -> None:
    with running(origins=["https://ok.example"], subprotocols=["chat.v2", "chat.v1"]) as server:
        with pytest.raises(InvalidStatus) as info:
            sync.connect(uri(server), origin="https://evil.example")
        assert info.value.response.status == 403  # type: ignore[attr-defined]
        with sync.connect(uri(server), origin="https://ok.example", subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            ws.send("ok")
            assert ws.recv() == "ok"


def test_compression_is_negotiated_and_can_be_declined() -> None:
    with running() as server:
        with sync.connect(uri(server)) as ws:
            assert "permessage-deflate" in ws.response.headers.get(  # type: ignore[union-attr]
                "Sec-WebSocket-Extensions", ""
            )
            ws.send("z" * 100_000)
            assert ws.recv() == "z" * 100_000
        with sync.connect(uri(server), compression=None) as ws:
            assert ws.protocol.deflate is None
            ws.send("plain")
            assert ws.recv() == "plain"


def test_keepalive_closes_a_peer_that_never_answers_pings() -> None:
    with running(ping_interval=0.1, ping_timeout=0.1, close_timeout=1) as server:
        raw = RawClient(server.port)
        raw.handshake()
        # Never read until the server has given up: its ping is followed by a 1011 close.
        _, opcode, _ = raw.read_frame()
        assert opcode == OP_PING
        assert raw.read_close()[0] == 1011
        raw.read_eof()
        raw.close()


def test_keepalive_pings_are_answered_by_the_blocking_client() -> None:
    pings = threading.Event()

    def handler(ws: sync.ServerConnection) -> None:
        for _ in range(3):
            ws.ping().wait(10)
        pings.set()
        ws.send("done")

    with running(handler) as server, sync.connect(uri(server)) as ws:
        assert ws.recv(timeout=10) == "done"
    assert pings.is_set()


def test_open_timeout_drops_a_silent_client() -> None:
    with running(open_timeout=0.2) as server:
        raw = RawClient(server.port)
        raw.send(b"GET / HTTP/1.1\r\n")
        raw.read_eof()
        raw.close()


def test_shutdown_closes_connections_with_1001() -> None:
    server = sync.serve(echo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ws = sync.connect(uri(server))
    ws.send("x")
    assert ws.recv() == "x"
    assert len(server.connections) == 1
    server.shutdown()
    thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(ConnectionClosedOK) as info:
        ws.recv(timeout=10)
    assert info.value.code == 1001


def test_many_clients_each_get_a_thread() -> None:
    def handler(ws: sync.ServerConnection) -> None:
        for message in ws:
            ws.send(f"{message}!")

    with running(handler) as server:
        clients = [sync.connect(uri(server)) for _ in range(20)]
        for i, ws in enumerate(clients):
            ws.send(str(i))
        for i, ws in enumerate(clients):
            assert ws.recv(timeout=10) == f"{i}!"
        for ws in clients:
            ws.close()


def test_asyncio_client_talks_to_the_blocking_server() -> None:
    async def main(port: int) -> list[str | bytes]:
        async with shakehands.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("from asyncio")
            await ws.send(b"\x01\x02")
            return [await ws.recv(), await ws.recv()]

    with running() as server:
        assert asyncio.run(main(server.port)) == ["from asyncio", b"\x01\x02"]


def test_websockets_library_client_talks_to_the_blocking_server() -> None:
    websockets_sync = pytest.importorskip("websockets.sync.client")
    with running() as server, websockets_sync.connect(uri(server)) as ws:
        ws.send("interop")
        assert ws.recv() == "interop"
        ws.send(b"x" * 200_000)
        assert ws.recv() == b"x" * 200_000


def test_a_handler_that_does_not_read_bounds_the_inbox() -> None:
    release = threading.Event()
    sizes: list[int] = []
    received: list[str | bytes] = []

    def handler(ws: sync.ServerConnection) -> None:
        release.wait(20)
        sizes.append(len(ws._inbox))
        received.extend(ws.recv(timeout=10) for _ in range(300))

    with running(handler, max_queue=4) as server, sync.connect(uri(server)) as ws:
        sender = threading.Thread(
            target=lambda: [ws.send(f"{i:04d}" + "." * 1000) for i in range(300)], daemon=True
        )
        sender.start()
        # Wait until the server's reader has filled its inbox and stopped reading.
        while not server.connections:
            threading.Event().wait(0.01)
        (connection,) = server.connections
        while len(connection._inbox) < 4:
            threading.Event().wait(0.01)
        release.set()
        sender.join(20)
    assert sizes and sizes[0] <= 4
    assert [m[:4] for m in received] == [f"{i:04d}" for i in range(300)]


def test_close_gives_up_on_a_peer_that_never_answers() -> None:
    closed = threading.Event()

    def handler(ws: sync.ServerConnection) -> None:
        ws.close(1000, "bye")  # the raw client never answers: close_timeout ends it
        closed.set()

    with running(handler, close_timeout=0.2) as server:
        raw = RawClient(server.port)
        raw.handshake()
        assert closed.wait(20)
        assert raw.read_close() == (1000, "bye")
        raw.read_eof()
        raw.close()


def test_send_errors() -> None:
    with running() as server, sync.connect(uri(server)) as ws:
        with pytest.raises(TypeError):
            ws.send(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            ws.ping(b"x" * 126)
        ws.send("still open")
        assert ws.recv(timeout=10) == "still open"


def test_a_bad_fragment_fails_the_message_with_1011() -> None:
    with running() as server, sync.connect(uri(server)) as ws:
        with pytest.raises(TypeError):
            ws.send(["one", 2, "three"])  # type: ignore[list-item]
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=10)
        assert ws.protocol.close_sent is not None
        assert ws.protocol.close_sent.code == 1011


def test_a_ping_payload_already_waiting_is_refused() -> None:
    outcome: list[object] = []
    done = threading.Event()

    def handler(ws: sync.ServerConnection) -> None:
        waiter = ws.ping(b"same")  # the raw client never answers pings
        try:
            ws.ping(b"same")
        except ValueError as exc:
            outcome.append(exc)
        try:
            waiter.wait(0.01)
        except TimeoutError as exc:
            outcome.append(exc)
        done.set()

    with running(handler) as server:
        raw = RawClient(server.port)
        raw.handshake()
        assert done.wait(20)
        assert [type(e) for e in outcome] == [ValueError, TimeoutError]
        raw.close()


def test_shutdown_drops_handshakes_in_progress() -> None:
    server = sync.serve(echo, "127.0.0.1", 0, open_timeout=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    raw = RawClient(server.port)
    raw.send(b"GET / HTTP/1.1\r\n")  # and never the rest
    while not server._handshaking:
        threading.Event().wait(0.01)
    server.shutdown()
    thread.join(10)
    assert not thread.is_alive()
    raw.read_eof()  # the half-made connection was dropped (RawClient's socket timeout: 10 s)
    raw.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_readme_server_closes_clients_with_1001_on_a_signal(signum: int, tmp_path: Path) -> None:
    """README's blocking server program: a signal closes every client with 1001 and the
    program exits with status 0."""
    block = README_SERVERS[1]
    assert "from shakehands.sync import serve" in block.code, block.name
    process, address = start_server_block(block, tmp_path)
    try:
        with sync.connect(address) as ws:
            ws.send("before")
            assert ws.recv() == "before"
            process.send_signal(signum)
            with pytest.raises(ConnectionClosedOK):
                ws.recv()
        assert ws.close_code == 1001
        assert process.wait(60) == 0
    finally:
        out, err = stop(process)
    assert "Traceback" not in err, err


def test_serve_forever_in_the_main_thread_puts_back_the_signal_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sync.serve(echo, HOST, 0) as server:
        stopper = threading.Thread(target=server.shutdown)
        # serve_forever runs here, in the main thread; shutdown() from another one ends it.
        timer = threading.Timer(0.1, stopper.start)
        timer.start()
        server.serve_forever()
        timer.join()
        stopper.join(30)
    assert signal.getsignal(signal.SIGTERM) == before


async def _coroutine_handler(ws: object) -> None:
    pass


def _two_arguments(ws: object, path: str) -> None:
    pass


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        (_two_arguments, r"_two_arguments\(ws: 'object', path: 'str'\).*one argument"),
        (_coroutine_handler, "is a coroutine function"),
        (None, "must be a function"),
    ],
    ids=["handler(ws, path)", "async def", "not callable"],
)
def test_serve_refuses_a_handler_of_the_wrong_shape(handler: object, match: str) -> None:
    with pytest.raises(TypeError, match=match) as excinfo:
        sync.serve(handler, HOST, 0)  # type: ignore[arg-type]
    assert "def handler(ws)" in str(excinfo.value)


def test_serve_forever_leaves_a_signal_handler_of_the_program_alone() -> None:
    seen: list[object] = []

    def own(signum: int, frame: object) -> None:
        pass

    def look_then_stop(server: sync.Server) -> None:
        with sync.connect(uri(server)):  # serving: the handlers are in place by now
            seen.append(signal.getsignal(signal.SIGTERM))
        server.shutdown()

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with sync.serve(echo, HOST, 0) as server:
            stopper = threading.Thread(target=look_then_stop, args=(server,))
            stopper.start()
            server.serve_forever()
            stopper.join(30)
        assert seen == [own]
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
