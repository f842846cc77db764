"""What the commands share: the error wrapper (one line and a hint), JSON output, recipe + flag
merging, and the option definitions each flag is declared with once."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

import typer

from ..core.checks import flag_of, validate
from ..core.configs import help_for
from ..recipe import Recipe
from ..data import DataConfig
from ..model.device_config import DeviceConfig
from ..core.errors import EebertError
from ..core.ui import err, out

JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout (for CI).")


def debug() -> bool:
    return os.environ.get("EEBERT_DEBUG", "") not in ("", "0")


def fail(message: str, hint: str | None = None, as_json: bool = False) -> None:
    """The one line and its hint on stderr, exit 1; with --json, the same as one JSON object on stdout too,
    so that a script reading stdout gets an answer (``{"error": ..., "hint": ..., "exit_code": 1}``)."""
    from rich.markup import escape  # messages quote user input and TOML ("[a, b]"): never markup

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {escape(hint)}[/]", highlight=False, soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps({"error": message, "hint": hint, "exit_code": 1}) + "\n")
    raise typer.Exit(1)


def command(fn):
    """Turn known failures into one line plus a hint; EEBERT_DEBUG=1 re-raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except typer.Exit:  # a chosen exit status (3: expectations not met), not a failure
            raise
        except EebertError as e:
            if debug():
                raise
            fail(e.message, e.hint, as_json)
        except KeyboardInterrupt:
            fail("interrupted", "nothing was written; artifacts are replaced only when complete", as_json)
        except (OSError, RuntimeError, ValueError) as e:
            if debug():
                raise
            fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                 "set EEBERT_DEBUG=1 for the traceback", as_json)
        except Exception as e:  # a bug of eebert's: still one line (writes are atomic, nothing half-done is left)
            if debug():
                raise
            fail(f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                 "a bug in eebert: rerun with EEBERT_DEBUG=1 and report the traceback", as_json)

    return wrapper


