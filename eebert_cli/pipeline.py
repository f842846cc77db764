"""The steps behind the CLI verbs: attach, calibrate, benchmark-ready outputs."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import artifact as art
from .calibrate import CalibrationConfig, Problem, bootstrap, noise_tolerance, search
from .checkpoint import Deployed, load_deployed
from .config import AttachConfig, to_dict
from .cost import exit_costs, full_cost
from .curves import criteria_for_curves, split_curves
from .criteria import CRITERIA, build_criterion
from .criteria.learned import LEARNED_FILE, fit_learn_to_exit, learned_reduction
from .data import DataConfig, TaskData, load_data, map_labels
from .device import DeviceConfig, check_gates as check_device_gates, cpu_threads, module_device, place_model
from .device import resolve as resolve_device_config
from .errors import EebertError
from .exits import EXITS, ExitSet, ExitSpec
from .features import Features, all_exit_logits, encode, extract
from .metrics import CLASSIFICATION, REGRESSION, all_metrics, task_of
from .objectives import build_objective
from .runtime import thresholds_to_json
from .train import train_exits
from .ui import SILENT, UI


def exit_layers(cfg: AttachConfig, num_layers: int) -> list[int]:
    layers = sorted(set(cfg.layers)) if cfg.layers else list(range(1, num_layers))
    bad = [l for l in layers if not 1 <= l < num_layers]
    if bad:
        raise EebertError(f"no layer {bad[0]} to attach an exit after (the model has {num_layers} layers; "
                          f"layer {num_layers} is the deployed head's)", f"choose layers from 1 to {num_layers - 1}")
    return layers


def gold_labels(deployed: Deployed, data: TaskData, split: str) -> torch.Tensor | None:
    s = data.split(split)
    if s.labels is None:
        return None
    if task_of(deployed.model.config) == REGRESSION:
        from .regression import gold_values

        return gold_values(s.labels, f"the {split} split of {data.name}")
    return torch.tensor(map_labels(s.labels, deployed.label2id, len(deployed.id2label),
                                   f"the {split} split of {data.name}"))


def features_needed(cfg: AttachConfig, layers: list[int], dims) -> dict[int, set[str]]:
    """Layer -> reductions the training features must hold for these exits (and bypasses)."""
    if cfg.exits == "leco" and "choices" not in cfg.exit_params:  # the search reads token states
        from .exits.leco import CANDIDATES

        names = cfg.exit_params.get("candidates") or CANDIDATES
        needs = {l: {"tokens"} | {EXITS.get(n).reduction for n in names} for l in layers}
        for l, kinds in ExitSet(ExitSpec("mean-mlp", layers, {}, dict(cfg.bypass)), dims).taps().items():
            needs.setdefault(l, set()).update(kinds)
        return needs
    return ExitSet(ExitSpec(cfg.exits, layers, dict(cfg.exit_params), dict(cfg.bypass)), dims).needs()


def train_method(deployed: Deployed, feats: Features, targets: torch.Tensor, cfg: AttachConfig,
                 layers: list[int], ui: UI = SILENT, objective_name: str | None = None):
    """Search (LECO) if asked, build the exits and train them on cached features."""
    dims = deployed.adapter.dims
    objective = build_objective(objective_name or cfg.objective, cfg.objective_params)
    search_report = None
    if cfg.exits == "leco" and "choices" not in cfg.exit_params:
        from .leco import search as leco_search

        epochs = int(cfg.exit_params.get("search_epochs", 3))
        torch.manual_seed(cfg.train.seed)
        with ui.progress(f"LECO search over {len(layers)} exits", epochs) as advance:
            search_report = leco_search(feats, targets, layers, dims, cfg.exit_params, lambda e: advance(1))
        cand = cfg.exit_params.get("candidate_params")
        spec = ExitSpec("leco", layers, {"choices": search_report["choices"],
                                         **({"candidate_params": cand} if cand else {})}, dict(cfg.bypass))
    else:
        spec = ExitSpec(cfg.exits, layers, dict(cfg.exit_params), dict(cfg.bypass))
    torch.manual_seed(cfg.train.seed)
    exits = ExitSet(spec, dims)
    exits.init_from(deployed.adapter)
    exits.to(module_device(deployed.model))  # trained on the backbone's device, in float32
    with ui.progress(f"training {len(spec.layers)} {spec.type} exits", cfg.train.epochs) as advance:
        summary = train_exits(exits, objective, feats, targets, cfg.train, lambda e, l: advance(1))
        advance(cfg.train.epochs - len(summary["history"]))  # stopped early: the bar still completes
    exits.cpu()  # the artifact is device-neutral; what follows (learned scorer, gates) reads host features
    summary["objective_module"] = objective.cpu()  # the gate stage goes on with the same (bound) objective
    return spec, exits, summary, search_report


def check_gates(cfg: AttachConfig, task: str) -> None:
    g = cfg.gates
    from .gates import GATES

    GATES.get(g.type)
    if task == REGRESSION:
        raise EebertError("skipping gates support classifiers only", "drop the gates for this regression model")
    if not 0.0 <= g.skip_target <= 1.0:
        raise EebertError(f"gate skip_target must be within [0, 1], got {g.skip_target}", "for example 0.25")
    if g.epochs < 1 or g.warmup_epochs < 0:
        raise EebertError("gate epochs must be >= 1 and warmup_epochs >= 0", "for example epochs = 3, warmup_epochs = 1")


def attach_gates(deployed: Deployed, data: TaskData, cfg: AttachConfig, spec: ExitSpec, exits: ExitSet,
                 objective, feats: Features, targets: torch.Tensor, ui: UI) -> tuple[dict, tuple]:
    """SmartBERT stage two: add gates to trained exits and fit them with the backbone in the loop.

    Returns the gate report and (encoded held-out examples, their targets) for refitting
    the `learned` criterion on gated features.
    """
    from .gates import build_gates
    from .gates.train import train_gates

    g = cfg.gates
    spec.gates = g.spec(deployed.adapter.dims.num_layers)
    exits.gates = build_gates(spec.gates, deployed.adapter.dims)
    enc = encode(deployed.tokenizer, data.split("train"), cfg.max_length)
    with ui.progress(f"training {len(spec.gates['layers'])} skipping gates"
                     + (" and the backbone" if g.train_backbone else ""), g.epochs) as advance:
        report = train_gates(deployed.adapter, exits, objective, enc, targets, feats.teacher, g, cfg.train.seed,
                             lambda e: advance(1))
    hold = report.pop("heldout_rows")
    return {"config": to_dict(g), **report}, (enc.subset(hold.tolist()), targets[hold])


def attach(checkpoint: str, data_cfg: DataConfig, cfg: AttachConfig, out: str | Path, ui: UI = SILENT,
           device: DeviceConfig | None = None) -> dict:
    from . import feature_cache

    where = resolve_device_config(device)
    check_device_gates(where, bool(cfg.gates.type), training=True)
    deployed = load_deployed(checkpoint)
    place_model(deployed.model, where)
    data = load_data(data_cfg)
    labels = gold_labels(deployed, data, "train") if cfg.use_labels else None
    for split in data.splits:  # fail now on labels calibrate or benchmark would reject later
        if split != "train" and data.splits[split].labels is not None:
            gold_labels(deployed, data, split)
    dims = deployed.adapter.dims
    layers = exit_layers(cfg, dims.num_layers)
    task = task_of(deployed.model.config)
    if cfg.gates.type:  # bad gate settings fail now, not after the backbone pass
        check_gates(cfg, task)
    needs = features_needed(cfg, layers, dims)
    for layer in layers:  # what the `learned` criterion's scorer reads
        needs.setdefault(layer, set()).add(learned_reduction(cfg.exits))
    before = {k: v.clone() for k, v in deployed.model.state_dict().items()}

    t0 = time.perf_counter()
    cache_dir = Path(cfg.feature_cache) if cfg.feature_cache else feature_cache.default_folder(out)
    runner = None
    if device is not None and device.engine == "ray":
        from .ray_engine import attach_runner

        runner = attach_runner(device)
    feats = feature_cache.attach_pass(deployed, data.split("train"), layers, needs, cfg.max_length, cfg.batch_size,
                                      cache_dir, where.describe(), ui, runner)
    t_features = time.perf_counter() - t0
    deployed_targets = feats.teacher[:, 0] if task == REGRESSION else feats.teacher.argmax(-1)
    targets = labels if labels is not None else deployed_targets
    objective_name = cfg.objective
    if task == REGRESSION and objective_name == "ce-distil":  # the classification default; regress instead
        objective_name = "mse-distil"
    spec, exits, summary, search_report = train_method(deployed, feats, targets, cfg, layers, ui, objective_name)
    gate_report = None
    if cfg.gates.type:
        gate_report, (held_enc, held_targets) = attach_gates(deployed, data, cfg, spec, exits,
                                                             summary["objective_module"], feats, targets, ui)
    extra_files, learned_report = {}, None
    if task != REGRESSION:
        lr = learned_reduction(cfg.exits)
        if gate_report is None:
            learned, learned_report = fit_learned(exits, feats, targets, summary["holdout_rows"], lr)
        else:  # the scorer must read what inference reads: gated states
            needs = exits.needs()
            for layer in exits.layers:
                needs.setdefault(layer, set()).add(lr)
            gfeats = extract(deployed.adapter, held_enc, exits.layers, set(), cfg.batch_size, None, needs,
                             exits.gates)
            learned, learned_report = fit_learned(exits, gfeats, held_targets, torch.arange(len(held_targets)), lr)
        extra_files = {LEARNED_FILE: learned.state_dict()}
    t_train = time.perf_counter() - t0 - t_features
    changed = [k for k, v in deployed.model.state_dict().items() if not torch.equal(v, before[k])]
    trained_backbone = bool(cfg.gates.type and cfg.gates.train_backbone)
    if changed and not trained_backbone:  # frozen by construction; this guards against regressions
        raise RuntimeError(f"backbone tensors changed during training: {changed[:3]}")
    if trained_backbone:  # the artifact carries the changed backbone, and says so
        extra_files[art.BACKBONE_WEIGHTS] = deployed.model.state_dict()

    extra = {
        "data": to_dict(data_cfg),
        "objective": {"name": objective_name, "params": dict(cfg.objective_params)},
        "task": task,
        "targets": "labels" if labels is not None else "deployed-predictions",
        "training": {**to_dict(cfg.train), "examples": len(targets), "best_epoch": summary["best_epoch"],
                     "heldout_loss": summary["heldout_loss"], "feature_seconds": round(t_features, 2),
                     "train_seconds": round(t_train, 2), "objective_report": summary["objective"]},
    }
    if learned_report is not None:
        extra["learned_exit"] = {"file": LEARNED_FILE, "criterion": "learned", **learned_report}
    if search_report is not None:
        extra["leco_search"] = search_report
    if exits.bypass is not None:
        extra["bypass"] = bypass_summary(exits, dims)
    if gate_report is not None:
        extra["gates"] = gate_report
    config = art.make_config(deployed, spec, cfg.max_length, extra)
    art.save_artifact(Path(out), config, exits, extra_files)
    del feats
    if not cfg.feature_cache:  # the default cache served this run only
        feature_cache.remove(cache_dir)
    return {"artifact": str(out), "exits": spec.to_dict(), "targets": extra["targets"],
            "objective_report": summary["objective"], "leco_search": search_report, "bypass": extra.get("bypass"),
            "gates": gate_report, "backbone_trained": trained_backbone,
            "examples": len(targets), **{k: extra["training"][k] for k in
                                          ("best_epoch", "heldout_loss", "feature_seconds", "train_seconds")}}


LEARNED_ROWS = 8192


def fit_learned(exits: ExitSet, feats: Features, targets: torch.Tensor, rows: torch.Tensor, reduction: str):
    """The `learned` criterion's scorer, fitted on rows the exits did not train on (all rows if none).

    At most ``LEARNED_ROWS`` of them (a seeded subset): the scorer is small, and its
    inputs are then read into RAM whatever the size of the training set.
    """
    if len(rows) == 0:
        rows = torch.arange(len(targets))
    if len(rows) > LEARNED_ROWS:
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:LEARNED_ROWS]]
    get = feats.getter(rows)
    x = torch.stack([get(reduction, layer) for layer in exits.layers], 1)
    exits.eval()
    with torch.no_grad():
        pred = torch.stack(exits(get), 1).argmax(-1)
    with cpu_threads(1):  # a small scorer: threads would mostly wait on each other (see train.py)
        module, report = fit_learn_to_exit(x, pred == targets[rows, None])
    return module, {"trained_on": "rows held out from exit training", "reduction": reduction, **report}


def bypass_summary(exits: ExitSet, dims) -> dict:
    """Bypass overhead, per exit and relative to one encoder layer (at 128 tokens)."""
    from .cost import layer_flops

    seq = torch.tensor([128.0], dtype=torch.float64)
    per_layer = float(layer_flops(dims, seq))
    bp = exits.bypass
    return {"type": "badge", "block_size": bp.block_size, "width": bp.width, "source": bp.source,
            "blocks": len(bp.blocks), "params_per_block": bp.per_block_params(),
            "flops_per_exit_at_128_tokens": float(bp.flops(exits.layers[0], seq)),
            "overhead_per_layer": float(bp.flops(exits.layers[0], seq)) / per_layer}


@dataclass
class SplitOutputs:
    """Everything calibration and the benchmark need from one backbone pass over a split."""

    logits: torch.Tensor          #: [N, K, C], deployed head last
    lengths: torch.Tensor         #: [N]
    labels: torch.Tensor | None   #: gold ids, if the data has labels
    cost: torch.Tensor            #: [N, K] FLOPs when leaving at each exit
    full: torch.Tensor            #: [N] FLOPs of the deployed model
    task: str = CLASSIFICATION    #: "classification" or "regression" (one output)
    features: torch.Tensor | None = None  #: [N, K-1, H] reductions the trainable exits read
    #: [N, C] the deployed model's own logits, when the last exit is not the deployed model
    #: (skipping gates or a trained backbone change the path to it)
    deployed_logits: torch.Tensor | None = None
    skipped: torch.Tensor | None = None   #: [N, L] layers the gates skipped

    @property
    def deployed_pred(self) -> torch.Tensor:
        last = self.logits[:, -1] if self.deployed_logits is None else self.deployed_logits
        if self.task == REGRESSION:
            return last[:, 0]
        return last.argmax(-1)

    @property
    def reference(self) -> torch.Tensor:
        """What "correct" means: gold labels, else the deployed model's predictions."""
        return self.labels if self.labels is not None else self.deployed_pred


