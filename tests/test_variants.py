"""Optimization variants: registry, composition, failure isolation, speedups and recommendations."""

import math

import pandas as pd
import pytest
import torch

import infopt

from infopt.optimize.accuracy import compare_outputs
from infopt.errors import InvalidInputError
from infopt.measure.timing import TimingConfig
from infopt.optimize import (BASELINE, REFUSALS, SWEEP_COLUMNS, VARIANTS, UnknownVariantError, Variant,
                             VariantError, VariantNotApplicableError, add_speedups, add_verdicts, apply_variant,
                             canonical_spec, default_variants, list_variants, parse_spec, recommend,
                             register_variant, run_variant_sweep, speedup_verdict, unregister_variant)

QUICK = TimingConfig.quick()
SEQ_LEN = 16


def _inputs(model, batch_size=2):
    return model.prepare_input(batch_size, SEQ_LEN if model.is_text else None)


def _reference(model, batch_size=2):
    with torch.inference_mode():
        return model.forward(_inputs(model, batch_size))


# -- registry and applicability -------------------------------------------------
@pytest.mark.parametrize("name", ["resnet50", "gpt2", "distilbert"])
def test_every_variant_applies_or_says_why_not(tiny_models, name):
    model = tiny_models[name]
    reference = _reference(model)
    for spec, variant in VARIANTS.items():
        try:
            transformed = apply_variant(model, spec)
        except VariantNotApplicableError as error:
            assert spec not in list_variants(model)
            reason = str(error)
            assert reason.strip() and (model.task in reason or "cpu" in reason or "time the baseline again" in reason)
            continue
        assert spec in list_variants(model)
        assert transformed.variant == spec and transformed.name == name and transformed.device == model.device
        if variant.compiles:
            continue  # compiling every model is slow on CPU; see test_compile_variant_warms_up_and_is_accurate
        with torch.inference_mode():
            output = transformed.forward(transformed.prepare_input(2, SEQ_LEN if model.is_text else None))
        assert compare_outputs(reference, output, model.task, transformed.tolerance)["accuracy_ok"], spec


def test_attention_variant_matching_the_baseline_is_not_timed_twice(tiny_gpt2):
    with pytest.raises(VariantNotApplicableError, match="already uses sdpa attention"):
        apply_variant(tiny_gpt2, "sdpa")
    eager_baseline = infopt.load_model("gpt2", size="tiny", attn_implementation="eager")
    assert "sdpa" in list_variants(eager_baseline) and "eager-attention" not in list_variants(eager_baseline)


def test_applicability_follows_task_and_device(tiny_gpt2, tiny_resnet):
    assert "channels-last" in list_variants(tiny_resnet) and "channels-last" not in list_variants(tiny_gpt2)
    assert "eager-attention" in list_variants(tiny_gpt2) and "eager-attention" not in list_variants(tiny_resnet)
    for cpu_only_excluded in ("fp16", "fp16-weights", "compile-max-autotune", "compile-reduce-overhead"):
        with pytest.raises(VariantNotApplicableError, match="not cpu"):
            apply_variant(tiny_resnet, cpu_only_excluded)
    with pytest.raises(VariantNotApplicableError, match="vision"):
        apply_variant(tiny_gpt2, "bf16+channels-last")      # one inapplicable part makes the whole n/a


def test_baseline_is_left_untouched(tiny_resnet):
    before = _reference(tiny_resnet)
    variant = apply_variant(tiny_resnet, "bf16-weights+channels-last")
    assert next(variant.module.parameters()).dtype == torch.bfloat16
    assert next(tiny_resnet.module.parameters()).dtype == torch.float32
    assert tiny_resnet.module.conv1.weight.is_contiguous()
    assert tiny_resnet.variant == BASELINE
    assert torch.equal(_reference(tiny_resnet), before)


