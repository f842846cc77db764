"""Every shipped recipe loads and validates; recipe errors name the bad key."""

from pathlib import Path

import pytest

from eebert_cli.errors import EebertError
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
