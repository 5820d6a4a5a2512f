"""The one interface every model in the lab presents to the rest of the package.

A wrapper owns one ``nn.Module`` in eval mode and knows how to make
deterministic inputs for it, run it, and describe it (``info()``). Timing,
profiling, memory, generation, roofline and variants only ever talk to this
interface: everything they may ask is declared on :class:`ModelWrapper` below,
with ``None`` meaning "not applicable to this model" (a CNN has no
``max_seq_len``, a user factory may not know its ``num_layers``). No module
outside ``infopt.models`` branches on a model's name.

Model sources: the built-ins (``resnet.py``, ``transformers_models.py``),
``torchvision:<name>`` (``torchvision_models.py``), ``hf:<folder or hub id>``
(``hf.py``) and ``py:<module>:<function>`` user factories (``factory.py``);
``specs.py`` parses the spec strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from infopt.devices import resolve_device
from infopt.errors import InvalidInputError
from infopt.presets import DEFAULT_SEQ_LEN  # noqa: F401 - sequence length text models run at when none is given

Inputs = dict[str, torch.Tensor]

#: What a model's main output means, by task (the vocabulary of ``ModelWrapper.task``).
TASKS: dict[str, str] = {
    "vision": "image classification: class logits per image",
    "vision-encoder": "image encoder: hidden states per patch (e.g. a ViT without a head)",
    "segmentation": "semantic segmentation: class logits per pixel, as (batch, H, W, classes)",
    "video": "video classification: class logits per clip",
    "causal-lm": "causal language model: next-token logits per position",
    "masked-lm": "masked language model: token logits per position",
    "encoder": "text encoder: hidden states per token",
    "text-classification": "sequence classification: class logits per sequence",
    "generic": "a user model: its first output tensor, compared element-wise",
    "seq2seq": "encoder-decoder (T5, BART, Whisper-style): decoder logits per target position",
    "detection": "object detection (torchvision): per image, rows of x1, y1, x2, y2, score, label (+ x, y, score "
                 "per keypoint), padded to a fixed count with label -1, as (batch, detections, columns)",
}
#: Tasks whose output rows are logits, so an argmax is a decision (used by the accuracy guard).
ARGMAX_TASKS: dict[str, str] = {
    "vision": "top-1 class", "causal-lm": "next-token argmax", "masked-lm": "token argmax",
    "text-classification": "top-1 class", "segmentation": "per-pixel class", "video": "top-1 class",
    "seq2seq": "next-token argmax per target position",
}
#: Tasks whose inputs are token ids.
TEXT_TASKS = ("causal-lm", "masked-lm", "encoder", "text-classification")



def check_batch_size(batch_size: int) -> int:
    """One batch size: an integer of at least 1 (the one check models and the sweeps share)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"Batch size must be an integer of at least 1, got {batch_size!r}.")
    return batch_size


