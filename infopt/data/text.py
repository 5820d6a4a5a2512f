"""``text:<file>``: one document per line (or ``.jsonl`` with a ``text`` field), tokenized by the model's own tokenizer.

The tokenizer must be available offline: a ``tokenizer`` attribute on the model's wrapper (a ``py:`` factory may
set one), else the ``hf:`` folder's own tokenizer files, else one clear refusal (never a download, never another
model's vocabulary). Documents are joined (separated by the end-of-text token when there is one) and cut into
windows of ``?seq_len=`` tokens (default 128, at most the model's limit): causal LMs get perplexity and
next-token accuracy on them; masked LMs get 15% of positions masked with a fixed seed (masked-token accuracy);
other text models get agreement of their outputs with fp32 on these real windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from infopt.data.dataset import DataSet
from infopt.data.preprocess import example_input
from infopt.data.specs import DataSpec
from infopt.errors import InvalidInputError
from infopt.models.base import ModelWrapper

DEFAULT_WINDOW = 128
MASK_FRACTION = 0.15
MASK_SEED = 0


def read_documents(spec: DataSpec) -> list[str]:
    """The non-empty documents of the file; refusals for a missing, empty or malformed file."""
    path = Path(spec.target).expanduser()
    where = f"Data {spec.text!r}"
    if not path.is_file():
        raise InvalidInputError(f"{where}: file {path} does not exist.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where}: file {path} is not UTF-8 text.") from None
    if path.suffix.lower() == ".jsonl":
        documents = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InvalidInputError(f"{where}: line {number} of {path} is not JSON.") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise InvalidInputError(f"{where}: line {number} of {path} has no string 'text' field.")
            documents.append(record["text"])
    else:
        documents = lines
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise InvalidInputError(f"{where}: file {path} holds no non-empty document.")
    return documents


def find_tokenizer(model: ModelWrapper, where: str):
    """The model's own tokenizer from local files only; one sentence when there is none."""
    own = getattr(model, "tokenizer", None)
    if own is not None:
        return own
    spec = str(getattr(model, "spec", ""))
    if spec.startswith("hf:"):
        location = spec[3:].split("?", 1)[0]
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(location, local_files_only=True)
        except Exception as error:  # noqa: BLE001 - missing files, unknown class: all mean "not offline"
            raise InvalidInputError(f"{where}: the tokenizer of {spec} is not available offline ({location} and "
                                    f"the local cache have no tokenizer files: {type(error).__name__}).") from None
    raise InvalidInputError(f"{where}: {model.name} has no tokenizer available offline (its weights are built "
                            "without one); use an hf: folder with tokenizer files, or a py: factory whose wrapper "
                            "sets .tokenizer.")


def _encode(tokenizer, text: str) -> list[int]:
    if hasattr(tokenizer, "encode"):
        try:
            return list(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return list(tokenizer.encode(text))
    return list(tokenizer(text))


def load_text(spec: DataSpec, model: ModelWrapper) -> DataSet:
    """Tokenize, window and (for masked LMs) mask the documents for the model's token-id input."""
    where = f"Data {spec.text!r}"
    if not model.is_text:
        raise InvalidInputError(f"{where} is text, but {model.name} is a {model.task} model that does not take "
                                "token ids.")
    documents = read_documents(spec)
    tokenizer = find_tokenizer(model, where)
    limit = model.max_seq_len or DEFAULT_WINDOW
    window = spec.int_option("seq_len", min(DEFAULT_WINDOW, limit), minimum=2)
    if window > limit:
        raise InvalidInputError(f"{where}: seq_len={window} exceeds {model.name}'s limit of {limit} positions.")
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for document in documents:
        ids += _encode(tokenizer, document) + ([eos] if isinstance(eos, int) else [])
    count = len(ids) // window
    if count < 2:
        raise InvalidInputError(f"{where}: the file holds {len(ids)} tokens, fewer than two windows of "
                                f"{window}; add text or lower ?seq_len=.")
    windows = torch.tensor(ids[:count * window], dtype=torch.long).reshape(count, window)
    example = example_input(model)
    key = next((k for k, v in example.items() if v.dtype == torch.long and v.dim() == 2), "input_ids")
    inputs = {key: windows}
    if "attention_mask" in example:
        inputs["attention_mask"] = torch.ones_like(windows)
    details = {"tokens": int(windows.numel()), "seq_len": window, "documents": len(documents)}
    base = f"{len(documents)} documents from {spec.target}, {count} windows of {window} tokens"
    if model.task == "causal-lm":
        return DataSet(spec=spec, inputs=inputs, targets=windows, target_kind="next-token", description=base,
                       preprocessing="model's own tokenizer; documents joined and cut into fixed windows",
                       metric_name="perplexity", higher_is_better=False, details=details)
    if model.task == "masked-lm":
        mask_id = getattr(tokenizer, "mask_token_id", None)
        if not isinstance(mask_id, int):
            raise InvalidInputError(f"{where}: {model.name}'s tokenizer has no mask token, so masked-token "
                                    "accuracy cannot be measured.")
        chosen = torch.rand(windows.shape, generator=torch.Generator().manual_seed(MASK_SEED)) < MASK_FRACTION
        targets = torch.where(chosen, windows, torch.full_like(windows, -100))
        inputs[key] = torch.where(chosen, torch.full_like(windows, mask_id), windows)
        return DataSet(spec=spec, inputs=inputs, targets=targets, target_kind="masked-token", description=base,
                       preprocessing=f"model's own tokenizer; {MASK_FRACTION:.0%} of positions masked (seed "
                                     f"{MASK_SEED})", metric_name="masked-token accuracy", details=details)
    return DataSet(spec=spec, inputs=inputs, targets=None, target_kind="none", description=base,
                   preprocessing="model's own tokenizer; documents joined and cut into fixed windows",
                   metric_name="output agreement on real inputs", details=details)


__all__ = ["DEFAULT_WINDOW", "find_tokenizer", "load_text", "read_documents"]
