"""``py:<module.path>:<function>``: your own model from a factory function.

Contract (see ``examples/my_model.py``): the function is importable from the
current directory or ``PYTHONPATH``, takes no required arguments (the spec's
``?name=value`` options are passed as keywords) and returns either

* a :class:`~infopt.models.base.ModelWrapper` (full control), or
* a pair ``(module, make_inputs)``: an ``nn.Module`` and a function
  ``make_inputs(batch_size)`` returning a tensor (``module(x)``), a tuple
  (``module(*x)``) or a dict of tensors (``module(**x)``) whose first
  dimension is the batch.

The lab seeds torch before calling the factory and before every
``make_inputs`` call, so weights and inputs are reproducible. The model's main
output is its first tensor (a tuple's first item, a dict's ``logits`` or first
value). Its task is ``generic`` unless a ``task`` option says otherwise (e.g.
``?task=vision`` makes the accuracy guard compare top-1 classes).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

import torch
from torch import nn

from infopt.determinism import seed_everything
from infopt.errors import InvalidInputError
from infopt.models.base import TASKS, Inputs, ModelWrapper
from infopt.models.specs import ModelSpec

_ARG = "arg"


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s) ({', '.join(type(v).__name__ for v in value)})"
    return f"a {type(value).__module__}.{type(value).__name__}" if value is not None else "None"


def _import_factory(target: str) -> Callable:
    module_name, function_name = target.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise InvalidInputError(f"py:{target}: cannot import module '{module_name}': it must be importable "
                                    f"from the current directory ({cwd}) or PYTHONPATH.") from None
        raise InvalidInputError(f"py:{target}: importing module '{module_name}' failed: {error}.") from None
    except Exception as error:  # noqa: BLE001 - the user's module failed on import
        raise InvalidInputError(f"py:{target}: importing module '{module_name}' failed with "
                                f"{type(error).__name__}: {error}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise InvalidInputError(f"py:{target}: module '{module_name}' ({getattr(module, '__file__', '?')}) "
                                f"has no attribute '{function_name}'.")
    if not callable(function):
        raise InvalidInputError(f"py:{target}: '{function_name}' in module '{module_name}' is "
                                f"{_describe(function)}, not a function.")
    return function


def _as_inputs(value: Any, where: str) -> tuple[Inputs, str]:
    """Inputs as a dict plus how to call the module with them (``tensor``, ``tuple`` or ``dict``)."""
    if isinstance(value, torch.Tensor):
        return {"input": value}, "tensor"
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return {f"{_ARG}{i}": v for i, v in enumerate(value)}, "tuple"
    if isinstance(value, dict) and value and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in value.items()):
        return dict(value), "dict"
    raise InvalidInputError(f"{where} returned {_describe(value)}; expected a tensor, a tuple of tensors or a dict "
                            "of tensors.")


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) or hasattr(output, "keys"):
        if "logits" in output.keys():
            return output["logits"]
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise InvalidInputError(f"The model returned {_describe(output)}, which holds no tensor to time and compare.")


class FactoryModel(ModelWrapper):
    """An ``nn.Module`` plus its ``make_inputs(batch_size)``, from a ``py:`` factory."""

    def __init__(self, module: nn.Module, make_inputs: Callable[[int], Any], *, task: str, where: str, **kwargs):
        self.task = task
        self.make_inputs = make_inputs
        self.where = where
        super().__init__(module, **kwargs)
        inputs, self.form = self._call_make_inputs(1)
        batch = int(next(iter(inputs.values())).shape[0]) if next(iter(inputs.values())).dim() else 0
        if batch != 1:
            raise InvalidInputError(f"{where}: make_inputs(1) returned {_describe(self._raw(inputs))} whose first "
                                    "dimension is not the batch size 1.")
        self._image_input = any(v.dim() == 4 and v.is_floating_point() for v in inputs.values())

    def _raw(self, inputs: Inputs):
        return next(iter(inputs.values())) if len(inputs) == 1 else tuple(inputs.values())

    def _call_make_inputs(self, batch_size: int, seed: int | None = None) -> tuple[Inputs, str]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else seed)
            try:
                value = self.make_inputs(batch_size)
            except Exception as error:  # noqa: BLE001 - the user's builder failed
                raise InvalidInputError(f"{self.where}: make_inputs({batch_size}) raised "
                                        f"{type(error).__name__}: {error}") from None
        return _as_inputs(value, f"{self.where}: make_inputs({batch_size})")

    @property
    def has_image_input(self) -> bool:
        return self._image_input

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """``make_inputs(batch_size)`` under a fixed seed, on the model's device."""
        self._check_batch_size(batch_size)
        if seq_len is not None:
            raise InvalidInputError(f"{self.name} builds its own inputs with make_inputs: seq_len does not apply.")
        inputs, _ = self._call_make_inputs(batch_size, seed)
        return {key: value.to(self.device) for key, value in inputs.items()}

    def forward(self, inputs: Inputs) -> torch.Tensor:
        if self.form == "tensor":
            return _first_tensor(self.module(inputs["input"]))
        if self.form == "tuple":
            return _first_tensor(self.module(*inputs.values()))
        return _first_tensor(self.module(**inputs))

    def input_description(self, seq_len: int | None = None) -> dict:
        inputs, _ = self._call_make_inputs(1)
        shapes = {key: list(value.shape[1:]) for key, value in inputs.items()}
        return {"input": f"make_inputs(batch) -> {self.form}", "input_shapes_per_sample": shapes}


