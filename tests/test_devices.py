"""Device resolution never falls back silently."""

from __future__ import annotations

import re

import pytest
import torch

from infopt.devices import choose_device, device_kind, is_out_of_memory, resolve_device, synchronize
from infopt.errors import DeviceUnavailableError


def test_cpu_resolves_and_synchronizes():
    assert resolve_device("cpu") == torch.device("cpu")
    synchronize("cpu")


def test_auto_records_its_choice():
    choice = choose_device("auto")
    assert choice.reason.startswith("auto:")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert choice.device.type == expected
    assert choice.as_dict()["requested"] == "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:3"])
def test_unavailable_cuda_request_raises_with_reason(name):
    with pytest.raises(DeviceUnavailableError, match=r"was requested but .*(no CUDA support|no CUDA GPU is visible)"):
        resolve_device(name)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the no-MPS path")
def test_unavailable_mps_request_raises_with_reason():
    with pytest.raises(DeviceUnavailableError, match="'mps' was requested but .*MPS"):
        resolve_device("mps")


def test_unknown_device_name_is_rejected():
    with pytest.raises(DeviceUnavailableError, match="Unknown device 'tpu'"):
        resolve_device("tpu")


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailableError, match="index 3 is out of range: 1 GPU"):
        resolve_device("cuda:3")


def test_device_kind_and_oom_detection():
    assert device_kind("cuda:1") == "cuda" and device_kind(torch.device("cpu")) == "cpu"
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_resolves_when_present():
    device = resolve_device("cuda")
    assert device.type == "cuda"
    synchronize(device)


# -- device targets of a run (--device cuda cpu@KEY=VALUE ...) ---------------------------------------------

from infopt.devices import device_name, parse_target, resolve_targets  # noqa: E402
from infopt.errors import InvalidInputError  # noqa: E402


def _gpu_visible(monkeypatch, count=2):
    """Make `cuda` look usable (no kernel ever runs in these tests)."""
    import infopt.devices as devices

    monkeypatch.setattr(devices, "cuda_unavailable_reason",
                        lambda index=None: None if index is None or index < count else "out of range")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_targets_parse_to_a_device_and_a_ray_selector():
    spec = parse_target(" CUDA@accelerator_type:H100, zone=us-east-1 ")
    assert (spec.device, spec.accelerator_type, spec.node_labels) == ("cuda", "H100", (("zone", "us-east-1"),))
    assert spec.text == "cuda@accelerator_type:H100,zone=us-east-1"
    assert parse_target("cpu@ray.io/market-type=spot").node_labels == (("ray.io/market-type", "spot"),)
    assert parse_target("cuda:1").text == "cuda:1" and not parse_target("cuda:1").has_selector


@pytest.mark.parametrize("text, message", [
    ("gpu", "invalid choice: 'gpu'"),
    ("cpu@", "expected a selector of the form"),
    ("cpu@zone", "expected a selector of the form"),
    ("cpu@zone=", "expected a selector of the form"),
    ("cpu@-bad=x", "expected a selector of the form"),
    ("cpu@zone=a,zone=b", "names the label 'zone' twice"),
    ("cpu@accelerator_type:H100", "applies to a cuda target only"),
    ("cuda@accelerator_type:", "expected accelerator_type:NAME"),
    ("cuda@accelerator_type:H100,accelerator_type:L4", "names accelerator_type twice"),
    ("auto@zone=a", "auto picks a device on this machine"),
    ("cuda:1@zone=a", "Ray picks the GPU"),
])
def test_malformed_targets_are_refused_in_one_sentence(text, message):
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse_target(text)


def test_several_targets_get_distinct_readable_folders(monkeypatch):
    _gpu_visible(monkeypatch)
    targets = resolve_targets(["cuda@accelerator_type:H100", "cuda@accelerator_type:L4", "cpu", "cpu@zone=a"],
                              ray=True)
    assert [t.label for t in targets] == ["cuda-H100", "cuda-L4", "cpu", "cpu-zone-a"]
    assert [t.device for t in targets] == ["cuda:0", "cuda:0", "cpu", "cpu"]
    assert targets[0].as_dict()["accelerator_type"] == "H100" and targets[3].as_dict()["node_labels"] == {"zone": "a"}
    # two GPUs of one machine: each its own folder, by index
    assert [t.label for t in resolve_targets(["cuda:0", "cuda:1"])] == ["cuda-0", "cuda-1"]
    assert [t.label for t in resolve_targets(["cuda:1"])] == ["cuda"]  # one target: the folder it always had
    # a remote Ray cluster: not checked against this machine, the worker resolves "cuda"
    (remote,) = resolve_targets(["cuda@accelerator_type:A100"], ray=True, check_locally=False)
    assert remote.device == "cuda" and remote.label == "cuda-A100"


def test_duplicate_selector_without_ray_and_unavailable_targets_are_refused(monkeypatch):
    from infopt.errors import InfoptError

    with pytest.raises(InvalidInputError, match="needs --executor ray"):
        resolve_targets(["cpu", "cpu@zone=a"])
    with pytest.raises(InvalidInputError, match="same target twice: 'cpu' and 'cpu'"):
        resolve_targets(["cpu", "cpu"])
    with pytest.raises(InvalidInputError, match="same target twice: 'cpu@zone=a' and 'cpu@zone=a'"):
        resolve_targets(["cpu@zone=a", "cpu@zone=a"], ray=True)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        with pytest.raises(InvalidInputError, match="'auto' and 'cpu' both mean cpu"):
            resolve_targets(["auto", "cpu"])  # auto resolves to the CPU here
        with pytest.raises(InfoptError, match="'cuda' was requested but"):
            resolve_targets(["cpu", "cuda"])
    _gpu_visible(monkeypatch)
    with pytest.raises(InvalidInputError, match="'cuda' and 'cuda:0' both mean cuda:0"):
        resolve_targets(["cuda", "cuda:0"])
    with pytest.raises(InvalidInputError, match="would share the results folder 'cpu-a-b-c'"):
        resolve_targets(["cpu@a=b-c", "cpu@a-b=c"], ray=True)


def test_device_name_reads_the_environment_of_the_host_that_ran_the_job():
    env = {"cpu_model": "AMD EPYC", "gpus": [{"index": 0, "name": "NVIDIA H100"}, {"index": 1, "name": "NVIDIA L4"}]}
    assert device_name(env, "cpu") == "AMD EPYC"
    assert device_name(env, "cuda:1") == "NVIDIA L4" and device_name(env, "cuda") == "NVIDIA H100"
    assert device_name({"gpus": []}, "cuda:0") is None and device_name(None, "cpu") is None
