"""`eebert calibrate` for taggers: thresholds on a per-sentence criterion, chosen on validation.

Each candidate threshold sends every sentence out at its first exit whose score is
within it (``calibrate.decide``); entity F1 at that assignment is exact (summed span
counts, ``scoring.py``). ``--target-speedup``: the most accurate candidate that reaches
the speedup. ``--max-drop`` (entity-F1 points): the fastest candidate whose drop against
the deployed tagger stays within the budget on a bootstrap bound over sentences (the
``drop_confidence`` quantile of the drop across resamples), the confidence-margin idea
the sentence calibration uses for accuracy. Unless ``per_layer`` is off (``--global-threshold``),
the chosen threshold is then refined one exit at a time by the same rule (``TagProblem``). Under
``--target-speedup`` the sentence path's tie rule follows (``nearest_target``): entity-F1 gaps under half
a bootstrap standard error are noise, and among the points within it of the best the slowest that reaches
the target is kept.
"""

from __future__ import annotations

import itertools
import time

import torch

from ..model.artifact import WEIGHTS, derivation
from ..deploy.runtimes import RUNTIMES
from .threshold_search import (Goal, Outcome, Problem, _ascend, decide, exits_evaluated, near_equal,
                               switching_off, within_floor)
from .config import CalibrationConfig
from ..model.calibration import CI_METHOD, INF, Calibration, skipped_exits, thresholds_to_json
from ..criteria import CRITERIA, build_criterion
from ..core.errors import EebertError
from ..core.ui import SILENT, UI
from ..tasks import criterion_for
from .tagging import SplitTags, f1_from_counts, split_tags

CANDIDATES = 200  #: threshold candidates (score quantiles) per criterion setting


