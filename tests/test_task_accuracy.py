"""The guard on real data: task metric of fp32 and of a variant, paired interval, verdict, budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from infopt.data import load_data
from infopt.data.dataset import DataSet
from infopt.data.specs import parse_data_spec
from infopt.errors import InvalidInputError
from infopt.models.factory import FactoryModel
from infopt.optimize.task_accuracy import (TaskAccuracyGuard, exact_upper_rate, mcnemar_exact_p,
                                           samples_to_settle)
from test_data import tiny_causal_lm


class Oracle(nn.Module):
    """Returns logits that put the class stored in the input's first feature first: correct by construction."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].long(), 4).float()


def labelled(n, calibration=0, seed=0):
    """``n`` samples whose first feature is the label: the Oracle gets every one right."""
    targets = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed))
    inputs = torch.stack([targets.float(), torch.arange(n).float()], dim=1)
    return targets, DataSet(spec=parse_data_spec(f"py:x:y?calibration={calibration}"), inputs={"input": inputs},
                            targets=targets, target_kind="class", description="test", preprocessing="none",
                            metric_name="top-1 accuracy")


def oracle_model():
    return FactoryModel(Oracle(), lambda b: torch.zeros(b, 2), task="vision", where="test")


def flip_first(count):
    """A variant that answers wrong on the first ``count`` samples (identified by their index feature)."""
    def forward(inputs):
        x = inputs["input"]
        wrong = x[:, 1] < count
        labels = torch.where(wrong, (x[:, 0].long() + 1) % 4, x[:, 0].long())
        return nn.functional.one_hot(labels, 4).float()
    return forward


def test_the_paired_interval_covers_a_known_loss_and_the_verdict_follows_the_budget():
    _, data = labelled(2000)
    guard = TaskAccuracyGuard(oracle_model(), data)
    assert guard.reference_value == 1.0
    row = guard.check(flip_first(100))  # loses exactly 5 points of 2000
    assert row["task_loss"] == pytest.approx(5.0)
    assert row["task_loss_low"] < 5.0 < row["task_loss_high"] and row["task_verdict"] == "unsafe"
    assert row["task_exact_p"] < 1e-10
    assert guard.check(flip_first(0))["task_verdict"] == "safe"
    loose = TaskAccuracyGuard(oracle_model(), data, budget=10.0).check(flip_first(100))
    assert loose["task_verdict"] == "safe" and loose["task_ok"]


def test_a_loss_near_the_budget_on_few_samples_cannot_tell_and_says_how_many_would_settle_it():
    _, data = labelled(200)
    row = TaskAccuracyGuard(oracle_model(), data, budget=1.0).check(flip_first(1))  # 1 of 200 flipped
    assert row["task_verdict"] == "cannot tell" and row["task_samples_to_settle"] > 200
    assert "would settle it" in TaskAccuracyGuard(oracle_model(), data).describe(row)


def test_no_changed_sample_gets_the_exact_bound_not_a_zero_width_interval():
    _, data = labelled(300)
    row = TaskAccuracyGuard(oracle_model(), data).check(flip_first(0))
    assert row["task_loss"] == 0.0 and row["task_loss_high"] == pytest.approx(100 * exact_upper_rate(0, 300))
    assert row["task_loss_high"] > 0 and "Clopper-Pearson" in row["task_note"]


def test_statistics_helpers():
    assert exact_upper_rate(0, 100) == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-6)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(10, 0) < 0.01
    assert samples_to_settle(100, 0.5, -0.5, 1.5, 1.0) == 400
    assert samples_to_settle(100, 0.5, 0.0, 0.9, 1.0) is None


def test_the_guard_uses_only_the_evaluation_split():
    _, data = labelled(400, calibration=100)
    guard = TaskAccuracyGuard(oracle_model(), data)
    row = guard.check(flip_first(50))  # flips samples 0..49: all inside the calibration part
    assert row["task_samples"] == 300 and row["task_loss"] == 0.0


def test_a_variant_with_non_finite_outputs_is_unsafe():
    _, data = labelled(100)
    row = TaskAccuracyGuard(oracle_model(), data).check(lambda inputs: torch.full((inputs["input"].shape[0], 4),
                                                                                  math.nan))
    assert row["task_verdict"] == "unsafe" and "non-finite" in row["task_note"]


