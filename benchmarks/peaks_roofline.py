"""Print this machine's measured vs theoretical peaks, each model's roofline point and its largest roof fractions.

    python benchmarks/peaks_roofline.py [--device cpu] [--batch-size 8] [--models resnet50 gpt2 distilbert]
                                        [--output DIR] [--quick]

Full-size models. The roofline fraction is achieved FLOP/s over the roof at
the point's operational intensity (unfused eager bytes), with the measured
peaks (best of matmul and convolution kernels, the winning kernel named) as
roofs. For each model the largest roof fraction per level (operator, module,
model) is printed: the lab's rule is that none exceeds 1.10 unless its
``roof_note`` explains why (issue #18). ``--quick``: tiny models at batch 2
and quick peaks, to check the script runs (figures not for reporting). With
``--output`` the peaks (``{model}_{device}_peaks.json``) and roofline tables
(``{model}_{device}_roofline.csv/json``) are saved too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import infopt  # noqa: E402
from infopt.analyze.peaks import device_peaks, peaks_table  # noqa: E402
from infopt.analyze.roofline import roofline  # noqa: E402
from infopt.measure.timing import TimingConfig  # noqa: E402


def _rate(value, unit: str) -> str:
    """``62.2 GFLOP/s``; ``n/a`` for a missing figure."""
    return "n/a" if value is None or value != value else f"{value / 1e9:,.1f} G{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=infopt.list_models())
    parser.add_argument("--output", type=Path, default=None, help="also save peaks and roofline tables here")
    parser.add_argument("--quick", action="store_true", help="tiny models, batch 2, quick peaks (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.batch_size = min(args.batch_size, 2)

    device = infopt.resolve_device(args.device)
    started = time.perf_counter()
    peaks = device_peaks(device, quick=args.quick)
    print(f"Device: {peaks['device_name']} ({device}), torch threads {peaks['torch_threads']}, "
          f"peaks measured in {time.perf_counter() - started:.1f} s")
    table = peaks_table(peaks)
    for _, row in table.iterrows():
        unit = "FLOP/s" if row["unit"] == "FLOP/s" else "B/s"
        ratio = row["measured_over_theoretical"]
        print(f"  {row['quantity']:<16} measured {_rate(row['measured'], unit):<16} theoretical "
              f"{_rate(row['theoretical'], unit):<16} measured/theoretical "
              f"{'n/a' if ratio != ratio else f'{ratio:.2f}'} {row['note']}")
    print(f"  theoretical source: {peaks['theoretical']['source']}")
    for assumption in peaks["theoretical"].get("assumptions", []):
        print(f"    - {assumption}")
    for dtype, entry in peaks["compute"].items():
        if entry.get("status") == "ok":
            families = ", ".join(f"{f} {_rate(v, 'FLOP/s')}" for f, v in entry["by_family"].items())
            print(f"  {dtype} peak set by: {entry['kernel']} ({families})")
    print(f"  bandwidth: {peaks['bandwidth']['definition']} ({peaks['bandwidth']['buffer_bytes'] / 2**20:.0f} MiB "
          f"buffers, last-level cache {(peaks['bandwidth']['llc_bytes'] or 0) / 2**20:.0f} MiB)")

    size = "tiny" if args.quick else "full"
    print(f"\nWhole-model roofline at batch {args.batch_size} ({size} size, measured roofs):")
    print(f"  {'model':<11}{'GFLOP/fwd':>10}{'MB moved':>10}{'FLOP/B':>8}{'ms (median)':>13}"
          f"{'GFLOP/s':>9}{'roof GFLOP/s':>13}{'roof frac':>10}  bound")
    largest = []
    for name in args.models:
        model = infopt.load_model(name, device=str(device), size=size)
        timing = TimingConfig.quick() if args.quick else TimingConfig(max_time_s=10.0)
        result = roofline(model, args.batch_size, peaks=peaks, timing=timing)
        largest.append(result.largest_roof_fractions().assign(model=name))
        w = result.whole_model
        print(f"  {name:<11}{w['flops'] / 1e9:>10.1f}{w['bytes'] / 1e6:>10.0f}{w['operational_intensity']:>8.1f}"
              f"{w['time_ms']:>13.1f}{w['achieved_flops_per_s'] / 1e9:>9.1f}{w['roof_flops_per_s'] / 1e9:>13.1f}"
              f"{w['roof_fraction']:>10.2f}  {w['bound']}")
        above = result.points_above_roof()
        for _, row in above.head(10).iterrows():
            print(f"    ABOVE ROOF {row['level']} {row['name']}: {row['roof_fraction']:.2f} - {row['roof_note']}")
        if args.output is not None:
            from infopt.results import save_json, save_results

            args.output.mkdir(parents=True, exist_ok=True)
            save_json(peaks, args.output / f"{name}_{device.type}_peaks.json", overwrite=True)
            modules = result.modules.assign(level="module", name=result.modules["module"])
            save_results(modules, args.output, name, device.type, kind="roofline", overwrite=True,
                         config={**result.config, "whole_model": w, "notes": result.notes})
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"\nLargest roof fraction per level (rule: <= 1.10 unless explained):")
    print(f"  {'model':<11}{'level':<10}{'roof frac':>10}  name / note")
    for table in largest:
        for _, row in table.iterrows():
            note = f" - {row['roof_note']}" if row["roof_note"] else ""
            print(f"  {row['model']:<11}{row['level']:<10}{row['roof_fraction']:>10.2f}  {row['name']}{note}")
    print(f"\nTotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
