"""Every shipped recipe loads; `eebert compare` runs end to end on a tiny model."""

import re
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from eebert_cli.recipe.compare import load_compare_recipe, run_compare
from eebert_cli.recipe.compare_report import markdown
from eebert_cli.core.errors import EebertError
from eebert_cli.recipe import load_recipe
from eebert_cli.data import load_data

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads(path):
    from eebert_cli.recipe import recipe_kind

    if recipe_kind(path) == "compare":
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


def test_a_methods_own_max_length_is_refused_not_overwritten(tmp_path):
    """Every method runs at the recipe's max_length (one backbone pass serves them all): a method's own value
    was replaced without a word; now it is refused, and the recipe's own value there is accepted."""
    head = 'version = 1\nkind = "compare"\ncheckpoint = "x"\nout = "o"\nmax_length = 64\n[data]\nspec = "d"\n'
    bad = tmp_path / "c.toml"
    bad.write_text(head + '[[methods]]\nname = "a"\n[methods.attach]\nmax_length = 256\n')
    with pytest.raises(EebertError, match=r"methods\[0\].attach.max_length = 256, but every method runs at the "
                                          r"recipe's max_length \(64\)"):
        load_compare_recipe(bad)
    bad.write_text(head + '[[methods]]\nname = "a"\n[methods.attach]\nmax_length = 64\n')
    assert load_compare_recipe(bad)[1][0].attach.max_length == 64


def _recipe(path, ckpt, data, out, speedups, methods, split="test", top=""):
    path.write_text(f'''version = 1
kind = "compare"
checkpoint = "{ckpt}"
out = "{out}"
speedups = {speedups}
split = "{split}"
max_length = 32
baseline = "joint"
{top}
[data]
spec = "{data}"
''' + methods)
    return path


JOINT = '''[[methods]]
name = "joint"
[methods.attach]
objective = "joint"
train = {epochs = 2}
'''


def test_run_takes_a_compare_recipe_as_compare_does(tiny_ckpt, tiny_data, tmp_path):
    """One verb runs every shipped recipe: `eebert run` on a compare recipe is `eebert compare` on it."""
    import json

    from typer.testing import CliRunner

    from eebert_cli.cli import app

    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], JOINT)
    (tmp_path / "out").mkdir()  # a compare.md that is not eebert's: refused before any method runs, kept
    (tmp_path / "out" / "compare.md").write_text("my notes")
    r = CliRunner().invoke(app, ["run", str(rec)])
    assert r.exit_code == 1 and "compare.md is not an eebert compare report" in r.output, r.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["compare.md"]
    (tmp_path / "out" / "compare.json").write_text('{"rows": []}')  # nor a compare.json eebert cannot read as its own
    r = CliRunner().invoke(app, ["run", str(rec)])
    assert r.exit_code == 1 and "compare.json is not an eebert compare report" in r.output, r.output
    shutil.rmtree(tmp_path / "out")
    r = CliRunner().invoke(app, ["run", str(rec), "--overwrite"])  # a pipeline recipe's flag: it did nothing here
    assert r.exit_code == 1 and "--overwrite lets a pipeline recipe's artifact" in r.output, r.output
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(app, ["run", str(rec), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [m["name"] for m in report["methods"]] == ["joint"] and report["methods"][0]["at"]["1.2"]
    assert json.loads(r.stdout)["methods"][0]["name"] == "joint"


def test_a_methods_folder_attach_would_refuse_fails_before_any_method_trains(tiny_ckpt, tiny_data, tmp_path,
                                                                             monkeypatch):
    """out/artifacts/<method> holding other files was refused when that method's attach came, after the
    methods before it had trained: it is refused before the first."""
    import eebert_cli.steps as steps
    from eebert_cli.recipe.compare import method_folder

    second = JOINT.replace('name = "joint"', 'name = "second"')
    r, methods = load_compare_recipe(_recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2],
                                             JOINT + second))
    method_folder(r, "second").mkdir(parents=True)
    (method_folder(r, "second") / "notes.txt").write_text("mine")
    monkeypatch.setattr(steps, "attach", lambda *a, **k: pytest.fail("a method trained first"))
    with pytest.raises(EebertError, match="method 'second''s folder .* is a directory that is not an eebert artifact") as e:
        run_compare(r, methods)
    assert "--overwrite" not in e.value.hint  # compare has no such flag
    assert [p.name for p in method_folder(r, "second").iterdir()] == ["notes.txt"]


def test_a_ray_cluster_that_does_not_answer_is_refused_before_the_checkpoint_loads(tiny_ckpt, tiny_data, tmp_path,
                                                                                  monkeypatch):
    """compare's one backbone pass runs on the recipe's executor: a [device] ray_address where nothing answers
    was found only after the checkpoint had loaded."""
    import importlib.util

    import eebert_cli.model.checkpoint as checkpoint

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (an optional extra)")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    r, methods = load_compare_recipe(_recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], JOINT,
                                             top='[device]\nexecutor = "ray"\nray_address = "127.0.0.1:9"'))
    monkeypatch.setattr(checkpoint, "load_deployed", lambda *a, **k: pytest.fail("the checkpoint loaded first"))
    with pytest.raises(EebertError, match="no Ray cluster answers at 127.0.0.1:9"):
        run_compare(r, methods)
    assert not (tmp_path / "out").exists()


