"""The sweep driver: one protocol for failing points, one batch-size check, one sequence-length resolver."""

import pytest
import torch

from infopt.errors import InvalidInputError
from infopt.measure.sweep import Point, check_batch_sizes, resolve_seq_len, run_points, skip_message


def _point(batch, seq=None, **settings):
    return Point("m", "eager-fp32", "cpu", batch, seq, tuple(sorted(settings.items())))


def _empty(point, status, error=None):
    return {**point.identity(), "status": status, "error": error, "settings": dict(point.settings)}


def test_points_are_identities_apart_from_measurements():
    point = _point(4, 128)
    assert point == _point(4, 128) and hash(point) == hash(_point(4, 128))
    with pytest.raises(AttributeError):
        point.batch_size = 8  # frozen
    assert point.identity() == {"model": "m", "device": "cpu", "variant": "eager-fp32", "batch_size": 4,
                                "seq_len": 128}
    assert point.describe() == "batch size 4, sequence length 128" and _point(2).describe() == "batch size 2"


def test_out_of_memory_skips_only_points_at_least_as_large_with_the_same_settings():
    def measure(point):
        if point.batch_size == 2 and point.seq_len == 64 and dict(point.settings)["cache"]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return _empty(point, "ok")

    points = [_point(b, s, cache=c) for c in (True, False) for b in (1, 2, 4) for s in (32, 64)]
    rows = run_points(points, measure, _empty)
    status = {(r["batch_size"], r["seq_len"], r["settings"]["cache"]): r["status"] for r in rows}
    assert status[(2, 64, True)] == "oom"
    assert status[(4, 64, True)] == "skipped" and status[(4, 32, True)] == "ok"  # shorter sequence still runs
    assert all(status[(b, s, False)] == "ok" for b in (1, 2, 4) for s in (32, 64))  # other setting untouched
    skipped = next(r for r in rows if r["status"] == "skipped")
    assert skipped["error"] == skip_message(_point(2, 64, cache=True)) == \
        "skipped: batch size 2, sequence length 64 already ran out of memory"


def test_errors_are_recorded_and_invalid_input_propagates():
    def broken(point):
        raise RuntimeError("deliberately broken\nsecond line")

    rows = run_points([_point(1), _point(2)], broken, _empty)
    assert [r["status"] for r in rows] == ["error", "error"]  # an error is not an OOM: larger sizes still run
    assert rows[0]["error"] == "RuntimeError: deliberately broken"

    def invalid(point):
        raise InvalidInputError("bad input")

    with pytest.raises(InvalidInputError, match="bad input"):
        run_points([_point(1)], invalid, _empty)


@pytest.mark.parametrize("bad", [[], [0], [1, 2.5], [True], 4, None, "8"])
def test_batch_sizes_are_checked_with_one_sentence(bad):
    with pytest.raises(InvalidInputError, match="batch_sizes must|Batch size must be an integer of at least 1"):
        check_batch_sizes(bad)


def test_batch_sizes_come_back_sorted_and_distinct():
    assert check_batch_sizes((8, 1, 4, 1)) == [1, 4, 8]


def test_sequence_length_is_asked_of_the_model(tiny_gpt2, tiny_resnet):
    assert resolve_seq_len(tiny_resnet, None) is None and resolve_seq_len(tiny_resnet, 64) is None
    assert resolve_seq_len(tiny_gpt2, 16) == 16
    assert resolve_seq_len(tiny_gpt2, None) == int(tiny_gpt2.prepare_input(1)["input_ids"].shape[1])


class _InputsRunOutOfMemory:
    """A model whose input builder runs out of memory from ``limit`` samples on (batch 1 included if limit=1)."""

    def __init__(self, limit):
        self.limit, self.built = limit, []

    def prepare_input(self, batch_size, seq_len=None):
        self.built.append(batch_size)
        if batch_size >= self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory while building inputs (simulated)")
        return {"x": torch.zeros(batch_size)}


def test_an_out_of_memory_while_building_the_check_input_leaves_it_to_the_points():
    from infopt.measure.sweep import validate_inputs

    model = _InputsRunOutOfMemory(limit=1)
    validate_inputs(model, None)  # no exception: the points record the OOM
    assert model.built == [1]

    class Invalid:
        def prepare_input(self, batch_size, seq_len=None):
            raise InvalidInputError("Sequence length 9999 exceeds m's limit of 1024 positions.")

    with pytest.raises(InvalidInputError, match="exceeds"):
        validate_inputs(Invalid(), 9999)
