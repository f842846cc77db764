"""Criteria on hand-made exit outputs whose right exit is known."""

import math

import torch

from eebert_cli.calibrate import decide
from eebert_cli.criteria import CRITERIA, build_criterion

SURE, UNSURE = [6.0, 0.0], [0.1, 0.0]   # confident class 0 / nearly uniform


def logits(*rows):
    return torch.tensor([rows], dtype=torch.float32)  # [1, K, C]


def exit_of(name, lg, thr, **params):
    c = build_criterion(name, params)
    return int(decide(c.scores(lg)[:, :-1].double(), torch.tensor(thr, dtype=torch.float64))[0])


def test_entropy_exits_at_the_first_confident_exit():
    lg = logits(UNSURE, UNSURE, SURE, SURE)
    assert exit_of("entropy", lg, [0.1, 0.1, 0.1]) == 2
    assert exit_of("entropy", lg, [1.0, 1.0, 1.0]) == 0  # loose threshold: leave at once


def test_normalised_entropy_is_in_zero_one():
    c = build_criterion("entropy", {"normalized": True})
    uniform = torch.zeros(1, 1, 4)
    assert math.isclose(c.scores(uniform).item(), 1.0, rel_tol=1e-6)


def test_maxprob_scores_one_minus_top_probability():
    c = build_criterion("maxprob")
    s = c.scores(logits([0.0, 0.0], SURE))[0]
    assert math.isclose(s[0].item(), 0.5, rel_tol=1e-6) and s[1].item() < 0.01
    assert exit_of("maxprob", logits(UNSURE, SURE, UNSURE), [0.1, 0.1]) == 1


def test_patience_counts_consecutive_agreeing_exits():
    a, b = [1.0, 0.0], [0.0, 1.0]
    lg = logits(a, b, b, b, a)
    s = build_criterion("patience").scores(lg)[0].tolist()
    assert s == [0, 0, -1, -2, 0]
    assert exit_of("patience", lg, [-2, -2, -2, -2]) == 3     # patience 2
    assert exit_of("patience", lg, [-1, -1, -1, -1]) == 2     # patience 1
    assert exit_of("patience", lg, [-9, -9, -9, -9]) == 4     # never: deployed head answers


def test_step_by_step_equals_batched_scores_for_every_criterion():
    torch.manual_seed(0)
    lg = torch.randn(8, 5, 3) * 3
    for name in CRITERIA.names():
        c = build_criterion(name)
        state = c.init_state(8)
        stepped = []
        for k in range(5):
            s, state = c.step(lg[:, k], state)
            stepped.append(s)
        assert torch.equal(torch.stack(stepped, 1), c.scores(lg)), name


def test_state_rows_can_be_dropped():
    c = build_criterion("patience")
    st = c.init_state(3)
    _, st = c.step(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0]]), st)
    kept = c.select(st, torch.tensor([0, 2]))
    assert kept["prev"].tolist() == [0, 0]