def data_config_of(artifact: art.Artifact, override: DataConfig | None) -> DataConfig:
    if override is not None and override.spec:
        return override
    saved = artifact.config.get("data")
    if not saved:
        raise EebertError("no data given and the artifact records none", "pass --data")
    return DataConfig(**saved)


def split_outputs(artifact: art.Artifact, data: TaskData, split: str, batch_size: int = 64,
                  ui: UI = SILENT, deployed_logits: torch.Tensor | None = None) -> SplitOutputs:
    """``deployed_logits``: the shipped model's logits on this split, if already computed."""
    dep, exits = artifact.deployed, artifact.exits
    lr = learned_reduction(exits.spec.type)
    needs = exits.needs()
    for layer in exits.layers:  # the `learned` criterion reads this pooled reduction at every exit
        needs.setdefault(layer, set()).add(lr)
    s = data.split(split)
    enc = encode(dep.tokenizer, s, artifact.config["max_length"])
    gated = " with skipping gates" if exits.gates is not None else ""
    with ui.progress(f"backbone pass{gated} ({split}, {len(s)} examples)", len(s)) as advance:
        feats = extract(dep.adapter, enc, exits.layers, {exits.reduction} if exits.reduction else set(), batch_size,
                        advance, needs, exits.gates)
    if deployed_logits is None and artifact.changes_path:  # the shipped model, for agreement and reference
        with ui.progress(f"deployed model pass ({split})", len(s)) as advance:
            deployed_logits = extract(artifact.reference.adapter, enc, [], set(), batch_size, advance, {}).teacher
    logits = all_exit_logits(exits, feats)
    dims = dep.adapter.dims
    cost = exit_costs(dims, feats.lengths, exits.layers, exits.flops, feats.skipped, exits.gates)
    learned_in = torch.stack([feats.for_layer(lr, layer) for layer in exits.layers], 1)
    return SplitOutputs(logits, feats.lengths, gold_labels(dep, data, split), cost, full_cost(dims, feats.lengths),
                        task_of(dep.model.config), learned_in, deployed_logits, feats.skipped)