def test_spec_parsing_canonicalizes_and_rejects_bad_specs():
    assert canonical_spec("compile + channels-last + BF16") == "bf16+channels-last+compile"
    assert parse_spec("int8-dynamic") == ("int8-dynamic",)
    with pytest.raises(UnknownVariantError, match="Unknown variant 'turbo'"):
        parse_spec("bf16+turbo")
    for bad, message in (("bf16+fp16", "cannot be combined"), ("bf16+bf16", "twice"),
                         ("eager-fp32+bf16", "baseline"), ("compile+compile-max-autotune", "cannot be combined"),
                         ("", "non-empty")):
        with pytest.raises(InvalidInputError, match=message):
            parse_spec(bad)


def test_composition_applies_every_step(tiny_resnet):
    variant = apply_variant(tiny_resnet, "channels-last+bf16")
    assert variant.variant == "bf16+channels-last"
    inputs = variant.prepare_input(2)
    assert inputs["pixel_values"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(inputs["pixel_values"], tiny_resnet.prepare_input(2)["pixel_values"])  # same seeded values
    assert variant.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        output = variant.forward(inputs)
    assert output.dtype == torch.bfloat16                                     # autocast was active
    assert compare_outputs(_reference(tiny_resnet), output, "vision", variant.tolerance)["accuracy_ok"]
    assert variant.reduced_precision and "reduced" in variant.info()["tolerance"]


def test_int8_dynamic_quantizes_gpt2_projections(tiny_gpt2):
    variant = apply_variant(tiny_gpt2, "int8-dynamic")
    quantized = [m for m in variant.module.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert len(quantized) == 2 * 4 + 1          # 4 projections per layer (Conv1D converted) + the LM head
    assert variant.weight_bytes() < tiny_gpt2.weight_bytes()
    assert any("Conv1D" in note for note in variant.notes)


def test_attention_variant_switches_only_the_copy(tiny_distilbert):
    variant = apply_variant(tiny_distilbert, "eager-attention")
    assert variant.config._attn_implementation == "eager"
    assert tiny_distilbert.config._attn_implementation == "sdpa"


def test_variants_of_variants_are_refused(tiny_resnet):
    variant = apply_variant(tiny_resnet, "channels-last")
    with pytest.raises(InvalidInputError, match="baseline"):
        apply_variant(variant, "bf16")
    with pytest.raises(InvalidInputError, match="baseline"):
        run_variant_sweep(variant)
    with pytest.raises(InvalidInputError):
        variant.to("cpu")


# -- the sweep ------------------------------------------------------------------
def _break_on_apply(model):
    raise RuntimeError("deliberately broken transformation")


def _break_on_call(model):
    def explode():
        raise RuntimeError("deliberately broken kernel")
    model.forward_contexts.append(explode)


def _scale_logits(model):
    model.module.fc.weight.mul_(1.5)        # fast but wrong: 50% output error


@pytest.fixture
def broken_variants():
    added = [Variant("broken-apply", "test: fails while transforming", _break_on_apply, stage=1),
             Variant("broken-call", "test: fails on every call", _break_on_call, stage=1),
             Variant("wrong", "test: changes the answer", _scale_logits, stage=1, tasks=("vision",))]
    for variant in added:
        register_variant(variant)
    yield [v.name for v in added]
    for variant in added:
        unregister_variant(variant.name)


def test_failing_transformation_raises_variant_error(tiny_resnet, broken_variants):
    with pytest.raises(VariantError, match="Variant 'broken-apply' failed on resnet50: RuntimeError: deliberately"):
        apply_variant(tiny_resnet, "broken-apply+channels-last")


def test_sweep_isolates_failures_and_flags_inaccuracy(tiny_resnet, broken_variants):
    specs = ["broken-apply", "channels-last", "broken-call", "wrong", "fp16", "bf16+channels-last"]
    df = run_variant_sweep(tiny_resnet, specs, batch_sizes=(1, 2), timing=QUICK, measure_memory=False)
    assert list(df.columns) == list(SWEEP_COLUMNS)
    assert list(df["variant"].unique()) == [BASELINE, "broken-apply", "channels-last", "broken-call", "wrong",
                                            "fp16", "bf16+channels-last"]
    assert len(df) == 7 * 2
    status = df.groupby("variant")["status"].agg(set).to_dict()
    assert status["broken-apply"] == {"error"} and status["broken-call"] == {"error"} and status["fp16"] == {"n/a"}
    assert status[BASELINE] == status["channels-last"] == status["wrong"] == status["bf16+channels-last"] == {"ok"}
    errors = df.set_index(["variant", "batch_size"])["error"]
    assert "deliberately broken transformation" in errors[("broken-apply", 1)]
    assert "deliberately broken kernel" in errors[("broken-call", 2)]
    assert "cuda" in errors[("fp16", 1)]
    ok = df[df["status"] == "ok"]
    assert ok.set_index("variant").loc["wrong", "accuracy_ok"].eq(False).all()
    assert ok[ok["variant"] != "wrong"]["accuracy_ok"].all()
    assert (ok.loc[ok["variant"] == BASELINE, "rel_error"] == 0).all()
    # speedup is exactly the ratio of the medians, its interval the ratio of the CIs
    for _, row in ok.iterrows():
        base = ok[(ok["variant"] == BASELINE) & (ok["batch_size"] == row["batch_size"])].iloc[0]
        assert row["speedup_vs_baseline"] == pytest.approx(base["latency_p50_ms"] / row["latency_p50_ms"], rel=1e-12)
        if not math.isnan(row["speedup_ci_low"]):
            assert row["speedup_ci_low"] == pytest.approx(base["latency_ci_low_ms"] / row["latency_ci_high_ms"])
            assert row["speedup_ci_low"] <= row["speedup_vs_baseline"] <= row["speedup_ci_high"]
    assert df[df["status"] != "ok"]["speedup_vs_baseline"].isna().all()
    best = recommend(df)
    assert list(best["batch_size"]) == [1, 2]
    assert set(best["variant"]) <= {BASELINE, "channels-last", "bf16+channels-last"}  # never "wrong"
    assert all(text.startswith("resnet50 on cpu, batch") for text in best["recommendation"])


def test_default_variants_list_singles_and_applicable_combinations(tiny_gpt2, tiny_resnet):
    text = default_variants(tiny_gpt2)
    assert set(VARIANTS) <= set(text) and "bf16+channels-last" not in text
    assert "bf16+channels-last" in default_variants(tiny_resnet)
    assert not any("compile" in spec for spec in default_variants(tiny_resnet, include_compile=False))


def _row(variant, p50, low, high, accuracy_ok=True, status="ok", batch=8):
    return {"model": "m", "device": "cpu", "variant": variant, "batch_size": batch, "status": status,
            "latency_p50_ms": p50, "latency_ci_low_ms": low, "latency_ci_high_ms": high, "accuracy_ok": accuracy_ok,
            "rel_error": 0.01, "cosine_similarity": 0.999, "tolerance": "reduced precision: ...; more"}


def test_speedup_is_ratio_of_medians_with_conservative_interval():
    df = add_speedups(pd.DataFrame([_row(BASELINE, 100.0, 90.0, 110.0), _row("fast", 40.0, 38.0, 44.0),
                                    _row("crashed", None, None, None, status="error")]))
    fast = df.set_index("variant").loc["fast"]
    assert fast["speedup_vs_baseline"] == pytest.approx(2.5)
    assert fast["speedup_ci_low"] == pytest.approx(90.0 / 44.0)
    assert fast["speedup_ci_high"] == pytest.approx(110.0 / 38.0)
    assert df.set_index("variant").loc[BASELINE, "speedup_vs_baseline"] == 1.0
    assert math.isnan(df.set_index("variant").loc["crashed", "speedup_vs_baseline"])


def test_recommend_picks_fastest_safe_variant_only():
    df = add_speedups(pd.DataFrame([
        _row(BASELINE, 100.0, 99.0, 101.0), _row("fastest-but-wrong", 10.0, 9.0, 11.0, accuracy_ok=False),
        _row("fast", 40.0, 39.0, 41.0), _row("faster", 30.0, 29.0, 31.0), _row("oom", None, None, None, status="oom"),
        _row(BASELINE, 10.0, 9.0, 11.0, batch=1), _row("noisy", 9.5, 5.0, 14.0, batch=1),
    ]))
    best = recommend(df).set_index("batch_size")
    assert best.loc[8, "variant"] == "faster" and best.loc[8, "runner_up"] == "fast"
    assert best.loc[8, "speedup"] == pytest.approx(100 / 30) and "speedup_vs_baseline" not in best
    assert best.loc[8, "rejected_for_accuracy"] == 1
    assert "use faster, 3.33x (ratio of medians" in best.loc[8, "recommendation"]
    # a CI containing 1 is no significant difference: the baseline is kept, and the reason given
    assert best.loc[1, "variant"] == BASELINE and math.isnan(best.loc[1, "speedup"])  # kept: nothing measured
    assert best.loc[1, "reason"] == REFUSALS["none"]
    assert "no variant beats the baseline" in best.loc[1, "recommendation"]


def _verdict_frame(**paired):
    """Baseline plus one variant "v" that looks 2x faster, with the paired columns given."""
    df = add_speedups(pd.DataFrame([_row(BASELINE, 100.0, 99.0, 101.0), _row("v", 50.0, 49.0, 51.0)]))
    for column in ("paired_speedup", "paired_speedup_ci_low", "paired_speedup_ci_high"):
        df[column] = [None, paired.get(column, 2.0)]
    df["interference"] = [False, paired.get("interference", False)]
    return df


@pytest.mark.parametrize("paired, reason", [
    (dict(interference=True), "machine busy during measurement"),
    (dict(paired_speedup_ci_low=math.nan, paired_speedup_ci_high=math.nan), "not enough samples"),
    (dict(paired_speedup_ci_low=0.9, paired_speedup_ci_high=2.5), "no variant beats the baseline"),
    (dict(paired_speedup=0.8, paired_speedup_ci_low=0.7, paired_speedup_ci_high=0.9), "no variant beats the baseline"),
])
def test_recommend_refuses_with_a_reason(paired, reason):
    best = recommend(_verdict_frame(**paired)).iloc[0]
    assert best["variant"] == BASELINE and best["reason"] == reason
    assert best["recommendation"].endswith(f"keep {BASELINE}; {reason}.")


def test_recommend_accepts_a_clean_significant_paired_speedup_and_verdicts_say_why():
    best = recommend(_verdict_frame(paired_speedup_ci_low=1.8, paired_speedup_ci_high=2.2)).iloc[0]
    assert best["variant"] == "v" and best["reason"] is None and best["speedup_measure"] == "paired rounds"
    assert speedup_verdict(2.0, 1.8, 2.2) == "faster" and speedup_verdict(0.5, 0.4, 0.6) == "slower"
    assert speedup_verdict(1.1, 0.9, 1.3) == "no significant difference"
    assert speedup_verdict(1.1, math.nan, math.nan) == "too few samples"
    verdicts = add_verdicts(_verdict_frame(paired_speedup_ci_low=0.9, paired_speedup_ci_high=2.5))
    assert verdicts["speedup_verdict"].tolist() == [None, "no significant difference"]


def test_paired_rounds_give_a_drift_robust_speedup(tiny_distilbert):
    df = run_variant_sweep(tiny_distilbert, ["bf16"], batch_sizes=(1,), seq_len=SEQ_LEN,
                           timing=TimingConfig.quick(num_threads=1), measure_memory=False, paired_rounds=6)
    rows = df.set_index("variant")
    assert rows.loc["bf16", "paired_rounds"] == 6
    assert rows.loc["bf16", "paired_speedup_ci_low"] <= rows.loc["bf16", "paired_speedup"] \
        <= rows.loc["bf16", "paired_speedup_ci_high"]
    assert pd.isna(rows.loc[BASELINE, "paired_speedup"])
    assert recommend(df)["speedup_measure"].iloc[0] == "paired rounds"
    assert recommend(df, by="medians")["speedup_measure"].iloc[0] == "ratio of medians"


def test_recommend_prefers_the_paired_measure_when_present():
    df = add_speedups(pd.DataFrame([_row(BASELINE, 100.0, 99.0, 101.0), _row("a", 40.0, 39.0, 41.0),
                                    _row("b", 50.0, 49.0, 51.0)]))
    df["paired_speedup"] = [None, 1.5, 2.2]               # the machine got busier while "b" was timed alone
    df["paired_speedup_ci_low"] = [None, 1.4, 2.1]
    df["paired_speedup_ci_high"] = [None, 1.6, 2.3]
    best = recommend(df).iloc[0]
    assert best["variant"] == "b" and best["speedup"] == 2.2 and best["speedup_measure"] == "paired rounds"
    assert recommend(df, by="medians").iloc[0]["variant"] == "a"
    with pytest.raises(InvalidInputError):
        recommend(df, by="fastest")


@pytest.mark.slow
def test_compile_variant_warms_up_and_is_accurate(tiny_resnet):
    df = run_variant_sweep(tiny_resnet, ["compile", "bf16-weights+channels-last+compile-freezing"], batch_sizes=(1,),
                           timing=QUICK, measure_memory=False)
    rows = df.set_index("variant")
    row = rows.loc["compile"]
    assert row["status"] == "ok", row["error"]
    assert row["compile_time_s"] > 0 and row["compile_calls"] >= 3 and row["compile_stable"]
    assert row["accuracy_ok"] and row["rel_error"] <= 1e-4
    assert math.isnan(rows.loc[BASELINE, "compile_time_s"])
    frozen = rows.loc["bf16-weights+channels-last+compile-freezing"]
    assert frozen["status"] == "ok", frozen["error"]
    assert frozen["compile_time_s"] > 0 and frozen["compile_stable"] and frozen["accuracy_ok"]
    assert "freezing" in frozen["notes"] and "reduced precision" in frozen["tolerance"]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name, spec", [("resnet50", "fp16"), ("resnet50", "fp16-weights+channels-last"),
                                        ("resnet50", "bf16+channels-last"), ("resnet50", "compile-reduce-overhead"),
                                        ("resnet50", "channels-last"), ("gpt2", "fp16+compile"),
                                        ("distilbert", "eager-attention")])
