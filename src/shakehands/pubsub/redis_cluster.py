"""The Redis Cluster backend of a :class:`~shakehands.pubsub.Hub`: topics spread over the
shards of a cluster, with history and resume as with
:class:`~shakehands.pubsub.RedisStreamsBackend`.

Each topic lives on one shard: its stream, its hash (epoch, last offset) and its live channel
share the hash tag ``{topic}``, so one slot. A publication is one Lua script on that shard: it
numbers the message, adds it to the stream (``XADD ... MAXLEN ~``) and publishes it on the
topic's *sharded* channel (``SPUBLISH``), so only that shard carries it.

Live delivery: one sharded pub/sub connection (``SSUBSCRIBE``) per shard that holds subscribed
topics, each read as messages come (no polling shard after shard). Every live message carries
its offset, and the backend delivers each topic's offsets in sequence: a message past the next
expected offset (one missed while a link was down, or published while it subscribed) makes it
read the missing entries from the stream first. After a link is lost (a master killed), the
backend refreshes the slot map (``MOVED`` / failover: the replica that took over), subscribes
again on the topic's new shard and catches up from the stream, so nothing that the new master
has is missed.

Replication in Redis is asynchronous: publications a master acknowledged and its replica had
not received yet are lost when that replica takes over. The backend notices when a topic's last
offset went back (it had delivered more than the new master has) and then draws a new epoch for
the topic, so that no offset is ever reused for another message; subscribers resuming from
before get :class:`~shakehands.pubsub.HistoryLost` (``"epoch"``), and the window is reported as
a :class:`~shakehands.pubsub.Gap`.

``redis.asyncio`` (``pip install 'shakehands[redis]'``) is imported when the hub starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from .backend import Deliver, Entry, Gap, HistoryLost, Message, Position, PublishError, logger
from .redis_link import Backoff, listen, load_redis, no_retry
from .redis_streams import (
    _APPEND,
    _HISTORY,
    _STATE,
    DEFAULT_HISTORY_AGE,
    DEFAULT_HISTORY_SIZE,
    READ_CONCURRENCY,
    _age_ms,
    _decode,
    _encode,
    _entries,
    _new_epoch,
    _offset_of,
    _text,
)

__all__ = ["RedisClusterBackend"]

# KEYS: stream, meta, channel. ARGV: as redis_streams' _APPEND (approximate maximum length, an
# epoch for a topic that has none, the entry, the maximum age in milliseconds, -1: none).
# Returns {epoch, offset}.
_PUBLISH = (
    _APPEND
    + """redis.call('SPUBLISH', KEYS[3], epoch .. ' ' .. offset .. ' ' .. ARGV[3])
return {epoch, offset}
"""
)

# KEYS: stream, meta. ARGV: the epoch a process knows, the offset the shard's history still
# agrees with it up to (base), a new epoch. Starts the new epoch after base, unless another
# process did already.
_REPAIR = """
if redis.call('HGET', KEYS[2], 'epoch') == ARGV[1] then
  redis.call('HSET', KEYS[2], 'epoch', ARGV[3], 'base', ARGV[2])
  return 1
