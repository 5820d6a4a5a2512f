"""A model's own stages from a profile: a detector's transform, backbone, heads and postprocess, one row each.

The stages are the model interface's ``stages`` (``(stage, submodule names, what it does)``); their times are
the inclusive times of those submodules in :func:`infopt.analyze.profiling.profile_model`'s module table (same
trace, no other stopwatch). A stage naming no submodule gets the whole model's inclusive time minus every named
stage: the time the model spends in its own code outside them (a detector's postprocess: box decoding, NMS,
boxes scaled back). A last row shows the time inside NMS operators (``torchvision::nms``), which runs within the
stages above (the RPN's and the box head's NMS, or the postprocess), from the operator table.
"""

from __future__ import annotations

import pandas as pd

from infopt.analyze.opcount import ROOT_NAME

NMS_OPERATOR = "torchvision::nms"
STAGE_DEFINITION = (
    "ms_per_step: inclusive time of the stage's submodules per profiled step (device time on CUDA, else CPU "
    "time); a stage with no submodule = the whole model's inclusive time minus the named stages; "
    "share_of_model = ms_per_step / the whole model's inclusive time; NMS: total time of torchvision::nms calls, "
    "already inside the stages above. Profiled times include the profiler's cost."
)


def stage_table(stages, modules: pd.DataFrame, operators: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per stage (and one for NMS when the operator table has it); empty when ``stages`` is ``None``."""
    columns = ["stage", "modules", "what", "ms_per_step", "share_of_model"]
    if not stages or modules is None or modules.empty:
        return pd.DataFrame(columns=columns)
    device = "inclusive_device_ms" in modules
    inclusive = dict(zip(modules["module"], modules["inclusive_device_ms" if device else "inclusive_cpu_ms"]))
    whole = float(inclusive.get(ROOT_NAME, float("nan")))
    named = sum(float(inclusive.get(name, 0.0)) for _, names, _ in stages for name in names)
    rows = []
    for stage, names, what in stages:
        ms = sum(float(inclusive.get(name, 0.0)) for name in names) if names else max(0.0, whole - named)
        rows.append({"stage": stage, "modules": ", ".join(names) or "(outside every named stage)", "what": what,
                     "ms_per_step": ms})
    if operators is not None and not operators.empty and NMS_OPERATOR in set(operators["operator"]):
        column = "total_device_ms" if device and "total_device_ms" in operators else "total_cpu_ms"
        ms = float(operators.loc[operators["operator"] == NMS_OPERATOR, column].sum())
        rows.append({"stage": "of which NMS", "modules": NMS_OPERATOR, "what": "non-maximum suppression calls, "
                     "inside the stages above", "ms_per_step": ms})
    table = pd.DataFrame(rows, columns=columns[:-1])
    table["share_of_model"] = table["ms_per_step"] / whole if whole > 0 else float("nan")
    return table


__all__ = ["NMS_OPERATOR", "STAGE_DEFINITION", "stage_table"]
