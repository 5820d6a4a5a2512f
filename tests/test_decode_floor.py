"""The decode floor: bytes and FLOPs counted from the tiny gpt2's config by hand, floors from a fake peaks file."""

import math

import pandas as pd
import pytest
import torch

from infopt import load_model
from infopt.analyze.decode_floor import (FLOOR_COLUMNS, add_decode_floors, add_floor_inputs, floor_inputs,
                                         kv_bytes_per_token, stored_bytes, weight_bytes_read)
from infopt.optimize.applied import apply_variant


@pytest.fixture(scope="module")
def gpt2():
    return load_model("gpt2", "cpu", size="tiny")


def _hand_counts(config):
    """gpt2 by hand: per layer c_attn (d x 3d), c_proj (d x d), MLP (d x 4d, 4d x d); the head is the tied wte."""
    d, layers, vocab = config.n_embd, config.n_layer, config.vocab_size
    matrices = layers * (d * 3 * d + d * d + 2 * d * 4 * d)
    vectors = layers * (3 * d + d + 4 * d + d + 2 * 2 * d) + 2 * d  # biases, 2 LayerNorms per layer, ln_f
    return matrices, vectors, vocab * d


def test_weights_kv_and_prefill_flops_match_hand_counts(gpt2):
    config = gpt2.config
    matrices, vectors, head = _hand_counts(config)
    row = floor_inputs(gpt2, "eager-fp32", batch_size=2, prompt_len=32, new_tokens=8)
    # wpe (only indexed) is left out; wte is read once, as the tied head
    assert row["floor_weight_bytes"] == 4 * (matrices + vectors + head)
    assert kv_bytes_per_token(config, torch.float32) == 2 * config.n_layer * config.n_embd * 4
    assert row["floor_kv_bytes_per_step"] == 2 * (32 + 8 / 2) * 2 * config.n_layer * config.n_embd * 4
    assert row["floor_prefill_flops"] == 2 * 2 * (matrices * 32 + head)
    assert row["floor_dtype"] == "float32"
    assert floor_inputs(gpt2, "eager-fp32", 2, 32, 8, use_cache=False)["floor_kv_bytes_per_step"] == 0


def test_bf16_weights_halve_the_bytes_and_the_cache(gpt2):
    base = floor_inputs(gpt2, "eager-fp32", 1, 16, 4)
    half = floor_inputs(apply_variant(gpt2, "bf16-weights"), "bf16-weights", 1, 16, 4)
    assert half["floor_weight_bytes"] * 2 == base["floor_weight_bytes"]
    assert half["floor_kv_bytes_per_step"] * 2 == base["floor_kv_bytes_per_step"]
    assert half["floor_dtype"] == "bfloat16" and half["floor_prefill_flops"] == base["floor_prefill_flops"]


def test_quantized_weights_count_their_packed_size(gpt2):
    pytest.importorskip("torchao")
    base = floor_inputs(gpt2, "eager-fp32", 1, 16, 4)
    int8 = floor_inputs(apply_variant(gpt2, "torchao-int8-weight-only"), "torchao-int8-weight-only", 1, 16, 4)
    matrices, _, head = _hand_counts(gpt2.config)
    # int8 storage of every matrix (plus scales and the fp32 vectors): far below their fp32 size
    assert matrices + head <= int8["floor_weight_bytes"] < 0.4 * base["floor_weight_bytes"]
    legacy = floor_inputs(apply_variant(gpt2, "int8-dynamic"), "int8-dynamic", 1, 16, 4)
    assert legacy["floor_weight_bytes"] < 0.4 * base["floor_weight_bytes"]
    assert legacy["floor_dtype"] == "int8/float8"  # int8 products: no measured peak to divide by


def test_stored_bytes_reads_a_tensor_subclass_inner_tensors():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    linear = torch.nn.Linear(64, 64, bias=False)
    quantize_(linear, Int8WeightOnlyConfig())
    weight = linear.weight
    assert weight.numel() == 64 * 64 and stored_bytes(weight) < weight.numel() * 4 / 3
    assert stored_bytes(weight) >= 64 * 64  # one byte per element at least
    assert weight_bytes_read(linear) == stored_bytes(weight)


PEAKS = {"device": "cpu", "bandwidth": {"measured_bytes_per_s": 10e9},
         "compute": {"float32": {"status": "ok", "measured_flops_per_s": 100e9},
                     "bfloat16": {"status": "error", "reason": "unsupported"}}}


def _rows(**changes):
    row = {"model": "m", "device": "cpu", "variant": "eager-fp32", "status": "ok", "tpot_p50_ms": 0.5,
           "ttft_ms": 4.0, "floor_weight_bytes": 2e6, "floor_kv_bytes_per_step": 1e6,
           "floor_prefill_flops": 1e8, "floor_dtype": "float32"}
    return pd.DataFrame([{**row, **changes}])


