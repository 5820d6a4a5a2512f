"""Seeding and (optional) deterministic kernels.

Deterministic kernels are off by default: they slow cuDNN and would make the
benchmark measure something users do not run. Whatever is chosen is returned
as a dict so it can be stored with the results.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 42) -> int:
    """Seed Python's ``random``, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return seed


def set_determinism(enabled: bool = False) -> dict:
    """Switch deterministic kernels on or off and return the resulting settings."""
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    return determinism_state()


def determinism_state() -> dict:
    """The current determinism-related flags, JSON-safe."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }
