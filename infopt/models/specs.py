"""Model specs: the one string that names a model everywhere (API, notebooks, runner).

Forms::

    resnet50 | gpt2 | distilbert          built-in models
    torchvision:<name>                    a torchvision classification, segmentation, video or detection model
    hf:<folder or hub id>                 a Hugging Face config (local folder, or a hub id in the local cache)
    py:<module.path>:<function>           your own factory, importable from the current directory or PYTHONPATH

Options follow a ``?``: ``torchvision:vit_b_16?image_size=160``,
``hf:./my-model?task=masked-lm&network=true``; values are read as JSON when
they parse (``160`` is an int), else kept as text. Options given to
:func:`infopt.load_model` as keywords override those in the spec.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from infopt.errors import UnknownModelError

PREFIXES = ("torchvision", "hf", "py")
#: Options that say how to get a model, not which model it is: left out of display and folder names.
HOW_NOT_WHAT = ("network",)

SPEC_HELP = (
    "A model is a built-in name ({builtins}), "
    "'torchvision:<name>' (a torchvision classification, segmentation, video or detection model), "
    "'hf:<folder with config.json or cached hub id>' or 'py:<module>:<function>' (your factory); "
    "options follow '?', e.g. 'torchvision:vit_b_16?image_size=160'."
)


def spec_help() -> str:
    """One paragraph that explains the spec forms (for errors, ``--list`` and docs)."""
    from infopt.models import list_models

    return SPEC_HELP.format(builtins=", ".join(list_models()))


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``kind`` is ``builtin``, ``torchvision``, ``hf`` or ``py``."""

    kind: str
    target: str
    options: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The spec as a string (options in sorted order)."""
        base = self.target if self.kind == "builtin" else f"{self.kind}:{self.target}"
        if not self.options:
            return base
        return base + "?" + "&".join(f"{k}={_option_text(v)}" for k, v in sorted(self.options.items()))

    @property
    def display_name(self) -> str:
        """Short name for tables and charts: the spec, with a local folder shown by its last part."""
        target = self.target
        if self.kind == "hf" and is_path_like(target):
            from pathlib import Path

            target = Path(target).expanduser().resolve().name or target
        base = target if self.kind == "builtin" else f"{self.kind}:{target}"
        shown = {k: v for k, v in self.options.items() if k not in HOW_NOT_WHAT}
        if not shown:
            return base
        return base + "?" + "&".join(f"{k}={_option_text(v)}" for k, v in sorted(shown.items()))


def is_path_like(target: str) -> bool:
    """True for an ``hf:`` target written as a path (``/``, ``.``, ``~``) rather than a hub id."""
    return target.startswith(("/", ".", "~")) or target.count("/") > 1 or "\\" in target


def _option_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _parse_options(text: str, spec: str) -> dict:
    options = {}
    for part in filter(None, text.split("&")):
        if "=" not in part:
            raise UnknownModelError(f"Model spec option '{part}' in '{spec}' is not NAME=VALUE.")
        key, raw = (item.strip() for item in part.split("=", 1))
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options[key] = value
    return options


def parse_spec(spec: str) -> ModelSpec:
    """Split a spec string into kind, target and options (no file system or import access)."""
    from infopt.models import REGISTRY

    if not isinstance(spec, str) or not spec.strip():
        raise UnknownModelError(f"A model spec must be a non-empty string, got {spec!r}. {spec_help()}")
    text = spec.strip()
    base, _, option_text = text.partition("?")
    options = _parse_options(option_text, text)
    prefix, colon, target = base.partition(":")
    if colon and prefix in PREFIXES:
        if not target:
            raise UnknownModelError(f"Model spec '{text}' names no model after '{prefix}:'. {spec_help()}")
        if prefix == "py" and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", target):
            raise UnknownModelError(f"Model spec '{text}' must look like 'py:package.module:function'.")
        return ModelSpec(prefix, target, options)
    if base in REGISTRY:
        return ModelSpec("builtin", base, options)
    raise UnknownModelError(f"Unknown model '{text}'. {spec_help()}")


def spec_folder_name(spec: str | ModelSpec) -> str:
    """A file-system-safe folder/file stem for a spec, e.g. ``torchvision-vit_b_16``.

    Built from the display name (a local ``hf:`` folder by its last part) plus
    any options, so the same model with other options gets another folder.
    """
    from infopt.names import safe_name

    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    return safe_name(parsed.display_name)  # every ':', '/', '?', '&', '=' becomes '-'


__all__ = ["ModelSpec", "PREFIXES", "is_path_like", "parse_spec", "spec_folder_name", "spec_help"]

