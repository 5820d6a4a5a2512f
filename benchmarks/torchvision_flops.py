"""FLOPs and parameters of torchvision models, counted by infopt, next to torchvision's published figures.

Classification, segmentation and video models (segmentation at 520 x 520 with
the auxiliary head their default weights include, video on 16-frame clips, as
torchvision counts them).

torchvision publishes, per weights entry, ``meta["num_params"]`` and
``meta["_ops"]``: GFLOPS counted as multiply-adds at the weights' evaluation
resolution. infopt counts FLOPs = 2 x multiply-adds from one real forward
(attention included, also ViT's fused ``_native_multi_head_attention``), so
the expected ratio ``counted / (2 x _ops x 1e9)`` is 1. FLOP counting is not
timing: the figures do not depend on machine load.

    python benchmarks/torchvision_flops.py            # a handful of families
    python benchmarks/torchvision_flops.py --quick    # two small models
    python benchmarks/torchvision_flops.py --models resnet18 vit_b_16

Exit code 1 when a ratio is outside 1 +- 2% or the parameter count differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import infopt  # noqa: E402

FAMILIES = ["resnet50", "resnet18", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "densenet121",
            "convnext_tiny", "swin_t", "vit_b_16", "inception_v3", "lraspp_mobilenet_v3_large",
            "deeplabv3_mobilenet_v3_large", "r3d_18"]
QUICK = ["resnet18", "mobilenet_v3_small"]
TOLERANCE = 0.02


def measure(name: str) -> dict:
    from torchvision.models import get_model_weights

    meta = get_model_weights(name).DEFAULT.meta
    model = infopt.load_model(f"torchvision:{name}")
    flops = model.flops_per_sample()
    published = 2e9 * meta["_ops"]
    return {"model": name, "image_size": model.image_size, "params": model.parameter_count(),
            "published_params": meta["num_params"], "gflops": flops / 1e9, "published_gflops": published / 1e9,
            "ratio": flops / published}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--models", nargs="+", default=None, help="torchvision classification model names")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    names = args.models or (QUICK if args.quick else FAMILIES)
    print(f"{'model':<30} {'size':>4} {'params':>12} {'published':>12} {'GFLOPs':>9} {'published':>9} {'ratio':>7}")
    failed = []
    for name in names:
        row = measure(name)
        ok = abs(row["ratio"] - 1) <= TOLERANCE and row["params"] == row["published_params"]
        failed += [] if ok else [name]
        print(f"{row['model']:<30} {row['image_size']:>4} {row['params']:>12,} {row['published_params']:>12,} "
              f"{row['gflops']:>9.3f} {row['published_gflops']:>9.3f} {row['ratio']:>7.4f}{'' if ok else '  <-- off'}")
    print("FLOPs = 2 x multiply-adds per image; published = 2 x torchvision weights meta['_ops'] (GMACs).")
    if failed:
        print(f"Outside 1 +- {TOLERANCE:.0%} (or parameter count differs): {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
