"""The chat page in a real browser: headless Chromium on two chat processes sharing Redis.

Chromium is driven through the DevTools protocol, over a WebSocket opened with shakehands' own
client: one tab on each chat server, same room; a message typed in one tab appears in both, and
a shakehands client on the second server receives it too. The page's own reconnection: its
server killed and restarted mid-conversation (the tab resumes with ``?since=`` and shows every
message once, in order), and an in-memory server restarted (the tab shows that earlier messages
are no longer available). Skips, saying why, without Chromium.
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
    tmp_path: Path, chats_over_redis: tuple[ChatProcess, ChatProcess]
) -> None:
    first, second = chats_over_redis
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


def talk_lines(log: str, name: str) -> list[int]:
    """The numbers of ``<name>: line N`` messages in a page's log, in the order shown."""
    return [int(n) for n in re.findall(rf"^{name}: line (\d+)$", log, re.MULTILINE)]


async def test_chat_page_reconnects_and_resumes_after_a_server_is_killed(
    redis_server: RedisServer,
    chat_processes: list[ChatProcess],
    tmp_path: Path,
    chats_over_redis: tuple[ChatProcess, ChatProcess],
) -> None:
    """The page's own reconnection (backoff, ``?since=``): its server is killed with SIGKILL
    mid-conversation and started again; the tab shows every message once, in order."""
    first, second = chats_over_redis
    async with chromium(tmp_path) as devtools:
        tab = await devtools.open_tab(f"http://127.0.0.1:{first.port}/deck?name=viewer")
        await wait_for_text(devtools, tab, "joined deck as viewer")
        talker = await shakehands.connect(second.uri("deck", "talker"))
        assert json.loads(await talker.recv())["type"] == "joined"
        for i in range(1, 6):
            await talker.send(f"line {i}")
        await wait_for_text(devtools, tab, "talker: line 5")
        first.kill()
        await wait_for_text(devtools, tab, "reconnecting in")
        for i in range(6, 11):  # while the tab's server is away
            await talker.send(f"line {i}")
        restarted = await asyncio.to_thread(
            ChatProcess, "--redis", redis_server.url, port=first.port
        )
        chat_processes.append(restarted)
        log = await wait_for_text(devtools, tab, "talker: line 10")
        assert "resumed deck as viewer (5 missed)" in log
        for i in range(11, 13):
            await talker.send(f"line {i}")
        log = await wait_for_text(devtools, tab, "talker: line 12")
        assert talk_lines(log, "talker") == list(range(1, 13))
        assert "no longer available" not in log
        await talker.close()


async def test_chat_page_tells_when_history_is_lost(
    chat_processes: list[ChatProcess], tmp_path: Path
) -> None:
    """An in-memory chat restarted: the page resumes with a position of the lost epoch and
    shows the "no longer available" notice, then goes on live."""
    chat = ChatProcess()
    chat_processes.append(chat)
    async with chromium(tmp_path) as devtools:
        tab = await devtools.open_tab(f"http://127.0.0.1:{chat.port}/den?name=viewer")
        await wait_for_text(devtools, tab, "joined den as viewer")
        talker = await shakehands.connect(chat.uri("den", "talker"))
        await talker.recv()
        await talker.send("line 1")
        await wait_for_text(devtools, tab, "talker: line 1")
        await talker.close()
        chat.kill()
        restarted = await asyncio.to_thread(ChatProcess, port=chat.port)
        chat_processes.append(restarted)
        log = await wait_for_text(devtools, tab, "earlier messages are no longer available (epoch)")
        talker = await shakehands.connect(restarted.uri("den", "talker"))
        await talker.recv()
        await talker.send("line 2")
        log = await wait_for_text(devtools, tab, "talker: line 2")
        assert talk_lines(log, "talker") == [1, 2]
        await talker.close()
