"""Device and dtype plumbing, checked on the CPU: what a GPU run relies on, in bf16 where the CPU has it.

bf16 on the CPU runs the same code paths as bf16 on CUDA (the dtype decides the
token store, the cache keys and the recorded placement); only the kernels differ.
"""

import json

import pytest
import torch
from typer.testing import CliRunner

import eebert_cli.model.feature_cache as fc
from eebert_cli.model.artifact import load_artifact
from eebert_cli.train.attach import attach
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.cli import app
from eebert_cli.train.config import AttachConfig
from eebert_cli.data import DataConfig, load_data
from eebert_cli.model.device import place_artifact, place_model, resolve
from eebert_cli.model.device_config import DeviceConfig
from eebert_cli.model.features import encode, extract
from eebert_cli.scoring.outputs import cache_key
from eebert_cli.scoring.parity import runtime_parity
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.train.config import TrainConfig
from eebert_cli.core.ui import SILENT

BF16 = DeviceConfig("cpu", "bfloat16")
#: largest logit difference allowed where runtime and simulation leave at the same exit. Exits compute
#: in fp32 from the backbone's states; bf16 states (8-bit mantissa, a step of 1/64 near 2) may round
#: differently padded and unpadded, so a few such steps; measured on the 2-core CPU: 6e-8 (fp32: 1e-7)
BF16_LOGIT_TOL = 0.05
FP32_LOGIT_TOL = 1e-4


def bf16_on_cpu() -> bool:
    try:
        resolve(BF16)
        return True
    except Exception:
        return False


needs_bf16 = pytest.mark.skipif(not bf16_on_cpu(), reason="this CPU build has no bfloat16 layer ops")


