"""examples/mpnet12/finetune.py (the 12-layer deployed models): killed part-way, it resumes and ends
with the very weights of an uninterrupted run; the record holds the best epoch and test accuracy."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import run_script

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "mpnet12" / "finetune.py"


def _run(tiny_ckpt, tiny_data, out, *extra):
    return run_script(SCRIPT, ["--base", tiny_ckpt, "--corpus", tiny_data, "--out", out, "--epochs", 2,
                               "--batch-size", 32, "--max-length", 16, "--save-every", 3, "--threads", 1, *extra])


def test_finetune_resumes_after_a_kill_to_the_same_weights(tiny_ckpt, tiny_data, tmp_path):
    whole = _run(tiny_ckpt, tiny_data, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    # 200 rows / 32 = 7 steps an epoch: saved at steps 3, 6 and 7 (epoch end); killed after step 8
    cut = _run(tiny_ckpt, tiny_data, tmp_path / "cut", "--stop-after-step", "8")
    assert cut.returncode != 0 and "stopped after step 8" in cut.stderr
    assert (tmp_path / "cut.work" / "state.pt").is_file() and not (tmp_path / "cut").exists()
    resumed = _run(tiny_ckpt, tiny_data, tmp_path / "cut")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at step 7/14" in resumed.stdout
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((tmp_path / "cut" / "eebert_demo.json").read_text())
    assert record["full_fine_tune"] and len(record["validation_accuracy_per_epoch"]) == 2
    assert record["validation_accuracy"] == max(record["validation_accuracy_per_epoch"])
    assert 0 <= record["test_accuracy"] <= 1 and not (tmp_path / "cut.work").exists()


def test_finetune_under_bf16_autocast_records_it_and_resumes_only_the_same_way(tiny_ckpt, tiny_data, tmp_path):
    cut = _run(tiny_ckpt, tiny_data, tmp_path / "m", "--bf16", "--stop-after-step", "4")
    assert cut.returncode != 0 and "stopped after step 4" in cut.stderr
    mixed = _run(tiny_ckpt, tiny_data, tmp_path / "m")  # the same run without --bf16: refused, state kept
    assert mixed.returncode != 0 and "started with --bf16" in mixed.stderr and (tmp_path / "m.work").is_dir()
    done = _run(tiny_ckpt, tiny_data, tmp_path / "m", "--bf16")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "m" / "eebert_demo.json").read_text())
    assert record["bf16_autocast"] is True and len(record["validation_accuracy_per_epoch"]) == 2
    plain = load_file(tmp_path / "m" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in plain.values() if t.is_floating_point())  # weights stay fp32


def test_finetune_refuses_a_folder_it_did_not_make_before_training(tiny_ckpt, tiny_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = _run(tiny_ckpt, tiny_data, mine)
    assert refused.returncode != 0 and "was not made by this script" in refused.stderr
    assert (mine / "notes.txt").read_text() == "keep me" and not (tmp_path / "mine.work").exists()


def test_finetune_refuses_a_resume_folder_it_did_not_make(tiny_ckpt, tiny_data, tmp_path):
    # the run deletes its resume folder when it ends: a folder of that name that is someone else's is refused
    theirs = tmp_path / "m.work"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    refused = _run(tiny_ckpt, tiny_data, tmp_path / "m")
    assert refused.returncode != 0 and "m.work exists and was not made by this script" in refused.stderr
    assert (theirs / "notes.txt").read_text() == "keep me" and not (tmp_path / "m").exists()
