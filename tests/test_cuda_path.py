"""The CUDA path checked on the CPU with fakes (issue #28): each test fails if the fix it guards is undone.

The NVML fakes are built from the installed nvidia-ml-py (``pynvml``): a name the implementation calls that the
real module does not have fails here, so a rename in nvidia-ml-py cannot pass unnoticed.
"""

from __future__ import annotations

import os
import sys
import types
from collections import namedtuple

import pandas as pd
import pytest
import torch
from torch import nn

from infopt.measure import nvml_watch
from infopt.measure.interference import watch

# -- ONNX Runtime: the provider the session really uses, and the device index ------------------------------------


def test_onnx_session_asks_for_the_models_cuda_device_index():
    from infopt.optimize.onnx_runtime import session_providers

    assert session_providers(torch.device("cuda:1")) == [("CUDAExecutionProvider", {"device_id": 1})]
    assert session_providers(torch.device("cuda:3")) == [("CUDAExecutionProvider", {"device_id": 3})]
    assert session_providers(torch.device("cpu")) == ["CPUExecutionProvider"]


def test_onnx_session_that_fell_back_to_the_cpu_is_an_error_not_a_cuda_row(monkeypatch):
    onnxruntime = pytest.importorskip("onnxruntime")
    from infopt.optimize import onnx_runtime

    asked = {}

    class FallbackSession:  # what onnxruntime does when the CUDA libraries do not load: CPU, silently
        def __init__(self, path, options, providers):
            asked["providers"] = providers

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "InferenceSession", FallbackSession)
    with pytest.raises(onnx_runtime.ProviderFallbackError, match="CPUExecutionProvider, not CUDAExecutionProvider"):
        onnx_runtime._session("unused.onnx", torch.device("cuda:1"))
    assert asked["providers"] == [("CUDAExecutionProvider", {"device_id": 1})]

    class CudaSession(FallbackSession):
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "InferenceSession", CudaSession)
    assert onnx_runtime._session("unused.onnx", torch.device("cuda:1")).get_providers()[0] == "CUDAExecutionProvider"


def test_gpu_and_cpu_builds_of_onnxruntime_are_separate_extras():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    assert "onnxruntime" not in core  # in the core it would clash with onnxruntime-gpu
    assert any(item.startswith("onnxruntime-gpu") for item in extras["gpu"])
    assert not any(item.startswith("onnxruntime>") for item in extras["gpu"] + extras["test"])
    assert any(item.startswith("onnxruntime>") for item in extras["dev"])


# -- NVML: "not checked" whenever a check could not run --------------------------------------------------------

Process, Sample = namedtuple("Process", "pid usedGpuMemory"), namedtuple("Sample", "pid smUtil")
try:
    import pynvml as REAL_NVML  # the installed nvidia-ml-py, kept before any test replaces it in sys.modules
except ImportError:  # pragma: no cover - the dev extra installs it
    REAL_NVML = None


def real_nvml():
    if REAL_NVML is None:
        pytest.skip("nvidia-ml-py is not installed (pip install -e '.[dev]')")
    return REAL_NVML


def fake_nvml(monkeypatch, *, processes=(), utilisation=None, reasons=0, mig=0, drop=(), raising=None):
    """A copy of the real pynvml whose queries return the given figures; names in ``drop`` are removed."""
    real = real_nvml()
    functions = {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetHandleByIndex": lambda index: ("gpu", index),
        "nvmlDeviceGetHandleByUUID": lambda uuid: ("gpu", uuid),
        "nvmlDeviceGetComputeRunningProcesses": lambda handle: [Process(pid, 1) for pid in processes],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda handle: [],
        "nvmlDeviceGetProcessUtilization": lambda handle, since: [Sample(pid, u) for pid, u in
                                                                   (utilisation or {}).items()],
        "nvmlDeviceGetCurrentClocksEventReasons": lambda handle: reasons,
        "nvmlDeviceGetCurrentClocksThrottleReasons": lambda handle: reasons,
        "nvmlDeviceGetMigMode": lambda handle: (mig, mig),
    }
    missing = [name for name in functions if not hasattr(real, name)]
    assert not missing, f"nvidia-ml-py no longer has {missing}"
    for name in (nvml_watch.MIG_QUERY, nvml_watch.UTILISATION_QUERY, *nvml_watch.PROCESS_QUERIES):
        assert hasattr(real, name), name
    assert any(hasattr(real, name) for name in nvml_watch.CLOCK_REASON_QUERIES)
    module = types.ModuleType("pynvml")
    module.__dict__.update({name: value for name, value in vars(real).items() if not name.startswith("__")})
    module.__dict__.update(functions)
    for name, error in (raising or {}).items():
        def fail(*_args, _error=error):
            raise _error
        module.__dict__[name] = fail
    for name in drop:
        module.__dict__.pop(name, None)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return real


