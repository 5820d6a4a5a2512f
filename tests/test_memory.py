"""Memory vs batch size, memory timeline and KV cache accounting (infopt.analyze.memory)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import infopt
import infopt.analyze.memory as memory
from infopt.errors import InvalidInputError
from infopt.analyze.memory import kv_cache_analytic_bytes, kv_cache_sweep, memory_timeline, memory_vs_batch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
MIB = 2**20


def test_kv_cache_measured_matches_analytic_and_grows_per_token(tiny_gpt2):
    table = kv_cache_sweep(tiny_gpt2, batch_size=2, prompt_len=16, new_tokens=12)
    loop = table[table["source"] == "decode loop"]
    assert list(loop["generated_tokens"]) == list(range(1, 13))
    assert list(loop["cache_seq_len"]) == list(range(16, 28))
    assert ((table["measured_over_analytic"] - 1).abs() <= 0.10).all(), table
    per_token = 2 * tiny_gpt2.num_layers * 2 * tiny_gpt2.hidden_size * 4  # K and V, layers, batch, hidden, fp32
    assert (loop["measured_bytes"].diff().dropna() == per_token).all()
    generated = table[table["source"] == "generate()"].iloc[0]
    assert generated["generated_tokens"] == 12
    assert generated["measured_bytes"] == loop.iloc[-1]["measured_bytes"]


def test_kv_cache_analytic_formula():
    class Stub:
        num_layers, hidden_size, dtype = 12, 768, torch.float32

    assert kv_cache_analytic_bytes(Stub, batch_size=1, seq_len=1024) == 2 * 12 * 1024 * 768 * 4


def test_kv_cache_sweep_refuses_non_causal_models_and_long_sequences(tiny_distilbert, tiny_gpt2):
    with pytest.raises(InvalidInputError, match="causal"):
        kv_cache_sweep(tiny_distilbert)
    with pytest.raises(InvalidInputError, match="limit"):
        kv_cache_sweep(tiny_gpt2, prompt_len=1000, new_tokens=100)


def test_memory_vs_batch_splits_weights_kv_and_activations(tiny_gpt2):
    table = memory_vs_batch(tiny_gpt2, [1, 2], seq_len=32, calls=1)
    assert list(table["status"]) == ["ok", "ok"]
    assert (table["weights_mb"] == tiny_gpt2.weight_bytes() / MIB).all()
    expected_kv = [kv_cache_analytic_bytes(tiny_gpt2, b, 32) / MIB for b in (1, 2)]
    assert list(table["kv_cache_mb"]) == pytest.approx(expected_kv)
    assert (table["memory_method"] == "cpu-rss-sampled").all()
    assert (table["peak_memory_mb"] >= table["baseline_memory_mb"]).all()
    assert set(table.attrs["definitions"]) == {"weights_mb", "kv_cache_mb", "activation_workspace_mb"}


def test_memory_vs_batch_records_oom_and_skips_larger_sizes(tiny_resnet, monkeypatch):
    real_measure, real_prepare = memory.measure_peak_memory, tiny_resnet.prepare_input
    current = {}

    def prepare(batch_size, seq_len=None, **kwargs):
        current["batch"] = batch_size
        return real_prepare(batch_size, seq_len, **kwargs)

    def measure(fn, device, calls=3):
        if current["batch"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_measure(fn, device, calls)

    monkeypatch.setattr(memory, "measure_peak_memory", measure)
    monkeypatch.setattr(tiny_resnet, "prepare_input", prepare)
    table = memory_vs_batch(tiny_resnet, [1, 2, 4], calls=1)
    assert list(table["status"]) == ["ok", "oom", "skipped"]
    assert "out of memory" in table.loc[1, "error"]
    assert table.loc[0, "peak_memory_mb"] > 0
    assert table["kv_cache_mb"].isna().all()  # not a causal LM


def test_activation_workspace_is_floored_at_zero_and_says_so(tiny_gpt2, monkeypatch):
    real_measure = memory.measure_peak_memory

    def measure(fn, device, calls=3):  # RSS rose less than the KV cache it holds (allocator reuse)
        return {**real_measure(fn, device, calls), "activation_memory_mb": 0.0}

    monkeypatch.setattr(memory, "measure_peak_memory", measure)
    table = memory_vs_batch(tiny_gpt2, [1], seq_len=32, calls=1)
    assert table.loc[0, "kv_cache_mb"] > 0
    assert table.loc[0, "activation_workspace_mb"] == 0.0 and bool(table.loc[0, "activation_workspace_floored"])
    assert "floored at 0" in table.attrs["definitions"]["activation_workspace_mb"]


def test_memory_vs_batch_lets_invalid_input_through(tiny_resnet, monkeypatch):
    with pytest.raises(InvalidInputError, match="Batch size must be an integer of at least 1"):
        memory_vs_batch(tiny_resnet, [0])

    def invalid(fn, device, calls=3):
        raise InvalidInputError("the caller's mistake")

    monkeypatch.setattr(memory, "measure_peak_memory", invalid)
    with pytest.raises(InvalidInputError, match="the caller's mistake"):
        memory_vs_batch(tiny_resnet, [1], calls=1)


def test_memory_timeline_samples_rss_across_one_forward(tiny_resnet):
    table = memory_timeline(tiny_resnet, 4)
    assert set(table["metric"]) == {"rss"}
    assert len(table) >= 5
    assert table["t_ms"].is_monotonic_increasing
    assert table["increase_mb"].iloc[0] == 0
    events = table.attrs["module_events"]
    names = {(e["module"], e["event"]) for e in events}
    assert {("conv1", "enter"), ("conv1", "exit"), ("<root>", "exit")} <= names
    assert all(0 <= e["t_ms"] <= table["t_ms"].iloc[-1] for e in events)


@pytest.mark.cuda
@requires_cuda
def test_cuda_timeline_writes_a_memory_snapshot(tmp_path):
    model = infopt.load_model("resnet50", device="cuda", size="tiny")
    table = memory_timeline(model, 4, out_dir=tmp_path)
    assert {"allocated", "reserved"} <= set(table["metric"])
    assert Path(table.attrs["snapshot_path"]).stat().st_size > 0
    assert table.loc[table["metric"] == "allocated", "increase_mb"].max() > 0


def test_memory_vs_batch_records_an_oom_of_the_input_builder(tiny_resnet, monkeypatch):
    def prepare(batch_size, seq_len=None, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (inputs, simulated)")

    monkeypatch.setattr(tiny_resnet, "prepare_input", prepare)
    table = memory_vs_batch(tiny_resnet, [1, 2], calls=1)
    assert list(table["status"]) == ["oom", "skipped"] and "out of memory" in table.loc[0, "error"]
