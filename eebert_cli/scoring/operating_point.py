"""Choose the operating point: criterion parameter grid x gate threshold x thresholds, one rule.

`choose_operating_point` is the one place that decides: every (criterion
parameters, gate threshold) pair gets its best thresholds from
:func:`~eebert_cli.scoring.threshold_search.search`, then :func:`pick` keeps one pair:

- ``target_speedup``: the best validation accuracy among the pairs reaching the
  target; pairs within noise of it (:func:`~eebert_cli.scoring.threshold_search.noise_tolerance`,
  the near-equal rule) count as equal; among equals, gates off first (no gate
  cost, no host sync), then the slowest (nearest the target).
- ``max_drop`` D: the fastest pair whose accuracy keeps a *lower confidence
  bound* on the drop within D (see :func:`drop_margin`); ties: more accurate,
  then gates off.

`calibrate` (the `eebert calibrate` step) runs it on the validation split's
outputs and writes a :class:`~eebert_cli.model.calibration.Calibration`.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..model.artifact import Artifact
from .config import CalibrationConfig
from .threshold_search import (INF, Goal, Outcome, Problem, bootstrap, near_equal, noise_tolerance,
                               rank_within_budget, search, search_switching_off, switching_off)
from ..model.calibration import Calibration, thresholds_to_json
from ..criteria import CRITERIA, Criterion, build_criterion
from ..core.checks import validate
from ..core.errors import EebertError
from ..core.ui import SILENT
from ..tasks import criterion_for
from .outputs import SplitOutputs, pooled, problem_for


@dataclass
class Candidate:
    """The best thresholds of one (criterion parameters, gate threshold) pair on validation."""

    gate_threshold: float | None
    criterion: Criterion
    problem: Problem
    thresholds: torch.Tensor
    curve: list[dict]
    outcome: Outcome
    outputs: SplitOutputs
    margin: float = 0.0
    flops: Problem | None = None  #: the FLOPs problem, when ``problem`` counts another cost (``--cost latency``)

    @property
    def flops_speedup(self) -> float:
        return self.outcome.speedup if self.flops is None else self.flops.outcome(self.thresholds).speedup

    @property
    def gates_on(self) -> bool:
        return self.gate_threshold is not None and self.gate_threshold < 1.0


def pick(cands: list[Candidate], mode: str, tolerance: float) -> Candidate:
    """One candidate by the search's own rules (module docstring); gates off wins ties."""
    point = lambda c: (c.outcome.accuracy, c.outcome.speedup)  # noqa: E731
    if mode == "target":
        goal = near_equal(max(c.outcome.accuracy for c in cands), tolerance)
    else:
        goal = Goal(maximise="speedup")
    chosen = None
    for c in sorted(cands, key=lambda c: c.gates_on):  # gates off first: a strict improvement is needed to leave it
        if goal.better(point(c), None if chosen is None else point(chosen)):
            chosen = c
    if mode == "target":  # near-equal points with gates off beat gated ones (no gate cost, no host sync)
        off = [c for c in cands if not c.gates_on and goal.feasible(*point(c))]
        if off and chosen.gates_on:
            chosen = pick(off, mode, tolerance)
    return chosen


def drop_margin(outcome: Outcome, ref_correct: torch.Tensor, problem: Problem, confidence: float,
                predictive: bool = True) -> float:
    """Accuracy margin (0-1) so the drop on a fresh split of the same size stays within D with ``confidence``.

    z x SE of the paired per-example difference (early exit right - deployed right)
    on validation, times sqrt(2): the difference measured on validation and the one
    on an unseen split of the same size are both noisy (a prediction interval).
    ``predictive=False``: z x SE alone, a one-sided bound on the population's mean
    (the agreement bound over unlabeled rows, see :func:`agreement_margin`).
    """
    right = problem.correct.gather(1, outcome.exits[:, None]).squeeze(1)
    diff = right - ref_correct.double()
    n = len(diff)
    if n < 2:
        return 0.0
    z = statistics.NormalDist().inv_cdf(confidence)
    return z * diff.std().item() / math.sqrt(n) * (math.sqrt(2.0) if predictive else 1.0)


def agreement_margin(outcome: Outcome, ref_correct: torch.Tensor, problem: Problem, confidence: float) -> float:
    """Upper-bound margin on the disagreement rate with the deployed model (``problem`` scores agreement):
    the accuracy drop is at most the share of rows where the exits answer differently, so a bound on
    that share bounds the drop, and unlabeled rows can tighten it."""
    return drop_margin(outcome, ref_correct, problem, confidence, predictive=False)


