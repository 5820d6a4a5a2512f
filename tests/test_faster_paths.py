"""torchao quantization, ONNX Runtime and generation variants (issue #11), on tiny models."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import infopt
from infopt.optimize.accuracy import REDUCED_TOLERANCE, compare_generation, compare_outputs
from infopt.errors import InvalidInputError
from infopt.optimize.generation import (GenerateRunner, add_generation_verdicts, default_generation_variants,
                                        parse_generation_spec, recommend_generation, run_generation_variant_sweep)
from infopt.measure.interference import Interference
from infopt.optimize.onnx_runtime import CALIBRATION_BATCHES, CALIBRATION_SEED, ONNXExportError, export_onnx, one_line_reason
from infopt.measure.timing import TimingConfig
from infopt.optimize.torchao import TORCHAO_VARIANTS
from infopt.optimize import (BASELINE, REFUSALS, VARIANTS, VariantNotApplicableError, apply_variant, run_variant_sweep,
                             unavailable_reason)

SEQ_LEN = 16


def _inputs(model, batch_size=3):
    return model.prepare_input(batch_size, SEQ_LEN if model.is_text else None)


# -- torchao ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "distilbert"])
def test_torchao_variants_apply_or_say_why_not(tiny_models, name):
    model = tiny_models[name]
    with torch.inference_mode():
        reference = model.forward(_inputs(model))
    for spec in TORCHAO_VARIANTS:
        try:
            variant = apply_variant(model, spec)
        except VariantNotApplicableError as error:
            assert "cuda" in str(error) and not torch.cuda.is_available(), spec
            continue
        with torch.inference_mode():
            output = variant.forward(variant.prepare_input(3, SEQ_LEN))
        assert compare_outputs(reference, output, model.task, variant.tolerance)["accuracy_ok"], spec
        assert any("torchao" in note for note in variant.notes)
        quantized = [type(m.weight).__name__ for m in variant.eager_module.modules()
                     if isinstance(m, torch.nn.Linear)]
        assert quantized and all(kind != "Parameter" for kind in quantized), quantized  # torchao tensor subclasses


def test_legacy_int8_dynamic_is_labelled_deprecated_next_to_torchao(tiny_gpt2):
    assert "DEPRECATED" in VARIANTS["int8-dynamic"].description
    variant = apply_variant(tiny_gpt2, "int8-dynamic")
    assert VARIANTS["torchao-int8-dynamic"].group == VARIANTS["int8-dynamic"].group == "weights"
    # it really quantized: dynamic int8 Linear modules holding qint8 weights, outputs still close to eager fp32
    dynamic = [m for m in variant.eager_module.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert dynamic and all(m.weight().dtype == torch.qint8 for m in dynamic)
    inputs = _inputs(tiny_gpt2)
    with torch.inference_mode():
        reference, output = tiny_gpt2.forward(inputs), variant.forward(variant.prepare_input(3, SEQ_LEN))
    assert compare_outputs(reference, output, tiny_gpt2.task, variant.tolerance)["rel_error"] < 0.2


def test_legacy_int8_dynamic_is_na_when_torch_drops_it(tiny_gpt2, monkeypatch):
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    with pytest.raises(VariantNotApplicableError, match="no longer has"):
        apply_variant(tiny_gpt2, "int8-dynamic")


def test_missing_torchao_is_na_with_reason_not_an_import_error(tiny_gpt2, monkeypatch):
    from infopt.optimize import torchao as torchao_variants

    monkeypatch.setattr(torchao_variants, "torchao_import_error", lambda: "torchao is not installed")
    with pytest.raises(VariantNotApplicableError, match="torchao is not installed"):
        apply_variant(tiny_gpt2, "torchao-int8-weight-only")


# -- ONNX Runtime ---------------------------------------------------------------------
def test_onnxruntime_variant_matches_eager_at_other_batch_sizes(tiny_distilbert):
    variant = apply_variant(tiny_distilbert, "onnxruntime")
    assert variant.export_time_s > 0
    for batch in (1, 5):  # exported at batch 2: the batch axis is dynamic
        inputs = tiny_distilbert.prepare_input(batch, SEQ_LEN)
        with torch.inference_mode():
            reference = tiny_distilbert.forward(inputs)
        output = variant.forward(variant.prepare_input(batch, SEQ_LEN))
        assert isinstance(output, torch.Tensor) and output.shape == reference.shape
        assert compare_outputs(reference, output, "encoder", variant.tolerance)["accuracy_ok"]


class _DataDependent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        if self.linear(x).sum() > 0:  # data-dependent control flow: torch.export cannot trace it
            return x
        return -x


def test_export_failure_is_one_line():
    class Fake:
        wrapper = type("W", (), {"module": _DataDependent()})()
        is_text, max_seq_len = False, None

        def prepare_input(self, batch_size, seq_len=None):
            return {"x": torch.randn(batch_size, 4)}

        def forward(self, inputs):
            return self.wrapper.module(inputs["x"])

    with pytest.raises(ONNXExportError) as caught:
        export_onnx(Fake(), "/tmp/infopt-never-written.onnx")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("torch.onnx.export failed: ")
    assert one_line_reason(RuntimeError("## Exception summary\n\n<class 'X'>: why\nmore")) == "<class 'X'>: why"


def test_onnx_export_failure_is_an_error_row_and_the_sweep_continues(tiny_resnet, monkeypatch):
    from infopt.optimize import onnx_runtime

    def broken(variant, path):
        raise ONNXExportError("torch.onnx.export failed: unsupported operator aten::fake")

    monkeypatch.setattr(onnx_runtime, "export_onnx", broken)
    monkeypatch.setattr(onnx_runtime, "_BASELINE_EXPORTS", {})  # an earlier test's export of this model is not reused
    df = run_variant_sweep(tiny_resnet, ["onnxruntime", "torchao-int8-dynamic"], batch_sizes=[2],
                           timing=TimingConfig.quick(), measure_memory=False)
    rows = df.set_index("variant")
    assert rows.at["onnxruntime", "status"] == "error"
    assert "unsupported operator aten::fake" in rows.at["onnxruntime", "error"]
    assert "\n" not in rows.at["onnxruntime", "error"]
    assert rows.at["torchao-int8-dynamic", "status"] == "ok"  # the sweep went on
    assert rows.at["eager-fp32", "status"] == "ok"


def test_onnxruntime_export_time_is_reported_like_compile_time(tiny_resnet):
    df = run_variant_sweep(tiny_resnet, ["onnxruntime"], batch_sizes=[2], timing=TimingConfig.quick(),
                           measure_memory=False)
    row = df.set_index("variant").loc["onnxruntime"]
    assert row["status"] == "ok" and row["accuracy_ok"] == True  # noqa: E712
    assert row["compile_time_s"] > 0 and "ONNX export" in row["notes"]


def test_onnxruntime_int8_applies_on_cpu(tiny_gpt2):
    variant = apply_variant(tiny_gpt2, "onnxruntime-int8")
    inputs = tiny_gpt2.prepare_input(2, SEQ_LEN)
    with torch.inference_mode():
        reference = tiny_gpt2.forward(inputs)
    result = compare_outputs(reference, variant.forward(variant.prepare_input(2, SEQ_LEN)), "causal-lm",
                             variant.tolerance)
    assert result["accuracy_ok"] and 0 < result["rel_error"] < REDUCED_TOLERANCE.max_rel_error


def test_onnxruntime_int8_static_calibrates_on_other_seeds_and_passes_the_guard(tiny_resnet, tiny_gpt2,
                                                                                 monkeypatch):
    seeds = []
    original = type(tiny_resnet).prepare_input

    def recording(self, batch_size, seq_len=None, *, seed=None):
        seeds.append(seed)
        return original(self, batch_size, seq_len, seed=seed)

    monkeypatch.setattr(type(tiny_resnet), "prepare_input", recording)
    df = run_variant_sweep(tiny_resnet, ["onnxruntime-int8-static"], batch_sizes=[2], timing=TimingConfig.quick(),
                           measure_memory=False)
    row = df.set_index("variant").loc["onnxruntime-int8-static"]
    assert row["status"] == "ok", row["error"]
    assert row["accuracy_ok"] == True and 0 < row["rel_error"] < REDUCED_TOLERANCE.max_rel_error  # noqa: E712
    assert "static int8 calibrated" in row["notes"] and row["compile_time_s"] > 0
    calibration = [seed for seed in seeds if seed is not None and seed >= CALIBRATION_SEED]
    assert len(calibration) == CALIBRATION_BATCHES  # calibrated on its own seeds, never the accuracy check's
    reason = unavailable_reason(tiny_gpt2, "onnxruntime-int8-static")
    assert reason is not None and "image input" in reason


# -- generation accuracy ------------------------------------------------------------------
def test_generation_accuracy_is_exact_for_identical_outputs():
    ids = torch.randint(0, 50, (2, 12))
    result = compare_generation(ids, ids.clone(), prompt_len=4)
    assert result["first_divergence"] == 8 and result["identical_token_share"] == 1.0
    assert result["rows_diverged"] == 0 and result["generation_accuracy_ok"]


def test_generation_accuracy_detects_a_perturbed_continuation():
    ids = torch.randint(0, 50, (2, 12))
    perturbed = ids.clone()
    perturbed[1, 4 + 5] = (perturbed[1, 9] + 1) % 50   # generated position 5 of row 1
    perturbed[1, 10:] = (perturbed[1, 10:] + 1) % 50  # and everything after it
    scores = [torch.zeros(2, 50) for _ in range(8)]
    for step in range(8):
        scores[step][torch.arange(2), ids[:, 4 + step]] = 10.0  # the reference was confident at every step
    result = compare_generation(ids, perturbed, prompt_len=4, reference_scores=scores)
    assert result["first_divergence"] == 5 and result["rows_diverged"] == 1
    assert math.isclose(result["identical_token_share"], (16 - 3) / 16)
    assert result["confident_divergence"] and not result["generation_accuracy_ok"]
    # a divergence after a near-tie of the reference is allowed
    tie = [s.clone() for s in scores]
    tie[5][1, perturbed[1, 9]] = 10.0
    assert compare_generation(ids, perturbed, 4, reference_scores=tie)["generation_accuracy_ok"]
    with pytest.raises(InvalidInputError):
        compare_generation(ids, ids[:, :10], prompt_len=4)


def test_prefill_error_fails_the_generation_guard():
    ids = torch.randint(0, 50, (1, 6))
    logits = torch.randn(1, 3, 50)
    result = compare_generation(ids, ids, 3, reference_prefill=logits, candidate_prefill=-logits)
    assert result["prefill_rel_error"] > 1 and not result["generation_accuracy_ok"]
    assert "prefill logits" in result["generation_tolerance"]


# -- generation variants ------------------------------------------------------------------
def test_generation_specs_parse_and_compile_is_opt_in_on_cpu(tiny_gpt2):
    assert parse_generation_spec("static-cache+bf16-weights") == ("bf16-weights", "static-cache")
    assert parse_generation_spec("eager-fp32") == ("eager-fp32", None)
    with pytest.raises(InvalidInputError):
        parse_generation_spec("static-cache+static-cache-compile")
    cpu_default = default_generation_variants(tiny_gpt2)
    assert "static-cache" in cpu_default and "static-cache-compile" not in cpu_default
    assert "static-cache-compile" in default_generation_variants(tiny_gpt2, include_compile=True)


def test_generation_variant_sweep(tiny_gpt2, tiny_distilbert):
    with pytest.raises(InvalidInputError, match="causal language model"):
        run_generation_variant_sweep(tiny_distilbert)
    df = run_generation_variant_sweep(
        tiny_gpt2, ["static-cache", "torchao-int8-weight-only", "bf16-weights+static-cache", "compile",
                    "torchao-float8"], prompt_len=8, new_tokens=6, batch_size=2, repeats=2, paired_rounds=2)
    rows = df.set_index("variant")
    assert list(rows.index) == ["eager-fp32", "static-cache", "torchao-int8-weight-only",
                                "bf16-weights+static-cache", "compile", "torchao-float8"]
    assert rows.at["compile", "status"] == "n/a" and "generate loop" in rows.at["compile", "error"]
    assert rows.at["torchao-float8", "status"] == "n/a" and rows.at["torchao-float8", "error"]
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 4
    for column in ("ttft_ms", "tpot_p50_ms", "tpot_p99_ms", "decode_tokens_per_s", "tpot_speedup_vs_baseline"):
        assert (pd.to_numeric(ok[column]) > 0).all(), column
    assert rows.at["eager-fp32", "identical_token_share"] == 1.0
    assert rows.at["eager-fp32", "prefill_rel_error"] == 0.0
    assert rows.at["static-cache", "generation_accuracy_ok"] == True  # noqa: E712 - fp32, same tokens
    assert rows.at["static-cache", "paired_rounds"] == 2 and rows.at["static-cache", "paired_tpot_speedup"] > 0
    assert rows.at["torchao-int8-weight-only", "prefill_rel_error"] > 0
    assert all(ok["generation_tolerance"].str.contains("prefill logits"))
    # every timed row says whether the machine was busy; 2 paired rounds give no CI, and the verdict says so
    assert ok["interference"].map(lambda value: isinstance(value, bool)).all()
    assert ok["interference_detail"].str.contains("CPU cores").all()
    assert rows.at["eager-fp32", "tpot_speedup_verdict"] is None
    assert set(ok.drop(index="eager-fp32")["tpot_speedup_verdict"]) == {"too few samples"}
    best = recommend_generation(df)
    assert set(best["metric"]) == {"TPOT", "TTFT"} and best["variant"].notna().all()
    from infopt.report import plots

    figure = plots.generation_variants(df)
    assert [trace.name for trace in figure.data] == ["TTFT (median)", "TPOT p50 (bar to p99)"]
    assert list(figure.data[0].x) == list(ok.index)


def test_generate_runner_applies_cache_options(tiny_gpt2):
    runner = GenerateRunner(tiny_gpt2, "static-cache", "static-cache")
    ids, _ = runner.greedy(tiny_gpt2.prepare_input(1, 8), 4)
    assert ids.shape == (1, 12)
    assert runner.options["cache_implementation"] == "static" and runner.options["disable_compile"]


def test_static_cache_with_compiled_decode_runs_on_cpu_when_asked(tiny_gpt2):
    # opt-in on CPU (compiling costs time there); the decode step compiles once, then gives the same tokens
    df = run_generation_variant_sweep(tiny_gpt2, ["static-cache-compile"], prompt_len=8, new_tokens=4,
                                      batch_size=1, repeats=1, paired_rounds=0)
    row = df.set_index("variant").loc["static-cache-compile"]
    assert row["status"] == "ok", row["error"]
    assert row["compile_time_s"] > 0 and row["tpot_p50_ms"] > 0
    assert row["identical_token_share"] == 1.0 and row["generation_accuracy_ok"] == True  # noqa: E712


class _BusyWatch:
    """Stands in for :class:`infopt.measure.interference.watch`: every window it wraps was busy."""

    def __init__(self, device="cpu"):
        self.result = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.result = Interference(True, "fake load", 1.0, 0.1)


def test_generation_paired_rounds_carry_interference(tiny_gpt2, monkeypatch):
    monkeypatch.setattr("infopt.optimize.generation.watch", _BusyWatch)  # the paired window only
    df = run_generation_variant_sweep(tiny_gpt2, ["static-cache"], prompt_len=8, new_tokens=4, batch_size=1,
                                      repeats=1, paired_rounds=2)
    rows = df.set_index("variant")
    assert rows.at["static-cache", "interference"] == True  # noqa: E712
    assert "paired rounds: fake load" in rows.at["static-cache", "interference_detail"]
    assert rows.at[BASELINE, "interference_detail"].startswith("other processes used")  # its own, real window
    assert (recommend_generation(df)["variant"] == BASELINE).all()


def _generation_frame(model, **variant):
    """Baseline plus one accurate variant "v" that looks 2x faster on TPOT and TTFT, with the columns given."""
    common = {"model": model.name, "device": str(model.device), "batch_size": 1, "prompt_len": 8, "status": "ok",
              "generation_accuracy_ok": True, "identical_token_share": 1.0, "prefill_rel_error": 0.0,
              "interference": False}
    base = {**common, "variant": BASELINE, "tpot_p50_ms": 10.0, "ttft_ms": 20.0, "tpot_speedup_vs_baseline": 1.0,
            "ttft_speedup_vs_baseline": 1.0}
    row = {**common, "variant": "v", "tpot_p50_ms": 5.0, "ttft_ms": 10.0, "tpot_speedup_vs_baseline": 2.0,
           "ttft_speedup_vs_baseline": 2.0}
    for metric in ("tpot", "ttft"):
        paired = f"paired_{metric}_speedup"
        base.update({paired: math.nan, f"{paired}_ci_low": math.nan, f"{paired}_ci_high": math.nan})
        row.update({paired: variant.get("speedup", 2.0), f"{paired}_ci_low": variant.get("low", 1.8),
                    f"{paired}_ci_high": variant.get("high", 2.2)})
    row["interference"] = variant.get("interference", False)
    return pd.DataFrame([base, row])


@pytest.mark.parametrize("variant, reason", [
    (dict(interference=True), "machine busy during measurement"),
    (dict(low=math.nan, high=math.nan), "not enough samples"),
    (dict(low=0.9, high=2.5), "no variant beats the baseline"),
    (dict(speedup=0.8, low=0.7, high=0.9), "no variant beats the baseline"),
])
def test_recommend_generation_refuses_with_a_reason(tiny_gpt2, variant, reason):
    best = recommend_generation(_generation_frame(tiny_gpt2, **variant))
    assert list(best["metric"]) == ["TPOT", "TTFT"] and (best["variant"] == BASELINE).all()
    assert (best["reason"] == reason).all() and reason in REFUSALS.values()
    assert best["recommendation"].str.endswith(f"; {reason}.").all()
    assert (best["speedup_measure"] == "paired rounds").all()


def test_recommend_generation_accepts_a_clean_significant_paired_speedup(tiny_gpt2):
    df = _generation_frame(tiny_gpt2)
    best = recommend_generation(df)
    assert (best["variant"] == "v").all() and best["reason"].isna().all()
    assert best["speedup"].tolist() == [2.0, 2.0] and best["speedup_ci_low"].tolist() == [1.8, 1.8]
    verdicts = add_generation_verdicts(_generation_frame(tiny_gpt2, low=0.9, high=2.5))
    assert verdicts["tpot_speedup_verdict"].tolist() == [None, "no significant difference"]
    assert add_generation_verdicts(df)["ttft_speedup_verdict"].tolist() == [None, "faster"]


def test_recommend_generation_without_paired_rounds_has_no_ci(tiny_gpt2):
    # the ratio of medians has no CI: never recommended, and a flagged baseline taints it
    df = _generation_frame(tiny_gpt2, speedup=math.nan, low=math.nan, high=math.nan)
    best = recommend_generation(df)
    assert (best["speedup_measure"] == "ratio of medians").all() and (best["variant"] == BASELINE).all()
    assert (best["reason"] == REFUSALS["samples"]).all()
    df.loc[df["variant"] == BASELINE, "interference"] = True
    assert (recommend_generation(df)["reason"] == REFUSALS["busy"]).all()
