"""``torchvision:<detector>``: torchvision's detection and keypoint models (Faster / Mask / Keypoint R-CNN,
RetinaNet, FCOS, SSD, SSDlite) behind the one model interface.

Inputs are ``{"images": (batch, 3, S, S)}``: seeded synthetic scenes in ``[0, 1]`` (a dim noise background and a
few filled rectangles of random colour), ``S`` the model's own input size (its transform's ``min_size``, or
SSD's fixed size: 320 for ``fasterrcnn_mobilenet_v3_large_320_fpn`` and SSDlite, 300 for SSD300, 800 for the
others; ``?image_size=`` overrides it). The model receives them as the list of images torchvision detectors take
and runs its own pre-processing (``transform``: normalize, resize, batch) and post-processing (box decoding,
score filter, NMS, boxes scaled back) inside the timed forward, as in deployment.

Output: torchvision's list of ``{"boxes", "scores", "labels"(, "keypoints")}`` dicts, packed into one tensor
``(batch, max_detections, columns)`` so that every analysis (and a batch split per request) handles it like any
output: columns ``x1, y1, x2, y2, score, label`` then ``x, y, score`` per keypoint (Keypoint R-CNN); rows past an
image's detections are padding with label ``-1``. :func:`unpack_detections` gives the dicts back. Mask R-CNN's
masks are computed (and timed) but not part of the packed output, so the accuracy guard compares its boxes.

Deterministic, non-empty outputs with random weights: the score threshold is 0 (every image returns the
model's ``detections_per_img``, the published cap; the postprocess then sees every candidate, an upper bound on
its time compared with a trained model's default threshold), and the seeded random weights get their BatchNorm
statistics from one pass over seeded scenes (without it, activations of a random backbone with identity
BatchNorm shrink layer after layer until every box scores the same, and the output no longer depends on the
image). ``size="tiny"`` (quick runs): 160-pixel images (SSD keeps its fixed size, which its extra layers need),
at most 100 proposals / candidates and 50 detections per image.

Variants (:meth:`DetectionModel.variant_reason`): bf16 / fp16 autocast (torchvision runs RoIAlign and NMS in fp32
under autocast), channels-last (the transform batches the images into a new NCHW tensor; the first convolution's
channels-last weights turn the backbone and heads NHWC from there) and ``torch.compile`` (graph breaks at the
data-dependent operators, ``nonzero`` and NMS; the parts after them are compiled for the shapes the seeded inputs
give). Weight casts, int8 / torchao quantization, ONNX Runtime and CUDA graphs are ``n/a`` with the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from infopt.determinism import seed_everything
from infopt.errors import InvalidInputError
from infopt.models.base import Inputs, ModelWrapper
from infopt.models.specs import ModelSpec
from infopt.models.weights import load_torchvision_weights, load_weights_file

#: Columns of one packed detection row (keypoint models add ``x, y, score`` per keypoint).
BOX_COLUMNS = ("x1", "y1", "x2", "y2", "score", "label")
#: Label of a padding row (an image with fewer detections than the fixed count).
PAD_LABEL = -1
#: ``size="tiny"``: image side, and caps on proposals / candidates and on detections per image.
TINY_IMAGE_SIZE = 160
TINY_PROPOSALS = 100
TINY_DETECTIONS = 50
#: What ``size="tiny"`` means for a detector (the run manifest's note).
TINY_NOTE = (f"detector: {TINY_IMAGE_SIZE}-pixel images (SSD keeps its fixed size), at most {TINY_PROPOSALS} "
             f"proposals / candidates and {TINY_DETECTIONS} detections per image (smoke test only)")
#: Scenes the BatchNorm statistics of random weights are computed on (seed, count).
CALIBRATION_SEED = 1234
CALIBRATION_IMAGES = 2
#: Name prefix -> family: which builder keywords set the score threshold, caps and stages.
FAMILIES = {"fasterrcnn": "rcnn", "maskrcnn": "rcnn", "keypointrcnn": "rcnn", "retinanet": "one-stage",
            "fcos": "one-stage", "ssd": "one-stage"}

RCNN_STAGES = (
    ("transform", ("transform",), "normalize, resize and batch the images (GeneralizedRCNNTransform)"),
    ("backbone", ("backbone",), "features (body + FPN)"),
    ("rpn", ("rpn",), "region proposals: head, anchors, box decoding, NMS"),
    ("roi_heads", ("roi_heads",), "RoIAlign, box head, per-class NMS and top-k (postprocess_detections)"),
    ("postprocess", (), "boxes scaled back to the input size (transform.postprocess)"),
)
ONE_STAGE_STAGES = (
    ("transform", ("transform",), "normalize, resize and batch the images (GeneralizedRCNNTransform)"),
    ("backbone", ("backbone",), "features"),
    ("head", ("head",), "classification and box-regression heads"),
    ("anchors", ("anchor_generator",), "anchors for the feature maps"),
    ("postprocess", (), "box decoding, score filter, top-k, NMS, boxes scaled back (postprocess_detections, "
                        "transform.postprocess)"),
)


def is_detection(name: str) -> bool:
    """Whether ``name`` is one of torchvision's detection (incl. keypoint and instance-segmentation) models."""
    import torchvision.models as tv

    return name in tv.list_models(module=tv.detection)