def gpu_text(device="cuda:0") -> tuple[bool, str]:
    with watch(device) as window:
        pass
    return window.result.flagged, window.result.gpu


def test_every_check_ran_and_found_nothing_is_clean(monkeypatch):
    fake_nvml(monkeypatch, processes=[os.getpid()], utilisation={os.getpid(): 90})
    assert gpu_text() == (False, "GPU clean (NVML)")


def test_mig_mode_is_not_checked_never_clean(monkeypatch):
    real = fake_nvml(monkeypatch, mig=1, processes=[4242], utilisation={4242: 99})
    assert real.NVML_DEVICE_MIG_ENABLE == 1
    flagged, text = gpu_text()
    assert not flagged and "GPU not checked (MIG mode" in text and "clean" not in text


def test_a_name_missing_from_nvidia_ml_py_is_named_as_not_checked(monkeypatch):
    fake_nvml(monkeypatch, processes=[os.getpid()], drop=("nvmlDeviceGetProcessUtilization",))
    flagged, text = gpu_text()
    assert not flagged and "clean" not in text
    assert "not checked: utilisation: the installed nvidia-ml-py has no nvmlDeviceGetProcessUtilization" in text

    fake_nvml(monkeypatch, processes=[os.getpid()], drop=nvml_watch.CLOCK_REASON_QUERIES)
    assert "not checked: clocks" in gpu_text()[1]


def test_a_failing_query_is_not_checked_but_no_samples_is_a_result(monkeypatch):
    real = real_nvml()
    fake_nvml(monkeypatch, processes=[os.getpid()],
              raising={"nvmlDeviceGetComputeRunningProcesses": real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)})
    flagged, text = gpu_text()
    assert "not checked: processes" in text and "clean" not in text

    fake_nvml(monkeypatch, processes=[os.getpid()],
              raising={"nvmlDeviceGetProcessUtilization": real.NVMLError(real.NVML_ERROR_NOT_FOUND)})
    assert gpu_text() == (False, "GPU clean (NVML)")  # NOT_FOUND: no process had samples in the window


def test_nvml_init_failure_is_not_checked(monkeypatch):
    real = real_nvml()
    fake_nvml(monkeypatch, raising={"nvmlInit": real.NVMLError(real.NVML_ERROR_DRIVER_NOT_LOADED)})
    flagged, text = gpu_text()
    assert not flagged and text.startswith("GPU not checked (nvmlInit failed")


def test_power_cap_throttling_is_flagged(monkeypatch):
    real = real_nvml()
    fake_nvml(monkeypatch, processes=[os.getpid()], reasons=real.nvmlClocksEventReasonSwPowerCap)
    flagged, text = gpu_text()
    assert flagged and "clocks slowed (power cap)" in text
    fake_nvml(monkeypatch, processes=[os.getpid()], reasons=real.nvmlClocksEventReasonGpuIdle)
    assert gpu_text() == (False, "GPU clean (NVML)")  # idle clocks are not a slowdown


def test_a_foreign_process_is_not_hidden_by_subtracting_ours(monkeypatch):
    fake_nvml(monkeypatch, processes=[4242], utilisation={4242: 60})
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(nvml_watch, "device_handle", lambda nvml, device: ("gpu", 0))
    # CUDA initialised, but this process holds no memory on that device: the one process listed is foreign
    monkeypatch.setattr(nvml_watch, "holds_context", lambda device: False)
    flagged, text = gpu_text()
    assert flagged and "1 other process(es) on the GPU" in text and "60% GPU utilisation not ours" in text
    # this process holds memory there and its pid is not visible (a container): one listed process is ours
    monkeypatch.setattr(nvml_watch, "holds_context", lambda device: True)
    fake_nvml(monkeypatch, processes=[4242, 4343], utilisation={4242: 90})
    flagged, text = gpu_text()
    assert flagged and "1 other process(es) on the GPU (this process not identifiable by pid" in text


# -- TF32 switches, versions, and the fp32 roof ---------------------------------------------------------------

def test_environment_records_tf32_switches_and_optimizer_versions():
    from infopt.env import collect

    record = collect()
    assert set(record["precision"]) >= {"cuda_matmul_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision"}
    assert record["precision"]["cudnn_allow_tf32"] == torch.backends.cudnn.allow_tf32
    for package in ("torchao", "onnx", "onnxruntime"):
        assert package in record["versions"]


