"""One sweep driver: points in, rows out.

A :class:`Point` is the identity of one measurement (model, variant, device,
batch size, sequence length, plus any settings such as ``use_cache``), kept
apart from what was measured, the way ``torch.utils.benchmark`` keeps its
``TaskSpec`` apart from its ``Measurement``. :func:`run_points` owns the
protocol every sweep follows (batch sweep, generation, memory, variants):

* invalid input (:class:`~infopt.errors.InvalidInputError`) is the caller's
  mistake and propagates;
* any other failure of a point is recorded in its row (``status`` ``"oom"`` or
  ``"error"``, ``error`` the message) and the sweep goes on;
* after an out-of-memory point, every later point at least as large (same
  model, variant, device and settings; batch size and sequence length both at
  least as large) is ``"skipped"`` with the reason.

It also owns the input checks the sweeps share: :func:`check_batch_sizes`,
:func:`resolve_seq_len` and :func:`validate_inputs` (an out-of-memory error
while building inputs is a point's ``oom``, never the sweep's end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from infopt.errors import InvalidInputError
from infopt.models.base import check_batch_size
from infopt.measure.timing import recorded_failure


def check_positive_ints(values: Iterable[int], what: str = "batch_sizes") -> list[int]:
    """``values`` as a sorted list without duplicates; one clear sentence if any is not an integer >= 1."""
    if isinstance(values, (int, str)) or values is None:
        raise InvalidInputError(f"{what} must be a list of integers, got {values!r}.")
    items = list(values)
    if not items:
        raise InvalidInputError(f"{what} must list at least one value.")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise InvalidInputError(f"{what} must be integers of at least 1, got {item!r}.")
    return sorted(set(items))


def check_batch_sizes(batch_sizes: Iterable[int]) -> list[int]:
    """The batch sizes of a sweep, ascending and distinct (the order the out-of-memory rule needs)."""
    if isinstance(batch_sizes, (int, str)) or batch_sizes is None:
        raise InvalidInputError(f"batch_sizes must be a list of integers, got {batch_sizes!r}.")
    sizes = [check_batch_size(size) for size in batch_sizes]
    if not sizes:
        raise InvalidInputError("batch_sizes must list at least one batch size.")
    return sorted(set(sizes))


def resolve_seq_len(model, seq_len: int | None) -> int | None:
    """The sequence length a text model actually runs at (its default when ``None``); ``None`` for vision.

    Asked of the model (``input_description``), so every model reports its own default.
    """
    if not model.is_text:
        return None
    resolved = model.input_description(seq_len).get("seq_len", seq_len)
    return None if resolved is None else int(resolved)


def validate_inputs(model, seq_len: int | None) -> None:
    """Check ``seq_len`` up front by building the smallest input (batch 1), before any point runs.

    Invalid input raises :class:`~infopt.errors.InvalidInputError`; any other failure (an out-of-memory error
    while building even that input) is left to the points, which record it as ``oom`` and skip larger ones,
    instead of aborting the sweep.
    """
    try:
        inputs = model.prepare_input(1, seq_len)
    except InvalidInputError:
        raise
    except Exception:  # noqa: BLE001 - the points record it (run_points), with the larger ones skipped
        return
    del inputs


@dataclass(frozen=True)
class Point:
    """What is measured (never how it went): hashable, comparable, printable."""

    model: str
    variant: str
    device: str
    batch_size: int
    seq_len: int | None = None
    settings: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, model, batch_size: int, seq_len: int | None = None, *, variant: str | None = None,
           **settings) -> "Point":
        """The point for a model wrapper (its name, variant and device; ``seq_len`` resolved)."""
        return cls(model=model.name, variant=variant or model.variant, device=str(model.device),
                   batch_size=batch_size, seq_len=resolve_seq_len(model, seq_len),
                   settings=tuple(sorted(settings.items())))

    def identity(self) -> dict:
        """The identity columns of a row: model, device, variant, batch_size, seq_len."""
        return {"model": self.model, "device": self.device, "variant": self.variant,
                "batch_size": self.batch_size, "seq_len": self.seq_len}

    def covers(self, other: "Point") -> bool:
        """True when ``other`` is at least as large as this point along batch size and sequence length."""
        same = (self.model, self.variant, self.device, self.settings) == (
            other.model, other.variant, other.device, other.settings)
        longer = self.seq_len is None or other.seq_len is None or other.seq_len >= self.seq_len
        return same and other.batch_size >= self.batch_size and longer

    def describe(self) -> str:
        """``"batch size 8"`` or ``"batch size 8, sequence length 512"``."""
        text = f"batch size {self.batch_size}"
        return text if self.seq_len is None else f"{text}, sequence length {self.seq_len}"


def skip_message(out_of_memory: Point) -> str:
    """The one message of a skipped point."""
    return f"skipped: {out_of_memory.describe()} already ran out of memory"


def run_points(points: Iterable[Point], measure_point: Callable[[Point], dict],
               empty_row: Callable[[Point, str, str | None], dict]) -> list[dict]:
    """Measure each point in order with the protocol of the module docstring.

    ``measure_point(point)`` returns the point's row (it may record its own
    failure, keeping what it measured before failing); ``empty_row(point,
    status, error)`` builds the row of a point that was skipped or whose
    measurement raised.
    """
    rows: list[dict] = []
    out_of_memory: list[Point] = []
    for point in points:
        blocker = next((done for done in out_of_memory if done.covers(point)), None)
        if blocker is not None:
            rows.append(empty_row(point, "skipped", skip_message(blocker)))
            continue
        row = empty_row(point, "ok", None)
        with recorded_failure(row):
            row = measure_point(point)
        if row.get("status") == "oom":
            out_of_memory.append(point)
        rows.append(row)
    return rows


__all__ = ["Point", "check_batch_sizes", "check_positive_ints", "resolve_seq_len", "run_points", "skip_message",
           "validate_inputs"]
