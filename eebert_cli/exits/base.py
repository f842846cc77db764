"""What an exit head is, how exits are specified, and the parameter-free reductions they read.

An exit head reads a *reduction* of a layer's hidden states ([CLS] vector, masked
mean, ...). Reductions have no parameters, so with the backbone frozen they are
computed once per example and cached; training k epochs costs one backbone pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..backbones import BackboneAdapter, Dims
from ..registry import Registry


def reduce(kind: str, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Parameter-free reduction of hidden states [B, T, H] that an exit reads."""
    if kind == "cls":
        return hidden[:, 0]
    if kind == "mean":
        if mask is None:  # nothing padded (batch size 1)
            return hidden.mean(1)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    raise ValueError(f"unknown reduction {kind!r}")


class ExitHead(nn.Module):
    """Maps a reduction of one layer's hidden states to class logits."""

    #: which reduction of the hidden states this head reads (see :func:`reduce`)
    reduction: ClassVar[str] = "cls"
    registry_name: ClassVar[str]

    def __init__(self, dims: Dims, **params: Any):
        super().__init__()
        self.dims = dims

    def flops(self, seq_len: int) -> int:
        """Multiply-adds x2 of one evaluation, reduction included, for the cost model."""
        raise NotImplementedError

    def init_from(self, adapter: BackboneAdapter) -> None:
        """Optionally start from backbone weights (for instance the pooler)."""


EXITS: Registry[type[ExitHead]] = Registry("exit head")


@dataclass
class ExitSpec:
    """Which exit head sits after which layers (1-based; the deployed head is the last exit)."""

    type: str = "mean-mlp"
    layers: list[int] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class ExitSet(nn.Module):
    """The trainable exits, one per chosen layer, in layer order."""

    def __init__(self, spec: ExitSpec, dims: Dims):
        super().__init__()
        cls = EXITS.get(spec.type)
        self.spec = spec
        self.layers = sorted(spec.layers)
        self.heads = nn.ModuleList(cls(dims, **spec.params) for _ in self.layers)
        self.reduction = cls.reduction

    def init_from(self, adapter: BackboneAdapter) -> None:
        for head in self.heads:
            head.init_from(adapter)