def test_compare_runs_methods_side_by_side(tiny_ckpt, tiny_data, tmp_path):
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.checkpoint import weights_sha256
    from eebert_cli.criteria import build_criterion
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.scoring.outputs import split_outputs

    before = weights_sha256(tiny_ckpt)
    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2, 50.0], JOINT + '''
[[methods]]
name = "leebert+badge"
criterion = "learned"
[methods.attach]
objective = "leebert"
bypass = {type = "badge", block_size = 2}
train = {epochs = 2, contrastive = 0.02}
[[methods]]
name = "gates+backbone"
[methods.attach]
objective = "joint"
gates = {type = "smartbert", epochs = 1, max_examples = 60, train_backbone = true, backbone_lr = 1e-3}
train = {epochs = 2}
''')
    r, methods = load_compare_recipe(rec)
    report = run_compare(r, methods)
    assert [m["name"] for m in report["methods"]] == ["joint", "leebert+badge", "gates+backbone"]
    # the one training pass every method reads is timed and reported: the run's clock (which also loads the model)
    # and, as the report's figure, the cache's record of computing it (the rows, which reuse it, add nothing)
    assert report["shared_pass_seconds"] >= report["feature_seconds"] > 0
    gated = report["methods"][2]
    assert gated["exits"]["gates"]["layers"] and gated["gates"]["history"]
    assert "SmartBERT gates (gates+backbone)" in markdown(report)
    assert weights_sha256(tiny_ckpt) == before  # training a backbone for one method never touches the checkpoint
    for m in report["methods"][:2]:
        assert m["at"]["50.0"] is None  # unreachable targets are reported, not faked
        at = m["at"]["1.2"]
        assert at["validation_speedup"] >= 1.2 and 0 <= at["accuracy"] <= 1
    # the learned criterion is scored with its trained scorer and features (not all zeros)
    art = load_artifact(report["methods"][1]["artifact"])
    out = split_outputs(art, load_data(DataConfig(spec=str(tiny_data))), "validation")
    scores = build_criterion("learned", {}, art).scores(out.logits, out.features)[:, :-1]
    assert scores.std() > 0 and (scores > 0).all()


def test_compare_refuses_to_report_on_the_calibration_split(tiny_ckpt, tiny_data, tmp_path):
    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], JOINT, split="validation")
    with pytest.raises(EebertError, match="calibrated on"):
        load_compare_recipe(rec)


@pytest.mark.parametrize("speedups,seeds,needle", [([], [0], "speedups must be at least one, each above 1.0"),
                                                   ([1.5, 1.0], [0], "speedups must be at least one, each above 1.0"),
                                                   ([1.5], [], "seeds must be distinct and at least one"),
                                                   ([1.5], [0, 0], "seeds must be distinct and at least one")])
def test_a_compare_recipe_with_no_table_to_make_is_refused(speedups, seeds, needle, tiny_ckpt, tiny_data, tmp_path):
    """No target (or no seed) would train every method for an empty table: refused when the recipe loads."""
    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", speedups, JOINT, top=f"seeds = {seeds}")
    with pytest.raises(EebertError, match=re.escape(needle)):
        load_compare_recipe(rec)


def test_a_compare_cell_equals_attach_calibrate_benchmark_by_hand(tiny_ckpt, tiny_data, tmp_path):
    """Figure for figure: the compare cell is the three commands."""
    import json

    from typer.testing import CliRunner

    from eebert_cli.cli import app

    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.3], '''[[methods]]
name = "joint"
criterion = "pcee"
[methods.attach]
objective = "joint"
train = {epochs = 2}
''')
    r, methods = load_compare_recipe(rec)
    cell = run_compare(r, methods)["methods"][0]["at"]["1.3"]
    run = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    art = tmp_path / "by-hand"
    assert run("attach", tiny_ckpt, "--data", tiny_data, "--out", art, "--objective", "joint", "--epochs", 2,
               "--max-length", 32).exit_code == 0
    c = run("calibrate", art, "--target-speedup", 1.3, "--criterion", "pcee", "--json")
    assert c.exit_code == 0, c.output
    cal = json.loads(c.stdout)
    b = run("benchmark", art, "--repeats", 0, "--json")
    assert b.exit_code == 0, b.output
    rep = json.loads(b.stdout)
    assert cell["criterion_params"] == cal["criterion_params"] and cell["thresholds"] == cal["thresholds"]
    assert cell["validation_speedup"] == cal["validation"]["speedup_flops"]
    assert cell["validation_accuracy"] == cal["validation"]["accuracy"]
    assert cell["accuracy"] == rep["early_exit"]["accuracy"]
    assert cell["speedup_flops"] == rep["early_exit"]["speedup_flops"]
    assert cell["static"] == {**{k: rep["static_truncation"][k] for k in ("layer", "accuracy", "speedup_flops")},
                              "layers": [rep["static_truncation"]["layer"]]}  # one seed: one layer


