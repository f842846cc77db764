"""Side by side: several method combinations on one checkpoint and one data set, one table.

A loop over (attach config, calibrate config): each method is attached with the
code `eebert attach` runs (into ``out/artifacts/<method>``), then, for each target
speedup, calibrated on validation with `eebert calibrate`'s code (criterion grid,
gate thresholds, trained criteria included) and scored on the report split with
`eebert benchmark`'s (FLOPs only, no wall clock). A cell therefore equals those
three commands run by hand, figure for figure. Split outputs are cached per
artifact (`outputs.OutputsCache`), so the targets share one backbone pass per split.
The report split may not be the calibration split (validation). The report this builds is read (best per
target, table, compare.md) in `compare_report.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import steps
from ..model.artifact import check_out, load_artifact
from ..scoring.config import BenchmarkConfig, CalibrationConfig
from ..train.config import AttachConfig
from ..core.configs import from_dict, to_dict
from ..data import DataConfig, load_data
from ..model.device import place_artifact, resolve
from ..model.device_config import DeviceConfig
from ..core.errors import EebertError
from . import check_components
from ..core.ui import SILENT, UI
from ..tasks import TOKEN_CLASSIFICATION
from .compare_report import figure_unit, summarise

CACHE = "outputs-cache"
#: one seed's finished work (its attach summary and every target's point), beside its artifact: a run
#: stopped part-way through a method continues from its next seed (``--resume``)
SEED_RECORD = "compare-seed.json"


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
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Exit-training seeds per method (one backbone pass serves them all); cells give the mean, with the standard deviation. One seed alone: each method trains with its own [methods.attach.train] seed."})
    criteria: list[str] = field(default_factory=list, metadata={"help": "Criteria also calibrated per method and target; the one with the best validation accuracy is kept (never chosen on the report split)."})
    prune_exits: bool = field(default=True, metadata={"help": "Calibration switches off exits that add no validation accuracy at the target (as `eebert calibrate`; false: `--keep-exits`, the search of rows made before 0425d86)."})
    device: DeviceConfig = field(default_factory=DeviceConfig)  #: attach, calibrate and benchmark all run here


def load_compare_recipe(path: str | Path, checkpoint: str | None = None,
                        out: str | None = None) -> tuple[CompareRecipe, list[Method]]:
    """The recipe and its methods, checked. ``checkpoint`` / ``out`` replace the recipe's own (one
    recipe, such as a study's, then runs on another model) before anything is checked against them."""
    p = Path(path)
    if not p.is_file():
        raise EebertError(f"recipe not found: {path}", "see recipes/compare-*.toml")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EebertError(f"{path} is not valid TOML ({e})", "fix the syntax") from None
    if raw.get("kind", "pipeline") == "pipeline":  # its keys would be refused one by one as unknown
        raise EebertError(f"{path} is a pipeline recipe (attach, calibrate, benchmark), not a comparison",
                          "run it with `eebert run`; a compare recipe says kind = \"compare\"")
    r = from_dict(CompareRecipe, raw, where=p.name)
    r.checkpoint, r.out = checkpoint or r.checkpoint, out or r.out
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
        own = (r.methods[i].get("attach") or {}).get("max_length")
        if own is not None and own != r.max_length:  # it was overwritten without a word
            raise EebertError(f"{p.name}: methods[{i}].attach.max_length = {own}, but every method runs at the "
                              f"recipe's max_length ({r.max_length}): one backbone pass serves them all",
                              f"drop it from [methods.attach], or set max_length = {own} at the top of the recipe")
        m.attach.max_length = r.max_length
        check_components(m.attach, m.criterion, m.criterion_params, f"{p.name}.methods[{i}]", r.checkpoint)
    for name in r.criteria:  # an unknown name, or one the checkpoint's task cannot use, fails now
        check_components(methods[0].attach, name, {}, f"{p.name}.criteria", r.checkpoint)
    if not r.seeds or len(set(r.seeds)) != len(r.seeds):
        raise EebertError(f"{path}: seeds must be distinct and at least one", "for example seeds = [0, 1, 2]")
    if r.split == "validation":
        raise EebertError(f"{path}: split = \"validation\" is the split thresholds are calibrated on",
                          "report on another split, e.g. split = \"test\"")
    if not r.speedups or any(s <= 1.0 for s in r.speedups):  # none: every method trained for no table
        raise EebertError(f"{path}: speedups must be at least one, each above 1.0", "for example speedups = [1.5, 2.0, 3.0]")
    return r, methods


