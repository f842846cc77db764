"""On a CUDA GPU, in bf16 and fp16: attach -> calibrate -> benchmark -> predict -> serve -> export.

Marked ``cuda`` and skipped without a GPU (`make test` stays green on CPU-only
machines); on a GPU host run them with ``pytest -m cuda``. Every command runs
with ``--device cuda --dtype D`` as a user would, and each step checks what the
next relies on: the recorded placement, the runtime against the simulation
calibration used (``parity.runtime_parity``), served answers against `eebert
predict`, and the ONNX export of a GPU-calibrated artifact.

``EEBERT_CUDA_TESTS_DEVICE=cpu`` runs the same tests on the CPU (bf16 and fp16
where the CPU has them): a dry run of the tests themselves before GPU time.
"""

import asyncio
import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eebert_cli.cli import app
from eebert_cli.data import DataConfig, load_data
from eebert_cli.model.device import resolve
from eebert_cli.model.device_config import DeviceConfig
from eebert_cli.core.errors import EebertError
from eebert_cli.scoring.parity import runtime_parity
from eebert_cli.model.runtime import EarlyExitModel

from conftest import make_rows

DEVICE = os.environ.get("EEBERT_CUDA_TESTS_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                   reason="needs a CUDA GPU")]

#: largest logit difference where runtime and simulation leave at the same exit (exits compute in fp32
#: from the backbone's states; padded and unpadded GPU kernels round them differently): a few steps of
#: each dtype's mantissa at |logit| ~ 4 (bf16: 1/32, fp16: 1/256)
LOGIT_TOL = {"bfloat16": 0.15, "float16": 0.02}


def run(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def as_json(output: str):
    return json.loads(output[output.index("{") if output.lstrip().startswith("{") else output.index("["):])


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def pipeline(request, tiny_ckpt, tiny_data, tmp_path_factory):
    dtype = request.param
    try:
        resolve(DeviceConfig(DEVICE, dtype))
    except EebertError as e:
        pytest.skip(e.message)
    out = tmp_path_factory.mktemp(f"cuda-{dtype}") / "art"
    dev = ["--device", DEVICE, "--dtype", dtype]
    run("attach", tiny_ckpt, "--data", tiny_data, "--out", out, "--epochs", 20, *dev)
    cal = as_json(run("calibrate", out, "--target-speedup", "1.5", "--json", *dev))
    return out, dtype, dev, cal


def test_calibration_and_report_record_the_gpu_placement(pipeline):
    out, dtype, dev, cal = pipeline
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["placement"]["device"].startswith(DEVICE) and saved["placement"]["dtype"] == dtype
    rep = as_json(run("benchmark", out, "--timing-samples", 20, "--repeats", 2, "--json", *dev))
    assert rep["placement"]["device"].startswith(DEVICE) and rep["placement"]["dtype"] == dtype
    assert rep["calibration_placement"] == saved["placement"]
    assert rep["timing"]["device"].startswith(DEVICE)
    assert rep["early_exit"]["latency_ms"]["p50"] > 0 and rep["deployed"]["latency_ms"]["p50"] > 0
    assert rep["early_exit"]["speedup_flops"] > 1.0
    batched = as_json(run("benchmark", out, "--timing-samples", 32, "--repeats", 1, "--batch-size", 16, "--json",
                          *dev))
    assert batched["placement"] == rep["placement"]


def test_latency_cost_times_the_loop_on_the_device(pipeline, tmp_path):
    """`--cost latency` on the GPU: the loop is timed there (CUDA events), the record says which GPU."""
    import shutil

    out, dtype, dev, _ = pipeline
    art = tmp_path / "art"
    shutil.copytree(out, art)
    r = CliRunner().invoke(app, [str(a) for a in ("calibrate", art, "--target-speedup", "1.3", "--cost", "latency",
                                                   "--json", *dev)])
    if DEVICE == "cpu" and r.exit_code == 1 and "too noisy" in r.output:
        pytest.skip("the CPU dry run's tiny layers drown in the machine's noise; a GPU times them")
    assert r.exit_code == 0, r.output
    cal = as_json(r.output)
    prof = cal["cost"]["profile"]
    assert all(v > 0 for v in prof["measured"]["layer"])
    if DEVICE == "cuda":
        assert prof["machine"]["gpu"] == torch.cuda.get_device_name()
    assert cal["validation"]["speedup_latency_model"] >= 1.3 and cal["placement"]["dtype"] == dtype


def test_runtime_equals_simulation_on_the_gpu(pipeline, tiny_data):
    out, dtype, dev, _ = pipeline
    model = EarlyExitModel.from_artifact(out, device=DeviceConfig(DEVICE, dtype))
    assert next(model.adapter.model.parameters()).dtype is getattr(torch, dtype)
    exit_param = next(model.exits.parameters())
    assert exit_param.device.type == DEVICE and exit_param.dtype is torch.float32
    p = runtime_parity(model, load_data(DataConfig(spec=str(tiny_data))), "test", batch_size=16)
    for name in ("batch1", "batched"):
        r = p[name]
        assert r["mismatched"] == 0, p  # a different exit only where the score sits on its threshold
        assert r["same_exit"] >= 0.9 * p["rows"], p
        assert r["max_logit_diff"] <= LOGIT_TOL[dtype], p


def test_predict_cli_matches_the_runtime_batched_and_alone(pipeline):
    out, dtype, dev, _ = pipeline
    texts = [r["text"] for r in make_rows(24, seed=5)]
    one = as_json(run("predict", out, *texts, "--json", *dev))
    model = EarlyExitModel.from_artifact(out, device=DeviceConfig(DEVICE, dtype))
    batched = model.predict(texts, batch_size=8)
    assert [(r["label"], r["exit_layer"]) for r in one] == [(p.label, p.exit_layer) for p in model.predict(texts)]
    agree = sum((r["label"], r["exit_layer"]) == (p.label, p.exit_layer) for r, p in zip(one, batched))
    assert agree >= 0.9 * len(texts)  # padded batches round differently: borderline rows may move an exit
    assert len({r["exit_layer"] for r in one}) > 1  # a real mix of exits


def test_serve_on_cuda_answers_like_predict(pipeline):
    pytest.importorskip("fastapi")
    import httpx

    from eebert_cli.deploy.serve.app import create_app
    from eebert_cli.deploy.serve.config import ServeConfig
    from eebert_cli.deploy.serve.engine import load_engine

    out, dtype, dev, _ = pipeline
    texts = [r["text"] for r in make_rows(16, seed=9)]
    want = as_json(run("predict", out, *texts, "--json", *dev))
    for deployed in (False, True):
        cfg = ServeConfig(artifact=str(out), device=DEVICE, dtype=dtype, deployed=deployed, max_wait_ms=20).check()
        engine = load_engine(cfg)
        assert engine.device.type == DEVICE and engine.info["dtype"] == dtype
        app_ = create_app(cfg, engine)

        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_), base_url="http://t") as c:
                return [await c.post("/v1/predict", json={"text": t}) for t in texts]

        rs = asyncio.run(go())
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
        got = [r.json()["predictions"][0] for r in rs]
        if not deployed:  # one request at a time: the batch-1 path, exactly `eebert predict`
            assert [(g["label"], g["exit_layer"]) for g in got] == [(w["label"], w["exit_layer"]) for w in want]
        else:
            assert all(g["exit_layer"] == engine.exit_layers[-1] for g in got)


