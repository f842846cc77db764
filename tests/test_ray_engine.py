"""--executor ray: a real local Ray (2 CPUs) gives the same features and predictions as the local path."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

import eebert_cli.model.feature_cache as fc  # noqa: E402
from eebert_cli.model.checkpoint import load_deployed  # noqa: E402
from eebert_cli.cli import app  # noqa: E402
from eebert_cli.train.config import AttachConfig  # noqa: E402
from eebert_cli.data import DataConfig, load_data  # noqa: E402
from eebert_cli.model.device_config import DeviceConfig  # noqa: E402
from eebert_cli.train.attach import attach  # noqa: E402
from eebert_cli.deploy.ray_executor import attach_runner, read_predictions, write_parts  # noqa: E402
from eebert_cli.train.config import TrainConfig  # noqa: E402
from eebert_cli.core.ui import SILENT  # noqa: E402
from eebert_cli.model.tagger_runtime import Tagger  # noqa: E402

from conftest import make_rows, make_tag_rows, make_tagging_case, middle_thresholds  # noqa: E402

RAY = DeviceConfig(device="cpu", executor="ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def calibrated(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "art"
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=2)), out)
    r = CliRunner().invoke(app, ["calibrate", str(out), "--target-speedup", "1.5"])
    assert r.exit_code == 0, r.output
    return out


def test_ray_backbone_pass_writes_the_same_features(local_ray, tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(fc, "CHUNK_ROWS", 48)  # several chunks, spread over both workers
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    needs = {1: {"mean"}, 2: {"mean", "tokens"}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each one-CPU Ray worker: the same summation order, bit for bit
    try:
        local = fc.attach_pass(dep, split, [1, 2], needs, 64, 8, tmp_path / "local", "cpu float32", SILENT)
    finally:
        torch.set_num_threads(threads)
    remote = fc.attach_pass(dep, split, [1, 2], needs, 64, 8, tmp_path / "ray", "cpu float32", SILENT,
                            attach_runner(RAY))
    assert torch.equal(local.reduced["mean"], remote.reduced["mean"])
    assert torch.equal(local.teacher, remote.teacher) and torch.equal(local.tokens.states, remote.tokens.states)


def test_attach_with_the_ray_engine_trains_from_its_cache(local_ray, tiny_ckpt, tiny_data, tmp_path):
    a, b = tmp_path / "local", tmp_path / "ray"
    cfg = AttachConfig(train=TrainConfig(epochs=2))
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), cfg, a)
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), cfg, b, device=RAY)
    from safetensors.torch import load_file

    la, lb = load_file(a / "exits.safetensors"), load_file(b / "exits.safetensors")
    assert la.keys() == lb.keys()
    for k in la:  # features differ in the last bits only (workers sum on one thread), see the test above
        torch.testing.assert_close(la[k], lb[k], atol=1e-4, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "ray"]  # both default caches removed


def test_tagger_attach_on_ray_trains_the_same_exits(local_ray, tmp_path, monkeypatch):
    """A tagger's word states computed on Ray workers, chunk by chunk, train the exits a local attach trains."""
    monkeypatch.setattr(fc, "CHUNK_ROWS", 64)  # several chunks over both workers
    ckpt, data = make_tagging_case(tmp_path / "case")
    cfg = AttachConfig(layers=[1, 2, 3], train=TrainConfig(epochs=3, lr=3e-3))
    attach(str(ckpt), DataConfig(spec=str(data)), cfg, tmp_path / "local")
    attach(str(ckpt), DataConfig(spec=str(data)), cfg, tmp_path / "ray", device=RAY)
    from safetensors.torch import load_file

    la, lb = load_file(tmp_path / "local" / "exits.safetensors"), load_file(tmp_path / "ray" / "exits.safetensors")
    assert la.keys() == lb.keys()
    for k in la:  # workers sum on one thread: the last bits differ
        torch.testing.assert_close(la[k], lb[k], atol=1e-4, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "local", "ray"]  # default caches removed


