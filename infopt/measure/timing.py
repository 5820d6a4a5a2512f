"""Latency measurement: warm up until stable, then sample until the median is known.

Modelled on ``torch.utils.benchmark`` (a small Timer/Measurement core), with
one timer per device kind so a figure never includes an unintended
synchronization or misses queued GPU work:

* CPU: ``time.perf_counter_ns`` around every call.
* CUDA: a pair of ``torch.cuda.Event``s recorded around every call; the host
  synchronizes once at the end of each block, never inside the timed loop.
* MPS: ``torch.mps.synchronize()`` before each clock read (Metal has no
  per-call event timing in every torch version; the sync is what makes the
  host clock honest).

Timed code runs under ``torch.inference_mode()`` with Python's garbage
collector paused, at an explicit thread count.

Stopping rule (adaptive sampling): sample in blocks until at least
``min_samples`` calls AND ``min_time_s`` seconds AND the 95% CI of the median
(order statistics, see :mod:`infopt.measure.stats`) has a half-width within
``target_rel_ci`` of the median, or until ``max_time_s``. ``converged`` records
whether the target was met, so noisy points are flagged, not hidden.

Every measurement also records ``interference`` (see :mod:`infopt.measure.interference`):
whether other processes used the machine while it was timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from infopt.measure import stats
from infopt.devices import device_kind, is_out_of_memory
from infopt.errors import InvalidInputError
from infopt.measure.interference import ci_text, watch
from infopt.presets import DEFAULT_MAX_TIME_S

#: Sampling blocks aim at this duration, so the stopping rule is checked often
#: enough to stop promptly but rarely enough to cost nothing measurable.
_BLOCK_TARGET_S = 0.05
_MAX_BLOCK_CALLS = 10_000
#: Longest warm-up (seconds) of a point unless told otherwise (and never beyond half its timing cap).
MAX_WARMUP_S = 5.0
#: A point whose calls take longer (seconds) is timed in one visit with its whole budget, whatever
#: ``TimingConfig.visits`` says: its samples span seconds already, and another warm-up would cost more than it tells.
SINGLE_VISIT_CALL_S = 0.25


@dataclass
class TimingConfig:
    """How long and how carefully to time one point (all times in seconds)."""

    min_samples: int = 30
    min_time_s: float = 1.0
    max_time_s: float = DEFAULT_MAX_TIME_S
    target_rel_ci: float = 0.01
    min_warmup: int = 5
    warmup_window: int = 5
    warmup_tol: float = 0.02
    # None: half of max_time_s, at most MAX_WARMUP_S; a warm-up never outlasts the timing it prepares (a point
    # capped at 4 s had spent up to 5 s warming up)
    max_warmup_s: float | None = None
    num_threads: int | None = None
    # passes over a sweep that share this budget when calls are short (:func:`splits_budget`); 1: one pass
    visits: int = 1

    def __post_init__(self) -> None:
        if self.max_warmup_s is None:
            self.max_warmup_s = min(MAX_WARMUP_S, self.max_time_s / 2)
        if self.min_samples < 1 or self.min_warmup < 0 or self.warmup_window < 1:
            raise InvalidInputError("min_samples and warmup_window must be at least 1 and min_warmup at least 0.")
        if not (0 <= self.min_time_s <= self.max_time_s) or self.max_warmup_s < 0:
            raise InvalidInputError("Timing limits must satisfy 0 <= min_time_s <= max_time_s and max_warmup_s >= 0.")
        if not self.target_rel_ci > 0 or not self.warmup_tol > 0:
            raise InvalidInputError("target_rel_ci and warmup_tol must be positive.")
        if isinstance(self.visits, bool) or not isinstance(self.visits, int) or self.visits < 1:
            raise InvalidInputError(f"visits must be an integer of at least 1, got {self.visits!r}.")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or int(self.num_threads) < 1):
            raise InvalidInputError(f"num_threads must be at least 1 or None, got {self.num_threads!r}.")

    @classmethod
    def quick(cls, **overrides) -> "TimingConfig":
        """A few iterations and loose targets: for tests and ``--quick`` runs, not for reporting."""
        settings = dict(min_samples=7, min_time_s=0.02, max_time_s=0.5, target_rel_ci=0.05, min_warmup=2,
                        warmup_window=3, warmup_tol=0.1, max_warmup_s=0.3)
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict:
        return asdict(self)


def splits_budget(config: TimingConfig, call_s: float) -> bool:
    """Whether a point with calls of ``call_s`` seconds shares its budget over ``config.visits`` visits."""
    return config.visits > 1 and call_s < SINGLE_VISIT_CALL_S


def visit_limits(config: TimingConfig, call_s: float) -> TimingConfig:
    """The limits one visit works to: ``config``'s ``1 / visits`` share (time limits and sample count) when the
    point :func:`splits_budget`, else ``config`` itself."""
    if not splits_budget(config, call_s):
        return config
    share = config.visits
    return dataclasses.replace(config, min_time_s=config.min_time_s / share, max_time_s=config.max_time_s / share,
                               min_samples=max(1, math.ceil(config.min_samples / share)))


@contextlib.contextmanager
def thread_count(num_threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(num_threads)`` and restore the old count.

    ``None`` keeps torch's current setting. Yields the count in effect.
    """
    previous = torch.get_num_threads()
    if num_threads is None:
        yield previous
        return
    if isinstance(num_threads, bool) or int(num_threads) < 1:
        raise InvalidInputError(f"num_threads must be at least 1, got {num_threads!r}.")
    torch.set_num_threads(int(num_threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


#: Environment variables that carry a pinned thread count to the processes a run starts (read at import by
#: OpenMP and MKL, so a notebook kernel, forked or not, starts with the count).
THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Logical cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pin_threads(count: int | None) -> None:
    """Make ``count`` the thread count of this process and of every process it starts from now on (``None``: leave
    torch's default, one thread per core).

    Why a run pins it: on a shared 2-vCPU VM a two-thread op waits for whichever vCPU the host serves later, so
    its times jump between states up to 1.7x apart for seconds at a time; one thread moved about 10% (1 s medians,
    p95/p5, measured here: docs/regressions.md). torch follows here; kernels and ONNX Runtime (which takes
    torch's count) follow through :data:`THREAD_ENVIRONMENT`.
    """
    if count is None:
        return
    count = check_threads(count)
    for name in THREAD_ENVIRONMENT:
        os.environ[name] = str(count)
    torch.set_num_threads(count)


def check_threads(count) -> int:
    """``count`` as a thread count this process may use; one sentence (:class:`InvalidInputError`) otherwise."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= available_cores():
        raise InvalidInputError(f"--threads {count}: this machine lets the run use 1 to {available_cores()} "
                                f"thread(s), one per core it may run on.")
    return count


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable Python's cyclic garbage collector (a collection mid-loop would be timed)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# -- one timer per device kind ------------------------------------------------
class CpuTimer:
    """``perf_counter_ns`` around each call."""

    name = "cpu-perf_counter_ns"

    def __init__(self, device: torch.device):
        self.device = device

    def run_block(self, fn: Callable[[], object], calls: int) -> list[float]:
        clock = time.perf_counter_ns
        durations = [0] * calls
        for i in range(calls):
            start = clock()
            fn()
            durations[i] = clock() - start
        return [d / 1e6 for d in durations]


class CudaTimer:
    """CUDA events around each call; one host synchronization per block."""

    name = "cuda-event"

    def __init__(self, device: torch.device):
        self.device = device

    def run_block(self, fn: Callable[[], object], calls: int) -> list[float]:
        with torch.cuda.device(self.device):
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(calls)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(self.device)
            return [start.elapsed_time(end) for start, end in events]


class MpsTimer:
    """Host clock with ``torch.mps.synchronize()`` before each read.

    Each timed call ends with a synchronize, so the next call's start is also
    synchronized: one extra sync before the block completes the rule.
    """

    name = "mps-sync-perf_counter_ns"

    def __init__(self, device: torch.device):
        self.device = device
        self._host = CpuTimer(device)

    def run_block(self, fn: Callable[[], object], calls: int) -> list[float]:
        def synchronized_call() -> None:
            fn()
            torch.mps.synchronize()

        torch.mps.synchronize()
        return self._host.run_block(synchronized_call, calls)


_TIMERS = {"cpu": CpuTimer, "cuda": CudaTimer, "mps": MpsTimer}


def make_timer(device: str | torch.device):
    """The timer for ``device``'s kind."""
    device = torch.device(device)
    return _TIMERS[device_kind(device)](device)


# -- result ---------------------------------------------------------------------
@dataclass
class Measurement:
    """Raw per-call latencies (ms) of one timed function and how they were obtained."""

    samples_ms: list[float]
    warmup_calls: int
    converged: bool
    wall_s: float
    device: str = "cpu"
    timer: str = CpuTimer.name
    num_threads: int = 0
    warmup_stable: bool = True
    stop_reason: str = ""
    config: dict = field(default_factory=dict)
    interference: bool = False
    interference_detail: str = "not measured"

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms)) if self.samples_ms else math.nan

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.samples_ms)) if self.samples_ms else math.nan

    @property
    def ci_low_ms(self) -> float:
        return stats.median_ci(self.samples_ms)[0]

    @property
    def ci_high_ms(self) -> float:
        return stats.median_ci(self.samples_ms)[1]

    @property
    def rel_ci_halfwidth(self) -> float:
        """Half-width of the median's 95% CI relative to the median."""
        return stats.relative_ci_halfwidth(self.samples_ms)

    def stats(self) -> dict:
        """:func:`infopt.measure.stats.summarize` of the samples (ms; ``cv`` unitless)."""
        return stats.summarize(self.samples_ms)

    def to_dict(self) -> dict:
        return {
            "samples_ms": list(self.samples_ms),
            "warmup_calls": self.warmup_calls,
            "converged": self.converged,
            "wall_s": self.wall_s,
            "device": self.device,
            "timer": self.timer,
            "num_threads": self.num_threads,
            "warmup_stable": self.warmup_stable,
            "stop_reason": self.stop_reason,
            "config": dict(self.config),
            "interference": self.interference,
            "interference_detail": self.interference_detail,
            "stats": self.stats(),
        }

    def __repr__(self) -> str:
        return (f"<Measurement median={self.median_ms:.4g} ms 95% CI {ci_text(self.ci_low_ms, self.ci_high_ms)} "
                f"n={self.n} converged={self.converged} interference={self.interference} device={self.device}>")


