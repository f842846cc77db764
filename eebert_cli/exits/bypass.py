"""BADGE block-wise bypasses, in eebert's reading for a frozen backbone.

Layers are grouped into blocks of ``block_size``. Each block that holds exits
gets one bottleneck module (Linear(h, width), GELU, Linear(width, h), width
about h/8) that reads a parameter-free reduction (``source``: "mean" or "cls")
of the hidden states *entering* the block (the embeddings' output for the
first block) and whose output is added to the states each of the block's exits
reads. The backbone path is never touched, so the deployed prediction stays
bit-identical; the exits of one block share a learned side channel instead of
fighting over the same frozen features. The last Linear starts at zero, so an
untrained bypass changes nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backbones import Dims


class BlockBypasses(nn.Module):
    def __init__(self, layers: list[int], dims: Dims, block_size: int = 2, width: int | None = None,
                 source: str = "mean"):
        super().__init__()
        if block_size < 1:
            raise ValueError(f"bypass block size must be >= 1, got {block_size}")
        if source not in ("mean", "cls"):
            raise ValueError(f"bypass source must be 'mean' or 'cls', got {source!r}")
        h = dims.hidden_size
        self.block_size, self.source, self.hidden = block_size, source, h
        self.width = width or max(8, h // 8)
        self.blocks = sorted({self.block_of(l) for l in layers})
        self.mods = nn.ModuleDict()
        for b in self.blocks:
            m = nn.Sequential(nn.Linear(h, self.width), nn.GELU(), nn.Linear(self.width, h))
            nn.init.zeros_(m[2].weight)
            nn.init.zeros_(m[2].bias)
            self.mods[str(b)] = m

    def block_of(self, layer: int) -> int:
        return (layer - 1) // self.block_size

    def entry(self, block: int) -> int:
        """Layer whose output enters the block (0 = embeddings)."""
        return block * self.block_size

    def taps(self) -> list[tuple[int, str]]:
        return [(self.entry(b), self.source) for b in self.blocks]

    def forward(self, layer: int, get) -> torch.Tensor:
        b = self.block_of(layer)
        return self.mods[str(b)](get(self.source, self.entry(b)).float())

    def flops(self, layer: int, seq):
        """Charged to every exit of the block that is evaluated (an upper bound: runtimes may reuse it)."""
        reduction = seq * self.hidden if self.source == "mean" else 0
        return reduction + 4 * self.hidden * self.width + self.hidden

    def per_block_params(self) -> int:
        return sum(p.numel() for p in next(iter(self.mods.values())).parameters()) if self.blocks else 0


BYPASSES = {"badge": BlockBypasses}


def build_bypass(cfg: dict[str, Any], layers: list[int], dims: Dims) -> BlockBypasses:
    from ..core.errors import EebertError

    params = dict(cfg)
    kind = params.pop("type", "badge")
    if kind not in BYPASSES:
        raise EebertError(f"unknown bypass {kind!r}", f"choose one of: {', '.join(BYPASSES)}")
    try:
        return BYPASSES[kind](layers, dims, **params)
    except (TypeError, ValueError) as e:
        raise EebertError(f"bad bypass parameters: {e}", "e.g. --bypass badge --block-size 2") from None
