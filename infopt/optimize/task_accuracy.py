"""The accuracy guard on the user's data: the task metric of fp32 and of a variant, their paired difference.

Both run on the same evaluation split (never the calibration part). Every metric is a ratio of per-sample sums
(``sum(numerator) / sum(denominator)``: top-1 = correct / samples, perplexity = exp(NLL / tokens)), so the
**paired** bootstrap resamples samples once for both models and the interval covers the difference itself,
not two separate intervals. The loss and the budget are in the metric's own unit:

- top-1 / next-token / masked-token accuracy and agreement: percentage points lost (budget 1 pt);
- perplexity: relative increase in % (budget 2 %);
- a ``py:`` data's own metric: relative loss in % of the reference value (budget 1 %).

Verdicts: **safe** when the upper end of the 95% loss interval is within the budget, **unsafe** when its lower
end is above it, else **cannot tell**, with the evaluation size that would settle it (the interval's half-width
scaled by 1/sqrt(n)). For top-1 with no sample changing its correctness the bootstrap would say [0, 0]; the
interval is then the exact (Clopper-Pearson) 95% bound on the rate of changed samples, and McNemar's exact
p-value is reported for every classification comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from infopt.data.dataset import DataSet, Part
from infopt.errors import InvalidInputError
from infopt.models.base import ARGMAX_TASKS, ModelWrapper

#: Default budgets, in each metric's loss unit.
DEFAULT_BUDGETS = {"points": 1.0, "relative %": 2.0, "custom %": 1.0}
CONFIDENCE = 0.95
RESAMPLES = 2000
CUSTOM_RESAMPLES = 400
VERDICTS = ("safe", "unsafe", "cannot tell")
COLUMNS = ("task_metric", "task_reference", "task_value", "task_loss", "task_loss_low", "task_loss_high",
           "task_loss_unit", "task_budget", "task_verdict", "task_samples", "task_samples_to_settle",
           "task_exact_p", "task_ok", "task_data", "task_evaluation_hash", "task_note",
           "task_next_token_accuracy", "task_next_token_accuracy_reference")


@dataclass
class Scores:
    """Per-sample numerators and denominators of one model's metric on the evaluation split."""

    numerator: torch.Tensor
    denominator: torch.Tensor
    outputs: torch.Tensor

    def value(self) -> float:
        return float(self.numerator.sum() / self.denominator.sum())


def on_data(variant) -> Callable:
    """``variant.forward`` for batches of the user's data, with the variant's own input casts first (a
    ``bf16-weights`` copy takes bf16 images), as its ``prepare_input`` applies them to seeded inputs."""
    return lambda inputs: variant.forward(variant.convert_inputs(inputs))


def run_outputs(forward: Callable, part: Part, batch_size: int, device) -> torch.Tensor:
    """The model's main output over a split, batch by batch, as float32 on the CPU."""
    chunks = []
    with torch.inference_mode():
        for inputs, _ in part.batches(batch_size, device):
            chunks.append(forward(inputs).detach().to("cpu", torch.float32))
    return torch.cat(chunks)


def _per_sample(outputs: torch.Tensor, part: Part, kind: str, reference: torch.Tensor | None,
                task: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = outputs.shape[0]
    ones = torch.ones(n, dtype=torch.float64)
    if kind == "class":
        if outputs.dim() != 2:
            raise InvalidInputError(f"Class labels need one row of class scores per sample; the model returned "
                                    f"shape {tuple(outputs.shape)}.")
        if int(part.targets.max()) >= outputs.shape[1] or int(part.targets.min()) < 0:
            raise InvalidInputError(f"The data has class {int(part.targets.max())}, but the model scores only "
                                    f"{outputs.shape[1]} classes.")
        return (outputs.argmax(dim=1) == part.targets).double(), ones
    if kind == "next-token":
        logits, ids = outputs[:, :-1], part.targets[:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), ids.reshape(-1), reduction="none")
        return nll.view(ids.shape).sum(dim=1), torch.full((n,), float(ids.shape[1]), dtype=torch.float64)
    if kind == "next-token-accuracy":
        ids = part.targets[:, 1:]
        correct = (outputs[:, :-1].argmax(dim=-1) == ids).double().sum(dim=1)
        return correct, torch.full((n,), float(ids.shape[1]), dtype=torch.float64)
    if kind == "masked-token":
        chosen = part.targets != -100
        correct = ((outputs.argmax(dim=-1) == part.targets) & chosen).double().sum(dim=1)
        return correct, chosen.double().sum(dim=1)
    # no labels: agreement with the fp32 reference on these real inputs
    if task in ARGMAX_TASKS and outputs.dim() >= 2:
        agree = (outputs.argmax(dim=-1) == reference.argmax(dim=-1)).double()
        return agree.reshape(n, -1).sum(dim=1), torch.full((n,), float(agree[0].numel()), dtype=torch.float64)
    cosine = F.cosine_similarity(outputs.reshape(n, -1).double(), reference.reshape(n, -1).double(), dim=1)
    return cosine, ones