def test_ray_predict_on_a_labelled_file_matches_local_row_for_row(local_ray, calibrated, tmp_path):
    """An evaluation file (with its own `label` column): no column collides, and Ray's predictions
    equal the local executor's output file row for row."""
    rows = make_rows(700, seed=3)  # three map tasks of 256 rows: the order must hold across them
    pq.write_table(pa.table({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows],
                             "id": list(range(len(rows)))}), tmp_path / "in.parquet")
    common = ["--input", str(tmp_path / "in.parquet"), "--device", "cpu", "--batch-size", "16", "--json"]
    r = CliRunner().invoke(app, ["predict", str(calibrated), *common, "--output", str(tmp_path / "out"),
                                 "--executor", "ray"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["predict", str(calibrated), *common, "--output", str(tmp_path / "local.jsonl")])
    assert r.exit_code == 0, r.output
    got = read_predictions(tmp_path / "out")
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert got.column_names == ["label", "exit_layer", "probs", "input_text", "input_label", "input_id"]
    got = got.to_pylist()
    assert [g["input_id"] for g in got] == [x["row"] for x in local] == list(range(len(rows)))  # input order
    assert [g["input_label"] for g in got] == [x["label"] for x in rows]  # the file's own labels, kept
    assert [(g["label"], g["exit_layer"]) for g in got] == [(x["label"], x["exit_layer"]) for x in local]
    # a one-CPU worker sums on one thread, the local run on two: probabilities agree to the last digits
    torch.testing.assert_close(torch.tensor([g["probs"] for g in got]), torch.tensor([x["probs"] for x in local]),
                               atol=2e-6, rtol=0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left


def test_ray_predict_with_a_tagger_matches_local_row_for_row(local_ray, tmp_path):
    """A tagger's artifact on Ray: its spans and tags per row, as the local executor writes them, in input order."""
    from eebert_cli import steps
    from eebert_cli.scoring.config import CalibrationConfig

    ckpt, data = make_tagging_case(tmp_path / "case")
    art = tmp_path / "tag-art"
    steps.attach(str(ckpt), DataConfig(spec=str(data)), AttachConfig(layers=[1, 2, 3],
                 train=TrainConfig(epochs=15, lr=3e-3)), art)
    steps.calibrate(art, None, CalibrationConfig(target_speedup=1.5, bootstrap=20))
    # the tiny tagger's first exit is right on every sentence: thresholds that spread them over the exits
    from eebert_cli.criteria import build_criterion
    from eebert_cli.model.calibration import Calibration
    from eebert_cli.scoring.tagging import split_tags

    tagger = Tagger.from_artifact(art)
    st = split_tags(tagger.artifact, load_data(DataConfig(spec=str(data))), "test")
    cal = Calibration.load(art)
    cal.thresholds = middle_thresholds(build_criterion(cal.criterion, cal.criterion_params).scores(st.logits)[:, :-1])
    cal.save(art)
    texts = [" ".join(r["tokens"]) for r in make_tag_rows(300, seed=9)]  # two map tasks of 256 rows
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), tmp_path / "in.parquet")
    common = ["--input", str(tmp_path / "in.parquet"), "--device", "cpu", "--batch-size", "16", "--json"]
    r = CliRunner().invoke(app, ["predict", str(art), *common, "--output", str(tmp_path / "out"), "--executor", "ray"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["predict", str(art), *common, "--output", str(tmp_path / "local.parquet")])
    assert r.exit_code == 0, r.output
    got, local = read_predictions(tmp_path / "out"), pq.read_table(tmp_path / "local.parquet")
    assert got.column_names == ["exit_layer", "entities", "tokens", "input_text", "input_id"]
    assert got.column("input_id").to_pylist() == local.column("row").to_pylist() == list(range(len(texts)))
    assert got.column("exit_layer").to_pylist() == local.column("exit_layer").to_pylist()
    assert len(set(got.column("exit_layer").to_pylist())) > 1  # the exits differ by sentence: a real check
    strip = lambda rows: [[{k: v for k, v in x.items() if k != "score"} for x in row] for row in rows]  # noqa: E731
    for col in ("entities", "tokens"):
        assert strip(got.column(col).to_pylist()) == strip(local.column(col).to_pylist())
        # a one-CPU worker sums on one thread, the local run on two: scores agree to the last digits
        torch.testing.assert_close(torch.tensor([x["score"] for row in got.column(col).to_pylist() for x in row]),
                                   torch.tensor([x["score"] for row in local.column(col).to_pylist() for x in row]),
                                   atol=2e-6, rtol=0)
    assert sum(map(len, got.column("entities").to_pylist())) > 0


def test_write_parts_keeps_order_rolls_parts_and_casts_null_blocks(tmp_path):
    """The driver's writer: tables in the order given, a new part every `rows_per_part` rows, and a block
    whose input column is all null takes the first block's type."""
    blocks = [pa.table({"i": list(range(0, 4)), "t": ["a"] * 4}), pa.table({"i": [4, 5, 6], "t": [None] * 3}),
              pa.table({"i": list(range(7, 12)), "t": ["b"] * 5})]
    assert write_parts(iter(blocks), tmp_path, rows_per_part=5) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-000000.parquet", "part-000001.parquet",
                                                          "part-000002.parquet"]
    assert [pq.read_metadata(p).num_rows for p in sorted(tmp_path.iterdir())] == [5, 5, 2]
    got = read_predictions(tmp_path)
    assert got.column("i").to_pylist() == list(range(12)) and got.schema.field("t").type == pa.string()
    assert read_predictions(tmp_path / "none").num_rows == 0 and write_parts(iter([]), tmp_path / "none") == 0


ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env: dict) -> subprocess.CompletedProcess:
    """eebert in a fresh process: no Ray is running there (this module's local Ray is)."""
    return subprocess.run([sys.executable, "-m", "eebert_cli.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env})


@pytest.mark.parametrize("how", ["--ray-address", "RAY_ADDRESS"])
def test_a_ray_address_that_does_not_answer_is_one_line(how, calibrated, tiny_ckpt, tiny_data, tmp_path):
    """The flag and the environment variable alike: one line in seconds, never a hang (ray.init waits on
    an address where nothing answers without end), before the checkpoint or the artifact loads: their
    weights here are damaged, so a load would fail first with another message."""
    flag = ["--ray-address", "127.0.0.1:9"] if how == "--ray-address" else []
    env = {"RAY_ADDRESS": "127.0.0.1:9"} if how == "RAY_ADDRESS" else {}
    ckpt, art = shutil.copytree(tiny_ckpt, tmp_path / "ckpt"), shutil.copytree(calibrated, tmp_path / "art")
    (ckpt / "model.safetensors").write_bytes(b"damaged")
    (art / "exits.safetensors").write_bytes(b"damaged")
    pq.write_table(pa.table({"text": ["good film"]}), tmp_path / "in.parquet")
    calls = [["attach", ckpt, "--data", tiny_data, "--out", tmp_path / "a", "--executor", "ray", *flag],
             ["predict", art, "--input", tmp_path / "in.parquet", "--output", tmp_path / "out",
              "--executor", "ray", *flag]]
    for call in calls:
        r = _cli(*call, env=env)
        assert r.returncode == 1, r.stderr
        assert f"no Ray cluster answers at 127.0.0.1:9 (from {how}" in r.stderr and "hint:" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "out").exists()


def test_ray_predict_needs_input_and_output(calibrated, tmp_path):
    r = CliRunner().invoke(app, ["predict", str(calibrated), "good", "--executor", "ray"])
    assert r.exit_code == 1 and "--executor ray reads --input PARQUET" in r.output
