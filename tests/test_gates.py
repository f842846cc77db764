"""SmartBERT skipping gates on tiny random models: the skip itself, its cost, training, runtime, artifact."""

import re

import pytest
import torch
from conftest import middle_thresholds
from typer.testing import CliRunner

from eebert_cli.model.artifact import BACKBONE_WEIGHTS, file_sha256, load_artifact
from eebert_cli.backbones.bert import BertAdapter
from eebert_cli.scoring.benchmark import flops_rows
from eebert_cli.scoring.threshold_search import decide
from eebert_cli.scoring.config import CalibrationConfig
from eebert_cli.model.checkpoint import load_deployed, weights_sha256
from eebert_cli.cli import app
from eebert_cli.train.config import AttachConfig
from eebert_cli.model.cost import exit_costs, layer_flops
from eebert_cli.criteria import build_criterion
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError
from eebert_cli.exits import ExitSet, ExitSpec
from eebert_cli.model.features import encode, extract
from eebert_cli.gates.config import GateConfig
from eebert_cli.gates.train import hard_weight
from eebert_cli.train.attach import attach
from eebert_cli.steps import calibrate
from eebert_cli.scoring.outputs import problem_for, split_outputs
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.train.config import TrainConfig

GATED = [2, 3, 4]


def _gated_exits(dep, open_layer: int | None) -> ExitSet:
    """Exits after layers 1-3 with gates before layers 2-4; ``open_layer``'s gate sits at 1.0, others at 0."""
    spec = ExitSpec("mean-mlp", [1, 2, 3], {}, {}, {"type": "smartbert", "layers": GATED})
    exits = ExitSet(spec, dep.adapter.dims).eval()
    with torch.no_grad():
        for l in GATED:
            last = exits.gates.mods[str(l)][2]
            last.weight.zero_()
            last.bias.fill_(50.0 if l == open_layer else -50.0)
    return exits


def test_hard_weight_is_zero_one_forward_and_straight_through_backward():
    g = torch.tensor([0.2, 0.5, 0.9], requires_grad=True)
    w = hard_weight(g)
    assert w.tolist() == [0.0, 1.0, 1.0]
    w.sum().backward()
    assert g.grad.tolist() == [1.0, 1.0, 1.0]


def test_a_gate_at_one_skips_its_layer_and_the_cost_model_counts_it(tiny_ckpt, tiny_data):
    dep = load_deployed(tiny_ckpt)
    enc = encode(dep.tokenizer, load_data(DataConfig(spec=str(tiny_data))).split("validation"), 32)
    exits = _gated_exits(dep, open_layer=3)
    assert torch.sigmoid(exits.gates.logit(3, torch.randn(2, 4, 32), None)).eq(1.0).all()
    gated = extract(dep.adapter, enc, [1, 2, 3], {"mean"}, gates=exits.gates)
    plain = extract(dep.adapter, enc, [1, 2, 3], {"mean"})
    # layer 3 was skipped: its output is its input, and everything before it is untouched
    assert torch.equal(gated.for_layer("mean", 3), gated.for_layer("mean", 2))
    assert torch.equal(gated.for_layer("mean", 2), plain.for_layer("mean", 2))
    assert not torch.allclose(plain.for_layer("mean", 3), plain.for_layer("mean", 2))
    assert gated.skipped[:, 2].all() and not gated.skipped[:, [0, 1, 3]].any()
    # cost: exits after the skipped layer save one layer's FLOPs and pay for the gates reached
    d, lengths = dep.adapter.dims, gated.lengths
    with_gates = exit_costs(d, lengths, exits.layers, exits.flops, gated.skipped, exits.gates)
    without = exit_costs(d, lengths, exits.layers, exits.flops)
    seq, gate = lengths.double(), float(exits.gates.flops(lengths.double()[:1]))
    for k, layer in enumerate(exits.layers + [d.num_layers]):
        reached = sum(1 for l in GATED if l <= layer)
        saved = layer_flops(d, seq, 2) if layer >= 3 else 0  # layer 3 skipped
        assert torch.allclose(with_gates[:, k], without[:, k] - saved + reached * gate)
    # gate threshold 1.0 (calibration's "never skip") runs every layer even for a gate at 1.0
    exits.gates.threshold = 1.0
    never = extract(dep.adapter, enc, [1, 2, 3], {"mean"}, gates=exits.gates)
    assert not never.skipped.any() and torch.equal(never.for_layer("mean", 3), plain.for_layer("mean", 3))
    off = exit_costs(d, lengths, exits.layers, exits.flops, never.skipped, exits.gates)
    assert torch.allclose(off, without)  # gates that cannot fire are not evaluated, so not charged


