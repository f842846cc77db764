"""`calibrate --runtime onnxruntime`: thresholds chosen on ONNX Runtime's own outputs, and a benchmark of a
runtime scores that runtime's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from test_cli import assert_one_line_error, run  # noqa: E402
from eebert_cli.criteria import build_criterion  # noqa: E402
from eebert_cli.data import DataConfig, load_data  # noqa: E402
from eebert_cli.deploy.onnx_export import export  # noqa: E402
from eebert_cli.deploy.onnx_runtime import OnnxEarlyExit  # noqa: E402
from eebert_cli.model.artifact import load_artifact  # noqa: E402
from eebert_cli.model.calibration import thresholds_from_json  # noqa: E402
from eebert_cli.model.features import encode  # noqa: E402
from eebert_cli.model.quantize import quantize_artifact  # noqa: E402
from eebert_cli.model.runtime import EarlyExitModel  # noqa: E402
from eebert_cli.scoring.benchmark import run_benchmark  # noqa: E402
from eebert_cli.scoring.config import BenchmarkConfig, CalibrationConfig  # noqa: E402
from eebert_cli.scoring.outputs import problem_for, split_outputs  # noqa: E402
from eebert_cli.scoring.report import markdown  # noqa: E402
from eebert_cli.steps import calibrate  # noqa: E402
from eebert_cli.train.attach import attach  # noqa: E402
from eebert_cli.train.config import AttachConfig, TrainConfig  # noqa: E402


@pytest.fixture(scope="module")
def scored(tiny_ckpt, tiny_data, tmp_path_factory):
    """An artifact calibrated on ONNX Runtime int8's outputs, and its int8 export."""
    root = tmp_path_factory.mktemp("scored")
    out, dcfg = root / "art", DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(train=TrainConfig(epochs=40, lr=3e-3, patience=40)), out)
    data = load_data(dcfg)
    cal = calibrate(out, data, CalibrationConfig(criterion="entropy", target_speedup=1.5, bootstrap=10,
                                                 runtime="onnxruntime"), quantize="int8")
    info = export(out, root / "onnx-int8", quantize="int8")
    return out, data, cal, info


def test_fp32_runtime_outputs_are_the_simulations(scored):
    """Every exit's logits from ONNX Runtime, one example at a time, match the batched PyTorch simulation in
    fp32 (same exits in the same order, the deployed head last)."""
    out, data, _, _ = scored
    art = load_artifact(out)
    ort, pt = split_outputs(art, data, "validation", runtime="onnxruntime"), split_outputs(art, data, "validation")
    assert ort.logits.shape == pt.logits.shape == (len(data.split("validation")), len(art.exits.layers) + 1, 2)
    assert torch.allclose(ort.logits, pt.logits, atol=1e-4)
    assert torch.equal(ort.cost, pt.cost) and torch.equal(ort.full, pt.full) and torch.equal(ort.labels, pt.labels)


def test_thresholds_chosen_on_onnxruntime_int8_hold_exactly_for_its_answers(scored):
    """The export's batch-1 answers leave where the calibration's simulation says, row for row, so the recorded
    validation speedup is ONNX Runtime's; PyTorch int8's outputs at the same thresholds would not."""
    out, data, cal, info = scored
    assert cal.runtime == "onnxruntime" and cal.quantize == "int8"
    assert cal.placement == {"device": "cpu", "dtype": "float32"}  # where ONNX Runtime computed them
    art = quantize_artifact(load_artifact(out), "int8")
    ox = OnnxEarlyExit(info["out"])
    enc = encode(art.deployed.tokenizer, data.split("validation"), art.config["max_length"])
    got = [ox.forward_one(np.array([ids]), np.array([t]))[1] for ids, t in zip(enc.input_ids, enc.token_type_ids)]
    thresholds = torch.tensor(thresholds_from_json(cal.thresholds), dtype=torch.float64)
    crit = build_criterion(cal.criterion, cal.criterion_params, art)
    ort = problem_for(split_outputs(art, data, "validation", runtime="onnxruntime"), crit,
                      art.exits).outcome(thresholds)
    assert torch.equal(torch.tensor(got), ort.exits)
    assert ort.speedup == pytest.approx(cal.validation["speedup_flops"], rel=1e-9)
    pt = problem_for(split_outputs(art, data, "validation"), crit, art.exits).outcome(thresholds)
    assert not torch.equal(pt.exits, ort.exits)  # PyTorch's int8 rounds otherwise: its exits are not ORT's


def test_a_benchmark_scores_the_runtime_it_times(scored):
    """ONNX Runtime at the calibration's precision: the rows are its own (no exit mismatch at batch 1); PyTorch
    timing an ONNX-Runtime-calibrated artifact says its figures sit off the thresholds' runtime."""
    out, data, _, info = scored
    model = EarlyExitModel.from_artifact(out)
    ort = run_benchmark(model, data, BenchmarkConfig(runtime="onnxruntime", onnx_dir=info["out"], repeats=1,
                                                     warmup=1, timing_samples=20))
    assert ort["scored_by"] == "onnxruntime" and ort["calibration_runtime"] == "onnxruntime"
    assert ort["timing"]["exit_mismatches"] == 0 and "differs" not in ort["timing"]
    pt = run_benchmark(model, data, BenchmarkConfig(repeats=1, warmup=1, timing_samples=20), curves=False)  # batch 1
    assert pt["scored_by"] == "pytorch" and "chosen on onnxruntime's int8 outputs" in pt["timing"]["differs"]
    assert "Rows scored on onnxruntime's outputs; thresholds chosen on onnxruntime's." in markdown(ort)
    assert "Rows scored on pytorch's outputs; thresholds chosen on onnxruntime's." in markdown(pt)
    # the learned criterion reads the hidden state, which a runtime's own outputs lack: its curve is missing on
    # both splits (the calibration's validation rows were ONNX Runtime's too), and the report says so
    assert set(ort["curves"]) == {"validation", "test"}
    for split, c in ort["curves"].items():
        assert c["left_out"] == ["learned"] and "learned" not in c["criteria"] and "entropy" in c["criteria"]
        assert f"No {split} curve for learned: it reads the hidden state" in markdown(ort)


def test_what_onnxruntime_cannot_score_is_refused_in_one_line(scored, tiny_data):
    out, _, _, _ = scored
    r = run("calibrate", out, "--data", tiny_data, "--target-speedup", 1.5, "--runtime", "onnxruntime",
            "--criterion", "learned")
    assert_one_line_error(r, "--runtime onnxruntime runs an ONNX export")
    assert_one_line_error(run("calibrate", out, "--data", tiny_data, "--target-speedup", 1.5, "--runtime", "onnxrt"),
                          "onnxruntime")


def test_a_server_says_when_the_thresholds_were_chosen_on_another_runtime(scored):
    """Served on PyTorch, an artifact calibrated on ONNX Runtime int8 says so at start (``info["warning"]``, the
    status page); served on its export, it says nothing."""
    from eebert_cli.deploy.serve.config import ServeConfig
    from eebert_cli.deploy.serve.engine import load_engine

    out, _, _, info = scored
    warning = load_engine(ServeConfig(artifact=str(out))).info.get("warning") or ""
    assert "chosen on onnxruntime's int8 outputs" in warning and "--runtime pytorch" in warning
    ort = load_engine(ServeConfig(artifact=str(out), runtime="onnxruntime", onnx_dir=info["out"]))
    assert "warning" not in ort.info