def test_float32_precision_follows_each_switch():
    from infopt.env import float32_precision

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        assert float32_precision("cuda", "conv") == "tf32" and float32_precision("cuda", "matmul") == "fp32"
        torch.backends.cuda.matmul.allow_tf32 = True
        assert float32_precision("cuda", "matmul") == "tf32"
        assert float32_precision("cpu", "conv") == "fp32"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fp32_roof_whose_kernel_ran_tf32_uses_the_tf32_datasheet_rate():
    from infopt.analyze.peaks import peak_flops, peaks_table

    peaks = {"compute": {"float32": {"status": "ok", "measured_flops_per_s": 300e12, "kernel": "conv3x3",
                                     "precision": "tf32"}},
             "matmul": {}, "bandwidth": {"measured_bytes_per_s": 4e12},
             "theoretical": {"flops_per_s": {"float32": 67e12}, "tf32_flops_per_s": 494.7e12,
                             "bandwidth_bytes_per_s": 4.8e12}}
    assert peak_flops(peaks, "float32", "theoretical") == 494.7e12
    assert "(runs as tf32)" in peaks_table(peaks).iloc[0]["note"]
    peaks["compute"]["float32"]["precision"] = "fp32"
    assert peak_flops(peaks, "float32", "theoretical") == 67e12


# -- generation events on the model's device --------------------------------------------------------------------

def test_step_events_are_recorded_on_the_models_device_stream(monkeypatch):
    from infopt.measure.generation import StepClock

    recorded = []

    class FakeEvent:
        def __init__(self, enable_timing):
            pass

        def record(self, stream=None):
            recorded.append(stream)

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", str(device)))
    clock = StepClock(torch.device("cuda:1"))
    clock.mark()
    clock.mark()
    assert recorded == [("stream of", "cuda:1")] * 2


# -- variants: host copies, parked baselines, packed sizes, converted layers -------------------------------------

def test_copy_through_host_keeps_ties_and_never_copies_on_the_device(tiny_gpt2, monkeypatch):
    from infopt.optimize.applied import copy_through_host

    baseline = tiny_gpt2
    moved = []
    monkeypatch.setattr(baseline, "device", torch.device("cuda:1"))  # any non-CPU device
    monkeypatch.setattr(nn.Module, "to", lambda self, device: moved.append(str(device)) or self)
    copied = copy_through_host(baseline)
    assert moved == ["cuda:1"]  # the copy is made in host memory, then moved once
    module = copied.module
    assert len(list(module.parameters())) == len(list(baseline.module.parameters()))  # ties kept
    assert module.lm_head.weight is module.transformer.wte.weight
    ours, theirs = ({p.data_ptr() for p in m.parameters()} for m in (module, baseline.module))
    assert not ours & theirs  # a copy, not the baseline's storage
    copy_through_host(baseline, park=True)
    assert moved == ["cuda:1", "cpu", "cuda:1"]  # parked: the baseline leaves before the copy arrives


def test_parked_baseline_moves_off_and_back(tiny_gpt2):
    from infopt.optimize.applied import VariantModel

    moves = []

    class Recorder(nn.Module):
        def to(self, device):  # noqa: D401 - records instead of moving
            moves.append(str(device))
            return self

    reference = types.SimpleNamespace(module=Recorder(), device=torch.device("cuda:1"))
    variant = VariantModel.__new__(VariantModel)
    variant.__dict__.update(reference=reference, parked=False)
    with variant.baseline_parked():
        assert moves == ["cpu"]
    assert moves == ["cpu", "cuda:1"]
    variant.parked = True
    with variant.baseline_resident():
        pass
    assert moves == ["cpu", "cuda:1", "cuda:1", "cpu"]


def test_quantized_weights_report_their_packed_size(tiny_gpt2):
    pytest.importorskip("torchao")
    from infopt.optimize import apply_variant

    variant = apply_variant(tiny_gpt2, "torchao-int8-weight-only")
    quantized = [m.weight for m in variant.eager_module.modules() if isinstance(m, nn.Linear)]
    assert quantized and all(type(w) is not torch.Tensor and type(w) is not nn.Parameter for w in quantized)
    plain = {t.data_ptr(): t.numel() * t.element_size() for t in variant.eager_module.state_dict().values()
             if type(t) is torch.Tensor}
    int8_elements = sum(w.numel() for w in quantized)
    total = variant.weight_bytes()
    float_size = sum(plain.values()) + 4 * int8_elements  # what counting numel x the float size would give
    assert total < float_size - 2.5 * int8_elements  # each quantized element is about 1 byte, not 4
    assert total >= sum(plain.values()) + int8_elements  # ... at least its int8 data (plus scales)
    assert any("nn.Linear converted" in note for note in variant.notes)


