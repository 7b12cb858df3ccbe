"""Fan-out benchmark: one message to 1 000 and 10 000 clients, in memory and through Redis.

Run: ``python bench/broadcast.py`` (needs ``redis-server`` on PATH for the Redis rows, and the
``redis`` package: ``pip install -e '.[dev]'``). Options: ``--clients 1000 10000``,
``--messages 20``, ``--size 100``, ``--latency 500``, ``--redis URL`` to use a running Redis instead
of starting one.

What it measures (everything on 127.0.0.1):

1. Fan-out. A server process (this one) holds N client connections subscribed to one topic of a
   :class:`shakehands.Hub`; the clients live in a child process, which counts what arrives. The
   server publishes M messages, one after the other.

   - ``broadcast() call``: in memory, publishing *is* the broadcast (framing once, queueing and
     writing to every socket); its time is the server's CPU cost per delivery.
   - ``all received``: from the first publication until the client process has counted all N x M
     messages; on this 2-core machine the receiving process (parsing N x M frames in Python) is
     usually the limit, not the server.
   - With Redis, each publication goes to redis-server and back to the server's one subscription
     before the broadcast.

2. ``--call-cpu`` (alone, instead of the rest): the server CPU of one ``broadcast()`` call to
   N connections (``--clients``), per API (callback, coroutine). The clients are raw sockets of
   another process that completed the handshake and do not read during the calls (100-byte
   frames fit in the socket buffers), so the call's process CPU time is the server's cost per
   delivery; a bare ``transport.write`` loop and a bare ``socket.send`` loop over the same
   connections give the ceiling. ``--messages`` calls per run, median per run.

3. End-to-end latency across two processes: two ``python -m shakehands chat --redis`` servers; a
   client of the first sends timestamped messages, a client of the second receives them.
   For comparison, the same with both clients on one in-memory chat server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

import shakehands
from shakehands import Hub, RedisBackend

HOST = "127.0.0.1"
TOPIC = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# The client process
# ---------------------------------------------------------------------------------------------


def client_process(
    port: int, count: int, expected: int, pipe: Connection, compression: str | None
) -> None:
    """Open ``count`` connections, report ready, count messages, report when all arrived."""
    asyncio.run(_clients(port, count, expected, pipe, compression))


async def _clients(
    port: int, count: int, expected: int, pipe: Connection, compression: str | None
) -> None:
    uri = f"ws://{HOST}:{port}/"
    received = 0
    done = asyncio.get_running_loop().create_future()

    async def reader(ws: Any) -> None:
        nonlocal received
        async for _ in ws:
            received += 1
            if received == expected and not done.done():
                done.set_result(time.monotonic())

    clients: list[Any] = []
    readers = []
    for start in range(0, count, 250):
        batch = await asyncio.gather(
            *(
                shakehands.connect(
                    uri, compression=compression, ping_interval=None, open_timeout=60
                )
                for _ in range(start, min(count, start + 250))
            )
        )
        clients.extend(batch)
    for ws in clients:
        readers.append(asyncio.create_task(reader(ws)))
    pipe.send("ready")
    finished = await done
    pipe.send(finished)
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "close"
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Fan-out
# ---------------------------------------------------------------------------------------------


COMPRESSION: dict[str, Any] = {
    "none": None,
    # One compression per broadcast, shared by every connection.
    "shared": shakehands.DeflateOptions(server_no_context_takeover=True),
    # The default: each connection's compressor keeps its context, so each compresses.
    "per-connection": "deflate",
}


async def fan_out(
    clients: int, messages: int, size: int, redis_url: str | None, compression: str = "none"
) -> dict[str, float]:
    hub = Hub(RedisBackend(redis_url) if redis_url else None)
    ready = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        await hub.subscribe(ws, TOPIC)
        if len(hub.subscribers(TOPIC)) == clients:
            ready.set()
        await ws.wait_closed()

    async with (
        hub,
        shakehands.serve(
            handler,
            HOST,
            0,
            compression=COMPRESSION[compression],
            ping_interval=None,
            open_timeout=60,
            backlog=4096,
        ) as server,
    ):
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=client_process,
            args=(
                server.port,
                clients,
                clients * messages,
                child,
                None if compression == "none" else "deflate",
            ),
        )
        process.start()
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, parent.recv) == "ready"
        await asyncio.wait_for(ready.wait(), 120)
        # Text that compresses like chat messages do (not a run of one letter).
        words = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while")
        payload = " ".join(words[i % len(words)] for i in range(size))[:size]
        call_times = []
        start = time.monotonic()
        for _ in range(messages):
            t0 = time.perf_counter()
            await hub.publish(TOPIC, payload)
            call_times.append(time.perf_counter() - t0)
            await asyncio.sleep(0)  # let the loop write and read between messages
        finished = await loop.run_in_executor(None, parent.recv)
        parent.send("close")
        await loop.run_in_executor(None, process.join, 60)
        elapsed = finished - start
        result = {
            "all_received_per_s": clients * messages / elapsed,
            "elapsed_s": elapsed,
            "dropped": hub.counters.dropped,
        }
        if redis_url is None:
            result["broadcast_call_per_s"] = clients / statistics.median(call_times)
            result["broadcast_call_ms"] = statistics.median(call_times) * 1000
        return result


# ---------------------------------------------------------------------------------------------
# CPU of the broadcast() call (--call-cpu)
# ---------------------------------------------------------------------------------------------

#: The clients of --call-cpu: COUNT raw connections that complete the handshake, then wait for
#: a line on stdin, drain what arrived and print how many bytes.
RAW_CLIENTS = r"""
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
request = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
socks = []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    socks.append(sock)
print("ready", flush=True)
sys.stdin.readline()
total = 0
for sock in socks:
    sock.setblocking(False)
    try:
        while data := sock.recv(1 << 20):
            total += len(data)
    except BlockingIOError:
        pass
