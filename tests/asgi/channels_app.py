"""A Django Channels application: an ``AsyncWebsocketConsumer`` echo behind a ``URLRouter``.

Django is configured here, once, with the least it needs (no database, no apps of ours):
importing this module configures it, so tests import it only when Channels is installed.
"""

from __future__ import annotations

import queue
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1"],
        INSTALLED_APPS=["channels"],
        SECRET_KEY="tests-only",
        USE_TZ=True,
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

Events = queue.Queue[tuple[str, object]]


def channels_app(events: Events) -> Any:
    """``/echo/<room>/``: accepts subprotocol ``chat`` when offered, echoes with the room name
    in front; ``/refuse/``: closes before accepting (a 403)."""

    class Echo(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            offered = self.scope["subprotocols"]
            await self.accept(subprotocol="chat" if "chat" in offered else None)

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            room = self.scope["url_route"]["kwargs"]["room"]
            if text_data is not None:
                await self.send(text_data=f"{room}: {text_data}")
            else:
                await self.send(bytes_data=bytes_data)

        async def disconnect(self, code: int) -> None:
            events.put(("disconnect", code))

    class Refuse(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.close()

    return ProtocolTypeRouter(
        {
            "websocket": URLRouter(
                [
                    path("echo/<str:room>/", Echo.as_asgi()),
                    path("refuse/", Refuse.as_asgi()),
                ]
            )
        }
    )