def test_runtime_does_not_run_a_skipped_layer(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)),
           AttachConfig(gates=GateConfig(type="smartbert", epochs=1, max_examples=40),
                        train=TrainConfig(epochs=1)), tmp_path / "a")
    art = load_artifact(tmp_path / "a")
    art.exits.load_state_dict(_gated_exits(art.deployed, open_layer=3).state_dict(), strict=False)
    ran = []
    original = BertAdapter.layer
    monkeypatch.setattr(BertAdapter, "layer", lambda self, i, h, st: (ran.append(i), original(self, i, h, st))[1])
    model = EarlyExitModel(art, build_criterion("entropy"), [-float("inf")] * 3)
    enc = encode(art.deployed.tokenizer, load_data(DataConfig(spec=str(tiny_data))).split("test"), 32)
    model.forward_one(torch.tensor([enc.input_ids[0]]), torch.tensor([enc.token_type_ids[0]]))
    assert ran == [0, 1, 3]
    ran.clear()
    b = enc.collate(list(range(6)))
    model.forward_batch(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    assert ran == [0, 1, 3]


def test_gated_attach_calibrates_and_runs_as_simulated(tiny_ckpt, tiny_data, tmp_path):
    data_cfg = DataConfig(spec=str(tiny_data))
    res = attach(str(tiny_ckpt), data_cfg, AttachConfig(
        gates=GateConfig(type="smartbert", epochs=2, skip_target=0.5, max_examples=0),
        train=TrainConfig(epochs=3)), tmp_path / "a")
    assert res["exits"]["gates"]["layers"] == [2, 3, 4] and not res["backbone_trained"]
    assert [h["hard"] for h in res["gates"]["history"]] == [False, True]
    art = load_artifact(tmp_path / "a")
    assert art.original is None and art.changes_path and not (tmp_path / "a" / BACKBONE_WEIGHTS).exists()
    data = load_data(data_cfg)
    cal = calibrate(art, data, CalibrationConfig(target_speedup=1.3)).to_dict()
    assert cal["validation"]["speedup_flops"] >= 1.3 and "gates" in cal["validation"]
    assert [g["gate_threshold"] for g in cal["gate_grid"]] == CalibrationConfig().gate_thresholds
    assert load_artifact(tmp_path / "a").exits.gates.threshold == cal["gate_threshold"]
    # the deployed model's own accuracy is the reference, not the gated last exit's
    plain = extract(load_deployed(tiny_ckpt).adapter, encode(art.deployed.tokenizer, data.split("validation"), 128),
                    [], set(), needs={}).teacher.argmax(-1)
    out = split_outputs(art, data, "validation")
    assert torch.equal(out.deployed_pred, plain)
    # runtime exits match the simulation, at batch size 1 and in batches
    model = EarlyExitModel.from_artifact(tmp_path / "a")
    test = split_outputs(art, data, "test")
    e = decide(problem_for(test, model.criterion).scores, torch.tensor(model.thresholds, dtype=torch.float64))
    texts = data.split("test").texts
    layers = model.exit_layers
    p1, p8 = model.predict(texts, batch_size=1), model.predict(texts, batch_size=8)
    assert [p.exit_layer for p in p1] == [layers[k] for k in e.tolist()]
    assert [p.exit_layer for p in p8] == [p.exit_layer for p in p1]
    rows = flops_rows(model, test)
    assert rows["early_exit"]["gates"]["average_layers_run"] <= rows["early_exit"]["average_exit_layer"]
    # calibration may turn the gates off (threshold 1.0): the benchmark still reports them, as skipping nothing
    model.exits.gates.threshold = 1.0
    off = flops_rows(EarlyExitModel(model.artifact, model.criterion, model.thresholds),
                     split_outputs(model.artifact, data, "test"))
    assert off["early_exit"]["gates"]["skip_rate"] == 0.0


def test_the_skip_penalty_sets_how_much_is_skipped(tiny_ckpt, tiny_data, tmp_path):
    rates = {}
    for target in (0.0, 0.9):
        res = attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(
            gates=GateConfig(type="smartbert", epochs=4, skip_target=target, skip_weight=20.0, lr=1e-2,
                             max_examples=0), train=TrainConfig(epochs=1)), tmp_path / str(target))
        rates[target] = res["gates"]["history"][-1]["skip_rate"]
    assert rates[0.0] < 0.2 and rates[0.9] > 0.6, rates


