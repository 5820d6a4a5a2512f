"""Device resolution and synchronization, and the device targets of a run.

Rule: a device that was asked for by name is either used or refused with
:class:`DeviceUnavailableError`; only ``"auto"`` chooses, and the choice is
returned so it can be recorded. Results labelled "cuda" ran on CUDA.

A run's ``--device`` names one or more *targets* (:func:`parse_target`,
:func:`resolve_targets`): a device, optionally with a Ray placement selector
after ``@`` (``cuda@accelerator_type:H100``, ``cpu@zone=a``), each measured
into its own ``<label>/`` folder of the run.

The MPS branches follow the ``torch.mps`` API (``synchronize``,
``current_allocated_memory``, ``driver_allocated_memory``). They cannot be
exercised on the Linux CI machine, so they are kept deliberately small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from infopt.errors import DeviceUnavailableError, InvalidInputError

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


# -- device targets of a run (``run_notebooks.py --device cuda cpu@KEY=VALUE ...``) -----------------------------

#: The selector term that asks Ray for a GPU type (Ray's ``accelerator_type`` task option).
ACCELERATOR_TYPE = "accelerator_type"
#: How a target is written, for help texts and error messages.
TARGET_SYNTAX = ("DEVICE[@SELECTOR]: DEVICE is auto, cpu, cuda, cuda:N or mps; SELECTOR (--executor ray only) is "
                 "accelerator_type:NAME (a GPU type, cuda only) or KEY=VALUE (a Ray node label), several joined by "
                 "commas")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"  # a Ray (Kubernetes) label name or value
_LABEL_KEY = re.compile(rf"(?:[a-z0-9](?:[a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_NAME}")  # optional DNS prefix/
_LABEL_VALUE = re.compile(_NAME)


@dataclass(frozen=True)
class TargetSpec:
    """A ``--device`` target as written: a device name plus an optional Ray placement selector (nothing resolved)."""

    device: str                                # auto, cpu, cuda, cuda:N or mps
    accelerator_type: str | None = None        # Ray's accelerator type, e.g. H100
    node_labels: tuple = ()                    # ((key, value), ...): Ray node labels the node must carry

    @property
    def has_selector(self) -> bool:
        return bool(self.accelerator_type or self.node_labels)

    @property
    def selector_text(self) -> str:
        terms = ([f"{ACCELERATOR_TYPE}:{self.accelerator_type}"] if self.accelerator_type else []) + \
            [f"{key}={value}" for key, value in self.node_labels]
        return ",".join(terms)

    @property
    def text(self) -> str:
        """The canonical way to write the target (what run.json records)."""
        return f"{self.device}@{self.selector_text}" if self.has_selector else self.device


def parse_target(text: str) -> TargetSpec:
    """``cpu``, ``cuda@accelerator_type:H100``, ``cpu@zone=a,spot=no`` as a :class:`TargetSpec`; one sentence
    if malformed.

    Only the syntax is checked here; whether the device exists, and whether a selector is allowed (it needs
    ``--executor ray``), is :func:`resolve_targets`'s job.
    """
    raw = str(text).strip()
    device, at, selector = raw.partition("@")
    device = device.strip().lower()
    if not (device in DEVICE_CHOICES or re.fullmatch(r"cuda:\d+", device)):
        raise InvalidInputError(f"invalid choice: {device or raw!r} (choose from {', '.join(DEVICE_CHOICES)} or "
                                f"cuda:N, optionally followed by @SELECTOR)")
    if not at:
        return TargetSpec(device)
    if device not in ("cpu", "cuda"):
        raise InvalidInputError(f"{raw!r}: a selector (after @) applies to cpu or cuda"
                                + (" (Ray picks the GPU; write cuda@...)" if device.startswith("cuda:") else
                                   " (auto picks a device on this machine)" if device == "auto" else "") + ".")
    accelerator, labels = None, {}
    for term in (t.strip() for t in selector.split(",")):
        if term.startswith(ACCELERATOR_TYPE + ":"):
            name = term[len(ACCELERATOR_TYPE) + 1:].strip()
            if not _LABEL_VALUE.fullmatch(name):
                raise InvalidInputError(f"{raw!r}: expected {ACCELERATOR_TYPE}:NAME with a GPU type such as H100 "
                                        f"or L4, got {term!r}.")
            if device != "cuda":
                raise InvalidInputError(f"{raw!r}: {ACCELERATOR_TYPE} selects a GPU type, so it applies to a "
                                        f"cuda target only.")
            if accelerator is not None:
                raise InvalidInputError(f"{raw!r}: names {ACCELERATOR_TYPE} twice.")
            accelerator = name
            continue
        key, eq, value = (part.strip() for part in term.partition("="))
        if not eq or not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise InvalidInputError(f"{raw!r}: expected a selector of the form {ACCELERATOR_TYPE}:NAME or KEY=VALUE "
                                    f"(a Ray node label: letters, digits, '-', '_', '.'), got {term!r}.")
        if key in labels:
            raise InvalidInputError(f"{raw!r}: names the label {key!r} twice.")
        labels[key] = value
    return TargetSpec(device, accelerator, tuple(labels.items()))


@dataclass(frozen=True)
class DeviceTarget:
    """One device a run measures on: what the notebooks receive, its folder in the run, and where Ray may place it."""

    spec: TargetSpec
    device: str     # what the notebooks receive: "cpu", "cuda:0", or "cuda" when the Ray worker resolves it
    label: str      # the run's <target> folder: cpu, cuda, cuda-H100, cpu-zone-a
    reason: str     # how the device was chosen ("requested", "auto: ...")

    @property
    def kind(self) -> str:
        return device_kind(self.device)

    @property
    def text(self) -> str:
        return self.spec.text

    def as_dict(self) -> dict:
        """The record of ``run.json``; its first three keys are a single-device run's ``device`` entry."""
        return {"device": self.device, "requested": self.spec.device, "reason": self.reason, "target": self.text,
                "label": self.label, "accelerator_type": self.spec.accelerator_type,
                "node_labels": dict(self.spec.node_labels)}


