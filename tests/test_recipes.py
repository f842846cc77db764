"""Every shipped recipe loads and validates; recipe errors name the bad key."""

from pathlib import Path

import pytest

from eebert_cli.core.errors import EebertError
from eebert_cli.recipe import load_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.toml"))


def test_there_are_recipes():
    assert any(p.name == "quickstart.toml" for p in RECIPES)


def test_a_compare_recipe_is_not_a_pipeline_recipe():
    compare = next(p for p in RECIPES if p.name.startswith("compare-"))
    with pytest.raises(EebertError) as e:
        load_recipe(compare)
    assert "compare" in e.value.message and "eebert run" in e.value.hint


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('version = 1\ncheckpoint = "c"\nartifact = "a"\n[data]\nspec = "x"\n[attach]\nepoch = 3\n'
                 '[calibrate]\ntarget_speedup = 2.0\n')
    with pytest.raises(EebertError) as e:
        load_recipe(f)
    assert "'epoch'" in e.value.message and "train" in e.value.hint


def test_wrong_type_is_named(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('version = 1\ncheckpoint = "c"\nartifact = "a"\n[data]\nspec = "x"\n'
                 '[calibrate]\ntarget_speedup = "fast"\n')
    with pytest.raises(EebertError) as e:
        load_recipe(f)
    assert "target_speedup" in e.value.message


def test_a_recipe_run_equals_the_commands_run_by_hand(tmp_path, tiny_ckpt, tiny_data):
    """`eebert run` and attach / calibrate / benchmark --config call the same steps: same figures, metric included."""
    import json

    from typer.testing import CliRunner

    from eebert_cli.cli import app

    def recipe(artifact: Path) -> Path:
        f = tmp_path / f"{artifact.name}.toml"
        f.write_text(f'version = 1\ncheckpoint = "{tiny_ckpt}"\nartifact = "{artifact}"\n[data]\nspec = "{tiny_data}"\n'
                     '[attach]\nmax_length = 32\n[attach.train]\nepochs = 2\nseed = 3\n'
                     '[calibrate]\ntarget_speedup = 1.3\nbootstrap = 20\n'
                     '[benchmark]\nrepeats = 0\nmetric = "macro-f1"\n')
        return f

    runner = CliRunner()
    by_run = tmp_path / "by-run"
    res = runner.invoke(app, ["run", str(recipe(by_run)), "--json"])
    assert res.exit_code == 0, res.output
    ran = json.loads(res.stdout)
    by_hand = tmp_path / "by-hand"
    r = recipe(by_hand)
    for step in ("attach", "calibrate", "benchmark"):
        res = runner.invoke(app, [step, "--config", str(r), "--json"])
        assert res.exit_code == 0, res.output
    cal = json.loads((by_hand / "calibration.json").read_text())
    report = json.loads((by_hand / "report.json").read_text())

    assert cal["headline_metric"] == ran["calibration"]["headline_metric"] == "macro_f1"
    for key in ("criterion", "criterion_params", "thresholds", "validation", "metric"):
        assert cal[key] == ran["calibration"][key], key
    for key in ("metric", "headline_metric", "thresholds", "deployed", "early_exit", "static_truncation", "oracle"):
        assert report[key] == ran["report"][key], key
