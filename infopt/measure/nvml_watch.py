"""What NVML can say about one CUDA device over a timed window: other processes, their utilisation, throttling.

Every check reports either a finding or why it could not run: a missing
``nvidia-ml-py``, a query the installed version or the driver lacks (its
exact name is given), a MIG-enabled GPU (NVML's per-process figures describe
the parent GPU, not the instance), a process list where this process cannot
be told apart from the others. ``"GPU clean (NVML)"`` is said only when every
check ran and found nothing; anything else that found nothing says
``"not checked"`` with the reasons. The names used are nvidia-ml-py's own
(``pynvml``); ``tests/test_cuda_path.py`` checks them against the installed
module so that a rename there fails a test.
"""

from __future__ import annotations

import os
import time

import torch

#: GPU utilisation (percent) by other processes above which a window is flagged.
GPU_THRESHOLD_PERCENT = 5.0
#: The pynvml functions each check calls (the first one present is used).
PROCESS_QUERIES = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")
UTILISATION_QUERY = "nvmlDeviceGetProcessUtilization"
CLOCK_REASON_QUERIES = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
MIG_QUERY = "nvmlDeviceGetMigMode"
#: Clock-slowdown reasons that make a timing unrepresentative, by their suffix after ``nvmlClocksEventReason``
#: (newer nvidia-ml-py) or ``nvmlClocksThrottleReason`` (older).
SLOWDOWN_REASONS = {"SwPowerCap": "power cap", "SwThermalSlowdown": "thermal", "HwSlowdown": "hw slowdown",
                    "HwThermalSlowdown": "hw thermal", "HwPowerBrakeSlowdown": "power brake"}
REASON_PREFIXES = ("nvmlClocksEventReason", "nvmlClocksThrottleReason")


def load_nvml() -> tuple[object | None, str]:
    """The initialised ``pynvml`` module and ``""``, or ``None`` and why NVML cannot be used."""
    try:
        import pynvml  # noqa: PLC0415
    except Exception as error:  # noqa: BLE001 - any failure means "not checked"
        return None, f"nvidia-ml-py not importable ({type(error).__name__})"
    try:
        pynvml.nvmlInit()
    except Exception as error:  # noqa: BLE001
        return None, f"nvmlInit failed ({error})"
    return pynvml, ""


def device_handle(nvml, device: torch.device):
    """NVML's handle of a torch CUDA device, without initialising CUDA in a process that has not.

    (A CUDA context in the runner would itself be "another process on the GPU" for the notebooks.)
    """
    if torch.cuda.is_initialized():
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:  # noqa: BLE001 - older torch or MIG: fall back to the index
            pass
    index = device.index or 0
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    if index < len(visible):
        if visible[index].isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(visible[index]))
        return nvml.nvmlDeviceGetHandleByUUID(visible[index])
    return nvml.nvmlDeviceGetHandleByIndex(index)


def holds_context(device: torch.device) -> bool:
    """Whether this process has CUDA memory on ``device`` (then one unnamed NVML process may be this one)."""
    if not torch.cuda.is_initialized():
        return False
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.memory_reserved(index) > 0
    except Exception:  # noqa: BLE001 - cannot tell: assume not, so a foreign process is never hidden
        return False


