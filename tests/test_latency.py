"""The latency cost model (`calibrate --cost latency`): timing the loop's parts, costs along each path,
and the search that switches off exits that do not pay for themselves."""

import json
import shutil

import pytest
import torch

from eebert_cli.criteria import build_criterion
from eebert_cli.scoring.latency import LatencyProfile, _paths, latency_costs, lengths_to_time, nonnegative_parts
from eebert_cli.scoring.threshold_search import INF, Problem, search, search_switching_off

from conftest import StepsSeen
from test_calibrate import synthetic
from test_cli import assert_one_line_error, run


def test_the_parts_come_back_from_the_path_times_they_make():
    layers = [1, 2, 3, 4, 5]
    design = torch.tensor([c for _, c in _paths(5, layers, 6)], dtype=torch.float64)
    truth = torch.tensor([2e-4, 1e-3, 1.5e-4, 3e-4], dtype=torch.float64)  # embed, layer, exit, head
    assert torch.allclose(nonnegative_parts(design, design @ truth), truth)
    # noise that would fit a negative part is held at zero, the rest refitted
    y = design @ torch.tensor([0.0, 1e-3, 1e-4, 0.0], dtype=torch.float64)
    y[:5] -= 5e-5
    got = nonnegative_parts(design, y)
    assert (got >= 0).all() and got[0] == 0 and abs(got[1] - 1e-3) < 5e-5


def test_the_profile_interpolates_between_measured_lengths_and_never_extrapolates():
    prof = LatencyProfile(lengths=[10, 30], measured={"embed": [1.0, 3.0], "layer": [2.0, 2.0], "exit": [0.0, 1.0],
                                                      "head": [1.0, 1.0]}, repeats=1, machine={})
    assert prof.at("embed", torch.tensor([5, 10, 20, 30, 100])).tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert lengths_to_time(torch.tensor([7] * 50)) == [7, 14]  # one length: a second keeps the line defined


def test_costs_charge_each_part_along_the_path():
    prof = LatencyProfile(lengths=[1], measured={"embed": [1.0], "layer": [10.0], "exit": [2.0], "head": [3.0]},
                          repeats=1, machine={})
    cost, full, charges = latency_costs(prof, torch.tensor([5, 9]), [1, 3], num_layers=4)
    assert cost[0].tolist() == [1 + 10 + 2, 1 + 30 + 4, 1 + 40 + 4 + 3]
    assert full.tolist() == [44.0, 44.0] and charges.tolist() == [[2.0, 2.0]] * 2


def costly_exits(charge: float) -> Problem:
    """The synthetic problem with every exit evaluated costing ``charge`` of a layer."""
    p = synthetic()
    n, k1 = p.scores.shape
    charges = torch.full((n, k1), charge, dtype=torch.float64)
    cost = p.cost + torch.cumsum(torch.cat([charges, charges[:, -1:]], 1), 1)
    return Problem(p.scores, p.correct, cost, p.full, charges)


def test_switching_an_exit_off_removes_its_cost_from_the_paths_that_pass_it():
    p = costly_exits(0.5)
    q = p.without({1})
    assert torch.equal(q.cost[:, :2], p.cost[:, :2]) and torch.allclose(q.cost[:, 2:], p.cost[:, 2:] - 0.5)
    assert q.scores[:, 1].isnan().all() and q.off == {1}
    thr, _ = search(q, build_criterion("entropy"), "target", 1.2)
    assert thr[1] == -INF and (q.outcome(thr).exits != 1).all()  # an exit switched off never answers
    # switching off one exit after another charges each once: the same costs as both at once
    assert torch.equal(q.without({1, 2}).cost, p.without({1, 2}).cost)
    assert torch.equal(q.without({1, 2}).without({0, 1, 2}).cost, p.without({0, 1, 2}).cost)
    with pytest.raises(ValueError, match="already off"):
        q.without({2})


@pytest.mark.parametrize("charge", [0.0, 0.3])
def test_the_search_switches_exits_off_only_when_that_does_better_at_the_target(charge):
    p, crit = costly_exits(charge), build_criterion("entropy")
    plain = p.outcome(search(p, crit, "target", 1.3)[0])
    thr, _, q = search_switching_off(p, crit, 1.3)
    got = q.outcome(thr)
    assert got.speedup >= 1.3 and got.accuracy >= plain.accuracy
    assert all(thr[j] == -INF for j in q.off)
    if charge == 0.0:  # an exit that costs nothing is never worth switching off
        assert not q.off
    else:  # on this problem the first exit fires too seldom to pay a third of a layer on every example
        assert q.off and got.accuracy > plain.accuracy


