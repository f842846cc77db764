"""The `eebert` command line. Known errors print one line and a hint; EEBERT_DEBUG=1 shows tracebacks."""

from __future__ import annotations

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


def data_opts(data, text_column, pair_column, label_column, max_samples, data_config=None,
              split_map=None) -> DataConfig | None:
    if data is None:
        return None
    return DataConfig(spec=data, text_column=text_column, pair_column=pair_column,
                      label_column=label_column, max_samples=max_samples, config=data_config,
                      split_map=_split_map(split_map))


def _split_map(value: str | None) -> dict[str, str]:
    """``train=train,validation=dev`` -> {"train": "train", "validation": "dev"}."""
    out_: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        key, sep, name = (x.strip() for x in item.partition("="))
        if not sep or not key or not name:
            raise EebertError(f"--split-map takes SPLIT=NAME pairs, got {item.strip()!r}",
                              "e.g. --split-map validation=dev,test=eval")
        out_[key] = name
    return out_


DATA = typer.Option(None, "--data", "-d", help=help_for(DataConfig, "spec"))
TEXT = typer.Option("text", "--text-column", help=help_for(DataConfig, "text_column"))
PAIR = typer.Option(None, "--pair-column", help=help_for(DataConfig, "pair_column"))
LABEL = typer.Option("label", "--label-column", help=help_for(DataConfig, "label_column"))
MAXS = typer.Option(None, "--max-samples", help=help_for(DataConfig, "max_samples"))
DCONF = typer.Option(None, "--data-config", help=help_for(DataConfig, "config"))
SPLIT_MAP = typer.Option(None, "--split-map", help=help_for(DataConfig, "split_map") + " Comma-separated SPLIT=NAME.")


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
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
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
    as_json: bool = JSON,
):
    """Attach exits to a deployed checkpoint and train them, backbone frozen."""
    from .attach import attach as run_attach

    dcfg = data_opts(data, text_column, pair_column, label_column, max_samples, data_config, split_map)
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
                       max_length=max_length, use_labels=not no_labels,
                       train=TrainConfig(epochs=epochs, lr=lr, seed=seed, contrastive=contrastive))
    result = run_attach(checkpoint, dcfg, cfg, out_dir, UI(quiet=as_json))
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
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    quantize: Optional[str] = typer.Option(None, help="Calibrate on a dynamically quantized backbone (int8); "
                                           "benchmark and predict then load it quantized too."),
    as_json: bool = JSON,
):
    """Choose exit thresholds on the validation split for a target speedup or accuracy budget."""
    from .artifact import load_artifact
    from .data import load_data
    from .operating_point import calibrate as run_calibrate, check_config
    from .outputs import data_config_of
    from .quantize import check_scheme, quantize_artifact

    cfg = CalibrationConfig(criterion=criterion, target_speedup=target_speedup, max_drop=max_drop,
                            per_layer=not global_only,
                            **({"gate_thresholds": gate_threshold} if gate_threshold else {}))
    check_config(cfg)
    quantize = check_scheme(quantize)
    art = quantize_artifact(load_artifact(artifact, backbone), quantize)  # recorded in calibration.json
    data_ = load_data(data_config_of(art, data_opts(data, text_column, pair_column, label_column, max_samples, data_config, split_map)))
    result = run_calibrate(art, data_, cfg, UI(quiet=as_json), _params(criterion_param, "--criterion-param"),
                           metric=metric).to_dict()
    head = result["headline_metric"]
    emit({k: v for k, v in result.items() if k not in ("curve", "curves")}, as_json)
    if not as_json:
        v, m = result["validation"], result["metric"]
        fmt = (lambda x: f"{x:.4f}") if result.get("task") == "regression" else (lambda x: f"{100 * x:.2f}%")
        extra = ""
        mv = v.get("metrics", {})
        if head != m and mv.get(head) is not None:
            extra = f", {head} {fmt(mv[head])} vs deployed {fmt(mv['deployed_' + head])}"
        margin = result.get("margin")
        if margin:
            extra += (f"; --max-drop kept with a {margin['points']:.2f}-point margin "
                      f"({100 * margin['confidence']:.0f}% z*SE bound)")
        out.print(f"{result['criterion']}: validation {v['speedup_flops']:.2f}x FLOPs speedup "
                  f"(95% CI at the chosen thresholds {v['speedup_ci95'][0]:.2f}-{v['speedup_ci95'][1]:.2f}), "
                  f"{m} {fmt(v[m])} vs deployed {fmt(v['deployed_' + m])}{extra}; "
                  f"thresholds written to {artifact}/calibration.json")
        for w in result["warnings"]:
            err.print(f"[yellow]warning:[/] {w}")


