"""Accuracy guard: how far a variant's output is from the fp32 eager reference.

A speedup is only worth reporting next to what it costs in accuracy, so every
variant's output on the *same seeded inputs* is compared with the baseline's.

Metrics (all computed in float64, block by block, on the flattened rows of the output, where a
row is one vector along the last dimension: one image's logits, one token
position's logits, one token's hidden state):

- ``max_abs_error``: largest ``|candidate - reference|`` over all elements.
- ``rel_error``: ``||candidate - reference||_2 / ||reference||_2`` over the
  whole tensor.
- ``cosine_similarity``: the *worst* (minimum) cosine similarity over rows,
  so one bad row cannot hide behind an average.
- ``top1_agreement`` (vision logits; next-token logits of a causal LM): the
  fraction of rows whose argmax is unchanged. With random weights logits are
  nearly uniform and ties flip under any rounding, so this raw figure is
  informational. The pass criterion uses ``top1_confident_agreement``: the
  agreement over the ``top1_confident_rows`` whose reference top-1 margin is
  larger than twice the error the tolerance allows for that row
  (``2 * max_rel_error * ||reference row||``). A variant within tolerance
  cannot flip such a row, so any flip there is a real failure.

``accuracy_ok`` is True when cosine >= ``min_cosine``, rel_error <=
``max_rel_error``, every value is finite and no confident row flipped.
Default tolerances (:func:`tolerance_for`): reduced precision (bf16, fp16,
int8) cosine >= 0.99 and rel_error <= 5e-2; fp32 variants cosine >= 0.9999
and rel_error <= 1e-4, loosened to 1e-3 on CUDA while TF32 is allowed (the
reference itself then runs at TF32).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from infopt.devices import device_kind
from infopt.errors import InvalidInputError
from infopt.models.base import ARGMAX_TASKS  # tasks whose output rows are logits (argmax is a decision)
from infopt.optimize.detection_accuracy import compare_detections


@dataclass(frozen=True)
class Tolerance:
    """Pass thresholds for one comparison; ``label`` names the regime."""

    min_cosine: float
    max_rel_error: float
    label: str = ""

    def describe(self) -> str:
        rule = f"worst-row cosine >= {self.min_cosine:g}, rel_error <= {self.max_rel_error:g}"
        return f"{self.label}: {rule}" if self.label else rule

    def as_dict(self) -> dict:
        return asdict(self)


#: Variants that keep fp32 arithmetic (layout changes, compilation, attention kernels).
FP32_TOLERANCE = Tolerance(min_cosine=0.9999, max_rel_error=1e-4, label="fp32")
#: fp32 variants on CUDA while TF32 is allowed: the reference itself then runs convolutions
#: (cuDNN's default) or matmuls in TF32 (10-bit mantissa), and two TF32 algorithms differ by ~1e-4.
TF32_TOLERANCE = Tolerance(min_cosine=0.9999, max_rel_error=1e-3, label="fp32 with TF32 allowed (CUDA)")
#: Variants that lower precision (bf16, fp16, int8).
REDUCED_TOLERANCE = Tolerance(min_cosine=0.99, max_rel_error=5e-2, label="reduced precision")


def tolerance_for(device: str | torch.device, reduced_precision: bool) -> Tolerance:
    """The default tolerance for a variant: reduced precision, TF32-era CUDA fp32, or strict fp32."""
    if reduced_precision:
        return REDUCED_TOLERANCE
    if device_kind(device) == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32):
        return TF32_TOLERANCE
    return FP32_TOLERANCE

METRIC_DEFINITION = (
    "rel_error = ||out - ref||_2 / ||ref||_2 over the whole output; cosine_similarity = worst row "
    "(last-dim vector) cosine vs the fp32 eager reference on the same seeded inputs; "
    "max_abs_error = max |out - ref|"
)


#: Elements per block of rows compared at once. A gpt2 batch's logits (8 x 128 x 50257 values) compared as whole
#: float64 tensors made every temporary 0.4 GB: 1.4 s per comparison, about 30 s of a default optimize notebook
#: (one per variant and batch size). In blocks, with fewer passes: 0.45 s (2-core AMD EPYC, 2026-12-07).
BLOCK_ELEMENTS = 1 << 20


def _row_blocks(tensor: torch.Tensor):
    """The output as rows along its last dimension, and how many rows make a block of about
    :data:`BLOCK_ELEMENTS` elements (each block is converted to float64 only when it is compared)."""
    tensor = tensor.detach().to("cpu")
    rows = tensor.reshape(1, -1) if tensor.dim() < 2 else tensor.reshape(-1, tensor.shape[-1])
    step = max(1, BLOCK_ELEMENTS // max(1, rows.shape[1]))
    return rows, step


def _row_cosines(reference: torch.Tensor, candidate: torch.Tensor, ref_norm: torch.Tensor) -> torch.Tensor:
    """Cosine per row as ``1 - ||a/|a| - b/|b|||^2 / 2`` (``ref_norm``: the reference rows' norms, one column).

    Same value as the dot-product form, but exact for identical rows and more
    accurate close to 1, which is where the tolerance sits.
    """
    cand_norm = torch.linalg.vector_norm(candidate, dim=1, keepdim=True)
    zero = (ref_norm == 0) | (cand_norm == 0)
    gap = reference / torch.where(zero, torch.ones_like(ref_norm), ref_norm)
    gap.sub_(candidate / torch.where(zero, torch.ones_like(cand_norm), cand_norm))
    cosines = (1 - 0.5 * torch.linalg.vector_norm(gap, dim=1).pow(2)).clamp(-1.0, 1.0)
    # A zero row only agrees with a zero row; the formula above would say 0.5.
    if bool(zero.any()):
        both_equal = torch.all(reference == candidate, dim=1)
        cosines = torch.where(zero.squeeze(1), both_equal.to(torch.float64), cosines)
    return cosines


def _block_sums(reference: torch.Tensor, candidate: torch.Tensor, tolerance: "Tolerance", argmax: bool) -> dict:
    """Every metric's running parts over the row blocks: sums of squares, extremes, argmax counts."""
    ref_rows, step = _row_blocks(reference)
    cand_rows, _ = _row_blocks(candidate)
    sums = {"finite": True, "max_abs": 0.0, "diff_sq": 0.0, "ref_sq": 0.0, "min_cosine": math.inf,
            "rows": 0, "agree": 0, "confident": 0, "confident_agree": 0}
    for start in range(0, ref_rows.shape[0], step):
        ref = ref_rows[start:start + step].to(torch.float64)
        cand = cand_rows[start:start + step].to(torch.float64)
        if not bool(torch.isfinite(cand).all()):
            sums["finite"] = False
            return sums
        diff = (cand - ref).flatten()
        if diff.numel():
            sums["max_abs"] = max(sums["max_abs"], float(diff.abs_().max()))
        sums["diff_sq"] += float(torch.dot(diff, diff))
        del diff
        ref_norm = torch.linalg.vector_norm(ref, dim=1, keepdim=True)  # once: the cosines and the margins use it
        sums["ref_sq"] += float(ref_norm.pow(2).sum())
        sums["min_cosine"] = min(sums["min_cosine"], float(_row_cosines(ref, cand, ref_norm).min()))
        sums["rows"] += ref.shape[0]
        if argmax:
            agree = ref.argmax(dim=1) == cand.argmax(dim=1)
            top2 = ref.topk(2, dim=1).values
            confident = (top2[:, 0] - top2[:, 1]) > 2 * tolerance.max_rel_error * ref_norm.squeeze(1)
            sums["agree"] += int(agree.sum())
            sums["confident"] += int(confident.sum())
            sums["confident_agree"] += int(agree[confident].sum())
    return sums


def compare_outputs(reference: torch.Tensor, candidate: torch.Tensor, task: str | None = None,
                    tolerance: Tolerance = REDUCED_TOLERANCE) -> dict:
    """Compare ``candidate`` with ``reference`` and say whether it is within ``tolerance``.

    ``task`` is the model's task (``"vision"``, ``"causal-lm"``, ``"encoder"``):
    for the first two the argmax agreement is added; ``"detection"`` outputs are
    matched by box IoU instead (:mod:`infopt.optimize.detection_accuracy`). Returns a flat dict ready
    to become DataFrame columns (see the module docstring for definitions).
    """
    if tuple(reference.shape) != tuple(candidate.shape):
        raise InvalidInputError(
            f"Cannot compare outputs of different shapes: reference {tuple(reference.shape)}, "
            f"candidate {tuple(candidate.shape)}."
        )
    if task == "detection":  # a set of decisions: matched by box IoU, not compared element-wise
        return compare_detections(reference, candidate, tolerance.max_rel_error, tolerance.label)
    argmax = task in ARGMAX_TASKS and reference.dim() > 0 and reference.shape[-1] > 1
    sums = _block_sums(reference, candidate, tolerance, argmax)
    finite = sums["finite"]
    ref_norm, diff_norm = math.sqrt(sums["ref_sq"]), math.sqrt(sums["diff_sq"])
    result = {
        "max_abs_error": sums["max_abs"],
        "rel_error": diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else math.inf),
        "cosine_similarity": sums["min_cosine"] if finite and sums["rows"] else math.nan,
        "top1_agreement": math.nan,
        "top1_confident_agreement": math.nan,
        "top1_confident_rows": 0,
    }
    if not finite:
        result["max_abs_error"] = result["rel_error"] = math.nan
    criteria = f"{tolerance.describe()}; all values finite"
    confident_ok = True
    if argmax and finite and sums["rows"]:
        result["top1_agreement"] = sums["agree"] / sums["rows"]
        result["top1_confident_rows"] = sums["confident"]
        if sums["confident"]:
            result["top1_confident_agreement"] = sums["confident_agree"] / sums["confident"]
            confident_ok = sums["confident_agree"] == sums["confident"]
    if argmax:
        criteria += (f"; {ARGMAX_TASKS[task]} unchanged on rows whose reference margin > "
                     f"2 x {tolerance.max_rel_error:g} x row norm")
    result["accuracy_ok"] = bool(
        finite
        and result["cosine_similarity"] >= tolerance.min_cosine
        and result["rel_error"] <= tolerance.max_rel_error
        and confident_ok
    )
    result["accuracy_metric"] = METRIC_DEFINITION
    result["tolerance"] = criteria
    return result


