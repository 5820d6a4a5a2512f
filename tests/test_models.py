"""Model registry, load_model, inputs, info() and weights handling."""

from __future__ import annotations

import pytest
import torch

import infopt
from infopt.errors import InvalidInputError, UnknownModelError, WeightsUnavailableError

EXPECTED_PARAMETERS = {"resnet50": 25_557_032, "gpt2": 124_439_808, "distilbert": 66_362_880}


def test_registry_lists_the_three_models():
    assert infopt.list_models() == ["distilbert", "gpt2", "resnet50"]


def test_unknown_model_is_one_clear_error():
    with pytest.raises(UnknownModelError, match="Unknown model 'bert'.*distilbert, gpt2, resnet50"):
        infopt.load_model("bert")


@pytest.mark.parametrize("name", ["resnet50", "gpt2", "distilbert"])
def test_tiny_models_run_and_describe_themselves(tiny_models, name):
    model = tiny_models[name]
    inputs = model.prepare_input(2)
    out = model.forward(inputs)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    info = model.info()
    assert info["model"] == name and info["size"] == "tiny"
    assert info["parameters"] == sum(p.numel() for p in model.module.parameters())
    assert info["weight_bytes"] >= 4 * info["parameters"]
    assert info["dtype"] == "float32"
    assert info["flops_per_sample"] > 0
    assert not model.module.training


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "gpt2", "distilbert"])
def test_full_size_parameter_counts_and_forward(name):
    model = infopt.load_model(name)
    assert model.parameter_count() == EXPECTED_PARAMETERS[name]
    out = model.forward(model.prepare_input(1, None if name == "resnet50" else 16))
    assert out.shape[0] == 1
    if name == "resnet50":
        assert out.shape == (1, 1000)
        # 2 x multiply-adds: about 8.18 GFLOP, twice the 4.1 G multiply-adds often misquoted as FLOPs.
        assert model.info()["flops_per_sample"] == pytest.approx(8.18e9, rel=0.02)


def test_resnet_inputs_are_normalized_images_and_deterministic(tiny_resnet):
    a = tiny_resnet.prepare_input(3)["pixel_values"]
    b = tiny_resnet.prepare_input(3)["pixel_values"]
    assert a.shape == (3, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, tiny_resnet.prepare_input(3, seed=7)["pixel_values"])
    assert -2.2 < a.min() < -1.5 and 2.0 < a.max() < 2.7  # ImageNet-normalized [0, 1] pixels


def test_full_resnet_default_image_is_224():
    model = infopt.load_model("resnet50", size="tiny", image_size=224)
    assert model.prepare_input(1)["pixel_values"].shape == (1, 3, 224, 224)


@pytest.mark.parametrize("name", ["gpt2", "distilbert"])
def test_text_inputs_use_ordinary_tokens_and_full_mask(tiny_models, name):
    model = tiny_models[name]
    inputs = model.prepare_input(4, 32)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == (4, 32) and ids.dtype == torch.long
    assert torch.equal(mask, torch.ones_like(ids))
    low, high = model.token_id_range()
    assert ids.min() >= low and ids.max() < high <= model.config.vocab_size
    special = {model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id} - {None}
    assert not any((ids == s).any() for s in special)
    assert torch.equal(ids, model.prepare_input(4, 32)["input_ids"])
    assert model.prepare_input(1)["input_ids"].shape == (1, 128)  # default seq_len


def test_distilbert_never_draws_bert_special_ids(tiny_distilbert):
    ids = tiny_distilbert.prepare_input(8, 256)["input_ids"]
    assert ids.min() >= 999  # [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103 and [unused*] lie below


@pytest.mark.parametrize("name,limit", [("gpt2", 1024), ("distilbert", 512)])
def test_sequence_longer_than_the_model_allows_names_the_limit(tiny_models, name, limit):
    with pytest.raises(InvalidInputError, match=f"exceeds {name}'s limit of {limit} positions"):
        tiny_models[name].prepare_input(1, limit + 1)
    assert tiny_models[name].prepare_input(1, limit)["input_ids"].shape == (1, limit)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_batch_size_below_one_is_rejected(tiny_models, bad):
    for model in tiny_models.values():
        with pytest.raises(InvalidInputError, match="Batch size must be an integer of at least 1"):
            model.prepare_input(bad)


def test_bad_weights_and_size_values_are_rejected():
    with pytest.raises(InvalidInputError, match="weights must be one of"):
        infopt.load_model("gpt2", size="tiny", weights="imagenet")
    with pytest.raises(InvalidInputError, match="size must be one of"):
        infopt.load_model("gpt2", size="huge")
    with pytest.raises(InvalidInputError, match="Unknown option"):
        infopt.load_model("resnet50", size="tiny", colour="red")


def test_seeded_weights_are_reproducible_and_seed_dependent():
    a = infopt.load_model("distilbert", size="tiny", seed=1)
    b = infopt.load_model("distilbert", size="tiny", seed=1)
    c = infopt.load_model("distilbert", size="tiny", seed=2)
    inputs = a.prepare_input(1, 8)
    assert torch.equal(a.forward(inputs), b.forward(inputs))
    assert not torch.equal(a.forward(inputs), c.forward(inputs))


def test_attention_implementation_option(tiny_gpt2):
    eager = infopt.load_model("gpt2", size="tiny", attn_implementation="eager")
    assert eager.info()["attn_implementation"] == "eager"
    assert tiny_gpt2.info()["attn_implementation"] == "sdpa"
    inputs = eager.prepare_input(1, 16)
    torch.testing.assert_close(eager.forward(inputs), tiny_gpt2.forward(inputs), rtol=1e-4, atol=1e-4)


def test_text_flops_include_attention(tiny_distilbert):
    # Attention adds 4 x layers x seq^2 x hidden per sample, so FLOPs grow faster than linearly in seq_len.
    short, long = tiny_distilbert.flops_per_sample(64), tiny_distilbert.flops_per_sample(256)
    layers, hidden = tiny_distilbert.num_layers, tiny_distilbert.hidden_size
    linear_part = (short - 4 * layers * 64**2 * hidden) / 64
    assert long == pytest.approx(linear_part * 256 + 4 * layers * 256**2 * hidden, rel=1e-6)


@pytest.mark.parametrize("name", ["resnet50", "gpt2"])
def test_pretrained_without_network_fails_with_one_clear_sentence(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as caught:
        infopt.load_model(name, weights="pretrained")
    message = str(caught.value)
    assert "\n" not in message and "weights='random'" in message and "offline" in message


def test_to_moves_and_validates_device(tiny_resnet):
    assert tiny_resnet.to("cpu").device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(infopt.DeviceUnavailableError):
            infopt.load_model("resnet50", size="tiny", device="cuda")


def test_pretrained_with_unreachable_network_fails_fast(tmp_path, monkeypatch):
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("INFOPT_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(WeightsUnavailableError, match="network is unavailable .*cannot resolve"):
        infopt.load_model("distilbert", weights="pretrained")


@pytest.mark.slow
def test_pretrained_resnet_loads_from_the_torch_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import ResNet50_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("INFOPT_OFFLINE", "1")
    source = infopt.load_model("resnet50", seed=123)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.module.state_dict(), cache / ResNet50_Weights.IMAGENET1K_V2.url.rsplit("/", 1)[1])
    loaded = infopt.load_model("resnet50", weights="pretrained", seed=7)
    assert loaded.info()["weights"] == "pretrained"
    assert torch.equal(loaded.module.fc.weight, source.module.fc.weight)
