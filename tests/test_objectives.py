"""Objectives on synthetic cached features (no backbone needed): joint, distil, leebert, contrastive."""

import torch

from eebert_cli.backbones import Dims
from eebert_cli.exits import ExitSet, ExitSpec
from eebert_cli.model.features import Features
from eebert_cli.objectives import TrainBatch, build_objective
from eebert_cli.objectives.contrastive import cross_layer_infonce
from eebert_cli.train.loop import train_exits
from eebert_cli.train.config import TrainConfig

DIMS = Dims(num_layers=4, hidden_size=16, intermediate_size=32, num_heads=2, num_labels=2)


def synthetic(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    signal = (y.float() * 2 - 1)[:, None, None]
    x = torch.randn(n, 3, 16, generator=g) + signal * torch.tensor([0.3, 0.6, 1.0])[None, :, None]
    teacher = torch.stack([-signal[:, 0, 0], signal[:, 0, 0]], 1) * 2
    return Features([1, 2, 3], {"mean": x}, teacher, torch.full((n,), 8)), y


def test_joint_pabee_weighs_exit_i_by_i():
    obj = build_objective("joint", {"weighting": "pabee"})
    obj.bind(ExitSet(ExitSpec("mean-mlp", [1, 2, 3]), DIMS))
    assert obj.weights(3) == [1 / 6, 2 / 6, 3 / 6]
    assert build_objective("joint").weights(4) == [0.25] * 4


def test_distil_is_zero_when_exits_match_the_deployed_model():
    t = torch.randn(5, 3)
    obj = build_objective("distil", {"temperature": 2.0})
    assert obj([t.clone(), t.clone()], TrainBatch(t.argmax(-1), t)).abs().item() < 1e-6
    assert obj([torch.zeros(5, 3)], TrainBatch(t.argmax(-1), t)).item() > 0


def test_leebert_weights_move_and_stay_normalised():
    feats, y = synthetic(n=160)
    for norm in ("softmax", "sigmoid"):
        torch.manual_seed(0)
        exits = ExitSet(ExitSpec("mean-mlp", [1, 2, 3]), DIMS)
        obj = build_objective("leebert", {"norm": norm, "weight_lr": 0.05})
        summary = train_exits(exits, obj, feats, y, TrainConfig(epochs=2, patience=10))
        rep = summary["objective"]
        w, w0 = torch.tensor(list(rep["weights"].values())), torch.tensor(list(rep["initial"].values()))
        assert len(w) == 3 * (2 + 2)  # ce, kd and two mutual terms per exit
        assert rep["outer_steps"] > 0
        assert (w - w0).abs().max() > 1e-3, "learned weights did not move"
        assert (w >= rep["floor"] * w0 - 1e-6).all()
        if norm == "softmax":
            assert abs(w.sum().item() - w0.sum().item()) < 1e-4
        else:
            assert (w < 2 * w0 + 1e-6).all()


def _leebert_long_fit(**guard):
    """Many outer steps at a high weight_lr: unguarded, the softmax weights end on one or two terms."""
    feats, y = synthetic(n=240)
    torch.manual_seed(0)
    exits = ExitSet(ExitSpec("mean-mlp", [1, 2, 3]), DIMS)
    obj = build_objective("leebert", {"weight_lr": 0.2, **guard})
    train_exits(exits, obj, feats, y, TrainConfig(epochs=60, batch_size=64, patience=100))  # ~180 outer steps
    rep = obj.report()
    return rep, torch.tensor(list(rep["weights"].values())), torch.tensor(list(rep["initial"].values()))


def test_leebert_weights_collapse_without_the_guard():
    rep, w, w0 = _leebert_long_fit(floor=0.0, weight_entropy=0.0)
    assert rep["outer_steps"] >= 150
    assert rep["summary"]["effective_terms_initial"] > 11  # 12 terms, mutual ones at half weight
    assert rep["summary"]["effective_terms"] < 2.5
    assert (w / w0).min() < 0.01


def test_leebert_guard_keeps_weights_spread():
    rep, w, w0 = _leebert_long_fit()  # defaults: floor 0.5, weight_entropy 0.5
    assert rep["floor"] == 0.5 and rep["weight_entropy"] == 0.5
    assert (w >= 0.5 * w0 - 1e-6).all()
    assert abs(w.sum().item() - w0.sum().item()) < 1e-4
    assert (w - w0).abs().max() > 0.1, "the guard froze the weights"
    assert rep["summary"]["effective_terms"] > 8
    # the pull alone (no floor) keeps the learned part itself from collapsing
    rep, w, w0 = _leebert_long_fit(floor=0.0)
    assert rep["summary"]["effective_terms"] > 5
    assert (w / w0).min() > 0.1


def test_leebert_partner_is_detached():
    obj = build_objective("leebert", {"teacher": False})
    obj.bind(ExitSet(ExitSpec("mean-mlp", [1, 2]), DIMS))
    a = torch.randn(4, 2, requires_grad=True)
    b = torch.randn(4, 2, requires_grad=True)
    terms = obj.terms([a, b], TrainBatch(torch.zeros(4, dtype=torch.long), torch.zeros(4, 2)))
    # term order: ce@1, mutual@1<-2, ce@2, mutual@2<-1; mutual@1<-2 must not move exit 2
    (gb,) = torch.autograd.grad(terms[1], [b], allow_unused=True)
    assert gb is None or gb.abs().max() == 0


def test_contrastive_loss_falls_when_adjacent_representations_align():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 8, generator=g)
    aligned = cross_layer_infonce([z, z + 0.01 * torch.randn(32, 8, generator=g)])
    unrelated = cross_layer_infonce([z, torch.randn(32, 8, generator=g)])
    assert aligned < unrelated - 1.0


def test_contrastive_term_trains_with_any_objective():
    feats, y = synthetic()
    torch.manual_seed(0)
    exits = ExitSet(ExitSpec("mean-mlp", [1, 2, 3]), DIMS)
    rows = torch.arange(64)

    def infonce():
        with torch.no_grad():
            exits.eval()
            return cross_layer_infonce(exits(feats.getter(rows), hidden=True)[1]).item()

    before = infonce()
    train_exits(exits, build_objective("joint"), feats, y, TrainConfig(epochs=5, contrastive=0.5, patience=10))
    assert infonce() < before