def _custom_value(metric: Callable, outputs: torch.Tensor, targets, where: str) -> float:
    try:
        value = float(metric(outputs, targets))
    except Exception as error:  # noqa: BLE001 - the user's metric failed
        raise InvalidInputError(f"{where} raised {type(error).__name__}: {error}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{where} returned {value}, not a finite number.")
    return value


def exact_upper_rate(count: int, n: int, confidence: float = CONFIDENCE) -> float:
    """Clopper-Pearson upper bound of a rate from ``count`` events in ``n`` (two-sided ``confidence``)."""
    if count >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(1 - (1 - confidence) / 2, count + 1, n - count))


def mcnemar_exact_p(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: samples the variant got wrong vs right among changed ones."""
    if lost + gained == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(lost, lost + gained, 0.5).pvalue)


def samples_to_settle(n: int, estimate: float, low: float, high: float, budget: float) -> int | None:
    """Evaluation samples at which the interval would clear the budget (half-width ~ 1/sqrt(n)), if any."""
    if estimate < budget and high > budget:
        return int(math.ceil(n * ((high - estimate) / (budget - estimate)) ** 2))
    if estimate > budget and low <= budget:
        return int(math.ceil(n * ((estimate - low) / (estimate - budget)) ** 2))
    return None


class TaskAccuracyGuard:
    """The fp32 reference's task metric on the evaluation split, computed once; :meth:`check` per variant."""

    def __init__(self, model: ModelWrapper, data: DataSet, *, budget: float | None = None, batch_size: int = 64,
                 seed: int = 0):
        self.model, self.data, self.batch_size, self.seed = model, data, batch_size, seed
        self.part = data.evaluation
        kind = data.target_kind
        self.kind = kind
        if kind in ("class", "masked-token") or (kind == "none"):
            self.unit = "points"
        elif kind == "next-token":
            self.unit = "relative %"
        else:
            self.unit = "custom %"
        self.budget = DEFAULT_BUDGETS[self.unit] if budget is None else float(budget)
        if not (self.budget >= 0 and math.isfinite(self.budget)):
            raise InvalidInputError(f"The accuracy budget must be a finite number >= 0, got {budget!r}.")
        self.metric_name = data.metric_name or kind
        if kind == "none":
            self.metric_name = ("top-1 agreement with fp32 on real inputs" if model.task in ARGMAX_TASKS
                                else "output cosine with fp32 on real inputs")
        outputs = run_outputs(model.forward, self.part, batch_size, model.device)
        if not bool(torch.isfinite(outputs).all()):
            raise InvalidInputError(f"{model.name} returns non-finite outputs (NaN or inf) on data "
                                    f"{data.spec.text!r}, so no accuracy can be measured.")
        self.reference = self._scores(outputs, reference=outputs)
        if kind == "custom":
            self.reference_value = _custom_value(data.metric, outputs, self.part.targets,
                                                 f"The data's metric {self.metric_name}")
        else:
            self.reference_value = self.display_value(self.reference)
        self.reference_next_token = self._next_token_accuracy(outputs)

    def _next_token_accuracy(self, outputs: torch.Tensor) -> float:
        """Causal LMs: the fraction of next tokens whose argmax is right (NaN for other data)."""
        if self.kind != "next-token":
            return math.nan
        correct, count = _per_sample(outputs, self.part, "next-token-accuracy", None, self.model.task)
        return float(correct.sum() / count.sum())

    def _scores(self, outputs: torch.Tensor, reference: torch.Tensor) -> Scores:
        if self.kind == "custom":
            ones = torch.ones(outputs.shape[0], dtype=torch.float64)
            return Scores(ones, ones, outputs)
        numerator, denominator = _per_sample(outputs, self.part, self.kind, reference, self.model.task)
        return Scores(numerator, denominator, outputs)

    def display_value(self, scores: Scores) -> float:
        """The metric as people read it: accuracy in [0, 1], perplexity, cosine."""
        return math.exp(scores.value()) if self.kind == "next-token" else scores.value()

    def _loss(self, ref: float, var: float) -> float:
        """Loss from a pair of raw ratio values (NLL per token for perplexity)."""
        if self.unit == "points":
            return 100.0 * (ref - var)
        if self.unit == "relative %":
            return 100.0 * (math.exp(var - ref) - 1.0)
        sign = 1.0 if self.data.higher_is_better else -1.0
        return 100.0 * sign * (ref - var) / abs(ref) if ref else math.inf * sign * (ref - var)

    def _bootstrap(self, variant: Scores) -> tuple[float, float]:
        n = variant.numerator.shape[0]
        generator = torch.Generator().manual_seed(self.seed)
        losses = []
        if self.kind == "custom":
            for _ in range(CUSTOM_RESAMPLES):
                idx = torch.randint(0, n, (n,), generator=generator)
                targets = None if self.part.targets is None else self.part.targets[idx]
                ref = _custom_value(self.data.metric, self.reference.outputs[idx], targets, "The data's metric")
                var = _custom_value(self.data.metric, variant.outputs[idx], targets, "The data's metric")
                losses.append(self._loss(ref, var))
            values = torch.tensor(losses, dtype=torch.float64)
        else:
            chunks = []
            for _ in range(0, RESAMPLES, 250):
                idx = torch.randint(0, n, (250, n), generator=generator)
                ref = self.reference.numerator[idx].sum(1) / self.reference.denominator[idx].sum(1)
                var = variant.numerator[idx].sum(1) / variant.denominator[idx].sum(1)
                chunks.append(100.0 * (torch.exp(var - ref) - 1.0) if self.unit == "relative %"
                              else 100.0 * (ref - var))
            values = torch.cat(chunks)
        tail = (1 - CONFIDENCE) / 2
        return float(values.quantile(tail)), float(values.quantile(1 - tail))

    def check(self, forward: Callable) -> dict:
        """Run ``forward`` (a variant used like the model) on the evaluation split and judge it (``COLUMNS``)."""
        outputs = run_outputs(forward, self.part, self.batch_size, self.model.device)
        n = self.part.size
        row = {"task_metric": self.metric_name, "task_reference": self.reference_value, "task_loss_unit": self.unit,
               "task_budget": self.budget, "task_samples": n, "task_data": self.data.spec.text,
               "task_evaluation_hash": self.part.hash, "task_exact_p": math.nan, "task_note": "",
               "task_samples_to_settle": None, "task_next_token_accuracy_reference": self.reference_next_token,
               "task_next_token_accuracy": math.nan}
        if outputs.shape != self.reference.outputs.shape or not bool(torch.isfinite(outputs).all()):
            problem = "non-finite outputs" if outputs.shape == self.reference.outputs.shape else \
                f"output shape {tuple(outputs.shape)} vs {tuple(self.reference.outputs.shape)}"
            row.update(task_value=math.nan, task_loss=math.inf, task_loss_low=math.inf, task_loss_high=math.inf,
                       task_verdict="unsafe", task_ok=False, task_note=f"the variant returns {problem}")
            return row
        scores = self._scores(outputs, reference=self.reference.outputs)
        if self.kind == "custom":
            value = _custom_value(self.data.metric, outputs, self.part.targets, f"The data's metric {self.metric_name}")
            loss = self._loss(self.reference_value, value)
        else:
            value = self.display_value(scores)
            loss = self._loss(self.reference.value(), scores.value())
        low, high = self._bootstrap(scores)
        row["task_next_token_accuracy"] = self._next_token_accuracy(outputs)
        note = f"paired bootstrap ({RESAMPLES if self.kind != 'custom' else CUSTOM_RESAMPLES} resamples) 95% interval"
        if self.kind == "class":
            lost = int(((self.reference.numerator == 1) & (scores.numerator == 0)).sum())
            gained = int(((self.reference.numerator == 0) & (scores.numerator == 1)).sum())
            row["task_exact_p"] = mcnemar_exact_p(lost, gained)
            if lost + gained == 0:
                bound = 100.0 * exact_upper_rate(0, n)
                low, high = -bound, bound
                note = "no sample changed; exact (Clopper-Pearson) 95% bound on the rate of changed samples"
        low, high = min(low, loss), max(high, loss)
        verdict = "safe" if high <= self.budget else "unsafe" if low > self.budget else "cannot tell"
        row.update(task_value=value, task_loss=loss, task_loss_low=low, task_loss_high=high, task_verdict=verdict,
                   task_ok=verdict == "safe", task_note=note,
                   task_samples_to_settle=samples_to_settle(n, loss, low, high, self.budget)
                   if verdict == "cannot tell" else None)
        return row

    def describe(self, row: dict) -> str:
        """One line: ``top-1 96.8% vs 97.1% (loss 0.3 pt [0.0, 0.7]) on 1,541 samples: safe``."""
        unit = "pt" if self.unit == "points" else "%"
        fmt = (lambda v: f"{100 * v:.1f}%") if self.unit == "points" and self.kind != "none" or \
            self.metric_name.startswith("top-1 agreement") else (lambda v: f"{v:.4g}")
        line = (f"{self.metric_name} {fmt(row['task_value'])} vs {fmt(row['task_reference'])} (loss "
                f"{row['task_loss']:.2f} {unit} [{row['task_loss_low']:.2f}, {row['task_loss_high']:.2f}]) on "
                f"{row['task_samples']:,} samples: {row['task_verdict']}")
        if row.get("task_samples_to_settle"):
            line += f" (about {row['task_samples_to_settle']:,} samples would settle it)"
        return line


#: What ``accuracy_basis`` says on every row, with and without the user's data.
RANDOM_INPUT_BASIS = "agreement on random inputs, not accuracy"


def attach_calibration(model: ModelWrapper, data: DataSet, batch_size: int = 32) -> str:
    """Give ``model`` the calibration split as input batches (``model.calibration_data``), which calibrated
    variants (static int8) use instead of seeded random inputs; returns the sentence their note repeats."""
    part = data.calibration
    if part.size == 0:
        return ""
    batches = [inputs for inputs, _ in part.batches(batch_size, "cpu")]
    note = f"{part.size} samples of the calibration split of {data.spec.text} (sha256 {part.hash[:12]})"
    model.calibration_data = (batches, note)
    return note


def race_accuracy_check(guard: TaskAccuracyGuard, results: dict | None = None) -> Callable:
    """An ``accuracy_check`` for :func:`infopt.optimize.race.run_variant_race`: the task verdict on the data
    decides (``safe`` only), the random-input agreement columns are kept beside it; ``results`` collects rows."""
    from infopt.optimize.race import output_agreement_check

    collected = {} if results is None else results

    def check(model, variant, batch_size, seq_len, reference) -> tuple[dict, bool]:
        fields, random_ok = output_agreement_check(model, variant, batch_size, seq_len, reference)
        row = guard.check(on_data(variant))
        collected[variant.variant] = row
        return {**fields, **row, "random_input_accuracy_ok": random_ok, "accuracy_ok": row["task_ok"],
                "accuracy_basis": f"{guard.metric_name} on {guard.data.spec.text}"}, row["task_ok"]

    return check


def check_variants(guard: TaskAccuracyGuard, model: ModelWrapper, specs, results: dict | None = None) -> dict:
    """The task row of every variant in ``specs`` not yet in ``results`` (the exhaustive search's path)."""
    from infopt.optimize.applied import apply_variant
    from infopt.optimize.registry import BASELINE, VariantError

    results = {} if results is None else results
    for spec in specs:
        if spec == BASELINE or spec in results:
            continue
        try:
            variant = apply_variant(model, spec)
        except VariantError:
            continue  # the sweep already records why it does not apply or failed
        try:
            results[spec] = guard.check(on_data(variant))
        except Exception as error:  # noqa: BLE001 - a variant that cannot run on the data is not safe
            results[spec] = {"task_verdict": "unsafe", "task_ok": False,
                             "task_note": f"failed on the data: {type(error).__name__}: {error}"}
        del variant
    return results


def merge_task_columns(table, guard: TaskAccuracyGuard | None, results: dict | None = None, *,
                       weights: str | None = None):
    """Every row gets ``accuracy_basis`` (and ``weights``: "pretrained (from <path>)" or "random", when given); with data, the task columns and ``accuracy_ok`` = the task verdict
    (the random-input agreement moves to ``random_input_accuracy_ok``), and the verdicts are recomputed."""
    from infopt.optimize.recommend import add_verdicts
    from infopt.optimize.registry import BASELINE

    table = table.copy()
    if weights is not None:
        table["weights"] = weights
    if guard is None:
        table["accuracy_basis"] = RANDOM_INPUT_BASIS
        return table
    if "random_input_accuracy_ok" not in table:
        table["random_input_accuracy_ok"] = table.get("accuracy_ok")
    basis = f"{guard.metric_name} on {guard.data.spec.text}"
    table["accuracy_basis"] = None  # rows the data never judged (n/a, failed) claim no basis
    reference_row = {"task_metric": guard.metric_name, "task_reference": guard.reference_value,
                     "task_value": guard.reference_value, "task_loss": 0.0, "task_verdict": "reference",
                     "task_samples": guard.part.size, "task_data": guard.data.spec.text,
                     "task_loss_unit": guard.unit, "task_budget": guard.budget}
    for index, variant in table["variant"].items():
        row = reference_row if variant == BASELINE else (results or {}).get(variant)
        if row is None:
            continue
        for key, value in row.items():
            if key not in table:
                table[key] = None
            table.at[index, key] = value
        table.at[index, "accuracy_basis"] = basis
        if variant != BASELINE:
            table.at[index, "accuracy_ok"] = bool(row.get("task_ok"))
    return add_verdicts(table)


def recommendation_lines(recommendations, sweep, guard: TaskAccuracyGuard | None) -> list[str]:
    """The recommendation lines with the accuracy they rest on: the task metric with its loss interval on the
    data, or, without data, a plain statement that the guard only compared outputs on random inputs."""
    lines = []
    for _, rec in recommendations.iterrows():
        line = str(rec["recommendation"])
        if guard is None:
            lines.append(f"{line} (accuracy guard: {RANDOM_INPUT_BASIS})")
            continue
        rows = sweep[(sweep["variant"] == rec["variant"]) & (sweep["batch_size"] == rec["batch_size"])]
        if rec["variant"] is None or rows.empty or "task_verdict" not in rows or rows.iloc[0]["task_verdict"] \
                in (None, "reference") or not isinstance(rows.iloc[0].get("task_loss"), (int, float)):
            lines.append(line)
            continue
        row = rows.iloc[0].to_dict()
        speed = rec.get("speedup")
        faster = f"{speed:.2f}x faster" if isinstance(speed, (int, float)) and math.isfinite(speed) else "faster"
        lines.append(f"{rec['variant']}: {faster}, {guard.describe(row)} ({guard.data.spec.text})")
    return lines


__all__ = ["COLUMNS", "DEFAULT_BUDGETS", "RANDOM_INPUT_BASIS", "VERDICTS", "Scores", "TaskAccuracyGuard",
           "attach_calibration", "check_variants", "exact_upper_rate", "mcnemar_exact_p", "merge_task_columns",
           "on_data", "race_accuracy_check", "recommendation_lines", "run_outputs", "samples_to_settle"]
