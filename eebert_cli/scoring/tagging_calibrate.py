"""`eebert calibrate` for taggers: one threshold on a per-sentence criterion, chosen on validation.

Each candidate threshold sends every sentence out at its first exit whose score is
within it (``calibrate.decide``); entity F1 at that assignment is exact (summed span
counts, ``scoring.py``). ``--target-speedup``: the most accurate candidate that reaches
the speedup. ``--max-drop`` (entity-F1 points): the fastest candidate whose drop against
the deployed tagger stays within the budget on a bootstrap bound over sentences (the
``drop_confidence`` quantile of the drop across resamples), the confidence-margin idea
the sentence calibration uses for accuracy.
"""

from __future__ import annotations

import itertools
import time

import torch

from ..model.artifact import WEIGHTS, derivation
from .threshold_search import CalibrationConfig, decide
from ..model.calibration import CI_METHOD, Calibration, thresholds_to_json
from ..criteria import CRITERIA, build_criterion
from ..core.errors import EebertError
from ..tasks import criterion_for
from .tagging import SplitTags, split_tags

CANDIDATES = 200  #: threshold candidates (score quantiles) per criterion setting


def settings(name: str, params: dict) -> list[dict]:
    """The criterion's parameters: as given, with its grid searched for those left unset."""
    grid = {k: v for k, v in CRITERIA.get(name).grid.items() if k not in params}
    keys = sorted(grid)
    return [{**params, **dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]


def _f1(c: torch.Tensor) -> torch.Tensor:
    """F1 from summed counts [..., 3] (correct, predicted, gold); 1 when neither side has entities."""
    den = c[..., 1] + c[..., 2]
    return torch.where(den > 0, 2 * c[..., 0] / den.clamp_min(1), torch.ones_like(den))


def sweep(st: SplitTags, scores: torch.Tensor, cfg: CalibrationConfig, seed: int = 0) -> list[dict]:
    """Every candidate threshold's validation point (with the bootstrap drop bound under --max-drop)."""
    finite = scores[torch.isfinite(scores)].double()
    q = torch.linspace(0, 1, CANDIDATES, dtype=torch.float64)
    cands = torch.cat([torch.tensor([-float("inf")], dtype=torch.float64),
                       torch.unique(torch.quantile(finite, q)) if finite.numel() else torch.empty(0)])
    s, k = st.counts.shape[:2]
    rows = torch.arange(s)
    ref_counts = st.counts[:, -1].double()
    boot = None
    if cfg.max_drop is not None:
        gen = torch.Generator().manual_seed(seed)
        boot = torch.randint(s, (cfg.bootstrap, s), generator=gen)
        ref_b = _f1(ref_counts[boot].sum(1))
    out = []
    for t in cands.tolist():
        e = decide(scores.double(), torch.full((k - 1,), t, dtype=torch.float64))
        point = {"threshold": t, "speedup": st.full.sum().item() / st.cost[rows, e].sum().item(),
                 "f1": st.reference_f1(e), "exits": e}
        if boot is not None:
            drop = ref_b - _f1(st.counts[rows, e].double()[boot].sum(1))
            point["drop_bound"] = torch.quantile(drop, cfg.drop_confidence).item()
        out.append(point)
    return out


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


def calibrate_tagger(artifact, data, cfg: CalibrationConfig, task, batch_size: int = 64) -> Calibration:
    if (cfg.target_speedup is None) == (cfg.max_drop is None):
        raise EebertError("give exactly one of --target-speedup and --max-drop", "for example --target-speedup 2")
    name = criterion_for(task, cfg.criterion)
    CRITERIA.check(name, dict(cfg.criterion_params), 0, task.name)  # a sentence criterion fails in one line
    t0 = time.perf_counter()
    st = split_tags(artifact, data, "validation", batch_size)
    ref_e = torch.full((len(st.words),), st.counts.shape[1] - 1, dtype=torch.long)
    ref_f1 = st.reference_f1(ref_e)
    best, grid = None, []
    key = (lambda p: (p["f1"], p["speedup"])) if cfg.target_speedup is not None else \
        (lambda p: (p["speedup"], p["f1"]))
    for params in settings(name, dict(cfg.criterion_params)):
        crit = build_criterion(name, params, task=task.name)
        points = sweep(st, crit.scores(st.logits)[:, :-1], cfg)
        point, warnings = choose(points, cfg, ref_f1)
        grid.append({"criterion_params": params, "speedup_flops": point["speedup"], "entity_f1": point["f1"]})
        if best is None or key(point) > key(best[1]):
            best = (params, point, warnings, points)
    params, point, warnings, points = best
    figures = st.figures(point["exits"])
    layers = artifact.exits.layers + [artifact.deployed.adapter.dims.num_layers]
    validation = {**figures, "reference_entity_f1": ref_f1, "reference": "gold" if st.labelled else "deployed",
                  "average_exit_layer": torch.tensor(layers, dtype=torch.float64)[point["exits"]].mean().item(),
                  "examples": len(st.words)}
    cal = Calibration(
        criterion=name, thresholds=thresholds_to_json([point["threshold"]] * (len(layers) - 1)),
        criterion_params=params, mode="target_speedup" if cfg.target_speedup is not None else "max_drop",
        target_speedup=cfg.target_speedup, max_drop=cfg.max_drop, per_layer=False, metric="entity_f1",
        headline_metric="entity_f1", task=task.name, exit_layers=layers, validation=validation,
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
