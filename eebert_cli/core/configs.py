"""Config dataclasses, parsed strictly: one definition of how a recipe table or flags become a config.

Each step's config lives in a light module of its handler's package (``train/config.py``,
``scoring/config.py``, ``gates/config.py``, ``data/spec.py``, ``model/device_config.py``): no torch, so
the CLI builds and checks its flags before any model code loads. Field
``metadata["help"]`` feeds the CLI help; recipes are parsed into the same dataclasses by
:func:`from_dict`, which rejects unknown keys by name and checks declared ranges and choices.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .checks import check_metadata, check_type, closest, metadata_span
from .errors import EebertError


def help_for(cls: type, name: str) -> str:
    """A field's help, with the range it declares (the one its refusal names)."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    bounds = metadata_span(meta)
    return meta.get("help", "") + (f" Range: {bounds.removeprefix('within ')}." if bounds else "")


def from_dict(cls: type, data: dict, where: str = "recipe") -> Any:
    """Build dataclass ``cls`` from a dict, strictly: unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise EebertError(f"{where}: expected a table, got {data!r}", "see recipes/quickstart.toml")
    renamed = getattr(cls, "RENAMED", {})
    for old, new in renamed.items():  # a key from before a rename reads as the new one
        if old in data:
            if new in data:
                raise EebertError(f"{where}: both {old!r} and {new!r} given ({old!r} is the old name of {new!r})",
                                  f"keep {new!r} only")
            data = {**{k: v for k, v in data.items() if k != old}, new: data[old]}
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise EebertError(f"{where}: unknown key {unknown[0]!r}", closest(unknown[0], fields))
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{where}.{name}")
        else:
            kwargs[name] = check_type(value, tp, f"{where}.{name}")
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):  # declared ranges and choices (nested tables checked above)
        if not dataclasses.is_dataclass(hints[f.name]):
            check_metadata(getattr(obj, f.name), f.metadata, f"{where}.{f.name}", f.default)
    return obj


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)
