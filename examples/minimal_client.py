"""The smallest front end: a blocking WebSocket client on a raw socket, driving the core.

    python -m shakehands &                                   # the seed's demo server
    python examples/minimal_client.py ws://127.0.0.1:12345/ hello world

prints the server's welcome, then ``hello, MEOW!`` and ``world, MEOW!``. Every front end of
shakehands (asyncio, callbacks, threads) is this loop with more care: write what the core
queued (``data_to_send``), feed it what the socket read (``receive_data``), act on the events
it hands back (``events_received``). The core decides everything else: the handshake, framing,
masking, UTF-8, limits, pongs and the closing handshake. See docs/architecture.md.
"""

from __future__ import annotations

import socket
import sys
from collections import deque

from shakehands.protocol.client import ClientProtocol
from shakehands.protocol.connection import Close, Event
from shakehands.protocol.http11 import Response


def talk(uri: str, messages: list[str]) -> list[str | bytes]:
    """Read the server's first message, then send each message and read one answer to each."""
    ws = ClientProtocol(uri)
    received: list[str | bytes] = []
    with socket.create_connection((ws.uri.host, ws.uri.port), timeout=10) as sock:
        events: deque[Event] = deque()

        def write() -> None:  # whatever the core queued: our frames, pongs, the close frame
            for data in ws.data_to_send():
                sock.sendall(data)

        def next_event() -> Event:  # read until the core has something to say
            while not events:
                data = sock.recv(65536)
                if data:
                    ws.receive_data(data)
                else:
                    ws.receive_eof()
                write()
                if ws.handshake_exc is not None:
                    raise ws.handshake_exc
                events.extend(ws.events_received())
                if not data and not events:
                    raise ConnectionError("the server closed the connection")
            return events.popleft()

        def next_message() -> str | bytes:
            while True:
                event = next_event()
                if isinstance(event, (str, bytes)):  # pings were answered by the core
                    return event
                if isinstance(event, Close):
                    raise ConnectionError(f"closed by the server: {event.code} {event.reason}")

        ws.send_request()
        write()
        assert isinstance(next_event(), Response)  # the 101: the connection is open
        received.append(next_message())
        for message in messages:
            ws.send_text(message)
            write()
            received.append(next_message())
        ws.send_close(1000, "bye")
        write()
        while not isinstance(next_event(), Close):  # the server's answer ends the handshake
            pass
    return received


if __name__ == "__main__":
    for answer in talk(sys.argv[1], sys.argv[2:]):
        print(answer)
