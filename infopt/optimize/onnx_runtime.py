"""ONNX Runtime variants: the model exported with ``torch.onnx.export`` and run by an ``InferenceSession``.

Registered by :mod:`infopt.optimize` (group ``compile``: another runtime
replaces torch's execution, so it never stacks with ``torch.compile``):

* ``onnxruntime``: the dynamo exporter (``torch.onnx.export(dynamo=True)``)
  with a dynamic batch axis (and a dynamic sequence axis for text models), run
  on the CPU execution provider, or the CUDA one on a GPU where onnxruntime has
  it (``onnxruntime-gpu``, the ``gpu`` extra) with the device index of the
  model's ``cuda:N``; the session's real provider is asserted
  (:func:`require_provider`): a silent fall-back to the CPU is an error, never
  a row on ``cuda``.
* ``onnxruntime-int8``: the same graph with int8 dynamic quantization of its
  weights (``onnxruntime.quantization.quantize_dynamic``, QInt8); CPU.
* ``onnxruntime-int8-static``: the same graph with static int8 quantization
  (``quantize_static``, QDQ, per-channel int8 weights, uint8 activations whose
  ranges are calibrated on :data:`CALIBRATION_BATCHES` batches of the model's
  own seeded inputs, drawn with other seeds than the accuracy check's); CPU,
  models with image inputs (static quantization pays for convolutions). With
  real data, calibrate on real samples: random inputs set the ranges here.

The export runs on the variant's transformed model (weight casts, layout and
autocast composed before it are traced into the graph); its wall time is
``export_time_s``, reported in the sweep's ``compile_time_s`` like a
compilation. The session is fed the same seeded inputs as every other
variant; on the CUDA provider inputs and outputs cross the host (numpy), and
that copy is part of the timed call. An export failure (unsupported
operator, data-dependent control flow) raises with the exporter's one-line
reason, which the sweep records as ``status="error"`` before going on.
onnx / onnxruntime are imported only when used: a missing wheel is ``n/a``
with the reason, never an import error at startup.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
import warnings

import torch
from torch import nn

from infopt.devices import device_kind
from infopt.optimize.registry import Variant

ONNX_VARIANTS = {
    "onnxruntime": "exported with torch.onnx.export (dynamo, dynamic batch axis) and run by ONNX Runtime "
                   "(CPU or CUDA execution provider)",
    "onnxruntime-int8": "the onnxruntime graph with int8 dynamic weight quantization "
                        "(onnxruntime.quantization.quantize_dynamic, QInt8), CPU execution provider",
    "onnxruntime-int8-static": "the onnxruntime graph with static int8 quantization (quantize_static: QDQ, "
                               "per-channel int8 weights, uint8 activations calibrated on seeded inputs), CPU "
                               "execution provider",
}
#: Calibration of ``onnxruntime-int8-static``: batches of :data:`CALIBRATION_BATCH` inputs, seeds from
#: :data:`CALIBRATION_SEED` (the accuracy check uses the default seed, so calibration never sees its inputs).
CALIBRATION_BATCHES, CALIBRATION_BATCH, CALIBRATION_SEED = 4, 8, 10_000
#: Sample batch the graph is traced at (not 1: torch.export specializes size-1 dimensions).
EXPORT_BATCH = 2


@functools.lru_cache(maxsize=1)
def onnx_import_error() -> str | None:
    """Why the ONNX path cannot be used here (``None`` when onnx, onnxscript and onnxruntime import)."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                __import__(name)
        except Exception as error:  # noqa: BLE001 - any failure means "not usable", reported as n/a
            missing.append(f"{name} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
    return f"not importable here: {', '.join(missing)}" if missing else None


def _provider(kind: str) -> str:
    return {"cuda": "CUDAExecutionProvider"}.get(kind, "CPUExecutionProvider")


def check(name: str):
    """Applicability of ONNX variant ``name`` to a model (beyond the device kind)."""
    def reason(model) -> str | None:
        error = onnx_import_error()
        if error:
            return f"{name}: onnx/onnxruntime {error}."
        import onnxruntime  # noqa: PLC0415

        provider = _provider(device_kind(model.device))
        if provider not in onnxruntime.get_available_providers():
            return (f"{name}: the installed onnxruntime has no {provider} (available: "
                    f"{', '.join(onnxruntime.get_available_providers())}); install onnxruntime-gpu for CUDA "
                    "(pip install -e \".[gpu]\", without the CPU build).")
        return None
    return reason


def _has_image_input(model) -> str | None:
    if not model.has_image_input:
        return (f"onnxruntime-int8-static quantizes convolutions of image models; {model.name} ({model.task}) "
                "has no image input (use onnxruntime-int8 or torchao-int8-dynamic).")
    return None


def _quantize_static(model, keys: list[str], source: str, target: str) -> None:
    """Static QDQ int8 quantization of ``source`` into ``target``, calibrated on seeded inputs of ``model``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    class SeededInputs(CalibrationDataReader):
        def __init__(self):
            real = getattr(model, "calibration_data", None)  # the user's calibration split (infopt.data)
            self.batches = iter(real[0]) if real else (
                model.prepare_input(CALIBRATION_BATCH, seed=CALIBRATION_SEED + index)
                for index in range(CALIBRATION_BATCHES))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {key: batch[key].detach().cpu().numpy() for key in keys}

    prepared = target + ".pre.onnx"
    quant_pre_process(source, prepared)  # shape inference and graph clean-up, as onnxruntime recommends
    quantize_static(prepared, target, SeededInputs(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def one_line_reason(error: BaseException) -> str:
    """The exporter's reason in one line: the line after its 'Exception summary', else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "Exception summary" in line and index + 1 < len(lines):
            return lines[index + 1][:400]
    return (lines[0] if lines else type(error).__name__)[:400]


class ONNXExportError(RuntimeError):
    """``torch.onnx.export`` failed; the message is the exporter's one-line reason."""


class _Exportable(nn.Module):
    """The variant's forward over positional tensors (ONNX graphs take a flat list of named inputs)."""

    def __init__(self, variant, keys: list[str]):
        super().__init__()
        self.variant, self.keys = variant, keys
        self.inner = variant.wrapper.module  # registers the weights as this module's parameters

    def forward(self, *tensors):
        return self.variant.forward(dict(zip(self.keys, tensors)))


def export_onnx(variant, path: str) -> tuple[list[str], float]:
    """Export ``variant``'s forward to ``path``: input names and export seconds. Raises :class:`ONNXExportError`."""
    sample = variant.prepare_input(EXPORT_BATCH)
    keys = list(sample)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    sequence = torch.export.Dim("sequence", min=2, max=variant.max_seq_len or 1 << 16) if variant.is_text else None
    # an encoder-decoder's decoder_* inputs have their own length (the decoder's), not the encoder's
    decoder = torch.export.Dim("decoder_sequence", min=2, max=1 << 16) if sequence is not None else None
    shapes = tuple({0: batch, **({1: decoder if key.startswith("decoder_") else sequence}
                                 if sequence is not None and sample[key].dim() == 2 else {})}
                   for key in keys)
    exportable = _Exportable(variant, keys).eval()
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(exportable, tuple(sample.values()), path, dynamo=True, input_names=keys,
                              output_names=["output"], dynamic_shapes=(shapes,), verbose=False)
    except Exception as error:  # noqa: BLE001 - re-raised as one line
        raise ONNXExportError(f"torch.onnx.export failed: {one_line_reason(error)}") from error
    return keys, time.perf_counter() - started


class ProviderFallbackError(RuntimeError):
    """ONNX Runtime created the session on another execution provider than the one asked for."""


def session_providers(device: torch.device) -> list:
    """The ``providers`` argument for a session on ``device``: CUDA with its device index, else the CPU."""
    provider = _provider(device_kind(device))
    if provider == "CUDAExecutionProvider":
        index = device.index if device.index is not None else (
            torch.cuda.current_device() if torch.cuda.is_available() else 0)
        return [(provider, {"device_id": int(index)})]
    return [provider]


def require_provider(session, device: torch.device) -> str:
    """The provider ``session`` really runs on; raises when ONNX Runtime fell back from the one asked for.

    ``get_available_providers()`` lists CUDA whenever the GPU build is installed, even when its CUDA / cuDNN
    libraries do not load; the session then silently runs on the CPU. Only ``session.get_providers()`` tells.
    """
    wanted, used = _provider(device_kind(device)), session.get_providers()[0]
    if used != wanted:
        raise ProviderFallbackError(f"ONNX Runtime runs this session on {used}, not {wanted} for {device} (its "
                                    "libraries did not load: see onnxruntime's log; install the onnxruntime-gpu "
                                    "build matching this CUDA)")
    return used


def _session(path: str, device: torch.device):
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the thread count the lab pins for every variant
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(path, options, providers=session_providers(device))
    require_provider(session, device)
    return session


#: fp32 ONNX files exported in this process, per untouched baseline (its id) and device, with their input names
#: and export seconds: onnxruntime, -int8 and -int8-static of one model start from the same graph, and the race's
#: finalists are confirmed after it, so one export serves them all (a full-size model's takes tens of seconds on
#: a CPU). An entry and its file go when their baseline is garbage-collected.
_BASELINE_EXPORTS: dict[tuple[int, str], tuple[str, list[str], float]] = {}


def _forget_export(key: tuple[int, str], folder: str) -> None:
    _BASELINE_EXPORTS.pop(key, None)
    shutil.rmtree(folder, ignore_errors=True)


def shares_baseline_export(model) -> bool:
    """The ONNX step is the variant's only one: its copy is the untouched baseline, whose export is shared."""
    return len(model.steps) == 1


def fp32_export(model) -> tuple[str, list[str], float, bool]:
    """``model``'s forward as an fp32 ONNX file: (path, input names, export seconds, reused). Exported once per
    baseline and device when the ONNX step is the variant's only one (the copy is then the untouched baseline);
    a combination (``bf16+onnxruntime``) exports its own, into a folder of its own the caller removes."""
    import weakref

    key = (id(model.reference), str(model.device))
    shared = shares_baseline_export(model)
    if shared and key in _BASELINE_EXPORTS:
        path, keys, export_s = _BASELINE_EXPORTS[key]
        return path, keys, export_s, True
    folder = tempfile.mkdtemp(prefix="infopt-onnx-")
    path = os.path.join(folder, "model.onnx")
    try:
        keys, export_s = export_onnx(model, path)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if shared:
        _BASELINE_EXPORTS[key] = (path, keys, export_s)
        weakref.finalize(model.reference, _forget_export, key, folder)
    return path, keys, export_s, False


def transform(name: str):
    """The in-place transformation of a :class:`infopt.optimize.applied.VariantModel` for ONNX variant ``name``."""
    def apply(model) -> None:
        kind = device_kind(model.device)
        fp32_path, keys, export_s, reused = fp32_export(model)
        path = fp32_path
        folder = tempfile.mkdtemp(prefix="infopt-onnx-")  # the quantized copy, removed once the session has it
        if name == "onnxruntime-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

            quantized = os.path.join(folder, "model.int8.onnx")
            quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
            path = quantized
        elif name == "onnxruntime-int8-static":
            quantized = os.path.join(folder, "model.int8-static.onnx")
            _quantize_static(model, keys, path, quantized)
            path = quantized
            real = getattr(model, "calibration_data", None)
            model.notes.append(f"static int8 calibrated on {real[1]}" if real else
                               f"static int8 calibrated on {CALIBRATION_BATCHES} x {CALIBRATION_BATCH} seeded "
                               "inputs (random: no --data given)")
        try:
            session = _session(path, model.device)  # the session holds the weights in memory from here on
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if not shares_baseline_export(model):  # a combination's own export
                shutil.rmtree(os.path.dirname(fp32_path), ignore_errors=True)
        device = model.device

        def run(inputs: dict) -> torch.Tensor:
            feeds = {key: inputs[key].detach().cpu().numpy() for key in keys}
            return torch.from_numpy(session.run(None, feeds)[0]).to(device)

        model.wrapper.forward = run          # the copy's forward now runs the session
        model.forward_contexts.clear()      # autocast was traced into the graph; it means nothing around ORT
        model.export_time_s = export_s
        index = f" (device {model.device.index or 0})" if kind == "cuda" else ""
        reuse_note = " (its graph reused: exported once per model)" if reused else ""
        model.notes.append(f"ONNX export {export_s:.1f} s{reuse_note}; {session.get_providers()[0]}{index}"
                           + ("; inputs/outputs copied through host memory" if kind == "cuda" else ""))
    return apply


def variants() -> list[Variant]:
    """This backend's variants, in registry order."""
    return [
        Variant("onnxruntime", ONNX_VARIANTS["onnxruntime"], transform("onnxruntime"), stage=4,
                group="compile", devices=("cpu", "cuda"),
                device_reason="ONNX Runtime has CPU and CUDA execution providers, not MPS",
                check=check("onnxruntime")),
        Variant("onnxruntime-int8", ONNX_VARIANTS["onnxruntime-int8"], transform("onnxruntime-int8"),
                stage=4, group="compile", devices=("cpu",),
                device_reason="onnxruntime's dynamic int8 (QInt8) kernels are CPU kernels",
                reduced_precision=True, check=check("onnxruntime-int8")),
        Variant("onnxruntime-int8-static", ONNX_VARIANTS["onnxruntime-int8-static"],
                transform("onnxruntime-int8-static"), stage=4, group="compile", devices=("cpu",),
                device_reason="it is measured on ONNX Runtime's CPU execution provider only (static int8 on "
                              "GPUs is TensorRT's domain)",
                reduced_precision=True,
                check=lambda model: check("onnxruntime-int8-static")(model) or _has_image_input(model)),
    ]


__all__ = ["CALIBRATION_BATCH", "CALIBRATION_BATCHES", "CALIBRATION_SEED", "EXPORT_BATCH", "ONNXExportError",
           "ONNX_VARIANTS", "ProviderFallbackError", "check", "export_onnx", "one_line_reason", "onnx_import_error",
           "require_provider", "session_providers", "transform", "variants"]
