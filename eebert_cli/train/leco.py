"""LECO exit search (eebert's reading): differentiable architecture search per exit, then retrain.

Each exit starts as a mixed operation over the candidate heads
(``exits.leco.CANDIDATES`` by default), weighted by softmax(alpha) per layer.
First-order DARTS on the frozen backbone's cached token states: candidate
weights take a step on a training part, architecture weights alpha a step on
a held-out part (``search_holdout``), alternately. Then every exit keeps its
argmax candidate, is rebuilt from scratch and trained like any other exit
(``train.train_exits``). The search loss is per-exit cross-entropy to the
targets plus distillation from the deployed model (the ``ce-distil`` objective
with its defaults), whatever objective the retraining uses.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from ..backbones import Dims
from ..model.device import adamw
from ..exits import EXITS
from ..exits.leco import MixedExit
from ..model.features import Features
from ..objectives import TrainBatch, build_objective
from .loop import SEARCHES



def search(features: Features, targets: torch.Tensor, layers: list[int], dims: Dims,
           params: dict[str, Any] | None = None, on_epoch: Callable[[int], None] | None = None) -> dict:
    """Run the search; returns {"choices": {layer: name}, "alphas": ..., "seconds": ...}."""
    p = EXITS.check("leco", params, 1)  # keys, types and ranges declared by LecoExit
    names = EXITS.get("leco").candidates_of(p)
    if features.tokens is None:
        raise RuntimeError("the LECO search needs cached token states")
    epochs, lr, arch_lr = int(p.get("search_epochs", 3)), float(p.get("search_lr", 1e-3)), float(p.get("arch_lr", 3e-3))
    gen = torch.Generator().manual_seed(int(p.get("seed", 0)))
    n = len(targets)
    order = torch.randperm(n, generator=gen)
    cap = int(p.get("search_samples", 4000))
    if cap and n > cap:  # the search runs every candidate on every layer: a subsample keeps it affordable
        order = order[:cap]
    n_arch = max(1, int(len(order) * float(p.get("search_holdout", 0.5))))
    arch_rows, w_rows = order[:n_arch], order[n_arch:]
    if len(w_rows) == 0:
        w_rows = arch_rows
    mixed = nn.ModuleList(MixedExit(dims, names, p.get("candidate_params")) for _ in layers)
    alphas = [m.alpha for m in mixed]
    weights = [q for nme, q in mixed.named_parameters() if not nme.endswith("alpha")]
    w_opt = adamw(weights, lr=lr, weight_decay=0.01)
    a_opt = torch.optim.Adam(alphas, lr=arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    loss_fn = build_objective("ce-distil")
    t0 = time.perf_counter()
    bs = 64
    for epoch in range(epochs):
        mixed.train()
        perm = w_rows[torch.randperm(len(w_rows), generator=gen)]
        for b in range(0, len(perm), bs):
            rows = perm[b:b + bs]
            get = features.getter(rows)
            loss = loss_fn([m(get("tokens", l)) for m, l in zip(mixed, layers)],
                           TrainBatch(targets[rows], features.teacher[rows]))
            w_opt.zero_grad(); loss.backward(); w_opt.step()
            # first-order DARTS: alphas step on a held-out batch at the current candidate weights
            a = arch_rows[torch.randint(len(arch_rows), (min(bs, len(arch_rows)),), generator=gen)]
            get = features.getter(a)
            aloss = loss_fn([m(get("tokens", l)) for m, l in zip(mixed, layers)],
                            TrainBatch(targets[a], features.teacher[a]))
            a_opt.zero_grad(); w_opt.zero_grad(); aloss.backward(); a_opt.step()
        if on_epoch:
            on_epoch(epoch + 1)
    probs = {str(l): {nm: round(float(x), 4) for nm, x in zip(names, torch.softmax(m.alpha.detach(), 0))}
             for m, l in zip(mixed, layers)}
    choices = {str(l): names[int(m.alpha.detach().argmax())] for m, l in zip(mixed, layers)}
    return {"choices": choices, "alphas": probs, "candidates": names, "epochs": epochs,
            "samples": len(order), "seconds": round(time.perf_counter() - t0, 2)}


@SEARCHES.register("leco")
def prepare(params, features, targets, layers, dims, seed, ui) -> tuple[dict, dict | None]:
    """``--exits leco``: search the heads (unless ``choices`` are given) and return the params to save."""
    params = EXITS.check("leco", params, 1)
    if params.get("choices"):
        return params, None
    torch.manual_seed(seed)
    with ui.progress(f"LECO search over {len(layers)} exits", params.get("search_epochs", 3)) as advance:
        report = search(features, targets, layers, dims, params, lambda e: advance(1))
    cand = params.get("candidate_params")
    return {"choices": report["choices"], **({"candidate_params": cand} if cand else {})}, report
