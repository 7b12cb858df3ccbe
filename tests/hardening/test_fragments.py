"""A message in a million one-byte fragments (security finding F1), against real servers.

A raw-socket peer starts a binary message and sends it one payload byte per frame (opcode 2,
then opcode 0, FIN clear, masked), hundreds of thousands of frames in big writes, answering the
server's pings in between. Each fragment used to be kept as its own Python object, about 160
bytes per payload byte: four such connections pinned 668 MiB of a server bounded at 1 MiB per
message. Now a fragmented message costs about its size, and the server's memory growth must stay
within ``connections x max_message_size x a small factor`` plus a margin, on every API (the
coroutine and callback APIs through ``python -m shakehands echo``, the blocking API through
``shakehands.sync.serve``), with the C speedups and with the pure-Python fallback.

The server runs in a child process so that its resident memory can be read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time

import pytest

import shakehands

from ..asyncio.asyncio_helpers import sock_handshake
from ..helpers import HOST, OP_BINARY, OP_PING, OP_PONG, frame
from .hardening_helpers import EchoProcess, proc_available

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not proc_available(), reason="needs /proc to read the server's memory"),
]

KiB = 1024
MiB = 2**20
MAX_MESSAGE_SIZE = MiB  # the servers' default
#: Allowance for the interpreter itself (allocator arenas, the socket reads, a thread's stack
#: for the blocking API): the same 16 MiB margin as the flood tests.
MARGIN = 16 * MiB
MASK = b"\x5a\x17\xc3\x9e"
#: One fragment, masked, with one payload byte: 2 bytes of header, 4 of mask, 1 of payload.
FRAGMENT = 7
BATCH = FRAGMENT * 20_000  # 140 KB per sendall(), cut at frame boundaries

SYNC_ECHO = """
from shakehands import sync

def echo(ws):
    for message in ws:
        ws.send(message)

server = sync.serve(echo, "127.0.0.1", 0)
print(f"Echo server (blocking API) listening on 127.0.0.1:{server.port}.", flush=True)
server.serve_forever()
"""


class SyncEchoProcess(EchoProcess):
    """An echo server of the blocking API (``shakehands.sync.serve``) in a child process."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", SYNC_ECHO]


