"""The runtime's exits equal the simulated ones; batches equal batch size 1."""

import pytest
import torch

from eebert_cli.artifact import load_artifact
from eebert_cli.benchmark import flops_rows
from eebert_cli.calibrate import CalibrationConfig
from eebert_cli.config import AttachConfig
from eebert_cli.data import DataConfig, load_data
from eebert_cli.features import encode
from eebert_cli.pipeline import attach, calibrate, split_outputs
from eebert_cli.runtime import EarlyExitModel
from eebert_cli.train import TrainConfig


@pytest.fixture(scope="module")
def calibrated(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt") / "art"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(train=TrainConfig(epochs=40, lr=3e-3, patience=40)), out)
    calibrate(load_artifact(out), load_data(dcfg), CalibrationConfig(criterion="entropy", target_speedup=1.5,
                                                                     bootstrap=20))
    return out, load_data(dcfg)


@pytest.mark.parametrize("criterion", ["entropy", "maxprob", "patience"])
def test_runtime_exits_match_the_simulation(calibrated, criterion):
    out, data = calibrated
    art = load_artifact(out)
    calibrate(art, data, CalibrationConfig(criterion=criterion, target_speedup=1.3, bootstrap=10))
    model = EarlyExitModel.from_artifact(out)
    outputs = split_outputs(model.artifact, data, "test")
    expected = flops_rows(model, outputs)["exit_index"]
    enc = encode(model.artifact.deployed.tokenizer, data.split("test"), 128)
    got = [model.forward_one(torch.tensor([ids]), torch.tensor([t]))[1]
           for ids, t in zip(enc.input_ids, enc.token_type_ids)]
    assert got == expected.tolist()
    assert len(set(got)) > 1 or criterion == "patience"  # a real mix of exits, not all one


def test_batched_per_sample_exits_equal_batch_size_one(calibrated):
    out, data = calibrated
    model = EarlyExitModel.from_artifact(out)
    texts = data.split("test").texts
    one = model.predict(texts, batch_size=1)
    many = model.predict(texts, batch_size=16)
    assert [(p.label, p.exit_layer) for p in one] == [(p.label, p.exit_layer) for p in many]
    for a, b in zip(one, many):
        assert max(abs(x - y) for x, y in zip(a.probs, b.probs)) < 1e-4


def test_with_no_exit_taken_the_runtime_is_the_deployed_model(calibrated):
    out, data = calibrated
    model = EarlyExitModel.from_artifact(out)
    model.thresholds = [-float("inf")] * len(model.thresholds)
    tok = model.artifact.deployed.tokenizer
    batch = tok(data.split("test").texts[:8], padding=True, return_tensors="pt")
    logits, where = model.forward_batch(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.no_grad():
        ref = model.artifact.deployed.model(**batch).logits
    assert (where == len(model.layers)).all()
    assert (logits - ref).abs().max().item() <= 1e-5


def test_whole_batch_exiting_waits_for_the_slowest_row(calibrated):
    out, data = calibrated
    calibrate(load_artifact(out), data, CalibrationConfig(criterion="entropy", target_speedup=1.5, bootstrap=10))
    model = EarlyExitModel.from_artifact(out)
    tok = model.artifact.deployed.tokenizer
    batch = tok(data.split("test").texts, padding=True, return_tensors="pt")
    args = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    _, per_sample = model.forward_batch(*args)
    _, whole = model.forward_batch(*args, mode="whole-batch")
    assert len(set(whole.tolist())) == 1 and int(whole[0]) >= int(per_sample.max())
    assert len(set(per_sample.tolist())) > 1  # the gain per-sample exits bring: rows leave early


def test_exits_calibrated_never_are_not_evaluated(calibrated):
    out, _ = calibrated
    model = EarlyExitModel.from_artifact(out)
    model.thresholds = [-float("inf")] + [float("inf")] * (len(model.thresholds) - 1)
    calls = []
    model.heads[0].register_forward_hook(lambda *a: calls.append(1))
    ids = torch.tensor([[2, 5, 6, 3]])
    _, k = model.forward_one(ids)
    assert k == 1 and not calls  # exit 0 cannot fire with a stateless criterion: skipped


def test_int8_calibration_is_recorded_and_applied_on_load(calibrated, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from eebert_cli.cli import app

    out, data = calibrated
    q = tmp_path / "q"
    shutil.copytree(out, q)
    res = CliRunner().invoke(app, ["calibrate", str(q), "--target-speedup", "1.3", "--quantize", "int8", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads((q / "calibration.json").read_text())["quantize"] == "int8"
    model = EarlyExitModel.from_artifact(q)
    kinds = {type(m).__module__ for m in model.artifact.deployed.model.modules()}
    assert any("quantized" in k for k in kinds)
    one = model.predict(data.split("test").texts[:8], batch_size=1)
    many = model.predict(data.split("test").texts[:8], batch_size=4)
    assert [(p.label, p.exit_layer) for p in one] == [(p.label, p.exit_layer) for p in many]
