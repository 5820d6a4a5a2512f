"""Model registry: ``list_models()`` and ``load_model(name, ...)``.

To add a model, write a small :class:`~infopt.models.base.ModelWrapper`
subclass with a ``build`` classmethod (see ``resnet.py``) and add one line to
``REGISTRY``. Entries name the class as ``"module:Class"`` so a model's
libraries (torchvision, transformers) are imported only when it is loaded:
every notebook kernel and the runner start seconds faster.
"""

from __future__ import annotations

import importlib

import torch

from ..errors import InvalidInputError, UnknownModelError
from .base import Inputs, ModelWrapper

REGISTRY: dict[str, str] = {
    "resnet50": "resnet:ResNet50",
    "gpt2": "transformers_models:GPT2",
    "distilbert": "transformers_models:DistilBert",
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


def wrapper_class(name: str) -> type[ModelWrapper]:
    """The wrapper class registered under ``name`` (imports its module on first use)."""
    module_name, class_name = REGISTRY[check_model_name(name)].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)


def load_model(name: str, device: str | torch.device = "cpu", weights: str = "random", size: str = "full",
               seed: int = 42, **opts) -> ModelWrapper:
    """Build a registered model in eval mode on ``device``.

    ``weights="random"`` (default) builds the exact architecture with seeded
    random weights and needs no network; ``"pretrained"`` loads published
    weights or raises :class:`~infopt.errors.WeightsUnavailableError`.
    ``size="tiny"`` is the same family at a very small size, for tests and
    quick runs. Extra ``opts`` go to the model (e.g. ``attn_implementation``).
    """
    model_class = wrapper_class(name)
    if weights not in WEIGHTS:
        raise InvalidInputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}.")
    if size not in SIZES:
        raise InvalidInputError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")
    from ..devices import resolve_device

    target = resolve_device(device)  # refuse an unusable device before building anything
    wrapper = model_class.build(weights=weights, size=size, seed=seed, **opts)
    return wrapper.to(target)


__all__ = ["REGISTRY", "Inputs", "ModelWrapper", "check_model_name", "list_models", "load_model", "wrapper_class"]
