"""`eebert serve` on a tiny model: answers equal `eebert predict`, batching, limits, auth, metrics, shutdown."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from eebert_cli.model.artifact import load_artifact  # noqa: E402
from eebert_cli.scoring.config import CalibrationConfig  # noqa: E402
from eebert_cli.cli import app as cli_app  # noqa: E402
from eebert_cli.train.config import AttachConfig  # noqa: E402
from eebert_cli.data import DataConfig, load_data  # noqa: E402
from eebert_cli.train.attach import attach  # noqa: E402
from eebert_cli.steps import calibrate  # noqa: E402
from eebert_cli.deploy.serve.app import create_app  # noqa: E402
from eebert_cli.deploy.serve.config import ServeConfig  # noqa: E402
from eebert_cli.deploy.serve.engine import load_engine  # noqa: E402
from eebert_cli.train.config import TrainConfig  # noqa: E402

from conftest import make_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "art"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(train=TrainConfig(epochs=40, lr=3e-3, patience=40)), out)
    calibrate(load_artifact(out), load_data(dcfg), CalibrationConfig(criterion="entropy", target_speedup=1.5,
                                                                     bootstrap=10))
    return out


@pytest.fixture(scope="module")
def texts():
    return [r["text"] for r in make_rows(48, seed=7)]


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://test")


def predict_cli(artifact, texts) -> list[dict]:
    r = CliRunner().invoke(cli_app, ["predict", str(artifact), *texts, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def same(got: dict, want: dict) -> None:
    assert (got["label"], got["exit_layer"]) == (want["label"], want["exit_layer"])
    assert max(abs(a - b) for a, b in zip(got["probs"], want["probs"])) < 1e-4


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_concurrent_answers_equal_eebert_predict_and_are_batched(served, texts):
    want = predict_cli(served, texts)
    cfg = ServeConfig(artifact=str(served), max_batch=8, max_wait_ms=50)
    app = create_app(cfg, load_engine(cfg))

    async def go():
        async with client(app) as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", json={"text": t}) for t in texts))
            many = await c.post("/v1/predict", json={"texts": texts[:5]})
            return rs, many, (await c.get("/metrics")).text

    rs, many, metrics = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    for r, w in zip(rs, want):
        body = r.json()
        assert body["model"] == "early-exit" and len(body["model_id"]) == 12 and len(body["calibration_id"]) == 12
        same(body["predictions"][0], w)
    for got, w in zip(many.json()["predictions"], want[:5]):
        same(got, w)
    assert len({w["exit_layer"] for w in want}) > 1  # a real mix of exits in the batches
    batches, rows = metric(metrics, "eebert_batch_size_count"), metric(metrics, "eebert_batch_size_sum")
    assert rows == len(texts) + 5 and batches < rows  # requests were grouped: some batch held several rows
    assert metric(metrics, "eebert_exit_layer_total") == len(texts) + 5
    assert metric(metrics, "eebert_request_seconds_count") == len(texts) + 1
    for name in ("eebert_queue_depth", 'eebert_errors_total{kind="queue_full"}', "eebert_request_seconds_bucket"):
        assert name in metrics


def test_pairs_and_single_texts_mixed_in_one_batch(served, texts):
    from eebert_cli.model.runtime import EarlyExitModel

    model = EarlyExitModel.from_artifact(served)
    bodies = [{"text": t, "pair": texts[-i - 1]} if i % 2 else {"text": t} for i, t in enumerate(texts[:10])]
    want = [model.predict([b["text"]], [b["pair"]] if "pair" in b else None)[0] for b in bodies]
    cfg = ServeConfig(artifact=str(served), max_wait_ms=50)
    app = create_app(cfg, load_engine(cfg))

    async def go():
        async with client(app) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json=b) for b in bodies),
                                        c.post("/v1/predict", json={"texts": texts[:3], "pairs": texts[3:6]}))

    *rs, listed = asyncio.run(go())
    for r, w in zip(rs, want):
        same(r.json()["predictions"][0], {"label": w.label, "exit_layer": w.exit_layer, "probs": w.probs})
    for got, w in zip(listed.json()["predictions"], model.predict(texts[:3], texts[3:6])):
        same(got, {"label": w.label, "exit_layer": w.exit_layer, "probs": w.probs})


def test_deployed_mode_answers_with_the_full_model(served, texts):
    cfg = ServeConfig(artifact=str(served), deployed=True, max_wait_ms=20)
    engine = load_engine(cfg)
    model = load_artifact(served).deployed.model
    import torch

    tok = engine.tokenizer
    want = []
    for t in texts[:6]:
        enc = tok(t, return_tensors="pt", truncation=True, max_length=engine.max_length)
        with torch.no_grad():
            want.append(torch.softmax(model(**enc).logits, -1)[0].tolist())

    async def go():
        async with client(create_app(cfg, engine)) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json={"text": t}) for t in texts[:6]))

    for r, w in zip(asyncio.run(go()), want):
        p = r.json()["predictions"][0]
        assert p["exit_layer"] == model.config.num_hidden_layers and r.json()["calibration_id"] is None
        assert max(abs(a - b) for a, b in zip(p["probs"], w)) < 1e-4


def test_limits_answer_one_line_json(served):
    cfg = ServeConfig(artifact=str(served), max_text_chars=50, max_request_texts=4, max_body_bytes=2000)
    app = create_app(cfg, load_engine(cfg))
    cases = [
        ({"text": "x" * 51}, 422, "51 characters"),
        ({"texts": ["a"] * 5}, 413, "5 texts"),
        ({"texts": []}, 422, "non-empty"),
        ({"text": 3}, 422, "must be a string"),
        ({"text": "a", "texts": ["b"]}, 422, "exactly one"),
        ({"text": "a", "extra": 1}, 422, "unknown field"),
        ({"texts": ["a", "b"], "pairs": ["c"]}, 422, "as long as"),
        ({"texts": ["y" * 40] * 4, "pairs": ["z" * 500] * 4}, 413, "limit is 2000"),
    ]

    async def go():
        async with client(app) as c:
            rs = [await c.post("/v1/predict", json=body) for body, _, _ in cases]
            rs.append(await c.post("/v1/predict", content=b"{not json"))
            rs.append(await c.get("/nope"))
            return rs, (await c.get("/metrics")).text

    rs, metrics = asyncio.run(go())
    for r, (_, status, needle) in zip(rs, cases + [(None, 422, "not JSON"), (None, 404, "Not Found")]):
        assert r.status_code == status, r.text
        assert "\n" not in r.text and "Traceback" not in r.text and needle in r.json()["error"], r.text
    assert metric(metrics, 'eebert_errors_total{kind="invalid"}') == 7
    assert metric(metrics, 'eebert_errors_total{kind="too_large"}') == 2


def test_full_queue_answers_429_and_model_failure_500_without_a_traceback(served, texts):
    cfg = ServeConfig(artifact=str(served), max_queue=4, max_request_texts=4, max_wait_ms=200, max_batch=64)
    app = create_app(cfg, load_engine(cfg))

    async def go():
        async with client(app) as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", json={"texts": texts[:3]}) for _ in range(3)))
            return rs, (await c.get("/metrics")).text

    rs, metrics = asyncio.run(go())
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 429, 429], codes
    refused = [r for r in rs if r.status_code == 429]
    assert refused[0].headers["retry-after"] == "1" and refused[0].json()["kind"] == "queue_full"
    assert metric(metrics, 'eebert_errors_total{kind="queue_full"}') == 2

    engine = load_engine(ServeConfig(artifact=str(served)))

    def broken(*a):
        raise RuntimeError("secret internals")

    engine.forward = broken

    async def fail():
        async with client(create_app(ServeConfig(artifact=str(served)), engine)) as c:
            return await c.post("/v1/predict", json={"text": "hello"})

    r = asyncio.run(fail())
    assert r.status_code == 500 and "secret" not in r.text and r.json()["kind"] == "internal"


def test_bearer_token_guards_everything_but_the_probes(served, monkeypatch):
    monkeypatch.setenv("EEBERT_TEST_KEY", "s3cret")
    cfg = ServeConfig(artifact=str(served), api_key_env="EEBERT_TEST_KEY")
    app = create_app(cfg, load_engine(cfg))

    async def go():
        async with client(app) as c:
            ok = {"Authorization": "Bearer s3cret"}
            return [
                (await c.post("/v1/predict", json={"text": "a"})).status_code,
                (await c.post("/v1/predict", json={"text": "a"}, headers={"Authorization": "Bearer nope"})).status_code,
                (await c.post("/v1/predict", json={"text": "a"}, headers=ok)).status_code,
                (await c.get("/metrics")).status_code, (await c.get("/metrics", headers=ok)).status_code,
                (await c.get("/")).status_code, (await c.get("/", headers=ok)).status_code,
                (await c.get("/healthz")).status_code, (await c.get("/readyz")).status_code,
            ], (await c.get("/readyz")).json(), (await c.get("/", headers=ok)).text

    codes, ready, page = asyncio.run(go())
    assert codes == [401, 401, 200, 401, 200, 401, 200, 200, 200]
    assert ready["ready"] and ready["hash_checked"] and len(ready["backbone_sha256"]) == 64
    assert "eebert serve" in page and "texts per exit layer" in page
    monkeypatch.delenv("EEBERT_TEST_KEY")
    r = CliRunner().invoke(cli_app, ["serve", str(served), "--api-key-env", "EEBERT_TEST_KEY"])
    assert r.exit_code == 1 and "unset or empty" in r.output and "Traceback" not in r.output


def test_bad_settings_fail_with_one_line_before_loading(served, tmp_path, monkeypatch):
    import eebert_cli.deploy.serve.engine as engine

    monkeypatch.setattr(engine, "load_engine", lambda cfg: pytest.fail("the model loaded before the refusal"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args, needle in ((["--max-batch", "0"], "--max-batch must be >= 1, got 0"),
                             (["--port", "70000"], "--port must be within [0, 65535]"),
                             (["--shutdown-timeout-s", "-1"], "--shutdown-timeout-s must be >= 0"),
                             (["--max-body-bytes", "0"], "hint: for example 1048576 (the default)"),
                             (["--runtime", "tensorrt"], "unknown runtime"),
                             (["--device", "tpu"], "unknown device"), (["--dtype", "float8"], "unknown dtype"),
                             (["--max-queue", "8"], "--max-queue"),
                             (["--max-wait-ms", "inf"], "--max-wait-ms: must be a finite number"),
                             (["--max-wait-ms", "nan"], "--max-wait-ms: must be a finite number"),
                             (["--threads", "100000"], "--threads must be within [0, 1024], got 100000"),
                             (["--port", port], f"cannot listen on 127.0.0.1:{port}: Address already in use"),
                             (["--host", "no-such-host.invalid"], "--host no-such-host.invalid:"),
                             (["--onnx", str(tmp_path)], "--onnx names the export --runtime onnxruntime runs, not --runtime pytorch")):
            r = CliRunner().invoke(cli_app, ["serve", str(served), *args])
            assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output, r.output
            assert len([x for x in r.output.splitlines() if x.startswith("error:")]) == 1, r.output
    monkeypatch.undo()  # loading is what finds a folder that is no artifact
    r = CliRunner().invoke(cli_app, ["serve", str(tmp_path)])
    assert r.exit_code == 1 and "not an eebert artifact" in r.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(artifact, port, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", "from eebert_cli.cli import main; main()", "serve", str(artifact),
                             "--port", str(port), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def test_sigterm_answers_in_flight_requests_then_exits(served, texts):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(served, port, "--max-wait-ms", "1500", "--max-batch", "64")
    try:
        wait_ready(url, proc)

        async def go():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                pending = [asyncio.create_task(c.post("/v1/predict", json={"text": t})) for t in texts[:8]]
                await asyncio.sleep(0.5)  # the requests now wait in the queue for their batch (1.5 s)
                proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*pending)

        rs = asyncio.run(go())
        assert [r.status_code for r in rs] == [200] * 8
        # uvicorn re-raises the signal once it has shut down cleanly: the exit status says SIGTERM
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read().decode()
    assert "Traceback" not in log, log


def test_benchmark_script_smoke(served, tmp_path):
    """benchmarks/serve.py on the tiny artifact: both servers, two levels, a handful of requests (no timing asserted)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "benchmarks" / "serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main([str(served), "--concurrency", "1,3", "--requests", "6", "--warmup", "2",
                         "--duration", "60", "--out", str(tmp_path / "serve.json")])
    assert [r["concurrency"] for r in report["levels"]] == [1, 3]
    for level in report["levels"]:
        for name in ("early exit", "deployed"):
            assert level[name]["answered"] == 6 and level[name]["failed"] == 0 and level[name]["mean_batch"] >= 1
        assert level["throughput_ratio"] > 0
    assert json.loads((tmp_path / "serve.json").read_text())["levels"][1]["concurrency"] == 3