@app.command()
@command
def benchmark(
    artifact: Path = typer.Argument(..., help="Calibrated artifact directory."),
    data: Optional[str] = DATA, text_column: str = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    split: str = typer.Option("test", help=help_for(BenchmarkConfig, "split")),
    timing_samples: int = typer.Option(500, help=help_for(BenchmarkConfig, "timing_samples")),
    repeats: int = typer.Option(5, help=help_for(BenchmarkConfig, "repeats")),
    threads: int = typer.Option(0, help=help_for(BenchmarkConfig, "threads")),
    metric: str = typer.Option("", "--metric", help=help_for(BenchmarkConfig, "metric")),
    batch_size: int = typer.Option(1, "--batch-size", help=help_for(BenchmarkConfig, "timing_batch_size")),
    engine: str = typer.Option("pytorch", help=help_for(BenchmarkConfig, "engine")),
    onnx_dir: Optional[str] = typer.Option(None, "--onnx", help=help_for(BenchmarkConfig, "onnx_dir")),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    as_json: bool = JSON,
):
    """Compare the early-exit model with the deployed model, static truncation and the oracle."""
    if batch_size < 1:
        raise EebertError(f"--batch-size must be at least 1, got {batch_size}", "for example --batch-size 32")
    cfg = BenchmarkConfig(split=split, timing_samples=timing_samples, repeats=repeats, threads=threads,
                          timing_batch_size=batch_size, engine=engine, onnx_dir=onnx_dir or "", metric=metric)
    report = _benchmark(artifact, data_opts(data, text_column, pair_column, label_column, max_samples, data_config, split_map), cfg,
                        backbone, as_json)
    emit(report, as_json)


def _benchmark(artifact: Path, dcfg: DataConfig | None, cfg: BenchmarkConfig, backbone, quiet: bool) -> dict:
    from .benchmark import run_benchmark
    from .data import load_data
    from .outputs import data_config_of
    from .report import table, write_report
    from .runtime import EarlyExitModel

    model = EarlyExitModel.from_artifact(artifact, backbone)
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
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="Data file (CSV/TSV/JSONL/parquet) with a text column; streamed in chunks."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write one prediction per input row to this .jsonl/.csv/.parquet file (streamed, atomic: complete or absent)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
    text_column: str = TEXT, pair_column: Optional[str] = PAIR,
    batch_size: int = typer.Option(1, help="Examples per forward pass (per-sample exits when > 1)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    as_json: bool = JSON,
):
    """Classify texts with the early-exit model."""
    from .predict_file import check_paths, predict_rows, predict_to_file, rows_of
    from .runtime import EarlyExitModel

    if batch_size < 1:
        raise EebertError(f"--batch-size must be at least 1, got {batch_size}", "for example --batch-size 32")
    texts = list(texts or [])
    if output is not None and (input_file is None or texts):
        raise EebertError("--output writes the predictions of an --input file", "give --input FILE, not texts")
    if input_file is not None:
        check_paths(input_file, output, overwrite)
    elif not texts:
        raise EebertError("nothing to classify", "pass texts as arguments or --input FILE")
    model = EarlyExitModel.from_artifact(artifact, backbone)
    ui = UI(quiet=as_json)
    if output is not None:
        summary = predict_to_file(model, input_file, output, text_column, pair_column, batch_size, ui)
        emit(summary, as_json)
        if not as_json:
            out.print(f"{summary['rows']} predictions -> {output} ({summary['rows_per_second']} rows/s)")
        return
    rows_out = rows_of(0, model.predict(texts, None, batch_size), texts) if texts else []
    if input_file is not None:  # printed whole: for large files use --output
        for rows in predict_rows(model, input_file, text_column, pair_column, batch_size, ui, keep_text=True):
            rows_out += rows
    if as_json:
        emit([{k: v for k, v in r.items() if k != "row"} for r in rows_out], True)
        return
    from rich.table import Table

    t = Table("label", "exit layer", "confidence", "text")
    for r in rows_out:
        text = r.get("text", "")
        t.add_row(r["label"], f"{r['exit_layer']}/{model.num_layers}", f"{max(r['probs']):.3f}",
                  text[:70] + ("…" if len(text) > 70 else ""))
    out.print(t)


@app.command()
@command
def run(recipe: Path = typer.Argument(..., help="Recipe file (TOML), see recipes/."), as_json: bool = JSON):
    """Attach, calibrate and benchmark as a recipe says."""
    from .artifact import load_artifact
    from .data import load_data
    from .attach import attach as run_attach
    from .operating_point import calibrate as run_calibrate
    from .recipe import load_recipe, recipe_kind

    if recipe_kind(recipe) == "compare":  # one verb runs every shipped recipe
        return compare(recipe, as_json)
    r = load_recipe(recipe)
    ui = UI(quiet=as_json)
    ui.log(f"[bold]attach[/] {r.checkpoint} -> {r.artifact}")
    attached = run_attach(r.checkpoint, r.data, r.attach, r.artifact, ui)
    ui.log(f"[bold]calibrate[/] {r.calibrate.criterion}")
    art = load_artifact(r.artifact)
    calibration = run_calibrate(art, load_data(r.data), r.calibrate, ui)
    ui.log(f"[bold]benchmark[/] on {r.benchmark.split}")
    report = _benchmark(Path(r.artifact), r.data, r.benchmark, None, as_json)
    emit({"attach": attached, "calibration": calibration.summary(), "report": report}, as_json)


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
