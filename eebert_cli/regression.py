"""Regression (STS-B style, one output): gold values, the calibration Problem, benchmark rows.

Per-example correctness does not exist for a real-valued output, so the
calibration Problem's per-example "correctness" is the negative squared error
to the reference (gold values, else the deployed model's output). Its mean is
-MSE, which is additive over examples, so the fast threshold search works
unchanged: ``target_speedup`` finds the lowest validation MSE at the speedup;
``max_drop`` D allows the MSE to rise by at most D percent over the deployed
model's. Pearson and Spearman (not additive) are evaluated exactly at the
chosen thresholds and reported, Pearson being the headline metric by default.
"""

from __future__ import annotations

import math

import torch

from .baselines import oracle_exits, static_exit
from .calibrate import Problem, decide
from .errors import EebertError
from .metrics import REGRESSION, all_metrics


def gold_values(labels: list, source: str) -> torch.Tensor:
    try:
        return torch.tensor([float(v) for v in labels], dtype=torch.float32)
    except (TypeError, ValueError):
        bad = next(v for v in labels if not _is_number(v))
        raise EebertError(f"label {bad!r} in {source} is not a number, but the model is a regressor (one output)",
                          "give numeric scores in the label column") from None


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def problem(outputs, criterion) -> Problem:
    """Per-example "correctness" = -squared error / scale, in [-1, 0] like an accuracy's complement.

    Scaling by the largest squared error keeps the search's accuracy-shaped
    bounds valid and changes no ranking; ``problem.mse_scale`` undoes it.
    """
    scores = criterion.scores(outputs.logits)[:, :-1]
    values = outputs.logits[..., 0].double()                       # [N, K]
    err = (values - outputs.reference.double()[:, None]).square()
    scale = max(err.max().item(), 1e-12)
    p = Problem(scores, -err / scale, outputs.cost, outputs.full)
    p.mse_scale = scale
    return p


def tolerance(p: Problem) -> float:
    """Half a standard error of the deployed model's validation MSE: smaller gaps are noise."""
    err = -p.correct[:, -1]
    return 0.5 * err.std().item() / math.sqrt(max(len(err), 1)) if len(err) > 1 else 0.0


def max_drop_goal(ref: float, max_drop: float) -> float:
    """Goal on -MSE for ``--max-drop`` D: MSE at most D percent above the deployed model's."""
    return ref * (1 + max_drop / 100.0)


def check_criterion(criterion, task: str) -> None:
    tasks = getattr(type(criterion), "tasks", ("classification",))
    if task not in tasks:
        raise EebertError(f"criterion {criterion.registry_name!r} is for {' / '.join(tasks)}, this model does {task}",
                          "use --criterion patience-regression" if task == REGRESSION
                          else "use --criterion label-margin" if task == "multi-label"
                          else "use a classification criterion such as entropy")


def rows(model, out) -> dict:
    """Deployed, early-exit, static-truncation and oracle rows for a regressor, from cached outputs."""
    layers = torch.tensor(model.exit_layers, dtype=torch.float64)
    p = problem(out, model.criterion)
    e = decide(p.scores, torch.tensor(model.thresholds, dtype=torch.float64))
    values = out.logits[..., 0]
    dep = values[:, -1]
    full = out.full.sum().item()

    def row(pred, cost_total, **extra):
        return {**all_metrics(REGRESSION, pred, out.labels),
                "mse_to_deployed": (pred.double() - dep.double()).square().mean().item(),
                "speedup_flops": full / cost_total, **extra}

    pred = values.gather(1, e[:, None]).squeeze(1)
    avg_layer = layers[e].mean().item()
    early = row(pred, out.cost.gather(1, e[:, None]).sum().item(),
                speedup_layers=model.num_layers / avg_layer, layers_saved=1 - avg_layer / model.num_layers,
                average_exit_layer=avg_layer,
                exit_histogram={str(int(l)): int((layers[e] == l).sum()) for l in layers.tolist()})
    k, static_speedup = static_exit(out, model.exits, model.adapter.dims, early["speedup_flops"])
    static = row(values[:, k], full / static_speedup, layer=int(layers[k]))
    # Oracle: each example leaves at the first exit whose squared error is no worse than the deployed head's.
    oe = oracle_exits(p.correct >= p.correct[:, -1:])
    oracle = row(values.gather(1, oe[:, None]).squeeze(1), out.cost.gather(1, oe[:, None]).sum().item(),
                 average_exit_layer=layers[oe].mean().item())
    deployed = row(dep, full)
    return {"deployed": deployed, "early_exit": early, "static_truncation": static, "oracle": oracle,
            "exit_index": e}


def relabel_calibration(cal, metric: str, pred: torch.Tensor, outputs, p: Problem):
    """Name the calibration's figures for regression: the search ran on scaled -MSE (see module doc)."""
    from dataclasses import replace

    v = dict(cal.validation)
    s = p.mse_scale
    neg, dep, ci = s * v.pop(metric), s * v.pop(f"deployed_{metric}"), [s * c for c in v.pop(f"{metric}_ci95")]
    v.pop("agreement", None)
    name = "mse" if outputs.labels is not None else "mse_to_deployed"
    v.update({name: -neg, f"deployed_{name}": -dep, f"{name}_ci95": [-ci[1], -ci[0]],
              "mse_to_deployed": (pred.double() - outputs.deployed_pred.double()).square().mean().item()})
    curve = [{"threshold": c["threshold"], "speedup": c["speedup"], name: -s * c["accuracy"]} for c in cal.curve]
    return replace(cal, metric=name, validation=v, curve=curve)
