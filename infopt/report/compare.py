"""Run vs run: did it get slower? Per target, model, kind, variant and batch size, with drift accounted for.

For every timing row the two runs share (same target folder, model, kind, variant, batch size, sequence or
prompt length), the **ratio of medians** ``new / base`` (above 1: slower) gets a 95% interval by a **percentile
bootstrap** over both runs' raw samples (each run resampled independently, :data:`BOOTSTRAP_RESAMPLES` times,
fixed seed, so the same two runs always give the same table). A row timed in several visits
(:mod:`infopt.measure.benchmark`) stands for its **fastest visit**: a slow spell of a shared machine that
covered one visit is left out, the same way in both runs, as the reference workload leaves out its slow blocks.
The **drift-normalised ratio** divides it by the ratio of the two runs' reference-workload times
(:mod:`infopt.measure.drift`); its interval is also widened by both runs' within-run spreads (the reference's
moments, and any point a run timed twice, :func:`repeat_spread`), since the machine's speed at a row's own
moment is only known that well. Verdicts:

* ``faster`` / ``slower``: the raw and the normalised interval both exclude 1 on the same side, and both
  changes (the raw interval's end nearest 1, and the normalised ratio) are larger than the reference
  workload's own change (the drift band). Both, because the reference kernels need not track a workload's
  pace (measured here: the reference read 11% faster between two runs while a small MLP's rows moved -2% to
  +7%); a change that shows only after dividing by the reference is not called a regression;
* ``within machine drift``: either ratio is significant but the rule above is not met;
* ``no significant difference``: neither, or a change under :data:`MIN_EFFECT_PCT` percent.

Bootstrap intervals assume independent samples; consecutive timings are correlated, which is why the
verdict also needs a change beyond the drift band rather than trusting a narrow interval alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from infopt.errors import InvalidInputError
from infopt.layout import MANIFEST_NAME
from infopt.measure.drift import Drift, drift_between
from infopt.results import load_results

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
#: Raw-sample columns compared, and the metric each one is called in the table.
SAMPLE_COLUMNS = {"samples_ms": "latency", "e2e_samples_ms": "generate"}
#: Columns that name a row (beyond target and model); the ones a kind does not have are ignored.
IDENTITY_COLUMNS = ("kind", "variant", "batch_size", "seq_len", "prompt_len", "new_tokens")
#: Environment fields whose change the comparison lists (``versions`` is listed package by package).
ENVIRONMENT_FIELDS = ("python", "torch_version", "cuda_version", "cudnn_version", "cuda_driver", "cpu_model",
                      "cpu_capability", "logical_cores", "torch_num_threads", "omp_num_threads_env", "git_commit",
                      "hostname", "os")
#: Smallest change called faster or slower: below it a timing of this kind does not resolve a difference
#: that matters (a significant 0.5% is a real but negligible change, reported as no significant difference).
MIN_EFFECT_PCT = 2.0
VERDICTS = ("faster", "slower", "no significant difference", "within machine drift")


def read_run(run_dir: str | Path) -> dict:
    """A run's ``run.json``; one sentence (:class:`InvalidInputError`) when the folder is not a run."""
    path = Path(run_dir)
    if not path.exists():
        raise InvalidInputError(f"Run folder {path} does not exist.")
    if not path.is_dir() or not (path / MANIFEST_NAME).is_file():
        raise InvalidInputError(f"{path} is not a run folder (it has no {MANIFEST_NAME}).")
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"{path / MANIFEST_NAME} cannot be read as JSON ({error}).") from None
    if not isinstance(manifest, dict):
        raise InvalidInputError(f"{path / MANIFEST_NAME} is not a run manifest (not a JSON object).")
    return manifest


