"""Concurrent requests share forward passes: an asyncio batcher with a bounded queue, deadlines and drain.

Callers ``await batcher.submit(item)``; one loop collects waiting items into a batch (up to
``max_batch_size`` items, waiting at most ``max_wait_ms`` after the oldest one arrived, like TorchServe's
``batchSize``/``maxBatchDelay``) and runs ``run(items) -> results`` once per batch in its own thread, so
the event loop keeps accepting requests while the model computes. Overload and shutdown are answered, not
queued forever:

- more than ``max_queue`` items waiting: :class:`Overloaded` (503 + ``Retry-After``) at once;
- an item not answered within ``deadline_s`` of its arrival (queue + compute time): :class:`DeadlineExceeded`
  (504); a batch skips items whose caller has given up;
- after :meth:`RequestBatcher.close` (SIGTERM): new items get :class:`Draining` (503); items already taken
  are still answered.

Deliberate simplification: one compute thread (one model instance); a server that wants several runs
several processes (replicas), as KServe scales.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from qa_serving.errors import QAError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Refused(QAError):
    """A request the server answers with an HTTP error of its own (not the model's): status + headers."""

    status = 503

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}

    def body(self) -> dict:
        return {"error": str(self), "status": self.status}


class Overloaded(Refused):
    status = 503


class Draining(Refused):
    status = 503


class DeadlineExceeded(Refused):
    status = 504


@dataclass
class _Job(Generic[T]):
    item: T
    future: asyncio.Future
    arrived: float


class RequestBatcher(Generic[T, R]):
    """Batch concurrent ``submit`` calls into ``run`` calls (see the module docstring).

    Example: ``b = RequestBatcher(lambda xs: [x * 2 for x in xs], max_batch_size=8, max_wait_ms=5)``;
    inside a running loop ``await b.submit(21)`` -> 42.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 20,
        max_queue: int = 100,
        deadline_s: float = 60,
        retry_after_s: float = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0 or deadline_s <= 0:
            raise QAError(
                "batcher settings must be positive: batch_size >= 1, job_queue_size >= 1, "
                f"max_batch_delay_ms >= 0, deadline > 0 (got {max_batch_size}, {max_queue}, "
                f"{max_wait_ms}, {deadline_s})"
            )
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.deadline_s = deadline_s
        self.retry_after_s = retry_after_s
        self.on_batch = on_batch  # (batch size, seconds) after each batch: metrics
        self._queue: collections.deque[_Job[T]] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-batch")
        self.taken = 0  # submitted and not yet answered (queued or computing)
        self.closed = False

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _start(self) -> None:
        if self._loop_task is None:
            self._arrived = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._batches(), name="qa-batcher")

    async def submit(self, item: T) -> R:
        """The result of ``item`` once its batch ran; :class:`Refused` subclasses for 503/504."""
        if self.closed:
            raise Draining("the server is shutting down; retry on another replica", self.retry_after_s)
        if len(self._queue) >= self.max_queue:
            raise Overloaded(
                f"the server is at capacity ({self.max_queue} requests waiting, job_queue_size); retry later",
                self.retry_after_s,
            )
        self._start()
        loop = asyncio.get_running_loop()
        job = _Job(item, loop.create_future(), loop.time())
        self._queue.append(job)
        self._arrived.set()
        self.taken += 1
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.deadline_s)
        except asyncio.TimeoutError:
            job.future.cancel()  # still queued: its batch skips it; computing: the result is dropped
            raise DeadlineExceeded(
                f"no answer within the request deadline of {self.deadline_s:g} s (queue + compute); "
                "send fewer or shorter contexts, or retry later",
                self.retry_after_s,
            ) from None
        finally:
            self.taken -= 1

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._queue[0].arrived
            while len(self._queue) < self.max_batch_size:
                left = first + self.max_wait_s - loop.time()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            jobs = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            jobs = [j for j in jobs if not j.future.done()]  # callers past their deadline
            if not jobs:
                continue
            start = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self.run, [j.item for j in jobs])
            except Exception as err:  # a failed batch fails its callers, never the loop
                logger.exception("a batch of %d requests failed", len(jobs))
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(err)
                continue
            for j, result in zip(jobs, results):
                if not j.future.done():
                    j.future.set_result(result)
            if self.on_batch is not None:
                self.on_batch(len(jobs), loop.time() - start)

    def close(self) -> None:
        """Refuse new items from now on (503); those already taken are still answered."""
        self.closed = True

    async def drained(self, timeout: float) -> bool:
        """Wait until every taken item is answered (or ``timeout`` s); True when none is left."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.taken and loop.time() < end:
            await asyncio.sleep(0.02)
        return self.taken == 0
