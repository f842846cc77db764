"""The `eebert` command line. Known errors print one line and a hint; EEBERT_DEBUG=1 shows tracebacks."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from . import __version__
from .scoring.threshold_search import CalibrationConfig
from .core.checks import validate
from .train.loop import AttachConfig
from .scoring.benchmark import BenchmarkConfig
from .core.configs import from_dict, help_for
from .recipe import Recipe
from .data import DataConfig
from .model.device import DeviceConfig, resolve
from .core.errors import EebertError
from .gates import GateConfig
from .deploy.serve.config import ServeConfig
from .train.loop import TrainConfig
from .core.ui import UI, err, out

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a deployed transformer classifier faster by early exiting (backbone frozen).")

JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout (for CI).")


def debug() -> bool:
    return os.environ.get("EEBERT_DEBUG", "") not in ("", "0")


def fail(message: str, hint: str | None = None) -> None:
    from rich.markup import escape  # messages quote user input and TOML ("[a, b]"): never markup

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {escape(hint)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def command(fn):
    """Turn known failures into one line plus a hint; EEBERT_DEBUG=1 re-raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:  # a chosen exit status (3: expectations not met), not a failure
            raise
        except EebertError as e:
            if debug():
                raise
            fail(e.message, e.hint)
        except KeyboardInterrupt:
            fail("interrupted", "nothing was written; artifacts are replaced only when complete")
        except (OSError, RuntimeError, ValueError) as e:
            if debug():
                raise
            fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                 "set EEBERT_DEBUG=1 for the traceback")

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
    from .recipe import load_recipe

    return load_recipe(config)


def given(obj, **flags):
    """A copy of dataclass ``obj`` with the flags that were given (not None), every field validated."""
    return validate(dataclasses.replace(obj, **{k: v for k, v in flags.items() if v is not None}), "",
                    flag_style=True)


def data_opts(base: DataConfig | None, data, text_column, pair_column, label_column, max_samples,
              data_config=None, split_map=None, tokens_column=None, tags_column=None) -> DataConfig | None:
    """Data settings: the recipe's (if any) with the given flags on top; None = the artifact's own."""
    if data is None and base is None:
        return None
    return given(base or DataConfig(), spec=data, text_column=text_column, pair_column=pair_column,
                 label_column=label_column, max_samples=max_samples, config=data_config,
                 tokens_column=tokens_column, tags_column=tags_column,
                 split_map=_split_map(split_map) if split_map else None)


def data_flags(text_column, pair_column, label_column, max_samples, data_config=None, split_map=None) -> dict:
    """The data flags that were given (values checked), to apply on top of the data an artifact records
    when --data is not given: `calibrate ART --max-samples 500` reads 500 rows of the attach data."""
    flags = {k: v for k, v in dict(text_column=text_column, pair_column=pair_column, label_column=label_column,
                                   max_samples=max_samples, config=data_config,
                                   split_map=_split_map(split_map) if split_map else None).items() if v is not None}
    given(DataConfig(), **flags)
    return flags


def _split_map(value: str) -> dict[str, str]:
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


def _opt(cls: type, name: str, *flags: str, extra: str = ""):
    """An option for dataclass field ``cls.name`` that defaults to "not given"; help shows the real default."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return typer.Option(None, *flags, help=f"{help_for(cls, name)}{extra} (default: {default!r})")


DATA = typer.Option(None, "--data", "-d", help=help_for(DataConfig, "spec"))
TEXT = _opt(DataConfig, "text_column", "--text-column")
PAIR = typer.Option(None, "--pair-column", help=help_for(DataConfig, "pair_column"))
LABEL = _opt(DataConfig, "label_column", "--label-column")
TOKENS = _opt(DataConfig, "tokens_column", "--tokens-column")
TAGS = _opt(DataConfig, "tags_column", "--tags-column")
MAXS = typer.Option(None, "--max-samples", help=help_for(DataConfig, "max_samples"))
DCONF = typer.Option(None, "--data-config", help=help_for(DataConfig, "config"))
DEVICE = _opt(DeviceConfig, "device", "--device")
DTYPE = _opt(DeviceConfig, "dtype", "--dtype")
EXECUTOR = _opt(DeviceConfig, "executor", "--executor", "--engine", extra=" (--engine is its old name)")
RAY_ADDRESS = _opt(DeviceConfig, "ray_address", "--ray-address")


def device_opts(r: Recipe, device=None, dtype=None, executor=None, ray_address=None) -> DeviceConfig:
    """Where to run: the recipe's [device] with the given flags on top."""
    return given(r.device, device=device, dtype=dtype, executor=executor, ray_address=ray_address)
