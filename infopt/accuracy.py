"""Accuracy guard: how far a variant's output is from the fp32 eager reference.

A speedup is only worth reporting next to what it costs in accuracy, so every
variant's output on the *same seeded inputs* is compared with the baseline's.

Metrics (all computed in float64 on the flattened rows of the output, where a
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

from .devices import device_kind
from .errors import InvalidInputError

#: Tasks whose output rows are class / next-token logits (argmax is a decision).
ARGMAX_TASKS = {"vision": "top-1 class", "causal-lm": "next-token argmax"}


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


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """The output as float64 rows along its last dimension."""
    tensor = tensor.detach().to("cpu", torch.float64)
    return tensor.reshape(1, -1) if tensor.dim() < 2 else tensor.reshape(-1, tensor.shape[-1])


def _row_cosines(reference: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Cosine per row as ``1 - ||a/|a| - b/|b|||^2 / 2``.

    Same value as the dot-product form, but exact for identical rows and more
    accurate close to 1, which is where the tolerance sits.
    """
    ref_norm = reference.norm(dim=1, keepdim=True)
    cand_norm = candidate.norm(dim=1, keepdim=True)
    zero = (ref_norm == 0) | (cand_norm == 0)
    unit_ref = reference / torch.where(zero, torch.ones_like(ref_norm), ref_norm)
    unit_cand = candidate / torch.where(zero, torch.ones_like(cand_norm), cand_norm)
    cosines = (1 - 0.5 * (unit_ref - unit_cand).pow(2).sum(dim=1)).clamp(-1.0, 1.0)
    # A zero row only agrees with a zero row; the formula above would say 0.5.
    both_equal = torch.all(reference == candidate, dim=1)
    return torch.where(zero.squeeze(1), both_equal.to(torch.float64), cosines)


def compare_outputs(reference: torch.Tensor, candidate: torch.Tensor, task: str | None = None,
                    tolerance: Tolerance = REDUCED_TOLERANCE) -> dict:
    """Compare ``candidate`` with ``reference`` and say whether it is within ``tolerance``.

    ``task`` is the model's task (``"vision"``, ``"causal-lm"``, ``"encoder"``):
    for the first two the argmax agreement is added. Returns a flat dict ready
    to become DataFrame columns (see the module docstring for definitions).
    """
    if tuple(reference.shape) != tuple(candidate.shape):
        raise InvalidInputError(
            f"Cannot compare outputs of different shapes: reference {tuple(reference.shape)}, "
            f"candidate {tuple(candidate.shape)}."
        )
    ref, cand = _rows(reference), _rows(candidate)
    finite = bool(torch.isfinite(cand).all())
    diff = cand - ref
    ref_norm = float(ref.norm())
    result = {
        "max_abs_error": float(diff.abs().max()) if diff.numel() else 0.0,
        "rel_error": float(diff.norm()) / ref_norm if ref_norm > 0 else (0.0 if float(diff.norm()) == 0 else math.inf),
        "cosine_similarity": float(_row_cosines(ref, cand).min()) if finite else math.nan,
        "top1_agreement": math.nan,
        "top1_confident_agreement": math.nan,
        "top1_confident_rows": 0,
    }
    if not finite:
        result["max_abs_error"] = result["rel_error"] = math.nan
    criteria = f"{tolerance.describe()}; all values finite"
    confident_ok = True
    if task in ARGMAX_TASKS and ref.shape[1] > 1:
        agree = ref.argmax(dim=1) == cand.argmax(dim=1)
        result["top1_agreement"] = float(agree.double().mean())
        top2 = ref.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
        confident = margin > 2 * tolerance.max_rel_error * ref.norm(dim=1)
        result["top1_confident_rows"] = int(confident.sum())
        if confident.any():
            result["top1_confident_agreement"] = float(agree[confident].double().mean())
            confident_ok = bool(agree[confident].all())
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