def test_onnxruntime_engine_answers_like_pytorch(served, texts):
    pytest.importorskip("onnxruntime")
    from eebert_cli.deploy.onnx_export import export

    export(served)
    want = predict_cli(served, texts[:12])
    for deployed in (False, True):
        cfg = ServeConfig(artifact=str(served), runtime="onnxruntime", deployed=deployed, max_wait_ms=30)
        engine = load_engine(cfg)
        app = create_app(cfg, engine)
        if not deployed:  # the graphs answer: the PyTorch backbone was loaded to hash-check it, then freed
            backbone = engine.forward.__self__.artifact.deployed.model
            assert engine.info["hash_checked"] and {p.device.type for p in backbone.parameters()} == {"meta"}

        async def go():
            async with client(app) as c:
                return await asyncio.gather(*(c.post("/v1/predict", json={"text": t}) for t in texts[:12]))

        rs = asyncio.run(go())
        assert all(r.status_code == 200 for r in rs)
        if not deployed:
            for r, w in zip(rs, want):
                same(r.json()["predictions"][0], w)
        else:
            assert {r.json()["predictions"][0]["exit_layer"] for r in rs} == {4}


def test_an_int8_early_exit_server_keeps_no_fp32_copy(served, texts, tmp_path):
    """The fp32 model kept beside an int8 backbone is the benchmarks' reference; a server never makes it."""
    import shutil

    art = tmp_path / "int8"
    shutil.copytree(served, art, ignore=shutil.ignore_patterns("onnx"))
    r = CliRunner().invoke(cli_app, ["calibrate", str(art), "--target-speedup", "1.5", "--quantize", "int8"])
    assert r.exit_code == 0, r.output
    engine = load_engine(ServeConfig(artifact=str(art), runtime="pytorch", device="cpu"))
    loaded = engine.forward.__self__.artifact
    assert loaded.original is None  # never copied: no peak at load either
    assert loaded.quantize == "int8" and {p.device.type for p in loaded.exits.parameters()} == {"cpu"}
    for got, want in zip(engine.run([(t, None) for t in texts[:8]]), predict_cli(art, texts[:8])):
        assert (got.label, got.exit_layer) == (want["label"], want["exit_layer"])


def test_onnxruntime_on_one_shared_pool_answers_the_same(served, texts):
    """--ort-pool shared (a server process: the pool is process-wide) answers as eebert predict does."""
    pytest.importorskip("onnxruntime")
    from eebert_cli.deploy.onnx_export import export

    if not (served / "onnx" / "manifest.json").is_file():
        export(served)
    want = predict_cli(served, texts[:4])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(served, port, "--runtime", "onnxruntime", "--ort-pool", "shared", "--threads", "1")
    try:
        wait_ready(url, proc)
        for t, w in zip(texts[:4], want):
            r = httpx.post(url + "/v1/predict", json={"text": t}, timeout=30)
            assert r.status_code == 200
            same(r.json()["predictions"][0], w)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
