"""`eebert attach`: train exits (and gates, and trained criteria) on a frozen deployed checkpoint."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from ..model import artifact as art
from ..model.checkpoint import Deployed, load_deployed
from .config import AttachConfig
from ..core.configs import to_dict
from ..criteria import CRITERIA, FITTED_KEY, feature_reduction
from ..data import DataConfig, TaskData, check_spec, load_data
from ..model.device import check_gates as check_device_gates, module_device, place_model
from ..model.device_config import DeviceConfig
from ..model.device import resolve as resolve_device_config
from ..core.errors import EebertError
from ..exits import EXITS, ExitSet, ExitSpec
from ..model.features import Encoded, Features, encode, extract
from ..tasks import Task, objective_for, task_of
from ..objectives import build_objective
from ..model.checkpoint import gold_labels
from ..backbones import check_max_length
from .loop import prepare_heads, train_exits
from ..core.ui import SILENT, UI


def exit_layers(cfg: AttachConfig, num_layers: int) -> list[int]:
    layers = sorted(set(cfg.layers)) if cfg.layers else list(range(1, num_layers))
    bad = [l for l in layers if not 1 <= l < num_layers]
    if bad:
        raise EebertError(f"no layer {bad[0]} to attach an exit after (the model has {num_layers} layers; "
                          f"layer {num_layers} is the deployed head's)", f"choose layers from 1 to {num_layers - 1}")
    return layers


def features_needed(cfg: AttachConfig, layers: list[int], dims) -> dict[int, set[str]]:
    """Layer -> reductions the training features must hold for these exits (and bypasses)."""
    needs = EXITS.get(cfg.exits).search_needs(cfg.exit_params, layers)
    if needs is not None:  # a search before training (LECO) reads more than the heads will
        for l, kinds in ExitSet(ExitSpec("mean-mlp", layers, {}, dict(cfg.bypass)), dims).taps().items():
            needs.setdefault(l, set()).update(kinds)
        return needs
    return ExitSet(ExitSpec(cfg.exits, layers, dict(cfg.exit_params), dict(cfg.bypass)), dims).needs()


def training_needs(cfg: AttachConfig, layers: list[int], dims) -> dict[int, set[str]]:
    """Layer -> reductions attach's training pass keeps: what the exits (and bypasses, and a search) read,
    plus what feature-reading criteria read (see Criterion.fit)."""
    needs = features_needed(cfg, layers, dims)
    for layer in layers:
        needs.setdefault(layer, set()).add(feature_reduction(cfg.exits))
    return needs


def train_method(deployed: Deployed, feats: Features, targets: torch.Tensor, cfg: AttachConfig,
                 layers: list[int], ui: UI = SILENT, objective_name: str | None = None):
    """Search (LECO) if asked, build the exits and train them on cached features."""
    dims = deployed.adapter.dims
    objective = build_objective(objective_name or cfg.objective, cfg.objective_params)
    from . import leco  # noqa: F401 (registers LECO's search in train.SEARCHES)

    params, search_report = prepare_heads(cfg.exits, dict(cfg.exit_params), feats, targets, layers, dims,
                                                         cfg.train.seed, ui)  # LECO searches here
    spec = ExitSpec(cfg.exits, layers, params, dict(cfg.bypass))
    torch.manual_seed(cfg.train.seed)
    exits = ExitSet(spec, dims)
    exits.init_from(deployed.adapter)
    exits.to(module_device(deployed.model))  # trained on the backbone's device, in float32
    with ui.progress(f"training {len(spec.layers)} {spec.type} exits", cfg.train.epochs) as advance:
        summary = train_exits(exits, objective, feats, targets, cfg.train, lambda e, l: advance(1))
        advance(cfg.train.epochs - len(summary["history"]))  # stopped early: the bar still completes
    exits.cpu()  # the artifact is device-neutral; what follows (trained criteria, gates) reads host features
    summary["objective_module"] = objective.cpu()  # the gate stage goes on with the same (bound) objective
    return spec, exits, summary, search_report


def check_gates(cfg: AttachConfig) -> None:
    """The gate kind known and every knob within the range `GateConfig` declares (a config built in Python
    never went through a recipe's or a flag's checks)."""
    from ..core.checks import validate
    from ..gates import GATES

    GATES.get(cfg.gates.type)
    validate(cfg.gates, "gates")


def attach_gates(deployed: Deployed, data: TaskData, cfg: AttachConfig, spec: ExitSpec, exits: ExitSet,
                 objective, feats: Features, targets: torch.Tensor, ui: UI) -> tuple[dict, tuple]:
    """SmartBERT stage two: add gates to trained exits and fit them with the backbone in the loop.

    Returns the gate report and (encoded held-out examples, their targets) for fitting
    trained criteria on gated features.
    """
    from ..gates import build_gates
    from ..gates.train import train_gates

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
           overwrite: bool = False, device: DeviceConfig | None = None) -> dict:
    """Attach and train exits; ``out`` is checked (see ``artifact.check_out``) and locked before any work."""
    from ..deploy.executors import executor_of

    where = resolve_device_config(device)  # a device that is not there fails before anything is written
    executor_of(device).check(device)  # and an unknown executor, or a Ray cluster that does not answer
    check_device_gates(where, bool(cfg.gates.type), training=True)
    out = art.check_out(out, checkpoint, overwrite)
    check_spec(data_cfg)  # data that is not there fails before the checkpoint loads
    if cfg.feature_cache:  # and a --feature-cache that is a file, damaged, or a folder of other files
        from ..model.feature_cache import check_folder

        check_folder(Path(cfg.feature_cache))
    with art.artifact_lock(out, "attach"):
        return _attach(checkpoint, absolute_data(data_cfg), cfg, out, ui, device, where)


def absolute_data(cfg: DataConfig) -> DataConfig:
    """The data spec with a local path made absolute: the artifact records it for later commands,
    which may run from another directory."""
    p = Path(cfg.spec).expanduser()
    if cfg.spec and p.exists():
        return replace(cfg, spec=str(p.resolve()))
    return cfg


def _attach(checkpoint: str, data_cfg: DataConfig, cfg: AttachConfig, out: Path, ui: UI,
            device: DeviceConfig | None, where) -> dict:
    from ..model import feature_cache

    data = load_data(data_cfg)  # a column the data lacks, or a bad row, fails before the checkpoint loads
    deployed = load_deployed(checkpoint)
    place_model(deployed.model, where)
    cfg = replace(cfg, max_length=check_max_length(cfg.max_length, deployed.model.config, "max_length"))
    task = task_of(deployed.model.config)
    if task.level == "token" or any(s.words for s in data.splits.values()):  # taggers: per-token exits
        from .tagging_attach import attach_tagger

        return attach_tagger(deployed, data, data_cfg, cfg, out, task,
                             exit_layers(cfg, deployed.adapter.dims.num_layers), ui, device, where)
    labels = gold_labels(deployed, data, "train") if cfg.use_labels else None
    for split in data.splits:  # fail now on labels calibrate or benchmark would reject later
        if split != "train" and data.splits[split].label_column is not None:
            gold_labels(deployed, data, split)
    dims = deployed.adapter.dims
    layers = exit_layers(cfg, dims.num_layers)
    objective_name = objective_for(task, cfg.objective)  # regression and multi-label have their own default
    # methods this task cannot use, and bad gate settings, fail now, not after the backbone pass
    from ..objectives import OBJECTIVES

    task.check_methods(OBJECTIVES.get(objective_name), cfg.exits, cfg.gates.type)
    if cfg.gates.type:
        check_gates(cfg)
    needs = training_needs(cfg, layers, dims)
    before = {k: v.clone() for k, v in deployed.model.state_dict().items()}

    t0 = time.perf_counter()
    cache_dir = Path(cfg.feature_cache) if cfg.feature_cache else feature_cache.default_folder(out)
    from ..deploy.executors import executor_of

    runner = executor_of(device).attach_runner(device)  # None: this process computes the features
    feats = feature_cache.attach_pass(deployed, data.split("train"), layers, needs, cfg.max_length, cfg.batch_size,
                                      cache_dir, runner.placement if runner else where.describe(), ui, runner)
    t_features = time.perf_counter() - t0
    targets = labels if labels is not None else task.targets(feats.teacher)
    spec, exits, summary, search_report = train_method(deployed, feats, targets, cfg, layers, ui, objective_name)
    gate_report = None
    if cfg.gates.type:
        gate_report, (held_enc, held_targets) = attach_gates(deployed, data, cfg, spec, exits,
                                                             summary["objective_module"], feats, targets, ui)
    extra_files, fitted = {}, {}
    if task.fitted_criteria:  # fitted criteria (learned) predict single-label correctness
        fitted = fit_criteria(task, deployed, exits, feats, targets, summary["holdout_rows"],
                              None if gate_report is None else (held_enc, held_targets), cfg.batch_size)
        extra_files = {rec.pop("tensors_file"): rec.pop("tensors") for rec in fitted.values()}
    t_train = time.perf_counter() - t0 - t_features
    changed = [k for k, v in deployed.model.state_dict().items() if not torch.equal(v, before[k])]
    trained_backbone = bool(cfg.gates.type and cfg.gates.train_backbone)
    if changed and not trained_backbone:  # frozen by construction; this guards against regressions
        raise RuntimeError(f"backbone tensors changed during training: {changed[:3]}")
    if trained_backbone:  # the artifact carries the changed backbone, and says so
        extra_files[art.BACKBONE_WEIGHTS] = deployed.model.state_dict()

    extra = {
        # a hub dataset id is pinned to the commit it resolved to, so later commands read the same rows
        "data": {**to_dict(data_cfg), **({"revision": data.source["revision"]} if data.source else {})},
        "objective": {"name": objective_name, "params": dict(cfg.objective_params)},
        "task": task.name,
        "targets": "labels" if labels is not None else "deployed-predictions",
        "training": {**to_dict(cfg.train), "examples": len(targets), "best_epoch": summary["best_epoch"],
                     "heldout_loss": summary["heldout_loss"], "feature_seconds": round(t_features, 2),
                     "train_seconds": round(t_train, 2), "objective_report": summary["objective"]},
    }
    if fitted:
        extra[FITTED_KEY] = fitted
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


def bypass_summary(exits: ExitSet, dims) -> dict:
    """Bypass overhead, per exit and relative to one encoder layer (at 128 tokens)."""
    from ..model.cost import layer_costs

    seq = torch.tensor([128.0], dtype=torch.float64)
    per_layer = float(layer_costs(dims, seq).mean())
    bp = exits.bypass
    return {"type": "badge", "block_size": bp.block_size, "width": bp.width, "source": bp.source,
            "blocks": len(bp.blocks), "params_per_block": bp.per_block_params(),
            "flops_per_exit_at_128_tokens": float(bp.flops(exits.layers[0], seq)),
            "overhead_per_layer": float(bp.flops(exits.layers[0], seq)) / per_layer}


def fit_criteria(task: Task, deployed: Deployed, exits: ExitSet, feats: Features, targets: torch.Tensor,
                 holdout: torch.Tensor, gated: tuple[Encoded, torch.Tensor] | None, batch_size: int) -> dict:
    """Run every criterion's of this task :meth:`~eebert_cli.criteria.Criterion.fit` hook.

    Trained criteria learn from rows the exits did not train on; with gates, from
    the gated pass over the gate stage's held-out rows (what inference reads).
    Returns name -> {"file", report..., "tensors_file", "tensors"} for those that trained.
    """
    fr = feature_reduction(exits.spec.type)
    if gated is not None:
        enc, targets = gated
        needs = exits.needs()
        for layer in exits.layers:
            needs.setdefault(layer, set()).add(fr)
        feats = extract(deployed.adapter, enc, exits.layers, set(), batch_size, None, needs, exits.gates)
        holdout = torch.arange(len(targets))
    out = {}
    for name in CRITERIA.names():
        cls = CRITERIA.get(name)
        if task.name not in cls.tasks:
            continue
        got = cls.fit(exits, feats, targets, holdout, fr)
        if got is not None:
            tensors, report = got
            out[name] = {"file": cls.trained_file, **report, "tensors_file": cls.trained_file, "tensors": tensors}
    return out
