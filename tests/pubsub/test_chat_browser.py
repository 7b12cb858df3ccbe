"""The chat page in a real browser: headless Chromium on two chat processes sharing Redis.

Chromium is driven through the DevTools protocol, over a WebSocket opened with shakehands' own
client: one tab on each chat server, same room; a message typed in one tab appears in both, and
a shakehands client on the second server receives it too. Skips, saying why, without Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import shakehands

from .pubsub_helpers import ChatProcess, RedisServer


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A minimal DevTools protocol client: commands with ids, flattened target sessions."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = 0
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(shakehands.ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                future = self.pending.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(RuntimeError(str(message["error"])))
                    else:
                        future.set_result(message.get("result"))

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        self.ids += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = future
        command: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        await self.ws.send(json.dumps(command))
        return await asyncio.wait_for(future, 30)

    async def open_tab(self, url: str) -> str:
        target = await self.call("Target.createTarget", url=url)
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        return str(attached["sessionId"])

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", session, expression=expression, returnByValue=True
        )
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[DevTools]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian package chromium)")
    process = subprocess.Popen(
        [
            executable,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        url = None
        for _ in range(200):
            line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 60)
            if not line:
                break
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            pytest.skip("Chromium did not start its DevTools endpoint")
        async with shakehands.connect(url, max_message_size=None, compression=None) as ws:
            devtools = DevTools(ws)
            yield devtools
    finally:
        process.kill()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


async def log_of(devtools: DevTools, session: str) -> str:
    return str(await devtools.evaluate(session, "document.getElementById('log').innerText"))


async def wait_for_text(devtools: DevTools, session: str, text: str) -> str:
    async with asyncio.timeout(30):
        while True:
            log = await log_of(devtools, session)
            if text in log:
                return log
            await asyncio.sleep(0.1)


async def test_chat_page_in_chromium_across_two_processes(
    redis_server: RedisServer, chat_processes: list[ChatProcess], tmp_path: Path
) -> None:
    first = ChatProcess("--redis", redis_server.url)
    chat_processes.append(first)
    second = ChatProcess("--redis", redis_server.url)
    chat_processes.append(second)
    async with chromium(tmp_path) as devtools:
        tab1 = await devtools.open_tab(f"http://127.0.0.1:{first.port}/garden?name=ana")
        tab2 = await devtools.open_tab(f"http://127.0.0.1:{second.port}/garden?name=bo")
        await wait_for_text(devtools, tab1, "joined garden as ana")
        await wait_for_text(devtools, tab2, "joined garden as bo")
        watcher = await shakehands.connect(second.uri("garden", "watcher"))
        assert json.loads(await watcher.recv())["type"] == "joined"

        type_and_send = (
            "document.getElementById('text').value = {text!r};"
            "document.getElementById('form').requestSubmit(); true"
        )
        await devtools.evaluate(tab1, type_and_send.format(text="hello from process one"))
        for tab in (tab1, tab2):
            await wait_for_text(devtools, tab, "ana: hello from process one")
        event = json.loads(await asyncio.wait_for(watcher.recv(), 30))
        assert (event["name"], event["text"]) == ("ana", "hello from process one")

        await watcher.send("hi from a script")
        for tab in (tab1, tab2):
            log = await wait_for_text(devtools, tab, "watcher: hi from a script")
            assert log.count("hello from process one") == 1
        await watcher.close()
