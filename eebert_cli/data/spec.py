"""Turn a data spec into train/validation/test splits of texts (and optional labels).

A spec is one of (see sources.py, which decides which):
- the name of a built-in corpus (``rotten-tomatoes``, ``reuters-r8``, ...), see corpora.py;
- a file (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``): split by its ``split``
  column when it has one, else by a seeded 80/10/10 shuffle;
- a directory holding ``train.*``, ``validation.*`` (or ``dev.*``/``valid.*``) and ``test.*``;
- a directory written by ``datasets``' ``save_to_disk``;
- a Hugging Face dataset id (``org/name``, ``glue:sst2`` = name:config), from the local HF cache.

Every split is a `datasets.Dataset` (Arrow; memory-mapped for files and caches); its rows
are checked (rows.py) before anything else runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..core.errors import EebertError

SPLITS = ("train", "validation", "test")


@dataclass
class DataConfig:
    """Where the examples come from."""

    spec: str = field(default="", metadata={"flag": "--data", "help": "Built-in corpus name, a CSV/TSV/JSONL/parquet file or directory, a save_to_disk directory, or a Hugging Face dataset id (org/name, or name:config)."})
    text_column: str = field(default="text", metadata={"nonempty": True, "help": "Column with the (first) text."})
    pair_column: str | None = field(default=None, metadata={"nonempty": True, "help": "Column with the second text of a pair, if any."})
    label_column: str | None = field(default="label", metadata={"nonempty": True, "help": "Column with gold labels; when absent the deployed model's predictions are the targets."})
    max_samples: int | None = field(default=None, metadata={"help": "Keep at most this many examples per split (seeded).", "min": 1})
    seed: int = field(default=13, metadata={"help": "Seed for splitting files that carry no split."})
    config: str | None = field(default=None, metadata={"flag": "--data-config", "nonempty": True, "help": "Configuration (subset) of a Hugging Face dataset id, e.g. sst2 for glue."})
    split_map: dict[str, str] = field(default_factory=dict, metadata={"help": "Which of the data's splits is train, validation and test, where the names differ, e.g. validation=dev."})
    revision: str | None = field(default=None, metadata={"nonempty": True, "help": "Commit of a hub dataset id; attach records the one it resolved."})
    tokens_column: str = field(default="tokens", metadata={"nonempty": True, "help": "Token classification: the column of words (a list per sentence), read when the text column is absent."})
    tags_column: str = field(default="ner_tags", metadata={"nonempty": True, "help": "Token classification: the column of tags (names or the model's ids, one per word)."})


class Split:
    """One split's rows: a `datasets.Dataset` and the names of the columns eebert reads."""

    def __init__(self, dataset, text: str = "text", pair: str | None = None, label: str | None = None,
                 words: bool = False):
        self.dataset, self.text_column, self.pair_column, self.label_column = dataset, text, pair, label
        self.words = words  #: token classification: ``texts`` are lists of words, ``labels`` lists of tags
        self._cache: dict[str, list] = {}

    @classmethod
    def from_lists(cls, texts: list[str], pairs: list[str] | None = None, labels: list | None = None) -> "Split":
        import datasets

        cols: dict[str, list] = {"text": list(texts)}
        if pairs is not None:
            cols["pair"] = list(pairs)
        if labels is not None:
            cols["label"] = list(labels)
        return cls(datasets.Dataset.from_dict(cols), "text", "pair" if pairs is not None else None,
                   "label" if labels is not None else None)

    def __len__(self) -> int:
        return len(self.dataset)

    def _values(self, col: str | None) -> list | None:
        if col is None:
            return None
        if col not in self._cache:
            self._cache[col] = list(self.dataset[col])
        return self._cache[col]

    def iter_values(self, col: str, batch_size: int = 8192) -> Iterator[list]:
        """A column's values a batch at a time, kept nowhere: for passes over data of any size."""
        for a in range(0, len(self.dataset), batch_size):
            yield self.dataset[a:a + batch_size][col]

    @property
    def texts(self) -> list[str]:
        return self._values(self.text_column)

    @property
    def pairs(self) -> list[str] | None:
        return self._values(self.pair_column)

    @property
    def labels(self) -> list | None:
        return self._values(self.label_column)

    @property
    def label_names(self) -> list[str] | None:
        """The names a `datasets` ClassLabel gives the label column's ids (a tagger's tags too), else None."""
        feature = self.dataset.features.get(self.label_column) if self.label_column else None
        names = getattr(getattr(feature, "feature", feature), "names", None)  # a ClassLabel, or a list of them
        return list(names) if names else None

    def named_labels(self, values: list, label2id: dict) -> list:
        """Label-column ``values`` with ClassLabel ids as their names where the model knows every name: a data
        set may number its labels in another order than the model (conll2003's tags and a hub NER model's), and
        its ids would then name the wrong labels, silently. Else as they are (ids the model reads as its own)."""
        names, spelled = self.label_names, {str(k).lower(): str(k) for k in label2id}  # the model's spelling
        if not names or not all(n.lower() in spelled for n in names):
            return values

        def name(v):
            if isinstance(v, list):
                return [name(x) for x in v]
            return spelled[names[v].lower()] if isinstance(v, int) and 0 <= v < len(names) else v

        return [name(v) for v in values]

    def subset(self, idx: list[int]) -> "Split":
        return Split(self.dataset.select(idx), self.text_column, self.pair_column, self.label_column, self.words)

    def tokenize(self, tokenizer, max_length: int):
        """Token ids of every row, by a batched `map` (cached beside file-backed data by `datasets`)."""
        text, pair = self.text_column, self.pair_column

        def tok(batch: dict[str, list]) -> dict[str, Any]:
            return dict(tokenizer(batch[text], batch[pair] if pair else None, truncation=True, max_length=max_length))

        from .files import quiet_datasets

        quiet_datasets()
        return self.dataset.map(tok, batched=True, batch_size=1000, remove_columns=self.dataset.column_names)


