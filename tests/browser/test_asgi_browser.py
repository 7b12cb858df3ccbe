"""Headless browsers load a FastAPI page and talk to its WebSocket endpoint, served by uvicorn
with ``--ws shakehands.asgi:UvicornWebSocket``.

The FastAPI app serves ``page.html`` itself (``/page``), takes the page's report (``POST
/result``) and runs the meow endpoint (``/ws``): the checks of ``test_browsers.py``, through
uvicorn and the ASGI front end.
"""

from __future__ import annotations

import queue
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from shakehands.asgi import UvicornWebSocket

from ..asgi.asgi_helpers import UvicornThread
from ..helpers import HOST
from .test_browsers import BROWSERS, EXPECTED_CHECKS, MEOW, PAGE, WELCOME

pytestmark = pytest.mark.timeout(120)


def meow_app(reports: queue.Queue[dict[str, Any]], codes: queue.Queue[int]) -> FastAPI:
    app = FastAPI()

    @app.get("/page")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.post("/result")
    async def result(request: Request) -> Response:
        reports.put(await request.json())
        return Response(status_code=204)

    @app.websocket("/ws")
    async def meow(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(WELCOME)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    codes.put(message["code"])
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"] + MEOW)
                else:
                    await websocket.send_bytes(message["bytes"] + MEOW.encode())
        except WebSocketDisconnect as exc:
            codes.put(exc.code)

    return app


@pytest.mark.parametrize("browser_name", list(BROWSERS))
def test_fastapi_page_in_a_browser(browser_name: str) -> None:
    reports: queue.Queue[dict[str, Any]] = queue.Queue()
    codes: queue.Queue[int] = queue.Queue()
    server = UvicornThread(meow_app(reports, codes), UvicornWebSocket)
    server.start()
    try:
        url = f"http://{HOST}:{server.port}/page?ws={server.uri('/ws')}"
        with (
            tempfile.TemporaryDirectory(prefix=f"shakehands-asgi-{browser_name}-") as tmp,
            BROWSERS[browser_name](url, Path(tmp) / "profile"),
        ):
            try:
                report = reports.get(timeout=90)
            except queue.Empty:
                pytest.fail(f"{browser_name} sent no report within 90 s")
            code = codes.get(timeout=30)
    finally:
        server.shutdown()
    assert report["errors"] == [], report
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [], report
    assert [c["name"] for c in report["checks"]] == EXPECTED_CHECKS
    assert code == 4000
