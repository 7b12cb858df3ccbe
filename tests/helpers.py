"""Helpers shared by every test folder: the loopback host, free ports, RFC 6455 by hand, TLS.

Nothing here uses shakehands code: the opening-handshake pieces and the frame builders are
written from RFC 6455 so that the library is checked against a second implementation. What only
one front end needs (servers in threads, asyncio raw clients, ...) stays in that folder's helper
module (see ``tests/README.md``). ``make_certificate`` makes the self-signed certificate of the
TLS tests (the ``certificate`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

HOST = "127.0.0.1"
APIS = ["coroutine", "callback"]  # the two server APIs of shakehands.asyncio
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Opening handshake
# ---------------------------------------------------------------------------------------------


def make_key() -> str:
    """A fresh Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def upgrade_request(
    port: int,
    path: str = "/",
    *,
    key: str | None = None,
    method: str = "GET",
    version: str = "13",
    extra: list[tuple[str, str]] | None = None,
    upgrade: bool = True,
) -> bytes:
    """An HTTP/1.1 upgrade request for ``HOST:port``; ``extra`` headers are added as given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if upgrade:
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key or make_key()}",
            f"Sec-WebSocket-Version: {version}",
        ]
    lines += [f"{name}: {value}" for name, value in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status code and the (lower-cased) headers of an HTTP response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``mask`` repeated (masking and unmasking are the same)."""
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def frame_header(opcode: int, length: int, *, fin: bool = True, mask: bool = True) -> bytes:
    """The header of a frame of ``length`` payload bytes, without the masking key."""
    b0 = opcode | (0x80 if fin else 0)
    mbit = 0x80 if mask else 0
    if length < 126:
        return bytes((b0, mbit | length))
    if length < 65536:
        return struct.pack("!BBH", b0, mbit | 126, length)
    return struct.pack("!BBQ", b0, mbit | 127, length)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> bytes:
    """A frame as a client sends it (masked by default)."""
    header = frame_header(opcode, len(payload), fin=fin, mask=mask)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + mask_payload(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame."""
    return struct.pack("!H", code) + reason.encode()


def close_code_and_reason(payload: bytes) -> tuple[int, str]:
    """What a close frame's payload says; 1005 (no status) for an empty one."""
    if not payload:
        return 1005, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, in ``directory``
    (made with the ``cryptography`` package, else the ``openssl`` command); None if neither
    works."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if _make_cert_with_cryptography(cert, key) or _make_cert_with_openssl(cert, key):
        return cert, key
    return None


def _make_cert_with_cryptography(cert: Path, key: Path) -> bool:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return False
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return True


def _make_cert_with_openssl(cert: Path, key: Path) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        f"subjectAltName=IP:{HOST},DNS:localhost",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    ]
    result = subprocess.run(command, capture_output=True, timeout=30)
    return result.returncode == 0 and cert.exists() and key.exists()


# ---------------------------------------------------------------------------------------------
# Type checking a user's program
# ---------------------------------------------------------------------------------------------


def run_mypy(program: Path, source: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on ``program`` (in its own folder, without this project's settings),
    with the package found in ``source`` (the ``src`` folder of the tree under test: an
    installed copy of the package elsewhere must not be the one checked)."""
    environment = dict(os.environ, MYPYPATH=str(source))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        capture_output=True,
        text=True,
        cwd=program.parent,
        env=environment,
        timeout=600,
    )
