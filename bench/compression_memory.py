"""Server memory per connection for each permessage-deflate setting.

    python bench/compression_memory.py [--connections 300] [--message-size 4096]

For each setting, starts an echo server (coroutine API) in a fresh process, opens N client
connections from this process with the same settings, sends one 4 KiB text message each way on
every connection (so that compressor and decompressor exist, as they do on any connection that
has talked), and reads the server's resident memory (VmRSS) before and after. Prints a Markdown
table of KiB per connection. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import shakehands
from shakehands import DeflateOptions

ROOT = Path(__file__).resolve().parent.parent

#: name -> the server's ``compression=``, or (the server's, the client's) when they differ.
SETTINGS: dict[str, str | tuple[str, str]] = {
    "compression=None": "None",
    "default (window 12 bits, memLevel 5)": "DeflateOptions()",
    "window 15, memLevel 8 (zlib's defaults)": (
        "DeflateOptions(server_max_window_bits=15, client_max_window_bits=15, memory_level=8)"
    ),
    "window 10, memLevel 3": (
        "DeflateOptions(server_max_window_bits=10, client_max_window_bits=10, memory_level=3)"
    ),
    "default + both no_context_takeover": (
        "DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True)"
    ),
    # A client that offers a bare permessage-deflate (no client_max_window_bits, as some
    # libraries do): the server cannot ask for a smaller window and inflates with 15 bits.
    "default server, client offers no client_max_window_bits": (
        "DeflateOptions()",
        "DeflateOptions(client_max_window_bits=15)",
    ),
}

SERVER = """
import asyncio, sys
import shakehands
from shakehands import DeflateOptions

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with shakehands.serve(echo, "127.0.0.1", int(sys.argv[1]), compression={options},
                                ping_interval=None, max_queue=4):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(
    port: int, options: DeflateOptions | None, count: int, pid: int, size: int
) -> tuple[float, float]:
    # Text that compresses about as well as JSON does, not a repeated phrase: the inflater's
    # window is touched (and so resident) only as far as the messages reach into it.
    phrase = "shakehands measures memory " * size
    words = [f"{word}{n % 97}" for n, word in enumerate(phrase.split())]
    message = " ".join(words)[:size]
    connections = []
    for _ in range(count):
        ws = await shakehands.connect(
            f"ws://127.0.0.1:{port}/", compression=options, ping_interval=None
        )
        connections.append(ws)
    await asyncio.sleep(0.5)
    idle = rss_kib(pid)
    for ws in connections:
        await ws.send(message)
    for ws in connections:
        assert await ws.recv() == message
    await asyncio.sleep(0.5)
    talked = rss_kib(pid)
    for ws in connections:
        await ws.close()
    return float(idle), float(talked)


def measure(setting: str | tuple[str, str], count: int, size: int) -> tuple[float, float]:
    options_source, client_source = setting if isinstance(setting, tuple) else (setting, setting)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.replace("{options}", options_source), str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        base = rss_kib(server.pid)
        options = eval(client_source, {"DeflateOptions": DeflateOptions})  # noqa: S307
        idle, talked = asyncio.run(load(port, options, count, server.pid, size))
        return (idle - base) / count, (talked - base) / count
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument(
        "--message-size", type=int, default=4096, help="characters per message (default 4096)"
    )
    args = parser.parse_args()
    version = sys.version.split()[0]
    print(
        f"Server RSS per connection, {args.connections} connections, one message of "
        f"{args.message_size} characters each way, Python {version}"
    )
    print()
    print("| setting | idle, handshake only (KiB) | after one message each way (KiB) |")
    print("|---|---|---|")
    for name, source in SETTINGS.items():
        idle, talked = measure(source, args.connections, args.message_size)
        print(f"| {name} | {idle:.1f} | {talked:.1f} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
