"""One peer floods, another is served: how long does the good one wait?

    python -m bench.flood_fairness --api callback [--frames 1000000] [--runs 1]

Starts ``python -m shakehands echo --api API`` on 127.0.0.1, then at once

- a flooding client (a child process): one connection sending ``--frames`` empty masked binary
  frames in large writes (10 000 frames, 60 kB, per write), reading and dropping the echoes so
  that backpressure does not slow it down: a CPU flood, not a memory one;
- a good client (this process): round trips of a 16-byte message on one connection, and a new
  connection (TCP + handshake + close) every 5 round trips,

and prints the good client's p50 / p99 / max round trip and handshake time while the flood runs,
and how long the flood took (the flooder's throughput). Not a test: numbers for
``docs/security.md``; run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Any

HOST = "127.0.0.1"


def flooder(port: int, frames: int, ready: Any, done: Any) -> None:
    sock = socket.create_connection((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    received = [len(head.partition(b"\r\n\r\n")[2])]

    def drain() -> None:
        try:
            while data := sock.recv(1 << 20):
                received[0] += len(data)
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    batch = b"\x82\x80\x00\x00\x00\x00" * 10_000  # empty binary frames, zero mask
    ready.set()
    start = time.perf_counter()
    for _ in range(frames // 10_000):
        sock.sendall(batch)
    sent = time.perf_counter() - start
    # Wait for the echoes (2 bytes each): the server has handled the whole flood.
    deadline = time.monotonic() + 120
    while received[0] < 2 * frames and time.monotonic() < deadline:
        time.sleep(0.01)
    done.put((sent, time.perf_counter() - start, received[0] // 2))
    sock.close()


async def good_client(
    port: int, stop: threading.Event, idle: bool
) -> tuple[list[float], list[float]]:
    import shakehands

    if idle:  # the flood alone: its throughput
        while not stop.is_set():
            await asyncio.sleep(0.01)
        return [0.0], [0.0]

    uri = f"ws://{HOST}:{port}/"
    rtts: list[float] = []
    handshakes: list[float] = []
    async with shakehands.connect(uri, compression=None) as ws:
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            await ws.send(b"x" * 16)
            await ws.recv()
            rtts.append(time.perf_counter() - start)
            i += 1
            if i % 5 == 0:
                start = time.perf_counter()
                async with shakehands.connect(uri, compression=None):
                    handshakes.append(time.perf_counter() - start)
            await asyncio.sleep(0.001)
    return rtts, handshakes


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


def run(api: str, frames: int, idle: bool) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "shakehands", "echo", "--api", api, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        match = re.search(r":(\d+)\.$", server.stdout.readline().strip())
        assert match
        port = int(match.group(1))
        ready = multiprocessing.Event()
        done: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        process = multiprocessing.Process(target=flooder, args=(port, frames, ready, done))
        process.start()
        ready.wait()
        stop = threading.Event()
        result: list[tuple[float, float, int]] = []

        def wait_flood() -> None:
            result.append(done.get())
            stop.set()

        threading.Thread(target=wait_flood, daemon=True).start()
        rtts, handshakes = asyncio.run(good_client(port, stop, idle))
        process.join()
        sent, total, echoed = result[0]
        print(
            f"{api:9} flood {frames} frames: sent in {sent:.2f} s, all echoed in {total:.2f} s "
            f"({echoed / total / 1000:.0f} k msg/s) | good client: {len(rtts)} round trips "
            f"p50 {pct(rtts, 50):.1f} ms p99 {pct(rtts, 99):.1f} ms max {max(rtts) * 1000:.1f} ms"
            f" | {len(handshakes)} handshakes p50 {pct(handshakes, 50):.1f} ms "
            f"max {max(handshakes, default=0) * 1000:.1f} ms",
            flush=True,
        )
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api", choices=["coroutine", "callback"], action="append")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--flood-only", action="store_true", help="no good client")
    args = parser.parse_args()
    for _ in range(args.runs):
        for api in args.api or ["coroutine", "callback"]:
            run(api, args.frames, args.flood_only)


if __name__ == "__main__":
    main()
