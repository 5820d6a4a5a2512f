"""Peak-memory measurement for a callable, one method per device kind.

Memory is always measured in its own pass, never while timing, so that
sampling threads and allocator bookkeeping cannot perturb latency.

* CPU (``memory_method="cpu-rss-sampled"``): a background thread samples the
  process resident set size (psutil) every millisecond during the calls. Before
  the pass, Python garbage is collected and, on glibc, ``malloc_trim(0)`` hands
  freed heap pages back to the OS so the baseline is not inflated by memory an
  earlier run left cached. Reported: the absolute RSS peak and the increase over
  the RSS just before the pass (activations and workspace).
* CUDA (``"cuda-max-allocated"``): ``reset_peak_memory_stats`` then
  ``max_memory_allocated`` (tensors) and ``max_memory_reserved`` (allocator
  cache); the increase is over ``memory_allocated`` before the pass.
* MPS (``"mps-allocated-sampled"``): ``torch.mps.current_allocated_memory`` sampled
  by the same background thread (plus once after every call), and
  ``driver_allocated_memory`` as the reserved figure. Written to the
  ``torch.mps`` API; it cannot be exercised on the Linux CI machine.

All figures are MiB (2**20 bytes) and named ``*_mb`` for brevity.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from typing import Callable

import psutil
import torch

from infopt.devices import device_kind, empty_cache, synchronize

MIB = 2**20

_LIBC = None


def _malloc_trim() -> bool:
    """Return freed C-heap pages to the OS where glibc allows it (True if done)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - raises AttributeError off glibc
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    try:
        _LIBC.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def release_memory(device: str | torch.device = "cpu", thorough: bool = False) -> None:
    """Free what Python, the C heap and the device allocator hold but no longer use.

    By default only Python's young generations are collected: the objects a
    measurement creates (with the collector paused) are all young, and a full
    collection costs ~0.2 s once transformers is imported. ``thorough=True``
    (after an out-of-memory error) collects everything.
    """
    gc.collect() if thorough else gc.collect(1)
    empty_cache(device)
    if device_kind(device) == "cpu":
        _malloc_trim()


class _Sampler:
    """Background thread that polls ``read()`` (bytes) until the context exits.

    ``samples`` is a list of ``(seconds since start, bytes)``; ``baseline_bytes``
    is the reading just before the thread starts; ``peak_bytes`` the maximum of
    all readings (the baseline and a final reading on exit included).
    """

    def __init__(self, read: Callable[[], int], interval_s: float = 0.001):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}.")
        self._read = read
        self.interval_s = float(interval_s)
        self.samples: list[tuple[float, int]] = []
        self.baseline_bytes: int = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _record(self) -> None:
        self.samples.append((time.perf_counter() - self._t0, int(self._read())))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._record()

    def sample_now(self) -> None:
        """Take one extra reading from the calling thread (e.g. after each call)."""
        self._record()

    def __enter__(self) -> "_Sampler":
        self._t0 = time.perf_counter()
        self.baseline_bytes = int(self._read())
        self.samples = [(0.0, self.baseline_bytes)]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="infopt-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record()

    @property
    def peak_bytes(self) -> int:
        return max((value for _, value in self.samples), default=self.baseline_bytes)

    @property
    def increase_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)


class RssSampler(_Sampler):
    """Samples this process's resident set size (bytes) in a background thread."""

    def __init__(self, interval_s: float = 0.001):
        process = psutil.Process()
        super().__init__(lambda: process.memory_info().rss, interval_s)


class MpsAllocatedSampler(_Sampler):
    """Samples ``torch.mps.current_allocated_memory()`` in a background thread."""

    def __init__(self, interval_s: float = 0.001):
        super().__init__(torch.mps.current_allocated_memory, interval_s)


def measure_peak_memory(fn: Callable[[], object], device: str | torch.device = "cpu", calls: int = 3) -> dict:
    """Run ``fn`` ``calls`` times in a memory-only pass and report its peak.

    Returns ``peak_memory_mb`` (absolute peak: RSS on CPU, allocated tensors on
    CUDA/MPS), ``activation_memory_mb`` (peak minus the level just before the
    pass), ``memory_method``, plus ``baseline_memory_mb`` and
    ``peak_reserved_mb`` (allocator/driver reservation; ``None`` on CPU).
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls!r}.")
    kind = device_kind(device)
    release_memory(device)
    with torch.inference_mode():
        if kind == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
            for _ in range(calls):
                fn()
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            reserved = torch.cuda.max_memory_reserved(device)
            method = "cuda-max-allocated"
        elif kind == "mps":
            synchronize(device)
            driver_peak = torch.mps.driver_allocated_memory()
            with MpsAllocatedSampler() as sampler:
                for _ in range(calls):
                    fn()
                    synchronize(device)
                    sampler.sample_now()
                    driver_peak = max(driver_peak, torch.mps.driver_allocated_memory())
            baseline, peak, reserved = sampler.baseline_bytes, sampler.peak_bytes, driver_peak
            method = "mps-allocated-sampled"
        else:
            with RssSampler() as sampler:
                for _ in range(calls):
                    fn()
            baseline, peak, reserved = sampler.baseline_bytes, sampler.peak_bytes, None
            method = "cpu-rss-sampled"
    return {
        "peak_memory_mb": peak / MIB,
        "activation_memory_mb": max(0, peak - baseline) / MIB,
        "memory_method": method,
        "baseline_memory_mb": baseline / MIB,
        "peak_reserved_mb": None if reserved is None else reserved / MIB,
    }


__all__ = ["MIB", "MpsAllocatedSampler", "RssSampler", "measure_peak_memory", "release_memory"]
