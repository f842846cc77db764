"""Hashes are remembered per file version (stat), never for a file changed within the racy window."""

import os
import time

import torch
from safetensors.torch import save_file

from eebert_cli.model import checkpoint
from eebert_cli.model.checkpoint import file_sha256, weights_sha256


def _write(path, value: float, age_s: float):
    save_file({"w": torch.full((4,), value)}, str(path))
    t = time.time() - age_s
    os.utime(path, (t, t))


def test_hashes_are_remembered_per_file_version_and_never_while_racy(tmp_path, monkeypatch):
    reads = []
    real = checkpoint._feed
    monkeypatch.setattr(checkpoint, "_feed", lambda d, p: (reads.append(p.name), real(d, p))[1])
    f = tmp_path / "model.safetensors"
    _write(f, 1.0, age_s=60)
    # ctime is now (utime sets it): the file counts as just changed, so nothing is remembered yet
    a = weights_sha256(tmp_path)
    assert weights_sha256(tmp_path) == a and reads == ["model.safetensors"] * 2
    monkeypatch.setattr(checkpoint, "RACY_NS", 0)  # as if the change were long past
    reads.clear()
    assert weights_sha256(tmp_path) == a and weights_sha256(tmp_path) == a and len(reads) == 1
    fa = file_sha256(f)
    assert file_sha256(f) == fa and len(reads) == 2
    # same size, new content: another stat, another hash
    _write(f, 2.0, age_s=30)
    b = weights_sha256(tmp_path)
    assert b != a and file_sha256(f) != fa