def test_the_best_method_is_chosen_on_validation_not_test():
    from eebert_cli.recipe.compare_report import summarise

    def method(name, val, test):
        return {"name": name, "at": {"2.0": {"accuracy": test, "validation_accuracy": val, "speedup_flops": 2.0}}}

    report = {"deployed_accuracy": 0.8, "baseline": "a", "speedups": [2.0], "validation_examples": 400,
              "methods": [method("a", 0.79, 0.70), method("b", 0.75, 0.81)]}  # b wins on test only
    best = summarise(report)["2.0"]
    assert best["best"] == "a" and best["chosen_by"] == "validation accuracy" and best["accuracy"] == 0.70
    report["methods"][1]["at"]["2.0"]["validation_accuracy"] = 0.8  # b now leads by 0.01 of 400 examples
    best = summarise(report)["2.0"]
    assert best["best"] == "b" and best["validation_lead_examples"] == 4.0
    assert best["lead_can_be_significant"] is False  # 4 texts: McNemar's p >= 2 * 0.5**4 = 0.125
    report["summary"] = {"2.0": best}
    report.update(checkpoint="c", data={"spec": "d"}, split="test", examples=10, metric="accuracy",
                  feature_seconds=0.0, seeds=[0], criteria=[])
    for m in report["methods"]:
        m.update(exits={"type": "mean-mlp"}, objective="ce-distil", contrastive=0, criterion="entropy",
                 train_seconds=1.0, oracle=None, leco_search=None)
        m["at"]["2.0"].update(static=None)
    assert ("(validation 80.00%, 4 of 400 validation examples above the baseline, too few to be significant "
            "(a paired test needs 6))") in markdown(report)
    report["methods"][1]["at"]["2.0"]["validation_accuracy"] = 0.805  # 6 texts: p can reach 2 * 0.5**6 < 0.05
    assert summarise(report)["2.0"]["lead_can_be_significant"] is True


def test_a_taggers_lead_is_given_in_points_not_as_a_count_of_sentences():
    """entity F1 is not a rate over sentences: its lead times the sentences is no example count, and McNemar's
    bound does not apply"""
    from eebert_cli.recipe.compare_report import summarise

    def method(name, val, test):
        return {"name": name, "at": {"2.0": {"accuracy": test, "validation_accuracy": val, "speedup_flops": 2.0}}}

    report = {"deployed_accuracy": 0.44, "baseline": "a", "speedups": [2.0], "validation_examples": 239,
              "metric": "entity_f1", "methods": [method("a", 0.47, 0.45), method("b", 0.50, 0.44)]}
    best = summarise(report)["2.0"]
    assert best["best"] == "b" and best["validation_lead_points"] == pytest.approx(3.0)
    assert best["validation_lead_examples"] is None and best["lead_can_be_significant"] is None
    report.update(summary={"2.0": best}, checkpoint="c", data={"spec": "d"}, split="test", examples=10,
                  feature_seconds=0.0, seeds=[0], criteria=[], task="token-classification")
    for m in report["methods"]:
        m.update(exits={"type": "token-mlp"}, objective="ce-distil", contrastive=0, criterion="sentence-min",
                 train_seconds=1.0, oracle=None, leco_search=None)
        m["at"]["2.0"].update(static=None)
    text = markdown(report)
    assert "3.00 points above the baseline (entity F1 is not a count of examples" in text
    assert "validation examples above the baseline" not in text
    report["metric"] = "accuracy"  # a rate over examples: the count, and the paired test's bound
    assert summarise(report)["2.0"]["validation_lead_examples"] == pytest.approx(7.2)


def test_a_static_cell_names_every_layer_its_seeds_took():
    from eebert_cli.recipe.compare import _over_seeds
    from eebert_cli.recipe.compare_report import _static_cell

    def seed(layer, acc, spd):
        return {"accuracy": 0.95, "speedup_flops": 2.0, "validation_accuracy": 0.96, "validation_speedup": 2.0,
                "criterion": "entropy", "static": {"layer": layer, "accuracy": acc, "speedup_flops": spd},
                "oracle": {"accuracy": 0.99, "speedup_flops": 9.0}}

    # each seed takes the static exit nearest its own speedup: the mean spans layers 5 and 6
    row = {"at": {"2.0": _over_seeds([seed(5, 0.934, 2.4), seed(6, 0.947, 2.0), seed(6, 0.944, 2.0)])}}
    assert _static_cell(row, "2.0") == "94.17 (L5/6, 2.13x)"
    row = {"at": {"2.0": _over_seeds([seed(6, 0.94, 2.0), seed(6, 0.95, 2.0)])}}
    assert _static_cell(row, "2.0") == "94.50 (L6, 2.00x)"
    del row["at"]["2.0"]["static"]["layers"]  # a row written before the layers were kept: its first seed's
    assert _static_cell(row, "2.0") == "94.50 (L6, 2.00x)"


