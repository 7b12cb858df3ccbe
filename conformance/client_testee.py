"""The shakehands client as an Autobahn|Testsuite testee (``wstest -m fuzzingserver``).

    python conformance/client_testee.py ws://127.0.0.1:9001 shakehands-client

Asks the fuzzing server for the number of cases, runs each one (echoing every message back until
the server closes), then asks it to write its reports.
"""

from __future__ import annotations

import asyncio
import sys

import shakehands


async def run_case(base: str, agent: str, case: int) -> None:
    uri = f"{base}/runCase?case={case}&agent={agent}"
    try:
        async with shakehands.connect(uri, max_message_size=None, ping_interval=None) as ws:
            async for message in ws:
                await ws.send(message)
    except (shakehands.ShakehandsError, OSError, TimeoutError):
        # The suite provokes failures on purpose; its report judges them, not us.
        pass


async def main(base: str, agent: str) -> None:
    async with shakehands.connect(f"{base}/getCaseCount") as ws:
        count = int(await ws.recv())
    print(f"running {count} cases", flush=True)
    for case in range(1, count + 1):
        await run_case(base, agent, case)
        if case % 50 == 0:
            print(f"  {case}/{count}", flush=True)
    async with shakehands.connect(f"{base}/updateReports?agent={agent}") as ws:
        await ws.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