def _task_option(options: dict, where: str) -> str:
    task = options.pop("task", "generic")
    if task not in TASKS:
        raise InvalidInputError(f"{where}: task={task!r} is not one of {', '.join(TASKS)}.")
    return task


def build_factory(spec: ModelSpec, *, weights: str = "random", size: str = "full", seed: int = 42) -> ModelWrapper:
    """Import and call the factory, check what it returned, and wrap it."""
    where = f"py:{spec.target}"
    options = dict(spec.options)
    task = _task_option(options, where)
    function = _import_factory(spec.target)
    seed_everything(seed)
    try:
        result = function(**options)
    except TypeError as error:
        raise InvalidInputError(f"{where}: calling {spec.target.split(':')[1]}"
                                f"({', '.join(f'{k}=...' for k in options)}) failed: {error}") from None
    except InvalidInputError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's factory failed
        raise InvalidInputError(f"{where}: the factory raised {type(error).__name__}: {error}") from None
    module_name = spec.target.split(":")[0]
    if isinstance(result, ModelWrapper):
        wrapper = result
        wrapper._check_batch_size(1)
        try:
            wrapper.prepare_input(1)
        except Exception as error:  # noqa: BLE001
            raise InvalidInputError(f"{where}: its wrapper's prepare_input(1) raised "
                                    f"{type(error).__name__}: {error}") from None
    elif isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], nn.Module) \
            and callable(result[1]):
        wrapper = FactoryModel(result[0], result[1], task=task, where=where, weights="factory", size="full",
                               seed=seed, options=dict(spec.options))
        wrapper.source = f"{spec.target.replace(':', '.')}()"
    else:
        raise InvalidInputError(f"{where}: {spec.target.split(':')[1]}() in module '{module_name}' returned "
                                f"{_describe(result)}; expected a ModelWrapper or a (torch.nn.Module, "
                                "make_inputs) pair.")
    wrapper.name = spec.display_name
    wrapper.spec = spec.text
    if size == "tiny":
        wrapper.details = {**getattr(wrapper, "details", {}),
                           "size_note": "py: models run as given: size='tiny' does not shrink them"}
    return wrapper


def check_factory(spec: ModelSpec) -> None:
    """Validation for the runner: import, call the factory once on CPU and build ``make_inputs(1)``."""
    build_factory(spec)


__all__ = ["FactoryModel", "build_factory", "check_factory"]
