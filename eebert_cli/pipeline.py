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
from .exits import EXITS, ExitSet, ExitSpec
from .features import Features, all_exit_logits, encode, extract
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
    return torch.tensor(map_labels(s.labels, deployed.label2id, len(deployed.id2label),
                                   f"the {split} split of {data.name}"))


def split_features(deployed: Deployed, data: TaskData, split: str, layers: list[int], reduction: str | None,
                   max_length: int, batch_size: int, ui: UI, needs: dict[int, set[str]] | None = None) -> Features:
    s = data.split(split)
    enc = encode(deployed.tokenizer, s, max_length)
    with ui.progress(f"backbone pass ({split}, {len(s)} examples)", len(s)) as advance:
        return extract(deployed.adapter, enc, layers, {reduction} if reduction else set(), batch_size, advance,
                       needs)


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
                 layers: list[int], ui: UI = SILENT):
    """Search (LECO) if asked, build the exits and train them on cached features."""
    dims = deployed.adapter.dims
    objective = build_objective(cfg.objective, cfg.objective_params)
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
    with ui.progress(f"training {len(spec.layers)} {spec.type} exits", cfg.train.epochs) as advance:
        summary = train_exits(exits, objective, feats, targets, cfg.train, lambda e, l: advance(1))
    return spec, exits, summary, search_report


def attach(checkpoint: str, data_cfg: DataConfig, cfg: AttachConfig, out: str | Path, ui: UI = SILENT) -> dict:
    deployed = load_deployed(checkpoint)
    data = load_data(data_cfg)
    labels = gold_labels(deployed, data, "train") if cfg.use_labels else None
    dims = deployed.adapter.dims
    layers = exit_layers(cfg, dims.num_layers)
    needs = features_needed(cfg, layers, dims)
    before = {k: v.clone() for k, v in deployed.model.state_dict().items()}

    t0 = time.perf_counter()
    feats = split_features(deployed, data, "train", layers, None, cfg.max_length, cfg.batch_size, ui, needs)
    t_features = time.perf_counter() - t0
    targets = labels if labels is not None else feats.teacher.argmax(-1)
    spec, exits, summary, search_report = train_method(deployed, feats, targets, cfg, layers, ui)
    t_train = time.perf_counter() - t0 - t_features
    changed = [k for k, v in deployed.model.state_dict().items() if not torch.equal(v, before[k])]
    if changed:  # the backbone is frozen by construction; this guards against regressions
        raise RuntimeError(f"backbone tensors changed during training: {changed[:3]}")

    extra = {
        "data": to_dict(data_cfg),
        "objective": {"name": cfg.objective, "params": dict(cfg.objective_params)},
        "targets": "labels" if labels is not None else "deployed-predictions",
        "training": {**to_dict(cfg.train), "examples": len(targets), "best_epoch": summary["best_epoch"],
                     "heldout_loss": summary["heldout_loss"], "feature_seconds": round(t_features, 2),
                     "train_seconds": round(t_train, 2), "objective_report": summary["objective"]},
    }
    if search_report is not None:
        extra["leco_search"] = search_report
    if exits.bypass is not None:
        extra["bypass"] = bypass_summary(exits, dims)
    config = art.make_config(deployed, spec, cfg.max_length, extra)
    art.save_artifact(Path(out), config, exits)
    return {"artifact": str(out), "exits": spec.to_dict(), "targets": extra["targets"],
            "objective_report": summary["objective"], "leco_search": search_report, "bypass": extra.get("bypass"),
            "examples": len(targets), **{k: extra["training"][k] for k in
                                          ("best_epoch", "heldout_loss", "feature_seconds", "train_seconds")}}


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

    @property
    def deployed_pred(self) -> torch.Tensor:
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
                           batch_size, ui, exits.needs())
    logits = all_exit_logits(exits, feats)
    dims = dep.adapter.dims
    cost = exit_costs(dims, feats.lengths, exits.layers, exits.flops)
    return SplitOutputs(logits, feats.lengths, gold_labels(dep, data, split), cost, full_cost(dims, feats.lengths))


def problem_for(outputs: SplitOutputs, criterion) -> Problem:
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
    criterion = build_criterion(cfg.criterion, criterion_params)
    outputs = split_outputs(artifact, data, "validation", ui=ui)
    problem = problem_for(outputs, criterion)
    ref_acc = problem.correct[:, -1].mean().item()
    mode, goal = ("target", cfg.target_speedup) if cfg.target_speedup is not None else (
        "drop", ref_acc - cfg.max_drop / 100.0)
    t0 = time.perf_counter()
    thresholds, curve = search(problem, criterion, mode, goal, cfg.per_layer, cfg.tolerance)
    seconds = time.perf_counter() - t0
    chosen = problem.outcome(thresholds)
    ci = bootstrap(problem, thresholds, cfg.bootstrap)
    n = problem.scores.shape[0]
    warnings = []
    half = (ci["accuracy_ci95"][1] - ci["accuracy_ci95"][0]) / 2
    if 100 * half > cfg.precision:
        warnings.append(f"validation split has {n} examples: accuracy is only known to about "
                        f"±{100 * half:.1f} points; use more validation data for tighter figures")
    metric = "accuracy" if outputs.labels is not None else "agreement"
    result = {
        "criterion": cfg.criterion,
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
        },
        "search_seconds": round(seconds, 3),
        "curve": [{**p, "threshold": thresholds_to_json([p["threshold"]])[0]} for p in curve],
        "warnings": warnings,
    }
    art.write_json(artifact.path / art.CALIBRATION, result)
    return result