def test_train_backbone_mode_carries_the_new_weights_hash_checked(tiny_ckpt, tiny_data, tmp_path):
    before = weights_sha256(tiny_ckpt)
    res = attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(
        gates=GateConfig(type="smartbert", epochs=1, train_backbone=True, backbone_lr=1e-3, max_examples=60),
        train=TrainConfig(epochs=1)), tmp_path / "a")
    assert res["backbone_trained"]
    assert weights_sha256(tiny_ckpt) == before  # the shipped checkpoint is never written
    art = load_artifact(tmp_path / "a")
    trained = art.config["backbone"]["trained"]
    assert trained["sha256"] == file_sha256(tmp_path / "a" / BACKBONE_WEIGHTS)
    assert art.config["backbone"]["sha256"] == before and art.original is not None
    w_new = dict(art.deployed.model.named_parameters())
    w_old = dict(art.original.model.named_parameters())
    assert any(not torch.equal(w_new[k], w_old[k]) for k in w_old)
    with (tmp_path / "a" / BACKBONE_WEIGHTS).open("r+b") as f:  # tamper: loading must refuse
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(EebertError, match="does not match"):
        load_artifact(tmp_path / "a")


def test_gate_thresholds_on_an_artifact_without_gates_are_refused(tiny_ckpt, tiny_data, tmp_path):
    """--gate-threshold was ignored on an ungated artifact; the default list (for gated ones) still is not asked."""
    art = tmp_path / "a"
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=1)), art)
    r = CliRunner().invoke(app, ["calibrate", str(art), "--target-speedup", "1.2", "--gate-threshold", "0.5"])
    assert r.exit_code == 1 and r.output.count("error:") == 1 and "has none" in r.output, r.output
    assert not (art / "calibration.json").exists()
    r = CliRunner().invoke(app, ["calibrate", str(art), "--target-speedup", "1.2"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("flags,needle", [(["--train-backbone"], "needs --gates"),
                                          (["--skip-target", "0.3"], "without --gates"),
                                          (["--gate-param", "epochs=2"], "without --gates"),
                                          (["--block-size", "3"], "without --bypass")])
def test_cli_gate_and_bypass_settings_need_their_component(flags, needle, tiny_ckpt, tiny_data, tmp_path):
    """A setting of a component not asked for is refused in one line, not ignored."""
    r = CliRunner().invoke(app, ["attach", str(tiny_ckpt), "--data", str(tiny_data), "--out",
                                 str(tmp_path / "a"), *flags])
    assert r.exit_code == 1 and r.output.count("error:") == 1 and needle in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "a").exists()


@pytest.mark.parametrize("ckpt", ["tiny_ckpt", "tiny_modernbert"])
def test_gates_with_token_exits_and_bypasses_run_as_simulated(ckpt, request, tiny_data, tmp_path):
    data_cfg = DataConfig(spec=str(tiny_data))
    attach(str(request.getfixturevalue(ckpt)), data_cfg, AttachConfig(
        exits="attention", bypass={"type": "badge", "block_size": 2},
        gates=GateConfig(type="smartbert", epochs=1, warmup_epochs=0, skip_target=0.5, max_examples=80),
        train=TrainConfig(epochs=1)), tmp_path / "a")
    art = load_artifact(tmp_path / "a")
    data = load_data(data_cfg)
    # a briefly trained gate rarely fires: move layer 3's so that it fires for half the test examples
    enc = encode(art.deployed.tokenizer, data.split("test"), 128)
    cls = extract(art.deployed.adapter, enc, [2], {"cls"}, gates=art.exits.gates).for_layer("cls", 2)
    with torch.no_grad():
        art.exits.gates.mods["3"][2].bias -= art.exits.gates.mods["3"](cls).median()
    out = split_outputs(art, data, "test")
    assert out.skipped[:, 2].any() and not out.skipped[:, 2].all()
    crit = build_criterion("entropy")
    thresholds = middle_thresholds(crit.scores(out.logits)[:, :-1])
    e = decide(problem_for(out, crit).scores, torch.tensor(thresholds, dtype=torch.float64))
    model = EarlyExitModel(art, crit, thresholds)
    texts = data.split("test").texts
    want = [model.exit_layers[k] for k in e.tolist()]
    assert [p.exit_layer for p in model.predict(texts, batch_size=1)] == want
    assert [p.exit_layer for p in model.predict(texts, batch_size=8)] == want


def test_cli_gate_params_are_checked_by_name(tiny_ckpt, tiny_data, tmp_path):
    r = CliRunner().invoke(app, ["attach", str(tiny_ckpt), "--data", str(tiny_data), "--out",
                                 str(tmp_path / "a"), "--gates", "smartbert", "--gate-param", "epoks=2"])
    assert r.exit_code == 1 and "unknown key 'epoks'" in r.output and "Traceback" not in r.output


def test_an_unknown_gate_fails_before_any_backbone_work(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    import eebert_cli.model.feature_cache as feature_cache

    monkeypatch.setattr(feature_cache, "attach_pass", lambda *a, **k: pytest.fail("backbone pass ran"))
    r = CliRunner().invoke(app, ["attach", str(tiny_ckpt), "--data", str(tiny_data), "--out",
                                 str(tmp_path / "a"), "--gates", "nope"])
    assert r.exit_code == 1 and "unknown skipping gate 'nope'" in r.output


@pytest.mark.parametrize("knob,value,needle", [("skip_target", 1.5, "gates.skip_target must be within [0.0, 1.0], got 1.5"),
                                               ("epochs", 0, "gates.epochs must be >= 1, got 0"),
                                               ("lr", 0.0, "gates.lr must be above 0.0, got 0.0"),
                                               ("source", "max", "gates.source: unknown value 'max'")])
def test_a_gate_config_built_in_python_is_checked_by_its_declared_ranges(knob, value, needle, tiny_ckpt, tiny_data,
                                                                          tmp_path, monkeypatch):
    """No recipe or flag checked it: `attach` does, by GateConfig's field metadata, before the backbone pass."""
    import eebert_cli.model.feature_cache as feature_cache

    monkeypatch.setattr(feature_cache, "attach_pass", lambda *a, **k: pytest.fail("backbone pass ran"))
    cfg = AttachConfig(layers=[1, 2], gates=GateConfig(type="smartbert", **{knob: value}))
    with pytest.raises(EebertError, match=re.escape(needle)):
        attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), cfg, tmp_path / "a")
