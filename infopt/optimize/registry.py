"""The variant registry: what a variant is, the names registered, and how a spec such as ``bf16+compile`` parses.

A *variant* is a named transformation of a loaded model (and of its inputs). Each declares the tasks and device
kinds it applies to; variants compose with ``+``. The backends (:mod:`~infopt.optimize.torch_variants`,
:mod:`~infopt.optimize.compiled`, :mod:`~infopt.optimize.torchao`, :mod:`~infopt.optimize.onnx_runtime`)
register theirs when :mod:`infopt.optimize` is imported, in that order: the registry order is the canonical
spelling of a composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import pandas as pd

from infopt.devices import device_kind
from infopt.errors import InfoptError, InvalidInputError
from infopt.models.base import ModelWrapper

if TYPE_CHECKING:  # annotations only: the applied model imports this registry
    from infopt.optimize.applied import VariantModel

BASELINE = "eager-fp32"


class UnknownVariantError(InvalidInputError):
    """A variant name that is not in the registry."""


class VariantNotApplicableError(InfoptError, ValueError):
    """The variant does not apply to this model or device (reported as ``status="n/a"``)."""


class VariantError(InfoptError, RuntimeError):
    """Applying a variant failed (reported as ``status="error"``)."""



@dataclass(frozen=True)
class Variant:
    """One named transformation.

    ``stage`` orders the steps of a composition (attention kernel, weights,
    memory layout, autocast, compile: compilation must see the final model).
    Two variants of the same ``group`` cannot be combined. ``transform``
    mutates a :class:`VariantModel` in place. ``check`` may return a reason the
    variant does not apply to a particular model (beyond task and device).
    """

    name: str
    description: str
    transform: Callable[["VariantModel"], None]
    stage: int
    group: str | None = None
    tasks: tuple[str, ...] | None = None        # None: every task
    devices: tuple[str, ...] | None = None      # device kinds; None: every kind
    device_reason: str = ""                     # why other device kinds are excluded
    reduced_precision: bool = False
    compiles: bool = False
    check: Callable[[ModelWrapper], str | None] | None = None

    def unavailable_reason(self, model: ModelWrapper) -> str | None:
        """Why this variant does not apply to ``model`` on its device, or ``None``."""
        if self.tasks is not None and model.task not in self.tasks:
            return f"{self.name} applies only to {' / '.join(self.tasks)} models, not to {model.name} ({model.task})."
        objection = getattr(model, "variant_reason", None)  # the model interface: its own limits, with the reason
        reason = objection(self) if callable(objection) else None
        if reason:
            return reason
        kind = device_kind(model.device)
        if self.devices is not None and kind not in self.devices:
            return f"{self.name} runs on {' / '.join(self.devices)} only, not {kind}: {self.device_reason}."
        return self.check(model) if self.check else None


VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant, *, replace: bool = False) -> Variant:
    """Add ``variant`` to the registry (``replace=True`` to redefine a name)."""
    if "+" in variant.name or not variant.name:
        raise InvalidInputError(f"Variant names must be non-empty and contain no '+', got {variant.name!r}.")
    if variant.name in VARIANTS and not replace:
        raise InvalidInputError(f"A variant named '{variant.name}' is already registered.")
    VARIANTS[variant.name] = variant
    return variant


def unregister_variant(name: str) -> None:
    """Remove a registered variant (used by tests that register their own)."""
    VARIANTS.pop(name, None)


def list_variants(model: ModelWrapper | None = None) -> list[str]:
    """Registered variant names; with ``model``, only those that apply to it on its device."""
    names = list(VARIANTS)
    if model is not None:
        names = [name for name in names if VARIANTS[name].unavailable_reason(model) is None]
    return names


def describe_variants() -> pd.DataFrame:
    """The registry as a table: name, description, tasks, devices, precision, compiles."""
    return pd.DataFrame([
        {"variant": v.name, "description": v.description, "tasks": "all" if v.tasks is None else ", ".join(v.tasks),
         "devices": "all" if v.devices is None else ", ".join(v.devices),
         "precision": "reduced" if v.reduced_precision else "fp32", "compiles": v.compiles}
        for v in VARIANTS.values()
    ])


def parse_spec(spec: str) -> tuple[str, ...]:
    """Split ``"a+b+c"`` into registered names in registry order (the canonical spelling).

    Raises :class:`UnknownVariantError` for an unknown name and
    :class:`~infopt.errors.InvalidInputError` for a duplicate, a conflict
    (two of one group, e.g. ``bf16+fp16``) or the baseline combined with others.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"A variant spec must be a non-empty string such as 'bf16+compile', got {spec!r}.")
    names = [part.strip().lower() for part in spec.split("+")]
    for name in names:
        if name not in VARIANTS:
            raise UnknownVariantError(f"Unknown variant '{name}' in '{spec}': choose from {', '.join(VARIANTS)}.")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"Variant spec '{spec}' names the same variant twice.")
    if BASELINE in names and len(names) > 1:
        raise InvalidInputError(f"'{BASELINE}' is the untouched baseline and cannot be combined ('{spec}').")
    groups: dict[str, str] = {}
    for name in names:
        group = VARIANTS[name].group
        if group is not None and group in groups:
            raise InvalidInputError(f"Variants '{groups[group]}' and '{name}' both set the {group} and cannot be combined.")
        if group is not None:
            groups[group] = name
    order = list(VARIANTS)
    return tuple(sorted(names, key=order.index))


def application_order(steps: Iterable[str]) -> list[str]:
    """The steps sorted by ``stage``: the order the transformations run in (compile last)."""
    order = list(VARIANTS)
    return sorted(steps, key=lambda name: (VARIANTS[name].stage, order.index(name)))


def canonical_spec(spec: str) -> str:
    """The spec with its parts in registry order, e.g. ``compile+channels-last+bf16`` -> ``bf16+channels-last+compile``."""
    return "+".join(parse_spec(spec))


def unavailable_reason(model: ModelWrapper, spec: str) -> str | None:
    """Why ``spec`` does not apply to ``model`` on its device (first failing part), or ``None``."""
    for name in parse_spec(spec):
        reason = VARIANTS[name].unavailable_reason(model)
        if reason:
            return reason
    return None



__all__ = ["BASELINE", "VARIANTS", "UnknownVariantError", "Variant", "VariantError", "VariantNotApplicableError",
           "application_order", "canonical_spec", "describe_variants", "list_variants", "parse_spec",
           "register_variant", "unavailable_reason", "unregister_variant"]