# -- generation ------------------------------------------------------------------
GENERATION_METRIC_DEFINITION = (
    "greedy continuation vs the fp32 eager reference on the same prompts: first_divergence = first generated "
    "position (0-based) where any batch row differs (new_tokens if none); identical_token_share = share of "
    "generated (row, position) tokens equal to the reference's; prefill_rel_error = rel_error of the prompt's "
    "logits"
)


def compare_generation(reference_ids: torch.Tensor, candidate_ids: torch.Tensor, prompt_len: int, *,
                       reference_scores: list[torch.Tensor] | None = None,
                       reference_prefill: torch.Tensor | None = None, candidate_prefill: torch.Tensor | None = None,
                       tolerance: Tolerance = REDUCED_TOLERANCE) -> dict:
    """Greedy continuation agreement with the reference, and the prefill logits' error (flat dict).

    Tolerance, stated in ``generation_tolerance``: the prefill logits pass
    :func:`compare_outputs` under ``tolerance``, and no row diverges at a step
    where the reference was *confident*: its top-1 logit led the token the
    candidate chose by more than ``2 x max_rel_error x`` the step's logit-row
    norm (the confident-row rule of :func:`compare_outputs`). A divergence
    after a near-tie is allowed (any rounding may flip it, and from there the
    two continuations see different contexts); one after a clear lead is a
    failure. ``reference_scores`` are the reference's per-step logits
    (``generate(output_scores=True)``); without them every divergence fails.
    """
    if reference_ids.shape != candidate_ids.shape:
        raise InvalidInputError(f"Cannot compare generations of different shapes: reference "
                                f"{tuple(reference_ids.shape)}, candidate {tuple(candidate_ids.shape)}.")
    if not 0 <= prompt_len < reference_ids.shape[1]:
        raise InvalidInputError(f"prompt_len {prompt_len} leaves no generated tokens in sequences of length "
                                f"{reference_ids.shape[1]}.")
    ref = reference_ids[:, prompt_len:].cpu()
    cand = candidate_ids[:, prompt_len:].cpu()
    new_tokens = ref.shape[1]
    same = ref == cand
    differs = ~same
    first_per_row = [int(row.nonzero()[0]) if row.any() else None for row in differs]
    divergences = [pos for pos in first_per_row if pos is not None]
    confident_divergence = False
    for row, pos in enumerate(first_per_row):
        if pos is None:
            continue
        if reference_scores is None:
            confident_divergence = True
            break
        scores = reference_scores[pos][row].detach().to("cpu", torch.float64)
        margin = float(scores[ref[row, pos]] - scores[cand[row, pos]])
        if margin > 2 * tolerance.max_rel_error * float(scores.norm()):
            confident_divergence = True
    result = {
        "first_divergence": min(divergences) if divergences else new_tokens,
        "identical_token_share": float(same.double().mean()),
        "rows_diverged": len(divergences),
        "confident_divergence": confident_divergence,
        "prefill_rel_error": math.nan, "prefill_cosine_similarity": math.nan,
    }
    prefill_ok = True
    criteria = "no divergence where the reference's top-1 led the chosen token by > 2 x "\
               f"{tolerance.max_rel_error:g} x logit-row norm"
    if reference_prefill is not None and candidate_prefill is not None:
        prefill = compare_outputs(reference_prefill, candidate_prefill, "causal-lm", tolerance)
        result["prefill_rel_error"] = prefill["rel_error"]
        result["prefill_cosine_similarity"] = prefill["cosine_similarity"]
        prefill_ok = prefill["accuracy_ok"]
        criteria = f"prefill logits: {prefill['tolerance']}; continuation: {criteria}"
    result["generation_accuracy_ok"] = bool(prefill_ok and not confident_divergence)
    result["generation_tolerance"] = criteria
    result["generation_metric"] = GENERATION_METRIC_DEFINITION
    return result
