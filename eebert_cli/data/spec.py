"""Turn a data spec into train/validation/test splits of texts (and optional labels).

A spec is one of:
- the name of a built-in corpus (``rotten-tomatoes``, ``reuters-r8``, ...), see corpora.py;
- a file (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``): split by its ``split``
  column when it has one, else by a seeded 80/10/10 shuffle;
- a directory holding ``train.*``, ``validation.*`` (or ``dev.*``/``valid.*``) and ``test.*``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EebertError
from . import corpora, files

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"),
                  "test": ("test",)}


@dataclass
class DataConfig:
    """Where the examples come from."""

    spec: str = field(default="", metadata={"help": "Built-in corpus name or a CSV/TSV/JSONL/parquet file or directory."})
    text_column: str = field(default="text", metadata={"help": "Column with the (first) text."})
    pair_column: str | None = field(default=None, metadata={"help": "Column with the second text of a pair, if any."})
    label_column: str | None = field(default="label", metadata={"help": "Column with gold labels; when absent the deployed model's predictions are the targets."})
    max_samples: int | None = field(default=None, metadata={"help": "Keep at most this many examples per split (seeded).", "min": 1})
    seed: int = field(default=13, metadata={"help": "Seed for splitting files that carry no split."})


@dataclass
class Split:
    texts: list[str]
    pairs: list[str] | None = None
    labels: list | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: list[int]) -> "Split":
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return Split([self.texts[i] for i in idx], pick(self.pairs), pick(self.labels))


@dataclass
class TaskData:
    name: str
    splits: dict[str, Split]

    def split(self, name: str) -> Split:
        if name not in self.splits or len(self.splits[name]) == 0:
            raise EebertError(f"data {self.name!r} has no {name} split",
                              "give a directory with train/validation/test files or a file with a 'split' column")
        return self.splits[name]

    @property
    def has_labels(self) -> bool:
        return all(s.labels is not None for s in self.splits.values())


def _columns(rows: list[dict], cfg: DataConfig, source: str) -> Split:
    cols = set(rows[0]) if rows else set()

    def need(col: str | None, what: str, optional: bool) -> str | None:
        if col is None or col in cols:
            return col
        if optional:
            return None
        raise EebertError(f"{source} has no {what} column {col!r} (columns: {', '.join(sorted(cols))})",
                          f"name the right column with --{what}-column")

    text = need(cfg.text_column, "text", optional=False)
    pair = need(cfg.pair_column, "pair", optional=False)
    # The default label column may be missing (unlabelled data); a named one may not.
    label = need(cfg.label_column, "label", optional=cfg.label_column == DataConfig.label_column)
    texts = [str(r[text]) for r in rows]
    pairs = [str(r[pair]) for r in rows] if pair else None
    labels = [r[label] for r in rows] if label else None
    if labels is not None and any(v is None or v == "" for v in labels):
        raise EebertError(f"{source} has empty values in label column {label!r}",
                          "fill them in, or drop --label-column to use the deployed model's predictions")
    return Split(texts, pairs, labels)


def _seeded_split(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = n_val = max(1, len(rows) // 10)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return {"train": [rows[i] for i in train], "validation": [rows[i] for i in val],
            "test": [rows[i] for i in test]}


def _from_path(path: Path, cfg: DataConfig) -> dict[str, Split]:
    if path.is_dir():
        found: dict[str, Path] = {}
        for split, aliases in _SPLIT_ALIASES.items():
            for alias in aliases:
                hits = [p for p in sorted(path.glob(f"{alias}.*")) if p.suffix in files.READERS]
                if hits:
                    found[split] = hits[0]
                    break
        if not found:
            raise EebertError(f"directory {path} holds no train/validation/test data files",
                              f"name them like train.csv, validation.csv, test.csv ({', '.join(files.READERS)})")
        return {s: _columns(files.read_rows(p), cfg, str(p)) for s, p in found.items()}
    rows = files.read_rows(path)
    if not rows:
        raise EebertError(f"data file {path} is empty", "give a file with a header and at least one row")
    if "split" in rows[0]:
        groups: dict[str, list[dict]] = {}
        for r in rows:
            key = str(r["split"]).strip().lower()
            split = next((s for s, al in _SPLIT_ALIASES.items() if key in al), None)
            if split is None:
                raise EebertError(f"{path}: unknown split value {r['split']!r}",
                                  "use train, validation or test in the split column")
            groups.setdefault(split, []).append(r)
    else:
        groups = _seeded_split(rows, cfg.seed)
    return {s: _columns(g, cfg, str(path)) for s, g in groups.items()}


def load_data(cfg: DataConfig) -> TaskData:
    if not cfg.spec:
        raise EebertError("no data given", "pass --data with a corpus name or a file path")
    if cfg.spec in corpora.CORPORA:
        splits = corpora.load(cfg.spec)
    else:
        path = Path(cfg.spec).expanduser()
        if not path.exists():
            raise EebertError(f"data not found: {cfg.spec}",
                              f"give an existing file or directory, or a built-in corpus: {', '.join(corpora.CORPORA)}")
        splits = _from_path(path, cfg)
    if cfg.max_samples:
        rng = random.Random(cfg.seed)
        splits = {k: (v.subset(sorted(rng.sample(range(len(v)), cfg.max_samples)))
                      if len(v) > cfg.max_samples else v) for k, v in splits.items()}
    return TaskData(cfg.spec, splits)


def map_labels(labels: list, label2id: dict[str, int], num_labels: int, source: str = "data") -> list[int]:
    """Map gold labels (names or ids) onto the deployed model's label ids."""
    lookup = {str(k).lower(): v for k, v in label2id.items()}
    out = []
    for value in labels:
        key = str(value).strip()
        if key.lower() in lookup:
            out.append(lookup[key.lower()])
            continue
        try:
            as_int = int(float(key))
        except ValueError:
            as_int = None
        if as_int is not None and 0 <= as_int < num_labels and float(key) == as_int:
            out.append(as_int)
            continue
        known = ", ".join(str(k) for k in label2id)
        raise EebertError(f"label {value!r} in {source} is not one the model knows (known: {known})",
                          "map the labels to the model's label names or ids, or drop --label-column")
    return out
