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

import eebert_cli.model.feature_cache as fc
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError
from eebert_cli.model.features import encode, extract
from eebert_cli.core.ui import SILENT

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {1: {"mean"}, 2: {"mean", "cls"}, 3: {"tokens", "mean"}}

# A child process that runs the cached pass with 16-row chunks and stalls after the third,
# so that the parent can kill -9 it half-way through.
CHILD = """
import sys, time
import eebert_cli.model.feature_cache as fc
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.ui import SILENT
fc.CHUNK_ROWS = 16
write = fc.FeatureCache.write
def slow_write(self, index, arrays, seconds=None):
    write(self, index, arrays, seconds)
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
    # backed by the files, not by RAM copies: each tensor's memory lies in a mapping of its .npy file
    for name, t in (("reduced-mean.npy", cached.reduced["mean"]), ("teacher.npy", cached.teacher)):
        assert _mapped_from(t.data_ptr()).endswith("/" + name), name
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
    # every chunk's seconds are recorded as it is written, the killed run's three included, so the pass's
    # time is whole; a later pass over the finished cache computes nothing and adds nothing
    seconds = json.loads((folder / "manifest.json").read_text())["seconds"]
    assert sorted(int(i) for i in seconds) == list(range(len(chunks))) and all(v > 0 for v in seconds.values())
    assert fc.recorded_seconds(folder) == pytest.approx(sum(seconds.values()))
    _pass(dep, split, folder)
    assert len(computed) == len(chunks) - 3
    assert json.loads((folder / "manifest.json").read_text())["seconds"] == seconds
    fresh = _pass(dep, split, tmp_path / "fresh")
    for r in ("mean", "cls"):
        assert torch.equal(resumed.reduced[r], fresh.reduced[r])
    assert torch.equal(resumed.teacher, fresh.teacher) and torch.equal(resumed.tokens.states, fresh.tokens.states)


def test_a_taggers_word_states_go_through_the_cache_in_word_rows(tmp_path, monkeypatch):
    """A tagger's pass: chunks of sentences, rows of words (each sentence's words at its offset), equal to
    the in-memory pass; a killed pass resumes chunk by chunk like a sentence pass."""
    from conftest import make_tagging_case
    from eebert_cli.model.token_features import extract_words, words_of

    ckpt, data = make_tagging_case(tmp_path / "case")
    dep = load_deployed(ckpt)
    split = load_data(DataConfig(spec=str(data))).split("train")
    monkeypatch.setattr(fc, "CHUNK_ROWS", 64)  # 200 sentences: 4 chunks
    needs = {1: {fc.WORD}, 3: {fc.WORD}}
    cached = fc.attach_pass(dep, split, [1, 3], needs, 64, 8, tmp_path / "cache", "cpu float32", SILENT)
    words = words_of(dep.tokenizer, split, 64)
    ram = extract_words(dep.adapter, dep.model, words, [1, 3], 8)
    assert cached.reduced[fc.WORD].shape == (int(words.offsets()[-1]), 2, dep.adapter.dims.hidden_size)
    torch.testing.assert_close(cached.reduced[fc.WORD], ram.features.reduced[fc.WORD])
    torch.testing.assert_close(cached.teacher, ram.features.teacher)
    assert torch.equal(cached.lengths, torch.ones(len(cached.teacher), dtype=torch.long))
    rows = torch.tensor([5, 0, 17])  # training reads rows with pread, not through the map
    torch.testing.assert_close(cached.getter(rows)(fc.WORD, 3), ram.features.reduced[fc.WORD][rows, 1])
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["chunks"] == [list(c) for c in fc.chunk_bounds(len(split))] and len(manifest["chunks"]) == 4
    assert np.load(tmp_path / "cache" / "lengths.npy").tolist() == ram.lengths.tolist()  # subwords per sentence
    # a pass stopped after two chunks is continued, not restarted
    manifest["done"] = manifest["done"][:2]
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    computed, real = [], fc.compute_chunk
    monkeypatch.setattr(fc, "compute_chunk", lambda d, part, plan, adv=None: computed.append(len(part))
                        or real(d, part, plan, adv))
    again = fc.attach_pass(dep, split, [1, 3], needs, 64, 8, tmp_path / "cache", "cpu float32", SILENT)
    assert computed == [64, 200 - 3 * 64]
    assert torch.equal(again.reduced[fc.WORD], cached.reduced[fc.WORD])


def test_other_settings_start_over_and_damage_is_one_line(tiny_ckpt, tiny_data, tmp_path):
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    folder = tmp_path / "cache"
    _pass(dep, split, folder)
    logs = []
    ui = type("L", (), {"progress": SILENT.progress, "log": lambda self, m: logs.append(m)})()
    # a pass reading less than the cache holds is served by it, unchanged (compare's methods share one)
    narrow = fc.attach_pass(dep, split, [1, 2], {1: {"mean"}, 2: {"mean"}}, 64, 8, folder, "cpu float32", ui)
    assert any("holds more than this method reads" in m for m in logs)
    full = _pass(dep, split, tmp_path / "again")
    assert torch.equal(narrow.for_layer("mean", 2), full.for_layer("mean", 2))
    # other settings (here the length) are other features: the cache starts over
    fc.attach_pass(dep, split, [1, 2], {1: {"mean"}, 2: {"mean"}}, 32, 8, folder, "cpu float32", ui)
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


# --- a kept cache that was damaged: recomputed (with a warning) or one line, never trained on ---------

def _corrupt(path: Path, how: str, other: Path) -> None:
    data = bytearray(path.read_bytes())
    start, dtype = 0, np.dtype("uint8")
    if path.suffix == ".npy":  # damage the values, keep the header: only the checksums can tell
        with open(path, "rb") as f:
            np.lib.format.read_magic(f)
            _, _, dtype = np.lib.format.read_array_header_1_0(f)
            start = f.tell()
    n = len(data) - start
    if how == "zeros":
        data[start:] = bytes(n)
    elif how == "nan":
        data[start:] = (np.full(n // dtype.itemsize, np.nan, dtype).tobytes() if dtype.kind == "f"
                        else (b"NaN" * n)[:n])
    elif how == "truncated":
        data = data[:len(data) // 2]
    elif how == "another model's":
        data = bytearray((other / path.name).read_bytes())
    path.write_bytes(bytes(data))


CORRUPTIONS = ("zeros", "nan", "truncated", "another model's")
CACHE_FILES = ("manifest.json", "reduced-mean.npy", "reduced-cls.npy", "teacher.npy", "lengths.npy", "tokens.npy")


def _expected(name: str, how: str) -> str:
    """What attach must do about this damage: the line it logs or the error it raises."""
    if name == "manifest.json":
        return "holds other features" if how == "another model's" else "error: is damaged"
    if how == "truncated":
        return "truncated or extended): starting over"
    if name == "lengths.npy" and how == "another model's":
        return "resuming, 4 of 4 chunks done"  # same tokenizer, same lengths: the bytes are equal, nothing changed
    return "4 of 4 done chunks changed since they were written"


@pytest.fixture(scope="module")
def kept_caches(tiny_ckpt, tiny_data, tmp_path_factory):
    """A clean cache of the tiny model (4 chunks) and one of another model with the same shapes."""
    from conftest import make_bert

    root = tmp_path_factory.mktemp("kept")
    old = fc.CHUNK_ROWS
    fc.CHUNK_ROWS = 64
    try:
        split = load_data(DataConfig(spec=str(tiny_data))).split("train")
        mine = _pass(load_deployed(tiny_ckpt), split, root / "mine")
        other_ckpt = make_bert(root / "other-ckpt", seed=7)
        _pass(load_deployed(other_ckpt), split, root / "theirs")
    finally:
        fc.CHUNK_ROWS = old
    reference = {r: mine.reduced[r].clone() for r in ("mean", "cls")}
    reference.update(teacher=mine.teacher.clone(), tokens=mine.tokens.states.clone(), lengths=mine.lengths.clone())
    return root / "mine", root / "theirs", reference


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("name", CACHE_FILES)
def test_a_damaged_kept_cache_is_recomputed_or_refused_in_one_line(name, how, kept_caches, tiny_ckpt, tiny_data,
                                                                   tmp_path, monkeypatch):
    import shutil

    mine, theirs, reference = kept_caches
    folder = tmp_path / "cache"
    shutil.copytree(mine, folder)
    _corrupt(folder / name, how, theirs)
    monkeypatch.setattr(fc, "CHUNK_ROWS", 64)
    logs = []
    ui = type("L", (), {"progress": SILENT.progress, "log": lambda self, m: logs.append(m)})()
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    expected = _expected(name, how)
    if expected.startswith("error: "):  # refused: one line naming the cache, and a hint
        with pytest.raises(EebertError, match=expected[len("error: "):]) as e:
            fc.attach_pass(dep, split, [1, 2, 3], NEEDS, 64, 8, folder, "cpu float32", ui)
        assert "\n" not in e.value.message and str(folder) in e.value.message and e.value.hint
        return
    feats = fc.attach_pass(dep, split, [1, 2, 3], NEEDS, 64, 8, folder, "cpu float32", ui)
    assert any(expected in m for m in logs) and all("\n" not in m for m in logs), logs
    for r in ("mean", "cls"):
        assert torch.equal(feats.reduced[r], reference[r])
    assert torch.equal(feats.teacher, reference["teacher"]) and torch.equal(feats.lengths, reference["lengths"])
    assert torch.equal(feats.tokens.states, reference["tokens"])


def test_a_cache_of_another_checkpoint_is_never_reused(kept_caches, tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    import shutil

    mine, theirs, reference = kept_caches
    shutil.copytree(theirs, tmp_path / "cache")
    monkeypatch.setattr(fc, "CHUNK_ROWS", 64)
    logs = []
    ui = type("L", (), {"progress": SILENT.progress, "log": lambda self, m: logs.append(m)})()
    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    feats = fc.attach_pass(load_deployed(tiny_ckpt), split, [1, 2, 3], NEEDS, 64, 8, tmp_path / "cache",
                           "cpu float32", ui)
    assert any("holds other features" in m for m in logs)
    assert torch.equal(feats.teacher, reference["teacher"])


def test_the_key_covers_backbone_files_and_device(tiny_ckpt, tiny_data, tmp_path):
    import shutil

    split = load_data(DataConfig(spec=str(tiny_data))).split("train")
    plan = fc.Plan([1], {1: ["mean"]}, 64, 8)
    dep = load_deployed(tiny_ckpt)
    key = fc.cache_key(dep, split, plan, "cpu float32")
    assert fc.cache_key(dep, split, plan, "cuda float32") != key
    assert fc.cache_key(dep, split, plan, "cpu bfloat16") != key
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["id2label"] = {"0": "neg", "1": "pos"}
    (copy / "config.json").write_text(json.dumps(cfg))
    assert fc.cache_key(load_deployed(copy), split, plan, "cpu float32") != key


def test_feature_cache_naming_a_file_is_one_line(tiny_ckpt, tiny_data, tmp_path):
    f = tmp_path / "cache.bin"
    f.write_text("mine")
    with pytest.raises(EebertError, match="is a file, not a folder"):
        _pass(load_deployed(tiny_ckpt), load_data(DataConfig(spec=str(tiny_data))).split("train"), f)
    assert f.read_text() == "mine"


@pytest.mark.parametrize("kind", ["a file", "a folder of other files", "a damaged manifest"])
def test_a_bad_feature_cache_is_refused_before_the_checkpoint_loads(kind, tiny_ckpt, tiny_data, tmp_path,
                                                                      monkeypatch):
    """What the folder holds is read without a row: refused before the checkpoint, the data pass and the
    tokenising (they ran first, and the refusal came minutes in on real data)."""
    import eebert_cli.train.attach as train_attach
    from typer.testing import CliRunner

    from eebert_cli.cli import app

    monkeypatch.setattr(train_attach, "load_deployed", lambda *a, **k: pytest.fail("the checkpoint loaded first"))
    cache = tmp_path / "cache"
    if kind == "a file":
        cache.write_text("mine")
    else:
        cache.mkdir()
        (cache / ("notes.txt" if kind == "a folder of other files" else fc.MANIFEST)).write_text("mine")
    r = CliRunner().invoke(app, ["attach", str(tiny_ckpt), "--data", str(tiny_data), "--out", str(tmp_path / "a"),
                                 "--feature-cache", str(cache)])
    line = {"a file": "is a file, not a folder", "a folder of other files": "is not an eebert feature cache",
            "a damaged manifest": "is damaged"}[kind]
    assert r.exit_code == 1 and r.output.count("error:") == 1 and line in r.output, r.output
    assert not (tmp_path / "a").exists()


def test_nonfinite_backbone_features_stop_attach(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    real = fc.compute_chunk

    def poisoned(*a, **k):
        out = real(*a, **k)
        out["reduced-mean"][0, 0, 0] = np.nan
        return out

    monkeypatch.setattr(fc, "compute_chunk", poisoned)
    with pytest.raises(EebertError, match="NaN or infinite reduced-mean features"):
        _pass(load_deployed(tiny_ckpt), load_data(DataConfig(spec=str(tiny_data))).split("train"), tmp_path / "c")


def _mapped_from(address: int) -> str:
    """The file whose mapping in this process holds ``address`` ('' for anonymous memory: a RAM copy)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5] if len(fields) > 5 else ""
    return ""


