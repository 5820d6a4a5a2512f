"""Fitting real samples to what a model takes: which input it reads, at what size, channels and normalization.

The model says what it takes through ``prepare_input(1)`` (the interface every analysis asks), so no loader
branches on a model's name. Images: torchvision weights' own transforms where the model has them, else resize
+ center crop to the model's input size and ImageNet normalization; both are stated in the manifest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infopt.errors import InvalidInputError
from infopt.models.base import ModelWrapper

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def example_input(model: ModelWrapper) -> dict[str, torch.Tensor]:
    """One sample of the model's own inputs (CPU), which tells the key, rank and shape it expects."""
    return {key: value.detach().cpu() for key, value in model.prepare_input(1).items()}


def image_key(model: ModelWrapper, where: str) -> tuple[str, tuple[int, ...]]:
    """The key of the model's 4-D float image input and its per-sample shape ``(C, H, W)``; else a refusal."""
    example = example_input(model)
    for key, value in example.items():
        if value.dim() == 4 and value.is_floating_point():
            return key, tuple(int(s) for s in value.shape[1:])
    shapes = ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" for k, v in example.items())
    raise InvalidInputError(f"{where} holds images, but {model.name} does not take an image input ({shapes}).")


def fit_images(images: torch.Tensor, shape: tuple[int, ...], *, normalize: bool) -> torch.Tensor:
    """``(N, C, H, W)`` pixels in [0, 1] -> the model's channels and size (bilinear resize of the short side to
    the target, center crop), ImageNet-normalized when ``normalize`` and the model takes 3 channels."""
    channels, height, width = shape
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            images = images.mean(dim=1, keepdim=True)
        else:
            raise InvalidInputError(f"Images with {images.shape[1]} channels cannot feed a model that takes "
                                    f"{channels}.")
    if tuple(images.shape[2:]) != (height, width):
        scale = max(height / images.shape[2], width / images.shape[3])
        size = (max(height, round(images.shape[2] * scale)), max(width, round(images.shape[3] * scale)))
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        images = images[:, :, top:top + height, left:left + width]
    if normalize and channels == 3:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        images = (images - mean) / std
    return images.contiguous()


def weights_transforms(model: ModelWrapper):
    """The torchvision weights' own eval transforms when the model is a torchvision one, else ``None``."""
    if not str(getattr(model, "spec", "")).startswith("torchvision:"):
        return None
    try:
        from torchvision.models import get_model_weights

        name = str(model.spec).split(":", 1)[1].split("?", 1)[0]
        return get_model_weights(name).DEFAULT.transforms()
    except Exception:  # noqa: BLE001 - unknown to torchvision's registry: fall back to the generic rule
        return None


def describe_fit(shape: tuple[int, ...], normalize: bool) -> str:
    channels, height, width = shape
    norm = "ImageNet mean/std normalization" if normalize and channels == 3 else "pixels scaled to [0, 1]"
    return f"resize (short side) + center crop to {height}x{width}, {channels} channel(s), {norm}"


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "describe_fit", "example_input", "fit_images", "image_key",
           "weights_transforms"]
