"""When a request may start on the engine: `gpt_model_type` with TensorRT-LLM's meaning.

- In-flight (`inflight_fused_batching`): a request joins the running batch as soon as one of the engine's
  slots is free; llama.cpp then decodes all running slots together, step by step (continuous batching).
  Requests beyond the slots wait in a bounded queue; a full queue rejects at once.
- Static (`V1`): the requests waiting when the engine is idle form a batch (up to the slots) that runs to
  completion before the next batch is admitted; later arrivals wait, also when slots are free.

execute() never blocks (a decoupled Python model that blocks in execute() while other threads send responses
stalled in Triton 2.51); both policies share the same bounded queue.

Each job is one blocking call (`run(job)`) on a slot thread; llama.cpp batches the slots internally.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Generic, TypeVar

Job = TypeVar("Job")


class QueueFull(RuntimeError):
    """The bounded request queue is full; the caller should retry later."""


class _SlotCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def __call__(self, run: Callable[[Job], None], job: Job) -> None:
        with self._lock:
            self.active += 1
        try:
            run(job)
        finally:
            with self._lock:
                self.active -= 1


class InflightAdmission(Generic[Job]):
    """One worker per slot pulls the next waiting job the moment its previous one ends."""

    def __init__(self, slots: int, max_queue_size: int, run: Callable[[Job], None]) -> None:
        self.slots = slots
        self.max_queue_size = max_queue_size
        self._run = run
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._counter = _SlotCounter()
        self._waiting = 0
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, name=f"slot-{i}", daemon=True) for i in range(slots)]
        for worker in self._workers:
            worker.start()

    @property
    def active(self) -> int:
        return self._counter.active

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, job: Job) -> None:
        with self._lock:
            free_slots = max(0, self.slots - self._counter.active)
            queued = self._waiting - free_slots
            if self.max_queue_size and queued >= self.max_queue_size:
                raise QueueFull(f"request queue full: {queued} requests wait for one of {self.slots} busy "
                                f"slots (max_queue_size={self.max_queue_size}); retry later")
            self._waiting += 1
        self._queue.put(job)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                self._waiting -= 1
            self._counter(self._run, job)

    def close(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()


class StaticBatchAdmission(Generic[Job]):
    """A batch is the requests waiting when the engine is idle (up to the slots); it runs to completion
    before the next batch is taken. How full a batch is depends on how requests arrive: Triton's dynamic
    batcher in front (preferred_batch_size, max_queue_delay_microseconds) holds them back to form batches."""

    def __init__(self, slots: int, max_queue_size: int, run: Callable[[Job], None]) -> None:
        self.slots = slots
        self.max_queue_size = max_queue_size
        self._run = run
        self._counter = _SlotCounter()
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="slot")
        self._pending: list[Job] = []
        self._ready = threading.Condition()
        self._closed = False
        self._scheduler = threading.Thread(target=self._schedule, name="v1-scheduler", daemon=True)
        self._scheduler.start()

    @property
    def active(self) -> int:
        return self._counter.active

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def submit(self, job: Job) -> None:
        with self._ready:
            if self.max_queue_size and len(self._pending) >= self.max_queue_size:
                raise QueueFull(f"request queue full: {len(self._pending)} requests wait for the running batch "
                                f"to finish (max_queue_size={self.max_queue_size}); retry later")
            self._pending.append(job)
            self._ready.notify()

    def _schedule(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                batch, self._pending = self._pending[:self.slots], self._pending[self.slots:]
            wait([self._pool.submit(self._counter, self._run, job) for job in batch])

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._scheduler.join()
        self._pool.shutdown(wait=True)
