"""Encoder-decoder ``hf:`` models (T5, BART, Whisper-style): inputs, forward, KV caches, generation, FLOPs.

Every config is tiny and written here, so nothing needs the network; every check runs in seconds on a CPU.
"""

from __future__ import annotations

import pytest
import torch

from infopt import load_model, validate_spec
from infopt.analyze.memory import kv_cache_sweep, memory_vs_batch
from infopt.errors import InvalidInputError
from infopt.measure.generation import run_generation_sweep

pytest.importorskip("transformers")
SEQ = 12


def _configs():
    from transformers import BartConfig, T5Config, WhisperConfig

    return {
        "t5": T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                       num_heads=4, architectures=["T5ForConditionalGeneration"]),
        "bart": BartConfig(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           max_position_embeddings=64),
        "whisper": WhisperConfig(vocab_size=200, d_model=32, encoder_layers=2, decoder_layers=2,
                                 encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                 decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=30,
                                 max_target_positions=64, decoder_start_token_id=199, pad_token_id=198,
                                 eos_token_id=198, bos_token_id=197),
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq")
    paths = {}
    for name, config in _configs().items():
        config.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def _seq(model):
    return SEQ if model.is_text else None


@pytest.mark.parametrize("name", ["t5", "bart", "whisper"])
def test_encoder_decoder_loads_with_inputs_and_decoder_logits(folders, name):
    assert validate_spec(f"hf:{folders[name]}") == f"hf:{folders[name]}"
    model = load_model(f"hf:{folders[name]}")
    assert model.task == "seq2seq" and model.is_encoder_decoder and not model.is_causal_lm
    assert (model.num_layers, model.encoder_layers, model.num_kv_heads, model.head_dim) == (2, 2, 4, 8)
    inputs = model.prepare_input(2, _seq(model))
    if name == "whisper":
        assert not model.is_text and tuple(inputs["input_features"].shape) == (2, 16, 60)
        with pytest.raises(InvalidInputError, match="log-mel"):
            model.prepare_input(1, 8)
    else:
        assert tuple(inputs["input_ids"].shape) == (2, SEQ) and model.tokens_per_batch(inputs) == 2 * SEQ
    assert tuple(inputs["decoder_input_ids"].shape) == (2, 4)
    assert int(inputs["decoder_input_ids"][0, 0]) == model.decoder_start_id()
    again = model.prepare_input(2, _seq(model))
    assert all(torch.equal(inputs[key], again[key]) for key in inputs)  # seeded
    logits = model.forward(inputs)
    assert tuple(logits.shape) == (2, 4, model.config.vocab_size) and torch.isfinite(logits).all()
    assert model.info(_seq(model))["flops_per_sample"] > 0


def test_tiny_size_shrinks_and_pretrained_without_weights_fails(folders, tmp_path):
    from transformers import BartConfig

    BartConfig(vocab_size=5000, d_model=256, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
               decoder_attention_heads=8, encoder_ffn_dim=1024, decoder_ffn_dim=1024).save_pretrained(tmp_path / "b")
    model = load_model(f"hf:{tmp_path / 'b'}", size="tiny")
    assert (model.hidden_size, model.num_layers, model.encoder_layers, model.num_kv_heads) == (32, 2, 2, 2)
    assert model.config.vocab_size == 1024 and "shrunk_config" in model.details
    model.forward(model.prepare_input(1, 8))
    with pytest.raises(Exception, match="[Ww]eights"):
        load_model(f"hf:{folders['t5']}", weights="pretrained")
    with pytest.raises(InvalidInputError, match="seq2seq"):
        validate_spec(f"hf:{folders['t5']}?task=causal-lm")


@pytest.mark.parametrize("name", ["t5", "bart", "whisper"])
def test_self_and_cross_attention_caches_equal_their_analytic_sizes(folders, name):
    model = load_model(f"hf:{folders[name]}")
    kv = kv_cache_sweep(model, batch_size=2, prompt_len=SEQ, new_tokens=3)
    encoder_len = SEQ if model.is_text else 30
    element = 4
    for row in kv.to_dict("records"):
        assert row["self_measured_bytes"] == 2 * 2 * 2 * row["generated_tokens"] * 4 * 8 * element
        assert row["cross_measured_bytes"] == 2 * 2 * 2 * encoder_len * 4 * 8 * element
        assert row["self_measured_over_analytic"] == 1.0 and row["cross_measured_over_analytic"] == 1.0
        assert row["cross_cache_seq_len"] == encoder_len
    assert list(kv["source"]) == ["decode loop"] * 3 + ["generate()"]
    memory = memory_vs_batch(model, [1, 2], seq_len=_seq(model), calls=1)
    assert (memory["status"] == "ok").all() and memory["kv_cache_mb"].iloc[1] > memory["kv_cache_mb"].iloc[0] > 0


