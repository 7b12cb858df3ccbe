"""The Redis backend of a :class:`~shakehands.pubsub.Hub`: every process sharing a Redis server
sees every message.

It holds *one* Redis subscription per topic per process (not per connection), and a process
receives its own publications back through Redis, so each local subscriber gets each message
once and all of them in the same order. When Redis goes away the backend reconnects with
exponential backoff, logs each step, fails publications in the meantime with
:class:`~shakehands.pubsub.PublishError`, and reports the window in which messages may have been
missed as a :class:`~shakehands.pubsub.Gap`. ``redis.asyncio`` (``pip install
'shakehands[redis]'``) is imported when the hub starts, not before.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from .backend import Deliver, Gap, Message, logger
from .redis_link import Backoff, RedisLink, listen, load_redis, no_retry

__all__ = ["RedisBackend"]


class RedisBackend(RedisLink):
    """Redis pub/sub as the message bus (``redis.asyncio``, imported when the hub starts).

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``).
        prefix: prepended to topic names to make Redis channel names.
        min_backoff, max_backoff: seconds between reconnection attempts, doubling from the
            first to the second (with jitter).
        connect_timeout: seconds for a connection attempt to Redis.
        health_check_interval: seconds of silence on the subscription link after which it is
            probed with a PING; two intervals without any answer count as a lost connection
            (a peer that vanished without closing TCP).

    Messages cross Redis as one type byte (``t`` text, ``b`` binary) followed by the payload.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "shakehands:",
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        connect_timeout: float = 2.0,
        health_check_interval: float = 10.0,
    ) -> None:
        super().__init__(
            url,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            connect_timeout=connect_timeout,
            health_check_interval=health_check_interval,
        )
        self.prefix = prefix
        self._deliver: Deliver | None = None
        self._report_gap: Callable[[Gap], None] | None = None
        self._pubsub: Any = None
        self._topics: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._commands = asyncio.Lock()
        # A channel of our own, always subscribed: its confirmation says the link is up.
        self._control = f"{prefix}_hub:{os.getpid()}:{os.urandom(4).hex()}"

    def _channel(self, topic: str) -> str:
        return self.prefix + topic

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        """Connect (in the background: Redis may come later); return after the first attempt."""
        redis_asyncio = load_redis()
        self._deliver = deliver
        self._report_gap = report_gap
        self._client = redis_asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_keepalive=True,
            retry=no_retry(),
        )
        await asyncio.shield(self._start_tasks(self._run()))

    async def _run(self) -> None:
        backoff = Backoff(self.min_backoff, self.max_backoff)
        while True:
            pubsub = self._client.pubsub()
            try:
                async with self._commands:
                    channels = [self._channel(t) for t in sorted(self._topics)]
                    await pubsub.subscribe(self._control, *channels)
                    self._pubsub = pubsub

                def handle(message: dict[str, Any]) -> None:
                    self._handle(message)
                    if self._up:
                        backoff.reset()

                await listen(pubsub, self.health_check_interval, handle, "no answer from Redis")
            except (asyncio.CancelledError, Exception) as exc:
                self._pubsub = None
                await self._reader_ended(pubsub, exc, backoff)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        raw_channel = message.get("channel", b"")
        channel = (
            raw_channel.decode("utf-8", "replace")
            if isinstance(raw_channel, bytes)
            else str(raw_channel)
        )
        if kind in ("message", b"message"):
            if not channel.startswith(self.prefix) or self._deliver is None:
                return
            data = message.get("data")
            if not isinstance(data, bytes) or not data:
                return
            topic = channel[len(self.prefix) :]
            kind_byte, payload = data[:1], data[1:]
            message_out: Message
            if kind_byte == b"t":
                try:
                    message_out = payload.decode("utf-8")
                except UnicodeDecodeError:
                    logger.warning("invalid UTF-8 in a text message on %r: dropped", topic)
                    return
            elif kind_byte == b"b":
                message_out = payload
            else:
                logger.warning("message of unknown type on %r: dropped", topic)
                return
            try:
                self._deliver(topic, message_out)
            except Exception:
                # A failure here is not the link's: keep reading.
                logger.exception("delivering a message on %r failed", topic)
        elif kind in ("subscribe", b"subscribe"):
            if channel == self._control:
                self._link_up()
            elif channel.startswith(self.prefix):
                topic = channel[len(self.prefix) :]
                for waiter in self._waiters.pop(topic, []):
                    if not waiter.done():
                        waiter.set_result(None)

    def _link_up(self) -> None:
        self._up = True
        self._attempt_done()
        if self._down_since is None:
            logger.info("connected to Redis at %s", self.url)
            return
        gap = Gap(tuple(sorted(self._topics)), self._down_since, time.time())
        self._down_since = None
        logger.warning(
            "reconnected to Redis at %s after %.2f s; messages published in that window on "
            "%d topic(s) may have been missed",
            self.url,
            gap.duration,
            len(gap.topics),
        )
        if self._report_gap is not None:
            self._report_gap(gap)

    async def _command(self, method: str, channel: str) -> None:
        async with self._commands:
            pubsub = self._pubsub
            if pubsub is None:
                return  # the reconnection subscribes to every topic of self._topics
            try:
                await getattr(pubsub, method)(channel)
            except Exception as exc:
                # The reader sees the same failure and reconnects, resubscribing everything.
                logger.debug("%s %s failed: %s", method, channel, exc)

    def subscribe(self, topic: str) -> asyncio.Future[None]:
        """Subscribe to the topic's channel; the future is done once Redis confirms it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(topic, []).append(future)
        self._topics.add(topic)
        self._spawn(self._command("subscribe", self._channel(topic)))
        return future

    def unsubscribe(self, topic: str) -> None:
        """Unsubscribe from the topic's channel (and cancel a subscription still pending)."""
        self._topics.discard(topic)
        for waiter in self._waiters.pop(topic, []):
            if not waiter.done():
                waiter.cancel()
        self._spawn(self._command("unsubscribe", self._channel(topic)))

    async def publish(self, topic: str, message: Message) -> int:
        """Publish through Redis; calls are sent in the order they are made (pipelined)."""
        payload = b"t" + message.encode("utf-8") if isinstance(message, str) else b"b" + message
        return await self._send(self._channel(topic), payload)

    async def _queue(self, pipeline: Any, key: str, payload: bytes) -> None:
        pipeline.publish(key, payload)

    def _receivers(self, reply: Any) -> int:
        return int(reply)
