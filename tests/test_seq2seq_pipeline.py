"""A tiny T5 folder through the quick pipeline (benchmark, profile, memory, report): generation rows, the self-
and cross-attention caches against their analytic sizes, and the encoder / decoder profile groups.

Optimize and serve run in the hand check of docs/models.md; here only the notebooks that gained encoder-decoder
sections run, to keep the wall time short.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from _quick_pipeline import run_quick_models

pytest.importorskip("transformers")
NOTEBOOKS = ("benchmark", "profile", "memory")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from transformers import T5Config

    root = tmp_path_factory.mktemp("t5-pipeline")
    T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
             architectures=["T5ForConditionalGeneration"]).save_pretrained(root / "t5")
    run_dir = run_quick_models(root, [f"hf:{root / 't5'}"], NOTEBOOKS, "s2s", timeout=600)
    return run_dir, run_dir / "cpu" / "hf-t5"


def _csv(folder, kind):
    return pd.read_csv(next(folder.glob(f"*_cpu_{kind}.csv")))


def test_every_notebook_succeeded(run):
    manifest = json.loads((run[0] / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert {e["key"].rsplit("/", 1)[-1]: e["status"] for e in manifest["notebooks"]} == \
        dict.fromkeys((*NOTEBOOKS, "report"), "succeeded")


def test_generation_rows_with_and_without_cache_and_the_cross_cache_in_the_floor(run):
    gen = _csv(run[1], "generation")
    assert set(gen["use_cache"]) == {True, False} and (gen["status"] == "ok").all()
    assert (gen["ttft_ms"] > 0).all() and (gen["tpot_p50_ms"] > 0).all()
    cached = gen[gen["use_cache"]]
    kv = _csv(run[1], "kv_cache")  # one position of the self-attention cache, from its analytic size
    per_token = (kv["self_analytic_bytes"] / kv["cache_seq_len"] / kv["batch_size"]).iloc[0]
    expected = cached["batch_size"] * (1 + cached["new_tokens"] / 2 + cached["prompt_len"]) * per_token
    assert (cached["floor_kv_bytes_per_step"] == expected).all()  # self cache from the start token + cross cache
    assert (gen.loc[~gen["use_cache"], "floor_kv_bytes_per_step"] == 0).all()


def test_self_and_cross_cache_each_equal_their_analytic_size(run):
    kv = _csv(run[1], "kv_cache")
    assert len(kv) >= 2
    assert (kv["self_measured_bytes"] == kv["self_analytic_bytes"]).all()
    assert (kv["cross_measured_bytes"] == kv["cross_analytic_bytes"]).all()
    assert kv["cross_cache_seq_len"].nunique() == 1 and kv["cache_seq_len"].is_monotonic_increasing
    notebook = (run[1] / "memory.ipynb").read_text()
    assert "cross-attention" in notebook and "self-attention" in notebook  # the split table was displayed


def test_profile_groups_encoder_and_decoder_modules(run):
    modules = _csv(run[1], "profile_modules")
    stacks = dict(zip(modules["module"], modules["stack"]))
    assert stacks["encoder"] == "encoder" and stacks["decoder"] == "decoder" and stacks["<root>"] == "shared"
    assert all(stacks[m] == "encoder" for m in stacks if m.startswith("encoder."))
    assert all(stacks[m] == "decoder" for m in stacks if m.startswith("decoder."))
    assert modules.loc[modules["stack"] == "decoder", "self_cpu_ms"].sum() > 0


def test_the_benchmark_times_the_encoder_alone_beside_the_full_forward(run):
    encoder, full = _csv(run[1], "encoder_latency"), _csv(run[1], "results")
    assert (encoder["status"] == "ok").all() and set(encoder["variant"]) == {"encoder-only"}
    assert list(encoder["batch_size"]) == list(full["batch_size"])
    assert (encoder["latency_p50_ms"] > 0).all()
