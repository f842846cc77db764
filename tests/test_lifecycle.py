"""The artifact lifecycle's bad inputs and misuses, one table: each case's exit code and its one line.

Every row sets up one situation from issue 11 on a tiny model and runs the command a user would;
the expected line is what docs/reliability.md promises for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from eebert_cli.model.artifact import CALIBRATION, CONFIG, LOCK, WEIGHTS, file_sha256, load_artifact, read_json
from eebert_cli.cli import app
from eebert_cli.core.errors import EebertError

runner = CliRunner()


def cli(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def calibrated(tiny_ckpt, tiny_data, tmp_path_factory) -> Path:
    """A calibrated artifact; cases work on copies of it (the backbone path inside is absolute)."""
    out = tmp_path_factory.mktemp("life") / "art"
    r = cli("attach", tiny_ckpt, "--data", tiny_data, "--out", out, "--epochs", 8, "--lr", 3e-3)
    assert r.exit_code == 0, r.output
    r = cli("calibrate", out, "--target-speedup", 1.3)
    assert r.exit_code == 0, r.output
    return out


def copy_art(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- the cases: each returns the CLI result (and may assert on what must have survived) ---------------


def out_is_checkpoint(ckpt, data, art, tmp):
    before = {f.name: file_sha256(f) for f in ckpt.iterdir() if f.is_file()}
    r = cli("attach", ckpt, "--data", data, "--out", ckpt, "--epochs", 1)
    assert {f.name: file_sha256(f) for f in ckpt.iterdir() if f.is_file()} == before  # nothing written there
    return r


def out_inside_checkpoint(ckpt, data, art, tmp):
    r = cli("attach", ckpt, "--data", data, "--out", ckpt / "eebert", "--epochs", 1, "--overwrite")
    assert not (ckpt / "eebert").exists()
    return r


def out_is_dir_of_unrelated_files(ckpt, data, art, tmp):
    d = tmp / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    r = cli("attach", ckpt, "--data", data, "--out", d, "--epochs", 1)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]  # not even a lock file left behind
    return r


def out_is_data_file(ckpt, data, art, tmp):
    f = tmp / "train.csv"
    shutil.copy(data / "train.csv", f)
    before = f.read_bytes()
    r = cli("attach", ckpt, "--data", data, "--out", f, "--epochs", 1, "--overwrite")
    assert f.is_file() and f.read_bytes() == before
    return r


def config_edited_after_attach(ckpt, data, art, tmp):
    moved = tmp / "ckpt-copy"
    shutil.copytree(ckpt, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["id2label"] = {"0": "positive", "1": "negative"}  # swapped labels: weights unchanged
    (moved / "config.json").write_text(json.dumps(cfg))
    return cli("predict", art, "good film", "--backbone", moved)


def nan_exit_weights(ckpt, data, art, tmp):
    a = copy_art(art, tmp / "a")
    w = load_file(a / WEIGHTS)
    first = sorted(w)[0]
    w[first] = torch.full_like(w[first], float("nan"))
    save_file(w, a / WEIGHTS)
    cfg = read_json(a / CONFIG)  # as a writer that forgot to check would have committed it
    cfg["files"][WEIGHTS] = file_sha256(a / WEIGHTS)
    (a / CONFIG).write_text(json.dumps(cfg))
    return cli("predict", a, "good film")


def truncated_exits(ckpt, data, art, tmp):
    a = copy_art(art, tmp / "a")
    raw = (a / WEIGHTS).read_bytes()
    (a / WEIGHTS).write_bytes(raw[: len(raw) // 2])
    return cli("predict", a, "good film")


def truncated_exits_old_artifact(ckpt, data, art, tmp):
    """An artifact without the config's file hashes (older eebert): the reader itself must say it."""
    a = copy_art(art, tmp / "a")
    cfg = read_json(a / CONFIG)
    cfg.pop("files")
    (a / CONFIG).write_text(json.dumps(cfg))
    raw = (a / WEIGHTS).read_bytes()
    (a / WEIGHTS).write_bytes(raw[: len(raw) // 2])
    return cli("predict", a, "good film")


def writer_holds_the_lock(ckpt, data, art, tmp):
    """calibrate while another command (an attach) writes the artifact: waits briefly, then fails."""
    a = copy_art(art, tmp / "a")
    fd = os.open(a / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts like another process
        os.pwrite(fd, b"pid 4242: eebert attach", 0)
        return cli("calibrate", a, "--target-speedup", 1.3, env={"EEBERT_LOCK_WAIT": "0.2"})
    finally:
        os.close(fd)


def reattached_after_calibration(ckpt, data, art, tmp):
    """attach won the race: the new exits must not run with the old exits' thresholds."""
    a = copy_art(art, tmp / "a")
    r = cli("attach", ckpt, "--data", data, "--out", a, "--epochs", 1, "--seed", 7)
    assert r.exit_code == 0, r.output
    assert (a / CALIBRATION).is_file()  # kept (eebert wrote it), but refused below
    return cli("predict", a, "good film")


def stale_onnx_export(ckpt, data, art, tmp):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    a = copy_art(art, tmp / "a")
    r = cli("export", a)
    assert r.exit_code == 0, r.output
    r = cli("calibrate", a, "--target-speedup", 1.6)
    assert r.exit_code == 0, r.output
    return cli("benchmark", a, "--runtime", "onnxruntime", "--timing-samples", 2, "--repeats", 1)


def export_out_is_dir_of_unrelated_files(ckpt, data, art, tmp):
    pytest.importorskip("onnx")
    d = tmp / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    r = cli("export", art, "--out", d)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]
    return r


def export_out_is_a_users_onnx_folder(ckpt, data, art, tmp):
    """Graphs and a manifest.json of the user's own: it passed as "an earlier export" and was replaced whole."""
    pytest.importorskip("onnx")
    d = tmp / "bert-onnx"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"mine")
    (d / "manifest.json").write_text('{"model": "model.onnx"}')
    r = cli("export", art, "--out", d)
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "model.onnx"]
    assert (d / "model.onnx").read_bytes() == b"mine"
    return r