def method_folder(recipe: CompareRecipe, name: str) -> Path:
    """Where a method's artifact goes: out/artifacts/<name as a file name>."""
    return Path(recipe.out) / "artifacts" / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def seed_folder(recipe: CompareRecipe, name: str, seed: int) -> Path:
    """Where one seed's artifact and record go: the method's folder when one seed runs, else seed-N in it."""
    base = method_folder(recipe, name)
    return base if len(recipe.seeds) == 1 else base / f"seed-{seed}"


def _point(folder: Path, data, cfg: CalibrationConfig, recipe: "CompareRecipe", cache, ui: UI) -> dict:
    """One calibrated target on one artifact: calibrate on validation, benchmark on the report split."""
    # thresholds are chosen on the device and dtype the benchmark then runs in
    cal = steps.calibrate(folder, data, cfg, ui, device=recipe.device, cache=cache)
    rep = steps.benchmark(folder, data, BenchmarkConfig(split=recipe.split, repeats=0), ui, device=recipe.device,
                          cache=cache, write=False, curves=False)  # a cell reads the figures, not the curves
    metric, ee, st = rep["metric"], rep["early_exit"], rep["static_truncation"]
    return {"accuracy": ee[metric], "speedup_flops": ee["speedup_flops"],
            # the report's figure on validation (a regressor calibrates on MSE; its figure is Pearson, kept in metrics)
            "validation_accuracy": cal.validation[metric] if metric in cal.validation else cal.validation["metrics"][metric],
            "validation_speedup": cal.validation["speedup_flops"],
            "criterion": cal.criterion, "criterion_params": cal.criterion_params, "thresholds": cal.thresholds,
            **({"gate_threshold": cal.gate_threshold, "gates": ee["gates"]} if cal.gate_threshold is not None else {}),
            "static": {"layer": st["layer"], "accuracy": st[metric], "speedup_flops": st["speedup_flops"]},
            "oracle": {"accuracy": rep["oracle"][metric], "speedup_flops": rep["oracle"]["speedup_flops"]}}


def _best_point(folder: Path, data, m: "Method", target: float, recipe: "CompareRecipe", cache, ui: UI) -> dict | None:
    """The method's criterion, and each of the recipe's extra criteria, calibrated at ``target``; the one with
    the best validation accuracy is kept (and re-calibrated last, so the artifact holds it). None: unreachable."""
    names = list(dict.fromkeys([m.criterion, *recipe.criteria]))
    tried = {}
    for name in names:
        cfg = CalibrationConfig(criterion=name, criterion_params=dict(m.criterion_params) if name == m.criterion
                                else {}, target_speedup=target, prune_exits=recipe.prune_exits)
        try:
            tried[name] = (cfg, _point(folder, data, cfg, recipe, cache, ui))
        except EebertError as e:  # an unreachable target is a result, not a failure
            ui.log(f"  {m.name} @{target}x, {name}: {e.message}")
    if not tried:
        return None
    best = max(tried, key=lambda n: tried[n][1]["validation_accuracy"])
    last = list(tried)[-1]  # the calibration the artifact holds (a failed one writes nothing)
    point = tried[best][1] if best == last else _point(folder, data, tried[best][0], recipe, cache, ui)
    if len(names) > 1:
        point["criteria_tried"] = {n: {k: v[1][k] for k in ("validation_accuracy", "accuracy", "speedup_flops")}
                                   for n, v in tried.items()}
    return point


