"""Side by side: several method combinations on one checkpoint and one data set, one table.

A loop over (attach config, calibrate config): each method is attached with the
code `eebert attach` runs (into ``out/artifacts/<method>``), then, for each target
speedup, calibrated on validation with `eebert calibrate`'s code (criterion grid,
gate thresholds, trained criteria included) and scored on the report split with
`eebert benchmark`'s (FLOPs only, no wall clock). A cell therefore equals those
three commands run by hand, figure for figure. Split outputs are cached per
artifact (`outputs.OutputsCache`), so the targets share one backbone pass per split.
The report split may not be the calibration split (validation).
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .attach import attach
from .artifact import load_artifact
from .calibrate import CalibrationConfig
from .config import AttachConfig, BenchmarkConfig, from_dict, to_dict
from .data import DataConfig, load_data
from .device import DeviceConfig, place_artifact, resolve
from .errors import EebertError
from .recipe import check_components
from .ui import SILENT, UI

CACHE = "outputs-cache"


@dataclass
class Method:
    """One combination: exits (+ bypass) x objective (+ contrastive) x criterion."""

    name: str = field(default="", metadata={"help": "Row name in the table."})
    attach: AttachConfig = field(default_factory=AttachConfig)
    criterion: str = field(default="entropy", metadata={"help": "Exit criterion."})
    criterion_params: dict[str, Any] = field(default_factory=dict, metadata={"help": "Criterion parameters."})


@dataclass
class CompareRecipe:
    version: int = field(default=1, metadata={"help": "Recipe format version."})
    kind: str = field(default="compare", metadata={"help": "Must be 'compare'."})
    checkpoint: str = field(default="", metadata={"help": "Deployed checkpoint directory."})
    out: str = field(default="", metadata={"help": "Folder for compare.json and compare.md."})
    data: DataConfig = field(default_factory=DataConfig)
    speedups: list[float] = field(default_factory=lambda: [1.5, 2.0, 3.0], metadata={"help": "Calibrated FLOPs targets."})
    split: str = field(default="test", metadata={"help": "Split the table reports on (never validation: thresholds are chosen there)."})
    max_length: int = field(default=128, metadata={"help": "Tokens kept per example, for every method."})
    baseline: str = field(default="", metadata={"help": "Method the others are compared against (name)."})
    methods: list[dict] = field(default_factory=list, metadata={"help": "[[methods]] tables: name, criterion, [methods.attach]."})
    device: DeviceConfig = field(default_factory=DeviceConfig)  #: attach, calibrate and benchmark all run here


def load_compare_recipe(path: str | Path) -> tuple[CompareRecipe, list[Method]]:
    p = Path(path)
    if not p.is_file():
        raise EebertError(f"recipe not found: {path}", "see recipes/compare-*.toml")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EebertError(f"{path} is not valid TOML ({e})", "fix the syntax") from None
    r = from_dict(CompareRecipe, raw, where=p.name)
    if r.kind != "compare" or r.version != 1:
        raise EebertError(f"{path}: not a version-1 compare recipe", "set kind = \"compare\" and version = 1")
    if not r.checkpoint or not r.out or not r.data.spec:
        raise EebertError(f"{path}: checkpoint, out and data.spec are required", "see recipes/compare-*.toml")
    methods = [from_dict(Method, m, where=f"{p.name}.methods[{i}]") for i, m in enumerate(r.methods)]
    if not methods:
        raise EebertError(f"{path}: no [[methods]]", "add at least one [[methods]] table")
    names = [m.name for m in methods]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise EebertError(f"{path}: every method needs a distinct name", "set name = \"...\" in each [[methods]]")
    if r.baseline and r.baseline not in names:
        raise EebertError(f"{path}: baseline {r.baseline!r} is not a method", f"methods: {', '.join(names)}")
    for i, m in enumerate(methods):  # names and parameters are checked now, not half-way through a long run
        m.attach.max_length = r.max_length
        check_components(m.attach, m.criterion, m.criterion_params, f"{p.name}.methods[{i}]", r.checkpoint)
    if r.split == "validation":
        raise EebertError(f"{path}: split = \"validation\" is the split thresholds are calibrated on",
                          "report on another split, e.g. split = \"test\"")
    if any(s <= 1.0 for s in r.speedups):
        raise EebertError(f"{path}: speedups must be above 1.0", "for example speedups = [1.5, 2.0, 3.0]")
    return r, methods


def method_folder(recipe: CompareRecipe, name: str) -> Path:
    """Where a method's artifact goes: out/artifacts/<name as a file name>."""
    return Path(recipe.out) / "artifacts" / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def run_method(recipe: CompareRecipe, m: Method, data, ui: UI = SILENT) -> tuple[dict, dict]:
    """attach + (calibrate + benchmark) per target, with the commands' own code; (row, one benchmark report)."""
    from .benchmark import run_benchmark
    from .operating_point import calibrate
    from .outputs import OutputsCache, split_outputs
    from .runtime import EarlyExitModel

    folder = method_folder(recipe, m.name)
    where = resolve(recipe.device)
    attached = attach(recipe.checkpoint, recipe.data, m.attach, folder, ui, device=recipe.device)

    def placed():  # thresholds are chosen on the same device and dtype the benchmark then runs in
        a = load_artifact(folder)
        place_artifact(a, where)
        return a
    cache = OutputsCache(folder / CACHE)
    at, last = {}, None
    for target in recipe.speedups:
        cfg = CalibrationConfig(criterion=m.criterion, criterion_params=dict(m.criterion_params),
                                target_speedup=target)
        try:
            cal = calibrate(placed(), data, cfg, ui, cache=cache)
        except EebertError as e:  # an unreachable target is a result, not a failure
            ui.log(f"  {m.name} @{target}x: {e.message}")
            at[str(target)] = None
            continue
        model = EarlyExitModel.from_artifact(folder, device=recipe.device)
        rep = run_benchmark(model, data, BenchmarkConfig(split=recipe.split, repeats=0), ui,
                            cache=cache)
        metric, ee, st = rep["metric"], rep["early_exit"], rep["static_truncation"]
        at[str(target)] = {"accuracy": ee[metric], "speedup_flops": ee["speedup_flops"],
                           "validation_accuracy": cal.validation[cal.metric],
                           "validation_speedup": cal.validation["speedup_flops"],
                           "criterion_params": cal.criterion_params, "thresholds": cal.thresholds,
                           **({"gate_threshold": cal.gate_threshold, "gates": ee["gates"]}
                              if cal.gate_threshold is not None else {}),
                           "static": {"layer": st["layer"], "accuracy": st[metric],
                                      "speedup_flops": st["speedup_flops"]}}
        last = (rep, model)
    if last is None:  # no target reached: still report the deployed model, oracle and per-exit figures
        last = (None, None)
    rep, model = last
    art = placed() if model is None else model.artifact
    out = split_outputs(art, data, recipe.split, cache=cache)
    per_exit = {str(l): (out.logits[:, k].argmax(-1) == out.reference).double().mean().item()
                for k, l in enumerate(art.exits.layers)}
    oracle = None if rep is None else {"accuracy": rep["oracle"][rep["metric"]],
                                       "speedup_flops": rep["oracle"]["speedup_flops"]}
    deployed = (out.deployed_pred == out.reference).double().mean().item()
    row = {"name": m.name, "artifact": str(folder), "exits": attached["exits"], "heads": art.exits.describe(),
           "objective": m.attach.objective, "objective_params": m.attach.objective_params,
           "contrastive": m.attach.train.contrastive, "criterion": m.criterion,
           "train_seconds": round(attached["train_seconds"], 1), "feature_seconds": attached["feature_seconds"],
           "best_epoch": attached["best_epoch"], "objective_report": attached["objective_report"],
           "leco_search": attached["leco_search"], "bypass": attached["bypass"], "gates": attached["gates"],
           "per_exit_accuracy": per_exit, "oracle": oracle, "at": at}
    return row, {"examples": len(out.lengths), "deployed_accuracy": deployed,
                 "metric": "accuracy" if out.labels is not None else "agreement", "placement": where.record()}