def overwrite_into_a_folder_with_a_users_report(ckpt, data, art, tmp):
    """--overwrite keeps other files, but report.md is one eebert writes into an artifact later: refused."""
    d = tmp / "project"
    d.mkdir()
    (d / "report.md").write_text("my report")
    r = cli("attach", ckpt, "--data", data, "--out", d, "--epochs", 1, "--overwrite")
    assert sorted(p.name for p in d.iterdir()) == ["report.md"] and (d / "report.md").read_text() == "my report"
    return r


def relative_data_from_another_cwd(ckpt, data, art, tmp):
    here = tmp / "project"
    shutil.copytree(data, here / "data")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(here)
        r = cli("attach", ckpt, "--data", "data", "--out", tmp / "a", "--epochs", 1)
        assert r.exit_code == 0, r.output
        os.chdir(elsewhere)  # a later command from another directory reads the same data
        return cli("calibrate", tmp / "a", "--target-speedup", 1.2, "--json")
    finally:
        os.chdir(cwd)


CASES = [  # name, case, exit code, what the one line says
    ("out=CKPT", out_is_checkpoint, 1, "is the checkpoint"),
    ("out inside CKPT", out_inside_checkpoint, 1, "inside the checkpoint"),
    ("out=dir of unrelated files", out_is_dir_of_unrelated_files, 1, "is a directory that is not an eebert artifact"),
    ("out=data file", out_is_data_file, 1, "is an existing file, not an artifact directory"),
    ("config.json edited after attach", config_edited_after_attach, 1, "changed since attach: config.json differs"),
    ("NaN exit weights", nan_exit_weights, 1, "holds NaN or infinite values"),
    ("truncated exits.safetensors", truncated_exits, 1, "does not match the artifact's config"),
    ("truncated exits.safetensors, older artifact", truncated_exits_old_artifact, 1, "cannot be read"),
    ("calibrate while attach writes", writer_holds_the_lock, 1, "is being written by another eebert command (pid 4242"),
    ("calibration of replaced exits", reattached_after_calibration, 1, "calibration.json (thresholds for other exits) is stale"),
    ("stale ONNX export", stale_onnx_export, 1, "graphs of an older calibration) is stale"),
    ("export --out dir of unrelated files", export_out_is_dir_of_unrelated_files, 1,
     "is not an eebert ONNX export"),
    ("export --out a user's ONNX folder", export_out_is_a_users_onnx_folder, 1, "is not an eebert ONNX export"),
    ("attach --overwrite into a folder with a report.md", overwrite_into_a_folder_with_a_users_report, 1,
     "holds report.md, a file eebert writes into an artifact"),
    ("relative --data from another cwd", relative_data_from_another_cwd, 0, None),
]


