"""What a serving measurement is asked to do, checked once: the latency bound, its percentile, the scenarios,
the batcher grid and the time budget per LoadGen run.

The runner checks the same rules (:func:`check_serving_parameter`) before any kernel starts, so a bad
``--param`` is one sentence and exit 2, never a failed notebook.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from infopt.errors import InvalidInputError

#: LoadGen scenarios the serve notebook runs ("server-tokens": the Server scenario with LoadGen's first-token
#: reporting, causal LMs only).
SCENARIOS: tuple[str, ...] = ("single-stream", "server", "offline", "server-tokens")
#: Default bound on the percentile latency, per device kind (ms): 100 ms on a CPU, 10 ms on an accelerator.
DEFAULT_BOUND_MS: dict[str, float] = {"cpu": 100.0, "cuda": 10.0, "mps": 10.0}
DEFAULT_PERCENTILE: float = 99.0
#: The batcher grid the issue asks for (max batch x max wait).
DEFAULT_MAX_BATCHES: tuple[int, ...] = (1, 4, 8, 16)
DEFAULT_MAX_WAITS_MS: tuple[float, ...] = (1.0, 5.0, 20.0)


def default_bound_ms(device_kind: str) -> float:
    """The default latency bound on this kind of device."""
    return DEFAULT_BOUND_MS.get(device_kind, DEFAULT_BOUND_MS["cuda"])


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}.")
    return float(value)


def check_bound_ms(value) -> float:
    value = _number("latency_bound_ms", value)
    if not value > 0:
        raise InvalidInputError(f"latency_bound_ms must be above 0 ms, got {value:g}.")
    return value


def check_percentile(value) -> float:
    value = _number("latency_percentile", value)
    if not 0 < value < 100:
        raise InvalidInputError(f"latency_percentile must lie strictly between 0 and 100, got {value:g}.")
    return value


def check_max_batches(values) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise InvalidInputError(f"max_batch_sizes must be a non-empty list of integers, got {values!r}.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"max_batch_sizes: every maximum batch must be an integer of at least 1, "
                                    f"got {value!r}.")
    return tuple(values)


def check_max_waits(values) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise InvalidInputError(f"max_waits_ms must be a non-empty list of numbers, got {values!r}.")
    waits = tuple(_number("max_waits_ms", v) for v in values)
    if any(w < 0 for w in waits):
        raise InvalidInputError(f"max_waits_ms: every maximum wait must be 0 ms or more, got {list(values)!r}.")
    return waits


def check_scenarios(values) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise InvalidInputError(f"scenarios must be a non-empty list, choose from {', '.join(SCENARIOS)}.")
    for value in values:
        if value not in SCENARIOS:
            raise InvalidInputError(f"Unknown scenario {value!r}: choose from {', '.join(SCENARIOS)}.")
    return tuple(values)


def check_positive(name: str, value) -> float:
    value = _number(name, value)
    if not value > 0:
        raise InvalidInputError(f"{name} must be above 0, got {value:g}.")
    return value


def check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an integer of at least 1, got {value!r}.")
    return value


def check_variant_list(values) -> list:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in values):
        raise InvalidInputError(f"serve_variants must be a list of variant specs (non-empty strings), got {values!r}.")
    return list(values)


#: Notebook parameter -> its check (the runner calls :func:`check_serving_parameter`).
_CHECKS = {
    "latency_bound_ms": check_bound_ms,
    "latency_percentile": check_percentile,
    "max_batch_sizes": check_max_batches,
    "max_waits_ms": check_max_waits,
    "scenarios": check_scenarios,
    "scenario_budget_s": lambda v: check_positive("scenario_budget_s", v),
    "grid_budget_s": lambda v: check_positive("grid_budget_s", v),
    "max_test_s": lambda v: check_positive("max_test_s", v),
    "min_queries": lambda v: check_count("min_queries", v),
    "bisection_steps": lambda v: check_count("bisection_steps", v),
    "serve_variants": lambda v: check_variant_list(v),
}


def check_serving_parameter(name: str, value):
    """``value`` if the serve parameter ``name`` is valid (other names pass through); one sentence if not."""
    check = _CHECKS.get(name)
    if check is None:
        return value
    check(value)
    return value


@dataclass(frozen=True)
class ServeSettings:
    """One serving measurement's rules. ``min_queries`` scales LoadGen's minimum query counts (MLPerf asks for
    hundreds of thousands) down to what ``budget_s`` per run allows; ``strict`` requires LoadGen's own
    "VALID" (early stopping included) for a rate to count as served, else its latency constraint alone."""

    bound_ms: float
    percentile: float = DEFAULT_PERCENTILE
    scenarios: tuple[str, ...] = ("single-stream", "server", "offline", "server-tokens")
    max_batches: tuple[int, ...] = DEFAULT_MAX_BATCHES
    max_waits_ms: tuple[float, ...] = DEFAULT_MAX_WAITS_MS
    budget_s: float = 10.0
    min_queries: int = 256
    bisection_steps: int = 6
    strict: bool = True
    samples: int = 64
    seed: int = 0
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        check_bound_ms(self.bound_ms)
        check_percentile(self.percentile)
        check_scenarios(self.scenarios)
        check_max_batches(self.max_batches)
        check_max_waits(self.max_waits_ms)
        check_positive("scenario_budget_s", self.budget_s)
        if self.min_queries < 1 or self.bisection_steps < 1 or self.samples < 1:
            raise InvalidInputError("min_queries, bisection_steps and samples must each be at least 1.")

    @property
    def bound_s(self) -> float:
        return self.bound_ms / 1000.0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


__all__ = ["DEFAULT_BOUND_MS", "DEFAULT_MAX_BATCHES", "DEFAULT_MAX_WAITS_MS", "DEFAULT_PERCENTILE", "SCENARIOS",
           "ServeSettings", "check_bound_ms", "check_max_batches", "check_max_waits", "check_percentile",
           "check_scenarios", "check_serving_parameter", "default_bound_ms"]
