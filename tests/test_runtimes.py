"""Every registered runtime takes the PyTorch runtime's exits; every executor answers as the local one.

A new runtime or executor is covered here by registering it: the tests are parametrized over the
registries' names.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from eebert_cli.core.errors import EebertError
from eebert_cli.deploy.executors import EXECUTORS, executor_of
from eebert_cli.deploy.runtimes import RUNTIMES, runtime_for

NEEDS = {"onnxruntime": ("onnx", "onnxruntime"), "ray": ("ray",)}


def _needs(name: str) -> None:
    missing = [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")


@pytest.fixture(scope="module")
def calibrated(tiny_ckpt, tiny_data, tmp_path_factory):
    from eebert_cli.steps import attach, calibrate, export
    from eebert_cli.scoring.config import CalibrationConfig
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.train.config import AttachConfig, TrainConfig

    out = tmp_path_factory.mktemp("runtimes") / "art"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(max_length=32, train=TrainConfig(epochs=30, lr=3e-3, patience=30)), out)
    data = load_data(dcfg)
    calibrate(out, data, CalibrationConfig(target_speedup=1.5, bootstrap=10))
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        export(out)
    return out, data


def _inputs(model, data, n=12):
    from eebert_cli.model.features import encode
    from eebert_cli.model.runtime import pad_batch

    enc = encode(model.artifact.deployed.tokenizer, data.split("test").subset(list(range(n))), 32)
    ones = [(torch.tensor([ids]), torch.tensor([t])) for ids, t in zip(enc.input_ids, enc.token_type_ids)]
    return ones, pad_batch(enc.input_ids, enc.token_type_ids, enc.pad_id)


def test_the_registries_name_what_the_flags_take():
    assert {"pytorch", "onnxruntime"} <= set(RUNTIMES) and {"local", "ray"} <= set(EXECUTORS)
    with pytest.raises(EebertError, match="unknown runtime"):
        RUNTIMES.get("tensorrtx")


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_a_runtime_takes_the_pytorch_exits(name, calibrated):
    _needs(name)
    from eebert_cli.model.runtime import EarlyExitModel

    from eebert_cli.scoring.outputs import problem_for, split_outputs

    out, data = calibrated
    model = EarlyExitModel.from_artifact(out)
    ref, rt = runtime_for("pytorch", model.artifact, model), runtime_for(name, model.artifact, model)
    ones, (ids, mask, types) = _inputs(model, data)
    exits = []
    for i, t in ones:
        lr, kr = ref.early_exit(i, None, t)
        lo, ko = rt.early_exit(i, None, t)
        assert list(ko) == list(kr)
        assert np.abs(np.asarray(lo) - lr.numpy()).max() < 1e-4
        exits += list(kr)
    assert len(set(exits)) > 1  # a real mix of exits, or the comparison says little
    # and both where the calibration's simulation says (batched exit logits, not the runtimes' loops)
    sim = problem_for(split_outputs(model.artifact, data, "test"), model.criterion, model.artifact.exits)
    assert exits == sim.outcome(torch.tensor(model.thresholds, dtype=torch.float64)).exits[:len(ones)].tolist()
    lo, wo = rt.early_exit(ids, mask, types)
    assert [int(k) for k in wo] == exits  # per-sample batches give each row its batch-1 exit
    dep = np.asarray(rt.deployed(ids, mask, types))
    assert np.abs(dep - ref.deployed(ids, mask, types).numpy()).max() < 1e-4
    with torch.no_grad():  # the deployed model's own forward, as shipped
        hf = model.artifact.deployed.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert np.abs(dep - hf.numpy()).max() < 1e-4


def test_an_executor_is_named_by_the_device_config():
    from eebert_cli.model.device_config import DeviceConfig

    assert executor_of(None).in_process and not executor_of(DeviceConfig(executor="ray")).in_process
    with pytest.raises(EebertError, match="unknown executor"):
        executor_of(DeviceConfig(executor="dask"))


def test_an_executors_check_refuses_in_milliseconds_what_it_cannot_run_on(monkeypatch):
    """``Executor.check`` runs before the data and the model load: the local executor takes anything; the
    ray executor refuses a missing Ray and an address that is not HOST:PORT without importing Ray."""
    import sys

    from eebert_cli.model.device_config import DeviceConfig

    executor_of(None).check(DeviceConfig())
    ray = DeviceConfig(executor="ray", ray_address="head")
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(EebertError, match="--executor ray needs Ray") as e:
        executor_of(ray).check(ray)
    assert e.value.hint == "pip install 'eebert[ray]'"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: find_spec(name, *a) if name != "ray" else True)
    with pytest.raises(EebertError, match="--ray-address 'head' is not HOST:PORT"):
        executor_of(ray).check(ray)
    assert "ray" not in sys.modules


def test_the_old_engine_key_still_names_the_executor():
    """Recipes written before the rename (``[device] engine = "ray"``) keep working."""
    from eebert_cli.core.configs import from_dict
    from eebert_cli.model.device_config import DeviceConfig

    assert from_dict(DeviceConfig, {"engine": "ray"}).executor == "ray"
    with pytest.raises(EebertError, match="both"):
        from_dict(DeviceConfig, {"engine": "ray", "executor": "local"})


def test_the_local_executor_streams_what_predict_answers(calibrated, tmp_path):
    import json

    from eebert_cli.steps import predict

    out, data = calibrated
    rows = tmp_path / "in.jsonl"
    texts = list(data.split("test").texts)[:10]
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    got = tmp_path / "out.jsonl"
    summary = executor_of(None).predict_file(out, rows, got, None, "text", None, 4, None, False)
    assert summary["rows"] == 10
    streamed = [json.loads(line) for line in got.read_text().splitlines()]
    direct = predict(out, texts, batch_size=1)["rows"]
    assert [r["label"] for r in streamed] == [r["label"] for r in direct]
    assert [r["exit_layer"] for r in streamed] == [r["exit_layer"] for r in direct]


def test_ort_pool_and_dtype_are_checked_in_one_line_before_loading():
    from eebert_cli.deploy.onnx_runtime import check_pool
    from eebert_cli.deploy.serve.config import ServeConfig

    check_pool("per-session", "pytorch")
    check_pool("shared", "onnxruntime")
    with pytest.raises(EebertError, match="unknown --ort-pool"):
        check_pool("spinning", "onnxruntime")
    with pytest.raises(EebertError, match="add --runtime onnxruntime"):
        check_pool("shared", "pytorch")
    check_pool("per-session", "onnxruntime", "ART/onnx")
    with pytest.raises(EebertError, match="--onnx names the export"):
        check_pool("per-session", "pytorch", "ART/onnx")
    with pytest.raises(EebertError, match="add --runtime onnxruntime"):
        ServeConfig(artifact="x", ort_pool="shared").check()
    # the graphs' precision is the export's: a --dtype beside onnxruntime was ignored and reported as served
    for dtype in ("float16", "bfloat16"):
        with pytest.raises(EebertError, match=f"not --dtype {dtype}"):
            ServeConfig(artifact="x", runtime="onnxruntime", dtype=dtype).check()
    for dtype in ("auto", "float32"):
        ServeConfig(artifact="x", runtime="onnxruntime", dtype=dtype).check()


def test_a_missing_onnx_export_is_one_line_before_the_backbone_pass(calibrated, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import eebert_cli.scoring.benchmark as bench
    from eebert_cli.cli import app

    def no_pass(*a, **k):
        raise AssertionError("the backbone pass ran before the export was checked")

    monkeypatch.setattr(bench, "split_outputs", no_pass)
    r = CliRunner().invoke(app, ["benchmark", str(calibrated[0]), "--runtime", "onnxruntime", "--onnx",
                                 str(tmp_path / "none")])
    assert r.exit_code == 1 and r.output.count("error:") == 1 and "no ONNX export in" in r.output, r.output
    assert "Traceback" not in r.output


def test_benchmark_with_one_shared_ort_pool_times_the_same_decisions(calibrated, tiny_data):
    """`eebert benchmark --runtime onnxruntime --ort-pool shared` (a child process: the pool is process-wide)
    times deployed and early exit on one spinning pool, with the exits the default pools give (this process)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from eebert_cli.cli import app

    _needs("onnxruntime")
    out, _ = calibrated
    common = ["benchmark", str(out), "--data", str(tiny_data), "--runtime", "onnxruntime", "--timing-samples", "6",
              "--repeats", "1", "--threads", "1", "--json"]
    here = CliRunner().invoke(app, [*common, "--ort-pool", "per-session"])
    assert here.exit_code == 0, here.output
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.run([sys.executable, "-m", "eebert_cli.cli", *common, "--ort-pool", "shared"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    reports = [json.loads(here.stdout), json.loads(p.stdout)]
    assert [r["timing"]["ort_pool"] for r in reports] == ["per-session", "shared"]
    clock = {"speedup_measured", "latency_ms"}  # the figures but the clock's do not depend on the threads
    same = [{k: v for k, v in r["early_exit"].items() if k not in clock} for r in reports]
    assert same[0] == same[1] and same[0]["speedup_flops"] > 1


def test_an_onnxruntime_timing_records_the_cpu_it_ran_on_not_the_models_device(calibrated, tiny_data, monkeypatch):
    """ONNX Runtime's sessions run on the CPU whatever device the PyTorch model sits on (a GPU by default where
    there is one): the timing names the CPU (it named the model's device)."""
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.runtime import EarlyExitModel
    from eebert_cli.scoring.benchmark import time_runtime
    from eebert_cli.scoring.config import BenchmarkConfig

    _needs("onnxruntime")
    out, _ = calibrated
    model = EarlyExitModel.from_artifact(out)
    cfg = BenchmarkConfig(runtime="onnxruntime", repeats=1, timing_samples=3, threads=1)
    expected = torch.zeros(10**4, dtype=torch.long)
    monkeypatch.setattr(model, "device", torch.device("meta"))  # a device that is not the CPU
    timing = time_runtime(model, load_data(DataConfig(spec=str(tiny_data))), "test", cfg, expected)
    assert timing["device"] == "cpu"


def test_a_benchmark_of_graphs_at_another_precision_than_the_calibration_says_so(calibrated, tiny_data, tmp_path):
    """An int8 export of an fp32 calibration runs other exits than the figures score: the benchmark's timing
    records how (``differs``), report.md warns, and an export at the calibration's precision has no warning."""
    from eebert_cli import steps
    from eebert_cli.deploy.onnx_export import export
    from eebert_cli.scoring.config import BenchmarkConfig
    from eebert_cli.scoring.report import markdown

    _needs("onnxruntime")
    out, _ = calibrated
    notes = {}
    for q in (None, "int8"):
        folder = export(out, tmp_path / f"onnx-{q}", q)["out"]
        report = steps.benchmark(out, None, BenchmarkConfig(runtime="onnxruntime", onnx_dir=folder, repeats=1,
                                                            timing_samples=4, threads=1), curves=False, write=False)
        notes[q] = report["timing"].get("differs"), markdown(report)
    assert notes[None][0] is None and "Warning (timing)" not in notes[None][1]
    assert "is int8 and the calibration was made on the fp32 backbone" in notes["int8"][0]
    assert "**Warning (timing):** the ONNX export" in notes["int8"][1]


def test_the_onnx_runtime_without_onnxruntime_is_refused_before_the_model_loads(calibrated, monkeypatch):
    """An export there but no onnxruntime installed: refused by the runtime's check, not when the first
    session opened (after the rows and the weights had loaded)."""
    from eebert_cli import steps
    from eebert_cli.model.runtime import EarlyExitModel
    from eebert_cli.scoring.config import BenchmarkConfig

    _needs("onnxruntime")  # the fixture's export needs it; then it is made to look absent
    out, _ = calibrated
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    monkeypatch.setattr(EarlyExitModel, "from_artifact", lambda *a, **k: pytest.fail("the model loaded first"))
    with pytest.raises(EebertError, match="the ONNX runtime needs onnxruntime") as e:
        steps.benchmark(out, None, BenchmarkConfig(runtime="onnxruntime"))
    assert e.value.hint == "pip install 'eebert[onnx]'"
