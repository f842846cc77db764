"""The attach backbone pass, written to a disk cache instead of RAM, resumable.

The training split is cut into chunks of rows. Each chunk is tokenised, run
through the backbone (``features.extract``) and written into ``.npy`` arrays
with plain file writes (a CRC-32 of each array's chunk computed on the bytes
as they are written); then the manifest records the chunk as done with its
checksums (atomic rewrite). A run killed half-way and started again with the
same inputs finds the manifest, skips the chunks that are done and goes on.
Exit training then reads the arrays through a memory map, so peak RAM holds
one chunk's features and one tokenised chunk, whatever the number of rows.

Reuse is checked, never trusted: the key covers the backbone's weights and
config/tokenizer files, precision and device, the texts and the pass plan; a
file of the wrong size or header starts the cache over, and every done chunk
is read back and its checksums compared before training reads it. A chunk
that changed since it was written (zeroed, NaN, another model's array copied
in) is recomputed with a one-line warning. Non-finite features from the
backbone itself stop attach with one line.

    CACHE/
      manifest.json       key (what the features depend on), shapes, chunks done, CRC-32 per chunk and array
      reduced-<r>.npy     [N, K, H] float32 per pooled reduction ("mean", "cls")
      teacher.npy         [N, C] float32, the deployed model's logits
      lengths.npy         [N] int64, tokens per example
      tokens.npy          [sum of lengths, K, H] float16, only for token-reading exits; from a
                          bfloat16 backbone its bfloat16 bits as int16 (numpy has no bfloat16)

A tagger's pass (reduction ``word``) keeps one row per tagged word instead: ``reduced-word.npy``
[W, K, H] (each word's first subword) and ``teacher.npy`` [W, C]; its chunks are still chunks of
sentences, and ``lengths.npy`` holds subwords per sentence.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .artifact import write_json
from ..data import Split
from ..core.errors import EebertError
from .features import Features, TokenStore, encode, extract

MANIFEST = "manifest.json"
CACHE_FORMAT = 2  #: 2: CRC-32 per chunk and array, key over the whole backbone fingerprint
CHUNK_ROWS = 4096  #: rows per chunk: the unit of work, of resumption and of RAM
WORD = "word"  #: a tagger's reduction: the state of each tagged word's first subword (model/token_features.py)


@dataclass(frozen=True)
class Plan:
    """What one backbone pass over a split computes (the same on every worker)."""

    layers: list[int]                #: layers whose states are kept (sorted)
    needs: dict[int, list[str]]      #: layer -> reductions kept there
    max_length: int
    batch_size: int

    @property
    def pooled(self) -> list[str]:
        return sorted({r for rs in self.needs.values() for r in rs} - {"tokens"})

    @property
    def tokens(self) -> bool:
        return any("tokens" in rs for rs in self.needs.values())

    @property
    def words(self) -> bool:
        """A tagger's pass: one row per tagged word (``reduced-word``, ``teacher``), ``lengths`` per sentence."""
        return any(WORD in rs for rs in self.needs.values())

    def covers(self, other: "Plan") -> bool:
        """Whether this pass keeps everything ``other`` keeps (same length and batching, at least its
        layers and reductions): its features then serve ``other``'s readers unchanged."""
        return (self.max_length, self.batch_size) == (other.max_length, other.batch_size) and all(
            layer in self.needs and set(kinds) <= set(self.needs[layer]) for layer, kinds in other.needs.items())

    def record(self) -> dict:
        return {"layers": self.layers, "needs": {str(k): v for k, v in sorted(self.needs.items())},
                "max_length": self.max_length, "batch_size": self.batch_size}


def chunk_bounds(n: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + CHUNK_ROWS)) for a in range(0, n, CHUNK_ROWS)]


