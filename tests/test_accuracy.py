"""The accuracy guard: exact on identical outputs, and it catches real differences."""

import math

import numpy as np
import pytest
import torch

from infopt.optimize.accuracy import FP32_TOLERANCE, REDUCED_TOLERANCE, Tolerance, compare_outputs
from infopt.errors import InvalidInputError


@pytest.fixture
def logits():
    return torch.randn(4, 6, 50, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("task", ["vision", "causal-lm", "encoder", None])
def test_identical_outputs_are_exact(logits, task):
    result = compare_outputs(logits, logits.clone(), task, FP32_TOLERANCE)
    assert result["cosine_similarity"] == 1.0
    assert result["max_abs_error"] == 0.0
    assert result["rel_error"] == 0.0
    assert result["accuracy_ok"] is True
    if task in ("vision", "causal-lm"):
        assert result["top1_agreement"] == 1.0
    else:
        assert math.isnan(result["top1_agreement"])
    assert "cosine" in result["accuracy_metric"] and "0.9999" in result["tolerance"]


def test_metrics_match_numpy_definitions(logits):
    noise = 0.01 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    candidate = logits + noise
    result = compare_outputs(logits, candidate, "causal-lm", REDUCED_TOLERANCE)
    ref, cand = logits.double().numpy().reshape(-1, 50), candidate.double().numpy().reshape(-1, 50)
    expected_rel = np.linalg.norm(cand - ref) / np.linalg.norm(ref)
    expected_cos = min(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(ref, cand))
    assert result["rel_error"] == pytest.approx(expected_rel, rel=1e-9)
    assert result["cosine_similarity"] == pytest.approx(expected_cos, abs=1e-12)
    assert result["max_abs_error"] == pytest.approx(np.abs(cand - ref).max(), rel=1e-9)
    assert result["top1_agreement"] == pytest.approx(np.mean(ref.argmax(1) == cand.argmax(1)))
    assert result["accuracy_ok"] is True                    # 1% noise is inside the reduced-precision tolerance
    assert compare_outputs(logits, candidate, "causal-lm", FP32_TOLERANCE)["accuracy_ok"] is False


def test_perturbed_output_is_flagged(logits):
    candidate = logits + 0.3 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    result = compare_outputs(logits, candidate, "vision", REDUCED_TOLERANCE)
    assert result["rel_error"] > 0.2
    assert result["cosine_similarity"] < 0.99
    assert result["accuracy_ok"] is False


def test_one_bad_row_is_not_averaged_away():
    reference = torch.ones(1000, 16)
    candidate = reference.clone()
    candidate[7] = -1.0                                      # one row points the other way
    result = compare_outputs(reference, candidate, "encoder", Tolerance(min_cosine=0.99, max_rel_error=1.0))
    assert result["cosine_similarity"] == pytest.approx(-1.0)
    assert result["accuracy_ok"] is False


def test_flipped_confident_decision_fails_even_within_norm_tolerances():
    reference = torch.zeros(1000, 100)
    reference[:, 0] = 10.0                                   # every row decisively picks class 0
    candidate = reference.clone()
    candidate[3, 1] = 10.5                                   # row 3 now picks class 1
    tolerance = Tolerance(min_cosine=0.5, max_rel_error=0.05)
    result = compare_outputs(reference, candidate, "vision", tolerance)
    assert result["rel_error"] < 0.05 and result["cosine_similarity"] > 0.5
    assert result["top1_confident_rows"] == 1000
    assert result["top1_confident_agreement"] == pytest.approx(999 / 1000)
    assert result["accuracy_ok"] is False
    assert compare_outputs(reference, candidate, "encoder", tolerance)["accuracy_ok"] is True  # no decision there


def test_non_finite_output_fails(logits):
    candidate = logits.clone()
    candidate[0, 0, 0] = float("nan")
    result = compare_outputs(logits, candidate, "vision")
    assert result["accuracy_ok"] is False
    assert math.isnan(result["rel_error"])


def test_low_precision_candidate_is_compared_in_float64(logits):
    result = compare_outputs(logits, logits.to(torch.bfloat16), "vision", REDUCED_TOLERANCE)
    assert 0 < result["rel_error"] < 1e-2
    assert result["accuracy_ok"] is True


def test_shape_mismatch_raises(logits):
    with pytest.raises(InvalidInputError, match="different shapes"):
        compare_outputs(logits, logits[:2])


def test_default_tolerances_by_precision_and_device():
    from infopt.optimize.accuracy import TF32_TOLERANCE, tolerance_for

    assert tolerance_for("cpu", reduced_precision=True) is REDUCED_TOLERANCE
    assert tolerance_for("cpu", reduced_precision=False) is FP32_TOLERANCE
    # The TF32 switches are properties of torch's backend modules, not plain attributes, so
    # monkeypatch cannot always undo them: read and restore them directly instead.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert tolerance_for("cuda", reduced_precision=False) is TF32_TOLERANCE    # the reference itself is TF32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        assert tolerance_for("cuda", reduced_precision=False) is FP32_TOLERANCE
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved
    assert FP32_TOLERANCE.max_rel_error < TF32_TOLERANCE.max_rel_error < REDUCED_TOLERANCE.max_rel_error


def test_comparing_block_by_block_gives_the_whole_tensor_figures(logits, monkeypatch):
    """A large output is compared in row blocks (memory); the figures must not depend on where blocks split."""
    from infopt.optimize import accuracy

    candidate = logits + 0.01 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(3))
    candidate[3, 5] = -candidate[3, 5]                       # the last row, worst cosine, in the last block
    whole = compare_outputs(logits, candidate, "causal-lm", REDUCED_TOLERANCE)
    monkeypatch.setattr(accuracy, "BLOCK_ELEMENTS", 2 * 50)  # 2 rows a block: 12 blocks
    blocks = compare_outputs(logits, candidate, "causal-lm", REDUCED_TOLERANCE)
    for key in ("rel_error", "cosine_similarity", "max_abs_error", "top1_agreement"):
        assert blocks[key] == pytest.approx(whole[key], rel=1e-12), key
    assert blocks["cosine_similarity"] == pytest.approx(-1.0, abs=1e-3) and blocks["accuracy_ok"] is False
    candidate[3, 5, 0] = float("nan")                        # a non-finite value in the last block only
    assert math.isnan(compare_outputs(logits, candidate, "causal-lm")["rel_error"])
    empty = compare_outputs(torch.zeros(0, 50), torch.zeros(0, 50), "vision")  # no rows: no figure, no pass
    assert math.isnan(empty["cosine_similarity"]) and empty["accuracy_ok"] is False