@dataclass
class TaskData:
    name: str
    splits: dict[str, Split]
    source: dict | None = None  #: where a hub id resolved to (id, revision), for the artifact

    def split(self, name: str) -> Split:
        if name not in self.splits or len(self.splits[name]) == 0:
            have = ", ".join(s for s in self.splits if len(self.splits[s])) or "none"
            raise EebertError(f"data {self.name!r} has no {name} split (it has: {have})",
                              f"map one with --split-map {name}=NAME, give a directory with train/validation/test "
                              "files, or a file with a 'split' column")
        return self.splits[name]


def missing_column(source: str, what: str, col: str, present) -> EebertError:
    """The one line for a named column ``col`` that ``source`` lacks. A header that holds ``col`` between other
    separators (``text;label``: a spreadsheet's export in many locales) says how the file is separated."""
    names = sorted(present)
    for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"), (",", "commas")):
        joined = next((n for n in names if sep in n and col in n.split(sep)), None)
        if joined is not None:
            return EebertError(f"{source} has no {what} column {col!r}: its header is one column, {joined!r}, "
                               f"separated by {name}", "save it as .csv separated by commas or .tsv by tabs (as "
                               "eebert reads them), or as JSONL or parquet")
    return EebertError(f"{source} has no {what} column {col!r} (columns: {', '.join(names)})",
                       f"name the right column with --{what}-column")


def columns(ds, cfg: DataConfig, source: str) -> Split:
    """Check the named columns and their rows; the checked rows as a Split."""
    from .rows import check_columns

    cols = set(ds.column_names)

    def need(col: str | None, what: str, optional: bool) -> str | None:
        if col is None or col in cols:
            return col
        if optional:
            return None
        raise missing_column(source, what, col, cols)

    if cfg.text_column not in cols and cfg.tokens_column in cols:  # words and tags: token classification
        from .tagging import check_words

        tags = need(cfg.tags_column, "tags", optional=cfg.tags_column == DataConfig.tags_column)
        check_words(ds, cfg.tokens_column, tags, source)
        return Split(ds, cfg.tokens_column, None, tags, words=True)
    if cfg.text_column not in cols and cfg.tokens_column != DataConfig.tokens_column:  # words were asked for
        raise EebertError(f"{source} has no tokens column {cfg.tokens_column!r} and no text column {cfg.text_column!r} "
                          f"(columns: {', '.join(sorted(cols))})", "name the right column with --tokens-column")
    text = need(cfg.text_column, "text", optional=False)
    pair = need(cfg.pair_column, "pair", optional=False)
    # The default label column may be missing (unlabelled data); a named one may not.
    label = need(cfg.label_column, "label", optional=cfg.label_column == DataConfig.label_column)
    check_columns(ds, text, pair, label, source, None if cfg.label_column == DataConfig.label_column else "--label-column")
    return Split(ds, text, pair, label)


def seeded_split(n: int, seed: int) -> dict[str, list[int]]:
    """Row indices of a seeded 80/10/10 train/validation/test split."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = n_val = max(1, n // 10)
    return {"train": order[n_test + n_val:], "validation": order[n_test:n_test + n_val], "test": order[:n_test]}


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
