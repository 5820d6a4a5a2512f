"""Shared fixtures: tiny models are built once per session (they are read-only in tests)."""

from __future__ import annotations

import pytest
import torch

import infopt


def pytest_configure(config):
    # Two CPU threads match the CI machine and keep run times predictable.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny model of each registered kind, on CPU."""
    return {name: infopt.load_model(name, size="tiny") for name in infopt.list_models()}


@pytest.fixture(scope="session")
def tiny_resnet(tiny_models):
    return tiny_models["resnet50"]


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_models):
    return tiny_models["gpt2"]


@pytest.fixture(scope="session")
def tiny_distilbert(tiny_models):
    return tiny_models["distilbert"]


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def short_machine_check(monkeypatch):
    """The runner watches the machine for seconds before timing anything; tests check what it records and does
    (tests/test_interference.py loads the machine to see it), not how long it looks, so in-process runs look
    for 0.3 s. Subprocess runs (the README's quick run) keep the real duration."""
    from infopt.run import runner

    monkeypatch.setattr(runner, "MACHINE_CHECK_S", 0.3)
    monkeypatch.setattr(runner, "QUICK_MACHINE_CHECK_S", 0.3)
