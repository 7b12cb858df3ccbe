"""The demo and chat pages are files shipped in the package, served as they are on disk."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from shakehands import chat, demo
from shakehands.static import page

STATIC = Path(demo.__file__).parent / "static"


@pytest.mark.parametrize(("module", "name"), [(demo, "demo.html"), (chat, "chat.html")])
def test_page_is_the_file(module: object, name: str) -> None:
    text = (STATIC / name).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "new WebSocket(" in text
    assert module.PAGE == text == page(name)  # type: ignore[attr-defined]


def test_demo_serves_the_page() -> None:
    from shakehands import Headers, Request

    response = demo.process_request(Request("GET", "/", Headers([("Host", "x")])))
    assert response is not None and response.status == 200
    assert response.body == (STATIC / "demo.html").read_bytes()


@pytest.mark.timeout(120)
def test_wheel_ships_the_pages(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("shakehands-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"shakehands/static/demo.html", "shakehands/static/chat.html"} <= names
