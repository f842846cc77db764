"""Recipes as CI contracts: [expect] verdicts, exit 3, the CI examples' command lines, `eebert validate`."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from eebert_cli.cli import app
from eebert_cli.recipe.expect import EXPECTATIONS_FAILED, Expect, check

ROOT = Path(__file__).parent.parent
SHIPPED = sorted((ROOT / "recipes").glob("*.toml")) + [ROOT / "examples/ci/recipe.toml"]
runner = CliRunner()


def recipe(tmp_path, ckpt, data, expect: str, name="r.toml") -> Path:
    f = tmp_path / name
    f.write_text(f'version = 1\ncheckpoint = "{ckpt}"\nartifact = "{tmp_path / "art"}"\n'
                 f'[data]\nspec = "{data}"\n[attach]\nlayers = [1, 2]\n[attach.train]\nepochs = 3\nlr = 0.003\n'
                 '[calibrate]\ntarget_speedup = 1.3\nbootstrap = 10\n'
                 '[benchmark]\ntiming_samples = 5\nrepeats = 1\nwarmup = 1\n' + expect)
    return f


REPORT = {"metric": "accuracy", "early_exit": {"speedup_flops": 2.0, "speedup_measured": 1.6, "accuracy": 0.80,
                                               "agreement": 0.93},
          "deployed": {"accuracy": 0.82, "agreement": 1.0}, "gaps": {"test_vs_validation_speedup": -0.04}}


@pytest.mark.parametrize("key,limit,ok", [
    ("min_flops_speedup", 1.9, True), ("min_flops_speedup", 2.1, False),
    ("min_measured_speedup", 1.6, True), ("min_measured_speedup", 1.7, False),
    ("max_accuracy_drop", 2.5, True), ("max_accuracy_drop", 1.5, False),
    ("min_agreement", 93.0, True), ("min_agreement", 95.0, False),
    ("max_speedup_gap", 5.0, True), ("max_speedup_gap", 3.0, False)])
def test_each_expectation_passes_and_fails_on_its_own_figure(key, limit, ok):
    verdict = check(Expect(**{key: limit}), REPORT)
    assert verdict["passed"] is ok and [c["name"] for c in verdict["checks"]] == [key]


@pytest.mark.parametrize("metric,drop", [("entity_f1", 2.0), ("pearson", 2.0), ("agreement", 2.0),
                                         ("mse_to_deployed", None)])
def test_the_drop_reads_each_tasks_report_metric(metric, drop):
    """A tagger's entity F1, a regressor's Pearson: drops in points; an MSE has none (not measured: fails)."""
    report = {"metric": metric, "early_exit": {metric: 0.80}, "deployed": {metric: 0.82}}
    verdict = check(Expect(max_accuracy_drop=2.5), report)
    assert verdict["checks"][0]["actual"] == (None if drop is None else pytest.approx(drop))
    assert verdict["passed"] is (drop is not None)


def test_a_taggers_run_is_held_to_its_expect_table(tmp_path):
    """`eebert run` on a tagger's recipe: the entity-F1 drop and the speedup gap are measured, not missing."""
    from conftest import make_tagging_case

    ckpt, data = make_tagging_case(tmp_path / "case")
    f = tmp_path / "t.toml"
    f.write_text(f'version = 1\ncheckpoint = "{ckpt}"\nartifact = "{tmp_path / "art"}"\n[data]\nspec = "{data}"\n'
                 '[attach]\nlayers = [1, 2, 3]\n[attach.train]\nepochs = 15\nlr = 0.003\n'
                 '[calibrate]\ntarget_speedup = 1.5\nbootstrap = 10\n[benchmark]\nrepeats = 0\n'
                 '[expect]\nmax_accuracy_drop = 100.0\nmax_speedup_gap = 1000.0\nmin_flops_speedup = 1.0\n')
    r = runner.invoke(app, ["run", str(f), "--json"])
    assert r.exit_code == 0, r.output
    verdict = json.loads(r.stdout)["expectations"]
    assert verdict["passed"] and all(c["actual"] is not None for c in verdict["checks"]), verdict

    report = {**REPORT, "early_exit": {k: v for k, v in REPORT["early_exit"].items() if k != "speedup_measured"}}
    verdict = check(Expect(min_measured_speedup=1.0), report)
    assert not verdict["passed"] and verdict["checks"][0]["actual"] is None


def test_run_meets_its_expectations_with_exit_0_and_says_so_in_json(tiny_ckpt, tiny_data, tmp_path):
    r = runner.invoke(app, ["run", str(recipe(tmp_path, tiny_ckpt, tiny_data, "[expect]\nmin_flops_speedup = 1.0\n")),
                            "--json"])
    assert r.exit_code == 0, r.output
    verdict = json.loads(r.stdout)["expectations"]
    assert verdict["passed"] and verdict["checks"][0]["name"] == "min_flops_speedup"