def family(name: str) -> str:
    """``rcnn`` or ``one-stage``; a detector the lab does not know yet is one sentence."""
    for prefix, kind in FAMILIES.items():
        if name.startswith(prefix):
            return kind
    raise InvalidInputError(f"torchvision:{name} is a detection model of a family the lab does not know yet "
                            f"(known: {', '.join(FAMILIES)}).")


def builder_arguments(name: str, tiny: bool) -> dict:
    """Score threshold 0 (a full, deterministic set of detections), no pretrained-backbone download, and the
    tiny caps; through the builders' public keywords."""
    if family(name) == "rcnn":
        arguments: dict = {"box_score_thresh": 0.0}
        if tiny:
            arguments.update(rpn_pre_nms_top_n_test=TINY_PROPOSALS, rpn_post_nms_top_n_test=TINY_PROPOSALS,
                             box_detections_per_img=TINY_DETECTIONS)
    else:
        arguments = {"score_thresh": 0.0}
        if tiny:
            arguments.update(topk_candidates=TINY_PROPOSALS, detections_per_img=TINY_DETECTIONS)
    return {"weights_backbone": None, **arguments}


def input_size(module: nn.Module) -> int:
    """The square image side the model's transform keeps as is (SSD's fixed size, else ``min_size``)."""
    transform = module.transform
    fixed = getattr(transform, "fixed_size", None)
    return int(fixed[0]) if fixed else int(transform.min_size[-1])


def set_input_size(module: nn.Module, size: int) -> None:
    """Make the model's transform keep ``size x size`` images as they are (no resize to another size)."""
    transform = module.transform
    transform.min_size, transform.max_size = (size,), size
    if getattr(transform, "fixed_size", None):
        transform.fixed_size = (size, size)


def max_detections(module: nn.Module) -> int:
    """Detections per image the model returns at most (the packed output's row count)."""
    heads = getattr(module, "roi_heads", None)
    return int(heads.detections_per_img if heads is not None else module.detections_per_img)


def num_keypoints(module: nn.Module) -> int:
    """Keypoints per detection (Keypoint R-CNN), else 0."""
    predictor = getattr(getattr(module, "roi_heads", None), "keypoint_predictor", None)
    return int(predictor.kps_score_lowres.out_channels) if predictor is not None else 0


def synthetic_scenes(batch_size: int, size: int, generator: torch.Generator, rectangles: int = 6) -> torch.Tensor:
    """``(batch, 3, size, size)`` scenes in ``[0, 1]``: dim noise and ``rectangles`` filled boxes of random colour."""
    images = 0.2 * torch.rand(batch_size, 3, size, size, generator=generator)
    for image in images:
        corners = (torch.rand(rectangles, 2, generator=generator) * 0.8 * size).long()
        sides = (torch.rand(rectangles, 2, generator=generator) * 0.5 * size + 0.1 * size).long()
        colours = torch.rand(rectangles, 3, 1, 1, generator=generator)
        for (x, y), (w, h), colour in zip(corners.tolist(), sides.tolist(), colours):
            image[:, y:y + h, x:x + w] = colour
    return images


