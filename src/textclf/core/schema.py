"""Check a nested dict (a parsed YAML file) against frozen dataclasses, collecting every problem.

`build(cls, raw, errors)` returns an instance of `cls` built from `raw`, or None, and appends one
line per problem to `errors`: an unknown key (with the keys allowed there), a missing key, a key or
value renamed since an earlier version (with the new spelling), or a value of the wrong type (with
the type: Literal values, unions, lists, bool, int, float, str, None). Nested dataclass fields are
nested mappings. textclf.core.params declares the params; this module only checks shapes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union


@dataclasses.dataclass(frozen=True)
class Renames:
    """Spellings of earlier versions: dotted key -> new dotted key, and (dotted key, old value)
    -> new value."""
    keys: dict[str, str] = dataclasses.field(default_factory=dict)
    values: dict[tuple[str, Any], str] = dataclasses.field(default_factory=dict)


def build(cls, raw: Any, errors: list[str], renames: Renames = Renames(), prefix: str = ""):
    """An instance of dataclass `cls` from the mapping `raw`, or None; problems go to `errors`."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        errors.append(f"{where} must be a mapping, got {type(raw).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if prefix + str(key) in renames.keys:
            errors.append(f"{prefix}{key} was renamed to {renames.keys[prefix + str(key)]}: "
                          "rename it in your params file")
        elif key not in names:
            errors.append(f"unknown key {prefix}{key} (allowed in {where}: {', '.join(names)})")
    values = {}
    for name in names:
        key = prefix + name
        if name not in raw:
            errors.append(f"missing key {key}")
            continue
        tp = hints[name]
        renamed = _renamed_value(renames, key, raw[name])
        if renamed:
            errors.append(renamed)
        elif dataclasses.is_dataclass(tp):
            values[name] = build(tp, raw[name], errors, renames, key + ".")
        else:
            ok, value = _coerce(raw[name], tp)
            if ok:
                values[name] = value
            else:
                errors.append(f"{key} must be {_describe(tp)}, got {raw[name]!r}")
    if len(values) != len(names):
        return None
    return cls(**values)


def _renamed_value(renames: Renames, key: str, value: Any) -> str | None:
    """The error for a value that was renamed, or None. Compared with its type: 0 is not false."""
    for (old_key, old), new in renames.values.items():
        if old_key == key and type(value) is type(old) and value == old:
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            why = " (YAML reads an unquoted no as false)" if isinstance(value, bool) else ""
            return (f"{key}: {shown} is the old spelling of {new}{why}: write {new} instead "
                    f"(dvc exp run -S {key}={new})")
    return None


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        return (value in typing.get_args(tp)), value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, None
        items = [_coerce(v, item_tp) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if tp is type(None):
        return value is None, None
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        # YAML 1.1 (PyYAML) reads 5e-5 as a string; DVC's -S writes such values, so accept them.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return False, None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value), float(value)  # NaN would pass every range check
        return False, None
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported params type {tp}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    return {type(None): "null", bool: "true or false", int: "an integer",
            float: "a finite number", str: "a string"}[tp]
