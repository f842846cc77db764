"""Side by side: several method combinations on one checkpoint and one data set, one table.

One frozen-backbone pass per split caches everything every method reads (the
union of their reductions, token states included); each method then searches
(LECO), trains, calibrates on validation for each target speedup and is scored
on the test split, next to static truncation with its own exits at the same
speedup and its oracle. Training time is per method (the shared backbone pass
is reported once).
"""

from __future__ import annotations

import copy
import dataclasses
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .calibrate import CalibrationConfig, Problem, noise_tolerance, search
from .backbones import adapter_for
from .checkpoint import load_deployed
from .config import AttachConfig, from_dict, to_dict
from .cost import encoder_flops, exit_costs, full_cost
from .criteria import CRITERIA, build_criterion
from .data import DataConfig, load_data
from .errors import EebertError
from .exits import EXITS
from .gates import GATES
from .features import all_exit_logits, encode, extract
from .objectives import OBJECTIVES
from .pipeline import attach_gates, bypass_summary, skip_stats, exit_layers, features_needed, gold_labels, train_method
from .ui import SILENT, UI


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
    split: str = field(default="test", metadata={"help": "Split the table reports on."})
    max_length: int = field(default=128, metadata={"help": "Tokens kept per example, for every method."})
    baseline: str = field(default="", metadata={"help": "Method the others are compared against (name)."})
    methods: list[dict] = field(default_factory=list, metadata={"help": "[[methods]] tables: name, criterion, [methods.attach]."})


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
    for m in methods:  # names are checked now, not half-way through a long run
        if m.attach.exits != "leco":
            EXITS.get(m.attach.exits)
        OBJECTIVES.get(m.attach.objective)
        CRITERIA.get(m.criterion)
        if m.attach.gates.type:
            GATES.get(m.attach.gates.type)
        m.attach.max_length = r.max_length
    if any(s <= 1.0 for s in r.speedups):
        raise EebertError(f"{path}: speedups must be above 1.0", "for example speedups = [1.5, 2.0, 3.0]")
    return r, methods


def _merge(needs: dict, more: dict) -> dict:
    for l, kinds in more.items():
        needs.setdefault(l, set()).update(kinds)
    return needs


def _static(dims, lengths, exits, logits, ref, target: float, skipped=None) -> dict | None:
    """Everyone leaves at the one exit whose static FLOPs speedup is nearest the target (log scale).

    With gates, the layers each example skipped on the way (``skipped``) cost nothing.
    """
    import math

    seq = lengths.double()
    full = full_cost(dims, lengths).sum().item()
    reach = encoder_flops(dims, seq, skipped, exits.gates)
    best = None
    for k, layer in enumerate(exits.layers):
        cost = (reach[:, layer] + torch.as_tensor(exits.flops(k, seq), dtype=torch.float64)).sum().item()
        row = {"layer": layer, "speedup_flops": full / cost,
               "accuracy": (logits[:, k].argmax(-1) == ref).double().mean().item()}
        if best is None or abs(math.log(row["speedup_flops"] / target)) < abs(math.log(best["speedup_flops"] / target)):
            best = row
    return best


def _score(f, exits, deployed, data, split, recipe, crit, ref, dims):
    """(logits, Problem, skipped) of one method on one split; gated methods re-run the backbone."""
    if exits.gates is not None:
        enc = encode(deployed.tokenizer, data.split(split), recipe.max_length)
        f = extract(deployed.adapter, enc, exits.layers, set(), 64, None, exits.needs(), exits.gates)
    logits = all_exit_logits(exits, f)
    cost = exit_costs(dims, f.lengths, exits.layers, exits.flops, f.skipped, exits.gates)
    correct = logits.argmax(-1) == ref[:, None]
    return logits, Problem(crit.scores(logits)[:, :-1], correct, cost, full_cost(dims, f.lengths)), f.skipped