@pytest.mark.parametrize("name", ["t5", "whisper"])
def test_generation_measures_ttft_and_tpot_with_and_without_cache(folders, name):
    model = load_model(f"hf:{folders[name]}")
    table = run_generation_sweep(model, prompt_lengths=[SEQ], new_tokens=3, use_cache=[True, False], repeats=1,
                                 warmup=0, measure_memory=False)
    assert list(table["status"]) == ["ok", "ok"], table["error"].tolist()
    assert (table["ttft_ms"] > 0).all() and (table["tpot_mean_ms"] > 0).all()
    assert all(len(samples) == 2 for samples in table["tpot_samples_ms"])  # N - 1 decode steps
    assert set(table["prompt_len"]) == {SEQ if model.is_text else 30}
    if model.max_decoder_len is not None:  # Whisper: 64 target positions; T5's relative positions have no limit
        with pytest.raises(InvalidInputError, match="decoder limit of 64"):
            run_generation_sweep(model, prompt_lengths=[SEQ], new_tokens=80, repeats=1)


def _text_layer_matmuls(d, inner, ff, queries, keys):
    """FLOPs of projections, attention and feed-forward of one attention + FFN block (no cross)."""
    return 2 * queries * (4 * d * inner + 2 * d * ff) + 4 * queries * keys * inner


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_encoder_and_decoder_step_flops_match_the_analytic_count(folders, name):
    model = load_model(f"hf:{folders[name]}")
    d, inner, ff, layers, vocab = 32, 32, 64, 2, 128
    encoder = layers * _text_layer_matmuls(d, inner, ff, SEQ, SEQ)
    position = 3  # the self-attention cache holds 3 positions; the step adds the 4th
    per_layer = (2 * 4 * d * inner + 4 * (position + 1) * inner  # self-attention: q, k, v, o and attention
                 + 2 * 2 * d * inner + 4 * SEQ * inner            # cross-attention: q, o (k, v cached) and attention
                 + 2 * 2 * d * ff)                                # feed-forward
    decoder = layers * per_layer + 2 * d * vocab                  # + the LM head
    assert model.encoder_flops(SEQ) == pytest.approx(encoder, rel=0.02)
    assert model.decoder_step_flops(SEQ, position) == pytest.approx(decoder, rel=0.02)


@pytest.mark.parametrize("name", ["t5", "whisper"])
def test_generation_variants_run_on_encoder_decoders_and_are_judged_by_their_continuations(folders, name):
    from infopt.optimize.generation import run_generation_variant_sweep

    model = load_model(f"hf:{folders[name]}")
    table = run_generation_variant_sweep(model, ["bf16-weights", "static-cache", "compile"], prompt_len=SEQ,
                                         new_tokens=4, repeats=1, warmup=0, paired_rounds=2).set_index("variant")
    base = table.loc["eager-fp32"]
    assert base["status"] == "ok" and base["ttft_ms"] > 0 and base["tpot_p50_ms"] > 0, base["error"]
    assert base["identical_token_share"] == 1.0 and base["first_divergence"] == 4  # 4: no divergence in 4 tokens
    bf16 = table.loc["bf16-weights"]
    assert bf16["status"] == "ok", bf16["error"]  # bf16 input features for Whisper: the variant's own casts
    assert 0 <= bf16["identical_token_share"] <= 1 and bf16["paired_rounds"] == 2
    assert isinstance(bf16["generation_tolerance"], str) and bf16["generation_tolerance"]
    # the static cache runs where transformers supports it for the architecture, else it is an error row
    # with the reason (never a crash of the sweep)
    static = table.loc["static-cache"]
    assert static["status"] == "ok" and static["identical_token_share"] == 1.0 or \
        static["status"] == "error" and static["error"]
    assert table.loc["compile", "status"] == "n/a"  # forward-only variants do not apply to the generate loop


def test_the_encoder_alone_is_timed_as_a_model_of_its_own(folders):
    from infopt.measure.benchmark import run_batch_sweep
    from infopt.measure.timing import TimingConfig

    model = load_model(f"hf:{folders['t5']}")
    encoder = model.encoder_only()
    inputs = encoder.prepare_input(2, SEQ)
    assert set(inputs) == {"input_ids", "attention_mask"}  # no decoder inputs
    assert tuple(encoder.forward(inputs).shape) == (2, SEQ, 32)  # hidden states per encoder position
    table = run_batch_sweep(encoder, [1, 2], seq_len=SEQ, timing=TimingConfig.quick(), measure_memory=False)
    assert list(table["status"]) == ["ok", "ok"] and set(table["variant"]) == {"encoder-only"}
    assert (table["latency_p50_ms"] > 0).all() and set(table["model"]) == {model.name}
