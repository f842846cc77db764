"""One frozen-backbone pass over a split, keeping what exits and criteria need.

The backbone never changes, so the reductions that exits read (see
``exits.reduce``) and the deployed model's logits are computed once per split
and reused: by every training epoch, by calibration and by the benchmark's
accuracy and FLOPs figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from .backbones import BackboneAdapter
from .data import Split
from .exits import ExitSet, reduce


@dataclass
class Encoded:
    """Token ids of a split, unpadded (each example keeps its own length)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(x) for x in self.input_ids])

    def batches(self, batch_size: int) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """Length-sorted padded batches (index list, tensors): little padding, same results."""
        order = sorted(range(len(self)), key=lambda i: len(self.input_ids[i]))
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            yield idx, self.collate(idx)

    def collate(self, idx: list[int]) -> dict[str, torch.Tensor]:
        width = max(len(self.input_ids[i]) for i in idx)
        ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        types = torch.zeros((len(idx), width), dtype=torch.long) if self.token_type_ids else None
        for r, i in enumerate(idx):
            n = len(self.input_ids[i])
            ids[r, :n] = torch.tensor(self.input_ids[i])
            mask[r, :n] = 1
            if types is not None:
                types[r, :n] = torch.tensor(self.token_type_ids[i])
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def encode(tokenizer, split: Split, max_length: int) -> Encoded:
    enc = tokenizer(split.texts, split.pairs, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids")
    return Encoded(enc["input_ids"], types, tokenizer.pad_token_id or 0)


@dataclass
class Features:
    layers: list[int]                 #: 1-based layers whose reductions are kept
    reduced: dict[str, torch.Tensor]  #: reduction name -> [N, len(layers), H]
    teacher: torch.Tensor             #: deployed model's logits [N, C]
    lengths: torch.Tensor             #: tokens per example [N]

    def for_layer(self, reduction: str, layer: int) -> torch.Tensor:
        return self.reduced[reduction][:, self.layers.index(layer)]


@torch.inference_mode()
def extract(adapter: BackboneAdapter, encoded: Encoded, layers: list[int], reductions: set[str],
            batch_size: int = 64, advance: Callable[[int], None] | None = None) -> Features:
    n, keep = len(encoded), sorted(set(layers))
    h = adapter.dims.hidden_size
    reduced = {r: torch.empty(n, len(keep), h) for r in reductions}
    teacher = torch.empty(n, adapter.dims.num_labels)
    for idx, batch in encoded.batches(batch_size):
        mask = batch["attention_mask"]
        hidden = adapter.embed(batch["input_ids"], mask, batch["token_type_ids"])
        state = adapter.prepare(hidden, mask)
        rows = torch.tensor(idx)
        for i in range(adapter.dims.num_layers):
            hidden = adapter.layer(i, hidden, state)
            if i + 1 in keep:
                for r in reductions:
                    reduced[r][rows, keep.index(i + 1)] = reduce(r, hidden, mask).float()
        teacher[rows] = adapter.head(hidden, mask).float()
        if advance:
            advance(len(idx))
    return Features(keep, reduced, teacher, encoded.lengths)


@torch.no_grad()
def all_exit_logits(exits: ExitSet, features: Features) -> torch.Tensor:
    """Logits [N, K, C] of every trainable exit, then the deployed head as exit K-1."""
    exits.eval()
    cols = [head(features.for_layer(exits.reduction, layer))
            for head, layer in zip(exits.heads, exits.layers)]
    return torch.stack(cols + [features.teacher], 1)
