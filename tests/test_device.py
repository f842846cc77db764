"""--device / --dtype: checked before any work, plumbed to every pass, artifacts stay device-neutral."""

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from eebert_cli.model.artifact import WEIGHTS
from eebert_cli.cli import app
from eebert_cli.train.config import AttachConfig
from eebert_cli.core.configs import from_dict
from eebert_cli.recipe import Recipe
from eebert_cli.data import DataConfig
from eebert_cli.model.device import resolve, resolve_device, stopwatch
from eebert_cli.model.device_config import DeviceConfig
from eebert_cli.core.errors import EebertError
from eebert_cli.train.attach import attach
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.train.config import TrainConfig

NO_CUDA = not torch.cuda.is_available()


def test_auto_is_cuda_when_present_else_cpu_and_fp32_on_cpu():
    where = resolve(DeviceConfig())
    assert where.device.type == ("cpu" if NO_CUDA else "cuda")
    if NO_CUDA:
        assert where.dtype is torch.float32
    else:
        assert where.dtype in (torch.bfloat16, torch.float16)


@pytest.mark.skipif(not NO_CUDA, reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_one_line_with_a_hint(name):
    with pytest.raises(EebertError) as e:
        resolve_device(name)
    assert "no CUDA device" in e.value.message and "--device cpu" in e.value.hint


@pytest.mark.parametrize("device,dtype,words", [("tpu", "auto", "unknown device"), ("cuda:x", "auto", "index"),
                                                ("cpu", "float8", "unknown dtype")])
def test_bad_device_and_dtype_names(device, dtype, words):
    with pytest.raises(EebertError, match=words):
        resolve(DeviceConfig(device, dtype))


def test_recipes_take_a_device_section():
    r = from_dict(Recipe, {"device": {"device": "cpu", "dtype": "bfloat16"}})
    assert r.device == DeviceConfig("cpu", "bfloat16")
    with pytest.raises(EebertError, match="unknown key 'gpu'"):
        from_dict(Recipe, {"device": {"gpu": 1}})


@pytest.mark.skipif(not NO_CUDA, reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("command", ["attach", "calibrate", "benchmark", "predict"])
def test_every_command_refuses_cuda_here_before_any_work(command, tiny_ckpt, tiny_data, tmp_path):
    args = {"attach": ["attach", str(tiny_ckpt), "--data", str(tiny_data), "--out", str(tmp_path / "a")],
            "calibrate": ["calibrate", str(tmp_path / "a"), "--target-speedup", "2"],
            "benchmark": ["benchmark", str(tmp_path / "a")],
            "predict": ["predict", str(tmp_path / "a"), "good film"]}[command]
    r = CliRunner().invoke(app, args + ["--device", "cuda"])
    assert r.exit_code == 1, r.output
    assert "no CUDA device" in r.output and "hint:" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a").exists()


def test_stopwatch_times_on_the_cpu():
    result, seconds = stopwatch(torch.device("cpu"))(lambda: sum(range(10000)))
    assert result == sum(range(10000)) and seconds > 0


def test_bfloat16_on_cpu_end_to_end_keeps_the_artifact_fp32(tiny_ckpt, tiny_data, tmp_path):
    out = tmp_path / "bf16"
    dev = DeviceConfig("cpu", "bfloat16")
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=2)), out,
           device=dev)
    assert all(t.dtype == torch.float32 for t in load_file(out / WEIGHTS).values())
    r = CliRunner().invoke(app, ["calibrate", str(out), "--target-speedup", "1.5", "--device", "cpu",
                                 "--dtype", "bfloat16"])
    assert r.exit_code == 0, r.output
    model = EarlyExitModel.from_artifact(out, device=dev)
    assert next(model.adapter.model.parameters()).dtype is torch.bfloat16
    assert all(p.dtype is torch.float32 for p in model.exits.parameters())
    texts = ["good great movie", "awful dull plot", "the film was not bad"] * 4
    one, batched = model.predict(texts), model.predict(texts, batch_size=8)
    assert [p.exit_layer for p in one] == [p.exit_layer for p in batched]
    assert all(abs(sum(p.probs) - 1) < 1e-3 for p in one)
    r = CliRunner().invoke(app, ["benchmark", str(out), "--timing-samples", "5", "--repeats", "1", "--device", "cpu",
                                 "--dtype", "bfloat16", "--json"])
    assert r.exit_code == 0, r.output
    assert '"device": "cpu"' in r.output


@pytest.mark.cuda
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
def test_cuda_matches_cpu_in_float32(tiny_ckpt, tiny_data, tmp_path):
    out = tmp_path / "a"
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=2)), out,
           device=DeviceConfig("cpu"))
    assert CliRunner().invoke(app, ["calibrate", str(out), "--target-speedup", "1.5", "--device", "cpu"]).exit_code == 0
    texts = ["good great movie", "awful dull plot", "the film was not bad"] * 4
    cpu = EarlyExitModel.from_artifact(out, device=DeviceConfig("cpu")).predict(texts, batch_size=4)
    gpu_model = EarlyExitModel.from_artifact(out, device=DeviceConfig("cuda", "float32"))
    assert next(gpu_model.adapter.model.parameters()).is_cuda and next(gpu_model.exits.parameters()).is_cuda
    gpu = gpu_model.predict(texts, batch_size=4)
    assert [p.label for p in cpu] == [p.label for p in gpu]
    r = CliRunner().invoke(app, ["benchmark", str(out), "--timing-samples", "5", "--repeats", "1", "--device", "cuda",
                                 "--json"])
    assert r.exit_code == 0 and '"device": "cuda' in r.output