def test_perplexity_and_next_token_accuracy_of_a_tiny_causal_lm(tmp_path):
    (tmp_path / "docs.txt").write_text("the quick brown fox jumps over the lazy dog. " * 30)
    model = tiny_causal_lm()
    data = load_data(f"text:{tmp_path / 'docs.txt'}?seq_len=16&calibration=4", model)
    guard = TaskAccuracyGuard(model, data)
    ids = data.evaluation.inputs["input_ids"]
    with torch.no_grad():
        logits = model.forward({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    expected_nll = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64).double(), ids[:, 1:].reshape(-1))
    assert guard.reference_value == pytest.approx(math.exp(float(expected_nll)), rel=1e-5)
    assert guard.unit == "relative %" and guard.budget == 2.0
    same = guard.check(model.forward)
    assert same["task_loss"] == pytest.approx(0.0, abs=1e-9) and same["task_verdict"] == "safe"
    expected_accuracy = float((logits[:, :-1].argmax(-1) == ids[:, 1:]).double().mean())
    assert same["task_next_token_accuracy"] == pytest.approx(expected_accuracy)
    noisy = guard.check(lambda inputs: model.forward(inputs) + 3 * torch.randn(inputs["input_ids"].shape + (64,),
                                                                              generator=torch.Generator().manual_seed(0)))
    assert noisy["task_loss"] > 2.0 and noisy["task_value"] > guard.reference_value


def test_a_metric_that_returns_nan_is_refused_in_one_sentence():
    _, data = labelled(50)
    data.target_kind, data.metric, data.metric_name = "custom", (lambda outputs, targets: float("nan")), "broken"
    with pytest.raises(InvalidInputError, match="returned nan, not a finite number") as error:
        TaskAccuracyGuard(oracle_model(), data)
    assert "\n" not in str(error.value)


def test_a_custom_metric_gets_a_relative_loss_and_an_interval():
    _, data = labelled(400)
    data.target_kind, data.metric_name = "custom", "accuracy"
    data.metric = lambda outputs, targets: float((outputs.argmax(1) == targets).double().mean())
    row = TaskAccuracyGuard(oracle_model(), data).check(flip_first(40))
    assert row["task_loss"] == pytest.approx(10.0) and row["task_loss_low"] < 10.0 < row["task_loss_high"]
    assert row["task_loss_unit"] == "custom %" and row["task_verdict"] == "unsafe"


def test_a_budget_that_is_not_a_number_is_refused():
    _, data = labelled(20)
    with pytest.raises(InvalidInputError, match="budget"):
        TaskAccuracyGuard(oracle_model(), data, budget=-1)


def trained_digits_model():
    """A small CNN trained for a few seconds on the calibration part of sklearn:digits (held-out top-1 > 80%)."""
    from infopt.data.bundled import load_arrays

    features, targets, _ = load_arrays("digits")
    images = (features / 16.0).reshape(-1, 1, 8, 8)[:256]
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(16 * 16, 10))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(module(images), targets[:256])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return FactoryModel(module, lambda b: torch.rand(b, 1, 8, 8), task="vision", where="test")


@pytest.fixture(scope="module")
def digits():
    model = trained_digits_model()
    data = load_data("sklearn:digits", model)
    return model, data, TaskAccuracyGuard(model, data)


def test_the_trained_model_is_well_above_chance_on_held_out_digits(digits):
    _, data, guard = digits
    assert guard.reference_value > 0.8 and guard.part.size == 1541 and data.calibration.size == 256


def test_static_int8_calibrated_on_zeros_is_caught_on_real_data(digits):
    pytest.importorskip("onnxruntime")
    from infopt.optimize.applied import apply_variant
    from infopt.optimize.task_accuracy import attach_calibration

    model, data, guard = digits
    try:
        model.calibration_data = ([{"input": torch.zeros(32, 1, 8, 8)}], "32 all-zero images")
        zero = apply_variant(model, "onnxruntime-int8-static")
        attach_calibration(model, data)
        real = apply_variant(model, "onnxruntime-int8-static")
    finally:
        del model.calibration_data
    assert any("all-zero" in note for note in zero.notes)
    assert any("calibration split of sklearn:digits" in note for note in real.notes)
    zero_row, real_row = guard.check(zero.forward), guard.check(real.forward)
    assert zero_row["task_verdict"] == "unsafe" and zero_row["task_loss_low"] > 5.0
    assert real_row["task_loss"] < zero_row["task_loss"] and real_row["task_loss_high"] < 5.0


