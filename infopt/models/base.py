"""The wrapper every model in the lab presents to the rest of the package.

A wrapper owns one ``nn.Module`` in eval mode and knows how to make
deterministic inputs for it, run it, and describe it (``info()``). Timing,
profiling and variants only ever talk to this interface, so adding a model
means writing one small subclass (see ``resnet.py`` for a vision model and
``transformers_models.py`` for text models) and one registry line.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..devices import resolve_device
from ..errors import InvalidInputError

Inputs = dict[str, torch.Tensor]

#: Sequence length text models run at when none is given.
DEFAULT_SEQ_LEN = 128


class ModelWrapper:
    """Common behaviour; subclasses set the class attributes and ``build``."""

    name: ClassVar[str] = "model"
    task: ClassVar[str] = "generic"          # "vision", "encoder", "causal-lm"
    is_text: ClassVar[bool] = False
    is_causal_lm: ClassVar[bool] = False
    source: ClassVar[str] = ""

    def __init__(self, module: nn.Module, *, device: str | torch.device = "cpu", weights: str = "random",
                 size: str = "full", seed: int = 42, options: dict | None = None):
        self.module = module.eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.weights = weights
        self.size = size
        self.seed = seed
        self.options = dict(options or {})
        self.variant = "eager-fp32"
        self.device = torch.device("cpu")
        self._flops_cache: dict[Any, int] = {}
        self.to(device)

    # -- inputs ----------------------------------------------------------
    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """Deterministic inputs for ``batch_size`` samples, on the model's device."""
        raise NotImplementedError

    def items_per_batch(self, inputs: Inputs) -> int:
        """How many samples ``inputs`` holds (the throughput unit)."""
        return int(next(iter(inputs.values())).shape[0])

    def tokens_per_batch(self, inputs: Inputs) -> int | None:
        """How many tokens ``inputs`` holds, for text models; ``None`` otherwise."""
        return None

    def _check_batch_size(self, batch_size: int) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"Batch size must be an integer of at least 1, got {batch_size!r}.")
        return batch_size

    def _generator(self, seed: int | None) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed if seed is None else seed)

    # -- running ---------------------------------------------------------
    def forward(self, inputs: Inputs) -> torch.Tensor:
        """Run the model and return its main output tensor (logits or hidden state)."""
        raise NotImplementedError

    __call__ = forward

    def to(self, device: str | torch.device) -> "ModelWrapper":
        """Move the model to ``device`` (validated: never silently another one)."""
        self.device = resolve_device(device)
        self.module.to(self.device)
        return self

    # -- description -----------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def parameter_count(self) -> int:
        """Exact number of distinct parameters (tied weights counted once)."""
        seen: set[int] = set()
        total = 0
        for parameter in self.module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                total += parameter.numel()
        return total

    def weight_bytes(self) -> int:
        """Bytes of all distinct parameters and buffers."""
        seen: set[int] = set()
        total = 0
        for tensor in list(self.module.parameters()) + list(self.module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
        return total

    def flops_per_sample(self, seq_len: int | None = None) -> int:
        """FLOPs (2 x multiply-adds) of one sample's forward, counted on the real model.

        Counted on a batch of one with :func:`infopt.flops.count_flops`, which
        includes attention kernels that ``FlopCounterMode`` skips by default.
        """
        from ..flops import count_flops

        key = seq_len if self.is_text else "image"
        if key not in self._flops_cache:
            inputs = self.prepare_input(1, seq_len)
            self._flops_cache[key] = count_flops(lambda: self.forward(inputs))
        return self._flops_cache[key]

    def input_description(self, seq_len: int | None = None) -> dict:
        return {}

    def info(self, seq_len: int | None = None) -> dict:
        """A JSON-safe description: sizes, dtype, device and FLOPs per sample."""
        return {
            "model": self.name,
            "task": self.task,
            "source": self.source,
            "size": self.size,
            "weights": self.weights,
            "variant": self.variant,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "parameters": self.parameter_count(),
            "weight_bytes": self.weight_bytes(),
            "flops_per_sample": self.flops_per_sample(seq_len),
            "flops_definition": "floating-point operations per sample = 2 x multiply-adds, "
                                "counted from one real forward (attention included)",
            **self.input_description(seq_len),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} size={self.size} weights={self.weights} device={self.device}>"
