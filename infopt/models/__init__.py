"""Model registry and specs: ``list_models()``, ``load_model(spec, ...)``, ``validate_spec(spec)``.

A model is named by a spec string (see :mod:`infopt.models.specs`): a built-in
name from ``REGISTRY``, ``torchvision:<name>``, ``hf:<folder or hub id>`` or
``py:<module>:<function>``. Built-in entries name their class as
``"module:Class"`` so a model's libraries (torchvision, transformers) are
imported only when it is loaded: every notebook kernel and the runner start
seconds faster. Bring your own model with a spec rather than a registry line.
"""

from __future__ import annotations

import importlib

import torch

from infopt.errors import InvalidInputError, UnknownModelError
from infopt.models.base import ARGMAX_TASKS, TASKS, Inputs, ModelWrapper
from infopt.models.specs import ModelSpec, parse_spec, spec_folder_name, spec_help

REGISTRY: dict[str, str] = {
    "resnet50": "resnet:ResNet50",
    "gpt2": "transformers_models:GPT2",
    "distilbert": "transformers_models:DistilBert",
}

WEIGHTS = ("random", "pretrained")
SIZES = ("full", "tiny")


def list_models() -> list[str]:
    """The built-in model names (any ``torchvision:``, ``hf:`` or ``py:`` spec works too; see :func:`spec_help`)."""
    return sorted(REGISTRY)


def check_model_name(name: str) -> str:
    """A built-in name, or :class:`UnknownModelError` naming the choices."""
    if name not in REGISTRY:
        raise UnknownModelError(f"Unknown model '{name}': choose one of {', '.join(list_models())}.")
    return name


def validate_spec(spec: str) -> str:
    """Check a spec without building the model where that can be avoided; return its canonical form.

    Raises :class:`UnknownModelError` / :class:`InvalidInputError` with one
    sentence (the runner prints it and exits 2 before any kernel starts). A
    local ``hf:`` folder becomes an absolute path so the spec works from any
    working directory. ``py:`` factories are called once (what they return
    can only be checked that way), with their ``make_inputs(1)``.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "builtin":
        check_model_name(parsed.target)  # no import: the model's library loads in the kernel
        return parsed.text
    if parsed.kind == "torchvision":
        from infopt.models.torchvision_models import check_torchvision

        check_torchvision(parsed.target, dict(parsed.options))
        return parsed.text
    if parsed.kind == "hf":
        from infopt.models.hf import resolve_hf

        return resolve_hf(parsed.target, dict(parsed.options)).spec.text
    from infopt.models.factory import check_factory

    check_factory(parsed)
    return parsed.text


def wrapper_class(name: str) -> type[ModelWrapper]:
    """The wrapper class registered under ``name`` (imports its module on first use)."""
    module_name, class_name = REGISTRY[check_model_name(name)].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)


def load_model(name: str, device: str | torch.device = "cpu", weights: str = "random", size: str = "full",
               seed: int = 42, **opts) -> ModelWrapper:
    """Build the model a spec names (see :mod:`infopt.models.specs`) in eval mode on ``device``.

    ``weights="random"`` (default) builds the exact architecture with seeded
    random weights and needs no network; ``"pretrained"`` loads published
    (built-in, ``torchvision:``) or locally present (``hf:``) weights or raises
    :class:`~infopt.errors.WeightsUnavailableError`. ``size="tiny"`` is the
    same family at a very small size, for tests and quick runs: built-ins have
    fixed tiny sizes, ``hf:`` configs are shrunk (recorded in ``info()``),
    ``torchvision:`` detectors get smaller images and fewer proposals, other
    ``torchvision:`` and ``py:`` models run as given. Extra ``opts`` (and the
    spec's ``?`` options) go to the model (e.g. ``attn_implementation``,
    ``image_size``, ``task``).
    """
    parsed = parse_spec(name)
    if parsed.kind != "builtin":
        return _load_spec(parsed, device, weights, size, seed, opts)
    model_class = wrapper_class(parsed.target)
    opts = {**parsed.options, **opts}
    if weights not in WEIGHTS:
        raise InvalidInputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}.")
    if size not in SIZES:
        raise InvalidInputError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")
    from infopt.devices import resolve_device

    target = resolve_device(device)  # refuse an unusable device before building anything
    wrapper = model_class.build(weights=weights, size=size, seed=seed, **opts)
    wrapper.spec = ModelSpec("builtin", parsed.target, dict(opts)).text if parsed.options else parsed.target
    return wrapper.to(target)


def describe_size(spec: str, size: str) -> dict:
    """What ``size`` means for ``spec``, without building the model (for the run manifest).

    ``{"spec", "size", "note"}`` plus ``shrunk_config`` (``{attribute: [old, new]}``)
    for an ``hf:`` model at ``size="tiny"``.
    """
    parsed = parse_spec(spec)
    if size not in SIZES:
        raise InvalidInputError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")
    entry: dict = {"spec": parsed.text, "size": size}
    if size == "full":
        entry["note"] = "the model as specified"
    elif parsed.kind == "builtin":
        entry["note"] = "the built-in tiny size of the same family (smoke test only)"
    elif parsed.kind == "hf":
        import copy

        from infopt.models.hf import resolve_hf, shrink_config

        source = resolve_hf(parsed.target, dict(parsed.options))
        entry["spec"] = source.spec.text
        entry["shrunk_config"] = shrink_config(copy.deepcopy(source.config))
        entry["note"] = "config shrunk for a quick run (smoke test only)" if entry["shrunk_config"] \
            else "nothing to shrink (already tiny, or not a uniform transformer stack): as given"
    elif parsed.kind == "torchvision" and _is_detector(parsed.target):
        from infopt.models.detection import TINY_NOTE

        entry["note"] = TINY_NOTE
    else:
        entry["note"] = f"{parsed.kind}: models run as given; size='tiny' does not shrink them"
    return entry


def _is_detector(name: str) -> bool:
    from infopt.models.detection import is_detection

    try:
        return is_detection(name)
    except ImportError:  # pragma: no cover - torchvision always present with the lab
        return False


def _load_spec(parsed: ModelSpec, device, weights: str, size: str, seed: int, opts: dict) -> ModelWrapper:
    """``torchvision:``, ``hf:`` and ``py:`` specs (see :func:`load_model`)."""
    if weights not in WEIGHTS:
        raise InvalidInputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}.")
    if size not in SIZES:
        raise InvalidInputError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")
    from infopt.devices import resolve_device

    target = resolve_device(device)
    options = {**parsed.options, **opts}
    spec = ModelSpec(parsed.kind, parsed.target, options)
    if parsed.kind == "torchvision":
        from infopt.models.torchvision_models import build_torchvision

        wrapper = build_torchvision(spec, weights=weights, size=size, seed=seed)
    elif parsed.kind == "hf":
        from infopt.models.hf import build_hf

        wrapper = build_hf(spec, weights=weights, size=size, seed=seed)
    else:
        from infopt.models.factory import build_factory

        wrapper = build_factory(spec, weights=weights, size=size, seed=seed)
    return wrapper.to(target)


__all__ = ["ARGMAX_TASKS", "REGISTRY", "TASKS", "Inputs", "ModelSpec", "ModelWrapper", "check_model_name",
           "describe_size", "list_models", "load_model", "parse_spec", "spec_folder_name", "spec_help", "validate_spec",
           "wrapper_class"]
