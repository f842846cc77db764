"""The attach backbone pass goes through a memory-mapped cache on disk and resumes after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import eebert_cli.feature_cache as fc
from eebert_cli.checkpoint import load_deployed
from eebert_cli.data import DataConfig, load_data
from eebert_cli.errors import EebertError
from eebert_cli.features import encode, extract
from eebert_cli.ui import SILENT

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {1: {"mean"}, 2: {"mean", "cls"}, 3: {"tokens", "mean"}}

# A child process that runs the cached pass with 16-row chunks and stalls after the third,
# so that the parent can kill -9 it half-way through.
CHILD = """
import sys, time
import eebert_cli.feature_cache as fc
from eebert_cli.checkpoint import load_deployed
from eebert_cli.data import DataConfig, load_data
from eebert_cli.ui import SILENT
fc.CHUNK_ROWS = 16
write = fc.FeatureCache.write
def slow_write(self, index, arrays, offsets):
    write(self, index, arrays, offsets)
    if len(self.done) >= 3:
        time.sleep(600)
fc.FeatureCache.write = slow_write
dep = load_deployed(sys.argv[1])
split = load_data(DataConfig(spec=sys.argv[2])).split("train")
fc.attach_pass(dep, split, [1, 2, 3], %r, 64, 8, sys.argv[3], "cpu float32", SILENT)
""" % (NEEDS,)


def _pass(dep, split, folder):
    return fc.attach_pass(dep, split, [1, 2, 3], NEEDS, 64, 8, folder, "cpu float32", SILENT)


def test_cached_features_equal_the_in_memory_pass_and_live_on_disk(tiny_ckpt, tiny_data, tmp_path):
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    cached = _pass(dep, split, tmp_path / "cache")
    ram = extract(dep.adapter, encode(dep.tokenizer, split, 64), [1, 2, 3], set(), 8, None, NEEDS)
    for r in ("mean", "cls"):
        torch.testing.assert_close(cached.reduced[r], ram.reduced[r])
    torch.testing.assert_close(cached.teacher, ram.teacher)
    assert torch.equal(cached.lengths, ram.lengths) and torch.equal(cached.tokens.offsets, ram.tokens.offsets)
    torch.testing.assert_close(cached.tokens.states, ram.tokens.states)
    # backed by the files, not by RAM copies
    assert isinstance(cached.reduced["mean"].numpy(), np.memmap) or cached.reduced["mean"].numpy().base is not None
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["done"] == [0] and {"reduced-mean", "teacher", "tokens"} <= set(manifest["shapes"])


def test_kill_9_half_way_then_the_rerun_continues(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_ckpt), str(tiny_data), str(folder)], env=env)
    try:
        deadline = time.time() + 240
        done = []
        while time.time() < deadline and len(done) < 3:
            assert child.poll() is None, "the child ended before it was killed"
            try:
                done = json.loads((folder / "manifest.json").read_text())["done"]
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.2)
        assert len(done) >= 3, "the child did not get half-way in time"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    monkeypatch.setattr(fc, "CHUNK_ROWS", 16)
    computed = []
    real = fc.compute_chunk
    monkeypatch.setattr(fc, "compute_chunk", lambda dep, part, plan, adv=None: computed.append(len(part))
                        or real(dep, part, plan, adv))
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    resumed = _pass(dep, split, folder)
    chunks = fc.chunk_bounds(len(split))
    assert len(computed) == len(chunks) - 3  # continued, not restarted
    fresh = _pass(dep, split, tmp_path / "fresh")
    for r in ("mean", "cls"):
        assert torch.equal(resumed.reduced[r], fresh.reduced[r])
    assert torch.equal(resumed.teacher, fresh.teacher) and torch.equal(resumed.tokens.states, fresh.tokens.states)


def test_other_settings_start_over_and_damage_is_one_line(tiny_ckpt, tiny_data, tmp_path):
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    folder = tmp_path / "cache"
    _pass(dep, split, folder)
    logs = []
    fc.attach_pass(dep, split, [1, 2], {1: {"mean"}, 2: {"mean"}}, 64, 8, folder, "cpu float32",
                   type("L", (), {"progress": SILENT.progress, "log": lambda self, m: logs.append(m)})())
    assert any("starting over" in m for m in logs)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(EebertError, match="damaged"):
        _pass(dep, split, folder)
    other = tmp_path / "theirs"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(EebertError, match="not an eebert feature cache"):
        _pass(dep, split, other)
    assert (other / "notes.txt").read_text() == "mine"


def test_remove_deletes_only_the_cache_files(tiny_ckpt, tiny_data, tmp_path):
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    folder = tmp_path / "cache"
    feats = _pass(dep, split, folder)
    del feats
    (folder / "keep.txt").write_text("someone else's")
    fc.remove(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
