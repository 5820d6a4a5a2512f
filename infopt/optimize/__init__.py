"""Optimization variants: the registry, one module per backend, the accuracy guard, paired timing, the sweep and
the recommendation.

Importing this package registers every backend's variants in a fixed order (the canonical spelling of a
composition): eager PyTorch, torch.compile, torchao, ONNX Runtime. The names below are the public surface;
each lives in the module its name points to.
"""

from infopt.optimize import compiled, onnx_runtime, torch_variants, torchao
from infopt.optimize.applied import VariantModel, apply_variant
from infopt.optimize.compiled import warm_up_compiled
from infopt.optimize.paired import MIN_PAIRED_ROUNDS, PAIRED_ROUNDS, PAIRED_SHARE, paired_speedup, unpaired_timing
from infopt.optimize.recommend import (REFUSALS, add_verdicts, headline_columns, qualify, recommend,
                                       speedup_verdict)
from infopt.optimize.registry import (BASELINE, VARIANTS, UnknownVariantError, Variant, VariantError,
                                      VariantNotApplicableError, canonical_spec, describe_variants, list_variants,
                                      parse_spec, register_variant, unavailable_reason, unregister_variant)
from infopt.optimize.sweep import (ACCURACY_COLUMNS, DEFAULT_COMBINATIONS, SPEEDUP_DEFINITION, SWEEP_COLUMNS,
                                   VARIANT_COLUMNS, add_speedups, default_variants, run_variant_sweep)

for _backend in (torch_variants, compiled, torchao, onnx_runtime):
    for _variant in _backend.variants():
        if _variant.name not in VARIANTS:  # a re-import (importlib.reload in a notebook) keeps the registry
            register_variant(_variant)

__all__ = [
    "ACCURACY_COLUMNS", "BASELINE", "DEFAULT_COMBINATIONS", "MIN_PAIRED_ROUNDS", "PAIRED_ROUNDS", "PAIRED_SHARE",
    "REFUSALS", "SPEEDUP_DEFINITION", "SWEEP_COLUMNS", "UnknownVariantError", "VARIANTS", "VARIANT_COLUMNS",
    "Variant", "VariantError", "VariantModel", "VariantNotApplicableError", "add_speedups", "add_verdicts",
    "apply_variant", "canonical_spec", "default_variants", "describe_variants", "headline_columns",
    "list_variants", "paired_speedup", "parse_spec", "qualify", "recommend", "register_variant",
    "run_variant_sweep", "speedup_verdict", "unavailable_reason", "unpaired_timing", "unregister_variant",
    "warm_up_compiled",
]
