"""``hf:<folder or hub id>``: any Hugging Face transformers architecture from its ``config.json``.

* Source: a local folder holding ``config.json`` (weights optional), or a hub
  id already in the local Hugging Face cache. Offline by default: the network
  is used only when allowed (``?network=true`` or ``INFOPT_ALLOW_NETWORK=1``),
  never as a silent fallback.
* Weights: seeded random from the config (default); ``weights="pretrained"``
  loads the weights present locally (or downloads them when allowed).
* Task: from ``config.architectures[0]``; without it, inferred from
  ``model_type``; a ``task=`` option wins. ``info()["task_source"]`` says
  which was used. Encoder-decoder configs (``is_encoder_decoder``: T5, BART,
  Marian, Whisper-style speech) get task ``seq2seq`` and the wrapper of
  :mod:`infopt.models.seq2seq` (option ``decoder_len``: decoder positions a
  forward runs on).
* ``size="tiny"`` (quick runs): the config is shrunk to 2 layers and 16-wide
  heads (grouped-query ratio kept), recorded in ``info()["shrunk_config"]``.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infopt.determinism import seed_everything
from infopt.errors import InvalidInputError, WeightsUnavailableError
from infopt.models.base import DEFAULT_SEQ_LEN, TEXT_TASKS, Inputs, ModelWrapper
from infopt.models.seq2seq import Seq2SeqModel, is_speech_config, seq2seq_class_name, shrink_seq2seq_config
from infopt.models.specs import ModelSpec, is_path_like

#: task -> (transformers auto class, its mapping of model_type -> class name, output field).
TASK_CLASSES = {
    "causal-lm": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "logits"),
    "masked-lm": ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "logits"),
    "text-classification": ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                            "logits"),
    "vision": ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "logits"),
    "encoder": ("AutoModel", "MODEL_MAPPING_NAMES", "last_hidden_state"),
    "vision-encoder": ("AutoModel", "MODEL_MAPPING_NAMES", "last_hidden_state"),
}
SUPPORTED = ("causal LMs (*ForCausalLM), masked LMs (*ForMaskedLM), sequence classifiers "
             "(*ForSequenceClassification), image classifiers (*ForImageClassification) and base text or "
             "vision encoders (*Model, e.g. BertModel, ViTModel)")
OPTIONS = ("task", "network", "attn_implementation", "image_size", "decoder_len")
#: Input side for vision configs that do not declare ``image_size`` (e.g. ResNet-style).
DEFAULT_IMAGE_SIZE = 224
#: Quick-run (size="tiny") shape: layers, width per head, KV-head and query-head caps (the query heads
#: per KV head are kept, so a large group may exceed the query cap), vocabulary cap.
TINY_LAYERS, TINY_HEAD_DIM, TINY_MAX_KV_HEADS, TINY_MAX_HEADS, TINY_VOCAB = 2, 16, 2, 8, 1024
_SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id",
                "mask_token_id", "unk_token_id", "decoder_start_token_id")


def _mapping(name: str) -> dict:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, name)


def _class_names(mapping: dict) -> set[str]:
    names: set[str] = set()
    for value in mapping.values():
        names.update(value if isinstance(value, (list, tuple)) else [value])
    return names


def _truthy(value) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")


def network_allowed(options: dict) -> bool:
    """The network may be used for ``hf:`` specs only when the user said so (and HF is not offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    return _truthy(options.get("network", False)) or _truthy(os.environ.get("INFOPT_ALLOW_NETWORK", ""))


@dataclass
class HFSource:
    """A resolved ``hf:`` spec: where the config came from and which task it runs."""

    spec: ModelSpec          # canonical: a local folder as an absolute path
    location: str            # folder path or hub id, as given to from_pretrained
    is_folder: bool
    config: Any
    task: str
    task_source: str
    network: bool


def _is_vision_config(config) -> bool:
    """Image models have input channels and no vocabulary (ResNet-style configs have no image_size)."""
    return hasattr(config, "num_channels") and not hasattr(config, "vocab_size")


def _locate(target: str, options: dict) -> tuple[str, bool, bool]:
    """(location, is_folder, network) for a target, or one clear error."""
    path = Path(target).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"Folder {path.resolve()} has no config.json: an hf: folder needs the model's "
                                    "config.json (weights are optional).")
        return str(path.resolve()), True, False
    if path.exists():
        raise InvalidInputError(f"hf:{target} is a file; give the folder that holds config.json.")
    if is_path_like(target) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", target):
        raise InvalidInputError(f"hf:{target}: no such folder (and not a hub id such as 'org/name').")
    network = network_allowed(options)
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(target, "config.json")
    if isinstance(cached, str):
        return target, False, network
    if not network:
        raise InvalidInputError(
            f"hf:{target} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and hf: specs stay "
            f"offline unless allowed: run `hf download {target}` on a machine with network access (or copy the "
            f"model folder here and use hf:<folder>), or allow the network with 'hf:{target}?network=true' "
            f"or INFOPT_ALLOW_NETWORK=1.")
    return target, False, True