def _mean(points: list[dict], key: str) -> tuple[float, float]:
    vals = [p[key] for p in points]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _over_seeds(points: list[dict]) -> dict:
    """Mean (and sample standard deviation) over seeds; the first seed's details are kept alongside."""
    out = dict(points[0])
    for key in ("accuracy", "speedup_flops", "validation_accuracy", "validation_speedup"):
        out[key], out[f"{key}_sd"] = _mean(points, key)
    for part in ("static", "oracle"):
        out[part] = {**points[0][part], **{k: _mean([p[part] for p in points], k)[0] for k in ("accuracy", "speedup_flops")}}
    # each seed takes the static exit nearest its own speedup, so the mean can span layers: say which
    out["static"]["layers"] = sorted({p["static"]["layer"] for p in points})
    if "criteria_tried" in out:  # each criterion's figures over the seeds that reached the target with it
        tried = {}
        for name in out["criteria_tried"]:
            got = [p["criteria_tried"][name] for p in points if name in p.get("criteria_tried", {})]
            tried[name] = {"seeds": len(got)}
            for key in ("validation_accuracy", "accuracy", "speedup_flops"):
                tried[name][key], tried[name][f"{key}_sd"] = _mean(got, key)
        out["criteria_tried"] = tried
    out["seeds"] = len(points)
    # each seed keeps the criterion best on its own validation: how many seeds chose which (the first seed's
    # choice alone is ``criterion``)
    out["criteria_chosen"] = {n: sum(p["criterion"] == n for p in points) for n in dict.fromkeys(p["criterion"] for p in points)}
    out["per_seed"] = [{k: p[k] for k in ("accuracy", "speedup_flops", "validation_accuracy", "criterion")} for p in points]
    return out


def feature_folder(recipe: CompareRecipe, attach: AttachConfig) -> Path:
    """The training features' cache shared by the methods that tokenize and batch alike (see ``shared_pass``)."""
    return Path(recipe.out) / "feature-cache" / f"len{attach.max_length}-batch{attach.batch_size}"


def shared_pass(recipe: CompareRecipe, methods: list[Method], ui: UI = SILENT) -> float:
    """One backbone pass over train per feature cache, keeping the union of what its methods read (a tagger's:
    word states at the union of their exit layers); each method's attach then finds a cache that covers it
    (``feature_cache.covering_plan``) instead of making its own pass. Methods naming their own
    ``feature_cache`` keep it. Returns the seconds the passes took (the methods' own rows then show ~0)."""
    import time

    from ..deploy.executors import executor_of
    from ..model import feature_cache
    from ..model.checkpoint import load_deployed
    from ..model.device import place_model
    from ..backbones import check_max_length
    from ..tasks import task_of
    from ..train.attach import exit_layers, training_needs

    deployed = load_deployed(recipe.checkpoint)
    dims = deployed.adapter.dims
    words = task_of(deployed.model.config).level == "token"  # a tagger's exits read word states
    groups: dict[Path, dict[int, set[str]]] = {}
    for m in methods:
        if m.attach.feature_cache:
            continue
        union = groups.setdefault(feature_folder(recipe, m.attach), {})
        layers = exit_layers(m.attach, dims.num_layers)
        needs = {layer: {feature_cache.WORD} for layer in layers} if words else training_needs(m.attach, layers, dims)
        for layer, kinds in needs.items():
            union.setdefault(layer, set()).update(kinds)
    if not groups:
        return 0.0
    start = time.perf_counter()
    where = resolve(recipe.device)
    place_model(deployed.model, where)
    runner = executor_of(recipe.device).attach_runner(recipe.device)
    split = load_data(recipe.data).split("train")
    for folder, needs in groups.items():
        like = next(m.attach for m in methods if feature_folder(recipe, m.attach) == folder)
        length = check_max_length(like.max_length, deployed.model.config, "max_length")  # as attach clamps it
        ui.log(f"one training pass for every method ({folder})")
        feature_cache.attach_pass(deployed, split, sorted(needs), needs, length, like.batch_size, folder,
                                  runner.placement if runner else where.describe(), ui, runner)
    return time.perf_counter() - start


def _seed_record(folder: Path, keys: tuple[str, ...], seed: int) -> dict | None:
    """A seed's record under one of ``keys`` (its seed key; or this run's row key, which records written
    before seed keys carry), or None (absent, unreadable or another key: the seed runs)."""
    from ..model.artifact import CALIBRATION, CONFIG, WEIGHTS, read_json

    if not keys or not (folder / SEED_RECORD).is_file() \
            or not all((folder / f).is_file() for f in (CONFIG, WEIGHTS, CALIBRATION)):
        return None
    try:
        rec = read_json(folder / SEED_RECORD)
    except (OSError, ValueError, EebertError):
        return None
    return rec if isinstance(rec, dict) and rec.get("key") in keys and rec.get("seed") == seed else None


