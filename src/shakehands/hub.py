"""Publish/subscribe for connections: topics (rooms) within a process, or across many via Redis.

:class:`Hub` keeps, per topic, the local connections subscribed to it, and hands every message
published on a topic to :func:`shakehands.broadcast` for them (framed once, slow clients handled by
the :class:`~shakehands.SlowClientPolicy`). A subscription ends when its connection closes.

Where messages travel between publishers and subscribers is the backend's business:

- :class:`MemoryBackend` (the default): within this process; nothing to install or run.
- :class:`RedisBackend`: through Redis pub/sub, so that every process on every machine sharing the
  Redis server sees every message. It holds *one* Redis subscription per topic per process (not
  per connection), and a process receives its own publications back through Redis, so each local
  subscriber gets each message once and all of them in the same order. When Redis goes away the
  backend reconnects with exponential backoff, logs each step, fails publications in the meantime
  with :class:`PublishError`, and reports the window in which messages may have been missed as a
  :class:`Gap` (to :meth:`Hub.on_gap` callbacks and the log).

This module knows nothing about frames: it passes ``str`` / ``bytes`` messages to broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from .asyncio.base import TransportProtocol
from .broadcast import BroadcastResult, SlowClientPolicy, broadcast
from .protocol.errors import ShakehandsError

__all__ = [
    "Hub",
    "HubBackend",
    "MemoryBackend",
    "RedisBackend",
    "Gap",
    "HubCounters",
    "PublishError",
]

logger = logging.getLogger("shakehands.hub")

Message = str | bytes
Deliver = Callable[[str, Message], None]


class PublishError(ShakehandsError):
    """A message could not be handed to the message bus (Redis unreachable): nobody got it."""


@dataclass(frozen=True, slots=True)
class Gap:
    """A window in which messages on ``topics`` may have been missed by this process.

    ``since`` and ``until`` are wall-clock times (``time.time()``): the connection to the bus was
    lost at ``since`` and subscriptions were live again at ``until``.
    """

    topics: tuple[str, ...]
    since: float
    until: float

    @property
    def duration(self) -> float:
        """Length of the window in seconds."""
        return self.until - self.since


@dataclass(slots=True)
class HubCounters:
    """Running totals of a :class:`Hub`."""

    published: int = 0
    publish_failures: int = 0
    delivered: int = 0
    #: Subscribers not open, or busy sending a fragmented message, when a message came.
    skipped: int = 0
    dropped: int = 0
    closed_slow: int = 0
    gaps: int = 0


class HubBackend(Protocol):
    """How a :class:`Hub` moves messages between publishers and subscribers."""

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        """Start; call ``deliver(topic, message)`` for each message on a subscribed topic."""

    def subscribe(self, topic: str) -> asyncio.Future[None]:
        """Start receiving ``topic``; the future is done once messages on it will arrive."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""

    async def publish(self, topic: str, message: Message) -> int:
        """Publish; return how many receivers the bus reports. Raise PublishError on failure."""

    async def close(self) -> None:
        """Stop and release resources."""


