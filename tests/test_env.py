"""Environment capture is complete and JSON-safe."""

from __future__ import annotations

import json

import torch

from infopt.determinism import determinism_state, seed_everything, set_determinism
from infopt.env import collect

REQUIRED = [
    "timestamp_utc", "hostname", "os", "python", "versions", "cuda_version", "cudnn_version", "gpus",
    "mps_available", "cpu_model", "physical_cores", "logical_cores", "torch_num_threads",
    "torch_num_interop_threads", "cpu_capability", "mkldnn_available", "mkl_available", "total_ram_gb",
    "git_commit", "determinism",
]


def test_environment_has_every_key_and_round_trips_through_json():
    env = collect()
    missing = [key for key in REQUIRED if key not in env]
    assert not missing, missing
    assert json.loads(json.dumps(env)) == env
    assert env["versions"]["torch"] and env["versions"]["transformers"]
    assert env["torch_num_threads"] == torch.get_num_threads()
    assert env["logical_cores"] >= env["physical_cores"] >= 1
    assert env["total_ram_gb"] > 0


def test_seed_everything_makes_draws_repeatable():
    seed_everything(3)
    a = torch.rand(4)
    seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_determinism_is_off_by_default_and_switchable():
    assert determinism_state()["deterministic_algorithms"] is False
    try:
        state = set_determinism(True)
        assert state["deterministic_algorithms"] and state["cudnn_deterministic"]
    finally:
        state = set_determinism(False)
    assert not state["deterministic_algorithms"] and not state["cudnn_deterministic"]
