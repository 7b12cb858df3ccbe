"""What the Redis backends share: loading ``redis.asyncio``, clients that never retry on their
own, the backoff between reconnection attempts, and (for the single-server backends) the life of
the link to Redis and the queue of publications.

The backends own reconnection, so that they can log each attempt, fail publications at once
while Redis is away and report what may have been missed: redis-py's own retries are off. This
module knows nothing about topics, channels or streams; each backend says what a publication is
(:meth:`RedisLink._queue`) and how its reader reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import time
from collections.abc import Callable
from typing import Any, NoReturn

from .backend import PublishError, logger

__all__: list[str] = []


def load_redis() -> Any:
    """``redis.asyncio``, or a clear error if the ``redis`` package is not installed."""
    try:
        return importlib.import_module("redis.asyncio")
    except ImportError:
        raise RuntimeError(
            "the Redis backend needs the redis package: pip install 'shakehands[redis]'"
        ) from None


def no_retry() -> Any:
    """A redis-py ``Retry`` that does not retry: the backend reconnects by itself."""
    retry_module = importlib.import_module("redis.asyncio.retry")
    backoff_module = importlib.import_module("redis.backoff")
    return retry_module.Retry(backoff_module.NoBackoff(), 0)


class Backoff:
    """Waits between attempts: from ``minimum`` seconds, doubling up to ``maximum``, each
    drawn within 20 % either side (so that a fleet does not come back in step)."""

    __slots__ = ("minimum", "maximum", "delay")

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.delay = minimum

    @property
    def failing(self) -> bool:
        """Whether an attempt failed since the last :meth:`reset`."""
        return self.delay > self.minimum

    def next(self) -> float:
        """The wait before the next attempt; the one after will be twice as long."""
        wait = self.delay * random.uniform(0.8, 1.2)
        self.delay = min(self.delay * 2, self.maximum)
        return wait

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits ``minimum`` again."""
        self.delay = self.minimum

    async def sleep(self) -> None:
        """Wait for :meth:`next`'s time."""
        await asyncio.sleep(self.next())


async def listen(
    pubsub: Any, interval: float, handle: Callable[[Any], None], silence: str
) -> NoReturn:
    """Hand each message of the pub/sub connection ``pubsub`` to ``handle``, until it fails:
    after ``interval`` seconds without a message it pings, and after twice that it raises
    :class:`ConnectionError` (``silence``, then for how long)."""
    heard = pinged = time.monotonic()
    while True:
        message = await pubsub.get_message(timeout=interval / 2)
        now = time.monotonic()
        if message is not None:
            heard = now
            handle(message)
        elif now - heard > 2 * interval:
            raise ConnectionError(f"{silence} for {now - heard:.1f} s")
        elif now - heard > interval and now - pinged > interval:
            pinged = now
            await pubsub.ping()


class RedisLink:
    """The link of a single-server backend to Redis: its settings, whether it is up, the
    publishing queue and the writer task that pipelines it, and the tasks to cancel on close.

    A subclass starts its reader task (``_reader``), calls :meth:`_lost` when the reader's
    connection fails and ``_up = True`` (through its own bookkeeping) when it is back, and
    says how to queue one publication on a pipeline (:meth:`_queue`) and what its reply
    means (:meth:`_receivers`).
    """

    def __init__(
        self,
        url: str,
        *,
        min_backoff: float,
        max_backoff: float,
        connect_timeout: float,
        health_check_interval: float,
    ) -> None:
        self.url = url
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.health_check_interval = health_check_interval
        self._client: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._up = False
        self._down_since: float | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        # Publications wait here for the writer task, which pipelines them in call order.
        self._outbox: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._outbox_ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether the reading link to Redis is up."""
        return self._up

    def _start_tasks(self, reader: Any) -> asyncio.Future[None]:
        """Start the reader coroutine and the writer; the future is done after the first
        connection attempt (successful or not)."""
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._reader = loop.create_task(reader)
        self._writer = loop.create_task(self._write())
        return self._first_attempt

    def _attempt_done(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lost(self, exc: Exception, backoff: Backoff) -> None:
        """The reader's connection failed (or could not be made): mark the link down, log,
        drop the publishing pool's connections, and wait before the next attempt."""
        if self._up:
            self._up = False
            self._down_since = time.time()
            logger.warning("lost the connection to Redis at %s: %s", self.url, exc)
            # Connections of the publishing pool are as dead as the reader's: drop them, so
            # that the first publication after Redis returns does not meet a stale one.
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect()
        wait = backoff.next()
        logger.warning("cannot reach Redis at %s (%s); retrying in %.2f s", self.url, exc, wait)
        self._attempt_done()
        await asyncio.sleep(wait)

    async def _reader_ended(self, reader: Any, exc: BaseException, backoff: Backoff) -> None:
        """The reader's connection ``reader`` ended with ``exc``: close it, then raise a
        cancellation again, or take any other error for a lost link (:meth:`_lost`)."""
        with contextlib.suppress(Exception):
            await reader.aclose()
        if not isinstance(exc, Exception):
            raise exc
        await self._lost(exc, backoff)

    def _since(self) -> str:
        if self._down_since is None:
            return ""
        return f" since {time.strftime('%H:%M:%S', time.localtime(self._down_since))}"

    async def _send(self, key: str, payload: bytes) -> int:
        """Queue one publication for the writer; its result once Redis answered."""
        if self._client is None:
            raise PublishError("the hub was not started")
        if not self._up:
            raise PublishError(f"Redis at {self.url} is unreachable{self._since()}")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._outbox.append((key, payload, future))
        self._outbox_ready.set()
        return await future

    async def _queue(self, pipeline: Any, key: str, payload: bytes) -> None:
        """Add one publication to ``pipeline`` (queued, not sent)."""
        raise NotImplementedError

    def _receivers(self, reply: Any) -> int:
        """What :meth:`publish` returns for Redis's ``reply`` to one publication."""
        raise NotImplementedError

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
            try:
                for key, payload, _ in batch:
                    await self._queue(pipeline, key, payload)
                results = await pipeline.execute()
            except asyncio.CancelledError:
                for _, _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                # Some may have reached Redis (and will be delivered, never twice); each
                # caller hears it failed.
                error = PublishError(f"publishing to Redis at {self.url} failed: {exc}")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), reply in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(self._receivers(reply))

    async def close(self) -> None:
        """Stop reading and publishing (pending publications are cancelled); close the
        connections to Redis."""
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
