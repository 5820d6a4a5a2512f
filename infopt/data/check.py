"""The runner's up-front check of ``--data`` against each model, before any kernel starts.

It loads the data for the model exactly as the notebooks will (so a missing folder, an undecodable image, a
tokenizer that is not offline or a data function of the wrong shape is refused here, exit 2), then runs the
model on a few evaluation samples: its outputs must be finite and fit the targets, and the data's own metric
must return a finite number on them.
"""

from __future__ import annotations

import math

import torch

from infopt.data import load_data
from infopt.data.dataset import DataSet
from infopt.errors import InvalidInputError
from infopt.models.base import ModelWrapper

PROBE_SAMPLES = 8


def probe(data: DataSet, model: ModelWrapper) -> None:
    """Run the model on the first few evaluation samples and check outputs, targets and metric."""
    where = f"Data {data.spec.text!r} with {model.name}"
    inputs, targets = next(data.evaluation.batches(PROBE_SAMPLES, model.device))
    try:
        with torch.inference_mode():
            outputs = model.forward(inputs).detach().float().cpu()
    except Exception as error:  # noqa: BLE001 - the model cannot run on these samples
        raise InvalidInputError(f"{where}: the model failed on the data's samples ({type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else ''}).") from None
    if not bool(torch.isfinite(outputs).all()):
        raise InvalidInputError(f"{where}: the model returns non-finite outputs on the data's samples.")
    if data.target_kind == "class":
        if outputs.dim() != 2:
            raise InvalidInputError(f"{where}: class labels need one row of class scores per sample, but the model "
                                    f"returns shape {tuple(outputs.shape)}.")
        highest = int(data.targets.max())
        if highest >= outputs.shape[1]:
            raise InvalidInputError(f"{where}: the data has {highest + 1} classes, but the model scores only "
                                    f"{outputs.shape[1]}.")
    if data.metric is not None:
        try:
            value = float(data.metric(outputs, targets))
        except Exception as error:  # noqa: BLE001 - the user's metric failed
            raise InvalidInputError(f"{where}: the metric {data.metric_name}() raised {type(error).__name__}: "
                                    f"{error}") from None
        if not math.isfinite(value):
            raise InvalidInputError(f"{where}: the metric {data.metric_name}() returned {value}, not a finite "
                                    "number.")


def check_data(spec: str, model: ModelWrapper) -> dict:
    """Load and probe the data for one model; returns the record the manifest stores."""
    data = load_data(spec, model)
    probe(data, model)
    return data.record()


__all__ = ["PROBE_SAMPLES", "check_data", "probe"]
