"""Choose per-exit thresholds on cached validation outputs (the backbone is never re-run).

Two modes: ``target_speedup`` (best accuracy with expected FLOPs speedup >= X) and
``max_drop`` (highest speedup with accuracy at most D below the deployed model's;
`operating_point` adds a confidence margin to D).
Search: a sweep of one global threshold (the papers' setting) gives a feasible
start; coordinate ascent then moves one exit's threshold at a time, evaluating
all candidates for that exit in one vectorised step. A bootstrap over the
validation examples gives confidence intervals at the chosen thresholds (held
fixed: the search is not re-run per resample, so the intervals leave out the
optimism of choosing them on the same data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..model.calibration import INF, skipped_exits  # INF re-exported: the search's never/always
from ..model.cost import skip_exits
from ..criteria import Criterion
from ..core.errors import EebertError


@dataclass
class Outcome:
    exits: torch.Tensor      #: chosen exit index per example [N]
    speedup: float
    accuracy: float


def decide(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Exit index per example: first exit whose score <= its threshold, else the last."""
    hit = scores <= thresholds
    hit = torch.cat([hit, torch.ones(hit.shape[0], 1, dtype=torch.bool)], 1)
    return hit.to(torch.uint8).argmax(1)


def exits_evaluated(exits: torch.Tensor, k1: int, off: frozenset[int] | set[int]) -> float:
    """Exits evaluated per example, examples leaving at ``exits`` (of ``k1`` trainable exits and the deployed head):
    one leaving at exit e evaluated the exits up to e that are not ``off``."""
    live = torch.tensor([j not in off for j in range(k1)], dtype=torch.bool)
    return ((torch.arange(k1)[None, :] <= exits[:, None]) & live).double().sum(1).mean().item()


