"""Device peaks for the roofline: measured, and theoretical where it can be derived.

Measured (what this machine really reaches, with torch's kernels and the
current thread count):

- matrix-product FLOP/s per dtype: square ``torch.mm`` on random data (several
  sizes on CPU), best of several timed runs after warm-up (2 x n^3 FLOPs);
- convolution FLOP/s per dtype: 3x3 and 1x1 stride-1 ``conv2d`` of ResNet-stage
  shapes, channels-last and contiguous (nominal FLOPs). The compute peak of a
  dtype (``peaks["compute"]``, what the roofline uses) is the best of the two
  families, with the winning kernel named: a roof that a model's own kernels
  beat is not a roof (issue #18);
- copy bandwidth: ``dst.copy_(src)`` over buffers at least four times the
  last-level cache, counting the bytes read plus the bytes written
  (2 x buffer size per copy), best of several runs after warm-up.

Theoretical, each figure with its source:

- CPU: physical cores x clock x fp32 lanes per vector x FMA units x 2 (an FMA
  is two FLOPs), the vector width taken from
  ``torch.backends.cpu.get_cpu_capability()``; bf16/fp16 only where the CPU
  has native instructions for them. The clock is the higher of the OS's
  figure and the one measured by :mod:`infopt.analyze.cpu_clock` (turbo runs
  above the base clock the OS reports). Memory bandwidth is not derivable from
  what the OS reports, so it is ``None``.
- CUDA: a small table of datasheet figures for known GPUs (dense, not the
  2:4-sparsity figures), and fp32 / memory bandwidth derived from the device
  properties (SMs x FP32 lanes x 2 x clock; memory clock x bus width x 2).
- MPS: not derivable; ``None``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import psutil
import torch

from infopt.devices import device_kind, resolve_device, synchronize
from infopt.analyze.cpu_clock import measured_clock_mhz
from infopt.env import cpu_max_mhz, cpu_model, float32_precision, precision_switches
from infopt.errors import InvalidInputError
from infopt.measure.interference import watch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

MATMUL_DEFINITION = ("best of several timed torch.mm runs after warm-up (per size: at least 5 runs and 0.4 s; quick: 3 "
                     "and 0.1 s, smaller sizes) on random square matrices, over the sizes tried; FLOPs = 2 x n^3")
CONV_DEFINITION = ("best of several timed stride-1 conv2d runs after warm-up (per shape: at least 5 runs and 0.4 s; "
                   "quick: 3 and 0.1 s, smaller shapes), 3x3 and 1x1 kernels of ResNet-stage shapes, channels-last "
                   "and contiguous; nominal FLOPs = 2 x N x C_out x H x W x C_in x k x k")
COMPUTE_DEFINITION = ("measured compute peak per dtype = the best of the kernel families models run (matmul, "
                      "conv 3x3/1x1 in both memory formats); 'kernel' names the one that set it")
BANDWIDTH_DEFINITION = ("best of several timed dst.copy_(src) runs after warm-up (at least 7 runs and 0.5 s; quick: 3 "
                        "and 0.2 s), buffers >= 4x the last-level cache; bytes = bytes read + bytes written "
                        "(2 x buffer size)")

# Dense datasheet peaks (FLOP/s, bytes/s). Matched on the device name in order; first match wins.
# tf32 is the tensor-core rate used by float32 matmuls when TF32 is allowed.
_GPU_TABLE: list[tuple[str, Callable[[object], bool], dict]] = [
    ("NVIDIA H200 NVL", lambda p: "H200" in p.name and "NVL" in p.name,
     {"float32": 60e12, "tf32": 417.5e12, "bfloat16": 835.5e12, "float16": 835.5e12, "bandwidth": 4.8e12}),
    ("NVIDIA H200 SXM", lambda p: "H200" in p.name,
     {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12, "bandwidth": 4.8e12}),
    ("NVIDIA H100 NVL", lambda p: "H100" in p.name and "NVL" in p.name,
     {"float32": 60e12, "tf32": 417.5e12, "bfloat16": 835.5e12, "float16": 835.5e12, "bandwidth": 3.9e12}),
    ("NVIDIA H100 PCIe", lambda p: "H100" in p.name and "PCIE" in p.name.upper(),
     {"float32": 51.2e12, "tf32": 378e12, "bfloat16": 756e12, "float16": 756e12, "bandwidth": 2.0e12}),
    ("NVIDIA H100 SXM", lambda p: "H100" in p.name,
     {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12, "bandwidth": 3.35e12}),
    ("NVIDIA A100 PCIe 80GB", lambda p: "A100" in p.name and "PCIE" in p.name.upper() and p.total_memory > 60e9,
     {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12, "float16": 312e12, "bandwidth": 1.935e12}),
    ("NVIDIA A100 SXM4 80GB", lambda p: "A100" in p.name and p.total_memory > 60e9,
     {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12, "float16": 312e12, "bandwidth": 2.039e12}),
    ("NVIDIA A100 40GB", lambda p: "A100" in p.name,
     {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12, "float16": 312e12, "bandwidth": 1.555e12}),
    ("NVIDIA L40S", lambda p: "L40S" in p.name,
     {"float32": 91.6e12, "tf32": 183e12, "bfloat16": 362e12, "float16": 362e12, "bandwidth": 864e9}),
    ("NVIDIA L4", lambda p: p.name.endswith(" L4") or p.name == "L4",
     {"float32": 30.3e12, "tf32": 60e12, "bfloat16": 121e12, "float16": 121e12, "bandwidth": 300e9}),
    ("NVIDIA A10", lambda p: p.name.endswith(" A10") or p.name == "A10",
     {"float32": 31.2e12, "tf32": 62.5e12, "bfloat16": 125e12, "float16": 125e12, "bandwidth": 600e9}),
    ("NVIDIA T4", lambda p: "T4" in p.name.split(),
     {"float32": 8.1e12, "float16": 65e12, "bandwidth": 320e9}),
    ("NVIDIA V100 SXM2", lambda p: "V100" in p.name and "SXM" in p.name.upper(),
     {"float32": 15.7e12, "float16": 125e12, "bandwidth": 900e9}),
    ("NVIDIA V100 PCIe", lambda p: "V100" in p.name,
     {"float32": 14e12, "float16": 112e12, "bandwidth": 900e9}),
]

# FP32 lanes per SM by compute capability (CUDA cores issuing one FMA per clock each).
_FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128,
                      (10, 0): 128, (12, 0): 128}


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.float32`` -> ``"float32"`` (the key used in peak dicts)."""
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise InvalidInputError(f"Unsupported dtype {name!r} for peaks: expected one of {', '.join(DTYPES)}.")
    return name


