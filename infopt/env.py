"""Capture of the software and hardware a measurement ran on.

``collect()`` returns a JSON-safe dict that is stored with every result, so
a number can always be traced back to the machine, library versions and
thread settings that produced it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

import psutil
import torch

from infopt.determinism import determinism_state

_PACKAGES = ("torch", "torchvision", "transformers", "numpy", "pandas", "plotly", "papermill", "torchao", "onnx",
             "onnxscript", "onnxruntime", "onnxruntime-gpu", "nvidia-ml-py")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, sysctl on macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def cpu_max_mhz() -> float | None:
    """Maximum CPU clock in MHz as the OS reports it, if it does."""
    try:
        freq = psutil.cpu_freq()
        if freq and freq.max:
            return float(freq.max)
        if freq and freq.current:
            return float(freq.current)
    except (NotImplementedError, OSError, FileNotFoundError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def cpu_capability() -> str | None:
    """The vector instruction set torch's CPU kernels dispatch to (e.g. AVX512)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return None


def git_commit(path: str | Path | None = None) -> str | None:
    """The lab's git commit when it runs from a checkout (``+dirty`` if modified)."""
    root = Path(path) if path else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_info() -> list[dict]:
    """Name, memory, compute capability and SM count of every visible CUDA GPU."""
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({
            "index": index,
            "name": props.name,
            "total_memory_gb": round(props.total_memory / 1024**3, 2),
            "compute_capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
        })
    return gpus


def cuda_driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi, when it is installed."""
    if not torch.cuda.is_available():
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def precision_switches() -> dict:
    """The switches that decide whether fp32 matmuls and convolutions on CUDA run as TF32.

    By default convolutions run TF32 (``cudnn.allow_tf32``) while ``torch.mm`` does not
    (``cuda.matmul.allow_tf32``, ``float32_matmul_precision="highest"``): an "fp32" figure means one or the other.
    """
    return {"cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_fp16_reduced_precision_reduction":
                bool(torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction),
            "cuda_matmul_allow_bf16_reduced_precision_reduction":
                bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)}


def float32_precision(kind: str, family: str) -> str:
    """What a float32 ``matmul`` or ``conv`` really computes on device kind ``kind``: ``"tf32"`` or ``"fp32"``."""
    if kind != "cuda":
        return "fp32"
    allowed = torch.backends.cudnn.allow_tf32 if family == "conv" else torch.backends.cuda.matmul.allow_tf32
    return "tf32" if allowed else "fp32"


def collect() -> dict:
    """Everything needed to interpret a measurement later, as a JSON-safe dict."""
    mps = getattr(torch.backends, "mps", None)
    cudnn = torch.backends.cudnn
    return {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in _PACKAGES},
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn.version() if cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpu_info(),
        "cuda_driver": cuda_driver_version(),
        "mps_built": bool(mps and mps.is_built()),
        "mps_available": bool(mps and mps.is_built() and mps.is_available()),
        "cpu_model": cpu_model(),
        "cpu_max_mhz": cpu_max_mhz(),
        "machine": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": cpu_capability(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkl_available": torch.backends.mkl.is_available(),
        "total_ram_gb": round(psutil.virtual_memory().total / 1024**3, 2),
        "determinism": determinism_state(),
        "precision": precision_switches(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": git_commit(),
    }