def run_compare(recipe: CompareRecipe, methods: list[Method], ui: UI = SILENT,
                on_method: Callable[[dict], None] | None = None) -> dict:
    """Run every method; ``on_method(partial_report)`` after each (long runs keep what they finished)."""
    deployed = load_deployed(recipe.checkpoint)
    from .metrics import CLASSIFICATION, task_of

    if task_of(deployed.model.config) != CLASSIFICATION:  # its tables are single-label accuracy
        raise EebertError(f"compare supports single-label classifiers; {recipe.checkpoint} is "
                          f"{task_of(deployed.model.config)}", "run attach, calibrate and benchmark on it instead")
    data = load_data(recipe.data)
    dims = deployed.adapter.dims
    layers_of = {m.name: exit_layers(m.attach, dims.num_layers) for m in methods}
    needs: dict[int, set[str]] = {}
    for m in methods:
        _merge(needs, features_needed(m.attach, layers_of[m.name], dims))
    feats, t0 = {}, time.perf_counter()
    for split in ("train", "validation", recipe.split):
        if split in feats:
            continue
        s = data.split(split)
        enc = encode(deployed.tokenizer, s, recipe.max_length)
        with ui.progress(f"backbone pass ({split}, {len(s)} examples)", len(s)) as advance:
            feats[split] = extract(deployed.adapter, enc, sorted(needs), set(), 64, advance, needs)
    t_features = time.perf_counter() - t0
    labels = {s: gold_labels(deployed, data, s) for s in feats}
    ref = {s: labels[s] if labels[s] is not None else feats[s].teacher.argmax(-1) for s in feats}
    deployed_acc = (feats[recipe.split].teacher.argmax(-1) == ref[recipe.split]).double().mean().item()
    rows = []
    for m in methods:
        ui.log(f"[bold]method[/] {m.name}")
        targets = labels["train"] if (labels["train"] is not None and m.attach.use_labels) \
            else feats["train"].teacher.argmax(-1)
        t1 = time.perf_counter()
        spec, exits, summary, search_report = train_method(deployed, feats["train"], targets, m.attach,
                                                           layers_of[m.name], ui)
        gate_report, mine = None, deployed
        if m.attach.gates.type:  # SmartBERT: gates are fitted, and scored, with the backbone in the loop
            if m.attach.gates.train_backbone:  # never change the model the other methods share
                mine = dataclasses.replace(deployed, model=copy.deepcopy(deployed.model))
                mine.adapter = adapter_for(mine.model)
            gate_report, _ = attach_gates(mine, data, m.attach, spec, exits, summary["objective_module"],
                                          feats["train"], targets, ui)
        t_train = time.perf_counter() - t1
        crit = build_criterion(m.criterion, m.criterion_params)
        # gated methods are scored at each gate threshold calibration would try; 0.5 (as trained) first
        gate_grid = [None] if exits.gates is None else CalibrationConfig().gate_thresholds
        variants = {}
        for gt in gate_grid:
            if gt is not None:
                exits.gates.threshold = gt
            variants[gt] = {split: _score(feats[split], exits, mine, data, split, recipe, crit, ref[split], dims)
                            for split in ("validation", recipe.split)}
        at = {}
        for target in recipe.speedups:
            found = []
            for gt, v in variants.items():
                try:
                    thr, _ = search(v["validation"][1], crit, "target", target)
                except EebertError:
                    continue
                found.append((gt, thr, v["validation"][1].outcome(thr)))
            if not found:
                at[str(target)] = None
                continue
            best = max(o.accuracy for _, _, o in found)  # calibration's rule: within noise of the best, slowest
            tie = noise_tolerance(best, len(ref["validation"]))
            gt, thr, val = min((f for f in found if f[2].accuracy >= best - tie), key=lambda f: f[2].speedup)
            logits_gt, prob_gt, skipped_gt = variants[gt][recipe.split]
            test = prob_gt.outcome(thr)
            at[str(target)] = {"accuracy": test.accuracy, "speedup_flops": test.speedup,
                               "validation_accuracy": val.accuracy, "validation_speedup": val.speedup,
                               **({"gate_threshold": gt, "gates": skip_stats(
                                   skipped_gt, torch.tensor(exits.layers + [dims.num_layers])[test.exits],
                                   exits.gates.layers)} if gt is not None else {}),
                               "static": _static(dims, feats[recipe.split].lengths, exits, logits_gt,
                                                 ref[recipe.split], target, skipped_gt)}
        if exits.gates is not None:
            exits.gates.threshold = 0.5  # oracle and per-exit figures: the gates as trained
        logits_t, prob_t, _ = variants[gate_grid[0]][recipe.split]
        right = logits_t.argmax(-1) == ref[recipe.split][:, None]
        right[:, -1] = True
        oe = right.to(torch.uint8).argmax(1)
        oracle = {"accuracy": prob_t.correct.gather(1, oe[:, None]).double().mean().item(),
                  "speedup_flops": prob_t.full.sum().item() / prob_t.cost.gather(1, oe[:, None]).sum().item()}
        per_exit = {str(l): (logits_t[:, k].argmax(-1) == ref[recipe.split]).double().mean().item()
                    for k, l in enumerate(exits.layers)}
        rows.append({"name": m.name, "exits": spec.to_dict(), "heads": exits.describe(),
                     "objective": m.attach.objective, "objective_params": m.attach.objective_params,
                     "contrastive": m.attach.train.contrastive, "criterion": m.criterion,
                     "train_seconds": round(t_train, 1), "best_epoch": summary["best_epoch"],
                     "objective_report": summary["objective"], "leco_search": search_report,
                     "bypass": bypass_summary(exits, dims) if exits.bypass is not None else None,
                     "gates": gate_report,
                     "per_exit_accuracy": per_exit, "oracle": oracle, "at": at})
        got = ", ".join(f"{t}x: " + ("unreachable" if v is None else f"{100 * v['accuracy']:.2f}%")
                        for t, v in at.items())
        ui.log(f"  {m.name}: trained in {t_train:.0f} s; {got}")
        if on_method is not None:
            on_method(_report(recipe, ref, labels, deployed_acc, t_features, rows))
    return _report(recipe, ref, labels, deployed_acc, t_features, rows)


def _report(recipe, ref, labels, deployed_acc, t_features, rows) -> dict:
    report = {"checkpoint": str(recipe.checkpoint), "data": to_dict(recipe.data), "split": recipe.split,
              "examples": len(ref[recipe.split]), "metric": "accuracy" if labels[recipe.split] is not None else "agreement",
              "deployed_accuracy": deployed_acc, "speedups": recipe.speedups, "feature_seconds": round(t_features, 1),
              "baseline": recipe.baseline or None, "methods": list(rows)}
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
    return c + [f"{100 * r['oracle']['accuracy']:.2f} ({r['oracle']['speedup_flops']:.2f}x)"]


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
             "table gives test accuracy and the test FLOPs speedup reached. Static truncation: every example "
             "leaves at the one exit of the same method whose static FLOPs speedup (exit head included) is "
             "nearest the target (the cell gives it). Methods with skipping gates are scored at each gate "
             "threshold calibration tries; a cell names the one chosen on validation. "
             f"Shared backbone passes: {report['feature_seconds']:.0f} s.", "",
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
