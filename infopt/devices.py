"""Device resolution and synchronization.

Rule: a device that was asked for by name is either used or refused with
:class:`DeviceUnavailableError`; only ``"auto"`` chooses, and the choice is
returned so it can be recorded. Results labelled "cuda" ran on CUDA.

The MPS branches follow the ``torch.mps`` API (``synchronize``,
``current_allocated_memory``, ``driver_allocated_memory``). They cannot be
exercised on the Linux CI machine, so they are kept deliberately small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .errors import DeviceUnavailableError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceChoice:
    """The resolved device plus how it was chosen (kept with every result)."""

    device: torch.device
    requested: str
    reason: str

    def as_dict(self) -> dict:
        return {"device": str(self.device), "requested": self.requested, "reason": self.reason}


def _mps_built() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_built()


def _mps_available() -> bool:
    return _mps_built() and torch.backends.mps.is_available()


def cuda_unavailable_reason(index: int | None = None) -> str | None:
    """Why CUDA (or ``cuda:index``) cannot be used, or ``None`` if it can."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "torch was built with CUDA but no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
    count = torch.cuda.device_count()
    if index is not None and not 0 <= index < count:
        return f"CUDA device index {index} is out of range: {count} GPU(s) visible"
    return None


def mps_unavailable_reason() -> str | None:
    """Why MPS cannot be used, or ``None`` if it can."""
    if not _mps_built():
        return f"this torch build ({torch.__version__}) was not built with MPS support"
    if not torch.backends.mps.is_available():
        return "MPS is built into torch but not available on this machine (needs macOS 12.3+ on Apple silicon)"
    return None


def choose_device(requested: str | torch.device = "auto") -> DeviceChoice:
    """Resolve a device name and say why it was chosen.

    ``auto`` picks cuda, then mps, then cpu. Any other name must be usable or
    :class:`DeviceUnavailableError` is raised with the reason.
    """
    text = str(requested).strip().lower()
    if text == "auto":
        if cuda_unavailable_reason() is None:
            return DeviceChoice(torch.device("cuda", torch.cuda.current_device()), text, "auto: CUDA GPU available")
        if mps_unavailable_reason() is None:
            return DeviceChoice(torch.device("mps"), text, "auto: no CUDA; Apple MPS available")
        return DeviceChoice(torch.device("cpu"), text, "auto: neither CUDA nor MPS is available")
    if text == "cpu":
        return DeviceChoice(torch.device("cpu"), text, "requested")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match:
        index = int(match.group(1)) if match.group(1) is not None else None
        reason = cuda_unavailable_reason(index)
        if reason:
            raise DeviceUnavailableError(f"Device '{text}' was requested but {reason}.")
        return DeviceChoice(torch.device("cuda", index if index is not None else torch.cuda.current_device()), text, "requested")
    if text in ("mps", "mps:0"):
        reason = mps_unavailable_reason()
        if reason:
            raise DeviceUnavailableError(f"Device '{text}' was requested but {reason}.")
        return DeviceChoice(torch.device("mps"), text, "requested")
    raise DeviceUnavailableError(
        f"Unknown device '{requested}': expected one of auto, cpu, cuda, cuda:N or mps."
    )


def resolve_device(requested: str | torch.device = "auto") -> torch.device:
    """Return the ``torch.device`` for a name; see :func:`choose_device`."""
    return choose_device(requested).device


def device_kind(device: str | torch.device) -> str:
    """``"cpu"``, ``"cuda"`` or ``"mps"`` for a device or device name."""
    return torch.device(device).type


def synchronize(device: str | torch.device) -> None:
    """Wait until all queued work on ``device`` has finished (no-op on CPU)."""
    kind = device_kind(device)
    if kind == "cuda":
        torch.cuda.synchronize(torch.device(device))
    elif kind == "mps":
        torch.mps.synchronize()


def empty_cache(device: str | torch.device) -> None:
    """Release cached allocator memory so the next measurement starts clean."""
    kind = device_kind(device)
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps":
        torch.mps.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    """True for allocator out-of-memory errors on any device."""
    if isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
