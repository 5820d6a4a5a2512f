"""torch.compile variants, and the warm-up that calls a compiled model until compilation stops."""

from __future__ import annotations

import time
from typing import Callable

import torch

from infopt.optimize.applied import VariantModel
from infopt.optimize.registry import Variant

def _compile(mode: str | None, *, freezing: bool = False) -> Callable[[VariantModel], None]:
    def transform(model: VariantModel) -> None:
        model.eager_module = model.wrapper.module
        # dynamic=False: one static graph per batch size, each as fast as it can be
        # (automatic dynamic shapes would time a shape-generic graph at the second size).
        # freezing: Inductor treats the weights as constants, folds them and pre-packs them
        # for oneDNN on CPU -- the inference setting PyTorch recommends for CPUs.
        options = {"freezing": True} if freezing else None
        model.wrapper.module = torch.compile(model.wrapper.module, mode=mode, dynamic=False, options=options)
        if freezing:
            model.notes.append("Inductor freezing: weights are compile-time constants (inference only; "
                               "changing them afterwards needs a recompile)")
    return transform


def variants() -> list[Variant]:
    """This backend's variants, in registry order."""
    return [
        Variant("compile", "torch.compile, default mode (Inductor), one static graph per batch size",
                _compile(None), stage=4, group="compile", compiles=True),
        Variant("compile-freezing", "torch.compile (Inductor) with freezing: weights folded in as constants and "
                "pre-packed (oneDNN on CPU), one static graph per batch size", _compile(None, freezing=True),
                stage=4, group="compile", compiles=True),
        Variant("compile-max-autotune", "torch.compile(mode='max-autotune'): autotuned Triton kernels",
                _compile("max-autotune"), stage=4, group="compile", devices=("cuda",), compiles=True,
                device_reason="max-autotune tunes GPU (Triton) kernels"),
        Variant("compile-reduce-overhead", "torch.compile(mode='reduce-overhead'): CUDA graphs",
                _compile("reduce-overhead"), stage=4, group="compile", devices=("cuda",), compiles=True,
                device_reason="reduce-overhead replays CUDA graphs"),
    ]


def compiled_frames() -> int:
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def warm_up_compiled(fn: Callable[[], object], *, quiet_calls: int = 2, max_calls: int = 20) -> dict:
    """Call ``fn`` until ``quiet_calls`` calls in a row compile nothing (dynamo's frame counter).

    Returns ``compile_time_s`` (wall time of the calls that compiled) and
    ``compile_calls`` (all calls made). Gives up after ``max_calls`` with
    ``compile_stable=False``.
    """
    compile_s = 0.0
    quiet = 0
    calls = 0
    with torch.inference_mode():
        while calls < max_calls and quiet < quiet_calls:
            before = compiled_frames()
            started = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - started
            calls += 1
            if compiled_frames() != before:
                compile_s += elapsed
                quiet = 0
            else:
                quiet += 1
    return {"compile_time_s": compile_s, "compile_calls": calls, "compile_stable": quiet >= quiet_calls}


__all__ = ["compiled_frames", "variants", "warm_up_compiled"]
