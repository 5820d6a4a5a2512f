"""Model specs: torchvision:, hf:, py: models, the model interface, FLOPs and every bad input (offline, small)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from torch import nn

import infopt
from infopt.errors import InvalidInputError, UnknownModelError, WeightsUnavailableError
from infopt.flops import count_flops
from infopt.models import parse_spec, spec_folder_name, validate_spec

# -- helpers: Hugging Face folders written by the tests ---------------------------------------------------------

LLAMA_GQA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "vocab_size": 300, "max_position_embeddings": 128, "bos_token_id": 1, "eos_token_id": 2}
BERT = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 300, "max_position_embeddings": 64}


def write_config(folder, config: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"llama": write_config(root / "tiny-llama", LLAMA_GQA), "bert": write_config(root / "tiny-bert", BERT)}


@pytest.fixture(scope="module")
def llama(hf_folders):
    return infopt.load_model(f"hf:{hf_folders['llama']}")


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A user module ``my_factories`` importable from the current directory."""
    (tmp_path / "my_factories.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        def mlp(width=8):
            module = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3))
            return module, lambda batch_size: torch.randn(batch_size, 4)

        def two_inputs():
            class Add(nn.Module):
                def forward(self, a, b):
                    return {"sum": a + b}
            return Add(), lambda n: (torch.randn(n, 5), torch.randn(n, 5))

        def wrong():
            return "a string"

        def bad_inputs():
            def make_inputs(batch_size):
                raise ValueError("no data for batch " + str(batch_size))
            return nn.Linear(2, 2), make_inputs

        def not_batched():
            return nn.Linear(2, 2), lambda batch_size: torch.randn(7, 2)
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_factories"
    sys.modules.pop("my_factories", None)


# -- specs ------------------------------------------------------------------------------------------------------

def test_spec_parsing_and_folder_names():
    assert parse_spec("gpt2").kind == "builtin"
    spec = parse_spec("torchvision:vit_b_16?image_size=160")
    assert (spec.kind, spec.target, spec.options) == ("torchvision", "vit_b_16", {"image_size": 160})
    assert spec_folder_name("torchvision:vit_b_16") == "torchvision-vit_b_16"
    assert spec_folder_name("torchvision:vit_b_16?image_size=160") == "torchvision-vit_b_16-image_size-160"
    assert spec_folder_name("hf:/some/where/tiny-llama") == "hf-tiny-llama"
    assert spec_folder_name("py:pkg.mod:make") == "py-pkg.mod-make"
    assert infopt.list_models() == ["distilbert", "gpt2", "resnet50"]


# -- torchvision ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,image_size", [("resnet18", 224), ("mobilenet_v3_small", 224)])
def test_torchvision_classifiers_match_published_flops(name, image_size):
    from torchvision.models import get_model_weights

    model = infopt.load_model(f"torchvision:{name}")
    meta = get_model_weights(name).DEFAULT.meta
    assert model.image_size == image_size and model.task == "vision" and model.has_image_input
    assert model.parameter_count() == meta["num_params"]
    out = model.forward(model.prepare_input(2))
    assert out.shape == (2, 1000)
    # torchvision's _ops is GFLOPS in multiply-adds: FLOPs = 2 x multiply-adds
    assert model.flops_per_sample() == pytest.approx(2e9 * meta["_ops"], rel=0.02)
    info = model.info()
    assert info["spec"] == f"torchvision:{name}" and info["model"] == f"torchvision:{name}"


def test_torchvision_default_resolution_comes_from_the_weights():
    from infopt.models.torchvision_models import default_image_size

    assert default_image_size("inception_v3") == 299 and default_image_size("resnet18") == 224


