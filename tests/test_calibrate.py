import pytest
import torch

from eebert_cli.scoring.threshold_search import (INF, Problem, decide, rank_within_budget, search,
                                                 search_switching_off, switching_off)
from eebert_cli.criteria import build_criterion
from eebert_cli.core.errors import EebertError


def synthetic(n=2000, k=4, seed=0):
    """Exits get more accurate with depth; confident examples are easy ones."""
    g = torch.Generator().manual_seed(seed)
    difficulty = torch.rand(n, generator=g)
    depth = torch.arange(k, dtype=torch.float64)
    correct = (torch.rand(n, k, generator=g) > difficulty[:, None] * (1 - depth / k)).double()
    correct[:, -1] = (torch.rand(n, generator=g) > 0.1).double()
    scores = (difficulty[:, None] * (1 - depth[:-1] / k) + 0.05 * torch.rand(n, k - 1, generator=g)).double()
    cost = torch.cumsum(torch.ones(n, k, dtype=torch.float64), 1)
    full = torch.full((n,), float(k), dtype=torch.float64)
    return Problem(scores, correct, cost, full)


def test_decide_takes_the_first_exit_under_its_threshold_else_the_last():
    s = torch.tensor([[0.5, 0.1], [0.9, 0.9]], dtype=torch.float64)
    assert decide(s, torch.tensor([0.2, 0.2], dtype=torch.float64)).tolist() == [1, 2]
    assert decide(s, torch.tensor([INF, 0.0], dtype=torch.float64)).tolist() == [0, 0]


@pytest.mark.parametrize("target", [1.5, 2.0, 3.0])
def test_target_mode_reaches_the_target(target):
    p = synthetic()
    thr, curve = search(p, build_criterion("entropy"), "target", target)
    o = p.outcome(thr)
    assert o.speedup >= target
    assert len(thr) == 3 and curve


def test_per_exit_thresholds_are_no_worse_than_one_global_threshold():
    p = synthetic()
    crit = build_criterion("entropy")
    glob = p.outcome(search(p, crit, "target", 2.0, per_layer=False)[0])
    per = p.outcome(search(p, crit, "target", 2.0, per_layer=True)[0])
    assert per.accuracy >= glob.accuracy and per.speedup >= 2.0


def test_max_drop_mode_keeps_accuracy_and_speeds_up():
    p = synthetic()
    ref = p.correct[:, -1].mean().item()
    o = p.outcome(search(p, build_criterion("entropy"), "drop", ref - 0.01)[0])
    assert o.accuracy >= ref - 0.01 and o.speedup > 1.0


def test_unreachable_target_names_the_highest_reachable_speedup():
    p = synthetic(k=4)
    with pytest.raises(EebertError) as e:
        search(p, build_criterion("entropy"), "target", 10.0)
    assert "4.00x" in e.value.message  # leaving at exit 0 costs 1 of 4


@pytest.mark.parametrize("stateless,off", [(True, ()), (False, ()), (True, (1,))])
def test_the_sweeps_give_each_candidate_the_outcome_the_runtime_would_get(stateless, off):
    # an exit set to "never" under a stateless criterion is skipped and costs nothing: the fast sweeps
    # must charge every candidate as ``outcome`` does, or the search ranks thresholds on other costs
    p = synthetic(n=300, k=5, seed=3)
    n, k1 = p.scores.shape
    charges = torch.full((n, k1), 0.3, dtype=torch.float64)
    cost = p.cost + torch.cumsum(torch.cat([charges, charges[:, -1:]], 1), 1)
    q = Problem(p.scores, p.correct, cost, p.full, charges, stateless=stateless)
    if off:  # an exit already switched off: every sweep and outcome charges it nothing, once
        q = q.without(set(off))
    crit = build_criterion("entropy")
    thr = torch.tensor([-INF, 0.4, -INF, 0.2], dtype=torch.float64)  # two exits at "never"
    for k in range(k1):
        cands = torch.cat([crit.candidates(q.scores[:, k], n=8), torch.tensor([INF], dtype=torch.float64)])
        acc, spd = q.sweep_exit(thr, k, cands)
        for j, c in enumerate(cands.tolist()):
            t = thr.clone()
            t[k] = c
            o = q.outcome(t)
            assert acc[j].item() == pytest.approx(o.accuracy, abs=1e-12)
            assert spd[j].item() == pytest.approx(o.speedup, rel=1e-12)
    pooled = torch.unique(torch.cat([crit.candidates(q.scores[:, k], n=8) for k in range(k1)]
                                    + [torch.tensor([INF], dtype=torch.float64)]))
    acc, spd = q.sweep_global(pooled)
    for j, c in enumerate(pooled.tolist()):
        o = q.outcome(torch.full((k1,), c, dtype=torch.float64))
        assert acc[j].item() == pytest.approx(o.accuracy, abs=1e-12)
        assert spd[j].item() == pytest.approx(o.speedup, rel=1e-12)


