"""Task metrics, registered by name: accuracy and macro-F1 (classification), Pearson, Spearman, MSE
(regression), accuracy (exact label set), micro- and macro-F1 over labels (multi-label).

The task picks the headline metric (classification: accuracy, regression: pearson, multi-label: micro-F1)
and ``--metric`` overrides it; every report carries all metrics of its task.
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

from .errors import EebertError
from .registry import Registry

from .tasks import CLASSIFICATION, MULTI_LABEL, REGRESSION, task_of  # noqa: F401 (re-exported)


@dataclass
class Metric:
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    tasks: tuple[str, ...]
    higher_is_better: bool = True


METRICS: Registry[Metric] = Registry("metric")


def predictions(logits: torch.Tensor, task: str) -> torch.Tensor:
    """What a model answers from its logits [..., C]: a class id, a value, or a 0/1 label set [..., C]."""
    if task == REGRESSION:
        return logits[..., 0]
    if task == MULTI_LABEL:
        return (logits > 0).long()  # sigmoid(z) > 0.5
    return logits.argmax(-1)


def same(a: torch.Tensor, b: torch.Tensor, task: str) -> torch.Tensor:
    """Whether two answers agree, per example (a label set must match whole)."""
    eq = a == b
    return eq.all(-1) if task == MULTI_LABEL else eq


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


METRICS.register("accuracy")(Metric(accuracy, (CLASSIFICATION, MULTI_LABEL)))
METRICS.register("macro-f1")(Metric(macro_f1, (CLASSIFICATION, MULTI_LABEL)))
METRICS.register("micro-f1")(Metric(micro_f1, (MULTI_LABEL,)))
METRICS.register("pearson")(Metric(pearson, (REGRESSION,)))
METRICS.register("spearman")(Metric(spearman, (REGRESSION,)))
METRICS.register("mse")(Metric(mse, (REGRESSION,), higher_is_better=False))

DEFAULT = {CLASSIFICATION: "accuracy", REGRESSION: "pearson", MULTI_LABEL: "micro-f1"}


def choose(task: str, name: str | None = None) -> str:
    """The headline metric: ``name`` if given (and fit for the task), else the task's default."""
    if not name:
        return DEFAULT[task]
    metric = METRICS.get(name)
    if task not in metric.tasks:
        fit = ", ".join(n for n in METRICS.names() if task in METRICS.get(n).tasks)
        raise EebertError(f"metric {name!r} is for {' / '.join(metric.tasks)}, this model does {task}",
                          f"use one of: {fit}")
    return name


def all_metrics(task: str, pred: torch.Tensor, ref: torch.Tensor | None) -> dict[str, float | None]:
    """Every metric of ``task`` (keys use underscores: macro_f1); None without a reference."""
    names = [n for n in METRICS.names() if task in METRICS.get(n).tasks]
    return {n.replace("-", "_"): (None if ref is None else METRICS.get(n).fn(pred, ref)) for n in names}
