"""Checkpoints and datasets named by hub id, resolved through a Hugging Face cache built in the test.

No network: HF_HUB_OFFLINE=1 and HF_HUB_CACHE point at a temp cache laid out as huggingface_hub
writes it (models--org--name/refs/main, snapshots/<commit>/...).
"""

import json
import shutil

import pytest
from typer.testing import CliRunner

from eebert_cli.model.artifact import load_artifact
from eebert_cli.cli import app
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError
from eebert_cli.core.hub import is_hub_id

from conftest import hub_layout, make_bert, make_rows, write_csv

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_an_existing_path_wins_over_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("org/model")
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not is_hub_id("org/model")  # the local folder of that name is what the user means
    assert not is_hub_id("data.csv") and not is_hub_id("/abs/dir") and not is_hub_id("a/b/c")


def test_attach_and_load_by_hub_id_record_id_revision_and_hash(tmp_path, hub_cache, tiny_data):
    snap = hub_layout(hub_cache, "acme/tiny-bert", make_bert(tmp_path / "src"), revision=REV)
    out = tmp_path / "art"
    r = run("attach", "acme/tiny-bert", "--data", tiny_data, "--out", out, "--epochs", 1, "--json")
    assert r.exit_code == 0, r.output
    backbone = json.loads((out / "eebert_config.json").read_text())["backbone"]
    assert backbone["hub"] == {"id": "acme/tiny-bert", "type": "model", "revision": REV}
    assert backbone["path"] == str(snap.resolve()) and len(backbone["sha256"]) == 64
    assert load_artifact(out).deployed.path == snap


def test_a_moved_cache_is_found_again_by_id_and_revision_and_checked(tmp_path, hub_cache, tiny_data, monkeypatch):
    hub_layout(hub_cache, "acme/tiny-bert", make_bert(tmp_path / "src"), revision=REV)
    out = tmp_path / "art"
    assert run("attach", "acme/tiny-bert", "--data", tiny_data, "--out", out, "--epochs", 1).exit_code == 0
    moved = tmp_path / "hf2" / "hub"
    shutil.move(hub_cache, moved)
    monkeypatch.setenv("HF_HUB_CACHE", str(moved))
    assert load_artifact(out).deployed.path == moved / "models--acme--tiny-bert" / "snapshots" / REV
    # same id and revision, other weights: the recorded sha256 refuses them
    snap = moved / "models--acme--tiny-bert" / "snapshots" / REV
    shutil.rmtree(snap)
    shutil.copytree(make_bert(tmp_path / "other", seed=7), snap)
    with pytest.raises(EebertError, match="do not match the artifact"):
        load_artifact(out)
    # the recorded revision is gone from the cache: one line naming it
    shutil.rmtree(moved / "models--acme--tiny-bert")
    with pytest.raises(EebertError, match=REV):
        load_artifact(out)


def test_a_hub_id_not_in_the_cache_is_one_line_and_a_hint(hub_cache, tiny_data, tmp_path):
    r = run("attach", "acme/missing", "--data", tiny_data, "--out", tmp_path / "a")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "not a local path and not in the Hugging Face cache" in r.output and "hint:" in r.output
    assert not (tmp_path / "a").exists()


def test_no_download_is_attempted_offline(hub_cache, monkeypatch):
    import eebert_cli.core.hub as hub

    monkeypatch.setattr(hub, "download", lambda *a, **k: pytest.fail("downloaded while offline"))
    with pytest.raises(EebertError):
        hub.resolve("acme/missing")


def test_online_a_cache_miss_downloads_safetensors_and_config_only(hub_cache, monkeypatch):
    """The download itself cannot run here (no network): the call it would make is checked."""
    import eebert_cli.core.hub as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []
    monkeypatch.setattr(hub, "download", lambda repo_id, kw: calls.append((repo_id, kw)) or str(hub_cache / REV))
    ref = hub.resolve("acme/online", allow_patterns=hub.MODEL_FILES)
    assert calls[0][0] == "acme/online" and ref.revision == REV
    patterns = calls[0][1]["allow_patterns"]
    assert "*.safetensors" in patterns and not any(p.endswith((".bin", ".py", ".pt", ".pkl")) for p in patterns)


