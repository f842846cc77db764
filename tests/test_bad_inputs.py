"""Every bad flag, recipe value and component parameter is answered with one line and exit 1.

A table of the bad inputs named in issue 11 (flags, recipes, components) with the line
each gets, plus property tests (hypothesis) over the recipe parser and the flags:
whatever is thrown at them, the answer is an EebertError / exit 1 with one line,
never a traceback. docs/reliability.md ("Flags, recipes and components") lists the table.
"""

import json
import math
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from eebert_cli.cli import app
from eebert_cli.core.errors import EebertError
from eebert_cli.recipe import load_recipe

from conftest import make_rows, write_csv

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (TypeError, KeyError, AttributeError))
    errors = [l for l in result.output.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, result.output
    return result.output


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def recipe_text(ckpt, data, art, sections: dict) -> str:
    base = {"data": {"spec": str(data)}, "attach": {"layers": [1, 2]}, "attach.train": {"epochs": 1},
            "calibrate": {"target_speedup": 1.3}, "benchmark": {"repeats": 0}}
    for k, v in sections.items():  # one table each: a [data] given twice would be a TOML error, not the case
        base[k] = {**base.get(k, {}), **v}
    text = f'version = 1\ncheckpoint = "{ckpt}"\nartifact = "{art}"\n'
    for name, values in base.items():
        text += f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    return text


@pytest.fixture(scope="module")
def art(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad") / "art"
    r = invoke("attach", tiny_ckpt, "--data", tiny_data, "--out", out, "--epochs", 1, "--layers", "1,2")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def small_validation(tmp_path_factory):
    """Data dirs whose validation split has 1 row (refused) and 30 rows (warned)."""
    root = tmp_path_factory.mktemp("smallval")
    rows = make_rows(160, seed=9)
    out = {}
    for n in (1, 30):
        d = root / f"val{n}"
        d.mkdir()
        write_csv(d / "train.csv", rows[:100])
        write_csv(d / "validation.csv", rows[100:100 + n])
        write_csv(d / "test.csv", rows[130:])
        out[n] = d
    return out


# (case, how to call, expected text in the one line, exit code). ``{ckpt}``/``{data}``/``{art}``/``{tmp}``
# are filled in; ``recipe:`` rows write a recipe with those sections and `eebert run` it.
CASES = [
    ("typo in --exit-param", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o", "--exit-param", "widht=64"],
     "unknown parameter 'widht' for exit head 'mean-mlp'", "did you mean 'width'"),
    ("exit param of the wrong type", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o",
                                      "--exits", "conv", "--exit-param", "kernel=wide"], "parameter 'kernel'", "give a whole number"),
    ("typo in a recipe's exit_params", "recipe:" + json.dumps({"attach": {"exit_params": {"dropuot": 0.1}}}),
     "unknown parameter 'dropuot'", "did you mean 'dropout'"),
    ("unknown exit head", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o", "--exits", "mean-mpl"],
     "unknown exit head 'mean-mpl'", "did you mean 'mean-mlp'"),
    ("--epochs 0", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o", "--epochs", "0"],
     "--epochs must be >= 1, got 0", "for example 30 (the default)"),
    ("--lr nan", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o", "--lr", "nan"],
     "--lr: must be a finite number", ""),
    ("threads past any host (the tokenizers' pool panicked at 100,000)",
     "recipe:" + json.dumps({"benchmark": {"threads": 100000}}), "benchmark.threads must be within [0, 1024]", ""),
    ("--max-length 0 (no longer 'no truncation')", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o",
                                                    "--max-length", "0"], "--max-length must be >= 2, got 0", ""),
    ("--max-length above the model's positions", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o",
                                                  "--max-length", "512"], "max_length must be within 2..64, got 512",
     "positions for 64 tokens"),
    ("gate knob out of range", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o", "--gates", "smartbert",
                                "--gate-param", "skip_target=1.5"], "--gate-param.skip_target must be within [0.0, 1.0], got 1.5", "for example 0.25 (the default)"),
    ("--skip-target out of range, named as its flag", ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o",
                                                      "--gates", "smartbert", "--skip-target", "2"],
     "--skip-target must be within [0.0, 1.0], got 2", "for example 0.25 (the default)"),
    ("--lr 0: its default, not a value near the bound, as the example", ["attach", "{ckpt}", "--data", "{data}",
                                                                         "--out", "{tmp}/o", "--lr", "0"],
     "--lr must be above 0.0, got 0", "for example 0.004 (the default)"),
    ("predict --batch-size 0", ["predict", "{art}", "good", "--batch-size", "0"], "--batch-size must be >= 1, got 0", "for example --batch-size 32"),
    ("export --quantize int4", ["export", "{art}", "--quantize", "int4"], "unknown quantization 'int4'",
     "choose one of int8"),
    ("benchmark --repeats -1", ["benchmark", "{art}", "--repeats", "-1"], "--repeats must be >= 0, got -1", "for example 5 (the default)"),
    ("benchmark on an unknown split", ["benchmark", "{art}", "--split", "dev"], "--split: unknown value 'dev'",
     "known: test, train, validation"),
    ("calibrate --target-speedup 1.0", ["calibrate", "{art}", "--target-speedup", "1.0"],
     "--target-speedup must be above 1.0, got 1.0", "for example 2.0"),
    ("calibrate --max-drop 200", ["calibrate", "{art}", "--max-drop", "200"], "--max-drop must be within [0.0, 100.0], got 200.0",
     "for example 1.0 (accuracy points)"),
    ("calibrate --max-drop nan", ["calibrate", "{art}", "--max-drop", "nan"], "--max-drop: must be a finite number", ""),
    ("criterion param out of range", ["calibrate", "{art}", "--target-speedup", "1.5", "--criterion", "pcee",
                                      "--criterion-param", "confidence=2"], "within (0.0, 1.0], got 2", "for example 0.3 (the default)"),
    ("recipe: a target past the exits' reach, refused before attach", "recipe:" + json.dumps({"calibrate": {"target_speedup": 50.0}}),
     "target speedup 50x is out of reach: with the first exit after layer 1 of", "ask for less"),
    ("recipe: unknown runtime", "recipe:" + json.dumps({"benchmark": {"runtime": "onnx"}}),
     "benchmark.runtime: unknown value 'onnx'", "did you mean 'onnxruntime'"),
    ("recipe: unknown runtime, old key", "recipe:" + json.dumps({"benchmark": {"engine": "onnx"}}),
     "benchmark.runtime: unknown value 'onnx'", "did you mean 'onnxruntime'"),
    ("recipe: unknown metric", "recipe:" + json.dumps({"benchmark": {"metric": "f1"}}),
     "benchmark.metric: unknown value 'f1'", "macro-f1"),
    ("recipe: unknown metric (the hint lists names, not the empty default)",
     "recipe:" + json.dumps({"benchmark": {"metric": "bogus"}}), "benchmark.metric: unknown value 'bogus'",
     "known: accuracy, entity-f1"),
    ("recipe: unknown split", "recipe:" + json.dumps({"benchmark": {"split": "dev"}}),
     "benchmark.split: unknown value 'dev'", ""),
    ("recipe: NaN target", "recipe:" + json.dumps({"calibrate": {"target_speedup": "NAN"}}),
     "calibrate.target_speedup: must be a finite number", ""),
    ("recipe: unknown [expect] key", "recipe:" + json.dumps({"expect": {"min_speedup": 2.0}}),
     "unknown key 'min_speedup'", "did you mean"),
    ("recipe: an empty column name (it named nothing, and passed `eebert validate`)",
     "recipe:" + json.dumps({"data": {"text_column": " "}}), "data.text_column is empty", "for example text (the default)"),
    ("a field named as its own flag (--gate-threshold, not the field's --gate-thresholds)",
     ["calibrate", "{art}", "--target-speedup", "1.5", "--gate-threshold", "1.5"], "--gate-threshold must be", ""),
    ("--data-config '' (named --config, the recipe flag)", ["benchmark", "{art}", "--data-config", ""],
     "--data-config is empty", ""),
    ("--label-column ''", ["calibrate", "{art}", "--target-speedup", "1.5", "--label-column", ""],
     "--label-column is empty", "for example label (the default)"),
    ("recipe: --unlabeled without --max-drop, refused before attach (it came after attach had trained)",
     "recipe:" + json.dumps({"calibrate": {"unlabeled": "traffic.csv"}}), "--unlabeled bounds an accuracy budget",
     "(in the recipe: --unlabeled is calibrate.unlabeled; --max-drop is calibrate.max_drop)"),
    ("recipe: flags made by hand (an inverted bool) name their recipe keys too",
     "recipe:" + json.dumps({"calibrate": {"prune_within_noise": True, "prune_exits": False}}),
     "--prune-within-noise switches exits off: --keep-exits keeps them all",
     "(in the recipe: --prune-within-noise is calibrate.prune_within_noise; --keep-exits is calibrate.prune_exits)"),
    ("recipe: benchmark.onnx_dir without the onnxruntime runtime, refused before attach (it came at benchmark)",
     "recipe:" + json.dumps({"benchmark": {"onnx_dir": "graphs"}}),
     "--onnx names the export --runtime onnxruntime runs, not --runtime pytorch",
     "(in the recipe: --onnx is benchmark.onnx_dir; --runtime is benchmark.runtime or calibrate.runtime)"),
    ("recipe: an expected FLOPs speedup no calibration passes (every run failed CI with exit 3 after the work)",
     "recipe:" + json.dumps({"expect": {"min_flops_speedup": 9}}), "expect.min_flops_speedup 9x is out of reach",
     "attach an exit after an earlier layer"),
    ("recipe: a wall-clock speedup expected of an untimed benchmark (never measured: every run failed)",
     "recipe:" + json.dumps({"expect": {"min_measured_speedup": 1.2}, "benchmark": {"repeats": 0}}),
     "expect.min_measured_speedup needs a timed benchmark; benchmark.repeats is 0", "set benchmark.repeats"),
    ("recipe: latency_runtime without cost latency, refused before attach",
     "recipe:" + json.dumps({"calibrate": {"latency_runtime": "pytorch"}}), "--latency-runtime names the loop", ""),
    ("recipe: a per-token criterion, which `run` could never calibrate",
     "recipe:" + json.dumps({"calibrate": {"criterion": "token-maxprob"}}), "is a per-token exit, chosen by",
     "then run calibrate --token-exit"),
    ("hint with [brackets] prints in full", "recipe:" + json.dumps({"attach": {"layers": 3}}),
     "attach.layers: expected a list, got 3", "write it as [a, b, ...]"),
]