def test_converted_layers_are_named():
    pytest.importorskip("torchao")
    from torchao import quantization as tq

    from infopt.optimize.torchao import converted_layers_note

    module = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 10))
    tq.quantize_(module, tq.Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn == "0")
    assert converted_layers_note(module) == "1 of 2 nn.Linear converted; kept float: 1"


# -- quality counts cover the generation variants ---------------------------------------------------------------

def test_run_quality_lines_include_generation_variants(tmp_path):
    from infopt.measure.interference import run_quality_lines

    folder = tmp_path / "run" / "gpt2"
    folder.mkdir(parents=True)
    pd.DataFrame([{"status": "ok", "interference": True, "tpot_ci_low_ms": 1.0, "tpot_ci_high_ms": 2.0},
                  {"status": "ok", "interference": False, "tpot_ci_low_ms": None, "tpot_ci_high_ms": None}]
                 ).to_csv(folder / "gpt2_cpu_generation_variants.csv", index=False)
    lines = run_quality_lines(tmp_path / "run")
    assert len(lines) == 1 and "generation_variants" in lines[0]
    assert "1 timed on a busy machine" in lines[0] and "1 with too few samples" in lines[0]


# -- Ray on GPUs: a CPU share per GPU job, peaks per GPU model -------------------------------------------------

def test_gpu_jobs_ask_for_their_gpus_share_of_the_cpus_and_are_pinned_to_it(monkeypatch):
    from infopt.run.ray_executor import gpu_cpu_share, pin_cpu_share, task_options

    nodes = [{"Resources": {"CPU": 64.0, "GPU": 8.0}}, {"Resources": {"CPU": 16.0, "GPU": 4.0}}]
    assert gpu_cpu_share(nodes) == 4 and gpu_cpu_share([]) == 1
    assert task_options(None, "cuda", None, nodes)["num_cpus"] == 4
    pinned = {}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pinned.update(cpus=list(cpus)), raising=False)
    assert pin_cpu_share(["2"], 4) == [8, 9, 10, 11] and pinned["cpus"] == [8, 9, 10, 11]
    assert pin_cpu_share([], 4) is None


def test_a_pinned_window_counts_only_its_own_cpus(monkeypatch):
    from infopt.measure import interference

    Times = namedtuple("Times", "user nice system irq softirq steal")
    per_cpu = [Times(100.0, 0, 0, 0, 0, 0), Times(1.0, 0, 0, 0, 0, 0), Times(2.0, 0, 0, 0, 0, 0)]
    monkeypatch.setattr(interference.psutil, "cpu_times", lambda percpu=False: per_cpu if percpu else
                        Times(103.0, 0, 0, 0, 0, 0))
    monkeypatch.setattr(interference.psutil, "cpu_count", lambda logical=True: 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 2}, raising=False)
    assert interference._system_busy_s() == 3.0  # CPU 0's load is another job's, on CPUs we do not use
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert interference._system_busy_s() == 103.0


