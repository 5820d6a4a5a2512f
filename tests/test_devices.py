"""Device resolution never falls back silently."""

from __future__ import annotations

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
