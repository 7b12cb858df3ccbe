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

With a backend that keeps history (:class:`MemoryBackend`, the Redis Streams backend) every
publication has a :class:`Position` (an offset within the topic's epoch), and
``subscribe(connection, topic, since=position)`` first delivers what the connection missed after
``since``, then live publications, with no gap and no duplicate at the hand-over: publications
that arrive while the replay runs are held for that connection, and those the replay already
covered are skipped by offset. When the history no longer reaches back, the subscription ends
with a :class:`HistoryLost` (in :class:`Subscription`), so that the application can reload.

How a position appears on the wire is the application's choice: ``Hub(wire=...)`` takes a
callable that builds the message sent to subscribers from the topic, the position and the
published message, called once per publication (not per subscriber), and once more per
publication replayed, however many subscribers it is replayed to (replays of a topic share the
messages built and their frames, and the history pages read: see ``_ReplayCache``).

This module knows nothing about frames: it passes ``str`` / ``bytes`` messages to broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from ..asyncio.base import TransportProtocol
from ..asyncio.broadcast import BroadcastResult, SlowClientPolicy, broadcast
from .backend import (
    Gap,
    HistoryBackend,
    HistoryLost,
    HubBackend,
    HubCounters,
    Message,
    Position,
    PublishError,
    Subscription,
    logger,
)
from .memory import MemoryBackend

__all__ = ["Hub", "connection_of"]


class ASGIWebSocket(Protocol):
    """What :func:`connection_of` takes besides a connection: an object with an ASGI ``scope``
    (a Starlette or FastAPI ``WebSocket``, a Channels consumer)."""

    @property
    def scope(self) -> Mapping[str, Any]: ...


#: A connection, or what leads to one (:func:`connection_of`): an ASGI WebSocket or its scope.
Subscriber = TransportProtocol | ASGIWebSocket | Mapping[str, Any]

#: Builds the message subscribers receive from (topic, position, published message).
Wire = Callable[[str, Position | None, Message], Message]

#: Publications read from history per step of a replay; between steps the replay yields to the
#: event loop and waits while the subscriber's write buffer is over its limit.
REPLAY_PAGE = 200
#: Replay steps running at once per hub. A herd of clients resuming together takes turns, page
#: by page, so that opening handshakes and live deliveries still get the event loop.
REPLAY_STEPS_IN_FLIGHT = 8
#: Seconds the pages and wire messages built for a topic's replays are kept after its last
#: replay ended: clients of a herd arrive over seconds, and each would otherwise rebuild them.
REPLAY_CACHE_LINGER = 5.0


def connection_of(connection: Subscriber) -> TransportProtocol:
    """The shakehands connection behind ``connection``: itself if it is one, or the one that
    serves an ASGI WebSocket (a Starlette or FastAPI ``WebSocket``, or its ``scope``) under
    uvicorn with ``--ws shakehands.asgi:UvicornWebSocket`` (the scope carries it as
    ``scope["extensions"]["shakehands"]["connection"]``).

    Raises:
        TypeError: neither (an ASGI WebSocket served by another implementation, say).
    """
    if isinstance(connection, TransportProtocol):
        return connection
    scope = getattr(connection, "scope", connection)
    try:
        found = scope["extensions"]["shakehands"]["connection"]  # type: ignore[index]
    except (TypeError, KeyError):
        found = None
    if not isinstance(found, TransportProtocol):
        raise TypeError(
            f"{connection!r} is not a shakehands connection, nor an ASGI WebSocket served by "
            "shakehands.asgi (uvicorn --ws shakehands.asgi:UvicornWebSocket)"
        )
    return found


class Hub:
    """Topics that connections subscribe to, and publishing to them.

    Works with connections of the coroutine API (:class:`~shakehands.ServerConnection`) and of
    the callback API (:class:`~shakehands.CallbackConnection`) alike, and with ASGI WebSockets
    (Starlette, FastAPI) served by uvicorn with ``shakehands.asgi`` (see :func:`connection_of`).

    Args:
        backend: :class:`MemoryBackend` (default) or :class:`RedisBackend`.
        policy: the slow-client policy for deliveries (see :class:`~shakehands.SlowClientPolicy`).
        compress: whether deliveries are compressed where permessage-deflate was negotiated.
        wire: ``wire(topic, position, message)`` builds what subscribers receive (for example
            the message with its offset, in the application's JSON); called once per
            publication. Without it subscribers receive the published message as is.

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
        wire: Wire | None = None,
    ) -> None:
        self.backend: HubBackend = backend if backend is not None else MemoryBackend()
        self.policy = policy
        self.compress = compress
        self.wire = wire
        #: Running totals: publications, deliveries, drops, gaps.
        self.counters = HubCounters()
        self._subscribers: dict[str, dict[TransportProtocol, None]] = {}
        # Connections replaying history (or waiting for the live path to catch up with it).
        self._resuming: dict[str, dict[TransportProtocol, _Resumer]] = {}
        # The last position delivered live per topic with resumers or subscribers.
        self._live: dict[str, Position] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._topics_of: dict[TransportProtocol, set[str]] = {}
        self._gap_callbacks: list[Callable[[Gap], None]] = []
        self._publishing: set[asyncio.Task[int]] = set()
        self._publishing_tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._starting: asyncio.Task[None] | None = None
        # Per topic being replayed: history pages and built wire messages shared by every
        # connection replaying it (a herd resuming from the same position reads and frames
        # each publication once).
        self._replays: dict[str, _ReplayCache] = {}
        self._replay_steps: asyncio.Semaphore | None = None
        # Counts subscriptions with ``since``: a history page read after a connection
        # subscribed is complete for it (see _ReplayCache.page).
        self._resume_count = 0

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
        self._resuming.clear()
        self._live.clear()
        self._ready.clear()
        self._topics_of.clear()
        for cache in self._replays.values():
            if cache.expiry is not None:
                cache.expiry.cancel()
        self._replays.clear()

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

    def subscribe(
        self, connection: Subscriber, topic: str, *, since: Position | None = None
    ) -> asyncio.Future[Subscription]:
        """Deliver messages published on ``topic`` to ``connection`` until it closes.

        ``connection``: a shakehands connection, or an ASGI WebSocket that shakehands serves
        (:func:`connection_of`).

        ``since``: the position of the last publication the connection got (a client sends it
        back when it reconnects; :meth:`Position.parse` reads it). The publications after it
        are delivered first, in order, then live ones, none twice and none missing. If the
        history no longer reaches back (or ``since`` is of another epoch or topic, or ahead of
        the last publication), live delivery starts at once and the subscription's ``lost``
        says why. Ignored if ``connection`` already subscribes to ``topic``.

        Returns a future, done once the subscription is live on the bus and the replay (if any)
        is over (at once in memory without ``since``; after Redis confirms it otherwise, which
        may be after a reconnection), or once it has ended (the connection closed first). Its
        :class:`Subscription` gives the position reached (with a backend that has positions),
        how many publications were replayed and, if ``since`` could not be served, why. Awaiting
        it is optional, so callbacks can subscribe too.
        """
        loop = asyncio.get_running_loop()
        connection = connection_of(connection)
        done: asyncio.Future[Subscription]
        if connection.closed_future.done():
            done = loop.create_future()
            done.set_result(Subscription(topic))
            return done
        if since is not None and not isinstance(since, Position):
            raise TypeError(f"since must be a Position, not {type(since).__name__}")
        self._ensure_started()
        topics = self._topics_of.get(connection)
        if topics is None:
            topics = self._topics_of[connection] = set()
            connection.closed_future.add_done_callback(lambda _: self.unsubscribe(connection))
        if topic in topics:
            since = None
        topics.add(topic)
        ready = self._ready.get(topic)
        if ready is None:
            ready = self._ready[topic] = self.backend.subscribe(topic)
        if since is None:
            self._subscribers.setdefault(topic, {})[connection] = None
        else:
            self._resume_count += 1
            self._resuming.setdefault(topic, {})[connection] = _Resumer(self._resume_count)
        done = loop.create_future()
        task = loop.create_task(self._settle(connection, topic, since, ready, done))
        self._publishing_tasks.add(task)
        task.add_done_callback(self._publishing_tasks.discard)
        return done

    async def _settle(
        self,
        connection: TransportProtocol,
        topic: str,
        since: Position | None,
        ready: asyncio.Future[None],
        done: asyncio.Future[Subscription],
    ) -> None:
        """Wait for the bus, replay from ``since`` if asked, then resolve ``done``."""
        result = Subscription(topic)
        try:
            if not ready.done():
                await asyncio.wait([ready])  # cancelled if the subscription ended first
            if not ready.cancelled() and self._ready.get(topic) is ready:
                if since is None:
                    if isinstance(self.backend, HistoryBackend):
                        try:
                            result = Subscription(topic, await self.backend.head(topic))
                        except Exception as exc:  # the bus is away: no position to give
                            logger.warning("reading the position of %r failed: %s", topic, exc)
                else:
                    result = await self._replay(connection, topic, since)
        except Exception:
            logger.exception("subscribing to %r failed", topic)
            self._hand_over(connection, topic, None, lost=True)
        finally:
            if not done.done():
                done.set_result(result)

    async def _replay(
        self, connection: TransportProtocol, topic: str, since: Position
    ) -> Subscription:
        self.counters.resumed += 1
        backend = self.backend
        if not isinstance(backend, HistoryBackend):
            lost = HistoryLost(topic, since, "unsupported", None)
            return self._lost(connection, topic, lost)
        resumer = self._resuming.get(topic, {}).get(connection)
        if resumer is None:
            return Subscription(topic)  # closed or unsubscribed meanwhile
        cache = self._replays.get(topic)
        if cache is None:
            cache = self._replays[topic] = _ReplayCache(self, backend, topic)
        cache.enter()
        if self._replay_steps is None:
            self._replay_steps = asyncio.Semaphore(REPLAY_STEPS_IN_FLIGHT)
        steps = self._replay_steps
        last = since
        replayed = 0
        try:
            while self._resuming.get(topic, {}).get(connection) is not None:
                async with steps:
                    try:
                        page, complete = await cache.page(last, resumer.ticket)
                    except Exception as exc:
                        logger.warning("reading the history of %r failed: %s", topic, exc)
                        page, complete = HistoryLost(topic, last, "unavailable", None), True
                    if isinstance(page, HistoryLost):
                        return self._lost(connection, topic, page, replayed)
                    if connection not in self._resuming.get(topic, {}):
                        break  # closed or unsubscribed meanwhile
                    for entry in page:
                        self._send_one(connection, entry.message, entry.frames, flush=False)
                        last = entry.position
                    connection.write_queued()  # the page in one write
                replayed += len(page)
                self.counters.replayed += len(page)
                if complete and len(page) < REPLAY_PAGE:
                    break
                await _writable(connection)
        finally:
            cache.leave()
        reached = self._hand_over(connection, topic, last, lost=False)
        return Subscription(topic, reached, replayed)

    def _lost(
        self, connection: TransportProtocol, topic: str, lost: HistoryLost, replayed: int = 0
    ) -> Subscription:
        self.counters.history_lost += 1
        logger.info("topic %r: cannot resume from %s (%s)", topic, lost.since, lost.reason)
        position = self._hand_over(connection, topic, lost.current, lost=True)
        return Subscription(topic, position, replayed, lost)

    def _hand_over(
        self, connection: TransportProtocol, topic: str, last: Position | None, *, lost: bool
    ) -> Position | None:
        """Move ``connection`` from replaying to live: send what was held for it (what the
        replay did not already cover), in order, with no await in between.

        The live path may lag behind the history (Redis: a stream read returns entries the
        reader has not delivered yet). Until it has delivered ``last``, the connection stays
        with the resumers, and live publications up to ``last`` are skipped for it."""
        resumer = self._resuming.get(topic, {}).get(connection)
        if resumer is None:
            return last  # unsubscribed meanwhile
        held, resumer.held = resumer.held, []
        for position, message in held:
            if not lost and _covered(position, last):
                continue  # the replay delivered it already
            self._send_one(connection, message)
            if position is not None:
                last = position
        live = self._live.get(topic)
        if lost or last is None or (live is not None and _covered(last, live)):
            self._promote(topic, connection)
        else:
            resumer.skip_through = last
        return last

    def _promote(self, topic: str, connection: TransportProtocol) -> None:
        resuming = self._resuming.get(topic)
        if resuming is not None:
            resuming.pop(connection, None)
            if not resuming:
                del self._resuming[topic]
        self._subscribers.setdefault(topic, {})[connection] = None

    def _send_one(
        self,
        connection: TransportProtocol,
        message: Message,
        frames: dict[tuple[object, ...], bytes] | None = None,
        *,
        flush: bool = True,
    ) -> None:
        result = broadcast(
            (connection,),
            message,
            compress=self.compress,
            policy=self.policy,
            frames=frames,
            flush=flush,
        )
        counters = self.counters
        if frames is not None:
            counters.replay_frames += result.frames
        counters.delivered += result.sent
        counters.skipped += result.skipped
        counters.dropped += result.dropped
        counters.closed_slow += result.closed

    def unsubscribe(self, connection: Subscriber, topic: str | None = None) -> None:
        """Stop delivering ``topic`` (every topic if ``None``) to ``connection``."""
        connection = connection_of(connection)
        topics = self._topics_of.get(connection)
        if topics is None:
            return
        for name in [topic] if topic is not None else list(topics):
            if name not in topics:
                continue
            topics.discard(name)
            subscribers = self._subscribers.get(name)
            if subscribers is not None:
                subscribers.pop(connection, None)
                if not subscribers:
                    del self._subscribers[name]
            resuming = self._resuming.get(name)
            if resuming is not None:
                resuming.pop(connection, None)
                if not resuming:
                    del self._resuming[name]
            idle = name not in self._subscribers and name not in self._resuming
            if idle:
                self._live.pop(name, None)
                if self._ready.pop(name, None) is not None:
                    self.backend.unsubscribe(name)
        if not topics:
            del self._topics_of[connection]

    def subscribers(self, topic: str) -> list[TransportProtocol]:
        """The local connections subscribed to ``topic`` (those still replaying included)."""
        return [*self._subscribers.get(topic, ()), *self._resuming.get(topic, ())]

    def topics(self, connection: Subscriber | None = None) -> set[str]:
        """Topics with local subscribers, or those of ``connection``."""
        if connection is None:
            return set(self._subscribers) | set(self._resuming)
        return set(self._topics_of.get(connection_of(connection), ()))

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

    def _deliver(self, topic: str, message: Message, position: Position | None = None) -> None:
        resuming = self._resuming.get(topic)
        if topic not in self._subscribers and not resuming:
            return
        if self.wire is not None:
            message = self.wire(topic, position, message)  # once per publication
        if position is not None:
            self._live[topic] = position
        self.deliver_locally(topic, message)
        if resuming:
            for connection, resumer in list(resuming.items()):
                if resumer.skip_through is None:
                    resumer.held.append((position, message))  # replay under way
                elif not _covered(position, resumer.skip_through):
                    # The live path has caught up with the replay: live from now on.
                    self._send_one(connection, message)
                    self._promote(topic, connection)

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


class _Resumer:
    """A connection replaying a topic's history: the live publications held for it meanwhile;
    after the replay, the last position it got, until the live path has delivered it."""

    __slots__ = ("held", "skip_through", "ticket")

    def __init__(self, ticket: int) -> None:
        self.held: list[tuple[Position | None, Message]] = []
        self.skip_through: Position | None = None
        #: When it subscribed (the hub's resume count then): what was read later is complete.
        self.ticket = ticket


class _Replayed:
    """One publication being replayed: its wire message, built once, and its frames, built
    once (by :func:`broadcast`) for every connection it is replayed to."""

    __slots__ = ("position", "message", "frames")

    def __init__(self, position: Position, message: Message) -> None:
        self.position = position
        self.message = message
        self.frames: dict[tuple[object, ...], bytes] = {}


class _ReplayCache:
    """What the connections replaying one topic share, while any of them replays it.

    Theory of operation. 10 000 clients resuming after a deploy usually ask for the same range
    (they were all caught up). Reading the history once per client, building the wire message
    and framing it once per client per publication would cost clients x publications in CPU
    and in memory; here each history page is read once for everyone waiting for it, and each
    replayed publication is built (``wire``) and framed once, whatever the number of clients.

    A page is keyed by the position it starts after. A full page (``REPLAY_PAGE`` entries) is
    the same for every reader: history after a position never changes (trimming only makes
    later reads answer ``HistoryLost``). A short page reached the end of the history when it
    was read, so it is complete only for connections that subscribed before that read began
    (they hold the live publications that came after); a later one reads again. Memory: at
    most the topic's history, built, while replays run and for ``REPLAY_CACHE_LINGER``
    seconds after the last one ended.
    """

    __slots__ = ("hub", "backend", "topic", "users", "built", "pages", "expiry")

    def __init__(self, hub: Hub, backend: HistoryBackend, topic: str) -> None:
        self.hub = hub
        self.backend = backend
        self.topic = topic
        self.users = 0
        self.expiry: asyncio.TimerHandle | None = None
        self.built: dict[Position, _Replayed] = {}
        # since -> (the resume count when the read began, the read).
        self.pages: dict[Position, tuple[int, asyncio.Future[list[_Replayed] | HistoryLost]]] = {}

    def enter(self) -> None:
        self.users += 1
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    def leave(self) -> None:
        self.users -= 1
        if not self.users:
            loop = asyncio.get_running_loop()
            self.expiry = loop.call_later(REPLAY_CACHE_LINGER, self._drop)

    def _drop(self) -> None:
        self.expiry = None
        if not self.users and self.hub._replays.get(self.topic) is self:
            del self.hub._replays[self.topic]

    async def page(
        self, since: Position, ticket: int
    ) -> tuple[list[_Replayed] | HistoryLost, bool]:
        """The publications after ``since`` (up to ``REPLAY_PAGE``), and whether they are
        complete for a connection that subscribed with ``ticket``: if not, more may follow
        them (read on from the last one)."""
        known = self.pages.get(since)
        if known is not None:
            started, shared = known
            if not shared.done():
                await asyncio.wait([shared])  # if this task is cancelled, the read goes on
            if not shared.cancelled():  # cancelled: its reader was; read anew
                result = shared.result()  # a failed read fails those that waited for it
                if ticket <= started or (
                    not isinstance(result, HistoryLost) and len(result) == REPLAY_PAGE
                ):
                    return result, True
                if not isinstance(result, HistoryLost) and result:
                    return result, False
        read = asyncio.get_running_loop().create_future()
        self.pages[since] = (self.hub._resume_count, read)
        try:
            result = await self._read(since)
        except BaseException as exc:
            if self.pages.get(since, (0, None))[1] is read:
                del self.pages[since]
            if isinstance(exc, asyncio.CancelledError):
                read.cancel()  # those waiting read for themselves
            else:
                read.set_exception(exc)
                read.exception()  # retrieved: each waiter handles it
            raise
        read.set_result(result)
        return result, True

    async def _read(self, since: Position) -> list[_Replayed] | HistoryLost:
        hub = self.hub
        hub.counters.history_reads += 1
        page = await self.backend.read_history(self.topic, since, REPLAY_PAGE)
        if isinstance(page, HistoryLost):
            return page
        wire, topic, built = hub.wire, self.topic, self.built
        result: list[_Replayed] = []
        for position, message in page:
            entry = built.get(position)
            if entry is None:
                hub.counters.replay_built += 1
                entry = built[position] = _Replayed(
                    position, wire(topic, position, message) if wire else message
                )
            result.append(entry)
        return result


def _covered(position: Position | None, last: Position | None) -> bool:
    """Whether ``position`` is at or before ``last`` in the same epoch."""
    return (
        position is not None
        and last is not None
        and position.epoch == last.epoch
        and position.offset <= last.offset
    )


async def _writable(connection: TransportProtocol) -> None:
    """Yield to the loop; then wait while ``connection`` has more than its write limit queued
    (a replay must not be dropped by the slow-client policy)."""
    await asyncio.sleep(0)
    delay = 0.005
    while connection.can_take_messages() and connection.write_buffer_size(0) > (
        connection.write_limit
    ):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
