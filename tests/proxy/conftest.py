"""Fixtures of the proxy tests: echo servers (ws:// and wss://) in threads, an environment
without proxy variables, and the test certificate as the default trust store (https proxies)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..sync.sync_helpers import running

PROXY_VARIABLES = [
    "ws_proxy", "WS_PROXY", "wss_proxy", "WSS_PROXY", "http_proxy", "HTTP_PROXY",
    "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no proxy variable set (the clients read them by default)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ws_port() -> Iterator[int]:
    """The port of a blocking echo server (ws://) serving in a thread."""
    with running() as server:
        yield server.port


@pytest.fixture(scope="module")
def wss_port(certificate: tuple[Path, Path]) -> Iterator[int]:
    """The port of a blocking echo server over TLS (wss://, the test certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with running(ssl=context) as server:
        yield server.port


@pytest.fixture
def trust_test_certificate(monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]) -> None:
    """The default trust store is the test certificate (how an https proxy gets checked)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
