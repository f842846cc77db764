"""What the commands share: the error wrapper (one line and a hint), JSON output, recipe + flag
merging, and the option definitions each flag is declared with once."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from ..core.checks import validate
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


def field_option(cls: type, name: str, *flags: str, extra: str = ""):
    """An option for dataclass field ``cls.name`` that defaults to "not given"; help shows the real default."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    flags = flags or ((f.metadata["flag"],) if "flag" in f.metadata else ())  # the flag the field declares
    return typer.Option(None, *flags, help=f"{help_for(cls, name)}{extra} (default: {default!r})")


DATA = typer.Option(None, "--data", "-d", help=help_for(DataConfig, "spec"))
TEXT = field_option(DataConfig, "text_column", "--text-column")
PAIR = typer.Option(None, "--pair-column", help=help_for(DataConfig, "pair_column"))
LABEL = field_option(DataConfig, "label_column", "--label-column")
TOKENS = field_option(DataConfig, "tokens_column", "--tokens-column")
TAGS = field_option(DataConfig, "tags_column", "--tags-column")
MAXS = typer.Option(None, "--max-samples", help=help_for(DataConfig, "max_samples"))
DCONF = field_option(DataConfig, "config")
DEVICE = field_option(DeviceConfig, "device", "--device")
DTYPE = field_option(DeviceConfig, "dtype", "--dtype")
EXECUTOR = field_option(DeviceConfig, "executor", "--executor", "--engine", extra=" (--engine is its old name)")
RAY_ADDRESS = field_option(DeviceConfig, "ray_address", "--ray-address")
SPLIT_MAP = typer.Option(None, "--split-map", help=help_for(DataConfig, "split_map") + " Comma-separated SPLIT=NAME.")


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