@pytest.mark.parametrize("name,case,code,line", CASES, ids=[c[0] for c in CASES])
def test_lifecycle_case(name, case, code, line, tiny_ckpt, tiny_data, calibrated, tmp_path):
    r = case(tiny_ckpt, tiny_data, calibrated, tmp_path)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    if line is not None:
        errors = [l for l in r.output.splitlines() if l.startswith("error:")]
        assert len(errors) == 1 and line in errors[0], r.output
        assert any(l.startswith("hint:") for l in r.output.splitlines()), r.output


# --- what the table cannot show in one line ---------------------------------------------------------


def test_overwrite_adds_the_artifact_and_keeps_other_files(tiny_ckpt, tiny_data, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    (d / "sub").mkdir()
    r = cli("attach", tiny_ckpt, "--data", tiny_data, "--out", d, "--epochs", 1, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (d / "notes.txt").read_text() == "keep me" and (d / "sub").is_dir()
    assert load_artifact(d).exits.layers == [1, 2, 3]


def test_a_folder_a_crashed_swap_moved_aside_is_put_back_by_the_next_writer(calibrated, tmp_path):
    """An export replaces its folder by two renames; a crash between them leaves the old export aside under a
    temporary name, which the next command's cleanup deleted. It is put back instead, where nothing replaced it."""
    from eebert_cli.core.atomic import ASIDE, replace_folder
    from eebert_cli.model.artifact import artifact_lock

    a = copy_art(calibrated, tmp_path / "a")
    aside = a / f".onnx{ASIDE}"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    with artifact_lock(a, "test"):
        pass
    assert (a / "onnx" / "manifest.json").read_text() == "{}" and not aside.exists()
    new = a / "new"
    new.mkdir()
    (new / "x").write_text("new")
    replace_folder(new, a / "onnx")  # no crash: the new folder in, nothing aside
    assert [p.name for p in (a / "onnx").iterdir()] == ["x"] and not aside.exists() and not new.exists()


def test_reattach_is_allowed_and_the_stale_calibration_names_the_command(calibrated, tiny_ckpt, tiny_data, tmp_path):
    a = copy_art(calibrated, tmp_path / "a")
    assert cli("attach", tiny_ckpt, "--data", tiny_data, "--out", a, "--epochs", 1, "--seed", 3).exit_code == 0
    with pytest.raises(EebertError) as e:
        load_artifact(a).calibration
    assert "eebert calibrate" in e.value.hint
    assert cli("calibrate", a, "--target-speedup", 1.2).exit_code == 0  # re-running it is the fix
    assert load_artifact(a).calibration.derived_from[WEIGHTS] == file_sha256(a / WEIGHTS)


def test_stale_report_is_flagged_and_refused(calibrated, tmp_path):
    from eebert_cli.scoring.report import STALE, load_report

    a = copy_art(calibrated, tmp_path / "a")
    assert cli("benchmark", a, "--timing-samples", 2, "--repeats", 1).exit_code == 0
    assert load_report(a)["derived_from"][CALIBRATION] == file_sha256(a / CALIBRATION)
    assert cli("calibrate", a, "--target-speedup", 1.6).exit_code == 0
    assert (a / "report.md").read_text().startswith(STALE)
    with pytest.raises(EebertError, match="is stale") as e:
        load_report(a)
    assert "eebert benchmark" in e.value.hint


def test_relative_data_is_stored_absolute(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    shutil.copytree(tiny_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert cli("attach", tiny_ckpt, "--data", "data", "--out", "a", "--epochs", 1).exit_code == 0
    assert read_json(tmp_path / "a" / CONFIG)["data"]["spec"] == str((tmp_path / "data").resolve())


def test_non_finite_weights_are_refused_at_save_and_nothing_is_written(tiny_ckpt, tmp_path):
    from eebert_cli.model.artifact import save_artifact
    from eebert_cli.model.checkpoint import load_deployed
    from eebert_cli.exits import ExitSet, ExitSpec

    dep = load_deployed(tiny_ckpt)
    exits = ExitSet(ExitSpec("linear", [1, 2], {}), dep.adapter.dims)
    with torch.no_grad():
        next(exits.parameters()).fill_(float("inf"))
    with pytest.raises(EebertError, match="NaN or infinite"):
        save_artifact(tmp_path / "a", {"backbone": {}}, exits)
    assert not (tmp_path / "a").exists()


def test_files_keep_the_users_umask(calibrated, tmp_path):
    a = copy_art(calibrated, tmp_path / "a")
    old = os.umask(0o022)
    try:
        assert cli("calibrate", a, "--target-speedup", 1.3).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((a / CALIBRATION).stat().st_mode) == 0o644
    assert stat.S_IMODE((calibrated / WEIGHTS).stat().st_mode) == 0o666 & ~old


def test_backbone_fingerprint_covers_the_tokenizer(calibrated, tiny_ckpt, tmp_path):
    moved = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, moved)
    (moved / "vocab.txt").write_text((moved / "vocab.txt").read_text() + "extra\n")
    with pytest.raises(EebertError, match="vocab.txt differs"):
        load_artifact(calibrated, backbone=moved)
    shutil.copytree(tiny_ckpt, tmp_path / "same")  # a moved but unchanged checkpoint still loads
    assert load_artifact(calibrated, backbone=tmp_path / "same").exits is not None


def test_a_stale_onnx_export_is_never_served_and_is_refused_before_the_weights_load(calibrated, tmp_path, monkeypatch):
    """`eebert serve --runtime onnxruntime` served the graphs of an older calibration (their thresholds) while
    its status named the current one; benchmark refused them only after reading the rows. Both refuse before
    anything loads; the deployed server, whose graph no calibration changes, still starts."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    import eebert_cli.deploy.serve.engine as engine
    from eebert_cli.deploy.serve import serve
    from eebert_cli.deploy.serve.config import ServeConfig

    a = copy_art(calibrated, tmp_path / "a")
    assert cli("export", a).exit_code == 0
    assert cli("calibrate", a, "--target-speedup", 1.6).exit_code == 0
    with pytest.raises(EebertError, match=r"graphs of an older calibration\) is stale"):
        engine.load_engine(ServeConfig(artifact=str(a), runtime="onnxruntime"))
    assert engine.load_engine(ServeConfig(artifact=str(a), runtime="onnxruntime", deployed=True)).kind == "deployed"
    monkeypatch.setattr(engine, "load_engine", lambda cfg: pytest.fail("the artifact loaded first"))
    with pytest.raises(EebertError, match=r"graphs of an older calibration\) is stale"):
        serve(ServeConfig(artifact=str(a), runtime="onnxruntime", port=0).check())
    r = cli("benchmark", a, "--runtime", "onnxruntime", "--data", tmp_path / "no-such-data")
    assert r.exit_code == 1 and "graphs of an older calibration) is stale" in r.output, r.output
