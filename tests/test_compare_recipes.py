"""Every shipped recipe loads; `eebert compare` runs end to end on a tiny model."""

from pathlib import Path

import pytest
import torch

from eebert_cli.checkpoint import load_deployed
from eebert_cli.compare import load_compare_recipe, markdown, run_compare
from eebert_cli.errors import EebertError
from eebert_cli.recipe import load_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads(path):
    if path.name.startswith("compare-"):
        r, methods = load_compare_recipe(path)
        assert methods and r.baseline in [m.name for m in methods]
    else:
        load_recipe(path)


def test_compare_rejects_unknown_names(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('version = 1\nkind = "compare"\ncheckpoint = "x"\nout = "o"\n[data]\nspec = "d"\n'
                   '[[methods]]\nname = "a"\n[methods.attach]\nobjective = "nope"\n')
    with pytest.raises(EebertError, match="unknown objective"):
        load_compare_recipe(bad)


def test_compare_runs_methods_side_by_side(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    rec = tmp_path / "c.toml"
    rec.write_text(f'''version = 1
kind = "compare"
checkpoint = "{tiny_ckpt}"
out = "{tmp_path / 'out'}"
speedups = [1.2, 50.0]
max_length = 32
baseline = "joint"
[data]
spec = "{tiny_data}"
[[methods]]
name = "joint"
[methods.attach]
objective = "joint"
train = {{epochs = 2}}
[[methods]]
name = "leebert+badge"
criterion = "maxprob"
[methods.attach]
objective = "leebert"
bypass = {{type = "badge", block_size = 2}}
train = {{epochs = 2, contrastive = 0.02}}
[[methods]]
name = "gates+backbone"
[methods.attach]
objective = "joint"
gates = {{type = "smartbert", epochs = 1, max_examples = 60, train_backbone = true, backbone_lr = 1e-3}}
train = {{epochs = 2}}
''')
    import eebert_cli.compare as compare

    shared = []
    monkeypatch.setattr(compare, "load_deployed", lambda p: shared.append(load_deployed(p)) or shared[-1])
    r, methods = load_compare_recipe(rec)
    report = run_compare(r, methods)
    assert [m["name"] for m in report["methods"]] == ["joint", "leebert+badge", "gates+backbone"]
    gated = report["methods"][2]
    assert gated["exits"]["gates"]["layers"] and gated["gates"]["history"]
    assert "SmartBERT gates (gates+backbone)" in markdown(report)
    # training a backbone copy for one method leaves the model the other methods share untouched
    fresh = load_deployed(tiny_ckpt).model.state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in shared[0].model.state_dict().items())
    report["methods"] = report["methods"][:2]
    for m in report["methods"]:
        assert m["at"]["50.0"] is None  # unreachable targets are reported, not faked
        at = m["at"]["1.2"]
        assert at["validation_speedup"] >= 1.2 and 0 <= at["accuracy"] <= 1
        assert m["oracle"]["speedup_flops"] > 1 and m["train_seconds"] >= 0
    assert report["methods"][1]["objective_report"]["weights"]
    assert report["summary"]["1.2"]["best"] in ("joint", "leebert+badge")
    assert "| joint |" in markdown(report)
    assert "effective terms" in markdown(report)  # the LeeBERT weight summary