def _fill(x, **kw):
    return x.format(**kw) if isinstance(x, str) else x


@pytest.mark.parametrize("case,call,line,hint", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_its_one_line(case, call, line, hint, tiny_ckpt, tiny_data, art, tmp_path):
    kw = dict(ckpt=tiny_ckpt, data=tiny_data, art=art, tmp=tmp_path)
    before = sorted(p.name for p in art.iterdir())
    if isinstance(call, str):  # a recipe: `eebert run` must refuse it before anything runs
        sections = json.loads(call[len("recipe:"):])
        text = recipe_text(tiny_ckpt, tiny_data, tmp_path / "new-art", sections).replace('"NAN"', "nan")
        f = tmp_path / "r.toml"
        f.write_text(text)
        checked = one_line_error(invoke("validate", f))  # `eebert validate` refuses what `run` would
        assert line in checked and hint in checked
        result = invoke("run", f)
        assert not (tmp_path / "new-art").exists()  # nothing written: refused before attach
    else:
        result = invoke(*[_fill(a, **kw) for a in call])
    output = one_line_error(result)
    assert line in output and hint in output
    assert sorted(p.name for p in art.iterdir()) == before
    assert not (tmp_path / "o").exists()


def test_a_bad_recipe_never_replaces_an_old_artifact(tiny_ckpt, tiny_data, art, tmp_path):
    """The whole recipe is checked before attach: the artifact a bad recipe names is left as it was."""
    old = tmp_path / "old"
    shutil.copytree(art, old)
    stamp = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    f = tmp_path / "r.toml"
    f.write_text(recipe_text(tiny_ckpt, tiny_data, old, {"benchmark": {"engine": "tensorrt"}}))
    one_line_error(invoke("run", f))
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == stamp


def test_one_validation_row_is_refused_and_thirty_are_warned_about(art, small_validation):
    r = invoke("calibrate", art, "--target-speedup", 1.3, "--data", small_validation[1])
    assert "has 1 examples; calibration needs at least 10" in one_line_error(r)
    r = invoke("calibrate", art, "--target-speedup", 1.3, "--data", small_validation[30], "--json")
    assert r.exit_code == 0, r.output
    assert any("only 30 examples" in w for w in json.loads(r.stdout)["warnings"])


# --- property tests -----------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-3, 30), max_size=3))
KEYS = {
    "attach": ["exits", "layers", "objective", "max_length", "batch_size", "use_labels", "exit_params", "typo"],
    "attach.train": ["epochs", "lr", "batch_size", "holdout", "patience", "contrastive", "seed"],
    "calibrate": ["criterion", "target_speedup", "max_drop", "bootstrap", "tolerance", "gate_thresholds"],
    "benchmark": ["split", "timing_samples", "repeats", "threads", "runtime", "metric"],
    "expect": ["min_flops_speedup", "max_accuracy_drop", "min_agreement", "max_speedup_gap"],
    "data": ["max_samples", "text_column"],
}


@st.composite
def recipes(draw):
    out = {}
    for section, keys in KEYS.items():
        chosen = draw(st.lists(st.sampled_from(keys), max_size=3, unique=True))
        vals = {k: draw(SCALARS) for k in chosen}
        out[section] = {k: v for k, v in vals.items() if v is not None}
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sections=recipes())
def test_recipe_parser_answers_anything_with_a_recipe_or_one_eebert_error(sections, tmp_path_factory):
    d = tmp_path_factory.mktemp("prop")
    f = d / "r.toml"
    f.write_text(recipe_text("no-such-ckpt", "rotten-tomatoes", d / "art", sections))
    try:
        load_recipe(f)
    except EebertError as e:
        assert e.message and "\n" not in e.message