class GpuWatch:
    """Other processes, their utilisation and clock slowdowns on one CUDA device, over a window."""

    def __init__(self, device: torch.device):
        self.device = device
        self.nvml, self.unavailable = load_nvml()
        self.handle = None
        if self.nvml is not None:
            try:
                self.handle = device_handle(self.nvml, device)
            except Exception as error:  # noqa: BLE001
                self.nvml, self.unavailable = None, f"no NVML handle for {device} ({error})"
        if self.nvml is not None and self._mig_enabled():
            self.nvml, self.unavailable = None, "MIG mode: NVML's process and utilisation figures are the parent GPU's"
        self.started_us, self.before = 0, None

    def _query(self, names: tuple[str, ...]):
        for name in names:
            function = getattr(self.nvml, name, None)
            if function is not None:
                return function
        raise LookupError(f"the installed nvidia-ml-py has no {' / '.join(names)}")

    def _mig_enabled(self) -> bool:
        function = getattr(self.nvml, MIG_QUERY, None)
        if function is None:
            return False  # versions without MIG support run on GPUs without MIG
        try:
            current = function(self.handle)[0]
        except Exception:  # noqa: BLE001 - NOT_SUPPORTED on GPUs without MIG
            return False
        return current == getattr(self.nvml, "NVML_DEVICE_MIG_ENABLE", 1)

    def _pids(self) -> set[int]:
        pids: set[int] = set()
        for name in PROCESS_QUERIES:
            pids |= {process.pid for process in self._query((name,))(self.handle)}
        return pids

    def _others(self, pids: set[int]) -> tuple[int, str]:
        """How many processes other than ours hold the GPU, and a caveat when ours is not identifiable by pid."""
        if os.getpid() in pids:
            return len(pids) - 1, ""
        if holds_context(self.device) and pids:
            # In a container NVML lists host pids: one of them is ours, the others are counted.
            return len(pids) - 1, " (this process not identifiable by pid: one listed process taken as ours)"
        return len(pids), ""

    def start(self) -> None:
        if self.nvml is not None:
            self.started_us = int(time.time() * 1e6)
            try:
                self.before = self._pids()
            except Exception:  # noqa: BLE001 - reported by stop()
                self.before = None

    def _process_check(self) -> str:
        pids = self._pids() | (self.before or set())
        others, caveat = self._others(pids)
        return f"{others} other process(es) on the GPU{caveat}" if others else ""

    def _utilisation_check(self) -> str:
        try:
            samples = self._query((UTILISATION_QUERY,))(self.handle, self.started_us)
        except LookupError:
            raise
        except Exception as error:  # noqa: BLE001 - NOT_FOUND means no process had samples in the window
            if getattr(error, "value", None) == getattr(self.nvml, "NVML_ERROR_NOT_FOUND", 6):
                return ""
            raise
        by_pid: dict[int, float] = {}
        for sample in samples:
            by_pid[sample.pid] = max(by_pid.get(sample.pid, 0.0), float(sample.smUtil))
        if os.getpid() in by_pid:
            ours, caveat = os.getpid(), ""
        elif holds_context(self.device) and by_pid:
            ours, caveat = max(by_pid, key=by_pid.get), " (the busiest process taken as ours)"
        else:
            ours, caveat = None, ""
        other = sum(util for pid, util in by_pid.items() if pid != ours)
        return f"{other:.0f}% GPU utilisation not ours{caveat}" if other > GPU_THRESHOLD_PERCENT else ""

    def _clock_check(self) -> str:
        reasons = self._query(CLOCK_REASON_QUERIES)(self.handle)
        masks = {}
        for suffix, text in SLOWDOWN_REASONS.items():
            for prefix in REASON_PREFIXES:
                if hasattr(self.nvml, prefix + suffix):
                    masks[text] = getattr(self.nvml, prefix + suffix)
                    break
        if not masks:
            raise LookupError(f"the installed nvidia-ml-py has none of {REASON_PREFIXES[0]}* / {REASON_PREFIXES[1]}*")
        names = [text for text, mask in masks.items() if reasons & mask]
        return "clocks slowed (" + ", ".join(names) + ")" if names else ""

    def stop(self) -> tuple[bool, str]:
        """``(flagged, text)``: what was found, and which checks could not run."""
        if self.nvml is None:
            return False, f"GPU not checked ({self.unavailable})"
        problems, unchecked = [], []
        for label, check in (("processes", self._process_check), ("utilisation", self._utilisation_check),
                             ("clocks", self._clock_check)):
            try:
                found = check()
            except Exception as error:  # noqa: BLE001 - the check could not run: said so, never "clean"
                unchecked.append(f"{label}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
                continue
            if found:
                problems.append(found)
        text = "; ".join(problems)
        if unchecked:
            text += ("; " if text else "GPU partly checked, nothing found; ") + "not checked: " + ", ".join(unchecked)
        return bool(problems), text or "GPU clean (NVML)"


__all__ = ["CLOCK_REASON_QUERIES", "GPU_THRESHOLD_PERCENT", "GpuWatch", "MIG_QUERY", "PROCESS_QUERIES",
           "REASON_PREFIXES", "SLOWDOWN_REASONS", "UTILISATION_QUERY", "device_handle", "holds_context", "load_nvml"]
