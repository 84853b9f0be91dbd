"""Start-up range checks: what the schemas' types cannot express (positive sizes, fractions).

A schema field's ``metadata["range"]`` names its range; :func:`check_ranges` walks a composed
config once, before anything is built or written, and raises one :class:`ConfigError` naming
the key, the value and a valid example for the first value out of range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from glassbox.errors import ConfigError

# range name → (test, what a valid value is)
RANGES = {
    "positive": (lambda v: v > 0, "> 0"),
    "non_negative": (lambda v: v >= 0, ">= 0"),
    "fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "open_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "probability": (lambda v: 0 <= v < 1, "in [0, 1)"),
}


def _fields(node: DictConfig) -> Iterator[dataclasses.Field]:
    schema = OmegaConf.get_type(node)
    if schema is not None and dataclasses.is_dataclass(schema):
        yield from dataclasses.fields(schema)


def _problem(value: Any, range_name: str) -> str | None:
    test, valid = RANGES[range_name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # the schema's type check owns this; null means "off"
    if isinstance(value, float) and math.isnan(value):
        return f"is NaN (must be {valid})"
    if test(value):
        return None
    if range_name == "positive" and isinstance(value, int):
        return "is not a positive integer"
    return f"must be {valid}"


def _example(f: dataclasses.Field) -> str | None:
    default = f.default
    if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    if default is dataclasses.MISSING or default == MISSING:
        return None
    if isinstance(default, str) and "${" in default:
        return None
    if default is None:
        return "null"
    return str(default).replace(" ", "") if isinstance(default, list) else str(default)


def _walk(node: DictConfig, path: str) -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(key, value, schema field) of every ranged field, and recursion into every child node."""
    ranged = {f.name: f for f in _fields(node) if f.metadata.get("range")}
    for name in node:
        key = f"{path}.{name}" if path else str(name)
        if name == "hydra" and not path:
            continue
        try:
            child = node._get_node(name)
            if child is None or child._is_missing():
                continue
            value = node[name]
        except OmegaConfBaseException as err:  # an interpolation that does not resolve
            raise ConfigError(f"{key}: {' '.join(str(err).split('full_key')[0].split())}") from None
        if isinstance(value, DictConfig):
            yield from _walk(value, key)
        elif name in ranged:
            yield key, value, ranged[name]


def check_ranges(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first ranged value of ``cfg`` out of its range."""
    for key, value, f in _walk(cfg, ""):
        items = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
        for item in items:
            problem = _problem(item, f.metadata["range"])
            if problem is None:
                continue
            shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            where = f"{key}={shown}".replace(" ", "")
            if len(items) > 1 or isinstance(value, ListConfig):
                problem = f"has the entry {item} that {problem.replace('is ', 'is ', 1)}"
            example = _example(f)
            fix = f"; set e.g. {key}={example}" if example is not None else ""
            raise ConfigError(f"{where} {problem}{fix}")
