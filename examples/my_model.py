"""Bring your own model: a factory the lab can load as ``py:my_model:make_model``.

Run from this folder (or put it on PYTHONPATH)::

    cd examples
    python -c "import infopt; m = infopt.load_model('py:my_model:make_model'); print(m.info())"
    python ../run_notebooks.py --device cpu --quick --models py:my_model:make_model

The contract: a function with no required arguments (``?name=value`` options
in the spec arrive as keywords, e.g. ``py:my_model:make_model?width=64``) that
returns ``(module, make_inputs)``, where ``make_inputs(batch_size)`` returns a
tensor, a tuple or a dict of tensors whose first dimension is the batch. The
lab seeds torch before each call, moves module and inputs to the device, and
times / profiles / transforms the module like a built-in model.
"""

import torch
from torch import nn


def make_model(width: int = 32, num_classes: int = 10):
    """A small CNN classifier on 3 x 64 x 64 images."""
    module = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )

    def make_inputs(batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, 3, 64, 64)

    return module, make_inputs
