"""Notebook parameters: the forms people type are coerced, anything else is refused by name."""

from __future__ import annotations

import pytest

from infopt.errors import InvalidInputError
from infopt.run.params import coerce, coerce_namespace

TYPES = {"quick": bool, "batch_sizes": list, "seq_len": int, "max_time_s": float, "run_name": str,
         "variants": list}


@pytest.mark.parametrize("text, expected", [("false", False), ("False", False), ("0", False), ("no", False),
                                            ("true", True), ("TRUE", True), ("1", True), (True, True), (0, False)])
def test_booleans_from_text(text, expected):
    assert coerce({"quick": text}, TYPES)["quick"] is expected


@pytest.mark.parametrize("text, expected", [("[1, 2]", [1, 2]), ("1,2", [1, 2]), (" 1, 2 ,", [1, 2]), ("4", [4]),
                                            (4, [4]), ("[]", []), ("", []), ([8], [8]), ("[1.5]", [1.5])])
def test_lists_from_text(text, expected):
    assert coerce({"batch_sizes": text}, TYPES)["batch_sizes"] == expected


def test_lists_of_names_stay_text():
    assert coerce({"variants": "bf16,int8-dynamic"}, TYPES)["variants"] == ["bf16", "int8-dynamic"]
    assert coerce({"variants": '["bf16+channels-last"]'}, TYPES)["variants"] == ["bf16+channels-last"]


def test_numbers_and_text():
    out = coerce({"seq_len": "64", "max_time_s": "2.5", "run_name": 20261126}, TYPES)
    assert out == {"seq_len": 64, "max_time_s": 2.5, "run_name": "20261126"}


@pytest.mark.parametrize("name, value", [("quick", "maybe"), ("quick", 2), ("batch_sizes", "[1, 2"),
                                         ("batch_sizes", "{1: 2}"), ("batch_sizes", True), ("seq_len", "12.5x"),
                                         ("seq_len", True), ("max_time_s", "fast"), ("run_name", [1])])
def test_anything_else_is_refused_by_name(name, value):
    with pytest.raises(InvalidInputError, match=f"Parameter '{name}' must be"):
        coerce({name: value}, TYPES)


def test_coerce_namespace_reads_the_parameters_cell_annotations():
    namespace = {"__annotations__": {"quick": bool, "batch_sizes": "list"}, "quick": "false",
                 "batch_sizes": "[1, 2]", "other": "untouched"}
    coerce_namespace(namespace)
    assert namespace["quick"] is False and namespace["batch_sizes"] == [1, 2] and namespace["other"] == "untouched"
