"""Encoder-decoder models (T5, BART, Marian, Whisper-style speech): ``hf:`` folders whose config has
``is_encoder_decoder``.

``hf.py`` reads the config and builds the transformers module; this module owns what is particular
to encoder-decoders: which auto class builds them (:func:`seq2seq_class_name`), the quick-run shrink
(:func:`shrink_seq2seq_config`) and the wrapper (:class:`Seq2SeqModel`).

* Inputs: text encoders take seeded ordinary token ids (``input_ids``, a full ``attention_mask``);
  Whisper-style speech encoders take seeded log-mel ``input_features`` of the configured size
  (``num_mel_bins`` x ``2 x max_source_positions`` frames, what the encoder's two convolutions expect).
  Both add ``decoder_input_ids``: the decoder start token and ``decoder_len - 1`` ordinary ids.
* ``forward`` returns the decoder logits ``(batch, decoder_len, vocab)`` (task ``seq2seq``).
* The KV-cache interface (``num_layers``, ``num_kv_heads``, ``head_dim``) describes the *decoder*; the
  cross-attention cache holds ``encoder_output_len(seq_len)`` positions per decoder layer.
* ``encoder_flops`` and ``decoder_step_flops`` count one encoder pass and one cached decoder step
  from real calls (:func:`infopt.flops.count_flops`).
"""

from __future__ import annotations

from typing import Any

import torch

from infopt.errors import InvalidInputError
from infopt.models.base import DEFAULT_SEQ_LEN, Inputs, ModelWrapper

#: Decoder positions a forward runs on (the start token and this many minus one ordinary ids).
DEFAULT_DECODER_LEN = 4
#: Quick-run (size="tiny") shape: layers per stack, heads, width per head, vocabulary cap, speech positions.
TINY_LAYERS, TINY_HEADS, TINY_HEAD_DIM, TINY_VOCAB, TINY_SOURCE_POSITIONS = 2, 2, 16, 1024, 64
SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "mask_token_id",
               "unk_token_id", "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id")
SUPPORTED = ("text encoder-decoders with a language-model head (AutoModelForSeq2SeqLM: T5, BART, Marian, ...) and "
             "Whisper-style speech encoder-decoders (AutoModelForSpeechSeq2Seq with num_mel_bins and "
             "max_source_positions)")


def _mapping(name: str) -> dict:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, name)


def is_speech_config(config) -> bool:
    """A Whisper-style speech encoder: log-mel features in, a fixed number of frames."""
    return isinstance(getattr(config, "num_mel_bins", None), int) and \
        isinstance(getattr(config, "max_source_positions", None), int)


def seq2seq_class_name(config, target: str) -> str:
    """The transformers auto class that builds this encoder-decoder, or one clear refusal."""
    model_type = getattr(config, "model_type", None)
    if model_type in _mapping("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"):
        if not is_speech_config(config):
            raise InvalidInputError(
                f"hf:{target} is a speech encoder-decoder ({model_type}) without num_mel_bins and "
                f"max_source_positions (Whisper-style log-mel input); the lab runs {SUPPORTED}.")
        return "AutoModelForSpeechSeq2Seq"
    if model_type in _mapping("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"):
        return "AutoModelForSeq2SeqLM"
    raise InvalidInputError(f"hf:{target} is an encoder-decoder model ({model_type}) that transformers has no "
                            f"sequence-to-sequence LM class for; the lab runs {SUPPORTED}.")


def _ids_within(config, vocab: int, changes: dict) -> None:
    for name in SPECIAL_IDS:  # special ids beyond a smaller vocabulary move to its last id
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= vocab:
            setattr(config, name, vocab - 1)
            changes[name] = [value, vocab - 1]
    for name in ("suppress_tokens", "begin_suppress_tokens"):  # Whisper: lists of ids
        value = getattr(config, name, None)
        if isinstance(value, list) and any(v >= vocab for v in value):
            setattr(config, name, [v for v in value if v < vocab])
            changes[name] = ["...", "ids below the vocabulary"]


def shrink_seq2seq_config(config) -> dict:
    """Make an encoder-decoder config tiny in place; ``{attribute: [old, new]}`` of what changed.

    2 encoder and 2 decoder layers, 2 heads of 16 (width 32), feed-forward 4 x width, vocabulary of at
    most 1024 ids; a speech encoder keeps its mel bins and takes at most 64 source positions (128 frames).
    """
    changes: dict[str, list] = {}
    names = set(vars(config)) | set(getattr(config, "attribute_map", {}))

    def reduce(name: str, value: int) -> None:
        if name not in names:
            return
        old = getattr(config, name, None)
        if isinstance(old, int) and not isinstance(old, bool) and value < old:
            setattr(config, name, value)
            changes[name] = [old, value]

    width = TINY_HEADS * TINY_HEAD_DIM
    for name in ("num_heads", "encoder_attention_heads", "decoder_attention_heads", "num_attention_heads"):
        reduce(name, TINY_HEADS)
    reduce("d_kv", TINY_HEAD_DIM)
    reduce("d_model", width)
    for name in ("d_ff", "encoder_ffn_dim", "decoder_ffn_dim"):
        reduce(name, 4 * width)
    for name in ("num_layers", "num_decoder_layers", "encoder_layers", "decoder_layers"):
        reduce(name, TINY_LAYERS)
    reduce("max_source_positions", TINY_SOURCE_POSITIONS)
    vocab = getattr(config, "vocab_size", None)
    reduce("vocab_size", TINY_VOCAB)
    if isinstance(vocab, int) and config.vocab_size < vocab:
        _ids_within(config, config.vocab_size, changes)
        if isinstance(getattr(config, "decoder_vocab_size", None), int):  # Marian
            reduce("decoder_vocab_size", config.vocab_size)
    return changes


