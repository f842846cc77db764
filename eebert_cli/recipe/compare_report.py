"""A compare run's report, read: the best method per target (chosen on validation), the console table,
compare.md and the files written. Reads the report dict only; `compare.py` runs the methods and builds it."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import EebertError
from ..tasks import get as get_task


def figure_names(report: dict) -> tuple[str, str]:
    """What a report's cells hold (its rows keep them under ``accuracy`` keys), long and short: accuracy (for a
    multi-label model the exact-set rate), agreement with the deployed model on data without labels, or a
    tagger's entity F1."""
    accuracy = get_task(report["task"]).accuracy_name if report.get("task") else "accuracy"  # older reports: none
    return {"entity_f1": ("entity F1", "F1"), "agreement": ("agreement", "agree")}.get(
        report.get("metric"), (accuracy, "acc" if _is_rate(report.get("task")) else "r"))


def _is_rate(task: str | None) -> bool:
    """Is the task's figure a rate over examples (shown as a percentage), not a statistic of the split?"""
    return get_task(task).figure_is_rate if task else True  # older reports name no task


def figure_unit(task: str | None) -> str:
    """The figure's unit after the x 100 every table applies: a percentage for a rate, none for Pearson's r."""
    return "%" if _is_rate(task) else ""


def min_significant_lead(alpha: float = 0.05) -> int:
    """The fewest examples by which one model must lead another on the same split before a paired test
    can call the lead significant: McNemar's exact test at best sees only the lead's examples disagree,
    all one way (two-sided p = 2 * 0.5**lead). Below it, a "best" is a pick within noise, whatever the
    per-example disagreements were, so the report can say so without storing them."""
    lead = 1
    while 2 * 0.5 ** lead > alpha:
        lead += 1
    return lead


def summarise(report: dict) -> dict:
    """Best method per target, chosen by validation accuracy (test figures are reported, never used to
    choose); its test accuracy, gap to the deployed model and to the baseline."""
    out = {}
    dep = report["deployed_accuracy"]
    base = next((r for r in report["methods"] if r["name"] == report["baseline"]), None)
    # a rate over examples (accuracy, agreement) leads by a count of examples, which a paired test can bound;
    # entity F1 and Pearson's r are no such rate, so their lead is given in points only
    per_example = report.get("metric") != "entity_f1" and _is_rate(report.get("task"))
    for s in report["speedups"]:
        key = str(s)
        done = [r for r in report["methods"] if r["at"].get(key)]
        if not done:
            out[key] = None
            continue
        best = max(done, key=lambda r: r["at"][key]["validation_accuracy"])
        b = base["at"].get(key) if base else None
        n = report.get("validation_examples")
        lead = best["at"][key]["validation_accuracy"] - b["validation_accuracy"] if b else None
        out[key] = {"best": best["name"], "chosen_by": f"validation {figure_names(report)[0]}",
                    "validation_accuracy": best["at"][key]["validation_accuracy"],
                    # how thin the choice is: the lead over the baseline in validation examples (mean over seeds)
                    "validation_lead_examples": round(lead * n, 1) if lead is not None and n and per_example else None,
                    "validation_lead_points": 100 * lead if lead is not None else None,
                    # False: no paired test could separate it from the baseline (min_significant_lead)
                    "lead_can_be_significant": round(lead * n, 1) >= min_significant_lead()
                    if lead is not None and n and per_example else None,
                    "accuracy": best["at"][key]["accuracy"],
                    "speedup_flops": best["at"][key]["speedup_flops"],
                    "gap_to_deployed_points": 100 * (best["at"][key]["accuracy"] - dep),
                    "baseline_accuracy": b["accuracy"] if b else None}
    return out


