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
from .calibrate import CalibrationConfig
from .config import AttachConfig, BenchmarkConfig, from_dict, help_for
from .data import DataConfig
from .device import DeviceConfig, resolve
from .errors import EebertError
from .gates import GateConfig
from .train import TrainConfig
from .ui import UI, err, out

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a deployed transformer classifier faster by early exiting (backbone frozen).")

JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout (for CI).")


def debug() -> bool:
    return os.environ.get("EEBERT_DEBUG", "") not in ("", "0")


def fail(message: str, hint: str | None = None) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {hint}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def command(fn):
    """Turn known failures into one line plus a hint; EEBERT_DEBUG=1 re-raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
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


def data_opts(data, text_column, pair_column, label_column, max_samples) -> DataConfig | None:
    if data is None:
        return None
    return DataConfig(spec=data, text_column=text_column, pair_column=pair_column,
                      label_column=label_column, max_samples=max_samples)


DATA = typer.Option(None, "--data", "-d", help=help_for(DataConfig, "spec"))
TEXT = typer.Option("text", "--text-column", help=help_for(DataConfig, "text_column"))
PAIR = typer.Option(None, "--pair-column", help=help_for(DataConfig, "pair_column"))
LABEL = typer.Option("label", "--label-column", help=help_for(DataConfig, "label_column"))
MAXS = typer.Option(None, "--max-samples", help=help_for(DataConfig, "max_samples"))
DEVICE = typer.Option(DeviceConfig.device, "--device", help=help_for(DeviceConfig, "device"))
DTYPE = typer.Option(DeviceConfig.dtype, "--dtype", help=help_for(DeviceConfig, "dtype"))
RUN_ENGINE = typer.Option(DeviceConfig.engine, "--engine", help=help_for(DeviceConfig, "engine"))
RAY_ADDRESS = typer.Option(DeviceConfig.ray_address, "--ray-address", help=help_for(DeviceConfig, "ray_address"))


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
    checkpoint: str = typer.Argument(..., help="Deployed checkpoint directory (a *ForSequenceClassification)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Artifact directory to write."),
    data: Optional[str] = DATA, text_column: str = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    exits: str = typer.Option("mean-mlp", help=help_for(AttachConfig, "exits")),
    layers: Optional[str] = typer.Option(None, help=help_for(AttachConfig, "layers") + " Comma-separated."),
    exit_param: Optional[list[str]] = typer.Option(None, help="Exit head parameter KEY=VALUE (repeatable)."),
    objective: str = typer.Option("ce-distil", help=help_for(AttachConfig, "objective")),
    objective_param: Optional[list[str]] = typer.Option(None, help="Objective parameter KEY=VALUE (repeatable)."),
    bypass: Optional[str] = typer.Option(None, help="Block-wise bypasses feeding the exits: 'badge' (BADGE)."),
    block_size: int = typer.Option(2, help="Layers per bypass block (with --bypass)."),
    gates: Optional[str] = typer.Option(None, help="Layer-skipping gates before the layers: 'smartbert' (SmartBERT)."),
    skip_target: float = typer.Option(GateConfig.skip_target, help=help_for(GateConfig, "skip_target")),
    train_backbone: bool = typer.Option(False, "--train-backbone", help=help_for(GateConfig, "train_backbone") + " Needs --gates."),
    gate_param: Optional[list[str]] = typer.Option(None, help="Gate knob KEY=VALUE (repeatable), e.g. epochs=2; see docs/methods/smartbert.md."),
    contrastive: float = typer.Option(0.0, help=help_for(TrainConfig, "contrastive")),
    no_labels: bool = typer.Option(False, "--no-labels", help="Ignore gold labels: learn the deployed model's predictions."),
    max_length: int = typer.Option(128, help=help_for(AttachConfig, "max_length")),
    epochs: int = typer.Option(TrainConfig.epochs, help=help_for(TrainConfig, "epochs")),
    lr: float = typer.Option(TrainConfig.lr, help=help_for(TrainConfig, "lr")),
    seed: int = typer.Option(TrainConfig.seed, help=help_for(TrainConfig, "seed")),
    feature_cache: str = typer.Option("", "--feature-cache", help=help_for(AttachConfig, "feature_cache")),
    device: str = DEVICE, dtype: str = DTYPE, engine: str = RUN_ENGINE, ray_address: str = RAY_ADDRESS,
    as_json: bool = JSON,
):
    """Attach exits to a deployed checkpoint and train them, backbone frozen."""
    from .pipeline import attach as run_attach

    dcfg = data_opts(data, text_column, pair_column, label_column, max_samples)
    if dcfg is None:
        raise EebertError("no data given", "pass --data with a corpus name or a file")
    if train_backbone and not gates:
        raise EebertError("--train-backbone trains the backbone with skipping gates; it needs --gates",
                          "add --gates smartbert, or drop --train-backbone (exits alone never change the backbone)")
    cfg = AttachConfig(exits=exits, layers=_layers(layers), exit_params=_params(exit_param, "--exit-param"),
                       objective=objective, objective_params=_params(objective_param, "--objective-param"),
                       bypass={"type": bypass, "block_size": block_size} if bypass else {},
                       gates=from_dict(GateConfig, {"type": gates or "", "skip_target": skip_target,
                                                    "train_backbone": train_backbone,
                                                    **_params(gate_param, "--gate-param")}, "--gate-param"),
                       max_length=max_length, use_labels=not no_labels, feature_cache=feature_cache,
                       train=TrainConfig(epochs=epochs, lr=lr, seed=seed, contrastive=contrastive))
    result = run_attach(checkpoint, dcfg, cfg, out_dir, UI(quiet=as_json),
                        DeviceConfig(device, dtype, engine, ray_address))
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
    artifact: Path = typer.Argument(..., help="Artifact directory from `eebert attach`."),
    target_speedup: Optional[float] = typer.Option(None, help=help_for(CalibrationConfig, "target_speedup")),
    max_drop: Optional[float] = typer.Option(None, help=help_for(CalibrationConfig, "max_drop")),
    criterion: str = typer.Option("entropy", help=help_for(CalibrationConfig, "criterion")),
    criterion_param: Optional[list[str]] = typer.Option(None, help="Criterion parameter KEY=VALUE (repeatable)."),
    global_only: bool = typer.Option(False, "--global-threshold", help="One threshold for all exits (no per-exit refinement)."),
    gate_threshold: Optional[list[float]] = typer.Option(None, help=help_for(CalibrationConfig, "gate_thresholds") + " Repeatable."),
    metric: Optional[str] = typer.Option(None, "--metric", help=help_for(BenchmarkConfig, "metric")),
    data: Optional[str] = DATA, text_column: str = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    quantize: Optional[str] = typer.Option(None, help="Calibrate on a dynamically quantized backbone (int8); "
                                           "benchmark and predict then load it quantized too."),
    device: str = DEVICE, dtype: str = DTYPE,
    as_json: bool = JSON,
):
    """Choose exit thresholds on the validation split for a target speedup or accuracy budget."""
    from .artifact import load_artifact
    from .data import load_data
    from .pipeline import calibrate as run_calibrate, data_config_of

    cfg = CalibrationConfig(criterion=criterion, target_speedup=target_speedup, max_drop=max_drop,
                            per_layer=not global_only,
                            **({"gate_thresholds": gate_threshold} if gate_threshold else {}))
    if (target_speedup is None) == (max_drop is None):
        raise EebertError("give exactly one of --target-speedup and --max-drop", "for example --target-speedup 2.0")
    if target_speedup is not None and target_speedup <= 1.0:
        raise EebertError(f"target speedup must be above 1.0, got {target_speedup}", "for example --target-speedup 2.0")
    from .device import place_artifact
    from .quantize import check_scheme, quantize_model

    quantize = check_scheme(quantize)
    where = resolve(DeviceConfig(device, dtype))
    art = load_artifact(artifact, backbone)
    quantize_model(art.deployed.model, quantize)
    place_artifact(art, where, bool(quantize))
    data_ = load_data(data_config_of(art, data_opts(data, text_column, pair_column, label_column, max_samples)))
    result = run_calibrate(art, data_, cfg, UI(quiet=as_json), _params(criterion_param, "--criterion-param"))
    from .metrics import choose

    head = choose(result.get("task", "classification"), metric).replace("-", "_")
    result["headline_metric"] = head
    if quantize:  # recorded so that benchmark, predict and export load the same backbone
        from .artifact import CALIBRATION, read_json, write_json

        write_json(art.path / CALIBRATION, {**read_json(art.path / CALIBRATION), "quantize": quantize})
        result["quantize"] = quantize
    emit({k: v for k, v in result.items() if k not in ("curve", "curves")}, as_json)
    if not as_json:
        v, m = result["validation"], result["metric"]
        fmt = (lambda x: f"{x:.4f}") if result.get("task") == "regression" else (lambda x: f"{100 * x:.2f}%")
        extra = ""
        mv = v.get("metrics", {})
        if head != m and mv.get(head) is not None:
            extra = f", {head} {fmt(mv[head])} vs deployed {fmt(mv['deployed_' + head])}"
        out.print(f"{result['criterion']}: validation {v['speedup_flops']:.2f}x FLOPs speedup "
                  f"(95% CI {v['speedup_ci95'][0]:.2f}-{v['speedup_ci95'][1]:.2f}), {m} {fmt(v[m])} "
                  f"vs deployed {fmt(v['deployed_' + m])}{extra}; thresholds written to {artifact}/calibration.json")
        for w in result["warnings"]:
            err.print(f"[yellow]warning:[/] {w}")


@app.command()
@command
def benchmark(
    artifact: Path = typer.Argument(..., help="Calibrated artifact directory."),
    data: Optional[str] = DATA, text_column: str = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    split: str = typer.Option("test", help=help_for(BenchmarkConfig, "split")),
    timing_samples: int = typer.Option(500, help=help_for(BenchmarkConfig, "timing_samples")),
    repeats: int = typer.Option(5, help=help_for(BenchmarkConfig, "repeats")),
    threads: int = typer.Option(0, help=help_for(BenchmarkConfig, "threads")),
    metric: str = typer.Option("", "--metric", help=help_for(BenchmarkConfig, "metric")),
    batch_size: int = typer.Option(1, "--batch-size", help=help_for(BenchmarkConfig, "timing_batch_size")),
    engine: str = typer.Option("pytorch", help=help_for(BenchmarkConfig, "engine")),
    onnx_dir: Optional[str] = typer.Option(None, "--onnx", help=help_for(BenchmarkConfig, "onnx_dir")),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    device: str = DEVICE, dtype: str = DTYPE,
    as_json: bool = JSON,
):
    """Compare the early-exit model with the deployed model, static truncation and the oracle."""
    if batch_size < 1:
        raise EebertError(f"--batch-size must be at least 1, got {batch_size}", "for example --batch-size 32")
    cfg = BenchmarkConfig(split=split, timing_samples=timing_samples, repeats=repeats, threads=threads,
                          timing_batch_size=batch_size, engine=engine, onnx_dir=onnx_dir or "", metric=metric)
    report = _benchmark(artifact, data_opts(data, text_column, pair_column, label_column, max_samples), cfg,
                        backbone, as_json, DeviceConfig(device, dtype))
    emit(report, as_json)


def _benchmark(artifact: Path, dcfg: DataConfig | None, cfg: BenchmarkConfig, backbone, quiet: bool,
               device: DeviceConfig | None = None) -> dict:
    from .benchmark import run_benchmark
    from .data import load_data
    from .pipeline import data_config_of
    from .report import table, write_report
    from .runtime import EarlyExitModel

    model = EarlyExitModel.from_artifact(artifact, backbone, device)
    data_ = load_data(data_config_of(model.artifact, dcfg))
    report = run_benchmark(model, data_, cfg, UI(quiet=quiet))
    write_report(Path(artifact), report)
    if not quiet:
        out.print(table(report))
        out.print(f"report written to {artifact}/report.json and report.md")
    return report


@app.command()
@command
def export(
    artifact: Path = typer.Argument(..., help="Calibrated artifact directory."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (default ARTIFACT/onnx)."),
    quantize: Optional[str] = typer.Option(None, help="Quantize the graphs with onnxruntime's dynamic int8."),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    as_json: bool = JSON,
):
    """Export the early-exit model as ONNX segment graphs (+ the deployed model) for onnxruntime."""
    from .onnx_export import export as run_export

    result = run_export(artifact, out_dir, quantize, backbone)
    emit(result, as_json)
    if not as_json:
        out.print(f"exported {result['segments']} segment graphs (exits {result['exported_exits']}) and the "
                  f"deployed model{' (int8)' if result['quantize'] else ''} -> {result['out']}")


@app.command()
@command
def predict(
    artifact: Path = typer.Argument(..., help="Calibrated artifact directory."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="JSONL file with a text field per line."),
    text_column: str = TEXT, pair_column: Optional[str] = PAIR,
    batch_size: int = typer.Option(1, help="Examples per forward pass (per-sample exits when > 1)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    output: Optional[Path] = typer.Option(None, "--output", help="With --engine ray: a folder for the predicted rows "
                                          "(parquet parts, input order); --input must then be a parquet file or folder."),
    device: str = DEVICE, dtype: str = DTYPE, engine: str = RUN_ENGINE, ray_address: str = RAY_ADDRESS,
    as_json: bool = JSON,
):
    """Classify texts with the early-exit model."""
    from .data.files import read_rows
    from .runtime import EarlyExitModel, prediction_row

    dev = DeviceConfig(device, dtype, engine, ray_address)
    if engine == "ray":
        from .ray_engine import predict_ray

        result = predict_ray(artifact, input_file, output, dev, text_column, pair_column, max(1, batch_size), backbone,
                             UI(quiet=as_json))
        emit(result, as_json)
        if not as_json:
            out.print(f"predicted {result['rows']} rows on {result['workers']} Ray workers -> {result['output']}")
        return
    if output is not None:
        raise EebertError("--output is written by --engine ray", "add --engine ray, or drop --output for a table")
    resolve(dev)
    pairs = None
    texts = list(texts or [])
    if input_file is not None:
        if not input_file.is_file():
            raise EebertError(f"input file not found: {input_file}", "give a JSONL file with one object per line")
        rows = read_rows(input_file)
        if rows and text_column not in rows[0]:
            raise EebertError(f"{input_file} has no {text_column!r} field", "name it with --text-column")
        texts += [str(r[text_column]) for r in rows]
        if pair_column:
            pairs = [str(r[pair_column]) for r in rows]
    if not texts:
        raise EebertError("nothing to classify", "pass texts as arguments or --input FILE.jsonl")
    model = EarlyExitModel.from_artifact(artifact, backbone, dev)
    preds = model.predict(texts, pairs, batch_size=max(1, batch_size))
    rows_out = [{"text": t, **prediction_row(p)} for t, p in zip(texts, preds)]
    if as_json:
        emit(rows_out, True)
        return
    from rich.table import Table

    t = Table("label", "exit layer", "confidence", "text")
    for r in rows_out:
        t.add_row(r["label"], f"{r['exit_layer']}/{model.num_layers}", f"{max(r['probs']):.3f}",
                  r["text"][:70] + ("…" if len(r["text"]) > 70 else ""))
    out.print(t)


@app.command()
@command
def run(recipe: Path = typer.Argument(..., help="Recipe file (TOML), see recipes/."),
        device: Optional[str] = typer.Option(None, "--device", help=help_for(DeviceConfig, "device") + " Overrides the recipe's [device]."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help=help_for(DeviceConfig, "dtype") + " Overrides the recipe's [device]."),
        as_json: bool = JSON):
    """Attach, calibrate and benchmark as a recipe says."""
    from .artifact import load_artifact
    from .data import load_data
    from .pipeline import attach as run_attach, calibrate as run_calibrate
    from .recipe import load_recipe, recipe_kind

    if recipe_kind(recipe) == "compare":  # one verb runs every shipped recipe
        return compare(recipe, as_json)
    from .device import place_artifact

    r = load_recipe(recipe)
    dev = dataclasses.replace(r.device, **{k: v for k, v in (("device", device), ("dtype", dtype)) if v})
    where = resolve(dev)
    ui = UI(quiet=as_json)
    ui.log(f"[bold]attach[/] {r.checkpoint} -> {r.artifact} ({where.describe()})")
    attached = run_attach(r.checkpoint, r.data, r.attach, r.artifact, ui, dev)
    ui.log(f"[bold]calibrate[/] {r.calibrate.criterion}")
    art = load_artifact(r.artifact)
    place_artifact(art, where)
    calibration = run_calibrate(art, load_data(r.data), r.calibrate, ui)
    ui.log(f"[bold]benchmark[/] on {r.benchmark.split}")
    report = _benchmark(Path(r.artifact), r.data, r.benchmark, None, as_json, dev)
    emit({"attach": attached, "calibration": {k: v for k, v in calibration.items() if k not in ("curve", "curves")},
          "report": report}, as_json)


@app.command()
@command
def compare(recipe: Path = typer.Argument(..., help="Compare recipe (TOML), see recipes/compare-*.toml."),
            as_json: bool = JSON):
    """Train and calibrate several method combinations on one checkpoint and data set; one table."""
    from .compare import load_compare_recipe, run_compare, table, write

    r, methods = load_compare_recipe(recipe)
    report = run_compare(r, methods, UI(quiet=as_json), on_method=lambda partial: write(partial, Path(r.out)))
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

    def describe(reg):
        items = {}
        for name in reg.names():
            cls = reg.get(name)
            sig = inspect.signature(cls.__init__)
            params = {p.name: (None if p.default is inspect.Parameter.empty else p.default)
                      for p in list(sig.parameters.values())[1:] if p.name not in ("dims", "model", "params", "layers")
                      and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
            # a class's own docstring first (modules holding several components), else its module's
            doc = (cls.__dict__.get("__doc__") or inspect.getmodule(cls).__doc__ or "").strip().splitlines()[0]
            items[name] = {"params": params, "about": doc}
        return items

    result = {"exits": describe(EXITS), "criteria": describe(CRITERIA), "objectives": describe(OBJECTIVES),
              "gates": describe(GATES), "backbones": {n: {"model_types": list(BACKBONES.get(n).model_types)} for n in BACKBONES.names()}}
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
        from . import checkpoint

        checkpoint.TRUST_REMOTE_CODE = True
    if version:
        out.print(f"eebert {__version__}")
        raise typer.Exit()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    app()


if __name__ == "__main__":
    main()