def problem_for(outputs: SplitOutputs, criterion) -> Problem:
    if outputs.task == REGRESSION:  # per-example -squared error, see regression.py
        from .regression import problem

        return problem(outputs, criterion)
    scores = criterion.scores(outputs.logits, outputs.features if criterion.needs_features else None)[:, :-1]
    correct = outputs.logits.argmax(-1) == outputs.reference[:, None]
    return Problem(scores, correct, outputs.cost, outputs.full)


def calibrate(artifact: art.Artifact, data: TaskData, cfg: CalibrationConfig, ui: UI = SILENT,
              criterion_params: dict | None = None) -> dict:
    if (cfg.target_speedup is None) == (cfg.max_drop is None):
        raise EebertError("give exactly one of --target-speedup and --max-drop", "for example --target-speedup 2.0")
    if cfg.target_speedup is not None and cfg.target_speedup <= 1.0:
        raise EebertError(f"target speedup must be above 1.0, got {cfg.target_speedup}", "for example --target-speedup 2.0")
    if cfg.max_drop is not None and cfg.max_drop < 0:
        raise EebertError(f"max drop must be >= 0 points, got {cfg.max_drop}", "for example --max-drop 1.0")
    CRITERIA.get(cfg.criterion)  # a bad name fails now, not after the backbone pass
    if artifact.exits.gates is None:
        outputs = split_outputs(artifact, data, "validation", ui=ui)
        result = choose_thresholds(outputs, cfg, criterion_params, artifact)
    else:
        outputs, result = calibrate_gated(artifact, data, cfg, criterion_params, ui)
    result["exit_layers"] = artifact.exits.layers + [artifact.deployed.adapter.dims.num_layers]
    if outputs.task == CLASSIFICATION:
        try:
            result["curves"] = {"validation": split_curves(
                outputs, artifact, criteria_for_curves(result["criterion"], result["criterion_params"], artifact))}
            result["curves"]["validation"]["chosen"] = {"speedup": result["validation"]["speedup_flops"],
                                                        "accuracy": result["validation"][result["metric"]]}
        except EebertError:  # curves are a picture; never fail a calibration over them
            pass
    art.write_json(artifact.path / art.CALIBRATION, result)
    return result