def describe_failure(error: BaseException) -> tuple[str, str]:
    """``(status, message)`` for a point that raised: ``"oom"`` for out-of-memory, else ``"error"``.

    The message is the exception type and the first line of its text, short
    enough for a table cell.
    """
    lines = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:500]
    return ("oom" if is_out_of_memory(error) else "error"), message


@contextlib.contextmanager
def recorded_failure(row: dict) -> Iterator[None]:
    """Run one sweep point; an exception becomes ``row["status"]`` (``"oom"``/``"error"``) and ``row["error"]``.

    Invalid input is the caller's mistake rather than a failed point, so it propagates.
    """
    try:
        yield
    except InvalidInputError:
        raise
    except Exception as error:  # noqa: BLE001 - one failing point must not stop the sweep
        row["status"], row["error"] = describe_failure(error)


# -- the loop ---------------------------------------------------------------------
def _warm_up(timer, fn: Callable[[], object], config: TimingConfig) -> tuple[int, bool, list[float]]:
    """Call ``fn`` until the median of the last window moves less than ``warmup_tol`` from the window before.

    ``min_warmup`` calls run unless ``max_warmup_s`` is spent first, and never fewer than two (the first call's
    one-off cost, then one at speed); after them ``max_warmup_s`` bounds the wait for stability. (A call of
    seconds, gpt2 at batch 16 on a 2-core CPU, spent 19 s in five warm-up calls for a 4 s timing budget.)

    Returns (calls made, whether it stabilized, the last window's samples).
    """
    samples: list[float] = []
    started = time.perf_counter()
    window = config.warmup_window
    while True:
        samples += timer.run_block(fn, 1 if len(samples) < config.min_warmup else window)
        if len(samples) >= max(config.min_warmup, 2 * window):
            previous = float(np.median(samples[-2 * window:-window]))
            last = float(np.median(samples[-window:]))
            if previous > 0 and abs(last - previous) / previous < config.warmup_tol:
                return len(samples), True, samples[-window:]
        if len(samples) >= min(config.min_warmup, 2) and time.perf_counter() - started >= config.max_warmup_s:
            return len(samples), False, samples[-window:]


