"""``imagefolder:<dir>``: torchvision's ImageFolder layout (one sub-folder per class), labels from folder names.

Images are decoded with Pillow and fitted to the model: the torchvision weights' own eval transforms where the
model has them, else resize + center crop to its input size and ImageNet normalization (``?normalize=none``
keeps pixels in [0, 1]). ``?labels=none`` reads every image without labels (the guard then measures agreement
on real inputs). Samples are shuffled once with a fixed seed, so both parts of the split hold every class.
"""

from __future__ import annotations

from pathlib import Path

import torch

from infopt.data.dataset import DataSet
from infopt.data.preprocess import describe_fit, fit_images, image_key, weights_transforms
from infopt.data.specs import DataSpec
from infopt.errors import InvalidInputError
from infopt.models.base import ModelWrapper

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SHUFFLE_SEED = 0


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def list_images(spec: DataSpec) -> tuple[list[tuple[Path, int]], list[str] | None]:
    """Every ``(image, class index)`` under the folder and the class names; refusals name what is wrong."""
    folder = Path(spec.target).expanduser()
    where = f"Data {spec.text!r}"
    if not folder.exists():
        raise InvalidInputError(f"{where}: folder {folder} does not exist.")
    if not folder.is_dir():
        raise InvalidInputError(f"{where}: {folder} is a file, not a folder of class sub-folders.")
    labelled = spec.options.get("labels", "folders") != "none"
    if not labelled:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if not files:
            raise InvalidInputError(f"{where}: folder {folder} holds no image ({', '.join(EXTENSIONS)}).")
        return [(path, -1) for path in files], None
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _files(p))
    if not classes:
        raise InvalidInputError(f"{where}: folder {folder} holds no class sub-folder with images (expected "
                                "<dir>/<class>/<image>; add ?labels=none for unlabelled images).")
    if len(classes) == 1:
        raise InvalidInputError(f"{where}: folder {folder} holds one class ({classes[0]}); accuracy needs at least "
                                "two class sub-folders (or ?labels=none for unlabelled images).")
    samples = [(path, index) for index, name in enumerate(classes) for path in _files(folder / name)]
    return samples, classes


def _decode(path: Path, where: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InvalidInputError(f"{where}: image {path} cannot be decoded ({type(error).__name__}).") from None


def load_imagefolder(spec: DataSpec, model: ModelWrapper) -> DataSet:
    """Decode, fit to the model and stack every image (after the shuffle and ``?limit=``)."""
    where = f"Data {spec.text!r}"
    key, shape = image_key(model, where)
    samples, classes = list_images(spec)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(SHUFFLE_SEED)).tolist()
    limit = spec.int_option("limit", None, minimum=1)
    samples = [samples[i] for i in order][:limit]
    normalize = spec.options.get("normalize", "imagenet") != "none"
    transforms = weights_transforms(model) if normalize else None
    tensors = []
    from torchvision.transforms.functional import pil_to_tensor

    for path, _ in samples:
        image = _decode(path, where)
        if transforms is not None:
            tensors.append(fit_images(transforms(image).unsqueeze(0), shape, normalize=False))
        else:
            pixels = pil_to_tensor(image).unsqueeze(0).float() / 255.0
            tensors.append(fit_images(pixels, shape, normalize=normalize))
    preprocessing = (f"torchvision weights' transforms ({type(transforms).__name__})" if transforms is not None
                     else describe_fit(shape, normalize))
    targets = torch.tensor([label for _, label in samples], dtype=torch.long) if classes else None
    return DataSet(spec=spec, inputs={key: torch.cat(tensors)}, targets=targets,
                   target_kind="class" if classes else "none",
                   description=f"image folder {spec.target} ({len(samples)} images"
                               + (f", {len(classes)} classes from sub-folder names)" if classes else ", unlabelled)"),
                   preprocessing=preprocessing, classes=classes,
                   metric_name="top-1 accuracy" if classes else "output agreement on real inputs")


__all__ = ["EXTENSIONS", "list_images", "load_imagefolder"]