class Problem:
    """Scores, correctness and costs of one split; evaluates threshold vectors fast."""

    def __init__(self, scores: torch.Tensor, correct: torch.Tensor, cost: torch.Tensor, full: torch.Tensor,
                 charges: torch.Tensor | None = None, *, scale: float = 1.0, stateless: bool = False,
                 off: frozenset[int] = frozenset()):
        self.scores = scores.double()      # [N, K-1]
        self.correct = correct.double()    # [N, K]
        self.base = cost.double()          # [N, K] cost of leaving at each exit, every exit evaluated
        self.full = full.double()          # [N] cost of the deployed model
        self.full_total = self.full.sum().item()
        self.scale = scale                 # what the task divided ``correct`` by (see Task.correctness)
        self.charges = charges             # [N, K-1] what evaluating each exit adds to later paths, if known
        self.off = frozenset(off)          # exits switched off (see ``without``)
        # what the paths cost with ``off`` not evaluated, always from ``base``: an exit's charge comes off once
        # (none known: the costs as given)
        self.cost = skip_exits(self.base, charges, self.off) if self.off and charges is not None else self.base
        #: the criterion is stateless: an exit set to "never" is not evaluated (``skipped_exits``), so
        #: neither an outcome nor a sweep charges it (needs ``charges``)
        self.stateless = stateless

    def costed(self, cost: torch.Tensor, full: torch.Tensor, charges: torch.Tensor | None) -> "Problem":
        """The same scores and correctness under other costs (e.g. seconds from a latency model; ``cost``
        with every exit evaluated, as ``base``)."""
        return Problem(self.scores, self.correct, cost, full, charges, scale=self.scale, stateless=self.stateless,
                       off=self.off)

    def without(self, off: set[int] | frozenset[int]) -> "Problem":
        """The problem with exits ``off`` (those already off among them) switched off: never evaluated (a
        stateless criterion skips an exit whose threshold is "never"), so they neither fire nor cost the
        examples that pass them."""
        off = frozenset(off)
        if not off >= self.off:
            raise ValueError(f"exits {sorted(self.off - off)} are already off")
        scores = self.scores.clone()
        for j in off:
            scores[:, j] = float("nan")  # NaN never fires
        return Problem(scores, self.correct, self.base, self.full, self.charges, scale=self.scale,
                       stateless=self.stateless, off=off)

    def skipped(self, thresholds: torch.Tensor) -> frozenset[int]:
        """Exits the runtime skips at these thresholds ("never" under a stateless criterion) beyond those
        already off; none when ``charges`` are unknown (nothing to take off the paths)."""
        if self.charges is None:
            return frozenset()
        return skipped_exits(thresholds.tolist(), self.stateless) - self.off

    def as_run(self, thresholds: torch.Tensor) -> "Problem":
        """This problem as the runtime runs these thresholds: an exit it skips is switched off, so it
        costs nothing."""
        skip = self.skipped(thresholds)
        return self.without(self.off | skip) if skip else self

    def outcome(self, thresholds: torch.Tensor) -> Outcome:
        """Where each example leaves at these thresholds, and the speedup and accuracy that gives, at the
        cost the runtime spends (``as_run``)."""
        run = self.as_run(thresholds)
        e = decide(run.scores, thresholds)
        spent = run.cost.gather(1, e[:, None]).sum().item()
        return Outcome(e, self.full_total / spent, self.correct.gather(1, e[:, None]).mean().item())

    def evaluated(self, thresholds: torch.Tensor) -> float:
        """Exits evaluated per example at these thresholds, as the runtime runs them (one leaving at exit e
        evaluated the live exits up to e; a skipped one is not evaluated)."""
        run = self.as_run(thresholds)
        return exits_evaluated(decide(run.scores, thresholds), run.scores.shape[1], run.off)

    def sweep_exit(self, thresholds: torch.Tensor, k: int, cands: torch.Tensor):
        """Accuracy and speedup for every candidate threshold of exit k, others fixed.

        Sorting exit k's scores once turns "which samples fire at threshold c" into
        a prefix, so all candidates cost one cumulative sum and a binary search.
        """
        n = self.correct.shape[0]
        others = thresholds.clone()
        others[k] = -INF
        skip = self.skipped(others)
        rest = skip - {k}                                  # the other exits as the runtime runs them
        run = self.without(self.off | rest) if rest else self
        first = decide(run.scores, others)                 # exit taken if exit k never fires
        base_acc = self.correct.gather(1, first[:, None]).squeeze(1)
        base_cost = run.cost.gather(1, first[:, None]).squeeze(1)
        live = (first >= k) & ~run.scores[:, k].isnan()   # still here at exit k (NaN never fires)
        sk, order = torch.sort(run.scores[live, k])
        zero = torch.zeros(1, dtype=torch.float64)
        gain = torch.cat([zero, torch.cumsum((self.correct[live, k] - base_acc[live])[order], 0)])
        save = torch.cat([zero, torch.cumsum((run.cost[live, k] - base_cost[live])[order], 0)])
        fired = torch.searchsorted(sk, cands, right=True)  # how many live samples score <= c
        acc, spd = (base_acc.sum() + gain[fired]) / n, self.full_total / (base_cost.sum() + save[fired])
        never = cands == -INF
        if k in skip and never.any():  # "never" skips exit k too: it costs nothing
            spd[never] = self.outcome(others).speedup
        return acc, spd

    def sweep_global(self, cands: torch.Tensor):
        """Accuracy and speedup of one threshold shared by all exits, for every candidate at once.

        A sample leaves at the first exit whose running minimum score is <= t, so
        cost(t) = cost(last exit) + sum over (sample, exit) pairs with running
        minimum <= t of cost[k] - cost[k+1] (a telescoping sum); same for accuracy.
        NaN scores are treated as +inf, which is exact for every finite t;
        +inf candidates are evaluated directly.
        """
        n, k1 = self.scores.shape
        m = torch.cummin(torch.nan_to_num(self.scores, nan=INF), 1).values.reshape(-1)
        srt, order = torch.sort(m)
        zero = torch.zeros(1, dtype=torch.float64)
        dc = (self.cost[:, :-1] - self.cost[:, 1:]).reshape(-1)[order]
        da = (self.correct[:, :-1] - self.correct[:, 1:]).reshape(-1)[order]
        idx = torch.searchsorted(srt, cands, right=True)
        cost = self.cost[:, -1].sum() + torch.cat([zero, torch.cumsum(dc, 0)])[idx]
        acc = (self.correct[:, -1].sum() + torch.cat([zero, torch.cumsum(da, 0)])[idx]) / n
        spd = self.full_total / cost
        for j in ((cands == INF) | (cands == -INF)).nonzero().flatten().tolist():  # exact, and as run
            o = self.outcome(torch.full((k1,), cands[j].item(), dtype=torch.float64))
            acc[j], spd[j] = o.accuracy, o.speedup
        return acc, spd


@dataclass(frozen=True)
class Goal:
    """Constraints on (accuracy, speedup) and what to optimise among the points that meet them."""

    min_speedup: float = 0.0
    min_accuracy: float = -1.0
    maximise: str = "accuracy"   #: "accuracy", "speedup", or "-speedup" (closest to the target)

    def feasible(self, acc: float, spd: float) -> bool:
        return spd >= self.min_speedup - 1e-12 and acc >= self.min_accuracy - 1e-12

    def better(self, a: tuple[float, float], b: tuple[float, float] | None) -> bool:
        """Is (accuracy, speedup) ``a`` feasible and better than ``b``?"""
        if not self.feasible(*a):
            return False
        if b is None:
            return True
        key = {"accuracy": lambda p: (p[0], p[1]), "speedup": lambda p: (p[1], p[0]),
               "-speedup": lambda p: (-p[1], p[0])}[self.maximise]
        ka, kb = key(a), key(b)
        return ka[0] > kb[0] + 1e-12 or (abs(ka[0] - kb[0]) <= 1e-12 and ka[1] > kb[1] + 1e-12)