@pytest.fixture(params=["coroutine", "callback", "blocking"])
def server_api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["C", "python"])
def speedups(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server child inherits the environment: ``python`` forces the pure-Python path."""
    if request.param == "python":
        monkeypatch.setenv("SHAKEHANDS_NO_SPEEDUPS", "1")
    else:
        monkeypatch.delenv("SHAKEHANDS_NO_SPEEDUPS", raising=False)
    return str(request.param)


def start_server(api: str) -> EchoProcess:
    return SyncEchoProcess() if api == "blocking" else EchoProcess("--api", api)


def one_byte_fragments(payload: bytes, *, fin: bool) -> bytes:
    """``payload`` as a binary message of one-byte masked fragments, the last with FIN if
    ``fin``: built in a few passes (a million frames in a fraction of a second)."""
    n = len(payload)
    wire = bytearray(bytes((0x00, 0x81)) + MASK + b"\x00") * n
    # A one-byte payload is masked with the key's first byte only.
    table = bytes(i ^ MASK[0] for i in range(256))
    wire[6::FRAGMENT] = payload.translate(table)
    wire[0] = OP_BINARY
    if fin:
        wire[-FRAGMENT] |= 0x80
    return bytes(wire)


class Peer:
    """A raw connection that sends fragments in big writes and answers the server's pings."""

    def __init__(self, sock: socket.socket, early: bytes) -> None:
        self.sock = sock
        self.buffer = bytearray(early)
        self.pings: list[bytes] = []  # owed pongs, sent between two writes
        self.pongs: asyncio.Queue[bytes] = asyncio.Queue()
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.fragments: list[bytes] = []
        self.reader = asyncio.ensure_future(self.read())

    @classmethod
    async def connect(cls, port: int) -> Peer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        early = await sock_handshake(sock, port)
        return cls(sock, early)

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.parse_one():
                pass
            data = await loop.sock_recv(self.sock, 256 * KiB)
            if not data:
                return
            self.buffer += data

    def parse_one(self) -> bool:
        """Take one whole (unmasked) frame from the server off the buffer, if there is one."""
        buf = self.buffer
        if len(buf) < 2:
            return False
        b0, b1 = buf[0], buf[1]
        length, pos = b1 & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return False
            (length,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return False
            (length,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if len(buf) < pos + length:
            return False
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        opcode = b0 & 0x0F
        if opcode == OP_PING:
            self.pings.append(payload)
        elif opcode == OP_PONG:
            self.pongs.put_nowait(payload)
        elif opcode in (0x0, 0x1, 0x2):
            self.fragments.append(payload)
            if b0 & 0x80:
                self.messages.put_nowait(b"".join(self.fragments))
                self.fragments = []
        return True

    async def send(self, data: bytes) -> None:
        """Send whole frames, in writes of ``BATCH`` bytes, and the pongs owed in between."""
        loop = asyncio.get_running_loop()
        for offset in range(0, len(data), BATCH):
            while self.pings:
                await loop.sock_sendall(self.sock, frame(OP_PONG, self.pings.pop(0)))
            await loop.sock_sendall(self.sock, data[offset : offset + BATCH])

    async def barrier(self) -> None:
        """Wait until the server has parsed everything sent so far: ping, and wait for the pong
        (frames are parsed in order)."""
        token = os.urandom(8)
        await self.send(frame(OP_PING, token))
        while await asyncio.wait_for(self.pongs.get(), 60) != token:
            pass

    def close(self) -> None:
        self.reader.cancel()
        self.sock.close()


async def baseline_of(echo: EchoProcess) -> int:
    # Warm up (imports, a first connection and message), then take the baseline.
    async with shakehands.connect(f"ws://{HOST}:{echo.port}/") as ws:
        await ws.send(b"warm-up" * 1000)
        await ws.recv()
    await asyncio.sleep(0.2)
    return echo.status("VmRSS")


@pytest.mark.timeout(90)
async def test_unfinished_one_byte_fragments_are_bounded(server_api: str, speedups: str) -> None:
    # Two connections, 400 000 fragments each (400 KB counted against the 1 MiB limit), and the
    # messages never finished. Before the fix: about 64 MiB pinned per connection.
    connections, fragments = 2, 400_000
    data = one_byte_fragments(os.urandom(fragments), fin=False)
    start = time.perf_counter()
    with start_server(server_api) as echo:
        async with asyncio.timeout(80):
            baseline = await baseline_of(echo)
            peers = [await Peer.connect(echo.port) for _ in range(connections)]
            try:
                await asyncio.gather(*(peer.send(data) for peer in peers))
                await asyncio.gather(*(peer.barrier() for peer in peers))
                rss = echo.status("VmRSS")
                peak = echo.status("VmHWM")
                # Still serving, and the peers' connections are still open.
                async with shakehands.connect(f"ws://{HOST}:{echo.port}/") as ws:
                    await ws.send("still serving")
                    assert await ws.recv() == "still serving"
                await asyncio.gather(*(peer.barrier() for peer in peers))
            finally:
                for peer in peers:
                    peer.close()
    growth = peak - baseline
    bound = connections * 2 * MAX_MESSAGE_SIZE + MARGIN
    print(
        f"\n[fragments {server_api} {speedups}] {connections} x {fragments} one-byte fragments "
        f"in {time.perf_counter() - start:.1f} s: baseline RSS {baseline / MiB:.1f} MiB, "
        f"RSS growth {(rss - baseline) / MiB:.1f} MiB, peak growth {growth / MiB:.1f} MiB "
        f"(bound {bound / MiB:.0f} MiB)"
    )
    assert growth < bound


@pytest.mark.timeout(90)
async def test_message_of_a_million_one_byte_fragments(server_api: str, speedups: str) -> None:
    # Within the limit (1 000 000 bytes < 1 MiB): the message is delivered and echoed. Before
    # the fix its reassembly peaked at +315 MiB.
    payload = os.urandom(1_000_000)
    data = one_byte_fragments(payload, fin=True)
    start = time.perf_counter()
    with start_server(server_api) as echo:
        async with asyncio.timeout(80):
            baseline = await baseline_of(echo)
            peer = await Peer.connect(echo.port)
            try:
                await peer.send(data)
                echoed = await asyncio.wait_for(peer.messages.get(), 60)
                peak = echo.status("VmHWM")
            finally:
                peer.close()
    assert echoed == payload
    growth = peak - baseline
    # The message being assembled, the delivered copy, and its echo in the write buffer.
    bound = 4 * MAX_MESSAGE_SIZE + MARGIN
    print(
        f"\n[fragments {server_api} {speedups}] 1 message of {len(payload)} one-byte fragments "
        f"echoed in {time.perf_counter() - start:.1f} s: peak RSS growth {growth / MiB:.1f} MiB "
        f"(bound {bound / MiB:.0f} MiB)"
    )
    assert growth < bound