def budget_note(max_drop: float, confidence: float, labelled: int, unlabeled: int = 0) -> str:
    """What a validation of this size can certify, said before the search.

    Labelled: the margin at a disagreement rate p is about z*sqrt(2p/n) (paired
    differences, prediction interval), so a budget D is usable when the margin at
    p = D stays within D/2: n >= 8z^2/D. Agreement over m = n + u rows (``--unlabeled``):
    p + z*sqrt(p/m) <= D with p = D/2 gives m >= 2z^2/D.
    """
    if max_drop <= 0:
        return "--max-drop 0 leaves every exit off (any disagreement may cost accuracy)"
    z2, d = statistics.NormalDist().inv_cdf(confidence) ** 2, max_drop / 100.0
    head = f"--max-drop {max_drop:g} at {confidence:.0%} confidence: "
    unit = "point" if max_drop == 1 else "points"
    if unlabeled:
        m = labelled + unlabeled
        return (head + f"the drop is bounded by the disagreement with the deployed model over {labelled:,} validation "
                f"+ {unlabeled:,} unlabeled rows; {m:,} rows certify budgets down to about {100 * 2 * z2 / m:.2f} "
                f"points, and {max_drop:g} {unit} needs about {math.ceil(2 * z2 / d):,} rows")
    return (head + f"{labelled:,} labelled validation rows certify drops down to about {100 * 8 * z2 / labelled:.2f} "
            f"points; {max_drop:g} {unit} needs about {math.ceil(8 * z2 / d):,} labelled rows, or about "
            f"{math.ceil(2 * z2 / d):,} rows in all with unlabeled ones (--unlabeled FILE: rows scored by the "
            "deployed model bound the drop by the disagreement)")


def search_with_margin(problem: Problem, criterion: Criterion, ref_acc: float, ref_correct: torch.Tensor,
                       max_drop: float, cfg: CalibrationConfig,
                       margin_of: Callable = drop_margin) -> tuple[torch.Tensor, list, float]:
    """``max_drop`` search on a lower confidence bound: raise the margin until the chosen point keeps it.

    When no point with exits firing keeps it, every exit is set to "never": the
    deployed head answers every example (no drop, no speedup).
    """
    margin, curve = 0.0, []
    for _ in range(20):
        try:
            thr, curve = search(problem, criterion, "drop", ref_acc - max_drop / 100.0 + margin, cfg.per_layer)
        except EebertError:
            break
        need = margin_of(problem.outcome(thr), ref_correct, problem, cfg.drop_confidence)
        if need <= margin + 1e-12:
            return thr, curve, margin
        margin = need
    return torch.full((problem.scores.shape[1],), -INF, dtype=torch.float64), curve, margin


def grid_points(name: str, cfg: CalibrationConfig, criterion_params: dict | None) -> list[dict]:
    """Parameter sets to try: the user's, completed by the criterion's grid for the ones left unset."""
    params = {**cfg.criterion_params, **(criterion_params or {})}
    grid = {k: v for k, v in CRITERIA.get(name).grid.items() if k not in params}
    return [{**params, **dict(zip(grid, vals))} for vals in itertools.product(*grid.values())]


def skip_stats(skipped: torch.Tensor, exit_layer: torch.Tensor, gated: list[int]) -> dict:
    """What the gates did before each example's exit: share of gated layers skipped, layers run."""
    reached = torch.arange(1, skipped.shape[1] + 1)[None, :] <= exit_layer[:, None]   # [N, L]
    is_gated = torch.zeros(skipped.shape[1], dtype=torch.bool)
    is_gated[torch.tensor(gated) - 1] = True
    gated_reached = (reached & is_gated).sum().item()
    skips = (skipped & reached).sum().item()
    return {"skip_rate": skips / gated_reached if gated_reached else 0.0,
            "average_layers_skipped": skips / len(exit_layer),
            "average_layers_run": (reached & ~skipped).sum().item() / len(exit_layer)}