def _dataset_repo(root, readme: bool = True):
    """A dataset repository as on the hub: a README declaring config "sst" with splits train/heldout/test."""
    rows = make_rows(60)
    (root / "sst").mkdir(parents=True)
    write_csv(root / "sst" / "train.csv", rows[:40])
    write_csv(root / "sst" / "dev.csv", rows[40:50])
    write_csv(root / "sst" / "test.csv", rows[50:])
    if readme:
        files = "".join(f"  - split: {s}\n    path: sst/{f}.csv\n"
                        for s, f in (("train", "train"), ("heldout", "dev"), ("test", "test")))
        (root / "README.md").write_text(f"---\nconfigs:\n- config_name: sst\n  data_files:\n{files}---\n")
    return root


def test_a_dataset_id_with_config_reads_the_cached_snapshot(tmp_path, hub_cache):
    hub_layout(hub_cache, "acme/reviews", _dataset_repo(tmp_path / "repo"), "dataset", REV)
    d = load_data(DataConfig(spec="acme/reviews:sst", split_map={"validation": "heldout"}))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 40, "validation": 10, "test": 10}
    assert d.source == {"id": "acme/reviews", "type": "dataset", "revision": REV, "config": "sst"}
    same = load_data(DataConfig(spec="acme/reviews", config="sst", split_map={"validation": "heldout"}))
    assert same.split("test").texts == d.split("test").texts
    with pytest.raises(EebertError, match="no split 'eval'"):
        load_data(DataConfig(spec="acme/reviews:sst", split_map={"test": "eval"}))
    with pytest.raises(EebertError, match="no validation split"):  # heldout is not assumed without the map
        load_data(DataConfig(spec="acme/reviews:sst")).split("validation")


def test_a_dataset_config_can_be_a_folder_of_split_files(tmp_path, hub_cache):
    hub_layout(hub_cache, "acme/plain", _dataset_repo(tmp_path / "repo", readme=False), "dataset", REV)
    d = load_data(DataConfig(spec="acme/plain:sst"))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 40, "validation": 10, "test": 10}
    with pytest.raises(EebertError, match="no config 'nope'"):
        load_data(DataConfig(spec="acme/plain:nope"))


def test_attach_pins_the_dataset_revision(tmp_path, hub_cache, tiny_ckpt):
    hub_layout(hub_cache, "acme/reviews", _dataset_repo(tmp_path / "repo"), "dataset", REV)
    out = tmp_path / "art"
    r = run("attach", tiny_ckpt, "--data", "acme/reviews:sst", "--split-map", "validation=heldout", "--out", out,
            "--epochs", 1)
    assert r.exit_code == 0, r.output
    data = json.loads((out / "eebert_config.json").read_text())["data"]
    assert data["revision"] == REV and data["split_map"] == {"validation": "heldout"} and data["spec"] == "acme/reviews:sst"


def test_a_dataset_id_in_no_cache_asks_datasets_own_cache_offline_then_fails(hub_cache, monkeypatch):
    """`datasets`' own cache cannot be laid out offline: the call into it is checked instead."""
    import datasets

    seen = {}

    def fake_load(path, name=None, **kw):
        seen.update(path=path, name=name, local=kw["download_config"].local_files_only)
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(EebertError, match="not in the Hugging Face cache"):
        load_data(DataConfig(spec="glue:sst2"))
    assert seen == {"path": "glue", "name": "sst2", "local": True}


def test_the_readme_split_map_example_reads_the_datas_own_split_names(tmp_path, hub_cache):
    """README: `--data org/reviews --data-config en --split-map validation=dev,test=heldout`. `datasets`'
    own file matching renamed dev to validation and dropped heldout; eebert names splits by file."""
    repo = tmp_path / "repo"
    rows = make_rows(90, seed=4)
    for config in ("en", "fr"):
        (repo / config).mkdir(parents=True)
        for i, name in enumerate(("train", "dev", "heldout")):
            write_csv(repo / config / f"{name}.csv", rows[30 * i:30 * (i + 1) - (i if config == "fr" else 0)])
    hub_layout(hub_cache, "org/reviews", repo, "dataset", REV)
    d = load_data(DataConfig(spec="org/reviews", config="en", split_map={"validation": "dev", "test": "heldout"}))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 30, "validation": 30, "test": 30}
    assert d.split("test").texts == [r["text"] for r in rows[60:90]]
    fr = load_data(DataConfig(spec="org/reviews:fr", split_map={"validation": "dev", "test": "heldout"}))
    assert {k: len(v) for k, v in fr.splits.items()} == {"train": 30, "validation": 29, "test": 28}
    with pytest.raises(EebertError, match=r"several configs \(en, fr\)"):
        load_data(DataConfig(spec="org/reviews", split_map={"validation": "dev"}))
