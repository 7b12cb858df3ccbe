"""The seed's functions on sockets the caller accepts itself: shake_hands, get_request /
put_response / reject, get_frame / put_frame. Real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import pytest

from shakehands import InvalidStatus, Response, UnsupportedVersion, sync

from ..helpers import HOST, OP_CLOSE, OP_TEXT, frame, upgrade_request
from .sync_helpers import RawClient

pytestmark = pytest.mark.timeout(60)


class Acceptor:
    """A listening socket whose accepted sockets go to ``talk`` in a thread each; results kept."""

    def __init__(self, talk: Callable[[socket.socket], Any]) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.talk = talk
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self.done = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        try:
            self.results.append(self.talk(sock))
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.done.release()

    def wait(self) -> None:
        assert self.done.acquire(timeout=20)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def acceptor() -> Iterator[Callable[[Callable[[socket.socket], Any]], Acceptor]]:
    made: list[Acceptor] = []

    def make(talk: Callable[[socket.socket], Any]) -> Acceptor:
        made.append(Acceptor(talk))
        return made[-1]

    yield make
    for a in made:
        a.close()


def talk_with(
    get: Callable[[sync.Connection], str | bytes | None],
    put: Callable[[sync.Connection, str | bytes], None],
) -> Callable[[socket.socket], list[str | bytes]]:
    """The seed's talkTo on the given message functions, collecting what it received."""

    def talk(sock: socket.socket) -> list[str | bytes]:
        ws = sync.shake_hands(sock)
        put(ws, "滴水之恩当以涌泉相报")
        received: list[str | bytes] = []
        while (message := get(ws)) is not None:
            received.append(message)
            put(ws, message + (", MEOW!" if isinstance(message, str) else b", MEOW!"))
        ws.close()
        return received

    return talk


#: The seed's talkTo, with its own names (get_frame / put_frame).
talk_to = talk_with(sync.get_frame, sync.put_frame)


def test_shake_hands_get_frame_put_frame(acceptor: Any) -> None:
    a = acceptor(talk_to)
    with sync.connect(f"ws://{HOST}:{a.port}/") as ws:
        assert ws.recv() == "滴水之恩当以涌泉相报"
        ws.send("Hello")
        assert ws.recv() == "Hello, MEOW!"
        ws.send(b"\x00")
        assert ws.recv() == b"\x00, MEOW!"
    a.wait()
    assert a.results == [["Hello", b"\x00"]]


def test_get_message_put_message_are_get_frame_put_frame(acceptor: Any) -> None:
    # A "frame" of the seed is a whole message: a fragmented one comes back as one.
    a = acceptor(talk_with(sync.get_message, sync.put_message))
    with sync.connect(f"ws://{HOST}:{a.port}/") as ws:
        assert ws.recv() == "滴水之恩当以涌泉相报"
        ws.send(["Hel", "lo"])  # two frames, one message
        assert ws.recv() == "Hello, MEOW!"
    a.wait()
    assert a.results == [["Hello"]]


def test_empty_message_is_not_a_disconnect(acceptor: Any) -> None:
    """The seed's flaw: an empty message looked like the peer leaving. Here it is ''."""
    a = acceptor(talk_to)
    with sync.connect(f"ws://{HOST}:{a.port}/") as ws:
        ws.recv()
        ws.send("")
        assert ws.recv() == ", MEOW!"
        ws.send(b"")
        assert ws.recv() == b", MEOW!"
    a.wait()
    assert a.results == [["", b""]]


def test_get_frame_is_none_when_the_peer_drops_tcp(acceptor: Any) -> None:
    a = acceptor(talk_to)
    raw = RawClient(a.port)
    raw.handshake()
    raw.read_frame()  # the welcome
    raw.send_frame(OP_TEXT, b"last")
    assert raw.read_frame()[2] == b"last, MEOW!"
    raw.close()  # no close frame: TCP just goes
    a.wait()
    assert a.results == [["last"]]


def test_shake_hands_raises_a_readable_error_after_answering(acceptor: Any) -> None:
    a = acceptor(sync.shake_hands)
    raw = RawClient(a.port)
    raw.send(upgrade_request(a.port, version="7"))
    status, headers, body = raw.read_response()
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    raw.read_eof()
    raw.close()
    a.wait()
    (error,) = a.errors
    assert isinstance(error, sync.HandshakeError)
    assert isinstance(error, UnsupportedVersion)
    assert error.status == HTTPStatus.UPGRADE_REQUIRED
    assert error.reason.encode() in body


def test_shake_hands_refuses_garbage_with_400(acceptor: Any) -> None:
    a = acceptor(sync.shake_hands)
    raw = RawClient(a.port)
    raw.send(b"\x00\x01\x02 not http\r\n\r\n")
    status, _, body = raw.read_response()
    assert status == 400
    assert body.strip()
    raw.close()
    a.wait()
    assert isinstance(a.errors[0], sync.HandshakeError)


def test_get_request_then_put_response_or_reject(acceptor: Any) -> None:
    def inspect(sock: socket.socket) -> str:
        request = sync.get_request(sock)
        if request.path == "/private":
            sync.reject(sock, HTTPStatus.FORBIDDEN, "members only")
            return "rejected"
        if request.path == "/gone":
            sync.put_response(sock, Response(HTTPStatus.GONE, body=b"moved away\n"))
            return "gone"
        ws = sync.put_response(sock)
        assert ws is not None
        ws.send(f"welcome to {request.path}")
        ws.close()
        return "accepted"

    a = acceptor(inspect)
    with pytest.raises(InvalidStatus) as info:
        sync.connect(f"ws://{HOST}:{a.port}/private")
    response: Any = info.value.response
    assert (response.status, response.body) == (403, b"members only\n")
    a.wait()
    with pytest.raises(InvalidStatus) as info:
        sync.connect(f"ws://{HOST}:{a.port}/gone")
    assert info.value.response.status == 410  # type: ignore[attr-defined]
    a.wait()
    with sync.connect(f"ws://{HOST}:{a.port}/lobby") as ws:
        assert ws.recv() == "welcome to /lobby"
    a.wait()
    assert sorted(a.results) == ["accepted", "gone", "rejected"]


def test_put_response_without_get_request_is_an_error() -> None:
    left, right = socket.socketpair()
    with left, right, pytest.raises(RuntimeError):
        sync.put_response(left)


def test_early_frames_sent_with_the_request_are_kept(acceptor: Any) -> None:
    a = acceptor(talk_to)
    raw = RawClient(a.port)
    raw.send(upgrade_request(a.port) + frame(OP_TEXT, b"eager"))
    assert raw.read_response()[0] == 101
    assert raw.read_frame()[2] == "滴水之恩当以涌泉相报".encode()
    assert raw.read_frame()[2] == b"eager, MEOW!"
    raw.send_frame(OP_CLOSE, b"\x03\xe8")
    assert raw.read_close()[0] == 1000
    raw.close()
    a.wait()
    assert a.results == [["eager"]]