SPLIT_MAP = typer.Option(None, "--split-map", help=help_for(DataConfig, "split_map") + " Comma-separated SPLIT=NAME.")


def _need(value, what: str, flag: str):
    if not value:
        raise EebertError(f"no {what} given", f"pass {flag}, or --config RECIPE that names it")
    return value


def _layers(value: str | None) -> list[int]:
    if not value:
        return []
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise EebertError(f"--layers must be comma-separated layer numbers, got {value!r}", "e.g. --layers 2,4,6") from None


def _params(items: list[str] | None, flag: str) -> dict:
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


@app.command()
@command
def attach(
    checkpoint: Optional[str] = typer.Argument(None, help="Deployed checkpoint directory (a *ForSequenceClassification); default: the recipe's."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Artifact directory to write (a new one, or an artifact to replace); default: the recipe's artifact."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing directory that is not an "
                                   "artifact; only the artifact's own files are replaced, other files are kept."),
    config: Optional[Path] = CONFIG,
    data: Optional[str] = DATA, text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    tokens_column: Optional[str] = TOKENS, tags_column: Optional[str] = TAGS,
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    exits: Optional[str] = _opt(AttachConfig, "exits"),
    layers: Optional[str] = typer.Option(None, help=help_for(AttachConfig, "layers") + " Comma-separated."),
    exit_param: Optional[list[str]] = typer.Option(None, help="Exit head parameter KEY=VALUE (repeatable)."),
    objective: Optional[str] = _opt(AttachConfig, "objective"),
    objective_param: Optional[list[str]] = typer.Option(None, help="Objective parameter KEY=VALUE (repeatable)."),
    bypass: Optional[str] = typer.Option(None, help="Block-wise bypasses feeding the exits: 'badge' (BADGE)."),
    block_size: Optional[int] = typer.Option(None, help="Layers per bypass block (with --bypass; default 2)."),
    gates: Optional[str] = typer.Option(None, help="Layer-skipping gates before the layers: 'smartbert' (SmartBERT)."),
    skip_target: Optional[float] = _opt(GateConfig, "skip_target"),
    train_backbone: bool = typer.Option(False, "--train-backbone", help=help_for(GateConfig, "train_backbone") + " Needs --gates."),
    gate_param: Optional[list[str]] = typer.Option(None, help="Gate knob KEY=VALUE (repeatable), e.g. epochs=2; see docs/methods/smartbert.md."),
    contrastive: Optional[float] = _opt(TrainConfig, "contrastive"),
    no_labels: bool = typer.Option(False, "--no-labels", help="Ignore gold labels: learn the deployed model's predictions."),
    max_length: Optional[int] = _opt(AttachConfig, "max_length"),
    epochs: Optional[int] = _opt(TrainConfig, "epochs"),
    lr: Optional[float] = _opt(TrainConfig, "lr"),
    seed: Optional[int] = _opt(TrainConfig, "seed"),
    feature_cache: Optional[str] = _opt(AttachConfig, "feature_cache", "--feature-cache"),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE, executor: Optional[str] = EXECUTOR,
    ray_address: Optional[str] = RAY_ADDRESS,
    as_json: bool = JSON,
):
    """Attach exits to a deployed checkpoint and train them, backbone frozen."""
    from . import steps

    r = recipe_of(config)
    checkpoint = _need(checkpoint or r.checkpoint, "checkpoint", "CHECKPOINT")
    out_dir = Path(_need(out_dir or r.artifact, "artifact directory", "--out"))
    dcfg = data_opts(r.data if config else None, data, text_column, pair_column, label_column, max_samples,
                     data_config, split_map, tokens_column, tags_column)
    if dcfg is None or not dcfg.spec:
        raise EebertError("no data given", "pass --data with a corpus name or a file")
    base = r.attach
    g = from_dict(GateConfig, {**dataclasses.asdict(base.gates), **({"type": gates} if gates else {}),
                               **({"skip_target": skip_target} if skip_target is not None else {}),
                               **({"train_backbone": True} if train_backbone else {}),
                               **_params(gate_param, "--gate-param")}, "--gate-param")
    if g.train_backbone and not g.type:
        raise EebertError("--train-backbone trains the backbone with skipping gates; it needs --gates",
                          "add --gates smartbert, or drop --train-backbone (exits alone never change the backbone)")
    bp = dict(base.bypass)
    if bypass:
        bp = {**bp, "type": bypass}
    if block_size is not None:
        bp = {**bp, "block_size": block_size}
    cfg = given(base, exits=exits, layers=_layers(layers) if layers else None,
                exit_params={**base.exit_params, **_params(exit_param, "--exit-param")},
                objective=objective, objective_params={**base.objective_params, **_params(objective_param, "--objective-param")},
                bypass=bp, gates=g, max_length=max_length, use_labels=False if no_labels else None,
                feature_cache=feature_cache,
                train=given(base.train, epochs=epochs, lr=lr, seed=seed, contrastive=contrastive))
    dev = device_opts(r, device, dtype, executor, ray_address)
    from .recipe import check_components

    check_components(cfg, r.calibrate.criterion, r.calibrate.criterion_params, "attach", checkpoint)
    result = steps.attach(checkpoint, dcfg, cfg, out_dir, UI(quiet=as_json), device=dev, overwrite=overwrite)
    emit(result, as_json)
    if not as_json:
        out.print(f"attached {len(result['exits']['layers'])} {result['exits']['type']} exits "
                  f"(layers {result['exits']['layers']}), trained on {result['examples']} examples "
                  f"({result['targets']}), best epoch {result['best_epoch']} -> {out_dir}")
        if result.get("leco_search"):
            out.print("LECO search chose: " + ", ".join(
                f"layer {l}: {c}" for l, c in result["leco_search"]["choices"].items()))
        weights = (result.get("objective_report") or {}).get("weights")
        if isinstance(weights, dict):
            out.print("learned loss weights: " + ", ".join(f"{k} {v:.3f}" for k, v in weights.items()))
        if result.get("bypass"):
            b = result["bypass"]
            out.print(f"bypasses: {b['blocks']} blocks, {100 * b['overhead_per_layer']:.2f}% of a layer's FLOPs per exit")
        if result.get("gates"):
            last = result["gates"]["history"][-1]
            out.print(f"gates: {len(result['exits']['gates']['layers'])} gated layers, held-out skip rate "
                      f"{100 * last.get('skip_rate', last['train_skip_rate']):.1f}%"
                      + (", backbone trained (weights in the artifact)" if result["backbone_trained"] else ""))


