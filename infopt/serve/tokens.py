"""Causal LMs behind LoadGen's token latencies: each query is one greedy ``generate`` call; LoadGen is told when
the first token is out (``FirstTokenComplete``) and how many tokens the answer holds, and reports TTFT and TPOT."""

from __future__ import annotations

import time
from typing import Callable

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from infopt.devices import synchronize
from infopt.measure.generation import generation_config


class FirstTokenSignal(LogitsProcessor):
    """Calls ``on_first`` once, when the first new token's logits are ready (the prefill has ended)."""

    def __init__(self, on_first: Callable[[], None] | None):
        self.on_first = on_first

    def __call__(self, input_ids, scores):
        if self.on_first is not None:
            synchronize(scores.device)
            self.on_first()
            self.on_first = None
        return scores


def generation_batch_runner(model, library, new_tokens: int) -> Callable[[list], list]:
    """A batch function for the batcher (max batch 1): one greedy generate per query, ``new_tokens`` tokens."""
    config = generation_config(model, new_tokens, True)

    def run(payloads: list) -> list:
        outputs = []
        for payload in payloads:
            inputs = library.batch([payload.index])
            with torch.inference_mode():
                model.module.generate(**inputs, generation_config=config,
                                      logits_processor=LogitsProcessorList([FirstTokenSignal(payload.first_token)]))
            synchronize(model.device)
            outputs.append(new_tokens)
        return outputs

    return run


def time_one_generation(model, library, new_tokens: int) -> float:
    """Seconds of one generate call (after one warm-up): the service time the token scenario's rate comes from."""
    run = generation_batch_runner(model, library, new_tokens)

    class _Payload:
        index, first_token = 0, None

    run([_Payload()])
    start = time.perf_counter()
    run([_Payload()])
    return time.perf_counter() - start


__all__ = ["FirstTokenSignal", "generation_batch_runner", "time_one_generation"]
