"""Speedup-accuracy curves from cached exit outputs: every criterion, static truncation, the oracle.

A criterion's curve sweeps one global threshold over its scores (the papers'
picture); calibrated per-exit thresholds sit on or above it. Static truncation
and the oracle are defined in `baselines.py`: the static curve has one point per
exit; the oracle curve starts at the oracle and, for more speed, moves the
samples whose move to the first exit saves most there, one lost answer each.
"""

from __future__ import annotations

import torch

from .baselines import oracle_exits, static_costs
from .threshold_search import INF, Problem
from ..criteria import CRITERIA, Criterion, build_criterion
from ..core.errors import EebertError
from ..tasks import get as get_task


def _point(speedup: float, accuracy: float, **extra) -> dict:
    return {"speedup": round(float(speedup), 5), "accuracy": round(float(accuracy), 5), **extra}


def sweep(problem: Problem, criterion: Criterion, levels: int = 81) -> list[dict]:
    """(speedup, accuracy) of one global threshold over quantiles of the pooled scores, by speedup."""
    s = problem.scores
    finite = s[torch.isfinite(s)]
    if criterion.integer or finite.numel() == 0:
        cands = torch.unique(finite)
    else:
        cands = torch.unique(torch.quantile(finite, torch.linspace(0, 1, levels, dtype=torch.float64)))
    cands = torch.cat([torch.tensor([-INF], dtype=torch.float64), cands, torch.tensor([INF], dtype=torch.float64)])
    acc, spd = problem.sweep_global(cands)
    pts = [_point(x, a) for x, a in zip(spd.tolist(), acc.tolist())]
    pts.sort(key=lambda p: (p["speedup"], p["accuracy"]))
    return pts


def static_curve(outputs, artifact) -> list[dict]:
    """Everyone leaves at exit k, only that exit evaluated; one point per exit, deployed head last."""
    exits = artifact.exits
    full = outputs.full.sum().item()
    correct = outputs.task.right(outputs.logits, outputs.reference).double()
    layers = exits.layers + [artifact.deployed.adapter.dims.num_layers]
    pts = [_point(full / c, correct[:, k].mean().item(), layer=layer) for k, (layer, c) in
           enumerate(zip(layers, static_costs(outputs, exits, artifact.deployed.adapter.dims).tolist()))]
    return sorted(pts, key=lambda p: p["speedup"])


def oracle_curve(problem: Problem, points: int = 40) -> list[dict]:
    """Upper bound on accuracy at each speedup with these exits (see the module docstring)."""
    right = problem.correct.bool()
    n = right.shape[0]
    any_right = right.any(1)
    first = oracle_exits(right)
    cost = problem.cost.gather(1, first[:, None]).squeeze(1)
    save = torch.where(any_right & (first > 0), cost - problem.cost[:, 0], torch.zeros_like(cost))
    order = torch.argsort(save, descending=True)
    moved = int((save > 0).sum())
    total, acc0 = cost.sum().item(), any_right.double().mean().item()
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(save[order][:moved], 0)])
    steps = sorted(set(torch.linspace(0, moved, min(points, moved + 1)).round().long().tolist()))
    return [_point(problem.full_total / (total - cum[m].item()), acc0 - m / n) for m in steps]


def default_criteria(artifact=None) -> list[tuple[str, Criterion]]:
    """Every registered criterion with its default parameters (skipping ones this artifact cannot bind)."""
    out = []
    task = get_task(artifact.config.get("task") if artifact is not None else None)
    for name in CRITERIA.names():  # criteria of other tasks do not apply
        if task.name not in CRITERIA.get(name).tasks:
            continue
        try:
            out.append((name, build_criterion(name, None, artifact)))
        except EebertError:
            continue
    return out


def split_curves(outputs, artifact, criteria: list[tuple[str, Criterion]]) -> dict:
    """All curves of one split from its cached outputs."""
    from .outputs import problem_for

    curves, problem, left_out = {}, None, []
    for label, crit in criteria:
        if crit.needs_features and outputs.features is None:  # a runtime's own outputs carry logits only
            left_out.append(label)
            continue
        problem = problem_for(outputs, crit)
        curves[label] = sweep(problem, crit)
    return {"criteria": curves, "left_out": left_out, "static_truncation": static_curve(outputs, artifact),
            "oracle": oracle_curve(problem) if problem is not None else [],
            # the shipped model (fp32, ungated): the reference every curve is read against
            "deployed": _point(1.0, outputs.task.same(outputs.deployed_pred, outputs.reference).double().mean().item())}


def criteria_for_curves(chosen: str, params: dict, artifact=None) -> list[tuple[str, Criterion]]:
    """Defaults of every criterion, plus the calibrated one with its own parameters when they differ."""
    crits = default_criteria(artifact)
    mine = build_criterion(chosen, params, artifact)
    default = dict(crits)[chosen].params() if chosen in dict(crits) else {}
    changed = {k: v for k, v in mine.params().items() if default.get(k) != v}
    if changed:
        crits.append((chosen + " (" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")", mine))
    return crits



def report_curves(model, outputs, split: str, chosen: dict, calibration: dict | None) -> dict:
    """Curves for the benchmark report: the calibration's validation curves and this split's."""
    cal = calibration or {}
    crit = cal.get("criterion") or model.criterion.registry_name
    here = split_curves(outputs, model.artifact, criteria_for_curves(crit, model.criterion.params(), model.artifact))
    here["chosen"] = chosen
    curves = {}
    if (cal.get("curves") or {}).get("validation") and split != "validation":
        curves["validation"] = cal["curves"]["validation"]
    curves[split] = here
    return curves