def settings(name: str, params: dict) -> list[dict]:
    """The criterion's parameters: as given, with its grid searched for those left unset."""
    grid = {k: v for k, v in CRITERIA.get(name).grid.items() if k not in params}
    keys = sorted(grid)
    return [{**params, **dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]


def candidates(scores: torch.Tensor) -> torch.Tensor:
    """Thresholds to try: "never" and ``CANDIDATES`` quantiles of the finite scores."""
    finite = scores[torch.isfinite(scores)].double()
    q = torch.linspace(0, 1, CANDIDATES, dtype=torch.float64)
    return torch.cat([torch.tensor([-float("inf")], dtype=torch.float64),
                      torch.unique(torch.quantile(finite, q)) if finite.numel() else torch.empty(0, dtype=torch.float64)])


def sweep(st: SplitTags, scores: torch.Tensor, cfg: CalibrationConfig, seed: int = 0, stateless: bool = False
          ) -> list[dict]:
    """Every candidate threshold's validation point (with the bootstrap drop bound under --max-drop); FLOPs as
    the runtime spends them (``stateless``: "never" skips every exit, so that point costs the deployed tagger)."""
    cands = candidates(scores)
    s, k = st.counts.shape[:2]
    off = [j for j in range(k - 1) if scores[:, j].isnan().all()]  # switched off: "never", whatever t is
    rows = torch.arange(s)
    ref_counts = st.reference_counts.double()
    boot = None
    if cfg.max_drop is not None:
        gen = torch.Generator().manual_seed(seed)
        boot = torch.randint(s, (cfg.bootstrap, s), generator=gen)
        ref_b = f1_from_counts(ref_counts[boot].sum(1))
    out = []
    for t in cands.tolist():
        thresholds = torch.full((k - 1,), t, dtype=torch.float64)
        thresholds[off] = -INF
        e = decide(scores.double(), thresholds)
        cost = st.cost_as_run(skipped_exits(thresholds.tolist(), stateless))
        point = {"threshold": t, "speedup": st.full.sum().item() / cost[rows, e].sum().item(),
                 "f1": st.reference_f1(e), "exits": e, **({"thresholds": thresholds.tolist()} if off else {})}
        if boot is not None:
            drop = ref_b - f1_from_counts(st.counts[rows, e].double()[boot].sum(1))
            point["drop_bound"] = torch.quantile(drop, cfg.drop_confidence).item()
        out.append(point)
    return out


def resample_weights(s: int, resamples: int, seed: int = 0) -> torch.Tensor:
    """[resamples, s]: how often each of ``s`` sentences is drawn in each bootstrap resample (sums over a
    resample are then one matrix product)."""
    draws = torch.randint(s, (resamples, s), generator=torch.Generator().manual_seed(seed))
    return torch.zeros(resamples, s, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(resamples, s, dtype=torch.float64))


class TagProblem:
    """Entity F1 and FLOPs of per-exit thresholds, for ``threshold_search._ascend`` (its per-exit
    coordinate ascent, as the sentence path refines a global threshold).

    F1 is not a mean over sentences, but the span counts it is made of are sums, so moving one
    exit's threshold is exact with one sort and cumulative sums of the count changes, as
    ``threshold_search.Problem.sweep_exit`` does for accuracy; under ``--max-drop`` the same sums
    per bootstrap resample give every candidate's drop bound. The figure ``_ascend`` maximises is
    entity F1 (``--target-speedup``) or minus the bounded drop (``--max-drop``, as ``choose``).

    FLOPs are what the runtime spends: under a ``stateless`` criterion an exit at "never" is not evaluated
    (``skipped_exits``), so it charges no sentence that passes it."""

    def __init__(self, st: SplitTags, scores: torch.Tensor, cfg: CalibrationConfig, ref_f1: float, seed: int = 0,
                 stateless: bool = False):
        self.scores, self.cfg, self.ref_f1 = scores.double(), cfg, ref_f1
        self.st, self.stateless = st, stateless
        self.counts = st.counts.double()
        self.full_total = st.full.sum().item()
        s = self.counts.shape[0]
        self.weights = None  # [B, S] how often each sentence is drawn in each resample
        if cfg.max_drop is not None:
            self.weights = resample_weights(s, cfg.bootstrap, seed)
            self.ref_b = f1_from_counts(self.weights @ st.reference_counts.double())

    def _figure(self, counts: torch.Tensor, boot: torch.Tensor | None) -> torch.Tensor:
        f1 = f1_from_counts(counts)
        if boot is None:
            return f1
        bound = torch.quantile(self.ref_b[:, None] - f1_from_counts(boot), self.cfg.drop_confidence, dim=0)
        return -torch.maximum(bound, self.ref_f1 - f1)

    def drop_bound(self, e: torch.Tensor) -> float:
        """The ``drop_confidence`` quantile of the entity-F1 drop over the resamples, sentences leaving at ``e``."""
        boot = self.weights @ self.counts[torch.arange(len(e)), e]
        return torch.quantile(self.ref_b - f1_from_counts(boot), self.cfg.drop_confidence).item()

    def skipped(self, thresholds: torch.Tensor) -> frozenset[int]:
        """Exits the runtime does not evaluate at these thresholds (none where the charges are unknown)."""
        return skipped_exits(thresholds.tolist(), self.stateless) if self.st.charges is not None else frozenset()

    def cost_as_run(self, thresholds: torch.Tensor) -> torch.Tensor:
        return self.st.cost_as_run(self.skipped(thresholds)).double()

    def outcome(self, thresholds: torch.Tensor) -> Outcome:
        e = decide(self.scores, thresholds)
        rows = torch.arange(len(e))
        c = self.counts[rows, e]
        boot = None if self.weights is None else (self.weights @ c)[:, None]
        spent = self.cost_as_run(thresholds)[rows, e].sum().item()
        return Outcome(e, self.full_total / spent, self._figure(c.sum(0)[None], boot).item())

    def sweep_exit(self, thresholds: torch.Tensor, k: int, cands: torch.Tensor):
        """(figure, speedup) for every candidate threshold of exit ``k``, the others fixed."""
        others = thresholds.clone()
        others[k] = -INF
        first = decide(self.scores, others)  # where each sentence leaves if exit k never fires
        rows = torch.arange(len(first))
        skip = self.skipped(others)
        cost_k = self.st.cost_as_run(skip - {k}).double()  # exit k evaluated: every candidate but "never"
        base_c, base_cost = self.counts[rows, first], cost_k[rows, first]
        live = ((first >= k) & ~self.scores[:, k].isnan()).nonzero().squeeze(1)
        sk, order = torch.sort(self.scores[live, k])
        idx = live[order]
        fired = torch.searchsorted(sk, cands, right=True)  # how many live sentences leave at k for each candidate
        dc = self.counts[idx, k] - base_c[idx]                                      # [n, 3]
        counts = base_c.sum(0) + torch.cat([torch.zeros(1, 3, dtype=torch.float64), dc.cumsum(0)])[fired]
        cost = base_cost.sum() + torch.cat([torch.zeros(1, dtype=torch.float64),
                                            (cost_k[idx, k] - base_cost[idx]).cumsum(0)])[fired]
        if k in skip:  # at "never" exit k is not evaluated: the sentences that pass it do not pay its head
            cost = torch.where(cands == -INF, cost - self.st.charges[first > k, k].double().sum(), cost)
        boot = None
        if self.weights is not None:  # the same sums, once per resample: [B, candidates, 3]
            w = self.weights[:, idx]
            steps = torch.cat([torch.zeros(len(w), 1, 3, dtype=torch.float64), (w[..., None] * dc).cumsum(1)], 1)
            boot = (self.weights @ base_c)[:, None] + steps[:, fired]
        return self._figure(counts, boot), self.full_total / cost


def refine(st: SplitTags, scores: torch.Tensor, cfg: CalibrationConfig, ref_f1: float, point: dict,
           cands: torch.Tensor, stateless: bool = False, goal: Goal | None = None) -> dict:
    """``point`` refined exit by exit, as ``choose`` ranks points (or toward ``goal``)."""
    problem = TagProblem(st, scores, cfg, ref_f1, stateless=stateless)
    k1 = scores.shape[1]
    if goal is None:
        goal = Goal(min_speedup=cfg.target_speedup) if cfg.target_speedup is not None else \
            Goal(min_accuracy=-cfg.max_drop / 100, maximise="speedup")
    start = torch.tensor(point.get("thresholds", [point["threshold"]] * k1), dtype=torch.float64)
    never = torch.tensor([-INF], dtype=torch.float64)
    per_exit = [never if scores[:, j].isnan().all() else torch.cat([cands, torch.tensor([INF], dtype=torch.float64)])
                for j in range(k1)]  # an exit switched off (NaN scores) stays at "never"
    _, best = _ascend(problem, per_exit, goal, start)
    if torch.equal(best, start):
        return point
    o = problem.outcome(best)
    refined = {"threshold": point["threshold"], "thresholds": best.tolist(), "speedup": o.speedup,
               "f1": st.reference_f1(o.exits), "exits": o.exits}
    if cfg.max_drop is not None:
        refined["drop_bound"] = problem.drop_bound(o.exits)
    return refined


def choose(points: list[dict], cfg: CalibrationConfig, ref_f1: float) -> tuple[dict, list[str]]:
    warnings = []
    if cfg.target_speedup is not None:
        ok = [p for p in points if p["speedup"] >= cfg.target_speedup]
        if not ok:
            best = max(points, key=lambda p: p["speedup"])
            warnings.append(f"no threshold reaches {cfg.target_speedup}x on validation; the fastest "
                            f"({best['speedup']:.2f}x) is used")
            return best, warnings
        return max(ok, key=lambda p: (p["f1"], p["speedup"])), warnings
    ok = [p for p in points if 100 * max(p["drop_bound"], ref_f1 - p["f1"]) <= cfg.max_drop]
    return max(ok, key=lambda p: (p["speedup"], p["f1"])), warnings  # the "never exit" point is always in ok


def f1_tolerance(st: SplitTags, exits: torch.Tensor, resamples: int, seed: int = 0) -> float:
    """Half the bootstrap standard error of entity F1 over sentences, sentences leaving at ``exits``: the sentence
    path's noise (half a standard error of an accuracy) for a figure that is not a mean over sentences."""
    rows = torch.arange(len(exits))
    f1 = f1_from_counts(resample_weights(len(exits), resamples, seed) @ st.counts[rows, exits].double())
    return 0.5 * f1.std().item() if resamples > 1 else 0.0


def nearest_target(st: SplitTags, scores: torch.Tensor, cfg: CalibrationConfig, ref_f1: float, best: dict,
                   points: list[dict], stateless: bool = False) -> dict:
    """The tie rule toward the target (``--target-speedup``), as the sentence path's ``search``: entity-F1 gaps
    smaller than ``cfg.tolerance`` (default :func:`f1_tolerance` at ``best``) are noise, so among the points
    within it of ``best`` the slowest that still reaches the target is kept (the sweep's points, then exit by
    exit). Speed that buys no measurable F1 is not taken, which keeps the speedup on unseen text near the
    validation estimate."""
    tol = f1_tolerance(st, best["exits"], cfg.bootstrap) if cfg.tolerance is None else cfg.tolerance
    goal = near_equal(best["f1"], tol, cfg.target_speedup)
    near = best
    for p in points:
        if goal.better((p["f1"], p["speedup"]), (near["f1"], near["speedup"])):
            near = p
    if cfg.per_layer and scores.shape[1] > 1:
        near = refine(st, scores, cfg, ref_f1, near, candidates(scores), stateless, goal)
    return near


def intervals(st: SplitTags, exits: torch.Tensor, resamples: int, seed: int = 0,
              skip: frozenset[int] = frozenset()) -> dict:
    """95% percentile intervals of the FLOPs speedup and entity F1 over sentences resampled with replacement,
    sentences leaving at ``exits`` (the thresholds fixed, as the sentence path's ``bootstrap``; ``skip``: exits
    not evaluated)."""
    rows = torch.arange(len(exits))
    weights = resample_weights(len(exits), resamples, seed)
    speedup = (weights @ st.full.double()) / (weights @ st.cost_as_run(skip)[rows, exits].double())
    f1 = f1_from_counts(weights @ st.counts[rows, exits].double())
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    return {"speedup_ci95": torch.quantile(speedup, q).tolist(), "entity_f1_ci95": torch.quantile(f1, q).tolist()}


def solve(st: SplitTags, scores: torch.Tensor, cfg: CalibrationConfig, ref_f1: float, stateless: bool
          ) -> tuple[dict, list[str], list[dict]]:
    """One criterion setting's point: the global sweep, ``choose``, then (``per_layer``) exit by exit, then (a target)
    the tie rule, ``nearest_target``. Exits whose scores are all NaN are switched off: "never", never moved."""
    points = sweep(st, scores, cfg, stateless=stateless)
    point, warnings = choose(points, cfg, ref_f1)
    if cfg.per_layer and scores.shape[1] > 1 and not warnings:  # then one threshold per exit
        point = refine(st, scores, cfg, ref_f1, point, candidates(scores), stateless)
    if cfg.target_speedup is not None and not warnings:
        point = nearest_target(st, scores, cfg, ref_f1, point, points, stateless)
    return point, warnings, points


def thresholds_of(point: dict, k1: int) -> list[float]:
    """A point's threshold per exit (a global sweep's point holds one, unless exits are switched off)."""
    return point.get("thresholds", [point["threshold"]] * k1)


def solve_switching_off(st: SplitTags, scores: torch.Tensor, cfg: CalibrationConfig, ref_f1: float,
                        stateless: bool) -> tuple[dict, list[str], list[dict]]:
    """:func:`solve`, then (``prune_exits``, a stateless criterion) exits switched off one at a time by
    ``threshold_search.switching_off``, as the sentence path does: a removal is kept when entity F1 at the target
    is higher, or equal with fewer exits evaluated per sentence (``--max-drop``: the speedup found within the
    budget, then fewer exits evaluated). A token exit's head runs on every token, so one that seldom fires costs
    every sentence that passes it. ``prune_within_noise`` (a target): a removal is kept while entity F1 stays within
    the tie rule's tolerance (``f1_tolerance``) of every exit on, fewest exits evaluated first."""
    found = solve(st, scores, cfg, ref_f1, stateless)
    if not (cfg.prune_exits and stateless and st.charges is not None) or found[1] or scores.shape[1] < 2:
        return found
    k1 = scores.shape[1]
    # the sentence path's Problem holds what the greedy reads (exits off, their NaN scores) and counts the exits
    # evaluated and the FLOPs as run; its per-example correctness is unused here (entity F1 is not a mean)
    base = Problem(scores, torch.zeros(st.counts.shape[:2], dtype=torch.float64), st.cost, st.full, st.charges,
                   stateless=stateless)
    got = {frozenset(): found}

    def run(p: Problem):
        r = solve(st, p.scores, cfg, ref_f1, stateless)
        if r[1]:  # the target needs this exit
            raise EebertError("target not reached without the exit")
        got[p.off] = r
        return (torch.tensor(thresholds_of(r[0], k1), dtype=torch.float64),)

    floor = None
    if cfg.prune_within_noise:  # anchored to every exit on, as the sentence path's: removals cannot each lose a little
        tol = f1_tolerance(st, found[0]["exits"], cfg.bootstrap) if cfg.tolerance is None else cfg.tolerance
        floor = found[0]["f1"] - tol

    def rank(p: Problem, t: torch.Tensor) -> tuple[float, float]:
        point = got[p.off][0]
        if floor is not None:  # fewest exits evaluated while F1 stays within noise of every exit on, then F1
            return within_floor(point["f1"], -p.evaluated(t), floor)
        return (point["f1"] if cfg.target_speedup is not None else point["speedup"]), -p.evaluated(t)

    _, problem = switching_off(base, run, rank)
    return got[problem.off]


def pick_setting(st: SplitTags, found: list[tuple], cfg: CalibrationConfig) -> tuple:
    """The criterion setting kept, of ``found`` (``(params, point, warnings, points, stateless)`` each): under
    ``--max-drop`` the fastest (then the most accurate); under ``--target-speedup`` the tie rule across settings as
    within one (``nearest_target``): of the settings that reach the target, the slowest point within noise of the
    most accurate (none reaches it: the fastest)."""
    if cfg.target_speedup is None:
        return max(found, key=lambda f: (f[1]["speedup"], f[1]["f1"]))
    reach = [f for f in found if not f[2]]  # a setting with warnings missed the target (its fastest point is kept)
    if not reach:
        return max(found, key=lambda f: (f[1]["speedup"], f[1]["f1"]))
    top = max(reach, key=lambda f: (f[1]["f1"], f[1]["speedup"]))
    tol = f1_tolerance(st, top[1]["exits"], cfg.bootstrap) if cfg.tolerance is None else cfg.tolerance
    goal, kept = near_equal(top[1]["f1"], tol, cfg.target_speedup), top
    for f in reach:
        if goal.better((f[1]["f1"], f[1]["speedup"]), (kept[1]["f1"], kept[1]["speedup"])):
            kept = f
    return kept


def calibrate_tagger(artifact, data, cfg: CalibrationConfig, task, batch_size: int = 64,
                     ui: UI = SILENT) -> Calibration:
    if (cfg.target_speedup is None) == (cfg.max_drop is None):
        raise EebertError("give exactly one of --target-speedup and --max-drop", "for example --target-speedup 2")
    name = criterion_for(task, cfg.criterion)
    CRITERIA.check(name, dict(cfg.criterion_params), 0, task.name)  # a sentence criterion fails in one line
    t0 = time.perf_counter()
    st = split_tags(artifact, data, "validation", batch_size, runtime=cfg.runtime, ui=ui)
    ref_f1 = f1_from_counts(st.reference_counts.sum(0).double()).item()  # the tagger as shipped
    grid, found = [], []
    for params in settings(name, dict(cfg.criterion_params)):
        crit = build_criterion(name, params, task=task.name)
        scores = crit.scores(st.logits)[:, :-1]
        point, warnings, points = solve_switching_off(st, scores, cfg, ref_f1, crit.stateless)
        grid.append({"criterion_params": params, "speedup_flops": point["speedup"], "entity_f1": point["f1"]})
        found.append((params, point, warnings, points, crit.stateless))
    params, point, warnings, points, stateless = pick_setting(st, found, cfg)
    thresholds = thresholds_of(point, st.counts.shape[1] - 1)
    skip = skipped_exits(thresholds, stateless)
    figures = st.figures(point["exits"], skip=skip)
    cis = intervals(st, point["exits"], cfg.bootstrap, skip=skip)
    half = (cis["entity_f1_ci95"][1] - cis["entity_f1_ci95"][0]) / 2
    if 100 * half > cfg.precision:  # as the sentence path warns on accuracy
        warnings = [*warnings, f"validation split has {len(st.words)} sentences: entity F1 is only known to about "
                               f"±{100 * half:.1f} points; use more validation data for tighter figures"]
    layers = artifact.exits.layers + [artifact.deployed.adapter.dims.num_layers]
    validation = {**figures, "reference_entity_f1": ref_f1, "reference": "gold" if st.labelled else "deployed",
                  "average_exit_layer": torch.tensor(layers, dtype=torch.float64)[point["exits"]].mean().item(),
                  "examples": len(st.words), **cis,
                  # what the runtime skips (switched off by the search, or "never"), as the sentence path records
                  "switched_off": [artifact.exits.layers[j] for j in sorted(skip)],
                  "exits_evaluated": exits_evaluated(point["exits"], len(thresholds), skip),
                  **({"switched_off_within_noise": True} if cfg.prune_within_noise else {})}
    cal = Calibration(
        criterion=name, thresholds=thresholds_to_json(thresholds),
        criterion_params=params, mode="target_speedup" if cfg.target_speedup is not None else "max_drop",
        target_speedup=cfg.target_speedup, max_drop=cfg.max_drop, metric="entity_f1", headline_metric="entity_f1",
        per_layer=len({t for t in thresholds if t != -INF}) > 1,  # the exits still on differ (refined per exit)
        task=task.name, exit_layers=layers, validation=validation,
        quantize=getattr(artifact, "quantize", None), runtime=None if cfg.runtime == "pytorch" else cfg.runtime,
        placement=RUNTIMES.get(cfg.runtime).scored_placement(artifact.deployed.model),  # where it was scored
        ci_method=CI_METHOD,
        margin=None if cfg.max_drop is None else {
            "method": f"bootstrap over sentences ({cfg.bootstrap} resamples), {cfg.drop_confidence} quantile of "
                      "the entity-F1 drop", "confidence": cfg.drop_confidence,
            "points": 100 * max(0.0, point["drop_bound"] - (ref_f1 - point["f1"]))},
        grid=grid, curve=[{"threshold": thresholds_to_json([p["threshold"]])[0], "speedup": p["speedup"], "entity_f1": p["f1"]}
                          for p in points[:: max(1, len(points) // 50)]],
        warnings=warnings, search_seconds=round(time.perf_counter() - t0, 2))
    cal.derived_from = derivation(artifact.path, WEIGHTS, known={WEIGHTS: artifact.exits_sha256})["derived_from"]
    cal.save(artifact.path)
    artifact.calibration = cal
    return cal