def _cell(r: dict, key: str) -> str:
    a = r["at"].get(key)
    if not a:
        return "-"
    gate = (f", gates {a['gate_threshold']} skip {100 * a['gates']['skip_rate']:.0f}%"
            if a.get("gate_threshold") is not None else "")
    sd = f" ± {100 * a['accuracy_sd']:.2f}" if a.get("seeds", 1) > 1 else ""
    crit = ""
    if a.get("criteria_tried"):  # several criteria tried: name what the seeds chose
        chosen = a.get("criteria_chosen") or {a["criterion"]: 1}  # rows written before it: the first seed's choice
        crit = ", " + ", ".join(n if len(chosen) == 1 else f"{n} ×{c}" for n, c in chosen.items())
    return f"{100 * a['accuracy']:.2f}{sd} ({a['speedup_flops']:.2f}x{crit}{gate})"


def _own_cell(r: dict, key: str) -> str:
    """The method's own criterion at this target (mean ± sd over seeds), when other criteria were tried."""
    a = r["at"].get(key)
    own = a and (a.get("criteria_tried") or {}).get(r["criterion"])
    if not own:
        return "-"
    sd = f" ± {100 * own['accuracy_sd']:.2f}" if own["seeds"] > 1 else ""
    return f"{100 * own['accuracy']:.2f}{sd} ({own['speedup_flops']:.2f}x)"


def _static_cell(r: dict, key: str) -> str:
    a = r["at"].get(key)
    st = a and a.get("static")
    if not st:
        return "-"
    layers = "/".join(map(str, st.get("layers") or [st["layer"]]))  # rows written before "layers": the first seed's
    return f"{100 * st['accuracy']:.2f} (L{layers}, {st['speedup_flops']:.2f}x)"


def header(report: dict) -> list[str]:
    h = ["method", "exits", "objective", "criterion", "train s"]
    own = bool(report.get("criteria"))
    for s in report["speedups"]:
        h += ([f"own criterion @{s}x"] if own else []) + [f"{figure_names(report)[1]} @{s}x", f"static @{s}x"]
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
        c += ([_own_cell(r, str(s))] if report.get("criteria") else []) + [_cell(r, str(s)), _static_cell(r, str(s))]
    o = r["oracle"]
    return c + ["-" if not o else f"{100 * o['accuracy']:.2f} ({o['speedup_flops']:.2f}x)"]


def table(report: dict):
    from rich.table import Table

    unit = figure_unit(report.get("task"))
    t = Table(title=f"eebert compare on {report['split']} ({report['examples']} examples): deployed "
                    f"{100 * report['deployed_accuracy']:.2f}{unit}, {figure_names(report)[0]}{' ' + unit if unit else ''} "
                    "(test FLOPs speedup) at calibrated targets")
    for h in header(report):
        t.add_column(h, justify="left" if h in ("method", "exits", "objective", "criterion") else "right")
    for r in report["methods"]:
        t.add_row(*cells(report, r))
    return t


