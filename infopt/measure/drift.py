"""Machine drift: a fixed reference workload timed at the start and the end of every run.

A 2-core VM (or a laptop on battery, or a GPU that heats up) changes speed by 10-25% from minute to minute,
so a ratio of two runs' medians is partly the machine. Every run times the same two small kernels (a fixed
fp32 matmul and a fixed convolution, under a second each, in alternating blocks) before its first notebook,
after each timing notebook (``checkpoints``: the local runner) and after its last, and records them in
``run.json``; a comparison divides its ratios by the ratio of the two runs' reference times and treats a
change smaller than the reference's own change as drift, not as a regression.

A moment's time of one kernel is its fastest block's median (see :data:`REFERENCE_TIMING`). The reference's
time of one run is the geometric mean of those (every moment, both kernels); its
*spread* is the largest ``log(slowest / fastest)`` of one kernel over the run's moments (how much the machine
moved within the run; more moments show more of it).
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
from dataclasses import dataclass

import torch

from infopt.measure.timing import make_timer, thread_count

#: Shapes of the reference kernels and how they are timed; changing either makes old runs incomparable.
REFERENCE_VERSION = 2
MATMUL_SIZE = 256
CONV_SHAPE = (1, 16, 64, 64)  # N, C, H, W; a 3x3 convolution C -> C, padding 1
#: Timing of one moment: the two kernels in alternating blocks (matmul, conv, matmul, ...), ``blocks`` of each,
#: ``block_s`` seconds per block. A shared VM has slow spells of 0.1-0.3 s (measured here: 9% of 100 ms windows
#: ran 30-60% slow), so one long median lands in a spell now and then; the fastest block's median does not
#: (over 10 moments it varied +-7% where the plain median varied +-18%).
REFERENCE_TIMING = dict(blocks=8, block_s=0.1, warmup_calls=10)
REFERENCE_KERNELS = ("matmul", "conv")
#: A GPU runs these kernels in microseconds: its blocks stop at this many calls.
MAX_BLOCK_CALLS = 2000


def reference_kernels(device: str | torch.device = "cpu") -> dict:
    """The fixed kernels as zero-argument callables on ``device`` (fixed seed, fixed shapes, fp32)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator).to(device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator).to(device)
    image = torch.randn(*CONV_SHAPE, generator=generator).to(device)
    weight = torch.randn(CONV_SHAPE[1], CONV_SHAPE[1], 3, 3, generator=generator).to(device)
    return {"matmul": lambda: torch.mm(a, b),
            "conv": lambda: torch.nn.functional.conv2d(image, weight, padding=1)}


def describe_reference() -> dict:
    """What the reference workload is, recorded next to its times."""
    return {"version": REFERENCE_VERSION, "matmul": f"fp32 {MATMUL_SIZE}x{MATMUL_SIZE} @ {MATMUL_SIZE}x{MATMUL_SIZE}",
            "conv": f"fp32 conv2d 3x3, input {'x'.join(map(str, CONV_SHAPE))}, {CONV_SHAPE[1]} filters, padding 1",
            "timing": dict(REFERENCE_TIMING),
            "speed": "per kernel, the fastest block's median (speed_ms): the machine's pace outside slow spells"}


