"""The operating-point chooser: the near-equal rule, gates off on ties, and promises that hold on unseen data.

The statistical tests draw validation and test splits from a synthetic
population whose truth is known, so they can fail: an interval that is too
narrow, or a --max-drop search without its margin, misses the stated rate.
"""

from types import SimpleNamespace

import pytest
import torch

from eebert_cli.scoring.threshold_search import Outcome, Problem, bootstrap, search

from eebert_cli.scoring.config import CalibrationConfig
from eebert_cli.criteria import build_criterion
from eebert_cli.scoring.operating_point import pick, search_with_margin


def population(n: int, g: torch.Generator, k: int = 4) -> Problem:
    """Exit k is right with probability rising with depth and falling with difficulty; scores see difficulty."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    depth = torch.arange(k, dtype=torch.float64)
    p_right = torch.sigmoid(6 * (0.55 + 0.2 * depth[None, :] - u[:, None]))
    correct = (torch.rand(n, k, generator=g, dtype=torch.float64) < p_right).double()
    scores = u[:, None] - 0.1 * depth[None, :-1] + 0.15 * torch.randn(n, k - 1, generator=g, dtype=torch.float64)
    cost = (depth + 1).expand(n, k).clone()
    return Problem(scores, correct, cost, torch.full((n,), float(k), dtype=torch.float64))


def test_bootstrap_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    g = torch.Generator().manual_seed(1)
    thr = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    truth = population(400_000, g).outcome(thr).accuracy  # the population value at fixed thresholds
    hits, trials = 0, 200
    for t in range(trials):
        ci = bootstrap(population(300, g), thr, 300, seed=t)["accuracy_ci95"]
        hits += ci[0] <= truth <= ci[1]
    assert 0.90 <= hits / trials <= 0.99, hits / trials


def _drop_within(confidence: float, trials: int = 60, n: int = 400, max_drop: float = 2.0) -> tuple[float, float]:
    """(share of trials whose drop on a fresh test split of the same size stays within ``max_drop`` points,
    mean test speedup)."""
    g = torch.Generator().manual_seed(7)
    crit = build_criterion("maxprob")
    cfg = CalibrationConfig(max_drop=max_drop, drop_confidence=confidence)
    ok, speed = 0, 0.0
    for _ in range(trials):
        val, test = population(n, g), population(n, g)
        ref = val.correct[:, -1]
        if confidence > 0.5:
            thr, _, margin = search_with_margin(val, crit, ref.mean().item(), ref, max_drop, cfg)
        else:  # the old rule: validation accuracy >= deployed - D, no margin
            thr, _ = search(val, crit, "drop", ref.mean().item() - max_drop / 100)
        drop = 100 * (test.correct[:, -1].mean().item() - test.outcome(thr).accuracy)
        ok += drop <= max_drop + 1e-9
        speed += test.outcome(thr).speedup / trials
    return ok / trials, speed


def test_max_drop_holds_on_unseen_data_with_the_margin_and_not_without():
    (with_margin, speed), (without, _) = _drop_within(0.9), _drop_within(0.5)
    assert with_margin >= 0.88, with_margin
    assert speed > 1.05  # still faster: the margin did not simply turn early exiting off
    assert without < 0.75, without  # the failure the margin exists for: it can be seen


def _cand(gate, speedup, accuracy):
    return SimpleNamespace(gate_threshold=gate, outcome=Outcome(None, speedup, accuracy),
                           gates_on=gate is not None and gate < 1.0)


def test_equal_accuracy_prefers_gates_off_over_gates_that_never_fire():
    on, off = _cand(0.9, 2.00, 0.85), _cand(1.0, 2.02, 0.85)
    assert pick([on, off], "target", 0.0) is off
    assert pick([on, off], "drop", 0.0) is off
    faster = _cand(0.5, 2.5, 0.80)  # worse beyond noise: target mode keeps the accurate, gates-off point
    assert pick([on, off, faster], "target", 0.01) is off


def test_a_problem_under_other_costs_keeps_what_it_knows_of_the_task_and_criterion():
    g = torch.Generator().manual_seed(5)
    base = population(50, g)
    charges = torch.full((50, 3), 0.25, dtype=torch.float64)
    p = Problem(base.scores, base.correct, base.cost, base.full, charges, scale=0.5, stateless=True).without({1})
    q = p.costed(base.cost * 2, base.full * 2, None)
    assert (q.scale, q.stateless, q.off) == (0.5, True, frozenset({1}))
    assert q.scores is p.scores and torch.equal(q.cost, base.cost.double() * 2)


def test_target_mode_takes_the_slowest_within_noise_of_the_best():
    a, b, c = _cand(None, 2.4, 0.850), _cand(None, 2.1, 0.848), _cand(None, 2.0, 0.80)
    assert pick([a, b, c], "target", 0.005) is b
    assert pick([a, b, c], "target", 0.0) is a


def test_an_exit_set_to_never_costs_nothing_only_under_a_stateless_criterion():
    g = torch.Generator().manual_seed(3)
    base = population(400, g)
    charges = torch.full((400, 3), 0.25, dtype=torch.float64)  # each exit's head: a quarter of a layer
    thr = torch.tensor([-float("inf"), 0.3, 0.5], dtype=torch.float64)
    e = Problem(base.scores, base.correct, base.cost, base.full).outcome(thr).exits
    spent = base.cost.gather(1, e[:, None]).sum().item()
    for stateless, saved in ((True, 0.25 * (e > 0).sum().item()), (False, 0.0)):
        p = Problem(base.scores, base.correct, base.cost, base.full, charges, stateless=stateless)
        o = p.outcome(thr)
        assert torch.equal(o.exits, e)  # where examples leave does not change, only what passing exit 0 cost
        assert o.speedup == pytest.approx(p.full_total / (spent - saved), rel=1e-12)
        lo, hi = bootstrap(p, thr, 400)["speedup_ci95"]
        assert lo <= o.speedup <= hi  # the interval is about the same figure


@pytest.mark.parametrize("settings,needle", [
    ({"target_speedup": 0.5}, "--target-speedup must be above 1.0, got 0.5"),
    ({"max_drop": 101.0}, "--max-drop must be within [0.0, 100.0], got 101.0"),
    ({"max_drop": 1.0, "drop_confidence": 1.0}, "--drop-confidence must be within [0.5, 1.0), got 1.0"),
    ({"target_speedup": 2.0, "cost": "watts"}, "--cost: unknown value 'watts'"),
    ({"target_speedup": 2.0, "runtime": "onnx"}, "--runtime: unknown value 'onnx'"),
    ({"target_speedup": 2.0, "bootstrap": 0}, "--bootstrap must be >= 1, got 0"),
])
def test_a_calibration_config_built_in_python_is_checked_by_its_declared_ranges(settings, needle):
    """No flag or recipe checked it: calibration checks every field CalibrationConfig declares, before any pass
    (the hand-written check it replaced knew three ranges, so bootstrap = 0 went on to the pass)."""
    from eebert_cli.core.errors import EebertError
    from eebert_cli.scoring.operating_point import check_config

    with pytest.raises(EebertError) as e:
        check_config(CalibrationConfig(**settings))
    assert needle in e.value.message
