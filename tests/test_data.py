"""Data specs: every form loads real samples fitted to the model, the split never overlaps, bad input is refused
in one sentence."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from infopt.data import load_data, parse_data_spec
from infopt.errors import InvalidInputError
from infopt.models.factory import FactoryModel
from infopt.models.hf import HFModel


def image_model(channels=1, side=8, classes=10):
    module = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, classes))
    return FactoryModel(module, lambda b: torch.rand(b, channels, side, side), task="vision", where="test")


def tabular_model(features=4, classes=3):
    return FactoryModel(nn.Linear(features, classes), lambda b: torch.rand(b, features), task="generic", where="test")


class CharTokenizer:
    """A tokenizer the test owns: byte values mod 60, end of text = 63."""

    eos_token_id = 63
    mask_token_id = 62

    def encode(self, text, add_special_tokens=False):
        return [b % 60 for b in text.encode()]


def tiny_causal_lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    model = HFModel(GPT2LMHeadModel(config), task="causal-lm", output_field="logits")
    model.tokenizer = CharTokenizer()
    return model


@pytest.mark.parametrize("text, kind, target, options", [
    ("sklearn:digits", "sklearn", "digits", {}),
    ("imagefolder:/data/x?labels=none&calibration=8", "imagefolder", "/data/x", {"labels": "none", "calibration": "8"}),
    ("text:docs.jsonl?seq_len=64", "text", "docs.jsonl", {"seq_len": "64"}),
    ("py:my_data:batches?metric=f1", "py", "my_data:batches", {"metric": "f1"}),
])
def test_every_spec_form_parses(text, kind, target, options):
    spec = parse_data_spec(text)
    assert (spec.kind, spec.target, spec.options) == (kind, target, options)


@pytest.mark.parametrize("text, fragment", [
    ("", "non-empty"), ("csv:x", "known kind"), ("py:onlymodule", "py:<module>:<function>"),
    ("sklearn:digits?colour=red", "unknown option"), ("sklearn:digits?calibration=many", "not an integer"),
])
def test_malformed_specs_are_refused_in_one_sentence(text, fragment):
    with pytest.raises(InvalidInputError, match=fragment) as error:
        parse_data_spec(text)
    assert "\n" not in str(error.value)


def test_sklearn_digits_feed_an_image_model_and_the_split_never_overlaps():
    data = load_data("sklearn:digits", image_model())
    assert data.size == 1797 and data.target_kind == "class" and len(data.classes) == 10
    calibration, evaluation = data.calibration, data.evaluation
    assert (calibration.size, evaluation.size) == (256, 1541)
    rows = data.inputs["input"].reshape(data.size, -1)
    assert float(rows.max()) <= 1.0 and rows.shape[1] == 64
    # disjoint: the two parts are complementary slices, and no evaluation row equals a calibration row by index
    assert torch.equal(torch.cat([calibration.inputs["input"], evaluation.inputs["input"]]), data.inputs["input"])
    assert calibration.hash != evaluation.hash
    assert set(calibration.targets.tolist()) == set(range(10)) == set(evaluation.targets.tolist())
    record = data.record()
    assert record["calibration_samples"] + record["evaluation_samples"] == 1797
    assert record["evaluation_hash"] == load_data("sklearn:digits", image_model()).evaluation.hash


def test_digits_are_resized_for_a_bigger_rgb_model_and_calibration_size_is_an_option():
    data = load_data("sklearn:digits?calibration=100&limit=300", image_model(channels=3, side=16))
    assert tuple(data.inputs["input"].shape) == (300, 3, 16, 16)
    assert (data.calibration.size, data.evaluation.size) == (100, 200)
    assert data.warnings() == []
    small = load_data("sklearn:digits?calibration=10&limit=60", image_model())
    assert any("only 50 samples" in line for line in small.warnings())


def test_tabular_sets_feed_a_tabular_model_and_refuse_a_mismatched_one():
    data = load_data("sklearn:iris", tabular_model())
    assert tuple(data.inputs["input"].shape) == (150, 4) and data.calibration.size == 37
    with pytest.raises(InvalidInputError, match="13 features per sample"):
        load_data("sklearn:wine", tabular_model())
    with pytest.raises(InvalidInputError, match="is tabular"):
        load_data("sklearn:iris", image_model())


def write_images(folder, classes, per_class=5, size=(12, 10)):
    from PIL import Image

    for index, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (40 * index, 10 * i, 200)).save(folder / name / f"{i}.png")


def test_imagefolder_labels_from_folder_names_and_preprocessing_stated(tmp_path):
    write_images(tmp_path / "set", ["cat", "dog"])
    data = load_data(f"imagefolder:{tmp_path / 'set'}?calibration=4", image_model(channels=3, side=8))
    assert data.classes == ["cat", "dog"] and sorted(data.targets.tolist()) == [0] * 5 + [1] * 5
    assert tuple(data.inputs["input"].shape) == (10, 3, 8, 8)
    assert "ImageNet" in data.preprocessing and "center crop to 8x8" in data.preprocessing
    unlabelled = load_data(f"imagefolder:{tmp_path / 'set'}?labels=none&calibration=2", image_model(3, 8))
    assert unlabelled.targets is None and unlabelled.target_kind == "none"


def test_imagefolder_bad_input_is_one_sentence_each(tmp_path):
    model = image_model(channels=3)
    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "one", ["only"])
    write_images(tmp_path / "broken", ["a", "b"], per_class=2)
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"not an image at all")
    for spec, fragment in [(f"imagefolder:{tmp_path / 'missing'}", "does not exist"),
                           (f"imagefolder:{tmp_path / 'empty'}", "no class sub-folder"),
                           (f"imagefolder:{tmp_path / 'one'}", "holds one class"),
                           (f"imagefolder:{tmp_path / 'broken'}", "cannot be decoded")]:
        with pytest.raises(InvalidInputError, match=fragment) as error:
            load_data(spec, model)
        assert "\n" not in str(error.value)


def test_images_for_a_text_model_and_text_for_an_image_model_are_refused(tmp_path):
    (tmp_path / "docs.txt").write_text("hello world\n")
    with pytest.raises(InvalidInputError, match="does not take token ids"):
        load_data(f"text:{tmp_path / 'docs.txt'}", image_model())
    write_images(tmp_path / "set", ["a", "b"])
    with pytest.raises(InvalidInputError, match="does not take an image input"):
        load_data(f"imagefolder:{tmp_path / 'set'}", tiny_causal_lm())


def test_text_for_a_causal_lm_is_windowed_with_its_own_tokenizer(tmp_path):
    (tmp_path / "docs.txt").write_text("the quick brown fox jumps over the lazy dog\n\nanother line of text here\n" * 4)
    data = load_data(f"text:{tmp_path / 'docs.txt'}?seq_len=16&calibration=2", tiny_causal_lm())
    assert data.target_kind == "next-token" and data.metric_name == "perplexity"
    ids = data.inputs["input_ids"]
    assert ids.shape[1] == 16 and torch.equal(data.targets, ids) and int(ids.max()) <= 63
    (tmp_path / "docs.jsonl").write_text('{"text": "a b c d e f g h i j k l m n o p q r s"}\n' * 3)
    assert load_data(f"text:{tmp_path / 'docs.jsonl'}?seq_len=8", tiny_causal_lm()).size >= 2
    (tmp_path / "bad.jsonl").write_text('{"title": "no text"}\n')
    with pytest.raises(InvalidInputError, match="no string 'text' field"):
        load_data(f"text:{tmp_path / 'bad.jsonl'}", tiny_causal_lm())


def test_a_tokenizer_not_available_offline_is_refused(tmp_path):
    (tmp_path / "docs.txt").write_text("some text\n")
    model = tiny_causal_lm()
    model.tokenizer = None
    with pytest.raises(InvalidInputError, match="no tokenizer available offline"):
        load_data(f"text:{tmp_path / 'docs.txt'}", model)
    model.spec = f"hf:{tmp_path / 'no_such_folder'}"
    with pytest.raises(InvalidInputError, match="not available offline"):
        load_data(f"text:{tmp_path / 'docs.txt'}", model)


@pytest.fixture
def data_module(tmp_path, monkeypatch):
    (tmp_path / "user_data.py").write_text(textwrap.dedent("""
        import torch

        def batches():
            torch.manual_seed(0)
            return [(torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))) for _ in range(5)]

        def unlabelled():
            return [torch.rand(3, 1, 8, 8) for _ in range(4)]

        def broken():
            raise RuntimeError("disk on fire")

        def wrong_shape():
            return [(torch.rand(4, 1, 9, 9), torch.zeros(4, dtype=torch.long))]

        def accuracy(outputs, targets):
            return float((outputs.argmax(1) == targets).float().mean())
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield
    sys.modules.pop("user_data", None)