def timing_rows(run_dir: str | Path) -> pd.DataFrame:
    """One row per timed point of a run with its raw samples: target, model, identity, metric, samples."""
    import warnings

    run_dir = Path(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peaks and traces are not results files
        try:
            frame = load_results(run_dir)
        except Exception:  # noqa: BLE001 - a run with no readable results simply has no rows
            frame = pd.DataFrame()
    records = []
    for _, row in frame.iterrows():
        if str(row.get("status", "ok")) not in ("ok", "nan"):
            continue
        source = Path(str(row.get("source_file", "")))
        parts = (source.relative_to(run_dir) if source.is_absolute() and source.is_relative_to(run_dir)
                 else source).parts
        target = parts[0] if len(parts) >= 3 else str(row.get("device", ""))
        for column, metric in SAMPLE_COLUMNS.items():
            samples = row.get(column)
            if not isinstance(samples, (list, tuple, np.ndarray)) or len(samples) < 2:
                continue
            samples, visits = fastest_visit(samples, row.get("visit_samples") if column == "samples_ms" else None)
            key = {"target": target, "model": str(row.get("model")), "metric": metric}
            for name in IDENTITY_COLUMNS:
                value = row.get(name)
                key[name] = None if value is None or (isinstance(value, float) and math.isnan(value)) else \
                    (int(value) if isinstance(value, (float, np.floating)) and float(value).is_integer() else value)
            key["samples"], key["visits"] = np.asarray(samples, dtype=float), visits
            records.append(key)
    return pd.DataFrame(records)


def fastest_visit(samples, visit_samples) -> tuple[list, int]:
    """The samples of the visit with the smallest median, and how many visits the row had (1: all samples).

    ``visit_samples`` counts each visit's samples in order; counts that do not add up to the samples (an older
    or hand-made row) leave the row whole."""
    samples = list(samples)
    counts = [int(c) for c in visit_samples] if isinstance(visit_samples, (list, tuple, np.ndarray)) else []
    if len(counts) < 2 or sum(counts) != len(samples) or min(counts) < 1:
        return samples, 1
    edges = np.cumsum([0, *counts])
    visits = [samples[a:b] for a, b in zip(edges[:-1], edges[1:])]
    return min(visits, key=lambda visit: float(np.median(visit))), len(visits)


def repeat_spread(rows: pd.DataFrame) -> float:
    """Largest ``|log|`` ratio of the medians of one point that a run timed twice, in notebooks of different kinds
    (the benchmark and the optimize notebook both time eager fp32 at a shared batch size): how far the machine
    moved within the run, seen on the workload itself rather than on the reference kernels. 0 if none was."""
    if rows.empty:
        return 0.0
    point = ["target", "model", "metric", *[c for c in IDENTITY_COLUMNS if c != "kind"]]
    medians: dict[tuple, list[float]] = {}
    for _, row in rows.iterrows():
        medians.setdefault(tuple(str(row[c]) for c in point), []).append(float(np.median(row["samples"])))
    return max((math.log(max(m) / min(m)) for m in medians.values() if len(m) > 1 and min(m) > 0), default=0.0)


def bootstrap_ratio(base: np.ndarray, new: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                    confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """``median(new) / median(base)`` and its percentile-bootstrap interval (independent resampling)."""
    rng = np.random.default_rng(seed)
    base, new = np.asarray(base, float), np.asarray(new, float)
    base_medians = np.median(rng.choice(base, size=(resamples, base.size)), axis=1)
    new_medians = np.median(rng.choice(new, size=(resamples, new.size)), axis=1)
    ratios = new_medians / base_medians
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return float(np.median(new) / np.median(base)), float(low), float(high)


def verdict(low: float, high: float, norm: float, norm_low: float, norm_high: float, drift: Drift) -> str:
    """One of :data:`VERDICTS` from the raw and normalised intervals (see module docstring)."""
    floor = math.log(1 + MIN_EFFECT_PCT / 100)
    threshold = max(drift.band, floor)
    raw_change, norm_change = abs(math.log(ratio_of(low, high))), abs(math.log(norm))
    slower, faster = low > 1 and norm_low > 1, high < 1 and norm_high < 1
    if (slower or faster) and min(raw_change, norm_change) > threshold:
        return "slower" if slower else "faster"
    significant = low > 1 or high < 1 or norm_low > 1 or norm_high < 1
    if significant and max(raw_change, norm_change) > floor:
        return "within machine drift"
    return "no significant difference"


def ratio_of(low: float, high: float) -> float:
    """The end of a raw interval nearest 1 (1 when the interval holds it): the smallest change it shows."""
    return low if low > 1 else high if high < 1 else 1.0


def environment_changes(base: dict, new: dict) -> list[dict]:
    """What differs between two environment records: ``{"field", "base", "new"}`` per change."""
    changes = [{"field": name, "base": base.get(name), "new": new.get(name)} for name in ENVIRONMENT_FIELDS
               if base.get(name) != new.get(name)]
    base_versions, new_versions = base.get("versions") or {}, new.get("versions") or {}
    for package in sorted(set(base_versions) | set(new_versions)):
        if base_versions.get(package) != new_versions.get(package):
            changes.append({"field": package, "base": base_versions.get(package), "new": new_versions.get(package)})
    base_gpus = [g.get("name") for g in base.get("gpus") or [] if isinstance(g, dict)]
    new_gpus = [g.get("name") for g in new.get("gpus") or [] if isinstance(g, dict)]
    if base_gpus != new_gpus:
        changes.append({"field": "gpus", "base": ", ".join(base_gpus) or None, "new": ", ".join(new_gpus) or None})
    return changes


@dataclass
class Comparison:
    """Two runs compared: the per-row table, the drift, the environment changes."""

    base: str
    new: str
    rows: pd.DataFrame
    drift: Drift
    environment: list[dict] = field(default_factory=list)
    only_in_base: int = 0
    only_in_new: int = 0

    def regressions(self, above_pct: float) -> pd.DataFrame:
        """Rows called ``slower`` whose slowdown exceeds ``above_pct`` percent both raw and drift-normalised."""
        rows = self.rows
        smaller = np.minimum(rows["ratio"], rows["normalised_ratio"])
        return rows[(rows["verdict"] == "slower") & (smaller > 1 + above_pct / 100)]

    def counts(self) -> dict:
        return {name: int((self.rows["verdict"] == name).sum()) for name in VERDICTS}

    def as_dict(self) -> dict:
        return {"base": self.base, "new": self.new, "interval": f"{CONFIDENCE:.0%} percentile bootstrap "
                f"({BOOTSTRAP_RESAMPLES} resamples) of the ratio of medians", "drift": self.drift.as_dict(),
                "counts": self.counts(), "environment_changes": self.environment,
                "only_in_base": self.only_in_base, "only_in_new": self.only_in_new,
                "rows": json.loads(self.rows.to_json(orient="records"))}


ROW_COLUMNS = ["target", "model", "metric", *IDENTITY_COLUMNS, "base_median_ms", "new_median_ms", "ratio",
               "ratio_low", "ratio_high", "normalised_ratio", "normalised_low", "normalised_high", "verdict"]


def compare_runs(base_dir: str | Path, new_dir: str | Path) -> Comparison:
    """Compare two run folders (see module docstring); :class:`InvalidInputError` on bad input."""
    base_manifest, new_manifest = read_run(base_dir), read_run(new_dir)
    base_rows, new_rows = timing_rows(base_dir), timing_rows(new_dir)
    if base_rows.empty or new_rows.empty:
        empty = base_dir if base_rows.empty else new_dir
        raise InvalidInputError(f"Run {empty} has no timed rows with raw samples to compare.")
    common_models = set(base_rows["model"]) & set(new_rows["model"])
    if not common_models:
        raise InvalidInputError(f"The two runs have no model in common ({', '.join(sorted(set(base_rows['model'])))}"
                                f" vs {', '.join(sorted(set(new_rows['model'])))}).")
    drift = drift_between(base_manifest.get("reference_workload"), new_manifest.get("reference_workload"),
                          (repeat_spread(base_rows), repeat_spread(new_rows)))
    keys = ["target", "model", "metric", *IDENTITY_COLUMNS]

    def keyed(frame):
        return {tuple(str(v) for v in row[keys]): row["samples"] for _, row in frame.iterrows()}

    base_by_key, new_by_key = keyed(base_rows), keyed(new_rows)
    shared = [k for k in base_by_key if k in new_by_key]
    identity = {tuple(str(v) for v in row[keys]): row[keys].to_dict() for _, row in base_rows.iterrows()}
    records = []
    for number, key in enumerate(shared):
        base_samples, new_samples = base_by_key[key], new_by_key[key]
        ratio, low, high = bootstrap_ratio(base_samples, new_samples, seed=number)
        widen = math.exp(drift.spread)
        norm, norm_low, norm_high = ratio / drift.factor, low / drift.factor / widen, high / drift.factor * widen
        records.append({**identity[key], "base_median_ms": float(np.median(base_samples)),
                        "new_median_ms": float(np.median(new_samples)), "ratio": ratio, "ratio_low": low,
                        "ratio_high": high, "normalised_ratio": norm, "normalised_low": norm_low,
                        "normalised_high": norm_high,
                        "verdict": verdict(low, high, norm, norm_low, norm_high, drift)})
    rows = pd.DataFrame(records, columns=ROW_COLUMNS)
    return Comparison(base=str(base_dir), new=str(new_dir), rows=rows, drift=drift,
                      environment=environment_changes(base_manifest.get("environment") or {},
                                                      new_manifest.get("environment") or {}),
                      only_in_base=len(base_by_key) - len(shared), only_in_new=len(new_by_key) - len(shared))


def _point(row) -> str:
    parts = []
    for name, short in (("batch_size", "bs"), ("seq_len", "seq"), ("prompt_len", "prompt"), ("new_tokens", "new")):
        value = row.get(name)
        if value is not None and not pd.isna(value):
            parts.append(f"{short}={int(value) if float(value).is_integer() else value}")
    return " ".join(p for p in parts if p)


def display_table(comparison: Comparison) -> pd.DataFrame:
    """The table a person reads: one line per row, slowest change first, percentages with their intervals."""
    rows = comparison.rows.copy()
    if rows.empty:
        return pd.DataFrame(columns=["target", "model", "what", "point", "base ms", "new ms", "change",
                                     "normalised", "verdict"])
    rows = rows.sort_values("normalised_ratio", ascending=False)
    pct = lambda value: f"{100 * (value - 1):+.1f}%"  # noqa: E731
    return pd.DataFrame({
        "target": rows["target"], "model": rows["model"],
        "what": [f"{r['kind']}:{r['variant']}" + ("" if r["metric"] == "latency" else f" ({r['metric']})")
                 for _, r in rows.iterrows()],
        "point": [_point(r) for _, r in rows.iterrows()],
        "base ms": rows["base_median_ms"].map(lambda v: f"{v:.3g}"),
        "new ms": rows["new_median_ms"].map(lambda v: f"{v:.3g}"),
        "change": [f"{pct(r['ratio'])} [{pct(r['ratio_low'])}, {pct(r['ratio_high'])}]" for _, r in rows.iterrows()],
        "normalised": [f"{pct(r['normalised_ratio'])} [{pct(r['normalised_low'])}, {pct(r['normalised_high'])}]"
                       for _, r in rows.iterrows()],
        "verdict": rows["verdict"]}).reset_index(drop=True)


def summary_lines(comparison: Comparison) -> list[str]:
    """The lines above and below the table: what was compared, the drift, the counts, the environment."""
    counts = comparison.counts()
    lines = [f"base {comparison.base}  ->  new {comparison.new}",
             f"machine drift: {comparison.drift.detail}",
             "change = new/base median - 1, [95% percentile bootstrap]; normalised = divided by the reference "
             "workload's change, widened by both runs' within-run spreads",
             "verdicts: " + ", ".join(f"{count} {name}" for name, count in counts.items() if count)
             + (f"; {comparison.only_in_base} row(s) only in base, {comparison.only_in_new} only in new"
                if comparison.only_in_base or comparison.only_in_new else "")]
    if comparison.environment:
        lines.append("environment changed: " + "; ".join(f"{c['field']} {c['base']} -> {c['new']}"
                                                          for c in comparison.environment))
    else:
        lines.append("environment: no change recorded")
    return lines


__all__ = ["BOOTSTRAP_RESAMPLES", "MIN_EFFECT_PCT", "Comparison", "VERDICTS", "bootstrap_ratio", "compare_runs",
           "display_table", "environment_changes", "fastest_visit", "read_run", "repeat_spread", "summary_lines",
           "timing_rows", "verdict"]