def flops_like(p: Problem, charge: float = 0.003) -> Problem:
    """``p`` with each evaluated exit charged a FLOPs-sized share of a layer (a pooled head), stateless."""
    n, k1 = p.scores.shape
    charges = torch.full((n, k1), charge, dtype=torch.float64)
    cost = p.cost + torch.cumsum(torch.cat([charges, charges[:, -1:]], 1), 1)
    return Problem(p.scores, p.correct, cost, p.full, charges, stateless=True)


def test_exits_evaluated_count_the_live_exits_each_example_passes():
    p = flops_like(synthetic(n=4, k=4))
    p.scores[:] = torch.tensor([[0.1, 0.9, 0.9], [0.9, 0.1, 0.9], [0.9, 0.9, 0.1], [0.9, 0.9, 0.9]])
    t = torch.full((3,), 0.5, dtype=torch.float64)
    assert p.evaluated(t) == pytest.approx((1 + 2 + 3 + 3) / 4)
    t[0] = -INF  # "never": skipped by the runtime, so not evaluated
    assert p.evaluated(t) == pytest.approx((2 + 1 + 2 + 2) / 4)


@pytest.mark.parametrize("ties", ["evaluations", "speedup"])
def test_an_exit_that_adds_no_accuracy_at_the_target_is_switched_off(ties):
    # exit 0 is wrong on every example and no more confident than the others: firing it only loses accuracy
    p = flops_like(synthetic())
    p.correct[:, 0] = 0.0
    p.scores[:, 0] = p.scores[:, 1:].max(1).values + 0.01
    crit = build_criterion("entropy")
    plain_t, _ = search(p, crit, "target", 1.5)
    plain = p.outcome(plain_t)
    thr, _, q = search_switching_off(p, crit, 1.5, ties=ties)
    got = q.outcome(thr)
    assert 0 in q.off and thr[0] == -INF and got.speedup >= 1.5 and got.accuracy >= plain.accuracy
    assert q.evaluated(thr) < p.evaluated(plain_t) - 0.9  # every example passed exit 0


def test_switching_off_never_lowers_validation_accuracy_at_the_target():
    p, crit = flops_like(synthetic(n=600, k=6, seed=1)), build_criterion("entropy")
    for target in (1.5, 2.0, 3.0):
        plain = p.outcome(search(p, crit, "target", target)[0])
        thr, _, q = search_switching_off(p, crit, target, ties="evaluations")
        got = q.outcome(thr)
        assert got.speedup >= target and got.accuracy >= plain.accuracy - 1e-12
        assert all(thr[j] == -INF for j in q.off)


def test_within_noise_an_exit_worth_less_than_the_tolerance_is_switched_off():
    """``within_noise``: exits go while accuracy stays within the tolerance of every exit kept (anchored there, so
    removals cannot each lose a little and add up), fewest exits evaluated first; the default keeps any exit
    whose removal costs accuracy at all."""
    p, crit = flops_like(synthetic(n=600, k=6, seed=1)), build_criterion("entropy")
    plain_t, _, plain = search_switching_off(p, crit, 2.0, ties="evaluations")
    for tol in (0.0, 0.01, 0.05):
        kept = p.outcome(search(p, crit, "target", 2.0, tolerance=tol)[0])  # every exit on: the anchor
        thr, _, q = search_switching_off(p, crit, 2.0, tolerance=tol, ties="evaluations", within_noise=True)
        got = q.outcome(thr)
        assert got.speedup >= 2.0 and got.accuracy >= kept.accuracy - tol - 1e-12
        assert all(thr[j] == -INF for j in q.off)
        for j in set(range(p.scores.shape[1])) - q.off:  # a local minimum: no further exit goes within the floor
            r = q.without(q.off | {j})
            try:
                t = search(r, crit, "target", 2.0, tolerance=tol)[0]
            except EebertError:
                continue
            assert r.outcome(t).accuracy < kept.accuracy - tol - 1e-12 or r.evaluated(t) >= q.evaluated(thr)
    loose_t, _, loose = search_switching_off(p, crit, 2.0, tolerance=0.05, ties="evaluations", within_noise=True)
    assert loose.evaluated(loose_t) < plain.evaluated(plain_t)  # a wider tolerance switches more off here
    assert len(loose.off) > len(plain.off)


