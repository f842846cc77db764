"""Metrics, registered by name: accuracy, macro- and micro-F1, Pearson, Spearman, MSE.

Each task (``tasks/``) lists the metrics it reports, its headline first, and
``--metric`` overrides the headline; every report carries all metrics of its task.
Calibration needs a per-example additive quantity to search fast, so it works on
per-example correctness (accuracy, or agreement without labels) for classification
and on per-example squared error for regression; macro-F1, Pearson and Spearman,
which are not sums over examples, are evaluated exactly at the chosen point and
reported (see docs/backbones.md, "Tasks and metrics").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core.registry import Registry


@dataclass
class Metric:
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    higher_is_better: bool = True


METRICS: Registry[Metric] = Registry("metric")


def accuracy(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Share of examples answered right; for label sets [N, C], the exact-match (subset) accuracy."""
    eq = pred == ref
    return (eq.all(-1) if eq.dim() > 1 else eq).double().mean().item()


def _f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def micro_f1(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """F1 over all (example, label) decisions of label sets [N, C]."""
    p, r = pred.bool(), ref.bool()
    return _f1((p & r).sum().item(), (p & ~r).sum().item(), (~p & r).sum().item())


def macro_f1(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Unweighted mean of per-class F1 over the classes present in the reference or the predictions;
    for label sets [N, C], the mean of every label's F1."""
    if pred.dim() > 1:
        return sum(micro_f1(pred[:, c], ref[:, c]) for c in range(pred.shape[1])) / max(pred.shape[1], 1)
    classes = torch.unique(torch.cat([pred.reshape(-1), ref.reshape(-1)]))
    f1s = []
    for c in classes.tolist():
        tp = ((pred == c) & (ref == c)).sum().item()
        fp = ((pred == c) & (ref != c)).sum().item()
        fn = ((pred != c) & (ref == c)).sum().item()
        f1s.append(_f1(tp, fp, fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


def pearson(pred: torch.Tensor, ref: torch.Tensor) -> float:
    x, y = pred.double().reshape(-1), ref.double().reshape(-1)
    x, y = x - x.mean(), y - y.mean()
    den = (x.square().sum() * y.square().sum()).sqrt()
    return 0.0 if den.item() == 0 else (x @ y / den).item()


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    v = v.double().reshape(-1)
    order = torch.argsort(v)
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(len(v), dtype=torch.float64)
    uniq, inv = torch.unique(v, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, torch.ones_like(v))
    return (sums / counts)[inv]


def spearman(pred: torch.Tensor, ref: torch.Tensor) -> float:
    return pearson(_ranks(pred), _ranks(ref))


def mse(pred: torch.Tensor, ref: torch.Tensor) -> float:
    return (pred.double().reshape(-1) - ref.double().reshape(-1)).square().mean().item()


def entity_f1(pred, ref) -> float:
    """Token classification: exact-span entity F1 of tag lists per sentence (conlleval semantics)."""
    from .entities import entity_scores

    return entity_scores(ref, pred)["f1"]


def token_accuracy(pred, ref) -> float:
    """Token classification: share of words tagged as the reference tags them."""
    from .entities import token_accuracy as rate

    return rate(pred, ref)


METRICS.register("accuracy")(Metric(accuracy))
METRICS.register("macro-f1")(Metric(macro_f1))
METRICS.register("micro-f1")(Metric(micro_f1))
METRICS.register("pearson")(Metric(pearson))
METRICS.register("spearman")(Metric(spearman))
METRICS.register("mse")(Metric(mse, higher_is_better=False))
METRICS.register("entity-f1")(Metric(entity_f1))
METRICS.register("token-accuracy")(Metric(token_accuracy))