@pytest.fixture(scope="module")
def plain_artifact(tiny_ckpt, tiny_data, tmp_path_factory):
    art = tmp_path_factory.mktemp("latency") / "art"
    assert run("attach", tiny_ckpt, "--data", tiny_data, "--out", art, "--epochs", 5, "--json").exit_code == 0
    return art


PARTS = {"embed": 2e-4, "layer": 1e-3, "exit": 3e-4, "head": 1e-4}  # an exit at 30% of a layer


def test_measure_recovers_the_parts_from_the_runtimes_own_loop(plain_artifact):
    """The loop's calls are counted and a clock charges each its part: the fit must give the parts back."""
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.scoring.latency import measure

    art = load_artifact(plain_artifact)
    ad, exits, calls = art.deployed.adapter, art.exits, {p: 0 for p in PARTS}

    def counting(part, fn):
        def wrapped(*a, **k):
            calls[part] += 1
            return fn(*a, **k)
        return wrapped

    ad.embed, ad.layer, ad.head = (counting("embed", ad.embed), counting("layer", ad.layer),
                                   counting("head", ad.head))
    exits.logits = counting("exit", exits.logits)

    def clock(fn):
        for p in calls:
            calls[p] = 0
        out = fn()
        return out, sum(PARTS[p] * calls[p] for p in PARTS) * (1 + 0.01 * torch.rand(1).item())

    seen = StepsSeen()
    prof = measure(art, build_criterion("entropy", {}, art), torch.tensor([5, 8, 12, 16, 20]), repeats=3, clock=clock,
                   ui=seen)
    assert prof.lengths == lengths_to_time(torch.tensor([5, 8, 12, 16, 20]))
    # one bar run to its end: per length, a step per round of the early-exit paths (3 warm-up, 3 timed) and one
    # for the deployed model's repeats
    assert [(total, done) for _, total, done in seen.bars] == [(len(prof.lengths) * 7,) * 2]
    for part, want in PARTS.items():
        assert all(abs(v - want) < 0.05 * PARTS["layer"] for v in prof.measured[part]), (part, prof.measured)
    assert prof.machine["cpu"] and prof.repeats == 3
    with pytest.raises(Exception, match="too noisy"):  # a clock that does not see the layers is refused
        measure(art, build_criterion("entropy", {}, art), torch.tensor([5, 9]), repeats=2,
                clock=lambda fn: (fn(), 1e-3))


def test_onnx_runtime_paths_leave_where_they_are_told_and_clean_up(plain_artifact):
    """`--latency-runtime onnxruntime`: a temporary export with every exit live runs each path as designed."""
    pytest.importorskip("onnxruntime")
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.runtime import EarlyExitModel
    from eebert_cli.scoring.latency import _OnnxPaths

    art = load_artifact(plain_artifact)
    crit = build_criterion("entropy", {}, art)
    n = len(art.exits.layers)
    paths = _paths(n, art.exits.layers, art.deployed.adapter.dims.num_layers)
    target = _OnnxPaths(art, crit, paths)
    try:
        vocab = art.deployed.model.config.vocab_size
        ids = target.inputs(torch.randint(4, vocab, (1, 9), generator=torch.Generator().manual_seed(0)))
        got = [target.runner(i, ids)() for i in range(len(paths))]
        assert [k for _, k in got[:n]] == list(range(n))  # leave at each exit in turn
        assert got[n][1] == n  # every exit scored, none fired: the deployed head of the segments
        deployed = EarlyExitModel(art, crit, [-INF] * n).forward_one(torch.from_numpy(ids[0]))[0]
        assert torch.allclose(torch.from_numpy(got[n + 1]), deployed, atol=1e-4)  # the deployed graph
        assert torch.allclose(torch.from_numpy(got[n][0]), deployed, atol=1e-4)
    finally:
        target.close()
    assert not target.scratch.tmp.exists()  # the temporary export is gone; the artifact has no export of its own
    assert not (plain_artifact / "onnx").exists()


