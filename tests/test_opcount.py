"""FLOP and byte counting per operator and per module (infopt.analyze.opcount)."""

from __future__ import annotations

import pytest
import torch

import infopt
from infopt.flops import count_flops
from infopt.analyze.opcount import ROOT_NAME, count_model, count_ops, tensor_footprint_bytes

MIB = 2**20


def _only_row(counts, operator):
    rows = counts.operators[counts.operators["operator"] == operator]
    assert len(rows) == 1, counts.operators
    return rows.iloc[0]


def test_matmul_bytes_and_flops_are_exact():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    counts = count_ops(lambda: a @ b)
    row = _only_row(counts, "aten::mm")
    assert row["read_bytes"] == 8 * MIB
    assert row["written_bytes"] == 4 * MIB
    assert row["flops"] == 2 * 1024**3
    assert counts.total_bytes == 12 * MIB


def test_out_argument_is_written_not_read():
    a, b, out = torch.randn(256, 256), torch.randn(256, 256), torch.empty(256, 256)
    row = _only_row(count_ops(lambda: torch.mm(a, b, out=out)), "aten::mm")
    assert (row["read_bytes"], row["written_bytes"]) == (2 * 256 * 256 * 4, 256 * 256 * 4)


def test_broadcast_input_counts_its_real_elements_once():
    a, bias = torch.randn(512, 1024), torch.randn(1024)
    expanded = bias.expand(512, 1024)
    assert tensor_footprint_bytes(expanded) == 1024 * 4
    row = _only_row(count_ops(lambda: a + expanded), "aten::add")
    assert row["read_bytes"] == 512 * 1024 * 4 + 1024 * 4
    assert row["written_bytes"] == 512 * 1024 * 4


def test_same_tensor_twice_is_read_once_and_in_place_reads_and_writes():
    x = torch.randn(1000)
    assert _only_row(count_ops(lambda: x * x), "aten::mul")["read_bytes"] == 4000
    row = _only_row(count_ops(lambda: x.add_(1.0)), "aten::add_")
    assert (row["read_bytes"], row["written_bytes"]) == (4000, 4000)


def test_views_move_no_bytes():
    x = torch.randn(64, 64)
    counts = count_ops(lambda: x.view(4096).view(64, 64).t().unsqueeze(0)[0])
    assert counts.records == []
    assert counts.total_bytes == 0


@pytest.mark.parametrize("name", ["gpt2", "distilbert", "resnet50"])
def test_tiny_model_totals_match_count_flops_and_attribution_sums(tiny_models, name):
    model = tiny_models[name]
    inputs = model.prepare_input(2, 16 if model.is_text else None)
    counts = count_model(model, 2, 16 if model.is_text else None)
    assert counts.total_flops == count_flops(lambda: model.forward(inputs)) > 0
    modules = counts.modules
    assert modules.loc[modules["module"] == ROOT_NAME, "flops"].item() == counts.total_flops
    assert modules["self_flops"].sum() == counts.total_flops
    assert modules["self_bytes"].sum() == counts.total_bytes > 0
    assert counts.operators["flops"].sum() == counts.total_flops
    real = {n for n, _ in model.module.named_modules() if n}
    assert set(modules["module"]) - {ROOT_NAME} == real
    # inclusive sums: a parent holds at least what each child holds
    by_name = modules.set_index("module")
    for child, parent in zip(modules["module"], modules["parent"]):
        if isinstance(parent, str):  # the root has no parent
            assert by_name.at[parent, "flops"] >= by_name.at[child, "flops"]
            assert by_name.at[parent, "bytes"] >= by_name.at[child, "bytes"]


def test_gpt2_attention_is_counted_per_module(tiny_gpt2):
    counts = count_model(tiny_gpt2, 1, 32)
    ops = set(counts.operators.loc[counts.operators["flops"] > 0, "operator"])
    assert any("scaled_dot_product" in op for op in ops), ops
    attn = counts.modules.set_index("module").at["transformer.h.0.attn", "self_flops"]
    # the attention module's own FLOPs (outside c_attn/c_proj) are QK^T and AV: 4 x seq^2 x hidden
    assert attn == 4 * 32 * 32 * tiny_gpt2.hidden_size


def _analytic_text_flops(model, seq_len: int) -> float:
    embeddings = sum(p.numel() for n, p in model.module.named_parameters()
                     if n.endswith(("wte.weight", "wpe.weight", "word_embeddings.weight", "position_embeddings.weight")))
    non_embedding = model.parameter_count() - embeddings
    flops = 2 * non_embedding * seq_len + 4 * model.num_layers * seq_len**2 * model.hidden_size
    if model.is_causal_lm:
        flops += 2 * model.hidden_size * model.config.vocab_size * seq_len  # tied lm head
    return flops


@pytest.mark.slow
def test_resnet50_full_flops_match_published_count():
    counts = count_model(infopt.load_model("resnet50"), 1)
    assert counts.total_flops == pytest.approx(8.18e9, rel=0.02)
    assert counts.modules["self_flops"].sum() == counts.total_flops
    assert counts.operators["flops"].sum() == counts.total_flops


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "distilbert"])
def test_text_models_full_flops_match_analytic_count_with_attention(name):
    model = infopt.load_model(name)
    counts = count_model(model, 1, 128)
    assert counts.total_flops == pytest.approx(_analytic_text_flops(model, 128), rel=0.02)
    assert counts.modules["self_flops"].sum() == counts.total_flops
    assert counts.operators["flops"].sum() == counts.total_flops
    assert counts.total_flops == model.info(seq_len=128)["flops_per_sample"]
