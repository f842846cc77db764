"""LECO's searched exits: one candidate architecture per layer, chosen by differentiable search.

``ExitSpec(type="leco", params={"choices": {"3": "conv", ...}})`` builds, after
each layer, the registered exit head its search chose; ``candidate_params``
(optional, name -> params) passes parameters to candidates. The search itself
(mixed operations, architecture weights, bi-level fitting) is in
``eebert_cli/leco.py``; this module only makes the result loadable.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import COMPOSITE, EXITS, ExitHead, Tokens, reduce

#: LECO's default search space: [CLS]-linear, [CLS]-MLP, mean-pool MLP, max-pool MLP,
#: attention pooling with a learned query, 1-D convolution + max-pool, one small transformer block.
CANDIDATES = ["linear", "pooler-mlp", "mean-mlp", "max-mlp", "attn-pool", "conv", "transformer"]


def _build(spec, layer, dims) -> ExitHead:
    from ..errors import EebertError

    choices = spec.params.get("choices") or {}
    name = choices.get(str(layer), choices.get(layer))
    if name is None:
        raise EebertError(f"LECO exits have no searched architecture for layer {layer}",
                          "run `eebert attach --exits leco` to search, or give params.choices")
    return EXITS.get(name)(dims, **(spec.params.get("candidate_params") or {}).get(name, {}))


COMPOSITE["leco"] = _build


class MixedExit(nn.Module):
    """DARTS mixed operation: softmax(alpha)-weighted sum of every candidate's logits.

    Every candidate reads the layer's token states; candidates that read a
    parameter-free reduction get it computed from them.
    """

    def __init__(self, dims, candidates: list[str], candidate_params: dict | None = None):
        super().__init__()
        self.names = list(candidates)
        self.ops = nn.ModuleList(EXITS.get(n)(dims, **(candidate_params or {}).get(n, {})) for n in self.names)
        self.alpha = nn.Parameter(torch.zeros(len(self.names)))

    def forward(self, x: Tokens) -> torch.Tensor:
        w = torch.softmax(self.alpha, 0)
        outs = [op(x if op.reduction == "tokens" else reduce(op.reduction, x.hidden, x.mask)) for op in self.ops]
        return sum(wi * o for wi, o in zip(w, outs))
