"""Bad input on the surfaces of issue 23: the feature cache, data files, outputs, Ray's input checks, validate.

One table: each row prepares the bad input, runs one command, and names the line it must get
(exit 1: one `error:` line and a hint, no traceback) or, for rows that must succeed with a word
(exit 0), the line that says so. docs/reliability.md ("Bad input on the new surfaces") lists it.
"""

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import hub_layout, make_rows, write_csv
from test_bad_inputs import invoke, one_line_error

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def art(tiny_ckpt, tiny_data, tmp_path_factory):
    """A calibrated artifact of a private copy of the tiny checkpoint (rows may move or damage that copy)."""
    root = tmp_path_factory.mktemp("surf")
    ckpt = root / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    out = root / "art"
    r = invoke("attach", ckpt, "--data", tiny_data, "--out", out, "--epochs", 1, "--layers", "1,2")
    assert r.exit_code == 0, r.output
    r = invoke("calibrate", out, "--target-speedup", 1.3)
    assert r.exit_code == 0, r.output
    return out


def _copy_ckpt(ctx, drop=(), truncate=None):
    ckpt = ctx["tmp"] / "ckpt"
    shutil.copytree(ctx["ckpt"], ckpt)
    for name in drop:
        (ckpt / name).unlink(missing_ok=True)
    if truncate:
        f = ckpt / truncate
        os.truncate(f, f.stat().st_size - 100)
    return ckpt


def _parquet(ctx, rows, name="in.parquet"):
    f = ctx["tmp"] / name
    pq.write_table(pa.table(rows), f)
    return f


def _recipe(ctx, ckpt, data, device="", target=1.5):
    f = ctx["tmp"] / "r.toml"
    f.write_text(f'version = 1\ncheckpoint = "{ckpt}"\nartifact = "{ctx["tmp"]}/a"\n[data]\nspec = "{data}"\n'
                 + f"[calibrate]\ntarget_speedup = {target!r}\n" + (f'[device]\ndevice = "{device}"\n' if device else ""))
    return f


def _hub_configs(ctx, names, files=("train", "dev", "test")):
    """A dataset repository in the HF cache whose configs are folders (no README configs)."""
    repo = ctx["tmp"] / "repo"
    rows = make_rows(90, seed=4)
    for name in names:
        (repo / name).mkdir(parents=True)
        for i, f in enumerate(files):
            write_csv(repo / name / f"{f}.csv", rows[30 * i:30 * (i + 1)])
    cache = ctx["tmp"] / "hf"
    cache.mkdir()
    hub_layout(cache, "acme/multi", repo, "dataset", REV)
    ctx["env"].update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")