def test_a_cell_names_the_criteria_its_seeds_chose():
    """each seed keeps its own best criterion on validation; the cell says which, and for how many seeds, not
    the first seed's choice alone"""
    from eebert_cli.recipe.compare import _over_seeds
    from eebert_cli.recipe.compare_report import _cell

    def seed(crit, acc):
        tried = {"entropy": {"validation_accuracy": 0.9, "accuracy": acc, "speedup_flops": 2.0},
                 "maxprob": {"validation_accuracy": 0.9, "accuracy": acc, "speedup_flops": 2.0}}
        return {"accuracy": acc, "speedup_flops": 2.0, "validation_accuracy": 0.9, "validation_speedup": 2.0,
                "criterion": crit, "criteria_tried": tried, "static": {"layer": 3, "accuracy": 0.8, "speedup_flops": 2.0},
                "oracle": {"accuracy": 0.99, "speedup_flops": 9.0}}

    at = _over_seeds([seed("maxprob", 0.90), seed("entropy", 0.92), seed("maxprob", 0.91)])
    assert at["criteria_chosen"] == {"maxprob": 2, "entropy": 1}
    assert _cell({"at": {"2.0": at}}, "2.0") == "91.00 ± 1.00 (2.00x, maxprob ×2, entropy ×1)"
    at = _over_seeds([seed("entropy", 0.90), seed("entropy", 0.92)])
    assert _cell({"at": {"2.0": at}}, "2.0") == "91.00 ± 1.41 (2.00x, entropy)"
    del at["criteria_chosen"]  # a row written before the count: its first seed's choice
    assert _cell({"at": {"2.0": at}}, "2.0") == "91.00 ± 1.41 (2.00x, entropy)"


def test_min_significant_lead_is_the_exact_sign_test_bound():
    from eebert_cli.recipe.compare_report import min_significant_lead

    assert min_significant_lead() == 6 and 2 * 0.5 ** 5 > 0.05 >= 2 * 0.5 ** 6
    assert min_significant_lead(0.01) == 8


def test_compare_over_seeds_and_criteria_chosen_on_validation(tiny_ckpt, tiny_data, tmp_path):
    """seeds re-train the exits on one backbone pass; each cell's criterion is the best on validation."""
    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], JOINT)
    rec.write_text(rec.read_text().replace('baseline = "joint"', 'baseline = "joint"\nseeds = [0, 1, 2]\n'
                                           'criteria = ["maxprob", "patience"]'))
    r, methods = load_compare_recipe(rec)
    report = run_compare(r, methods)
    at = report["methods"][0]["at"]["1.2"]
    per_seed = at["per_seed"]
    assert at["seeds"] == 3 and len(per_seed) == 3
    assert at["accuracy"] == pytest.approx(sum(p["accuracy"] for p in per_seed) / 3)
    assert at["accuracy_sd"] == pytest.approx(statistics.stdev(p["accuracy"] for p in per_seed))
    tried = at["criteria_tried"]
    assert set(tried) == {"entropy", "maxprob", "patience"}
    assert sum(at["criteria_chosen"].values()) == 3 and at["criterion"] == per_seed[0]["criterion"]
    assert list(at["criteria_chosen"]) == list(dict.fromkeys(p["criterion"] for p in per_seed))
    if len(at["criteria_chosen"]) == 1 and all(t["seeds"] == 3 for t in tried.values()):  # then it leads the means too
        assert tried[at["criterion"]]["validation_accuracy"] == max(t["validation_accuracy"] for t in tried.values())
    # each criterion tried is reported over the seeds, so the method's own criterion has its mean ± sd too
    assert tried["entropy"]["seeds"] == 3 and "accuracy_sd" in tried["entropy"]
    assert "own criterion @1.2x" in markdown(report)
    # the seeds' artifacts differ (exits re-trained), and they share one backbone pass
    from eebert_cli.model.artifact import WEIGHTS, file_sha256

    base = Path(report["methods"][0]["artifact"])
    assert len({file_sha256(base / f"seed-{s}" / WEIGHTS) for s in (0, 1, 2)}) == 3
    # one training pass for all seeds (and for every method tokenizing and batching alike)
    assert len(list((tmp_path / "out" / "feature-cache").iterdir())) == 1
    assert "mean ± standard deviation" in markdown(report)
    # the validation split's size, so that a lead on validation reads in examples
    assert report["validation_examples"] == len(load_data(r.data).split("validation"))


def test_a_rows_description_comes_from_one_seed_and_lists_each_seeds_leco_choices(tiny_ckpt, tiny_data, tmp_path):
    """heads, search and per-exit accuracy all from seed 0 (a row once took its search from seed 0 and its
    heads from the last seed); the report names the heads every seed's LECO search chose."""
    import json

    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], JOINT
                  + '[[methods]]\nname = "leco"\n[methods.attach]\nexits = "leco"\ntrain = {epochs = 1}\n')
    rec.write_text(rec.read_text().replace('baseline = "joint"', 'baseline = "joint"\nseeds = [0, 1]'))
    r, methods = load_compare_recipe(rec)
    report = run_compare(r, methods)
    row = report["methods"][1]
    base = Path(row["artifact"])
    chosen = [json.loads((base / f"seed-{s}" / "eebert_config.json").read_text())["exits"]["params"]["choices"]
              for s in (0, 1)]
    assert row["leco_choices_per_seed"] == chosen and row["leco_search"]["choices"] == chosen[0]
    assert row["heads"] == [chosen[0][str(layer)] for layer in row["exits"]["layers"]]
    text = markdown(report)
    line = next(x for x in text.splitlines() if x.startswith("LECO search (leco)"))
    assert f"at layers {', '.join(chosen[0])}: " in line
    assert all(f"seed {s} {', '.join(ch.values())}" in line for s, ch in enumerate(chosen))


