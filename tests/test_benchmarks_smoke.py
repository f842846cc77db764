"""Every script under benchmarks/ runs to the end on a tiny model or slice and prints its table.

Smoke runs only: they catch a script that no longer works against the current code
(issue 15: inference.py crashed for weeks because nothing ran it). Timings are
never asserted; the figures in README/docs come from full runs on the demo.
A script added to benchmarks/ without an entry in RUNS fails
``test_every_benchmark_script_has_a_smoke_run``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import run_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@dataclass
class Run:
    script: str
    #: argv from a fixture getter (``request.getfixturevalue``) and a scratch folder
    argv: Callable[[Callable, Path], list]
    #: text the printed table must contain (headers and row labels)
    expect: list[str]
    #: text it must not contain
    absent: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()  # importable modules the run needs (optional extras)
    id: str = ""


def _inference(f, tmp: Path, variant: str) -> list:
    a = f("smoke_artifacts")
    argv = ["--threads", 1, "--limit", 24, "--samples", "6,12", "--repeats", 1, "--out", tmp / "inference.json"]
    if variant == "gated":
        return argv + ["--artifact", f("smoke_gated"), "--no-onnx"]
    if variant == "compared":  # a second calibration of the same exits, timed beside
        return argv + ["--artifact", a["fp32"], "--compare-artifact", a["fp32"], "--no-onnx"]
    return argv + ["--artifact", a["fp32"]] + (["--artifact-int8", a["int8"]] if variant == "onnx" else ["--no-onnx"])


def _tiny_recipe(f, tmp: Path) -> Path:
    recipe = tmp / "tiny.toml"
    recipe.write_text(f'version = 1\ncheckpoint = "{f("tiny_ckpt")}"\nartifact = "{tmp / "unused"}"\n'
                      f'[data]\nspec = "{f("tiny_data")}"\n[attach.train]\nepochs = 2\n'
                      '[calibrate]\ntarget_speedup = 1.5\nbootstrap = 5\n')
    return recipe


VARIANTS = ["pytorch fp32 deployed", "pytorch fp32 early exit", "pytorch fp32 whole-batch exit"]

RUNS = [
    Run("predict_stream.py",
        lambda f, tmp: ["--rows", 40, "--small-rows", 0, "--real-rows", 0, "--work", tmp, "--json", tmp / "r.json"],
        ["model", "rows/s", "peak RSS MB", "RSS first / last tenth MB", "tiny "], needs=("scattertext",)),
    Run("exit_training.py",
        lambda f, tmp: ["--recipe", _tiny_recipe(f, tmp), "--settings", "16:1e-3", "64:4e-3",
                        "--target-speedup", 1.3, "--json", tmp / "r.json"],
        ["200 training rows", "calibrated for 1.3x on validation", "batch", "held-out loss", "val acc %",
         "\n   16    0.001 ", "\n   64    0.004 "]),
    Run("calibration_speed.py", lambda f, tmp: ["--n", 300, "--exits", 4],
        ["300 examples x 4 exits", "criterion", "seconds", "speedup", "accuracy"]
        + [f"{c:10s} {m}" for c in ("entropy", "patience", "dge", "cobee")
           for m in ("target 2.0x", "max drop 1 pt", "scores", "bootstrap x200")]
        + ["entropy    target, pruned", "exits switched off)"]),
    Run("batch1_profile.py",
        lambda f, tmp: ["--artifact", f("smoke_artifacts")["fp32"], "--samples", 4, "--repeats", 1],
        ["4 test examples, 1 threads, median of 1; FLOPs speedup of these examples ", "\ndeployed (HF forward): ", "\nearly exit: ",
         "\nearly exit, every exit evaluated: ", "aten calls/example", "cProfile of the early-exit loop",
         "early-exit loop split", "\n    layers ", "\n    exits ", "us/call"]),
    Run("criteria.py",
        lambda f, tmp: ["--checkpoint", f("tiny_ckpt"), "--data", f("tiny_data"), "--cache", tmp / "cache",
                        "--limit", 60, "--epochs", 2, "--json", tmp / "criteria.json"],
        ["validation 60, test 60 examples", "1. Calibrated for 2.0x on validation, applied to test",
         "val x", "test acc", "\nentropy ", "\nlearned ", "static truncation (layer", "oracle (first right exit, else exit 1)",
         "deployed model", "2. Targets", "test-target", "miss(es)"]),
    Run("exit_heads.py",
        lambda f, tmp: ["--checkpoint", f("tiny_ckpt"), "--data", f("tiny_data"), "--heads", "linear,mean-mlp",
                        "--seeds", "0,1", "--epochs", 1, "--max-length", 32, "--cache", tmp / "c",
                        "--json", tmp / "heads.json"],
        ["mean ± sd over seeds [0, 1]", "| head | layer 1 |", "| linear | ", "| mean-mlp | ", "deployed model"]),
    Run("skip_sensitivity.py",
        lambda f, tmp: ["--checkpoint", f("tiny_ckpt"), "--data", f("tiny_data"), "--limit", 20],
        ["(20 examples)", "| layers skipped | accuracy % | agreement with deployed % |", "| none | ",
         "| 1 | ", "| 4 | ", "| 2,3 | ", "| 3,4 | "]),
    Run("inference.py", lambda f, tmp: _inference(f, tmp, "pytorch"),
        ["split test (24 examples), 1 threads", "batch size 1: 6 examples", "batch size 32: 12 examples",
         "ex/s", "p50 ms", "vs PT fp32 dep", "FLOPs", "measured/FLOPs", "blocks of 16 examples",
         "early exit", "vs its deployed (repeat totals ", "FLOPs of the timed examples"] + VARIANTS,
        absent=["onnxrt", "int8"], id="inference.py-pytorch"),
    Run("inference.py", lambda f, tmp: _inference(f, tmp, "compared"),
        ["pytorch fp32 early exit (compared)", "pytorch fp32: early exit (compared) ", "early exit / compared "]
        + VARIANTS, absent=["onnxrt", "int8"], id="inference.py-compared"),
    Run("inference.py", lambda f, tmp: _inference(f, tmp, "onnx"),
        ["check fp32: onnxrt vs pytorch exits equal", "check int8: onnxrt vs pytorch exits equal",
         "check int8: onnxrt fused graph vs segment loop exits equal: 100.00%", "onnxrt int8 segment loop",
         ", segment loop "] + VARIANTS
        + [v.replace(a, b) for v in VARIANTS for a, b in (("fp32", "int8"), ("pytorch", "onnxrt"))]
        + ["onnxrt int8 whole-batch exit"],
        needs=("onnxruntime", "onnx"), id="inference.py-onnx-int8"),
    # the prepared GPU check, dry-run on the CPU: every stage (MiniLM pipeline per dtype, the random BERT
    # shape, the served comparison) runs on tiny sizes; CUDA graphs fall back to eager padded buckets
    Run("gpu_check.py",
        lambda f, tmp: ["--smoke", "--device", "cpu", "--dtypes", "float32,bfloat16", "--bert-dtypes", "bfloat16",
                        "--checkpoint", f("tiny_ckpt"), "--data", f("tiny_data"), "--out", tmp / "gc",
                        "--latency-cost"],
        ["# GPU check (SMOKE RUN, tiny sizes: not a measurement)", "| tiny-bert | float32 | 1 | ",
         "Latency-calibrated (`eebert calibrate --cost latency`", "- tiny-bert float32: ",
         "| tiny-bert | bfloat16 | 4 | ", "| BERT 4x32 (random) | bfloat16 | 1 | ", "meaningless (random weights)",
         "(graphed)", "`eebert serve --device cpu --dtype float32`", "| 2 | "],
        absent=["Skipped:", "error"], needs=("fastapi", "uvicorn")),
    Run("onnx_profile.py",
        lambda f, tmp: ["--artifact", f("smoke_artifacts")["fp32"], "--artifact-int8", f("smoke_artifacts")["int8"],
                        "--threads", 1, "--limit", 24, "--samples", "4,12", "--repeats", 1, "--after-pytorch",
                        "--chain", "--out", tmp / "profile.json"],
        [f"onnxrt {q}, each call after a PyTorch forward, batch {b}" for q in ("fp32", "int8") for b in (1, 32)]
        + ["in calls: encoder layers", "in calls: exit head", "in calls: exit score",
           "in calls: ORT outside kernels", "in calls: Python binding", "host: decision, regroup, outputs",
           "segment-0.onnx", "deployed.onnx", "measured/FLOPs", "every segment in sequence (no exit taken)",
           "the same chain cut (ms a batch): as exported ", "no exit score ", "layers only ",
           "switch ", "exit head ", "exit score ", "a session call's floor (one Identity node) ", " us back to back"],
        needs=("onnxruntime", "onnx")),
    Run("serve_memory.py", lambda f, tmp: [f("smoke_artifacts")["int8"], "--threads", 1, "--json", tmp / "m.json"],
        ["one engine per fresh process, 1 threads, one text then a batch of 4 answered", "imports MB", "loaded MB",
         "answered MB", "peak MB",
         "\npytorch      early exit ", "\npytorch      deployed "], absent=["error"]),
    # skipping gates: the runtime does not report skipped layers, so no FLOPs figure rather than a wrong one
    Run("inference.py", lambda f, tmp: _inference(f, tmp, "gated"),
        ["FLOPs n/a (gates)", "batch size 32: 12 examples"] + VARIANTS, id="inference.py-gated"),
]


@pytest.fixture(scope="module")
def smoke_artifacts(tiny_ckpt, tiny_data, tmp_path_factory) -> dict[str, Path]:
    """The issue's A and B on the tiny model: entropy exits calibrated on fp32, a copy recalibrated on int8."""
    from typer.testing import CliRunner

    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.scoring.config import CalibrationConfig
    from eebert_cli.cli import app
    from eebert_cli.train.config import AttachConfig
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.train.attach import attach
    from eebert_cli.steps import calibrate
    from eebert_cli.train.config import TrainConfig

    root = tmp_path_factory.mktemp("bench")
    fp32, int8 = root / "A", root / "B"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(train=TrainConfig(epochs=5)), fp32)
    calibrate(load_artifact(fp32), load_data(dcfg), CalibrationConfig(target_speedup=1.3, bootstrap=10))
    shutil.copytree(fp32, int8)
    res = CliRunner().invoke(app, ["calibrate", str(int8), "--target-speedup", "1.3", "--quantize", "int8"])
    assert res.exit_code == 0, res.output
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="module")
def smoke_gated(tiny_ckpt, tiny_data, tmp_path_factory) -> Path:
    """Exits with SmartBERT gates, calibrated with the gates kept on (gate threshold 0.5)."""
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.scoring.config import CalibrationConfig
    from eebert_cli.train.config import AttachConfig
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.gates.config import GateConfig
    from eebert_cli.train.attach import attach
    from eebert_cli.steps import calibrate
    from eebert_cli.train.config import TrainConfig

    out = tmp_path_factory.mktemp("bench") / "gated"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(gates=GateConfig(type="smartbert", epochs=1, max_examples=40),
                                              train=TrainConfig(epochs=2)), out)
    calibrate(load_artifact(out), load_data(dcfg),
              CalibrationConfig(target_speedup=1.2, bootstrap=10, gate_thresholds=[0.5]))
    return out