def markdown(report: dict) -> str:
    h = header(report)
    name, short = figure_names(report)
    unit = figure_unit(report.get("task"))
    lines = ["# eebert compare", "",
             f"Checkpoint `{report['checkpoint']}`, data `{report['data']['spec']}`, split `{report['split']}` "
             f"({report['examples']} examples). Deployed model: {100 * report['deployed_accuracy']:.2f}{unit} "
             f"{report['metric']}{'' if unit else ' x 100'}. Thresholds calibrated on validation for each target FLOPs speedup; the "
             f"table gives test {name} and the test FLOPs speedup reached; each cell is `eebert attach`, `eebert "
             "calibrate --target-speedup X` and `eebert benchmark` (FLOPs only) run on the method's artifact. "
             "Static truncation (baselines.py): every example leaves at the one exit of the same method whose "
             "static FLOPs speedup (exit head included) is nearest the early-exit model's test speedup, per seed "
             "(the cell gives the mean and each layer the seeds took, `L5/6`). Methods with skipping gates are "
             "calibrated over the gate thresholds calibrate tries; a cell names the one chosen on validation. "
             f"Backbone passes over train (all methods): {report['feature_seconds']:.0f} s."
             + (f" Each cell: mean ± standard deviation over exit-training seeds {report['seeds']} (one backbone "
                "pass per method)." if len(report.get("seeds") or [0]) > 1 else "")
             + (f" Criteria tried per cell: the method's own and {', '.join(report['criteria'])}; each seed keeps "
                f"the one with the best validation {name} (`{short}`), which the cell names (`×N`: how many seeds "
                "chose it, where they differ); `own criterion` is the method's own criterion "
                "at the same target." if report.get("criteria") else ""), "",
             "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
    lines += ["| " + " | ".join(cells(report, r)) + " |" for r in report["methods"]]
    lines += ["", "## Best per target (chosen on validation; test figures shown)", ""]
    for s, v in report["summary"].items():
        if v is None:
            lines.append(f"- {s}x: unreachable for every method")
            continue
        b, lead = v["baseline_accuracy"], v.get("validation_lead_examples")
        ahead = f", {lead:g} of {report['validation_examples']} validation examples above the baseline" \
            if lead is not None and v["best"] != report["baseline"] else ""
        if lead is None and v.get("validation_lead_points") is not None and v["best"] != report["baseline"]:
            ahead = (f", {v['validation_lead_points']:.2f} points above the baseline ({name} is not a count of "
                     "examples: no paired test bounds it)")
        if ahead and v.get("lead_can_be_significant") is False:
            ahead += f", too few to be significant (a paired test needs {min_significant_lead()})"
        lines.append(f"- {s}x: **{v['best']}** (validation {100 * v['validation_accuracy']:.2f}{unit}{ahead}) test "
                     f"{100 * v['accuracy']:.2f}{unit} ({v['speedup_flops']:.2f}x), "
                     f"{v['gap_to_deployed_points']:+.2f} points vs deployed"
                     + (f", baseline {report['baseline']} {100 * b:.2f}{unit}" if b is not None else ""))
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
            per_seed = r.get("leco_choices_per_seed") or [r["leco_search"]["choices"]]  # older rows: seed 0's
            seeds = r["seeds"] if len(per_seed) == len(r["seeds"]) else r["seeds"][:1]
            lines += ["", f"LECO search ({r['name']}), the head chosen at layers {', '.join(per_seed[0])}: "
                          + "; ".join(f"seed {s} {', '.join(ch.values())}" for s, ch in zip(seeds, per_seed))]
        if r["objective"] == "leebert" and r["objective_report"].get("weights"):
            w, sm = r["objective_report"]["weights"], r["objective_report"].get("summary")
            spread = (f"; effective terms {sm['effective_terms']:.1f} of {sm['terms']} (initially "
                      f"{sm['effective_terms_initial']:.1f}), max/min vs initial {sm['max_min_vs_initial']:.2f}") if sm else ""
            lines += ["", f"LeeBERT learned weights ({r['name']}{spread}): "
                      + ", ".join(f"{k} {v:.3f}" for k, v in w.items())]
    return "\n".join(lines) + "\n"


def check_report_folder(folder: Path) -> None:
    """Refuse an ``out`` whose compare.json or compare.md eebert did not write: ``write`` replaces both (after
    every method), before any method runs."""
    from ..model.artifact import read_json

    md, js = folder / "compare.md", folder / "compare.json"
    try:
        report = read_json(js) if js.is_file() else None
    except EebertError:
        report = None
    ours = isinstance(report, dict) and isinstance(report.get("methods"), list)
    if (js.exists() and not ours) or (md.exists() and not js.exists()):
        name = js if js.exists() else md
        raise EebertError(f"{name} is not an eebert compare report, and a compare run replaces it",
                          "move it elsewhere, or give the recipe another out (--out DIR)")


def write(report: dict, folder: Path) -> None:
    from ..model.artifact import write_json, write_text

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "compare.json", report)
    write_text(folder / "compare.md", markdown(report))