def test_shared_backbone_passes_give_each_artifact_its_own_fresh_pass_outputs(tiny_ckpt, tiny_data, tmp_path):
    """compare's artifacts share validation/test passes (widened when a head reads more); every
    artifact's outputs equal those of its own fresh pass, and passes are made only when needed."""
    from eebert_cli import steps
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.scoring import outputs as outs
    from eebert_cli.train.config import AttachConfig, TrainConfig

    data_cfg = DataConfig(spec=str(tiny_data))
    data = load_data(data_cfg)
    arts = []
    for name, exits in (("a", "mean-mlp"), ("b", "attention"), ("c", "mean-mlp")):
        steps.attach(tiny_ckpt, data_cfg, AttachConfig(exits=exits, max_length=32, train=TrainConfig(epochs=1)),
                     tmp_path / name)
        arts.append(load_artifact(tmp_path / name))
    passes, calls = outs.BackbonePasses(), []
    real = outs.extract
    outs.extract = lambda *a, **k: calls.append(a[3]) or real(*a, **k)  # counts passes (a[3]: layers)
    try:
        shared = [outs.split_outputs(a, data, "test", cache=outs.OutputsCache(tmp_path / f"cache-{i}", passes))
                  for i, a in enumerate(arts)]
    finally:
        outs.extract = real
    assert len(calls) == 2  # mean-mlp's pass, then one widened for the attention head's tokens; c reuses it
    for a, got in zip(arts, shared):
        fresh = outs.split_outputs(a, data, "test")
        assert torch.equal(got.logits, fresh.logits) and torch.equal(got.cost, fresh.cost)
        assert torch.equal(got.features, fresh.features)


STUDIES = sorted((Path(__file__).parent.parent / "recipes").glob("study-*.toml"))


def test_every_study_method_runs_on_a_tiny_slice(tiny_ckpt, tiny_data, tmp_path):
    """The study recipes' figures come from `eebert compare`: every method they list (each distinct one
    once) runs end to end on a tiny model, with one seed, one target and one extra criterion."""
    import tomllib

    tables = {}
    for path in STUDIES:
        for m in tomllib.loads(path.read_text())["methods"]:
            tables.setdefault(m["name"], m)
    assert len(tables) >= 17  # every head family, objective, LECO, BADGE x2, SmartBERT gates
    methods = ""
    for m in tables.values():
        attach = {**m.get("attach", {}), "train": {**m.get("attach", {}).get("train", {}), "epochs": 1}}
        if "gates" in attach:
            attach["gates"] = {**attach["gates"], "epochs": 1, "max_examples": 60}
        body = ", ".join(f"{k} = {_toml(v)}" for k, v in attach.items())
        methods += f'[[methods]]\nname = "{m["name"]}"\ncriterion = "{m.get("criterion", "entropy")}"\nattach = {{{body}}}\n'
    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], methods)
    rec.write_text(rec.read_text().replace('baseline = "joint"', 'baseline = "joint"\ncriteria = ["maxprob"]'))
    r, loaded = load_compare_recipe(rec)
    from eebert_cli.model import feature_cache as fc

    passes, real = [], fc.compute_chunk
    fc.compute_chunk = lambda *a, **k: passes.append(a[2]) or real(*a, **k)  # a[2]: the pass plan
    try:
        report = run_compare(r, loaded)
    finally:
        fc.compute_chunk = real
    assert [row["name"] for row in report["methods"]] == list(tables)
    # one training pass, holding what every method reads (tokens for the token-reading heads)
    assert len(passes) == 1 and passes[0].tokens
    assert report["summary"]["1.2"] is not None


def _toml(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def test_resume_keeps_finished_methods_and_runs_the_rest(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    import json

    from eebert_cli.model import feature_cache as fc
    from eebert_cli.recipe import compare as cmp
    from eebert_cli.recipe.compare_report import write

    two = JOINT + '''
[[methods]]
name = "distil"
[methods.attach]
objective = "distil"
train = {epochs = 2}
'''
    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], two)
    r, methods = load_compare_recipe(rec)
    out = tmp_path / "out"
    ran = []
    real = cmp.run_method
    monkeypatch.setattr(cmp, "run_method", lambda recipe, m, *a, **k: (ran.append(m.name), real(recipe, m, *a, **k))[1])

    # --methods joint: runs only joint; the report holds it alone (nothing earlier to keep)
    first = run_compare(r, methods, only=["joint"], on_method=lambda p: write(p, out))
    assert ran == ["joint"] and [m["name"] for m in first["methods"]] == ["joint"]
    write(first, out)
    # --resume: joint is kept as it was, distil runs; rows in recipe order
    ran.clear()
    second = run_compare(r, methods, resume=True, on_method=lambda p: write(p, out))
    assert ran == ["distil"] and [m["name"] for m in second["methods"]] == ["joint", "distil"]
    assert second["methods"][0] == first["methods"][0]
    write(second, out)
    # a partial report written while running keeps the rows it was handed
    assert [m["name"] for m in json.loads((out / "compare.json").read_text())["methods"]] == ["joint", "distil"]
    # nothing left to run: both kept, the report's split figures come from the earlier report
    ran.clear()
    third = run_compare(r, methods, resume=True)
    assert ran == [] and third["methods"] == second["methods"]
    assert third["shared_pass_seconds"] == second["shared_pass_seconds"] > 0  # the pass's time is kept, not lost
    # the figure the report gives for the backbone pass is what the feature cache recorded while computing it,
    # whichever run did: runs that only read the finished cache (the second, the third) add nothing to it
    recorded = fc.recorded_seconds(cmp.feature_folder(r, methods[0].attach))
    assert recorded and first["feature_seconds"] == second["feature_seconds"] == third["feature_seconds"] \
        == pytest.approx(recorded, abs=1e-3)
    assert third["deployed_accuracy"] == second["deployed_accuracy"]
    # any setting that reaches a row changes its key: a resumed run would drop both rows, so it is refused
    # before anything runs, compare.json untouched; with that report moved away, everything runs again
    r.speedups = [1.3]
    kept = (out / "compare.json").read_bytes()
    with pytest.raises(EebertError, match="cannot keep and would drop: joint, distil made with other settings"):
        run_compare(r, methods, resume=True)
    assert ran == [] and (out / "compare.json").read_bytes() == kept
    (out / "compare.json").rename(out / "compare-at-1.2.json")
    fourth = run_compare(r, methods, resume=True)
    assert ran == ["joint", "distil"] and all("1.3" in m["at"] for m in fourth["methods"])
    # an unknown name fails before anything loads, naming the recipe's methods
    with pytest.raises(EebertError, match="choose from: joint, distil"):
        run_compare(r, methods, only=["nope"])


