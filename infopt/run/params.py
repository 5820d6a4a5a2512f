"""Notebook parameters checked and coerced before anything loads.

``papermill -p quick false`` arrives as the string ``"false"`` (true in a
plain ``if``), and ``-p batch_sizes "[1, 2]"`` as a string that fails only
after the model loaded. Each notebook's parameters cell declares its types
(``quick: bool = False``); :func:`coerce_namespace` reads them from the
notebook's ``__annotations__`` and, in the first cell after the parameters,
turns the forms people type into those types, or stops with one sentence
naming the parameter. Accepted: booleans as ``true``/``false``/``yes``/``no``/
``1``/``0`` (any case); lists as a list, ``1,2`` or ``[1, 2]`` (numbers stay
numbers, other items stay text); ints and floats from their text.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import MutableMapping

from infopt.errors import InvalidInputError

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


def _fail(name: str, value, expected: str) -> InvalidInputError:
    return InvalidInputError(f"Parameter '{name}' must be {expected}, got {value!r}.")


def _to_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _fail(name, value, "true or false")


def _to_int(name: str, value) -> int:
    if isinstance(value, bool):
        raise _fail(name, value, "an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _fail(name, value, "an integer")


def _to_float(name: str, value) -> float:
    if isinstance(value, bool):
        raise _fail(name, value, "a number")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise _fail(name, value, "a number") from None
    else:
        raise _fail(name, value, "a number")
    if math.isnan(result):
        raise _fail(name, value, "a number")
    return result


def _item(text: str):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _to_list(name: str, value) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if not text or text == "[]":
            return []
        if text.startswith("["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(text)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(parsed, list):
                    return parsed
            raise _fail(name, value, "a list such as [1, 2] or 1,2")
        if text.startswith(("{", "(")):
            raise _fail(name, value, "a list such as [1, 2] or 1,2")
        return [_item(part) for part in text.split(",") if part.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]  # papermill turns "-p batch_sizes 4" into the number 4
    raise _fail(name, value, "a list such as [1, 2] or 1,2")


def _to_str(name: str, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # papermill turns "-p run_name 20261126" into a number
    raise _fail(name, value, "text")


_COERCE = {bool: _to_bool, int: _to_int, float: _to_float, list: _to_list, str: _to_str}


def _base_type(annotation):
    """``list``, ``list[int]``, ``"bool"`` -> the builtin the value must become (None: not checked)."""
    if isinstance(annotation, str):
        annotation = {"bool": bool, "int": int, "float": float, "str": str, "list": list}.get(
            annotation.split("[", 1)[0].strip())
    return getattr(annotation, "__origin__", annotation) if annotation is not None else None


def coerce(values: dict, types: dict) -> dict:
    """``values`` with every name in ``types`` converted to its type; the first bad one raises InvalidInputError."""
    result = dict(values)
    for name, annotation in types.items():
        kind = _base_type(annotation)
        if name in result and kind in _COERCE:
            result[name] = _COERCE[kind](name, result[name])
    return result


def coerce_namespace(namespace: MutableMapping) -> dict:
    """Coerce, in place, the notebook globals declared with a type in the parameters cell; returns them.

    Call it first thing after the parameters cell (``coerce_namespace(globals())``),
    before any model loads.
    """
    types = dict(namespace.get("__annotations__") or {})
    if not types:
        raise InvalidInputError("No typed parameters found: the parameters cell declares them as `name: type = value`.")
    coerced = coerce({name: namespace[name] for name in types if name in namespace}, types)
    namespace.update(coerced)
    return coerced


__all__ = ["coerce", "coerce_namespace"]
