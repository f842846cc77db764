"""Task metrics, registered by name: accuracy and macro-F1 (classification), Pearson, Spearman, MSE (regression).

The task picks the headline metric (classification: accuracy, regression: pearson)
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

CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass
class Metric:
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    task: str
    higher_is_better: bool = True


METRICS: Registry[Metric] = Registry("metric")


def accuracy(pred: torch.Tensor, ref: torch.Tensor) -> float:
    return (pred == ref).double().mean().item()


def macro_f1(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Unweighted mean of per-class F1 over the classes present in the reference or the predictions."""
    classes = torch.unique(torch.cat([pred.reshape(-1), ref.reshape(-1)]))
    f1s = []
    for c in classes.tolist():
        tp = ((pred == c) & (ref == c)).sum().item()
        fp = ((pred == c) & (ref != c)).sum().item()
        fn = ((pred != c) & (ref == c)).sum().item()
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
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


METRICS.register("accuracy")(Metric(accuracy, CLASSIFICATION))
METRICS.register("macro-f1")(Metric(macro_f1, CLASSIFICATION))
METRICS.register("pearson")(Metric(pearson, REGRESSION))
METRICS.register("spearman")(Metric(spearman, REGRESSION))
METRICS.register("mse")(Metric(mse, REGRESSION, higher_is_better=False))

DEFAULT = {CLASSIFICATION: "accuracy", REGRESSION: "pearson"}


MULTI_LABEL = "multi_label_classification"


def task_of(config) -> str:
    """A checkpoint's task from its config: one output or problem_type "regression" means regression.

    Multi-label checkpoints are refused: exits, criteria, calibration and the runtime all
    assume one label per example (softmax), which would silently answer the wrong question.
    """
    if getattr(config, "problem_type", None) == MULTI_LABEL:
        raise EebertError('multi-label checkpoints (problem_type "multi_label_classification") are not supported: '
                          "eebert's exits, criteria and metrics assume one label per example",
                          "use a single-label classifier or a regressor; see docs/reliability.md")
    if getattr(config, "problem_type", None) == REGRESSION or int(getattr(config, "num_labels", 2)) == 1:
        return REGRESSION
    return CLASSIFICATION


def choose(task: str, name: str | None = None) -> str:
    """The headline metric: ``name`` if given (and fit for the task), else the task's default."""
    if not name:
        return DEFAULT[task]
    metric = METRICS.get(name)
    if metric.task != task:
        fit = ", ".join(n for n in METRICS.names() if METRICS.get(n).task == task)
        raise EebertError(f"metric {name!r} is for {metric.task}, this model does {task}", f"use one of: {fit}")
    return name


def all_metrics(task: str, pred: torch.Tensor, ref: torch.Tensor | None) -> dict[str, float | None]:
    """Every metric of ``task`` (keys use underscores: macro_f1); None without a reference."""
    names = [n for n in METRICS.names() if METRICS.get(n).task == task]
    return {n.replace("-", "_"): (None if ref is None else METRICS.get(n).fn(pred, ref)) for n in names}