@app.command()
@command
def calibrate(
    artifact: Optional[Path] = typer.Argument(None, help="Artifact directory from `eebert attach`; default: the recipe's."),
    config: Optional[Path] = CONFIG,
    target_speedup: Optional[float] = typer.Option(None, help=help_for(CalibrationConfig, "target_speedup")),
    max_drop: Optional[float] = typer.Option(None, help=help_for(CalibrationConfig, "max_drop")),
    unlabeled: Optional[str] = typer.Option(None, "--unlabeled", help=help_for(CalibrationConfig, "unlabeled")),
    criterion: Optional[str] = _opt(CalibrationConfig, "criterion"),
    criterion_param: Optional[list[str]] = typer.Option(None, help="Criterion parameter KEY=VALUE (repeatable)."),
    global_only: bool = typer.Option(False, "--global-threshold", help="One threshold for all exits (no per-exit refinement)."),
    gate_threshold: Optional[list[float]] = typer.Option(None, help=help_for(CalibrationConfig, "gate_thresholds") + " Repeatable."),
    metric: Optional[str] = _opt(BenchmarkConfig, "metric", "--metric"),
    data: Optional[str] = DATA, text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    tokens_column: Optional[str] = TOKENS, tags_column: Optional[str] = TAGS,
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    quantize: Optional[str] = typer.Option(None, help="Calibrate on a dynamically quantized backbone (int8); "
                                           "benchmark and predict then load it quantized too."),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    token_exit: bool = typer.Option(False, "--token-exit", help="Taggers: choose the per-token exit's threshold by "
                                    "running that pass on validation (CPU); the per-sentence thresholds stay."),
    as_json: bool = JSON,
):
    """Choose exit thresholds on the validation split for a target speedup or accuracy budget."""
    from . import steps

    r = recipe_of(config)
    artifact = Path(_need(artifact or r.artifact, "artifact", "ARTIFACT"))
    base = r.calibrate
    if target_speedup is not None or max_drop is not None:  # a budget flag replaces the recipe's budget
        base = dataclasses.replace(base, target_speedup=None, max_drop=None)
    cfg = given(base, criterion=criterion, target_speedup=target_speedup, max_drop=max_drop, unlabeled=unlabeled,
                per_layer=False if global_only else None, gate_thresholds=gate_threshold or None,
                criterion_params={**base.criterion_params, **_params(criterion_param, "--criterion-param")})
    metric = given(r.benchmark, metric=metric).metric or None
    dcfg = data_opts(r.data if config else None, data, text_column, pair_column, label_column, max_samples,
                     data_config, split_map, tokens_column, tags_column)
    result = steps.calibrate(artifact, dcfg, cfg, UI(quiet=as_json), device=device_opts(r, device, dtype),
                             backbone=backbone, quantize=quantize, metric=metric,
                             data_flags=data_flags(text_column, pair_column, label_column, max_samples,
                                                   data_config, split_map), token_exit=token_exit).to_dict()
    if token_exit:
        te = result["token_exit"]
        emit({k: v for k, v in te.items() if k != "curve"}, as_json)
        if not as_json:
            v = te["validation"]
            out.print(f"per-token exit: a word halts at p >= {te['threshold']}; validation {v['speedup_flops']:.2f}x "
                      f"FLOPs speedup, entity F1 {100 * v['entity_f1']:.2f} vs deployed "
                      f"{100 * v['reference_entity_f1']:.2f}; written to {artifact}/calibration.json")
        return
    head = result["headline_metric"]
    emit({k: v for k, v in result.items() if k not in ("curve", "curves")}, as_json)
    if not as_json:
        v, m = result["validation"], result["metric"]
        from .tasks import get as get_task

        fmt = get_task(result.get("task")).format
        extra = ""
        mv = v.get("metrics", {})
        if head != m and mv.get(head) is not None:
            extra = f", {head} {fmt(mv[head])} vs deployed {fmt(mv['deployed_' + head])}"
        margin = result.get("margin")
        if margin and "bound_points" in margin:
            extra += (f"; drop bound {margin['bound_points']:.2f} points = disagreement with the deployed model "
                      f"{margin['disagreement_points']:.2f} + margin {margin['points']:.2f} "
                      f"({100 * margin['confidence']:.0f}% z*SE over {margin['rows']['validation']:,} validation + "
                      f"{margin['rows']['unlabeled']:,} unlabeled rows)")
        elif margin:
            extra += (f"; --max-drop kept with a {margin['points']:.2f}-point margin "
                      f"({100 * margin['confidence']:.0f}% z*SE bound on labelled validation rows)")
        out.print(f"{result['criterion']}: validation {v['speedup_flops']:.2f}x FLOPs speedup "
                  f"(95% CI at the chosen thresholds {v['speedup_ci95'][0]:.2f}-{v['speedup_ci95'][1]:.2f}), "
                  f"{m} {fmt(v[m])} vs deployed {fmt(v['deployed_' + m])}{extra}; "
                  f"thresholds written to {artifact}/calibration.json")
        for w in result["warnings"]:
            err.print(f"[yellow]warning:[/] {w}")