def test_torchvision_segmentation_builds_offline_with_per_pixel_logits():
    from torchvision.models import get_model_weights

    from infopt.models.torchvision_models import default_image_size

    assert default_image_size("lraspp_mobilenet_v3_large") == 520
    model = infopt.load_model("torchvision:lraspp_mobilenet_v3_large?image_size=64")  # no backbone download
    assert model.task == "segmentation" and model.has_image_input
    assert model.parameter_count() == get_model_weights("lraspp_mobilenet_v3_large").DEFAULT.meta["num_params"]
    assert model.forward(model.prepare_input(2)).shape == (2, 64, 64, 21)  # rows = one pixel's class logits


def test_torchvision_video_takes_clips():
    model = infopt.load_model("torchvision:r3d_18?frames=4&image_size=32")
    assert (model.task, model.frames, model.has_image_input) == ("video", 4, False)
    inputs = model.prepare_input(2)
    assert inputs["pixel_values"].shape == (2, 3, 4, 32, 32)
    assert model.forward(inputs).shape == (2, 400)
    with pytest.raises(InvalidInputError, match="frames applies to torchvision's video models only"):
        validate_spec("torchvision:resnet18?frames=4")


def test_torchvision_vit_at_reduced_size_counts_fused_attention():
    model = infopt.load_model("torchvision:vit_b_16?image_size=32")
    assert model.image_size == 32 and model.spec == "torchvision:vit_b_16?image_size=32"
    assert model.forward(model.prepare_input(1)).shape == (1, 1000)
    tokens, embed, layers, hidden_mlp = (32 // 16) ** 2 + 1, 768, 12, 3072
    per_layer = 4 * tokens * embed * embed + 2 * tokens * tokens * embed + 2 * tokens * embed * hidden_mlp
    # encoder blocks dominate; patch embedding and head add a little
    patch = (32 // 16) ** 2 * embed * 3 * 16 * 16
    expected = 2 * (layers * per_layer + patch + embed * 1000)
    assert model.flops_per_sample() == pytest.approx(expected, rel=0.01)


def test_native_multi_head_attention_fast_path_is_counted():
    mha = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = torch.randn(2, 10, 64)
    from infopt.flops import flop_counter_mode

    with torch.enable_grad(), flop_counter_mode() as mode:
        mha(x, x, x, need_weights=False)  # grad enabled: the slow path of linear layers and matmuls
    slow = mode.get_total_flops()
    fast = count_flops(lambda: mha(x, x, x, need_weights=False))  # inference mode: aten._native_multi_head_attention
    assert fast == slow == 2 * 2 * (4 * 10 * 64 * 64 + 2 * 10 * 10 * 64)


def test_transformer_encoder_layer_fast_path_is_counted():
    layer = nn.TransformerEncoderLayer(64, 4, 256, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 10, 64)
    from infopt.flops import flop_counter_mode

    with torch.enable_grad(), flop_counter_mode() as mode:
        encoder(x)  # grad enabled: layer by layer through linear, matmul and sdpa
    fast = count_flops(lambda: encoder(x))  # inference mode: aten._transformer_encoder_layer_fwd
    assert fast == mode.get_total_flops() == 2 * 2 * 2 * (4 * 10 * 64 * 64 + 2 * 10 * 10 * 64 + 2 * 10 * 64 * 256)


# -- hf: ---------------------------------------------------------------------------------------------------------

def test_hf_bert_encoder_folder(hf_folders):
    model = infopt.load_model(f"hf:{hf_folders['bert']}")
    assert model.task == "encoder" and model.is_text and not model.is_causal_lm
    assert model.info()["task_source"] == "config.architectures[0] = BertModel"
    inputs = model.prepare_input(2, 16)
    assert model.forward(inputs).shape == (2, 16, 32)
    assert model.max_seq_len == 64 and model.image_size is None
    with pytest.raises(InvalidInputError, match="limit of 64 positions"):
        model.prepare_input(1, 65)
    # attention included: FLOPs = a + b x seq + 4 x layers x hidden x seq^2, so the second difference is
    # 4 x layers x hidden x (48^2 - 2 x 32^2 + 16^2) (the pooler's constant and the linear layers cancel)
    f16, f32, f48 = (model.flops_per_sample(s) for s in (16, 32, 48))
    assert f48 - 2 * f32 + f16 == 4 * 2 * 32 * (48**2 - 2 * 32**2 + 16**2)
    assert model.attn_implementation == "sdpa"


def test_hf_task_inferred_from_model_type_or_option(tmp_path):
    config = {k: v for k, v in BERT.items() if k != "architectures"}
    folder = write_config(tmp_path / "bert-noarch", config)
    model = infopt.load_model(f"hf:{folder}")
    assert model.task == "encoder" and "inferred from model_type 'bert'" in model.info()["task_source"]
    masked = infopt.load_model(f"hf:{folder}?task=masked-lm")
    assert masked.task == "masked-lm" and masked.info()["task_source"] == "task= option"
    assert masked.forward(masked.prepare_input(1, 8)).shape == (1, 8, 300)


def test_hf_llama_gqa_interface_and_token_ids(llama):
    assert llama.task == "causal-lm" and llama.is_causal_lm
    assert (llama.num_layers, llama.num_kv_heads, llama.head_dim, llama.kv_width) == (2, 2, 16, 32)
    ids = llama.prepare_input(4, 64)["input_ids"]
    assert not any((ids == special).any() for special in (1, 2)) and ids.max() < 300
    assert llama.forward(llama.prepare_input(1, 8)).shape == (1, 8, 300)


def test_hf_llama_kv_cache_matches_grouped_query_analytic_size(llama):
    from infopt.analyze.memory import kv_cache_analytic_bytes, kv_cache_sweep

    table = kv_cache_sweep(llama, batch_size=2, prompt_len=8, new_tokens=4, check_generate=False)
    row = table.iloc[-1]
    # 2 (K and V) x layers x batch x positions x kv_heads x head_dim x 4 bytes: half of what hidden_size would give
    analytic = 2 * 2 * 2 * int(row["cache_seq_len"]) * 2 * 16 * 4
    assert row["tensor_bytes"] == analytic
    assert kv_cache_analytic_bytes(llama, 2, int(row["cache_seq_len"])) == analytic


def test_hf_llama_generation_with_and_without_cache(llama):
    from infopt.measure.generation import run_generation_sweep

    table = run_generation_sweep(llama, prompt_lengths=[8], batch_sizes=[1], new_tokens=3, use_cache=[True, False],
                                 repeats=1, warmup=0, measure_memory=False)
    assert set(table["use_cache"]) == {True, False}
    assert (table["status"] == "ok").all() and (table["ttft_ms"] > 0).all() and (table["tpot_mean_ms"] > 0).all()


def test_hf_quick_size_shrinks_the_config_and_says_so(tmp_path):
    big = dict(LLAMA_GQA, hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8,
               num_key_value_heads=2, vocab_size=5000, eos_token_id=4999)
    folder = write_config(tmp_path / "bigger-llama", big)
    model = infopt.load_model(f"hf:{folder}", size="tiny")
    shrunk = model.info()["shrunk_config"]
    assert shrunk["num_hidden_layers"] == [6, 2] and shrunk["vocab_size"] == [5000, 1024]
    assert model.num_kv_heads == 2 and model.config.num_attention_heads == 8  # grouped-query ratio 4 kept
    assert model.config.eos_token_id == 1023 and "smoke test" in model.info()["size_note"]
    assert model.forward(model.prepare_input(1, 8)).shape == (1, 8, 1024)
    from infopt.models import describe_size

    assert describe_size(f"hf:{folder}", "tiny")["shrunk_config"] == shrunk  # what the runner's manifest records
    assert "as given" in describe_size("torchvision:resnet18", "tiny")["note"]


def test_hf_pretrained_needs_local_weights(hf_folders):
    with pytest.raises(WeightsUnavailableError, match="No weights .* weights='random'"):
        infopt.load_model(f"hf:{hf_folders['bert']}", weights="pretrained")


# -- py: ----------------------------------------------------------------------------------------------------------

def test_py_factory_pair(factory_module):
    model = infopt.load_model(f"py:{factory_module}:mlp?width=16")
    assert model.task == "generic" and not model.has_image_input and model.num_layers is None
    a, b = model.prepare_input(3), model.prepare_input(3)
    assert torch.equal(a["input"], b["input"])  # seeded
    assert model.forward(a).shape == (3, 3)
    assert model.info()["flops_per_sample"] == 2 * (4 * 16 + 16 * 3)
    assert validate_spec(f"py:{factory_module}:mlp") == f"py:{factory_module}:mlp"


def test_py_factory_tuple_inputs_and_dict_output(factory_module):
    model = infopt.load_model(f"py:{factory_module}:two_inputs")
    inputs = model.prepare_input(2)
    assert model.forward(inputs).shape == (2, 5) and model.items_per_batch(inputs) == 2


def test_example_factory_runs(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples"))
    model = infopt.load_model("py:my_model:make_model")
    assert model.has_image_input and model.forward(model.prepare_input(2)).shape == (2, 10)


# -- bad input: one sentence each ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,error,pattern", [
    ("torchvision:resnet19", UnknownModelError, "no model named 'resnet19': did you mean resnet18"),
    ("torchvision:quantized_resnet18", InvalidInputError, "quantization family.*supports .*classification.*detection"),
    ("torchvision:raft_small", InvalidInputError, "optical_flow family.*segmentation.*video"),
    ("torchvision:resnet18?colour=red", InvalidInputError, "Unknown option"),
    ("nosuchprefix:x", UnknownModelError, "Unknown model .*torchvision:<name>"),
    ("py:only_module", UnknownModelError, "py:package.module:function"),
])
def test_bad_specs_are_one_clear_error(spec, error, pattern):
    with pytest.raises(error, match=pattern) as caught:
        validate_spec(spec)
    assert "\n" not in str(caught.value)


def test_hf_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="has no config.json"):
        validate_spec(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(InvalidInputError, match="no such folder"):
        validate_spec(f"hf:{tmp_path / 'missing'}")


@pytest.mark.parametrize("config,pattern", [
    # encoder-decoders run (tests/test_seq2seq.py); a speech one without Whisper-style log-mel input is refused
    ({"architectures": ["Speech2TextForConditionalGeneration"], "model_type": "speech_to_text",
      "is_encoder_decoder": True}, "speech encoder-decoder .*without num_mel_bins"),
    ({"architectures": ["BertForQuestionAnswering"], "model_type": "bert"},
     "BertForQuestionAnswering is not supported"),
])
def test_hf_unsupported_architectures_name_the_supported_ones(tmp_path, config, pattern):
    folder = write_config(tmp_path / "m", config)
    with pytest.raises(InvalidInputError, match=pattern) as caught:
        validate_spec(f"hf:{folder}")
    assert "ForCausalLM" in str(caught.value) or "AutoModelForSeq2SeqLM" in str(caught.value)


def test_hf_unknown_task_option(hf_folders):
    with pytest.raises(InvalidInputError, match="task='translation' is not supported.*causal-lm"):
        validate_spec(f"hf:{hf_folders['bert']}?task=translation")


def test_hub_id_missing_while_offline_says_how_to_get_it(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("INFOPT_ALLOW_NETWORK", raising=False)
    with pytest.raises(InvalidInputError, match="not in the local Hugging Face cache.*hf download someorg/tiny-model"):
        validate_spec("hf:someorg/tiny-model")


def test_hub_id_in_the_local_cache_is_found(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "models--someorg--cached-bert" / "snapshots" / ("a" * 40)
    write_config(snapshot, BERT)
    (tmp_path / "models--someorg--cached-bert" / "refs").mkdir()
    (tmp_path / "models--someorg--cached-bert" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert validate_spec("hf:someorg/cached-bert") == "hf:someorg/cached-bert"


@pytest.mark.parametrize("function,pattern", [
    ("wrong", r"wrong\(\) in module 'my_factories' returned a builtins.str; expected a ModelWrapper"),
    ("bad_inputs", r"make_inputs\(1\) raised ValueError: no data for batch 1"),
    ("not_batched", r"first dimension is not the batch size 1"),
    ("missing", "module 'my_factories' .* has no attribute 'missing'"),
])
def test_bad_factories_name_the_module_and_what_went_wrong(factory_module, function, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        validate_spec(f"py:{factory_module}:{function}")


def test_unimportable_factory_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match="cannot import module 'not_there'.*current directory"):
        validate_spec("py:not_there:make")


@pytest.mark.parametrize("spec", ["torchvision:resnet19", "py:not_there:make", "hf:./empty", "hf:./s2t",
                                  "hf:someorg/not-cached"])
def test_runner_exits_2_on_a_bad_spec_before_any_kernel(spec, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from infopt.run import runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("INFOPT_ALLOW_NETWORK", raising=False)
    (tmp_path / "empty").mkdir()
    # a speech encoder-decoder without Whisper-style log-mel input is still refused (T5 and BART run)
    write_config(tmp_path / "s2t", {"architectures": ["Speech2TextForConditionalGeneration"],
                                    "model_type": "speech_to_text", "is_encoder_decoder": True})
    monkeypatch.setattr(runner, "run_plan", lambda *a, **k: pytest.fail("a kernel would have started"))
    assert runner.main(["--device", "cpu", "--quick", "--models", spec, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err


# -- more interface checks ----------------------------------------------------------------------------------------

def test_builtins_declare_the_interface(tiny_models):
    resnet, gpt2, distilbert = tiny_models["resnet50"], tiny_models["gpt2"], tiny_models["distilbert"]
    assert resnet.max_seq_len is None and resnet.kv_width is None and resnet.attn_implementation is None
    assert resnet.has_image_input and resnet.info()["spec"] == "resnet50"
    assert gpt2.is_causal_lm and (gpt2.num_kv_heads, gpt2.head_dim) == (2, 32) and gpt2.attn_implementation == "sdpa"
    assert not distilbert.has_image_input and distilbert.config is not None and resnet.config is None


def test_hf_image_classifier_and_relative_folder(tmp_path, monkeypatch):
    vit = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": 32,
           "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32,
           "patch_size": 8, "num_labels": 5}
    write_config(tmp_path / "tiny-vit", vit)
    monkeypatch.chdir(tmp_path)
    assert validate_spec("hf:./tiny-vit") == f"hf:{tmp_path / 'tiny-vit'}"  # absolute: works from any kernel cwd
    model = infopt.load_model("hf:./tiny-vit")
    assert model.task == "vision" and model.has_image_input and model.image_size == 32 and not model.is_text
    assert model.forward(model.prepare_input(3)).shape == (3, 5)
    assert spec_folder_name(model.spec) == "hf-tiny-vit"


def test_hf_pretrained_loads_the_local_weights(hf_folders, tmp_path):
    source = infopt.load_model(f"hf:{hf_folders['bert']}", seed=1)
    folder = tmp_path / "with-weights"
    source.module.save_pretrained(folder)
    loaded = infopt.load_model(f"hf:{folder}", weights="pretrained", seed=2)
    inputs = source.prepare_input(1, 8)
    assert loaded.info()["weights"] == "pretrained"
    torch.testing.assert_close(loaded.forward(inputs), source.forward(inputs))


@pytest.mark.parametrize("task,argmax", [("vision", True), ("causal-lm", True), ("masked-lm", True),
                                         ("text-classification", True), ("encoder", False),
                                         ("vision-encoder", False), ("generic", False)])
def test_accuracy_guard_compares_argmax_only_for_logit_tasks(task, argmax):
    import math

    from infopt.optimize.accuracy import compare_outputs
    from infopt.models import TASKS

    assert task in TASKS
    reference = torch.randn(4, 10)
    result = compare_outputs(reference, reference.clone(), task)
    assert math.isnan(result["top1_agreement"]) != argmax


def test_runner_plan_uses_canonical_specs_and_safe_folders(tmp_path, monkeypatch, factory_module):
    from infopt.run import cli
    from infopt.run import plan as plan_module

    write_config(tmp_path / "models" / "tiny-bert", BERT)
    args = cli.build_parser().parse_args([
        "--device", "cpu", "--quick", "--output", str(tmp_path / "out"), "--run-name", "r", "--notebooks", "benchmark",
        "--models", "hf:./models/tiny-bert", "torchvision:vit_b_16?image_size=64", f"py:{factory_module}:mlp"])
    plan = plan_module.build_plan(args)
    absolute = f"hf:{tmp_path / 'models' / 'tiny-bert'}"
    assert plan.settings["models"] == [absolute, "torchvision:vit_b_16?image_size=64", f"py:{factory_module}:mlp"]
    jobs = {job.model: job for job in plan.jobs if job.model}
    assert jobs[absolute].parameters["model"] == absolute  # the kernel runs in another folder: absolute path
    folders = sorted(job.output.parent.name for job in jobs.values())
    assert folders == ["hf-tiny-bert", f"py-{factory_module}-mlp", "torchvision-vit_b_16-image_size-64"]
    args = cli.build_parser().parse_args(["--device", "cpu", "--output", str(tmp_path / "out"), "--run-name", "s",
                                             "--models", "hf:./models/tiny-bert", f"hf:{tmp_path}/models/tiny-bert"])
    with pytest.raises(InvalidInputError, match="twice"):
        plan_module.build_plan(args)


def test_torchvision_pretrained_offline_is_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("INFOPT_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="not cached and the run is offline.*weights='random'"):
        infopt.load_model("torchvision:mobilenet_v3_small", weights="pretrained")


def test_hf_cnn_config_without_image_size(tmp_path):
    resnet = {"architectures": ["ResNetForImageClassification"], "model_type": "resnet", "embedding_size": 8,
              "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic", "num_labels": 3}
    folder = write_config(tmp_path / "tiny-resnet", resnet)
    model = infopt.load_model(f"hf:{folder}?image_size=32", size="tiny")
    assert model.task == "vision" and model.image_size == 32 and "as given" in model.info()["size_note"]
    assert model.forward(model.prepare_input(2)).shape == (2, 3)
    assert infopt.load_model(f"hf:{folder}").image_size == 224  # no image_size in the config: 224


# -- variants, memory and generation ask the interface ------------------------------------------------------------

def test_variant_applicability_comes_from_the_interface(llama, factory_module, tiny_models, monkeypatch):
    from pathlib import Path

    from infopt.optimize import list_variants

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples"))
    cnn = infopt.load_model("py:my_model:make_model")             # a factory with 4-D image inputs
    vit = infopt.load_model("torchvision:vit_b_16?image_size=32")
    mlp = infopt.load_model(f"py:{factory_module}:mlp")
    assert "channels-last" in list_variants(cnn) and "channels-last" in list_variants(vit)
    assert "channels-last" not in list_variants(mlp) and "channels-last" not in list_variants(llama)
    assert "eager-attention" in list_variants(llama)            # hf: models expose attn_implementation
    assert "eager-attention" not in list_variants(vit)          # torchvision's attention has no switch
    assert "int8-dynamic" in list_variants(mlp) and "int8-dynamic" in list_variants(vit)
    assert "channels-last" in list_variants(tiny_models["resnet50"])
