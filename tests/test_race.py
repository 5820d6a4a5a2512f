"""The racing search: its rules on fake variants of known speed, then once on a tiny real model."""

from __future__ import annotations

import random

import pytest

from infopt.errors import InvalidInputError
from infopt.measure.timing import TimingConfig
from infopt.optimize.race import MIN_RACE_ROUNDS, run_race, run_search, run_variant_race
from infopt.optimize.registry import BASELINE


class FakeClock:
    """Time that moves only when a fake variant is 'timed': each round of a variant costs ``cost`` units."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_rounds(speeds: dict, clock: FakeClock, noise: float = 0.03, cost=lambda spec: 1.0, seed: int = 0):
    """``measure_round`` for variants of known true speedups, each ratio off by up to ``noise``."""
    rng, timed = random.Random(seed), []

    def measure(spec, index):
        timed.append(spec)
        clock.now += cost(spec)
        return speeds[spec] * (1 + rng.uniform(-noise, noise))
    return measure, timed


def fake_calls(call_s: dict, clock: FakeClock, noise: float = 0.03, seed: int = 0):
    """``time_call`` and ``measure_round`` of :func:`run_search` for variants of known per-call seconds."""
    rng, log = random.Random(seed), []

    def time_call(spec):
        log.append(("call", spec))
        seconds = call_s[spec] * (1 + rng.uniform(-noise, noise))
        clock.now += seconds
        return seconds

    def measure_round(spec, index, base_calls, calls):
        log.append(("round", spec))
        clock.now += base_calls * call_s[BASELINE] + calls * call_s[spec]
        return call_s[BASELINE] / call_s[spec] * (1 + rng.uniform(-noise, noise))
    return time_call, measure_round, log


def test_the_screen_drops_clearly_slower_variants_before_any_round_and_keeps_their_range():
    clock = FakeClock()
    call_s = {BASELINE: 0.1, "fast": 0.05, "close": 0.055, "three-times-slower": 0.3, "slightly-slower": 0.11}
    time_call, measure_round, log = fake_calls(call_s, clock)
    race = run_search([s for s in call_s if s != BASELINE], time_call, measure_round, budget_s=60, clock=clock)
    by_spec = {entry.spec: entry for entry in race.entries}
    slow = by_spec["three-times-slower"]
    assert slow.stage == "screen" and "eliminated at the screen" in slow.note
    assert ("round", "three-times-slower") not in log
    assert slow.interval[2] < 1 / 1.5 and slow.interval[1] <= slow.interval[0] <= slow.interval[2]
    # within the margin: left to the paired rounds, which decide it
    assert by_spec["slightly-slower"].stage == "eliminated" and ("round", "slightly-slower") in log
    assert race.leader in ("fast", "close") and race.screened_out == 1
    assert "1 out at the screen" in race.line()
    assert race.spent_s <= 60 + sum(call_s.values())


def test_a_budget_too_small_for_every_survivor_races_the_fastest_screened_ones_and_says_so():
    clock = FakeClock()
    call_s = {BASELINE: 1.0, **{f"v{i}": 1.0 / (1.1 + 0.2 * i) for i in range(8)}}
    time_call, measure_round, log = fake_calls(call_s, clock)
    race = run_search([s for s in call_s if s != BASELINE], time_call, measure_round, budget_s=60, clock=clock)
    raced = {spec for kind, spec in log if kind == "round"}
    not_raced = [e for e in race.entries if e.stage == "screen"]
    assert raced and not_raced and len(raced) + len(not_raced) == 8
    assert "v7" in raced and "v0" not in raced  # the fastest per call are the ones raced
    assert all("not raced" in e.note for e in not_raced)
    assert "fastest of 8 after the screen" in race.outcome
    assert min(len(e.ratios) for e in race.entries if e.spec in raced) >= MIN_RACE_ROUNDS
    assert race.spent_s <= 60 + sum(call_s.values())


def test_slow_variants_are_eliminated_at_the_first_chance_and_the_fast_one_wins():
    clock = FakeClock()
    speeds = {"fast": 2.0, "medium": 1.4, "slower-than-baseline": 0.6, "close": 1.9}
    measure, timed = fake_rounds(speeds, clock, noise=0.02)
    race = run_race(speeds, measure, budget_s=1000, clock=clock)
    by_spec = {entry.spec: entry for entry in race.entries}
    for spec in ("medium", "slower-than-baseline"):
        assert by_spec[spec].stage == "eliminated" and len(by_spec[spec].ratios) == MIN_RACE_ROUNDS
    assert "baseline" in by_spec["slower-than-baseline"].note and "leader fast" in by_spec["medium"].note
    assert race.outcome == "separated" and race.leader == "fast" and by_spec["fast"].stage == "final"
    assert by_spec["close"].stage == "eliminated"
    assert timed.count("medium") == MIN_RACE_ROUNDS <= timed.count("close") <= timed.count("fast")
    low, high = by_spec["fast"].interval[1:]
    assert low <= 2.0 <= high or abs(by_spec["fast"].interval[0] - 2.0) < 0.05


def test_a_tie_ends_as_no_significant_difference_not_a_coin_flip():
    clock = FakeClock()
    speeds = {"a": 1.5, "b": 1.5, "slow": 0.9}
    measure, _ = fake_rounds(speeds, clock, noise=0.05, seed=3)
    race = run_race(speeds, measure, budget_s=1e6, clock=clock, max_rounds=30)
    finals = {entry.spec for entry in race.entries if entry.stage == "final"}
    assert race.outcome == "no significant difference" and finals == {"a", "b"}
    assert all("no significant difference" in e.note for e in race.entries if e.stage == "final")
    assert "2 raced to the end (no significant difference" in race.line()
    assert race.rounds == 30


@pytest.mark.parametrize("budget", [5.0, 17.5, 40.0])
def test_the_budget_is_never_overrun_by_more_than_one_round(budget):
    clock = FakeClock()
    speeds = {f"v{i}": 1.2 + 0.001 * i for i in range(6)}  # hard to separate: the budget ends the race
    costs = {spec: 0.5 + 0.2 * i for i, spec in enumerate(speeds)}
    measure, _ = fake_rounds(speeds, clock, noise=0.2, cost=costs.get)
    race = run_race(speeds, measure, budget_s=budget, clock=clock)
    one_round = sum(costs.values())
    assert race.spent_s <= budget + one_round
    assert race.rounds >= 1
    note = next(e.note for e in race.entries if e.stage == "final")
    if race.rounds < MIN_RACE_ROUNDS:  # no interval yet: never called a tie
        assert race.outcome.startswith("undecided") and "undecided" in note
    else:
        assert race.outcome == "no significant difference" and "budget spent" in note


def test_a_budget_too_small_for_a_verdict_says_undecided_not_no_difference():
    clock = FakeClock()
    speeds = {"fast": 3.0, "slow": 0.2, "mid": 1.5}  # clearly different, but one round is all the budget allows
    measure, _ = fake_rounds(speeds, clock)
    race = run_race(speeds, measure, budget_s=2.5, clock=clock)
    assert race.rounds < MIN_RACE_ROUNDS
    assert race.outcome.startswith("undecided") and "raise optimize_budget_s" in race.outcome
    assert "no significant difference" not in race.line()


def test_nothing_faster_than_the_baseline_leaves_no_leader():
    clock = FakeClock()
    measure, _ = fake_rounds({"x": 0.5, "y": 0.7}, clock)
    race = run_race(["x", "y"], measure, budget_s=100, clock=clock)
    assert race.outcome == "none faster than the baseline" and race.leader is None
    assert all(entry.stage == "eliminated" for entry in race.entries)


QUICK = TimingConfig.quick()


def test_the_race_on_a_real_model_never_times_a_variant_that_fails_accuracy(tiny_resnet):
    checked = []

    def strict_check(model, variant, batch_size, seq_len, reference):  # the data-based check's signature
        checked.append(variant.variant)
        ok = variant.variant != "bf16"
        return {"accuracy_ok": ok, "accuracy_metric": "test check"}, ok

    table, race = run_variant_race(tiny_resnet, ["channels-last", "bf16", "int8-dynamic", "fp16-weights"],
                                   batch_sizes=(1, 2), budget_s=1.5, timing=QUICK, measure_memory=False,
                                   accuracy_check=strict_check, confirm_top=1)
    assert sorted(checked) == ["bf16", "channels-last", "int8-dynamic"] or "fp16-weights" in checked
    bf16 = table[table["variant"] == "bf16"].iloc[0]
    assert bf16["search_stage"] == "accuracy" and "never timed" in bf16["search_note"]
    assert bf16["paired_rounds"] is None or bf16["paired_rounds"] != bf16["paired_rounds"] or bf16["paired_rounds"] == 0
    assert "bf16" not in {entry.spec for entry in race.entries}
    assert set(table["variant"]) >= {"eager-fp32", "channels-last", "bf16", "int8-dynamic", "fp16-weights"}
    base = table[table["variant"] == "eager-fp32"]
    assert sorted(base["batch_size"]) == [1, 2] and (base["status"] == "ok").all()
    confirmed = table[table["search_stage"] == "confirmed"]
    assert len(set(confirmed["variant"])) <= 1 and set(confirmed["batch_size"]) <= {1, 2}
    assert table["search_summary"].iloc[0].startswith("search: racing, budget 2 s, spent ")
    assert race.spent_s <= 1.5 + 5  # one round of at most a few short blocks past the budget
    assert (table["search"] == "racing").all()


def test_bad_budget_is_refused_in_one_sentence(tiny_resnet):
    with pytest.raises(InvalidInputError, match="optimize_budget_s"):
        run_variant_race(tiny_resnet, ["bf16"], batch_sizes=(1,), budget_s=0)


def test_the_default_cpu_run_races_compiled_paths_in_a_budget_printed_up_front(tmp_path):
    from infopt import presets
    from infopt.run import cli, estimate
    from infopt.run import plan as plan_module

    args = cli.build_parser().parse_args(["--device", "cpu", "--output", str(tmp_path), "--run-name", "x"])
    plan = plan_module.build_plan(args)
    optimize = next(job for job in plan.jobs if job.key == "gpt2/optimize")
    assert optimize.parameters["search"] == "racing" and optimize.parameters["include_compile"] is True
    assert optimize.parameters["optimize_budget_s"] == presets.CPU_OPTIMIZE_BUDGET_S
    line = estimate.search_line(plan)
    assert f"budget {presets.CPU_OPTIMIZE_BUDGET_S:.0f} s per model" in line and "compiled paths included" in line
    racing = estimate.notebook_estimate(optimize, quick=False)
    optimize.parameters["optimize_budget_s"] = presets.CPU_OPTIMIZE_BUDGET_S + 100
    assert estimate.notebook_estimate(optimize, quick=False) == racing + 100  # the budget is in the estimate
    optimize.parameters["search"] = "exhaustive"
    assert estimate.notebook_estimate(optimize, quick=False) == estimate.ESTIMATE_S["full"]["optimize"]["gpt2"]
    assert "exhaustive search" in estimate.search_line(plan)
    quick = plan_module.build_plan(cli.build_parser().parse_args(
        ["--device", "cpu", "--quick", "--output", str(tmp_path), "--run-name", "q"]))
    assert next(j for j in quick.jobs if j.notebook == "optimize").parameters["optimize_budget_s"] == \
        presets.QUICK_OPTIMIZE_BUDGET_S


def test_the_inductor_cache_lives_next_to_the_runs_one_folder_per_machine(tmp_path, monkeypatch):
    import os

    from infopt.notebook import use_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "recorded")  # so that monkeypatch restores the original
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    folder = use_compile_cache(tmp_path / "results")
    assert folder.parent == tmp_path / "results" / ".inductor-cache" and folder.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # one the user set wins
    assert use_compile_cache(tmp_path / "results") == tmp_path / "mine"


def test_search_lines_say_how_each_models_search_went():
    import pandas as pd

    from infopt.optimize.race import search_lines

    frame = pd.DataFrame({"model": ["a", "a", "b", "b"], "device": ["cpu"] * 4,
                          "variant": ["eager-fp32", "bf16", "eager-fp32", "bf16"],
                          "search_summary": [None, "search: racing, budget 60 s, spent 55 s", None, None]})
    assert search_lines(frame) == ["a on cpu: search: racing, budget 60 s, spent 55 s",
                                   "b on cpu: search: exhaustive, 1 variants timed in full at every batch size"]


def test_a_compiled_variant_compiles_before_the_race_and_its_compile_time_stands_beside_its_row(tiny_resnet):
    # a budget that fits the screen and six rounds on any machine (a tiny model's calls take milliseconds)
    table, race = run_variant_race(tiny_resnet, ["compile"], batch_sizes=(2,), budget_s=5.0, timing=QUICK,
                                   measure_memory=False)
    row = table[table["variant"] == "compile"].iloc[0]
    assert row["compile_time_s"] > 0 and row["search_stage"] in ("confirmed", "eliminated")
    assert race.entries[0].ratios  # raced after compiling: the rounds time compiled calls only


def test_the_race_lifts_dynamos_recompile_limit_while_it_holds_every_compiled_contender(tiny_resnet):
    """Compiled contenders share one forward and all stay alive until the race ends: under dynamo's default limit
    of 8 recompiles per function the later ones would run eagerly under their compiled names."""
    import torch

    from infopt.optimize.race import RACE_RECOMPILE_LIMIT

    before, seen = torch._dynamo.config.recompile_limit, []

    def check(model, variant, batch_size, seq_len, reference):
        seen.append(torch._dynamo.config.recompile_limit)
        return {"accuracy_ok": True}, True

    run_variant_race(tiny_resnet, ["channels-last"], batch_sizes=(1,), budget_s=1.0, timing=QUICK,
                     measure_memory=False, accuracy_check=check, include_compile=False)
    assert seen == [RACE_RECOMPILE_LIMIT] and RACE_RECOMPILE_LIMIT > before
    assert torch._dynamo.config.recompile_limit == before  # restored after the race


def test_a_finalist_is_confirmed_as_raced_keeping_the_race_rounds_at_the_race_batch_size(tiny_resnet, monkeypatch):
    """The confirmation neither transforms a finalist again nor repeats at the race's batch size the paired rounds
    the race already ran there; the other sizes are measured in full."""
    from infopt.optimize import race as race_module

    applied = []
    real_apply = race_module.apply_variant
    monkeypatch.setattr(race_module, "apply_variant", lambda model, spec, **kw: applied.append(spec) or
                        real_apply(model, spec, **kw))
    table, race = run_variant_race(tiny_resnet, ["channels-last"], batch_sizes=(1, 2), budget_s=5.0, timing=QUICK,
                                   measure_memory=False, accuracy_check=lambda *a: ({"accuracy_ok": True}, True))
    assert applied == ["channels-last"]
    entry = race.entries[0]
    rows = table[table["variant"] == "channels-last"].set_index("batch_size")
    if entry.stage != "final":  # eliminated as slower than the baseline: nothing to confirm
        assert set(rows["search_stage"]) == {"eliminated"}
        return
    assert set(rows.index) == {1, 2} and set(rows["search_stage"]) == {"confirmed"}
    raced = rows.loc[2]
    assert raced["paired_rounds"] == len(entry.ratios) and "race's rounds" in raced["search_note"]
    assert raced["paired_speedup"] == pytest.approx(entry.interval[0]) and raced["latency_p50_ms"] > 0
    assert "race's rounds" not in rows.loc[1]["search_note"] and rows.loc[1]["paired_rounds"] >= 6


def test_a_single_raced_contender_is_raced_alone_not_separated():
    """With one contender in the race nothing was separated: the outcome must not claim a win over the others."""
    clock = FakeClock()
    measure, _ = fake_rounds({"only": 2.0}, clock)
    race = run_race(["only"], measure, budget_s=100, clock=clock, restriction="raced the 1 fastest of 5 after "
                                                                              "the screen; the budget allowed no more")
    assert race.outcome.startswith("raced alone; raced the 1 fastest of 5") and race.leader == "only"
    assert "never paired in rounds with another contender" in race.entries[0].note
    assert "1 raced to the end (raced alone" in race.line()
