"""The runtime's exits equal the simulated ones; batches equal batch size 1."""

import pytest
import torch

from eebert_cli.model.artifact import load_artifact
from eebert_cli.scoring.benchmark import flops_rows
from eebert_cli.scoring.config import CalibrationConfig
from eebert_cli.train.config import AttachConfig
from eebert_cli.data import DataConfig, load_data
from eebert_cli.model.features import encode
from eebert_cli.train.attach import attach
from eebert_cli.steps import calibrate
from eebert_cli.scoring.outputs import split_outputs
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.train.config import TrainConfig


@pytest.fixture(scope="module")
def calibrated(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt") / "art"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(train=TrainConfig(epochs=40, batch_size=32, lr=3e-3, patience=40)), out)
    calibrate(load_artifact(out), load_data(dcfg), CalibrationConfig(criterion="entropy", target_speedup=1.5,
                                                                     bootstrap=20))
    return out, load_data(dcfg)


@pytest.mark.parametrize("criterion,params", [("entropy", {}), ("maxprob", {}), ("patience", {}), ("pcee", {}),
                                             ("dge", {}), ("dge", {"reference": "mean", "patience": 2}),
                                             ("cobee", {}), ("cobee", {"weighted": True}), ("learned", {})])
def test_runtime_exits_match_the_simulation(calibrated, criterion, params):
    out, data = calibrated
    art = load_artifact(out)
    calibrate(art, data, CalibrationConfig(criterion=criterion, criterion_params=params, target_speedup=1.3,
                                           bootstrap=10))
    model = EarlyExitModel.from_artifact(out)
    outputs = split_outputs(model.artifact, data, "test")
    expected = flops_rows(model, outputs)["exit_index"]
    enc = encode(model.artifact.deployed.tokenizer, data.split("test"), 128)
    got = [model.forward_one(torch.tensor([ids]), torch.tensor([t]))[1]
           for ids, t in zip(enc.input_ids, enc.token_type_ids)]
    assert got == expected.tolist()
    assert len(set(got)) > 1 or criterion in ("patience", "pcee", "cobee")  # a real mix of exits, not all one
    texts = data.split("test").texts
    batched = [p.exit_layer for p in model.predict(texts, batch_size=16)]
    assert batched == [model.exit_layers[k] for k in got]  # rows leaving a batch keep the others' state right


def test_report_has_curves_for_every_criterion_and_an_svg(calibrated, tmp_path):
    import json
    import xml.etree.ElementTree as ET

    from eebert_cli.scoring.benchmark import run_benchmark
    from eebert_cli.scoring.config import BenchmarkConfig
    from eebert_cli.criteria import CRITERIA
    from eebert_cli.scoring.report import CURVES_SVG, write_report

    out, data = calibrated
    cal = calibrate(load_artifact(out), data, CalibrationConfig(criterion="dge", target_speedup=1.3, bootstrap=50)).to_dict()
    lo, hi = cal["validation"]["speedup_ci95"]
    assert lo <= cal["validation"]["speedup_flops"] <= hi and len(cal["validation"]["accuracy_ci95"]) == 2
    assert any("80 examples" in w for w in cal["warnings"])  # 80 validation rows: far from +/-2 points
    model = EarlyExitModel.from_artifact(out)
    report = run_benchmark(model, data, BenchmarkConfig(repeats=0))
    write_report(tmp_path, report)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved["curves"]) == {"validation", "test"}
    for split, c in saved["curves"].items():
        classify = {n for n in CRITERIA.names() if "classification" in getattr(CRITERIA.get(n), "tasks", ("classification",))}
        assert classify <= set(c["criteria"]), split
        for pts in c["criteria"].values():
            assert pts and all(p["speedup"] > 0.9 and 0 <= p["accuracy"] <= 1 for p in pts)
        assert len(c["static_truncation"]) == len(model.exit_layers)
        assert c["oracle"][0]["accuracy"] >= max(p["accuracy"] for p in c["static_truncation"])
        assert c["chosen"]["speedup"] > 1.0
    assert saved["curves"]["test"]["chosen"]["speedup"] == report["early_exit"]["speedup_flops"]
    svg = ET.parse(tmp_path / CURVES_SVG).getroot()
    assert svg.tag.endswith("svg") and len(svg.findall(".//{http://www.w3.org/2000/svg}polyline")) > 10
    md = (tmp_path / "report.md").read_text()
    assert CURVES_SVG in md and "accuracy" in md.split("95% CI")[1] and "Warning (calibration)" in md


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
    model.exits.heads[0].register_forward_hook(lambda *a: calls.append(1))
    ids = torch.tensor([[2, 5, 6, 3]])
    _, k = model.forward_one(ids)
    assert k == 1 and not calls  # exit 0 cannot fire with a stateless criterion: skipped


def test_flops_figures_do_not_charge_an_exit_the_runtime_skips(calibrated):
    """The benchmark counts the FLOPs the runtime spends: an exit set to "never" under a stateless criterion
    is skipped (test above), so its head is not charged; a stateful criterion evaluates it, and is."""
    from eebert_cli.criteria import build_criterion
    from eebert_cli.model.cost import exit_costs

    out, data = calibrated
    model = EarlyExitModel.from_artifact(out)
    test = split_outputs(model.artifact, data, "test")
    exits, dims = model.exits, model.adapter.dims
    model.thresholds = [-float("inf")] + [0.9] * (len(model.thresholds) - 1)  # exit 0 off, the rest fire often
    rows = flops_rows(model, test)
    e = rows["exit_index"]
    assert (e > 0).all()
    uncharged = exit_costs(dims, test.lengths, exits.layers, lambda k, seq: 0 if k == 0 else exits.flops(k, seq))
    full = test.full.sum().item()
    assert rows["early_exit"]["speedup_flops"] == pytest.approx(full / uncharged.gather(1, e[:, None]).sum().item(),
                                                                rel=1e-12)
    charged = full / test.cost.gather(1, e[:, None]).sum().item()
    assert rows["early_exit"]["speedup_flops"] > charged
    model.criterion = build_criterion("patience", {}, model.artifact)  # stateful: every exit is evaluated
    rows = flops_rows(model, test)
    e = rows["exit_index"]
    assert rows["early_exit"]["speedup_flops"] == pytest.approx(full / test.cost.gather(1, e[:, None]).sum().item(),
                                                                rel=1e-12)


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
    # the reference stays the shipped fp32 model; the int8 deployed model is a row of its own
    ref_kinds = {type(m).__module__ for m in model.artifact.reference.model.modules()}
    assert not any("quantized" in k for k in ref_kinds)
    from eebert_cli.scoring.benchmark import run_benchmark
    from eebert_cli.scoring.config import BenchmarkConfig
    from eebert_cli.scoring.outputs import split_outputs

    report = run_benchmark(model, data, BenchmarkConfig(repeats=0))
    out_t = split_outputs(model.artifact, data, "test")
    fp32 = EarlyExitModel.from_artifact(out).artifact.deployed.model  # the unquantized checkpoint
    from eebert_cli.model.features import encode, extract
    from eebert_cli.backbones import adapter_for

    enc = encode(model.artifact.deployed.tokenizer, data.split("test"), model.artifact.config["max_length"])
    shipped = extract(adapter_for(fp32), enc, [], set(), needs={}).teacher.argmax(-1)
    assert torch.equal(out_t.deployed_pred, shipped)
    assert report["deployed"]["accuracy"] == (shipped == out_t.labels).double().mean().item()
    assert "deployed_int8" in report and report["quantize"] == "int8"