class Seq2SeqModel(ModelWrapper):
    """An encoder-decoder built from a config: decoder logits for a few target positions."""

    task = "seq2seq"
    is_encoder_decoder = True

    def __init__(self, module, *, speech: bool, **kwargs):
        self.is_text = not speech
        super().__init__(module, **kwargs)
        decoder_len = self.options.get("decoder_len", DEFAULT_DECODER_LEN)
        try:
            self.decoder_len = int(decoder_len)
        except (TypeError, ValueError):
            self.decoder_len = 0
        if self.decoder_len < 1 or str(decoder_len) != str(self.decoder_len):
            raise InvalidInputError(f"decoder_len must be an integer of at least 1, got {decoder_len!r}.")
        self._allowed_ids: torch.Tensor | None = None

    @property
    def config(self):
        return self.module.config

    def _get(self, *names) -> int | None:
        for name in names:
            value = getattr(self.config, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    # -- the interface's sizes (decoder for the KV cache) ------------------------------------------
    @property
    def num_layers(self) -> int | None:
        return self._get("decoder_layers", "num_decoder_layers", "num_layers")

    @property
    def encoder_layers(self) -> int | None:
        return self._get("encoder_layers", "num_layers")

    @property
    def hidden_size(self) -> int | None:
        return self._get("d_model", "hidden_size")

    @property
    def num_kv_heads(self) -> int | None:
        return self._get("decoder_attention_heads", "num_heads", "num_attention_heads")

    @property
    def head_dim(self) -> int | None:
        explicit = self._get("d_kv")
        heads = self.num_kv_heads
        if explicit is not None:
            return explicit
        return self.hidden_size // heads if self.hidden_size and heads else None

    @property
    def max_seq_len(self) -> int | None:
        """Longest encoder input (text); ``None`` when positions are relative (T5) or for speech."""
        return self._get("max_position_embeddings", "n_positions") if self.is_text else None

    @property
    def max_decoder_len(self) -> int | None:
        """Longest decoder sequence (start token included), ``None`` when unbounded (T5)."""
        return self._get("max_target_positions", "max_position_embeddings", "n_positions")

    @property
    def input_frames(self) -> int | None:
        """Log-mel frames of a speech input (2 x max_source_positions); ``None`` for text."""
        return None if self.is_text else 2 * int(self.config.max_source_positions)

    def encoder_output_len(self, seq_len: int | None = None) -> int:
        """Positions the encoder returns (what the cross-attention cache holds per layer)."""
        if not self.is_text:
            return int(self.config.max_source_positions)
        return self.default_seq_len() if seq_len is None else int(seq_len)

    def decoder_start_id(self) -> int:
        for name in ("decoder_start_token_id", "pad_token_id", "bos_token_id"):
            value = self._get(name)
            if value is not None:
                return value
        generation = getattr(self.module, "generation_config", None)
        value = getattr(generation, "decoder_start_token_id", None)
        return int(value) if isinstance(value, int) else 0

    def allowed_token_ids(self) -> torch.Tensor:
        """Every id of the vocabulary except the config's special ids."""
        if self._allowed_ids is None:
            special = {getattr(self.config, name, None) for name in SPECIAL_IDS}
            ids = torch.arange(int(self.config.vocab_size))
            keep = torch.ones_like(ids, dtype=torch.bool)
            keep[[i for i in special if isinstance(i, int) and 0 <= i < len(ids)]] = False
            self._allowed_ids = ids[keep]
        return self._allowed_ids

    def default_seq_len(self) -> int:
        return min(DEFAULT_SEQ_LEN, self.max_seq_len or DEFAULT_SEQ_LEN)

    # -- inputs and running -----------------------------------------------------------------------
    def encoder_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """The encoder's inputs only (what ``generate`` takes): token ids and mask, or log-mel features."""
        self._check_batch_size(batch_size)
        generator = self._generator(seed)
        if self.is_text:
            seq_len = self.check_seq_len(self.default_seq_len() if seq_len is None else seq_len)
            allowed = self.allowed_token_ids()
            ids = allowed[torch.randint(0, len(allowed), (batch_size, seq_len), generator=generator)]
            return {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids).to(self.device)}
        if seq_len is not None:
            raise InvalidInputError(f"{self.name} takes log-mel features of a fixed size "
                                    f"({self.config.num_mel_bins} x {self.input_frames} frames), not token "
                                    "sequences: do not pass seq_len.")
        features = torch.rand(batch_size, int(self.config.num_mel_bins), self.input_frames, generator=generator)
        return {"input_features": (features * 2 - 1).to(self.device)}  # log-mel scaled to [-1, 1] as Whisper's

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """Encoder inputs plus ``decoder_input_ids`` (start token, then ``decoder_len - 1`` ordinary ids)."""
        inputs = self.encoder_input(batch_size, seq_len, seed=seed)
        generator = self._generator((self.seed if seed is None else seed) + 1)
        allowed = self.allowed_token_ids()
        rest = allowed[torch.randint(0, len(allowed), (batch_size, self.decoder_len - 1), generator=generator)]
        start = torch.full((batch_size, 1), self.decoder_start_id(), dtype=torch.long)
        inputs["decoder_input_ids"] = torch.cat([start, rest], dim=1).to(self.device)
        return inputs

    def tokens_per_batch(self, inputs: Inputs) -> int | None:
        return int(inputs["input_ids"].numel()) if "input_ids" in inputs else None

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.module(**inputs, use_cache=False).logits

    def encoder_forward(self, inputs: Inputs):
        """The encoder alone on the encoder part of ``inputs`` (its ``last_hidden_state``)."""
        encoder_inputs = {key: value for key, value in inputs.items() if not key.startswith("decoder_")}
        return self.module.get_encoder()(**encoder_inputs).last_hidden_state

    def encoder_only(self) -> "EncoderOnly":
        """The encoder alone, seen as a model by the batch sweep (the benchmark's encoder-only latency)."""
        return EncoderOnly(self)

    # -- FLOPs ------------------------------------------------------------------------------------
    def flops_per_sample(self, seq_len: int | None = None) -> int:
        return super().flops_per_sample(self.default_seq_len() if self.is_text and seq_len is None else seq_len)

    def encoder_flops(self, seq_len: int | None = None) -> int:
        """FLOPs of one sample's encoder pass, counted from a real call."""
        from infopt.flops import count_flops

        inputs = self.encoder_input(1, seq_len)
        return count_flops(lambda: self.encoder_forward(inputs))

    def decoder_step_flops(self, seq_len: int | None = None, position: int = 1) -> int:
        """FLOPs of one cached decoder step (one generated token of one sample) when the self-attention
        cache already holds ``position`` tokens; the encoder output and cross-attention cache are reused."""
        from infopt.flops import count_flops

        if position < 1:
            raise InvalidInputError(f"position must be at least 1 (the start token), got {position!r}.")
        inputs = self.encoder_input(1, seq_len)
        start = torch.full((1, position), self.decoder_start_id(), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            output = self.module(**inputs, decoder_input_ids=start, use_cache=True)
            encoder_outputs = (output.encoder_last_hidden_state,)
            cache = output["cache"] if "cache" in output.keys() else output.past_key_values
            step = torch.full((1, 1), self.decoder_start_id(), dtype=torch.long, device=self.device)
            cache_argument = "cache" if "cache" in _forward_parameters(self.module) else "past_key_values"
            extra: dict[str, Any] = {cache_argument: cache}
            if "attention_mask" in inputs:
                extra["attention_mask"] = inputs["attention_mask"]
        return count_flops(lambda: self.module(encoder_outputs=encoder_outputs, decoder_input_ids=step,
                                               use_cache=True, **extra))

    def input_description(self, seq_len: int | None = None) -> dict:
        shared = {"decoder_len": self.decoder_len, "encoder_layers": self.encoder_layers,
                  "decoder_layers": self.num_layers, "hidden_size": self.hidden_size,
                  "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim, "vocab_size": self.config.vocab_size,
                  "attn_implementation": self.attn_implementation}
        if not self.is_text:
            return {"input": f"log-mel features {self.config.num_mel_bins} x {self.input_frames} frames + "
                             f"{self.decoder_len} decoder token(s)", "encoder_len": self.encoder_output_len(), **shared}
        return {"input": f"token ids with full attention mask + {self.decoder_len} decoder token(s)",
                "seq_len": self.default_seq_len() if seq_len is None else seq_len, "max_seq_len": self.max_seq_len,
                **shared}


class EncoderOnly:
    """An encoder-decoder's encoder alone, as the batch sweep sees a model: the encoder's inputs in
    (:meth:`Seq2SeqModel.encoder_input`), its hidden states out. Timed beside the full forward (encoder and a
    teacher-forced decoder) and ``generate``, it says how much of a request the encoder costs. Everything else
    (name, device, weights, token counts) is the model's own; rows carry ``variant="encoder-only"``."""

    variant = "encoder-only"

    def __init__(self, model: Seq2SeqModel):
        self.model = model

    def __getattr__(self, name: str):
        if name == "model" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        return self.model.encoder_input(batch_size, seq_len, seed=seed)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.model.encoder_forward(inputs)


def _forward_parameters(module) -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(module.forward).parameters)


__all__ = ["DEFAULT_DECODER_LEN", "SUPPORTED", "EncoderOnly", "Seq2SeqModel", "is_speech_config", "seq2seq_class_name",
           "shrink_seq2seq_config"]
