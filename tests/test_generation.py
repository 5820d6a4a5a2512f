"""Generation metrics (TTFT, TPOT, decode rate) on a tiny GPT-2, timed inside generate."""

import numpy as np
import pytest
import torch

import infopt
from infopt.measure.benchmark import run_generation_sweep
from infopt.errors import InvalidInputError
from infopt.measure.generation import GENERATION_COLUMNS, generate_once
from infopt.measure.timing import thread_count

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NEW_TOKENS = 6
REPEATS = 2


@pytest.fixture(scope="module")
def gpt2():
    return infopt.load_model("gpt2", size="tiny")


@pytest.fixture(scope="module")
def sweep(gpt2):
    return run_generation_sweep(gpt2, prompt_lengths=[8, 16], batch_sizes=[1, 2], new_tokens=NEW_TOKENS,
                                use_cache=[True, False], repeats=REPEATS, warmup=1, num_threads=1)


def test_sweep_has_one_complete_row_per_point(sweep):
    required = {"model", "device", "variant", "batch_size", "prompt_len", "new_tokens", "use_cache", "status",
                "ttft_ms", "tpot_mean_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms", "decode_tokens_per_s",
                "e2e_ms", "peak_memory_mb"}
    assert required <= set(sweep.columns) and list(sweep.columns) == list(GENERATION_COLUMNS)
    assert len(sweep) == 8 and (sweep["status"] == "ok").all(), sweep[["status", "error"]]
    points = set(zip(sweep["use_cache"], sweep["batch_size"], sweep["prompt_len"]))
    assert points == {(c, b, p) for c in (True, False) for b in (1, 2) for p in (8, 16)}
    assert (sweep["model"] == "gpt2").all() and (sweep["new_tokens"] == NEW_TOKENS).all()
    assert sweep["interference"].isin([True, False]).all()  # measured around each point's timed generate calls
    assert sweep["interference_detail"].str.contains("CPU cores").all()


def test_metrics_are_positive_and_consistent(sweep):
    for row in sweep.itertuples():
        assert row.ttft_ms > 0 and row.tpot_mean_ms > 0 and row.e2e_ms > 0
        assert len(row.tpot_samples_ms) == REPEATS * (NEW_TOKENS - 1)
        assert len(row.ttft_samples_ms) == len(row.e2e_samples_ms) == REPEATS
        assert row.tpot_mean_ms == pytest.approx(np.mean(row.tpot_samples_ms))
        assert row.tpot_p50_ms <= row.tpot_p90_ms <= row.tpot_p99_ms
        # Definition: batch x decoded tokens / decode time == batch x 1000 / mean TPOT.
        decoded = row.batch_size * len(row.tpot_samples_ms)
        assert row.decode_tokens_per_s == pytest.approx(decoded / (sum(row.tpot_samples_ms) / 1000), rel=1e-9)
        assert row.decode_tokens_per_s == pytest.approx(row.batch_size * 1000 / row.tpot_mean_ms, rel=1e-9)
        # Each run: prefill plus every decode step fits inside the end-to-end time.
        gaps = np.array(row.tpot_samples_ms).reshape(REPEATS, NEW_TOKENS - 1)
        for ttft, steps, e2e in zip(row.ttft_samples_ms, gaps, row.e2e_samples_ms):
            assert ttft + steps.sum() <= e2e + 1e-6
        assert row.peak_memory_mb > 0 and row.memory_method == "cpu-rss-sampled"


def test_output_length_is_forced_even_when_eos_is_the_greedy_choice(gpt2):
    inputs = gpt2.prepare_input(1, 8)
    with torch.inference_mode():
        first = int(gpt2.module(**inputs).logits[0, -1].argmax())
    original = gpt2.module.config.eos_token_id
    gpt2.module.config.eos_token_id = first  # greedy decoding would now stop after one token
    try:
        with torch.inference_mode(), thread_count(1):
            run = generate_once(gpt2, inputs, new_tokens=5)
    finally:
        gpt2.module.config.eos_token_id = original
    assert len(run["tpot_ms"]) == 4 and run["ttft_ms"] > 0


def test_limits_are_checked_up_front(gpt2):
    with pytest.raises(InvalidInputError, match="1024"):
        run_generation_sweep(gpt2, prompt_lengths=[1000], new_tokens=64)
    with pytest.raises(InvalidInputError):
        run_generation_sweep(gpt2, prompt_lengths=[8], new_tokens=1)
    with pytest.raises(InvalidInputError):
        run_generation_sweep(gpt2, prompt_lengths=[8], batch_sizes=[0], new_tokens=4)
    with pytest.raises(InvalidInputError, match="causal"):
        run_generation_sweep(infopt.load_model("distilbert", size="tiny"), prompt_lengths=[8], new_tokens=4)


def test_simulated_oom_skips_larger_points(gpt2, monkeypatch):
    real_generate = gpt2.module.generate

    def generate(*args, **kwargs):
        if kwargs["input_ids"].shape[0] >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(gpt2.module, "generate", generate)
    df = run_generation_sweep(gpt2, prompt_lengths=[4, 8], batch_sizes=[1, 2, 4], new_tokens=3, repeats=1,
                              warmup=0, num_threads=1, measure_memory=False)
    status = {(row.batch_size, row.prompt_len): row.status for row in df.itertuples()}
    assert status == {(1, 4): "ok", (1, 8): "ok", (2, 4): "oom", (2, 8): "skipped", (4, 4): "skipped",
                      (4, 8): "skipped"}
    assert "out of memory" in df.loc[df["status"] == "oom", "error"].iloc[0]


@pytest.mark.cuda
@needs_cuda
def test_cuda_generation_uses_events():
    model = infopt.load_model("gpt2", device="cuda", size="tiny")
    df = run_generation_sweep(model, prompt_lengths=[16], new_tokens=8, repeats=2)
    row = df.iloc[0]
    assert row["status"] == "ok" and row["ttft_ms"] > 0 and row["tpot_mean_ms"] > 0
    assert row["memory_method"] == "cuda-max-allocated"