def run_method(recipe: CompareRecipe, m: Method, data, ui: UI = SILENT, passes=None, key: str | None = None,
               resume: bool = False, seed_key: str | None = None) -> tuple[dict, dict]:
    """attach + (calibrate + benchmark) per target and seed, with the commands' own steps; (row, split info).

    Seeds re-train the exits on the same backbone pass over train (one feature cache per pass plan,
    shared with other methods that read the same features); validation and test passes are shared
    through ``passes`` (:class:`~eebert_cli.scoring.outputs.BackbonePasses`). Figures are the mean over
    seeds with their standard deviation. Each finished seed leaves ``SEED_RECORD`` under ``seed_key``
    (``row_key(..., per_seed=True)``); with ``resume`` a seed whose record has that key (or the row's
    ``key``) is read back, not run again."""
    from dataclasses import replace

    from ..model.artifact import write_json
    from ..scoring.outputs import OutputsCache

    points: dict[str, list[dict]] = {str(t): [] for t in recipe.speedups}
    attached_all, first = [], None  # first: the first seed's (folder, outputs cache), which describe the method
    for seed in recipe.seeds:
        folder = seed_folder(recipe, m.name, seed)
        cache = OutputsCache(folder / CACHE, passes)
        first = first or (folder, cache)
        rec = _seed_record(folder, tuple(k for k in (seed_key, key) if k), seed) if resume else None
        if rec is not None:
            ui.log(f"  {m.name}, seed {seed}: kept from {folder / SEED_RECORD} (same key)")
        else:
            (folder / SEED_RECORD).unlink(missing_ok=True)  # its artifact is about to change
            cfg = replace(m.attach, train=replace(m.attach.train, seed=seed) if len(recipe.seeds) > 1
                          else m.attach.train,
                          feature_cache=m.attach.feature_cache or str(feature_folder(recipe, m.attach)))
            rec = {"key": seed_key or key, "seed": seed,
                   "attached": steps.attach(recipe.checkpoint, recipe.data, cfg, folder, ui, device=recipe.device),
                   "points": {str(t): _best_point(folder, data, m, t, recipe, cache, ui) for t in recipe.speedups}}
            if rec["key"] is not None:
                write_json(folder / SEED_RECORD, rec)
        attached_all.append(rec["attached"])
        for target, point in rec["points"].items():
            if point is not None:
                points[target].append(point)
    # a target counts only when every seed reached it
    at = {t: (_over_seeds(ps) if len(ps) == len(recipe.seeds) else None) for t, ps in points.items()}
    # what describes the method (heads, search, epochs, per-exit accuracy) comes from its first seed, all of it
    attached = attached_all[0]
    where = resolve(recipe.device)
    art = load_artifact(first[0])
    place_artifact(art, where)
    per_exit, deployed, examples, metric = _split_figures(art, data, recipe.split, first[1])
    reached = [a for a in at.values() if a]
    oracle = reached[-1]["oracle"] if reached else None
    row = {"name": m.name, "artifact": str(method_folder(recipe, m.name)), "exits": attached["exits"],
           "heads": art.exits.describe(),
           "objective": m.attach.objective, "objective_params": m.attach.objective_params,
           "contrastive": m.attach.train.contrastive, "criterion": m.criterion, "seeds": list(recipe.seeds),
           "train_seconds": round(statistics.fmean(a["train_seconds"] for a in attached_all), 1),
           "feature_seconds": attached["feature_seconds"],
           "best_epoch": attached["best_epoch"], "objective_report": attached["objective_report"],
           "leco_search": attached["leco_search"], "bypass": attached["bypass"], "gates": attached["gates"],
           "leco_choices_per_seed": [a["leco_search"]["choices"] for a in attached_all] if attached["leco_search"]
           else None,
           "per_exit_accuracy": per_exit, "oracle": oracle, "at": at}
    cal = art.calibration  # the validation split's size: how many examples a lead on validation is
    return row, {"examples": examples, "deployed_accuracy": deployed, "metric": metric, "placement": where.record(),
                 "task": art.config.get("task"),
                 "validation_examples": (cal.validation or {}).get("examples") if cal is not None else None}


