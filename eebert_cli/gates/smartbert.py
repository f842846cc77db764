"""SmartBERT's skipping gate, in eebert's reading: a small MLP on the [CLS] (or mean) state.

Gate of layer l: Linear(h, width), tanh, Linear(width, 1) on a reduction of
the states entering layer l; sigmoid gives the skip probability. The last bias
starts at ``init_bias`` (default -2: sigmoid 0.12), so an untrained gate runs
every layer and training starts from the deployed model's path.
"""

from __future__ import annotations

from torch import nn

from ..backbones import Dims
from ..exits.base import reduce
from .base import GATES, SkipGates


@GATES.register("smartbert")
class SmartBertGates(SkipGates):
    def __init__(self, layers: list[int], dims: Dims, width: int = 0, source: str = "cls",
                 init_bias: float = -2.0):
        super().__init__(layers, dims)
        if source not in ("cls", "mean"):
            raise ValueError(f"gate source must be 'cls' or 'mean', got {source!r}")
        h = dims.hidden_size
        self.hidden, self.source = h, source
        self.width = width or max(8, h // 8)
        self.mods = nn.ModuleDict()
        for l in self.layers:
            m = nn.Sequential(nn.Linear(h, self.width), nn.Tanh(), nn.Linear(self.width, 1))
            nn.init.constant_(m[2].bias, init_bias)
            self.mods[str(l)] = m

    def logit(self, layer, hidden, mask):
        return self.mods[str(layer)](reduce(self.source, hidden, mask).float()).squeeze(-1)

    def flops(self, seq):
        reduction = seq * self.hidden if self.source == "mean" else 0
        return reduction + 2 * self.hidden * self.width + 2 * self.width
