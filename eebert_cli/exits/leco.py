"""LECO's searched exits, registered like any other head: one candidate architecture per layer.

``--exits leco`` (``ExitSpec(type="leco")``) runs the search before training
(``eebert_cli/train/leco.py``, registered in ``train.SEARCHES``) and saves
``params = {"choices": {"3": "conv", ...}}``; loading builds, after each layer,
the registered head the search chose (:meth:`LecoExit.for_layer`).
``candidate_params`` (name -> params) passes parameters to candidates. Giving
``choices`` skips the search.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.errors import EebertError
from ..core.registry import Range
from ..tasks import CLASSIFICATION, REGRESSION
from .base import EXITS, ExitHead, Tokens, reduce

#: LECO's default search space: [CLS]-linear, [CLS]-MLP, mean-pool MLP, max-pool MLP,
#: attention pooling with a learned query, 1-D convolution + max-pool, one small transformer block.
CANDIDATES = ["linear", "pooler-mlp", "mean-mlp", "max-mlp", "attn-pool", "conv", "transformer"]


@EXITS.register("leco")
class LecoExit(ExitHead):
    """LECO: a differentiable search picks one candidate head per layer, which is then trained."""

    tasks = (CLASSIFICATION, REGRESSION)  # the search trains with single-label cross-entropy

    reduction = "tokens"  # what the search reads; the chosen heads read their own
    bounds = {"search_epochs": Range(1), "search_samples": Range(0), "search_holdout": Range(0.0, 1.0, True, True),
              "search_lr": Range(0.0, lo_open=True), "arch_lr": Range(0.0, lo_open=True)}

    def __init__(self, dims, choices: dict | None = None, candidates: list | None = None,
                 candidate_params: dict | None = None, search_epochs: int = 3, search_samples: int = 4000,
                 search_holdout: float = 0.5, search_lr: float = 1e-3, arch_lr: float = 3e-3, seed: int = 0):
        """The parameters of the search; a LECO exit itself is always one of the candidates."""
        raise TypeError("LECO exits are built per layer from their searched choices")

    @classmethod
    def for_layer(cls, params: dict[str, Any], layer: int, dims) -> ExitHead:
        params = EXITS.check("leco", params, 1)
        choices = params.get("choices") or {}
        name = choices.get(str(layer), choices.get(layer))
        if name is None:
            raise EebertError(f"LECO exits have no searched architecture for layer {layer}",
                              "run `eebert attach --exits leco` to search, or give params.choices")
        return EXITS.build(name, (params.get("candidate_params") or {}).get(name, {}), dims)

    @classmethod
    def candidates_of(cls, params: dict[str, Any]) -> list[str]:
        names = list(params.get("candidates") or CANDIDATES)
        for n in names:
            if n == "leco":
                raise EebertError("LECO cannot be its own candidate", f"candidates from: {', '.join(CANDIDATES)}")
            EXITS.check(n, (params.get("candidate_params") or {}).get(n, {}), 1)
        return names

    @classmethod
    def search_needs(cls, params, layers):
        if params.get("choices"):
            return None
        names = cls.candidates_of(params)
        return {l: {"tokens"} | {EXITS.get(n).reduction for n in names} for l in layers}


class MixedExit(nn.Module):
    """DARTS mixed operation: softmax(alpha)-weighted sum of every candidate's logits.

    Every candidate reads the layer's token states; candidates that read a
    parameter-free reduction get it computed from them.
    """

    def __init__(self, dims, candidates: list[str], candidate_params: dict | None = None):
        super().__init__()
        self.names = list(candidates)
        self.ops = nn.ModuleList(EXITS.build(n, (candidate_params or {}).get(n, {}), dims) for n in self.names)
        self.alpha = nn.Parameter(torch.zeros(len(self.names)))

    def forward(self, x: Tokens) -> torch.Tensor:
        w = torch.softmax(self.alpha, 0)
        outs = [op(x if op.reduction == "tokens" else reduce(op.reduction, x.hidden, x.mask)) for op in self.ops]
        return sum(wi * o for wi, o in zip(w, outs))
