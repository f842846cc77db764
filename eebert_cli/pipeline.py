"""The steps behind the CLI verbs: attach, calibrate, benchmark-ready outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import artifact as art
from .calibrate import CalibrationConfig, Problem, bootstrap, search
from .checkpoint import Deployed, load_deployed
from .config import AttachConfig, to_dict
from .cost import exit_costs, full_cost
from .criteria import build_criterion
from .data import DataConfig, TaskData, load_data, map_labels
from .errors import EebertError
from .exits import ExitSet, ExitSpec
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


def split_features(deployed: Deployed, data: TaskData, split: str, layers: list[int], reduction: str,
                   max_length: int, batch_size: int, ui: UI) -> Features:
    s = data.split(split)
    enc = encode(deployed.tokenizer, s, max_length)
    with ui.progress(f"backbone pass ({split}, {len(s)} examples)", len(s)) as advance:
        return extract(deployed.adapter, enc, layers, {reduction}, batch_size, advance)


def attach(checkpoint: str, data_cfg: DataConfig, cfg: AttachConfig, out: str | Path, ui: UI = SILENT) -> dict:
    deployed = load_deployed(checkpoint)
    data = load_data(data_cfg)
    labels = gold_labels(deployed, data, "train") if cfg.use_labels else None
    for split in data.splits:  # fail now on labels calibrate or benchmark would reject later
        if split != "train" and data.splits[split].labels is not None:
            gold_labels(deployed, data, split)
    dims = deployed.adapter.dims
    spec = ExitSpec(cfg.exits, exit_layers(cfg, dims.num_layers), dict(cfg.exit_params))
    torch.manual_seed(cfg.train.seed)
    exits = ExitSet(spec, dims)
    exits.init_from(deployed.adapter)
    task = task_of(deployed.model.config)
    objective_name = cfg.objective
    if task == REGRESSION and objective_name == "ce-distil":  # the classification default; regress instead
        objective_name = "mse-distil"
    objective = build_objective(objective_name, cfg.objective_params)
    before = {k: v.clone() for k, v in deployed.model.state_dict().items()}

    t0 = time.perf_counter()
    feats = split_features(deployed, data, "train", spec.layers, exits.reduction, cfg.max_length,
                           cfg.batch_size, ui)
    t_features = time.perf_counter() - t0
    deployed_targets = feats.teacher[:, 0] if task == REGRESSION else feats.teacher.argmax(-1)
    targets = labels if labels is not None else deployed_targets
    with ui.progress(f"training {len(spec.layers)} {spec.type} exits", cfg.train.epochs) as advance:
        summary = train_exits(exits, objective, feats, targets, cfg.train, lambda e, l: advance(1))
    t_train = time.perf_counter() - t0 - t_features
    changed = [k for k, v in deployed.model.state_dict().items() if not torch.equal(v, before[k])]
    if changed:  # the backbone is frozen by construction; this guards against regressions
        raise RuntimeError(f"backbone tensors changed during training: {changed[:3]}")

    extra = {
        "data": to_dict(data_cfg),
        "objective": {"name": objective_name, "params": dict(cfg.objective_params)},
        "task": task,
        "targets": "labels" if labels is not None else "deployed-predictions",
        "training": {**to_dict(cfg.train), "examples": len(targets), "best_epoch": summary["best_epoch"],
                     "heldout_loss": summary["heldout_loss"], "feature_seconds": round(t_features, 2),
                     "train_seconds": round(t_train, 2), "objective_report": summary["objective"]},
    }
    config = art.make_config(deployed, spec, cfg.max_length, extra)
    art.save_artifact(Path(out), config, exits)
    return {"artifact": str(out), "exits": spec.to_dict(), "targets": extra["targets"],
            "examples": len(targets), **{k: extra["training"][k] for k in
                                          ("best_epoch", "heldout_loss", "feature_seconds", "train_seconds")}}


@dataclass
class SplitOutputs:
    """Everything calibration and the benchmark need from one backbone pass over a split."""

    logits: torch.Tensor          #: [N, K, C], deployed head last
    lengths: torch.Tensor         #: [N]
    labels: torch.Tensor | None   #: gold ids, if the data has labels
    cost: torch.Tensor            #: [N, K] FLOPs when leaving at each exit
    full: torch.Tensor            #: [N] FLOPs of the deployed model
    task: str = CLASSIFICATION    #: "classification" or "regression" (one output)

    @property
    def deployed_pred(self) -> torch.Tensor:
        if self.task == REGRESSION:
            return self.logits[:, -1, 0]
        return self.logits[:, -1].argmax(-1)

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
                  ui: UI = SILENT) -> SplitOutputs:
    dep, exits = artifact.deployed, artifact.exits
    feats = split_features(dep, data, split, exits.layers, exits.reduction, artifact.config["max_length"],
                           batch_size, ui)
    logits = all_exit_logits(exits, feats)
    dims = dep.adapter.dims
    cost = exit_costs(dims, feats.lengths, exits.layers, lambda k, seq: exits.heads[k].flops(seq))
    return SplitOutputs(logits, feats.lengths, gold_labels(dep, data, split), cost, full_cost(dims, feats.lengths),
                        task_of(dep.model.config))


def problem_for(outputs: SplitOutputs, criterion) -> Problem:
    if outputs.task == REGRESSION:  # per-example -squared error, see regression.py
        from .regression import problem

        return problem(outputs, criterion)
    scores = criterion.scores(outputs.logits)[:, :-1]
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
    outputs = split_outputs(artifact, data, "validation", ui=ui)
    criterion_name = cfg.criterion
    if outputs.task == REGRESSION and criterion_name == "entropy":  # the classification default
        criterion_name = "patience-regression"
    criterion = build_criterion(criterion_name, criterion_params)
    from .regression import check_criterion, max_drop_goal, tolerance as regression_tolerance

    check_criterion(criterion, outputs.task)
    problem = problem_for(outputs, criterion)
    ref_acc = problem.correct[:, -1].mean().item()
    mode, goal = ("target", cfg.target_speedup) if cfg.target_speedup is not None else (
        "drop", ref_acc - cfg.max_drop / 100.0)
    tol = cfg.tolerance
    if outputs.task == REGRESSION:
        goal = max_drop_goal(ref_acc, cfg.max_drop) if mode == "drop" else goal
        tol = regression_tolerance(problem) if tol is None else tol
    t0 = time.perf_counter()
    thresholds, curve = search(problem, criterion, mode, goal, cfg.per_layer, tol)
    seconds = time.perf_counter() - t0
    chosen = problem.outcome(thresholds)
    ci = bootstrap(problem, thresholds, cfg.bootstrap)
    n = problem.scores.shape[0]
    warnings = []
    half = (ci["accuracy_ci95"][1] - ci["accuracy_ci95"][0]) / 2
    if 100 * half > cfg.precision and outputs.task == CLASSIFICATION:
        warnings.append(f"validation split has {n} examples: accuracy is only known to about "
                        f"±{100 * half:.1f} points; use more validation data for tighter figures")
    metric = "accuracy" if outputs.labels is not None else "agreement"
    chosen_pred = outputs.logits.argmax(-1).gather(1, chosen.exits[:, None]).squeeze(1)
    if outputs.task == REGRESSION:
        chosen_pred = outputs.logits[..., 0].gather(1, chosen.exits[:, None]).squeeze(1)
    # metrics that are not sums over examples (macro-F1, Pearson, ...) are evaluated exactly here
    task_metrics = all_metrics(outputs.task, chosen_pred, outputs.labels)
    task_metrics.update({f"deployed_{k}": v for k, v in
                         all_metrics(outputs.task, outputs.deployed_pred, outputs.labels).items()})
    result = {
        "criterion": criterion_name,
        "criterion_params": criterion.params(),
        "mode": "target_speedup" if mode == "target" else "max_drop",
        "target_speedup": cfg.target_speedup,
        "max_drop": cfg.max_drop,
        "per_layer": cfg.per_layer,
        "exit_layers": artifact.exits.layers + [artifact.deployed.adapter.dims.num_layers],
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
    if outputs.task == REGRESSION:
        from .regression import relabel_calibration

        result = relabel_calibration(result, metric, chosen_pred, outputs, problem)
    art.write_json(artifact.path / art.CALIBRATION, result)
    return result