def calibrate_batch_norm(module: nn.Module, images: torch.Tensor) -> int:
    """Set every BatchNorm's statistics to those of one pass over ``images``; returns how many layers.

    Only the BatchNorm layers run in training mode (batch statistics, cumulative average); the model stays in
    eval mode, so no targets are needed and nothing else changes.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        with torch.no_grad():
            module(list(images))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
            norm.eval()
    return len(norms)


def pack_detections(detections: list[dict], rows: int, keypoints: int) -> torch.Tensor:
    """torchvision's per-image dicts as one float32 tensor ``(images, rows, 6 + 3 x keypoints)``."""
    packed = []
    for found in detections:
        parts = [found["boxes"].float(), found["scores"].float()[:, None], found["labels"].float()[:, None]]
        if keypoints:  # x, y, score per keypoint, interleaved
            points, scores = found["keypoints"].float()[..., :2], found["keypoints_scores"].float()[..., None]
            parts.append(torch.cat([points, scores], dim=2).flatten(1))
        table = torch.cat(parts, dim=1)
        table = table[:rows]
        pad = table.new_zeros(rows - table.shape[0], table.shape[1])
        pad[:, 5] = PAD_LABEL
        packed.append(torch.cat([table, pad]))
    return torch.stack(packed)


def unpack_detections(output: torch.Tensor) -> list[dict]:
    """The packed output back as per-image dicts of ``boxes``, ``scores``, ``labels`` (and ``keypoints``
    ``(n, K, 3)`` as x, y, score), padding rows dropped, on the CPU in float64 (labels int64)."""
    if output.dim() != 3 or output.shape[-1] < len(BOX_COLUMNS) or (output.shape[-1] - 6) % 3:
        raise InvalidInputError(f"A packed detection output is (batch, detections, 6 + 3 x keypoints), "
                                f"got shape {tuple(output.shape)}.")
    images = []
    for table in output.detach().to("cpu", torch.float64):
        table = table[table[:, 5] != PAD_LABEL]
        found = {"boxes": table[:, :4], "scores": table[:, 4], "labels": table[:, 5].round().long()}
        if table.shape[1] > 6:
            found["keypoints"] = table[:, 6:].reshape(table.shape[0], (table.shape[1] - 6) // 3, 3)
        images.append(found)
    return images


class DetectionModel(ModelWrapper):
    """A torchvision detector on seeded synthetic scenes; its output is the packed detections (module docstring)."""

    task = "detection"
    image_size: int = 320
    #: Rows per image of the packed output (the model's ``detections_per_img``).
    max_detections: int = 100
    #: Keypoints per detection (Keypoint R-CNN), else 0.
    num_keypoints: int = 0

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """Seeded synthetic scenes ``(batch, 3, S, S)`` in ``[0, 1]``, float32 (the model normalizes them)."""
        self._check_batch_size(batch_size)
        if seq_len is not None:
            raise InvalidInputError(f"{self.name} takes images, not sequences: do not pass seq_len.")
        images = synthetic_scenes(batch_size, self.image_size, self._generator(seed))
        return {"images": images.to(self.device)}

    def forward(self, inputs: Inputs) -> torch.Tensor:
        detections = self.module(list(inputs["images"]))
        return pack_detections(detections, self.max_detections, self.num_keypoints)

    def unpack(self, output: torch.Tensor) -> list[dict]:
        """The packed output as torchvision's per-image dicts (see :func:`unpack_detections`)."""
        return unpack_detections(output)

    def variant_reason(self, variant) -> str | None:
        """bf16 / fp16 autocast, channels-last and ``torch.compile`` apply; weight casts, int8, torchao and ONNX
        Runtime do not (one reason each)."""
        name, group = getattr(variant, "name", str(variant)), getattr(variant, "group", None)
        if group == "weights" and name.endswith("-weights") and "int" not in name:
            return (f"{name} is not offered for detectors: the cast puts the images, anchors, box decoding, "
                    "RoIAlign and NMS in 16 bits (torchvision's CPU NMS has no bfloat16 kernel); bf16 / fp16 "
                    "autocast runs RoIAlign and NMS in fp32.")
        if group == "weights":
            return (f"{name} is not offered for detectors: it quantizes nn.Linear layers only (a detector's box "
                    "head), not the convolutions that take most of its time, while its scores decide the top-k "
                    "cut and NMS.")
        if group == "compile" and not getattr(variant, "compiles", False):
            return (f"{name} is not offered for detectors: the ONNX export takes one tensor in and out, while a "
                    "detector takes a list of images and returns a data-dependent number of boxes (NMS).")
        if name == "compile-reduce-overhead":
            return ("compile-reduce-overhead replays CUDA graphs, which need static shapes; a detector's number of "
                    "proposals and detections depends on the data (NMS).")
        return None

    def input_description(self, seq_len: int | None = None) -> dict:
        columns = list(BOX_COLUMNS) + (["x, y, score per keypoint"] if self.num_keypoints else [])
        return {"input": f"3x{self.image_size}x{self.image_size} synthetic scene in [0, 1] (normalized, resized "
                         "and batched by the model's own transform)",
                "image_size": self.image_size, "max_detections": self.max_detections,
                "num_keypoints": self.num_keypoints,
                "output": f"(batch, {self.max_detections}, {len(BOX_COLUMNS) + 3 * self.num_keypoints}) packed "
                          f"detections: {', '.join(columns)}; padding rows have label {PAD_LABEL}"}


def build_detection(spec: ModelSpec, *, weights: str, size: str, seed: int) -> DetectionModel:
    """Build ``torchvision:<detector>`` (options ``image_size`` and ``weights`` as for every torchvision model,
    checked by the caller) with seeded random or cached pretrained weights; see the module docstring."""
    from torchvision.models import get_model, get_model_weights

    name, options = spec.target, dict(spec.options)
    tiny = size == "tiny"
    arguments = builder_arguments(name, tiny)
    seed_everything(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # e.g. "arguments other than a weight enum ..."
        module = get_model(name, weights=None, **arguments).eval()
    default = input_size(module)
    fixed = bool(getattr(module.transform, "fixed_size", None))  # SSD: extra layers built for its fixed size
    shrink = tiny and not fixed
    image_size = int(options.get("image_size") or (min(TINY_IMAGE_SIZE, default) if shrink else default))
    if image_size != default:
        set_input_size(module, image_size)
    details: dict = {"image_size_source": "image_size option" if options.get("image_size") else
                     ("tiny size" if shrink else "the model's transform (min_size / fixed size)"),
                     "score_threshold": "0 (every image returns the fixed number of detections)"}
    if weights == "pretrained":
        module.load_state_dict(load_torchvision_weights(get_model_weights(name).DEFAULT))
    if "weights" in options:
        weights = load_weights_file(module, Path(str(options["weights"])).expanduser(), f"torchvision:{name}")
    elif weights == "random":
        scenes = synthetic_scenes(CALIBRATION_IMAGES, image_size, torch.Generator().manual_seed(CALIBRATION_SEED))
        try:
            layers = calibrate_batch_norm(module, scenes)
        except RuntimeError as error:  # e.g. an image_size too small for the layers
            raise InvalidInputError(f"torchvision:{name} cannot run on {image_size}-pixel images "
                                    f"({str(error).splitlines()[0]}).") from None
        if layers:
            details["batch_norm"] = (f"statistics of {layers} BatchNorm layers from one pass over "
                                     f"{CALIBRATION_IMAGES} seeded scenes (random weights)")
    wrapper = DetectionModel(module, weights=weights, size=size, seed=seed, options=options)
    wrapper.name = spec.display_name
    wrapper.spec = spec.text
    wrapper.source = f"torchvision.models.detection.{name}"
    wrapper.image_size = image_size
    wrapper.max_detections = max_detections(module)
    wrapper.num_keypoints = num_keypoints(module)
    wrapper.stages = RCNN_STAGES if family(name) == "rcnn" else ONE_STAGE_STAGES
    if tiny:
        where = f"{image_size}-pixel images" if shrink else f"its fixed {image_size}-pixel images (SSD)"
        wrapper.details["size_note"] = (f"tiny: {where}, at most {TINY_PROPOSALS} proposals / candidates and "
                                        f"{TINY_DETECTIONS} detections per image")
    if hasattr(module, "roi_heads") and getattr(module.roi_heads, "mask_predictor", None) is not None:
        details["masks"] = "computed and timed; not in the packed output (the accuracy guard compares boxes)"
    wrapper.details.update(details)
    return wrapper


__all__ = ["BOX_COLUMNS", "PAD_LABEL", "TINY_NOTE", "DetectionModel", "build_detection", "calibrate_batch_norm", "family",
           "is_detection", "pack_detections", "synthetic_scenes", "unpack_detections"]
