"""Drift-robust speedup: baseline and variant timed in alternating blocks (A B, B A, ...).

Load that comes and goes on a shared machine hits both sides of a round alike, so the median of the per-round
ratios survives drift that distorts a ratio of two medians timed at different moments.
"""

from __future__ import annotations

import dataclasses
import statistics

import torch

from infopt.errors import InvalidInputError
from infopt.measure.interference import watch
from infopt.measure.stats import median_ci
from infopt.measure.timing import TimingConfig, gc_paused, make_timer, thread_count

#: Rounds of the paired comparison. 10 is the smallest count whose 95% order-statistic CI of the median
#: leaves out the two most extreme rounds (6 is the least that gives any interval).
PAIRED_ROUNDS = 10
#: The columns a paired measurement fills (:func:`paired_speedup`, or a race's rounds).
PAIRED_COLUMNS = ("paired_speedup", "paired_speedup_ci_low", "paired_speedup_ci_high", "paired_rounds")
#: Fewest rounds when calls are too slow for :data:`PAIRED_ROUNDS` within the time share (6: the least with a CI).
MIN_PAIRED_ROUNDS = 6
#: Share of each point's time cap (``timing.max_time_s``) given to the paired rounds when they run; the
#: unpaired timing of every row gets the rest, so a sweep takes about as long as an unpaired one did.
PAIRED_SHARE = 0.5


def unpaired_timing(timing: TimingConfig, paired_rounds: int) -> TimingConfig:
    """``timing`` with its cap cut to ``1 - PAIRED_SHARE`` of it when paired rounds follow (unchanged otherwise)."""
    if not paired_rounds:
        return timing
    cap = timing.max_time_s * (1 - PAIRED_SHARE)
    return dataclasses.replace(timing, max_time_s=cap, min_time_s=min(timing.min_time_s, cap))


def block_calls(timer, fn, block_s: float) -> tuple[int, float]:
    """Calls per timing block so one block of ``fn`` lasts about ``block_s`` (at least 1, at most 10,000), and the
    single-call estimate in ms it came from; one untimed call first."""
    fn()
    estimate_ms = max(timer.run_block(fn, 1)[0], 1e-4)
    return max(1, min(10_000, int(block_s * 1e3 / estimate_ms))), estimate_ms


def paired_round(timer, base_fn, variant_fn, base_calls: int, variant_calls: int, index: int) -> float:
    """One paired round: a block of each side, the order alternating with ``index`` (A B, then B A);
    returns baseline median / variant median."""
    blocks = {"base": (base_fn, base_calls), "variant": (variant_fn, variant_calls)}
    medians = {}
    for side in (("base", "variant") if index % 2 == 0 else ("variant", "base")):
        fn, calls = blocks[side]
        medians[side] = statistics.median(timer.run_block(fn, calls))
    return medians["base"] / medians["variant"]


def paired_speedup(baseline, variant, batch_size: int, seq_len: int | None = None, *, rounds: int = PAIRED_ROUNDS,
                   timing: TimingConfig | None = None, block_s: float | None = None) -> dict:
    """Speedup from alternating timing blocks of ``baseline`` and ``variant`` (see module docstring).

    Each side first makes one untimed call and one timed call that sizes its
    blocks to ``block_s`` seconds (default: ``PAIRED_SHARE * timing.max_time_s``
    spread over the ``2 * rounds`` blocks; at least one call). Rounds alternate
    the order (A B, B A, ...), so load drift on a shared machine hits both
    sides of every round alike and the per-round ratios stay comparable when
    absolute latencies do not. When ``block_s`` is derived from ``timing`` and
    one call of each side already overruns the share, the rounds drop toward
    :data:`MIN_PAIRED_ROUNDS` (``paired_rounds`` reports how many ran), so slow
    models keep a default run near its usual length. Returns the ``paired_*``
    columns plus the ``interference`` of the whole paired window.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InvalidInputError(f"paired rounds must be an integer of at least 1, got {rounds!r}.")
    timing = timing or TimingConfig()
    adaptive = block_s is None
    block_s = PAIRED_SHARE * timing.max_time_s / (2 * rounds) if adaptive else block_s
    base_inputs = baseline.prepare_input(batch_size, seq_len)
    variant_inputs = variant.prepare_input(batch_size, seq_len)
    sides = {"base": lambda: baseline.forward(base_inputs), "variant": lambda: variant.forward(variant_inputs)}
    timer = make_timer(baseline.device)
    ratios = []
    with thread_count(timing.num_threads), torch.inference_mode(), gc_paused(), watch(baseline.device) as window:
        calls, round_s = {}, 0.0
        for side, fn in sides.items():
            calls[side], estimate_ms = block_calls(timer, fn, block_s)
            round_s += calls[side] * estimate_ms / 1e3
        if adaptive and round_s * rounds > 2 * rounds * block_s and rounds > MIN_PAIRED_ROUNDS:
            rounds = max(MIN_PAIRED_ROUNDS, int(2 * rounds * block_s / round_s))
        for index in range(rounds):
            ratios.append(paired_round(timer, sides["base"], sides["variant"], calls["base"], calls["variant"], index))
    low, high = median_ci(ratios)
    return {"paired_speedup": statistics.median(ratios), "paired_speedup_ci_low": low,
            "paired_speedup_ci_high": high, "paired_rounds": rounds, **window.result.columns()}


__all__ = ["MIN_PAIRED_ROUNDS", "PAIRED_COLUMNS", "PAIRED_ROUNDS", "PAIRED_SHARE", "block_calls", "paired_round",
           "paired_speedup", "unpaired_timing"]
