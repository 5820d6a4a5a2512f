"""Parsing a data spec string: ``imagefolder:<dir>``, ``sklearn:<name>``, ``text:<file>``, ``py:<module>:<fn>``.

One string names the user's data everywhere (``run_notebooks.py --data``, every notebook's ``data``
parameter, :func:`infopt.data.load_data`); options follow ``?`` as ``name=value`` pairs joined by ``&``.
Parsing only checks the form, so the runner can refuse a malformed spec before any kernel starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infopt.errors import InvalidInputError

KINDS = {
    "imagefolder": "imagefolder:<dir>: one sub-folder per class (torchvision's ImageFolder layout)",
    "sklearn": "sklearn:<name>: a set scikit-learn ships inside its package (digits, iris, wine, breast_cancer)",
    "text": "text:<file>: one document per line, or .jsonl with a 'text' field",
    "py": "py:<module>:<function>: an iterable of (inputs, target) or inputs batches",
}
#: Options every kind accepts, and those only some kinds read.
COMMON_OPTIONS = ("calibration",)
KIND_OPTIONS = {"imagefolder": ("labels", "normalize", "limit"), "sklearn": ("limit",),
                "text": ("seq_len", "limit"), "py": ("metric", "higher_is_better", "limit")}
#: Samples that only calibrate when ``?calibration=`` is not given: this many, or a quarter of a smaller set.
DEFAULT_CALIBRATION = 256


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: its kind, its target (folder, file, set name, ``module:function``) and options."""

    text: str
    kind: str
    target: str
    options: dict = field(default_factory=dict)

    def int_option(self, name: str, default: int | None, minimum: int = 0) -> int | None:
        """An integer option (``?calibration=64``), checked, or ``default``."""
        if name not in self.options:
            return default
        raw = self.options[name]
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInputError(f"Data spec {self.text!r}: {name}={raw!r} is not an integer.") from None
        if value < minimum:
            raise InvalidInputError(f"Data spec {self.text!r}: {name} must be at least {minimum}, got {value}.")
        return value


def parse_data_spec(text: str) -> DataSpec:
    """Split ``kind:target?options`` and check the kind and option names (not yet the files)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("A data spec must be a non-empty string such as 'sklearn:digits' or "
                                "'imagefolder:path/to/images'.")
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise InvalidInputError(f"Data spec {text!r} does not start with a known kind; use one of: "
                                + "; ".join(KINDS.values()) + ".")
    target, _, query = rest.partition("?")
    if not target:
        raise InvalidInputError(f"Data spec {text!r} names no {kind} target: {KINDS[kind]}.")
    if kind == "py" and (target.count(":") != 1 or not all(target.split(":"))):
        raise InvalidInputError(f"Data spec {text!r}: expected py:<module>:<function>.")
    options: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise InvalidInputError(f"Data spec {text!r}: option {pair!r} is not name=value.")
        allowed = COMMON_OPTIONS + KIND_OPTIONS[kind]
        if name not in allowed:
            raise InvalidInputError(f"Data spec {text!r}: unknown option {name!r} for {kind}: (allowed: "
                                    f"{', '.join(allowed)}).")
        options[name] = value
    spec = DataSpec(text=text, kind=kind, target=target, options=options)
    spec.int_option("calibration", None)
    spec.int_option("limit", None, minimum=1)
    return spec


__all__ = ["DEFAULT_CALIBRATION", "KINDS", "DataSpec", "parse_data_spec"]