FLAGS = {"--epochs": st.integers(-5, 5), "--lr": st.floats(allow_nan=True, allow_infinity=True),
         "--max-length": st.integers(-5, 10**5), "--skip-target": st.floats(-2, 2),
         "--layers": st.text(alphabet="0123456789,-x ", max_size=6),
         "--exit-param": st.sampled_from(["width=0", "width=-3", "dropout=1", "dropout=nan", "x=1", "width=wide"]),
         "--objective-param": st.sampled_from(["alpha=2", "temperature=0", "alpha=0.5", "weighting=pabe"])}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.dictionaries(st.sampled_from(sorted(FLAGS)), st.none(), min_size=1, max_size=4).flatmap(
    lambda d: st.fixed_dictionaries({k: FLAGS[k] for k in d})))
def test_attach_flags_answer_anything_with_one_line(flags, tmp_path_factory):
    """Any flag values on a checkpoint that does not exist: exit 1 and one line (the flags' error or 'not found')."""
    d = tmp_path_factory.mktemp("flags")
    args = ["attach", d / "no-such-checkpoint", "--data", d / "no-data", "--out", d / "out"]
    for k, v in flags.items():
        args += [k, str(v)]
    r = invoke(*args)
    if r.exit_code == 2:  # typer's own parse error for a value that is not a number: a usage line, no traceback
        assert "Traceback" not in r.output and "Invalid value" in r.output
        return
    one_line_error(r)
    assert not (d / "out").exists()


