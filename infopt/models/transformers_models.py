"""GPT-2 and DistilBERT from Hugging Face transformers: the lab's text models.

Random weights are built from the model's own config with a fixed seed, so the
architecture (and therefore the timing) is exactly the published one with no
download. Token ids are drawn from the ordinary vocabulary, never special ids.
"""

from __future__ import annotations

import torch
from transformers import DistilBertConfig, DistilBertModel, GPT2Config, GPT2LMHeadModel

from infopt.determinism import seed_everything
from infopt.errors import InvalidInputError
from infopt.models.base import DEFAULT_SEQ_LEN, Inputs, ModelWrapper
from infopt.models.weights import load_hf_pretrained


class TextModel(ModelWrapper):
    """Shared input handling for token-id models."""

    is_text = True
    hub_id: str = ""
    model_class = None
    config_class = None
    full_config: dict = {}
    tiny_config: dict = {}

    @classmethod
    def build(cls, *, weights: str, size: str, seed: int, **options) -> "TextModel":
        attn = options.pop("attn_implementation", "sdpa")
        if options:
            raise InvalidInputError(f"Unknown option(s) for {cls.name}: {', '.join(sorted(options))}.")
        if attn not in ("sdpa", "eager"):
            raise InvalidInputError(f"attn_implementation must be 'sdpa' or 'eager', got {attn!r}.")
        seed_everything(seed)
        if weights == "pretrained":
            if size != "full":
                raise InvalidInputError(f"Pretrained weights exist only for size='full' {cls.name}.")
            module = load_hf_pretrained(cls.model_class.from_pretrained, cls.hub_id, attn_implementation=attn)
        else:
            settings = cls.full_config if size == "full" else cls.tiny_config
            config = cls.config_class(**settings, attn_implementation=attn)
            module = cls.model_class(config)
        return cls(module, weights=weights, size=size, seed=seed, options={"attn_implementation": attn})

    @property
    def config(self):
        return self.module.config

    @property
    def max_seq_len(self) -> int:
        """Longest sequence the position embeddings allow."""
        raise NotImplementedError

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads per layer (GPT-2 and DistilBERT: one per query head)."""
        return int(self.config.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // int(self.config.num_attention_heads)

    def token_id_range(self) -> tuple[int, int]:
        """``[low, high)`` of ordinary (non-special) token ids."""
        raise NotImplementedError

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """Random ordinary token ids ``(batch, seq_len)`` int64 with a full attention mask."""
        self._check_batch_size(batch_size)
        seq_len = self.check_seq_len(DEFAULT_SEQ_LEN if seq_len is None else seq_len)
        low, high = self.token_id_range()
        ids = torch.randint(low, high, (batch_size, seq_len), generator=self._generator(seed), dtype=torch.long)
        return {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids).to(self.device)}

    def tokens_per_batch(self, inputs: Inputs) -> int:
        return int(inputs["input_ids"].numel())

    def flops_per_sample(self, seq_len: int | None = None) -> int:
        return super().flops_per_sample(DEFAULT_SEQ_LEN if seq_len is None else seq_len)

    def input_description(self, seq_len: int | None = None) -> dict:
        return {
            "input": "token ids with full attention mask",
            "seq_len": DEFAULT_SEQ_LEN if seq_len is None else seq_len,
            "max_seq_len": self.max_seq_len,
            "vocab_size": self.config.vocab_size,
            "attn_implementation": self.config._attn_implementation,
            "layers": self.num_layers,
            "hidden_size": self.hidden_size,
        }


class GPT2(TextModel):
    """GPT-2 small (``GPT2LMHeadModel``): returns next-token logits."""

    name = "gpt2"
    task = "causal-lm"
    is_causal_lm = True
    source = "transformers.GPT2LMHeadModel"
    hub_id = "openai-community/gpt2"
    model_class = GPT2LMHeadModel
    config_class = GPT2Config
    full_config = {}
    tiny_config = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 2000,
                   "bos_token_id": 1999, "eos_token_id": 1999}

    @property
    def max_seq_len(self) -> int:
        return int(self.config.n_positions)

    @property
    def num_layers(self) -> int:
        return int(self.config.n_layer)

    @property
    def hidden_size(self) -> int:
        return int(self.config.n_embd)

    def token_id_range(self) -> tuple[int, int]:
        special = {self.config.bos_token_id, self.config.eos_token_id} - {None}
        high = min(special) if special else self.config.vocab_size  # GPT-2's only special id is the last one
        return 0, high

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.module(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           use_cache=False).logits


class DistilBert(TextModel):
    """DistilBERT base (``DistilBertModel``): returns the last hidden state."""

    name = "distilbert"
    task = "encoder"
    source = "transformers.DistilBertModel"
    hub_id = "distilbert/distilbert-base-uncased"
    model_class = DistilBertModel
    config_class = DistilBertConfig
    full_config = {}
    tiny_config = {"n_layers": 2, "dim": 64, "hidden_dim": 256, "n_heads": 2, "vocab_size": 2000}
    #: In the BERT uncased vocabulary ids below 999 are [PAD], [unused*], [UNK], [CLS], [SEP], [MASK].
    FIRST_ORDINARY_ID = 999

    @property
    def max_seq_len(self) -> int:
        return int(self.config.max_position_embeddings)

    @property
    def num_layers(self) -> int:
        return int(self.config.n_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.dim)

    def token_id_range(self) -> tuple[int, int]:
        return self.FIRST_ORDINARY_ID, int(self.config.vocab_size)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.module(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
