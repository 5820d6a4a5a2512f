"""``sklearn:<name>``: the small sets scikit-learn ships inside its package, real data that needs no download.

``digits`` (1,797 8x8 grey images of handwritten digits, 10 classes) feeds an image model (resized to its input)
or a tabular one (64 features); ``iris``, ``wine`` and ``breast_cancer`` are tabular. Samples are shuffled once
with a fixed seed (the files are sorted by class), so the calibration and evaluation parts both hold every class.
"""

from __future__ import annotations

import torch

from infopt.data.dataset import DataSet
from infopt.data.preprocess import describe_fit, example_input, fit_images
from infopt.data.specs import DataSpec
from infopt.errors import InvalidInputError
from infopt.models.base import ModelWrapper

SETS = {"digits": "load_digits", "iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer"}
SHUFFLE_SEED = 0


def _float_input(model: ModelWrapper, where: str) -> tuple[str, tuple[int, ...]]:
    for key, value in example_input(model).items():
        if value.is_floating_point() and value.dim() in (2, 4):
            return key, tuple(int(s) for s in value.shape[1:])
    raise InvalidInputError(f"{where} holds images or feature vectors, but {model.name} takes no float tensor "
                            "of shape (batch, features) or (batch, C, H, W).")


def load_arrays(name: str, where: str = "sklearn data") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Features, class targets and class names of a bundled set, in the lab's fixed shuffled order (the order
    the split cuts: the first ``calibration`` samples calibrate), so an example can train on exactly those."""
    try:
        import sklearn.datasets as datasets
    except ImportError:
        raise InvalidInputError(f"{where} needs scikit-learn: pip install 'infopt[data]'.") from None
    bunch = getattr(datasets, SETS[name])()
    features = torch.tensor(bunch.data, dtype=torch.float32)
    targets = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(SHUFFLE_SEED))
    names = [str(n) for n in getattr(bunch, "target_names", range(int(targets.max()) + 1))]
    return features[order], targets[order], names


def load_bundled(spec: DataSpec, model: ModelWrapper) -> DataSet:
    """Load the named set, shuffle it once, and fit it to the model's float input."""
    where = f"Data {spec.text!r}"
    if spec.target not in SETS:
        raise InvalidInputError(f"{where}: scikit-learn set {spec.target!r} is not one of {', '.join(SETS)}.")
    features, targets, names = load_arrays(spec.target, where)
    limit = spec.int_option("limit", None, minimum=1)
    features, targets = features[:limit], targets[:limit]
    key, shape = _float_input(model, where)
    if len(shape) == 3:
        if spec.target != "digits":
            raise InvalidInputError(f"{where} is tabular, but {model.name} takes images of shape {shape}.")
        images = (features / 16.0).reshape(-1, 1, 8, 8)
        fitted = fit_images(images, shape, normalize=False)
        preprocessing = "8x8 grey digits scaled by 1/16 to [0, 1]" + (
            "" if shape == (1, 8, 8) else "; " + describe_fit(shape, normalize=False))
    else:
        if shape[0] != features.shape[1]:
            raise InvalidInputError(f"{where} has {features.shape[1]} features per sample, but {model.name} "
                                    f"takes {shape[0]}.")
        fitted = features / 16.0 if spec.target == "digits" else features
        preprocessing = "features scaled by 1/16" if spec.target == "digits" else "features as shipped (unscaled)"
    return DataSet(spec=spec, inputs={key: fitted}, targets=targets, target_kind="class",
                   description=f"scikit-learn's bundled {spec.target} set ({len(targets)} samples, "
                               f"{len(names)} classes, shuffled with seed {SHUFFLE_SEED})",
                   preprocessing=preprocessing, classes=names, metric_name="top-1 accuracy")


__all__ = ["SETS", "load_arrays", "load_bundled"]
