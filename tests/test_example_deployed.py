"""The demos' deployed models (examples/make_deployed_model.py, make_deployed_tagger.py): each makes a
checkpoint eebert loads as a user's, records how, and never replaces a folder it did not make."""

import json
import sys
from pathlib import Path

import pytest

from conftest import make_tagging_case, run_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script, base, corpus, out, *extra):
    return run_script(EXAMPLES / script, ["--base", base, "--corpus", corpus, "--out", out, "--epochs", 1,
                                          "--batch-size", 32, "--max-length", 16, *extra])


@pytest.fixture(scope="module")
def tagging_case(tmp_path_factory):
    return make_tagging_case(tmp_path_factory.mktemp("tagging"))


@pytest.mark.parametrize("script", ["make_deployed_model.py", "make_deployed_tagger.py"])
def test_deployed_model_scripts_make_a_checkpoint_eebert_loads(script, tiny_ckpt, tiny_data, tagging_case, tmp_path):
    from eebert_cli.model.checkpoint import load_deployed
    from eebert_cli.tasks import task_of

    base, corpus = (tiny_ckpt, tiny_data) if script == "make_deployed_model.py" else tagging_case
    out = tmp_path / "deployed"
    got = _run(script, base, corpus, out)
    assert got.returncode == 0, got.stderr[-2000:]
    record = json.loads((out / "eebert_demo.json").read_text())
    assert record["epochs"] == 1 and record["seed"] == 0
    deployed = load_deployed(out)
    want = "classification" if script == "make_deployed_model.py" else "token-classification"
    assert task_of(deployed.model.config).name == want
    # cached: a second run trains nothing; --force swaps in a new one
    again = _run(script, base, corpus, out)
    assert again.returncode == 0 and "cached" in again.stdout
    forced = _run(script, base, corpus, out, "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob("deployed.*"))


def test_deployed_model_script_never_replaces_a_folder_it_did_not_make(tiny_ckpt, tiny_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    got = _run("make_deployed_model.py", tiny_ckpt, tiny_data, mine, "--force")
    assert got.returncode != 0 and "was not made by this script" in got.stderr
    assert (mine / "notes.txt").read_text() == "keep me"


def test_replace_output_keeps_a_foreign_dot_old_folder(tmp_path):
    """The swap's leftover name (OUT.old) is removed only when this script made it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from make_deployed_model import replace_output

    out, tmp = tmp_path / "deployed", tmp_path / "new"
    for d in (out, tmp):
        d.mkdir()
        (d / "eebert_demo.json").write_text("{}")
    old = tmp_path / "deployed.old"
    old.mkdir()
    (old / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="was not made by this script"):
        replace_output(tmp, out)
    assert (old / "notes.txt").read_text() == "keep me" and out.is_dir() and tmp.is_dir()
    (old / "notes.txt").unlink()
    (old / "eebert_demo.json").write_text("{}")  # a swap this script left half-way: replaced
    replace_output(tmp, out)
    assert not old.exists() and not tmp.exists() and (out / "eebert_demo.json").is_file()