@pytest.fixture(scope="module")
def calibrated(tiny_ckpt, tiny_data, tmp_path_factory):
    """Attached in fp32, calibrated in fp32 (the artifact is device-neutral)."""
    out = tmp_path_factory.mktemp("placement") / "art"
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=2)), out,
           device=DeviceConfig("cpu"))
    r = CliRunner().invoke(app, ["calibrate", str(out), "--target-speedup", "1.5", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("dtype,tol", [("float32", FP32_LOGIT_TOL),
                                       pytest.param("bfloat16", BF16_LOGIT_TOL, marks=needs_bf16)])
def test_runtime_equals_simulation_on_its_placement(calibrated, tiny_data, dtype, tol):
    model = EarlyExitModel.from_artifact(calibrated, device=DeviceConfig("cpu", dtype))
    p = runtime_parity(model, load_data(DataConfig(spec=str(tiny_data))), "test", batch_size=16)
    assert p["placement"] == f"cpu {dtype}"
    for run in ("batch1", "batched"):
        r = p[run]
        assert r["mismatched"] == 0, p  # only a score on its threshold may move a row to a neighbouring exit
        assert r["same_exit"] >= 0.9 * p["rows"], p
        assert r["max_logit_diff"] <= tol, p
    if dtype == "float32":
        assert p["batch1"]["same_exit"] == p["batched"]["same_exit"] == p["rows"]


@needs_bf16
def test_placement_is_in_the_outputs_key_calibration_and_report(calibrated, tiny_data):
    art = load_artifact(calibrated)
    fp32 = cache_key(art, load_data(DataConfig(spec=str(tiny_data))), "validation")
    place_artifact(art, resolve(BF16))
    bf16 = cache_key(art, load_data(DataConfig(spec=str(tiny_data))), "validation")
    assert fp32["placement"] == {"device": "cpu", "dtype": "float32"}
    assert bf16["placement"] == {"device": "cpu", "dtype": "bfloat16"}
    assert {k: v for k, v in fp32.items() if k != "placement"} == {k: v for k, v in bf16.items() if k != "placement"}
    assert json.loads((calibrated / "calibration.json").read_text())["placement"] == {"device": "cpu",
                                                                                       "dtype": "float32"}
    r = CliRunner().invoke(app, ["benchmark", str(calibrated), "--repeats", "0", "--device", "cpu",
                                 "--dtype", "bfloat16", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):])
    assert report["placement"] == {"device": "cpu", "dtype": "bfloat16"}
    assert report["calibration_placement"] == {"device": "cpu", "dtype": "float32"}


@needs_bf16
def test_bf16_token_states_stay_bf16_in_ram_and_in_the_cache(tiny_ckpt, tiny_data, tmp_path):
    dep = load_deployed(tiny_ckpt)
    place_model(dep.model, resolve(BF16))
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    enc = encode(dep.tokenizer, split, 64)
    needs = {1: {"mean", "tokens"}, 2: {"mean"}}
    ram = extract(dep.adapter, enc, [1, 2], set(), 8, None, needs)
    assert ram.tokens.states.dtype is torch.bfloat16 and ram.reduced["mean"].dtype is torch.float32
    # the states of example 0 at layer 1, computed here by hand, are stored bit for bit
    ids = torch.tensor([enc.input_ids[0]])
    with torch.inference_mode():
        h = dep.adapter.embed(ids, None, None)
        h = dep.adapter.layer(0, h, dep.adapter.prepare(h, None))
    a, b = int(ram.tokens.offsets[0]), int(ram.tokens.offsets[1])
    assert torch.allclose(ram.tokens.states[a:b, 0].float(), h[0].float(), atol=0.05)
    cached = fc.attach_pass(dep, split, [1, 2], needs, 64, 8, tmp_path / "cache", "cpu bfloat16", SILENT)
    assert cached.tokens.states.dtype is torch.bfloat16
    assert torch.equal(cached.tokens.states.view(torch.int16), ram.tokens.states.view(torch.int16))
    assert torch.equal(cached.reduced["mean"], ram.reduced["mean"])
    assert torch.equal(cached.teacher, ram.teacher)


@needs_bf16
def test_serve_places_the_model_and_its_inputs_where_asked(calibrated):
    pytest.importorskip("fastapi")
    from eebert_cli.deploy.serve.config import ServeConfig
    from eebert_cli.deploy.serve.engine import load_engine

    texts = ["good great movie", "awful dull plot", "the film was not bad"]
    model = EarlyExitModel.from_artifact(calibrated, device=BF16)
    for deployed in (False, True):
        engine = load_engine(ServeConfig(artifact=str(calibrated), device="cpu", dtype="bfloat16",
                                         deployed=deployed).check())
        assert (engine.info["device"], engine.info["dtype"]) == ("cpu", "bfloat16")
        one = [engine.run([(t, None)])[0] for t in texts]
        batch = engine.run([(t, None) for t in texts])
        assert [p.label for p in one] == [p.label for p in batch]
        if not deployed:  # the server answers as `eebert predict` does on the same placement
            assert [(p.label, p.exit_layer) for p in one] == [(p.label, p.exit_layer) for p in model.predict(texts)]


def test_ray_workers_each_get_their_own_gpu_as_cuda():
    from eebert_cli.core.errors import EebertError
    from eebert_cli.deploy.ray_executor import _worker_device

    assert _worker_device(DeviceConfig("cuda:3", "bfloat16"), 1.0) == DeviceConfig("cuda", "bfloat16")
    assert _worker_device(DeviceConfig("auto"), 1.0).device == "cuda"
    assert _worker_device(DeviceConfig("auto"), 0.0).device == "cpu"
    with pytest.raises(EebertError, match="no GPUs"):
        _worker_device(DeviceConfig("cuda:1"), 0.0)


def test_segment_graphs_answer_as_forward_one(calibrated, tiny_data):
    """On the CPU the segments run eagerly on the padded bucket: the code path CUDA replays, checked here."""
    from eebert_cli.model.features import encode
    from eebert_cli.model.segment_graphs import SegmentGraphs

    model = EarlyExitModel.from_artifact(calibrated, device=DeviceConfig("cpu"))
    graphed = SegmentGraphs(model, bucket=16)
    enc = encode(model.artifact.deployed.tokenizer, load_data(DataConfig(spec=str(tiny_data))).split("test"), 64)
    exits = []
    for ids, types in zip(enc.input_ids, enc.token_type_ids):
        want, k = model.forward_one(torch.tensor([ids]), torch.tensor([types]))
        got, kg = graphed(torch.tensor([ids]), torch.tensor([types]))
        assert kg == k and torch.allclose(got, want, atol=FP32_LOGIT_TOL)
        exits.append(k)
    assert len(set(exits)) > 1 and len(graphed.buckets) > 1  # several exits and several length buckets


def test_segment_graphs_refuse_a_stateful_criterion(calibrated):
    from eebert_cli.criteria import build_criterion
    from eebert_cli.core.errors import EebertError
    from eebert_cli.model.segment_graphs import SegmentGraphs

    model = EarlyExitModel.from_artifact(calibrated, device=DeviceConfig("cpu"))
    model.criterion = build_criterion("patience", {}, model.artifact)
    with pytest.raises(EebertError, match="stateless criterion"):
        SegmentGraphs(model)