def test_resume_continues_a_method_from_its_next_seed(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    """A run stopped inside a method keeps its finished seeds: --resume reads them back (same key) and
    trains only the seeds without a record; the row equals an uninterrupted run's."""
    import json

    from eebert_cli.recipe import compare as cmp

    rec = _recipe(tmp_path / "c.toml", tiny_ckpt, tiny_data, tmp_path / "out", [1.2], JOINT)
    rec.write_text(rec.read_text().replace('baseline = "joint"', 'baseline = "joint"\nseeds = [0, 1]'))
    r, methods = load_compare_recipe(rec)
    whole = run_compare(r, methods)
    base = Path(whole["methods"][0]["artifact"])
    records = [base / f"seed-{s}" / cmp.SEED_RECORD for s in (0, 1)]
    keys = {json.loads(p.read_text())["key"] for p in records}  # one seed key, not the row's (it lists the seeds)
    assert len(keys) == 1 and whole["methods"][0]["key"] not in keys
    # stopped during seed 1: no row in compare.json, seed 1's record not written yet
    (tmp_path / "out" / "compare.json").unlink(missing_ok=True)
    records[1].unlink()
    trained = []
    real = cmp.steps.attach
    monkeypatch.setattr(cmp.steps, "attach", lambda *a, **k: (trained.append(a[3]), real(*a, **k))[1])
    again = run_compare(r, methods, resume=True)
    assert trained == [base / "seed-1"]  # seed 0 read back, seed 1 trained again
    clock = ("train_seconds", "feature_seconds")  # timings: seed 1 was timed again, on a busy machine or not
    strip = lambda row: {k: v for k, v in row.items() if k not in clock}  # noqa: E731
    assert strip(again["methods"][0]) == strip(whole["methods"][0])  # the same seed, the same figures
    # without --resume (or under another key) every seed runs again
    trained.clear()
    run_compare(r, methods)
    assert trained == [base / "seed-0", base / "seed-1"]
    trained.clear()
    r.speedups = [1.3]
    run_compare(r, methods, resume=True)
    assert trained == [base / "seed-0", base / "seed-1"]


def test_a_seeds_record_serves_any_run_with_the_same_settings(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    """A seed trains and calibrates alike whatever seeds run beside it, so its record is read back by a run
    that lists other seeds: seeds split over two folders (or machines) and brought together give the row
    one run of all of them gives."""
    import shutil

    from eebert_cli.recipe import compare as cmp
    from eebert_cli.recipe.compare_report import write

    def run(out, seeds, resume=False):  # as the CLI runs it: the report written to out/compare.json
        rec = _recipe(tmp_path / f"{out}.toml", tiny_ckpt, tiny_data, tmp_path / out, [1.2], JOINT)
        rec.write_text(rec.read_text().replace('baseline = "joint"', f'baseline = "joint"\nseeds = {seeds}'))
        r, methods = load_compare_recipe(rec)
        report = run_compare(r, methods, resume=resume)
        write(report, tmp_path / out)
        return report

    trained = []
    real = cmp.steps.attach
    monkeypatch.setattr(cmp.steps, "attach", lambda *a, **k: (trained.append(a[3].name), real(*a, **k))[1])
    whole = run("all", [0, 1, 2])
    first = run("a", [0, 1])
    # a study adds a seed in place: the row's key changes (it lists its seeds), yet --resume rebuilds it
    # from the records it has and trains the new seed only; one that would lose a seed is still refused
    trained.clear()
    grown = run("a", [0, 1, 2], resume=True)
    assert trained == ["seed-2"]
    with pytest.raises(EebertError, match="cannot keep and would drop: joint made with other settings"):
        run("a", [0, 2], resume=True)
    assert trained == ["seed-2"]
    # the second folder is given seed 1's finished folder: it trains seed 2 only
    shutil.copytree(tmp_path / "a/artifacts/joint/seed-1", tmp_path / "b/artifacts/joint/seed-1")
    trained.clear()
    second = run("b", [1, 2], resume=True)
    assert trained == ["seed-2"] and second["methods"][0]["seeds"] == [1, 2]
    # the seeds brought together: nothing trains, and the row is the one-run row
    for src in ("a/artifacts/joint/seed-0", "a/artifacts/joint/seed-1", "b/artifacts/joint/seed-2"):
        shutil.copytree(tmp_path / src, tmp_path / "c/artifacts/joint" / Path(src).name)
    trained.clear()
    merged = run("c", [0, 1, 2], resume=True)
    assert trained == []
    drop = ("train_seconds", "feature_seconds", "artifact")  # timings, and where the row's folder is
    strip = lambda row: {k: v for k, v in row.items() if k not in drop}  # noqa: E731
    assert strip(merged["methods"][0]) == strip(whole["methods"][0]) == strip(grown["methods"][0])
    assert first["methods"][0]["key"] != whole["methods"][0]["key"]  # rows still name their seeds


def test_compare_ranks_a_multi_label_model_by_exact_set_accuracy(tmp_path):
    """A multi-label checkpoint runs (it was refused): cells are the exact-set accuracy its calibration adds up
    and its benchmark reports, the tables say so."""
    from conftest import make_multilabel_case
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.recipe.compare_report import figure_names
    from eebert_cli.scoring.outputs import split_outputs

    ckpt, data = make_multilabel_case(tmp_path / "case")
    rec = _recipe(tmp_path / "c.toml", ckpt, data, tmp_path / "out", [1.2], '''[[methods]]
name = "default"
[methods.attach]
train = {epochs = 2}
''').read_text().replace('baseline = "joint"\n', "")
    (tmp_path / "c.toml").write_text(rec)
    r, methods = load_compare_recipe(tmp_path / "c.toml")
    report = run_compare(r, methods)
    assert report["task"] == "multi-label" and report["metric"] == "accuracy"
    assert figure_names(report) == ("exact-set accuracy", "acc") and "exact-set accuracy" in markdown(report)
    row = report["methods"][0]
    assert row["criterion"] == "label-margin"  # the task's own default, as attach/calibrate would pick
    assert row["objective"] == "bce-distil"  # what attach trains for the recipe's default (ce-distil)
    art = load_artifact(row["artifact"])
    out = split_outputs(art, load_data(DataConfig(spec=str(data))), "test")
    exact = out.task.same(out.deployed_pred, out.reference).double().mean().item()
    assert report["deployed_accuracy"] == pytest.approx(exact)
    for layer, acc in row["per_exit_accuracy"].items():  # each exit alone: whole label sets right
        k = art.exits.layers.index(int(layer))
        assert acc == pytest.approx(out.task.same(out.task.answers(out.logits[:, k]), out.reference).double().mean().item())


def test_compare_ranks_a_regressor_by_pearson_against_gold_values(tmp_path):
    """A regressor runs (it was refused): cells are Pearson's r x 100 (no percent sign), which its benchmark
    headlines and validation chooses by, though calibration searches on MSE; each exit alone and the deployed model
    are scored the same way; a lead is given in points, not examples; unlabelled data is refused in one line."""
    import random

    from conftest import make_model, make_rows, write_csv
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.recipe.compare_report import figure_names, summarise, table
    from eebert_cli.scoring.outputs import split_outputs

    ckpt = make_model(tmp_path / "reg", num_labels=1)
    rng, pos, neg = random.Random(0), {"good", "great", "fine", "love", "nice"}, {"bad", "awful", "poor", "hate", "dull"}
    rows = [{"text": r["text"], "label": round(sum(w in pos for w in r["text"].split()) - sum(
        w in neg for w in r["text"].split()) + rng.gauss(0, 0.1), 3)} for r in make_rows(300, seed=5)]
    data = tmp_path / "data"
    data.mkdir()
    for name, part in (("train", rows[:180]), ("validation", rows[180:240]), ("test", rows[240:])):
        write_csv(data / f"{name}.csv", part)
    rec = _recipe(tmp_path / "r.toml", ckpt, data, tmp_path / "out", [1.2],
                  JOINT.replace('objective = "joint"', 'objective = "mse-distil"') + JOINT.replace(
                      'name = "joint"', 'name = "distil"').replace('objective = "joint"', 'objective = "mse-distil"'
                                                                   ).replace("epochs = 2", "epochs = 4"))
    r, methods = load_compare_recipe(rec)
    report = run_compare(r, methods)
    assert report["task"] == "regression" and report["metric"] == "pearson"
    assert figure_names(report) == ("Pearson r x 100", "r")
    row = report["methods"][0]
    art = load_artifact(row["artifact"])
    out = split_outputs(art, load_data(DataConfig(spec=str(data))), "test")
    pearson = lambda pred: out.task.metric_values(pred, out.labels)["pearson"]  # noqa: E731
    assert report["deployed_accuracy"] == pytest.approx(pearson(out.deployed_pred))
    for layer, r_exit in row["per_exit_accuracy"].items():
        assert r_exit == pytest.approx(pearson(out.task.answers(out.logits[:, art.exits.layers.index(int(layer))])))
    cell = row["at"]["1.2"]
    assert cell and -1 <= cell["accuracy"] <= 1 and -1 <= cell["validation_accuracy"] <= 1
    cal = art.calibration
    assert cal.metric == "mse" and cell["validation_accuracy"] == pytest.approx(cal.validation["metrics"]["pearson"])
    best = summarise(report)["1.2"]
    assert best["validation_lead_examples"] is None and best["lead_can_be_significant"] is None
    text = markdown(report)
    assert "pearson x 100" in text and f"{100 * cell['accuracy']:.2f} (" in text and "%)" not in text.split("##")[1]
    assert "deployed " in table(report).title and "%" not in table(report).title

    (data / "validation.csv").write_text("text\n" + "\n".join(r["text"] for r in rows[180:240]) + "\n")
    r, methods = load_compare_recipe(rec)
    with pytest.raises(EebertError, match="compare ranks regression models by Pearson's r against gold values; "
                                          "the validation split"):
        run_compare(r, methods)


def test_a_rows_key_covers_what_it_measures_and_not_the_training_threads():
    import dataclasses

    from eebert_cli.recipe.compare import row_key

    recipe, methods = load_compare_recipe(Path(__file__).resolve().parents[1] / "recipes" / "study-mpnet-r8.toml")
    m = methods[0]
    key = row_key(recipe, m, "sha")
    train = m.attach.train
    for threads in (0, 1, 4):
        other = dataclasses.replace(m, attach=dataclasses.replace(m.attach, train=dataclasses.replace(train, threads=threads)))
        assert row_key(recipe, other, "sha") == key
    more = dataclasses.replace(m, attach=dataclasses.replace(m.attach, train=dataclasses.replace(train, epochs=3)))
    assert row_key(recipe, more, "sha") != key and row_key(recipe, m, "other") != key
    # the calibration search a row was made with: exits switched off or every exit kept
    assert row_key(dataclasses.replace(recipe, prune_exits=False), m, "sha") != key


@pytest.mark.parametrize("prune", [True, False])
def test_a_compare_recipe_calibrates_with_its_prune_exits_setting(monkeypatch, prune):
    import dataclasses

    import eebert_cli.recipe.compare as compare

    recipe, methods = load_compare_recipe(Path(__file__).resolve().parents[1] / "recipes" / "study-mpnet-r8.toml")
    seen = []
    monkeypatch.setattr(compare, "_point", lambda folder, data, cfg, *a: seen.append(cfg) or {"validation_accuracy": 0.5, "accuracy": 0.5, "speedup_flops": 2.0})
    compare._best_point(Path("unused"), None, methods[0], 2.0, dataclasses.replace(recipe, prune_exits=prune), None,
                        None)
    assert seen and all(c.prune_exits is prune and c.target_speedup == 2.0 for c in seen)


def test_a_cell_keeps_the_criterion_best_on_validation_whatever_test_says(monkeypatch):
    """Each criterion is calibrated at the target; the cell keeps the one with the best validation accuracy
    (here not the method's own, and the worst on test), re-calibrated last so the artifact holds it."""
    import dataclasses

    import eebert_cli.recipe.compare as compare

    recipe, methods = load_compare_recipe(Path(__file__).resolve().parents[1] / "recipes" / "study-mpnet-r8.toml")
    recipe = dataclasses.replace(recipe, criteria=["maxprob", "patience"])
    m = dataclasses.replace(methods[0], criterion="entropy", criterion_params={})
    figures = {"entropy": (0.80, 0.90), "maxprob": (0.85, 0.70), "patience": (0.82, 0.95)}  # validation, test
    calls = []

    def point(folder, data, cfg, *a):
        calls.append(cfg.criterion)
        val, test = figures[cfg.criterion]
        return {"validation_accuracy": val, "accuracy": test, "speedup_flops": 2.0, "criterion": cfg.criterion}

    monkeypatch.setattr(compare, "_point", point)
    got = compare._best_point(Path("unused"), None, m, 2.0, recipe, None, None)
    assert got["criterion"] == "maxprob" and got["accuracy"] == 0.70
    assert calls == ["entropy", "maxprob", "patience", "maxprob"]  # the pick calibrated again, last
    assert {n: t["validation_accuracy"] for n, t in got["criteria_tried"].items()} == {n: v for n, (v, _) in
                                                                                         figures.items()}


def test_a_resumed_run_names_why_it_cannot_keep_a_row(tmp_path):
    """The refusal says what changed where the report can tell: other weights, another eebert, other settings,
    a method gone from the recipe; rows it can keep pass."""
    from eebert_cli import __version__
    from eebert_cli.recipe.compare import _refuse_dropping_rows

    keys = {"joint": "k1", "distil": "k2"}
    report = lambda sha=None, version=None, **rows: {  # noqa: E731
        "checkpoint_sha256": sha, "eebert": version, "methods": [{"name": n, "key": k} for n, k in rows.items()]}
    _refuse_dropping_rows({}, keys, "aa", tmp_path)  # nothing earlier
    _refuse_dropping_rows(report("aa", __version__, joint="k1"), keys, "aa", tmp_path)  # a row it keeps
    cases = [(report("bb", __version__, joint="x"), "joint made from other weights"),
             (report("aa", "0.0.1", joint="x"), "joint made by eebert 0.0.1"),
             (report("aa", __version__, joint="k1", distil="x"), "distil made with other settings"),
             (report(None, None, distil="x"), "distil made with other weights, settings or eebert version"),
             (report("aa", __version__, joint="k1", old="k9"), "old not in this recipe")]
    for before, why in cases:
        with pytest.raises(EebertError) as e:
            _refuse_dropping_rows(before, keys, "aa", tmp_path)
        assert why in e.value.message and "another --out" in e.value.hint