def calibrate_gated(artifact: art.Artifact, data: TaskData, cfg: CalibrationConfig,
                    criterion_params: dict | None, ui: UI) -> tuple[SplitOutputs, dict]:
    """Exit thresholds for each gate threshold in ``cfg.gate_thresholds``, the best pair kept.

    Gates trained at 0.5 may skip more than a target needs; a higher gate threshold
    skips less (1.0: never), so the search can trade skipping for exiting. The
    choice between gate thresholds follows the criterion grid's rule.
    """
    gates, tried, failure, deployed = artifact.exits.gates, [], None, None
    if not cfg.gate_thresholds:
        raise EebertError("no gate thresholds to try", "set calibrate.gate_thresholds, e.g. [0.5, 0.75, 0.9, 1.0]")
    for gt in cfg.gate_thresholds:
        try:
            gates.threshold = gt
        except ValueError as e:
            raise EebertError(str(e), "gate thresholds are skip probabilities, e.g. [0.5, 0.75, 0.9, 1.0]") from None
        outputs = split_outputs(artifact, data, "validation", ui=ui, deployed_logits=deployed)
        deployed = outputs.deployed_logits  # one pass of the shipped model serves every gate threshold
        try:
            result = choose_thresholds(outputs, cfg, criterion_params, artifact)
        except EebertError as e:
            failure = e
            continue
        tried.append((gt, outputs, result))
    if not tried:
        raise failure
    m = tried[0][2]["metric"]
    point = lambda t: (t[2]["validation"][m], t[2]["validation"]["speedup_flops"])  # noqa: E731
    if cfg.target_speedup is not None:
        best = max(point(t)[0] for t in tried)
        tie = noise_tolerance(best, len(outputs.lengths)) if cfg.tolerance is None else cfg.tolerance
        pick = min((t for t in tried if point(t)[0] >= best - tie), key=lambda t: (point(t)[1], -point(t)[0]))
    else:
        pick = max(tried, key=lambda t: (point(t)[1], point(t)[0]))
    gates.threshold, outputs, result = pick
    result["gate_threshold"] = pick[0]
    result["gate_grid"] = [{"gate_threshold": t[0], "speedup_flops": point(t)[1], m: point(t)[0],
                            "skip_rate": t[2]["validation"]["gates"]["skip_rate"]} for t in tried]
    return outputs, result


