"""Dynamic batching: rows from concurrent requests are queued and run together.

A batch closes when it holds ``max_batch`` rows or its oldest row has waited
``max_wait_ms``; rows that arrive while the model runs form the next batch at
once. The model runs in one worker thread (torch and onnxruntime release the
GIL in their kernels), so the event loop keeps accepting requests meanwhile,
and only one batch runs at a time: two would fight over the same cores.
The queue is bounded in rows: a request that does not fit is refused whole.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence


class QueueFull(Exception):
    """The request's rows do not fit in the queue now (the server answers 429)."""


@dataclass
class _Item:
    row: Any
    future: asyncio.Future
    since: float  #: loop time it was queued


class Batcher:
    def __init__(self, run: Callable[[list], Sequence], max_batch: int, max_wait_ms: float, max_queue: int,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None):
        """``run(rows) -> results`` (same order) runs in the worker thread; ``on_batch(size, seconds)`` and
        ``on_depth(queued rows)`` report to metrics."""
        self.run = run
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self.on_batch = on_batch or (lambda n, s: None)
        self.on_depth = on_depth or (lambda n: None)
        self._queue: collections.deque[_Item] = collections.deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="eebert-model")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, rows: list) -> list:
        """Queue ``rows`` and wait for their results (input order). Raises QueueFull when they do not fit."""
        if self._closing:
            raise QueueFull("the server is shutting down")
        if len(self._queue) + len(rows) > self.max_queue:
            raise QueueFull(f"{len(self._queue)} texts are queued; the limit is {self.max_queue}")
        loop = asyncio.get_running_loop()
        self._start(loop)
        now = loop.time()
        futures = [loop.create_future() for _ in rows]
        self._queue.extend(_Item(r, f, now) for r, f in zip(rows, futures))
        self.on_depth(len(self._queue))
        self._wake.set()
        return list(await asyncio.gather(*futures))

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        # started on first use, in the loop that serves requests (also without an ASGI lifespan)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._loop(), name="eebert-batcher")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        while True:
            while not self._queue:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
            deadline = self._queue[0].since + self.max_wait
            while len(self._queue) < self.max_batch and not self._closing:
                left = deadline - loop.time()
                if left <= 0:
                    break
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), left)
                except TimeoutError:
                    break
            batch: list[_Item] = []
            while self._queue and len(batch) < self.max_batch:
                item = self._queue.popleft()
                if not item.future.done():  # its request was cancelled (client gone): skip the row
                    batch.append(item)
            self.on_depth(len(self._queue))
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.run, [i.row for i in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the model answered {len(results)} of {len(batch)} rows")
            except Exception as e:  # every waiting request gets the error; the loop goes on
                for i in batch:
                    if not i.future.done():
                        i.future.set_exception(e)
                continue
            finally:
                self.on_batch(len(batch), time.perf_counter() - t0)
            for i, r in zip(batch, results):
                if not i.future.done():
                    i.future.set_result(r)

    async def close(self) -> None:
        """Refuse new rows, answer every queued one, then stop the worker."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._wake.set()
            await self._task
        self._executor.shutdown(wait=True)
