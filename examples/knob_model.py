"""A model with a knob that adds a known share of work: ``py:knob_model:make_model?extra_work=0.2``.

``layers`` identical Linear+ReLU blocks of ``width``; ``extra_work=0.2`` appends 20% more of the same blocks,
so the forward does exactly 1.2x the arithmetic (and 1.2x the per-block framework overhead). Used to prove
that a regression of known size is caught (``benchmarks/false_alarms.py``, ``tests/test_ab.py``). The
extra blocks are ordinary seeded layers, so the outputs differ too and the accuracy guard says so, as it
should for a model that changed.
"""

import os

import torch
from torch import nn

#: The knob as a new "code version" under the same spec (run vs run matches models by spec): ``KNOB_EXTRA_WORK=0.2``.
KNOB_ENV = "KNOB_EXTRA_WORK"


def make_model(width: int = 256, layers: int = 10, extra_work: float | None = None):
    """``layers * (1 + extra_work)`` blocks (a whole number); ``extra_work`` defaults to ``$KNOB_EXTRA_WORK`` or 0."""
    extra_work = float(os.environ.get(KNOB_ENV, 0) if extra_work is None else extra_work)
    total = layers * (1 + float(extra_work))
    if total < 1 or abs(total - round(total)) > 1e-9:
        raise ValueError(f"layers * (1 + extra_work) must be a whole number of blocks, got {total:g}.")
    blocks = []
    for _ in range(int(round(total))):
        blocks += [nn.Linear(width, width), nn.ReLU()]
    module = nn.Sequential(*blocks)

    def make_inputs(batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, width)

    return module, make_inputs
