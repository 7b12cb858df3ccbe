"""The Redis Streams backend of a :class:`~shakehands.pubsub.Hub`: every process sharing a
Redis server sees every message, and subscribers can resume after a reconnection.

Each topic is a Redis stream (its history, trimmed with ``XADD ... MAXLEN ~ N``, and by age with
``XTRIM MINID``) and a small hash (its epoch and last offset), both under one hash tag
(``{topic}``), so that they live on the same node of a Redis Cluster. A publication is one Lua
script, atomic in Redis and in its AOF: it creates the epoch if the topic has none, increments
the offset and adds the entry with the stream ID ``<offset>-0``. So offsets are the stream IDs,
and they continue after a Redis restart when Redis persists (``appendonly yes``); if Redis lost
the topic's data, the next publication draws a new epoch, and positions from before are answered
with ``HistoryLost("epoch")``.

Live delivery: one dedicated connection per process runs ``XREAD BLOCK`` on the streams of every
subscribed topic from the last ID it delivered (no polling: the read returns when entries come,
or after ``health_check_interval`` to prove the link alive). Subscribing to a new topic sets its
starting ID and wakes the read with ``CLIENT UNBLOCK`` from the command connection. After losing
Redis, the reader reconnects with exponential backoff and continues each stream from its last ID,
so nothing stored is missed; a :class:`~shakehands.pubsub.Gap` is reported only for topics whose
entries were trimmed past that ID or whose epoch changed (Redis lost its data).

Compared with :class:`~shakehands.pubsub.RedisBackend` (pub/sub): every publication is stored
(memory in Redis: the message plus about 90 bytes, times ``history_size`` per topic), the reader
names every subscribed stream in each ``XREAD`` (fine for thousands of topics per process, not
for millions), and delivery is at least as late as the reader's next round trip.

``redis.asyncio`` (``pip install 'shakehands[redis]'``) is imported when the hub starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from .backend import Deliver, Entry, Gap, HistoryLost, Message, Position, logger
from .redis_link import Backoff, RedisLink, load_redis, no_retry

__all__ = ["RedisStreamsBackend"]

# Trims the stream KEYS[1] by age: entries whose time field ``t`` (milliseconds, Redis's clock)
# is older than ``age`` milliseconds go (``XTRIM MINID``); ``age`` < 0: no bound by age. Returns
# Redis's time in milliseconds. Cheap when nothing is due: one look at the oldest entry.
_TRIM_BY_AGE = """
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
local function time_of(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' then return tonumber(fields[i + 1]) end
  end
  return nil
end
local function trim_by_age(stream, age)
  local now = now_ms()
  if age < 0 then return now end
  local horizon = now - age
  while true do
    local batch = redis.call('XRANGE', stream, '-', '+', 'COUNT', 100)
    if #batch == 0 then return now end
    for _, entry in ipairs(batch) do
      local t = time_of(entry)
      -- Entries without a time (written before it was kept) are not trimmed by age.
      if t == nil or t >= horizon then
        redis.call('XTRIM', stream, 'MINID', entry[1])
        return now
      end
    end
    local after = tonumber(string.match(batch[#batch][1], '^(%d+)')) + 1
    redis.call('XTRIM', stream, 'MINID', after .. '-0')
  end
end
"""

# KEYS: stream, meta. ARGV: approximate maximum length, an epoch for a topic that has none,
# the entry, the maximum age in milliseconds (-1: none). Appends the entry (locals epoch and
# offset); the publishing scripts (this module's and the cluster's) go on from there.
_APPEND = (
    _TRIM_BY_AGE
    + """
local now = trim_by_age(KEYS[1], tonumber(ARGV[4]))
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'last', 1)
redis.call(
  'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], offset .. '-0',
  'e', epoch, 'd', ARGV[3], 't', string.format('%.0f', now)
)
"""
)

# _APPEND's KEYS and ARGV. Returns {epoch, offset}.
_PUBLISH = (
    _APPEND
    + """return {epoch, offset}
"""
)

# KEYS: stream, meta. ARGV: an epoch for a topic that has none. Returns {epoch, last offset,
# first kept stream ID or false}.
_STATE = """
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[1])
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'last')
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
return {meta[1], meta[2] or '0', first[1] and first[1][1] or false}
"""

# KEYS: stream, meta. ARGV: offset to read after, count, the maximum age in milliseconds (-1:
# none). Returns {epoch or false, last offset, first kept stream ID or false, entries, base}: one
# consistent view for read_history, after trimming what aged out. ``base`` is the offset the
# epoch started after (0, unless a Redis Cluster failover lost writes).
_HISTORY = (
    _TRIM_BY_AGE
    + """
trim_by_age(KEYS[1], tonumber(ARGV[3]))
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'last', 'base')
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
return {meta[1], meta[2] or '0', first[1] and first[1][1] or false, entries, meta[3] or '0'}
"""
)

#: Publications kept per topic (approximately: Redis trims whole nodes of the stream), and for
#: how many seconds at most (the same defaults as in memory).
DEFAULT_HISTORY_SIZE = 1000
DEFAULT_HISTORY_AGE = 300.0
#: History and position reads in flight at once per process: 10 000 clients resuming together
#: queue here instead of each taking a Redis connection ("Too many connections").
READ_CONCURRENCY = 16


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _offset_of(stream_id: Any) -> int:
    return int(_text(stream_id).partition("-")[0])


def _age_ms(history_age: float) -> int:
    """``history_age`` (seconds, ``math.inf`` for no bound) as the scripts take it."""
    if not history_age >= 0:
        raise ValueError("history_age must be 0 or more seconds")
    return -1 if math.isinf(history_age) else int(history_age * 1000)


def _new_epoch() -> str:
    return os.urandom(8).hex()


def _encode(message: Message) -> bytes:
    return b"t" + message.encode("utf-8") if isinstance(message, str) else b"b" + bytes(message)


def _entries(epoch: str, entries: Any) -> list[Entry]:
    """The publications of the history script's ``entries`` (stream ID, fields), of ``epoch``;
    an entry that does not decode is left out."""
    result: list[Entry] = []
    for stream_id, fields in entries:
        # RESP2 through a script: the fields come as a flat list.
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        message = _decode(values.get(b"d"))
        if message is not None:
            result.append((Position(epoch, _offset_of(stream_id)), message))
    return result


def _decode(data: Any) -> Message | None:
    if not isinstance(data, bytes) or not data:
        return None
    kind, payload = data[:1], data[1:]
    if kind == b"t":
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return payload if kind == b"b" else None


class RedisStreamsBackend(RedisLink):
    """Redis Streams as the message bus and the history of each topic (``redis.asyncio``).

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``).
        prefix: prepended to Redis key names.
        history_size: entries kept per stream (``MAXLEN ~``: Redis may keep a few more).
        history_age: seconds an entry is kept at most (``math.inf``: no bound by age). Entries
            carry Redis's time (``TIME``), and those older are trimmed (``XTRIM MINID``) when
            the topic is published to or its history read.
        min_backoff, max_backoff: seconds between reconnection attempts, doubling from the
            first to the second (with jitter).
        connect_timeout: seconds for a connection attempt to Redis.
        health_check_interval: the longest a blocking read waits; a reply that does not come
            within it (plus ``connect_timeout``) counts as a lost connection.

    Entries hold three fields: ``e``, the epoch, ``d``, one type byte (``t`` text, ``b``
    binary) followed by the payload, and ``t``, Redis's time of the publication in
    milliseconds (for ``history_age``).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
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
        super().__init__(
            url,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            connect_timeout=connect_timeout,
            health_check_interval=health_check_interval,
        )
        self.prefix = prefix
        self.history_size = history_size
        self.history_age = history_age
        self._age_ms = _age_ms(history_age)
        self._deliver: Deliver | None = None
        self._report_gap: Callable[[Gap], None] | None = None
        self._scripts: dict[str, Any] = {}
        # Per subscribed topic: the last stream ID delivered, and the epoch it belongs to.
        self._cursors: dict[str, str] = {}
        self._wanted: set[str] = set()
        self._epochs: dict[str, str] = {}
        self._streams: dict[str, str] = {}  # stream key -> topic
        # The reader's view of self._cursors is current once _seen reaches _generation.
        self._generation = 0
        self._seen = 0
        self._changed = asyncio.Event()
        self._reader_id: int | None = None
        # History reads at once (a herd of resuming clients must not exhaust the pool).
        self._reads = asyncio.Semaphore(READ_CONCURRENCY)

    def _keys(self, topic: str) -> list[str]:
        stream = f"{self.prefix}{{{topic}}}"
        return [stream, stream + ":meta"]

    # -----------------------------------------------------------------------------------------
    # Life cycle
    # -----------------------------------------------------------------------------------------

    async def start(self, deliver: Deliver, report_gap: Callable[[Gap], None]) -> None:
        """Connect (in the background: Redis may come later); return after the first attempt."""
        redis_asyncio = load_redis()
        self._deliver = deliver
        self._report_gap = report_gap
        self._client = redis_asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.connect_timeout + self.health_check_interval,
            socket_keepalive=True,
            retry=no_retry(),
        )
        for name, source in (("publish", _PUBLISH), ("state", _STATE), ("history", _HISTORY)):
            self._scripts[name] = self._client.register_script(source)
        await asyncio.shield(self._start_tasks(self._run(redis_asyncio)))

    # -----------------------------------------------------------------------------------------
    # Reading
    # -----------------------------------------------------------------------------------------

    async def _run(self, redis_asyncio: Any) -> None:
        backoff = Backoff(self.min_backoff, self.max_backoff)
        interval = self.health_check_interval
        while True:
            reader = redis_asyncio.Redis.from_url(
                self.url,
                single_connection_client=True,
                socket_connect_timeout=self.connect_timeout,
                socket_timeout=self.connect_timeout + interval,
                socket_keepalive=True,
                retry=no_retry(),
            )
            try:
                self._reader_id = int(await reader.client_id())
                await self._link_up()
                backoff.reset()
                while True:
                    self._seen = self._generation
                    self._changed.clear()
                    streams = {self._keys(t)[0]: c for t, c in self._cursors.items()}
                    if not streams:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._changed.wait(), interval)
                        await reader.ping()
                        continue
                    reply = await reader.xread(streams, count=500, block=int(interval * 1000))
                    if reply:
                        self._handle(reply)
            except (asyncio.CancelledError, Exception) as exc:
                self._reader_id = None
                await self._reader_ended(reader, exc, backoff)

    async def _link_up(self) -> None:
        """Connected: after an outage, check that each stream continues from its cursor."""
        lost: list[str] = []
        if self._down_since is not None:
            for topic in list(self._cursors):
                if await self._verify(topic):
                    lost.append(topic)
        self._up = True
        self._attempt_done()
        if self._down_since is None:
            logger.info("connected to Redis at %s (streams)", self.url)
            return
        gap = Gap(tuple(sorted(lost)), self._down_since, time.time())
        self._down_since = None
        if not lost:
            logger.warning(
                "reconnected to Redis at %s after %.2f s; every stream continues where it was",
                self.url,
                gap.duration,
            )
            return
        logger.warning(
            "reconnected to Redis at %s after %.2f s; %d topic(s) lost history meanwhile",
            self.url,
            gap.duration,
            len(lost),
        )
        if self._report_gap is not None:
            self._report_gap(gap)

    async def _verify(self, topic: str) -> bool:
        """Whether ``topic`` lost entries after its cursor (epoch changed, or trimmed)."""
        epoch, last, first = await self._state(topic)
        cursor = self._cursors.get(topic)
        if cursor is None:
            return False
        known = self._epochs.get(topic)
        if known is not None and epoch != known:
            self._epochs[topic] = epoch
            self._cursors[topic] = "0-0"  # everything of the new epoch is new
            return True
        offset = _offset_of(cursor)
        return first is not None and first > offset + 1 and last > offset

    async def _state(self, topic: str) -> tuple[str, int, int | None]:
        async with self._reads:
            epoch, last, first = await self._scripts["state"](
                keys=self._keys(topic), args=[_new_epoch()]
            )
        return _text(epoch), int(last), (_offset_of(first) if first else None)

    def _handle(self, reply: Any) -> None:
        deliver = self._deliver
        for stream, entries in reply:
            topic = self._streams.get(_text(stream))
            if topic is None or topic not in self._cursors:
                continue
            for stream_id, fields in entries:
                self._cursors[topic] = _text(stream_id)
                epoch = _text(fields.get(b"e", b""))
                self._epochs[topic] = epoch
                message = _decode(fields.get(b"d"))
                if message is None or deliver is None:
                    logger.warning("malformed entry %s on %r: dropped", stream_id, topic)
                    continue
                try:
                    deliver(topic, message, Position(epoch, _offset_of(stream_id)))
                except Exception:
                    logger.exception("delivering a message on %r failed", topic)

    # -----------------------------------------------------------------------------------------
    # Subscriptions
    # -----------------------------------------------------------------------------------------

    def subscribe(self, topic: str) -> asyncio.Future[None]:
        """Read ``topic`` from its current last entry; done once that entry is known."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wanted.add(topic)
        self._spawn(self._start_reading(topic, future))
        return future

    async def _start_reading(self, topic: str, future: asyncio.Future[None]) -> None:
        backoff = Backoff(self.min_backoff, self.max_backoff)
        while not future.done() and topic in self._wanted:
            try:
                epoch, last, _ = await self._state(topic)
            except Exception as exc:
                logger.debug("reading the state of %r failed: %s", topic, exc)
                await backoff.sleep()
                continue
            if topic not in self._wanted:
                future.cancel()  # unsubscribed meanwhile
                return
            self._cursors[topic] = f"{last}-0"
            self._epochs[topic] = epoch
            self._streams[self._keys(topic)[0]] = topic
            future.set_result(None)
        if not future.done():
            future.cancel()  # unsubscribed before the state could be read
            return
        await self._wake_reader()

    async def _wake_reader(self) -> None:
        """Make the reader take the new cursors into its next XREAD."""
        self._generation += 1
        generation = self._generation
        self._changed.set()
        while self._seen < generation and self._up and self._reader_id is not None:
            try:
                woken = await self._client.client_unblock(self._reader_id)
            except Exception:
                return  # the reader reconnects, and rereads the cursors
            if self._seen >= generation:
                return
            if not woken:
                await asyncio.sleep(0.005)  # between two reads: the next one will see it

    def unsubscribe(self, topic: str) -> None:
        """Stop reading ``topic`` (from the reader's next round on)."""
        self._wanted.discard(topic)
        self._cursors.pop(topic, None)
        self._epochs.pop(topic, None)
        self._streams.pop(self._keys(topic)[0], None)

    # -----------------------------------------------------------------------------------------
    # History
    # -----------------------------------------------------------------------------------------

    async def read_history(
        self, topic: str, since: Position, limit: int
    ) -> Sequence[Entry] | HistoryLost:
        """Up to ``limit`` stored publications after ``since`` (see
        :class:`~shakehands.pubsub.HistoryBackend`)."""
        async with self._reads:
            epoch, last, first, entries, _ = await self._scripts["history"](
                keys=self._keys(topic), args=[since.offset, limit, self._age_ms]
            )
        last = int(last)
        if not epoch:
            # Nothing was ever published here (or Redis lost it): make the epoch exist, so that
            # the position handed back stays valid.
            epoch, last, _ = await self._state(topic)
            return HistoryLost(topic, since, "epoch", Position(epoch, last))
        current = Position(_text(epoch), last)
        if since.epoch != current.epoch:
            return HistoryLost(topic, since, "epoch", current)
        if since.offset > last:
            return HistoryLost(topic, since, "ahead", current)
        first_offset = _offset_of(first) if first else last + 1
        if since.offset + 1 < first_offset:
            return HistoryLost(topic, since, "trimmed", current)
        return _entries(current.epoch, entries)

    async def head(self, topic: str) -> Position:
        """The position of the last publication on ``topic`` (creating its epoch if new)."""
        epoch, last, _ = await self._state(topic)
        return Position(epoch, last)

    # -----------------------------------------------------------------------------------------
    # Publishing
    # -----------------------------------------------------------------------------------------

    async def publish(self, topic: str, message: Message) -> int:
        """Store and number the publication; return 1 once Redis has it (calls are sent in the
        order they are made, pipelined)."""
        return await self._send(topic, _encode(message))

    async def _queue(self, pipeline: Any, key: str, payload: bytes) -> None:
        await self._scripts["publish"](
            keys=self._keys(key),
            args=[self.history_size, _new_epoch(), payload, self._age_ms],
            client=pipeline,
        )  # queued, not sent

    def _receivers(self, reply: Any) -> int:
        return 1