def time_reference(device: str | torch.device = "cpu", num_threads: int | None = None, **timing) -> dict:
    """Time both reference kernels on ``device`` in alternating blocks; per kernel its ``speed_ms`` (fastest
    block's median), ``median_ms`` (all samples), the block medians and ``n``, plus when and where.

    ``timing`` overrides :data:`REFERENCE_TIMING` (quick runs and tests use shorter budgets).
    """
    settings = {**REFERENCE_TIMING, **timing}
    record = {"utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "device": str(device)}
    timer, kernels = make_timer(device), reference_kernels(device)
    samples: dict[str, list[float]] = {name: [] for name in kernels}
    blocks: dict[str, list[float]] = {name: [] for name in kernels}
    with thread_count(num_threads) as threads, torch.inference_mode():
        calls = {}
        for name, kernel in kernels.items():
            warm = timer.run_block(kernel, settings["warmup_calls"])
            per_call_s = max(statistics.median(warm) / 1e3, 1e-7)
            calls[name] = min(MAX_BLOCK_CALLS, max(3, int(settings["block_s"] / per_call_s)))
        for _ in range(settings["blocks"]):
            for name, kernel in kernels.items():
                block = timer.run_block(kernel, calls[name])
                samples[name] += block
                blocks[name].append(statistics.median(block))
    for name in kernels:
        record[name] = {"speed_ms": min(blocks[name]), "median_ms": statistics.median(samples[name]),
                        "block_medians_ms": blocks[name], "n": len(samples[name]),
                        "num_threads": threads}
    return record


#: Shorter budget of ``--quick`` runs (their rows are short too, so a quick run stays quick).
QUICK_TIMING = dict(blocks=4, block_s=0.05)


def record_reference(record: dict | None, moment: str, device: str = "cpu", quick: bool = False,
                     after: str | None = None) -> dict:
    """``record`` (the ``reference_workload`` of ``run.json``) with ``moment`` timed now: "start", "end", or
    "checkpoint" (appended to ``checkpoints``, with ``after``: the notebook it followed).

    A failure to time the reference is recorded as its ``error`` rather than stopping the run.
    """
    record = dict(record or {})
    record.setdefault("definition", describe_reference())
    record["device"] = record.get("device") or str(device)
    try:
        timed = time_reference(record["device"], **(QUICK_TIMING if quick else {}))
    except Exception as error:  # noqa: BLE001 - the run's own measurements matter more than its reference
        timed = {"error": f"{type(error).__name__}: {error}"[:300]}
    if moment == "checkpoint":
        record["checkpoints"] = [*record.get("checkpoints", []), {**timed, "after": after}]
    else:
        record[moment] = timed
    return record


def _moments(run_record: dict) -> list:
    """The timed moments of one run in time order: start, the checkpoints, end."""
    checkpoints = run_record.get("checkpoints")
    return [run_record.get("start"), *(checkpoints if isinstance(checkpoints, list) else []), run_record.get("end")]


def moment_times(record: dict | None) -> dict[str, float]:
    """Per kernel, the time (ms) one timed moment stands for: its ``speed_ms`` (a version-1 record: its median)."""
    if not isinstance(record, dict):
        return {}
    medians = {}
    for name in REFERENCE_KERNELS:
        timed = record.get(name) if isinstance(record.get(name), dict) else {}
        value = timed.get("speed_ms", timed.get("median_ms"))  # version 1 records had only the median
        if isinstance(value, (int, float)) and value > 0 and math.isfinite(value):
            medians[name] = float(value)
    return medians


def reference_times(run_record: dict | None) -> dict[str, list[float]]:
    """Per kernel, the medians (ms) a run's ``reference_workload`` holds (start, checkpoints, end: whichever
    exist), in time order."""
    times: dict[str, list[float]] = {}
    if not isinstance(run_record, dict):
        return times
    for moment in _moments(run_record):
        for name, value in moment_times(moment).items():
            times.setdefault(name, []).append(value)
    return times


def within_run_spread(run_record: dict | None) -> float:
    """Largest ``log(slowest / fastest)`` of one kernel over one run's moments (0 when only one was timed)."""
    times = reference_times(run_record)
    return max((math.log(max(v) / min(v)) for v in times.values() if len(v) > 1), default=0.0)


def reference_ci(run_record: dict | None) -> float:
    """Largest relative half-width (log scale) of a reference median's 95% CI in one run (0 if not recorded)."""
    widths = [0.0]
    for moment in (_moments(run_record) if isinstance(run_record, dict) else []):
        for name in REFERENCE_KERNELS:
            timed = moment.get(name) if isinstance(moment, dict) else None
            low, high = (timed or {}).get("ci_low_ms"), (timed or {}).get("ci_high_ms")
            if isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 < low <= high:
                widths.append(math.log(high / low) / 2)
    return max(widths)


@dataclass
class Drift:
    """How much faster or slower the machine itself was in the new run than in the base run.

    ``factor``: new reference time / base reference time (1.2: the machine was 20% slower); ``band``: the
    log-size of a change the reference itself shows (``|log factor|`` or ``spread``, the larger), below which a
    difference is called machine drift; ``spread``: how far a row's own moment may sit from its run's mean
    speed, both runs together (their within-run spreads added in quadrature: each run's speed at the row's
    moment is uncertain on its own). ``known`` is False when a run has no reference (factor 1).
    """

    factor: float = 1.0
    band: float = 0.0
    spread: float = 0.0
    known: bool = False
    detail: str = "no reference workload in one of the runs: drift not accounted for"

    def as_dict(self) -> dict:
        return {"factor": self.factor, "band_pct": 100 * (math.exp(self.band) - 1),
                "spread_pct": 100 * (math.exp(self.spread) - 1), "known": self.known, "detail": self.detail}


def drift_between(base: dict | None, new: dict | None, repeat_spreads: tuple[float, float] = (0.0, 0.0)) -> Drift:
    """The :class:`Drift` between two runs' ``reference_workload`` records (kernels both runs timed).

    ``repeat_spreads``: per run, the largest ``|log|`` ratio of one point the run timed twice (the benchmark and
    the optimize notebook both time eager fp32 at a shared batch size); a run's spread is the larger of that
    and its reference's."""
    base_times, new_times = reference_times(base), reference_times(new)
    shared = [name for name in REFERENCE_KERNELS if name in base_times and name in new_times]
    versions = {(r or {}).get("definition", {}).get("version") for r in (base, new) if isinstance(r, dict)}
    if not shared or len(versions) > 1:
        return Drift()
    logs = [sum(map(math.log, new_times[n])) / len(new_times[n]) - sum(map(math.log, base_times[n])) /
            len(base_times[n]) for n in shared]
    log_factor = sum(logs) / len(logs)
    reference_spreads = (within_run_spread(base), within_run_spread(new))
    spread = math.hypot(*(max(pair) for pair in zip(reference_spreads, repeat_spreads)))
    # two kernels that disagree about the machine's change, and the reference's own CI, are uncertainty too
    spread = max(spread, (max(logs) - min(logs)) / 2, reference_ci(base), reference_ci(new))
    band = max(abs(log_factor), spread)
    pct = lambda log: 100 * (math.exp(log) - 1)  # noqa: E731
    repeated = (f"; a point timed twice in one run moved up to {pct(max(repeat_spreads)):.1f}%"
                if max(repeat_spreads) > 0 else "")
    detail = (f"reference workload {pct(log_factor):+.1f}% between the runs, moved up to "
              f"{pct(max(reference_spreads)):.1f}% within a run{repeated}; band {pct(band):.1f}%")
    return Drift(factor=math.exp(log_factor), band=band, spread=spread, known=True, detail=detail)


__all__ = ["CONV_SHAPE", "Drift", "MATMUL_SIZE", "REFERENCE_KERNELS", "REFERENCE_TIMING", "REFERENCE_VERSION",
           "QUICK_TIMING", "describe_reference", "drift_between", "moment_times", "record_reference", "reference_ci",
           "reference_kernels", "reference_times", "time_reference", "within_run_spread"]
