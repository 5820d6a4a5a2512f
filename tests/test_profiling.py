"""torch.profiler tables, module attribution, trace export and overhead analysis (infopt.analyze.profiling)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.modules import module as nn_module

from infopt.errors import InvalidInputError
from infopt.analyze.opcount import ROOT_NAME
from infopt.analyze.profiling import profile_model, python_hotspots

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _global_hook_counts():
    return (len(nn_module._global_forward_pre_hooks), len(nn_module._global_forward_hooks))


@pytest.fixture(scope="module")
def gpt2_profile(tiny_gpt2, tmp_path_factory):
    before = _global_hook_counts()
    result = profile_model(tiny_gpt2, 2, tmp_path_factory.mktemp("profile"), seq_len=32, wait=1, warmup=1, active=2)
    assert _global_hook_counts() == before, "module hooks must be removed after profiling"
    return result


def test_trace_is_chrome_json_with_module_scopes(gpt2_profile):
    assert gpt2_profile.trace_path.name == "trace.json"
    data = json.loads(gpt2_profile.trace_path.read_text())
    names = {event.get("name", "") for event in data["traceEvents"]}
    assert len(data["traceEvents"]) > 0
    assert "module::transformer.h.0.attn" in names
    assert any(name.startswith("aten::") for name in names)


def test_module_table_names_real_submodules_with_consistent_times(gpt2_profile, tiny_gpt2):
    modules = gpt2_profile.modules
    real = set(dict(tiny_gpt2.module.named_modules())) - {""}
    assert set(modules["module"]) - {ROOT_NAME} == real
    wall = gpt2_profile.overhead["profiled_wall_ms_per_step"]
    assert (modules["inclusive_cpu_ms"] <= wall * 1.001).all()
    assert (modules["self_cpu_ms"] <= modules["inclusive_cpu_ms"] + 1e-9).all()
    assert (modules["self_cpu_ms"] >= -1e-6).all()
    rows = modules.set_index("module")
    assert rows.at["transformer.h.0.attn.c_attn", "calls_per_step"] == 1
    assert rows.at["transformer.h.1.mlp", "inclusive_cpu_ms"] > 0
    assert rows.at[ROOT_NAME, "inclusive_cpu_ms"] > rows.at["transformer.h.0", "inclusive_cpu_ms"]
    # the whole model's self times add up to its inclusive time: nothing counted twice
    assert modules["self_cpu_ms"].sum() == pytest.approx(rows.at[ROOT_NAME, "inclusive_cpu_ms"], rel=1e-6)
    # a never-called container (nn.ModuleList) sums its children
    layers = [rows.at[f"transformer.h.{i}", "inclusive_cpu_ms"] for i in range(2)]
    assert rows.at["transformer.h", "inclusive_cpu_ms"] == pytest.approx(sum(layers))


def test_operator_table_shares_and_flops(gpt2_profile):
    ops = gpt2_profile.operators.set_index("operator")
    assert ops["share_of_profiled_time"].sum() <= 1.0 + 1e-6
    assert (ops["self_cpu_ms"] <= ops["total_cpu_ms"] + 1e-9).all()
    counted = gpt2_profile.counts.operators.set_index("operator")
    assert ops.at["aten::addmm", "flops_per_step"] == counted.at["aten::addmm", "flops"] > 0
    assert ops.at["aten::addmm", "calls_per_step"] == 8  # 4 Conv1D layers x 2 blocks


def test_overhead_is_a_fraction_with_its_definition(gpt2_profile):
    overhead = gpt2_profile.overhead
    assert 0.0 <= overhead["framework_and_python_fraction"] <= 1.0
    assert overhead["operator_ms_per_step"] <= overhead["profiled_wall_ms_per_step"] + 1e-9
    assert overhead["leaf_operator_ms_per_step"] <= overhead["operator_ms_per_step"] + 1e-9
    assert "wall time" in overhead["definition"] and "self time" in overhead["definition"]
    assert overhead["profiled_steps"] == 2


def test_resnet_modules_and_no_trace_when_out_dir_is_none(tiny_resnet):
    result = profile_model(tiny_resnet, 1, None, wait=0, warmup=1, active=1)
    assert result.trace_path is None
    rows = result.modules.set_index("module")
    assert rows.at["layer1.0.conv1", "calls_per_step"] == 1
    assert rows.at["layer1.0.conv1", "inclusive_cpu_ms"] > 0
    assert rows.at["layer1.0", "module_type"] == "Bottleneck"


class _Exploding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(4, 4)

    def forward(self, x):
        self.inner(x)
        raise RuntimeError("boom")


class _FakeWrapper:
    name, variant, is_text, is_causal_lm = "fake", "eager-fp32", False, False

    def __init__(self):
        self.module, self.device = _Exploding(), torch.device("cpu")

    def prepare_input(self, batch_size, seq_len=None):
        return {"x": torch.randn(batch_size, 4)}

    def forward(self, inputs):
        return self.module(inputs["x"])


def test_hooks_are_removed_when_the_forward_raises():
    before = _global_hook_counts()
    with pytest.raises(RuntimeError, match="boom"):
        profile_model(_FakeWrapper(), 1, None)
    assert _global_hook_counts() == before


def test_bad_schedule_is_refused(tiny_resnet):
    with pytest.raises(InvalidInputError, match="active"):
        profile_model(tiny_resnet, 1, None, active=0)


def test_python_hotspots_is_a_table_not_an_overhead(tiny_distilbert):
    table = python_hotspots(tiny_distilbert, 1, 16, calls=1, top=5)
    assert len(table) == 5
    assert {"function", "self_ms_per_forward", "cumulative_ms_per_forward"} <= set(table.columns)
    assert not any("overhead" in column for column in table.columns)


@pytest.mark.cuda
@requires_cuda
def test_cuda_profile_reports_device_time_and_gpu_busy_fraction(tmp_path):
    import infopt

    model = infopt.load_model("gpt2", device="cuda", size="tiny")
    result = profile_model(model, 2, tmp_path, seq_len=32)
    assert 0.0 < result.overhead["gpu_busy_fraction"] <= 1.0
    assert result.operators["self_device_ms"].sum() > 0
    assert result.modules.set_index("module").at["transformer.h.0.attn", "inclusive_device_ms"] > 0
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
