"""`eebert attach` on a ``*ForTokenClassification`` checkpoint: per-token exits, backbone frozen.

One backbone pass caches each tagged word's state at every exit layer, through the same
disk cache as sentence exits (``model/feature_cache.py``: chunked, resumable, run by the
executor, so on Ray workers too); the exits then train on one row per word, on gold tags
or the deployed tagger's own, with the same objective and training loop as sentence exits
(``train.train_exits``), and are saved as any artifact is (``artifact.save_artifact``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..model import artifact as art
from ..model.checkpoint import Deployed
from ..core.configs import to_dict
from .config import AttachConfig
from ..data import DataConfig, TaskData
from ..model.device import module_device
from ..core.errors import EebertError
from ..exits import EXITS, ExitSet, ExitSpec
from ..objectives import OBJECTIVES, build_objective
from ..tasks import Task, exits_for, objective_for
from .loop import train_exits
from ..core.ui import SILENT, UI
from ..data.tagging import check_level, tag_ids
from ..deploy.executors import executor_of
from ..model import feature_cache
from ..model.device import Placement, resolve
from ..model.device_config import DeviceConfig
from ..model.token_features import gold_rows

def attach_tagger(deployed: Deployed, data: TaskData, data_cfg: DataConfig, cfg: AttachConfig, out: Path,
                  task: Task, layers: list[int], ui: UI = SILENT, device: DeviceConfig | None = None,
                  where: Placement | None = None) -> dict:
    """``device``: its executor runs the backbone pass (Ray: on workers), after every check here;
    ``where``: the resolved placement of this process's model (the cache's key records it)."""
    check_level(task, data)
    exits_name = exits_for(task, cfg.exits)
    objective_name = objective_for(task, cfg.objective)
    task.check_methods(OBJECTIVES.get(objective_name), exits_name, cfg.gates.type)
    if cfg.bypass:
        raise EebertError("bypasses (BADGE) serve sentence exits only", "drop bypass for this tagger")
    EXITS.check(exits_name, dict(cfg.exit_params), 1, task.name)
    train = data.split("train")
    gold, n_words = gold_rows(deployed.tokenizer, train, cfg.max_length, deployed.label2id, len(deployed.id2label),
                              f"{data.name} (train split)", feature_cache.CHUNK_ROWS)
    for name, split in data.splits.items():  # tags calibrate or benchmark would refuse fail now
        if name != "train" and split.label_column is not None:
            tag_ids(split.named_labels(split.labels, deployed.label2id), deployed.label2id, len(deployed.id2label),
                    f"{data.name} ({name} split)")
    before = {k: v.clone() for k, v in deployed.model.state_dict().items()}
    t0 = time.perf_counter()
    cache_dir = Path(cfg.feature_cache) if cfg.feature_cache else feature_cache.default_folder(out)
    runner = executor_of(device).attach_runner(device)  # None: this process computes the features
    placement = runner.placement if runner else (where or resolve(device)).describe()
    feats = feature_cache.attach_pass(deployed, train, layers, {layer: {feature_cache.WORD} for layer in layers},
                                      cfg.max_length, cfg.batch_size, cache_dir, placement, ui, runner)
    if len(feats.teacher) != n_words:  # the pass and this tokenisation must agree word for word
        raise RuntimeError(f"the backbone pass kept {len(feats.teacher)} words, tokenisation here {n_words}")
    t_features = time.perf_counter() - t0
    gold = gold if cfg.use_labels else None
    targets = gold if gold is not None else task.targets(feats.teacher)
    spec = ExitSpec(exits_name, layers, dict(cfg.exit_params))
    torch.manual_seed(cfg.train.seed)
    exits = ExitSet(spec, deployed.adapter.dims)
    exits.init_from(deployed.adapter)
    exits.to(module_device(deployed.model))
    objective = build_objective(objective_name, cfg.objective_params)
    with ui.progress(f"training {len(layers)} {exits_name} exits", cfg.train.epochs) as advance:
        summary = train_exits(exits, objective, feats, targets, cfg.train, lambda e, l: advance(1))
        advance(cfg.train.epochs - len(summary["history"]))
    exits.cpu()
    t_train = time.perf_counter() - t0 - t_features
    changed = [k for k, v in deployed.model.state_dict().items() if not torch.equal(v, before[k])]
    if changed:  # frozen by construction; this guards against regressions
        raise RuntimeError(f"backbone tensors changed during training: {changed[:3]}")
    extra = {
        "data": {**to_dict(data_cfg), **({"revision": data.source["revision"]} if data.source else {})},
        "objective": {"name": objective_name, "params": dict(cfg.objective_params)},
        "task": task.name,
        "targets": "labels" if gold is not None else "deployed-predictions",
        "training": {**to_dict(cfg.train), "examples": len(train), "words": len(targets),
                     "best_epoch": summary["best_epoch"], "heldout_loss": summary["heldout_loss"],
                     "feature_seconds": round(t_features, 2), "train_seconds": round(t_train, 2),
                     "objective_report": summary["objective"]},
    }
    art.save_artifact(out, art.make_config(deployed, spec, cfg.max_length, extra), exits)
    del feats
    if not cfg.feature_cache:  # the default cache served this run only
        feature_cache.remove(cache_dir)
    return {"artifact": str(out), "exits": spec.to_dict(), "targets": extra["targets"],
            "objective_report": summary["objective"], "leco_search": None, "bypass": None, "gates": None,
            "backbone_trained": False, "examples": len(train),
            **{k: extra["training"][k] for k in ("best_epoch", "heldout_loss", "feature_seconds", "train_seconds")}}