def test_calibrate_on_the_latency_model_switches_off_exits_and_keeps_flops_figures(plain_artifact, tmp_path,
                                                                                   monkeypatch):
    import shutil

    import eebert_cli.scoring.latency as latency
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.runtime import EarlyExitModel

    art = tmp_path / "art"
    shutil.copytree(plain_artifact, art)
    seen = []

    def fixed(artifact, criterion, lengths, runtime="pytorch", **k):  # the parts, as a busy machine cannot time them
        seen.append(runtime)
        return LatencyProfile(lengths=[8, 16], measured={p: [v, v] for p, v in PARTS.items()}, repeats=1,
                              machine={"cpu": "test"}, runtime=runtime)

    monkeypatch.setattr(latency, "measure", fixed)
    r = run("calibrate", art, "--target-speedup", 1.3, "--cost", "latency")
    assert r.exit_code == 0, r.output
    assert seen == ["pytorch"] and "latency model:" in r.output and "(30% of a layer)" in r.output
    cal = json.loads((art / "calibration.json").read_text())
    val = cal["validation"]
    assert cal["cost"]["model"] == "latency" and cal["cost"]["profile"]["measured"]["exit"] == [3e-4, 3e-4]
    assert val["speedup_latency_model"] >= 1.3 and val["speedup_flops"] > 1.0
    assert val["speedup_flops"] != val["speedup_latency_model"]  # two cost models, two figures
    off = val["switched_off"]
    assert [cal["thresholds"][cal["exit_layers"].index(l)] for l in off] == ["never"] * len(off)
    model = EarlyExitModel.from_artifact(art)  # the runtime never evaluates a switched-off exit
    assert all(layer not in off for _, layer, _ in model._plan())
    b = run("benchmark", art, "--timing-samples", 5, "--repeats", 1, "--json")
    assert b.exit_code == 0, b.output
    rep = json.loads((art / "report.json").read_text())
    assert rep["calibration_cost"] == "latency" and "test_vs_target_speedup" not in rep.get("gaps", {})
    assert "latency cost model" in (art / "report.md").read_text()
    assert load_artifact(art).calibration.validation["switched_off"] == off
    # an accuracy budget counts the same seconds (no exit switched off: that search is the target's)
    r = run("calibrate", art, "--max-drop", 5, "--cost", "latency", "--latency-runtime", "onnxruntime", "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads((art / "calibration.json").read_text())
    never = [l for l, t in zip(cal["exit_layers"], cal["thresholds"]) if t == "never"]
    assert cal["mode"] == "max_drop" and cal["validation"]["switched_off"] == never
    assert cal["validation"]["speedup_latency_model"] > 0 and seen == ["pytorch", "onnxruntime"]
    assert cal["cost"]["profile"]["runtime"] == "onnxruntime"
    # thresholds chosen for ONNX Runtime: its loop is the one timed, unless --latency-runtime says otherwise
    r = run("calibrate", art, "--target-speedup", 1.3, "--cost", "latency", "--runtime", "onnxruntime", "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads((art / "calibration.json").read_text())
    assert seen[-1] == "onnxruntime" and cal["runtime"] == "onnxruntime"


def test_prune_within_noise_keeps_accuracy_within_noise_of_every_exit_kept(plain_artifact, tmp_path):
    from eebert_cli.scoring.threshold_search import noise_tolerance

    assert_one_line_error(run("calibrate", tmp_path, "--target-speedup", 1.3, "--keep-exits", "--prune-within-noise"),
                          "--keep-exits keeps them all", "drop one of the two")
    assert_one_line_error(run("calibrate", tmp_path, "--max-drop", 1, "--prune-within-noise"),
                          "at a target speedup", "drop --prune-within-noise")
    got = {}
    for how in ("--keep-exits", "--prune-within-noise"):
        art = tmp_path / how.strip("-")
        shutil.copytree(plain_artifact, art)
        r = run("calibrate", art, "--target-speedup", 1.2, how, "--json")
        assert r.exit_code == 0, r.output
        got[how] = json.loads((art / "calibration.json").read_text())["validation"]
    kept, pruned = got["--keep-exits"], got["--prune-within-noise"]
    assert pruned["switched_off_within_noise"] is True and "switched_off_within_noise" not in kept
    assert pruned["speedup_flops"] >= 1.2
    assert pruned["accuracy"] >= kept["accuracy"] - noise_tolerance(kept["accuracy"], kept["examples"]) - 1e-12


def test_latency_cost_refuses_what_it_cannot_time(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    from eebert_cli import steps

    assert_one_line_error(run("calibrate", tmp_path, "--target-speedup", 1.3, "--cost", "seconds"),
                          "'seconds'", "flops, latency")
    assert_one_line_error(run("calibrate", tmp_path, "--target-speedup", 1.3, "--latency-runtime", "onnxruntime"),
                          "--latency-runtime names the loop", "--cost latency")
    badge, plain = tmp_path / "badge", tmp_path / "plain"
    assert run("attach", tiny_ckpt, "--data", tiny_data, "--out", badge, "--epochs", 1, "--bypass", "badge",
               "--json").exit_code == 0
    assert run("attach", tiny_ckpt, "--data", tiny_data, "--out", plain, "--epochs", 1, "--json").exit_code == 0

    def no_pass(*a, **k):
        raise AssertionError("the backbone ran before the latency model's limits were checked")

    monkeypatch.setattr(steps, "split_outputs", no_pass)
    # the guard stands on calibrate's path: what the latency model can time reaches it
    assert "the backbone ran before" in run("calibrate", plain, "--target-speedup", 1.3, "--cost", "latency").output
    # and what the artifact's config says it cannot time is refused before its weights load
    monkeypatch.setattr(steps, "load_artifact", lambda *a, **k: pytest.fail("the artifact loaded first"))
    assert_one_line_error(run("calibrate", badge, "--target-speedup", 1.3, "--cost", "latency"),
                          "--cost latency times plain exits", "--cost flops")
    assert_one_line_error(run("calibrate", plain, "--target-speedup", 1.3, "--cost", "latency", "--criterion",
                              "patience"), "patience keeps state across exits", "--cost flops")
    one = tmp_path / "one"
    assert run("attach", tiny_ckpt, "--data", tiny_data, "--out", one, "--epochs", 1, "--layers", "1",
               "--json").exit_code == 0
    assert_one_line_error(run("calibrate", one, "--target-speedup", 1.1, "--cost", "latency"),
                          "needs at least two exits", "--cost flops")


@pytest.mark.parametrize("criterion,flag,prunes", [("entropy", None, True), ("entropy", "--keep-exits", False),
                                                  ("patience", None, False)])
def test_a_flops_calibration_switches_exits_off_only_where_the_runtime_skips_them(plain_artifact, tmp_path,
                                                                                  monkeypatch, criterion, flag, prunes):
    """On FLOPs, exits that add no accuracy at the target are switched off (ties: fewer exits evaluated), with
    a stateless criterion only (patience reads every exit) and not under --keep-exits."""
    import shutil

    import eebert_cli.scoring.operating_point as op
    from eebert_cli.scoring.threshold_search import search_switching_off as real

    art = tmp_path / "art"
    shutil.copytree(plain_artifact, art)
    seen = []
    monkeypatch.setattr(op, "search_switching_off", lambda *a, **k: seen.append(k["ties"]) or real(*a, **k))
    r = run("calibrate", art, "--target-speedup", 1.3, "--criterion", criterion, *([flag] if flag else []), "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads((art / "calibration.json").read_text())
    assert cal.get("cost") in (None, {}) and bool(seen) == prunes and set(seen) <= {"evaluations"}
    never = [l for l, t in zip(cal["exit_layers"], cal["thresholds"]) if t == "never"]
    assert cal["validation"]["switched_off"] == (never if criterion != "patience" else [])
    assert 0 < cal["validation"]["exits_evaluated"] <= len(cal["thresholds"])


def test_a_flops_calibration_with_exits_switched_off_says_flops_everywhere(plain_artifact, tmp_path, monkeypatch):
    """Exits switched off on FLOPs: the record and the report count FLOPs, with no latency-model estimate."""
    import shutil

    import eebert_cli.scoring.operating_point as op

    def first_off(problem, criterion, goal, per_layer, tol, ties, within_noise=False):
        p = problem.without({0})
        thr, curve = search(p, criterion, "target", goal, per_layer, tol)
        return thr, curve, p

    art = tmp_path / "art"
    shutil.copytree(plain_artifact, art)
    monkeypatch.setattr(op, "search_switching_off", first_off)
    r = run("calibrate", art, "--target-speedup", 1.2, "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads((art / "calibration.json").read_text())
    assert cal["validation"]["switched_off"][:1] == [cal["exit_layers"][0]] and cal["thresholds"][0] == "never"
    assert "speedup_latency_model" not in cal["validation"] and cal.get("cost") in (None, {})
    assert run("benchmark", art, "--timing-samples", 5, "--repeats", 1, "--json").exit_code == 0
    text = (art / "report.md").read_text()
    assert "latency cost model" not in text and "switched off (the runtime never evaluates" in text


@pytest.mark.parametrize("flag,prunes", [(None, True), ("--keep-exits", False)])
def test_an_accuracy_budget_switches_exits_off_unless_told_to_keep_them(plain_artifact, tmp_path, monkeypatch,
                                                                        flag, prunes):
    """--max-drop: exits whose removal keeps the speedup found within the budget are switched off (on by
    default, as for a target); the record names them, and they are the exits at "never"."""
    import shutil

    import eebert_cli.scoring.operating_point as op
    from eebert_cli.scoring.threshold_search import switching_off as real

    art = tmp_path / "art"
    shutil.copytree(plain_artifact, art)
    seen = []
    monkeypatch.setattr(op, "switching_off", lambda p, solve, rank: seen.append(rank) or real(p, solve, rank))
    r = run("calibrate", art, "--max-drop", 20, *([flag] if flag else []), "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads((art / "calibration.json").read_text())
    assert bool(seen) == prunes and all(rank is op.rank_within_budget for rank in seen)
    never = [l for l, t in zip(cal["exit_layers"], cal["thresholds"]) if t == "never"]
    assert cal["validation"]["switched_off"] == never
    assert 0 <= cal["validation"]["exits_evaluated"] <= len(cal["thresholds"])