def check_config(cfg: CalibrationConfig) -> None:
    """Bad settings fail before any backbone work."""
    if (cfg.target_speedup is None) == (cfg.max_drop is None):
        raise EebertError("give exactly one of --target-speedup and --max-drop", "for example --target-speedup 2.0")
    # ranges and choices as CalibrationConfig declares them (a config built in Python met no flag's or recipe's check)
    validate(cfg, "", flag_style=True)
    CRITERIA.get(cfg.criterion)  # a bad name fails now, not after the backbone pass
    if cfg.unlabeled and cfg.max_drop is None:
        raise EebertError("--unlabeled bounds an accuracy budget: it goes with --max-drop",
                          "add --max-drop POINTS, or drop --unlabeled")
    if cfg.latency_runtime is not None and cfg.cost != "latency":
        raise EebertError("--latency-runtime names the loop the latency cost model times",
                          "add --cost latency, or drop --latency-runtime")
    if cfg.prune_within_noise and (cfg.target_speedup is None or not cfg.prune_exits):
        raise EebertError("--prune-within-noise switches exits off at a target speedup, with --prune-exits on"
                          if cfg.prune_exits else "--prune-within-noise switches exits off: --keep-exits keeps them all",
                          "drop --prune-within-noise" if cfg.prune_exits else "drop one of the two")


def prunable(problem: Problem, criterion: Criterion) -> bool:
    """Can the search switch exits off? Only where the runtime then skips them: a criterion that scores each
    exit alone (a stateful one, such as patience, reads every exit) and costs that know what an exit adds."""
    return criterion.stateless and problem.charges is not None


def within_budget(problem: Problem, solve: Callable[[Problem], tuple], prune: bool) -> tuple[tuple, Problem]:
    """An accuracy budget's search, ``solve(problem)``; with ``prune``, exits whose removal keeps the speedup
    found within the budget (or raises it) are switched off (``threshold_search.switching_off``, ties: fewer
    exits evaluated per example)."""
    if not prune:
        return solve(problem), problem
    return switching_off(problem, solve, rank_within_budget)


def latency_problem(problem: Problem, profile, outputs: SplitOutputs, artifact: Artifact) -> Problem:
    """``problem`` with its costs in seconds from the latency ``profile`` (``scoring/latency.py``)."""
    from .latency import latency_costs

    cost, full, charges = latency_costs(profile, outputs.lengths, artifact.exits.layers,
                                        artifact.deployed.adapter.dims.num_layers)
    return problem.costed(cost, full, charges)