def test_export_of_a_gpu_calibrated_artifact(pipeline, tiny_data):
    pytest.importorskip("onnxruntime")
    from eebert_cli.model.features import encode
    from eebert_cli.deploy.onnx_export import export
    from eebert_cli.deploy.onnx_runtime import OnnxEarlyExit

    out, dtype, dev, _ = pipeline
    info = export(out)
    onnx = OnnxEarlyExit(info["out"])
    cpu = EarlyExitModel.from_artifact(out, device=DeviceConfig("cpu"))  # the export is fp32, as on the CPU
    assert onnx.manifest["exit_layers"] == cpu.exit_layers
    enc = encode(cpu.artifact.deployed.tokenizer, load_data(DataConfig(spec=str(tiny_data))).split("test"), 128)
    for ids, t in list(zip(enc.input_ids, enc.token_type_ids))[:20]:
        lt, kt = cpu.forward_one(torch.tensor([ids]), torch.tensor([t]))
        lo, ko = onnx.forward_one(np.array([ids]), np.array([t]))
        assert ko == kt and np.abs(lo - lt.numpy()).max() < 1e-4


# -- a tagger on the device ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def tagger_pipeline(request, tmp_path_factory):
    from conftest import make_tagging_case

    dtype = request.param
    try:
        resolve(DeviceConfig(DEVICE, dtype))
    except EebertError as e:
        pytest.skip(e.message)
    root = tmp_path_factory.mktemp(f"cuda-tagger-{dtype}")
    ckpt, data = make_tagging_case(root)
    out = root / "art"
    dev = ["--device", DEVICE, "--dtype", dtype]
    # the word states go through the feature cache, copied off the device without a sync per layer
    run("attach", ckpt, "--data", data, "--out", out, "--layers", "1,2,3", "--epochs", 15, "--lr", "3e-3", *dev)
    run("calibrate", out, "--target-speedup", "1.5", *dev)
    return out, data, dtype, dev