def run_compare(recipe: CompareRecipe, methods: list[Method], ui: UI = SILENT,
                on_method: Callable[[dict], None] | None = None) -> dict:
    """Run every method; ``on_method(partial_report)`` after each (long runs keep what they finished)."""
    from .checkpoint import load_deployed
    from .metrics import CLASSIFICATION, task_of

    deployed = load_deployed(recipe.checkpoint)
    if task_of(deployed.model.config) != CLASSIFICATION:  # its tables are single-label accuracy
        raise EebertError(f"compare supports single-label classifiers; {recipe.checkpoint} is "
                          f"{task_of(deployed.model.config)}", "run attach, calibrate and benchmark on it instead")
    data = load_data(recipe.data)
    rows, info = [], None
    for m in methods:
        ui.log(f"[bold]method[/] {m.name}")
        row, info = run_method(recipe, m, data, ui)
        rows.append(row)
        got = ", ".join(f"{t}x: " + ("unreachable" if v is None else f"{100 * v['accuracy']:.2f}%")
                        for t, v in row["at"].items())
        ui.log(f"  {m.name}: trained in {row['train_seconds']:.0f} s; {got}")
        if on_method is not None:
            on_method(_report(recipe, info, rows))
    return _report(recipe, info, rows)


def _report(recipe: CompareRecipe, info: dict, rows: list[dict]) -> dict:
    report = {"checkpoint": str(recipe.checkpoint), "data": to_dict(recipe.data), "split": recipe.split,
              "examples": info["examples"], "metric": info["metric"], "deployed_accuracy": info["deployed_accuracy"],
              "speedups": recipe.speedups, "feature_seconds": round(sum(r["feature_seconds"] for r in rows), 1),
              "baseline": recipe.baseline or None, "placement": info["placement"], "methods": list(rows)}
    report["summary"] = summarise(report)
    return report


