"""The user's data: one spec string -> samples fitted to a model, split into calibration and evaluation parts.

``load_data("sklearn:digits", model)``; see :mod:`infopt.data.specs` for the forms and ``docs/data.md``.
"""

from __future__ import annotations

from infopt.data.dataset import SMALL_EVALUATION, TARGET_KINDS, DataSet, Part
from infopt.data.specs import KINDS, DataSpec, parse_data_spec
from infopt.errors import InvalidInputError
from infopt.models.base import ModelWrapper


def load_data(spec: str | DataSpec, model: ModelWrapper) -> DataSet:
    """Load the data a spec names, prepared for ``model``'s inputs (refusals are one sentence each)."""
    parsed = parse_data_spec(spec) if isinstance(spec, str) else spec
    if model.task == "detection":
        raise InvalidInputError(f"Data {parsed.text!r} with {model.name}: the lab's data specs hold class labels, "
                                "values or text, not boxes, so a detector runs without --data (its accuracy guard "
                                "compares detections with fp32 on seeded scenes).")
    if parsed.kind == "sklearn":
        from infopt.data.bundled import load_bundled

        return load_bundled(parsed, model)
    if parsed.kind == "imagefolder":
        from infopt.data.images import load_imagefolder

        return load_imagefolder(parsed, model)
    if parsed.kind == "text":
        from infopt.data.text import load_text

        return load_text(parsed, model)
    from infopt.data.pyfunc import load_pyfunc

    return load_pyfunc(parsed, model)


def data_line(spec: str, model: ModelWrapper) -> str:
    """What a timing notebook prints about ``--data``: the set and its split, and that timing does not use it."""
    if not spec:
        return "no data given: accuracy checks compare outputs on random inputs (agreement, not accuracy)"
    data = load_data(spec, model)
    record = data.record()
    return (f"data: {data.description}; {record['calibration_samples']} calibration + "
            f"{record['evaluation_samples']} evaluation samples (sha256 {record['evaluation_hash'][:12]}); this "
            "notebook times the model's seeded inputs of the same shapes, the optimize notebook's accuracy guard "
            "and calibration use the data")


__all__ = ["KINDS", "SMALL_EVALUATION", "TARGET_KINDS", "DataSet", "DataSpec", "Part", "data_line", "load_data",
           "parse_data_spec"]
