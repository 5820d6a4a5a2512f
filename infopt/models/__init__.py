"""Model registry: ``list_models()`` and ``load_model(name, ...)``.

To add a model, write a small :class:`~infopt.models.base.ModelWrapper`
subclass with a ``build`` classmethod (see ``resnet.py``) and add one line to
``REGISTRY``.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError, UnknownModelError
from .base import Inputs, ModelWrapper
from .resnet import ResNet50
from .transformers_models import DistilBert, GPT2, TextModel

REGISTRY: dict[str, type[ModelWrapper]] = {
    "resnet50": ResNet50,
    "gpt2": GPT2,
    "distilbert": DistilBert,
}

WEIGHTS = ("random", "pretrained")
SIZES = ("full", "tiny")


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`."""
    return sorted(REGISTRY)


def check_model_name(name: str) -> str:
    if name not in REGISTRY:
        raise UnknownModelError(f"Unknown model '{name}': choose one of {', '.join(list_models())}.")
    return name


def load_model(name: str, device: str | torch.device = "cpu", weights: str = "random", size: str = "full",
               seed: int = 42, **opts) -> ModelWrapper:
    """Build a registered model in eval mode on ``device``.

    ``weights="random"`` (default) builds the exact architecture with seeded
    random weights and needs no network; ``"pretrained"`` loads published
    weights or raises :class:`~infopt.errors.WeightsUnavailableError`.
    ``size="tiny"`` is the same family at a very small size, for tests and
    quick runs. Extra ``opts`` go to the model (e.g. ``attn_implementation``).
    """
    wrapper_class = REGISTRY[check_model_name(name)]
    if weights not in WEIGHTS:
        raise InvalidInputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}.")
    if size not in SIZES:
        raise InvalidInputError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")
    from ..devices import resolve_device

    target = resolve_device(device)  # refuse an unusable device before building anything
    wrapper = wrapper_class.build(weights=weights, size=size, seed=seed, **opts)
    return wrapper.to(target)


__all__ = ["REGISTRY", "Inputs", "ModelWrapper", "TextModel", "list_models", "load_model", "check_model_name"]
