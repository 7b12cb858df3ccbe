"""A blocking echo server (``shakehands.sync``) in its own process, for the liveness tests.

``python sync_echo_server.py '{"ping_interval": 1, ...}'`` serves on a free port of 127.0.0.1,
prints ``listening on 127.0.0.1:PORT.``, and on SIGTERM shuts down (1001 to every client) and
exits 0 after printing one JSON line: how long ``shutdown()`` took and, per connection (keyed by
the request's query string), how many echoes ``send()`` accepted. The soft ``RLIMIT_NOFILE`` is
raised to the hard limit (at most 20 000) first, for the tests with more than 1 024 connections.
"""

from __future__ import annotations

import faulthandler
import json
import resource
import signal
import sys
import threading
import time
from typing import Any

from shakehands import sync
from shakehands.protocol.errors import ConnectionClosed


def main() -> None:
    faulthandler.register(signal.SIGUSR1)  # stacks on demand, for debugging
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 20000 if hard == resource.RLIM_INFINITY else min(hard, 20000)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    options: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    backlog = options.pop("backlog", 2048)
    accepted: dict[str, int] = {}
    lock = threading.Lock()

    def echo(ws: sync.ServerConnection) -> None:
        key = ws.request.query if ws.request is not None else ""
        count = 0
        try:
            for message in ws:
                ws.send(message)
                count += 1
                with lock:
                    accepted[key] = count  # send() returned: this echo was accepted
        except ConnectionClosed:
            pass

    server = sync.serve(echo, "127.0.0.1", 0, backlog=backlog, **options)
    timing: dict[str, float] = {}

    def stop() -> None:
        start = time.monotonic()
        server.shutdown()
        timing["shutdown"] = time.monotonic() - start

    stopper = threading.Thread(target=stop)
    signal.signal(signal.SIGTERM, lambda signum, frame: stopper.start())
    print(f"listening on 127.0.0.1:{server.port}.", flush=True)
    server.serve_forever()
    stopper.join()
    with lock:
        print(json.dumps({"shutdown": timing["shutdown"], "accepted": accepted}), flush=True)


if __name__ == "__main__":
    main()
