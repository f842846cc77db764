"""What an exit head is, how exits are specified, and the parameter-free reductions they read.

An exit head reads a *reduction* of a layer's hidden states ([CLS] vector, masked
mean, ...). Reductions have no parameters, so with the backbone frozen they are
computed once per example and cached; training k epochs costs one backbone pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import BackboneAdapter, Dims
from ..core.registry import Range, Registry
from ..tasks import CLASSIFICATION, MULTI_LABEL, REGRESSION


class Tokens(NamedTuple):
    """All token states of one layer, for exits that read every token (reduction "tokens")."""

    hidden: torch.Tensor  #: [B, T, H]
    mask: torch.Tensor    #: [B, T], 1 = real token

    def shifted(self, delta: torch.Tensor) -> "Tokens":
        """Add a per-example vector [B, H] to every token (bypass outputs)."""
        return Tokens(self.hidden + delta[:, None, :].to(self.hidden.dtype), self.mask)


def reduce(kind: str, hidden: torch.Tensor, mask: torch.Tensor | None):
    """Parameter-free reduction of hidden states [B, T, H] that an exit reads, in float32.

    Exits compute in float32 whatever precision the backbone runs in (``--dtype``).
    """
    if hidden.dtype != torch.float32:
        hidden = hidden.float()
    if kind == "tokens":
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return Tokens(hidden, mask)
    if kind == "word":  # per-token heads (token classification): every position's state, [B, T, H]
        return hidden
    if kind == "cls":
        return hidden[:, 0]
    if kind == "mean":
        if mask is None:  # nothing padded (batch size 1)
            return hidden.mean(1)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    raise ValueError(f"unknown reduction {kind!r}")


def add_to(x, delta: torch.Tensor):
    """Add a per-example vector to an exit input, whatever its reduction."""
    return x.shifted(delta) if isinstance(x, Tokens) else x + delta.to(x.dtype)


class Mlp(nn.Sequential):
    """Linear, GELU, Dropout, Linear: the exit heads' MLP (state-dict keys ``0.*`` and ``3.*``).

    ``encode``/``decode`` call the layers' functions directly: at batch size 1 an exit is a few
    tiny ops right after a layer has evicted the caches, where a module call costs about what the
    op does, and slicing the Sequential (``net[:3]``) builds a new module on every call (about 40
    of the 170 us an exit took in the demo's loop; docs/inference.md, "Sixth pass").
    """

    def __init__(self, inputs: int, width: int, outputs: int, dropout: float):
        super().__init__(nn.Linear(inputs, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, outputs))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        first, act, drop, _ = self._modules.values()
        z = F.gelu(F.linear(x, first.weight, first.bias), approximate=act.approximate)
        return drop(z) if self.training else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        last = self._modules["3"]
        return F.linear(z, last.weight, last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class ExitHead(nn.Module):
    """Maps a reduction of one layer's hidden states to class logits.

    Heads split into ``encode`` (input -> hidden representation) and ``decode``
    (representation -> logits) where they can, so the cross-layer contrastive
    term can reach the representation; ``forward`` is their composition.
    """

    #: which reduction of the hidden states this head reads (see :func:`reduce`)
    reduction: ClassVar[str] = "cls"
    registry_name: ClassVar[str]
    #: tasks the head serves (it outputs ``dims.num_labels`` values: class or per-label logits, or one
    #: regressed value)
    tasks: ClassVar[tuple[str, ...]] = (CLASSIFICATION, REGRESSION, MULTI_LABEL)
    #: parameter ranges beyond :data:`eebert_cli.core.registry.COMMON_BOUNDS`, checked by ``EXITS.build``
    bounds: ClassVar[dict[str, Range]] = {}

    def __init__(self, dims: Dims, **params: Any):
        super().__init__()
        self.dims = dims

    def forward(self, features):
        return self.decode(self.encode(features))

    def encode(self, features) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flops(self, seq_len: int) -> int:
        """Multiply-adds x2 of one evaluation, reduction included, for the cost model."""
        raise NotImplementedError

    def init_from(self, adapter: BackboneAdapter) -> None:
        """Optionally start from backbone weights (for instance the pooler)."""

    # Hooks for heads whose architecture is decided per layer (LECO): a plain head needs none.
    @classmethod
    def for_layer(cls, params: dict[str, Any], layer: int, dims: Dims) -> "ExitHead":
        """The head after ``layer``; by default the same validated build at every layer."""
        return EXITS.build(cls.registry_name, params, dims)

    @classmethod
    def search_needs(cls, params: dict[str, Any], layers: list[int]) -> dict[int, set[str]] | None:
        """Reductions a pre-training search reads per layer; None = no search (read what the heads read)."""
        return None


EXITS: Registry[type[ExitHead]] = Registry("exit head")


@dataclass
class ExitSpec:
    """Which exit head sits after which layers (1-based; the deployed head is the last exit)."""

    type: str = "mean-mlp"
    layers: list[int] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    #: optional block-wise bypasses (BADGE), e.g. {"type": "badge", "block_size": 2}; {} = none
    bypass: dict[str, Any] = field(default_factory=dict)
    #: optional layer-skipping gates (SmartBERT), e.g. {"type": "smartbert", "layers": [2, 3], ...}; {} = none
    gates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


Getter = Callable[[str, int], Any]  #: (reduction, layer) -> that layer's input for a head


class ExitSet(nn.Module):
    """The trainable exits, one per chosen layer, in layer order (plus optional bypasses and gates).

    Inputs reach heads through a *getter* ``get(reduction, layer)``: cached
    features when training and calibrating, live hidden states at inference,
    so every path runs the same :meth:`logits` code.
    """

    def __init__(self, spec: ExitSpec, dims: Dims):
        super().__init__()
        self.spec = spec
        self.layers = sorted(spec.layers)
        head = EXITS.get(spec.type)
        self.heads = nn.ModuleList(head.for_layer(spec.params, layer, dims) for layer in self.layers)
        kinds = {h.reduction for h in self.heads}
        #: the reduction every head reads, or None when heads differ (LECO)
        self.reduction = kinds.pop() if len(kinds) == 1 else None
        self.bypass = None
        if spec.bypass:
            from .bypass import build_bypass

            self.bypass = build_bypass(spec.bypass, self.layers, dims)
        self.gates = None  #: skipping gates; they change what every later layer reads (see gates/)
        if spec.gates:
            from ..gates import build_gates

            self.gates = build_gates(spec.gates, dims)

    def init_from(self, adapter: BackboneAdapter) -> None:
        for head in self.heads:
            head.init_from(adapter)

    def needs(self) -> dict[int, set[str]]:
        """Layer (0 = embeddings) -> reductions read from it, by heads and bypasses."""
        out: dict[int, set[str]] = {}
        for head, layer in zip(self.heads, self.layers):
            out.setdefault(layer, set()).add(head.reduction)
        if self.bypass is not None:
            for layer, kind in self.bypass.taps():
                out.setdefault(layer, set()).add(kind)
        return out

    def taps(self) -> dict[int, set[str]]:
        """What must be kept from layers that are not the exit being evaluated (bypass inputs)."""
        return {} if self.bypass is None else {l: {k} for l, k in self.bypass.taps()}

    def exit_input(self, k: int, get: Getter):
        x = get(self.heads[k].reduction, self.layers[k])
        if self.bypass is not None:
            delta = self.bypass(self.layers[k], get)
            if delta is not None:
                x = add_to(x, delta)
        return x

    def logits(self, k: int, get: Getter) -> torch.Tensor:
        return self.heads[k](self.exit_input(k, get))

    def forward(self, get: Getter, hidden: bool = False):
        """Every exit's logits (and, with ``hidden``, its representation) for one batch."""
        if not hidden:
            return [self.logits(k, get) for k in range(len(self.heads))]
        reps = [head.encode(self.exit_input(k, get)) for k, head in enumerate(self.heads)]
        return [head.decode(z) for head, z in zip(self.heads, reps)], reps

    def flops(self, k: int, seq):
        """Cost of evaluating exit k: its head plus its block's bypass."""
        f = self.heads[k].flops(seq)
        if self.bypass is not None:
            f = f + self.bypass.flops(self.layers[k], seq)
        return f

    def describe(self) -> list[str]:
        """Head type per exit (differs per layer after a LECO search)."""
        return [h.registry_name for h in self.heads]