end
return 0
"""

#: Entries read per step when catching up from a stream.
CATCH_UP_PAGE = 500
#: Messages per topic remembered (offset and checksum) to check a shard after a failover.
RECENT = 256


class _Topic:
    """One subscribed topic: where the live path is, and messages waiting for a catch-up."""

    __slots__ = ("last", "waiting", "catching_up", "ready", "recent")

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.last: Position | None = None
        # (offset, CRC-32) of the last messages delivered, to find where a shard's history
        # diverged from what was delivered after a failover (see _verify).
        self.recent: deque[tuple[int, int]] = deque(maxlen=RECENT)
        self.waiting: list[tuple[Position, Message]] = []
        self.catching_up = False
        self.ready = ready


class _Link:
    """One sharded pub/sub connection to the primary of some slots."""

    __slots__ = ("node", "topics", "pubsub", "task", "commands")

    def __init__(self, node: tuple[str, int]) -> None:
        self.node = node
        self.topics: set[str] = set()
        self.pubsub: Any = None
        self.task: asyncio.Task[None] | None = None
        self.commands = asyncio.Lock()


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"redis://{url}")
    return parts.hostname or "127.0.0.1", parts.port or 6379


class RedisClusterBackend:
    """A Redis Cluster as the message bus and the history of each topic (``redis.asyncio``).

    Args:
        urls: some nodes of the cluster (``redis://host:port``, or a comma-separated string of
            them): the rest is discovered.
        prefix: prepended to Redis key and channel names.
        history_size: entries kept per topic (``MAXLEN ~``).
        history_age: seconds an entry is kept at most (``math.inf``: no bound by age), as
            with :class:`~shakehands.pubsub.RedisStreamsBackend`.
        min_backoff, max_backoff: seconds between attempts to reach a shard again, doubling.
        connect_timeout: seconds for a connection attempt.
        health_check_interval: seconds of silence on a shard link after which it is probed
            with a PING; two intervals without an answer count as a lost link.
    """

    def __init__(
        self,
        urls: str | Sequence[str] = "redis://127.0.0.1:7000",
        *,
        prefix: str = "shakehands:",
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_age: float = DEFAULT_HISTORY_AGE,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        connect_timeout: float = 2.0,
        health_check_interval: float = 10.0,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be 1 or more")
        self.urls = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
        if not self.urls or not all(self.urls):
            raise ValueError("give at least one node of the cluster")
        self.prefix = prefix
        self.history_size = history_size
        self.history_age = history_age
        self._age_ms = _age_ms(history_age)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.health_check_interval = health_check_interval
        self._deliver: Deliver | None = None
        self._report_gap: Callable[[Gap], None] | None = None
        self._redis: Any = None
        self._cluster: Any = None
        self._scripts: dict[str, Any] = {}
        self._topics: dict[str, _Topic] = {}
        self._links: dict[tuple[str, int], _Link] = {}
        # History reads at once (a herd of resuming clients must not exhaust the pool).
        self._reads = asyncio.Semaphore(READ_CONCURRENCY)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._publishing = asyncio.Lock()
        self._down_since: dict[str, float] = {}
        # Per node whose link failed: the backoff before trying the slot map again.
        self._backoffs: dict[tuple[str, int], Backoff] = {}

    def _keys(self, topic: str) -> list[str]:
        base = f"{self.prefix}{{{topic}}}"
        return [base, base + ":meta", base + ":live"]

    # -----------------------------------------------------------------------------------------
    # Life cycle
    # -----------------------------------------------------------------------------------------

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        """Discover the cluster (retrying in the background if it cannot be reached yet)."""
        self._redis = load_redis()
        cluster_module = importlib.import_module("redis.asyncio.cluster")
        retry_module = importlib.import_module("redis.asyncio.retry")
        backoff_module = importlib.import_module("redis.backoff")
        self._deliver = deliver
        self._report_gap = report_gap
        nodes = [cluster_module.ClusterNode(*_address(url)) for url in self.urls]
        self._cluster = cluster_module.RedisCluster(
            startup_nodes=nodes,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.connect_timeout + 1.0,
            # A few quick retries follow MOVED after a failover; longer outages fail the call.
            retry=retry_module.Retry(
                backoff_module.ExponentialBackoff(cap=self.max_backoff, base=self.min_backoff), 2
            ),
        )
        for name, source in (
            ("publish", _PUBLISH),
            ("state", _STATE),
            ("history", _HISTORY),
            ("repair", _REPAIR),
        ):
            self._scripts[name] = self._cluster.register_script(source)
        try:
            await self._cluster.initialize()
        except Exception as exc:
            logger.warning("cannot reach the Redis Cluster at %s yet: %s", self.urls, exc)

    async def close(self) -> None:
        """Close every shard link and the cluster client."""
        tasks = [*self._tasks, *(link.task for link in self._links.values() if link.task)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._links.clear()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                await self._cluster.aclose()
            self._cluster = None

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -----------------------------------------------------------------------------------------
    # Subscriptions and shard links
    # -----------------------------------------------------------------------------------------

    def subscribe(self, topic: str) -> asyncio.Future[None]:
        """Follow ``topic`` on its shard; done once subscribed there and caught up."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._topics[topic] = _Topic(future)
        self._spawn(self._attach(topic))
        return future

    def unsubscribe(self, topic: str) -> None:
        """Stop following ``topic``."""
        state = self._topics.pop(topic, None)
        if state is not None and not state.ready.done():
            state.ready.cancel()
        for link in self._links.values():
            if topic in link.topics:
                link.topics.discard(topic)
                if link.pubsub is not None:
                    self._spawn(self._command(link, "sunsubscribe", self._keys(topic)[2]))

    async def _attach(self, topic: str) -> None:
        """Find ``topic``'s shard (after refreshing the slot map, on retries) and subscribe."""
        backoff = Backoff(self.min_backoff, self.max_backoff)
        while topic in self._topics:
            try:
                if backoff.failing:
                    await self._cluster.nodes_manager.initialize()
                state = self._topics[topic]
                if state.last is None:
                    epoch, last, _ = await self._state(topic)
                    state.last = Position(epoch, last)
                node = self._cluster.get_node_from_key(self._keys(topic)[0])
                address = (node.host, int(node.port))
            except Exception as exc:
                logger.debug("locating %r failed: %s", topic, exc)
                await backoff.sleep()
                continue
            link = self._links.get(address)
            if link is None:
                link = self._links[address] = _Link(address)
                link.topics.add(topic)
                link.task = self._spawn(self._run_link(link))
            else:
                link.topics.add(topic)
                # Waits for the link's first subscriptions; does nothing if the link failed
                # meanwhile (its failure reattaches every topic of link.topics).
                await self._command(link, "ssubscribe", self._keys(topic)[2])
            return

    async def _command(self, link: _Link, method: str, channel: str) -> None:
        async with link.commands:
            if link.pubsub is None:
                return
            try:
                await getattr(link.pubsub, method)(channel)
            except Exception as exc:
                logger.debug("%s %s failed: %s", method, channel, exc)

    async def _run_link(self, link: _Link) -> None:
        host, port = link.node
        client = self._redis.Redis(
            host=host,
            port=port,
            socket_connect_timeout=self.connect_timeout,
            socket_keepalive=True,
            retry=no_retry(),
        )
        pubsub = client.pubsub()
        interval = self.health_check_interval
        try:
            async with link.commands:
                # One SSUBSCRIBE per channel: channels of different slots cannot share one.
                for topic in sorted(link.topics):
                    await pubsub.ssubscribe(self._keys(topic)[2])
                link.pubsub = pubsub
            self._backoffs.pop(link.node, None)
            await listen(pubsub, interval, lambda message: self._handle(link, message), "no answer")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            backoff = self._backoffs.get(link.node)
            if backoff is None:
                backoff = self._backoffs[link.node] = Backoff(self.min_backoff, self.max_backoff)
            wait = backoff.next()
            logger.warning(
                "lost the shard link to %s:%d: %s; finding the slots' node in %.2f s",
                host,
                port,
                exc,
                wait,
            )
            lost = sorted(t for t in link.topics if t in self._topics)
            now = time.time()
            for topic in lost:
                self._down_since.setdefault(topic, now)
            self._links.pop(link.node, None)
            link.pubsub = None
            # The slot map is stale (a failover, most likely): rediscover, then reattach.
            await asyncio.sleep(wait)
            with contextlib.suppress(Exception):
                await self._cluster.nodes_manager.initialize()
            for topic in lost:
                self._spawn(self._attach(topic))
        finally:
            link.pubsub = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    def _handle(self, link: _Link, message: dict[str, Any]) -> None:
        kind = _text(message.get("type", ""))
        channel = _text(message.get("channel", b""))
        topic = self._topic_of(channel)
        if topic is None or topic not in self._topics:
            return
        if kind == "ssubscribe":
            # Live from now on: catch up with what came between the state read and now.
            self._spawn(self._catch_up(topic))
        elif kind == "sunsubscribe" and topic in link.topics:
            # The slot moved away from this node (resharding): follow it.
            link.topics.discard(topic)
            self._spawn(self._attach(topic))
        elif kind == "smessage":
            data = message.get("data")
            if not isinstance(data, bytes):
                return
            epoch, _, rest = data.partition(b" ")
            offset, _, payload = rest.partition(b" ")
            decoded = _decode(payload)
            try:
                position = Position(epoch.decode(), int(offset))
            except (ValueError, UnicodeDecodeError):
                decoded = None
            if decoded is None:
                logger.warning("malformed message on %r: dropped", topic)
                return
            self._arrive(topic, position, decoded)

    def _topic_of(self, channel: str) -> str | None:
        if not channel.startswith(self.prefix + "{") or not channel.endswith("}:live"):
            return None
        return channel[len(self.prefix) + 1 : -len("}:live")]

    def _arrive(self, topic: str, position: Position, message: Message) -> None:
        """Deliver offsets of ``topic`` in sequence; fetch from the stream what is missing."""
        state = self._topics.get(topic)
        if state is None:
            return  # unsubscribed meanwhile (e.g. while a catch-up awaited Redis)
        if state.catching_up:
            state.waiting.append((position, message))
            return
        last = state.last
        if last is not None and position.epoch == last.epoch:
            if position.offset <= last.offset:
                return  # delivered already (by a catch-up)
            if position.offset == last.offset + 1:
                self._hand(topic, state, position, message)
                return
        state.waiting.append((position, message))
        self._spawn(self._catch_up(topic))

    def _hand(self, topic: str, state: _Topic, position: Position, message: Message) -> None:
        state.last = position
        state.recent.append((position.offset, _checksum(message)))
        if self._deliver is not None:
            try:
                self._deliver(topic, message, position)
            except Exception:
                logger.exception("delivering a message on %r failed", topic)

    async def _catch_up(self, topic: str) -> None:
        """Deliver the stream's entries after the last delivered one, then what waited."""
        state = self._topics.get(topic)
        if state is None or state.catching_up:
            return
        state.catching_up = True
        lost_window = False
        try:
            if topic in self._down_since and state.last is not None:
                lost_window = await self._verify(topic, state)
            for _attempt in range(20):
                if state.last is None:
                    epoch, last, _ = await self._state(topic)
                    state.last = Position(epoch, last)
                page, base = await self._read(topic, state.last, CATCH_UP_PAGE)
                if isinstance(page, HistoryLost):
                    lost_window = True
                    current = page.current
                    if page.reason == "ahead" and current is not None:
                        # This process delivered more than the shard has: a failover lost
                        # writes (acknowledged or not). Never reuse those offsets for other
                        # messages: a new epoch starts after the shard's last offset.
                        await self._scripts["repair"](
                            keys=self._keys(topic)[:2],
                            args=[state.last.epoch, current.offset, _new_epoch()],
                        )
                    elif page.reason == "epoch" and current is not None:
                        # A new epoch (drawn here or by another process): it starts after base.
                        state.last = Position(current.epoch, base)
                    elif current is not None:  # trimmed: continue from the oldest kept
                        state.last = current
                        break
                    continue
                for position, message in page:
                    self._hand(topic, state, position, message)
                if len(page) < CATCH_UP_PAGE:
                    break
        except Exception as exc:
            logger.warning("catching up on %r failed: %s; retrying", topic, exc)
            state.catching_up = False
            await asyncio.sleep(self.min_backoff)
            if topic in self._topics:
                self._spawn(self._catch_up(topic))
            return
        state.catching_up = False
        if self._topics.get(topic) is not state:
            return  # unsubscribed while catching up: nobody to deliver to
        waiting, state.waiting = state.waiting, []
        for position, message in sorted(waiting, key=lambda item: item[0].offset):
            self._arrive(topic, position, message)
        if not state.ready.done():
            state.ready.set_result(None)
        since = self._down_since.pop(topic, None)
        if lost_window and self._report_gap is not None:
            gap = Gap((topic,), since if since is not None else time.time(), time.time())
            logger.warning("topic %r lost history (failover or data loss)", topic)
            self._report_gap(gap)
        elif since is not None:
            logger.warning(
                "topic %r followed its shard again after %.2f s; nothing missed",
                topic,
                time.time() - since,
            )

    async def _verify(self, topic: str, state: _Topic) -> bool:
        """After a lost link: does the shard still hold what this process delivered? A replica
        that took over without the last writes numbers new publications with offsets already
        delivered for other messages. Compare the shard's entries with the checksums of the
        last delivered messages; where they first differ, start a new epoch (once, whichever
        process sees it first), so that what follows is delivered under it. Returns whether
        the history diverged."""
        assert state.last is not None
        if not state.recent:
            return False
        oldest = state.recent[0][0]
        page, _ = await self._read(topic, Position(state.last.epoch, oldest - 1), RECENT)
        if isinstance(page, HistoryLost):
            return False  # another epoch, or trimmed: the catch-up handles it
        stored = {position.offset: _checksum(message) for position, message in page}
        for offset, checksum in state.recent:
            if stored.get(offset) != checksum:
                base = offset - 1
                break
        else:
            return False
        logger.warning(
            "topic %r: the shard's history diverged after offset %d (a failover lost writes); "
            "starting a new epoch",
            topic,
            base,
        )
        await self._scripts["repair"](
            keys=self._keys(topic)[:2], args=[state.last.epoch, base, _new_epoch()]
        )
        state.last = Position(state.last.epoch, base)  # the catch-up then finds the new epoch
        state.recent.clear()
        return True

    # -----------------------------------------------------------------------------------------
    # History
    # -----------------------------------------------------------------------------------------

    async def _state(self, topic: str) -> tuple[str, int, int | None]:
        async with self._reads:
            epoch, last, first = await self._scripts["state"](
                keys=self._keys(topic)[:2], args=[_new_epoch()]
            )
        return _text(epoch), int(last), (_offset_of(first) if first else None)

    async def read_history(
        self, topic: str, since: Position, limit: int
    ) -> Sequence[Entry] | HistoryLost:
        """Up to ``limit`` stored publications after ``since`` (see
        :class:`~shakehands.pubsub.HistoryBackend`)."""
        page, _ = await self._read(topic, since, limit)
        return page

    async def _read(
        self, topic: str, since: Position, limit: int
    ) -> tuple[Sequence[Entry] | HistoryLost, int]:
        """:meth:`read_history`, and the offset the current epoch started after."""
        async with self._reads:
            epoch, last, first, entries, base = await self._scripts["history"](
                keys=self._keys(topic)[:2], args=[since.offset, limit, self._age_ms]
            )
        last, base = int(last), int(base)
        if not epoch:
            epoch, last, _ = await self._state(topic)
            return HistoryLost(topic, since, "epoch", Position(epoch, last)), 0
        current = Position(_text(epoch), last)
        if since.epoch != current.epoch:
            return HistoryLost(topic, since, "epoch", current), base
        if since.offset > last:
            return HistoryLost(topic, since, "ahead", current), base
        # Entries up to base belong to the epoch before (a failover lost what followed them).
        first_offset = max(_offset_of(first) if first else last + 1, base + 1)
        if since.offset + 1 < first_offset:
            return HistoryLost(topic, since, "trimmed", current), base
        return _entries(current.epoch, entries), base

    async def head(self, topic: str) -> Position:
        """The position of the last publication on ``topic`` (creating its epoch if new)."""
        epoch, last, _ = await self._state(topic)
        return Position(epoch, last)

    # -----------------------------------------------------------------------------------------
    # Publishing
    # -----------------------------------------------------------------------------------------

    async def publish(self, topic: str, message: Message) -> int:
        """Store, number and publish on the topic's shard; return 1 once the shard has it.

        Publications of this process are sent one at a time, in call order.
        """
        if self._cluster is None:
            raise PublishError("the hub was not started")
        async with self._publishing:
            try:
                await self._scripts["publish"](
                    keys=self._keys(topic),
                    args=[self.history_size, _new_epoch(), _encode(message), self._age_ms],
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise PublishError(f"publishing to the Redis Cluster failed: {exc}") from exc
        return 1


def _checksum(message: Message) -> int:
    return zlib.crc32(message.encode("utf-8") if isinstance(message, str) else message)