def test_floors_divide_by_the_measured_peaks():
    row = add_decode_floors(_rows(), PEAKS).iloc[0]
    assert row["tpot_floor_ms"] == pytest.approx(3e6 / 10e9 * 1e3)  # 0.3 ms
    assert row["bandwidth_utilization"] == pytest.approx(0.3 / 0.5)
    assert row["ttft_floor_ms"] == pytest.approx(1e8 / 100e9 * 1e3)  # 1 ms
    assert row["compute_utilization"] == pytest.approx(1 / 4)
    assert row["floor_note"] == ""
    assert set(FLOOR_COLUMNS) <= set(add_decode_floors(_rows(), PEAKS).columns)


def test_floors_are_missing_with_a_reason_never_guessed():
    other = add_decode_floors(_rows(device="cuda:1"), PEAKS).iloc[0]
    assert math.isnan(other["tpot_floor_ms"]) and "not cuda:1" in other["floor_note"]
    unmeasured = add_decode_floors(_rows(floor_dtype="bfloat16"), PEAKS).iloc[0]
    assert unmeasured["tpot_floor_ms"] > 0 and math.isnan(unmeasured["ttft_floor_ms"])
    assert "bfloat16" in unmeasured["floor_note"]
    int8 = add_decode_floors(_rows(floor_dtype="int8/float8"), PEAKS).iloc[0]
    assert math.isnan(int8["ttft_floor_ms"]) and "int8/float8" in int8["floor_note"]
    failed = add_decode_floors(_rows(status="oom", tpot_p50_ms=None), PEAKS).iloc[0]
    assert math.isnan(failed["tpot_floor_ms"]) and math.isnan(failed["bandwidth_utilization"])
    none = add_decode_floors(_rows(), None).iloc[0]
    assert math.isnan(none["tpot_floor_ms"]) and "no device peaks" in none["floor_note"]


def test_a_generation_sweep_gets_its_floor_inputs(gpt2):
    df = pd.DataFrame([{"variant": "eager-fp32", "batch_size": b, "prompt_len": 8, "new_tokens": 4,
                        "use_cache": True} for b in (1, 8)])
    out = add_floor_inputs(df, gpt2)
    assert out["floor_weight_bytes"].nunique() == 1  # weights are read once per step, whatever the batch
    assert out["floor_kv_bytes_per_step"].iloc[1] == 8 * out["floor_kv_bytes_per_step"].iloc[0]
    assert out["floor_prefill_flops"].iloc[1] == 8 * out["floor_prefill_flops"].iloc[0]


def test_the_generation_variant_sweep_records_floor_inputs_per_variant(gpt2):
    from infopt.optimize.generation import run_generation_variant_sweep

    df = run_generation_variant_sweep(gpt2, ["bf16-weights"], prompt_len=4, new_tokens=3, repeats=1, warmup=0,
                                      paired_rounds=0).set_index("variant")
    assert df.loc["bf16-weights", "floor_weight_bytes"] * 2 == df.loc["eager-fp32", "floor_weight_bytes"]
    floors = add_decode_floors(df.reset_index(), {**PEAKS, "device": str(gpt2.device)}).set_index("variant")
    for variant in ("eager-fp32", "bf16-weights"):
        expected = (floors.loc[variant, "floor_weight_bytes"] + floors.loc[variant, "floor_kv_bytes_per_step"]) / 10e6
        assert floors.loc[variant, "tpot_floor_ms"] == pytest.approx(expected)
        assert floors.loc[variant, "bandwidth_utilization"] == pytest.approx(
            floors.loc[variant, "tpot_floor_ms"] / floors.loc[variant, "tpot_p50_ms"])


def test_the_report_table_and_chart_show_tpot_against_its_floor():
    from infopt.analyze.decode_floor import floor_table
    from infopt.report import plots

    rows = add_decode_floors(pd.concat([_rows(variant="eager-fp32"), _rows(variant="bf16-weights", tpot_p50_ms=0.4),
                                        _rows(variant="no-cache", status="ok")], ignore_index=True)
                             .assign(use_cache=[True, True, False], tpot_ci_low_ms=0.3, tpot_ci_high_ms=0.6), PEAKS)
    table = floor_table(rows)
    assert list(table["variant"]) == ["eager-fp32", "bf16-weights"]  # rows without the cache are not decode rows
    assert {"tpot_p50_ms", "tpot_floor_ms", "bandwidth_utilization", "ttft_floor_ms"} <= set(table.columns)
    figure = plots.tpot_against_floor(table)
    measured, floor = figure.data
    assert list(measured.y) == [0.5, 0.4] and list(floor.y) == pytest.approx([0.3, 0.3])
    assert "no generation rows" in plots.tpot_against_floor(table.drop(columns="tpot_floor_ms")).layout.annotations[0].text
    assert floor_table(pd.DataFrame()).empty