def test_a_variant_with_its_own_input_casts_gets_them_on_the_data_too(digits):
    from infopt.optimize.applied import apply_variant
    from infopt.optimize.task_accuracy import on_data

    model, _, guard = digits
    variant = apply_variant(model, "bf16-weights")  # bf16 weights need bf16 images: plain float32 data would fail
    row = guard.check(on_data(variant))
    assert row["task_verdict"] in ("safe", "cannot tell", "unsafe") and abs(row["task_loss"]) < 5.0


def test_the_race_uses_the_data_check_and_the_table_says_what_accuracy_means(digits):
    from infopt.measure.timing import TimingConfig
    from infopt.optimize.race import run_variant_race
    from infopt.optimize.task_accuracy import (RANDOM_INPUT_BASIS, merge_task_columns, race_accuracy_check,
                                               recommendation_lines)
    from infopt.optimize.recommend import recommend

    model, _, guard = digits
    results = {}
    table, _ = run_variant_race(model, ["channels-last"], [2], timing=TimingConfig.quick(), budget_s=0.2,
                                include_compile=False, accuracy_check=race_accuracy_check(guard, results))
    assert set(results) == {"channels-last"} and results["channels-last"]["task_verdict"] == "safe"
    merged = merge_task_columns(table, guard, results)
    assert set(merged["task_verdict"].dropna()) <= {"reference", "safe"}
    assert merged["accuracy_basis"].str.contains("top-1 accuracy on sklearn:digits").all()
    lines = recommendation_lines(recommend(merged), merged, guard)
    assert lines and all("sklearn:digits" in line or "keep" in line for line in lines)
    plain = merge_task_columns(table, None)
    assert (plain["accuracy_basis"] == RANDOM_INPUT_BASIS).all()
    assert all(RANDOM_INPUT_BASIS in line for line in recommendation_lines(recommend(plain), plain, None))


def test_the_report_table_and_chart_show_accuracy_with_intervals_and_the_pareto_front():
    import pandas as pd

    from infopt.report.task_accuracy import accuracy_table, latency_vs_accuracy, pareto_front, warnings_of

    base = {"run": "r", "model": "m", "device": "cpu", "batch_size": 8, "task_metric": "top-1 accuracy",
            "task_reference": 0.97, "task_loss_unit": "points", "task_budget": 1.0, "task_samples": 80,
            "task_data": "sklearn:digits"}
    rows = [
        {**base, "variant": "eager-fp32", "task_value": 0.97, "task_loss": 0.0, "task_verdict": "reference",
         "latency_p50_ms": 10.0},
        {**base, "variant": "bf16", "task_value": 0.968, "task_loss": 0.2, "task_loss_low": 0.0,
         "task_loss_high": 0.6, "task_verdict": "safe", "latency_p50_ms": 6.0},
        {**base, "variant": "int8", "task_value": 0.90, "task_loss": 7.0, "task_loss_low": 5.0,
         "task_loss_high": 9.0, "task_verdict": "unsafe", "latency_p50_ms": 3.0},
        {**base, "variant": "slow-fp32", "task_value": 0.97, "task_loss": 0.0, "task_loss_low": -0.1,
         "task_loss_high": 0.1, "task_verdict": "safe", "latency_p50_ms": 12.0},
    ]
    variants = pd.DataFrame(rows)
    table = accuracy_table(variants)
    assert table.loc[table["variant"] == "bf16", "loss (95% CI)"].item() == "0.20 pt [0.00, 0.60]"
    assert list(pareto_front(variants)["variant"]) == ["bf16", "eager-fp32"]  # int8 unsafe, slow-fp32 dominated
    assert warnings_of(variants) == ["m: only 80 evaluation samples (< 100): accuracy intervals are wide."]
    figure = latency_vs_accuracy(variants)
    unsafe = [t for t in figure.data if "unsafe" in t.name]
    assert unsafe and list(unsafe[0].text) == ["int8 (unsafe)"] and unsafe[0].marker.symbol == "x"
    assert any("Pareto" in t.name for t in figure.data)
    plain = accuracy_table(pd.DataFrame([{"variant": "bf16", "latency_p50_ms": 1.0}]))
    assert plain["accuracy_basis"].item() == "agreement on random inputs, not accuracy"
