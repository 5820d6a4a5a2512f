"""The dynamic batcher: requests queue up, one worker per device takes the first waiting request, waits at most
``max_wait`` from its arrival for more (up to ``max_batch``), runs them as one batch and answers each.

Every batch is recorded (its requests' arrival times, its start and end) so the limits can be checked afterwards:
never more than ``max_batch`` requests, and no request held longer than ``max_wait`` plus the one batch that was
running when it arrived (:func:`check_batcher_limits`).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from infopt.errors import InvalidInputError


@dataclass
class Request:
    payload: Any
    on_done: Callable[["Request", Any], None]
    arrival: float = 0.0
    start: float = 0.0
    end: float = 0.0


@dataclass
class BatchRecord:
    arrivals: list[float]
    start: float
    end: float

    @property
    def size(self) -> int:
        return len(self.arrivals)


_STOP = object()


class DynamicBatcher:
    """``run_batch(payloads) -> outputs`` (one per payload) behind a queue and one worker thread."""

    def __init__(self, run_batch: Callable[[list], Sequence], max_batch: int, max_wait_s: float, *,
                 clock: Callable[[], float] = time.perf_counter):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InvalidInputError(f"The batcher's maximum batch must be an integer of at least 1, got {max_batch!r}.")
        if not max_wait_s >= 0:
            raise InvalidInputError(f"The batcher's maximum wait must be 0 s or more, got {max_wait_s!r}.")
        self.run_batch, self.max_batch, self.max_wait_s, self.clock = run_batch, max_batch, float(max_wait_s), clock
        self.records: list[BatchRecord] = []
        self.completed: list[Request] = []
        self.errors: list[BaseException] = []
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "DynamicBatcher":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._loop, name="infopt-batcher", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join()
            self._worker = None

    def work_here(self) -> None:
        """Serve the queue in the calling thread until :meth:`stop_soon`: how a model is served, since a model
        run from a thread other than the one that set torch's threads up is slower (measured here, resnet50 fp32
        batch 1 on 2 threads: 20% back to back, 50% with 0.8 s idle gaps, while the main thread did not slow)."""
        self._loop()

    def stop_soon(self) -> None:
        """Ask :meth:`work_here` to return once the requests queued before this call are answered."""
        self._queue.put(_STOP)

    def submit(self, payload, on_done: Callable[[Request, Any], None]) -> Request:
        request = Request(payload, on_done, arrival=self.clock())
        self._queue.put(request)
        return request

    def reset_records(self) -> None:
        with self._lock:
            self.records, self.completed = [], []

    def _collect(self, first: Request) -> tuple[list[Request], bool]:
        batch, stopping = [first], False
        deadline = first.arrival + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - self.clock()
            try:
                item = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is _STOP:
                stopping = True
                break
            batch.append(item)
        return batch, stopping

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stopping = self._collect(first)
            start = self.clock()
            try:
                outputs = list(self.run_batch([r.payload for r in batch]))
            except BaseException as error:  # recorded, and every request is still answered
                self.errors.append(error)
                outputs = [None] * len(batch)
            end = self.clock()
            with self._lock:
                self.records.append(BatchRecord([r.arrival for r in batch], start, end))
                for request, output in zip(batch, outputs):
                    request.start, request.end = start, end
                    self.completed.append(request)
            for request, output in zip(batch, outputs):
                request.on_done(request, output)
            if stopping:
                return


def check_batcher_limits(records: Sequence[BatchRecord], max_batch: int, max_wait_s: float,
                         slack_s: float = 0.005) -> dict:
    """The batcher's limits over its recorded batches.

    ``hold`` is a request's start minus its arrival. A request that arrived while the batch before its own was
    running may be held up to ``max_wait`` plus that batch's time; one that arrived before that batch started and
    did not fit in it (the queue had backed up: offered load above what the worker serves) is queueing, counted in
    ``backlogged`` and not a batcher fault. ``slack_s`` allows for thread wake-up delays.
    """
    oversized = sum(1 for r in records if r.size > max_batch)
    late, backlogged, worst_excess = 0, 0, 0.0
    ordered = sorted(records, key=lambda r: r.start)
    for index, record in enumerate(ordered):
        previous = ordered[index - 1] if index else None
        for arrival in record.arrivals:
            if previous is not None and arrival < previous.start:
                backlogged += 1
                continue
            allowed = max_wait_s + (previous.end - previous.start if previous is not None else 0.0)
            excess = (record.start - arrival) - allowed
            worst_excess = max(worst_excess, excess)
            if excess > slack_s:
                late += 1
    sizes = [r.size for r in records]
    return {"batches": len(records), "requests": sum(sizes), "largest_batch": max(sizes, default=0),
            "oversized_batches": oversized, "late_requests": late, "backlogged_requests": backlogged,
            "worst_hold_excess_ms": worst_excess * 1000.0, "ok": oversized == 0 and late == 0}


__all__ = ["BatchRecord", "DynamicBatcher", "Request", "check_batcher_limits"]
