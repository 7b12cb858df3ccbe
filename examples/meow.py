"""The seed's example program (websockets 0.1, 2010), ported line for line.

A server that accepts clients, greets them with a welcome message, checks for disconnects and
replies to all messages by echoing them back with an appended meow. Run it, then open a
WebSocket to ws://127.0.0.1:12345/ (``python -m shakehands client ws://127.0.0.1:12345/``).

Two changes from the Haskell: ``talk_loop`` loops instead of recursing (Python has no tail
calls), and ``get_frame`` returns ``None`` when the client has gone, so an empty message is
echoed rather than taken for a disconnect. An optional argument picks another port.
"""

import contextlib
import socket
import sys
import threading

from shakehands.sync import HandshakeError, ServerConnection, get_frame, put_frame, shake_hands

MEOW = ", MEOW!"


def put_str_ln(line: object) -> None:
    # One write per line: print() writes the text and the newline separately, so lines from
    # two client threads could interleave.
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def main(port: int = 12345) -> None:
    # The seed listened on every interface; a local demo needs only the loopback.
    sock = socket.create_server(("127.0.0.1", port))
    put_str_ln(f"Listening on port {port}.")
    while True:
        h, _ = sock.accept()
        threading.Thread(target=talk_to, args=(h,), daemon=True).start()


def talk_to(h: socket.socket) -> None:
    try:
        ws = shake_hands(h)
    except HandshakeError as error:
        put_str_ln(error)
    else:
        put_frame(ws, "滴水之恩当以涌泉相报")
        put_str_ln("Shook hands, sent welcome message.")
        talk_loop(ws)

    h.close()
    put_str_ln("Client quit, closed handle.")


def talk_loop(ws: ServerConnection) -> None:
    while True:
        msg = get_frame(ws)
        if msg is None:
            return
        if isinstance(msg, str):
            put_frame(ws, msg + MEOW)
        else:
            put_frame(ws, msg + MEOW.encode())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 12345)