def test_a_tagger_runs_on_the_device_where_its_scored_path_says(tagger_pipeline):
    """A tagger attached, calibrated and benchmarked on the device: the runtime (batch 1 and batched) leaves
    at the exit the scored path (one padded pass, as calibration reads it) picks, with its tags."""
    from eebert_cli.criteria import build_criterion
    from eebert_cli.model.device import place_artifact
    from eebert_cli.model.tagger_runtime import Tagger
    from eebert_cli.scoring.tagging import split_tags
    from eebert_cli.scoring.threshold_search import decide

    from conftest import middle_thresholds

    out, data, dtype, dev = tagger_pipeline
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["placement"]["device"].startswith(DEVICE) and saved["placement"]["dtype"] == dtype
    rep = as_json(run("benchmark", out, "--timing-samples", 20, "--repeats", 2, "--json", *dev))
    assert rep["metric"] == "entity_f1" and rep["placement"]["device"].startswith(DEVICE)
    assert rep["placement"]["dtype"] == dtype and rep["calibration_placement"] == saved["placement"]
    assert rep["timing"]["device"].startswith(DEVICE) and rep["early_exit"]["speedup_flops"] > 1.0
    tagger = Tagger.from_artifact(out)
    place_artifact(tagger.artifact, resolve(DeviceConfig(DEVICE, dtype)))
    assert next(tagger.adapter.model.parameters()).dtype is getattr(torch, dtype)
    texts = load_data(DataConfig(spec=str(data))).split("test").texts
    st = split_tags(tagger.artifact, load_data(DataConfig(spec=str(data))), "test")
    cal = tagger.artifact.calibration
    scores = build_criterion(cal.criterion, cal.criterion_params).scores(st.logits)[:, :-1].double()
    tagger.thresholds = middle_thresholds(scores)  # thresholds that send sentences to different exits
    want = decide(scores, torch.tensor(tagger.thresholds, dtype=torch.float64)).tolist()
    layers = cal.exit_layers
    assert len(set(want)) > 1
    for bs in (1, 8):
        got = tagger.tag_words(texts, batch_size=bs)
        same = [i for i, g in enumerate(got) if g[2] == layers[want[i]]]
        assert len(same) >= 0.9 * len(texts), (bs, len(same), len(texts))  # a borderline score may move an exit
        tags_equal = sum(got[i][0] == st.tags[i, want[i]][st.tags[i, want[i]] >= 0].tolist() for i in same)
        assert tags_equal >= 0.95 * len(same), (bs, tags_equal, len(same))
    rows = as_json(run("predict", out, *[" ".join(t) for t in texts[:12]], "--json", *dev))
    assert len(rows) == 12 and all("entities" in r and r["exit_layer"] in layers for r in rows)