class MemoryBackend:
    """Messages stay within this process: publishing delivers at once to local subscribers."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        self._deliver = deliver

    def subscribe(self, topic: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def unsubscribe(self, topic: str) -> None:
        pass

    async def publish(self, topic: str, message: Message) -> int:
        assert self._deliver is not None, "the hub was not started"
        self._deliver(topic, message)
        return 1

    async def close(self) -> None:
        self._deliver = None


def _load_redis() -> Any:
    try:
        return importlib.import_module("redis.asyncio")
    except ImportError:
        raise RuntimeError(
            "the Redis backend needs the redis package: pip install 'shakehands[redis]'"
        ) from None


class RedisBackend:
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
        self.url = url
        self.prefix = prefix
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.health_check_interval = health_check_interval
        self._deliver: Deliver | None = None
        self._report_gap: Callable[[Gap], None] | None = None
        self._client: Any = None
        self._pubsub: Any = None
        self._topics: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._commands = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A channel of our own, always subscribed: its confirmation says the link is up.
        self._control = f"{prefix}_hub:{os.getpid()}:{os.urandom(4).hex()}"
        self._up = False
        self._down_since: float | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        # Publications wait here for the writer task, which pipelines them in call order.
        self._outbox: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._outbox_ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the subscription link to Redis is up."""
        return self._up

    def _channel(self, topic: str) -> str:
        return self.prefix + topic

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        """Connect (in the background: Redis may come later); return after the first attempt."""
        redis_asyncio = _load_redis()
        retry_module = importlib.import_module("redis.asyncio.retry")
        backoff_module = importlib.import_module("redis.backoff")
        self._deliver = deliver
        self._report_gap = report_gap
        # No retries inside redis-py: this class owns reconnection, so that it can log each
        # attempt and fail publications at once while Redis is away.
        self._client = redis_asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_keepalive=True,
            retry=retry_module.Retry(backoff_module.NoBackoff(), 0),
        )
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._reader = loop.create_task(self._run())
        self._writer = loop.create_task(self._write())
        await asyncio.shield(self._first_attempt)

    def _attempt_done(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _run(self) -> None:
        delay = self.min_backoff
        while True:
            pubsub = self._client.pubsub()
            try:
                async with self._commands:
                    channels = [self._channel(t) for t in sorted(self._topics)]
                    await pubsub.subscribe(self._control, *channels)
                    self._pubsub = pubsub
                interval = self.health_check_interval
                heard = pinged = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=interval / 2)
                    now = time.monotonic()
                    if message is not None:
                        heard = now
                        self._handle(message)
                        if self._up:
                            delay = self.min_backoff
                    elif now - heard > 2 * interval:
                        raise ConnectionError(f"no answer from Redis for {now - heard:.1f} s")
                    elif now - heard > interval and now - pinged > interval:
                        pinged = now
                        await pubsub.ping()
            except asyncio.CancelledError:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                if self._up:
                    self._up = False
                    self._down_since = time.time()
                    logger.warning("lost the connection to Redis at %s: %s", self.url, exc)
                    # Connections of the publishing pool are as dead as ours: drop them, so
                    # that the first publication after Redis returns does not meet a stale one.
                    with contextlib.suppress(Exception):
                        await self._client.connection_pool.disconnect()
                wait = delay * random.uniform(0.8, 1.2)
                logger.warning(
                    "cannot reach Redis at %s (%s); retrying in %.2f s", self.url, exc, wait
                )
                self._attempt_done()
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.max_backoff)

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

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(topic, []).append(future)
        self._topics.add(topic)
        self._spawn(self._command("subscribe", self._channel(topic)))
        return future

    def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)
        for waiter in self._waiters.pop(topic, []):
            if not waiter.done():
                waiter.cancel()
        self._spawn(self._command("unsubscribe", self._channel(topic)))

    async def publish(self, topic: str, message: Message) -> int:
        """Publish through Redis; calls are sent in the order they are made (pipelined)."""
        if self._client is None:
            raise PublishError("the hub was not started")
        if not self._up:
            raise PublishError(f"Redis at {self.url} is unreachable{self._since()}")
        payload = b"t" + message.encode("utf-8") if isinstance(message, str) else b"b" + message
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._outbox.append((self._channel(topic), payload, future))
        self._outbox_ready.set()
        return await future

    def _since(self) -> str:
        if self._down_since is None:
            return ""
        return f" since {time.strftime('%H:%M:%S', time.localtime(self._down_since))}"

    async def _write(self) -> None:
        """Send queued publications, as many per round trip as are waiting, in order."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            if not self._up:
                error = PublishError(f"Redis at {self.url} is unreachable{self._since()}")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            pipeline = self._client.pipeline(transaction=False)
            for channel, payload, _ in batch:
                pipeline.publish(channel, payload)
            try:
                results = await pipeline.execute()
            except asyncio.CancelledError:
                for _, _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                # The batch may be partly delivered; each caller hears it failed (at most once).
                error = PublishError(f"publishing to Redis at {self.url} failed: {exc}")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), receivers in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(int(receivers))

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in (self._reader, self._writer):
            if task is not None:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._reader = self._writer = None
        self._up = False
        for _, _, future in self._outbox:
            future.cancel()
        self._outbox = []
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None


class Hub:
    """Topics that connections subscribe to, and publishing to them.

    Works with connections of the coroutine API (:class:`~shakehands.ServerConnection`) and of
    the callback API (:class:`~shakehands.CallbackConnection`) alike.

    Args:
        backend: :class:`MemoryBackend` (default) or :class:`RedisBackend`.
        policy: the slow-client policy for deliveries (see :class:`~shakehands.SlowClientPolicy`).
        compress: whether deliveries are compressed where permessage-deflate was negotiated.

    Example::

        hub = Hub()                                   # or Hub(RedisBackend("redis://..."))

        async def handler(ws):
            await hub.subscribe(ws, "news")           # awaiting is optional
            async for message in ws:
                await hub.publish("news", message)    # every subscriber, in every process

        async with hub, serve(handler, "127.0.0.1", 8765) as server:
            await server.serve_forever()
    """

    def __init__(
        self,
        backend: HubBackend | None = None,
        *,
        policy: SlowClientPolicy | None = None,
        compress: bool = True,
    ) -> None:
        self.backend: HubBackend = backend if backend is not None else MemoryBackend()
        self.policy = policy
        self.compress = compress
        #: Running totals: publications, deliveries, drops, gaps.
        self.counters = HubCounters()
        self._subscribers: dict[str, dict[TransportProtocol, None]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._topics_of: dict[TransportProtocol, set[str]] = {}
        self._gap_callbacks: list[Callable[[Gap], None]] = []
        self._publishing: set[asyncio.Task[int]] = set()
        self._started = False
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the backend (the Redis backend connects in the background if it must wait)."""
        if self._started:
            return
        self._started = True
        await self.backend.start(self._deliver, self._gap)

    def _ensure_started(self) -> None:
        if not self._started and self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self.start())

    async def close(self) -> None:
        """Stop the backend; local subscriptions are forgotten."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        await self.backend.close()
        self._started = False
        self._starting = None
        self._subscribers.clear()
        self._ready.clear()
        self._topics_of.clear()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -----------------------------------------------------------------------------------------
    # Subscriptions
    # -----------------------------------------------------------------------------------------

    def subscribe(self, connection: TransportProtocol, topic: str) -> asyncio.Future[None]:
        """Deliver messages published on ``topic`` to ``connection`` until it closes.

        Returns a future, done once the subscription is live on the bus (at once in memory; after
        Redis confirms it otherwise, which may be after a reconnection), or once it has ended
        (the connection closed first). Awaiting it is optional, so callbacks can subscribe too.
        """
        loop = asyncio.get_running_loop()
        if connection.closed_future.done():
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        self._ensure_started()
        topics = self._topics_of.get(connection)
        if topics is None:
            topics = self._topics_of[connection] = set()
            connection.closed_future.add_done_callback(lambda _: self.unsubscribe(connection))
        topics.add(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            subscribers = self._subscribers[topic] = {}
            self._ready[topic] = self.backend.subscribe(topic)
        subscribers[connection] = None
        return _follow(self._ready[topic])

    def unsubscribe(self, connection: TransportProtocol, topic: str | None = None) -> None:
        """Stop delivering ``topic`` (every topic if ``None``) to ``connection``."""
        topics = self._topics_of.get(connection)
        if topics is None:
            return
        for name in [topic] if topic is not None else list(topics):
            if name not in topics:
                continue
            topics.discard(name)
            subscribers = self._subscribers.get(name)
            if subscribers is None:
                continue
            subscribers.pop(connection, None)
            if not subscribers:
                del self._subscribers[name]
                self._ready.pop(name, None)
                self.backend.unsubscribe(name)
        if not topics:
            del self._topics_of[connection]

    def subscribers(self, topic: str) -> list[TransportProtocol]:
        """The local connections subscribed to ``topic``."""
        return list(self._subscribers.get(topic, ()))

    def topics(self, connection: TransportProtocol | None = None) -> set[str]:
        """Topics with local subscribers, or those of ``connection``."""
        if connection is None:
            return set(self._subscribers)
        return set(self._topics_of.get(connection, ()))

    # -----------------------------------------------------------------------------------------
    # Publishing
    # -----------------------------------------------------------------------------------------

    async def publish(self, topic: str, message: Message) -> int:
        """Send ``message`` to every subscriber of ``topic``, in this process and (with Redis)
        every other one.

        Returns:
            What the bus reports: 1 in memory; with Redis, how many processes subscribe.

        Raises:
            PublishError: the bus could not take the message (Redis unreachable): no one got it.
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
        """
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"cannot publish {type(message).__name__}")
        if not self._started:
            await (self._starting if self._starting is not None else self.start())
        try:
            receivers = await self.backend.publish(topic, message)
        except PublishError:
            self.counters.publish_failures += 1
            raise
        self.counters.published += 1
        return receivers

    def publish_soon(self, topic: str, message: Message) -> asyncio.Task[int]:
        """:meth:`publish` from plain functions (the callback API): schedule it, in call order.

        The task is kept until done; its result or :class:`PublishError` is there for the caller
        (``task.add_done_callback(...)``), and a failure nobody looked at is logged.
        """
        task = asyncio.get_running_loop().create_task(self.publish(topic, message))
        self._publishing.add(task)
        task.add_done_callback(self._published)
        return task

    def _published(self, task: asyncio.Task[int]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("publication failed: %s", task.exception())

    def deliver_locally(self, topic: str, message: Message) -> BroadcastResult:
        """Send ``message`` to this process's subscribers of ``topic`` only (no bus)."""
        result = broadcast(
            self._subscribers.get(topic, ()), message, compress=self.compress, policy=self.policy
        )
        counters = self.counters
        counters.delivered += result.sent
        counters.skipped += result.skipped
        counters.dropped += result.dropped
        counters.closed_slow += result.closed
        if result.slow:
            logger.info(
                "topic %r: %d slow subscriber(s) dropped, %d closed",
                topic,
                result.dropped,
                result.closed,
            )
        return result

    def _deliver(self, topic: str, message: Message) -> None:
        self.deliver_locally(topic, message)

    # -----------------------------------------------------------------------------------------
    # Gaps
    # -----------------------------------------------------------------------------------------

    def on_gap(self, callback: Callable[[Gap], None]) -> None:
        """Call ``callback(gap)`` when the bus comes back after messages may have been missed."""
        self._gap_callbacks.append(callback)

    def _gap(self, gap: Gap) -> None:
        self.counters.gaps += 1
        for callback in self._gap_callbacks:
            try:
                callback(gap)
            except Exception:
                logger.exception("gap callback failed")


def _follow(source: asyncio.Future[None]) -> asyncio.Future[None]:
    """A future of its own for each caller (cancelling one cancels no other), done with source."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def copy(_: asyncio.Future[None]) -> None:
        # Done either way: live, or the subscription ended before it was (nothing to wait for).
        if not future.done():
            future.set_result(None)

    if source.done():
        copy(source)
    else:
        source.add_done_callback(copy)
    return future