def _saved_damaged(ctx):
    import datasets

    rows = make_rows(60)
    d = datasets.DatasetDict({s: datasets.Dataset.from_list(rows[20 * i:20 * (i + 1)])
                              for i, s in enumerate(("train", "validation", "test"))})
    d.save_to_disk(str(ctx["tmp"] / "saved"))
    f = next((ctx["tmp"] / "saved" / "train").glob("*.arrow"))
    os.truncate(f, f.stat().st_size // 2)
    return ctx["tmp"] / "saved"


def _kept_cache_truncated(ctx):
    cache = ctx["tmp"] / "cache"
    r = invoke("attach", ctx["ckpt"], "--data", ctx["data"], "--out", ctx["tmp"] / "a1", "--epochs", 1,
               "--layers", "1,2", "--feature-cache", cache)
    assert r.exit_code == 0, r.output
    f = cache / "reduced-mean.npy"
    os.truncate(f, f.stat().st_size - 64)
    return cache


def _moved(ctx):
    ckpt = Path(json.loads((ctx["art"] / "eebert_config.json").read_text())["backbone"]["path"])
    moved = ckpt.with_name("ckpt-moved")
    ckpt.rename(moved)
    ctx["restore"] = lambda: moved.rename(ckpt)
    return ctx["art"]


def _bad_architecture(ctx):
    ckpt = _copy_ckpt(ctx)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2ForSequenceClassification"])
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return _recipe(ctx, ckpt, ctx["data"])


ATTACH = ["attach", "{ckpt}", "--data", "{data}", "--out", "{tmp}/o", "--epochs", "1", "--layers", "1,2"]

# (name, setup(ctx) -> dict of values for the call, call, exit code, the line (and hint) it must print)
CASES = [
    ("--feature-cache names a file", lambda c: {"fc": (c["tmp"] / "f.bin").write_text("mine") and c["tmp"] / "f.bin"},
     ATTACH + ["--feature-cache", "{fc}"], 1, "is a file, not a folder", "eebert never replaces a file"),
    ("kept feature cache with a truncated array", lambda c: {"fc": _kept_cache_truncated(c)},
     ATTACH + ["--feature-cache", "{fc}"], 0, "reduced-mean.npy is", "truncated or extended): starting over"),
    ("calibrate without --data applies --split-map", lambda c: {},
     ["calibrate", "{art}", "--target-speedup", "1.3", "--split-map", "validation=dev"], 1, "has no split 'dev'",
     "fix --split-map"),
    ("benchmark without --data applies --text-column", lambda c: {},
     ["benchmark", "{art}", "--repeats", "0", "--text-column", "review"], 1, "has no text column 'review'",
     "--text-column"),
    ("calibrate --unlabeled without --max-drop", lambda c: {},
     ["calibrate", "{art}", "--target-speedup", "1.3", "--unlabeled", "{data}/train.csv"], 1,
     "--unlabeled bounds an accuracy budget: it goes with --max-drop", "add --max-drop POINTS"),
    ("calibrate --unlabeled naming no file", lambda c: {},
     ["calibrate", "{art}", "--max-drop", "1", "--unlabeled", "{tmp}/nope.csv"], 1, "file not found", "a text column"),
    ("checkpoint without tokenizer files", lambda c: {"ckpt": _copy_ckpt(c, drop=("vocab.txt", "tokenizer.json"))},
     ATTACH, 1, "has no tokenizer files", "tokenizer.save_pretrained()"),
    ("truncated model.safetensors", lambda c: {"ckpt": _copy_ckpt(c, truncate="model.safetensors")},
     ATTACH, 1, "model.safetensors is truncated or damaged", "copy the checkpoint again"),
    ("hub dataset with config folders, no --data-config", lambda c: _hub_configs(c, ["en", "fr"]) or {},
     ["attach", "{ckpt}", "--data", "acme/multi", "--out", "{tmp}/o"], 1,
     "has several configs (en, fr) and no --data-config", "--data-config en"),
    ("damaged save_to_disk folder", lambda c: {"data": _saved_damaged(c)}, ATTACH, 1,
     "data-00000-of-00001.arrow is truncated or corrupt", "re-save it"),
    ("predict: empty --input file", lambda c: {"f": (c["tmp"] / "e.jsonl").write_text("") or c["tmp"] / "e.jsonl"},
     ["predict", "{art}", "--input", "{f}", "--output", "{tmp}/p.jsonl"], 1, "is empty (0 bytes)",
     "a header and rows"),
    ("predict: header-only CSV", lambda c: {"f": (c["tmp"] / "h.csv").write_text("text,label\n") and c["tmp"] / "h.csv"},
     ["predict", "{art}", "--input", "{f}", "--output", "{tmp}/p.jsonl"], 1, "has no rows (a header at most)",
     "rows to predict"),
    ("attach: a header-only CSV (was the builder's 'corresponds to no data')",
     lambda c: {"data": (c["tmp"] / "h.csv").write_text("text,label\n") and c["tmp"] / "h.csv"}, ATTACH, 1,
     "h.csv has no rows (a header at most)", "a header and rows"),
    ("predict: a .parquet that is not parquet",
     lambda c: {"f": (c["tmp"] / "x.parquet").write_text("notpq\n") and c["tmp"] / "x.parquet"},
     ["predict", "{art}", "--input", "{f}", "--output", "{tmp}/p.jsonl"], 1,
     "x.parquet: Parquet file size is", "well-formed PARQUET file"),
    ("predict: a parquet of 0 rows", lambda c: {"f": _parquet(c, {"text": []})},
     ["predict", "{art}", "--input", "{f}", "--output", "{tmp}/p.jsonl"], 1, "has no rows", "rows to predict"),
    ("predict: --input names a folder", lambda c: {},
     ["predict", "{art}", "--input", "{tmp}", "--output", "{tmp}/p.jsonl"], 1, "is a folder, not a file",
     "give a data file"),
    ("predict: --output in a folder that cannot be written", lambda c: {},
     ["predict", "{art}", "--input", "{data}/test.csv", "--output", "/sys/eebert-test/p.jsonl"], 1,
     "/sys/eebert-test is not writable", "choose a folder you can write to"),
    ("export: --out in a folder that cannot be written", lambda c: {},
     ["export", "{art}", "--out", "/sys/eebert-test/onnx"], 1, "/sys/eebert-test is not writable",
     "choose a folder you can write to"),
    ("benchmark: --onnx without --runtime onnxruntime (it was ignored)", lambda c: {},
     ["benchmark", "{art}", "--onnx", "{tmp}"], 1, "--onnx names the export --runtime onnxruntime runs, not --runtime pytorch",
     "add --runtime onnxruntime, or drop --onnx"),
    ("predict: --ray-address without --executor ray (it was ignored)", lambda c: {},
     ["predict", "{art}", "good film", "--ray-address", "auto"], 1,
     "--ray-address names a cluster, which --executor local does not use", "add --executor ray"),
    ("ray predict: a null text", lambda c: {"f": _parquet(c, {"text": ["good film", None], "label": ["a", "b"]})},
     ["predict", "{art}", "--input", "{f}", "--output", "{tmp}/out", "--executor", "ray"], 1,
     "row 2 has no text", "eebert does not guess them"),
    ("ray predict: --output named like a file", lambda c: {"f": _parquet(c, {"text": ["good film"]})},
     ["predict", "{art}", "--input", "{f}", "--output", "{tmp}/out.jsonl", "--executor", "ray"], 1,
     "writes a folder of parquet parts, not a .jsonl file", "--output predictions/"),
    ("ray predict: a CSV input", lambda c: {},
     ["predict", "{art}", "--input", "{data}/test.csv", "--output", "{tmp}/out", "--executor", "ray"], 1,
     "--executor ray reads parquet, and", "drop --executor ray"),
    ("ray predict: --output in a folder that cannot be written", lambda c: {"f": _parquet(c, {"text": ["good"]})},
     ["predict", "{art}", "--input", "{f}", "--output", "/sys/eebert-test/out", "--executor", "ray"], 1,
     "is not writable", "choose a folder you can write to"),
    ("moved backbone: the hint names --backbone", lambda c: {"art": _moved(c)},
     ["calibrate", "{art}", "--target-speedup", "1.3"], 1, "is no longer at", "pass --backbone NEW_PATH"),
    ("an edited eebert_config.json: not an object", lambda c: {"a": _edited(c, "eebert_config.json", lambda d: [])},
     ["predict", "{a}", "good film"], 1, "eebert_config.json is not a JSON object", "re-create the artifact"),
    ("an edited eebert_config.json: exits gone",
     lambda c: {"a": _edited(c, "eebert_config.json", lambda d: {k: v for k, v in d.items() if k != "exits"})},
     ["predict", "{a}", "good film"], 1, "'exits' is missing, not a dict", "was edited or written by another tool"),
    ("an edited eebert_config.json: layers as text",
     lambda c: {"a": _edited(c, "eebert_config.json", lambda d: {**d, "exits": {**d["exits"], "layers": "1,2"}})},
     ["predict", "{a}", "good film"], 1, "exits.layers must be a list of layer numbers", "re-create the artifact"),
    ("an edited eebert_config.json: exits that are not the weights'",
     lambda c: {"a": _edited(c, "eebert_config.json", lambda d: {**d, "exits": {**d["exits"], "layers": [1, 2, 3]}})},
     ["predict", "{a}", "good film"], 1, "its exits do not describe exits.safetensors", "re-create the artifact"),
    ("an edited calibration.json: NaN thresholds",
     lambda c: {"a": _edited(c, "calibration.json", lambda d: {**d, "thresholds": [float("nan")] * len(d["thresholds"])})},
     ["predict", "{a}", "good film"], 1, "thresholds must be a list of finite numbers", "re-run `eebert calibrate`"),
    ("an edited calibration.json: thresholds as text",
     lambda c: {"a": _edited(c, "calibration.json", lambda d: {**d, "thresholds": "x"})},
     ["predict", "{a}", "good film"], 1, "thresholds must be a list of finite numbers", "re-run `eebert calibrate`"),
    ("validate: an architecture attach refuses", lambda c: {"r": _bad_architecture(c)}, ["validate", "{r}"], 1,
     "unsupported architecture 'gpt2'", "adapter module"),
    ("validate: a target past the checkpoint's reach (every exit on: (layers + 1) / 1)",
     lambda c: {"r": _recipe(c, c["ckpt"], c["data"], target=1e308)}, ["validate", "{r}"], 1,
     "target speedup 1e+308x is out of reach: with the first exit after layer 1 of", "ask for less"),
    ("validate: paths not on this machine are said to be skipped",
     lambda c: {"r": _recipe(c, "/nowhere/ckpt", "/nowhere/data.csv")}, ["validate", "{r}"], 0,
     "skipped: checkpoint /nowhere/ckpt: not found on this machine", "data /nowhere/data.csv: not found"),
]
if not __import__("torch").cuda.is_available():
    CASES.append(("validate: CUDA asked on a machine without it", lambda c: {"r": _recipe(c, c["ckpt"], c["data"],
                                                                                          "cuda")},
                  ["validate", "{r}"], 0, "warning: [device] asks for cuda", "meant for another machine"))


@pytest.mark.parametrize("name,setup,call,code,line,hint", CASES, ids=[c[0] for c in CASES])
def test_bad_surface_gets_its_line(name, setup, call, code, line, hint, tiny_ckpt, tiny_data, art, tmp_path,
                                   monkeypatch):
    if "/sys/" in " ".join(call) and _sys_writable():
        pytest.skip("/sys is writable here: no read-only folder to write to")
    ctx = {"ckpt": tiny_ckpt, "data": tiny_data, "art": art, "tmp": tmp_path, "env": {}}
    values = {k: v for k, v in ctx.items() if k in ("ckpt", "data", "art", "tmp")}
    values.update(setup(ctx) or {})
    for k, v in ctx["env"].items():
        monkeypatch.setenv(k, v)
    try:
        result = invoke(*[str(a).format(**values) for a in call])
    finally:
        ctx.get("restore", lambda: None)()
    if code == 0:
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and line in result.output and hint in result.output, result.output
        return
    output = one_line_error(result)
    assert line in output and hint in output, output
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists() and not (tmp_path / "p.jsonl").exists()


def _edited(ctx, name: str, edit) -> Path:
    """A copy of the artifact whose ``name`` (JSON) was edited by hand: ``edit`` maps its content to the new one."""
    copy = ctx["tmp"] / "edited"
    shutil.copytree(ctx["art"], copy)
    f = copy / name
    f.write_text(json.dumps(edit(json.loads(f.read_text()))))
    return copy


def _sys_writable() -> bool:
    try:
        Path("/sys/eebert-probe").mkdir()
    except OSError:
        return False
    Path("/sys/eebert-probe").rmdir()
    return True


def test_calibrate_without_data_applies_max_samples_to_the_recorded_data(art):
    """Data flags without --data read the artifact's recorded data with the flags applied (they were dropped)."""
    r = invoke("calibrate", art, "--target-speedup", 1.3, "--max-samples", 25, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["validation"]["examples"] == 25


def test_max_drop_says_what_the_validation_can_certify_before_the_search(art):
    r = invoke("calibrate", art, "--max-drop", 0.5)
    assert r.exit_code == 0, r.output
    # 80 validation rows, 90%: 8 z^2 / 80 = 16.42 points; 0.5 points needs 8 z^2 / 0.005 = 2,628 labelled rows
    assert "80 labelled validation rows certify drops down to about 16.42 points" in r.output
    assert "0.5 points needs about 2,628 labelled rows, or about 657 rows in all with unlabeled ones" in r.output


def test_unlabeled_rows_bound_the_drop_by_the_disagreement(art, tiny_data, tmp_path):
    """--unlabeled: thresholds kept on the disagreement with the deployed model over validation + the rows;
    the report says how the bound was computed, and the bound it states holds on those rows."""
    import torch

    from eebert_cli.model.runtime import EarlyExitModel

    rows = make_rows(400, seed=21)
    write_csv(tmp_path / "traffic.csv", [{"text": r["text"]} for r in rows])
    r = invoke("calibrate", art, "--max-drop", 20, "--unlabeled", tmp_path / "traffic.csv", "--json")
    assert r.exit_code == 0, r.output
    margin = json.loads(r.stdout)["margin"]
    assert margin["rows"] == {"validation": 80, "unlabeled": 400} and "differs from the deployed model" in margin["method"]
    assert margin["bound_points"] <= 20 and margin["certifiable"].startswith("--max-drop 20 at 90% confidence")
    assert abs(margin["bound_points"] - margin["disagreement_points"] - margin["points"]) < 1e-9
    # the stated disagreement is what the runtime does on those rows (validation + unlabeled)
    model = EarlyExitModel.from_artifact(art)
    texts = [r["text"] for r in rows] + [l.split(",")[0] for l in (tiny_data / "validation.csv").read_text()
                                         .splitlines()[1:]]
    early = [p.label for p in model.predict(texts, batch_size=1)]
    deployed = model.artifact.deployed
    with torch.no_grad():
        enc = deployed.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        ref = [deployed.id2label[i] for i in deployed.model(**enc).logits.argmax(-1).tolist()]
    disagree = 100 * sum(a != b for a, b in zip(early, ref)) / len(texts)
    assert abs(disagree - margin["disagreement_points"]) < 0.5


def test_unlabeled_rows_that_are_training_texts_are_warned_about(art, tiny_data):
    r = invoke("calibrate", art, "--max-drop", 20, "--unlabeled", tiny_data / "train.csv", "--json")
    assert r.exit_code == 0, r.output
    assert any("200 of the 200 --unlabeled rows are texts of the training split" in w
               for w in json.loads(r.stdout)["warnings"])
