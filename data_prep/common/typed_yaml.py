"""Typed configuration from YAML: dataclasses + dotted ``key.path=value`` overrides, strictly checked.

Shared by the data pipeline (``data_prep run``) and the trainer (``pretrain.config``). Loading is strict:
an unknown key or a value of the wrong type raises ``InputError`` with one line naming the file and the
key, so a bad config fails before any work (or any process group) starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from data_prep.common.errors import InputError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is Literal:
        return " | ".join(map(str, typing.get_args(tp)))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, where: str, from_string: bool) -> Any:
    """Check ``value`` against ``tp`` (converting an override's string); raise one line on mismatch."""

    def bad() -> InputError:
        return InputError(f"{where}: {key} must be {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (from_string and str(value).lower() in ("null", "none", "~"))):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, where, from_string)
            except InputError:
                pass
        raise bad()
    if origin is list:
        if from_string and isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise bad()
        (item,) = typing.get_args(tp)
        return [_convert(v, item, key, where, from_string) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_string and str(value).lower() in ("true", "false", "yes", "no", "1", "0"):
            return str(value).lower() in ("true", "yes", "1")
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_string:
            try:
                return int(str(value).replace("_", ""))
            except ValueError:
                pass
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        if from_string or isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    raise bad()


def _build(cls: type, data: dict[str, Any], prefix: str, where: str, from_string: set[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            raise InputError(f"{where}: unknown key {dotted!r} (known in {prefix or 'top level'}: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise InputError(f"{where}: {dotted} must be a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
            kwargs[key] = _build(tp, value, dotted + ".", where, from_string)
        else:
            kwargs[key] = _convert(value, tp, dotted, where, dotted in from_string)
    return cls(**kwargs)


def parse_overrides(overrides: list[str], where: str = "override") -> dict[str, Any]:
    """``["train.lr=1e-4", ...]`` -> nested dict of strings (typed later, against the dataclasses)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise InputError(f"{where}: {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = nested
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise InputError(f"{where}: {key!r} goes below a non-mapping key")
            node = child
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def flat_keys(d: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in d.items():
        keys |= flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return keys


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; any problem is one ``InputError`` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the top level must be a mapping")
    return data


def load_dataclass(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> tuple[T, str]:
    """YAML file (or nothing) + dotted overrides -> an instance of dataclass ``cls``; returns (config, where)."""
    where = str(path) if path else "config"
    data = read_yaml(path) if path is not None else {}
    over = parse_overrides(overrides or [])
    return build_dataclass(cls, merge(data, over), where, flat_keys(over)), where


def build_dataclass(cls: type[T], data: dict[str, Any], where: str, string_keys: set[str] | None = None) -> T:
    """Build ``cls`` from a plain dict (``string_keys``: dotted keys whose values are text to convert)."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: the top level must be a mapping")
    return _build(cls, data, "", where, string_keys or set())