def skip_stats(skipped: torch.Tensor, exit_layer: torch.Tensor, gated: list[int]) -> dict:
    """What the gates did before each example's exit: share of gated layers skipped, layers run."""
    reached = torch.arange(1, skipped.shape[1] + 1)[None, :] <= exit_layer[:, None]   # [N, L]
    is_gated = torch.zeros(skipped.shape[1], dtype=torch.bool)
    is_gated[torch.tensor(gated) - 1] = True
    gated_reached = (reached & is_gated).sum().item()
    skips = (skipped & reached).sum().item()
    return {"skip_rate": skips / gated_reached if gated_reached else 0.0,
            "average_layers_skipped": skips / len(exit_layer),
            "average_layers_run": (reached & ~skipped).sum().item() / len(exit_layer)}


def criterion_name_for(outputs: SplitOutputs, name: str) -> str:
    if outputs.task == REGRESSION and name == "entropy":  # the classification default
        return "patience-regression"
    return name


def grid_points(name: str, cfg: CalibrationConfig, criterion_params: dict | None) -> list[dict]:
    """Parameter sets to try: the user's, completed by the criterion's grid for the ones left unset."""
    params = {**cfg.criterion_params, **(criterion_params or {})}
    grid = {k: v for k, v in CRITERIA.get(name).grid.items() if k not in params}
    return [{**params, **dict(zip(grid, vals))} for vals in itertools.product(*grid.values())]