@app.command()
@command
def benchmark(
    artifact: Optional[Path] = typer.Argument(None, help="Calibrated artifact directory; default: the recipe's."),
    config: Optional[Path] = CONFIG,
    data: Optional[str] = DATA, text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    tokens_column: Optional[str] = TOKENS, tags_column: Optional[str] = TAGS,
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    split: Optional[str] = _opt(BenchmarkConfig, "split"),
    timing_samples: Optional[int] = _opt(BenchmarkConfig, "timing_samples"),
    repeats: Optional[int] = _opt(BenchmarkConfig, "repeats"),
    threads: Optional[int] = _opt(BenchmarkConfig, "threads"),
    metric: Optional[str] = _opt(BenchmarkConfig, "metric", "--metric"),
    batch_size: Optional[int] = _opt(BenchmarkConfig, "timing_batch_size", "--batch-size"),
    runtime: Optional[str] = _opt(BenchmarkConfig, "runtime", "--runtime", "--engine", extra=" (--engine is its old name)"),
    onnx_dir: Optional[str] = typer.Option(None, "--onnx", help=help_for(BenchmarkConfig, "onnx_dir")),
    ort_pool: Optional[str] = _opt(BenchmarkConfig, "ort_pool", "--ort-pool"),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    as_json: bool = JSON,
):
    """Compare the early-exit model with the deployed model, static truncation and the oracle."""
    r = recipe_of(config)
    artifact = Path(_need(artifact or r.artifact, "artifact", "ARTIFACT"))
    if batch_size is not None and batch_size < 1:
        raise EebertError(f"--batch-size must be at least 1, got {batch_size}", "for example --batch-size 32")
    cfg = given(r.benchmark, split=split, timing_samples=timing_samples, repeats=repeats, threads=threads,
                timing_batch_size=batch_size, runtime=runtime, onnx_dir=onnx_dir, metric=metric, ort_pool=ort_pool)
    from . import steps

    report = steps.benchmark(artifact, data_opts(r.data if config else None, data, text_column, pair_column,
                                                 label_column, max_samples, data_config, split_map,
                                                 tokens_column, tags_column),
                             cfg, UI(quiet=as_json), device=device_opts(r, device, dtype), backbone=backbone,
                             data_flags=data_flags(text_column, pair_column, label_column, max_samples,
                                                   data_config, split_map))
    _print_report(artifact, report, as_json)
    emit(report, as_json)


