"""FLOP counting from a real forward pass.

FLOPs here are floating-point operations = 2 x multiply-adds (a multiply-add
is two operations), as counted by ``torch.utils.flop_counter.FlopCounterMode``
on the operators the model actually dispatches. ``FlopCounterMode`` knows the
CUDA attention kernels but not the scaled-dot-product-attention kernels that
CPU (and MPS) run, nor the eval-mode fast paths of ``nn.MultiheadAttention``
(``aten._native_multi_head_attention``, used by torchvision's ViT) and
``nn.TransformerEncoderLayer`` (``aten._transformer_encoder_layer_fwd``, the
whole layer in one kernel), so those are added here; without them text models
and ViTs would silently lose their attention FLOPs (a third of ViT-B/16's) and
a user's ``nn.TransformerEncoder`` would count zero.
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


def _native_mha_flops(query_shape, key_shape, value_shape, embed_dim, num_head, *args, out_shape=None,
                      **kwargs) -> int:
    """Forward FLOPs of ``aten._native_multi_head_attention`` (the whole block, one fused kernel).

    Input projections of query (Sq x E x E) and key/value (2 x Sk x E x E),
    attention (Q @ K^T and P @ V: 2 x H x Sq x Sk x E/H) and the output
    projection (Sq x E x E) multiply-adds, times 2, per batch element. Inputs
    are ``(B, S, E)`` or unbatched ``(S, E)``.
    """
    query_shape, key_shape = tuple(query_shape), tuple(key_shape)
    batch = 1
    for size in query_shape[:-2]:
        batch *= int(size)
    seq_q, seq_k, embed = int(query_shape[-2]), int(key_shape[-2]), int(embed_dim)
    multiply_adds = seq_q * embed * embed + 2 * seq_k * embed * embed + 2 * seq_q * seq_k * embed \
        + seq_q * embed * embed
    return 2 * batch * multiply_adds


def _encoder_layer_flops(src_shape, embed_dim, num_head, qkv_weight_shape, qkv_bias_shape, proj_weight_shape,
                         proj_bias_shape, use_gelu, norm_first, eps, norm_weight_1_shape, norm_bias_1_shape,
                         norm_weight_2_shape, norm_bias_2_shape, ffn_weight_1_shape, *args, out_shape=None,
                         **kwargs) -> int:
    """Forward FLOPs of ``aten._transformer_encoder_layer_fwd``: self-attention plus the two feed-forward matmuls."""
    src_shape = tuple(src_shape)
    batch = 1
    for size in src_shape[:-2]:
        batch *= int(size)
    seq = int(src_shape[-2])
    feed_forward = int(tuple(ffn_weight_1_shape)[0])
    attention = _native_mha_flops(src_shape, src_shape, src_shape, embed_dim, num_head)
    return attention + 2 * batch * seq * 2 * int(embed_dim) * feed_forward


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
for _packet, _formula in ((aten._native_multi_head_attention, _native_mha_flops),
                          (aten._transformer_encoder_layer_fwd, _encoder_layer_flops)):
    if _packet not in flop_counter.flop_registry:
        EXTRA_FLOP_FORMULAS[_packet] = _formula


def flop_counter_mode(**kwargs) -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts the CPU/MPS attention kernels and the fused MHA fast path."""
    kwargs.setdefault("display", False)
    return FlopCounterMode(custom_mapping=dict(EXTRA_FLOP_FORMULAS), **kwargs)


def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs (2 x multiply-adds) of everything ``fn()`` dispatches."""
    with torch.inference_mode(), flop_counter_mode() as mode:
        fn()
    return int(mode.get_total_flops())
