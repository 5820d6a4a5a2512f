"""The loaded data: samples as tensors in the model's input form, their targets, and the split.

The first samples only calibrate (static int8 ranges), the rest only evaluate (the accuracy guard), so no
sample both sets the quantization ranges and judges them. Each part carries its size and a SHA-256 of its
samples' bytes, which the manifest and the results record: two runs that say the same hash used the same data.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from infopt.data.specs import DEFAULT_CALIBRATION, DataSpec
from infopt.errors import InvalidInputError

#: What a data set's targets are, by kind of task metric.
TARGET_KINDS = {
    "class": "one class index per sample: top-1 accuracy",
    "next-token": "the inputs themselves: perplexity and next-token accuracy of a causal LM",
    "masked-token": "original token ids at masked positions (-100 elsewhere): masked-token accuracy",
    "none": "no labels: agreement of the variant's outputs with the fp32 reference's on real inputs",
    "custom": "targets for the data's own metric(outputs, targets)",
}
#: Fewer evaluation samples than this and the report warns that intervals are wide.
SMALL_EVALUATION = 100


def samples_hash(inputs: dict[str, torch.Tensor], targets: torch.Tensor | None) -> str:
    """SHA-256 over the samples' bytes (inputs by key, then targets), the identity of a split."""
    digest = hashlib.sha256()
    for key in sorted(inputs):
        digest.update(key.encode())
        digest.update(inputs[key].detach().cpu().contiguous().numpy().tobytes())
    if targets is not None:
        digest.update(targets.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Part:
    """One side of the split: inputs (a dict of tensors whose first dimension is the sample) and targets."""

    name: str
    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor | None

    @property
    def size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    @property
    def hash(self) -> str:
        return samples_hash(self.inputs, self.targets)

    def batches(self, batch_size: int, device: str | torch.device = "cpu"
                ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
        """``(inputs, targets)`` batches in order, inputs on ``device`` (targets stay on the CPU)."""
        for start in range(0, self.size, batch_size):
            stop = min(start + batch_size, self.size)
            inputs = {key: value[start:stop].to(device) for key, value in self.inputs.items()}
            yield inputs, (None if self.targets is None else self.targets[start:stop])


@dataclass
class DataSet:
    """A user's data prepared for one model, split into calibration and evaluation parts."""

    spec: DataSpec
    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor | None
    target_kind: str
    description: str
    preprocessing: str
    classes: list[str] | None = None
    metric: Callable | None = None
    metric_name: str | None = None
    higher_is_better: bool = True
    calibration_size: int = 0
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {self.target_kind!r}")
        total = self.size
        if total < 2:
            raise InvalidInputError(f"Data {self.spec.text!r} holds {total} sample(s): at least 2 are needed "
                                    "(some to calibrate, the rest to evaluate).")
        requested = self.spec.int_option("calibration", None)
        if requested is None:
            requested = min(DEFAULT_CALIBRATION, total // 4)
        if requested >= total:
            raise InvalidInputError(f"Data {self.spec.text!r}: calibration={requested} leaves no sample to "
                                    f"evaluate on ({total} in all).")
        self.calibration_size = requested

    @property
    def size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def _part(self, name: str, start: int, stop: int | None) -> Part:
        targets = None if self.targets is None else self.targets[start:stop]
        return Part(name, {key: value[start:stop] for key, value in self.inputs.items()}, targets)

    @property
    def calibration(self) -> Part:
        """The first ``calibration_size`` samples: used only to calibrate."""
        return self._part("calibration", 0, self.calibration_size)

    @property
    def evaluation(self) -> Part:
        """Every sample after the calibration part: used only to evaluate."""
        return self._part("evaluation", self.calibration_size, None)

    def warnings(self) -> list[str]:
        """Sentences the report shows next to the figures (a small evaluation set, no labels)."""
        lines = []
        if self.evaluation.size < SMALL_EVALUATION:
            lines.append(f"The evaluation split holds only {self.evaluation.size} samples (< {SMALL_EVALUATION}): "
                         "accuracy intervals are wide.")
        if self.target_kind == "none":
            lines.append("The data has no labels: the guard measures agreement with fp32 on real inputs, "
                         "not accuracy.")
        return lines

    def record(self) -> dict:
        """What the manifest and the results store about the data (JSON-safe)."""
        calibration, evaluation = self.calibration, self.evaluation
        return {
            "data": self.spec.text, "description": self.description, "preprocessing": self.preprocessing,
            "target_kind": self.target_kind, "target_definition": TARGET_KINDS[self.target_kind],
            "classes": len(self.classes) if self.classes else None, "metric": self.metric_name,
            "samples": self.size, "calibration_samples": calibration.size, "evaluation_samples": evaluation.size,
            "calibration_hash": calibration.hash, "evaluation_hash": evaluation.hash,
            "split_rule": "the first calibration_samples samples only calibrate; the rest only evaluate",
            "warnings": self.warnings(), **self.details,
        }


def finite_or_refuse(values: torch.Tensor, where: str) -> torch.Tensor:
    """``values`` if every element is finite, else one sentence naming where they came from."""
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise InvalidInputError(f"{where} holds {bad} non-finite value(s) (NaN or inf).")
    return values


def percent(value: float) -> str:
    """``0.9712`` -> ``'97.1%'`` (NaN -> ``'n/a'``)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


__all__ = ["SMALL_EVALUATION", "TARGET_KINDS", "DataSet", "Part", "finite_or_refuse", "percent", "samples_hash"]