def _print_report(artifact: Path, report: dict, quiet: bool) -> None:
    if not quiet:
        from .scoring.report import table

        out.print(table(report))
        out.print(f"report written to {artifact}/report.json and report.md")


@app.command()
@command
def export(
    artifact: Optional[Path] = typer.Argument(None, help="Calibrated artifact directory; default: the recipe's."),
    config: Optional[Path] = CONFIG,
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (default ARTIFACT/onnx)."),
    quantize: Optional[str] = typer.Option(None, help="Quantize the graphs with onnxruntime's dynamic int8."),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    as_json: bool = JSON,
):
    """Export the early-exit model as ONNX segment graphs, the one-graph early exit where the criterion allows
    (early-exit.onnx), and the deployed model, for onnxruntime."""
    from . import steps

    artifact = Path(_need(artifact or recipe_of(config).artifact, "artifact", "ARTIFACT"))
    result = steps.export(artifact, out_dir, quantize, backbone)
    emit(result, as_json)
    if not as_json:
        fused = ", the whole forward as one graph (early-exit.onnx)" if result.get("fused") else ""
        out.print(f"exported {result['segments']} segment graphs (exits {result['exported_exits']}){fused} and the "
                  f"deployed model{' (int8)' if result['quantize'] else ''} -> {result['out']}")