def _resident_mb(name: str) -> float:
    """Resident MB of this process's mappings of files called ``name`` (/proc/self/smaps)."""
    total, current = 0.0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):
            current = line.split()[-1]
        elif first == "Rss:" and current and current.endswith(name):
            total += int(line.split()[1]) / 1024
    return total


def test_training_batches_read_rows_without_making_the_cache_resident(tmp_path):
    """Random rows through the memory map made the whole array resident (a fault maps a folio of
    neighbours); the getter reads them with pread: equal values, nothing of the file resident."""
    n, h = 20000, 256
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, 2, h), dtype=np.float32)
    chunks = fc.chunk_bounds(n)
    shapes = {"reduced-mean": [n, 2, h], "teacher": [n, 2], "lengths": [n]}
    cache = fc.FeatureCache.open(tmp_path / "c", "k", shapes, {"reduced-mean": "float32", "teacher": "float32",
                                                                "lengths": "int64"}, chunks)
    for i, (a, b) in enumerate(chunks):
        cache.write(i, {"reduced-mean": values[a:b], "teacher": np.zeros((b - a, 2), np.float32),
                        "lengths": np.ones(b - a, np.int64)})
    feats = cache.features(fc.Plan([1, 2], {1: ["mean"], 2: ["mean"]}, 32, 8))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    for a in range(0, n, 256):
        rows = order[a:a + 256]
        got = feats.getter(rows)("mean", 2)
        assert torch.equal(got, torch.from_numpy(values[rows.numpy(), 1]))
    assert _resident_mb("reduced-mean.npy") < 1.0  # of a 41 MB file