def choose_operating_point(outputs_at: Callable[[float | None], SplitOutputs], gate_thresholds: list[float | None],
                           cfg: CalibrationConfig, criterion_params: dict | None = None,
                           artifact: Artifact | None = None,
                           unlabeled_at: Callable[[float | None], SplitOutputs] | None = None,
                           ui=None) -> tuple[SplitOutputs, Calibration]:
    """The calibration record for ``cfg`` over every gate threshold x criterion grid point (module docstring).

    ``unlabeled_at``: outputs of unlabeled rows; with ``max_drop`` the thresholds are then chosen on the
    agreement with the deployed model over validation + those rows (see :func:`agreement_margin`).
    ``cfg.cost == "latency"``: the artifact's loop is timed once (``scoring/latency.py``) and every problem
    counts seconds; the record keeps the FLOPs figures beside the latency model's."""
    t0 = time.perf_counter()
    cands, failure, ref, profile = [], None, None, None
    agreement: dict[int, tuple[float, int]] = {}  # id(thresholds) -> (agreement, rows) on the pooled rows
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small tensor ops: thread hand-offs cost more than they save
    try:
        for gt in gate_thresholds:
            outputs = outputs_at(gt)
            task = outputs.task
            name = criterion_for(task, cfg.criterion)
            for params in grid_points(name, cfg, criterion_params):
                criterion = build_criterion(name, params, artifact)
                task.check_criterion(criterion)
                problem = flops = problem_for(outputs, criterion, artifact.exits if artifact is not None else None)
                if cfg.cost == "latency":
                    if profile is None:  # timed once: the loop's parts do not depend on the thresholds
                        from .latency import measure

                        torch.set_num_threads(threads)  # timed as it will serve
                        try:
                            profile = measure(artifact, criterion, outputs.lengths,
                                              runtime=cfg.latency_runtime or cfg.runtime, ui=ui or SILENT)
                        finally:
                            torch.set_num_threads(1)
                        if ui is not None:
                            ui.log(profile.describe(int(outputs.lengths.double().median().item())))
                    problem = latency_problem(flops, profile, outputs, artifact)
                if ref is None:  # the shipped model's score on validation; the same for every candidate
                    ref_correct = task.reference_correct(problem.correct, outputs.deployed_pred, outputs.reference,
                                                         outputs.deployed_logits is not None)
                    ref_acc = ref_correct.mean().item()
                    tol = task.tolerance(problem.correct) if cfg.tolerance is None else cfg.tolerance
                    ref = ref_acc
                margin = 0.0
                # exits that add nothing are switched off: FLOPs hardly see an exit (a pooled head is a fraction
                # of a percent of a layer), every engine's clock does
                prune = cfg.prune_exits and prunable(problem, criterion)
                try:
                    if cfg.target_speedup is not None and prune:
                        thr, curve, problem = search_switching_off(
                            problem, criterion, cfg.target_speedup, cfg.per_layer, tol,
                            ties="speedup" if cfg.cost == "latency" else "evaluations",
                            within_noise=cfg.prune_within_noise)
                    elif cfg.target_speedup is not None:
                        thr, curve = search(problem, criterion, "target", cfg.target_speedup, cfg.per_layer, tol)
                    elif not task.certified_drop:  # the task's own budget (regression: MSE), no margin
                        goal = task.budget_goal(ref_acc, cfg.max_drop)
                        (thr, curve), problem = within_budget(
                            problem, lambda p: search(p, criterion, "drop", goal, cfg.per_layer), prune)
                    elif unlabeled_at is not None:  # agreement over validation + unlabeled rows
                        pool = pooled([outputs, unlabeled_at(gt)])
                        agree = problem_for(pool, criterion, artifact.exits if artifact is not None else None)
                        if profile is not None:  # the budget's search counts what the target would
                            agree = latency_problem(agree, profile, pool, artifact)
                        ones = torch.ones(agree.correct.shape[0], dtype=torch.float64)
                        (thr, curve, margin), agree = within_budget(
                            agree, lambda p: search_with_margin(p, criterion, 1.0, ones, cfg.max_drop, cfg,
                                                                agreement_margin), prune)
                        problem = problem.without(agree.off) if agree.off else problem
                        agreement[id(thr)] = (agree.correct.gather(1, agree.outcome(thr).exits[:, None]).mean().item(),
                                              agree.correct.shape[0])
                    else:
                        (thr, curve, margin), problem = within_budget(
                            problem, lambda p: search_with_margin(p, criterion, ref_acc, ref_correct, cfg.max_drop,
                                                                  cfg), prune)
                except EebertError as e:
                    failure = e
                    continue
                cands.append(Candidate(gt, criterion, problem, thr, curve, problem.outcome(thr), outputs, margin,
                                       None if cfg.cost != "latency" else flops))
    finally:
        torch.set_num_threads(threads)
    if not cands:
        raise failure
    mode = "target" if cfg.target_speedup is not None else "drop"
    n = cands[0].outputs.logits.shape[0]
    best = max(c.outcome.accuracy for c in cands)
    c = pick(cands, mode, noise_tolerance(best, n) if tol is None else tol)
    cal = record(c, cands, cfg, ref, artifact, time.perf_counter() - t0, agreement.get(id(c.thresholds)))
    if profile is not None:
        cal.cost = {"model": "latency", "profile": profile.to_dict(),
                    "note": "target_speedup and the curve count the latency model's seconds at batch size 1 on "
                            "this machine; validation.speedup_flops counts FLOPs (an exit switched off costs "
                            "none, as in the runtime)"}
    return c.outputs, cal