@app.command()
@command
def predict(
    artifact: Path = typer.Argument(..., help="Calibrated artifact directory."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify."),
    config: Optional[Path] = CONFIG,
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="Data file (CSV/TSV/JSONL/parquet) with a text column; streamed in chunks."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write one prediction per input row to this .jsonl/.csv/.parquet file (streamed, atomic: complete or absent); with --executor ray, a folder of parquet parts."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
    text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    batch_size: int = typer.Option(1, help="Examples per forward pass (per-sample exits when > 1)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE, executor: Optional[str] = EXECUTOR,
    ray_address: Optional[str] = RAY_ADDRESS,
    token_threshold: Optional[float] = typer.Option(
        None, help="Taggers: the per-token exit instead of the calibrated per-sentence one; a word halts at the "
                   "first exit whose top tag probability reaches this (CPU, one sentence at a time)."),
    token_exit: bool = typer.Option(False, "--token-exit", help="Taggers: the per-token exit at the threshold "
                                    "`calibrate --token-exit` chose (--token-threshold overrides it)."),
    as_json: bool = JSON,
):
    """Classify texts with the early-exit model."""
    from . import steps

    r = recipe_of(config)
    dcfg = given(r.data, text_column=text_column, pair_column=pair_column)
    dev = device_opts(r, device, dtype, executor, ray_address)
    result = steps.predict(artifact, texts, input_file=input_file, output=output, overwrite=overwrite,
                           text_column=dcfg.text_column, pair_column=dcfg.pair_column, batch_size=batch_size,
                           backbone=backbone, device=dev, ui=UI(quiet=as_json), token_threshold=token_threshold,
                           token_exit=token_exit)
    if "workers" in result:  # an executor's actor pool (ray): a folder of parquet parts
        emit(result, as_json)
        if not as_json:
            out.print(f"predicted {result['rows']} rows on {result['workers']} {dev.executor} workers -> "
                      f"{result['output']}")
        return
    if output is not None:
        emit(result, as_json)
        if not as_json:
            out.print(f"{result['rows']} predictions -> {output} ({result['rows_per_second']} rows/s)")
        return
    rows_out = result["rows"]  # printed whole: for large files use --output
    if as_json:
        emit([{k: v for k, v in row.items() if k != "row"} for row in rows_out], True)
        return
    from rich.table import Table

    if rows_out and "entities" in rows_out[0]:  # a tagger: entity spans per text
        t = Table("entities", "exit layer", "text")
        for row in rows_out:
            t.add_row(", ".join(f"{e['text']} ({e['entity']} {e['score']:.2f})" for e in row["entities"]) or "-",
                      f"{row['exit_layer']}/{result['num_layers']}", row["text"][:70])
        out.print(t)
        return
    t = Table("label", "exit layer", "confidence", "text")
    for row in rows_out:
        text = row.get("text", "")
        t.add_row(row["label"], f"{row['exit_layer']}/{result['num_layers']}", f"{max(row['probs']):.3f}",
                  text[:70] + ("…" if len(text) > 70 else ""))
    out.print(t)


@app.command()
@command
def serve(
    artifact: Path = typer.Argument(..., help=help_for(ServeConfig, "artifact")),
    host: str = typer.Option(ServeConfig.host, help=help_for(ServeConfig, "host")),
    port: int = typer.Option(ServeConfig.port, help=help_for(ServeConfig, "port")),
    runtime: str = typer.Option(ServeConfig.runtime, "--runtime", "--engine",
                                help=help_for(ServeConfig, "runtime") + " (--engine is its old name)"),
    onnx_dir: Optional[str] = typer.Option(None, "--onnx", help=help_for(ServeConfig, "onnx_dir")),
    ort_pool: str = typer.Option(ServeConfig.ort_pool, "--ort-pool", help=help_for(ServeConfig, "ort_pool")),
    device: str = typer.Option(ServeConfig.device, help=help_for(ServeConfig, "device")),
    dtype: str = typer.Option(ServeConfig.dtype, help=help_for(ServeConfig, "dtype")),
    threads: int = typer.Option(ServeConfig.threads, help=help_for(ServeConfig, "threads")),
    deployed: bool = typer.Option(False, "--deployed", help=help_for(ServeConfig, "deployed")),
    max_batch: int = typer.Option(ServeConfig.max_batch, help=help_for(ServeConfig, "max_batch")),
    max_wait_ms: float = typer.Option(ServeConfig.max_wait_ms, help=help_for(ServeConfig, "max_wait_ms")),
    max_queue: int = typer.Option(ServeConfig.max_queue, help=help_for(ServeConfig, "max_queue")),
    max_request_texts: int = typer.Option(ServeConfig.max_request_texts, help=help_for(ServeConfig, "max_request_texts")),
    max_text_chars: int = typer.Option(ServeConfig.max_text_chars, help=help_for(ServeConfig, "max_text_chars")),
    max_body_bytes: int = typer.Option(ServeConfig.max_body_bytes, help=help_for(ServeConfig, "max_body_bytes")),
    api_key_env: Optional[str] = typer.Option(None, help=help_for(ServeConfig, "api_key_env")),
    workers: int = typer.Option(ServeConfig.workers, help=help_for(ServeConfig, "workers")),
    shutdown_timeout_s: float = typer.Option(ServeConfig.shutdown_timeout_s, help=help_for(ServeConfig, "shutdown_timeout_s")),
    backbone: Optional[str] = typer.Option(None, help=help_for(ServeConfig, "backbone")),
):
    """Serve the early-exit model over HTTP with dynamic batching (POST /v1/predict); see docs/serving.md."""
    from .deploy.serve import serve as run_server

    run_server(ServeConfig(artifact=str(artifact), host=host, port=port, runtime=runtime, onnx_dir=onnx_dir or "",
                           ort_pool=ort_pool,
                           device=device, dtype=dtype, threads=threads, deployed=deployed, backbone=backbone or "",
                           max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                           max_request_texts=max_request_texts, max_text_chars=max_text_chars,
                           max_body_bytes=max_body_bytes, api_key_env=api_key_env or "", workers=workers,
                           shutdown_timeout_s=shutdown_timeout_s))


@app.command()
@command
def run(recipe: Optional[Path] = typer.Argument(None, help="Recipe file (TOML), see recipes/."),
        config: Optional[Path] = CONFIG, as_json: bool = JSON,
        overwrite: bool = typer.Option(False, "--overwrite", help="Let the recipe's artifact go into an existing "
                                       "directory that is not an artifact (other files are kept)."),
        device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE):
    """Attach, calibrate and benchmark as a recipe says; exit 3 when its [expect] table is not met."""
    from . import steps
    from .recipe.expect import EXPECTATIONS_FAILED, check, table
    from .recipe import load_recipe, recipe_kind

    recipe = _need(recipe or config, "recipe", "RECIPE")
    if recipe_kind(recipe) == "compare":  # one verb runs every shipped recipe
        return compare(recipe, None, as_json, device, dtype)
    r = load_recipe(recipe)  # validated whole, components built: nothing runs on a bad recipe
    dev = device_opts(r, device, dtype)
    ui = UI(quiet=as_json)
    ui.log(f"[bold]attach[/] {r.checkpoint} -> {r.artifact} ({resolve(dev).describe()})")
    attached = steps.attach(r.checkpoint, r.data, r.attach, r.artifact, ui, device=dev, overwrite=overwrite)
    ui.log(f"[bold]calibrate[/] {r.calibrate.criterion}")
    # the same calls as `eebert calibrate --config R` and `eebert benchmark --config R`
    calibration = steps.calibrate(r.artifact, r.data, r.calibrate, ui, device=dev, metric=r.benchmark.metric or None)
    ui.log(f"[bold]benchmark[/] on {r.benchmark.split}")
    report = steps.benchmark(r.artifact, r.data, r.benchmark, ui, device=dev)
    _print_report(Path(r.artifact), report, as_json)
    verdict = check(r.expect, report) if r.expect.any() else None
    emit({"attach": attached, "calibration": calibration.summary(), "report": report, "expectations": verdict},
         as_json)
    if verdict is not None:
        if not as_json:
            out.print(table(verdict))
        if not verdict["passed"]:
            failed = [c["name"] for c in verdict["checks"] if not c["passed"]]
            err.print(f"[bold red]expectations not met:[/] {', '.join(failed)}", highlight=False)
            raise typer.Exit(EXPECTATIONS_FAILED)


@app.command("validate")
@command
def validate_recipe(recipe: Path = typer.Argument(..., help="Recipe file (TOML) to check."), as_json: bool = JSON):
    """Check a recipe without running it: every key, value and component (built with its params)."""
    from .recipe import check_components, check_sources, load_recipe, recipe_kind

    if recipe_kind(recipe) == "compare":
        from .recipe.compare import load_compare_recipe

        r, methods = load_compare_recipe(recipe)  # builds each method's components
        notes = check_sources(r.checkpoint, r.data.spec, None)
        rows = [{"name": m.name, **check_components(m.attach, m.criterion, m.criterion_params, m.name, r.checkpoint)}
                for m in methods]
        result = {"recipe": str(recipe), "kind": "compare", "valid": True, "methods": rows}
    else:
        r = load_recipe(recipe)
        notes = check_sources(r.checkpoint, r.data.spec, r.device)
        rows = [{"name": "pipeline", **check_components(r.attach, r.calibrate.criterion, r.calibrate.criterion_params,
                                                        recipe.name, r.checkpoint)}]
        result = {"recipe": str(recipe), "kind": "pipeline", "valid": True, "methods": rows,
                  "expect": {k: v for k, v in dataclasses.asdict(r.expect).items() if v is not None}}
    result.update(notes)
    if as_json:
        emit(result, True)
        return
    from rich.markup import escape

    for line in notes["skipped"]:
        err.print(f"[dim]skipped:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in notes["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    from rich.table import Table

    t = Table("method", "exits", "objective", "criterion", "gates", title=f"{recipe}: valid")
    for row in rows:
        t.add_row(row["name"], row["exits"], row["objective"], row["criterion"], row.get("gates", "-"))
    out.print(t)


@app.command()
@command
def compare(recipe: Optional[Path] = typer.Argument(None, help="Compare recipe (TOML), see recipes/compare-*.toml."),
            config: Optional[Path] = CONFIG, as_json: bool = JSON,
            device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
            resume: bool = typer.Option(False, "--resume", help="Keep the methods compare.json already holds "
                                        "for this checkpoint, recipe and eebert version, and the seeds a stopped "
                                        "method finished; run the rest."),
            only: Optional[str] = typer.Option(None, "--methods", help="Run only these methods (comma-separated "
                                               "names); keep the others' rows from compare.json as --resume does.")):
    """Train and calibrate several method combinations on one checkpoint and data set; one table."""
    from .recipe.compare import load_compare_recipe, run_compare, table, write

    r, methods = load_compare_recipe(_need(recipe or config, "recipe", "RECIPE"))
    r.device = given(r.device, device=device, dtype=dtype)
    resolve(r.device)  # a device that is not there fails before anything loads
    names = [n.strip() for n in only.split(",") if n.strip()] if only is not None else None
    if names is not None and not names:
        raise EebertError("--methods names no method", "give method names from the recipe, comma-separated")
    report = run_compare(r, methods, UI(quiet=as_json), on_method=lambda partial: write(partial, Path(r.out)),
                         resume=resume, only=names)
    write(report, Path(r.out))
    emit(report, as_json)
    if not as_json:
        out.print(table(report))
        out.print(f"report written to {r.out}/compare.json and compare.md")


@app.command("list")
@command
def list_components(as_json: bool = JSON):
    """List the registered exit heads, criteria, objectives, skipping gates and backbones."""
    from .backbones import BACKBONES
    from .criteria import CRITERIA
    from .exits import EXITS
    from .gates import GATES
    from .objectives import OBJECTIVES

    import inspect

    def describe(reg, positional: int = 0):
        items = {}
        for name in reg.names():
            cls = reg.get(name)
            params = {k: (None if p.default is inspect.Parameter.empty else p.default)
                      for k, p in reg.declared(name, positional).items()}  # what build accepts
            # a class's own docstring first (modules holding several components), else its module's
            doc = (cls.__dict__.get("__doc__") or inspect.getmodule(cls).__doc__ or "").strip().splitlines()[0]
            items[name] = {"params": params, "about": doc}
        return items

    result = {"exits": describe(EXITS, 1), "criteria": describe(CRITERIA), "objectives": describe(OBJECTIVES),
              "gates": describe(GATES, 2), "backbones": {n: {"model_types": list(BACKBONES.get(n).model_types)} for n in BACKBONES.names()}}
    if as_json:
        emit(result, True)
        return
    from rich.table import Table

    for kind in ("exits", "criteria", "objectives", "gates"):
        t = Table("name", "parameters", "about", title=kind)
        for name, d in result[kind].items():
            t.add_row(name, ", ".join(f"{k}={v}" for k, v in d["params"].items()), d["about"])
        out.print(t)
    out.print("backbones: " + ", ".join(t for d in result["backbones"].values() for t in d["model_types"]))


@app.callback(invoke_without_command=True)
def main_callback(version: bool = typer.Option(False, "--version", help="Print the version and exit."),
                  trust_remote_code: bool = typer.Option(
                      False, "--trust-remote-code",
                      help="Allow checkpoints that ship their own modelling code to run it (off by default).")):
    if trust_remote_code:
        from .model.checkpoint import TRUST_REMOTE_CODE_ENV

        os.environ[TRUST_REMOTE_CODE_ENV] = "1"
    if version:
        out.print(f"eebert {__version__}")
        raise typer.Exit()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    app()


if __name__ == "__main__":
    main()