def emit(result: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")


# Settings come from the dataclasses' defaults, then a recipe (--config), then flags: options default
# to None ("not given") so that each default is written once, in its dataclass.
CONFIG = typer.Option(None, "--config", "-c", help="Recipe (TOML) to take settings from; flags override it.")


def recipe_of(config: Path | None) -> Recipe:
    """The recipe named by --config (validated whole), or every default."""
    if config is None:
        return Recipe()
    from ..recipe import load_recipe

    return load_recipe(config)


def given(obj, **flags):
    """A copy of dataclass ``obj`` with the flags that were given (not None), every field validated."""
    return validate(dataclasses.replace(obj, **{k: v for k, v in flags.items() if v is not None}), "",
                    flag_style=True)


def data_flags(text_column=None, pair_column=None, label_column=None, max_samples=None, data_config=None,
               split_map=None, tokens_column=None, tags_column=None) -> dict:
    """The data flags that were given (values checked), as DataConfig fields: on top of --data, of a recipe's
    [data], or of the data an artifact records when --data is not given (`calibrate ART --max-samples 500`
    reads 500 rows of the attach data)."""
    flags = {k: v for k, v in dict(text_column=text_column, pair_column=pair_column, label_column=label_column,
                                   max_samples=max_samples, config=data_config, tokens_column=tokens_column,
                                   tags_column=tags_column,
                                   split_map=parse_split_map(split_map) if split_map else None).items() if v is not None}
    given(DataConfig(), **flags)
    return flags


def data_opts(base: DataConfig | None, data: str | None, flags: dict) -> DataConfig | None:
    """Data settings: the recipe's (if any) or --data, with the given ``flags`` on top; None = the artifact's
    own (the flags then go on top of it)."""
    if data is None and base is None:
        return None
    return given(base or DataConfig(), spec=data, **flags)


def parse_split_map(value: str) -> dict[str, str]:
    """``train=train,validation=dev`` -> {"train": "train", "validation": "dev"}."""
    out_: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, name = (x.strip() for x in item.partition("="))
        if not sep or not key or not name:
            raise EebertError(f"--split-map takes SPLIT=NAME pairs, got {item.strip()!r}",
                              "e.g. --split-map validation=dev,test=eval")
        out_[key] = name
    return out_


#: flag -> the config fields it sets, as the options below declare them (read by ``in_recipe_terms``)
FLAG_FIELDS: dict[str, set[tuple[type, str]]] = {}


def field_option(cls: type, name: str, *flags: str, extra: str = "", default_flag: bool = True):
    """An option for dataclass field ``cls.name`` that defaults to "not given"; help shows the real default.
    Without ``flags``, the flag is the one the field declares (``flag_of``), as the parameter is named."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    flags = flags or ((f.metadata["flag"],) if f.metadata.get("flag") else ())  # the flag the field declares
    shown = f" (default: {default!r})" if default_flag else ""
    return field_flag(cls, name, typer.Option(None, *flags, help=f"{help_for(cls, name)}{extra}{shown}"),
                      flags[0] if flags else None)


def field_flag(cls: type, name: str, option, flag: str | None = None):
    """``option`` for field ``cls.name``, registered under ``flag`` (default: the one the field declares,
    ``flag_of``): a refusal naming that flag under ``run`` then names the field's recipe key too. Options made
    by hand (a bool its flag turns off, KEY=VALUE pairs) call it directly; ``field_option`` through it."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    FLAG_FIELDS.setdefault(flag or flag_of(f), set()).add((cls, name))
    return option


def recipe_keys(root: type, prefix: str = "") -> dict[tuple[type, str], list[str]]:
    """(config class, field) -> the key(s) that set it in a recipe of type ``root`` (``calibrate.runtime``)."""
    out: dict[tuple[type, str], list[str]] = {}
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            for k, v in recipe_keys(hints[f.name], key + ".").items():
                out.setdefault(k, []).extend(v)
        else:
            out.setdefault((root, f.name), []).append(key)
    return out


@contextlib.contextmanager
def recipe_terms(root: type, own: tuple[str, ...]):
    """Refusals raised inside name the recipe key of each flag they name (:func:`in_recipe_terms`)."""
    try:
        yield
    except EebertError as e:
        named = in_recipe_terms(e, root, own)
        if named is e:
            raise
        raise named from e


def in_recipe_terms(e: EebertError, root: type, own: tuple[str, ...]) -> EebertError:
    """A refusal raised under a recipe (`run`, `compare`) with the recipe key of each flag it names: those
    commands take settings from the recipe, not from the flags the steps' messages name (``own``: the flags
    the command itself has)."""
    keys = recipe_keys(root)
    notes = []
    for flag in dict.fromkeys(re.findall(r"--[a-z][a-z0-9-]*", f"{e.message} {e.hint or ''}")):
        where = sorted({k for field in FLAG_FIELDS.get(flag, ()) for k in keys.get(field, [])})
        if flag not in own and where:
            notes.append(f"{flag} is {' or '.join(where)}")
    if not notes:
        return e
    return EebertError(e.message, f"{e.hint + ' ' if e.hint else ''}(in the recipe: {'; '.join(notes)})")


DATA = field_option(DataConfig, "spec", "--data", "-d", default_flag=False)
TEXT = field_option(DataConfig, "text_column", "--text-column")
PAIR = field_option(DataConfig, "pair_column", default_flag=False)
LABEL = field_option(DataConfig, "label_column", "--label-column")
TOKENS = field_option(DataConfig, "tokens_column", "--tokens-column")
TAGS = field_option(DataConfig, "tags_column", "--tags-column")
MAXS = field_option(DataConfig, "max_samples", default_flag=False)
DCONF = field_option(DataConfig, "config", default_flag=False)
DEVICE = field_option(DeviceConfig, "device", "--device")
DTYPE = field_option(DeviceConfig, "dtype", "--dtype")
EXECUTOR = field_option(DeviceConfig, "executor", "--executor", "--engine", extra=" (--engine is its old name)")
RAY_ADDRESS = field_option(DeviceConfig, "ray_address", "--ray-address")
SPLIT_MAP = field_option(DataConfig, "split_map", extra=" Comma-separated SPLIT=NAME.", default_flag=False)


def device_opts(r: Recipe, device=None, dtype=None, executor=None, ray_address=None) -> DeviceConfig:
    """Where to run: the recipe's [device] with the given flags on top."""
    return given(r.device, device=device, dtype=dtype, executor=executor, ray_address=ray_address)


def need(value, what: str, flag: str):
    if not value:
        raise EebertError(f"no {what} given", f"pass {flag}, or --config RECIPE that names it")
    return value


def parse_layers(value: str | None) -> list[int]:
    if not value:
        return []
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise EebertError(f"--layers must be comma-separated layer numbers, got {value!r}", "e.g. --layers 2,4,6") from None


def parse_params(items: list[str] | None, flag: str) -> dict:
    out_: dict = {}
    for item in items or []:
        if "=" not in item:
            raise EebertError(f"{flag} takes KEY=VALUE, got {item!r}", f"e.g. {flag} width=128")
        k, v = item.split("=", 1)
        try:
            out_[k] = json.loads(v)
        except json.JSONDecodeError:
            out_[k] = v
    return out_

def print_report(artifact: Path, report: dict, quiet: bool) -> None:
    if not quiet:
        from ..scoring.report import table

        out.print(table(report))
        out.print(f"report written to {artifact}/report.json and report.md")
