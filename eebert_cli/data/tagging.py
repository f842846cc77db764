"""Words and tags as users have them, checked once, and aligned to the checkpoint's subwords.

Alignment follows the transformers convention: a word's tag goes on its first subword,
every other position (later subwords, special tokens, padding) gets ``IGNORE`` (-100),
which no loss, metric or calibration figure counts.
"""

from __future__ import annotations

from ..core.errors import EebertError

IGNORE = -100


def check_words(ds, tokens: str, tags: str | None, source: str) -> None:
    """Every sentence has words (strings) and, when tagged, one tag per word; else one line naming the row."""
    hint_tags = "give one tag per word (word<TAB>tag in CoNLL files)"
    for start in range(0, len(ds), 4096):
        batch = ds[start:start + 4096]
        for i, words in enumerate(batch[tokens]):
            row = start + i + 1
            if not isinstance(words, list):
                raise EebertError(f"{source}: row {row} has {type(words).__name__} in words column {tokens!r}, "
                                  "not a list of words", "write each sentence's words as a list, e.g. "
                                  '{"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]}')
            if not words:
                raise EebertError(f"{source}: row {row} is an empty sentence (no words)",
                                  "drop the empty sentences; eebert tags words, not nothing")
            bad = next((w for w in words if not isinstance(w, str) or not w.strip()), 0)
            if bad != 0:
                raise EebertError(f"{source}: row {row} has word {bad!r}, not a non-empty string",
                                  "give every word as text")
            if tags is None:
                continue
            t = batch[tags][i]
            if not isinstance(t, list) or len(t) != len(words):
                n = len(t) if isinstance(t, list) else type(t).__name__
                raise EebertError(f"{source}: row {row} has {len(words)} words but {n} tags", hint_tags)


def tag_ids(tags: list[list], label2id: dict[str, int], num_labels: int, source: str,
            first_row: int = 1) -> list[list[int]]:
    """Tags (names, or ids of the checkpoint's id2label) -> ids; an unknown tag fails naming it (and its
    sentence, numbered from ``first_row``: a chunk of a split says where it is in the split)."""
    lookup = {str(k): v for k, v in label2id.items()}
    out = []
    for row, sent in enumerate(tags, first_row):
        ids = []
        for t in sent:
            if isinstance(t, str) and t in lookup:
                ids.append(lookup[t])
            elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t < num_labels:
                ids.append(t)
            else:
                known = ", ".join(lookup)
                raise EebertError(f"tag {t!r} in {source} (sentence {row}) is not one the model knows (known: {known})",
                                  "map the tags to the checkpoint's id2label names or ids")
        out.append(ids)
    return out


def encode(tokenizer, words: list[list[str]], max_length: int, tags: list[list[int]] | None = None) -> dict:
    """Subword ids of each sentence (split into words) and, per subword, the index of its word
    (-1: special token or a later subword) and its tag (``IGNORE`` where no tag applies)."""
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    first, labels = [], []
    for b in range(len(words)):
        ids = enc.word_ids(b)
        seen, f, lab = set(), [], []
        for w in ids:
            new = w is not None and w not in seen
            seen.add(w)
            f.append(w if new else -1)
            lab.append(tags[b][w] if new and tags is not None else IGNORE)
        first.append(f)
        labels.append(lab)
    return {"input_ids": enc["input_ids"], "word_index": first, "labels": labels if tags is not None else None}


def check_level(task, data) -> None:
    """A tagger needs words and tags; a sentence classifier needs texts: the other fails in one line."""
    words = any(s.words for s in data.splits.values())
    if task.level == "token" and not words:
        raise EebertError(f"this checkpoint tags tokens ({task.name}), but data {data.name!r} holds sentences",
                          "give words and tags: a tokens column with ner_tags (JSONL/parquet/saved dataset), or a "
                          "CoNLL file (word<TAB>tag lines); name the columns with --tokens-column / --tags-column")
    if task.level != "token" and words:
        raise EebertError(f"data {data.name!r} holds words and tags (token classification), but this checkpoint "
                          f"is a {task.name} model", "give a *ForTokenClassification checkpoint, or data with a "
                          "text column (--text-column)")
