"""The CLI end to end on a tiny model, and one test per known bad input (one line, exit 1, no traceback)."""

import json

import pytest
import torch
from transformers import BertConfig, BertModel
from typer.testing import CliRunner

from eebert_cli.cli import app
from eebert_cli.core.errors import EebertError

from conftest import make_rows, make_tokenizer, write_csv

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    text = result.output
    assert "Traceback" not in text
    first = [l for l in text.splitlines() if l.startswith("error:")]
    assert len(first) == 1, text
    for n in needles:
        assert n in text, text


@pytest.fixture(scope="module")
def artifact(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "art"
    r = run("attach", tiny_ckpt, "--data", tiny_data, "--out", out, "--epochs", 20, "--lr", 3e-3, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["exits"]["layers"] == [1, 2, 3]
    r = run("calibrate", out, "--target-speedup", 1.4, "--json")
    assert r.exit_code == 0, r.output
    return out


def test_benchmark_writes_the_report_with_the_promised_keys(artifact):
    r = run("benchmark", artifact, "--timing-samples", 10, "--repeats", 1, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads((artifact / "report.json").read_text())
    for key in ("target_speedup", "criterion"):
        assert key in rep
    for section, key in [("deployed", "accuracy"), ("early_exit", "accuracy"), ("early_exit", "agreement"),
                         ("early_exit", "speedup_flops"), ("early_exit", "speedup_measured"),
                         ("early_exit", "exit_histogram"), ("static_truncation", "accuracy"),
                         ("oracle", "speedup_flops")]:
        assert rep[section][key] is not None, (section, key)
    assert sum(rep["early_exit"]["exit_histogram"].values()) == rep["examples"] == 80
    assert rep["early_exit"]["speedup_flops"] >= 1.4 * 0.8  # calibrated on validation, measured on test
    assert (artifact / "report.md").read_text().startswith("# eebert report")
    host = rep["timing"]["machine"]  # what the wall clock was measured on, in the report and its markdown
    assert host["cpu"] and host["cpus"] >= 1 and host["torch"] == torch.__version__
    assert f"Timed on {host['cpu']}" in (artifact / "report.md").read_text()


@pytest.mark.parametrize("split,seen", [("validation", "the thresholds were chosen on it"),
                                        ("train", "the exits were trained on it"), ("test", None)])
def test_a_benchmark_on_a_split_eebert_fitted_on_says_so(artifact, tmp_path, split, seen):
    """Allowed (a check against the validation estimate), never to be read as a result: report.json,
    report.md and the console say which split it is and why its figures flatter early exit."""
    import shutil

    art = tmp_path / "a"
    shutil.copytree(artifact, art)  # the module's artifact keeps its test-split report
    r = run("benchmark", art, "--split", split, "--repeats", 0)
    assert r.exit_code == 0, r.output
    rep = json.loads((art / "report.json").read_text())
    md = (art / "report.md").read_text()
    if seen is None:
        assert "split_warning" not in rep and "Warning (split)" not in md and "flatter" not in r.output
        return
    assert rep["split"] == split and seen in rep["split_warning"] and "the test split is the one" in rep["split_warning"]
    assert f"**Warning (split):** benchmarked on the {split} split, {seen}" in md
    assert f"warning: benchmarked on the {split} split" in r.output


def test_predict_texts_and_jsonl(artifact, tmp_path):
    r = run("predict", artifact, "good great movie", "awful dull plot", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [set(x) for x in rows] == [{"text", "label", "exit_layer", "probs"}] * 2
    assert all(x["label"] in ("negative", "positive") and 1 <= x["exit_layer"] <= 4 for x in rows)
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(json.dumps({"text": t}) for t in ["nice film", "poor acting", "the plot"]))
    r = run("predict", artifact, "--input", f, "--batch-size", 2, "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 3


def test_list_names_every_registry():
    """Every registry a flag or a recipe names by string, whole, in JSON and on the console."""
    from eebert_cli.backbones import BACKBONES
    from eebert_cli.criteria import CRITERIA
    from eebert_cli.deploy.executors import EXECUTORS
    from eebert_cli.deploy.runtimes import RUNTIMES
    from eebert_cli.exits import EXITS
    from eebert_cli.gates import GATES
    from eebert_cli.objectives import OBJECTIVES
    from eebert_cli.tasks import TASKS

    r = run("list", "--json")
    d = json.loads(r.stdout)
    registries = {"exits": EXITS, "criteria": CRITERIA, "objectives": OBJECTIVES, "gates": GATES,
                  "backbones": BACKBONES, "tasks": TASKS, "runtimes": RUNTIMES, "executors": EXECUTORS}
    assert set(d) == set(registries)
    for kind, reg in registries.items():
        assert set(d[kind]) == set(reg.names()) and reg.names(), kind
    assert {"mean-mlp", "linear", "pooler-mlp"} <= set(d["exits"]) and {"local", "ray"} <= set(d["executors"])
    assert d["gates"]["smartbert"]["params"]["source"] == "cls"
    assert all(v["about"] for kind in ("tasks", "runtimes", "executors") for v in d[kind].values())
    shown = run("list").output
    for kind, reg in registries.items():
        names = [t for n in reg.names() for t in BACKBONES.get(n).model_types] if kind == "backbones" else reg.names()
        assert all(n in shown for n in names), kind
    assert "dropout=0.1 in [0.0, 1.0)" in shown and "search_epochs=3 (>= 1)" in shown


def test_the_ranges_eebert_list_shows_are_the_ones_refused():
    """Each range `eebert list --json` gives a component parameter is what its registry enforces: a value just
    outside it is refused, naming the parameter and that range."""
    from eebert_cli.core.errors import EebertError
    from eebert_cli.criteria import CRITERIA
    from eebert_cli.exits import EXITS
    from eebert_cli.gates import GATES
    from eebert_cli.objectives import OBJECTIVES

    d = json.loads(run("list", "--json").stdout)
    checked = 0
    for kind, reg, positional in (("exits", EXITS, 1), ("criteria", CRITERIA, 0), ("objectives", OBJECTIVES, 0),
                                  ("gates", GATES, 2)):
        for name, info in d[kind].items():
            for key, said in info["ranges"].items():
                lo, hi, lo_open, hi_open = reg.bounds_of(name, positional)[key]
                outside = lo - (0 if lo_open else 1) if lo is not None else hi + (0 if hi_open else 1)
                with pytest.raises(EebertError) as e:
                    reg.check(name, {key: outside}, positional)
                assert f"parameter {key!r} must be {said}, got {outside}" in e.value.message, (kind, name, key)
                checked += 1
    assert checked >= 20


def test_every_command_is_registered_and_its_help_survives_rich_markup():
    """`--help` renders help text as rich markup, which silently drops a "[word]"; one module per command."""
    import inspect

    import typer.main
    from rich.text import Text

    from eebert_cli.cli import COMMANDS

    group = typer.main.get_command(app)
    assert set(group.commands) == set(COMMANDS)
    for name, cmd in group.commands.items():
        assert cmd.callback.__module__ == f"eebert_cli.cli.{'components' if name == 'list' else name}", name
        for text in [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]:
            text = inspect.cleandoc(text)
            assert Text.from_markup(text).plain == text, f"{name}: {text}"
    assert "expectations" in run("run", "--help").output


def test_a_flags_help_states_the_range_its_refusal_enforces():
    from eebert_cli.core.configs import help_for
    from eebert_cli.deploy.serve.config import ServeConfig
    from eebert_cli.train.config import TrainConfig

    assert help_for(ServeConfig, "threads").endswith("event loop). Range: [0, 1024].")
    assert help_for(ServeConfig, "max_batch").endswith("Range: >= 1.")
    assert help_for(TrainConfig, "lr").endswith("Range: above 0.0.")
    assert "Range" not in help_for(ServeConfig, "host")  # no range declared, none said
    with pytest.raises(EebertError, match=r"--threads must be within \[0, 1024\], got 1025"):
        ServeConfig(threads=1025).check()


# --- bad input: each one line, non-zero exit, no traceback --------------------------------------


def test_checkpoint_path_missing(tiny_data, tmp_path):
    assert_one_line_error(run("attach", tmp_path / "nope", "--data", tiny_data, "--out", tmp_path / "a"),
                          "checkpoint not found")


def test_checkpoint_that_is_not_a_sequence_classifier(tiny_data, tmp_path):
    d = tmp_path / "encoder"
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertModel(cfg).save_pretrained(d)
    make_tokenizer(d).save_pretrained(d)
    assert_one_line_error(run("attach", d, "--data", tiny_data, "--out", tmp_path / "a"),
                          "not a sequence or token classifier", "BertModel")


def test_data_file_missing(tiny_ckpt, artifact, tmp_path, monkeypatch):
    """Refused before the checkpoint or the artifact loads: no file, corpus or dataset id by that name."""
    import eebert_cli.steps as steps
    import eebert_cli.train.attach as train_attach

    monkeypatch.setattr(train_attach, "load_deployed", lambda *a, **k: pytest.fail("the checkpoint loaded first"))
    monkeypatch.setattr(steps, "load_artifact", lambda *a, **k: pytest.fail("the artifact loaded first"))
    monkeypatch.setattr(steps.EarlyExitModel, "from_artifact", lambda *a, **k: pytest.fail("the model loaded first"))
    missing = tmp_path / "none.csv"
    for args in (["attach", tiny_ckpt, "--data", missing, "--out", tmp_path / "a"],
                 ["calibrate", artifact, "--data", missing, "--target-speedup", 1.4],
                 ["benchmark", artifact, "--data", missing]):
        assert_one_line_error(run(*args), f"data not found: {missing}")
    assert not (tmp_path / "a").exists()


def test_data_without_the_named_columns(tiny_ckpt, artifact, tmp_path, monkeypatch):
    """Refused before the checkpoint or the artifact loads, the data given or the artifact's own."""
    import eebert_cli.steps as steps
    import eebert_cli.train.attach as train_attach

    monkeypatch.setattr(train_attach, "load_deployed", lambda *a, **k: pytest.fail("the checkpoint loaded first"))
    monkeypatch.setattr(steps, "load_artifact", lambda *a, **k: pytest.fail("the artifact loaded first"))
    monkeypatch.setattr(steps.EarlyExitModel, "from_artifact", lambda *a, **k: pytest.fail("the model loaded first"))
    f = write_csv(tmp_path / "d.csv", make_rows(50))
    for args in (["attach", tiny_ckpt, "--data", f, "--out", tmp_path / "a"],
                 ["calibrate", artifact, "--data", f, "--target-speedup", 1.4],
                 ["calibrate", artifact, "--target-speedup", 1.4],  # the data the artifact records
                 ["benchmark", artifact, "--data", f],
                 ["benchmark", artifact]):
        assert_one_line_error(run(*args, "--text-column", "review"), "no text column 'review'")
    assert not (tmp_path / "a").exists()


def test_labels_the_model_does_not_know(tiny_ckpt, tmp_path):
    rows = [dict(r, label="meh" if i == 3 else r["label"]) for i, r in enumerate(make_rows(50))]
    f = write_csv(tmp_path / "d.csv", rows)
    assert_one_line_error(run("attach", tiny_ckpt, "--data", f, "--out", tmp_path / "a"),
                          "label 'meh'", "negative")


def test_target_speedup_not_above_one(artifact):
    assert_one_line_error(run("calibrate", artifact, "--target-speedup", 1.0), "must be above 1.0")


def test_unreachable_target_names_the_highest_reachable(artifact):
    # 4 layers, first exit after layer 1: 4.5x passes the quick bound (5x), and the search says what it reached
    assert_one_line_error(run("calibrate", artifact, "--target-speedup", 4.5), "unreachable", "highest reachable")


def test_artifact_whose_backbone_hash_does_not_match(artifact, tiny_ckpt, tmp_path):
    from conftest import make_bert

    other = make_bert(tmp_path / "other", seed=1)
    assert_one_line_error(run("benchmark", artifact, "--backbone", other), "do not match")


def test_not_an_artifact(tmp_path):
    assert_one_line_error(run("predict", tmp_path, "hello"), "not an eebert artifact")


@pytest.mark.parametrize("as_json", [True, False])
def test_a_refusal_under_json_is_also_one_object_on_stdout(artifact, tmp_path, as_json):
    """A script reading --json's stdout gets an answer when the command fails; without --json stdout stays empty."""
    flag = ["--json"] if as_json else []
    for r in (run("calibrate", artifact, "--target-speedup", "0.5", *flag),  # the flag checks
              run("predict", tmp_path, "hello", *flag),  # the step's own refusal (not an artifact)
              run("run", tmp_path / "nope.toml", *flag)):
        assert_one_line_error(r)
        if not as_json:
            assert r.stdout == ""
            continue
        answer = json.loads(r.stdout)
        assert set(answer) == {"error", "hint", "exit_code"} and answer["exit_code"] == 1
        assert f"error: {answer['error']}" in r.output.splitlines()  # the same line as on stderr


def test_debug_switch_shows_the_traceback(tmp_path, monkeypatch):
    r = run("predict", tmp_path, "hello")  # one line: the error ends in a plain exit
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    monkeypatch.setenv("EEBERT_DEBUG", "1")
    r = run("predict", tmp_path, "hello")  # the error itself propagates, with its traceback
    assert r.exit_code != 0 and isinstance(r.exception, EebertError) and "not an eebert artifact" in str(r.exception)


def test_an_internal_error_is_one_line_unless_debugging(artifact, monkeypatch):
    from eebert_cli import steps

    def broken(*a, **k):
        raise KeyError("speedup_ci95")

    monkeypatch.setattr(steps, "calibrate", broken)
    r = run("calibrate", artifact, "--target-speedup", 1.4)
    assert_one_line_error(r, "internal error (KeyError", "EEBERT_DEBUG=1")
    monkeypatch.setenv("EEBERT_DEBUG", "1")
    r = run("calibrate", artifact, "--target-speedup", 1.4)
    assert r.exit_code != 0 and isinstance(r.exception, KeyError)


def test_remote_code_stays_off_unless_asked(monkeypatch):
    import os

    from eebert_cli.model.checkpoint import TRUST_REMOTE_CODE_ENV

    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    assert run("list", "--json").exit_code == 0 and TRUST_REMOTE_CODE_ENV not in os.environ
    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "0")  # restored after the test: the flag sets it in-process
    assert run("--trust-remote-code", "list", "--json").exit_code == 0 and os.environ[TRUST_REMOTE_CODE_ENV] == "1"


def test_unknown_criterion_fails_before_any_backbone_work(artifact, monkeypatch):
    from eebert_cli import steps

    def no_pass(*a, **k):
        raise AssertionError("the backbone ran before the criterion name was checked")

    monkeypatch.setattr(steps, "split_outputs", no_pass)
    # the guard stands on calibrate's path: a known criterion reaches it
    assert "the backbone ran before" in run("calibrate", artifact, "--target-speedup", 1.5, "--criterion",
                                            "entropy").output
    assert_one_line_error(run("calibrate", artifact, "--target-speedup", 1.5, "--criterion", "nope"),
                          "unknown exit criterion 'nope'", "entropy")


def test_a_target_no_exit_can_reach_fails_before_any_backbone_work(artifact, monkeypatch):
    from eebert_cli import steps

    monkeypatch.setattr(steps, "split_outputs", lambda *a, **k: pytest.fail("the backbone ran first"))
    before = (artifact / "calibration.json").read_bytes()
    assert_one_line_error(run("calibrate", artifact, "--target-speedup", 1000), "target speedup 1000x is out of reach",
                          "attach an exit after an earlier layer")
    assert (artifact / "calibration.json").read_bytes() == before


def test_compare_on_a_pipeline_recipe_says_to_run_it():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    assert_one_line_error(run("compare", recipe), "quickstart.toml is a pipeline recipe", "run it with `eebert run`")


def test_compare_methods_flag_refuses_names_the_recipe_lacks(tiny_ckpt, tiny_data, tmp_path):
    rec = tmp_path / "c.toml"
    rec.write_text(f'version = 1\nkind = "compare"\ncheckpoint = "{tiny_ckpt}"\nout = "{tmp_path / "out"}"\n'
                   f'speedups = [1.2]\nmax_length = 32\n[data]\nspec = "{tiny_data}"\n'
                   '[[methods]]\nname = "joint"\n[methods.attach]\nobjective = "joint"\n')
    assert_one_line_error(run("compare", rec, "--methods", "joint,nope"), "no method named 'nope'", "choose from: joint")
    assert_one_line_error(run("compare", rec, "--methods", " , "), "--methods names no method")
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_compare_runs_its_recipe_on_another_checkpoint_into_another_folder(tiny_ckpt, tiny_data, tmp_path):
    import json

    rec = tmp_path / "c.toml"  # the recipe's own checkpoint is not there: the flags replace it before any check
    rec.write_text(f'version = 1\nkind = "compare"\ncheckpoint = "{tmp_path / "gone"}"\nout = "{tmp_path / "out"}"\n'
                   f'speedups = [1.2]\nmax_length = 32\n[data]\nspec = "{tiny_data}"\n'
                   '[[methods]]\nname = "joint"\n[methods.attach]\nobjective = "joint"\ntrain = {epochs = 1}\n')
    assert_one_line_error(run("compare", rec, "--checkpoint", tiny_ckpt), "--checkpoint without --out", "--out DIR")
    res = run("compare", rec, "--checkpoint", tiny_ckpt, "--out", tmp_path / "other", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "other" / "compare.json").read_text())
    assert report["checkpoint"] == str(tiny_ckpt) and [m["name"] for m in report["methods"]] == ["joint"]
    assert report["methods"][0]["artifact"].startswith(str(tmp_path / "other"))
    assert not (tmp_path / "out").exists()


def test_a_refusal_under_a_recipe_names_the_recipe_key_of_each_flag():
    """`run`, `compare` and `validate` take settings from recipe keys; the steps' refusals name flags. The hint
    gets each flag's key, from the options' own field declarations (a flag the command has needs none)."""
    from eebert_cli.cli.shared import in_recipe_terms
    from eebert_cli.recipe import Recipe
    from eebert_cli.recipe.compare import CompareRecipe

    e = EebertError("no threshold reaches 4.5x", "ask for a lower --target-speedup, or --split-map validation=dev")
    got = in_recipe_terms(e, Recipe, ("--device",))
    assert got.message == e.message
    assert got.hint == (e.hint + " (in the recipe: --target-speedup is calibrate.target_speedup; "
                        "--split-map is data.split_map)")
    both = in_recipe_terms(EebertError("x", "drop --runtime"), Recipe, ())
    assert both.hint == "drop --runtime (in the recipe: --runtime is benchmark.runtime or calibrate.runtime)"
    assert in_recipe_terms(EebertError("x", "drop --device"), Recipe, ("--device",)).hint == "drop --device"
    assert in_recipe_terms(e, CompareRecipe, ()).hint.endswith("(in the recipe: --split-map is data.split_map)")
    # attach's --out writes what a recipe names `artifact` (a refusal of a folder inside the checkpoint says --out)
    assert in_recipe_terms(EebertError("x", "e.g. --out m-eebert"), Recipe, ()).hint.endswith("--out is artifact)")