def summarise(report: dict) -> dict:
    """Best method per target, its gap to the deployed model and to the baseline."""
    out = {}
    dep = report["deployed_accuracy"]
    base = next((r for r in report["methods"] if r["name"] == report["baseline"]), None)
    for s in report["speedups"]:
        key = str(s)
        done = [r for r in report["methods"] if r["at"].get(key)]
        if not done:
            out[key] = None
            continue
        best = max(done, key=lambda r: r["at"][key]["accuracy"])
        b = base["at"].get(key) if base else None
        out[key] = {"best": best["name"], "accuracy": best["at"][key]["accuracy"],
                    "speedup_flops": best["at"][key]["speedup_flops"],
                    "gap_to_deployed_points": 100 * (best["at"][key]["accuracy"] - dep),
                    "baseline_accuracy": b["accuracy"] if b else None}
    return out


def _cell(r: dict, key: str) -> str:
    a = r["at"].get(key)
    gate = (f", gates {a['gate_threshold']} skip {100 * a['gates']['skip_rate']:.0f}%"
            if a and a.get("gate_threshold") is not None else "")
    return "-" if not a else f"{100 * a['accuracy']:.2f} ({a['speedup_flops']:.2f}x{gate})"


def _static_cell(r: dict, key: str) -> str:
    a = r["at"].get(key)
    st = a and a.get("static")
    return "-" if not st else f"{100 * st['accuracy']:.2f} (L{st['layer']}, {st['speedup_flops']:.2f}x)"


def header(report: dict) -> list[str]:
    h = ["method", "exits", "objective", "criterion", "train s"]
    for s in report["speedups"]:
        h += [f"acc @{s}x", f"static @{s}x"]
    return h + ["oracle"]


def cells(report: dict, r: dict) -> list[str]:
    ex = r["exits"]["type"] + ("" if r["exits"]["type"] != "leco" else f" [{','.join(r['heads'])}]")
    if r["exits"].get("bypass"):
        ex += f" + badge/{r['exits']['bypass'].get('block_size')}"
    if r["exits"].get("gates"):
        ex += " + gates" + (" (backbone trained)" if r["gates"]["config"]["train_backbone"] else "")
    obj = r["objective"] + (f" + contrastive {r['contrastive']}" if r["contrastive"] else "")
    c = [r["name"], ex, obj, r["criterion"], f"{r['train_seconds']:.0f}"]
    for s in report["speedups"]:
        c += [_cell(r, str(s)), _static_cell(r, str(s))]
    o = r["oracle"]
    return c + ["-" if not o else f"{100 * o['accuracy']:.2f} ({o['speedup_flops']:.2f}x)"]


