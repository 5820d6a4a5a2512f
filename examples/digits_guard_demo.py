"""Random-input guard vs the guard on real data, on the trained digits CNN (no timing: accuracy only).

    python examples/digits_guard_demo.py        # from the repository root; about a minute on 2 CPU cores

For each variant it prints the random-input verdict (output agreement with fp32 on seeded random inputs) and
the task verdict on the 1,541 held-out digits of ``sklearn:digits``; ``onnxruntime-int8-static`` runs three
times: calibrated on seeded random inputs (no data), on the calibration split, and on 32 all-zero images (a
deliberately bad calibration that shows what the data guard catches).
"""

from __future__ import annotations

import torch

import infopt
from infopt.data import load_data
from infopt.optimize.applied import apply_variant
from infopt.optimize.race import output_agreement_check
from infopt.optimize.task_accuracy import TaskAccuracyGuard, attach_calibration

CASES = [("bf16", None), ("onnxruntime-int8", None), ("onnxruntime-int8-static", "random inputs"),
         ("onnxruntime-int8-static", "calibration split"), ("onnxruntime-int8-static", "all-zero images")]


def main() -> None:
    model = infopt.load_model("py:examples.digits:model")
    data = load_data("sklearn:digits", model)
    guard = TaskAccuracyGuard(model, data)
    reference = model.forward(model.prepare_input(8))
    print(f"fp32 {guard.metric_name} on {guard.part.size} held-out digits: {guard.reference_value:.4f}")
    for spec, calibration in CASES:
        if hasattr(model, "calibration_data"):
            del model.calibration_data
        if calibration == "calibration split":
            attach_calibration(model, data)
        elif calibration == "all-zero images":
            model.calibration_data = ([{"input": torch.zeros(32, 1, 8, 8)}], "32 all-zero images")
        variant = apply_variant(model, spec)
        fields, random_ok = output_agreement_check(model, variant, 8, None, reference)
        row = guard.check(variant.forward)
        label = spec + (f" (calibrated on {calibration})" if calibration else "")
        print(f"{label}: random-input guard {'pass' if random_ok else 'FAIL'} (rel_error {fields['rel_error']:.3g}); "
              f"on the data: {guard.describe(row)}")


if __name__ == "__main__":
    main()