def test_peaks_are_kept_per_gpu_model_and_never_reused_for_another(tmp_path):
    import json

    from infopt.run.ray_executor import choose_peaks, peaks_variant_path, store_peaks, stored_peaks

    path = tmp_path / "cuda" / "device_peaks.json"
    path.parent.mkdir()
    h100 = json.dumps({"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}).encode()
    a100 = json.dumps({"device": "cuda:0", "device_name": "NVIDIA A100-SXM4-40GB"}).encode()
    store_peaks(path, h100)
    store_peaks(path, a100)
    assert json.loads(path.read_bytes())["device_name"] == "NVIDIA H100 80GB HBM3"  # the first stays the target's
    assert peaks_variant_path(path, "NVIDIA A100-SXM4-40GB").read_bytes() == a100
    stored = stored_peaks(path)
    assert set(stored) == {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"}
    assert choose_peaks(stored, "NVIDIA A100-SXM4-40GB") == a100
    assert choose_peaks(stored, "NVIDIA L4") is None and choose_peaks(stored, None) is None


# -- on a real GPU (marked cuda: skipped without one; benchmarks/gpu_check.sh runs them) -----------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name, spec", [("gpt2", "torchao-int8-weight-only"), ("gpt2", "torchao-int8-dynamic"),
                                        ("gpt2", "torchao-float8"), ("distilbert", "onnxruntime"),
                                        ("resnet50", "onnxruntime"), ("resnet50", "compile"),
                                        ("gpt2", "bf16-weights")])
def test_cuda_only_variants_run_there_and_pass_the_guard(name, spec):
    import infopt
    from infopt.measure.timing import TimingConfig
    from infopt.optimize import run_variant_sweep
    from infopt.optimize.registry import parse_spec

    model = infopt.load_model(name, device="cuda", size="tiny")
    df = run_variant_sweep(model, [spec], batch_sizes=(2,), seq_len=16 if model.is_text else None,
                           timing=TimingConfig.quick(), measure_memory=True)
    row = df.set_index("variant").loc["+".join(parse_spec(spec))]
    if spec == "torchao-float8" and torch.cuda.get_device_capability() < (8, 9):
        assert row["status"] == "n/a"
        return
    assert row["status"] == "ok", row["error"]
    assert row["accuracy_ok"], (row["rel_error"], row["cosine_similarity"])
    assert row["timer"] == "cuda-event"
    if spec == "onnxruntime":
        assert "CUDAExecutionProvider" in row["notes"]
    if spec == "torchao-float8":
        assert "nn.Linear converted" in row["notes"]


@pytest.mark.cuda
@needs_cuda
def test_torchao_int4_on_cuda_packs_and_matches():
    pytest.importorskip("torchao")
    from torchao import quantization as tq

    from infopt.optimize.torchao import TORCHAO_VARIANTS, converted_layers_note

    _, kwargs, _, _ = TORCHAO_VARIANTS["torchao-int4-weight-only"]
    module = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256)).cuda().to(torch.bfloat16)
    x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    reference = module(x).float()
    tq.quantize_(module, tq.Int4WeightOnlyConfig(**kwargs))
    assert converted_layers_note(module) == "2 of 2 nn.Linear converted"
    output = module(x).float()
    assert torch.nn.functional.cosine_similarity(reference.flatten(), output.flatten(), dim=0) > 0.98


@pytest.mark.cuda
@needs_cuda
def test_parked_baseline_keeps_one_model_on_the_gpu():
    import infopt
    from infopt.optimize import apply_variant

    model = infopt.load_model("gpt2", device="cuda", size="tiny")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    variant = apply_variant(model, "bf16-weights", park_baseline=True)
    assert variant.parked and all(p.device.type == "cpu" for p in model.module.parameters())
    assert torch.cuda.memory_allocated() < before  # bf16 copy only: the fp32 baseline left the GPU
    with variant.baseline_resident():
        assert all(p.device.type == "cuda" for p in model.module.parameters())
    del variant
    import gc

    gc.collect()
    assert all(p.device.type == "cuda" for p in model.module.parameters())


@pytest.mark.cuda
@needs_cuda
def test_real_nvml_checks_run_or_say_which_did_not():
    with watch("cuda:0") as window:
        torch.ones(1, device="cuda").sum().item()
    text = window.result.gpu
    assert text == "GPU clean (NVML)" or "not checked" in text or window.result.flagged, text
    print("NVML:", text)


@pytest.mark.cuda
@needs_cuda
def test_generation_step_clock_on_the_models_gpu():
    from infopt.measure.generation import StepClock

    device = torch.device(f"cuda:{torch.cuda.device_count() - 1}")
    clock = StepClock(device)
    clock.mark()
    torch.ones(256, 256, device=device) @ torch.ones(256, 256, device=device)
    clock.mark()
    torch.cuda.synchronize(device)
    times = clock.elapsed_ms()
    assert times[0] == 0 and times[1] >= 0


def test_every_quantized_layer_counts_even_when_python_reuses_object_ids():
    """Each ``Parameter.data`` is a fresh object: keyed by its id, a freed one's id could hide the next layer."""
    pytest.importorskip("torchao")
    from torchao import quantization as tq

    from infopt.optimize.applied import VariantModel

    module = nn.Sequential(*[nn.Linear(32, 32 + i) if i == 0 else nn.Linear(32 + i - 1, 32 + i) for i in range(40)])
    tq.quantize_(module, tq.Int8WeightOnlyConfig())
    expected = 0
    for layer in module:
        weight = layer.weight.data
        expected += sum(getattr(weight, n).numel() * getattr(weight, n).element_size()
                        for n in weight.__tensor_flatten__()[0])
        expected += layer.bias.numel() * layer.bias.element_size()
    variant = VariantModel.__new__(VariantModel)
    variant.__dict__.update(eager_module=module)
    assert variant.weight_bytes() == expected