def _split_figures(art, data, split: str, cache) -> tuple[dict, float, int, str]:
    """(each exit's figure alone {layer: x}, the deployed model's, examples, the figure's name) on ``split``:
    accuracy (agreement without labels) for sentences, Pearson's r for a regressor, entity F1 against gold tags
    for a tagger."""
    from ..scoring.outputs import split_outputs

    if art.config.get("task") == TOKEN_CLASSIFICATION:
        import torch

        from ..scoring.tagging import split_tags

        st = split_tags(art, data, split)
        n = len(st.words)
        f1 = lambda k: st.figures(torch.full((n,), k, dtype=torch.long), static=True)["entity_f1"]  # noqa: E731
        shipped = st.shipped_figures()
        deployed = shipped["entity_f1"] if shipped else f1(len(art.exits.layers))
        return {str(l): f1(k) for k, l in enumerate(art.exits.layers)}, deployed, n, "entity_f1"
    out = split_outputs(art, data, split, cache=cache)
    if not out.task.figure_is_rate:  # a regressor: its headline statistic against gold values (required above)
        name = out.task.report_metric(True)
        figure = lambda pred: out.task.metric_values(pred, out.labels)[name]  # noqa: E731
        return ({str(l): figure(out.task.answers(out.logits[:, k])) for k, l in enumerate(art.exits.layers)},
                figure(out.deployed_pred), len(out.lengths), name)
    per_exit = {str(l): out.task.same(out.task.answers(out.logits[:, k]), out.reference).double().mean().item()
                for k, l in enumerate(art.exits.layers)}
    deployed = out.task.same(out.deployed_pred, out.reference).double().mean().item()
    return per_exit, deployed, len(out.lengths), "accuracy" if out.labels is not None else "agreement"