def test_cuda_variants_run_and_pass_the_guard(name, spec):
    import infopt

    model = infopt.load_model(name, device="cuda", size="tiny")
    df = run_variant_sweep(model, [spec], batch_sizes=(2,), seq_len=SEQ_LEN if model.is_text else None,
                           timing=QUICK, measure_memory=False)
    row = df.set_index("variant").loc[canonical_spec(spec)]
    assert row["status"] == "ok", row["error"]
    assert row["accuracy_ok"], (row["rel_error"], row["cosine_similarity"])
    assert row["device"].startswith("cuda") and row["timer"] == "cuda-event"
    assert "int8-dynamic" not in list_variants(model)


def test_the_onnx_variants_of_one_model_share_one_export_and_agree_with_their_own_exports():
    """onnxruntime, -int8 and -int8-static start from the same fp32 graph: exported once per model (tens of seconds
    for a full-size model on a CPU), the later variants say so, and the shared graph gives the same outputs."""
    pytest.importorskip("onnxruntime")
    from infopt.optimize.applied import apply_variant

    model = infopt.load_model("resnet50", size="tiny")
    first = apply_variant(model, "onnxruntime")
    second = apply_variant(model, "onnxruntime-int8")
    assert "reused" not in "; ".join(first.notes) and "(its graph reused" in "; ".join(second.notes)
    assert second.export_time_s == first.export_time_s
    inputs = model.prepare_input(2)
    again = apply_variant(infopt.load_model("resnet50", size="tiny"), "onnxruntime")  # another model: its own
    assert "reused" not in "; ".join(again.notes)
    with torch.inference_mode():
        torch.testing.assert_close(first.forward(inputs), again.forward(inputs))