def budget_search(p: Problem, goal: float):
    crit = build_criterion("entropy")
    plain_t = search(p, crit, "drop", goal)[0]
    (thr, _), q = switching_off(p, lambda x: search(x, crit, "drop", goal), rank_within_budget)
    return plain_t, thr, q


@pytest.mark.parametrize("charge", [0.003, 0.3])  # a pooled head's FLOPs; an exit on a CPU's clock
def test_switching_off_within_a_budget_never_lowers_the_speedup_and_keeps_the_budget(charge):
    for seed in range(3):
        p = flops_like(synthetic(n=600, k=6, seed=seed), charge)
        goal = p.correct[:, -1].mean().item() - 0.02
        plain_t, thr, q = budget_search(p, goal)
        got = q.outcome(thr)
        assert got.accuracy >= goal - 1e-12 and got.speedup >= p.outcome(plain_t).speedup - 1e-12
        assert all(thr[j] == -INF for j in q.off)


def test_within_a_budget_an_exit_the_search_kept_firing_is_switched_off_for_more_speedup():
    # on this problem the global sweep and one-exit moves keep the first exit firing; searched again without
    # it, the same budget buys more speedup, and every example skips a head
    p = flops_like(synthetic(n=600, k=6, seed=0))
    goal = p.correct[:, -1].mean().item() - 0.02
    plain_t, thr, q = budget_search(p, goal)
    plain, got = p.outcome(plain_t), q.outcome(thr)
    assert plain_t[0] != -INF and q.off == {0} and thr[0] == -INF
    assert got.speedup > plain.speedup + 0.01 and got.accuracy >= goal - 1e-12
    assert q.evaluated(thr) < p.evaluated(plain_t) - 0.5


def test_what_the_task_cannot_use_is_refused_before_the_weights_load(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    """A --metric a classifier does not report, and an --unlabeled file that is not there, were refused after
    the backbone had loaded (and, for benchmark's metric, scored the split): now from the artifact's config."""
    from eebert_cli import steps
    from eebert_cli.data import DataConfig
    from eebert_cli.model.runtime import EarlyExitModel
    from eebert_cli.scoring.config import BenchmarkConfig, CalibrationConfig
    from eebert_cli.train.config import AttachConfig, TrainConfig

    art = tmp_path / "art"
    steps.attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=1)), art)
    monkeypatch.setattr(steps, "load_artifact", lambda *a, **k: pytest.fail("the artifact loaded first"))
    monkeypatch.setattr(EarlyExitModel, "from_artifact", lambda *a, **k: pytest.fail("the model loaded first"))
    with pytest.raises(EebertError, match="--unlabeled .*nope.csv: file not found"):
        steps.calibrate(art, None, CalibrationConfig(max_drop=1.0, unlabeled=str(tmp_path / "nope.csv")))
    with pytest.raises(EebertError, match="metric 'pearson' is not reported for classification models"):
        steps.calibrate(art, None, CalibrationConfig(target_speedup=1.5), metric="pearson")
    with pytest.raises(EebertError, match="metric 'entity-f1' is not reported for classification models"):
        steps.benchmark(art, None, BenchmarkConfig(metric="entity-f1"))
    # and what the config alone rules out: a target the first exit cannot reach, gate thresholds without gates
    with pytest.raises(EebertError, match="target speedup 50x is out of reach"):
        steps.calibrate(art, None, CalibrationConfig(target_speedup=50.0))
    with pytest.raises(EebertError, match="this one has none"):
        steps.calibrate(art, None, CalibrationConfig(target_speedup=1.5, gate_thresholds=[0.5]))
    # export: a folder it must not write, an artifact not calibrated yet
    pytest.importorskip("onnx")
    import eebert_cli.deploy.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "load_artifact", lambda *a, **k: pytest.fail("the artifact loaded first"))
    with pytest.raises(EebertError, match="is not calibrated yet"):
        steps.export(art)
    (art / "calibration.json").write_text("{}")  # its existence is all the check before the load reads
    with pytest.raises(EebertError, match="is the checkpoint"):
        steps.export(art, out=tiny_ckpt)