def _ascend(problem: Problem, per_exit: list[torch.Tensor], goal: Goal, start: torch.Tensor,
            rounds: int = 10) -> tuple[tuple[float, float], torch.Tensor]:
    """Coordinate ascent: move one exit's threshold at a time while the goal improves."""
    o = problem.outcome(start)
    best, best_t = (o.accuracy, o.speedup), start.clone()
    for _ in range(rounds):
        changed = False
        for k in range(len(per_exit)):
            acc, spd = problem.sweep_exit(best_t, k, per_exit[k])
            for j, cand in enumerate(zip(acc.tolist(), spd.tolist())):
                if goal.better(cand, best):
                    best, best_t = cand, best_t.clone()
                    best_t[k] = per_exit[k][j]
                    changed = True
        if not changed:
            break
    return best, best_t


def noise_tolerance(accuracy: float, n: int) -> float:
    """Half a standard error of an accuracy measured on n examples: smaller gaps are noise."""
    return 0.5 * math.sqrt(max(accuracy * (1 - accuracy), 1e-4) / max(n, 1))


def near_equal(best_accuracy: float, tolerance: float, min_speedup: float = 0.0) -> Goal:
    """The near-equal rule: accuracies within ``tolerance`` of the best count as equal, and among
    them the slowest point still reaching ``min_speedup`` wins (it is likelier to hold on unseen data)."""
    return Goal(min_speedup=min_speedup, min_accuracy=best_accuracy - tolerance, maximise="-speedup")


def search(problem: Problem, criterion: Criterion, mode: str, goal: float, per_layer: bool = True,
           tolerance: float | None = None):
    """Best threshold vector under the mode's constraint; raises when none is feasible.

    ``target`` mode first finds the best accuracy reachable at the target, then
    takes the slowest thresholds (closest to the target, never under it) whose
    accuracy is within ``tolerance`` of that best: validation gaps smaller than
    noise are not worth extra aggressiveness that may not hold on unseen data.
    """
    k1 = problem.scores.shape[1]
    per_exit = [torch.tensor([-INF], dtype=torch.float64) if k in problem.off else
                torch.cat([criterion.candidates(problem.scores[:, k]), torch.tensor([INF], dtype=torch.float64)])
                for k in range(k1)]
    pooled = torch.unique(torch.cat(per_exit))
    first = Goal(min_speedup=goal) if mode == "target" else Goal(min_accuracy=goal, maximise="speedup")
    points, curve = [], []
    accs, spds = problem.sweep_global(pooled)
    off = sorted(problem.off)
    for t, a, sp in zip(pooled.tolist(), accs.tolist(), spds.tolist()):
        curve.append({"threshold": t, "speedup": sp, "accuracy": a})
        shared = torch.full((k1,), t, dtype=torch.float64)
        shared[off] = -INF  # an exit switched off stays off whatever the shared threshold
        points.append(((a, sp), shared))
    best, best_t = None, None
    for p, thr in points:
        if first.better(p, best):
            best, best_t = p, thr
    if best is None:
        fastest = problem.outcome(torch.full((k1,), INF, dtype=torch.float64))
        if mode == "target":
            raise EebertError(f"target speedup {goal:.2f}x is unreachable: the highest reachable on this "
                              f"validation data is {fastest.speedup:.2f}x",
                              "ask for a lower --target-speedup or attach exits at earlier layers")
        raise EebertError("no thresholds keep accuracy within the allowed drop", "allow a larger --max-drop")
    if per_layer and k1 > 1:
        best, best_t = _ascend(problem, per_exit, first, best_t)
    if mode == "target":
        tol = noise_tolerance(best[0], problem.scores.shape[0]) if tolerance is None else tolerance
        second = near_equal(best[0], tol, goal)
        near, near_t = None, None
        for p, thr in points + [(best, best_t)]:
            if second.better(p, near):
                near, near_t = p, thr
        if per_layer and k1 > 1:
            near, near_t = _ascend(problem, per_exit, second, near_t)
        best_t = near_t
    curve.sort(key=lambda p: p["speedup"])
    return best_t, curve


#: how :func:`search_switching_off` ranks exit sets of equal validation accuracy: by speedup (a latency
#: model, which counts an exit's own time), or by fewer exits evaluated per example (FLOPs, which hardly see
#: an exit, while every engine's clock does: a head, a host sync, a session call)
TIES = ("speedup", "evaluations")


