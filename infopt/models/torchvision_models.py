"""``torchvision:<name>``: any torchvision classification, semantic-segmentation, video or detection model.

The input resolution is the one the model's default weights were evaluated at
(``weights.transforms()``: crop 224 for most classifiers, 299 for Inception v3,
384+ for some EfficientNets; 520 for segmentation), so FLOPs match
torchvision's published figures; an ``image_size`` option overrides it (ViTs
are then built for that size, since their position embeddings depend on it).
Segmentation models are built as their default weights define them (FCN and
DeepLabV3 with the auxiliary head those weights include, so parameters and
FLOPs match the published figures) but without the pretrained-backbone
download their builders do by default; their output is the main head's
per-pixel class logits as ``(batch, H, W, classes)``. Video classifiers take
``(batch, 3, frames, H, W)`` clips of 16 frames (the clip length torchvision's
published figures are counted at; a ``frames`` option overrides). Detection and
keypoint models (``torchvision.models.detection``) are built by
:mod:`infopt.models.detection`. Optical-flow and quantized models need other
inputs or outputs and are refused with one sentence.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path

import torch

from infopt.determinism import seed_everything
from infopt.errors import InvalidInputError, UnknownModelError
from infopt.models.base import Inputs, ModelWrapper
from infopt.models.detection import build_detection, is_detection
from infopt.models.detection import family as detection_family
from infopt.models.resnet import IMAGENET_MEAN, IMAGENET_STD
from infopt.models.specs import ModelSpec
from infopt.models.weights import load_torchvision_weights, load_weights_file  # noqa: F401 - re-exported

#: torchvision sub-packages whose models the lab does not run, and why.
UNSUPPORTED_FAMILIES = {
    "optical_flow": "optical flow (image pairs)",
    "quantization": "pre-quantized",
}
OPTIONS = ("image_size", "frames", "weights")  # weights: a local .pth state_dict (real weights from that file)
#: Frames per clip for video models: torchvision's published multiply-adds are counted at 16.
DEFAULT_FRAMES = 16


def _family(name: str) -> str | None:
    """The unsupported torchvision family ``name`` belongs to, or ``None`` for classification."""
    import torchvision.models as tv

    for family in UNSUPPORTED_FAMILIES:
        if name in tv.list_models(module=getattr(tv, family)):
            return family
    return None


def _image_size_option(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 8:
        raise InvalidInputError(f"image_size for torchvision:{name} must be an integer of at least 8, got {value!r}.")
    return value


def check_torchvision(name: str, options: dict) -> None:
    """Cheap checks (no model build): the name exists, is a classification model, options are known."""
    from torchvision.models import list_models

    known = list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()."
        raise UnknownModelError(f"torchvision has no model named '{name}': {hint}")
    family = _family(name)
    if family is not None:
        raise InvalidInputError(
            f"torchvision:{name} belongs to torchvision's {family} family ({UNSUPPORTED_FAMILIES[family]}); "
            f"the lab supports torchvision's image classification (torchvision.models), semantic "
            f"segmentation (torchvision.models.segmentation), video classification (torchvision.models.video) "
            f"and detection (torchvision.models.detection) models, not its {', '.join(UNSUPPORTED_FAMILIES)} "
            f"models.")
    if is_detection(name):
        detection_family(name)  # a detector of a family the lab does not know yet: one sentence
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(f"Unknown option(s) for torchvision:{name}: {', '.join(unknown)} "
                                f"(supported: {', '.join(OPTIONS)}).")
    _image_size_option(options.get("image_size"), name)
    if "weights" in options and not Path(str(options["weights"])).expanduser().is_file():
        raise InvalidInputError(f"torchvision:{name}: weights file {options['weights']} does not exist.")
    frames = options.get("frames")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
        raise InvalidInputError(f"frames for torchvision:{name} must be an integer of at least 1, got {frames!r}.")
    if frames is not None and not _is_video(name):
        raise InvalidInputError(f"frames applies to torchvision's video models only, not to {name}.")


def _is_video(name: str) -> bool:
    import torchvision.models as tv

    return name in tv.list_models(module=tv.video)


def _is_segmentation(name: str) -> bool:
    import torchvision.models as tv

    return name in tv.list_models(module=tv.segmentation)


def _segmentation_arguments(name: str) -> dict:
    """No pretrained-backbone download (the builders' default) and the auxiliary head the default weights have."""
    import inspect

    from torchvision.models import get_model_builder

    arguments: dict = {"weights_backbone": None}
    if "aux_loss" in inspect.signature(get_model_builder(name)).parameters:
        arguments["aux_loss"] = True
    return arguments


def _drop_unused_aux_heads(module, published_params: int | None) -> None:
    """GoogLeNet built without weights keeps two auxiliary classifiers that never run in eval mode and that its
    published weights drop; drop them as torchvision's builder does, so parameters and weight bytes match."""
    if published_params is None or getattr(module, "aux1", None) is None:
        return
    if sum(p.numel() for p in module.parameters()) != published_params:
        module.aux_logits, module.aux1, module.aux2 = False, None, None


def default_image_size(name: str) -> int:
    """The crop (classification) or resize (segmentation) size of the default weights (224 when unknown)."""
    from torchvision.models import get_model_weights

    try:
        transforms = get_model_weights(name).DEFAULT.transforms()
        size = getattr(transforms, "crop_size", None) or getattr(transforms, "resize_size", None)
        return int(size[0] if isinstance(size, (list, tuple)) else size)
    except (ValueError, TypeError, AttributeError):
        return 224


class TorchvisionModel(ModelWrapper):
    """A torchvision model on normalized ``3 x H x W`` images: class logits (per image, or per pixel)."""

    task = "vision"
    #: Frames per clip (video models), else ``None``.
    frames: int | None = None

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """ImageNet-normalized random images ``(batch, 3, H, W)`` or clips ``(batch, 3, frames, H, W)``, float32."""
        self._check_batch_size(batch_size)
        if seq_len is not None:
            raise InvalidInputError(f"{self.name} takes images, not sequences: do not pass seq_len.")
        time = (self.frames,) if self.frames else ()
        pixels = torch.rand(batch_size, 3, *time, self.image_size, self.image_size, generator=self._generator(seed))
        shape = (1, 3) + (1,) * (pixels.dim() - 2)
        mean, std = torch.tensor(IMAGENET_MEAN).view(shape), torch.tensor(IMAGENET_STD).view(shape)
        return {"pixel_values": ((pixels - mean) / std).to(self.device)}

    def forward(self, inputs: Inputs) -> torch.Tensor:
        output = self.module(inputs["pixel_values"])
        if isinstance(output, dict):  # segmentation: {"out": (B, classes, H, W)} -> rows of per-pixel logits
            return output["out"].permute(0, 2, 3, 1)
        # GoogLeNet / Inception return a named tuple in training mode only; eval gives the logits.
        return output if isinstance(output, torch.Tensor) else output[0]

    def input_description(self, seq_len: int | None = None) -> dict:
        if self.frames:
            return {"input": f"3x{self.frames}x{self.image_size}x{self.image_size} normalized clip",
                    "image_size": self.image_size, "frames": self.frames}
        return {"input": f"3x{self.image_size}x{self.image_size} normalized image", "image_size": self.image_size}


def build_torchvision(spec: ModelSpec, *, weights: str, size: str, seed: int) -> ModelWrapper:
    """Build ``torchvision:<name>`` with seeded random or cached pretrained weights.

    ``size`` does not shrink a classification, segmentation or video model (there
    is no smaller member to choose); a ``size="tiny"`` quick run uses the model as
    given and says so. Detectors are built by :func:`infopt.models.detection.build_detection`
    (smaller images and fewer proposals when tiny).
    """
    from torchvision.models import get_model, get_model_weights

    name, options = spec.target, dict(spec.options)
    check_torchvision(name, options)
    if is_detection(name):
        return build_detection(spec, weights=weights, size=size, seed=seed)
    override = _image_size_option(options.get("image_size"), name)
    default = default_image_size(name)
    image_size = override or default
    segmentation = _is_segmentation(name)
    extra = _segmentation_arguments(name) if segmentation else {}
    seed_everything(seed)
    module, resized = None, False
    with warnings.catch_warnings():
        # GoogLeNet / Inception warn that their default initialization will change: not news for a benchmark
        warnings.filterwarnings("ignore", message="The default weight initialization of", category=FutureWarning)
        if override is not None and override != default:
            try:  # ViTs take image_size (their position embeddings depend on it); CNNs do not need it
                module, resized = get_model(name, weights=None, image_size=image_size, **extra), True
            except TypeError:
                module = None
        if module is None:
            module = get_model(name, weights=None, **extra)
    _drop_unused_aux_heads(module, get_model_weights(name).DEFAULT.meta.get("num_params"))
    if weights == "pretrained":
        if resized:
            raise InvalidInputError(f"Pretrained torchvision:{name} weights exist only for image_size={default}.")
        module.load_state_dict(load_torchvision_weights(get_model_weights(name).DEFAULT))
    if "weights" in options:
        weights = load_weights_file(module, Path(str(options["weights"])).expanduser(), f"torchvision:{name}")
    wrapper = TorchvisionModel(module, weights=weights, size="full", seed=seed, options=options)
    wrapper.name = spec.display_name
    wrapper.spec = spec.text
    wrapper.source = f"torchvision.models.{'segmentation.' if segmentation else ''}{name}"
    if segmentation:
        wrapper.task = "segmentation"
    if _is_video(name):
        wrapper.task = "video"
        wrapper.frames = int(options.get("frames", DEFAULT_FRAMES))
    wrapper.image_size = image_size
    wrapper.details = {"image_size_source": "image_size option" if override else "default weights' crop size"}
    if size == "tiny":
        wrapper.details["size_note"] = "torchvision models run as given: size='tiny' does not shrink them"
    return wrapper


__all__ = ["TorchvisionModel", "build_torchvision", "check_torchvision", "default_image_size"]
