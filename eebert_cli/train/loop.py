"""Train the exits on cached features, backbone frozen (it is never even touched here)."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ..model.device import adamw, cpu_threads, module_device
from .config import TrainConfig
from ..core.registry import Registry
from ..exits import ExitSet
from ..model.features import Features
from ..objectives import Objective, TrainBatch
from ..objectives.contrastive import cross_layer_infonce


#: exit heads decided by a search before training (LECO, ``leco.py``): head name ->
#: ``prepare(params, features, targets, layers, dims, seed, ui) -> (params to save, report)``
SEARCHES: Registry[Callable] = Registry("exit search")


def prepare_heads(name: str, params: dict, features: Features, targets: torch.Tensor, layers: list[int], dims,
                  seed: int, ui) -> tuple[dict, dict | None]:
    """Run the head's search if it has one; heads without one keep their params."""
    if name not in SEARCHES:
        return params, None
    return SEARCHES.get(name)(params, features, targets, layers, dims, seed, ui)


HELDOUT_CHUNK = 4096  #: held-out rows scored at a time
#: rows read between handing memory-mapped feature pages back (feature_cache): counted in rows, not
#: steps, so that the pages a process holds do not grow with the batch size
RELEASE_ROWS = 4096


def train_exits(exits: ExitSet, objective: Objective, features: Features, targets: torch.Tensor,
                cfg: TrainConfig, on_epoch: Callable[[int, float], None] | None = None) -> dict:
    """Fit exits (and any learned part of the objective) on the exits' device; keep the best held-out epoch.

    On the CPU the steps run on ``training_threads`` threads.
    """
    device = module_device(exits)
    with cpu_threads(training_threads(cfg, exits), device):
        return _train(exits, objective, features, targets, cfg, on_epoch, device)


def training_threads(cfg: TrainConfig, exits: ExitSet) -> int:
    """``cfg.threads``, or by head when -1: one thread where every exit reads a pooled vector (a step is a
    handful of small batch x hidden products, where handing work between threads costs more than it
    saves), torch's default (0) where an exit reads every token (a step runs a sequence model per exit,
    large enough to share). benchmarks/attach_cost.py measures the choice against the other."""
    if cfg.threads >= 0:
        return cfg.threads
    return 0 if any("tokens" in kinds for kinds in exits.needs().values()) else 1


def _train(exits, objective, features, targets, cfg, on_epoch, device) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(targets)
    order = torch.randperm(n, generator=gen)
    n_hold = int(n * cfg.holdout) if n >= 20 else 0
    hold, fit = order[:n_hold], order[n_hold:]
    objective.bind(exits)
    objective.to(device)
    gold, teacher = targets.to(device), features.teacher.to(device)  # small: [N] and [N, C]
    outer = fit[:0]
    if objective.bilevel and len(fit) >= 20:  # loss weights are fitted on their own held-out part
        n_outer = max(1, int(len(fit) * objective.outer_share))
        outer, fit = fit[:n_outer], fit[n_outer:]
    params = list(exits.parameters()) + ([] if objective.bilevel else list(objective.parameters()))
    opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def batch_of(rows: torch.Tensor) -> TrainBatch:
        on = rows.to(device)
        return TrainBatch(gold[on], teacher[on])

    def loss_on(rows: torch.Tensor) -> torch.Tensor:
        get = features.getter(rows, device)
        if not cfg.contrastive:
            return objective(exits(get), batch_of(rows))
        logits, reps = exits(get, hidden=True)
        return objective(logits, batch_of(rows)) + cfg.contrastive * cross_layer_infonce(
            reps, cfg.contrastive_temperature)

    def heldout_on(rows: torch.Tensor) -> float:
        """Mean held-out loss, a chunk at a time (features may be memory-mapped; RAM stays flat)."""
        total = 0.0
        for a in range(0, len(rows), HELDOUT_CHUNK):
            part = rows[a:a + HELDOUT_CHUNK]
            total += objective.heldout(exits(features.getter(part, device)), batch_of(part)).item() * len(part)
        return total / len(rows)

    best = (float("inf"), -1, None)
    history = []
    for epoch in range(cfg.epochs):
        exits.train()
        perm = fit[torch.randperm(len(fit), generator=gen)]
        total = 0.0
        read = 0
        for b in range(0, len(perm), cfg.batch_size):
            rows = perm[b:b + cfg.batch_size]
            read += len(rows)
            if features.release is not None and read >= RELEASE_ROWS:
                features.release()
                read = 0
            loss = loss_on(rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * len(rows)  # summed on the device: no host sync per step
            if len(outer):
                o = outer[torch.randint(len(outer), (min(cfg.batch_size, len(outer)),), generator=gen)]
                objective.outer_step(exits, (features.getter(rows, device), batch_of(rows)),
                                     (features.getter(o, device), batch_of(o)))
        exits.eval()
        train_loss = float(total) / len(perm)
        with torch.no_grad():
            held = heldout_on(hold) if n_hold else train_loss
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "heldout_loss": held})
        if on_epoch:
            on_epoch(epoch + 1, held)
        if held < best[0]:
            best = (held, epoch + 1, copy.deepcopy(exits.state_dict()))
        elif epoch + 1 - best[1] >= cfg.patience:
            break
    exits.load_state_dict(best[2])
    exits.eval()
    return {"best_epoch": best[1], "heldout_loss": best[0], "history": history,
            "objective": objective.report(), "holdout_rows": hold}