def table(report: dict):
    from rich.table import Table

    t = Table(title=f"eebert compare on {report['split']} ({report['examples']} examples): deployed "
                    f"{100 * report['deployed_accuracy']:.2f}%, accuracy % (test FLOPs speedup) at calibrated targets")
    for h in header(report):
        t.add_column(h, justify="left" if h in ("method", "exits", "objective", "criterion") else "right")
    for r in report["methods"]:
        t.add_row(*cells(report, r))
    return t


def markdown(report: dict) -> str:
    h = header(report)
    lines = ["# eebert compare", "",
             f"Checkpoint `{report['checkpoint']}`, data `{report['data']['spec']}`, split `{report['split']}` "
             f"({report['examples']} examples). Deployed model: {100 * report['deployed_accuracy']:.2f}% "
             f"{report['metric']}. Thresholds calibrated on validation for each target FLOPs speedup; the "
             "table gives test accuracy and the test FLOPs speedup reached; each cell is `eebert attach`, `eebert "
             "calibrate --target-speedup X` and `eebert benchmark` (FLOPs only) run on the method's artifact. "
             "Static truncation (baselines.py): every example leaves at the one exit of the same method whose "
             "static FLOPs speedup (exit head included) is nearest the early-exit model's test speedup (the cell "
             "gives it). Methods with skipping gates are calibrated over the gate thresholds calibrate tries; a "
             "cell names the one chosen on validation. "
             f"Backbone passes over train (all methods): {report['feature_seconds']:.0f} s.", "",
             "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
    lines += ["| " + " | ".join(cells(report, r)) + " |" for r in report["methods"]]
    lines += ["", "## Best per target", ""]
    for s, v in report["summary"].items():
        if v is None:
            lines.append(f"- {s}x: unreachable for every method")
            continue
        b = v["baseline_accuracy"]
        lines.append(f"- {s}x: **{v['best']}** {100 * v['accuracy']:.2f}% ({v['speedup_flops']:.2f}x), "
                     f"{v['gap_to_deployed_points']:+.2f} points vs deployed"
                     + (f", baseline {report['baseline']} {100 * b:.2f}%" if b is not None else ""))
    extra = [r for r in report["methods"]
             if r["leco_search"] or r["objective"] == "leebert" or r.get("bypass") or r.get("gates")]
    for r in extra:
        if r.get("gates"):
            last = r["gates"]["history"][-1]
            lines += ["", f"SmartBERT gates ({r['name']}): layers {r['exits']['gates']['layers']}, skip target "
                          f"{r['gates']['config']['skip_target']}, held-out skip rate "
                          f"{100 * last.get('skip_rate', last['train_skip_rate']):.1f}%, deployed head on the gated "
                          f"path agrees with the deployed model on "
                          f"{100 * last.get('final_agreement_with_deployed', float('nan')):.1f}% of held-out examples."]
        if r.get("bypass"):
            b = r["bypass"]
            lines += ["", f"BADGE bypasses ({r['name']}): {b['blocks']} blocks of {b['block_size']} layers, width "
                          f"{b['width']}, {100 * b['overhead_per_layer']:.2f}% of one layer's FLOPs per exit (128 tokens)."]
        if r["leco_search"]:
            lines += ["", f"LECO search ({r['name']}): " + ", ".join(
                f"layer {l}: {c}" for l, c in r["leco_search"]["choices"].items())]
        if r["objective"] == "leebert" and r["objective_report"].get("weights"):
            w, sm = r["objective_report"]["weights"], r["objective_report"].get("summary")
            spread = (f"; effective terms {sm['effective_terms']:.1f} of {sm['terms']} (initially "
                      f"{sm['effective_terms_initial']:.1f}), max/min vs initial {sm['max_min_vs_initial']:.2f}") if sm else ""
            lines += ["", f"LeeBERT learned weights ({r['name']}{spread}): "
                      + ", ".join(f"{k} {v:.3f}" for k, v in w.items())]
    return "\n".join(lines) + "\n"


def write(report: dict, folder: Path) -> None:
    from .artifact import write_json, write_text

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "compare.json", report)
    write_text(folder / "compare.md", markdown(report))
