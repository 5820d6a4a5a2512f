"""The race's screen: a few single calls per contender, the clearly slower ones out, and rounds sized to the budget.

Between the accuracy check and the paired rounds (:mod:`infopt.optimize.race`), each safe contender and the
baseline get up to :data:`SCREEN_CALLS` timed calls at the race batch size, after their warm-up. One pass is a
baseline call, one call of every contender (the order reversed on every other pass), and the passes are
separated by baseline calls: ``B v1 v2 ... vn B vn ... v1 B ...``, so every contender sits between two
baseline calls in each pass. A contender is eliminated (stage ``screen``) when it had at least
:data:`SCREEN_MIN_CALLS` calls and every one of them was slower than every baseline call by more than
:data:`SCREEN_MARGIN`: the upper end of its per-call speedup range (slowest baseline call / its fastest call)
lies below ``1 / SCREEN_MARGIN``. The first pass always runs; a later one only while the time spent plus the
last pass's duration stays within :data:`SCREEN_SHARE` of the budget, so the screen leaves the paired rounds
most of it. The screen's calls count toward the race's budget (they are timing); the first pass can overrun it
by at most itself.

:func:`plan_rounds` then sizes the race from what the screen measured and the budget left: blocks last about
a third of the remaining budget over :data:`MIN_RACE_ROUNDS` rounds (at least one call), and when even that
cannot give every survivor :data:`MIN_RACE_ROUNDS` rounds, only the fastest-screened survivors that fit are
raced (the others keep their screen interval, marked not raced), so a slow model still gets a verdict among
its fastest contenders rather than an undecided race of all of them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable, Iterable

from infopt.optimize.registry import BASELINE

#: Rounds every contender runs before any elimination (6: the least count whose median has a 95% CI).
MIN_RACE_ROUNDS = 6
#: Timed calls per contender in the screen (single calls, after warm-up).
SCREEN_CALLS = 3
#: Fewest screen calls a contender needs before the screen may eliminate it.
SCREEN_MIN_CALLS = 2
#: A contender is out at the screen when its fastest call is slower than the slowest baseline call by more
#: than this factor (its per-call speedup range lies below ``1 / SCREEN_MARGIN``).
SCREEN_MARGIN = 1.5
#: Share of the budget the screen's later passes may use (its first pass always runs).
SCREEN_SHARE = 0.5
#: The rounds' estimated cost is inflated by this factor when checking that :data:`MIN_RACE_ROUNDS` fit.
ROUND_HEADROOM = 1.25
#: Shortest block (seconds) of a race round; a block is always at least one call.
MIN_BLOCK_S = 0.02


@dataclasses.dataclass
class Screened:
    """One contender's screen: its call times (seconds), and whether it went out."""

    spec: str
    times: list = dataclasses.field(default_factory=list)
    out: bool = False
    interval: tuple = (math.nan, math.nan, math.nan)  # per-call speedup (median, low, high) against the baseline


@dataclasses.dataclass
class ScreenResult:
    contenders: list                      # Screened, in the order given
    baseline_times: list
    spent_s: float
    passes: int

    def survivors(self) -> list[Screened]:
        """The contenders still in, fastest-screened first (highest median per-call speedup)."""
        return sorted((c for c in self.contenders if not c.out), key=lambda c: -_finite(c.interval[0]))

    def out(self) -> list[Screened]:
        return [c for c in self.contenders if c.out]


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def per_call_interval(times: list, baseline_times: list) -> tuple[float, float, float]:
    """Per-call speedup of a contender against the baseline: (median ratio, slowest-case, fastest-case)."""
    if not times or not baseline_times:
        return math.nan, math.nan, math.nan
    return (statistics.median(baseline_times) / statistics.median(times), min(baseline_times) / max(times),
            max(baseline_times) / min(times))


def screen(specs: Iterable[str], time_call: Callable[[str], float], *, budget_s: float,
           clock: Callable[[], float] = time.monotonic, calls: int = SCREEN_CALLS, margin: float = SCREEN_MARGIN,
           share: float = SCREEN_SHARE, min_calls: int = SCREEN_MIN_CALLS) -> ScreenResult:
    """Screen ``specs``: ``time_call(spec)`` times one call (``spec`` :data:`BASELINE` for the baseline) and
    returns its seconds. ``clock`` measures what the screen spends of ``budget_s``. See the module docstring."""
    contenders = [Screened(spec) for spec in specs]
    base: list = []
    start, last_pass_s, passes = clock(), 0.0, 0
    while contenders and passes < calls:
        if passes and clock() - start + last_pass_s > share * budget_s:
            break
        pass_start = clock()
        if not passes:
            base.append(float(time_call(BASELINE)))
        for entry in (contenders if passes % 2 == 0 else contenders[::-1]):
            entry.times.append(float(time_call(entry.spec)))
        base.append(float(time_call(BASELINE)))
        passes += 1
        last_pass_s = clock() - pass_start
    for entry in contenders:
        entry.interval = per_call_interval(entry.times, base)
        entry.out = len(entry.times) >= min_calls and entry.interval[2] < 1 / margin
    return ScreenResult(contenders, base, clock() - start, passes)


@dataclasses.dataclass
class RoundPlan:
    """Which survivors the race runs, the calls per block of each side, and one round's estimated seconds."""

    raced: list                           # specs, fastest-screened first
    dropped: list                         # survivors left out for the budget, fastest-screened first
    calls: dict                           # spec (and BASELINE) -> calls per block
    round_s: float                        # estimated seconds of one round of the raced contenders
    fits: bool                            # MIN_RACE_ROUNDS rounds of the raced contenders fit what is left

    def restriction(self) -> str:
        """The outcome's note when survivors were left out ('' when all were raced)."""
        if not self.dropped:
            return ""
        return (f"raced the {len(self.raced)} fastest of {len(self.raced) + len(self.dropped)} after the screen; "
                "the budget allowed no more")


def block_calls_for(call_s: float, block_s: float) -> int:
    """Calls per block so one block lasts about ``block_s`` (at least 1, at most 10,000)."""
    return max(1, min(10_000, int(block_s / max(call_s, 1e-7))))


def plan_rounds(result: ScreenResult, remaining_s: float, *, min_rounds: int = MIN_RACE_ROUNDS,
                min_block_s: float = MIN_BLOCK_S, headroom: float = ROUND_HEADROOM) -> RoundPlan:
    """Size the race from the screen: blocks of about ``remaining_s / (3 * survivors * min_rounds * 2)``
    (at least ``min_block_s``, at least one call), and the most fastest-screened survivors whose
    ``min_rounds`` rounds fit ``remaining_s`` (with ``headroom``). When not even the fastest fits, all
    survivors are raced (the race then ends undecided unless the estimate was pessimistic)."""
    survivors = result.survivors()
    if not survivors:
        return RoundPlan([], [], {}, 0.0, True)
    base_s = statistics.median(result.baseline_times)
    block_s = max(min_block_s, max(remaining_s, 0.0) / (3 * len(survivors) * min_rounds * 2))
    calls = {BASELINE: block_calls_for(base_s, block_s)}
    cost = {}
    for entry in survivors:
        call_s = statistics.median(entry.times)
        calls[entry.spec] = block_calls_for(call_s, block_s)
        cost[entry.spec] = calls[BASELINE] * base_s + calls[entry.spec] * call_s
    fitting, total = 0, 0.0
    for entry in survivors:
        if min_rounds * (total + cost[entry.spec]) * headroom > remaining_s:
            break
        total += cost[entry.spec]
        fitting += 1
    raced = survivors[:fitting] if fitting else survivors
    round_s = sum(cost[entry.spec] for entry in raced)
    return RoundPlan([e.spec for e in raced], [e.spec for e in survivors[len(raced):]], calls, round_s,
                     fits=bool(fitting))


__all__ = ["MIN_BLOCK_S", "MIN_RACE_ROUNDS", "ROUND_HEADROOM", "SCREEN_CALLS", "SCREEN_MARGIN", "SCREEN_MIN_CALLS",
           "SCREEN_SHARE", "RoundPlan", "ScreenResult", "Screened", "block_calls_for", "per_call_interval",
           "plan_rounds", "screen"]