def measure(fn: Callable[[], object], device: str | torch.device = "cpu",
            config: TimingConfig | None = None) -> Measurement:
    """Time ``fn()`` on ``device`` (see module docstring for the rules); returns the raw samples."""
    config = config or TimingConfig()
    device = torch.device(device)
    timer = make_timer(device)
    started = time.perf_counter()
    with thread_count(config.num_threads) as threads, torch.inference_mode(), gc_paused(), watch(device) as window:
        warmup_calls, warmup_stable, recent = _warm_up(timer, fn, config)
        estimate_s = max(float(np.median(recent)) / 1e3, 1e-7)
        limits = visit_limits(config, estimate_s)  # one visit's share of the budget, or all of it
        samples: list[float] = []
        sampling_started = time.perf_counter()
        next_check = limits.min_samples
        while True:
            elapsed = time.perf_counter() - sampling_started
            remaining = limits.max_time_s - elapsed
            calls = max(1, min(_MAX_BLOCK_CALLS, int(_BLOCK_TARGET_S / estimate_s), int(remaining / estimate_s)))
            block_started = time.perf_counter()
            samples += timer.run_block(fn, calls)
            estimate_s = max((time.perf_counter() - block_started) / calls, 1e-7)
            elapsed = time.perf_counter() - sampling_started
            enough = len(samples) >= limits.min_samples and elapsed >= limits.min_time_s
            if enough and len(samples) >= next_check:
                # The CI costs O(n); checking at ~10% growth keeps the total cost linear.
                next_check = int(len(samples) * 1.1) + 1
                if stats.relative_ci_halfwidth(samples) <= config.target_rel_ci:
                    converged, reason = True, "ci-target-met"
                    break
            if elapsed >= limits.max_time_s:
                converged = enough and stats.relative_ci_halfwidth(samples) <= config.target_rel_ci
                reason = "ci-target-met" if converged else "max-time"
                break
    return Measurement(
        samples_ms=samples, warmup_calls=warmup_calls, converged=bool(converged),
        wall_s=time.perf_counter() - started, device=str(device), timer=timer.name, num_threads=threads,
        warmup_stable=warmup_stable, stop_reason=reason, config=config.to_dict(),
        interference=window.result.flagged, interference_detail=window.result.detail,
    )


__all__ = ["MAX_WARMUP_S", "SINGLE_VISIT_CALL_S", "THREAD_ENVIRONMENT", "CpuTimer", "CudaTimer", "Measurement",
           "MpsTimer", "TimingConfig", "available_cores", "check_threads", "describe_failure", "gc_paused",
           "make_timer", "measure", "pin_threads", "splits_budget", "thread_count", "visit_limits"]
