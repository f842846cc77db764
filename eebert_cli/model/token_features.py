"""One frozen-backbone pass over a tagged split, keeping one row per tagged word.

A tagger's exits answer per word (at its first subword), so the cache holds, for every
exit layer, the state of each word's first subword (``reduced["word"]``: [words, layers, H])
and the deployed tagger's logits there (``teacher``): exits train on these rows for any
number of epochs after one backbone pass, and calibration and the benchmark score them.
``offsets`` maps sentences to their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .device import module_device
from .features import Encoded, Features, HostCopies
from ..data.tagging import encode, tag_ids


def tag_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The deployed tagger's own head on the last layer's states [B, T, H] -> [B, T, C]."""
    head = getattr(model, "head", None)  # ModernBERT: a prediction head before the classifier
    if isinstance(head, nn.Module) and not isinstance(head, nn.Linear):
        hidden = head(hidden)
    return model.classifier(hidden)


@dataclass
class Words:
    """A split's sentences as subwords, with where each tagged word starts."""

    enc: Encoded
    word_index: list[list[int]]    #: per subword: its word's index where it is the word's first subword, else -1
    tags: list[list[int]] | None   #: gold tag ids per word, None for untagged data
    words: list[list[str]]

    def __len__(self) -> int:
        return len(self.words)

    @property
    def tagged(self) -> list[int]:
        """Words per sentence that got a subword (the rest were cut at max_length)."""
        return [sum(1 for w in wi if w >= 0) for wi in self.word_index]

    def offsets(self) -> torch.Tensor:
        out = torch.zeros(len(self) + 1, dtype=torch.long)
        out[1:] = torch.tensor(self.tagged, dtype=torch.long).cumsum(0)
        return out

    def subset(self, a: int, b: int) -> "Words":
        """Sentences ``a`` to ``b`` (a view of the lists, their token ids shared)."""
        return Words(self.enc.subset(list(range(a, b))), self.word_index[a:b],
                     None if self.tags is None else self.tags[a:b], self.words[a:b])

    def gold_rows(self) -> torch.Tensor | None:
        """Gold tag id of every tagged word, in row order."""
        if self.tags is None:
            return None
        return torch.tensor([self.tags[s][w] for s, wi in enumerate(self.word_index) for w in wi if w >= 0],
                            dtype=torch.long)


def words_of(tokenizer, split, max_length: int, label2id: dict | None = None, num_labels: int = 0,
             source: str = "", first_row: int = 1) -> Words:
    """The split's sentences as subwords; with ``label2id``, its gold tags too (checked, as ids)."""
    tags = (tag_ids(split.named_labels(split.labels, label2id), label2id, num_labels, source, first_row)
            if label2id is not None and split.label_column is not None else None)
    words = split.texts
    e = encode(tokenizer, words, max_length)
    return Words(Encoded(e["input_ids"], None, tokenizer.pad_token_id or 0), e["word_index"], tags, words)


def gold_rows(tokenizer, split, max_length: int, label2id: dict, num_labels: int, source: str,
              chunk: int) -> tuple[torch.Tensor | None, int]:
    """(gold tag id of every tagged word in row order, or None for untagged data; the number of tagged
    words), tokenising ``chunk`` sentences at a time: nothing per sentence outlives its chunk, so a
    training split of any size costs 8 bytes a word here. Unknown tags fail as in ``words_of``."""
    parts, words = [], 0
    for a in range(0, len(split), chunk):
        w = words_of(tokenizer, split.subset(list(range(a, min(len(split), a + chunk)))), max_length, label2id,
                     num_labels, source, first_row=a + 1)
        words += int(w.offsets()[-1])
        rows = w.gold_rows()
        if rows is not None:
            parts.append(rows)
    return (torch.cat(parts) if parts else None), words


@dataclass
class WordFeatures:
    features: Features      #: rows = tagged words
    offsets: torch.Tensor   #: [sentences + 1] first row of each sentence
    lengths: torch.Tensor   #: [sentences] subwords per sentence (what the layers run on)


@torch.inference_mode()
def extract_words(adapter, model: nn.Module, words: Words, layers: list[int], batch_size: int = 64,
                  advance: Callable[[int], None] | None = None) -> WordFeatures:
    """States of each tagged word's first subword after ``layers`` and the deployed tag logits there.
    ``advance(sentences)`` after each batch (a progress bar)."""
    offsets = words.offsets()
    n, keep, h = int(offsets[-1]), sorted(set(layers)), adapter.dims.hidden_size
    reduced = torch.zeros(n, len(keep), h)
    teacher = torch.zeros(n, adapter.dims.num_labels)
    device = module_device(adapter.model)
    copies = HostCopies(device)  # on CUDA the GPU goes on while kept layers travel to the host
    for idx, batch in words.enc.batches(batch_size):
        mask = batch["attention_mask"].to(device)
        hidden = adapter.embed(batch["input_ids"].to(device), mask, None)
        state = adapter.prepare(hidden, mask)
        # (batch row, position) of every tagged word, and the cache row it fills
        at = [(r, p, int(offsets[i]) + w) for r, i in enumerate(idx) for p, w in enumerate(words.word_index[i])
              if w >= 0]
        br = torch.tensor([a[0] for a in at], dtype=torch.long)
        bp = torch.tensor([a[1] for a in at], dtype=torch.long)
        rows = torch.tensor([a[2] for a in at], dtype=torch.long)
        for i in range(adapter.dims.num_layers):
            hidden = adapter.layer(i, hidden, state)
            if i + 1 in keep:
                copies.add(hidden[br, bp].float(), _into(reduced, rows, keep.index(i + 1)))
        copies.add(tag_logits(model, hidden)[br, bp].float(), _into(teacher, rows))
        copies.wait()
        if advance is not None:
            advance(len(idx))
    feats = Features(keep, {"word": reduced}, teacher, torch.ones(n, dtype=torch.long))
    return WordFeatures(feats, offsets, words.enc.lengths)


def _into(target: torch.Tensor, rows: torch.Tensor, col: int | None = None) -> Callable[[torch.Tensor], None]:
    """Where a host copy lands: ``target[rows]`` (or ``target[rows, col]``)."""
    def write(x: torch.Tensor) -> None:
        if col is None:
            target[rows] = x
        else:
            target[rows, col] = x
    return write


def by_sentence(rows: torch.Tensor, offsets: torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
    """Per-word rows [W, ...] -> per-sentence [S, longest, ...], positions past a sentence's end = ``fill``."""
    counts = offsets[1:] - offsets[:-1]
    out = torch.full((len(counts), int(counts.max()) if len(counts) else 0, *rows.shape[1:]), fill, dtype=rows.dtype)
    sent = torch.repeat_interleave(torch.arange(len(counts)), counts)
    pos = torch.arange(len(rows)) - offsets[sent]
    out[sent, pos] = rows
    return out