def compute_chunk(deployed, split: Split, plan: Plan, advance: Callable[[int], None] | None = None) -> dict:
    """One chunk of rows through the backbone -> numpy arrays (what workers send back)."""
    if plan.words:
        from .token_features import extract_words, words_of

        wf = extract_words(deployed.adapter, deployed.model, words_of(deployed.tokenizer, split, plan.max_length),
                           plan.layers, plan.batch_size, advance)
        return {f"reduced-{WORD}": wf.features.reduced[WORD].numpy(), "teacher": wf.features.teacher.numpy(),
                "lengths": wf.lengths.numpy()}
    enc = encode(deployed.tokenizer, split, plan.max_length)
    needs = {layer: set(rs) for layer, rs in plan.needs.items()}
    f = extract(deployed.adapter, enc, plan.layers, set(), plan.batch_size, advance, needs)
    out = {f"reduced-{r}": f.reduced[r].numpy() for r in plan.pooled}
    out["teacher"], out["lengths"] = f.teacher.numpy(), f.lengths.numpy()
    if f.tokens is not None:
        states = f.tokens.states
        out["tokens"] = (states.view(torch.int16) if states.dtype is torch.bfloat16 else states).numpy()
    return out


def _digest_texts(split: Split) -> str:
    h = hashlib.sha256()
    for column in (split.text_column, split.pair_column):
        for batch in split.iter_values(column) if column else ():  # a batch at a time: RAM stays flat
            for t in batch:
                h.update(str(t).encode())
                h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()


