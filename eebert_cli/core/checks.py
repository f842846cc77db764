"""Value checks shared by recipes, flags and component parameters: types, ranges, NaN.

One place decides what a well-formed value is, so a recipe key, its flag and a
component parameter fail with the same one line. Ranges are declared next to
what they constrain: ``field(metadata={"min": 1})`` on config dataclasses,
``bounds`` on component classes (see :mod:`eebert_cli.core.registry`).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Any, Iterable

from .errors import EebertError


def closest(name: str, known: Iterable[str]) -> str:
    """A hint naming the closest known name, else all of them."""
    known = sorted(known)
    near = _nearest(str(name), known)
    return f"did you mean {near!r}? known: {', '.join(known)}" if near else f"known: {', '.join(known) or '(none)'}"


def _nearest(name: str, known: list[str]) -> str | None:
    """The known name a typo most likely meant, or None: the same name in other case, one it begins (the
    short form of a long name: 'onnx' for 'onnxruntime'), else a close spelling. The cutoff is difflib's
    own 0.6: at 0.5 a word unlike every name ('nope') was still "meant" as one of them."""
    low = {k.lower(): k for k in known}
    if name.lower() in low:
        return low[name.lower()]
    starts = [k for k in known if len(name) >= 3 and k.lower().startswith(name.lower())]
    if starts:
        return min(starts, key=len)
    near = difflib.get_close_matches(name.lower(), list(low), n=1, cutoff=0.6)
    return low[near[0]] if near else None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_type(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (ints widen to floats), or EebertError naming ``where``."""
    if tp is Any or tp is object or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return check_type(value, typing.get_args(tp)[0], where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # an optional value: the type's own message says what is wrong
            return check_type(value, real[0], where)
        for opt in options:
            if opt is type(None):
                continue
            try:
                return check_type(value, opt, where)
            except EebertError:
                pass
        raise EebertError(f"{where}: {value!r} has the wrong type",
                          f"expected {' or '.join(_type_name(o) for o in options if o is not type(None))}")
    if origin is list:
        if not isinstance(value, list):
            raise EebertError(f"{where}: expected a list, got {value!r}", "write it as [a, b, ...]")
        (inner,) = typing.get_args(tp) or (Any,)
        return [check_type(v, inner, where) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise EebertError(f"{where}: expected a table, got {value!r}", "write it as a TOML table, {k = v}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise EebertError(f"{where}: expected {tp.__name__}, got {value!r}", TYPE_HINTS[tp])
        if tp is float and not math.isfinite(value):
            raise EebertError(f"{where}: must be a finite number, got {value!r}", "NaN and infinity are not allowed")
    return value


#: what a value of each plain type looks like, for a refusal's hint
TYPE_HINTS = {int: "give a whole number, for example 3", float: "give a number, for example 0.5",
              str: "give text (in a recipe: in quotes)", bool: "give true or false"}


def check_range(value: Any, where: str, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, hint: str | None = None) -> None:
    """Numbers (or each number of a list) within [lo, hi] (open ends with ``*_open``); None passes."""
    if value is None or isinstance(value, bool):
        return
    for v in value if isinstance(value, list) else [value]:
        if not isinstance(v, (int, float)):
            continue
        low = lo is not None and (v <= lo if lo_open else v < lo)
        high = hi is not None and (v >= hi if hi_open else v > hi)
        if low or high:
            raise EebertError(f"{where} must be {span(lo, hi, lo_open, hi_open)}, got {v}",
                              hint or f"for example {value_inside(v, lo, hi, lo_open, hi_open):g}")


def span(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """A range in words and brackets: ">= 1", "above 0.0", "within [0, 1024]" (refusals and --help alike)."""
    if lo is not None and hi is not None:
        return f"within {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'above' if lo_open else '>='} {lo}"
    return f"{'below' if hi_open else '<='} {hi}"


def metadata_span(meta: typing.Mapping) -> str | None:
    """The range a field's metadata declares, as :func:`span` says it, or None."""
    if meta.get("min") is None and meta.get("max") is None:
        return None
    return span(meta.get("min"), meta.get("max"), meta.get("min_open", False), meta.get("max_open", False))


def value_inside(v: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> float:
    """A value inside the range near ``v``, to suggest: the bound it crossed, or one step (1, or half
    the span when that is narrower) inside an open bound."""
    step = 1 if lo is None or hi is None else min(1, (hi - lo) / 2)
    if lo is not None and (v <= lo if lo_open else v < lo):
        return lo + step if lo_open else lo
    return hi - step if hi_open else hi


def check_batch_size(n: int) -> None:
    """``--batch-size`` of `predict` and `benchmark` (a plain flag): at least 1. The CLI checks it before
    torch loads; the predict step again, for callers from Python."""
    check_range(n, "--batch-size", 1, hint="for example --batch-size 32")


def check_metadata(value: Any, meta: typing.Mapping, where: str, default: Any = None) -> None:
    """The range, choices and non-emptiness (``nonempty``: a name) a dataclass field declares in its metadata.
    Out of range, the hint is the field's ``range_hint``, else its ``default`` (a value it is known to take; a
    value next to the bound, such as 1 for a learning rate, read as advice), else a value near the bound crossed."""
    lo, hi, lo_open, hi_open = meta.get("min"), meta.get("max"), meta.get("min_open", False), meta.get("max_open", False)
    check_range(value, where, lo, hi, lo_open, hi_open,
                meta.get("range_hint") or default_example(default, lo, hi, lo_open, hi_open))
    if meta.get("nonempty") and isinstance(value, str) and not value.strip():  # a name: "" names nothing
        raise EebertError(f"{where} is empty", meta.get("range_hint") or (
            f"for example {default} (the default)" if isinstance(default, str) and default else "give a name"))
    choices = meta.get("choices")
    if callable(choices):  # a registry's names, looked up now: the config's module loads without the registry
        choices = choices()
    if choices and value is not None and value not in choices:  # None: an optional field left unset
        raise EebertError(f"{where}: unknown value {value!r}", closest(value, [c for c in choices if c]))  # "": unset


def default_example(default: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                    hi_open: bool = False) -> str | None:
    """The hint "for example D (the default)" for a numeric default inside the range, else None (a sentinel
    default, or none): a refusal's example is then a value the setting is known to take."""
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        return None
    try:
        check_range(default, "", lo, hi, lo_open, hi_open)
    except EebertError:
        return None
    return f"for example {default if isinstance(default, int) else format(default, 'g')} (the default)"


def flag_of(f: Any) -> str | None:
    """The command-line flag of dataclass field ``f``: its ``flag`` metadata where the flag is not the field's
    name (``gate_thresholds`` is set by ``--gate-threshold``; a bool the flag turns off, ``per_layer``, by
    ``--global-threshold``), None where it declares none (a recipe key only), else ``--field-name``."""
    if "flag" in f.metadata:
        return f.metadata["flag"]
    return f"--{f.name.replace('_', '-')}"


def validate(obj: Any, where: str, flag_style: bool = False) -> Any:
    """Check every field of dataclass ``obj`` (recursively): type, NaN, declared range and choices.

    ``where`` prefixes field names in messages: ``recipe.toml: attach.train.epochs``;
    with ``flag_style`` a field is named as its flag (``--epochs``).
    """
    import dataclasses

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = (flag_of(f) or f.name) if flag_style else f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            validate(value, f"{where}.{f.name}" if where else f.name, flag_style)
            continue
        setattr(obj, f.name, check_type(value, hints[f.name], name))
        check_metadata(getattr(obj, f.name), f.metadata, name, f.default)
    return obj


#: the most threads a --threads flag takes: far past any host's cores, short of what exhausts the process's
#: thread limit (the tokenizers' pool panicked at 100,000)
MAX_THREADS = 1024

#: validation examples below which calibration refuses: thresholds and intervals from fewer are noise
MIN_VALIDATION = 10
#: validation examples below which calibration warns (a 95% interval of accuracy is then wider than ~±10 points)
WARN_VALIDATION = 100


def check_validation_size(n: int) -> str | None:
    """Refuse fewer than :data:`MIN_VALIDATION` validation examples; a warning below :data:`WARN_VALIDATION`."""
    if n < MIN_VALIDATION:
        raise EebertError(f"the validation split has {n} examples; calibration needs at least {MIN_VALIDATION}",
                          f"use more validation data (at least {WARN_VALIDATION} for figures worth reporting)")
    if n < WARN_VALIDATION:
        return (f"the validation split has only {n} examples (fewer than {WARN_VALIDATION}): "
                "thresholds and intervals are rough")
    return None