def choose_thresholds(outputs: SplitOutputs, cfg: CalibrationConfig, criterion_params: dict | None = None,
           artifact: art.Artifact | None = None) -> dict:
    """Thresholds (and grid parameters) for ``cfg`` on cached validation outputs; the calibration record."""
    from .regression import check_criterion, max_drop_goal, tolerance as regression_tolerance

    name = criterion_name_for(outputs, cfg.criterion)
    regression = outputs.task == REGRESSION
    t0 = time.perf_counter()
    tried, failure, ref_acc = [], None, None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small tensor ops: thread hand-offs cost more than they save
    try:
        for params in grid_points(name, cfg, criterion_params):
            criterion = build_criterion(name, params, artifact)
            check_criterion(criterion, outputs.task)
            problem = problem_for(outputs, criterion)
            if ref_acc is None:  # the deployed model's score; the same for every criterion
                ref_acc = problem.correct[:, -1].mean().item() if outputs.deployed_logits is None else \
                    (outputs.deployed_pred == outputs.reference).double().mean().item()
                mode, goal = ("target", cfg.target_speedup) if cfg.target_speedup is not None else (
                    "drop", max_drop_goal(ref_acc, cfg.max_drop) if regression else ref_acc - cfg.max_drop / 100.0)
                tol = (regression_tolerance(problem) if regression else None) if cfg.tolerance is None \
                    else cfg.tolerance
            try:
                thresholds, curve = search(problem, criterion, mode, goal, cfg.per_layer, tol)
            except EebertError as e:
                failure = e
                continue
            tried.append((criterion, problem, thresholds, curve, problem.outcome(thresholds)))
    finally:
        torch.set_num_threads(threads)
    if not tried:
        raise failure
    n = outputs.logits.shape[0]
    if mode == "target":  # the search's tie rule across grid points: within noise of the best, nearest the target
        best = max(t[4].accuracy for t in tried)
        tie = noise_tolerance(best, n) if tol is None else tol
        pick = min((t for t in tried if t[4].accuracy >= best - tie), key=lambda t: (t[4].speedup, -t[4].accuracy))
    else:
        pick = max(tried, key=lambda t: (t[4].speedup, t[4].accuracy))
    criterion, problem, thresholds, curve, chosen = pick
    seconds = time.perf_counter() - t0
    ci = bootstrap(problem, thresholds, cfg.bootstrap)
    warnings = []
    half = (ci["accuracy_ci95"][1] - ci["accuracy_ci95"][0]) / 2
    if 100 * half > cfg.precision and not regression:
        warnings.append(f"validation split has {n} examples: accuracy is only known to about "
                        f"±{100 * half:.1f} points; use more validation data for tighter figures")
    metric = "accuracy" if outputs.labels is not None else "agreement"
    if regression:
        chosen_pred = outputs.logits[..., 0].gather(1, chosen.exits[:, None]).squeeze(1)
    else:
        chosen_pred = outputs.logits.argmax(-1).gather(1, chosen.exits[:, None]).squeeze(1)
    # metrics that are not sums over examples (macro-F1, Pearson, ...) are evaluated exactly here
    task_metrics = all_metrics(outputs.task, chosen_pred, outputs.labels)
    task_metrics.update({f"deployed_{k}": v for k, v in
                         all_metrics(outputs.task, outputs.deployed_pred, outputs.labels).items()})
    result = {
        "criterion": name,
        "criterion_params": criterion.params(),
        "mode": "target_speedup" if mode == "target" else "max_drop",
        "target_speedup": cfg.target_speedup,
        "max_drop": cfg.max_drop,
        "per_layer": cfg.per_layer,
        "thresholds": thresholds_to_json(thresholds.tolist()),
        "metric": metric,
        "validation": {
            "examples": n,
            "speedup_flops": chosen.speedup,
            metric: chosen.accuracy,
            f"deployed_{metric}": ref_acc,
            "agreement": (outputs.logits.argmax(-1).gather(1, chosen.exits[:, None]).squeeze(1)
                          == outputs.deployed_pred).double().mean().item(),
            "speedup_ci95": ci["speedup_ci95"],
            f"{metric}_ci95": ci["accuracy_ci95"],
            "metrics": task_metrics,
        },
        "task": outputs.task,
        "search_seconds": round(seconds, 3),
        "curve": [{**p, "threshold": thresholds_to_json([p["threshold"]])[0]} for p in curve],
        "warnings": warnings,
    }
    if outputs.skipped is not None:
        layers = (artifact.exits.layers + [artifact.deployed.adapter.dims.num_layers]) if artifact else None
        if layers:
            result["validation"]["gates"] = skip_stats(outputs.skipped, torch.tensor(layers)[chosen.exits],
                                                       artifact.exits.gates.layers)
    if len(tried) > 1:
        result["grid"] = [{"params": t[0].params(), "speedup_flops": t[4].speedup, metric: t[4].accuracy}
                          for t in tried]
    if regression:
        from .regression import relabel_calibration

        result = relabel_calibration(result, metric, chosen_pred, outputs, problem)
    return result