def switching_off(problem: Problem, solve: Callable[[Problem], tuple], rank: Callable[[Problem, torch.Tensor], tuple]
                  ) -> tuple[tuple, Problem]:
    """Greedy switching off of exits (``Problem.charges`` known, a stateless criterion, which can skip an exit).

    ``solve(p)`` searches ``p`` and returns a tuple whose first item is the thresholds (raising EebertError where
    ``p`` cannot meet the goal); ``rank(p, thresholds)`` is a pair, compared first figure first, higher better.
    Each round tries every exit still on, keeps the removal ranked highest, and stops when none ranks above what
    it has. An exit that seldom fires costs every example that passes it; one whose removal costs nothing the
    goal counts is dropped. Returns what ``solve`` returned for the exits kept, and the problem it was found on."""
    def ahead(a: tuple, b: tuple) -> bool:  # first figure, then the second; any sign; gaps under 1e-12 are ties
        return a[0] > b[0] + 1e-12 or (abs(a[0] - b[0]) <= 1e-12 and a[1] > b[1] + 1e-12)

    found = solve(problem)
    best = rank(problem, found[0])
    while len(problem.off) < problem.scores.shape[1]:
        trial = None
        for j in range(problem.scores.shape[1]):
            if j in problem.off:
                continue
            p = problem.without(problem.off | {j})
            try:
                got = solve(p)
            except EebertError:  # the goal needs this exit
                continue
            r = rank(p, got[0])
            if ahead(r, best if trial is None else trial[2]):
                trial = (p, got, r)
        if trial is None:
            break
        problem, found, best = trial
    return found, problem


def within_floor(figure: float, tie: float, floor: float) -> tuple[float, float]:
    """How :func:`switching_off` ranks exit sets within noise (``prune_within_noise``): ``tie`` (fewer exits
    evaluated, or speed) among those whose figure stays at or above ``floor``, the figure breaking ties; below the
    floor, last."""
    return (tie if figure >= floor - 1e-12 else -INF), figure


def search_switching_off(problem: Problem, criterion: Criterion, goal: float, per_layer: bool = True,
                         tolerance: float | None = None, ties: str = "speedup", within_noise: bool = False
                         ) -> tuple[torch.Tensor, list, Problem]:
    """``target`` search that may also switch exits off (:func:`switching_off`): a removal is kept when validation
    accuracy at the target is higher, or equal and better ranked by ``ties``. ``within_noise``: a removal is kept
    while accuracy stays within ``tolerance`` (default: :func:`noise_tolerance`, as the tie rule) of the search with
    every exit on, the one ranked best by ``ties`` first (higher accuracy breaking ties): an exit whose worth is
    within noise goes. Returns the thresholds ("never" where off), the curve and the problem they were found on."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    first = search(problem, criterion, "target", goal, per_layer, tolerance)  # every exit on: switching_off's start
    solve = lambda p: first if p is problem else search(p, criterion, "target", goal, per_layer, tolerance)  # noqa: E731
    floor = None
    if within_noise:  # anchored to every exit on, so removals cannot each lose a little and add up
        kept = problem.outcome(first[0]).accuracy
        floor = kept - (noise_tolerance(kept, problem.scores.shape[0]) if tolerance is None else tolerance)

    def rank(p: Problem, t: torch.Tensor) -> tuple[float, float]:
        o = p.outcome(t)
        tie = o.speedup if ties == "speedup" else -p.evaluated(t)
        return (o.accuracy, tie) if floor is None else within_floor(o.accuracy, tie, floor)

    (thr, curve), problem = switching_off(problem, solve, rank)
    return thr, curve, problem


def rank_within_budget(problem: Problem, thresholds: torch.Tensor) -> tuple[float, float]:
    """How :func:`switching_off` ranks exit sets under an accuracy budget (``max_drop``): the speedup the search
    found within it, then fewer exits evaluated per example. An exit's head charges everyone who passes it, so one
    that saves less than that goes; and the search re-run without an exit can reach points that moving one
    threshold at a time from the global sweep's start does not."""
    return problem.outcome(thresholds).speedup, -problem.evaluated(thresholds)


def bootstrap(problem: Problem, thresholds: torch.Tensor, resamples: int, seed: int = 0) -> dict:
    """95% percentile intervals of speedup and accuracy over resampled validation sets, at these thresholds."""
    problem = problem.as_run(thresholds)
    n = problem.scores.shape[0]
    gen = torch.Generator().manual_seed(seed)
    e = decide(problem.scores, thresholds)[:, None]
    spent = problem.cost.gather(1, e).squeeze(1)
    right = problem.correct.gather(1, e).squeeze(1)
    rows = torch.randint(0, n, (resamples, n), generator=gen)
    spd = problem.full[rows].sum(1) / spent[rows].sum(1)
    acc = right[rows].mean(1)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    return {"speedup_ci95": torch.quantile(spd, q).tolist(), "accuracy_ci95": torch.quantile(acc, q).tolist()}
