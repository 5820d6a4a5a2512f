"""FLOP counting from a real forward pass.

FLOPs here are floating-point operations = 2 x multiply-adds (a multiply-add
is two operations), as counted by ``torch.utils.flop_counter.FlopCounterMode``
on the operators the model actually dispatches. ``FlopCounterMode`` knows the
CUDA attention kernels but not the scaled-dot-product-attention kernels that
CPU (and MPS) run, so those are added here; without them GPT-2 and DistilBERT
would silently lose their attention FLOPs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Forward FLOPs of attention: Q @ K^T and softmax(..) @ V, shapes (B, H, S, D).

    ``FlopCounterMode`` hands custom formulas the shapes of tensor arguments.
    """
    return flop_counter.sdpa_flop_count(tuple(query_shape), tuple(key_shape), tuple(value_shape))


def _extra_attention_ops() -> list:
    names = (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_attention_math",
        "_scaled_dot_product_fused_attention_overrideable",
        "_scaled_dot_product_attention_math_for_mps",
    )
    ops = []
    for name in names:
        packet = getattr(aten, name, None)
        if packet is not None and packet not in flop_counter.flop_registry:
            ops.append(packet)
    return ops


#: Operators added to FlopCounterMode's registry (shape-based formulas).
EXTRA_FLOP_FORMULAS: dict = {op: _sdpa_flops for op in _extra_attention_ops()}


def flop_counter_mode(**kwargs) -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts the CPU/MPS attention kernels."""
    kwargs.setdefault("display", False)
    return FlopCounterMode(custom_mapping=dict(EXTRA_FLOP_FORMULAS), **kwargs)


def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs (2 x multiply-adds) of everything ``fn()`` dispatches."""
    with torch.inference_mode(), flop_counter_mode() as mode:
        fn()
    return int(mode.get_total_flops())
