"""``py:<module>:<function>``: the user's own data, from a function that returns an iterable of batches.

Each batch is ``(inputs, target)`` or ``inputs`` alone, where inputs are a tensor, a tuple or a dict of tensors
in the model's own input form (first dimension the batch). ``?metric=<function>`` names a function of the same
module, ``metric(outputs, targets) -> float`` over a whole split, higher is better unless
``?higher_is_better=false``; without one, class-index targets get top-1 accuracy and no targets mean
agreement with fp32 on these real inputs. Every batch is checked against the model's own ``prepare_input(1)``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

import torch

from infopt.data.dataset import DataSet
from infopt.data.preprocess import example_input
from infopt.data.specs import DataSpec
from infopt.errors import InvalidInputError
from infopt.models.base import ModelWrapper


def import_function(module_name: str, function_name: str, where: str) -> Callable:
    """``module.function`` importable from the current directory or PYTHONPATH; refusals in one sentence."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - missing or failing user module
        raise InvalidInputError(f"{where}: importing module '{module_name}' failed ({type(error).__name__}: "
                                f"{error}).") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvalidInputError(f"{where}: module '{module_name}' has no function '{function_name}'.")
    return function


def _as_dict(value: Any, keys: list[str], where: str) -> dict[str, torch.Tensor]:
    if isinstance(value, torch.Tensor):
        value = (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in value):
        if len(value) != len(keys):
            raise InvalidInputError(f"{where} yielded {len(value)} input tensor(s); the model takes {len(keys)} "
                                    f"({', '.join(keys)}).")
        return dict(zip(keys, value))
    if isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
        if set(value) != set(keys):
            raise InvalidInputError(f"{where} yielded inputs {sorted(value)}; the model takes {sorted(keys)}.")
        return dict(value)
    raise InvalidInputError(f"{where} yielded {type(value).__name__}; expected a tensor, a tuple or a dict of "
                            "tensors (optionally paired with a target).")


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and not isinstance(batch[0], (int, float)) \
            and (isinstance(batch[0], (dict, tuple, list)) or isinstance(batch[1], torch.Tensor)) \
            and not (isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor)
                     and batch[1].dim() == batch[0].dim() and batch[1].is_floating_point()):
        return batch[0], batch[1]
    return batch, None


def load_pyfunc(spec: DataSpec, model: ModelWrapper) -> DataSet:
    """Call the data function, check each batch against the model's inputs and stack them."""
    where = f"Data {spec.text!r}"
    module_name, function_name = spec.target.split(":")
    function = import_function(module_name, function_name, where)
    example = example_input(model)
    keys = list(example)
    try:
        batches = list(function())
    except Exception as error:  # noqa: BLE001 - the user's data function failed
        raise InvalidInputError(f"{where}: {function_name}() raised {type(error).__name__}: {error}") from None
    if not batches:
        raise InvalidInputError(f"{where}: {function_name}() yielded no batch.")
    inputs: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    targets: list[torch.Tensor] = []
    for number, batch in enumerate(batches, 1):
        raw_inputs, target = _split_batch(batch)
        fitted = _as_dict(raw_inputs, keys, f"{where}: batch {number}")
        for key, value in fitted.items():
            expected = tuple(example[key].shape[1:])
            if value.dim() != example[key].dim() or (value.dtype.is_floating_point and tuple(value.shape[1:]) != expected):
                raise InvalidInputError(f"{where}: batch {number} input '{key}' has shape {tuple(value.shape)}; "
                                        f"the model takes (batch, {', '.join(map(str, expected))}).")
            inputs[key].append(value.detach().cpu())
        sizes = {int(v.shape[0]) for v in fitted.values()}
        if target is not None:
            target = torch.as_tensor(target)
            sizes.add(int(target.shape[0]) if target.dim() else -1)
            targets.append(target.detach().cpu())
        if len(sizes) != 1:
            raise InvalidInputError(f"{where}: batch {number} mixes batch sizes {sorted(sizes)} across inputs and "
                                    "target.")
    if targets and len(targets) != len(batches):
        raise InvalidInputError(f"{where}: some batches have a target and others do not.")
    stacked = {key: torch.cat(values) for key, values in inputs.items()}
    target = torch.cat(targets) if targets else None
    metric_name = spec.options.get("metric")
    metric = import_function(module_name, metric_name, where) if metric_name else None
    higher = spec.options.get("higher_is_better", "true").lower() not in ("false", "0", "no")
    if metric is not None:
        kind, name = "custom", metric_name
    elif target is not None and not target.is_floating_point() and target.dim() == 1:
        kind, name = "class", "top-1 accuracy"
    elif target is not None:
        raise InvalidInputError(f"{where}: targets of shape {tuple(target.shape)} are not class indices; name a "
                                "metric with ?metric=<function>.")
    else:
        kind, name = "none", "output agreement on real inputs"
    return DataSet(spec=spec, inputs=stacked, targets=target, target_kind=kind,
                   description=f"{function_name}() from {module_name} ({len(batches)} batches)",
                   preprocessing="as the data function yields it", metric=metric, metric_name=name,
                   higher_is_better=higher)


__all__ = ["import_function", "load_pyfunc"]
