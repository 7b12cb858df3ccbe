"""The seed's demo, as its users knew it: greet every client, echo with ", MEOW!" appended.

A WebSocket client first receives 滴水之恩当以涌泉相报, then every text message comes back with
``, MEOW!`` appended (binary: the bytes plus the UTF-8 bytes of ``, MEOW!``). A plain HTTP GET
of ``/`` gets a page that opens a WebSocket to this server: the seed's request inspection
(``getRequest``) used for real, through :func:`process_request`.
"""

from __future__ import annotations

from http import HTTPStatus

from .asyncio.server import ServerConnection
from .protocol.handshake import Headers, Request, Response

__all__ = ["WELCOME", "MEOW", "meow", "process_request", "PAGE"]

WELCOME = "滴水之恩当以涌泉相报"
MEOW = ", MEOW!"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>shakehands demo</title>
<style>
  body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #ccc; padding: .5em; min-height: 10em; white-space: pre-wrap; }
  .me { color: #06c; } .server { color: #080; } .info { color: #888; }
</style>
</head>
<body>
<h1>shakehands</h1>
<p>Type a message: the server answers with <code>, MEOW!</code> appended.</p>
<form id="form"><input id="text" size="40" autofocus> <button>Send</button></form>
<div id="log"></div>
<script>
const log = document.getElementById("log");
function show(text, cls) {
  const line = document.createElement("div");
  line.className = cls;
  line.textContent = text;
  log.appendChild(line);
}
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/");
ws.onopen = () => show("connected", "info");
ws.onmessage = (event) => show("< " + event.data, "server");
ws.onclose = (event) => show("closed: " + event.code + " " + event.reason, "info");
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  ws.send(input.value);
  show("> " + input.value, "me");
  input.value = "";
};
</script>
</body>
</html>
"""


def process_request(request: Request) -> Response | None:
    """Serve the page on a plain GET of ``/``; let WebSocket upgrades through."""
    if request.is_upgrade:
        return None
    if request.method == "GET" and request.path == "/":
        headers = Headers([("Content-Type", "text/html; charset=utf-8")])
        return Response(HTTPStatus.OK, headers, PAGE.encode("utf-8"))
    if request.method == "GET":
        return Response(
            HTTPStatus.NOT_FOUND,
            Headers([("Content-Type", "text/plain; charset=utf-8")]),
            b"Not Found\n",
        )
    return None


async def meow(ws: ServerConnection) -> None:
    """The seed's ``talkTo``: welcome, then echo every message with ``, MEOW!``."""
    await ws.send(WELCOME)
    print("Shook hands, sent welcome message.", flush=True)
    try:
        async for message in ws:
            if isinstance(message, str):
                await ws.send(message + MEOW)
            else:
                await ws.send(message + MEOW.encode("utf-8"))
    finally:
        print("Client quit, closed handle.", flush=True)
