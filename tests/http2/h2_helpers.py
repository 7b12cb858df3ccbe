"""An HTTP/2 client driven with ``h2`` directly, over a real TLS socket to 127.0.0.1.

It is the peer of the HTTP/2 server tests: it opens streams (extended CONNECT for WebSockets,
plain GETs), can misbehave on purpose (floods, resets, a stream it never reads), and records
everything the server sends. The WebSocket framing on its streams is the sans-I/O core's client
role (``Connection(Role.CLIENT)``), so that the bytes are real RFC 6455 frames; the HTTP/2 side
is all ``h2``'s, no shakehands code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from shakehands.protocol.connection import Connection, Role, State
from shakehands.protocol.extensions.permessage_deflate import (
    DeflateOptions,
    client_accept,
    client_offer,
)

from ..helpers import HOST


def client_context(certificate: tuple[Path, Path], alpn: list[str] | None = None) -> ssl.SSLContext:
    """A TLS client context trusting the test certificate, offering ``alpn`` (h2 by default)."""
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.set_alpn_protocols(alpn or ["h2"])
    return context


@dataclass
class Stream:
    """What the server sent on one stream."""

    stream_id: int
    headers: dict[str, str] | None = None
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None
    #: Whether received DATA is acknowledged (a reader that never reads: False).
    reading: bool = True
    unacked: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The WebSocket client core of this stream (after a 200).
    ws: Connection | None = None
    messages: list[Any] = field(default_factory=list)
    #: Bytes to send that wait for the flow-control windows.
    pending: bytearray = field(default_factory=bytearray)

    @property
    def status(self) -> int | None:
        return None if self.headers is None else int(self.headers[":status"])


class H2Client:
    """One HTTP/2 connection to the server under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.streams: dict[int, Stream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.remote_settings = asyncio.Event()
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Every GOAWAY received, as ``(last_stream_id, error_code)``. GOAWAY frames are
        #: kept from ``h2``, whose state machine takes no frame after one (a graceful GOAWAY
        #: is followed by the streams' last frames).
        self.goaways: list[tuple[int, int]] = []
        self._frames = bytearray()

    @classmethod
    async def open(
        cls, port: int, certificate: tuple[Path, Path], *, settings: dict[int, int] | None = None
    ) -> H2Client:
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=client_context(certificate), server_hostname="localhost"
        )
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "h2"
        client = cls(reader, writer)
        client.conn.initiate_connection()
        # As browsers do (Chromium: 15 MiB), a connection window far above the streams' own,
        # so that a stream this client does not read cannot hold it all.
        client.conn.increment_flow_control_window(2**24)
        if settings:
            client.conn.update_settings(settings)
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read())
        await asyncio.wait_for(client.remote_settings.wait(), 10)
        return client

    @property
    def peer_extended_connect(self) -> bool:
        return bool(self.conn.remote_settings.enable_connect_protocol)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                data = self._without_goaway(data)
                for event in self.conn.receive_data(data):
                    self._event(event)
                self.flush()
                self.changed.set()
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed = True
            self.changed.set()
            for stream in self.streams.values():
                stream.changed.set()

    def _without_goaway(self, data: bytes) -> bytes:
        """``data`` with whole frames only, GOAWAY frames taken out (into :attr:`goaways`)."""
        self._frames += data
        kept = bytearray()
        buf = self._frames
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            frame, buf = buf[: 9 + length], buf[9 + length :]
            if frame[3] == 0x7:  # GOAWAY
                last = int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF
                self.goaways.append((last, int.from_bytes(frame[13:17], "big")))
            else:
                kept += frame
        self._frames = buf
        return bytes(kept)

    def send_raw(self, data: bytes) -> None:
        """Bytes on the socket, past ``h2`` (what it would not send)."""
        self.flush()
        self.writer.write(data)

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings.set()
            return
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            return
        if isinstance(event, h2.events.WindowUpdated):
            for each in [s for s in self.streams.values() if s.pending]:
                self.pump(each)
            return
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.headers = {str(n): str(v) for n, v in event.headers or []}
            if stream.status == 200 and stream.ws is not None:
                stream.ws.state = State.OPEN
        elif isinstance(event, h2.events.DataReceived):
            size = event.flow_controlled_length or 0
            stream.data += event.data or b""
            if stream.reading:
                self.conn.acknowledge_received_data(size, stream.stream_id)
            else:
                stream.unacked += size
            if stream.ws is not None and stream.reading:
                self._feed(stream)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
            if stream.ws is not None and stream.ws.state is State.CLOSED:
                # The closing handshake is over and the server ended its side: end ours.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.end_stream(stream.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = int(event.error_code or 0)
        stream.changed.set()

    def _feed(self, stream: Stream) -> None:
        assert stream.ws is not None
        data, stream.data = bytes(stream.data), bytearray()
        stream.ws.receive_data(data)
        stream.messages.extend(stream.ws.events_received())
        self._send_ws(stream)

    def _send_ws(self, stream: Stream) -> None:
        assert stream.ws is not None
        stream.pending += b"".join(stream.ws.data_to_send())
        self.pump(stream)

    def pump(self, stream: Stream) -> None:
        """Send what ``stream`` has pending, within the windows."""
        while stream.pending and stream.reset is None:
            try:
                window = self.conn.local_flow_control_window(stream.stream_id)
            except h2.exceptions.ProtocolError:
                return
            size = min(window, self.conn.max_outbound_frame_size, len(stream.pending))
            if size <= 0:
                break
            self.conn.send_data(stream.stream_id, bytes(stream.pending[:size]))
            del stream.pending[:size]
        self.flush()

    # -------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str = "/",
        extra: list[tuple[str, str]] | None = None,
        *,
        end: bool = True,
        pseudo: list[tuple[str, str]] | None = None,
    ) -> Stream:
        """Send a request's HEADERS; ``pseudo`` replaces the pseudo-headers entirely."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = (
            pseudo
            if pseudo is not None
            else [
                (":method", method),
                (":scheme", "https"),
                (":authority", f"localhost:{self.writer.get_extra_info('peername')[1]}"),
                (":path", path),
            ]
        )
        stream = self.streams[stream_id] = Stream(stream_id)
        self.conn.send_headers(stream_id, headers + (extra or []), end_stream=end)
        self.flush()
        return stream

    def websocket(
        self,
        path: str = "/",
        extra: list[tuple[str, str]] | None = None,
        *,
        compression: DeflateOptions | None = None,
        protocol: str | None = "websocket",
        version: str | None = "13",
    ) -> Stream:
        """Open an extended CONNECT stream (RFC 8441) with a client WebSocket core on it."""
        port = self.writer.get_extra_info("peername")[1]
        pseudo = [(":method", "CONNECT")]
        if protocol is not None:
            pseudo.append((":protocol", protocol))
        pseudo += [(":scheme", "https"), (":path", path), (":authority", f"localhost:{port}")]
        fields = list(extra or [])
        if version is not None:
            fields.append(("sec-websocket-version", version))
        if compression is not None:
            fields.append(("sec-websocket-extensions", client_offer(compression)))
        stream = self.request("CONNECT", pseudo=pseudo, extra=fields, end=False)
        stream.ws = Connection(Role.CLIENT, state=State.CONNECTING, max_message_size=None)
        stream.compression = compression  # type: ignore[attr-defined]
        return stream

    async def websockets(self, count: int) -> list[Stream]:
        """``count`` WebSocket streams (:meth:`websocket`), all opened, then each accepted."""
        streams = [self.websocket() for _ in range(count)]
        for stream in streams:
            await self.accepted(stream)
        return streams

    async def wait(self, stream: Stream, predicate: Any, timeout: float = 10) -> None:
        async def until() -> None:
            while not predicate(stream):
                stream.changed.clear()
                if self.closed and not predicate(stream):
                    raise ConnectionError("connection closed")
                await stream.changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def accepted(self, stream: Stream) -> None:
        await self.wait(stream, lambda s: s.headers is not None or s.reset is not None)
        assert stream.status == 200, (stream.headers, stream.reset)
        assert stream.ws is not None
        compression = getattr(stream, "compression", None)
        if compression is not None:
            assert stream.headers is not None
            offer = stream.headers.get("sec-websocket-extensions")
            deflate = client_accept([offer] if offer else [], compression)
            if deflate is not None:
                stream.ws.use_extension(deflate)

    def send_text(self, stream: Stream, text: str) -> None:
        assert stream.ws is not None
        stream.ws.send_text(text)
        self._send_ws(stream)

    def send_binary(self, stream: Stream, data: bytes) -> None:
        assert stream.ws is not None
        stream.ws.send_binary(data)
        self._send_ws(stream)

    def close_ws(self, stream: Stream, code: int = 1000) -> None:
        assert stream.ws is not None
        stream.ws.send_close(code)
        self._send_ws(stream)

    async def message(self, stream: Stream, timeout: float = 10) -> Any:
        await self.wait(
            stream,
            lambda s: any(isinstance(m, (str, bytes)) for m in s.messages) or s.ended,
            timeout,
        )
        for i, m in enumerate(stream.messages):
            if isinstance(m, (str, bytes)):
                return stream.messages.pop(i)
        raise AssertionError(f"stream ended without a message: {stream.messages}")

    def start_reading(self, stream: Stream) -> None:
        """A stream that was not reading reads again (acknowledges what it held)."""
        stream.reading = True
        if stream.unacked:
            self.conn.acknowledge_received_data(stream.unacked, stream.stream_id)
            stream.unacked = 0
        if stream.ws is not None:
            self._feed(stream)
        self.flush()

    async def wait_closed(self, timeout: float = 10) -> None:
        async def until() -> None:
            while not self.closed:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def h2_client(
    port: int, certificate: tuple[Path, Path], **kwargs: Any
) -> AsyncIterator[H2Client]:
    client = await H2Client.open(port, certificate, **kwargs)
    try:
        yield client
    finally:
        await client.close()