# --------------------------------------------------------------------------- CPU facts

def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where the OS does not expose them)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpuinfo_field(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def last_level_cache_bytes(device: torch.device | None = None) -> tuple[int | None, str]:
    """Size of the last-level cache (GPU L2 on CUDA) and where it came from."""
    if device is not None and device_kind(device) == "cuda":
        return int(torch.cuda.get_device_properties(device).L2_cache_size), "cuda device properties (L2)"
    best = None
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            size_text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        size = int(size_text[:-1]) * units[size_text[-1]] if size_text[-1] in units else int(size_text)
        if best is None or level > best[0]:
            best = (level, size)
    if best:
        return best[1], f"sysfs cache index (L{best[0]} of cpu0)"
    if platform.system() == "Darwin":
        import subprocess

        for key in ("hw.l3cachesize", "hw.l2cachesize"):
            try:
                value = int(subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout)
                if value > 0:
                    return value, f"sysctl {key}"
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
    return None, "unknown"


def cpu_theoretical_peaks() -> dict:
    """Peak FLOP/s per dtype derived from cores, clock, vector width and FMA units, with assumptions."""
    capability = torch.backends.cpu.get_cpu_capability()
    machine = platform.machine().lower()
    flags = cpu_flags()
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    os_mhz = cpu_max_mhz()
    real_mhz, how = measured_clock_mhz()
    mhz = max([m for m in (os_mhz, real_mhz) if m] or [None]) if (os_mhz or real_mhz) else None
    assumptions = []
    if machine in ("x86_64", "amd64"):
        vector_bits = {"AVX512": 512, "AVX2": 256}.get(capability, 128)
        fma_units = 2
        assumptions.append(f"vector width {vector_bits} bits from torch CPU capability {capability!r}")
        assumptions.append("2 FMA units per core (Intel Xeon Gold 6xxx/Platinum, AMD Zen; "
                           "some Xeon Silver/Bronze have 1, which halves the peak)")
        vendor, family = _cpuinfo_field("vendor_id"), _cpuinfo_field("cpu family")
        if vector_bits == 512 and vendor == "AuthenticAMD" and family == "25":
            assumptions.append("AMD Zen 4 (family 25) executes 512-bit FMAs on 256-bit units, so at a fixed "
                               "clock its real FMA rate is half of this; the figure stays an upper bound")
    else:
        vector_bits = {"SVE512": 512, "SVE256": 256}.get(capability, 128)
        fma_units = 4 if platform.system() == "Darwin" else 2
        assumptions.append(f"vector width {vector_bits} bits (NEON/SVE, capability {capability!r}), "
                           f"{fma_units} FMA pipes per core assumed")
        if platform.system() == "Darwin":
            assumptions.append("Apple's AMX matrix unit used by Accelerate is not included: measured matmul "
                               "can exceed this figure")
    if mhz is None:
        return {"flops_per_s": {name: None for name in DTYPES}, "bandwidth_bytes_per_s": None,
                "source": "not derivable: the OS reports no CPU clock", "assumptions": assumptions}
    assumptions.append(f"clock {mhz:.0f} MHz: the higher of the OS's {os_mhz or 0:.0f} MHz (psutil max, else "
                       f"current) and the clock {how}" + (f" ({real_mhz:.0f} MHz)" if real_mhz else "") +
                       "; with the OS's figure alone the peak is a lower bound that turbo clocks exceed")
    per_cycle_fp32 = (vector_bits // 32) * fma_units * 2
    fp32 = cores * mhz * 1e6 * per_cycle_fp32
    flops: dict[str, float | None] = {"float32": fp32, "bfloat16": None, "float16": None}
    # dtype: (AMX flag and its text, AVX-512 flag and its text): AMX tiles give 1024 FLOP/cycle/core, AVX-512
    # dot products twice the fp32 rate
    for dtype, (amx, amx_text), (avx, avx_text) in (
            ("bfloat16", ("amx_bf16", "bf16: Intel AMX"), ("avx512_bf16", "bf16: AVX512-BF16 dot products")),
            ("float16", ("amx_fp16", "fp16: Intel AMX-FP16"), ("avx512_fp16", "fp16: AVX512-FP16"))):
        if amx in flags:
            flops[dtype] = cores * mhz * 1e6 * 1024
            assumptions.append(f"{amx_text}, 1024 FLOP/cycle/core")
        elif avx in flags:
            flops[dtype] = 2 * fp32
            assumptions.append(f"{avx_text}, 2x the fp32 rate")
    return {
        "flops_per_s": flops,
        "bandwidth_bytes_per_s": None,
        "source": f"derived: {cores} physical cores x {mhz:.0f} MHz x {vector_bits // 32} fp32 lanes x "
                  f"{fma_units} FMA units x 2 FLOP/FMA",
        "bandwidth_source": "not derivable from what the OS reports (DIMM channels and speed unknown)",
        "assumptions": assumptions, "clock_mhz": mhz, "clock_measured": bool(real_mhz and real_mhz >= mhz),
    }


def cuda_theoretical_peaks(device: torch.device) -> dict:
    """Datasheet peaks (dense) for known GPUs plus fp32 / bandwidth derived from device properties."""
    props = torch.cuda.get_device_properties(device)
    result: dict = {"flops_per_s": {name: None for name in DTYPES}, "bandwidth_bytes_per_s": None,
                    "assumptions": [], "derived": {}}
    clock_khz = getattr(props, "clock_rate", 0) or 0
    lanes = _FP32_LANES_PER_SM.get((props.major, props.minor))
    if clock_khz and lanes:
        result["derived"]["float32"] = props.multi_processor_count * lanes * 2 * clock_khz * 1e3
    mem_khz, bus_bits = getattr(props, "memory_clock_rate", 0) or 0, getattr(props, "memory_bus_width", 0) or 0
    if mem_khz and bus_bits:
        result["derived"]["bandwidth"] = mem_khz * 1e3 * 2 * bus_bits / 8
    tf32 = torch.get_float32_matmul_precision() != "highest"
    match = next(((label, figures) for label, test, figures in _GPU_TABLE if test(props)), None)
    if match:
        label, figures = match
        result["flops_per_s"] = {"float32": figures["tf32"] if tf32 and "tf32" in figures else figures["float32"],
                                 "bfloat16": figures.get("bfloat16"), "float16": figures.get("float16")}
        result["bandwidth_bytes_per_s"] = figures["bandwidth"]
        result["tf32_flops_per_s"] = figures.get("tf32")  # the fp32 roof of a kernel that runs TF32 (convs)
        result["source"] = f"datasheet table entry '{label}' (dense figures, no 2:4 sparsity)"
        result["table_entry"] = label
    else:
        result["flops_per_s"]["float32"] = result["derived"].get("float32")
        result["bandwidth_bytes_per_s"] = result["derived"].get("bandwidth")
        result["source"] = (f"derived from device properties ({props.multi_processor_count} SMs x {lanes} FP32 "
                            f"lanes x 2 x {clock_khz / 1e3:.0f} MHz; memory clock x bus width x 2); "
                            f"'{props.name}' is not in the datasheet table, so tensor-core peaks are unknown")
    result["assumptions"].append(
        f"float32 matmul precision {torch.get_float32_matmul_precision()!r}: "
        + ("TF32 tensor cores allowed, fp32 peak is the TF32 rate" if tf32 else "true fp32 on CUDA cores"))
    return result


# --------------------------------------------------------------------------- measurements

def _best_seconds(fn: Callable[[], object], device: torch.device, warmup: int, runs: int, repeats: int = 1,
                  min_time_s: float = 0.0, max_runs: int = 50) -> tuple[float, list[float]]:
    """Best and all per-call times of ``fn`` (``repeats`` calls per timed run, one sync per run).

    At least ``runs`` runs, more until ``min_time_s`` of timed work (at most
    ``max_runs``): on a busy machine the best run is the one least disturbed.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    while len(times) < runs or (sum(times) * repeats < min_time_s and len(times) < max_runs):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / repeats)
    return min(times), times


def _dtype_supported(kind: str, dtype: torch.dtype) -> tuple[bool, str]:
    if kind == "cpu":
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False, "oneDNN reports no bf16 support on this CPU"
        if dtype == torch.float16 and not torch.ops.mkldnn._is_mkldnn_fp16_supported():
            return False, "oneDNN reports no native fp16 support on this CPU (reference kernels are orders slower)"
    if kind == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return False, "this GPU has no bf16 support"
    return True, ""


def _matmul_sizes(kind: str, quick: bool) -> tuple[int, ...]:
    """Square sizes to try. On CPU several: a busy (shared) machine lets short products run undisturbed
    more often than long ones, and the best of them is what the kernels can reach. Quick mode uses
    smaller ones (a lower, faster estimate: tests only)."""
    sizes = {"cpu": ((256, 512), (512, 1024, 2048)), "cuda": ((4096,), (8192,)), "mps": ((2048,), (4096,))}
    return sizes[kind][0 if quick else 1]


def _effort(quick: bool) -> dict:
    """Warm-up, minimum runs and minimum timed seconds per kernel shape."""
    return {"warmup": 1, "runs": 3, "min_time_s": 0.1} if quick else {"warmup": 3, "runs": 5, "min_time_s": 0.4}


def _seeded_repeats(kind: str, quick: bool) -> tuple[torch.Generator, int]:
    """The same seeded operands for every kernel family, and calls per timed run (GPU calls are short)."""
    return torch.Generator().manual_seed(0), 1 if kind == "cpu" else (3 if quick else 10)


def measure_matmul(device: torch.device, dtype: torch.dtype, quick: bool = False) -> dict:
    """Measured FLOP/s of large square matrix products in ``dtype`` (best over runs and sizes)."""
    kind = device_kind(device)
    supported, reason = _dtype_supported(kind, dtype)
    if not supported:
        return {"status": "unsupported", "reason": reason}
    generator, repeats = _seeded_repeats(kind, quick)
    by_size = {}
    for n in _matmul_sizes(kind, quick):
        a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        best, times = _best_seconds(lambda: torch.mm(a, b, out=out), device, repeats=repeats, **_effort(quick))
        flops = 2 * n**3
        by_size[n] = {"runs": len(times), "best_ms": best * 1e3, "best_flops_per_s": flops / best,
                      "median_flops_per_s": flops / sorted(times)[len(times) // 2]}
        del a, b, out
    size = max(by_size, key=lambda k: by_size[k]["best_flops_per_s"])
    return {"status": "ok", "size": size, "calls_per_run": repeats, "precision": _precision(kind, "matmul", dtype),
            "measured_flops_per_s": by_size[size]["best_flops_per_s"],
            "median_flops_per_s": by_size[size]["median_flops_per_s"], "by_size": by_size}


# (kernel, in channels, out channels, height = width) at the batch of _conv_batch: the 3x3 and 1x1
# convolutions of ResNet-style stages (e.g. resnet50 layer2/layer3), large enough to saturate the cores.
_CONV_SHAPES = {
    False: ((3, 128, 128, 28), (3, 256, 256, 14), (1, 1024, 256, 14), (1, 256, 1024, 14)),
    True: ((3, 64, 64, 28), (1, 256, 64, 28)),
}


def _conv_batch(kind: str, quick: bool) -> int:
    return {"cpu": (2, 8), "cuda": (32, 64), "mps": (8, 16)}[kind][0 if quick else 1]


def measure_conv(device: torch.device, dtype: torch.dtype, quick: bool = False) -> dict:
    """Measured FLOP/s of 3x3 and 1x1 stride-1 convolutions, channels-last and contiguous (best per kernel).

    FLOPs are nominal (2 x N x C_out x H x W x C_in x k x k), as :mod:`infopt.flops` counts them; a
    kernel using a reduced-FLOP algorithm (Winograd, FFT) would show above that count's true rate.
    """
    kind = device_kind(device)
    supported, reason = _dtype_supported(kind, dtype)
    if not supported:
        return {"status": "unsupported", "reason": reason}
    generator, repeats = _seeded_repeats(kind, quick)
    batch = _conv_batch(kind, quick)
    by_kernel = {}
    for k, c_in, c_out, size in _CONV_SHAPES[quick]:
        for memory_format, label in ((torch.channels_last, "channels_last"), (torch.contiguous_format, "contiguous")):
            x = torch.randn(batch, c_in, size, size, generator=generator).to(device=device, dtype=dtype)
            w = torch.randn(c_out, c_in, k, k, generator=generator).to(device=device, dtype=dtype)
            x, w = x.contiguous(memory_format=memory_format), w.contiguous(memory_format=memory_format)
            with torch.inference_mode():
                best, times = _best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=k // 2), device,
                                            repeats=repeats, **_effort(quick))
            flops = 2 * batch * c_out * size * size * c_in * k * k
            name = f"conv{k}x{k} {label} {c_in}->{c_out} ch {size}x{size} batch {batch}"
            by_kernel[name] = {"runs": len(times), "best_ms": best * 1e3, "best_flops_per_s": flops / best,
                               "median_flops_per_s": flops / sorted(times)[len(times) // 2], "flops": flops}
            del x, w
    kernel = max(by_kernel, key=lambda k: by_kernel[k]["best_flops_per_s"])
    return {"status": "ok", "kernel": kernel, "calls_per_run": repeats, "precision": _precision(kind, "conv", dtype),
            "measured_flops_per_s": by_kernel[kernel]["best_flops_per_s"],
            "median_flops_per_s": by_kernel[kernel]["median_flops_per_s"], "by_kernel": by_kernel}


def _precision(kind: str, family: str, dtype: torch.dtype) -> str:
    return float32_precision(kind, family) if dtype == torch.float32 else dtype_name(dtype)


def best_compute(matmul: dict, conv: dict) -> dict:
    """The measured compute peak of one dtype: the faster of the matmul and convolution families, named."""
    candidates = []
    if matmul.get("status") == "ok":
        candidates.append(("matmul", f"matmul {matmul['size']}x{matmul['size']}", matmul))
    if conv.get("status") == "ok":
        candidates.append(("conv", conv["kernel"], conv))
    if not candidates:
        entry = matmul if matmul.get("status") != "ok" else conv
        return {"status": entry.get("status", "error"), "reason": entry.get("reason", "no kernel family measured")}
    family, kernel, entry = max(candidates, key=lambda c: c[2]["measured_flops_per_s"])
    return {"status": "ok", "family": family, "kernel": kernel, "precision": entry.get("precision"),
            "measured_flops_per_s": entry["measured_flops_per_s"], "median_flops_per_s": entry["median_flops_per_s"],
            "by_family": {f: e["measured_flops_per_s"] for f, _, e in candidates},
            **{key: entry[key] for key in ("interference", "interference_detail") if key in entry}}


def measure_copy_bandwidth(device: torch.device, quick: bool = False) -> dict:
    """Measured copy bandwidth (bytes read + written per second) over buffers much larger than the LLC."""
    kind = device_kind(device)
    llc, llc_source = last_level_cache_bytes(device)
    floor = {"cpu": 64 * 2**20, "cuda": 1 * 2**30, "mps": 512 * 2**20}[kind]
    nbytes = max(4 * (llc or 0), floor)
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    repeats = 1 if kind == "cpu" else (3 if quick else 10)
    best, times = _best_seconds(lambda: dst.copy_(src), device, warmup=2, runs=3 if quick else 7, repeats=repeats,
                                min_time_s=0.2 if quick else 0.5)
    moved = 2 * src.nbytes
    del src, dst
    return {"measured_bytes_per_s": moved / best, "median_bytes_per_s": moved / sorted(times)[len(times) // 2],
            "buffer_bytes": nbytes, "llc_bytes": llc, "llc_source": llc_source, "runs": len(times),
            "calls_per_run": repeats, "best_ms": best * 1e3, "definition": BANDWIDTH_DEFINITION}


def default_dtypes(device: torch.device) -> list[str]:
    """fp32 and bf16 everywhere; fp16 on GPUs and on CPUs with native fp16."""
    kind = device_kind(device)
    names = ["float32", "bfloat16"]
    if kind != "cpu" or torch.ops.mkldnn._is_mkldnn_fp16_supported():
        names.append("float16")
    return names


def device_peaks(device: str | torch.device = "cpu", dtypes=None, quick: bool = False) -> dict:
    """Measured and theoretical peaks of ``device`` (JSON-safe dict; see the module docstring).

    ``dtypes``: names or torch dtypes to measure (default :func:`default_dtypes`).
    ``quick=True`` uses small matrices and few runs (tests; not for reporting).
    """
    device = resolve_device(device)
    kind = device_kind(device)
    names = default_dtypes(device) if dtypes is None else [dtype_name(d) for d in dtypes]
    if kind == "cuda":
        theoretical = cuda_theoretical_peaks(device)
        name = torch.cuda.get_device_name(device)
    elif kind == "cpu":
        theoretical = cpu_theoretical_peaks()
        name = cpu_model()
    else:
        theoretical = {"flops_per_s": {n: None for n in DTYPES}, "bandwidth_bytes_per_s": None,
                       "source": "not derivable for Apple GPUs from what torch reports", "assumptions": []}
        name = "Apple MPS"
    matmul, conv, compute = {}, {}, {}
    for dtype in names:
        for family, measure, store in (("matmul", measure_matmul, matmul), ("conv", measure_conv, conv)):
            try:
                with watch(device) as window:  # interference: other processes busy while this was timed
                    store[dtype] = measure(device, DTYPES[dtype], quick)
                store[dtype].update(window.result.columns())
            except Exception as error:  # one dtype or family failing must not hide the others
                store[dtype] = {"status": "error", "reason": f"{family}: {type(error).__name__}: {error}"}
        compute[dtype] = best_compute(matmul[dtype], conv[dtype])
    with watch(device) as window:
        bandwidth = measure_copy_bandwidth(device, quick)
    bandwidth.update(window.result.columns())
    return {
        "device": str(device),
        "device_kind": kind,
        "device_name": name,
        "quick": quick,
        "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "precision_switches": precision_switches(),  # on CUDA fp32 convs run TF32 by default, torch.mm does not
        "compute": compute,
        "compute_definition": COMPUTE_DEFINITION,
        "matmul": matmul,
        "matmul_definition": MATMUL_DEFINITION,
        "conv": conv,
        "conv_definition": CONV_DEFINITION,
        "bandwidth": bandwidth,
        "theoretical": theoretical,
    }


def peak_flops(peaks: dict, dtype: torch.dtype | str = "float32", source: str = "measured") -> float | None:
    """Peak FLOP/s for ``dtype`` from a :func:`device_peaks` dict (``source``: measured | theoretical)."""
    name = dtype_name(dtype)
    if source == "measured":
        # "compute" (best kernel family) since issue #18; older files hold only "matmul"
        entry = peaks.get("compute", peaks.get("matmul", {})).get(name, {})
        return entry.get("measured_flops_per_s") if entry.get("status") == "ok" else None
    if source == "theoretical":  # a float32 roof whose measured kernel ran TF32 is the TF32 datasheet rate
        tf32 = peaks.get("compute", {}).get(name, {}).get("precision") == "tf32" and name == "float32"
        figures = peaks.get("theoretical", {})
        return (figures.get("tf32_flops_per_s") if tf32 else None) or figures.get("flops_per_s", {}).get(name)
    raise InvalidInputError(f"Peak source must be 'measured' or 'theoretical', got {source!r}.")


def peak_bandwidth(peaks: dict, source: str = "measured") -> float | None:
    """Peak memory bandwidth in bytes/s from a :func:`device_peaks` dict."""
    if source == "measured":
        return peaks.get("bandwidth", {}).get("measured_bytes_per_s")
    if source == "theoretical":
        return peaks.get("theoretical", {}).get("bandwidth_bytes_per_s")
    raise InvalidInputError(f"Peak source must be 'measured' or 'theoretical', got {source!r}.")


def peaks_table(peaks: dict) -> pd.DataFrame:
    """One row per quantity: measured, theoretical and measured / theoretical."""
    rows = []
    for name, entry in peaks.get("compute", peaks["matmul"]).items():
        measured, theoretical = peak_flops(peaks, name, "measured"), peak_flops(peaks, name, "theoretical")
        rows.append({"quantity": f"compute {name}", "unit": "FLOP/s", "measured": measured,
                     "theoretical": theoretical, "status": entry.get("status"),
                     "note": (entry.get("kernel") or entry.get("reason", "")) + (
                         f" (runs as {entry['precision']})" if entry.get("precision") == "tf32" else "")})
    rows.append({"quantity": "copy bandwidth", "unit": "bytes/s", "measured": peak_bandwidth(peaks, "measured"),
                 "theoretical": peak_bandwidth(peaks, "theoretical"), "status": "ok", "note": ""})
    table = pd.DataFrame(rows)
    for column in ("measured", "theoretical"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["measured_over_theoretical"] = table["measured"] / table["theoretical"]
    return table