@pytest.mark.parametrize("run", RUNS, ids=[r.id or r.script for r in RUNS])
def test_benchmark_runs_to_the_end_and_prints_its_table(run: Run, request, tmp_path, monkeypatch):
    for module in run.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (an optional extra)")
    argv = run.argv(request.getfixturevalue, tmp_path)  # fixtures first: they may use the temp folder
    system_tmp, started = Path(tempfile.gettempdir()), time.time()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    ran = run_script(BENCHMARKS / run.script, argv)
    # a script cleans up after itself: none of its temporary files or folders are left (python's and eebert's
    # names; libraries keep their own there, ORT's .ses, torch's inductor cache), none written beside the temp
    # folder (onnx_profile.py wrote ORT's profiles to /tmp/eebert-ort-* and left them)
    left = [p.name for p in scratch.iterdir() if p.name.startswith(("tmp", "eebert"))]
    left += [p.name for p in system_tmp.glob("eebert-ort-*") if p.stat().st_mtime >= started]
    assert not left, left
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = ran.stdout
    missing = [e for e in run.expect if e not in out]
    assert not missing, f"{run.script} did not print {missing}:\n{out}"
    assert not [a for a in run.absent if a in out], out
    for written in tmp_path.glob("*.json"):  # --out / --json files are complete JSON
        assert json.loads(written.read_text())


#: smoke runs kept next to the code they exercise (they need that file's fixtures): script -> test
ELSEWHERE = {
    "serve.py": "test_serve.py::test_benchmark_script_smoke",
    "attach_cost.py": "test_bench_scale.py::test_attach_cost_splits_the_attach_and_compares_thread_counts",
    "attach_memory.py": "test_bench_scale.py::test_attach_memory_measures_each_size_in_its_own_process",
    "ray_vs_local.py": "test_bench_scale.py::test_ray_vs_local_runs_both_passes_and_compares_features",
    "token_exit.py": "test_tagging.py::test_token_exit_benchmark_smoke",
}


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts, BENCHMARKS
    for script, test in ELSEWHERE.items():  # the named test must exist
        file, name = test.split("::")
        assert f"def {name}(" in (Path(__file__).parent / file).read_text(), f"{test} is gone: smoke-run {script}"
    untested = scripts - {r.script for r in RUNS} - set(ELSEWHERE)
    assert not untested, f"add a smoke run to tests/test_benchmarks_smoke.py RUNS for {sorted(untested)}"