def _gate_lines() -> list[tuple[str, str]]:
    """(CI system, command line) of each example's step that runs the gate."""
    gh = yaml.safe_load((ROOT / "examples/ci/github-actions.yml").read_text())
    gl = yaml.safe_load((ROOT / "examples/ci/gitlab-ci.yml").read_text())
    lines = [("github", s["run"]) for job in gh["jobs"].values() for s in job["steps"] if "run" in s]
    lines += [("gitlab", line) for job in gl.values() for line in job["script"]]
    return [(ci, line) for ci, line in lines if "eebert-gate.sh" in line]


def test_both_ci_examples_call_the_gate_script_with_the_same_line():
    lines = _gate_lines()
    assert sorted(ci for ci, _ in lines) == ["github", "gitlab"]
    assert len({line for _, line in lines}) == 1  # so running it once tests both


def test_ci_command_line_fails_the_pipeline_with_exit_3_when_the_budget_is_missed(tiny_ckpt, tiny_data, tmp_path):
    """The YAMLs' own command line, on a tiny model whose recipe calibrates for 1.3x and expects 4.9x: within
    what its first exit allows (5x, so the recipe loads), far above what the run gives."""
    args = shlex.split(_gate_lines()[0][1])
    assert args[0] == "sh" and args[1] == "examples/ci/eebert-gate.sh"
    args[2] = str(recipe(tmp_path, tiny_ckpt, tiny_data, "[expect]\nmin_flops_speedup = 4.9\nmin_agreement = 1.0\n"))
    args[3] = str(tmp_path / "verdict.json")
    env = {**os.environ, "EEBERT": f"{sys.executable} -m eebert_cli.cli", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == EXPECTATIONS_FAILED, p.stderr
    assert "min_flops_speedup" in p.stderr and "Traceback" not in p.stderr
    verdict = json.loads((tmp_path / "verdict.json").read_text())["expectations"]
    assert not verdict["passed"]
    assert {c["name"]: c["passed"] for c in verdict["checks"]} == {"min_flops_speedup": False, "min_agreement": True}


def test_gate_script_stops_with_exit_1_on_a_bad_recipe_before_running(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\ncheckpoint = "c"\nartifact = "a"\n[data]\nspec = "d"\n[calibrate]\n'
                   'target_speedup = 2.0\n[expect]\nmin_flops_speedp = 2.0\n')
    env = {**os.environ, "EEBERT": f"{sys.executable} -m eebert_cli.cli", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(["sh", "examples/ci/eebert-gate.sh", str(bad), str(tmp_path / "v.json")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "min_flops_speedp" in p.stderr and "min_flops_speedup" in p.stderr
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_validate_builds_every_shipped_recipe(path):
    r = runner.invoke(app, ["validate", str(path), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["valid"] and result["methods"] and all(m["exits"] and m["criterion"] for m in result["methods"])


def test_validate_catches_a_bad_component_parameter_in_a_compare_method(tmp_path):
    text = (ROOT / "recipes/compare-rotten-tomatoes-quick.toml").read_text()
    bad = tmp_path / "c.toml"
    bad.write_text(text.replace('objective = "joint"', 'objective = "joint"\nobjective_params = {weighting = "pabe"}', 1))
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 1 and "pabe" in r.output and "Traceback" not in r.output


def test_every_command_takes_config(tiny_ckpt, tiny_data, tmp_path):
    """--config gives the artifact and settings; a flag overrides the recipe."""
    f = recipe(tmp_path, tiny_ckpt, tiny_data, "")
    r = runner.invoke(app, ["attach", "--config", str(f), "--epochs", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["exits"]["layers"] == [1, 2]  # from the recipe
    r = runner.invoke(app, ["calibrate", "--config", str(f), "--max-drop", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mode"] == "max_drop"  # the flag replaced the recipe's target_speedup
    r = runner.invoke(app, ["benchmark", "--config", str(f), "--repeats", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert "speedup_measured" not in json.loads(r.stdout)["early_exit"]  # --repeats 0 over the recipe's 1
    r = runner.invoke(app, ["predict", str(tmp_path / "art"), "good film", "--config", str(f), "--json"])
    assert r.exit_code == 0, r.output
    for cmd in ("attach", "calibrate", "benchmark", "export", "predict", "run", "compare"):
        assert "--config" in runner.invoke(app, [cmd, "--help"]).output, cmd


def test_run_prints_its_verdict_as_a_table_and_exits_3_on_a_miss(tiny_ckpt, tiny_data, tmp_path):
    """The human output (no --json): every expectation a row, met or FAILED, then exit 3 for the miss."""
    f = recipe(tmp_path, tiny_ckpt, tiny_data, "[expect]\nmin_flops_speedup = 1.0\nmin_measured_speedup = 4.9\n")
    r = runner.invoke(app, ["run", str(f)])
    assert r.exit_code == EXPECTATIONS_FAILED, r.output
    assert "Traceback" not in r.output and "expectations" in r.output
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if line.count("│") >= 4}
    assert "met" in rows["min_flops_speedup"] and ">= 1.0" in rows["min_flops_speedup"]
    assert "FAILED" in rows["min_measured_speedup"] and ">= 4.9" in rows["min_measured_speedup"]
