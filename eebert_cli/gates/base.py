"""What a set of skipping gates is: which layers may be skipped, and the per-example decision."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..backbones import Dims
from ..core.registry import Range, Registry
from ..tasks import CLASSIFICATION


class SkipGates(nn.Module):
    """Gates before some encoder layers; ``prob`` is the probability of skipping the layer.

    Layers are 1-based: the gate of layer l reads the hidden states *entering*
    layer l (layer l-1's output) and, when it skips, layer l's output is its
    input unchanged. Inference skips where ``prob >= threshold`` (:meth:`skip`):
    0.5 as trained (the paper's rule); calibration may raise it, up to 1.0 =
    never skip, when skipping less serves the target better.
    """

    registry_name: str
    #: gates train against class distributions; regression models get none
    tasks: tuple[str, ...] = (CLASSIFICATION,)
    #: parameter ranges beyond :data:`eebert_cli.core.registry.COMMON_BOUNDS`, checked by ``GATES.build``
    bounds: dict[str, Range] = {}

    def __init__(self, layers: list[int], dims: Dims):
        super().__init__()
        self.layers = sorted(layers)
        self.threshold = 0.5

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"gate threshold must be within (0, 1], got {value}")
        self._threshold = float(value)
        # compare logits, not probabilities: exact, and 1.0 (never skip) becomes +inf
        self._cut = math.inf if value >= 1.0 else math.log(value / (1.0 - value))

    def __contains__(self, layer: int) -> bool:
        return layer in self.layers

    @property
    def active(self) -> bool:
        """False at threshold 1.0: no gate can fire, so none is evaluated or charged."""
        return self._threshold < 1.0

    def logit(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Gate logit [B] for layer ``layer`` from the hidden states entering it."""
        raise NotImplementedError

    def prob(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return torch.sigmoid(self.logit(layer, hidden, mask))

    def skip(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Boolean [B]: skip layer ``layer`` (sigmoid >= threshold, decided on the logit)."""
        return self.logit(layer, hidden, mask) >= self._cut

    def flops(self, seq) -> Any:
        """Cost of one gate evaluation (2 x multiply-adds), for the cost model."""
        raise NotImplementedError


GATES: Registry[type[SkipGates]] = Registry("skipping gate")


def gated_layer(adapter, gates: SkipGates, index: int, hidden: torch.Tensor, state, mask):
    """Run layer ``index`` (0-based) of a batch for the rows whose gate does not fire.

    Returns (new hidden states, skip mask [B]); skipping rows keep their states and
    cost nothing. The one gated step of inference and of the gated scoring pass.
    """
    skip = gates.skip(index + 1, hidden, mask)
    if bool(skip.all()):
        return hidden, skip
    if not bool(skip.any()):
        return adapter.layer(index, hidden, state), skip
    run = (~skip).nonzero().squeeze(1)
    out = hidden.clone()
    out[run] = adapter.layer(index, hidden[run], adapter.select(state, run))
    return out, skip


def build_gates(spec: dict[str, Any], dims: Dims) -> SkipGates:
    """Gates from the ``gates`` entry of an exit spec: {"type": ..., "layers": [...], shape params}."""
    from ..core.errors import EebertError

    params = dict(spec)
    kind = params.pop("type")
    layers = params.pop("layers")
    bad = [l for l in layers if not 1 <= l <= dims.num_layers]
    if bad:
        raise EebertError(f"no layer {bad[0]} to gate (the model has {dims.num_layers} layers)",
                          f"choose gate layers from 1 to {dims.num_layers}")
    return GATES.build(kind, params, layers, dims)