def _label_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def resolve_targets(texts, *, ray: bool = False, check_locally: bool = True) -> list[DeviceTarget]:
    """The run's targets from ``--device``'s words, in order; one sentence (:class:`InfoptError`) if any is wrong.

    Refused: a selector without Ray (``ray=False``), a device this machine lacks (``check_locally``: the local
    executor, and Ray without ``--ray-address``, whose instance runs here; a remote cluster is checked by the Ray
    executor), and two targets that mean the same device (``auto cpu`` on a machine without a GPU). Folder
    labels: the device kind, then the selector (``cuda-H100``, ``cpu-zone-a``); two cuda:N targets get their index.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InvalidInputError("--device needs at least one target.")
    specs = [parse_target(text) for text in texts]
    for spec in specs:
        if spec.has_selector and not ray:
            raise InvalidInputError(f"--device {spec.text}: a placement selector (after @) needs --executor ray; "
                                    f"the local executor measures on this machine's devices only.")
    resolved = []
    for spec in specs:
        if check_locally or spec.device == "auto":
            choice = choose_device(spec.device)  # DeviceUnavailableError with the reason; auto: this machine's pick
            resolved.append((spec, str(choice.device), choice.reason))
        else:
            resolved.append((spec, spec.device, "requested; placed by the Ray cluster"))
    seen = {}
    for spec, device, _ in resolved:
        same = (device, spec.accelerator_type, tuple(sorted(spec.node_labels)))
        if same in seen:
            raise InvalidInputError(f"--device lists the same target twice: {seen[same]!r} and {spec.text!r} both "
                                    f"mean {device}{'@' + spec.selector_text if spec.has_selector else ''}.")
        seen[same] = spec.text

    def label(spec, device, indexed):
        kind = device_kind(device)
        head = f"{kind}-{torch.device(device).index}" if indexed and torch.device(device).index is not None else kind
        parts = ([spec.accelerator_type] if spec.accelerator_type else []) + \
            [f"{key.rsplit('/', 1)[-1]}-{value}" for key, value in spec.node_labels]
        return "-".join([head, *map(_label_part, parts)])

    labels = [label(spec, device, False) for spec, device, _ in resolved]
    labels = [label(spec, device, labels.count(plain) > 1) for (spec, device, _), plain in zip(resolved, labels)]
    for index, name in enumerate(labels):
        if labels.index(name) != index:
            raise InvalidInputError(f"--device {resolved[labels.index(name)][0].text} and {resolved[index][0].text} "
                                    f"would share the results folder {name!r}; choose selectors that differ more.")
    return [DeviceTarget(spec, device, name, reason) for (spec, device, reason), name in zip(resolved, labels)]


def device_name(environment: dict | None, device: str) -> str | None:
    """The hardware behind ``device`` in an environment record (:func:`infopt.env.collect`): the CPU model, or
    the name of GPU ``N`` of ``cuda:N`` among the GPUs that process saw (a Ray GPU job sees only its own)."""
    environment = environment or {}
    kind = str(device).split(":")[0]
    if kind == "cuda":
        gpus = environment.get("gpus") or []
        index = int(str(device).split(":")[1]) if ":" in str(device) else 0
        match = [g for g in gpus if g.get("index") == index] or gpus[index:index + 1]
        return match[0].get("name") if match else None
    if kind == "mps":
        return "Apple MPS"
    return environment.get("cpu_model")
