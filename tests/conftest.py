"""Fixtures shared by every test folder (real sockets on 127.0.0.1, no mocks)."""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import APIS, make_certificate
from .pubsub.pubsub_helpers import RedisServer


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under ``.ci/run``: tell it that the test session started, so the package is installed.

    ``.ci/run`` starts its background parts (Autobahn, the steps alongside) then; it cannot
    split the README's test command (``pip install ... && pytest``) to know it otherwise.
    """
    marker = os.environ.get("SHAKEHANDS_CI_STARTED_FILE")
    if marker:
        Path(marker).touch()


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    """Which server API a test runs against: ``"coroutine"`` (serve) or ``"callback"``."""
    return str(request.param)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files), made at test time."""
    made = make_certificate(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("cannot make a test certificate: neither `cryptography` nor `openssl` works")
    return made


@pytest.fixture
def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """Python's defaults (TLS 1.2 at least) with the test certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test certificate only."""
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` on 127.0.0.1 (tests/pubsub, tests/asgi); skips without one."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(executable, tmp_path)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"redis-server could not be started: {exc}")
    try:
        yield server
    finally:
        server.stop()
