"""Criteria on hand-made exit outputs whose right exit is known."""

import math

import pytest
import torch

from eebert_cli.scoring.threshold_search import decide
from eebert_cli.criteria import CRITERIA, build_criterion
from eebert_cli.criteria.dge import DIVERGENCES, REFERENCES
from eebert_cli.criteria.learned import LearnToExit, fit_learn_to_exit
from eebert_cli.core.errors import EebertError

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


def bound(name, **params):
    """A criterion ready to score; `learned` gets a hand-set scorer reading feature 0."""
    c = build_criterion(name, params)
    if name == "learned":
        m = LearnToExit(4)
        with torch.no_grad():
            m.linear.weight.zero_()
            m.linear.weight[0, 0] = 4.0
            m.linear.bias.zero_()
        c.module = m.eval()
    return c


VARIANTS = [("entropy", {}), ("entropy", {"normalized": True}), ("maxprob", {}), ("patience", {}),
            ("patience", {"tiebreak": True}), ("pcee", {}), ("pcee", {"confidence": 0.5, "tiebreak": True}),
            ("cobee", {}), ("cobee", {"tiebreak": True}), ("cobee", {"weighted": True}),
            ("learned", {})] + [("dge", {"divergence": d, "reference": r, "patience": p})
                                for d in DIVERGENCES for r in REFERENCES for p in (1, 2)]


def test_every_registered_classification_criterion_is_covered():
    # regression-only criteria (patience-regression) have their own tests in test_tasks.py
    classify = {n for n in CRITERIA.names() if "classification" in getattr(CRITERIA.get(n), "tasks", ("classification",))}
    assert {n for n, _ in VARIANTS} == classify


