"""The accuracy guard for detectors: detections matched by box IoU, then scores, labels and keypoints compared.

A detector's output is a set of decisions (which boxes survive the score filter, the top-k cut and NMS), so it is
compared as detections, not element-wise. Per image, reference and candidate detections of the same label are
matched one to one, greedily by IoU (highest first; a box side of zero length counts as one pixel). The
tolerance (:func:`detection_tolerance`) follows the variant's :class:`~infopt.optimize.accuracy.Tolerance`:
scores may differ by ``score_tol = max_rel_error`` (absolute, on the [0, 1] score scale) and a match needs
``IoU >= iou_min = max(0.75, 1 - 10 x max_rel_error)`` (0.75 for reduced precision, whose box coordinates are
rounded to a few pixels; 0.999 for fp32).

Like the top-1 rule of the logits guard, only *decided* detections must agree: a reference detection whose score
exceeds its image's lowest returned score by more than ``2 x score_tol`` (a variant within tolerance cannot push
it out of the top-k or under the threshold). A decided detection passes when it has a match within the IoU and
score tolerances (and keypoints within ``(1 - iou_min) x`` its box diagonal), or when the other side holds an
unmatched box of its label overlapping it at IoU >= 0.45 with a score within ``2 x score_tol`` (NMS may keep
either of two overlapping boxes whose scores are that close; from the outputs alone this cannot be told apart from
one box that moved, so for a decided detection whose score stayed within ``2 x score_tol`` the effective IoU
bound is 0.45). The check runs both ways (reference to candidate and back), so a variant can
neither lose a decided detection nor invent one; and each image's score profile (its k-th highest score
against the other side's k-th highest, whichever boxes they belong to) agrees within ``score_tol``, which
holds even where near-tied scores leave nothing decided. Columns (the logits guard's, with these meanings):

* ``top1_confident_rows``: decided detections (of both sides); ``top1_confident_agreement``: the share of them
  that passed; ``top1_agreement``: the share of all reference detections matched within tolerance.
* ``max_abs_error``: the largest score difference over matched detections; ``rel_error``: 1 - mean IoU of the
  reference detections with their match (0 for an unmatched one); ``cosine_similarity``: not defined (NaN).
"""

from __future__ import annotations

import math

import torch

from infopt.models.detection import unpack_detections

#: Overlap at which NMS may have chosen between two near-tied boxes (the lowest NMS IoU among torchvision's
#: detectors: SSD's 0.45).
NMS_OVERLAP = 0.45

DETECTION_METRIC_DEFINITION = (
    "detections matched one to one per image and label, greedily by box IoU; top1_confident_rows = decided "
    "reference detections (score above the image's lowest by > 2 x score_tol), top1_confident_agreement = share "
    "of them matched within tolerance (or excused as an NMS near-tie), both ways; top1_agreement = share of all "
    "reference detections matched; max_abs_error = largest score difference of a match; rel_error = 1 - mean IoU "
    "of reference detections with their match (0 if unmatched)"
)


def detection_tolerance(max_rel_error: float) -> tuple[float, float]:
    """``(iou_min, score_tol)`` for a variant whose tolerance allows ``max_rel_error``."""
    return max(0.75, 1.0 - 10.0 * max_rel_error), float(max_rel_error)


def _at_least_one_pixel(boxes: torch.Tensor) -> torch.Tensor:
    """Zero-width or zero-height boxes (random weights produce them) widened to one pixel, so two equal ones
    overlap fully instead of having no area at all."""
    return torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], dim=1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4), boxes as x1, y1, x2, y2 (a side of zero
    length counts as one pixel)."""
    a, b = _at_least_one_pixel(a), _at_least_one_pixel(b)
    def area(boxes: torch.Tensor) -> torch.Tensor:
        return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)

    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.where(union > 0, torch.ones_like(union)), torch.zeros_like(union))


def match(reference: dict, candidate: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-to-one greedy matching by IoU among same-label boxes.

    Returns ``(iou, partner, partner_iou)``: the IoU matrix (0 across labels), the candidate index matched to
    each reference detection (-1: none) and that pair's IoU.
    """
    iou = box_iou(reference["boxes"], candidate["boxes"])
    iou = torch.where(reference["labels"][:, None] == candidate["labels"][None, :], iou, torch.zeros_like(iou))
    partner = torch.full((iou.shape[0],), -1, dtype=torch.long)
    partner_iou = torch.zeros(iou.shape[0], dtype=iou.dtype)
    if iou.numel():
        taken = torch.zeros(iou.shape[1], dtype=torch.bool)
        values, order = iou.flatten().sort(descending=True)
        for value, flat in zip(values.tolist(), order.tolist()):
            if value <= 0:
                break
            i, j = divmod(flat, iou.shape[1])
            if partner[i] < 0 and not taken[j]:
                partner[i], partner_iou[i], taken[j] = j, value, True
    return iou, partner, partner_iou