def row_key(recipe: CompareRecipe, m: Method, checkpoint_sha256: str, per_seed: bool = False) -> str:
    """What a method's row depends on: the checkpoint's weights, every recipe setting that reaches the
    row (data, targets, split, seeds, criteria, length, device), the method itself and eebert's version.
    A row in compare.json is reused (``resume``) only under the same key.

    ``per_seed``: the key of one seed's record, which does not depend on the other seeds listed (a seed
    trains and calibrates alike whatever runs beside it), so a run with more seeds, or with its seeds
    split over folders or machines, reuses it. Whether several seeds run still counts: a seed alone trains
    with the method's own seed, in the method's folder."""
    from .. import __version__

    settings = {k: v for k, v in to_dict(recipe).items() if k not in ("checkpoint", "out", "baseline", "methods")}
    if per_seed:
        settings["seeds"] = "several" if len(recipe.seeds) > 1 else "one"
    method = to_dict(m)
    # training threads change how fast a row is made, not what it measures: hashed as 1 (the default when
    # rows were first keyed), so a row stays reusable whatever threads it or its rerun trained on
    method["attach"]["train"]["threads"] = 1
    blob = json.dumps({"eebert": __version__, "checkpoint_sha256": checkpoint_sha256, "recipe": settings,
                       "method": method}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _previous(folder: Path) -> dict:
    """The report an earlier run left in ``folder`` (partial or whole), or {}; one that cannot be read
    is ignored (its methods run again), never deleted."""
    from ..model.artifact import read_json

    if not (folder / "compare.json").is_file():
        return {}
    try:
        report = read_json(folder / "compare.json")
    except (OSError, ValueError, EebertError):
        return {}
    return report if isinstance(report, dict) and isinstance(report.get("methods"), list) else {}


def run_compare(recipe: CompareRecipe, methods: list[Method], ui: UI = SILENT,
                on_method: Callable[[dict], None] | None = None, resume: bool = False,
                only: list[str] | None = None) -> dict:
    """Run every method; ``on_method(partial_report)`` after each (long runs keep what they finished).

    ``resume``: a method whose row in ``out/compare.json`` has this run's key (``row_key``) is kept, not
    run again. ``only``: run just these methods, keeping the others' rows from compare.json as resume
    does. A row either would have to drop (another key, or a method not in the recipe) is refused before
    anything runs (``_refuse_dropping_rows``). Rows stay in recipe order."""
    from dataclasses import replace

    from ..model.checkpoint import load_deployed
    from ..tasks import criterion_for, objective_for, task_of

    names = [m.name for m in methods]
    unknown = [n for n in only or () if n not in names]
    if unknown:
        raise EebertError(f"no method named {', '.join(map(repr, unknown))} in this recipe",
                          f"choose from: {', '.join(names)}")
    from ..deploy.executors import executor_of

    executor_of(recipe.device).check(recipe.device)  # a Ray cluster that does not answer, before the model loads
    deployed = load_deployed(recipe.checkpoint)
    task = task_of(deployed.model.config)
    tagger = task.name == TOKEN_CLASSIFICATION
    # its cells and its choices read the figure benchmark headlines, higher better: accuracy (a multi-label model's
    # exact-set accuracy), a regressor's Pearson r or a tagger's entity F1; the last two against gold labels only
    gold_only = tagger or not task.figure_is_rate
    # criteria by the names calibrate uses: the classification default names a tagger's own (sentence-min)
    # and objectives: the rows say what attach trains (a multi-label model's default is bce-distil)
    methods = [replace(m, criterion=criterion_for(task, m.criterion),
                       attach=replace(m.attach, objective=objective_for(task, m.attach.objective))) for m in methods]
    recipe = replace(recipe, criteria=list(dict.fromkeys(criterion_for(task, n) for n in recipe.criteria)))
    from ..scoring.outputs import BackbonePasses

    keys = {m.name: row_key(recipe, m, deployed.sha256) for m in methods}
    seed_keys = {m.name: row_key(recipe, m, deployed.sha256, per_seed=True) for m in methods}
    before = _previous(Path(recipe.out)) if resume or only else {}
    # a row under another key whose seeds are all still listed, each with a record this run reads back (a
    # study that adds a seed), is rebuilt from them by this run: not dropped, so not refused
    rebuilt = {r.get("name") for r in before.get("methods", []) if (not only or r.get("name") in only)
               and _seeds_kept(recipe, r, seed_keys.get(r.get("name")))} if resume else set()
    _refuse_dropping_rows(before, keys, deployed.sha256, Path(recipe.out), rebuilt)
    kept = {r.get("name"): r for r in before.get("methods", []) if r.get("key") == keys.get(r.get("name"))}
    if only:
        kept = {n: r for n, r in kept.items() if n not in only}
    todo = [m for m in methods if m.name not in kept and (not only or m.name in only)]
    for m in todo:  # a folder attach would refuse fails now, not after the methods before it have trained
        for seed in recipe.seeds:
            check_out(seed_folder(recipe, m.name, seed), recipe.checkpoint, flag=f"method {m.name!r}'s folder",
                      foreign_hint="move its files elsewhere, or give the recipe another out")
    data = load_data(recipe.data)
    if gold_only:  # entity F1 or Pearson against gold labels, which both splits must hold
        unlabelled = [s for s in ("validation", recipe.split) if data.split(s).label_column is None]
        if unlabelled:
            what = ("taggers by entity F1 against gold tags", "a tags column (tags_column in [data])") if tagger \
                else (f"{task.name} models by Pearson's r against gold values", "a label column of scores")
            raise EebertError(f"compare ranks {what[0]}; the {unlabelled[0]} split of this data has none",
                              f"give data with {what[1]}")
    # the pass keeps what every method without a row reads, not only this run's: a later --resume or
    # --methods run then finds a cache that covers it instead of making another pass
    # its clock is summed over the runs (shared_pass_seconds); the report's figure is the cache's own record of
    # the pass where it has one (_feature_seconds)
    seconds = shared_pass(recipe, [m for m in methods if m.name not in kept], ui)
    run = {"checkpoint_sha256": deployed.sha256, "pass_seconds": seconds + before.get("shared_pass_seconds", 0.0),
           # where each method's training features are cached: their manifests record what the pass took
           "feature_folders": {m.name: feature_folder(recipe, m.attach) for m in methods if not m.attach.feature_cache}}
    done, passes = dict(kept), BackbonePasses()  # the report's rows so far, in recipe order below
    info = {k: before.get(k) for k in ("examples", "deployed_accuracy", "metric", "placement", "validation_examples",
                                       "task")} \
        if kept else None
    for n in kept:
        ui.log(f"[bold]method[/] {n}: kept from {Path(recipe.out) / 'compare.json'} (same key)")
    for m in todo:
        ui.log(f"[bold]method[/] {m.name}")
        row, info = run_method(recipe, m, data, ui, passes, key=keys[m.name], resume=resume,
                               seed_key=seed_keys[m.name])
        row["key"] = keys[m.name]
        done[m.name] = row
        got = ", ".join(f"{t}x: " + ("unreachable" if v is None else f"{100 * v['accuracy']:.2f}{figure_unit(task.name)}")
                        for t, v in row["at"].items())
        ui.log(f"  {m.name}: trained in {row['train_seconds']:.0f} s; {got}")
        if on_method is not None:  # kept rows included: a run stopped now loses nothing it was handed
            on_method(_report(recipe, info, [done[n] for n in names if n in done], run))
    return _report(recipe, info, [done[n] for n in names if n in done], run)


def _seeds_kept(recipe: CompareRecipe, row: dict, seed_key: str | None) -> bool:
    """Whether every seed of an earlier ``row`` is still listed and has a record under ``seed_key`` where
    this run looks for it, so a resumed run rebuilds the row (with any new seeds) instead of losing it."""
    seeds = row.get("seeds") if isinstance(row.get("seeds"), list) else []
    return bool(seed_key and seeds) and all(
        s in recipe.seeds and _seed_record(seed_folder(recipe, row["name"], s), (seed_key,), s) is not None
        for s in seeds)


def _refuse_dropping_rows(before: dict, keys: dict[str, str], sha256: str, out: Path,
                          rebuilt: set[str] = frozenset()) -> None:
    """A resumed run rewrites compare.json with this run's rows only: one it cannot keep (made from other
    weights, settings or eebert version, or for a method the recipe no longer has) would be lost, hours of
    training among them. Refused before anything runs; the report names what differs where it can tell.
    ``rebuilt``: rows under another key that this run makes again from their seeds' records (not lost)."""
    from .. import __version__

    rows = [r.get("name") for r in before.get("methods", [])]
    other = [n for n, r in zip(rows, before.get("methods", []))
             if n in keys and r.get("key") != keys[n] and n not in rebuilt]
    gone = [n for n in rows if n not in keys]
    if not other and not gone:
        return
    if before.get("checkpoint_sha256") not in (None, sha256):
        why = "made from other weights (the checkpoint's sha256 differs)"
    elif before.get("eebert") not in (None, __version__):
        why = f"made by eebert {before['eebert']} (this is {__version__})"
    elif before.get("checkpoint_sha256"):
        why = "made with other settings (a recipe setting that reaches a row, or the method, changed)"
    else:
        why = "made with other weights, settings or eebert version"
    what = "; ".join(([f"{', '.join(other)} {why}"] if other else []) + ([f"{', '.join(gone)} not in this recipe"]
                                                                         if gone else []))
    raise EebertError(f"{out / 'compare.json'} holds rows this run cannot keep and would drop: {what}",
                      "give another --out, or move that compare.json away to run everything again")


def _feature_seconds(rows: list[dict], run: dict) -> float:
    """The backbone passes over train behind these rows: what the shared caches' manifests recorded (every
    chunk once, whichever run computed it, a stopped one included) plus the passes of methods with caches of
    their own. Caches made before chunks' seconds were recorded: the shared pass's time summed over the runs
    that wrote this report, plus each method's own pass (which, on a shared cache, is its check of it)."""
    from ..model.feature_cache import recorded_seconds

    shared = {run["feature_folders"].get(r["name"]) for r in rows} - {None}
    recorded = [recorded_seconds(f) for f in shared]
    if not shared or None in recorded:
        return run["pass_seconds"] + sum(r["feature_seconds"] for r in rows)
    own = [r for r in rows if r["name"] not in run["feature_folders"]]
    return sum(recorded) + sum(r["feature_seconds"] for r in own)


def _report(recipe: CompareRecipe, info: dict, rows: list[dict], run: dict) -> dict:
    """``run``: the checkpoint's sha256 and the seconds of the shared training pass (``shared_pass``)."""
    from .. import __version__

    report = {"checkpoint": str(recipe.checkpoint), "data": to_dict(recipe.data), "split": recipe.split,
              # what every row's key hashes besides the recipe: a resumed run says which of them changed
              "checkpoint_sha256": run["checkpoint_sha256"], "eebert": __version__,
              "examples": info["examples"], "metric": info["metric"], "deployed_accuracy": info["deployed_accuracy"],
              "speedups": recipe.speedups, "shared_pass_seconds": round(run["pass_seconds"], 3),  # ms: a tiny pass is not 0
              "feature_seconds": round(_feature_seconds(rows, run), 3),
              "baseline": recipe.baseline or None, "seeds": list(recipe.seeds), "criteria": list(recipe.criteria),
              "placement": info["placement"], "validation_examples": info.get("validation_examples"),
              "task": info.get("task"), "methods": list(rows)}
    report["summary"] = summarise(report)
    return report