OTHER_FLAGS = {
    "calibrate": {"--target-speedup": st.floats(allow_nan=True, allow_infinity=True), "--criterion":
                  st.sampled_from(["entropy", "pcee", "entropie", ""]), "--criterion-param":
                  st.sampled_from(["confidence=0", "patience=0", "normalized=1", "x=y"]),
                  "--max-samples": st.integers(-3, 3)},
    "benchmark": {"--repeats": st.integers(-3, 3), "--timing-samples": st.integers(-3, 3),
                  "--batch-size": st.integers(-2, 2), "--split": st.sampled_from(["test", "dev", ""]),
                  "--runtime": st.sampled_from(["pytorch", "onnx", "tensorrt"])},
    "predict": {"--batch-size": st.integers(-2, 2), "--text-column": st.sampled_from(["text", ""])},
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), command=st.sampled_from(sorted(OTHER_FLAGS)))
def test_calibrate_benchmark_predict_flags_answer_anything_with_one_line(data, command, tmp_path_factory):
    """On an artifact that does not exist: whatever the flags, exit 1 and one line, never a traceback."""
    flags = data.draw(st.dictionaries(st.sampled_from(sorted(OTHER_FLAGS[command])), st.none(), min_size=1))
    args = [command, tmp_path_factory.mktemp("noart") / "missing"] + (["hello"] if command == "predict" else [])
    for k in flags:
        args += [k, str(data.draw(OTHER_FLAGS[command][k]))]
    r = invoke(*args)
    if r.exit_code == 2:
        assert "Traceback" not in r.output and "Invalid value" in r.output
        return
    one_line_error(r)


def test_a_regressors_text_labels_are_refused_in_one_line(tmp_path):
    """A one-output checkpoint (a regressor) with class names in the label column: not a score, said first."""
    from conftest import make_model

    ckpt = make_model(tmp_path / "m", "bert", num_labels=1)
    rows = [{"text": r["text"], "label": "pos" if i % 2 else "neg"} for i, r in enumerate(make_rows(120, seed=1))]
    data = tmp_path / "d"
    data.mkdir()
    for name, part in (("train", rows[:80]), ("validation", rows[80:100]), ("test", rows[100:])):
        write_csv(data / f"{name}.csv", part)
    out = one_line_error(invoke("attach", ckpt, "--data", data, "--out", tmp_path / "a", "--epochs", 1))
    assert "is not a number, but the model is a regressor" in out and "numeric scores" in out
    assert not (tmp_path / "a").exists()
