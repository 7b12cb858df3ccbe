"""100 WebSockets over one HTTP/2 connection against 100 over HTTP/1.1 connections.

    python bench/http2.py [--websockets 100] [--seconds 3]

For each transport, starts a TLS echo server (coroutine API, ``compression=None``) in a fresh
process, then from this process opens N WebSockets: over HTTP/2, one TLS connection and N
extended CONNECT streams, with ``h2`` driven directly (tests/http2/h2_helpers.py) and with our
client (``shakehands.http2.connect_session``);
over HTTP/1.1, N TLS connections with ``shakehands.connect``. It reports the server's resident
memory per WebSocket (VmRSS after each WebSocket has echoed one message, minus before), the
handshake rate (N opened at once, until the last is open) and echo round trips per second
(every WebSocket sends 32 bytes and waits for them back, all N at once, for ``--seconds``).
The client is Python on the same machine: for msg/s it is the bottleneck of both runs, so the
numbers compare the two transports as a Python client sees them. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import make_certificate  # noqa: E402
from tests.http2.h2_helpers import H2Client  # noqa: E402

import shakehands  # noqa: E402
from bench.compression_memory import free_port, rss_kib  # noqa: E402

SERVER = """
import asyncio, ssl, sys
import shakehands

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    async with shakehands.serve(echo, "127.0.0.1", int(sys.argv[1]), ssl=context,
                                compression=None, ping_interval=None,
                                http2_max_streams=1000):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main())
"""

MESSAGE = "x" * 32


async def run_http2(
    port: int, cert: tuple[Path, Path], n: int, seconds: float, pid: int
) -> dict[str, float]:
    base = rss_kib(pid)
    start = time.perf_counter()
    client = await H2Client.open(port, cert)
    streams = [client.websocket() for _ in range(n)]
    for stream in streams:
        await client.accepted(stream)
    handshakes = n / (time.perf_counter() - start)
    for stream in streams:
        client.send_text(stream, MESSAGE)
    for stream in streams:
        assert await client.message(stream) == MESSAGE
    await asyncio.sleep(0.3)
    memory = (rss_kib(pid) - base) / n
    count = 0
    deadline = time.perf_counter() + seconds
    begin = time.perf_counter()

    async def loop(stream: object) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            client.send_text(stream, MESSAGE)  # type: ignore[arg-type]
            assert await client.message(stream) == MESSAGE  # type: ignore[arg-type]
            count += 1

    await asyncio.gather(*(loop(stream) for stream in streams))
    rate = count / (time.perf_counter() - begin)
    await client.close()
    return {"kib": memory, "handshakes": handshakes, "msgs": rate}


async def run_http11(
    port: int, cert: tuple[Path, Path], n: int, seconds: float, pid: int
) -> dict[str, float]:
    base = rss_kib(pid)
    context = ssl.create_default_context(cafile=str(cert[0]))
    context.set_alpn_protocols(["http/1.1"])
    start = time.perf_counter()
    connections = await asyncio.gather(
        *(
            shakehands.connect(
                f"wss://localhost:{port}/", ssl=context, compression=None, ping_interval=None
            )
            for _ in range(n)
        )
    )
    handshakes = n / (time.perf_counter() - start)
    for ws in connections:
        await ws.send(MESSAGE)
    for ws in connections:
        assert await ws.recv() == MESSAGE
    await asyncio.sleep(0.3)
    memory = (rss_kib(pid) - base) / n
    count = 0
    deadline = time.perf_counter() + seconds
    begin = time.perf_counter()

    async def loop(ws: shakehands.ClientConnection) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await ws.send(MESSAGE)
            assert await ws.recv() == MESSAGE
            count += 1

    await asyncio.gather(*(loop(ws) for ws in connections))
    rate = count / (time.perf_counter() - begin)
    for ws in connections:
        await ws.close()
    return {"kib": memory, "handshakes": handshakes, "msgs": rate}


async def run_http2_ours(
    port: int, cert: tuple[Path, Path], n: int, seconds: float, pid: int
) -> dict[str, float]:
    """As :func:`run_http2`, with our client: one ``connect_session``, N ``session.connect``."""
    from shakehands.http2 import connect_session

    base = rss_kib(pid)
    context = ssl.create_default_context(cafile=str(cert[0]))
    start = time.perf_counter()
    session = await connect_session(
        f"wss://localhost:{port}/", ssl=context, compression=None, ping_interval=None
    ).open()
    connections = await asyncio.gather(*(session.connect("/") for _ in range(n)))
    handshakes = n / (time.perf_counter() - start)
    for ws in connections:
        await ws.send(MESSAGE)
    for ws in connections:
        assert await ws.recv() == MESSAGE
    await asyncio.sleep(0.3)
    memory = (rss_kib(pid) - base) / n
    count = 0
    deadline = time.perf_counter() + seconds
    begin = time.perf_counter()

    async def loop(ws: shakehands.ClientConnection) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await ws.send(MESSAGE)
            assert await ws.recv() == MESSAGE
            count += 1

    await asyncio.gather(*(loop(ws) for ws in connections))
    rate = count / (time.perf_counter() - begin)
    await session.close()
    return {"kib": memory, "handshakes": handshakes, "msgs": rate}


RUNS = {
    "HTTP/2, h2-driven client": run_http2,
    "HTTP/2, shakehands client": run_http2_ours,
    "HTTP/1.1": run_http11,
}


def measure(kind: str, cert: tuple[Path, Path], n: int, seconds: float) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(cert[0]), str(cert[1])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        return asyncio.run(RUNS[kind](port, cert, n, seconds, server.pid))
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--websockets", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cert = make_certificate(Path(tmp))
        assert cert is not None, "cannot make a certificate (cryptography or openssl)"
        print(
            f"{args.websockets} WebSockets, TLS, echo of 32 bytes, Python "
            f"{sys.version.split()[0]}\n"
        )
        print("| transport | server KiB per WebSocket | WebSockets opened/s | round trips/s |")
        print("|---|---|---|---|")
        for kind in RUNS:
            result = measure(kind, cert, args.websockets, args.seconds)
            connections = (
                "1 connection" if kind.startswith("HTTP/2") else f"{args.websockets} connections"
            )
            print(
                f"| {kind} ({connections}) "
                f"| {result['kib']:.1f} | {result['handshakes']:.0f} | {result['msgs']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
