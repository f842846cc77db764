"""One frozen-backbone pass over a split, keeping what exits and criteria need.

The backbone never changes, so the reductions that exits read (see
``exits.reduce``) and the deployed model's logits are computed once per split
and reused: by every training epoch, by calibration and by the benchmark's
accuracy and FLOPs figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from operator import setitem
from typing import Callable, Iterator

import torch

from ..backbones import BackboneAdapter
from ..data import Split
from .device import module_device
from ..exits import ExitSet, Tokens, reduce
from ..gates import gated_layer


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

    def subset(self, idx: list[int]) -> "Encoded":
        return Encoded([self.input_ids[i] for i in idx],
                       [self.token_type_ids[i] for i in idx] if self.token_type_ids else None, self.pad_id)

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
    enc = split.tokenize(tokenizer, max_length)  # a batched `map` over the split's Arrow rows
    types = list(enc["token_type_ids"]) if "token_type_ids" in enc.column_names else None
    return Encoded(list(enc["input_ids"]), types, tokenizer.pad_token_id or 0)


def token_dtype(backbone: torch.dtype) -> torch.dtype:
    """Precision token states are stored in: 16 bits either way (half the memory of fp32: Rotten
    Tomatoes' 8308 training examples x ~30 tokens x 384 x 5 layers is about 1 GB).

    A bfloat16 backbone's states stay bfloat16, exactly as computed: fp16 tops out at 65504, and
    bf16 states (fp32's range) past it would become inf. Others are stored as fp16 (as before:
    more mantissa than bf16 for fp32 states, which the final LayerNorm keeps small)."""
    return torch.bfloat16 if backbone is torch.bfloat16 else torch.float16


@dataclass
class TokenStore:
    """Every example's token states at the kept layers, unpadded, 16-bit: [sum of lengths, layers, H].

    Token-reading exits (reduction "tokens") train from here; a batch is
    re-padded on demand; exits compute in fp32. See ``token_dtype``.
    """

    states: torch.Tensor   #: [sum T, L, H] float16, or bfloat16 from a bf16 backbone
    offsets: torch.Tensor  #: [N + 1] start of each example

    def batch(self, column: int, rows: torch.Tensor) -> Tokens:
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        width = int(lengths.max()) if len(rows) else 0
        pos = torch.arange(width)
        real = pos[None, :] < lengths[:, None]  # [B, width]
        # one gather of every real token and one copy into place, not a copy per row (3x faster)
        at = real.flatten().nonzero().squeeze(1)
        src = (starts[:, None] + pos[None, :]).flatten()[at]
        hidden = torch.empty(len(rows) * width, self.states.shape[-1])  # zeroing it all cost as much again
        hidden.index_copy_(0, at, self.states[:, column].index_select(0, src).float())
        hidden.index_fill_(0, (~real).flatten().nonzero().squeeze(1), 0.0)
        return Tokens(hidden.view(len(rows), width, self.states.shape[-1]), real.long())


@dataclass
class Features:
    layers: list[int]                 #: layers whose reductions are kept (1-based; 0 = embeddings)
    reduced: dict[str, torch.Tensor]  #: reduction name -> [N, len(layers), H]
    teacher: torch.Tensor             #: deployed model's logits [N, C]
    lengths: torch.Tensor             #: tokens per example [N]
    tokens: TokenStore | None = None  #: token states, when a head reads reduction "tokens"
    skipped: torch.Tensor | None = None  #: [N, L] bool, layers the gates skipped (gated passes only)
    #: memory-mapped features (feature_cache): drop the pages read so far from this process's RSS
    release: Callable[[], None] | None = None
    #: (reduction, rows, column) -> [rows, H]: the feature cache's explicit reads, used by ``getter``
    #: instead of indexing the memory map (a page fault there maps a whole folio of neighbours)
    read: Callable[[str, torch.Tensor, int], torch.Tensor] | None = None

    def for_layer(self, reduction: str, layer: int) -> torch.Tensor:
        return self.reduced[reduction][:, self.layers.index(layer)]

    def getter(self, rows: torch.Tensor, device: torch.device | None = None):
        """``get(reduction, layer)`` for these rows, on ``device``: what ``ExitSet`` reads its inputs through.

        Features stay on the host (in RAM or memory-mapped from the feature cache);
        only the rows a step reads travel to the exits' device.
        """

        def get(reduction: str, layer: int):
            if reduction == "tokens":
                if self.tokens is None:
                    raise RuntimeError("token states were not cached for this split")
                t = self.tokens.batch(self.layers.index(layer), rows)
                return Tokens(t.hidden.to(device), t.mask.to(device)) if device is not None else t
            col = self.layers.index(layer)
            x = self.reduced[reduction][rows, col] if self.read is None else self.read(reduction, rows, col)
            return x if device is None else x.to(device, non_blocking=True)

        return get


class HostCopies:
    """Device-to-host copies issued without waiting, handed over after one sync (``wait``).

    On CUDA each copy goes into pinned host memory with ``non_blocking``, so the
    GPU goes on with the next layers while earlier ones travel; a blocking
    ``.cpu()`` per kept layer would stall the GPU queue once per layer per batch.
    Elsewhere ``.cpu()`` is already synchronous (or a no-op on the CPU).
    """

    def __init__(self, device: torch.device):
        self.device, self.pending = device, []

    def add(self, tensor: torch.Tensor, then: Callable[[torch.Tensor], None]) -> None:
        if self.device.type == "cuda":
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
        else:
            host = tensor.cpu()
        self.pending.append((host, then))

    def wait(self) -> None:
        if self.device.type == "cuda" and self.pending:
            torch.cuda.current_stream(self.device).synchronize()
        for host, then in self.pending:
            then(host)
        self.pending.clear()


@torch.inference_mode()
def extract(adapter: BackboneAdapter, encoded: Encoded, layers: list[int], reductions: set[str],
            batch_size: int = 64, advance: Callable[[int], None] | None = None,
            needs: dict[int, set[str]] | None = None, gates=None) -> Features:
    """``layers`` may include 0 (the embeddings' output) and ``reductions`` "tokens";
    ``needs`` (layer -> reductions, from ``ExitSet.needs``) limits what is kept per layer.

    With ``gates`` (:class:`~eebert_cli.gates.SkipGates`) the pass is the gated
    one inference runs: a row whose gate fires keeps its states through that
    layer; ``teacher`` is then the deployed head on the gated path, and
    ``skipped`` records which layers each example skipped.
    """
    n, keep = len(encoded), sorted(set(layers) | set(needs or {}))
    h = adapter.dims.hidden_size
    want = {l: (needs or {}).get(l, set(reductions)) for l in keep}
    vec = (set(reductions) | {r for v in want.values() for r in v}) - {"tokens"}
    reduced = {r: torch.zeros(n, len(keep), h) for r in vec}
    tok_layers = [l for l in keep if "tokens" in want[l]]
    tokens = None
    if tok_layers:
        lengths = encoded.lengths
        offsets = torch.zeros(n + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        dtype = token_dtype(next(adapter.model.parameters()).dtype)
        tokens = TokenStore(torch.zeros(int(offsets[-1]), len(keep), h, dtype=dtype), offsets)
    teacher = torch.empty(n, adapter.dims.num_labels)
    skipped = torch.zeros(n, adapter.dims.num_layers, dtype=torch.bool) if gates is not None else None

    def put_tokens(col, rows):
        def put(host):
            for j, i in enumerate(rows.tolist()):
                a, b = int(tokens.offsets[i]), int(tokens.offsets[i + 1])
                tokens.states[a:b, col] = host[j, :b - a]

        return put

    def keep_layer(layer, hidden, mask, rows):
        col = keep.index(layer)
        for r in want[layer] - {"tokens"}:
            copies.add(reduce(r, hidden, mask).float(), partial(setitem, reduced[r], (rows, col)))
        if "tokens" in want[layer]:
            copies.add(hidden.to(tokens.states.dtype), put_tokens(col, rows))

    device = module_device(adapter.model)  # the backbone's device (see device.py); features stay on the host
    copies = HostCopies(device)
    for idx, batch in encoded.batches(batch_size):
        batch = {k: (v.to(device, non_blocking=True) if v is not None else None) for k, v in batch.items()}
        mask = batch["attention_mask"]
        hidden = adapter.embed(batch["input_ids"], mask, batch["token_type_ids"])
        state = adapter.prepare(hidden, mask)
        rows = torch.tensor(idx)
        if 0 in keep:
            keep_layer(0, hidden, mask, rows)
        for i in range(adapter.dims.num_layers):
            if gates is not None and gates.active and i + 1 in gates:
                hidden, skip = gated_layer(adapter, gates, i, hidden, state, mask)
                copies.add(skip, partial(setitem, skipped, (rows, i)))
            else:
                hidden = adapter.layer(i, hidden, state)
            if i + 1 in keep:
                keep_layer(i + 1, hidden, mask, rows)
        copies.add(adapter.head(hidden, mask).float(), partial(setitem, teacher, rows))
        copies.wait()  # the batch's one sync: every kept layer was copied while the next ones ran
        if advance:
            advance(len(idx))
    return Features(keep, reduced, teacher, encoded.lengths, tokens, skipped)


@torch.no_grad()
def all_exit_logits(exits: ExitSet, features: Features) -> torch.Tensor:
    """Logits [N, K, C] of every trainable exit, then the deployed head as exit K-1."""
    exits.eval()
    n, device = len(features.teacher), module_device(exits)
    # chunks: token states are re-padded per chunk, and memory-mapped features are read a piece at a time
    chunk = 256 if features.tokens is not None else 8192
    parts = []
    for a in range(0, n, chunk):
        rows = torch.arange(a, min(n, a + chunk))
        parts.append(torch.stack(exits(features.getter(rows, device)), 1).cpu())
    cols = torch.cat(parts, 0) if parts else torch.empty(0, len(exits.heads), features.teacher.shape[-1])
    return torch.cat([cols, features.teacher[:, None]], 1)