def _load_config(location: str, network: bool, target: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(location, local_files_only=not network)
    except Exception as error:  # noqa: BLE001 - one sentence whatever transformers raised
        import transformers

        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InvalidInputError(f"hf:{target}: transformers {transformers.__version__} cannot read its config "
                                f"({first})") from None


def _resolve_task(config, options: dict, target: str) -> tuple[str, str]:
    model_type = getattr(config, "model_type", None)
    requested = options.get("task")
    if getattr(config, "is_encoder_decoder", False):
        if requested not in (None, "seq2seq"):
            raise InvalidInputError(f"hf:{target} is an encoder-decoder model ({model_type}): its task is seq2seq, "
                                    f"not {requested!r}.")
        seq2seq_class_name(config, target)  # refuses the encoder-decoders it cannot build
        return "seq2seq", f"config.is_encoder_decoder ({model_type})"
    if requested == "seq2seq":
        raise InvalidInputError(f"hf:{target}: task=seq2seq needs an encoder-decoder config "
                                f"(is_encoder_decoder); {model_type} is not one.")
    if "decoder_len" in options:
        raise InvalidInputError(f"hf:{target}: decoder_len applies only to encoder-decoder models.")
    if requested is not None:
        if requested not in TASK_CLASSES:
            raise InvalidInputError(f"task={requested!r} is not supported for hf: models: choose one of "
                                    f"{', '.join(TASK_CLASSES)}.")
        task, source = requested, "task= option"
    elif getattr(config, "architectures", None):
        architecture = config.architectures[0]
        task = next((name for name in ("causal-lm", "masked-lm", "text-classification", "vision")
                     if architecture in _class_names(_mapping(TASK_CLASSES[name][1]))), None)
        if task is None and architecture in _class_names(_mapping("MODEL_MAPPING_NAMES")):
            task = "vision-encoder" if _is_vision_config(config) else "encoder"
        if task is None:
            raise InvalidInputError(f"hf:{target}: architecture {architecture} is not supported; the lab runs "
                                    f"{SUPPORTED} (or pass ?task=... with one of {', '.join(TASK_CLASSES)}).")
        source = f"config.architectures[0] = {architecture}"
    else:
        if _is_vision_config(config):
            task = "vision-encoder"
        elif model_type in _mapping("MODEL_FOR_MASKED_LM_MAPPING_NAMES"):
            task = "encoder"
        elif model_type in _mapping("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"):
            task = "causal-lm"
        elif model_type in _mapping("MODEL_MAPPING_NAMES"):
            task = "encoder"
        else:
            raise InvalidInputError(f"hf:{target}: model_type {model_type!r} has no supported task; the lab runs "
                                    f"{SUPPORTED}.")
        source = (f"inferred from model_type '{model_type}' (config.json lists no architectures; "
                  f"pass ?task=... to choose)")
    if model_type not in _mapping(TASK_CLASSES[task][1]):
        raise InvalidInputError(f"hf:{target}: transformers has no {task} class for model_type {model_type!r}; "
                                f"the lab runs {SUPPORTED}.")
    if (task in TEXT_TASKS) == _is_vision_config(config):
        kind = "an image" if _is_vision_config(config) else "a text"
        raise InvalidInputError(f"hf:{target}: task {task} does not fit {kind} model ({model_type}).")
    return task, source


def resolve_hf(target: str, options: dict) -> HFSource:
    """Locate the config, read it and choose the task; cheap (no model is built)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(f"Unknown option(s) for hf:{target}: {', '.join(unknown)} "
                                f"(supported: {', '.join(OPTIONS)}).")
    location, is_folder, network = _locate(target, options)
    config = _load_config(location, network, target)
    task, task_source = _resolve_task(config, options, target)
    spec = ModelSpec("hf", location if is_folder else target, dict(options))
    return HFSource(spec, location, is_folder, config, task, task_source, network)


def shrink_config(config) -> dict:
    """Make ``config`` tiny in place (quick runs); returns ``{attribute: [old, new]}`` of what changed.

    Keeps the architecture and its grouped-query ratio (query heads per KV
    head); 2 layers, 16-wide heads, a vocabulary of at most 1024 ids. Configs
    that are not a uniform transformer stack (per-stage widths, e.g. ConvNeXt,
    Swin) keep their shape: an empty result means "model as given".
    """
    if getattr(config, "is_encoder_decoder", False):
        return shrink_seq2seq_config(config)
    changes: dict[str, list] = {}

    def reduce(name: str, value) -> None:
        old = getattr(config, name, None)
        if isinstance(old, int) and not isinstance(old, bool) and value < old:
            setattr(config, name, value)
            changes[name] = [old, value]

    heads = getattr(config, "num_attention_heads", None)
    if isinstance(heads, int):
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        group = max(1, heads // kv_heads)
        new_kv = max(1, min(kv_heads, TINY_MAX_KV_HEADS, TINY_MAX_HEADS // group))
        new_heads = new_kv * group
        hidden = new_heads * TINY_HEAD_DIM
        reduce("num_attention_heads", new_heads)
        reduce("num_key_value_heads", new_kv)
        reduce("hidden_size", hidden)
        reduce("head_dim", TINY_HEAD_DIM)
        reduce("intermediate_size", 4 * hidden)
        reduce("hidden_dim", 4 * hidden)  # DistilBERT's feed-forward width
        # transformer stacks only: in staged CNN-like configs (ConvNeXt, Swin) "layers" are stages
        reduce("num_hidden_layers", TINY_LAYERS)
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:config.num_hidden_layers]
    vocab = getattr(config, "vocab_size", None)
    reduce("vocab_size", TINY_VOCAB)
    if isinstance(vocab, int) and config.vocab_size < vocab:
        for name in _SPECIAL_IDS:  # special ids beyond the smaller vocabulary move to its last id
            value = getattr(config, name, None)
            if isinstance(value, int) and value >= config.vocab_size:
                setattr(config, name, config.vocab_size - 1)
                changes[name] = [value, config.vocab_size - 1]
            elif isinstance(value, list) and any(v >= config.vocab_size for v in value):
                setattr(config, name, [min(v, config.vocab_size - 1) for v in value])
                changes[name] = [value, getattr(config, name)]
    return changes


class HFModel(ModelWrapper):
    """A transformers model built from a config; the main output depends on the task."""

    def __init__(self, module, *, task: str, output_field: str, **kwargs):
        self.task = task
        self.is_text = task in TEXT_TASKS
        self.is_causal_lm = task == "causal-lm"
        self.output_field = output_field
        super().__init__(module, **kwargs)
        self._allowed_ids: torch.Tensor | None = None

    @property
    def config(self):
        return self.module.config

    def _get(self, *names):
        for name in names:
            value = getattr(self.config, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def max_seq_len(self) -> int | None:
        return self._get("max_position_embeddings", "n_positions") if self.is_text else None

    @property
    def num_layers(self) -> int | None:
        return self._get("num_hidden_layers")

    @property
    def hidden_size(self) -> int | None:
        return self._get("hidden_size")

    @property
    def num_kv_heads(self) -> int | None:
        return self._get("num_key_value_heads", "num_attention_heads")

    @property
    def head_dim(self) -> int | None:
        explicit = self._get("head_dim")
        heads = self._get("num_attention_heads")
        if explicit is not None:
            return explicit
        return self.hidden_size // heads if self.hidden_size and heads else None

    @property
    def image_size(self) -> int | None:
        """The ``image_size`` option, else the config's, else 224 (vision models only)."""
        if self.is_text:
            return None
        size = self.options.get("image_size") or getattr(self.config, "image_size", None) or DEFAULT_IMAGE_SIZE
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def allowed_token_ids(self) -> torch.Tensor:
        """Every id of the vocabulary except the config's special ids (pad, bos, eos, ...)."""
        if self._allowed_ids is None:
            special: set[int] = set()
            for name in _SPECIAL_IDS:
                value = getattr(self.config, name, None)
                special.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
            ids = torch.arange(int(self.config.vocab_size))
            keep = torch.ones_like(ids, dtype=torch.bool)
            keep[[i for i in special if 0 <= i < len(ids)]] = False
            self._allowed_ids = ids[keep]
        return self._allowed_ids

    def default_seq_len(self) -> int:
        return min(DEFAULT_SEQ_LEN, self.max_seq_len or DEFAULT_SEQ_LEN)

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """Random ordinary token ids with a full mask (text), or normalized random images (vision)."""
        self._check_batch_size(batch_size)
        generator = self._generator(seed)
        if self.is_text:
            seq_len = self.check_seq_len(self.default_seq_len() if seq_len is None else seq_len)
            allowed = self.allowed_token_ids()
            picks = torch.randint(0, len(allowed), (batch_size, seq_len), generator=generator)
            ids = allowed[picks]
            return {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids).to(self.device)}
        if seq_len is not None:
            raise InvalidInputError(f"{self.name} takes images, not sequences: do not pass seq_len.")
        channels = int(getattr(self.config, "num_channels", 3))
        pixels = torch.rand(batch_size, channels, self.image_size, self.image_size, generator=generator)
        return {"pixel_values": ((pixels - 0.5) / 0.5).to(self.device)}

    def tokens_per_batch(self, inputs: Inputs) -> int | None:
        return int(inputs["input_ids"].numel()) if self.is_text else None

    def forward(self, inputs: Inputs) -> torch.Tensor:
        extra = {"use_cache": False} if self.is_causal_lm else {}
        return getattr(self.module(**inputs, **extra), self.output_field)

    def flops_per_sample(self, seq_len: int | None = None) -> int:
        return super().flops_per_sample(self.default_seq_len() if self.is_text and seq_len is None else seq_len)

    def input_description(self, seq_len: int | None = None) -> dict:
        if not self.is_text:
            return {"input": f"{getattr(self.config, 'num_channels', 3)}x{self.image_size}x{self.image_size} image",
                    "image_size": self.image_size, "layers": self.num_layers, "hidden_size": self.hidden_size,
                    "attn_implementation": self.attn_implementation}
        return {"input": "token ids with full attention mask",
                "seq_len": self.default_seq_len() if seq_len is None else seq_len,
                "max_seq_len": self.max_seq_len, "vocab_size": self.config.vocab_size,
                "attn_implementation": self.attn_implementation, "layers": self.num_layers,
                "hidden_size": self.hidden_size, "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim}


def _weights_file_present(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def build_hf(spec: ModelSpec, *, weights: str, size: str, seed: int) -> ModelWrapper:
    """Build the model an ``hf:`` spec names (see the module docstring)."""
    import transformers

    source = resolve_hf(spec.target, dict(spec.options))
    config = copy.deepcopy(source.config)
    changes: dict = {}
    if size == "tiny":
        if weights == "pretrained":
            raise InvalidInputError(f"Pretrained weights need the model's own size: load {spec.display_name} "
                                    "with size='full' (a quick run shrinks the config and uses random weights).")
        changes = shrink_config(config)
    if source.task == "text-classification" and getattr(config, "pad_token_id", None) is None:
        # batched sequence classification needs a padding id; inputs never contain it (special ids are skipped)
        config.pad_token_id = config.eos_token_id if isinstance(config.eos_token_id, int) else config.vocab_size - 1
    if source.task == "seq2seq":
        class_name, output_field = seq2seq_class_name(config, spec.target), "logits"
    else:
        class_name, _, output_field = TASK_CLASSES[source.task]
    auto_class = getattr(transformers, class_name)
    kwargs: dict[str, Any] = {}
    if "attn_implementation" in spec.options:
        kwargs["attn_implementation"] = spec.options["attn_implementation"]
    seed_everything(seed)
    try:
        if weights == "pretrained":
            if source.is_folder and not _weights_file_present(Path(source.location)):
                raise WeightsUnavailableError(
                    f"No weights (*.safetensors or pytorch_model*.bin) in {source.location}: put them there or "
                    "use weights='random'.")
            try:
                module = auto_class.from_pretrained(source.location, config=config,
                                                   local_files_only=not source.network, **kwargs)
            except OSError as error:
                raise WeightsUnavailableError(
                    f"Weights for hf:{spec.target} are not available locally ({str(error).splitlines()[0]}): "
                    "download them where there is network access, allow it with ?network=true, or use "
                    "weights='random'.") from None
        else:
            module = auto_class.from_config(config, **kwargs)
    except (WeightsUnavailableError, InvalidInputError):
        raise
    except (ValueError, ImportError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InvalidInputError(f"hf:{spec.target}: transformers could not build {class_name} "
                                f"({type(error).__name__}: {first})") from None
    loaded_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in module.parameters()})
    module = module.float()  # the lab's baseline is fp32 (a config's torch_dtype may say bf16); variants lower it
    if source.task == "seq2seq":
        wrapper = Seq2SeqModel(module, speech=is_speech_config(config), weights=weights, size=size, seed=seed,
                               options=dict(spec.options))
    else:
        wrapper = HFModel(module, task=source.task, output_field=output_field, weights=weights, size=size,
                          seed=seed, options=dict(spec.options))
    wrapper.name = source.spec.display_name
    wrapper.spec = source.spec.text
    wrapper.source = f"transformers.{type(module).__name__} from {source.location}"
    wrapper.details = {"task_source": source.task_source, "model_type": getattr(config, "model_type", None)}
    if loaded_dtypes != ["float32"]:
        wrapper.details["loaded_dtype"] = ", ".join(loaded_dtypes) + " (cast to float32)"
    if changes:
        wrapper.details["shrunk_config"] = changes
        wrapper.details["size_note"] = ("quick run: config shrunk to " + ", ".join(
            f"{k}={v[1]}" for k, v in changes.items() if not k.endswith("_token_id")) + " (smoke test only)")
    elif size == "tiny":
        wrapper.details["size_note"] = "quick run: this config has no uniform transformer stack to shrink; as given"
    return wrapper


__all__ = ["HFModel", "HFSource", "TASK_CLASSES", "build_hf", "network_allowed", "resolve_hf", "shrink_config"]