def _decided_pass(reference: dict, candidate: dict, iou_min: float, score_tol: float) -> tuple[int, int, dict]:
    """How many of ``reference``'s decided detections there are and how many pass against ``candidate``, and
    the matching's figures (one image, one direction)."""
    iou, partner, partner_iou = match(reference, candidate)
    scores, other = reference["scores"], candidate["scores"]
    n = scores.shape[0]
    found = partner >= 0
    score_diff = torch.zeros(n, dtype=scores.dtype)
    score_diff[found] = (scores[found] - other[partner[found]]).abs()
    within = found & (partner_iou >= iou_min) & (score_diff <= score_tol)
    if "keypoints" in reference and "keypoints" in candidate and within.any():
        boxes = reference["boxes"]
        diagonal = (boxes[:, 2:] - boxes[:, :2]).norm(dim=1).clamp(min=1e-6)
        error = torch.zeros(n, dtype=scores.dtype)
        index = within.nonzero().flatten()
        moved = (reference["keypoints"][index, :, :2] - candidate["keypoints"][partner[index], :, :2]).norm(dim=2)
        error[index] = moved.mean(dim=1) / diagonal[index]
        within &= error <= (1 - iou_min)
    decided = scores > scores.min() + 2 * score_tol if n else torch.zeros(0, dtype=torch.bool)
    unmatched = torch.ones(other.shape[0], dtype=torch.bool)
    unmatched[partner[within]] = False
    near_tie = ((iou >= NMS_OVERLAP) & unmatched[None, :]
                & ((scores[:, None] - other[None, :]).abs() <= 2 * score_tol)).any(dim=1) if n else decided
    passed = decided & (within | near_tie)
    ranked = min(n, other.shape[0])  # the score profile: k-th highest score against k-th highest, whatever the box
    profile = float((scores.sort(descending=True).values[:ranked]
                     - other.sort(descending=True).values[:ranked]).abs().max()) if ranked else 0.0
    figures = {"profile_diff": profile, "matched": int(within.sum()), "count": n,
               "iou_sum": float(partner_iou[found].sum()),
               "max_score_diff": float(score_diff[found].max()) if found.any() else 0.0}
    return int(decided.sum()), int(passed.sum()), figures


def compare_detections(reference: torch.Tensor, candidate: torch.Tensor, max_rel_error: float,
                       label: str = "") -> dict:
    """Compare two packed detection outputs (see :mod:`infopt.models.detection`) under the tolerance that
    ``max_rel_error`` implies (module docstring); returns the guard's flat dict of columns."""
    iou_min, score_tol = detection_tolerance(max_rel_error)
    finite = bool(torch.isfinite(candidate).all())
    decided = passed = matched = count = 0
    iou_sum, max_diff, profile = 0.0, 0.0, 0.0
    if finite:
        ref_images, cand_images = unpack_detections(reference), unpack_detections(candidate)
        if len(ref_images) != len(cand_images):
            finite = False  # a different number of images cannot be compared: fail, said in the tolerance
        for ref, cand in zip(ref_images, cand_images):
            forward_decided, forward_passed, figures = _decided_pass(ref, cand, iou_min, score_tol)
            back_decided, back_passed, _ = _decided_pass(cand, ref, iou_min, score_tol)
            decided += forward_decided + back_decided
            passed += forward_passed + back_passed
            matched += figures["matched"]
            count += figures["count"]
            iou_sum += figures["iou_sum"]
            max_diff = max(max_diff, figures["max_score_diff"])
            profile = max(profile, figures["profile_diff"])
    regime = f"{label}: " if label else ""
    criteria = (f"{regime}detections: every decided detection (score above its image's lowest by > "
                f"{2 * score_tol:g}) matched both ways with the same label, IoU >= {iou_min:g} and |score "
                f"difference| <= {score_tol:g} (keypoints within {1 - iou_min:g} x box diagonal), or an NMS "
                f"near-tie (same label, IoU >= {NMS_OVERLAP:g}, score within {2 * score_tol:g}); each image's k-th "
                f"highest score within {score_tol:g} of the other's; all values finite")
    result = {
        "max_abs_error": max_diff if finite else math.nan,
        "rel_error": (1.0 - iou_sum / count if count else 0.0) if finite else math.nan,
        "cosine_similarity": math.nan,
        "top1_agreement": (matched / count if count else math.nan) if finite else math.nan,
        "top1_confident_agreement": passed / decided if decided else math.nan,
        "top1_confident_rows": decided,
        "accuracy_ok": bool(finite and passed == decided and profile <= score_tol),
        "accuracy_metric": DETECTION_METRIC_DEFINITION,
        "tolerance": criteria,
    }
    return result


__all__ = ["DETECTION_METRIC_DEFINITION", "NMS_OVERLAP", "box_iou", "compare_detections", "detection_tolerance",
           "match"]
