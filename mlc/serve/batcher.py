"""Dynamic batching: requests for one model gathered into one ``predict_batch``.

Each served model has one ``DynamicBatcher``. A request joins its queue; a worker (one per
device the model runs on) takes the oldest request, then waits up to ``max_delay`` seconds for
more, until ``max_batch_size`` requests have come; it runs the requests that can share a batch
(the same input shapes: ``Job.key``) as one call and answers each with its own rows. A model
that cannot batch (a state, a data-dependent shape, a string or dictionary stage: found while
warming up, or at the first batch that ``predict_batch`` refuses) runs request by request.

Batches are padded to the next power of two (the padding rows repeat the last request and are
dropped): a model compiles at most log2(max_batch_size) + 1 batch sizes per input shape,
instead of one per batch size that happens to occur.

The queue is bounded: past ``max_queue`` waiting requests a new one is refused at once
(``Unavailable``, HTTP 503) rather than piling up memory. ``close`` refuses new requests and
returns once every accepted one is answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import Executor
from typing import Any, Callable, Hashable

from mlc._errors import MLCUnsupportedError
from mlc.serve.errors import Unavailable


@dataclasses.dataclass
class Job:
    """One request: its ``predict`` inputs, the batch it may share (``key``; None: alone), and
    the future its outputs (a dict, as ``predict`` returns) are set on."""

    inputs: dict
    key: Hashable | None
    future: asyncio.Future
    enqueued: float = dataclasses.field(default_factory=time.perf_counter)
    started: float = 0.0  # its model call began
    computed: float = 0.0  # its model call returned
    batch_size: int = 1
    device: str = ""  # the worker's device that computed it


@dataclasses.dataclass(frozen=True)
class Worker:
    """Where one worker computes: ``predict(inputs) -> outputs`` and ``predict_batch(list of
    inputs) -> list of outputs`` run on ``executor`` (one thread per device)."""

    predict: Callable[[dict], dict]
    predict_batch: Callable[[list[dict]], list[dict]]
    executor: Executor
    device: str = ""


class DynamicBatcher:
    def __init__(self, name: str, workers: list[Worker], *, max_batch_size: int, max_delay: float, max_queue: int, batching: bool = True):
        if max_batch_size < 1 or max_queue < 1 or max_delay < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and max_delay >= 0")
        self.name = name
        self.workers = workers
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue = max_queue
        self.batching = batching and max_batch_size > 1
        self.on_batch: Callable[[int], None] = lambda size: None  # metrics hook
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._pending = 0  # accepted, not yet answered
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task] = []

    @property
    def depth(self) -> int:
        """Requests accepted and not yet answered (queued or computing)."""
        return self._pending

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._work(w)) for w in self.workers]

    async def submit(self, inputs: dict, key: Hashable | None) -> Job:
        """Queue one request and wait for its outputs (``job.future``'s result); the ``Job`` is
        returned answered, with its timings."""
        if self._closing:
            raise Unavailable(f"model {self.name!r}: the server is shutting down")
        if self._pending >= self.max_queue:
            raise Unavailable(f"model {self.name!r}: {self._pending} requests are waiting (the queue holds {self.max_queue}); retry later")
        job = Job(inputs, key, asyncio.get_running_loop().create_future())
        self._pending += 1
        self._idle.clear()
        try:
            self._queue.put_nowait(job)
            await job.future
            return job
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def close(self) -> None:
        """Refuse new requests; return when every accepted one is answered."""
        self._closing = True
        await self._idle.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the worker ------------------------------------------------------------------------
    async def _work(self, worker: Worker) -> None:
        while True:
            jobs = await self._gather()
            groups: dict[Any, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key if self.batching and job.key is not None else id(job), []).append(job)
            for group in groups.values():
                await self._run(worker, group)

    async def _gather(self) -> list[Job]:
        jobs = [await self._queue.get()]
        if not self.batching:
            return jobs
        deadline = time.perf_counter() + self.max_delay
        while len(jobs) < self.max_batch_size:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return jobs

    async def _run(self, worker: Worker, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        for job in jobs:
            job.started, job.batch_size, job.device = now, len(jobs), worker.device
        if len(jobs) > 1 and self.batching:
            try:
                rows = await loop.run_in_executor(worker.executor, worker.predict_batch, [j.inputs for j in jobs])
            except MLCUnsupportedError:
                self.batching = False  # predict_batch refuses this model: request by request from now on
            except Exception:
                pass  # one request's values may fail the batch: each runs alone and gets its own answer
            else:
                done = time.perf_counter()
                self.on_batch(len(jobs))
                for job, row in zip(jobs, rows):
                    job.computed = done
                    _answer(job, row)
                return
        for job in jobs:
            job.batch_size, job.started = 1, time.perf_counter()
            try:
                outputs = await loop.run_in_executor(worker.executor, worker.predict, job.inputs)
                job.computed = time.perf_counter()
                _answer(job, outputs)
            except Exception as e:  # the request's own error, answered to it
                job.computed = time.perf_counter()
                _fail(job, e)
            self.on_batch(1)


def _answer(job: Job, outputs: dict) -> None:
    if not job.future.done():
        job.future.set_result(outputs)


def _fail(job: Job, error: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(error)


def bucket(n: int, largest: int) -> int:
    """The padded batch size for ``n`` requests: the next power of two, at most ``largest``."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max(largest, n))