def test_py_data_functions_with_and_without_targets(data_module):
    data = load_data("py:user_data:batches?calibration=4", image_model())
    assert data.size == 20 and data.target_kind == "class" and data.evaluation.size == 16
    custom = load_data("py:user_data:batches?metric=accuracy", image_model())
    assert custom.target_kind == "custom" and custom.metric is not None
    assert load_data("py:user_data:unlabelled", image_model()).target_kind == "none"


@pytest.mark.parametrize("spec, fragment", [
    ("py:user_data:broken", "raised RuntimeError: disk on fire"),
    ("py:user_data:wrong_shape", r"has shape \(4, 1, 9, 9\)"),
    ("py:user_data:missing", "has no function 'missing'"),
    ("py:no_such_module:f", "importing module 'no_such_module' failed"),
])
def test_py_data_bad_input_is_one_sentence(data_module, spec, fragment):
    with pytest.raises(InvalidInputError, match=fragment) as error:
        load_data(spec, image_model())
    assert "\n" not in str(error.value)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A py: model factory (1x8x8 images, 10 classes) and data functions, importable from tmp_path."""
    (tmp_path / "lab_model.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def model():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), lambda b: torch.rand(b, 1, 8, 8)

        def broken():
            raise ValueError("no batches today")

        def batches():
            return [(torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))) for _ in range(3)]

        def nan_metric(outputs, targets):
            return float("nan")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield
    sys.modules.pop("lab_model", None)


def refuse_kernels(monkeypatch):
    import papermill

    def refuse(*args, **kwargs):
        raise AssertionError("a notebook was executed")
    monkeypatch.setattr(papermill, "execute_notebook", refuse)


@pytest.mark.parametrize("data, message", [
    ("csv:file", "known kind"),
    ("imagefolder:missing_folder", "does not exist"),
    ("text:notes.txt", "is text, but"),
    ("py:lab_model:broken", "raised ValueError: no batches today"),
    ("py:lab_model:batches?metric=nan_metric", "not a finite number"),
    ("sklearn:iris", "is tabular"),
])
def test_the_runner_refuses_bad_data_in_one_line_exit_2_before_any_kernel(tmp_path, capsys, monkeypatch,
                                                                          factory_module, data, message):
    from infopt.run import runner

    refuse_kernels(monkeypatch)
    (tmp_path / "notes.txt").write_text("words\n")
    args = ["--device", "cpu", "--quick", "--output", str(tmp_path / "results"), "--run-name", "r",
            "--models", "py:lab_model:model", "--notebooks", "optimize", "--data", data]
    assert runner.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "results").exists()


def test_the_runner_passes_data_and_budget_to_the_notebooks_that_declare_them(tmp_path, factory_module):
    from infopt.run.cli import build_parser
    from infopt.run.plan import build_plan

    args = build_parser().parse_args(["--device", "cpu", "--quick", "--output", str(tmp_path / "results"), "--run-name", "r",
                       "--models", "py:lab_model:model", "--notebooks", "benchmark", "optimize",
                       "--data", "sklearn:digits?calibration=100", "--accuracy-budget", "0.5"])
    plan = build_plan(args)
    optimize = next(job for job in plan.jobs if job.notebook == "optimize")
    assert optimize.parameters["data"] == "sklearn:digits?calibration=100"
    assert optimize.parameters["accuracy_budget"] == 0.5
    record = plan.settings["data_records"]["py:lab_model:model"]
    assert (record["calibration_samples"], record["evaluation_samples"]) == (100, 1697)
    assert len(record["evaluation_hash"]) == 64
    report = next(job for job in plan.jobs if job.notebook == "report")
    assert "accuracy_budget" not in report.parameters


def test_a_budget_without_data_is_refused(tmp_path, capsys, monkeypatch):
    from infopt.run import runner

    refuse_kernels(monkeypatch)
    assert runner.main(["--device", "cpu", "--quick", "--output", str(tmp_path / "results"), "--run-name", "r",
                        "--models", "resnet50", "--accuracy-budget", "1"]) == 2
    assert "--accuracy-budget needs --data" in capsys.readouterr().err


def test_torchvision_weights_from_a_local_file_are_loaded_and_named(tmp_path):
    import torchvision

    import infopt

    torch.manual_seed(1)
    reference = torchvision.models.get_model("squeezenet1_0", weights=None)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    model = infopt.load_model(f"torchvision:squeezenet1_0?weights={tmp_path / 'w.pth'}")
    assert model.weights == f"pretrained (from {(tmp_path / 'w.pth').resolve()})"
    assert torch.equal(model.module.features[0].weight, reference.features[0].weight)
    with pytest.raises(InvalidInputError, match="does not fit this architecture"):
        infopt.load_model(f"torchvision:resnet18?weights={tmp_path / 'w.pth'}")
    with pytest.raises(InvalidInputError, match="does not exist"):
        infopt.load_model(f"torchvision:resnet18?weights={tmp_path / 'missing.pth'}")