class ModelWrapper(ABC):
    """Common behaviour and the declared interface; subclasses set the attributes and ``build``.

    Attributes other modules may read (``None`` = not applicable):

    * ``name``: display name (the built-in name, or e.g. ``torchvision:vit_b_16``);
      ``spec``: the full spec string that rebuilds it (stored with every result).
    * ``task``: a key of :data:`TASKS`; ``is_text`` (inputs are token ids),
      ``is_causal_lm`` (``module.generate`` and a KV cache work).
    * ``image_size``: square input side in pixels (image models).
    * ``max_seq_len``: longest sequence the model accepts (text models).
    * ``num_layers``, ``hidden_size``, ``num_kv_heads``, ``head_dim``: for the
      analytic KV-cache size ``2 x layers x batch x seq x kv_heads x head_dim x bytes``
      (grouped-query attention has fewer KV heads than query heads).
    * ``config``: the Hugging Face config (generation reads its special ids), else ``None``.
    * ``attn_implementation``: the switchable attention kernel (``"sdpa"``,
      ``"eager"``), ``None`` when the model has no switch.
    * ``has_image_input``: inputs include a 4-D ``(batch, channels, H, W)`` image.
    * ``is_encoder_decoder``: an encoder-decoder (task ``seq2seq``): ``num_layers``,
      ``num_kv_heads`` and ``head_dim`` then describe the *decoder* (its self-attention
      cache, and its cross-attention cache over the encoder's output positions);
      ``encoder_layers``: the encoder's layer count; ``max_decoder_len``: the
      decoder's longest sequence (``None`` when unbounded or not applicable).
    * ``stages``: the model's own stages as ``(stage, submodule names, what it does)``
      in call order (a detector's transform, backbone, heads; a stage naming no
      submodule is the time spent outside every named one), for the profile's stage
      table; ``None``: no stages.

    Methods: ``prepare_input`` and ``forward`` (abstract), ``items_per_batch``,
    ``tokens_per_batch``, ``check_seq_len``, ``flops_per_sample``,
    ``parameter_count``, ``weight_bytes``, ``info``, ``to``, ``variant_reason``.
    """

    name: ClassVar[str] = "model"
    task: ClassVar[str] = "generic"
    is_text: ClassVar[bool] = False
    is_causal_lm: ClassVar[bool] = False
    is_encoder_decoder: ClassVar[bool] = False
    source: ClassVar[str] = ""
    image_size: int | None = None
    max_seq_len: int | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    encoder_layers: int | None = None
    max_decoder_len: int | None = None
    stages: tuple[tuple[str, tuple[str, ...], str], ...] | None = None
    config: Any = None

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
        self.spec = self.name
        #: Extra facts for ``info()`` (e.g. how the task was chosen, a shrunk config).
        self.details: dict[str, Any] = {}
        self.device = torch.device("cpu")
        self._flops_cache: dict[Any, int] = {}
        self.to(device)

    # -- inputs ----------------------------------------------------------
    @abstractmethod
    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """Deterministic inputs for ``batch_size`` samples, on the model's device."""
        raise NotImplementedError

    def items_per_batch(self, inputs: Inputs) -> int:
        """How many samples ``inputs`` holds (the throughput unit)."""
        return int(next(iter(inputs.values())).shape[0])

    def tokens_per_batch(self, inputs: Inputs) -> int | None:
        """How many tokens ``inputs`` holds, for text models; ``None`` otherwise."""
        return None

    def check_seq_len(self, seq_len: int) -> int:
        """``seq_len`` if this text model accepts it, else one clear error (limit named)."""
        if not self.is_text:
            raise InvalidInputError(f"{self.name} does not take token sequences, so a sequence length does not apply.")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise InvalidInputError(f"Sequence length must be an integer of at least 1, got {seq_len!r}.")
        if self.max_seq_len is not None and seq_len > self.max_seq_len:
            raise InvalidInputError(
                f"Sequence length {seq_len} exceeds {self.name}'s limit of {self.max_seq_len} positions.")
        return seq_len

    def _check_batch_size(self, batch_size: int) -> int:
        return check_batch_size(batch_size)

    def _generator(self, seed: int | None) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed if seed is None else seed)

    # -- running ---------------------------------------------------------
    @abstractmethod
    def forward(self, inputs: Inputs) -> torch.Tensor:
        """Run the model and return its main output tensor (logits or hidden state)."""
        raise NotImplementedError

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        return self.forward(inputs)  # the subclass's forward (a class-level alias would bind the abstract one)

    def to(self, device: str | torch.device) -> "ModelWrapper":
        """Move the model to ``device`` (validated: never silently another one)."""
        self.device = resolve_device(device)
        self.module.to(self.device)
        return self

    # -- description -----------------------------------------------------
    @property
    def attn_implementation(self) -> str | None:
        """The attention kernel a Hugging Face model runs (switchable), else ``None``."""
        config = getattr(self.module, "config", None)
        if config is None or not hasattr(self.module, "set_attn_implementation"):
            return None
        return getattr(config, "_attn_implementation", None)

    @property
    def has_image_input(self) -> bool:
        """True when the inputs hold a 4-D image batch (what channels-last changes)."""
        return self.task in ("vision", "vision-encoder", "segmentation", "detection")

    def convert_inputs(self, inputs: Inputs) -> Inputs:
        """Inputs as this model takes them (an optimization variant casts them; the model itself as they are)."""
        return inputs

    def variant_reason(self, variant: Any) -> str | None:
        """Why an optimization variant (read: its ``name``, ``group``, ``compiles``) cannot apply to this model,
        beyond the tasks and devices the variant declares; ``None``: no objection from the model."""
        return None

    @property
    def kv_width(self) -> int | None:
        """Elements per token per layer in each of K and V (``num_kv_heads x head_dim``), or ``None``."""
        if self.num_kv_heads is None or self.head_dim is None:
            return None
        return int(self.num_kv_heads) * int(self.head_dim)

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
        from infopt.flops import count_flops

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
            "spec": getattr(self, "spec", self.name),
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
            **getattr(self, "details", {}),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} size={self.size} weights={self.weights} device={self.device}>"
