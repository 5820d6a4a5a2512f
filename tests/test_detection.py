"""torchvision detectors (task ``detection``): seeded scenes in, packed detections out, the IoU guard, the variants
that apply and those that are n/a, the profile's stages, and one quick run through every notebook.

Models run at their tiny size (160-pixel scenes, at most 100 proposals and 50 detections) with seeded random
weights: nothing is downloaded and nothing depends on the machine's speed.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import infopt
from _quick_pipeline import run_quick_models
from infopt.errors import InvalidInputError
from infopt.models import validate_spec
from infopt.models.detection import PAD_LABEL, pack_detections, unpack_detections
from infopt.optimize import VARIANTS, apply_variant, list_variants, unavailable_reason
from infopt.optimize.accuracy import FP32_TOLERANCE, REDUCED_TOLERANCE, compare_outputs

FASTER = "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn"
SSDLITE = "torchvision:ssdlite320_mobilenet_v3_large"
APPLY = ("eager-fp32", "bf16", "channels-last", "compile", "compile-freezing")


@pytest.fixture(scope="module")
def faster():
    return infopt.load_model(FASTER, size="tiny")


@pytest.fixture(scope="module")
def ssdlite():
    return infopt.load_model(SSDLITE, size="tiny")


def _run(model, batch_size=2, seed=None):
    with torch.inference_mode():
        return model.forward(model.prepare_input(batch_size, seed=seed))


# -- the wrapper ------------------------------------------------------------------------------------------------

def test_detection_specs_validate_and_optical_flow_and_quantized_stay_refused():
    assert validate_spec(FASTER) == FASTER and validate_spec("torchvision:keypointrcnn_resnet50_fpn?image_size=256")
    with pytest.raises(InvalidInputError, match="optical_flow family"):
        validate_spec("torchvision:raft_small")
    with pytest.raises(InvalidInputError, match="quantization family"):
        validate_spec("torchvision:quantized_resnet18")
    with pytest.raises(InvalidInputError, match="frames applies to torchvision's video models only"):
        validate_spec(f"{FASTER}?frames=8")


@pytest.mark.parametrize("spec,stages", [(FASTER, ["transform", "backbone", "rpn", "roi_heads", "postprocess"]),
                                         (SSDLITE, ["transform", "backbone", "head", "anchors", "postprocess"])])
def test_seeded_weights_and_scenes_give_the_same_full_nonempty_detections(spec, stages, faster, ssdlite):
    model = faster if spec == FASTER else ssdlite
    again = infopt.load_model(spec, size="tiny")
    assert model.task == "detection" and model.has_image_input and [s[0] for s in model.stages] == stages
    first, second = model.module.state_dict(), again.module.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    inputs = model.prepare_input(2)
    assert tuple(inputs["images"].shape) == (2, 3, model.image_size, model.image_size)
    assert float(inputs["images"].min()) >= 0 and float(inputs["images"].max()) <= 1
    output = _run(model)
    assert torch.equal(output, _run(again)) and torch.isfinite(output).all()
    assert tuple(output.shape) == (2, model.max_detections, 6) and model.items_per_batch(inputs) == 2
    for image in model.unpack(output):  # score threshold 0: every image returns the full, fixed count
        assert len(image["boxes"]) == model.max_detections
        assert ((image["scores"] >= 0) & (image["scores"] <= 1)).all()
        assert (image["boxes"] >= 0).all() and (image["boxes"] <= model.image_size).all()
    assert not torch.equal(output, _run(model, seed=7))  # the scenes matter: calibrated BatchNorm, not a constant


def test_info_states_the_size_threshold_batchnorm_and_finite_flops(faster):
    info = faster.info()
    assert info["task"] == "detection" and info["image_size"] == 160 and info["max_detections"] == 50
    assert "0 (every image" in info["score_threshold"] and "BatchNorm" in info["batch_norm"]
    assert "tiny" in info["size_note"] and "(batch, 50, 6)" in info["output"]
    flops = info["flops_per_sample"]
    assert math.isfinite(flops) and flops > 1e8  # backbone, RPN and the box head over 100 proposals
    full = infopt.load_model(FASTER)  # the model's own size: 320 pixels, its published 100 detections
    assert full.image_size == 320 and full.max_detections == 100 and "size_note" not in full.details


def test_packing_round_trips_boxes_scores_labels_and_keypoints():
    found = [{"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "scores": torch.tensor([0.9]),
              "labels": torch.tensor([3]), "keypoints": torch.tensor([[[5.0, 6.0, 1.0], [7.0, 8.0, 1.0]]]),
              "keypoints_scores": torch.tensor([[2.5, -1.0]])},
             {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long),
              "keypoints": torch.zeros(0, 2, 3), "keypoints_scores": torch.zeros(0, 2)}]
    packed = pack_detections(found, rows=3, keypoints=2)
    assert tuple(packed.shape) == (2, 3, 12) and (packed[1, :, 5] == PAD_LABEL).all()
    first, empty = unpack_detections(packed)
    assert first["labels"].tolist() == [3] and first["scores"].tolist() == pytest.approx([0.9])
    assert first["keypoints"].tolist() == [[[5.0, 6.0, 2.5], [7.0, 8.0, -1.0]]] and len(empty["boxes"]) == 0


def test_data_is_refused_in_one_sentence(faster):
    from infopt.data import load_data

    with pytest.raises(InvalidInputError, match="not boxes") as caught:
        load_data("sklearn:digits", faster)
    assert "\n" not in str(caught.value)


# -- the IoU guard ------------------------------------------------------------------------------------------------

def _detections(*images):
    """Packed output from per-image lists of (x1, y1, x2, y2, score, label)."""
    rows = max(len(image) for image in images)
    return pack_detections([{"boxes": torch.tensor([d[:4] for d in image], dtype=torch.float32).reshape(-1, 4),
                             "scores": torch.tensor([d[4] for d in image]),
                             "labels": torch.tensor([d[5] for d in image], dtype=torch.long)} for image in images],
                           rows=rows, keypoints=0)


REFERENCE = _detections([(10, 10, 60, 60, 0.9, 1), (100, 100, 150, 170, 0.8, 2), (0, 0, 20, 20, 0.05, 3)],
                        [(30, 40, 90, 120, 0.7, 5), (5, 5, 25, 25, 0.04, 1)])


def test_guard_passes_identical_outputs_and_states_its_tolerance():
    for tolerance in (FP32_TOLERANCE, REDUCED_TOLERANCE):
        result = compare_outputs(REFERENCE, REFERENCE.clone(), "detection", tolerance)
        assert result["accuracy_ok"] and result["top1_confident_agreement"] == 1.0
        assert result["max_abs_error"] == 0 and result["rel_error"] == pytest.approx(0, abs=1e-12)
        assert result["top1_confident_rows"] == 6  # 3 decided per side: the lowest-scoring box of each image is not
        assert tolerance.label in result["tolerance"] and "IoU >=" in result["tolerance"]
    assert "IoU >= 0.75" in compare_outputs(REFERENCE, REFERENCE, "detection", REDUCED_TOLERANCE)["tolerance"]


def _perturbed(change):
    images = unpack_detections(REFERENCE)
    change(images)
    return pack_detections([{"boxes": i["boxes"], "scores": i["scores"], "labels": i["labels"]} for i in images],
                           rows=REFERENCE.shape[1], keypoints=0)


@pytest.mark.parametrize("why,change", [
    ("box moved by half its width", lambda images: images[0]["boxes"][0].add_(torch.tensor([25.0, 0, 25, 0]))),
    ("score changed by 0.2", lambda images: images[0]["scores"].__setitem__(1, 0.6)),
    ("label changed", lambda images: images[1]["labels"].__setitem__(0, 7)),
    ("decided detection dropped", lambda images: images[1].update(
        {k: v[1:] for k, v in images[1].items()})),
])
def test_guard_fails_perturbed_outputs_at_either_tolerance(why, change):
    candidate = _perturbed(change)
    for tolerance in (FP32_TOLERANCE, REDUCED_TOLERANCE):
        result = compare_outputs(REFERENCE, candidate, "detection", tolerance)
        assert not result["accuracy_ok"], why
        assert result["top1_confident_agreement"] < 1


def test_guard_allows_rounding_within_tolerance_and_an_undecided_box_near_the_cutoff():
    def nudge(images):
        images[0]["boxes"] += 1.0  # a pixel: IoU 0.96 for a 50-pixel box
        images[0]["scores"][0] -= 0.02
        images[1]["boxes"][1] += 8.0  # the lowest-scoring box is not decided: it may move or vanish
    result = compare_outputs(REFERENCE, _perturbed(nudge), "detection", REDUCED_TOLERANCE)
    assert result["accuracy_ok"] and result["top1_agreement"] < 1
    assert not compare_outputs(REFERENCE, _perturbed(nudge), "detection", FP32_TOLERANCE)["accuracy_ok"]


def test_guard_fails_a_nonfinite_or_invented_detection():
    nan = REFERENCE.clone()
    nan[0, 0, 0] = float("nan")
    assert not compare_outputs(REFERENCE, nan, "detection", REDUCED_TOLERANCE)["accuracy_ok"]

    def invent(images):  # a confident box where the reference has none
        images[1] = {"boxes": torch.cat([images[1]["boxes"], torch.tensor([[200.0, 200, 260, 260]])]),
                     "scores": torch.cat([images[1]["scores"], torch.tensor([0.95])]),
                     "labels": torch.cat([images[1]["labels"], torch.tensor([9])])}
    result = compare_outputs(REFERENCE, _perturbed(invent), "detection", REDUCED_TOLERANCE)
    assert not result["accuracy_ok"]


# -- variants ---------------------------------------------------------------------------------------------------

def test_autocast_channels_last_and_compile_apply_and_every_other_variant_is_na_in_one_line(faster):
    applicable = set(list_variants(faster))
    assert set(APPLY) <= applicable
    for name in VARIANTS:
        reason = unavailable_reason(faster, name)
        if name in APPLY:
            assert reason is None, name
        else:
            assert reason and "\n" not in reason, name
    for name in ("int8-dynamic", "bf16-weights", "torchao-int8-dynamic", "onnxruntime", "onnxruntime-int8-static",
                 "compile-reduce-overhead"):
        assert "detector" in unavailable_reason(faster, name), name


def test_applicable_variants_run_and_fp32_ones_pass_the_guard(faster, ssdlite):
    for model in (faster, ssdlite):
        reference = _run(model)
        for spec, tolerance_label in (("channels-last", "fp32"), ("bf16", "reduced precision"),
                                      ("bf16+channels-last", "reduced precision")):
            variant = apply_variant(model, spec)
            output = _run(variant)
            assert output.shape == reference.shape and torch.isfinite(output).all()
            result = compare_outputs(reference, output, model.task, variant.tolerance)
            assert result["tolerance"].startswith(tolerance_label)
            assert result["top1_confident_rows"] >= 0 and not math.isnan(result["rel_error"])
            if spec == "channels-last":  # same arithmetic, another layout: every decided detection agrees
                assert result["accuracy_ok"] and result["top1_confident_agreement"] == 1.0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compile_warms_up_and_agrees_with_eager(ssdlite):
    from infopt.optimize.compiled import warm_up_compiled

    variant = apply_variant(ssdlite, "compile")
    inputs = variant.prepare_input(1)
    warm = warm_up_compiled(lambda: variant.forward(inputs))
    assert warm["compile_stable"] and warm["compile_time_s"] > 0
    result = compare_outputs(_run(ssdlite, 1), _run(variant, 1), "detection", variant.tolerance)
    assert result["accuracy_ok"]
    torch._dynamo.reset()


# -- the profile's stages -------------------------------------------------------------------------------------------

def test_stage_table_adds_up_to_the_model_and_shows_nms(faster):
    from infopt.analyze.profiling import profile_model
    from infopt.analyze.stages import stage_table

    prof = profile_model(faster, 1, None, active=1)
    stages = stage_table(faster.stages, prof.modules, prof.operators).set_index("stage")
    named = ["transform", "backbone", "rpn", "roi_heads", "postprocess"]
    assert list(stages.index) == named + ["of which NMS"]
    assert (stages["ms_per_step"] >= 0).all() and (stages.loc[["backbone", "roi_heads"], "ms_per_step"] > 0).all()
    whole = float(prof.modules.set_index("module").loc["<root>", "inclusive_cpu_ms"])
    assert stages.loc[named, "ms_per_step"].sum() == pytest.approx(whole)
    assert 0 < stages.loc["of which NMS", "ms_per_step"] < whole
    assert stage_table(None, prof.modules).empty  # a model without stages


# -- every notebook, quick -------------------------------------------------------------------------------------------

NOTEBOOKS = ("benchmark", "profile", "memory", "optimize", "serve")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection-pipeline")
    run_dir = run_quick_models(root, [FASTER], NOTEBOOKS, "det")
    return run_dir, run_dir / "cpu" / "torchvision-fasterrcnn_mobilenet_v3_large_320_fpn"


def _csv(folder, kind):
    return pd.read_csv(next(folder.glob(f"*_cpu_{kind}.csv")), keep_default_na=False, na_values=[""])


@pytest.mark.timeout(900)
def test_every_notebook_succeeds(run):
    manifest = json.loads((run[0] / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert {e["key"].rsplit("/", 1)[-1]: e["status"] for e in manifest["notebooks"]} == \
        dict.fromkeys((*NOTEBOOKS, "report"), "succeeded")


def test_pipeline_benchmark_profile_stages_and_roofline(run):
    bench = _csv(run[1], "results")
    assert (bench["status"] == "ok").all() and (bench["throughput_items_per_s"] > 0).all()
    stages = _csv(run[1], "profile_stages")
    assert list(stages["stage"]) == ["transform", "backbone", "rpn", "roi_heads", "postprocess", "of which NMS"]
    modules = set(_csv(run[1], "profile_modules")["module"])
    assert {"transform", "backbone", "rpn", "roi_heads"} <= modules
    roof = _csv(run[1], "roofline_model")
    assert (roof["flops"] > 0).all() and roof["flops"].map(math.isfinite).all()


def test_pipeline_variants_ran_or_say_why_not(run):
    variants = _csv(run[1], "variants").set_index("variant")
    assert variants.loc["channels-last", "status"] == "ok" and bool(variants.loc["channels-last", "accuracy_ok"])
    assert "detections" in variants.loc["bf16", "tolerance"]  # checked by the IoU guard (it may fail it)
    for name in ("int8-dynamic", "torchao-int8-dynamic", "onnxruntime", "onnxruntime-int8-static"):
        assert variants.loc[name, "status"] == "n/a" and "detector" in variants.loc[name, "error"]
    serving = _csv(run[1], "serving")
    assert len(serving) and set(serving["variant"]) >= {"eager-fp32"}
