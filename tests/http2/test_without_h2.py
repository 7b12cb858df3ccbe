"""Without the ``h2`` package: HTTP/1.1 only, said in a log line; ``http2=True`` is an error.

Each case runs in a fresh interpreter where a meta path finder refuses to import ``h2`` (as if
the ``http2`` extra were not installed); the server and client are real, on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

BLOCK_H2 = """
import sys
class BlockH2:
    def find_spec(self, name, path=None, target=None):
        if name == "h2" or name.startswith("h2."):
            raise ImportError("h2 is blocked in this test")
        return None
sys.meta_path.insert(0, BlockH2())
"""

SERVE = """
import asyncio, logging, ssl, sys
import shakehands
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
cert, key = sys.argv[1], sys.argv[2]

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    async with shakehands.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        assert server.config.http2 is False
        client_context = ssl.create_default_context(cafile=cert)
        client_context.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=client_context, server_hostname="localhost")
        print("ALPN", writer.get_extra_info("ssl_object").selected_alpn_protocol())
        writer.close()
        async with shakehands.connect(
            f"wss://localhost:{server.port}/", ssl=ssl.create_default_context(cafile=cert)
        ) as ws:
            await ws.send("hello")
            print("ECHO", await ws.recv())
    print("H2 IMPORTED", "h2" in sys.modules)

asyncio.run(main())
"""

EXPLICIT = """
import ssl, sys
import shakehands
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
async def echo(ws): pass
try:
    shakehands.serve(echo, "127.0.0.1", 0, ssl=context, http2=True)
except ImportError as exc:
    print("ERROR", exc)
try:
    shakehands.connect("wss://127.0.0.1:1/", http2=True)
except ImportError as exc:
    print("CLIENT ERROR", exc)
"""


def run(program: str, certificate: tuple[Path, Path]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    source = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", BLOCK_H2 + program, *map(str, certificate)],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
        check=False,
    )


def test_tls_server_without_h2_serves_http11_and_says_so(certificate: tuple[Path, Path]) -> None:
    result = run(SERVE, certificate)
    assert result.returncode == 0, result.stderr
    assert "ALPN http/1.1" in result.stdout
    assert "ECHO hello" in result.stdout
    assert "H2 IMPORTED False" in result.stdout
    assert "HTTP/2 off: the h2 package is not installed" in result.stderr
    assert "shakehands[http2]" in result.stderr


def test_http2_true_without_h2_names_the_extra(certificate: tuple[Path, Path]) -> None:
    result = run(EXPLICIT, certificate)
    assert result.returncode == 0, result.stderr
    assert "ERROR http2=True needs the h2 package: pip install 'shakehands[http2]'" in (
        result.stdout
    )
    # The client says the same, before any I/O (port 1: nothing is connected to).
    assert "CLIENT ERROR http2=True needs the h2 package: pip install 'shakehands[http2]'" in (
        result.stdout
    )


def test_importing_shakehands_does_not_import_h2() -> None:
    program = (
        "import sys, shakehands, shakehands.http2\n"
        "print(sorted(m for m in sys.modules if m == 'h2' or m.startswith('h2.')))"
    )
    source = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "PYTHONPATH": str(source)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