print(total, flush=True)
"""


async def call_cpu(api: str, mode: str, clients: int, calls: int, size: int) -> float:
    """Median process CPU seconds of one fan-out to ``clients`` connections (see --call-cpu).

    ``mode``: ``"broadcast"`` (the function), ``"write"`` (a bare ``transport.write`` loop of
    the same frame) or ``"send"`` (a bare ``socket.send`` loop; asyncio's transports only).
    """
    from shakehands.asyncio.broadcast import broadcast
    from shakehands.protocol.frames import Opcode, serialize_frame

    conns: list[Any] = []

    class Hold(shakehands.Listener):
        def on_open(self, ws: Any) -> None:
            conns.append(ws)

    async def hold(ws: Any) -> None:
        conns.append(ws)
        await ws.wait_closed()

    options: dict[str, Any] = {"compression": None, "ping_interval": None, "open_timeout": 60}
    context: Any = (
        shakehands.serve_callbacks(Hold(), HOST, 0, backlog=4096, **options)
        if api == "callback"
        else shakehands.serve(hold, HOST, 0, backlog=4096, **options)
    )
    message = "x" * size
    frame = serialize_frame(Opcode.TEXT, message.encode())
    async with context as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RAW_CLIENTS, str(server.port), str(clients),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stdin is not None
        assert (await process.stdout.readline()).strip() == b"ready"
        while len(conns) < clients:
            await asyncio.sleep(0.01)
        times = []
        for _ in range(calls):
            start = time.process_time()
            if mode == "broadcast":
                assert broadcast(conns, message).sent == clients
            elif mode == "write":
                for ws in conns:
                    ws.transport.write(frame)
            else:
                for ws in conns:
                    ws.transport._sock.send(frame)  # asyncio's socket transports only
            times.append(time.process_time() - start)
            await asyncio.sleep(0.05)  # let the loop run between calls
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        received = int((await process.stdout.readline()).strip())
        await process.wait()
        assert received == clients * calls * len(frame), "not every frame arrived"
        for ws in conns:
            ws.transport.abort()
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Latency across processes
# ---------------------------------------------------------------------------------------------


def start_chat(*args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shakehands", "chat", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "Chat server on" not in line:
        raise RuntimeError(f"chat server did not start: {line!r}")
    return process, port


async def latency(count: int, first_port: int, second_port: int) -> dict[str, float]:
    sender = await shakehands.connect(f"ws://{HOST}:{first_port}/lat", compression=None)
    receiver = await shakehands.connect(f"ws://{HOST}:{second_port}/lat", compression=None)
    for ws in (sender, receiver):
        assert json.loads(await ws.recv())["type"] == "joined"
    samples = []

    async def receive() -> None:
        while len(samples) < count:
            event = json.loads(await receiver.recv())
            if event["type"] == "message":
                samples.append(time.monotonic() - float(event["text"]))

    task = asyncio.create_task(receive())
    for _ in range(count):
        await sender.send(repr(time.monotonic()))
        await asyncio.sleep(0.002)
    await asyncio.wait_for(task, 60)
    await sender.close()
    await receiver.close()
    samples.sort()
    return {
        "p50_ms": samples[len(samples) // 2] * 1000,
        "p90_ms": samples[int(len(samples) * 0.9)] * 1000,
        "p99_ms": samples[int(len(samples) * 0.99)] * 1000,
        "max_ms": samples[-1] * 1000,
    }


# ---------------------------------------------------------------------------------------------


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server not found")
    port = free_port()
    process = subprocess.Popen(
        [executable, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://{HOST}:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def show(clients: int, bus: str, result: dict[str, float]) -> None:
    call = f"{result['broadcast_call_ms']:.1f} ms" if "broadcast_call_ms" in result else "-"
    per_s = f"{result['broadcast_call_per_s']:,.0f}" if "broadcast_call_per_s" in result else "-"
    received = f"{result['all_received_per_s']:,.0f}"
    print(f"| {clients:,} | {bus} | {call} | {per_s} | {received} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--latency", type=int, default=500, help="latency samples")
    parser.add_argument("--redis", help="use this Redis rather than starting redis-server")
    parser.add_argument("--uvloop", action="store_true", help="run the server on uvloop")
    parser.add_argument(
        "--compression",
        choices=sorted(COMPRESSION),
        nargs="+",
        default=["none"],
        help="permessage-deflate setups to compare (in memory); default: none",
    )
    parser.add_argument(
        "--call-cpu",
        action="store_true",
        help="only the server CPU of the broadcast() call, per API, against bare write loops",
    )
    parser.add_argument("--runs", type=int, default=3, help="--call-cpu: interleaved runs")
    args = parser.parse_args()
    run: Any = asyncio.run
    if args.uvloop:
        import uvloop

        def run(coroutine: Any) -> Any:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coroutine)

    if args.call_cpu:
        loop_name = "uvloop" if args.uvloop else "asyncio"
        print(
            f"broadcast() call, server CPU per delivery, {loop_name}, {args.messages} calls of "
            f"{args.size} bytes per run, {args.runs} interleaved runs (range of the medians)"
        )
        print("| clients | what | deliveries/s of server CPU |")
        print("|---:|---|---:|")
        setups = [("callback", "broadcast"), ("coroutine", "broadcast"), ("callback", "write")]
        if not args.uvloop:
            setups.append(("callback", "send"))
        for clients in args.clients:
            rates: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.runs):
                for api, mode in setups:
                    seconds = run(call_cpu(api, mode, clients, args.messages, args.size))
                    rates.setdefault((api, mode), []).append(clients / seconds)
            for (api, mode), values in rates.items():
                what = f"{api} API, broadcast()" if mode == "broadcast" else f"bare {mode} loop"
                print(f"| {clients:,} | {what} | {min(values):,.0f}-{max(values):,.0f} |")
        return
    redis_process = None
    with tempfile.TemporaryDirectory() as directory:
        redis_url = args.redis
        if redis_url is None:
            try:
                redis_process, redis_url = start_redis(directory)
            except RuntimeError as exc:
                print(f"no Redis rows: {exc}")
        try:
            version = sys.version.split()[0]
            loop_name = "uvloop" if args.uvloop else "asyncio"
            print(f"shakehands {shakehands.__version__}, Python {version}, {os.cpu_count()} "
                  f"CPUs, {loop_name}; {args.messages} messages of {args.size} bytes")  # fmt: skip
            print("| clients | bus | broadcast() call | deliveries/s (call) | "
                  "deliveries/s (all received) |")  # fmt: skip
            print("|---:|---|---:|---:|---:|")
            for clients in args.clients:
                for bus in ("memory", "redis"):
                    if bus == "redis" and redis_url is None:
                        continue
                    url = redis_url if bus == "redis" else None
                    show(clients, bus, run(fan_out(clients, args.messages, args.size, url)))
            for clients in args.clients:
                for setup in args.compression:
                    if setup != "none":
                        result = run(fan_out(clients, args.messages, args.size, None, setup))
                        show(clients, f"memory, deflate {setup}", result)
            if args.latency:
                rows = []
                memory, port = start_chat()
                try:
                    rows.append(("one process, in-memory hub", asyncio.run(
                        latency(args.latency, port, port))))  # fmt: skip
                finally:
                    memory.terminate()
                    memory.wait()
                if redis_url is not None:
                    first, port1 = start_chat("--redis", redis_url)
                    second, port2 = start_chat("--redis", redis_url)
                    try:
                        rows.append(("two processes through Redis", asyncio.run(
                            latency(args.latency, port1, port2))))  # fmt: skip
                    finally:
                        for process in (first, second):
                            process.terminate()
                            process.wait()
                print()
                print("| path | p50 | p90 | p99 | max |")
                print("|---|---:|---:|---:|---:|")
                for name, r in rows:
                    print(f"| {name} | {r['p50_ms']:.2f} ms | {r['p90_ms']:.2f} ms | "
                          f"{r['p99_ms']:.2f} ms | {r['max_ms']:.2f} ms |")  # fmt: skip
        finally:
            if redis_process is not None:
                redis_process.kill()
                redis_process.wait()


if __name__ == "__main__":
    main()