def base_key(deployed, split: Split, max_length: int, dtype: str) -> str:
    """What any pass over ``split`` depends on besides its plan: backbone weights, config and tokenizer
    files, precision and device (``dtype`` is the resolved device's description, e.g. "cpu float32"),
    the texts and their truncation."""
    from .checkpoint import fingerprint_files

    blob = json.dumps({"format": CACHE_FORMAT, "backbone": deployed.sha256,
                       "backbone_files": fingerprint_files(deployed.path), "dtype": dtype,
                       "texts": _digest_texts(split), "rows": len(split), "max_length": max_length,
                       "chunk_rows": CHUNK_ROWS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(deployed, split: Split, plan: Plan, dtype: str, base: str | None = None) -> str:
    """What the features depend on: ``base_key`` (given, or computed) and the pass plan."""
    base = base or base_key(deployed, split, plan.max_length, dtype)
    blob = json.dumps({"base": base, "layers": plan.layers,
                       "needs": {str(k): v for k, v in sorted(plan.needs.items())}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_folder(folder: Path) -> dict | None:
    """What a cache folder holds, checked without a row read (attach asks before the checkpoint loads): its
    manifest, or None for a new or empty folder; a file, a damaged manifest or a folder of other files is refused."""
    if folder.exists() and not folder.is_dir():
        raise EebertError(f"--feature-cache {folder} is a file, not a folder",
                          "name a new or empty folder for the feature cache (eebert never replaces a file)")
    m = folder / MANIFEST
    if not m.is_file():
        if folder.exists() and any(folder.iterdir()):
            raise EebertError(f"{folder} exists and is not an eebert feature cache",
                              "pass an empty or new folder to --feature-cache")
        return None
    try:
        manifest = json.loads(m.read_text())
        ok = isinstance(manifest["key"], str) and (manifest["format"] != CACHE_FORMAT or (
            isinstance(manifest["done"], list) and isinstance(manifest["sums"], dict)))
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise EebertError(f"feature cache {folder} is damaged (its manifest cannot be read)",
                          f"delete {folder} (eebert made it) or pass another --feature-cache")
    return manifest


class FeatureCache:
    """One split's features on disk. ``open`` creates it or picks up an interrupted one."""

    def __init__(self, folder: Path, manifest: dict, offsets: dict[str, np.ndarray] | None = None):
        self.folder, self.manifest, self.offsets = folder, manifest, offsets or {}

    @property
    def done(self) -> set[int]:
        return set(self.manifest["done"])

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.manifest["chunks"])

    @classmethod
    def open(cls, folder: str | Path, key: str, shapes: dict[str, list[int]], dtypes: dict[str, str],
             chunks: list[tuple[int, int]], log: Callable[[str], None] = lambda m: None,
             offsets: dict[str, np.ndarray] | None = None, about: dict | None = None) -> "FeatureCache":
        """``chunks`` are in rows of the split; ``offsets``: for an array with rows of its own (``tokens``: one
        per token, a tagger's ``reduced-word`` and ``teacher``: one per word), where each split row's start;
        ``about``: recorded in a new manifest (the pass plan and the key without it, see ``covering_plan``)."""
        folder = Path(folder)
        manifest = check_folder(folder)
        if manifest is not None:
            if manifest["format"] == CACHE_FORMAT and manifest["key"] == key and manifest["shapes"] == shapes:
                bad = next((n for n in shapes if _layout_problem(folder / f"{n}.npy", shapes[n], dtypes[n])), None)
                if bad is None:
                    cache = cls(folder, manifest, offsets)
                    cache.verify(log)
                    if cache.done:
                        log(f"feature cache {folder}: resuming, {len(cache.done)} of {len(chunks)} chunks done")
                    return cache
                log(f"warning: feature cache {folder}: {bad}.npy "
                    f"{_layout_problem(folder / f'{bad}.npy', shapes[bad], dtypes[bad])}: starting over")
            else:
                log(f"feature cache {folder} holds other features (different model, data or settings): starting over")
        folder.mkdir(parents=True, exist_ok=True)
        for name, shape in shapes.items():  # sparse files: disk fills as chunks are written
            np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtypes[name], shape=tuple(shape))
        manifest = {"format": CACHE_FORMAT, "key": key, "shapes": shapes, "chunks": [list(c) for c in chunks],
                    "done": [], "sums": {}, **(about or {})}
        write_json(folder / MANIFEST, manifest)
        return cls(folder, manifest, offsets)

    def verify(self, log: Callable[[str], None]) -> None:
        """Read every done chunk back and compare its checksums; a chunk that changed is to be recomputed."""
        changed = []
        for index in sorted(self.done):
            sums = self.manifest["sums"].get(str(index))
            if not isinstance(sums, dict) or any(sums.get(n) != self._crc(n, index) for n in self.manifest["shapes"]):
                changed.append(index)
        if changed:
            log(f"warning: feature cache {self.folder}: {len(changed)} of {len(self.done)} done chunks changed "
                f"since they were written (checksum mismatch, first: chunk {changed[0]}): recomputing them")
            self.manifest["done"] = sorted(self.done - set(changed))
            for index in changed:
                self.manifest["sums"].pop(str(index), None)
                self.manifest.get("seconds", {}).pop(str(index), None)
            write_json(self.folder / MANIFEST, self.manifest)

    def _span(self, name: str, index: int) -> tuple[int, int]:
        """(byte offset, byte count) of chunk ``index`` in array ``name``."""
        a, b = self.manifest["chunks"][index]
        if name in self.offsets:
            a, b = int(self.offsets[name][a]), int(self.offsets[name][b])
        path = self.folder / f"{name}.npy"
        header, row = _data_start(path)
        return header + a * row, (b - a) * row

    def _crc(self, name: str, index: int) -> int:
        start, count = self._span(name, index)
        crc = 0
        with open(self.folder / f"{name}.npy", "rb") as f:  # explicit reads: nothing stays mapped
            f.seek(start)
            while count > 0:
                block = f.read(min(count, 1 << 22))
                if not block:
                    return -1  # shorter than its header says: cannot match
                crc, count = zlib.crc32(block, crc), count - len(block)
        return crc

    def array(self, name: str, mode: str = "r+") -> np.memmap:
        return np.load(self.folder / f"{name}.npy", mmap_mode=mode)

    @property
    def pass_seconds(self) -> float | None:
        """The seconds the backbone took over every chunk, whichever runs computed them (each chunk's are
        recorded as it is written); None until the pass is complete, or where a chunk's were not recorded
        (caches written before eebert recorded them)."""
        seconds = self.manifest.get("seconds", {})
        if not self.complete or any(str(i) not in seconds for i in self.done):
            return None
        return float(sum(seconds[str(i)] for i in self.done))

    def write(self, index: int, arrays: dict, seconds: float | None = None) -> None:
        """Write chunk ``index`` with file writes, fsync it, then record it as done with its checksums
        (and ``seconds``, the time computing it took: see ``pass_seconds``).

        Plain writes, not a writable map: dirty mapped pages would count in this
        process's RSS for the whole pass (what a container limit sees).
        """
        a, b = self.manifest["chunks"][index]
        for name, values in arrays.items():
            values = np.ascontiguousarray(values)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise EebertError(f"the backbone produced NaN or infinite {name} features for training rows "
                                  f"{a + 1}..{b}; nothing was trained on them",
                                  "check the checkpoint's weights, or run with --dtype float32")
        sums = {}
        for name, values in arrays.items():
            data = memoryview(np.ascontiguousarray(values)).cast("B")
            start, count = self._span(name, index)
            if len(data) != count:
                raise RuntimeError(f"chunk {index} of {name}: {len(data)} bytes for a {count}-byte slot")
            fd = os.open(self.folder / f"{name}.npy", os.O_WRONLY)
            try:
                written = 0
                while written < count:
                    written += os.pwrite(fd, data[written:], start + written)
                os.fsync(fd)
            finally:
                os.close(fd)
            sums[name] = zlib.crc32(data)
        self.manifest["sums"][str(index)] = sums
        if seconds is not None:
            self.manifest.setdefault("seconds", {})[str(index)] = round(seconds, 3)
        self.manifest["done"] = sorted(self.done | {index})
        write_json(self.folder / MANIFEST, self.manifest)

    def features(self, plan: Plan) -> Features:
        """Tensors over the memory maps (copy-on-write: training never changes the files), and a
        reader of rows that training's batches go through (``Features.getter``).

        Pages read through a map count in the process's RSS until unmapped or
        released, and a fault maps a whole folio of neighbouring pages (up to 2 MB
        on current kernels), so random rows through the map made the whole array
        resident within a few steps. The batches therefore read their rows with
        ``pread`` (:class:`RowReader`): nothing mapped, RSS holds one batch. The maps
        remain for whole-array uses; ``Features.release`` drops what they read.
        The data stay in the page cache, where the kernel may keep or evict them.
        """
        maps = {name: self.array(name, "c") for name in self.manifest["shapes"]}
        view = lambda name: torch.from_numpy(maps[name])  # noqa: E731
        tokens = None
        if plan.tokens:
            states = view("tokens")
            tokens = TokenStore(states.view(torch.bfloat16) if states.dtype is torch.int16 else states,
                                torch.from_numpy(self.offsets["tokens"]))

        def release() -> None:
            for m in maps.values():
                if getattr(m, "_mmap", None) is not None and hasattr(mmap, "MADV_DONTNEED"):
                    m._mmap.madvise(mmap.MADV_DONTNEED)

        # a tagger's rows are words, each one state: its per-sentence lengths are read by the caller
        lengths = torch.ones(len(maps["teacher"]), dtype=torch.long) if plan.words else view("lengths")
        return Features(plan.layers, {r: view(f"reduced-{r}") for r in plan.pooled}, view("teacher"),
                        lengths, tokens, release=release,
                        read=RowReader(self.folder, [f"reduced-{r}" for r in plan.pooled]))


class RowReader:
    """``read(reduction, rows, column)``: one layer's vectors of some rows of a pooled cache array, by ``pread``."""

    def __init__(self, folder: Path, names: list[str]):
        import weakref

        self.files = {}
        for name in names:
            path = folder / f"{name}.npy"
            with open(path, "rb") as f:
                shape, _, dtype = _header(f)
                start = f.tell()
            fd = os.open(path, os.O_RDONLY)
            weakref.finalize(self, os.close, fd)
            self.files[name.removeprefix("reduced-")] = (fd, start, tuple(shape), dtype, path)

    def __call__(self, reduction: str, rows: torch.Tensor, col: int) -> torch.Tensor:
        fd, start, shape, dtype, path = self.files[reduction]
        width = int(np.prod(shape[2:], dtype=np.int64)) * dtype.itemsize  # one layer's vector
        stride = shape[1] * width                                         # one row: every kept layer
        idx = rows.tolist()
        buf = bytearray(len(idx) * width)
        view = memoryview(buf)
        base = start + col * width
        for i, r in enumerate(idx):
            if os.preadv(fd, [view[i * width:(i + 1) * width]], base + r * stride) != width:
                raise EebertError(f"feature cache file {path} ended early (row {r})",
                                  "it was truncated while attach ran; run attach again (the cache is checked)")
        return torch.from_numpy(np.frombuffer(buf, dtype=dtype).reshape(len(idx), *shape[2:]))


def _header(f) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran order, dtype) from an open ``.npy`` file, which is left at the data's start."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def _data_start(path: Path) -> tuple[int, int]:
    """(byte offset of the data, bytes per row) of a ``.npy`` file, from its header."""
    with open(path, "rb") as f:
        shape, _, dtype = _header(f)
        return f.tell(), int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize


def _layout_problem(path: Path, shape: list[int], dtype: str) -> str | None:
    """Why ``path`` is not the array the manifest describes (missing, bad header, wrong size), or None."""
    if not path.is_file():
        return "is missing"
    try:
        with open(path, "rb") as f:
            got, fortran, got_dtype = _header(f)
            start = f.tell()
    except (ValueError, OSError, SyntaxError) as e:
        return f"has no readable array header ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if list(got) != list(shape) or got_dtype != np.dtype(dtype) or fortran:
        return f"holds a {got_dtype} array of shape {list(got)}, not {dtype} {shape}"
    size = start + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    actual = path.stat().st_size
    if actual != size:
        return f"is {actual} bytes, not {size} (truncated or extended)"
    return None


def word_offsets(tokenizer, split: Split, max_length: int) -> np.ndarray:
    """Start of each sentence's tagged words (those whose first subword fits in ``max_length``)."""
    from ..data.tagging import encode as encode_words

    counts = np.zeros(len(split) + 1, dtype=np.int64)
    for a, b in chunk_bounds(len(split)):
        index = encode_words(tokenizer, slice_split(split, a, b).texts, max_length)["word_index"]
        counts[a + 1:b + 1] = [sum(1 for w in wi if w >= 0) for wi in index]
    return np.cumsum(counts)


def token_offsets(tokenizer, split: Split, max_length: int) -> np.ndarray:
    """Start of each example's token states (a tokenising pass that keeps only lengths)."""
    lengths = np.zeros(len(split) + 1, dtype=np.int64)
    for a, b in chunk_bounds(len(split)):
        lengths[a + 1:b + 1] = [len(x) for x in encode(tokenizer, slice_split(split, a, b), max_length).input_ids]
    return np.cumsum(lengths)


#: (deployed, split, plan, chunk bounds, chunk indices to do) -> (index, arrays) as they finish
Runner = Callable[..., Iterable[tuple[int, dict]]]


def covering_plan(folder: str | Path, base: str, plan: Plan) -> Plan | None:
    """The plan of a finished cache at ``folder`` that holds more than ``plan`` asks (same backbone, texts,
    precision, length and batching: ``base``), or None. Its features serve ``plan``'s readers as they are
    (they read by layer and reduction), so methods reading different features share one pass
    (``eebert compare`` makes it with the union of what its methods read)."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text())
        held = Plan(m["plan"]["layers"], {int(k): v for k, v in m["plan"]["needs"].items()},
                    m["plan"]["max_length"], m["plan"]["batch_size"])
        done = len(m["done"]) == len(m["chunks"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent, older or damaged: not shareable
        return None
    return held if m.get("format") == CACHE_FORMAT and m.get("base") == base and done and held.covers(plan) else None


def cached_pass(deployed, split: Split, plan: Plan, folder: str | Path, dtype: str,
                progress, log: Callable[[str], None] = lambda m: None, runner: Runner | None = None) -> Features:
    """The backbone pass over ``split`` into the cache at ``folder``, resuming if it was interrupted.

    A finished cache there that holds more than ``plan`` asks is used as it is (``covering_plan``).
    ``runner`` yields (index, arrays) in any order; by default the chunks run
    here, one after the other (``ray_engine.attach_runner`` runs them on Ray workers).
    """
    base = base_key(deployed, split, plan.max_length, dtype)  # the texts are read once for both keys
    wider = covering_plan(folder, base, plan)
    if wider is not None and wider != plan:
        log(f"feature cache {folder} holds more than this method reads: using it")
        plan = wider
    n, dims = len(split), deployed.adapter.dims
    chunks = chunk_bounds(n)
    k, h = len(plan.layers), dims.hidden_size
    offsets = {}
    if plan.words:  # rows of words: where each sentence's start
        words = word_offsets(deployed.tokenizer, split, plan.max_length)
        offsets = {f"reduced-{WORD}": words, "teacher": words}
    rows = int(offsets["teacher"][-1]) if plan.words else n
    shapes = {f"reduced-{r}": [rows, k, h] for r in plan.pooled}
    shapes.update({"teacher": [rows, dims.num_labels], "lengths": [n]})
    dtypes = {**{name: "float32" for name in shapes}, "lengths": "int64"}
    if plan.tokens:
        # what features.token_dtype keeps for this backbone precision (``dtype`` ends with it)
        offsets["tokens"] = token_offsets(deployed.tokenizer, split, plan.max_length)
        shapes["tokens"] = [int(offsets["tokens"][-1]), k, h]
        dtypes["tokens"] = "int16" if dtype.endswith("bfloat16") else "float16"
    cache = FeatureCache.open(folder, cache_key(deployed, split, plan, dtype, base), shapes, dtypes, chunks, log,
                              offsets, {"plan": plan.record(), "base": base})
    todo = [i for i in range(len(chunks)) if i not in cache.done]
    size = lambda i: chunks[i][1] - chunks[i][0]  # noqa: E731
    with progress(n) as advance:
        advance(sum(size(i) for i in cache.done))
        if runner is None:  # here, advancing the bar batch by batch
            results: Iterable = ((i, compute_chunk(deployed, slice_split(split, *chunks[i]), plan, advance))
                                 for i in todo)
        else:  # elsewhere, advancing it chunk by chunk
            results = runner(deployed, split, plan, chunks, todo)
        # a chunk's seconds: from the previous chunk's arrival to its own (computed lazily here, or
        # in parallel elsewhere: then they sum to the pass's wall clock, not its compute)
        last = time.perf_counter()
        for i, arrays in results:
            now = time.perf_counter()
            cache.write(i, arrays, now - last)
            last = time.perf_counter()
            if runner is not None:
                advance(size(i))
    return cache.features(plan)


def recorded_seconds(folder: str | Path) -> float | None:
    """``FeatureCache.pass_seconds`` of the cache at ``folder`` without opening its arrays; None where there is
    no readable manifest."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
        return FeatureCache(Path(folder), manifest).pass_seconds
    except (OSError, ValueError, KeyError, TypeError):
        return None


def slice_split(split: Split, a: int, b: int) -> Split:
    return split.subset(list(range(a, b)))  # a view of the Arrow rows, not a copy of the texts


def default_folder(out: str | Path) -> Path:
    """Where attach caches its features unless told: beside the artifact, removed once it is written."""
    out = Path(out)
    return out.with_name(f".{out.name}.features")


def attach_pass(deployed, split: Split, layers: list[int], needs: dict[int, set[str]], max_length: int,
                batch_size: int, folder: Path, dtype: str, ui, runner: Runner | None = None) -> Features:
    """The attach backbone pass over the training split, through the cache at ``folder``."""
    keep = sorted(set(layers) | set(needs))
    plan = Plan(keep, {layer: sorted(needs.get(layer, set())) for layer in keep}, max_length, batch_size)
    return cached_pass(deployed, split, plan, folder, dtype,
                       lambda total: ui.progress(f"backbone pass (train, {len(split)} examples)", total),
                       ui.log, runner)


def remove(folder: Path) -> None:
    """Delete a cache folder eebert made: only its own files, then the folder if that empties it."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    names = json.loads(manifest.read_text()).get("shapes", {})
    for name in names:
        (folder / f"{name}.npy").unlink(missing_ok=True)
    manifest.unlink()
    try:
        folder.rmdir()
    except OSError:  # someone else's files are in there: leave them
        pass
