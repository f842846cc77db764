"""Fit skipping gates with the backbone in the loop (its features change with every gate).

Stage two of a gated attach: the exits were first trained on the frozen
backbone's cached features; here every step runs the backbone with the gates
in place, so gates learn which layers each example can spare and the exits
adapt to the states they now see. Per gated layer l:

    h_l = w * h_(l-1) + (1 - w) * layer_l(h_(l-1))

with w the gate's skip probability during the soft warm-up, then its hard
0/1 value with a straight-through gradient ("hard weights"), so the last
epochs train the exact computation inference runs. Loss: the objective over
the exits, plus cross-entropy and distillation for the deployed head on the
gated path (skipping must not wreck the final answer), plus the skip penalty
``skip_weight * (mean w - skip_target)^2``, which keeps gates from never
skipping (the exits' loss alone prefers that) and from always skipping.
The backbone's weights are frozen unless ``train_backbone``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from ..model.device import adamw
from ..exits import ExitSet, reduce
from ..objectives import Objective, TrainBatch
from ..objectives.ce_distil import kd_loss
from .config import GateConfig

if TYPE_CHECKING:  # features imports gates: the annotation only
    from ..model.features import Encoded


def hard_weight(g: torch.Tensor) -> torch.Tensor:
    """0/1 in the forward pass, the sigmoid's gradient in the backward pass (straight-through)."""
    return (g >= 0.5).to(g.dtype) + g - g.detach()


def gated_forward(adapter, exits: ExitSet, batch: dict, hard: bool):
    """Exit logits, deployed-head logits and gate weights [B, G] of one batch, differentiably."""
    gates, mask = exits.gates, batch["attention_mask"]
    needs = exits.needs()
    hidden = adapter.embed(batch["input_ids"], mask, batch["token_type_ids"])
    state = adapter.prepare(hidden, mask)
    kept = {(r, 0): reduce(r, hidden, mask) for r in needs.get(0, ())}
    weights = []
    for i in range(adapter.dims.num_layers):
        new = adapter.layer(i, hidden, state)
        if i + 1 in gates:
            g = gates.prob(i + 1, hidden, mask)
            w = hard_weight(g) if hard else g
            weights.append(w)
            hidden = w[:, None, None] * hidden + (1 - w)[:, None, None] * new
        else:
            hidden = new
        for r in needs.get(i + 1, ()):
            kept[(r, i + 1)] = reduce(r, hidden, mask)
    logits = exits(lambda r, l: kept[(r, l)])
    return logits, adapter.head(hidden, mask), torch.stack(weights, 1)


def train_gates(adapter, exits: ExitSet, objective: Objective, encoded: Encoded, targets: torch.Tensor,
                teacher: torch.Tensor, cfg: GateConfig, seed: int = 0,
                on_epoch: Callable[[int], None] | None = None) -> dict:
    """Train gates (and exits, and the backbone if asked) in place; return the per-epoch report."""
    gen = torch.Generator().manual_seed(seed)
    n = len(encoded)
    rows = torch.randperm(n, generator=gen)
    if cfg.max_examples and cfg.max_examples < n:
        rows = rows[:cfg.max_examples]
    n_hold = max(1, len(rows) // 10) if len(rows) >= 20 else 0
    hold, fit = rows[:n_hold], rows[n_hold:]
    model = adapter.model
    groups = [{"params": list(exits.gates.parameters()), "lr": cfg.lr}]
    exit_params = [p for n_, p in exits.named_parameters() if not n_.startswith("gates.")]
    if cfg.exit_lr > 0:
        groups.append({"params": exit_params, "lr": cfg.exit_lr})
    else:
        for p in exit_params:
            p.requires_grad_(False)
    if cfg.train_backbone:
        for p in model.parameters():
            p.requires_grad_(True)
        groups.append({"params": list(model.parameters()), "lr": cfg.backbone_lr})
    opt = adamw(groups, weight_decay=0.0)

    def batch_loss(idx: torch.Tensor, hard: bool):
        b = encoded.collate(idx.tolist())
        logits, final, w = gated_forward(adapter, exits, b, hard)
        tb = TrainBatch(targets[idx], teacher[idx])
        task = objective(logits, tb) + F.cross_entropy(final, tb.targets) + kd_loss(final, tb.teacher, 2.0)
        return task, w, final

    history = []
    try:
        for epoch in range(cfg.epochs):
            hard = epoch >= cfg.warmup_epochs
            exits.train()
            perm = fit[torch.randperm(len(fit), generator=gen)]
            total, rate = 0.0, 0.0
            for a in range(0, len(perm), cfg.batch_size):
                idx = perm[a:a + cfg.batch_size]
                task, w, _ = batch_loss(idx, hard)
                loss = task + cfg.skip_weight * (w.mean() - cfg.skip_target) ** 2
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += task.item() * len(idx)
                rate += w.detach().mean().item() * len(idx)
            exits.eval()
            entry = {"epoch": epoch + 1, "hard": hard, "train_loss": total / len(perm), "train_skip_rate": rate / len(perm)}
            if n_hold:
                entry.update(evaluate(adapter, exits, encoded, hold, targets, teacher, batch_loss))
            history.append(entry)
            if on_epoch:
                on_epoch(epoch + 1)
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in exit_params:
            p.requires_grad_(True)
        exits.eval()
    return {"examples": len(rows), "heldout_examples": n_hold, "history": history, "heldout_rows": hold,
            **({"heldout_skip_rate_per_layer": history[-1].get("skip_rate_per_layer")} if history else {})}


@torch.no_grad()
def evaluate(adapter, exits, encoded, hold, targets, teacher, batch_loss, batch_size: int = 64) -> dict:
    """Held-out loss, hard skip rate (overall and per gated layer) and final-head agreement."""
    total, weights, agree = 0.0, [], 0
    for a in range(0, len(hold), batch_size):
        idx = hold[a:a + batch_size]
        task, w, final = batch_loss(idx, True)
        total += task.item() * len(idx)
        weights.append(w)
        agree += int((final.argmax(-1) == teacher[idx].argmax(-1)).sum())
    w = torch.cat(weights)
    return {"heldout_loss": total / len(hold), "skip_rate": w.mean().item(),
            "final_agreement_with_deployed": agree / len(hold),
            "skip_rate_per_layer": {str(l): round(float(x), 4) for l, x in zip(exits.gates.layers, w.mean(0))}}
