"""File-name-safe labels: the one rule that turns a model spec, device or result kind into part of a file name.

Its own module because the model specs, the run layout and the results files all need it, and none of them may
import another for it.
"""

from __future__ import annotations

import re

from infopt.errors import InfoptError


def safe_name(text: str) -> str:
    """A file-name-safe form of a model/device/kind label (``cuda:0`` -> ``cuda-0``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-")
    if not cleaned:
        raise InfoptError(f"Cannot build a file name from {text!r}.")
    return cleaned


__all__ = ["safe_name"]
