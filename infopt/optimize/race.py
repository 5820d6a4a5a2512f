"""The racing search: the fastest safe variant in a time budget, without timing the clearly slower ones to the end.

Stages, in order (each row of the result says where its variant stopped, ``search_stage``):

1. ``accuracy``: every variant is transformed and run once at the race batch size and checked by one function,
   ``accuracy check -> (row fields, ok)`` (:func:`output_agreement_check`: output agreement with eager fp32; a
   data-based check can take its place). A variant that fails it, or does not apply, is never timed. Compiled
   variants compile here, so compile time is recorded beside their rows and stays out of the race's timing.
2. ``screen`` (:mod:`infopt.optimize.screen`): up to 3 single timed calls of each safe variant, interleaved with
   baseline calls; a variant whose every call is slower than every baseline call by more than 1.5x (its per-call
   speedup range lies below 1/1.5) is eliminated here with that range. The rounds are then sized from the
   budget left and the variants still in; when even one call per block cannot give all of them
   :data:`MIN_RACE_ROUNDS` rounds, only the fastest-screened ones that fit are raced (the others stop at
   ``screen``, not raced, and the outcome says ``raced the k fastest of n after the screen``).
3. ``race``: short paired rounds against the baseline (one baseline block and one variant block, order
   alternating, ratio = baseline median / variant median) for every raced variant, all contenders one round
   each, then the next round. Once every contender has :data:`MIN_RACE_ROUNDS` rounds, after each round a
   variant is eliminated when the upper end of its paired-speedup 95% interval (order-statistic CI of the
   median round) lies below the lower end of the current leader's, or below 1 (slower than the baseline).
   The race ends when one contender is left (``separated``; ``raced alone`` when it was the only one raced, so
   no other contender was ever paired against it), none is (``none faster than the baseline``), or
   the budget or :data:`MAX_RACE_ROUNDS` is reached with several left (``no significant difference`` among
   them: a tie is reported, never settled by a coin flip; ``undecided`` when not even :data:`MIN_RACE_ROUNDS`
   rounds fitted). The budget counts the screen's calls and the rounds: a screen pass or a round starts only
   when the time spent plus its expected duration fits, so the budget is overrun by at most one round or one
   screen pass.
4. ``confirmed``: the contenders left (at most ``confirm_top``, best median first) are measured in full at every
   batch size asked for (the variant sweep's rows: latency, memory, paired speedup); the others keep the
   interval they had when they stopped. On a CPU a finalist is confirmed as it was raced (not transformed,
   exported or compiled again), and at the race's batch size its row keeps the race's accuracy check, compile
   time and paired interval (its rounds), timing only latency and memory there again.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
from typing import Callable, Iterable

import torch

from infopt.errors import InvalidInputError
from infopt.measure.benchmark import empty_row
from infopt.measure.interference import watch
from infopt.measure.memtrack import release_memory
from infopt.measure.stats import median_ci
from infopt.measure.sweep import Point
from infopt.measure.timing import TimingConfig, gc_paused, make_timer, recorded_failure, thread_count
from infopt.models.base import ModelWrapper
from infopt.optimize.accuracy import compare_outputs
from infopt.optimize.applied import apply_variant
from infopt.optimize.paired import PAIRED_COLUMNS, PAIRED_ROUNDS, paired_round
from infopt.optimize.registry import BASELINE, VariantError, VariantNotApplicableError
from infopt.optimize.screen import MIN_BLOCK_S, MIN_RACE_ROUNDS, SCREEN_CALLS, SCREEN_MARGIN, plan_rounds, screen
from infopt.optimize.sweep import (ACCURACY_COLUMNS, finish_table, reference_outputs, resolve_specs, sweep_variant,
                                   warm_up_fields)

#: Rounds after which contenders still not separated end as "no significant difference".
MAX_RACE_ROUNDS = 40
#: The optimize notebook's ``search`` values: the race (default) or every variant timed to the end.
SEARCHES = ("racing", "exhaustive")
#: Columns the race adds to the variant sweep's.
RACE_COLUMNS = ("search", "search_stage", "search_rounds", "search_note", "search_summary")


@dataclasses.dataclass
class Entry:
    """One variant in the race: its rounds so far, and where and why it stopped."""

    spec: str
    ratios: list = dataclasses.field(default_factory=list)
    stage: str = "race"                  # screen | race (still running) | eliminated | final
    note: str = ""
    interval: tuple = (math.nan, math.nan, math.nan)  # (median, ci low, ci high) when it stopped

    def summary(self) -> tuple[float, float, float]:
        low, high = median_ci(self.ratios)
        return (statistics.median(self.ratios) if self.ratios else math.nan), low, high


@dataclasses.dataclass
class RaceResult:
    entries: list
    outcome: str                         # separated | raced alone | no significant difference | none faster ...
    leader: str | None
    spent_s: float
    rounds: int
    budget_s: float
    screened_out: int = 0                # eliminated at the screen (before any round)

    def finalists(self) -> list[Entry]:
        return sorted((e for e in self.entries if e.stage == "final"), key=lambda e: -e.interval[0])

    def line(self, variants: int | None = None) -> str:
        """``search: racing, budget 240 s, spent 205 s, 17 variants, 4 raced to the end (...)``."""
        count = len(self.entries) if variants is None else variants
        leader = f", leader {self.leader}" if self.leader else ""
        out = f"{self.screened_out} out at the screen, " if self.screened_out else ""
        return (f"search: racing, budget {self.budget_s:.0f} s, spent {self.spent_s:.0f} s, {count} variants, "
                f"{out}{len(self.finalists())} raced to the end ({self.outcome}{leader}, {self.rounds} rounds)")


def run_race(specs: Iterable[str], measure_round: Callable[[str, int], float], *, budget_s: float,
             clock: Callable[[], float] = time.monotonic, min_rounds: int = MIN_RACE_ROUNDS,
             max_rounds: int = MAX_RACE_ROUNDS, spent_s: float = 0.0, first_round_s: float = 0.0,
             restriction: str = "") -> RaceResult:
    """Race the (already accuracy-checked) ``specs``; ``measure_round(spec, index)`` returns one paired ratio.

    ``spent_s`` of ``budget_s`` is already spent (the screen), ``first_round_s`` is the first round's expected
    duration (later rounds expect the last one's), ``restriction`` is appended to the outcome (the screen's
    ``raced the k fastest of n``). ``clock`` and ``measure_round`` are parameters so the rules can be tested on
    fake variants of known speed.
    """
    entries = [Entry(spec) for spec in specs]
    active = list(entries)
    start = clock()
    last_round_s, rounds = first_round_s, 0
    while active and rounds < max_rounds:
        if clock() - start + spent_s + last_round_s > budget_s:
            break
        round_start = clock()
        for entry in active:
            entry.ratios.append(float(measure_round(entry.spec, rounds)))
        rounds += 1
        last_round_s = clock() - round_start
        if rounds < min_rounds:
            continue
        stats = {entry.spec: entry.summary() for entry in active}
        leader = max(active, key=lambda e: stats[e.spec][0])
        for entry in list(active):
            median, low, high = stats[entry.spec]
            if high < 1:
                why = "slower than the baseline (interval below 1)"
            elif entry is not leader and high < stats[leader.spec][1]:
                why = f"slower than the leader {leader.spec} ({stats[leader.spec][1]:.3g}x or more)"
            else:
                continue
            entry.stage, entry.interval = "eliminated", (median, low, high)
            entry.note = f"eliminated after round {rounds}: {why}"
            active.remove(entry)
        if len(active) <= 1:
            break
    for entry in active:
        entry.stage, entry.interval = "final", entry.summary()
    if len(active) == 1 and rounds >= min_rounds and len(entries) == 1:  # nothing to be separated from
        outcome, leader_spec = "raced alone", active[0].spec
        active[0].note = (f"raced alone: faster than the baseline after {rounds} rounds, never paired in rounds "
                          "with another contender")
    elif len(active) == 1 and rounds >= min_rounds:
        outcome, leader_spec = "separated", active[0].spec
        active[0].note = f"raced to the end: faster than every other contender after {rounds} rounds"
    elif not active:
        outcome, leader_spec = "none faster than the baseline", None
    elif rounds < min_rounds:  # no interval yet: neither a tie nor a winner, and never called one
        outcome = (f"undecided: the budget allowed {rounds} of the {min_rounds} rounds a verdict needs for "
                   f"{len(active)} contenders (raise optimize_budget_s)")
        ranked = sorted(active, key=lambda e: -e.interval[0] if not math.isnan(e.interval[0]) else math.inf)
        leader_spec = ranked[0].spec if ranked[0].ratios else None
        for entry in active:
            entry.note = f"raced to the end undecided: {rounds} round(s), no interval"
    else:
        outcome = "no significant difference"
        ranked = sorted(active, key=lambda e: -e.interval[0])
        leader_spec = ranked[0].spec if ranked[0].ratios else None
        why = "budget spent" if rounds < max_rounds else f"{max_rounds} rounds"
        for entry in active:
            entry.note = (f"raced to the end ({why}): no significant difference from "
                          + ", ".join(e.spec for e in active if e is not entry))
    outcome = f"{outcome}; {restriction}" if restriction else outcome
    return RaceResult(entries, outcome, leader_spec, clock() - start + spent_s, rounds, budget_s)


def run_search(specs: Iterable[str], time_call: Callable[[str], float],
               measure_round: Callable[[str, int, int, int], float], *, budget_s: float,
               clock: Callable[[], float] = time.monotonic, min_rounds: int = MIN_RACE_ROUNDS,
               max_rounds: int = MAX_RACE_ROUNDS, screen_calls: int = SCREEN_CALLS,
               min_block_s: float = MIN_BLOCK_S) -> RaceResult:
    """The screen, then the race of what it leaves, in one budget (stages 2 and 3 of the module docstring).

    ``time_call(spec)`` times one call (``spec`` the baseline's name for the baseline) and returns its seconds;
    ``measure_round(spec, index, baseline_calls, variant_calls)`` returns one paired ratio with blocks of those
    sizes. The result's entries hold every spec, those stopped at the screen with stage ``screen``.
    """
    specs = list(specs)
    start = clock()
    screened = screen(specs, time_call, budget_s=budget_s, clock=clock, calls=screen_calls)
    plan = plan_rounds(screened, budget_s - (clock() - start), min_rounds=min_rounds, min_block_s=min_block_s)
    calls = plan.calls
    race = run_race(plan.raced, lambda spec, index: measure_round(spec, index, calls[BASELINE], calls[spec]),
                    budget_s=budget_s, clock=clock, min_rounds=min_rounds, max_rounds=max_rounds,
                    spent_s=clock() - start, first_round_s=plan.round_s, restriction=plan.restriction())
    raced = {entry.spec: entry for entry in race.entries}
    entries = []
    for item in screened.contenders:
        if item.spec in raced:
            entries.append(raced[item.spec])
            continue
        median, low, high = item.interval
        span = f"per-call speedup {median:.3g}x [{low:.3g}, {high:.3g}] over {len(item.times)} call(s)"
        if item.out:
            note = (f"eliminated at the screen: every call slower than every baseline call by more than "
                    f"{SCREEN_MARGIN:g}x ({span})")
            entries.append(Entry(item.spec, stage="screen", note=note, interval=item.interval))
        else:
            note = f"passed the screen ({span}); not raced: {plan.restriction() or 'the budget was spent'}"
            entries.append(Entry(item.spec, stage="screen", note=note, interval=(median, math.nan, math.nan)))
    race.entries, race.screened_out = entries, len(screened.out())
    return race


def race_columns(entry: Entry) -> dict:
    """The paired-speedup and search columns of a row for ``entry`` as it stopped."""
    median, low, high = entry.interval
    known = entry.stage in ("screen", "eliminated", "final") and not math.isnan(median)
    return {"paired_speedup": median if known else None,
            "paired_speedup_ci_low": low if known and not math.isnan(low) else None,
            "paired_speedup_ci_high": high if known and not math.isnan(high) else None,
            "paired_rounds": len(entry.ratios), "search_stage": entry.stage, "search_rounds": len(entry.ratios),
            "search_note": entry.note}


# -- the race on a real model ----------------------------------------------------------
#: Default number of finalists confirmed in full at every batch size.
CONFIRM_TOP = 3
#: Dynamo's per-function recompile limit during the race, which holds every compiled contender at once.
RACE_RECOMPILE_LIMIT = 64
#: What the race measured of a finalist at its batch size that the confirmation keeps rather than measures again.
RACE_MEASURED = ACCURACY_COLUMNS + ("compile_time_s", "compile_calls", "compile_stable") + PAIRED_COLUMNS


def output_agreement_check(model: ModelWrapper, variant, batch_size: int, seq_len: int | None,
                           reference) -> tuple[dict, bool]:
    """The default accuracy check: the variant's output against eager fp32 on the same seeded inputs.

    Returns (row fields, ok). Any check with this signature can replace it (a task metric on the user's data).
    """
    if not isinstance(reference, torch.Tensor):
        return {"tolerance": f"no reference: the {BASELINE} baseline failed ({reference})"}, False
    with torch.inference_mode():
        output = variant.forward(variant.prepare_input(batch_size, seq_len))
    fields = compare_outputs(reference, output, model.task, variant.tolerance)
    return fields, bool(fields.get("accuracy_ok"))


def interval_text(row: dict) -> str:
    """``1.42x [1.38, 1.47]`` from a row's paired columns (``n/a`` where not measured)."""
    values = [row.get(k) for k in ("paired_speedup", "paired_speedup_ci_low", "paired_speedup_ci_high")]
    text = ["n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}" for v in values]
    return f"{text[0]}x [{text[1]}, {text[2]}]"


def run_variant_race(model: ModelWrapper, variants: Iterable[str] | None = None,
                     batch_sizes: Iterable[int] = (1, 8), seq_len: int | None = None, *, budget_s: float = 120.0,
                     timing: TimingConfig | None = None, measure_memory: bool = True, include_compile: bool = True,
                     confirm_top: int = CONFIRM_TOP, accuracy_check=output_agreement_check,
                     max_rounds: int = MAX_RACE_ROUNDS):
    """Race the variants of ``model`` at the largest batch size, then confirm the finalists at every size.

    Returns ``(table, race)``: one row per variant (eliminated ones at the race batch size with the stage and
    interval they stopped at; confirmed ones and the baseline at every batch size, measured like
    :func:`infopt.optimize.sweep.run_variant_sweep`), plus :data:`RACE_COLUMNS`; and the :class:`RaceResult`.
    ``budget_s`` bounds the screen's calls and the race's rounds (stages 2 and 3); accuracy checks, compilation
    and the confirmation are not part of it.
    """
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not budget_s > 0:
        raise InvalidInputError(f"optimize_budget_s must be a number of seconds above 0, got {budget_s!r}.")
    if isinstance(confirm_top, bool) or not isinstance(confirm_top, int) or confirm_top < 1:
        raise InvalidInputError(f"confirm_top must be an integer of at least 1, got {confirm_top!r}.")
    sizes, specs = resolve_specs(model, variants, batch_sizes, seq_len, include_compile)
    timing = timing or TimingConfig()
    race_size = max(sizes)
    references = reference_outputs(model, sizes, seq_len)
    rows: dict[str, dict] = {}
    safe: dict = {}
    # every compiled contender wraps the same forward and stays alive through the race: under dynamo's default
    # per-function recompile limit (8) the later ones would silently run eagerly under their compiled names
    with torch._dynamo.config.patch(recompile_limit=RACE_RECOMPILE_LIMIT):
        for spec in specs[1:]:  # stage 1: transform, compile, one forward, the accuracy check
            point = Point.of(model, race_size, seq_len, variant=spec)
            try:
                variant = apply_variant(model, spec)
            except VariantNotApplicableError as error:
                rows[spec] = {**empty_row(point, "n/a", str(error)), "search_stage": "accuracy"}
                continue
            except VariantError as error:
                rows[spec] = {**empty_row(point, "error", str(error)), "search_stage": "accuracy"}
                continue
            row = {**empty_row(point, "eliminated"), "transform_time_s": variant.transform_time_s,
                   "search_stage": "accuracy"}
            ok = False
            with recorded_failure(row):
                inputs = variant.prepare_input(race_size, seq_len)
                row.update(warm_up_fields(variant, inputs))
                fields, ok = accuracy_check(model, variant, race_size, seq_len, references.get(race_size))
                row.update(fields)
            if row["status"] == "eliminated" and ok:
                safe[spec] = (variant, inputs)
                row["notes"] = "; ".join(variant.notes)
            else:
                row["search_note"] = "failed the accuracy check: never timed" if row["status"] == "eliminated" \
                    else "failed before timing"
                row["notes"] = "; ".join(variant.notes)
                del variant
            rows[spec] = row
        timer = make_timer(model.device)
        base_inputs = model.prepare_input(race_size, seq_len)
        sides = {BASELINE: lambda: model.forward(base_inputs)}
        for spec, (variant, inputs) in safe.items():
            sides[spec] = (lambda v, x: lambda: v.forward(x))(variant, inputs)

        def time_call(spec: str) -> float:
            return timer.run_block(sides[spec], 1)[0] / 1e3

        def measure_round(spec: str, index: int, base_calls: int, calls: int) -> float:
            return paired_round(timer, sides[BASELINE], sides[spec], base_calls, calls, index)

        with thread_count(timing.num_threads), torch.inference_mode(), gc_paused(), watch(model.device) as window:
            race = run_search(list(safe), time_call, measure_round, budget_s=float(budget_s), max_rounds=max_rounds)
    sides.clear()
    busy = window.result.columns()
    race_window = dataclasses.replace(window.result, detail=f"race rounds: {window.result.detail}")
    confirmed = [entry.spec for entry in race.finalists()[:confirm_top]]
    # a finalist is confirmed as it was raced, not transformed (ONNX: exported) or compiled again, and keeps what
    # the race measured at its batch size (accuracy, compile time, the paired interval of its rounds); on an
    # accelerator each variant is confirmed afresh with the baseline parked in host memory (apply_variant's
    # park_baseline), never two on the device at once
    on_cpu = torch.device(model.device).type == "cpu"
    kept = {spec: safe[spec][0] for spec in confirmed if spec in safe and on_cpu}
    compiled = any(variant.compiled for variant, _ in safe.values())
    safe.clear()
    release_memory(model.device)
    gc.collect()
    for entry in race.entries:
        rows[entry.spec].update(race_columns(entry), **busy)
    table_rows = sweep_variant(model, BASELINE, sizes, seq_len, references, timing, measure_memory, PAIRED_ROUNDS)
    for row in table_rows:
        row.update(search_stage="baseline", search_note="the eager fp32 reference every variant is paired with")
    with torch._dynamo.config.patch(recompile_limit=RACE_RECOMPILE_LIMIT):  # kept compiled finalists stay live
        for spec in specs[1:]:
            if spec not in confirmed:
                if rows[spec].get("search_stage") == "final":
                    rows[spec]["search_note"] += f"; not among the {confirm_top} confirmed"
                table_rows.append(rows[spec])
                continue
            race_row = rows[spec]
            applied = kept.pop(spec, None)
            measured = {race_size: {**{key: race_row.get(key) for key in RACE_MEASURED if key in race_row},
                                    "paired_window": race_window}} if applied is not None else None
            for row in sweep_variant(model, spec, sizes, seq_len, references, timing, measure_memory,
                                     PAIRED_ROUNDS, applied=applied, measured=measured):
                row.update(search_stage="confirmed", search_rounds=race_row["search_rounds"],
                           search_note=f"{race_row['search_note']}; race interval {interval_text(race_row)} at "
                                       f"batch {race_size}" + ("; its paired columns there are the race's rounds"
                                                               if measured and row["batch_size"] == race_size
                                                               else ""))
                for key in ("compile_time_s", "compile_calls", "compile_stable"):
                    if row.get(key) is None:
                        row[key] = race_row.get(key)
                table_rows.append(row)
            del applied
    if compiled:
        torch._dynamo.reset()  # free every compiled graph of the race and the confirmation
    release_memory(model.device)
    gc.collect()
    summary = race.line(variants=len(specs) - 1)
    for row in table_rows:
        row.update(search="racing", search_summary=summary)
    return finish_table(table_rows, RACE_COLUMNS), race


def search_lines(variants) -> list[str]:
    """One line per model and device of saved variant results: how its search went (the report prints them)."""
    lines = []
    if variants is None or variants.empty:
        return lines
    for (model, device), group in variants.groupby(["model", "device"], sort=True):
        summaries = group["search_summary"].dropna() if "search_summary" in group else []
        if len(summaries):
            lines.append(f"{model} on {device}: {summaries.iloc[-1]}")
        else:
            count = group.loc[group["variant"] != BASELINE, "variant"].nunique()
            lines.append(f"{model} on {device}: search: exhaustive, {count} variants timed in full at every "
                         "batch size")
    return lines


__all__ = ["CONFIRM_TOP", "MAX_RACE_ROUNDS", "MIN_RACE_ROUNDS", "RACE_COLUMNS", "RACE_RECOMPILE_LIMIT", "SEARCHES",
           "Entry", "RaceResult", "interval_text", "output_agreement_check", "race_columns", "run_race", "run_search",
           "run_variant_race", "search_lines"]