@pytest.mark.parametrize("name,params", VARIANTS)
def test_step_by_step_equals_batched_scores(name, params):
    torch.manual_seed(0)
    lg = torch.randn(8, 5, 3) * 3
    feats = torch.randn(8, 4, 4)
    c = bound(name, **params)
    state = c.init_state(8)
    stepped = []
    for k in range(5):
        s, state = c.observe(lg[:, k], state, feats[:, k] if k < 4 else None)
        stepped.append(s)
    torch.testing.assert_close(torch.stack(stepped, 1), c.scores(lg, feats), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name,params", VARIANTS)
def test_dropping_rows_keeps_the_other_rows_scores(name, params):
    """What the batched runtime does when samples leave: the rest score as if alone."""
    torch.manual_seed(1)
    lg, feats = torch.randn(6, 4, 3) * 3, torch.randn(6, 3, 4)
    c = bound(name, **params)
    full = c.scores(lg, feats)
    keep = torch.tensor([0, 2, 5])
    state = c.init_state(6)
    s0, state = c.observe(lg[:, 0], state, feats[:, 0])
    state = c.select(state, keep)
    rest = [c.observe(lg[keep, k], state, feats[keep, k] if k < 3 else None) for k in (1,)][0][0]
    torch.testing.assert_close(rest, full[keep, 1], equal_nan=True)


def test_entropy_raw_and_normalised_differ_by_log_c():
    lg = torch.randn(5, 3, 7)
    raw = build_criterion("entropy").scores(lg)
    norm = build_criterion("entropy", {"normalized": True}).scores(lg)
    torch.testing.assert_close(raw / math.log(7), norm)


def test_pcee_needs_consecutive_confident_exits():
    lg = logits(SURE, UNSURE, SURE, SURE, SURE, UNSURE)
    s = build_criterion("pcee").scores(lg)[0].tolist()
    assert s == [-1, 0, -1, -2, -3, 0]          # an unconfident exit resets the run
    assert exit_of("pcee", lg, [-2] * 5) == 3    # two confident in a row
    assert exit_of("pcee", lg, [-3] * 5) == 4
    assert exit_of("pcee", lg, [-1] * 5) == 0
    # a stricter confidence level: SURE's normalised entropy (~0.035) is no longer below it
    assert exit_of("pcee", lg, [-1] * 5, confidence=0.01) == 5


def test_pcee_rejects_a_confidence_outside_zero_one():
    with pytest.raises(EebertError):
        build_criterion("pcee", {"confidence": 1.5})


A, B = [3.0, 0.0], [0.0, 3.0]


def test_dge_exits_once_the_prediction_settles():
    lg = logits(A, B, B, B, B)
    s = build_criterion("dge").scores(lg)[0]
    assert math.isnan(s[0]) and s[1] > 0.3 and s[2:].abs().max() < 1e-6
    assert exit_of("dge", lg, [0.01] * 4) == 2                  # B == B at exit 2
    assert exit_of("dge", lg, [0.01] * 4, patience=2) == 3      # settled for two comparisons
    assert exit_of("dge", lg, [float("inf")] * 4) == 1          # the first exit has nothing to compare
    # against the mean of earlier exits, the A at exit 0 keeps a disagreement alive for longer
    m = build_criterion("dge", {"reference": "mean"}).scores(lg)[0]
    assert m[2] > 0.01 and m[3] < m[2] and m[4] < m[3]
    assert exit_of("dge", lg, [float(m[3]) + 1e-6] * 4, reference="mean") == 3


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_dge_divergences_match_their_formulas(kind):
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = torch.tensor([[0.3, 0.3, 0.4]])
    kl = lambda a, b: float((a * (a / b).log()).sum())  # noqa: E731
    m = (p + q) / 2
    want = {"kl": kl(p, q), "reverse-kl": kl(q, p), "symmetric-kl": kl(p, q) + kl(q, p),
            "js": 0.5 * kl(p, m) + 0.5 * kl(q, m)}[kind]
    s = build_criterion("dge", {"divergence": kind}).scores(torch.stack([q.log(), p.log()], 1))[0, 1]
    assert math.isclose(float(s), want, rel_tol=1e-4)


def test_dge_rejects_unknown_settings():
    for bad in ({"divergence": "hellinger"}, {"reference": "first"}, {"patience": 0}):
        with pytest.raises(EebertError):
            build_criterion("dge", bad)


def test_cobee_counts_cumulative_votes_not_only_consecutive_ones():
    lg = logits(A, B, A, B, A, B)
    s = build_criterion("cobee").scores(lg)[0].tolist()
    assert s == [-1, -1, -2, -2, -3, -3]
    assert exit_of("cobee", lg, [-3] * 5) == 4               # third vote for A at exit 4
    assert exit_of("patience", lg, [-1] * 5) == 5            # patience never sees two in a row


def test_weighted_cobee_counts_confident_votes_more():
    weak_a, strong_b = [0.1, 0.0], [0.0, 5.0]            # top probabilities 0.525 and 0.993
    lg = logits(weak_a, strong_b, weak_a, weak_a)
    w = build_criterion("cobee", {"weighted": True}).scores(lg)[0]
    plain = build_criterion("cobee").scores(lg)[0]
    assert plain.tolist() == [-1, -1, -2, -3]
    torch.testing.assert_close(w[:3], -torch.tensor([0.525, 0.9933, 1.05]), atol=1e-3, rtol=0)
    assert exit_of("cobee", lg, [-0.9] * 3, weighted=True) == 1   # one sure vote is enough
    assert exit_of("cobee", lg, [-2] * 3) == 2                    # counting needs two votes


def test_learned_scores_one_minus_predicted_correctness():
    c = bound("learned")
    feats = torch.tensor([[[-2.0, 0, 0, 0], [-1.0, 0, 0, 0], [2.0, 0, 0, 0]]])  # [1, 3 exits, 4]
    lg = logits(SURE, SURE, SURE, SURE)
    s = c.scores(lg, feats)[0]
    torch.testing.assert_close(s[:3], 1 - torch.sigmoid(4 * feats[0, :, 0]))
    assert int(decide(s[None, :-1].double(), torch.tensor([0.5] * 3, dtype=torch.float64))[0]) == 2


def test_learn_to_exit_fits_which_exits_are_right():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 3, 8, generator=g)
    right = feats[..., 2] + 0.1 * torch.randn(300, 3, generator=g) > 0
    module, report = fit_learn_to_exit(feats, right, steps=150)
    assert report["accuracy"] > 0.9 and 0.4 < report["share_correct"] < 0.6
    held = torch.randn(200, 8, generator=g)
    assert ((module(held) > 0.5) == (held[:, 2] > 0)).float().mean() > 0.9


def test_learned_needs_a_bound_scorer():
    with pytest.raises(EebertError):
        build_criterion("learned").scores(torch.zeros(2, 3, 2), torch.zeros(2, 2, 4))


@pytest.mark.parametrize("name,params,count", [("patience", {}, 1), ("pcee", {"confidence": 0.9}, 2),
                                               ("cobee", {}, 2)])
def test_tiebreak_keeps_whole_thresholds_and_splits_a_step_by_confidence(name, params, count):
    """Both samples reach the same count at exit 1; only the confident one (SURE) may leave between steps."""
    less = [1.0, 0.0]                                  # same class, normalised entropy 0.84
    lg = torch.tensor([[SURE, SURE, SURE], [SURE, less, SURE]])
    plain = build_criterion(name, params).scores(lg)[:, :-1].double()
    tied = build_criterion(name, {**params, "tiebreak": True}).scores(lg)[:, :-1].double()
    never = -float("inf")

    def exits(scores, t):
        return decide(scores, torch.tensor([never, t], dtype=torch.float64)).tolist()

    for t in (-count, -count - 1):                     # whole-number thresholds mean the same
        assert exits(plain, t) == exits(tied, t)
    assert exits(tied, -count) == [1, 1] and exits(tied, -count - 1) == [2, 2]
    assert exits(tied, -count - 0.5) == [1, 2]         # in between: the confident one leaves


def test_state_rows_can_be_dropped():
    c = build_criterion("patience")
    st = c.init_state(3)
    _, st = c.step(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0]]), st)
    kept = c.select(st, torch.tensor([0, 2]))
    assert kept["prev"].tolist() == [0, 0]
