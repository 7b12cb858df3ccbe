"""CPU time of the core's receive and send paths, for two source trees side by side.

    python bench/core_paths.py BEFORE_SRC AFTER_SRC [--rounds 9]

Each tree (a ``src`` directory, e.g. a copy of ``git archive`` output with the C extension
built in place) runs in a fresh process, alternating, ``--rounds`` times, with and without the C
extension (``SHAKEHANDS_NO_SPEEDUPS=1``). Each process times every case 7 times and reports the
median; the table shows the median over the rounds (and the minimum). Cases:
10 000 masked 256-byte text frames fed to ``Connection(Role.SERVER)`` in 64 KiB reads; a 1 MiB
binary message in 16 fragments; a 64 KiB compressed text message (a new connection with
``use_deflate`` each time); 10 000 ``send_text`` of 256 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

KEY = b"\x01\x02\x03\x04"


def cases() -> dict[str, tuple[Callable[[], None], int]]:
    """The cases, each with how many calls one timing averages over."""
    from shakehands.protocol import deflate
    from shakehands.protocol.connection import Connection, Role
    from shakehands.protocol.frames import serialize_frame

    stream = serialize_frame(1, b"x" * 256, mask=True, mask_key=KEY) * 10000
    reads = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    big = os.urandom(2**20)
    step = len(big) // 16
    fragments = b"".join(
        serialize_frame(
            2 if i == 0 else 0, big[i * step : (i + 1) * step], fin=i == 15, mask=True, mask_key=KEY
        )
        for i in range(16)
    )
    fragment_reads = [fragments[i : i + 65536] for i in range(0, len(fragments), 65536)]
    text64 = "".join(f"word{i % 1000} " for i in range(12000))[:65536]

    def codec() -> deflate.PerMessageDeflate:
        return deflate.PerMessageDeflate(
            local_no_context_takeover=False,
            remote_no_context_takeover=False,
            local_max_window_bits=15,
            remote_max_window_bits=15,
        )

    compressed = serialize_frame(
        1, codec().compress(text64.encode(), True), rsv1=True, mask=True, mask_key=KEY
    )
    message = "y" * 256

    def receive_small() -> None:
        conn = Connection(Role.SERVER)
        for read in reads:
            conn.receive_data(read)
        assert len(conn.events_received()) == 10000

    def receive_fragments() -> None:
        conn = Connection(Role.SERVER, max_message_size=None)
        for read in fragment_reads:
            conn.receive_data(read)
        assert conn.events_received() == [big]

    def receive_compressed() -> None:
        for _ in range(20):
            conn = Connection(Role.SERVER)
            conn.use_deflate(codec())
            conn.receive_data(compressed)
            assert conn.events_received() == [text64]

    def send() -> None:
        conn = Connection(Role.SERVER)
        for _ in range(10000):
            conn.send_text(message)
        assert len(conn.data_to_send()) == 10000

    return {
        "receive 10k x 256 B text": (receive_small, 3),
        "receive 1 MiB in 16 fragments": (receive_fragments, 40),
        "receive 64 KiB deflated text, x20": (receive_compressed, 10),
        "send_text 10k x 256 B": (send, 3),
    }


def measure() -> dict[str, float]:
    """In the child: the median CPU time of each case, in seconds."""
    out: dict[str, float] = {}
    for name, (case, calls) in cases().items():
        case()
        timings = []
        for _ in range(7):
            start = time.process_time()
            for _ in range(calls):
                case()
            timings.append((time.process_time() - start) / calls)
        out[name] = statistics.median(timings)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure()))
        return
    print("| path | build | before (ms) | after (ms) | change | min before | min after |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for build, flag in (("C", ""), ("pure Python", "1")):
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for which in ("before", "after"):
                env = {
                    **os.environ,
                    "SHAKEHANDS_NO_SPEEDUPS": flag,
                    "PYTHONPATH": getattr(args, which),
                }
                cmd = [sys.executable, __file__, args.before, args.after, "--child"]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                runs[which].append(json.loads(done.stdout))
        for name in runs["before"][0]:
            b = statistics.median(r[name] for r in runs["before"])
            a = statistics.median(r[name] for r in runs["after"])
            b_min = min(r[name] for r in runs["before"])
            a_min = min(r[name] for r in runs["after"])
            print(
                f"| {name} | {build} | {b * 1e3:.2f} | {a * 1e3:.2f} | {100 * (a - b) / b:+.1f} % "
                f"| {b_min * 1e3:.2f} | {a_min * 1e3:.2f} |"
            )


if __name__ == "__main__":
    main()