def record(c: Candidate, cands: list[Candidate], cfg: CalibrationConfig, ref_acc: float,
           artifact: Artifact | None, seconds: float, agreement: tuple[float, int] | None = None) -> Calibration:
    """The Calibration of the picked candidate: its validation estimate, intervals and the grid tried."""
    outputs, chosen = c.outputs, c.outcome
    task = outputs.task
    n = outputs.logits.shape[0]
    ci = bootstrap(c.problem, c.thresholds, cfg.bootstrap)
    flops_ci = ci if c.flops is None else bootstrap(c.flops, c.thresholds, cfg.bootstrap)
    warnings = []
    half = (ci["accuracy_ci95"][1] - ci["accuracy_ci95"][0]) / 2
    if 100 * half > cfg.precision and task.certified_drop:  # an accuracy-like figure
        warnings.append(f"validation split has {n} examples: accuracy is only known to about "
                        f"±{100 * half:.1f} points; use more validation data for tighter figures")
    metric = "accuracy" if outputs.labels is not None else "agreement"
    chosen_pred = task.answers(outputs.logits)[torch.arange(n), chosen.exits]
    # metrics that are not sums over examples (macro-F1, Pearson, ...) are evaluated exactly here
    task_metrics = task.metric_values(chosen_pred, outputs.labels)
    task_metrics.update({f"deployed_{k}": v for k, v in
                         task.metric_values(outputs.deployed_pred, outputs.labels).items()})
    validation = {
        "examples": n, "speedup_flops": c.flops_speedup, metric: chosen.accuracy, f"deployed_{metric}": ref_acc,
        "agreement": task.same(chosen_pred, outputs.deployed_pred).double().mean().item(),
        "speedup_ci95": flops_ci["speedup_ci95"], f"{metric}_ci95": ci["accuracy_ci95"], "metrics": task_metrics,
    }
    if c.flops is not None:  # what the search counted: the latency model's estimate
        validation["speedup_latency_model"] = chosen.speedup
        validation["speedup_latency_model_ci95"] = ci["speedup_ci95"]
    exit_layers = (artifact.exits.layers + [artifact.deployed.adapter.dims.num_layers]) if artifact else []
    if outputs.skipped is not None and artifact is not None:
        validation["gates"] = skip_stats(outputs.skipped, torch.tensor(exit_layers)[chosen.exits],
                                         artifact.exits.gates.layers)
    if artifact is not None:  # what the runtime skips: switched off by the search, or "never" (stateless)
        validation["switched_off"] = [artifact.exits.layers[j]
                                      for j in sorted(c.problem.off | c.problem.skipped(c.thresholds))]
        validation["exits_evaluated"] = c.problem.evaluated(c.thresholds)
        if cfg.prune_within_noise:  # the rule that switched them off (docs/criteria.md, step 4)
            validation["switched_off_within_noise"] = True
    margin = None
    if cfg.max_drop is not None and task.certified_drop and bool((c.thresholds == -INF).all()):
        warnings.append(f"no thresholds keep a drop of at most {cfg.max_drop} points at {cfg.drop_confidence:.0%} "
                        "confidence on this validation split: every exit is off (the deployed head answers); "
                        "allow a larger --max-drop or use more validation data")
    if cfg.max_drop is not None and task.certified_drop and agreement is not None:
        rate, rows = agreement
        margin = {"method": f"upper {cfg.drop_confidence:.0%} bound (z*SE, normal approximation) on the share of "
                            f"rows where the early-exit answer differs from the deployed model's, over {n} validation "
                            f"+ {rows - n} unlabeled rows; the accuracy drop cannot exceed that share",
                  "confidence": cfg.drop_confidence, "points": 100 * c.margin,
                  "rows": {"validation": n, "unlabeled": rows - n},
                  "disagreement_points": 100 * (1 - rate), "bound_points": 100 * (1 - rate + c.margin),
                  "constraint": f"disagreement with the deployed model + margin <= {cfg.max_drop} points"}
    elif cfg.max_drop is not None and task.certified_drop:
        margin = {"method": "z*SE of the paired per-example accuracy difference x sqrt(2) (prediction for an "
                            "unseen split of the validation's size)", "confidence": cfg.drop_confidence,
                  "points": 100 * c.margin,
                  "constraint": f"validation accuracy >= deployed - {cfg.max_drop} points + margin"}
    cal = Calibration(
        criterion=c.criterion.registry_name, criterion_params=c.criterion.params(),
        mode="target_speedup" if cfg.target_speedup is not None else "max_drop",
        target_speedup=cfg.target_speedup, max_drop=cfg.max_drop, per_layer=cfg.per_layer,
        thresholds=thresholds_to_json(c.thresholds.tolist()), metric=metric, task=task.name,
        exit_layers=exit_layers, gate_threshold=c.gate_threshold, validation=validation, margin=margin,
        search_seconds=round(seconds, 3), warnings=warnings,
        curve=[{**p, "threshold": thresholds_to_json([p["threshold"]])[0]} for p in c.curve])
    if len(cands) > 1:
        cal.grid = [{"params": t.criterion.params(), "gate_threshold": t.gate_threshold,
                     "speedup_flops": t.flops_speedup, metric: t.outcome.accuracy} for t in cands]
    gated = [t for t in cands if t.gate_threshold is not None]
    if gated:
        per_gate = {}
        for t in gated:  # the best point per gate threshold, by the same rule
            per_gate.setdefault(t.gate_threshold, []).append(t)
        cal.gate_grid = []
        for gt, ts in per_gate.items():
            b = pick(ts, "target" if cfg.target_speedup is not None else "drop", 0.0)
            stats = skip_stats(b.outputs.skipped, torch.tensor(exit_layers)[b.outcome.exits],
                               artifact.exits.gates.layers) if artifact is not None else {}
            cal.gate_grid.append({"gate_threshold": gt, "speedup_flops": b.outcome.speedup,
                                  metric: b.outcome.accuracy, "skip_rate": stats.get("skip_rate")})
    return task.relabel(cal, metric, chosen_pred, outputs, c.problem.scale)
